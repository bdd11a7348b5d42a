//! Handshakes both ways: guest connects, host peers accepted on forwarded
//! ports, lost handshake segments, SYNs on open connections.

use super::*;

// --- handshakes -------------------------------------------------------------

#[test]
fn guest_connect_v4() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 80);
    h.guest(&[g.clone().seq(1000).syn().opts(vec![
        TcpOptionElement::MaximumSegmentSize(1400),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ])]);
    let sock = h.only_sock();
    let acts = h.take_actions();
    assert!(matches!(
        acts[0],
        Action::Open {
            kind: SockKind::TcpStream,
            family: Family::V4,
            netns: Netns::Host,
            ..
        }
    ));
    assert!(acts.contains(&Action::SetOption {
        sock,
        opt: SockOpt::TcpMaxSeg(1400)
    }));
    // No Nagle of the socket's own on top of the guest's.
    assert!(acts.contains(&Action::SetOption {
        sock,
        opt: SockOpt::NoDelay
    }));
    assert_eq!(
        acts.last(),
        Some(&Action::Connect {
            sock,
            addr: SocketAddr::new(v4(PEER4), 80)
        })
    );
    assert_eq!(h.core.flow_count(), 1);
    // A retransmitted SYN while connecting changes nothing.
    h.guest(&[g.clone().seq(1000).syn()]);
    assert_eq!(h.core.flow_count(), 1);
    assert!(h.take_frames().is_empty());
    h.event(sock, SockEvent::Connected(Ok(())));
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    let sa = &f[0];
    assert!(sa.syn && sa.ackf);
    assert_eq!(
        (sa.src, sa.dst, sa.sport, sa.dport),
        (v4(PEER4), v4(GUEST4), 80, 40000)
    );
    assert_eq!(sa.ack, 1001);
    // MSS, NOP, window scale: nothing else.
    assert_eq!(
        sa.opts,
        vec![
            TcpOptionElement::MaximumSegmentSize(61440),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(8)
        ]
    );
    assert!(u32::from(sa.win) <= 1 << 20);
    h.guest(&[g.seq(1001).ack(sa.seq.wrapping_add(1))]);
    assert!(h.take_frames().is_empty());
    assert_eq!(h.core.tcp_stats().opened, 1);
}

#[test]
fn guest_connect_v6_without_window_scale() {
    let mut cfg = capture_config();
    cfg.mtu = Some(1500);
    let mut c = connect(cfg, IpAddr::V6(g6()), IpAddr::V6(p6()), None);
    // Data from the host: frames fit the MTU, windows unscaled.
    c.host_sends(vec![7u8; 3000]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 3);
    assert!(f.iter().all(|o| o.payload.len() <= 1440));
    assert_eq!(f[0].seq, c.our);
    assert_eq!(f[0].src, IpAddr::V6(p6()));
}

#[test]
fn gateway_maps_to_host_loopback_and_local_acks_at_once() {
    let mut c = connect(
        capture_config(),
        v4(GUEST4),
        v4(Ipv4Addr::new(10, 77, 0, 1)),
        Some(7),
    );
    let s = c.h.sock(c.sock);
    assert_eq!(
        s.connect,
        Some(SocketAddr::new(v4(Ipv4Addr::LOCALHOST), 80))
    );
    // Local peer: data is acknowledged without the 10 ms delay.
    c.data_acked_at_once(b"hello");
}

#[test]
fn refused_connect_resets_at_once() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 81);
    h.guest(&[g.seq(5).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Err(Errno::ECONNREFUSED)));
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && f[0].ackf);
    assert_eq!(f[0].ack, 6);
    assert!(h.closed.contains(&sock));
    h.assert_empty();
}

#[test]
fn open_failure_resets() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 40000, 81).seq(5).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::OpenFailed(Errno::EMFILE));
    let f = h.take_frames();
    assert!(f[0].rst);
    h.assert_empty();
    assert!(!h.closed.contains(&sock), "a failed open needs no close");
}

#[test]
fn accept_out_of_descriptors_pauses_the_listener() {
    let mut h = H::new(inbound_cfg());
    h.core.start(h.now);
    h.drain(&[]);
    h.take_actions();
    let lst = SockId(LISTENER_BIT);
    let watched = Interest {
        readable: true,
        ..Interest::default()
    };
    for round in 1..=2u64 {
        h.event(lst, SockEvent::Readable);
        let acts = h.take_actions();
        let Some(Action::Accept { listener, sock }) = acts.first().copied() else {
            panic!("{acts:?}")
        };
        assert_eq!(listener, lst);
        h.event(sock, SockEvent::Accepted(Err(Errno::EMFILE)));
        // The connection waits in the backlog: the listener stays readable,
        // so it is not watched for a while instead of failing again at once.
        let acts = h.take_actions();
        assert_eq!(
            acts,
            vec![Action::SetInterest {
                sock: lst,
                interest: Interest::default()
            }]
        );
        assert_eq!(h.core.flow_count(), 0);
        assert_eq!(h.core.listen_stats().accept_pauses, round);
        // Readiness reported before the pause took effect is ignored.
        h.event(lst, SockEvent::Readable);
        assert!(h.take_actions().is_empty());
        h.run_for(150);
        assert!(h.take_actions().is_empty());
        h.run_for(100);
        assert_eq!(
            h.take_actions(),
            vec![Action::SetInterest {
                sock: lst,
                interest: watched
            }]
        );
        assert!(h.core.poll_timeout().is_none_or(|t| t > h.now));
    }
    // Other errors (the peer gave up) do not pause.
    h.event(lst, SockEvent::Readable);
    let Some(Action::Accept { sock, .. }) = h.take_actions().first().copied() else {
        panic!()
    };
    h.event(sock, SockEvent::Accepted(Err(Errno::ECONNRESET)));
    assert!(h.take_actions().is_empty());
    assert_eq!(h.core.listen_stats().accept_pauses, 2);
    h.event(lst, SockEvent::Readable);
    assert!(matches!(
        h.take_actions().first(),
        Some(Action::Accept { .. })
    ));
}

#[test]
fn inbound_v4_server_speaks_first() {
    let peer = SocketAddr::new("::ffff:192.0.2.9".parse().unwrap(), 5555);
    let (mut h, sock, syn) = inbound(peer);
    assert!(syn.syn && !syn.ackf);
    assert_eq!(
        (syn.src, syn.dst, syn.sport, syn.dport),
        (v4(Ipv4Addr::new(192, 0, 2, 9)), v4(GUEST4), 5555, 80)
    );
    assert_eq!(syn.ws, Some(8));
    assert!(syn.mss.is_some());
    assert!(h.sock(sock).nodelay, "no Nagle of the socket's own");
    // The guest answers; we ACK at once even though no data waits.
    let g = G::new(v4(GUEST4), syn.src, 80, 5555);
    h.guest(&[g.clone().syn_ack_to(777, &syn, 2)]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].ackf && !f[0].syn && f[0].payload.is_empty());
    assert_eq!(f[0].ack, 778);
    assert_eq!(f[0].seq, syn.seq.wrapping_add(1));
    // Host data flows to the guest.
    h.sock(sock).rx = b"220 banner\r\n".to_vec();
    h.event(sock, SockEvent::Readable);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload, b"220 banner\r\n");
    assert!(f[0].psh);
}

#[test]
fn inbound_v6_loopback_peer_appears_as_gateway() {
    let peer = SocketAddr::new("::1".parse().unwrap(), 6000);
    let (mut h, sock, syn) = inbound(peer);
    assert_eq!(syn.src, "fd77::1".parse::<IpAddr>().unwrap());
    assert_eq!(syn.dst, IpAddr::V6(g6()));
    // Guest refuses: RST closes.
    let g = G::new(syn.dst, syn.src, 80, 6000);
    h.guest(&[g.seq(0).ack(syn.seq.wrapping_add(1)).rst()]);
    assert!(h.closed.contains(&sock));
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 1, "the listener stays");
}

#[test]
fn inbound_handshake_timeout() {
    let peer = SocketAddr::new("192.0.2.9".parse().unwrap(), 5555);
    let (mut h, sock, syn) = inbound(peer);
    let f = h.frames_after(1_100);
    assert_eq!(f.len(), 1, "SYN sent again");
    // The same SYN, but for its timestamp (a second later).
    let no_opts = |o: &Out| Out {
        opts: vec![],
        ..o.clone()
    };
    assert_eq!(no_opts(&f[0]), no_opts(&syn));
    assert_ne!(f[0].opts, syn.opts);
    h.run_for(7_900);
    assert_eq!(h.core.flow_count(), 1);
    h.run_for(1_100);
    assert_eq!(h.core.flow_count(), 0);
    assert!(h.closed.contains(&sock));
    let f = h.take_frames();
    assert!(f.last().unwrap().rst);
}

#[test]
fn syn_on_open_connection_gets_challenge_ack() {
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(12345).syn()]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].ackf && !f[0].syn && !f[0].rst);
    assert_eq!(f[0].ack, c.their);
    // The guest resets the stale connection and connects again.
    c.h.guest(&[c.g.clone().seq(c.their).rst(), c.g.clone().seq(12345).syn()]);
    assert!(c.h.closed.contains(&c.sock));
    assert_eq!(c.h.core.flow_count(), 1);
}

#[test]
fn low_rtt_peers_are_remembered() {
    let mut c = connect4();
    c.h.sock(c.sock).min_rtt_us = 3;
    c.h.report_info(c.sock);
    c.h.guest(&[c.seg(c.their).data(b"x")]);
    assert_eq!(c.h.take_frames().len(), 1, "immediate ACK");
    // A new connection to the same peer ACKs at once from the start.
    let mut h = c.h;
    let g = G::new(v4(GUEST4), v4(PEER4), 40001, 80);
    h.guest(&[g.clone().seq(1).syn()]);
    let s2 = *h
        .socks
        .keys()
        .find(|&&s| s != c.sock && h.socks[&s].kind == Some(SockKind::TcpStream))
        .unwrap();
    h.event(s2, SockEvent::Connected(Ok(())));
    let our = h.take_frames()[0].seq.wrapping_add(1);
    h.guest(&[g.clone().seq(2).ack(our), g.seq(2).ack(our).data(b"y")]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, 3);
}

#[test]
fn lost_handshake_ack_recovered_by_syn_ack_again() {
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 25);
    h.guest(&[g.clone().seq(1000).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Ok(())));
    let sa = h.take_frames()[0].clone();
    assert!(sa.syn && sa.ackf);
    // The guest's ACK is lost; it waits for the server's banner.
    h.sock(sock).rx = b"220 hello\r\n".to_vec();
    h.event(sock, SockEvent::Readable);
    assert!(h.take_frames().is_empty());
    let f = h.frames_after(1100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].syn && f[0].ackf);
    assert_eq!((f[0].seq, f[0].ack), (sa.seq, 1001));
    // The guest answers the repeated SYN-ACK with its ACK: the banner flows.
    h.guest(&[g.clone().seq(1001).ack(sa.seq.wrapping_add(1))]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload, b"220 hello\r\n");
    // A retransmitted SYN is answered with the SYN-ACK as well.
    let mut h = H::new(capture_config());
    h.guest(&[g.clone().seq(1000).syn()]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Ok(())));
    let sa = h.take_frames()[0].clone();
    h.guest(&[g.clone().seq(1000).syn()]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].syn && f[0].ackf && f[0].seq == sa.seq);
    // Established: no more SYN-ACKs, no reset at the handshake timeout.
    h.guest(&[g.seq(1001).ack(sa.seq.wrapping_add(1))]);
    assert!(h.frames_after(15_000).is_empty());
    assert_eq!(h.core.flow_count(), 1);
}
