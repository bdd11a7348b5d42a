//! The splicing decision and the life of a spliced pair, driven as a driver
//! drives the core.

use super::*;
use crate::action::{SockOpt, SpliceTotals};
use crate::config::Forward;
use crate::flow::LISTENER_BIT;
use crate::testutil::{capture_config, drain_actions, sa, splicing_core};
use crate::{Core, Errno, Instant};
use core::net::{Ipv4Addr, Ipv6Addr};

const T0: Instant = Instant::ZERO;

/// A core with forwards `fwds` started, its listener actions drained.
fn core(splice: bool, lo_to_lo: bool, fwds: Vec<Forward>) -> Core {
    splicing_core(splice, false, lo_to_lo, fwds)
}

/// A connection from `peer` to `local` on listener slot `slot`: the
/// accepted socket's id and the actions that followed.
fn accept(c: &mut Core, slot: u32, peer: &str, local: &str) -> (SockId, Vec<Action>) {
    c.handle_sock_event(T0, SockId(LISTENER_BIT | slot), SockEvent::Readable);
    let a = drain_actions(c);
    let Some(Action::Accept { sock, .. }) = a.first().copied() else {
        panic!("no accept: {a:?}")
    };
    c.handle_sock_event(T0, sock, SockEvent::Accepted(Ok((sa(peer), sa(local)))));
    (sock, drain_actions(c))
}

/// The `Open` and `Connect` of the far side, if that is what `a` is.
fn far_side(a: &[Action]) -> Option<(SockId, Netns, Family, SocketAddr)> {
    match a {
        [Action::Open {
            sock,
            kind: SockKind::TcpStream,
            family,
            netns,
        }, Action::Connect { sock: s2, addr }]
            if sock == s2 =>
        {
            Some((*sock, *netns, *family, *addr))
        }
        _ => None,
    }
}

fn out(port: u16, target: u16) -> Forward {
    Forward {
        netns: Netns::Guest,
        ..Forward::new(Proto::Tcp, port, target)
    }
}

#[test]
fn host_loopback_peers_are_spliced_to_the_guest_address() {
    let mut c = core(true, false, vec![Forward::new(Proto::Tcp, 8080, 80)]);
    let (near, a) = accept(&mut c, 0, "127.0.0.1:40000", "127.0.0.1:8080");
    let (far, ns, fam, to) = far_side(&a).expect("far side opened");
    assert_eq!(
        (ns, fam, to),
        (Netns::Guest, Family::V4, sa("10.77.0.2:80"))
    );
    assert_ne!(far, near);
    // A dual-stack listener reports IPv4 peers mapped: still IPv4 loopback.
    let (_, a) = accept(
        &mut c,
        0,
        "[::ffff:127.0.0.1]:40001",
        "[::ffff:127.0.0.1]:8080",
    );
    assert_eq!(far_side(&a).unwrap().3, sa("10.77.0.2:80"));
    let (_, a) = accept(&mut c, 0, "[::1]:40002", "[::1]:8080");
    let (_, _, fam, to) = far_side(&a).unwrap();
    assert_eq!((fam, to), (Family::V6, sa("[fd77::2]:80")));
    assert_eq!(c.splice_stats().accepted, 3);
    // No frame for the guest: the guest link is not involved.
    assert!(c.poll_frame(&mut [0u8; 2048]).is_none());
}

#[test]
fn host_lo_to_ns_lo_keeps_the_loopback_address() {
    let mut c = core(true, true, vec![Forward::new(Proto::Tcp, 8080, 80)]);
    let (_, a) = accept(&mut c, 0, "127.0.0.1:40000", "127.0.0.3:8080");
    assert_eq!(far_side(&a).unwrap().3, sa("127.0.0.3:80"));
    let (_, a) = accept(&mut c, 0, "[::1]:40000", "[::1]:8080");
    assert_eq!(far_side(&a).unwrap().3, sa("[::1]:80"));
}

#[test]
fn other_peers_no_splice_and_target_addresses_take_the_tap() {
    // Not from loopback.
    let mut c = core(true, false, vec![Forward::new(Proto::Tcp, 8080, 80)]);
    let (_, a) = accept(&mut c, 0, "192.0.2.9:40000", "192.0.2.1:8080");
    assert!(far_side(&a).is_none());
    assert!(a.iter().any(|a| matches!(a, Action::QueryTcpInfo { .. })));
    // --no-splice.
    let mut c = core(false, false, vec![Forward::new(Proto::Tcp, 8080, 80)]);
    let (_, a) = accept(&mut c, 0, "127.0.0.1:40000", "127.0.0.1:8080");
    assert!(far_side(&a).is_none());
    assert_eq!(c.splice_stats().accepted, 0);
    // A forward with a target address.
    let f = Forward {
        target: Some(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 5))),
        ..Forward::new(Proto::Tcp, 8080, 80)
    };
    let mut c = core(true, false, vec![f]);
    let (_, a) = accept(&mut c, 0, "127.0.0.1:40000", "127.0.0.1:8080");
    assert!(far_side(&a).is_none());
}

#[test]
fn guest_loopback_listeners_open_in_the_guest_and_splice_to_the_host() {
    let mut cfg = capture_config();
    cfg.splice = true;
    cfg.forwards = vec![out(5000, 5001)];
    let mut c = Core::new(cfg);
    c.start(T0);
    let a = drain_actions(&mut c);
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Open {
            kind: SockKind::TcpListener,
            netns: Netns::Guest,
            ..
        }
    )));
    let (_, a) = accept(&mut c, 0, "127.0.0.1:40000", "127.0.0.2:5000");
    let (_, ns, fam, to) = far_side(&a).unwrap();
    assert_eq!(
        (ns, fam, to),
        (Netns::Host, Family::V4, sa("127.0.0.2:5001"))
    );
    let (_, a) = accept(&mut c, 0, "[::1]:40000", "[::1]:5000");
    assert_eq!(far_side(&a).unwrap().3, sa("[::1]:5001"));
    // Not between loopback addresses: refused with a reset.
    let (near, a) = accept(&mut c, 0, "10.77.0.2:40000", "10.77.0.2:5000");
    assert_eq!(
        a,
        vec![
            Action::SetOption {
                sock: near,
                opt: SockOpt::ResetOnClose
            },
            Action::Close { sock: near }
        ]
    );
    assert_eq!(c.splice_stats().refused, 1);
}

#[test]
fn guest_listeners_need_splicing_and_tcp() {
    for (splice, n) in [(true, 1), (false, 0)] {
        let mut cfg = capture_config();
        cfg.splice = splice;
        cfg.forwards = vec![out(5000, 5000)];
        let mut c = Core::new(cfg);
        c.start(T0);
        let opens = drain_actions(&mut c)
            .iter()
            .filter(|a| matches!(a, Action::Open { .. }))
            .count();
        assert_eq!(opens, n);
    }
}

/// Accepts and connects a spliced pair; returns the two ids.
fn joined(c: &mut Core) -> (SockId, SockId) {
    let (near, a) = accept(c, 0, "127.0.0.1:40000", "127.0.0.1:8080");
    let (far, ..) = far_side(&a).unwrap();
    c.handle_sock_event(T0, far, SockEvent::Connected(Ok(())));
    let a = drain_actions(c);
    assert_eq!(
        a,
        vec![
            Action::Splice {
                sock: near,
                peer: far
            },
            Action::SetOption {
                sock: near,
                opt: SockOpt::NoDelay
            },
            Action::SetOption {
                sock: far,
                opt: SockOpt::NoDelay
            },
        ]
    );
    assert_eq!(c.socket_count(), 1 + 2);
    assert_eq!(c.flow_count(), 1);
    (near, far)
}

#[test]
fn a_clean_end_closes_both_and_frees_the_flow() {
    let mut c = core(true, false, vec![Forward::new(Proto::Tcp, 8080, 80)]);
    let (near, far) = joined(&mut c);
    // Readiness after the join is the driver's: ignored.
    c.handle_sock_event(T0, far, SockEvent::Readable);
    c.handle_sock_event(T0, near, SockEvent::HangUp);
    assert!(drain_actions(&mut c).is_empty());
    let t = SpliceTotals {
        to_peer: 5,
        from_peer: 7,
    };
    c.handle_sock_event(T0, near, SockEvent::SpliceEnded(Ok(t)));
    assert_eq!(
        drain_actions(&mut c),
        vec![Action::Close { sock: near }, Action::Close { sock: far }]
    );
    assert_eq!((c.flow_count(), c.socket_count()), (0, 1));
    let s = c.splice_stats();
    assert_eq!((s.ended, s.reset, s.bytes_out, s.bytes_in), (1, 0, 5, 7));
    // No timer was left behind (the one armed for the accept went when
    // splicing took the connection): nothing to wake up for.
    assert_eq!(c.poll_timeout(), None);
    // A late event for the freed ids is ignored.
    c.handle_sock_event(T0, near, SockEvent::SpliceEnded(Ok(t)));
    assert!(drain_actions(&mut c).is_empty());
}

#[test]
fn an_error_resets_both_sides() {
    let mut c = core(true, false, vec![Forward::new(Proto::Tcp, 8080, 80)]);
    let (near, far) = joined(&mut c);
    c.handle_sock_event(T0, near, SockEvent::SpliceEnded(Err(Errno::ECONNRESET)));
    let a = drain_actions(&mut c);
    for s in [near, far] {
        assert!(a.contains(&Action::SetOption {
            sock: s,
            opt: SockOpt::ResetOnClose
        }));
        assert!(a.contains(&Action::Close { sock: s }));
    }
    assert_eq!(c.splice_stats().reset, 1);
    assert_eq!((c.flow_count(), c.socket_count()), (0, 1));
}

#[test]
fn a_far_side_that_does_not_connect_resets_the_accepted_one() {
    let mut c = core(true, false, vec![Forward::new(Proto::Tcp, 8080, 80)]);
    let (near, a) = accept(&mut c, 0, "127.0.0.1:40000", "127.0.0.1:8080");
    let (far, ..) = far_side(&a).unwrap();
    c.handle_sock_event(T0, far, SockEvent::Connected(Err(Errno::ECONNREFUSED)));
    let a = drain_actions(&mut c);
    assert_eq!(a.len(), 4, "{a:?}");
    assert!(a.contains(&Action::Close { sock: near }));
    assert!(a.contains(&Action::Close { sock: far }));
    assert_eq!((c.flow_count(), c.socket_count()), (0, 1));
    // The far socket could not even be opened.
    let (near, a) = accept(&mut c, 0, "127.0.0.1:40001", "127.0.0.1:8080");
    let (far, ..) = far_side(&a).unwrap();
    c.handle_sock_event(T0, far, SockEvent::OpenFailed(Errno::EMFILE));
    assert_eq!(
        drain_actions(&mut c),
        vec![
            Action::SetOption {
                sock: near,
                opt: SockOpt::ResetOnClose
            },
            Action::Close { sock: near }
        ]
    );
    assert_eq!((c.flow_count(), c.socket_count()), (0, 1));
    assert_eq!(c.splice_stats().refused, 2);
}

#[test]
fn decide_without_a_guest_address_of_the_family_refuses() {
    let mut cfg = capture_config();
    cfg.splice = true;
    cfg.ip6 = None;
    let g = GuestInfo::new(crate::Mac::BROADCAST);
    // A connection from [::1]:4000 to [::1]:8080 on a host listener.
    let from_lo = |cfg: &Config, g: &GuestInfo| {
        decide(
            cfg,
            g,
            Netns::Host,
            None,
            80,
            sa("[::1]:4000"),
            sa("[::1]:8080"),
        )
    };
    assert_eq!(from_lo(&cfg, &g), Decision::Refuse);
    // The address the guest was seen using wins over the configured one.
    let mut g = g;
    g.ip6_seen = Some(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 9));
    cfg.ip6 = capture_config().ip6;
    assert_eq!(
        from_lo(&cfg, &g),
        Decision::Splice {
            netns: Netns::Guest,
            target: sa("[fd77::9]:80")
        }
    );
}
