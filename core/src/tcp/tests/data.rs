//! Data both ways: partial writes, reordering, keepalives, peeks, GSO
//! frames, retransmission and rewinds.

use super::*;

// --- guest → host -------------------------------------------------------------

/// `n` segments of 1000 bytes from the guest's next byte on, segment `i`
/// filled with `i`.
fn kilo_segments(c: &Conn, n: u32) -> Vec<G> {
    (0..n)
        .map(|i| c.seg(c.their.wrapping_add(i * 1000)).data(&[i as u8; 1000]))
        .collect()
}

#[test]
fn guest_data_partial_write_acks_only_written() {
    let mut c = connect4();
    c.h.sock(c.sock).send_room = Some(1500);
    c.h.guest(&kilo_segments(&c, 3));
    let sends: Vec<_> =
        c.h.take_actions()
            .into_iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .collect();
    assert_eq!(sends.len(), 1, "one send per flow per batch");
    assert_eq!(c.h.sock(c.sock).written.len(), 1500);
    // The ACK goes out at once with a closed window: the buffer is full,
    // whatever TCP_INFO says, until EPOLLOUT.
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, c.their.wrapping_add(1500));
    assert_eq!(f[0].win, 0);
    assert_eq!(c.h.core.tcp_stats().partial_writes, 1);
    assert!(c.h.sock(c.sock).interest.unwrap().writable);
    // EAGAIN: nothing acknowledged, window closed.
    c.h.sock(c.sock).send_room = Some(0);
    c.h.guest(&[c.seg(c.their.wrapping_add(1500)).data(&[9; 500])]);
    let f = c.h.frames_after(10);
    assert!(f.iter().all(|o| o.ack == c.their.wrapping_add(1500)));
    // The retransmission goes through once the socket takes it again.
    c.h.sock(c.sock).send_room = None;
    c.h.guest(&[c.seg(c.their.wrapping_add(1500)).data(&[1; 1500])]);
    let f = c.h.frames_after(10);
    assert_eq!(f.last().unwrap().ack, c.their.wrapping_add(3000));
    let w = &c.h.sock(c.sock).written;
    assert_eq!(&w[..1000], &[0u8; 1000][..]);
    assert_eq!(&w[1000..1500], &[1u8; 500][..]);
    assert_eq!(&w[1500..], &[1u8; 1500][..]);
}

/// A write the kernel cuts short although the window promised room (its
/// per-buffer charges grew meanwhile) teaches the connection what share of
/// the free space holds payload: the next windows offer that share, so
/// the guest's flight fits, until the queue runs low again.
#[test]
fn write_cut_short_lowers_the_share_of_free_space_offered() {
    let mut c = connect4();
    let (sndbuf, queued) = (1u32 << 20, 1u32 << 19);
    let unit = 1u32 << MAX_WS;
    // The window of the ACK of one byte from the guest (its write reports
    // the buffer's state).
    let offered = |c: &mut Conn| {
        let seg = c.seg(c.their).data(b"x");
        c.h.guest(&[seg]);
        c.their = c.their.wrapping_add(1);
        let f = c.h.frames_after(50);
        u32::from(f.last().expect("ACK").win) << MAX_WS
    };
    c.h.sock(c.sock).sndbuf = sndbuf;
    c.h.sock(c.sock).outq = queued;
    let full = TcpPolicy::SHIPPED.window(sndbuf, queued).unwrap();
    let w = offered(&mut c);
    assert!(
        full.abs_diff(w) < unit,
        "nothing learnt yet: {w} against {full}"
    );
    // Half of 3000 bytes taken.
    c.h.sock(c.sock).send_room = Some(1500);
    c.h.guest(&kilo_segments(&c, 3));
    c.h.frames_after(10);
    c.their = c.their.wrapping_add(1500);
    c.h.sock(c.sock).send_room = None;
    c.h.sock(c.sock).outq = queued;
    let w = offered(&mut c);
    assert!(w.abs_diff(full / 2) < unit, "{w} against half of {full}");
    // The peer catches up (queue under a quarter of the buffer): what was
    // learnt fades.
    c.h.sock(c.sock).outq = 0;
    for _ in 0..64 {
        offered(&mut c);
    }
    let empty = TcpPolicy::SHIPPED.window(sndbuf, 0).unwrap();
    let w = offered(&mut c).min(empty);
    assert!(empty.abs_diff(w) < 2 * unit, "{w} against {empty}");
}

#[test]
fn window_never_above_socket_free_space() {
    let mut c = connect4_unscaled();
    let s = c.h.sock(c.sock);
    s.sndbuf = 10_000;
    let mut their = c.their;
    for round in 0..8u32 {
        let seg = c.seg(their).data(&[round as u8; 3000]);
        c.h.guest(&[seg]);
        c.h.run_for(10);
        let s = c.h.sock(c.sock);
        let free = s.sndbuf - s.outq;
        for f in c.h.take_frames() {
            let w = u32::from(f.win) << MAX_WS;
            assert!(w <= free, "window {w} > free {free}");
            their = f.ack;
        }
        if round == 2 {
            // The host peer reads everything: the socket drains.
            c.h.sock(c.sock).outq = 0;
            c.h.event(c.sock, SockEvent::Writable);
            let f = c.h.take_frames();
            assert_eq!(f.len(), 1, "window update once the socket drains");
            assert_eq!(u32::from(f[0].win) << MAX_WS, 9375 / 256 * 256);
        }
    }
    assert_eq!(
        c.h.sock(c.sock).written.len() as u32,
        their.wrapping_sub(c.their)
    );
}

#[test]
fn out_of_order_gets_one_duplicate_ack_per_segment_and_reorder_in_batch() {
    let mut c = connect4();
    let t = c.their;
    // Reordered within a batch: both written, in order.
    c.h.guest(&[c.seg(t.wrapping_add(3)).data(b"def"), c.seg(t).data(b"abc")]);
    assert_eq!(c.h.sock(c.sock).written, b"abcdef");
    c.h.frames_after(10);
    // A gap of one segment: one duplicate ACK per segment past it (RFC
    // 5681 §3.2). More would tell a guest without SACK that the path
    // reorders, and it would stop retransmitting fast.
    const MSS: u32 = 1460;
    let at = |k: u32| t.wrapping_add(6 + MSS * k);
    let segs: Vec<_> = (1..10)
        .map(|k| c.seg(at(k)).data(&[k as u8; MSS as usize]))
        .collect();
    c.h.guest(&segs[..1]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, at(0));
    c.h.guest(&segs[1..3]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f.iter().all(|o| o.ack == at(0) && o.win == f[0].win));
    // At most three at once (enough for the guest to retransmit).
    c.h.guest(&segs[3..]);
    assert_eq!(c.h.take_frames().len(), 3);
    assert_eq!(c.h.sock(c.sock).written, b"abcdef");
    // The missing segment fills the gap (the ones past it were dropped,
    // and come again).
    c.h.guest(&[c.seg(at(0)).data(&[0; MSS as usize])]);
    assert_eq!(c.h.sock(c.sock).written.len(), 6 + MSS as usize);
}

/// A write that ends inside one of the guest's segments leaves the rest of
/// that segment as the gap's head: every segment after it gets its
/// duplicate ACK once the window opens, so a guest with four segments in
/// flight past the write's end gets the three it needs to retransmit fast
/// (counting the refused bytes in whole segments would say two).
#[test]
fn write_ending_inside_a_segment_owes_a_duplicate_per_segment_after_it() {
    let mut c = connect4();
    c.h.sock(c.sock).send_room = Some(1500);
    c.h.guest(&kilo_segments(&c, 5));
    let f = c.h.take_frames();
    assert_eq!(
        (f.len(), f[0].ack, f[0].win),
        (1, c.their.wrapping_add(1500), 0)
    );
    // The buffer drains: the window update and three duplicates of it.
    c.h.sock(c.sock).send_room = None;
    c.h.event(c.sock, SockEvent::Writable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(f
        .iter()
        .all(|o| o.ack == c.their.wrapping_add(1500) && o.win == f[0].win && o.win > 0));
    // The guest's fast retransmission from the gap is taken.
    c.h.guest(&[c.seg(c.their.wrapping_add(1500)).data(&[1; 500])]);
    assert_eq!(
        c.h.frames_after(10).last().unwrap().ack,
        c.their.wrapping_add(2000)
    );
}

/// A segment the guest sent before (our ACK of it was lost), with new data
/// in the same batch: the ACK after the write goes out at once, not after
/// the ACK delay, or the guest sits on a window it believes full.
#[test]
fn old_segment_with_new_data_is_acknowledged_at_once() {
    let mut c = connect4();
    let t = c.their;
    c.h.guest(&[c.seg(t).data(&[1; 1000])]);
    c.h.frames_after(50);
    c.h.guest(&[
        c.seg(t).data(&[1; 1000]),
        c.seg(t.wrapping_add(1000)).data(&[2; 100]),
    ]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].ack, t.wrapping_add(1100));
}

/// A segment past a gap that is the only one the guest has in flight
/// there gets no duplicate ACK beyond the plain one: the guest would count
/// more duplicates than segments, take it for reordering, and stop
/// retransmitting fast.
#[test]
fn no_more_duplicate_acks_than_segments_in_flight() {
    let mut c = connect4();
    let t = c.their;
    c.h.guest(&[c.seg(t).data(b"abc")]);
    c.h.frames_after(10);
    // Three small segments past a gap: less than one full segment in
    // flight past it, so no duplicates (the ACK of each batch only).
    for k in 0..3u32 {
        c.h.guest(&[c.seg(t.wrapping_add(10 + 2 * k)).data(b"zz")]);
        assert_eq!(c.h.take_frames().len(), 1);
    }
    assert_eq!(c.h.sock(c.sock).written, b"abc");
}

#[test]
fn keepalive_is_answered() {
    let mut c = connect4();
    c.h.guest(&[c.seg(c.their.wrapping_sub(1))]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, c.their);
    assert_eq!(c.h.core.tcp_stats().fast_retransmits, 0);
}

/// Upstream's tap-side keepalives: 30 s without a segment from the guest
/// (`KEEPALIVE_INTERVAL`) bring an ACK one byte before our next sequence
/// number, and another every 30 s while the guest stays silent; a guest
/// that answers keeps the connection, one that forgot it resets it.
#[test]
fn silent_guest_gets_keepalives_and_a_forgetful_one_resets() {
    let mut c = connect4();
    assert!(c.h.frames_after(29_900).is_empty(), "nothing before 30 s");
    let f = c.h.frames_after(200);
    assert_eq!(f.len(), 1, "{f:?}");
    let k = &f[0];
    assert!(k.ackf && !k.syn && !k.fin && !k.rst && k.payload.is_empty());
    assert_eq!((k.seq, k.ack), (c.our.wrapping_sub(1), c.their));
    assert_eq!(c.h.core.tcp_stats().keepalives, 1);
    // The guest answers (an ACK of what it has): nothing more to say, and
    // the next keepalive is 30 s after that answer.
    c.h.run_for(10_000);
    c.h.guest(&[c.seg(c.their)]);
    assert!(c.h.take_frames().is_empty());
    assert!(c.h.frames_after(29_900).is_empty());
    assert_eq!(c.h.frames_after(200).len(), 1);
    // Silence: one every 30 s.
    assert_eq!(c.h.frames_after(90_000).len(), 3);
    assert_eq!(c.h.core.tcp_stats().keepalives, 5);
    assert_eq!(c.h.core.flow_count(), 1);
    // A guest that rebooted answers the next one with a reset.
    assert_eq!(c.h.frames_after(30_000).len(), 1);
    c.h.guest(&[c.g.clone().seq(c.their).rst()]);
    assert_eq!(c.h.core.flow_count(), 0);
    assert!(c.h.closed.contains(&c.sock));
}

/// A guest that sends keeps its connection free of keepalives; so does
/// data in flight (the retransmission timer watches the guest then); a
/// connection the guest half-closed (its FIN_WAIT_2, which Linux forgets
/// after a minute once the application closed) gets them.
#[test]
fn keepalives_only_for_silent_guests_half_closed_included() {
    let mut c = connect4();
    let mut their = c.their;
    for _ in 0..5 {
        c.h.run_for(20_000);
        c.h.guest(&[c.seg(their).data(b"x")]);
        their = their.wrapping_add(1);
        c.h.take_frames();
    }
    assert_eq!(c.h.core.tcp_stats().keepalives, 0);
    // Our data in flight, unacknowledged: retransmissions only.
    c.host_sends(vec![1u8; 10]);
    c.h.run_for(40_000);
    assert!(c.h.core.tcp_stats().retransmits > 0);
    assert_eq!(c.h.core.tcp_stats().keepalives, 0);
    c.h.guest(&[c.seg(their).ack(c.our.wrapping_add(10)).fin()]);
    c.h.take_frames();
    // Half-closed by the guest; the host side stays open.
    let f = c.h.frames_after(30_100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].seq, c.our.wrapping_add(9));
    assert_eq!(f[0].ack, their.wrapping_add(1));
    assert_eq!(c.h.core.tcp_stats().keepalives, 1);
}

// --- host → guest -------------------------------------------------------------

fn host_data(peek_offset: bool) {
    let mut cfg = capture_config();
    cfg.peek_offset = peek_offset;
    let mut c = connect(cfg, v4(GUEST4), v4(PEER4), Some(7));
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    c.host_sends(data.clone());
    let f = c.h.take_frames();
    // MSS 1460 from the guest; window 65535 << 7.
    assert_eq!(f.len(), 14);
    let mut got = Vec::new();
    let mut seq = c.our;
    for o in &f {
        assert_eq!(o.seq, seq);
        assert!(o.payload.len() <= 1460);
        assert_eq!(o.ack, c.their);
        seq = seq.wrapping_add(o.payload.len() as u32);
        got.extend_from_slice(&o.payload);
    }
    assert_eq!(got, data);
    // Level-triggered readable again: nothing new to send, stalled.
    c.h.event(c.sock, SockEvent::Readable);
    assert!(c.h.take_frames().is_empty());
    // The guest acknowledges 5000 bytes: exactly those are consumed.
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(5000))]);
    let acts = c.h.take_actions();
    assert!(acts.contains(&Action::Consume {
        sock: c.sock,
        len: 5000
    }));
    assert_eq!(c.h.sock(c.sock).rx.len(), 15_000);
    // More data arrives; only the new bytes go out.
    c.h.sock(c.sock).rx.extend_from_slice(b"tail");
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload, b"tail");
    assert_eq!(f[0].seq, seq);
}

/// On a link that segments TCP (a tap with virtio-net headers), host data
/// goes out in frames of as many whole MSS as 64 KiB hold (44 at MSS 1460),
/// each with GSO metadata and a partial checksum that completes to the
/// right one; the bytes and sequence numbers are those of plain frames.
#[test]
fn host_data_in_gso_frames() {
    for (src, dst) in [
        (v4(GUEST4), v4(PEER4)),
        (IpAddr::V6(g6()), IpAddr::V6(p6())),
    ] {
        let mut cfg = capture_config();
        cfg.link_offload = crate::LinkOffload::ALL;
        let mut c = connect(cfg, src, dst, Some(7));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        c.host_sends(data.clone());
        let f = c.h.take_frames();
        let metas = std::mem::take(&mut c.h.k.metas);
        assert_eq!(f.len(), metas.len());
        let l4off = l4_offset(src.is_ipv6());
        let hdrs = l4off + 20;
        let per_frame = (crate::MAX_FRAME - hdrs) / 1460 * 1460;
        assert_eq!(per_frame, 44 * 1460);
        assert_eq!(f.len(), data.len().div_ceil(per_frame));
        let mut got = Vec::new();
        let mut seq = c.our;
        for (o, m) in f.iter().zip(&metas) {
            assert_eq!(o.seq, seq);
            assert!(o.payload.len() == per_frame || got.len() + o.payload.len() == data.len());
            assert_eq!(
                m.csum,
                Csum::Partial {
                    start: l4off as u16,
                    offset: 16
                }
            );
            let kind = if src.is_ipv6() {
                crate::GsoKind::Tcp6
            } else {
                crate::GsoKind::Tcp4
            };
            let gso = (o.payload.len() > 1460).then_some(crate::Gso {
                kind,
                size: 1460,
                hdr_len: hdrs as u16,
                ecn: false,
            });
            assert_eq!(m.gso, gso);
            seq = seq.wrapping_add(o.payload.len() as u32);
            got.extend_from_slice(&o.payload);
        }
        assert_eq!(got, data);
        assert_eq!(c.h.core.counters().gso_frames_out, f.len() as u64);
        // Without offload, the same bytes in MSS-sized, complete frames.
        let mut c = connect(capture_config(), src, dst, Some(7));
        c.host_sends(data.clone());
        let f = c.h.take_frames();
        assert!(c.h.k.metas.iter().all(|m| *m == FrameMeta::PLAIN));
        // (one peek's worth: the harness lends 64 slots)
        assert_eq!(f.len(), 64);
        assert!(f.iter().all(|o| o.payload.len() == 1460));
        let plain: Vec<u8> = f.iter().flat_map(|o| o.payload.clone()).collect();
        assert_eq!(plain, data[..plain.len()]);
    }
}

#[test]
fn host_data_without_peek_offset() {
    host_data(false);
}

#[test]
fn host_data_with_peek_offset() {
    host_data(true);
}

#[test]
fn retransmit_after_timeout_then_reset() {
    let mut c = connect4();
    c.host_sends(vec![1u8; 100]);
    assert_eq!(c.h.take_frames().len(), 1);
    assert!(c.h.frames_after(900).is_empty());
    let f = c.h.frames_after(200);
    assert_eq!(f.len(), 1, "retransmitted");
    assert_eq!(f[0].seq, c.our);
    assert_eq!(c.h.core.tcp_stats().retransmits, 1);
    // Never acknowledged: the timeout doubles each time (2, 4, ... 64 s), so
    // the seventh retransmission goes out 127 s after the first send.
    let mut at = 1_000u64;
    for k in 2..=7u64 {
        let rto = 1_000u64 << (k - 1);
        c.h.run_for(rto - 200);
        assert_eq!(
            c.h.core.tcp_stats().retransmits,
            k - 1,
            "not before {rto} ms"
        );
        c.h.run_for(200);
        assert_eq!(c.h.core.tcp_stats().retransmits, k, "after {rto} ms");
        let f = c.h.take_frames();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].seq, c.our);
        at += rto;
    }
    assert_eq!(at, 127_000);
    // The last one waits for the ceiling (120 s), then the reset.
    c.h.run_for(119_000);
    assert_eq!(c.h.core.tcp_stats().retransmits, 7);
    assert_eq!(c.h.core.flow_count(), 1);
    assert!(c.h.take_frames().is_empty());
    let f = c.h.frames_after(1_000);
    assert!(f.last().unwrap().rst);
    assert!(!f.last().unwrap().ackf, "RST alone");
    // Closed plainly: what the socket holds for the host peer still goes.
    assert!(!c.h.k.dead[&c.sock].linger_zero);
    c.h.assert_empty();
}

#[test]
fn silent_guest_keeps_connection_for_a_minute() {
    let mut c = connect4();
    c.host_sends(vec![1u8; 100]);
    assert_eq!(c.h.take_frames().len(), 1);
    // A minute of silence: retransmissions at 1, 3, 7, 15, 31 s only.
    assert_eq!(c.h.frames_after(60_000).len(), 5);
    assert_eq!(c.h.core.tcp_stats().retransmits, 5);
    assert_eq!(c.h.core.flow_count(), 1);
    // The next one (63 s) reaches the guest, which answers it.
    let f = c.h.frames_after(3_100);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload.len(), 100);
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(100))]);
    // Progress: the timeout starts again from 1 s.
    c.h.sock(c.sock).rx.extend_from_slice(&[2u8; 10]);
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 1);
    assert_eq!(c.h.frames_after(1_100).len(), 1, "retransmitted after 1 s");
    assert_eq!(c.h.core.tcp_stats().timeouts, 0);
}

#[test]
fn fast_retransmit_on_duplicate_acks() {
    let mut c = connect4();
    c.host_sends(vec![1u8; 4000]);
    assert_eq!(c.h.take_frames().len(), 3);
    let dup = c.seg(c.their).ack(c.our.wrapping_add(1460));
    c.h.guest(std::slice::from_ref(&dup));
    assert!(c.h.take_frames().is_empty());
    c.h.guest(std::slice::from_ref(&dup));
    c.h.guest(&[dup]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].seq, c.our.wrapping_add(1460));
    assert_eq!(c.h.core.tcp_stats().fast_retransmits, 1);
}

#[test]
fn tap_sent_rewinds_unsent_frames() {
    let mut c = connect4();
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    c.h.sock(c.sock).rx = data.clone();
    c.h.core.handle_tap_sent(c.h.now, 0); // reset the count
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 4);
    // Only the first two reached the guest.
    c.h.core.handle_tap_sent(c.h.now, 2);
    c.h.drain(&[]);
    c.h.event(c.sock, SockEvent::Readable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].seq, c.our.wrapping_add(2920));
    assert_eq!(f[0].payload, &data[2920..4380]);
}

#[test]
fn zero_window_probe_and_reopen() {
    let mut c = connect4_unscaled();
    // The guest has closed its window.
    c.host_data_to_window(3000, 0);
    assert!(c.h.take_frames().is_empty());
    // Probe: one byte after the retransmission timeout.
    let f = c.h.frames_after(2100);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].payload.len(), 1);
    // Guest still full: keeps probing, no reset.
    for _ in 0..10 {
        c.h.guest(&[c.seg(c.their).win(0)]);
        c.h.run_for(2100);
    }
    assert_eq!(c.h.core.flow_count(), 1);
    c.h.take_frames();
    // Window reopens: data flows from the last acknowledged byte.
    c.h.guest(&[c.seg(c.their).win(2000)]);
    let f = c.h.take_frames();
    let total: usize = f.iter().map(|o| o.payload.len()).sum();
    assert_eq!(total, 2000);
    assert_eq!(f[0].seq, c.our);
}

#[test]
fn shrinking_window_with_data_in_flight_is_ignored() {
    let mut c = connect4_unscaled();
    c.host_data_to_window(10_000, 4000);
    let sent: usize = c.h.take_frames().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 4000);
    // ACK of 1000 bytes with a zero window while 3000 are in flight: the
    // window's right edge stays where it was.
    c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(1000)).win(0)]);
    let f = c.h.take_frames();
    let sent: usize = f.iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 1000);
}

#[test]
fn flow_split_over_two_groups_of_one_batch() {
    // 129 distinct flows in one batch force the grouper to hand over its
    // groups early: the connection's second segment lands in a second group
    // while the Send of the first is still queued.
    let mut c = connect4();
    let mut segs = vec![c.seg(c.their).data(b"first")];
    for p in 1..=128u16 {
        segs.push(G::new(v4(GUEST4), v4(PEER4), p, 9).seq(1).syn());
    }
    segs.push(c.seg(c.their.wrapping_add(5)).data(b"second"));
    c.h.guest(&segs);
    // The second group joins the Send of the first, still queued: one
    // write, nothing left to retransmission.
    let sends =
        c.h.take_actions()
            .iter()
            .filter(|a| matches!(a, Action::Send { sock, .. } if *sock == c.sock))
            .count();
    assert_eq!(sends, 1);
    assert_eq!(c.h.sock(c.sock).written, b"firstsecond");
    c.h.run_for(10);
    let acks: Vec<u32> =
        c.h.take_frames()
            .iter()
            .filter(|o| o.dport == 40000)
            .map(|o| o.ack)
            .collect();
    assert_eq!(acks, vec![c.their.wrapping_add(11)]);

    // A partial write of the joined Send acknowledges only what was taken;
    // the guest retransmits the rest and the stream stays whole.
    let their = c.their.wrapping_add(11);
    c.h.sock(c.sock).send_room = Some(3);
    let mut segs = vec![c.seg(their).data(b"abcd")];
    for p in 1..=128u16 {
        segs.push(G::new(v4(GUEST4), v4(PEER4), p, 9).seq(1).syn());
    }
    segs.push(c.seg(their.wrapping_add(4)).data(b"efgh"));
    c.h.guest(&segs);
    assert_eq!(c.h.sock(c.sock).written, b"firstsecondabc");
    c.h.sock(c.sock).send_room = None;
    c.h.sock(c.sock).outq = 0;
    c.h.event(c.sock, SockEvent::Writable);
    c.h.guest(&[c.seg(their.wrapping_add(3)).data(b"defgh")]);
    assert_eq!(c.h.sock(c.sock).written, b"firstsecondabcdefgh");
}

#[test]
fn peek_overtaken_by_rewind_is_discarded() {
    for peek_offset in [false, true] {
        let mut cfg = capture_config();
        cfg.peek_offset = peek_offset;
        let mut c = connect(cfg, v4(GUEST4), v4(PEER4), Some(0));
        let data: Vec<u8> = (0..8000u32).map(|i| (i / 3) as u8).collect();
        c.h.sock(c.sock).rx = data[..4380].to_vec();
        c.h.guest(&[c.seg(c.their).win(8000)]);
        c.h.event(c.sock, SockEvent::Readable);
        assert_eq!(c.h.take_frames().len(), 3);
        c.h.sock(c.sock).rx.extend_from_slice(&data[4380..]);
        // One batch: an ACK (asks for a Peek), then, in a second group, two
        // duplicate ACKs (fast retransmission rewinds before the Peek runs).
        let ack = c.seg(c.their).ack(c.our.wrapping_add(1460)).win(8000);
        let mut segs = vec![ack.clone()];
        for p in 1..=128u16 {
            segs.push(G::new(v4(GUEST4), v4(PEER4), p, 9).seq(1).syn());
        }
        segs.push(ack.clone());
        segs.push(ack);
        c.h.guest(&segs);
        let f: Vec<Out> =
            c.h.take_frames()
                .into_iter()
                .filter(|o| o.dport == 40000)
                .collect();
        assert!(!f.is_empty());
        assert_eq!(
            f[0].seq,
            c.our.wrapping_add(1460),
            "peek_offset {peek_offset}"
        );
        for o in &f {
            let off = o.seq.wrapping_sub(c.our) as usize;
            assert_eq!(&o.payload[..], &data[off..off + o.payload.len()]);
        }
    }
}

#[test]
fn tap_sent_rewinds_past_thousands_of_frames() {
    // More frames between two handle_tap_sent calls than the log has runs
    // for single frames: small segments, one run per peek.
    let mut h = H::new(capture_config());
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 80);
    let mss48 = vec![
        TcpOptionElement::MaximumSegmentSize(48),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ];
    h.guest(&[g.clone().seq(1).syn().opts(mss48)]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Ok(())));
    let our = h.take_frames()[0].seq.wrapping_add(1);
    h.guest(&[g.clone().seq(2).ack(our)]);
    h.core.handle_tap_sent(h.now, 0);
    let total = (TX_LOG + 2000) * 48;
    h.sock(sock).rx = (0..total).map(|i| i as u8).collect();
    let mut frames = 0;
    for _ in 0..1000 {
        h.event(sock, SockEvent::Readable);
        let n = h.take_frames().len();
        if n == 0 {
            break;
        }
        frames += n;
    }
    assert_eq!(frames, TX_LOG + 2000);
    // The link took only the first 9000: everything after is sent again.
    h.core.handle_tap_sent(h.now, 9000);
    h.drain(&[]);
    h.event(sock, SockEvent::Readable);
    let f = h.take_frames();
    assert!(!f.is_empty());
    assert_eq!(f[0].seq, our.wrapping_add(9000 * 48));
    assert_eq!(f[0].payload, h.sock(sock).rx[9000 * 48..9001 * 48].to_vec());
}
