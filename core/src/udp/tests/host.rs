//! UDP from the host: forwarded ports, their listeners at start and at run
//! time, answers to groups.

use super::*;

// --- forwarded ports (-u) ---------------------------------------------------------

#[test]
fn forwarded_port_remaps_and_replies_survive_the_listener() {
    let mut h = H::new(cfg_fwd("5353:53"));
    let l = listener(&h);
    let ls = &h.socks[&l];
    assert_eq!(ls.family, Some(Family::V6));
    assert_eq!(ls.bind.unwrap().0, sa(Ipv6Addr::UNSPECIFIED, 5353));
    assert!(ls.bind.unwrap().1.reuse_addr && !ls.bind.unwrap().1.v6_only);
    assert_eq!(h.core.socket_count(), 1);
    assert_eq!(h.core.flow_count(), 0);

    let peer = sa(Ipv4Addr::new(192, 0, 2, 9), 1234);
    let mapped = sa(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped(), 1234);
    h.host_many(l, &[(mapped, b"q1".to_vec()), (mapped, b"q2".to_vec())]);
    let f = h.take_frames();
    assert_eq!(f.len(), 2);
    for o in &f {
        assert_eq!(
            (o.src, o.sport, o.dst, o.dport),
            (peer.ip(), 1234, IpAddr::V4(GUEST4), 53)
        );
    }
    assert_eq!(h.core.flow_count(), 1);
    // The flow's own socket: bound like the listener, connected to the peer.
    let s = h.sock_to(mapped);
    assert_eq!(h.socks[&s].bind.unwrap().0, sa(Ipv6Addr::UNSPECIFIED, 5353));
    assert!(h.socks[&s].bind.unwrap().1.reuse_addr);
    // The guest answers from port 53: same flow, its socket.
    h.guest(&[udp(IpAddr::V4(GUEST4), peer.ip(), 53, 1234, b"a1")]);
    assert_eq!(h.socks[&s].sent, vec![b"a1".to_vec()]);
    assert_eq!(h.core.flow_count(), 1);
    // The listener goes away; the flow keeps working both ways.
    h.event(l, SockEvent::Error(Errno::EBADF));
    assert!(h.closed.contains(&l));
    h.host(s, mapped, b"q3");
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].dport, &f[0].payload[..]), (53, &b"q3"[..]));
    h.guest(&[udp(IpAddr::V4(GUEST4), peer.ip(), 53, 1234, b"a2")]);
    assert_eq!(h.socks[&s].sent.len(), 2);
    assert_eq!(h.core.socket_count(), 1);
    // Events on the closed listener are ignored.
    h.event(l, SockEvent::Readable);
}

#[test]
fn forwarded_port_from_loopback_and_ipv6_peers() {
    let mut h = H::new(cfg_fwd("7000"));
    let l = listener(&h);
    h.host_many(
        l,
        &[
            (sa(Ipv6Addr::LOCALHOST, 5000), b"lo6".to_vec()),
            (
                sa(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5001),
                b"lo4".to_vec(),
            ),
            (sa(p6(), 5002), b"real".to_vec()),
            // Not acceptable peers.
            (sa(p6(), 0), b"port0".to_vec()),
            (sa(Ipv6Addr::UNSPECIFIED, 5), b"unspec".to_vec()),
            (
                sa("ff02::1".parse::<Ipv6Addr>().unwrap(), 5),
                b"mc".to_vec(),
            ),
        ],
    );
    let f = h.take_frames();
    assert_eq!(f.len(), 3);
    assert_eq!((f[0].src, f[0].dst), (IpAddr::V6(gw6()), IpAddr::V6(g6())));
    assert_eq!((f[1].src, f[1].dst), (IpAddr::V4(GW4), IpAddr::V4(GUEST4)));
    assert_eq!((f[2].src, f[2].dst), (IpAddr::V6(p6()), IpAddr::V6(g6())));
    assert!(f.iter().all(|o| o.dport == 7000));
    assert_eq!(h.dropped(DropReason::DgramBadEndpoint), 3);
    assert_eq!(h.core.flow_count(), 3);
}

#[test]
fn listener_that_fails_to_open_is_not_counted() {
    let mut cfg = cfg_fwd("6000");
    cfg.guest_mac = Some(GUEST_MAC);
    let mut core = Core::new(cfg);
    core.start(Instant::ZERO);
    let mut sock = None;
    while let Some(a) = core.poll_action() {
        if let Action::Open { sock: s, .. } = a {
            sock = Some(s);
        }
    }
    assert_eq!(core.socket_count(), 1);
    core.handle_sock_event(
        Instant::ZERO,
        sock.unwrap(),
        SockEvent::OpenFailed(Errno::EADDRINUSE),
    );
    assert_eq!(core.socket_count(), 0);
    // --no-udp: no listeners at all.
    let mut cfg = cfg_fwd("6000");
    cfg.features.udp = false;
    let mut core = Core::new(cfg);
    core.start(Instant::ZERO);
    assert!(core.poll_action().is_none());
}

#[test]
fn forwarded_flow_whose_socket_fails_loses_nothing_queued() {
    let mut h = H::new(cfg_fwd("7100"));
    let l = listener(&h);
    // The flow's own socket cannot bind (the listener's port is taken now).
    h.k.busy_ports.insert(7100);
    h.host(l, sa(p6(), 4000), b"first");
    let f = h.take_frames();
    assert_eq!(f.len(), 1, "the datagram still reaches the guest");
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 1, "only the listener");
    assert_eq!(h.core.counters().dropped_total(), 0);
    // The next datagram from that peer tries again.
    h.k.busy_ports.clear();
    h.host(l, sa(p6(), 4000), b"second");
    assert_eq!(h.take_frames().len(), 1);
    assert_eq!(h.core.flow_count(), 1);
    assert_eq!(h.core.socket_count(), 2);
}

#[test]
fn answers_to_a_group_get_flows_of_their_own() {
    let mut h = H::new(capture_config());
    let g = IpAddr::V4(GUEST4);
    let s = h.ssdp_search();
    let (d1, d2) = (sa(PEER4, 1900), sa(Ipv4Addr::new(192, 0, 2, 81), 1901));
    h.host_many(
        s,
        &[
            (d1, b"one".to_vec()),
            (d2, b"two".to_vec()),
            (d1, b"one again".to_vec()),
            (sa(Ipv4Addr::new(224, 0, 0, 1), 5), b"bad".to_vec()),
        ],
    );
    let f = h.take_frames();
    assert_eq!(f.len(), 3);
    assert_eq!((f[0].src, f[0].sport, f[0].dport), (d1.ip(), 1900, 40000));
    assert_eq!((f[1].src, f[1].sport, f[1].dport), (d2.ip(), 1901, 40000));
    assert_eq!(f[2].payload, b"one again");
    assert_eq!(h.dropped(DropReason::DgramBadEndpoint), 1);
    // Each answering peer has a flow with a socket on the guest's port,
    // connected to it; the guest's answer goes there.
    assert_eq!(h.core.flow_count(), 3);
    let s1 = h.sock_from_to(Some(40000), d1);
    assert!(h.socks[&s1].bind.unwrap().1.reuse_addr);
    h.guest(&[udp(g, d1.ip(), 40000, 1900, b"GET")]);
    assert_eq!(h.socks[&s1].sent, vec![b"GET".to_vec()]);
    assert_eq!(h.core.flow_count(), 3);
    // Later datagrams of that peer arrive on its own socket.
    h.host(s1, d1, b"200 OK");
    assert_eq!(h.take_frames()[0].payload, b"200 OK");
    h.run_for(181_000);
    assert_eq!(h.core.flow_count(), 0);
}

/// A dual-stack listener asks for the IPv4 room, so that the largest IPv4
/// datagram (65 507 bytes) fits a driver's buffer of one Ethernet frame of
/// 65 535 bytes of IP; an IPv6 peer's payload is moved up behind its longer
/// headers; what does not fit is dropped and counted.
#[test]
fn dual_stack_listener_fits_the_largest_datagrams() {
    const SLOT: usize = 65535 + 14 + 1;
    let mut h = H::new(cfg_fwd("7000"));
    let l = listener(&h);
    assert_eq!(h.core.recv_room(l), 42);
    let cases: [(SocketAddr, usize, bool); 3] = [
        (sa(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5001), 65507, true),
        (sa(Ipv6Addr::LOCALHOST, 5000), 65472, true),
        (sa(p6(), 5002), SLOT - 62 + 1, false),
    ];
    for (peer, len, fits) in cases {
        let mut buf = vec![0u8; SLOT];
        for (i, b) in buf[42..42 + len.min(SLOT - 42)].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut d = [RxDatagram::new(&mut buf, len, peer)];
        let n = h.core.handle_datagrams(h.now, l, &mut d);
        assert_eq!(n, usize::from(fits), "{peer} {len}");
        if fits {
            assert_eq!(d[0].frame_start, 0);
            let o = parse_out(d[0].frame().unwrap());
            assert_eq!(o.payload.len(), len);
            assert!(o.payload.iter().enumerate().all(|(i, &b)| b == i as u8));
            assert_eq!(o.dport, 7000);
        }
    }
    assert_eq!(h.dropped(DropReason::DgramMalformed), 1);
}

// --- run-time forwards (-u auto) ----------------------------------------------------

fn listeners(h: &H) -> Vec<(SockId, SocketAddr)> {
    let mut v: Vec<_> = h
        .socks
        .iter()
        .filter(|(id, _)| id.0 & LISTENER_BIT != 0)
        .map(|(id, s)| (*id, s.bind.unwrap().0))
        .collect();
    v.sort_by_key(|(_, a)| a.port());
    v
}

#[test]
fn set_forwards_opens_new_closes_unlisted_and_keeps_flows() {
    let mut h = H::new(cfg_fwd("none"));
    assert!(listeners(&h).is_empty());
    h.core
        .set_forwards(h.now, &[ufwd(5000, 5000), ufwd(6000, 60)]);
    h.drain(&[]);
    let ls = listeners(&h);
    let ports: Vec<u16> = ls.iter().map(|(_, a)| a.port()).collect();
    assert_eq!(ports, vec![5000, 6000]);
    assert_eq!(h.core.socket_count(), 2);
    let l5 = ls[0].0;
    let l6 = ls[1].0;

    // A peer writes to 6000: a flow to guest port 60.
    let peer = sa(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped(), 1234);
    h.host(l6, peer, b"x");
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].dport, 60);
    let flow_sock = h.sock_to(peer);

    // 6000 goes away, 7000 appears, 5000 stays (same socket).
    h.actions.clear();
    h.core
        .set_forwards(h.now, &[ufwd(7000, 7000), ufwd(5000, 5000)]);
    h.drain(&[]);
    assert!(h.closed.contains(&l6));
    assert!(!h.closed.contains(&l5));
    let ls = listeners(&h);
    let ports: Vec<u16> = ls.iter().map(|(_, a)| a.port()).collect();
    assert_eq!(ports, vec![5000, 7000]);
    assert_eq!(ls[0].0, l5);
    // The freed slot is reused.
    assert_eq!(ls[1].0, l6);
    let opens = h
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Open { .. }))
        .count();
    assert_eq!(opens, 1, "only the new port opens");
    // The flow survives, both ways.
    h.host(flow_sock, peer, b"y");
    assert_eq!(h.take_frames().len(), 1);
    h.guest(&[udp(
        IpAddr::V4(GUEST4),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
        60,
        1234,
        b"z",
    )]);
    assert_eq!(h.socks[&flow_sock].sent, vec![b"z".to_vec()]);
    assert_eq!(h.core.socket_count(), 3);

    // Unchanged set: nothing to do. Same ports with a new target: no
    // socket churn, new target used.
    h.actions.clear();
    h.core
        .set_forwards(h.now, &[ufwd(5000, 5000), ufwd(7000, 7000)]);
    h.core
        .set_forwards(h.now, &[ufwd(5000, 55), ufwd(7000, 7000)]);
    h.drain(&[]);
    assert!(h.actions.is_empty(), "{:?}", h.actions);
    h.host(l5, sa(p6(), 999), b"t");
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].dport, 55);

    // Empty set: every listener closes, the flows stay.
    h.core.set_forwards(h.now, &[]);
    h.drain(&[]);
    assert!(listeners(&h).is_empty());
    assert_eq!(h.core.socket_count(), 2);
    assert_eq!(h.core.flow_count(), 2);
}

#[test]
fn set_forwards_replaces_configured_listeners_and_honours_addresses() {
    let mut h = H::new(cfg_fwd("5353:53"));
    let l = listener(&h);
    let v4 = Forward {
        addr: Some(Ipv4Addr::LOCALHOST.into()),
        ..ufwd(5353, 53)
    };
    // Same port on another address: a different forward.
    h.core.set_forwards(h.now, &[v4]);
    h.drain(&[]);
    assert!(h.closed.contains(&l));
    let ls = listeners(&h);
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].1, sa(Ipv4Addr::LOCALHOST, 5353));
    assert_eq!(h.socks[&ls[0].0].family, Some(Family::V4));
    // A listener that failed to open is not reopened while listed, and
    // is not closed again when it goes.
    h.event(ls[0].0, SockEvent::OpenFailed(Errno::EADDRINUSE));
    // (The driver has no socket left under a failed id.)
    h.socks.remove(&ls[0].0);
    let n = h.closed.len();
    h.core.set_forwards(h.now, &[]);
    h.drain(&[]);
    assert_eq!(h.closed.len(), n);
    assert_eq!(h.core.socket_count(), 0);
    // Duplicates: the first listing wins, one socket.
    h.core.set_forwards(h.now, &[ufwd(9000, 1), ufwd(9000, 2)]);
    h.drain(&[]);
    let ls = listeners(&h);
    assert_eq!(ls.len(), 1);
    h.host(ls[0].0, sa(p6(), 999), b"d");
    assert_eq!(h.take_frames()[0].dport, 1);
}

#[test]
fn set_forwards_without_udp_does_nothing() {
    let mut cfg = cfg_fwd("none");
    cfg.features.udp = false;
    let mut h = H::new(cfg);
    h.core.set_forwards(h.now, &[ufwd(5000, 5000)]);
    h.drain(&[]);
    assert!(h.socks.is_empty());
}

proptest! {
    /// Any sequence of forward sets leaves exactly the last set's ports
    /// listening, one socket each.
    #[test]
    fn set_forwards_sequences_end_in_the_last_set(
        sets in proptest::collection::vec(
            proptest::collection::vec(1000u16..1016, 0..8), 1..8)
    ) {
        let mut h = H::new(cfg_fwd("none"));
        for set in &sets {
            let f: Vec<_> = set.iter().map(|&p| ufwd(p, p)).collect();
            h.core.set_forwards(h.now, &f);
            h.drain(&[]);
        }
        let mut want: Vec<u16> = sets.last().unwrap().clone();
        want.sort_unstable();
        want.dedup();
        let got: Vec<u16> = listeners(&h).iter().map(|(_, a)| a.port()).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(h.core.socket_count(), want.len());
    }
}
