//! The window to the guest and the epoll interest: closed windows,
//! probes, the kernel's wake-up, deferred ACKs.

use super::*;

#[test]
fn probe_of_closed_window_gets_fresh_window() {
    let mut c = connect4_unscaled();
    c.h.sock(c.sock).sndbuf = 4096;
    c.h.guest(&[c.seg(c.their).data(&[1; 4096])]);
    let f = c.h.frames_after(10);
    assert_eq!(f.last().unwrap().win, 0, "window closed");
    // The socket drains without an event reaching us; the guest probes.
    c.h.sock(c.sock).outq = 0;
    let next = c.their.wrapping_add(4096);
    c.h.guest(&[c.seg(next.wrapping_sub(1))]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, next);
    assert_eq!(u32::from(f[0].win) << MAX_WS, 4096 - 256);
}

/// Fills a send buffer of `sndbuf` bytes (the window closes), lets it drain
/// with no `Writable`, and returns the one window update that follows
/// within a poll interval; no poll follows it once the window is open.
fn reopened_after_drain(c: &mut Conn, sndbuf: u32) -> Out {
    c.h.sock(c.sock).sndbuf = sndbuf;
    c.h.guest(&[c.seg(c.their).data(&vec![1; sndbuf as usize])]);
    assert_eq!(c.h.frames_after(10).last().unwrap().win, 0, "closed");
    c.h.sock(c.sock).outq = 0;
    let f = c.h.frames_after(WINDOW_POLL.as_millis() as u64 + 1);
    assert_eq!(f.len(), 1, "one window update: {f:?}");
    c.h.take_actions();
    c.h.run_for(1000);
    let polls = c.h.take_actions();
    assert!(!polls.contains(&Action::QuerySendSpace { sock: c.sock }));
    f[0].clone()
}

/// The socket drains but no EPOLLOUT is reported: the window reopens
/// within one poll interval anyway.
#[test]
fn closed_window_is_polled_without_writable() {
    let mut c = connect4_unscaled();
    let f = reopened_after_drain(&mut c, 4096);
    assert_eq!(u32::from(f.win) << MAX_WS, 4096 - 256);
}

/// A send buffer that never holds one of the guest's segments (the empty
/// buffer offers less than two) still reopens the window once it drained:
/// half of what the empty buffer offers counts as a segment there, and the
/// window update goes out without waiting for the guest's zero-window probe.
#[test]
fn buffer_smaller_than_two_segments_reopens_without_a_probe() {
    let mut c = connect4_unscaled();
    let f = reopened_after_drain(&mut c, 1024);
    assert_eq!(f.ack, c.their.wrapping_add(1024));
    let empty = TcpPolicy::SHIPPED.window(1024, 0).unwrap();
    assert_eq!(u32::from(f.win) << MAX_WS, empty & !((1 << MAX_WS) - 1));
}

/// The window goes out in whole units of the scale: a free space of a
/// segment and less than a unit more shows the guest less than a segment,
/// which it waits on. That window counts as closed: the buffer is watched,
/// and the guest hears as soon as it drained.
#[test]
fn window_shown_below_a_segment_counts_as_closed() {
    let mut c = connect4();
    c.h.sock(c.sock).sndbuf = 4096;
    c.h.sock(c.sock).outq = 1228;
    c.h.guest(&[c.seg(c.their).data(&[1; 1000])]);
    let free = TcpPolicy::SHIPPED.window(4096, 2228).unwrap();
    let f = c.h.frames_after(10);
    let shown = u32::from(f.last().unwrap().win) << MAX_WS;
    assert!(shown < 1460 && free >= 1460, "shown {shown} of {free}");
    c.h.sock(c.sock).outq = 0;
    let f = c.h.frames_after(10);
    assert_eq!(f.len(), 1, "one window update: {f:?}");
    assert!(u32::from(f[0].win) << MAX_WS >= 1460);
}

// --- epoll interest ----------------------------------------------------------------

fn set_interests(h: &mut H) -> usize {
    h.take_actions()
        .iter()
        .filter(|a| matches!(a, Action::SetInterest { .. }))
        .count()
}

#[test]
fn writable_with_full_buffer_changes_no_interest() {
    let mut c = connect_sndbuf(capture_config(), v4(GUEST4), v4(PEER4), Some(7), 8192);
    // The guest fills the send buffer: writable interest.
    c.h.guest(&[c.seg(c.their).data(&[3u8; 8192])]);
    let i = c.h.sock(c.sock).interest.unwrap();
    assert!(i.writable && i.edge);
    c.h.take_actions();
    // EPOLLOUT while the buffer still has no room for a segment: nothing changes.
    for _ in 0..3 {
        c.h.event(c.sock, SockEvent::Writable);
        assert_eq!(set_interests(&mut c.h), 0);
    }
    // It drains: the window reopens, and the interest stays as it is
    // (EPOLLOUT is edge-triggered: it costs nothing while the window is
    // open).
    c.h.sock(c.sock).outq = 0;
    c.h.event(c.sock, SockEvent::Writable);
    assert_eq!(set_interests(&mut c.h), 0);
    assert!(c.h.sock(c.sock).interest.unwrap().writable);
    assert!(c.h.take_frames().last().unwrap().win > 0);
}

#[test]
fn bulk_to_guest_settles_on_one_interest() {
    let mut c = connect4_unscaled();
    c.h.guest(&[c.seg(c.their).win(4380)]);
    c.h.sock(c.sock).rx = vec![1u8; 100_000];
    c.h.event(c.sock, SockEvent::Readable);
    assert_eq!(c.h.take_frames().len(), 3);
    c.h.take_actions();
    let mut acked = 0u32;
    for _ in 0..10 {
        acked += 1460;
        c.h.guest(&[c.seg(c.their).ack(c.our.wrapping_add(acked)).win(4380)]);
        assert_eq!(c.h.take_frames().len(), 1);
        assert_eq!(set_interests(&mut c.h), 0, "interest churn on an ACK");
        c.h.event(c.sock, SockEvent::Readable);
        assert_eq!(set_interests(&mut c.h), 0, "interest churn on Readable");
    }
}

#[test]
fn window_closed_after_partial_write_until_writable() {
    let mut c = connect4();
    c.h.sock(c.sock).send_room = Some(1000);
    c.h.guest(&[c.seg(c.their).data(&[1u8; 1460])]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].ack, f[0].win), (c.their.wrapping_add(1000), 0));
    // A probe of the closed window: still closed (TCP_INFO alone does not
    // reopen it).
    c.h.guest(&[c.seg(c.their.wrapping_add(999))]);
    let f = c.h.take_frames();
    assert_eq!(f.last().unwrap().win, 0);
    // EPOLLOUT: the window opens.
    c.h.sock(c.sock).send_room = None;
    c.h.event(c.sock, SockEvent::Writable);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].win > 0);
    // Without EPOLLOUT, the next poll of the closed window reopens it.
    c.h.sock(c.sock).send_room = Some(0);
    c.h.guest(&[c.seg(c.their.wrapping_add(1000)).data(&[2u8; 100])]);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "closed window announced at once");
    assert_eq!((f[0].ack, f[0].win), (c.their.wrapping_add(1000), 0));
    c.h.sock(c.sock).send_room = None;
    assert!(c.h.frames_after(150).last().unwrap().win > 0);
}

#[test]
fn half_the_window_used_is_acknowledged_at_once() {
    // A remote peer and a large send buffer: ACKs are normally deferred.
    let mut c = connect_sndbuf(capture_config(), v4(GUEST4), v4(PEER4), Some(7), 200_000);
    let mut their = c.their;
    let small = c.seg(their).data(&[1u8; 1460]);
    their = their.wrapping_add(1460);
    c.h.guest(&[small]);
    assert!(c.h.take_frames().is_empty(), "small write: ACK deferred");
    let f = c.h.frames_after(10);
    let wnd = u32::from(f[0].win) << 8;
    assert!(wnd > 100_000);
    // More than half of it in one batch: ACK at once.
    let n = (wnd / 2 / 1460 + 1) as usize;
    let segs: Vec<G> = (0..n)
        .map(|i| {
            c.seg(their.wrapping_add(i as u32 * 1460))
                .data(&[2u8; 1460])
        })
        .collect();
    c.h.guest(&segs);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1, "ACK without waiting for the timer");
    assert_eq!(f[0].ack, their.wrapping_add(n as u32 * 1460));
}

/// A connection to the gateway, which maps to the host's loopback: a local
/// peer.
fn connect_local() -> Conn {
    connect(
        capture_config(),
        v4(GUEST4),
        v4(Ipv4Addr::new(10, 77, 0, 1)),
        Some(7),
    )
}

/// One request from the guest to a local peer and its answer; returns the
/// frames that went to the guest for the request and for the answer.
fn exchange(c: &mut Conn, answer: bool) -> (Vec<Out>, Vec<Out>) {
    c.h.guest(&[c.g.clone().seq(c.their).ack(c.our).data(b"q")]);
    c.their = c.their.wrapping_add(1);
    let on_request = c.h.take_frames();
    if !answer {
        return (on_request, vec![]);
    }
    c.h.sock(c.sock).rx.push(b'a');
    c.h.event(c.sock, SockEvent::Readable);
    let on_answer = c.h.take_frames();
    c.our = c.our.wrapping_add(1);
    // The guest's next request acknowledges the answer.
    (on_request, on_answer)
}

#[test]
fn local_request_ack_rides_on_the_answer() {
    let mut c = connect_local();
    // The first request is acknowledged at once (nothing says yet that
    // answers follow requests); its answer came at once.
    let (req, ans) = exchange(&mut c, true);
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].ack, c.their);
    assert_eq!(ans.len(), 1);
    // From then on the answer carries the ACK: one frame per exchange.
    for _ in 0..3 {
        let (req, ans) = exchange(&mut c, true);
        assert!(req.is_empty(), "the ACK waits for the answer: {req:?}");
        assert_eq!(ans.len(), 1, "{ans:?}");
        assert_eq!(ans[0].payload, b"a");
        assert_eq!(ans[0].ack, c.their);
    }
    c.h.run_for(20);
    assert!(c.h.take_frames().is_empty(), "no ACK of its own later");
    // A request without an answer is acknowledged after the short delay,
    // and the next one at once again.
    let (req, _) = exchange(&mut c, false);
    assert!(req.is_empty());
    let delay = TcpPolicy::SHIPPED.ack_delay_local;
    assert!(delay < TcpPolicy::SHIPPED.ack_delay);
    c.h.run_for(delay.as_millis() as u64);
    let f = c.h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].ack, c.their);
    let (req, _) = exchange(&mut c, false);
    assert_eq!(req.len(), 1, "acknowledged at once");
}

#[test]
fn local_bulk_data_is_acknowledged_at_once_in_request_response_traffic() {
    let mut c = connect_local();
    exchange(&mut c, true);
    exchange(&mut c, true);
    // A segment's worth: no waiting, whatever came before.
    c.data_acked_at_once(&[5u8; 1460]);
}

#[test]
fn small_writes_use_the_estimated_send_buffer() {
    // A remote peer with a 64 KiB buffer (ACKs at once: a small buffer).
    let mut c = connect_sndbuf(capture_config(), v4(GUEST4), v4(PEER4), Some(7), 65536);
    c.h.sock(c.sock).omit_space = true;
    let mut their = c.their;
    let mut wins = vec![];
    let mut queries = 0;
    for _ in 0..20 {
        c.h.guest(&[c.g.clone().seq(their).ack(c.our).data(b"r")]);
        their = their.wrapping_add(1);
        queries +=
            c.h.take_actions()
                .iter()
                .filter(|a| matches!(a, Action::QuerySendSpace { .. }))
                .count();
        let f = c.h.take_frames();
        assert_eq!(f.last().unwrap().ack, their);
        wins.push(u32::from(f.last().unwrap().win) << 8);
        // The peer took it: the real queue stays empty.
        c.h.sock(c.sock).outq = 0;
        if queries > 0 {
            break;
        }
    }
    // Each write is charged its payload and a buffer's overhead until the
    // estimate reaches half the buffer; then the buffer is asked for.
    assert_eq!(wins.len(), 16, "{wins:?}");
    assert_eq!(queries, 1);
    assert!(wins.windows(2).take(14).all(|w| w[1] < w[0]), "{wins:?}");
    // The answer is the real (empty) queue: the whole window again.
    assert!(*wins.last().unwrap() >= wins[0], "{wins:?}");
}
