//! What every part of TCP uses: timers and epoll interest of a connection,
//! control segments to the guest (SYN, ACK, FIN, RST),
//! the transmit log, and the end of a connection.

use super::*;

/// Frames a tap device queues towards us (the kernel's default
/// `txqueuelen`): a guest with more than that in flight overflows the queue,
/// and the frames dropped there come back only after its retransmission
/// timeout. The window offered to the guest stays within three quarters of
/// it, in segments of the MSS we advertised.
const TAP_QUEUE_FRAMES: u32 = 1000;

impl TcpState {
    /// Arms the timer of `id` for its earliest deadline. Called wherever
    /// a deadline may have moved earlier; one that moved later is found
    /// when the timer runs (see `timeout`).
    pub(super) fn note_timer(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let d = cx.tc_ref(id).and_then(|(_, c)| c.deadline());
        self.timers.arm(cx.flows, id, d);
    }

    /// Sets the interest of `id` again even if unchanged: `EPOLL_CTL_MOD`
    /// polls the socket, and a socket found not writable arms the kernel's
    /// wake-up for when it is writable again.
    pub(super) fn rearm(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        if let Some(c) = cx.tc(id) {
            c.interest = None;
        }
        self.interest(cx, id);
    }

    /// Asks for the epoll interest the state of `id` needs, if it changed.
    pub(super) fn interest(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let Some(c) = cx.tc(id) else { return };
        // A pending peek decides the state (stalled or not, data in flight)
        // when it is answered, and sets the interest then: no mask for the
        // state in between.
        if !c.sock_open || c.peek_pending {
            return;
        }
        let want = c.wanted_interest();
        if c.interest == Some(want) {
            return;
        }
        c.interest = Some(want);
        let sock = c.sock;
        cx.act(Action::SetInterest {
            sock,
            interest: want,
        });
    }

    /// Queues a segment without payload to the guest.
    pub(super) fn ctl(&mut self, cx: &mut Ctx<'_>, key: &FlowKey, h: Hdr) -> bool {
        let (dst_mac, src_mac) = (cx.guest.mac, cx.src_mac(key.dst));
        cx.tx()
            .with_src(src_mac)
            .queue_ip(dst_mac, key.dst, key.src, PROTO_TCP, h.len(), |b, _| {
                h.write(b)
            })
    }

    /// Sends flags `flags` (with ACK unless RST alone) on connection `id`,
    /// at `seq_to_tap`.
    pub(super) fn send_flags(&mut self, cx: &mut Ctx<'_>, id: FlowId, flags: u8) {
        let Some((key, c)) = cx.tc_ref(id) else {
            return;
        };
        let key = *key;
        let syn = flags & SYN != 0;
        let syn_opts = if syn {
            let ws = if c.ws_to_tap > 0 || c.phase == Phase::AcceptedInfo {
                Some(MAX_WS)
            } else {
                None
            };
            Some((mss_adv(cx.cfg, TcpConn::v6(&key), c.mss_info()), ws))
        } else {
            None
        };
        if let Some((mss, _)) = syn_opts {
            let clamp = u32::from(mss).saturating_mul(TAP_QUEUE_FRAMES * 3 / 4);
            if let Some(c) = cx.tc(id) {
                c.wnd_clamp = clamp;
            }
        }
        let Some((_, c)) = cx.tc_ref(id) else {
            return;
        };
        let (win, wbytes) = c.win_field(syn);
        let seq = if syn { c.isn } else { c.seq_to_tap };
        let h = Hdr {
            ports: key.reply_ports(),
            seq,
            ack: c.seq_from_tap,
            flags,
            win,
            syn_opts,
            ts: c.ts_opt(cx.now),
        };
        let index = cx.counters.frames_out + cx.out.len() as u64;
        if !self.ctl(cx, &key, h) {
            return;
        }
        let gen = cx.flows.get(id).map_or(0, |f| f.gen);
        if flags & FIN != 0 {
            self.txlog(index, id, gen, seq, 0);
        }
        if let Some(c) = cx.tc(id) {
            if flags & ACK != 0 {
                c.seq_ack_to_tap = c.seq_from_tap;
                c.wnd_to_tap = wbytes;
                c.ack_due = None;
            }
        }
    }

    /// Notes frame `index` of connection `id`, starting at `seq` with `len`
    /// bytes of payload: extends the last run when it continues it.
    pub(super) fn txlog(&mut self, index: u64, id: FlowId, gen: u8, seq: u32, len: u32) {
        if let Some(r) = self.txlog.last_mut() {
            let next = r.index.checked_add(u64::from(r.count));
            let next_seq = r.seq.wrapping_add(r.count.wrapping_mul(r.stride));
            if r.flow == id
                && r.gen == gen
                && next == Some(index)
                && r.last_len == r.stride
                && next_seq == seq
                && len <= r.stride
            {
                r.count += 1;
                r.last_len = len;
                return;
            }
        }
        if self.txlog.len() < TX_LOG {
            self.txlog.push(TxRec {
                index,
                count: 1,
                flow: id,
                gen,
                seq,
                stride: len,
                last_len: len,
            });
        }
    }

    /// Sends an ACK, followed by duplicates for segments of the guest we
    /// dropped (`TcpConn::dups_owed`) when they may go out: one per such
    /// segment, at most `DUP_ACK_BURST`, counting this ACK itself when the
    /// guest will take it for a duplicate (same acknowledgement and window
    /// as the last one).
    pub(super) fn send_ack(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let Some(c) = cx.tc(id) else { return };
        let mut extra = 0;
        let dups = c.dups_now();
        if dups > 0 {
            c.dups_owed = 0;
            let (_, wbytes) = c.win_field(false);
            let dup = c.seq_ack_to_tap == c.seq_from_tap && c.wnd_to_tap == wbytes;
            extra = dups - u16::from(dup);
        }
        self.send_flags(cx, id, ACK);
        for _ in 0..extra {
            self.send_flags(cx, id, ACK);
        }
    }

    /// Resets a segment that belongs to no connection (RFC 9293 §3.10.7.1).
    pub(super) fn rst_no_flow(&mut self, cx: &mut Ctx<'_>, key: &FlowKey, s: &Seg) {
        let h = if s.has(ACK) {
            Hdr::reset(key, s.ack, 0, RST)
        } else {
            let len = s.len + u32::from(s.has(SYN)) + u32::from(s.has(FIN));
            Hdr::reset(key, 0, s.seq.wrapping_add(len), RST | ACK)
        };
        self.ctl(cx, key, h);
    }

    /// Ends connection `id`: closes the socket and frees the flow; with
    /// `rst`, the guest gets a reset (an error or a timeout on our side).
    /// The socket is closed plainly: data it still holds for the host peer
    /// goes out before the FIN (an abortive close would drop it).
    pub(super) fn close(&mut self, cx: &mut Ctx<'_>, id: FlowId, rst: bool) {
        self.end(cx, id, rst, false);
    }

    /// The guest reset connection `id`: the host peer gets a reset too.
    pub(super) fn guest_reset(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        self.end(cx, id, false, true);
    }

    /// Ends connection `id`, resetting the guest side if `rst_guest` and the
    /// socket's peer if `rst_sock` (SO_LINGER with a zero timeout before the
    /// close: a plain close would send a FIN).
    pub(super) fn end(&mut self, cx: &mut Ctx<'_>, id: FlowId, rst_guest: bool, rst_sock: bool) {
        let Some((key, c)) = cx.tc_ref(id) else {
            return;
        };
        let key = *key;
        let c = *c;
        let rst = rst_guest;
        if rst {
            match c.phase {
                // The guest is in SYN-SENT: only an RST acknowledging its SYN counts.
                Phase::Connecting | Phase::ConnectedInfo => {
                    let h = Hdr::reset(&key, 0, c.seq_from_tap, RST | ACK);
                    self.ctl(cx, &key, h);
                }
                // The guest knows nothing of it yet.
                Phase::Accepting | Phase::AcceptedInfo => {}
                _ => self.send_flags(cx, id, RST),
            }
            self.stats.resets += 1;
        }
        if c.sock_open {
            if rst_sock {
                cx.act(Action::SetOption {
                    sock: c.sock,
                    opt: SockOpt::ResetOnClose,
                });
            }
            cx.act(Action::Close { sock: c.sock });
            self.open_socks = self.open_socks.saturating_sub(1);
        }
        log::debug!(
            "tcp flow {}: closed{}",
            id.0,
            match (rst_guest, rst_sock) {
                (true, _) => " (reset)",
                (false, true) => " (reset by the guest)",
                (false, false) => "",
            }
        );
        self.timers.arm(cx.flows, id, None);
        cx.flows.free(id);
        self.stats.closed += 1;
    }

    /// Closes `id` if both directions are finished: our FIN acknowledged,
    /// and the guest's FIN taken or the socket hung up (nothing more can be
    /// written to it).
    pub(super) fn maybe_done(&mut self, cx: &mut Ctx<'_>, id: FlowId) -> bool {
        let done = cx
            .tc_ref(id)
            .is_some_and(|(_, c)| c.tap_fin_acked && (c.tap_fin_rcvd || c.hup));
        if done {
            self.close(cx, id, false);
        }
        done
    }
}
