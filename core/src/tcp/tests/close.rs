//! Closing: half closes both ways, resets, lost FINs, timeouts, segments
//! for freed flows.

use super::*;

// --- closing --------------------------------------------------------------------

#[test]
fn guest_half_close_then_host_close() {
    let mut c = connect4();
    c.h.guest(&[c.seg(c.their).data(b"bye").fin()]);
    assert!(c.h.sock(c.sock).shut_wr);
    assert_eq!(c.h.sock(c.sock).written, b"bye");
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().ack, c.their.wrapping_add(4));
    // The host keeps sending after our shutdown.
    c.h.sock(c.sock).rx = b"more".to_vec();
    c.h.sock(c.sock).eof = true;
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f[0].payload, b"more");
    c.h.event(c.sock, SockEvent::ReadHangUp);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].fin && f[0].ackf);
    assert_eq!(f[0].seq, c.our.wrapping_add(4));
    c.h.guest(&[c.seg(c.their.wrapping_add(4)).ack(c.our.wrapping_add(5))]);
    assert!(c.h.closed.contains(&c.sock));
    assert!(!c.h.k.dead[&c.sock].linger_zero, "an orderly close: FIN");
    c.h.assert_empty();
}

#[test]
fn host_half_close_then_guest_close() {
    let mut c = connect4();
    c.host_fin();
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].fin);
    // The guest acknowledges our FIN and keeps sending.
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(1)).data(b"still")]);
    assert_eq!(c.h.sock(c.sock).written, b"still");
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.guest(&[c
        .seg(c.their.wrapping_add(5))
        .ack(c.our.wrapping_add(1))
        .fin()]);
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().ack, c.their.wrapping_add(6));
    assert!(c.h.closed.contains(&c.sock));
    c.h.assert_empty();
}

#[test]
fn lost_fin_is_retransmitted() {
    let mut c = connect4();
    c.host_fin();
    assert!(c.h.take_frames()[0].fin);
    let f = c.h.frames_after(2100);
    assert_eq!(f.len(), 1);
    assert!(f[0].fin);
    assert_eq!(f[0].seq, c.our);
}

#[test]
fn resets_both_ways() {
    // A guest RST resets the host peer (SO_LINGER 0, then close), as
    // upstream since 2026: a plain close would send it a FIN.
    let mut c = connect4();
    c.h.guest(&[c.g.clone().seq(c.their).rst()]);
    assert!(c.h.closed.contains(&c.sock));
    assert!(
        c.h.k.dead[&c.sock].linger_zero,
        "guest RST closed with a FIN"
    );
    assert!(c.h.take_frames().is_empty());
    assert_eq!(c.h.core.flow_count(), 0);
    // The same with data in the batch before the RST.
    let mut c = connect4();
    let g = c.g.clone();
    c.h.guest(&[
        g.clone().seq(c.their).ack(c.our).data(b"abc"),
        g.seq(c.their.wrapping_add(3)).rst(),
    ]);
    assert_eq!(c.h.k.dead[&c.sock].written, b"abc");
    assert!(c.h.k.dead[&c.sock].linger_zero);

    // A host reset: the guest gets an RST.
    let mut c = connect4();
    c.h.event(c.sock, SockEvent::Error(Errno::ECONNRESET));
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && !f[0].ackf);
    assert_eq!(f[0].seq, c.our);
    c.h.assert_empty();
}

#[test]
fn rst_then_syn_in_one_batch() {
    let mut c = connect4();
    let g = c.g.clone();
    c.h.guest(&[g.clone().seq(c.their).rst(), g.seq(99).syn()]);
    assert!(c.h.closed.contains(&c.sock));
    assert_eq!(
        c.h.core.flow_count(),
        1,
        "new connection on the same 4-tuple"
    );
    assert_eq!(c.h.core.tcp_stats().opened, 2);
}

#[test]
fn hangup_in_handshake_resets() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 2).seq(1).syn()]);
    let s = h.only_sock();
    h.event(s, SockEvent::HangUp);
    assert!(h.take_frames()[0].rst);
    assert_eq!(h.core.flow_count(), 0);
}

#[test]
fn idle_timeout() {
    let mut c = connect4();
    c.h.run_for(7_000_000);
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.run_for(300_000);
    assert_eq!(c.h.core.flow_count(), 0);
    assert!(c.h.take_frames().last().unwrap().rst);
}

#[test]
fn syn_timeout_while_connecting() {
    let mut h = H::new(capture_config());
    h.guest(&[G::new(v4(GUEST4), v4(PEER4), 1, 2).seq(1).syn()]);
    h.run_for(10_001);
    h.assert_empty();
    assert!(h.take_frames()[0].rst);
    assert_eq!(h.core.tcp.poll_timeout(), None);
}

#[test]
fn fin_not_accepted_by_link_is_sent_again() {
    let mut c = connect4();
    c.h.core.handle_tap_sent(c.h.now, 0);
    c.h.sock(c.sock).rx = b"last".to_vec();
    c.host_fin();
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2, "data, then FIN");
    assert!(f[1].fin);
    // Only the data frame made it.
    c.h.core.handle_tap_sent(c.h.now, 1);
    c.h.drain(&[]);
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].fin);
    assert_eq!(f[0].seq, c.our.wrapping_add(4));
}

// --- closing after the guest's FIN, resets for freed flows, lost handshake ACK ---

#[test]
fn guest_fin_first_keeps_flow_until_our_fin_is_acked() {
    let mut c = connect4();
    c.h.guest(&[c.seg(c.their).data(b"bye").fin()]);
    assert!(c.h.sock(c.sock).shut_wr);
    c.h.take_frames();
    let their = c.their.wrapping_add(4);
    // The host answers and closes: data, end of stream, hang-up.
    c.h.sock(c.sock).rx = b"more".to_vec();
    c.host_fin();
    c.h.event(c.sock, SockEvent::HangUp);
    let f = c.h.take_frames();
    assert_eq!(f[0].payload, b"more");
    assert!(f.last().unwrap().fin);
    // Both were lost on the link. The socket stays (closing it with unread
    // data would reset the host peer) and so does the flow.
    assert!(
        !c.h.closed.contains(&c.sock),
        "socket closed before our FIN was acked"
    );
    assert_eq!(c.h.core.flow_count(), 1);
    let f = c.h.frames_after(2100);
    assert_eq!(f[0].payload, b"more");
    assert_eq!(f[0].seq, c.our);
    let fin = f.last().unwrap();
    assert!(fin.fin);
    assert_eq!(fin.seq, c.our.wrapping_add(4));
    // The guest acknowledges everything: now the socket closes.
    c.h.guest(&[c.seg(their).ack(c.our.wrapping_add(5))]);
    assert!(c.h.closed.contains(&c.sock));
    c.h.assert_empty();
    assert_eq!(c.h.core.counters().dropped(DropReason::TcpNoFlow), 0);
    assert!(c.h.take_frames().is_empty());
}

#[test]
fn guest_fin_first_unacked_fin_times_out() {
    let mut c = connect4();
    c.h.guest(&[c.seg(c.their).fin()]);
    c.host_fin();
    c.h.event(c.sock, SockEvent::HangUp);
    assert!(c.h.take_frames().last().unwrap().fin);
    assert_eq!(c.h.core.flow_count(), 1);
    // Our FIN is sent again until the retransmissions run out, then reset.
    assert!(c.h.frames_after(20_000).iter().filter(|o| o.fin).count() >= 3);
    assert_eq!(c.h.core.flow_count(), 1);
    let f = c.h.frames_after(300_000);
    assert!(f.last().unwrap().rst);
    c.h.assert_empty();
}

#[test]
fn segment_for_freed_flow_gets_rst() {
    let mut c = connect4();
    c.h.event(c.sock, SockEvent::Error(Errno::ECONNRESET));
    assert!(c.h.take_frames()[0].rst);
    assert_eq!(c.h.core.flow_count(), 0);
    c.h.take_actions();
    // The guest missed the reset and sends again.
    c.h.guest(&[c.seg(c.their).data(b"again")]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].rst && !f[0].ackf);
    assert_eq!(f[0].seq, c.our);
    assert_eq!((f[0].sport, f[0].dport), (80, 40000));
    assert_eq!(c.h.core.flow_count(), 0);
    assert!(c.h.take_actions().is_empty());
    // A reset is never answered.
    c.h.guest(&[c.g.clone().seq(c.their).rst()]);
    assert!(c.h.take_frames().is_empty());
    assert_eq!(c.h.core.tcp_stats().no_flow_resets, 1);
}
