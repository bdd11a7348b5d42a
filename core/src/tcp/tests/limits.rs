//! Limits and hostile input: full tables, unknown flows, malformed
//! segments, resource accounting.

use super::*;

// --- limits and hostile input -------------------------------------------------

#[test]
fn full_table_refuses_with_rst() {
    let mut cfg = capture_config();
    cfg.limits.flows = 2;
    let mut h = H::new(cfg);
    for p in 1..=3u16 {
        h.guest(&[G::new(v4(GUEST4), v4(PEER4), p, 80).seq(10).syn()]);
    }
    assert_eq!(h.core.flow_count(), 2);
    assert_eq!(h.core.counters().dropped(DropReason::FlowTableFull), 1);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && f[0].ackf && f[0].ack == 11 && f[0].dport == 3);
}

#[test]
fn non_syn_for_unknown_flow_gets_rst() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80)
        .seq(10)
        .ack(5)
        .data(b"x")]);
    // RFC 9293 reset generation (upstream passt drops these silently).
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && !f[0].ackf && f[0].seq == 5);
    assert_eq!((f[0].sport, f[0].dport), (80, 1));
    assert!(h.take_actions().is_empty());
    assert_eq!(h.core.counters().dropped(DropReason::TcpNoFlow), 1);
    assert_eq!(h.core.flow_count(), 0);
    // Without ACK: RST|ACK acknowledging the segment (FIN counts one).
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80)
        .seq(10)
        .data(b"xy")
        .fin()]);
    let f = h.take_frames();
    assert!(f[0].rst && f[0].ackf && f[0].seq == 0 && f[0].ack == 13);
    // Not to bogus endpoints.
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 0).seq(10).ack(5)]);
    h.guest(&[G::new(v4(GUEST4), v4(Ipv4Addr::BROADCAST), 1, 80)
        .seq(10)
        .ack(5)]);
    assert!(h.take_frames().is_empty());
}

#[test]
fn hostile_segments_never_panic() {
    let mut c = connect4();
    let g = c.g.clone();
    // SYN+FIN, ACK beyond what we sent, for new and existing flows.
    c.h.guest(&[
        G::new(v4(GUEST4), v4(PEER4), 9, 80).seq(1).syn().fin(),
        g.clone().seq(c.their).ack(c.our.wrapping_add(100_000)),
        g.clone().seq(c.their).syn().fin(),
    ]);
    assert!(c.h.core.counters().dropped(DropReason::TcpBadSegment) >= 2);
    assert_eq!(c.h.core.flow_count(), 1);
    // Port 0, multicast and broadcast destinations.
    c.h.guest(&[
        G::new(v4(GUEST4), v4(PEER4), 9, 0).seq(1).syn(),
        G::new(v4(GUEST4), v4(Ipv4Addr::new(224, 0, 0, 1)), 9, 80)
            .seq(1)
            .syn(),
        G::new(v4(GUEST4), v4(Ipv4Addr::BROADCAST), 9, 80)
            .seq(1)
            .syn(),
    ]);
    assert_eq!(c.h.core.counters().dropped(DropReason::TcpBadEndpoint), 3);
    assert_eq!(c.h.core.flow_count(), 1);
    // Bad data offsets and option lengths 0 and 1, written by hand.
    let base = G::new(v4(GUEST4), v4(PEER4), 7, 80).seq(1).syn().build();
    let mut frames = Vec::new();
    for (doff, opt) in [
        (4u8, [0u8; 4]),
        (15, [0; 4]),
        (6, [2, 0, 0, 0]),
        (6, [3, 1, 0, 0]),
        (6, [2, 4, 0, 0]),
    ] {
        let mut f = base.clone();
        f.truncate(54);
        f.extend_from_slice(&opt);
        f[14 + 2..14 + 4].copy_from_slice(&(44u16).to_be_bytes());
        f[34 + 12] = doff << 4;
        frames.push(f);
    }
    c.h.guest_raw(&frames);
    // Data with every offset: none may panic, connection survives or resets.
    for s in [0u32, 1, u32::MAX, c.their.wrapping_add(1 << 31)] {
        c.h.guest(&[g.clone().seq(s).ack(c.our).data(b"zz").fin()]);
    }
    c.h.run_for(10);
}

#[test]
fn flows_and_sockets_return_to_zero() {
    let mut h = H::new(capture_config());
    for p in 1..=20u16 {
        h.guest(&[G::new(v4(GUEST4), v4(PEER4), p, 80).seq(1).syn()]);
    }
    assert_eq!(h.core.flow_count(), 20);
    assert_eq!(h.core.socket_count(), 20);
    let socks: Vec<SockId> = h.socks.keys().copied().collect();
    for (i, s) in socks.iter().enumerate() {
        if i % 2 == 0 {
            h.event(*s, SockEvent::Connected(Err(Errno::ECONNREFUSED)));
        }
    }
    h.core.handle_tap_reset(h.now);
    h.drain(&[]);
    h.assert_empty();
    assert!(h.socks.is_empty());
    // Ids of freed flows are reused with a new generation: stale events are
    // ignored.
    h.event(socks[1], SockEvent::Readable);
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80).seq(1).syn()]);
    let s = h.only_sock();
    assert!(!socks.contains(&s) || s != socks[0]);
}

#[test]
fn isn_depends_on_tuple_and_time() {
    let h = H::new(capture_config());
    let k = FlowKey {
        proto: 6,
        src: v4(GUEST4),
        dst: v4(PEER4),
        sport: 1,
        dport: 2,
    };
    let mut k2 = k;
    k2.sport = 3;
    let a = isn(h.core.config(), &k, Instant::ZERO);
    assert_ne!(a, isn(h.core.config(), &k2, Instant::ZERO));
    assert_eq!(
        isn(h.core.config(), &k, Instant::from_nanos(64)),
        a.wrapping_add(2)
    );
}

#[test]
fn interest_edge_triggered_throughout() {
    let mut c = connect4_unscaled();
    // One edge-triggered mask from the start: it does not change with the
    // data in flight, nor at the end.
    let edge = Interest {
        readable: true,
        writable: true,
        read_hangup: true,
        edge: true,
    };
    assert_eq!(c.h.sock(c.sock).interest, Some(edge));
    // The guest's window (256 << 0... unscaled 3000) fills up.
    c.h.guest(&[c.seg(c.their).win(3000)]);
    c.host_sends(vec![1u8; 5000]);
    assert_eq!(c.h.take_frames().len(), 3);
    let i = c.h.sock(c.sock).interest.unwrap();
    assert!(i.edge && i.readable);
    // The guest acknowledges: more data goes out, still edge-triggered
    // (peeked data stays queued until acknowledged).
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(3000)).win(3000)]);
    let i = c.h.sock(c.sock).interest.unwrap();
    assert!(i.edge && i.readable);
    let sent: usize = c.h.take_frames().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 2000);
    // All acknowledged, nothing to send: the same mask.
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(5000)).win(3000)]);
    assert_eq!(c.h.sock(c.sock).interest, Some(edge));
    // After our FIN: edge-triggered, nothing to read.
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(5000)).win(3000)]);
    c.host_fin();
    assert!(c.h.take_frames()[0].fin);
    assert_eq!(c.h.sock(c.sock).interest, Some(edge));
}

#[test]
fn retransmit_with_peek_offset_rewinds_offset() {
    let mut cfg = capture_config();
    cfg.peek_offset = true;
    let mut c = connect(cfg, v4(GUEST4), v4(PEER4), Some(7));
    let acts = c.h.take_actions();
    let _ = acts;
    c.host_sends((0..3000u32).map(|i| i as u8).collect());
    assert_eq!(c.h.take_frames().len(), 3);
    assert_eq!(c.h.sock(c.sock).peek_off, Some(3000));
    // The guest got the first segment only.
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(1460))]);
    assert_eq!(c.h.sock(c.sock).peek_off, Some(1540));
    let f = c.h.frames_after(2100);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].seq, c.our.wrapping_add(1460));
    assert_eq!(f[0].payload[0], (1460u32 % 256) as u8);
    assert_eq!(c.h.sock(c.sock).peek_off, Some(1540));
}

#[test]
fn low_rtt_peer_gets_immediate_acks() {
    let mut c = connect4();
    c.h.sock(c.sock).min_rtt_us = 5;
    c.h.report_info(c.sock);
    c.data_acked_at_once(b"abc");
}

#[test]
fn inbound_v6_full_exchange() {
    let peer = SocketAddr::new("2001:db8::9".parse().unwrap(), 4444);
    let (mut h, sock, syn) = inbound(peer);
    assert_eq!(syn.src, "2001:db8::9".parse::<IpAddr>().unwrap());
    let g = G::new(syn.dst, syn.src, 80, 4444).win(20000);
    let our = syn.seq.wrapping_add(1);
    // No window scale from the guest: scaling is off both ways.
    h.guest(&[g.clone().seq(50).ack(our).syn()]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    h.guest(&[g.clone().seq(51).ack(our).data(b"GET /")]);
    assert_eq!(h.sock(sock).written, b"GET /");
    let f = h.frames_after(10);
    assert_eq!(f.last().unwrap().ack, 56);
    assert_eq!(u32::from(f.last().unwrap().win), 65535);
    h.sock(sock).rx = vec![3u8; 30000];
    h.event(sock, SockEvent::Readable);
    let sent: usize = h.take_frames().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 20000, "unscaled guest window");
}

#[test]
fn inbound_with_full_table_is_accepted_and_closed() {
    let mut cfg = inbound_cfg();
    cfg.limits.flows = 1;
    let mut h = H::new(cfg);
    h.core.start(h.now);
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 80).seq(1).syn()]);
    assert_eq!(h.core.flow_count(), 1);
    let lst = SockId(LISTENER_BIT);
    h.take_actions();
    h.event(lst, SockEvent::Readable);
    let acts = h.take_actions();
    let reject = SockId(LISTENER_BIT | REJECT_IDX);
    assert_eq!(
        acts,
        vec![Action::Accept {
            listener: lst,
            sock: reject
        }]
    );
    let peer = SocketAddr::new(v4(PEER4), 1234);
    h.event(reject, SockEvent::Accepted(Ok((peer, peer))));
    assert_eq!(h.take_actions(), vec![Action::Close { sock: reject }]);
    assert_eq!(h.core.counters().dropped(DropReason::FlowTableFull), 1);
    assert_eq!(
        h.core.socket_count(),
        2,
        "listener and the first connection"
    );
}
