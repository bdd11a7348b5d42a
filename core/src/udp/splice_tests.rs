//! Spliced UDP flows, driven as the epoll driver drives them: a listener
//! readable, the peek's answer, the flow's set-up, queries when time is up.

use super::*;
use crate::action::SpliceTotals;
use crate::config::Forward;
use crate::testutil::{drain_actions, sa, splicing_core};
use crate::{Core, Errno};

const T0: Instant = Instant::ZERO;

fn core(splice_only: bool, lo_to_lo: bool, fwds: Vec<Forward>) -> Core {
    splicing_core(true, splice_only, lo_to_lo, fwds)
}

fn listener(slot: u32) -> SockId {
    Listeners::sock(Proto::Udp, slot)
}

fn out(port: u16, target: u16) -> Forward {
    Forward {
        netns: Netns::Guest,
        ifindex: Some(1),
        ..Forward::new(Proto::Udp, port, target)
    }
}

/// A datagram from `peer` to `local` queued on listener `slot`: the
/// actions that follow the readiness and the peek.
fn datagram(c: &mut Core, now: Instant, slot: u32, peer: &str, local: Option<&str>) -> Vec<Action> {
    c.handle_sock_event(now, listener(slot), SockEvent::Readable);
    assert_eq!(
        drain_actions(c),
        vec![Action::PeekPeer {
            sock: listener(slot)
        }]
    );
    let local = local.map(|l| l.parse::<IpAddr>().unwrap());
    c.handle_sock_event(
        now,
        listener(slot),
        SockEvent::DatagramPeer {
            peer: sa(peer),
            local,
        },
    );
    drain_actions(c)
}

/// The far side's `Open`, `Bind` and `Connect` in `a`.
fn far(a: &[Action]) -> (SockId, Netns, SocketAddr, SocketAddr) {
    let socks: Vec<SockId> = a
        .iter()
        .filter_map(|a| match a {
            Action::Open { sock, .. } => Some(*sock),
            _ => None,
        })
        .collect();
    assert_eq!(socks.len(), 2, "{a:?}");
    let s = socks[1];
    let ns = of_sock(a, s, |a| match *a {
        Action::Open { sock, netns, .. } => Some((sock, netns)),
        _ => None,
    });
    let bind = of_sock(a, s, |a| match *a {
        Action::Bind { sock, addr, .. } => Some((sock, addr)),
        _ => None,
    });
    let to = of_sock(a, s, |a| match *a {
        Action::Connect { sock, addr } => Some((sock, addr)),
        _ => None,
    });
    (s, ns, bind, to)
}

/// Side 0 of the pair `a` joins.
fn joined(a: &[Action]) -> SockId {
    a.iter()
        .find_map(|a| match a {
            Action::SpliceDatagrams { sock, .. } => Some(*sock),
            _ => None,
        })
        .unwrap()
}

/// What `pick` takes from the first action in `a` it answers for `s`.
fn of_sock<T>(a: &[Action], s: SockId, pick: impl Fn(&Action) -> Option<(SockId, T)>) -> T {
    a.iter()
        .filter_map(pick)
        .find(|(sock, _)| *sock == s)
        .map(|(_, t)| t)
        .unwrap()
}

#[test]
fn namespace_loopback_datagrams_are_spliced_to_the_same_host_address() {
    let mut c = core(false, false, vec![out(5353, 53)]);
    let a = datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.5"));
    let (s, ns, bind, to) = far(&a);
    assert_eq!(ns, Netns::Host);
    assert_eq!(bind, sa("127.0.0.1:40000"), "source address and port kept");
    assert_eq!(to, sa("127.0.0.5:53"));
    // Side 0 in the namespace, bound where the datagram went, on `lo`.
    assert!(a.iter().any(|a| matches!(a,
        Action::Bind { addr, opts, .. } if *addr == sa("[::ffff:127.0.0.5]:5353")
            && opts.device == Some(1) && opts.reuse_addr)));
    let n = a.len();
    assert!(matches!(a[n - 2], Action::SpliceDatagrams { peer, .. } if peer == s));
    assert_eq!(
        a[n - 1],
        Action::ForwardDatagrams {
            from: listener(0),
            to: Some(s),
            max: 1
        }
    );
    // The next datagram of the same peer still on the listener: same flow.
    let a = datagram(
        &mut c,
        T0,
        0,
        "[::ffff:127.0.0.1]:40000",
        Some("::ffff:127.0.0.5"),
    );
    assert_eq!(
        a,
        vec![Action::ForwardDatagrams {
            from: listener(0),
            to: Some(s),
            max: 1
        }]
    );
    // IPv6.
    let a = datagram(&mut c, T0, 0, "[::1]:40000", Some("::1"));
    let (_, _, bind, to) = far(&a);
    assert_eq!((bind, to), (sa("[::1]:40000"), sa("[::1]:53")));
    assert_eq!(c.udp_splice_stats().opened, 2);
    assert_eq!(c.udp_splice_stats().forwarded, 3);
    assert!(c.poll_frame(&mut [0u8; 2048]).is_none(), "no guest frame");
}

#[test]
fn non_loopback_on_the_namespace_side_is_discarded() {
    let mut c = core(false, false, vec![out(5353, 53)]);
    for (peer, local) in [
        ("10.77.0.2:40000", "127.0.0.1"),
        ("127.0.0.1:40000", "10.77.0.2"),
        ("127.0.0.1:0", "127.0.0.1"),
    ] {
        let a = datagram(&mut c, T0, 0, peer, Some(local));
        assert_eq!(
            a,
            vec![Action::ForwardDatagrams {
                from: listener(0),
                to: None,
                max: 1
            }],
            "{peer} -> {local}"
        );
    }
    assert_eq!(c.udp_splice_stats().discarded, 3);
    assert_eq!(c.flow_count(), 0);
}

#[test]
fn host_loopback_datagrams_go_to_the_guest_address_others_to_the_tap() {
    let mut c = core(false, false, vec![Forward::new(Proto::Udp, 5000, 50)]);
    let a = datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.1"));
    let (_, ns, bind, to) = far(&a);
    assert_eq!(ns, Netns::Guest);
    assert_eq!(bind, sa("0.0.0.0:40000"), "source port kept");
    assert_eq!(to, sa("10.77.0.2:50"));
    // Not from loopback: one datagram read into the guest link.
    let a = datagram(&mut c, T0, 0, "192.0.2.9:40000", Some("192.0.2.1"));
    assert!(matches!(a[..], [Action::Recv { max: 1, .. }]), "{a:?}");
    // With --host-lo-to-ns-lo: the namespace's loopback address.
    let mut c = core(false, true, vec![Forward::new(Proto::Udp, 5000, 50)]);
    let a = datagram(&mut c, T0, 0, "[::1]:40000", Some("::1"));
    assert_eq!(far(&a).3, sa("[::1]:50"));
    // --splice-only: what would take the tap is dropped.
    let mut c = core(true, true, vec![Forward::new(Proto::Udp, 5000, 50)]);
    let a = datagram(&mut c, T0, 0, "192.0.2.9:40000", Some("192.0.2.1"));
    assert!(
        matches!(a[..], [Action::ForwardDatagrams { to: None, .. }]),
        "{a:?}"
    );
}

#[test]
fn flows_live_while_the_driver_moves_datagrams_and_expire_after() {
    let mut c = core(false, false, vec![out(5353, 53)]);
    let a = datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.1"));
    let s0 = joined(&a);
    let t1 = T0.saturating_add(UDP_TIMEOUT);
    assert_eq!(c.poll_timeout(), Some(t1));
    c.handle_timeout(t1);
    assert_eq!(
        drain_actions(&mut c),
        vec![Action::QuerySpliced { sock: s0 }]
    );
    // Datagrams moved: another period.
    let moved = SpliceTotals {
        to_peer: 5,
        from_peer: 5,
    };
    c.handle_sock_event(t1, s0, SockEvent::Spliced(moved));
    assert!(drain_actions(&mut c).is_empty());
    let t2 = t1.saturating_add(UDP_TIMEOUT);
    // (The deadline is a lower bound: an early wake-up finds nothing due.)
    let early = c.poll_timeout().unwrap();
    assert!(early <= t2);
    c.handle_timeout(early);
    assert!(drain_actions(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t2));
    c.handle_timeout(t2);
    assert_eq!(
        drain_actions(&mut c),
        vec![Action::QuerySpliced { sock: s0 }]
    );
    // Nothing more: closed, both sockets.
    c.handle_sock_event(t2, s0, SockEvent::Spliced(moved));
    let a = drain_actions(&mut c);
    assert_eq!(
        a.iter()
            .filter(|a| matches!(a, Action::Close { .. }))
            .count(),
        2
    );
    assert_eq!(c.flow_count(), 0);
    assert_eq!(c.socket_count(), 1, "the listener only");
    assert_eq!(c.udp_splice_stats().timeouts, 1);
    assert_eq!(c.udp_splice_stats().moved, 10);
}

#[test]
fn an_unanswered_query_ends_the_flow() {
    let mut c = core(false, false, vec![out(5353, 53)]);
    datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.1"));
    let t1 = T0.saturating_add(UDP_TIMEOUT);
    c.handle_timeout(t1);
    assert_eq!(drain_actions(&mut c).len(), 1);
    let t2 = t1.saturating_add(QUERY_WAIT);
    assert_eq!(c.poll_timeout(), Some(t2));
    c.handle_timeout(t2);
    assert_eq!(drain_actions(&mut c).len(), 2, "both sockets closed");
    assert_eq!(c.flow_count(), 0);
}

#[test]
fn a_socket_that_fails_ends_the_flow_and_the_next_datagram_starts_another() {
    let mut c = core(false, false, vec![out(5353, 53)]);
    let a = datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.1"));
    let (s1, ..) = far(&a);
    // Binding the source port on the host failed: side 1 is gone.
    c.handle_sock_event(T0, s1, SockEvent::OpenFailed(Errno::EADDRINUSE));
    let a = drain_actions(&mut c);
    assert_eq!(a.len(), 1, "side 0 closed: {a:?}");
    assert_eq!(c.flow_count(), 0);
    assert_eq!(c.socket_count(), 1);
    // The driver's answer to the join, for the ids of a flow gone: ignored.
    c.handle_sock_event(T0, s1, SockEvent::SpliceEnded(Err(Errno::EBADF)));
    assert!(drain_actions(&mut c).is_empty());
    let a = datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.1"));
    let (s2, ..) = far(&a);
    assert_ne!(s2, s1, "a new generation");
    // A fatal error later, reported by the driver: closed.
    let s0 = joined(&a);
    c.handle_sock_event(T0, s0, SockEvent::SpliceEnded(Err(Errno::EBADF)));
    assert_eq!(drain_actions(&mut c).len(), 2);
    assert_eq!(c.udp_splice_stats().failed, 2);
    assert_eq!(c.flow_count(), 0);
}

/// Runs every timer due up to `until` as the driver does (at the instant
/// `poll_timeout` names), answering each query with `answer` for its
/// socket; returns the queries seen, with their time.
fn run_until(
    c: &mut Core,
    until: Instant,
    mut answer: impl FnMut(SockId) -> SpliceTotals,
) -> Vec<(Instant, SockId)> {
    let mut queries = Vec::new();
    while let Some(t) = c.poll_timeout().filter(|&t| t <= until) {
        c.handle_timeout(t);
        for a in drain_actions(c) {
            match a {
                Action::QuerySpliced { sock } => {
                    queries.push((t, sock));
                    c.handle_sock_event(t, sock, SockEvent::Spliced(answer(sock)));
                }
                Action::Close { .. } => {}
                a => panic!("unexpected {a:?}"),
            }
        }
    }
    queries
}

#[test]
fn traffic_moves_the_expiry_without_ending_the_flow_early() {
    let mut c = core(false, false, vec![out(5353, 53)]);
    let a = datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.1"));
    let s0 = joined(&a);
    let minute = Duration::from_secs(60);
    // Datagrams on the listener every minute for ten minutes: the timer
    // armed at the start runs early and is armed again, nothing is asked.
    let mut t = T0;
    for _ in 0..10 {
        t = t.saturating_add(minute);
        assert!(run_until(&mut c, t, |_| unreachable!()).is_empty());
        let a = datagram(&mut c, t, 0, "127.0.0.1:40000", Some("127.0.0.1"));
        assert!(matches!(
            a[..],
            [Action::ForwardDatagrams { to: Some(_), .. }]
        ));
    }
    assert_eq!(c.flow_count(), 1);
    // Then the driver moves datagrams: each query finds the count moved,
    // for three periods.
    let mut moved = 0;
    let until = t.saturating_add(UDP_TIMEOUT.saturating_mul(3));
    let q = run_until(&mut c, until, |_| {
        moved += 1;
        SpliceTotals {
            to_peer: moved,
            from_peer: 0,
        }
    });
    let at: Vec<Instant> = (1..=3u32)
        .map(|i| t.saturating_add(UDP_TIMEOUT.saturating_mul(i)))
        .collect();
    assert_eq!(q, at.iter().map(|&t| (t, s0)).collect::<Vec<_>>());
    assert_eq!(c.flow_count(), 1);
    assert_eq!(c.udp_splice_stats().timeouts, 0);
    // Quiet from then on: asked once more, a period after, and ended.
    let end = until.saturating_add(UDP_TIMEOUT);
    let q = run_until(&mut c, end, |_| SpliceTotals {
        to_peer: 3,
        from_peer: 0,
    });
    assert_eq!(q, vec![(end, s0)]);
    assert_eq!(c.flow_count(), 0);
    assert_eq!(c.udp_splice_stats().timeouts, 1);
    // The query's timer went with the flow: no wake-up for it.
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_closed_flow_leaves_no_timer_behind() {
    let mut c = core(false, false, vec![out(5353, 53)]);
    let a = datagram(&mut c, T0, 0, "127.0.0.1:40000", Some("127.0.0.1"));
    let s0 = joined(&a);
    // Another flow, which stays: its expiry is the next deadline after.
    let t = T0.saturating_add(Duration::from_secs(1));
    datagram(&mut c, t, 0, "127.0.0.1:40001", Some("127.0.0.1"));
    assert_eq!(c.poll_timeout(), Some(T0.saturating_add(UDP_TIMEOUT)));
    // The first ends on an error the driver reports.
    c.handle_sock_event(T0, s0, SockEvent::SpliceEnded(Err(Errno::EBADF)));
    assert_eq!(drain_actions(&mut c).len(), 2);
    assert_eq!(c.flow_count(), 1);
    assert_eq!(c.poll_timeout(), Some(t.saturating_add(UDP_TIMEOUT)));
    // Closed while its query was out: nothing left to wake for either.
    let t1 = t.saturating_add(UDP_TIMEOUT);
    c.handle_timeout(t1);
    let a = drain_actions(&mut c);
    let Some(&Action::QuerySpliced { sock }) = a.first() else {
        panic!("{a:?}")
    };
    c.handle_sock_event(t1, sock, SockEvent::Spliced(SpliceTotals::default()));
    assert_eq!(drain_actions(&mut c).len(), 2);
    assert_eq!(c.flow_count(), 0);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn many_flows_expire_in_flow_order_with_a_bounded_heap_cost_each() {
    const N: u16 = 1000;
    let mut c = core(false, false, vec![out(5353, 53)]);
    // One flow per source port, a millisecond apart; every other one sees
    // another datagram a minute later, which moves its expiry on.
    let mut socks = Vec::new();
    for i in 0..N {
        let t = T0.saturating_add(Duration::from_millis(u64::from(i)));
        let peer = format!("127.0.0.1:{}", 20000 + i);
        let a = datagram(&mut c, t, 0, &peer, Some("127.0.0.1"));
        socks.push(joined(&a));
    }
    for i in (0..N).step_by(2) {
        let t = T0.saturating_add(Duration::from_millis(60_000 + u64::from(i)));
        let peer = format!("127.0.0.1:{}", 20000 + i);
        datagram(&mut c, t, 0, &peer, Some("127.0.0.1"));
    }
    assert_eq!(c.flow_count(), usize::from(N));
    let before = c.udp_splice.timers.ops();
    // Nothing moves on any flow: each is asked once at its deadline and
    // ended a second later.
    let end = T0.saturating_add(Duration::from_secs(3600));
    let q = run_until(&mut c, end, |_| SpliceTotals::default());
    let mut want: Vec<(Instant, SockId)> = (0..N)
        .map(|i| {
            let last = u64::from(i) + if i % 2 == 0 { 60_000 } else { 0 };
            let t = T0.saturating_add(Duration::from_millis(last));
            (t.saturating_add(UDP_TIMEOUT), socks[usize::from(i)])
        })
        .collect();
    want.sort();
    assert_eq!(q, want);
    assert_eq!(c.flow_count(), 0);
    assert_eq!(c.udp_splice_stats().timeouts, u64::from(N));
    // A scan per due deadline would visit every flow each time (about
    // N * N / 2 visits); the heap does a bounded number of O(log n)
    // operations per flow: pop at its deadline (a push and a pop more if
    // traffic moved it), the query's push and pop.
    let ops = c.udp_splice.timers.ops() - before;
    assert!(ops <= 5 * u64::from(N), "{ops} heap operations");
}

#[test]
fn flows_due_together_beyond_the_action_queue_are_asked_at_the_next_call() {
    let mut cfg = crate::testutil::capture_config();
    cfg.splice = true;
    cfg.forwards = vec![out(5353, 53)];
    cfg.limits.actions = 16;
    let mut c = Core::new(cfg);
    c.start(T0);
    drain_actions(&mut c);
    let mut socks = Vec::new();
    for i in 0..40u16 {
        let peer = format!("127.0.0.1:{}", 20000 + i);
        let a = datagram(&mut c, T0, 0, &peer, Some("127.0.0.1"));
        socks.push(joined(&a));
    }
    let t1 = T0.saturating_add(UDP_TIMEOUT);
    let mut asked = Vec::new();
    while let Some(t) = c.poll_timeout().filter(|&t| t <= t1) {
        assert_eq!(t, t1);
        c.handle_timeout(t);
        let a = drain_actions(&mut c);
        assert!(!a.is_empty(), "no busy loop");
        asked.extend(a.into_iter().map(|a| match a {
            Action::QuerySpliced { sock } => sock,
            a => panic!("unexpected {a:?}"),
        }));
    }
    // All of them, once each, in flow order.
    assert_eq!(asked, socks);
    assert_eq!(c.poll_timeout(), Some(t1.saturating_add(QUERY_WAIT)));
}
