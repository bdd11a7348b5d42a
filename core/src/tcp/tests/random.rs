//! Randomised end-to-end streams through a faulty link and socket.

use super::*;

// --- randomised end-to-end ------------------------------------------------------

/// An established connection from a host peer (192.0.2.80:40000 connecting to
/// the forwarded port, target port 80 in the guest). `g` is the guest's side,
/// so its segments go from port 80 to 40000.
fn accept_conn(cfg: Config, sndbuf: u32) -> Conn {
    let mut h = H::new(cfg);
    h.k.sndbuf = sndbuf;
    h.core.start(h.now);
    h.drain(&[]);
    h.take_actions();
    let lst = SockId(LISTENER_BIT);
    let sock = h.accept(lst);
    let peer = SocketAddr::new(v4(PEER4), 40000);
    h.event(sock, SockEvent::Accepted(Ok((peer, peer))));
    let syn = h.take_frames().pop().unwrap();
    assert!(syn.syn);
    let g = G::new(v4(GUEST4), v4(PEER4), 80, 40000);
    h.guest(&[g.clone().syn_ack_to(GISN, &syn, 7)]);
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    h.take_actions();
    // The connection's flow lives on: its port pair is reversed from `connect`.
    Conn {
        h,
        sock,
        g,
        our: syn.seq.wrapping_add(1),
        their: GISN.wrapping_add(1),
    }
}

struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Both byte streams arrive intact and in order through guest-link loss,
/// reordering, frames the link did not accept, partial writes and EAGAIN,
/// with and without SO_PEEK_OFF; then both sides close and the connection
/// and its socket go away.
// Long by design: one step loop drives the host peer, the guest link and the guest's
// sender and receiver together, and checks both streams after every step; the models
// share the loop's state.
fn streams_survive(seed: u64, peek_offset: bool, sndbuf: u32, inbound: bool) {
    let mut r = Xs(seed | 1);
    let mut cfg = if inbound {
        inbound_cfg()
    } else {
        capture_config()
    };
    cfg.peek_offset = peek_offset;
    let mut c = if inbound {
        accept_conn(cfg, sndbuf)
    } else {
        connect_sndbuf(cfg, v4(GUEST4), v4(PEER4), Some(7), sndbuf)
    };
    let up: Vec<u8> = (0..30_000u32).map(|i| (i * 31 + 7) as u8).collect();
    let down: Vec<u8> = (0..30_000u32).map(|i| (i * 13 + 1) as u8).collect();
    let up_len = up.len() as u32;
    let mut down_fed = 0usize;
    // Guest sender state (offsets from its first data byte; FIN at up_len).
    let (g_isn, mut g_una, mut g_nxt) = (c.their, 0u32, 0u32);
    let mut peer_wnd: u32 = 65535 << MAX_WS;
    let mut stuck = 0;
    // Guest receiver state.
    let mut got: Vec<u8> = Vec::new();
    let mut got_fin = false;
    let guest_win: u16 = 400; // << 7 = 51200 bytes
    c.h.core.handle_tap_sent(c.h.now, 0);
    let written = |h: &H| -> Vec<u8> {
        h.socks
            .get(&c.sock)
            .or_else(|| h.k.dead.get(&c.sock))
            .map(|s| s.written.clone())
            .unwrap_or_default()
    };
    for step in 0..5000 {
        let lossy = step < 2500;
        let open = c.h.socks.contains_key(&c.sock);
        // Host side: the peer sends a little more, and reads some of what
        // we wrote.
        if open && down_fed < down.len() && r.chance(30) {
            let n = (r.below(5000) as usize + 1).min(down.len() - down_fed);
            c.h.sock(c.sock)
                .rx
                .extend_from_slice(&down[down_fed..down_fed + n]);
            down_fed += n;
            if down_fed == down.len() {
                c.h.sock(c.sock).eof = true;
                // The kernel reports the end of stream (EPOLLRDHUP).
                c.h.event(c.sock, SockEvent::ReadHangUp);
            }
        }
        if open && r.chance(40) {
            let s = c.h.sock(c.sock);
            s.outq = s.outq.saturating_sub(r.below(20_000) as u32);
            s.send_room = if lossy && r.chance(20) {
                Some(r.below(3000) as usize)
            } else {
                None
            };
            c.h.event(c.sock, SockEvent::Writable);
        }
        if c.h.socks.contains_key(&c.sock) {
            c.h.event(c.sock, SockEvent::Readable);
        }
        // Guest link: some frames not accepted, some lost after that.
        let out = c.h.take_frames();
        let accepted = if lossy && r.chance(10) {
            r.below(out.len() as u64 + 1) as usize
        } else {
            out.len()
        };
        c.h.core.handle_tap_sent(c.h.now, accepted);
        c.h.drain(&[]);
        let mut need_ack = false;
        if let Some(s) = c.h.socks.get(&c.sock) {
            // Free space only grew since these frames were made: every window
            // offered must still fit.
            let free = s.sndbuf - s.outq;
            for o in &out {
                let w = u32::from(o.win) << MAX_WS;
                assert!(w <= free, "window {w} above free space {free}");
            }
        }
        for o in &out[..accepted] {
            if lossy && r.chance(5) {
                continue;
            }
            if o.rst {
                // Only for segments after the connection was closed (our
                // ACK of the guest's FIN was lost, say): the guest is done.
                assert_eq!(c.h.core.flow_count(), 0, "connection reset at step {step}");
                g_una = up_len + 1;
                continue;
            }
            assert!(!o.syn);
            // Sender side: our ACK and window.
            let acked = o.ack.wrapping_sub(g_isn);
            assert!(
                acked as usize <= written(&c.h).len() + 1,
                "ACK of data never written"
            );
            if seq::gt(acked, g_una) {
                g_una = acked;
                stuck = 0;
            }
            peer_wnd = u32::from(o.win) << MAX_WS;
            // Receiver side.
            let off = o.seq.wrapping_sub(c.our);
            if !o.payload.is_empty() || o.fin {
                need_ack = true;
            }
            if off as usize == got.len() && !got_fin {
                got.extend_from_slice(&o.payload);
                if o.fin {
                    assert_eq!(got.len(), down.len(), "FIN before all data");
                    got_fin = true;
                }
            }
        }
        assert!(got[..] == down[..got.len()], "guest stream corrupted");
        let w = written(&c.h);
        assert!(w[..] == up[..w.len()], "host stream corrupted");
        if !c.h.socks.contains_key(&c.sock) && got_fin && g_una == up_len + 1 {
            break;
        }
        // Guest sends data within our window, possibly lossy and reordered,
        // and its FIN after the last byte.
        stuck += 1;
        if stuck > 30 {
            g_nxt = g_una; // retransmission timeout
            stuck = 0;
        }
        if seq::lt(g_nxt, g_una) {
            g_nxt = g_una;
        }
        let mut segs = Vec::new();
        let ack = c.our.wrapping_add(got.len() as u32 + u32::from(got_fin));
        for _ in 0..r.below(6) {
            let limit = g_una.wrapping_add(peer_wnd).min(up_len);
            let fin_due = g_nxt == up_len && g_una <= up_len;
            if !seq::lt(g_nxt, limit) && !fin_due {
                break;
            }
            let len = if fin_due {
                0
            } else {
                (r.below(1460) as u32 + 1).min(limit - g_nxt)
            };
            let mut seg = c
                .seg(g_isn.wrapping_add(g_nxt))
                .ack(ack)
                .win(guest_win)
                .data(&up[g_nxt as usize..(g_nxt + len) as usize]);
            g_nxt += len;
            if g_nxt == up_len {
                seg = seg.fin();
                g_nxt += 1;
            }
            if !(lossy && r.chance(5)) {
                segs.push(seg);
            }
            if g_nxt > up_len {
                break;
            }
        }
        if lossy && segs.len() > 1 && r.chance(20) {
            segs.swap(0, 1);
        }
        if segs.is_empty() && peer_wnd == 0 && g_nxt < up_len && stuck % 8 == 7 {
            // Zero-window probe, as Linux sends it: one before the next byte.
            segs.push(
                c.seg(g_isn.wrapping_add(g_una).wrapping_sub(1))
                    .ack(ack)
                    .win(guest_win),
            );
        }
        if segs.is_empty() && (need_ack || r.chance(10)) {
            let seqno = g_isn.wrapping_add(g_nxt.min(up_len + u32::from(g_una > up_len)));
            segs.push(c.seg(seqno).ack(ack).win(guest_win));
        }
        if !segs.is_empty() {
            c.h.guest(&segs);
        }
        let dt = r.below(40) + 1;
        c.h.run_for(dt);
    }
    let w = written(&c.h);
    assert!(
        w == up,
        "guest → host incomplete: {} of {}",
        w.len(),
        up.len()
    );
    assert!(
        got == down,
        "host → guest incomplete: {} of {}",
        got.len(),
        down.len()
    );
    assert!(got_fin, "no FIN from the host side");
    assert!(
        c.h.k.dead.get(&c.sock).is_some_and(|s| s.shut_wr),
        "no shutdown"
    );
    assert_eq!(c.h.core.flow_count(), 0);
    assert_eq!(
        c.h.core.socket_count(),
        usize::from(inbound),
        "only the listener"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    #[test]
    fn streams_survive_faults(seed in proptest::prelude::any::<u64>(), peek in proptest::prelude::any::<bool>(), small in proptest::prelude::any::<bool>(), inbound in proptest::prelude::any::<bool>()) {
        streams_survive(seed, peek, if small { 8192 } else { 1 << 20 }, inbound);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary segments (any flags, numbers, windows, raw options) on an
    /// open connection and on new 4-tuples, mixed with socket events: no
    /// panic, and the tables stay consistent.
    #[test]
    fn arbitrary_segments_never_panic(
        segs in proptest::collection::vec(
            (proptest::prelude::any::<(u32, u32, u8, u16, u8)>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12), 0usize..40),
            1..40),
        events in proptest::collection::vec(0u8..8, 0..20),
    ) {
        let mut c = connect4();
        c.h.sock(c.sock).rx = vec![1; 5000];
        let mut frames = Vec::new();
        for ((seq, ack, flags, win, sport), opts, plen) in segs {
            let mut f = G::new(v4(GUEST4), v4(PEER4), if sport % 2 == 0 { 40000 } else { u16::from(sport) }, 80)
                .seq(seq)
                .win(win)
                .data(&vec![0x5a; plen])
                .build();
            // Raw flags and options, with a matching data offset when they fit.
            f[34 + 13] = flags & 0x3f;
            f[34 + 8..34 + 12].copy_from_slice(&ack.to_be_bytes());
            let mut g = f[..54].to_vec();
            let olen = opts.len() & !3;
            g.extend_from_slice(&opts[..olen]);
            g.extend_from_slice(&f[54..]);
            g[34 + 12] = (((20 + olen) / 4) as u8) << 4;
            let total = (g.len() - 14) as u16;
            g[16..18].copy_from_slice(&total.to_be_bytes());
            // The IP checksum is not checked by the core; the TCP one is not either.
            frames.push(g);
        }
        c.h.guest_raw(&frames);
        for e in events {
            let ev = match e {
                0 => SockEvent::Readable,
                1 => SockEvent::Writable,
                2 => SockEvent::ReadHangUp,
                3 => SockEvent::HangUp,
                4 => SockEvent::Sent(Ok(3)),
                5 => SockEvent::TcpInfo(TcpInfo::default()),
                6 => SockEvent::Connected(Ok(())),
                _ => SockEvent::Error(Errno::ECONNRESET),
            };
            if c.h.socks.contains_key(&c.sock) {
                c.h.event(c.sock, ev);
            }
            c.h.run_for(500);
        }
        c.h.core.handle_tap_reset(c.h.now);
        c.h.drain(&[]);
        proptest::prop_assert_eq!(c.h.core.flow_count(), 0);
        proptest::prop_assert_eq!(c.h.core.socket_count(), 0);
    }
}
