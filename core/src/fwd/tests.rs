//! Tests of the listener table: forwards opened, kept, closed and failed,
//! for TCP and UDP alike.

use super::*;
use crate::action::{RxDatagram, TcpInfo};
use crate::testutil::{capture_config, drain_frames};
use crate::{Core, Instant};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

const GUEST4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

fn table(cfg: &Config, forwards: &[Forward]) -> (Listeners, Vec<Action>) {
    let mut t = Listeners::default();
    let mut q = ActionQueue::new(64);
    t.set(cfg, &mut q, forwards);
    let mut acts = Vec::new();
    while let Some(a) = q.pop() {
        acts.push(a);
    }
    (t, acts)
}

fn binds(acts: &[Action]) -> Vec<(SockId, SocketAddr)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Bind { sock, addr, .. } => Some((*sock, *addr)),
            _ => None,
        })
        .collect()
}

#[test]
fn sock_ids_round_trip() {
    for (proto, slot) in [
        (Proto::Tcp, 0),
        (Proto::Tcp, 77),
        (Proto::Udp, 0),
        (Proto::Udp, 9),
    ] {
        assert_eq!(
            Listeners::decode(Listeners::sock(proto, slot)),
            Some((proto, slot))
        );
    }
    // TCP's id for refused connections is no listener.
    assert_eq!(Listeners::decode(SockId(LISTENER_BIT | 0x7fff_ffff)), None);
    assert_eq!(
        Listeners::decode(flow::sock_id(flow::FlowId(3), 1, 0)),
        None
    );
}

/// A range opens one listener per port, each with its target; TCP
/// listens, UDP does not; both bind like each other.
#[test]
fn ranges_open_a_listener_per_port() {
    let cfg = capture_config();
    let tcp = Forward {
        last: 9002,
        ..Forward::new(Proto::Tcp, 9000, 9100)
    };
    let udp = Forward {
        addr: Some(Ipv4Addr::LOCALHOST.into()),
        ifindex: Some(3),
        ..Forward::new(Proto::Udp, 53, 5353)
    };
    let (t, acts) = table(&cfg, &[tcp, udp]);
    let b = binds(&acts);
    let any6 = |p| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), p);
    assert_eq!(
        b,
        vec![
            (Listeners::sock(Proto::Tcp, 0), any6(9000)),
            (Listeners::sock(Proto::Tcp, 1), any6(9001)),
            (Listeners::sock(Proto::Tcp, 2), any6(9002)),
            (
                Listeners::sock(Proto::Udp, 0),
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53)
            ),
        ]
    );
    let listens = acts
        .iter()
        .filter(|a| matches!(a, Action::Listen { .. }))
        .count();
    assert_eq!(listens, 3);
    let udp_opts = acts.iter().find_map(|a| match a {
        Action::Bind { sock, opts, .. } if *sock == Listeners::sock(Proto::Udp, 0) => Some(*opts),
        _ => None,
    });
    assert_eq!(
        udp_opts,
        Some(BindOpts {
            reuse_addr: true,
            device: Some(3),
            ..BindOpts::default()
        })
    );
    assert_eq!(t.get(Proto::Tcp, 2).map(|l| l.fwd.target_port), Some(9102));
    assert_eq!(t.get(Proto::Udp, 0).map(|l| l.fwd.ifindex), Some(Some(3)));
    assert_eq!(t.open_count(), 4);
    assert_eq!(t.stats().opened, 4);
}

/// A TCP and a UDP listener that fail to open are reported alike; one
/// of a disabled family fails without a socket; a disabled protocol
/// opens nothing and fails nothing.
#[test]
fn failures_are_reported_alike() {
    let mut cfg = capture_config();
    cfg.ip6 = None;
    let v6 = Forward {
        addr: Some(Ipv6Addr::LOCALHOST.into()),
        ..Forward::new(Proto::Udp, 7, 7)
    };
    let fwds = [
        Forward::new(Proto::Tcp, 22, 22),
        Forward::new(Proto::Udp, 22, 22),
        v6,
    ];
    let (mut t, acts) = table(&cfg, &fwds);
    assert_eq!(binds(&acts).len(), 2, "nothing for IPv6");
    let none: Vec<_> = t.failures().collect();
    assert_eq!(
        none,
        vec![ListenFailure {
            forward: v6,
            addr: None,
            error: None
        }]
    );
    for proto in [Proto::Tcp, Proto::Udp] {
        let sock = Listeners::sock(proto, 0);
        assert_eq!(
            t.event(sock, SockEvent::OpenFailed(Errno::EADDRINUSE)),
            Listened::Done
        );
        // Further events on a failed listener go nowhere.
        assert_eq!(t.event(sock, SockEvent::Readable), Listened::Done);
    }
    let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 22);
    let failed: Vec<_> = t
        .failures()
        .map(|f| (f.forward.proto, f.addr, f.error))
        .collect();
    assert_eq!(
        failed,
        vec![
            (Proto::Tcp, Some(any4), Some(Errno::EADDRINUSE)),
            (Proto::Udp, Some(any4), Some(Errno::EADDRINUSE)),
            (Proto::Udp, None, None),
        ]
    );
    assert_eq!(t.open_count(), 0);
    assert_eq!(t.stats().failures, 3);
    // Unlisted, they are forgotten (and not closed: there is no socket).
    let mut q = ActionQueue::new(8);
    t.set(&cfg, &mut q, &[]);
    assert!(q.pop().is_none());
    assert_eq!(t.failures().count(), 0);

    cfg.features.udp = false;
    let (t, acts) = table(&cfg, &[Forward::new(Proto::Udp, 53, 53)]);
    assert!(acts.is_empty());
    assert_eq!((t.failures().count(), t.open_count()), (0, 0));
}

/// Without a start, inputs open nothing; start opens the configured
/// forwards once; a set replaces them and a later start does nothing.
#[test]
fn start_opens_the_configured_forwards_once() {
    let mut cfg = capture_config();
    cfg.forwards = vec![Forward::new(Proto::Udp, 53, 53)];
    let mut core = Core::new(cfg.clone());
    core.handle_timeout(Instant::ZERO);
    assert!(core.poll_action().is_none());
    core.start(Instant::ZERO);
    assert!(core.poll_action().is_some());
    while core.poll_action().is_some() {}
    core.start(Instant::ZERO);
    assert!(core.poll_action().is_none());

    let mut core = Core::new(cfg);
    core.set_forwards(Instant::ZERO, &[Forward::new(Proto::Tcp, 80, 80)]);
    core.start(Instant::ZERO);
    let mut kinds = Vec::new();
    while let Some(a) = core.poll_action() {
        if let Action::Open { kind, .. } = a {
            kinds.push(kind);
        }
    }
    assert_eq!(kinds, vec![SockKind::TcpListener]);
}

/// `--freebind`: listeners and UDP sockets bind with `IP_FREEBIND`,
/// ping sockets do not.
#[test]
fn freebind_reaches_listeners_and_udp_sockets() {
    use crate::tap::tests::udp_frame;
    use crate::testutil::exchange;
    let mut cfg = capture_config();
    cfg.freebind = true;
    cfg.forwards = vec![
        Forward::new(Proto::Tcp, 80, 80),
        Forward::new(Proto::Udp, 53, 53),
    ];
    let mut core = Core::new(cfg);
    core.start(Instant::ZERO);
    let to: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
    let udp = udp_frame(GUEST4.into(), to, 4000, 5000, b"x");
    exchange(&mut core, Instant::ZERO, &[&udp]);
    let freebind: Vec<_> = crate::testutil::drain_binds(&mut core)
        .into_iter()
        .map(|(kind, _, opts)| (kind, opts.freebind))
        .collect();
    assert_eq!(
        freebind,
        vec![
            (SockKind::TcpListener, true),
            (SockKind::Udp, true),
            (SockKind::Udp, true),
        ]
    );
}

/// The destination of the guest-side frames, checked with etherparse.
fn dst_of(frame: &[u8]) -> (IpAddr, u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let ip = match &p.net {
        Some(NetSlice::Ipv4(ip)) => IpAddr::V4(ip.header().destination_addr()),
        Some(NetSlice::Ipv6(ip)) => IpAddr::V6(ip.header().destination_addr()),
        _ => panic!("not IP"),
    };
    let port = match &p.transport {
        Some(TransportSlice::Tcp(t)) => t.destination_port(),
        Some(TransportSlice::Udp(u)) => u.destination_port(),
        _ => panic!("not TCP or UDP"),
    };
    (ip, port)
}

/// A forward with a target address delivers there, for TCP and UDP
/// alike; a target of the other family refuses the peer.
#[test]
fn target_addresses_are_honoured() {
    let target = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9));
    let mut cfg = capture_config();
    cfg.guest_mac = Some(crate::testutil::GUEST_MAC);
    let to = |proto, port| Forward {
        target: Some(target),
        ..Forward::new(proto, port, port + 1)
    };
    cfg.forwards = vec![
        to(Proto::Tcp, 8000),
        to(Proto::Udp, 8000),
        Forward {
            target: Some("fd77::9".parse().unwrap()),
            ..Forward::new(Proto::Udp, 8002, 8002)
        },
    ];
    let mut core = Core::new(cfg);
    let now = Instant::ZERO;
    core.start(now);
    while core.poll_action().is_some() {}
    let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();

    // UDP: the datagram's frame goes to the target.
    let udp = Listeners::sock(Proto::Udp, 0);
    let mut buf = vec![0u8; 2048];
    let room = core.recv_room(udp);
    buf[room..room + 2].copy_from_slice(b"hi");
    let mut d = [RxDatagram::new(&mut buf[..], 2, peer)];
    assert_eq!(core.handle_datagrams(now, udp, &mut d), 1);
    assert_eq!(dst_of(d[0].frame().unwrap()), (target, 8001));
    // The IPv6 target cannot take an IPv4 peer.
    let other = Listeners::sock(Proto::Udp, 1);
    let mut buf = vec![0u8; 2048];
    let mut d = [RxDatagram::new(&mut buf[..], 2, peer)];
    assert_eq!(core.handle_datagrams(now, other, &mut d), 0);
    assert_eq!(
        core.counters().dropped(crate::DropReason::DgramBadEndpoint),
        1
    );
    while core.poll_action().is_some() {}

    // TCP: the SYN to the guest goes to the target.
    let tcp = Listeners::sock(Proto::Tcp, 0);
    core.handle_sock_event(now, tcp, SockEvent::Readable);
    let Some(Action::Accept { sock, .. }) = core.poll_action() else {
        panic!("no accept")
    };
    core.handle_sock_event(now, sock, SockEvent::Accepted(Ok((peer, peer))));
    while core.poll_action().is_some() {}
    let info = TcpInfo {
        sndbuf: 1 << 20,
        ..TcpInfo::default()
    };
    core.handle_sock_event(now, sock, SockEvent::TcpInfo(info));
    let frames = drain_frames(&mut core);
    assert_eq!(frames.len(), 1);
    assert_eq!(dst_of(&frames[0]), (target, 8001));
    assert_ne!(target, IpAddr::V4(GUEST4));
}
