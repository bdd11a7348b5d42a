//! UDP from the guest: flows, groups, address mapping, DNS forwarding,
//! expiry, switches, hostile input.

use super::*;

// --- UDP from the guest ------------------------------------------------------

#[test]
fn guest_flow_keeps_source_port_and_batches_per_flow() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[
        udp(g, p, 40000, 5000, b"one"),
        udp(g, p, 40001, 5000, b"other flow"),
        udp(g, p, 40000, 5000, b"two"),
        udp(g, p, 40000, 5000, b""),
    ]);
    let s = h.sock_from_to(Some(40000), sa(PEER4, 5000));
    let fs = &h.socks[&s];
    assert_eq!(fs.kind, Some(SockKind::Udp));
    assert_eq!(fs.family, Some(Family::V4));
    assert_eq!(fs.bind.unwrap().0, sa(Ipv4Addr::UNSPECIFIED, 40000));
    assert!(fs.bind.unwrap().1.reuse_addr, "one source port, many peers");
    assert_eq!(fs.sends, 1, "one SendDatagrams for the flow's batch");
    assert_eq!(fs.sent, vec![b"one".to_vec(), b"two".to_vec(), vec![]]);
    assert!(fs.interest.unwrap().readable && !fs.interest.unwrap().edge);
    let sends = h
        .take_actions()
        .iter()
        .filter(|a| matches!(a, Action::SendDatagrams { .. }))
        .count();
    assert_eq!(sends, 2, "one per flow");
    assert_eq!(h.core.flow_count(), 2);
    assert_eq!(h.core.socket_count(), 2);
    // The next batch reuses the flows.
    h.guest(&[udp(g, p, 40000, 5000, b"three")]);
    assert_eq!(h.socks[&s].sent.len(), 4);
    assert_eq!(h.core.flow_count(), 2);
    assert_eq!(h.core.udp_stats().udp_opened, 2);
    assert_eq!(h.core.udp_stats().to_host, 5);
    assert_eq!(h.core.counters().dropped_total(), 0);
}

#[test]
fn replies_are_framed_in_the_slots_both_families() {
    let mut h = H::new(capture_config());
    for (g, p) in both_families() {
        let s = h.flow_to(g, p, 40000, 7, b"ping");
        if p.is_ipv6() {
            assert_eq!(
                h.socks[&s].bind.unwrap().0,
                sa(Ipv6Addr::UNSPECIFIED, 40000)
            );
            assert!(h.socks[&s].bind.unwrap().1.v6_only);
        }
        let big = vec![0x5a; 1400];
        h.host_many(
            s,
            &[
                (sa(p, 7), b"pong".to_vec()),
                (sa(p, 7), vec![]),
                (sa(p, 7), big.clone()),
            ],
        );
        let f = h.take_frames();
        assert_eq!(f.len(), 3);
        for o in &f {
            assert_eq!((o.src, o.dst, o.sport, o.dport), (p, g, 7, 40000));
        }
        assert_eq!(f[0].payload, b"pong");
        assert!(f[1].payload.is_empty());
        assert_eq!(f[2].payload, big);
    }
    assert_eq!(h.core.udp_stats().to_guest, 6);
    assert_eq!(h.core.counters().dropped_total(), 0);
}

#[test]
fn datagrams_from_other_peers_or_too_large_are_dropped() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    let s = h.flow_to(g, p, 40000, 7, b"x");
    h.host(s, sa(PEER4, 8), b"wrong port");
    h.host(s, sa(Ipv4Addr::new(192, 0, 2, 81), 7), b"wrong host");
    assert!(h.take_frames().is_empty());
    assert_eq!(h.dropped(DropReason::DgramMalformed), 0);
    // A datagram longer than the slot (truncated by the driver).
    let mut buf = vec![0u8; 100];
    let mut d = [RxDatagram::new(&mut buf, 200, sa(p, 7))];
    assert_eq!(h.core.handle_datagrams(h.now, s, &mut d), 0);
    assert_eq!(d[0].frame_len, 0);
    assert_eq!(h.dropped(DropReason::DgramMalformed), 1);
    // Unknown and stale sockets.
    let mut buf = vec![0u8; 100];
    let mut d = [RxDatagram::new(&mut buf, 4, sa(p, 7))];
    assert_eq!(h.core.handle_datagrams(h.now, SockId(12345), &mut d), 0);
    assert_eq!(
        h.core
            .handle_datagrams(h.now, SockId(LISTENER_BIT | UDP_LISTENER_BIT | 9), &mut d),
        0
    );
}

#[test]
fn bind_failure_drops_and_counts() {
    let mut h = H::new(capture_config());
    h.k.busy_ports.insert(40000);
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[udp(g, p, 40000, 7, b"a"), udp(g, p, 40000, 7, b"b")]);
    assert_eq!(h.dropped(DropReason::DgramSocketFailed), 2);
    h.assert_empty();
    // Another port works.
    h.guest(&[udp(g, p, 40002, 7, b"c")]);
    assert_eq!(h.core.flow_count(), 1);
}

#[test]
fn partial_and_failed_sends_are_counted_fatal_errors_end_the_flow() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.k.send_limit = Some(1);
    h.guest(&[udp(g, p, 40000, 7, b"a"), udp(g, p, 40000, 7, b"b")]);
    assert_eq!(h.dropped(DropReason::DgramSocketFailed), 1);
    let s = h.sock_to(sa(p, 7));
    // ICMP errors queued on the socket (IP_RECVERR) do not end the flow.
    h.event(s, SockEvent::Error(Errno::ECONNREFUSED));
    h.event(s, SockEvent::Error(Errno::EHOSTUNREACH));
    // Nor does the kernel's want of memory for one datagram.
    h.event(s, SockEvent::Error(Errno::ENOMEM));
    assert_eq!(h.core.flow_count(), 1);
    assert_eq!(h.core.udp_stats().sock_errors, 3);
    h.event(s, SockEvent::Error(Errno::EBADF));
    h.assert_empty();
    assert_eq!(h.closed, vec![s]);
    // Events for the old id are ignored.
    h.event(s, SockEvent::Readable);
    assert!(h
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Recv { .. })));
}

#[test]
fn multicast_and_broadcast_destinations_are_allowed() {
    let mut h = H::new(capture_config());
    let g = IpAddr::V4(GUEST4);
    // Not connected: each datagram names the group.
    let s = h.ssdp_search();
    assert!(!h.socks[&s].broadcast);
    assert_eq!(h.socks[&s].sent, vec![b"M-SEARCH".to_vec()]);
    let bc = IpAddr::V4(Ipv4Addr::BROADCAST);
    h.guest(&[udp(g, bc, 40001, 9, b"wol")]);
    assert!(h.socks[&h.sock_sent_to(sa(bc, 9))].broadcast);
    let dbc = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 255));
    h.guest(&[udp(g, dbc, 40002, 9, b"wol")]);
    assert!(h.socks[&h.sock_sent_to(sa(dbc, 9))].broadcast);
    let mc6: IpAddr = "ff02::fb".parse().unwrap();
    h.guest(&[udp(IpAddr::V6(g6()), mc6, 5353, 5353, b"mdns")]);
    h.sock_sent_to(sa(mc6, 5353));
    assert_eq!(h.core.flow_count(), 4);
    assert!(h.socks.values().all(|s| s.connect.is_none()));
    // Port 0 and unspecified sources are not.
    h.guest(&[
        udp(g, IpAddr::V4(PEER4), 40000, 0, b"x"),
        udp(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(PEER4),
            1,
            2,
            b"x",
        ),
    ]);
    assert_eq!(h.dropped(DropReason::DgramBadEndpoint), 2);
    assert_eq!(h.core.flow_count(), 4);
}

#[test]
fn gateway_maps_to_host_loopback_and_back() {
    let mut h = H::new(capture_config());
    for (g, gw, lo) in [
        (
            IpAddr::V4(GUEST4),
            IpAddr::V4(GW4),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ),
        (
            IpAddr::V6(g6()),
            IpAddr::V6(gw6()),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ),
    ] {
        h.guest(&[udp(g, gw, 40000, 8080, b"q")]);
        let s = h.sock_to(sa(lo, 8080));
        h.host(s, sa(lo, 8080), b"r");
        let f = h.take_frames();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].src, f[0].sport, f[0].dst, f[0].dport),
            (gw, 8080, g, 40000)
        );
    }
}

#[test]
fn map_guest_addr_both_ways() {
    let mut cfg = capture_config();
    cfg.ip4.as_mut().unwrap().map_guest_addr = Some(Ipv4Addr::new(10, 77, 0, 9));
    let mut h = H::new(cfg);
    let g = IpAddr::V4(GUEST4);
    h.guest(&[udp(
        g,
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9)),
        40000,
        99,
        b"q",
    )]);
    // The guest's assigned address is the host's own.
    let s = h.sock_to(sa(GUEST4, 99));
    h.host(s, sa(GUEST4, 99), b"r");
    let f = h.take_frames();
    assert_eq!(f[0].src, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9)));
}

// --- DNS forwarding ------------------------------------------------------------

#[test]
fn dns_forward_udp_and_back_from_dns_match() {
    let mut h = H::new(cfg_dns());
    for (g, m, host) in [
        (IpAddr::V4(GUEST4), "10.77.0.3", "192.0.2.53"),
        (IpAddr::V6(g6()), "fd77::3", "2001:db8::53"),
    ] {
        let m: IpAddr = m.parse().unwrap();
        let host: IpAddr = host.parse().unwrap();
        for port in [53, 853] {
            h.guest(&[udp(g, m, 33333, port, b"query")]);
            let s = h.sock_to(sa(host, port));
            assert_eq!(h.socks[&s].sent, vec![b"query".to_vec()]);
            h.host(s, sa(host, port), b"answer");
            let f = h.take_frames();
            assert_eq!(f.len(), 1);
            assert_eq!(
                (f[0].src, f[0].sport, f[0].dst, f[0].dport),
                (m, port, g, 33333)
            );
            assert_eq!(f[0].payload, b"answer");
        }
        // Other ports to the same address are not redirected.
        h.guest(&[udp(g, m, 33333, 5353, b"x")]);
        h.sock_to(sa(m, 5353));
    }
}

#[test]
fn dns_host_peers_are_not_translated_back_unless_remapped() {
    let mut h = H::new(cfg_dns());
    // The guest talks to the resolver by its real address: no remapping,
    // replies come from that address.
    let g = IpAddr::V4(GUEST4);
    let host = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));
    let s = h.flow_to(g, host, 33334, 53, b"direct");
    h.host(s, sa(host, 53), b"a");
    assert_eq!(h.take_frames()[0].src, host);
}

#[test]
fn dns_forward_tcp() {
    let mut h = H::new(cfg_dns());
    let g = IpAddr::V4(GUEST4);
    let syn = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0)
        .ipv4(GUEST4.octets(), [10, 77, 0, 3], 64)
        .tcp(44444, 53, 1000, 65535)
        .syn();
    let mut f = Vec::new();
    syn.write(&mut f, &[]).unwrap();
    let mut buf = Vec::new();
    let refs = [FrameRef {
        offset: 0,
        len: f.len() as u32,
    }];
    buf.extend_from_slice(&f);
    h.core
        .handle_tap_batch(h.now, &FrameBatch::new(&buf, &refs));
    let mut connect = None;
    let mut sock = None;
    while let Some(a) = h.core.poll_action() {
        match a {
            Action::Open {
                sock: s,
                kind: SockKind::TcpStream,
                ..
            } => sock = Some(s),
            Action::Connect { addr, .. } => connect = Some(addr),
            _ => {}
        }
    }
    assert_eq!(connect, Some(sa(Ipv4Addr::new(192, 0, 2, 53), 53)));
    let sock = sock.unwrap();
    h.core
        .handle_sock_event(h.now, sock, SockEvent::Connected(Ok(())));
    h.core.handle_sock_event(
        h.now,
        sock,
        SockEvent::TcpInfo(crate::action::TcpInfo {
            sndbuf: 1 << 20,
            ..Default::default()
        }),
    );
    while h.core.poll_action().is_some() {}
    let mut tx = vec![0u8; 70000];
    let n = h.core.poll_frame(&mut tx).expect("SYN-ACK");
    let p = SlicedPacket::from_ethernet(&tx[..n]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source_addr(), Ipv4Addr::new(10, 77, 0, 3));
    assert_eq!(IpAddr::V4(ip.header().destination_addr()), g);
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!()
    };
    assert!(t.syn() && t.ack());
    assert_eq!(t.source_port(), 53);
}

// --- expiry --------------------------------------------------------------------------

#[test]
fn udp_flows_expire_after_180s_idle_active_ones_stay() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[udp(g, p, 40000, 7, b"idle"), udp(g, p, 40001, 7, b"busy")]);
    let busy = h.sock_from_to(Some(40001), sa(p, 7));
    assert!(h.core.poll_timeout().is_some());
    h.run_for(100_000);
    // Traffic from the host keeps a flow alive too.
    h.host(busy, sa(p, 7), b"still here");
    h.run_for(79_999);
    assert_eq!(h.core.flow_count(), 2, "nothing expires before 180 s");
    h.run_for(2);
    assert_eq!(h.core.flow_count(), 1, "the idle flow is gone at 180 s");
    assert!(h.socks.contains_key(&busy));
    h.run_for(99_000);
    assert_eq!(h.core.flow_count(), 1);
    h.run_for(2_000);
    h.assert_empty();
    assert_eq!(h.core.udp_stats().timeouts, 2);
    assert!(h.socks.is_empty());
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn switches_turn_udp_and_icmp_off() {
    let mut cfg = capture_config();
    cfg.features.udp = false;
    cfg.features.icmp = false;
    let mut h = H::new(cfg);
    h.guest(&[
        udp(IpAddr::V4(GUEST4), IpAddr::V4(PEER4), 1, 2, b"x"),
        ping(IpAddr::V4(GUEST4), IpAddr::V4(PEER4), 1, 1, b""),
    ]);
    assert_eq!(h.dropped(DropReason::ProtocolDisabled), 2);
    assert!(h.take_actions().is_empty());
}

#[test]
fn full_table_refuses_new_flows() {
    let mut cfg = capture_config();
    cfg.limits.flows = 2;
    let mut h = H::new(cfg);
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[
        udp(g, p, 1, 7, b""),
        udp(g, p, 2, 7, b""),
        udp(g, p, 3, 7, b""),
    ]);
    h.guest(&[ping(g, p, 1, 1, b"")]);
    assert_eq!(h.dropped(DropReason::FlowTableFull), 2);
    assert_eq!(
        h.core.counters().dropped_total(),
        2,
        "each drop counted once"
    );
    assert_eq!(h.core.flow_count(), 2);
}

// --- hostile input ----------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random guest datagrams and echo messages, random host datagrams with
    /// random peers and lengths, random socket events: no panic, every
    /// frame re-parses with valid checksums, and everything closes in time.
    #[test]
    fn hostile_inputs_never_panic_and_flows_return_to_zero(
        guest in proptest::collection::vec((any::<bool>(), any::<u8>(), 0u16..4, 0u16..4, proptest::collection::vec(any::<u8>(), 0..40), 0usize..60), 1..20),
        host in proptest::collection::vec((any::<u8>(), 0u16..4, 0usize..300, any::<bool>()), 0..20),
        events in proptest::collection::vec((any::<u8>(), 0u8..6), 0..10),
    ) {
        let mut h = H::new(cfg_fwd("7000"));
        let l = listener(&h);
        let g4 = IpAddr::V4(GUEST4);
        for (v6, kind, sp, dp, data, cut) in guest {
            let (g, p) = if v6 { (IpAddr::V6(g6()), IpAddr::V6(p6())) } else { (g4, IpAddr::V4(PEER4)) };
            let mut f = if kind % 3 == 0 {
                ping(g, p, sp, dp, &data)
            } else {
                udp(g, p, 40000 + sp, 7 + dp, &data)
            };
            // Corrupt a byte and maybe cut the frame.
            if let Some(b) = f.get_mut(14 + usize::from(kind) % 60) {
                if kind % 5 == 0 { *b ^= kind; }
            }
            if cut > 0 { f.truncate(f.len().saturating_sub(cut)); }
            h.guest(&[f]);
        }
        let socks: Vec<SockId> = {
            let mut v: Vec<_> = h.socks.keys().copied().collect();
            v.sort();
            v
        };
        for (i, port, len, mapped) in host {
            let Some(&s) = socks.get(usize::from(i) % socks.len().max(1)) else { continue };
            if !h.socks.contains_key(&s) { continue; }
            let ip: IpAddr = match i % 4 {
                0 => IpAddr::V4(PEER4),
                1 => IpAddr::V6(p6()),
                2 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                _ => IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            };
            let ip = if mapped { IpAddr::V6(match ip { IpAddr::V4(a) => a.to_ipv6_mapped(), IpAddr::V6(a) => a }) } else { ip };
            let mut d = vec![i; len];
            if let Some(b) = d.first_mut() { *b = if i % 2 == 0 { 0 } else { 129 }; }
            h.host(s, SocketAddr::new(ip, 7 + port), &d);
        }
        for (i, e) in events {
            let Some(&s) = socks.get(usize::from(i) % socks.len().max(1)) else { continue };
            if !h.socks.contains_key(&s) || s == l { continue; }
            let ev = match e {
                0 => SockEvent::Error(Errno::ECONNREFUSED),
                1 => SockEvent::Error(Errno::EBADF),
                2 => SockEvent::Readable,
                3 => SockEvent::Sent(Err(Errno::EAGAIN)),
                4 => SockEvent::HangUp,
                _ => SockEvent::Writable,
            };
            h.event(s, ev);
        }
        h.run_for(181_000);
        prop_assert_eq!(h.core.flow_count(), 0);
        prop_assert_eq!(h.core.socket_count(), 1);
        prop_assert_eq!(h.socks.len(), 1);
    }
}

#[test]
fn ten_thousand_datagrams_echo_in_order() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    let mut seen = 0u32;
    for batch in 0..100u32 {
        let frames: Vec<Vec<u8>> = (0..100u32)
            .map(|i| udp(g, p, 40000, 7, &(batch * 100 + i).to_be_bytes()))
            .collect();
        h.guest(&frames);
        let s = h.sock_to(sa(p, 7));
        let sent = core::mem::take(&mut h.socks.get_mut(&s).unwrap().sent);
        assert_eq!(sent.len(), 100);
        let echo: Vec<_> = sent.into_iter().map(|d| (sa(p, 7), d)).collect();
        // The driver receives at most 32 per Recv; level-triggered
        // readiness asks again while data is queued.
        h.socks.get_mut(&s).unwrap().rx.extend(echo);
        while !h.socks[&s].rx.is_empty() {
            h.event(s, SockEvent::Readable);
        }
        for o in h.take_frames() {
            assert_eq!(o.payload, seen.to_be_bytes());
            assert_eq!((o.sport, o.dport), (7, 40000));
            seen += 1;
        }
    }
    assert_eq!(seen, 10_000);
    assert_eq!(h.core.flow_count(), 1);
    assert_eq!(h.core.counters().dropped_total(), 0);
    assert_eq!(h.core.udp_stats().to_host, 10_000);
    assert_eq!(h.core.udp_stats().to_guest, 10_000);
}

#[test]
fn one_source_port_to_many_peers() {
    let mut h = H::new(capture_config());
    let g = IpAddr::V4(GUEST4);
    let peers = [
        PEER4,
        Ipv4Addr::new(192, 0, 2, 81),
        Ipv4Addr::new(198, 51, 100, 1),
    ];
    let frames: Vec<_> = peers
        .iter()
        .map(|&p| udp(g, IpAddr::V4(p), 5000, 53, b"q"))
        .collect();
    h.guest(&frames);
    assert_eq!(h.core.flow_count(), 3);
    for p in peers {
        let s = h.sock_from_to(Some(5000), sa(p, 53));
        h.host(s, sa(p, 53), b"a");
        let f = h.take_frames();
        assert_eq!(
            (f[0].src, f[0].sport, f[0].dport),
            (IpAddr::V4(p), 53, 5000)
        );
    }
}
