//! Listeners of forwarded ports: the forwarding table, TCP_MAXSEG,
//! listeners replaced at run time.

use super::*;

#[test]
fn listeners_from_forwarding_table() {
    let mut cfg = capture_config();
    // -t 8080:80 -t 192.0.2.1/9000-9001
    cfg.forwards = vec![
        Forward::new(Proto::Tcp, 8080, 80),
        Forward {
            addr: Some("192.0.2.1".parse().unwrap()),
            last: 9001,
            ..Forward::new(Proto::Tcp, 9000, 9000)
        },
    ];
    let mut h = H::new(cfg);
    h.core.start(h.now);
    h.drain(&[]);
    let binds: Vec<SocketAddr> = h
        .take_actions()
        .iter()
        .filter_map(|a| match a {
            Action::Bind { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect();
    assert_eq!(
        binds,
        vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080),
            SocketAddr::new("192.0.2.1".parse().unwrap(), 9000),
            SocketAddr::new("192.0.2.1".parse().unwrap(), 9001),
        ]
    );
    assert_eq!(h.core.socket_count(), 3);
    // A connection on 8080 reaches the guest on port 80.
    let lst = SockId(LISTENER_BIT);
    let sock = h.accept(lst);
    let peer = SocketAddr::new(v4(PEER4), 7777);
    h.event(sock, SockEvent::Accepted(Ok((peer, peer))));
    let f = h.take_frames();
    assert_eq!((f[0].sport, f[0].dport), (7777, 80));
}

// --- TCP_MAXSEG, run-time listeners ----------------------------------------------

#[test]
fn maxseg_option_clamped_to_what_linux_accepts() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 80);
    h.guest(&[g
        .seq(1)
        .syn()
        .opts(vec![TcpOptionElement::MaximumSegmentSize(65000)])]);
    let sock = h.only_sock();
    assert_eq!(h.sock(sock).mss, Some(32767));
}

fn binds_and_closes(h: &mut H) -> (Vec<(SockId, SocketAddr)>, Vec<SockId>) {
    let acts = h.take_actions();
    let binds = acts
        .iter()
        .filter_map(|a| match a {
            Action::Bind { sock, addr, .. } => Some((*sock, *addr)),
            _ => None,
        })
        .collect();
    let closes = acts
        .iter()
        .filter_map(|a| match a {
            Action::Close { sock } => Some(*sock),
            _ => None,
        })
        .collect();
    (binds, closes)
}

/// Replaces the forwards with `fwds` and carries out what follows (up to
/// 30 000 actions): the binds and closes among it.
fn reforward(h: &mut H, fwds: &[Forward]) -> (Vec<(SockId, SocketAddr)>, Vec<SockId>) {
    h.core.set_forwards(h.now, fwds);
    for _ in 0..3 {
        h.drain(&[]); // at most 10 000 actions each
    }
    binds_and_closes(h)
}

#[test]
fn tcp_forwards_replaced_at_run_time() {
    let fwd = |port, target_port| Forward::new(Proto::Tcp, port, target_port);
    let mut cfg = capture_config();
    cfg.forwards = vec![fwd(8080, 80)];
    let mut h = H::new(cfg);
    h.core.start(h.now);
    h.drain(&[]);
    let (b, _) = binds_and_closes(&mut h);
    assert_eq!(b.len(), 1);
    let l8080 = b[0].0;
    // A connection through 8080.
    let sock = h.accept(l8080);
    let peer = SocketAddr::new(v4(PEER4), 7777);
    h.event(sock, SockEvent::Accepted(Ok((peer, peer))));
    assert!(h.take_frames()[0].syn);
    assert_eq!(h.core.socket_count(), 2);

    // Add 9000: only it is opened.
    let (b, c) = reforward(&mut h, &[fwd(8080, 80), fwd(9000, 90)]);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1.port(), 9000);
    assert!(c.is_empty());
    let l9000 = b[0].0;
    assert_eq!(h.core.socket_count(), 3);

    // Drop 8080, retarget 9000: the connection stays.
    let (b, c) = reforward(&mut h, &[fwd(9000, 91)]);
    assert!(b.is_empty());
    assert_eq!(c, vec![l8080]);
    assert_eq!(h.core.flow_count(), 1);
    assert!(!h.closed.contains(&sock));
    assert_eq!(h.core.socket_count(), 2);
    let s2 = h.accept(l9000);
    h.event(s2, SockEvent::Accepted(Ok((peer, peer))));
    assert_eq!(h.take_frames()[0].dport, 91, "the new target port");

    // A new forward fails to open: reported, counted, out of socket_count.
    let (b, _) = reforward(&mut h, &[fwd(9000, 91), fwd(22, 22)]);
    assert_eq!(b.len(), 1);
    assert_eq!(h.core.failed_forwards().count(), 0);
    h.event(b[0].0, SockEvent::OpenFailed(Errno::EACCES));
    assert_eq!(
        h.core
            .failed_forwards()
            .map(|f| (f.forward, f.error))
            .collect::<Vec<_>>(),
        vec![(fwd(22, 22), Some(Errno::EACCES))]
    );
    assert_eq!(h.core.listen_stats().failures, 1);
    assert_eq!(h.core.socket_count(), 3);
    // Unlisting it clears the report; the same set again changes nothing.
    h.core.set_forwards(h.now, &[fwd(9000, 91)]);
    h.drain(&[]);
    assert_eq!(h.core.failed_forwards().count(), 0);
    let (b, c) = reforward(&mut h, &[fwd(9000, 91), fwd(9000, 91)]);
    assert!(b.is_empty() && c.is_empty());
    assert_eq!(h.core.socket_count(), 3);
}

#[test]
fn tcp_forwards_many_ports_reuse_slots() {
    let fwd = |port: u16| Forward::new(Proto::Tcp, port, port);
    let mut h = H::new(capture_config());
    let a: Vec<Forward> = (1000..6000).map(fwd).collect();
    let (b, c) = reforward(&mut h, &a);
    assert_eq!((b.len(), c.len()), (5000, 0));
    // Shift the range by 1000: 1000 closed, 1000 opened in the freed slots.
    let b2: Vec<Forward> = (2000..7000).map(fwd).collect();
    let (b, c) = reforward(&mut h, &b2);
    assert_eq!((b.len(), c.len()), (1000, 1000));
    let mut closed: Vec<SockId> = c;
    let mut reused: Vec<SockId> = b.iter().map(|(s, _)| *s).collect();
    closed.sort_by_key(|s| s.0);
    reused.sort_by_key(|s| s.0);
    assert_eq!(closed, reused, "freed listener slots are taken again");
    assert!(b.iter().all(|(_, a)| (6000..7000).contains(&a.port())));
    assert_eq!(h.core.socket_count(), 5000);
}
