//! The socket side: accepting on listeners, socket events, peeked data for
//! the guest.

use super::*;
use crate::offload::{Csum, FrameMeta, Gso, GsoKind, LinkOffload};
use crate::wire::headers::{finish_ip_frame_partial, pad_frame, Ends};

/// Minimum RTT (µs) below which a peer counts as local.
const LOW_RTT_US: u32 = 10;
/// What a write costs in the send buffer's accounting at least, beyond
/// its payload: the kernel charges each buffer its overhead (`truesize`),
/// and a small write on a connection without Nagle takes a buffer of its
/// own. Used to estimate the queue after a write reported without the
/// buffer's state (see `TcpState::sent`).
const WRITE_OVERHEAD: u32 = 2048;

/// Payload per frame to the guest: its MSS or, on a link that segments TCP,
/// as many whole MSS as a frame of [`crate::MAX_FRAME`] bytes holds behind
/// `room` bytes of headers (44 at MTU 1500).
fn seg_to_tap(offload: LinkOffload, mss: u16, room: usize) -> usize {
    let mss = usize::from(mss);
    if !offload.tso {
        return mss;
    }
    let most = crate::MAX_FRAME.saturating_sub(room);
    (most / mss).max(1) * mss
}

/// Writes the headers of a frame to the guest in front of the `chunk` bytes
/// of payload of `slot` (segment `h` of connection `key`), with the offload
/// metadata of a link that completes checksums or segments TCP (`mss`: the
/// segment size there). Returns whether the frame fit.
fn frame_slot(
    cx: &mut Ctx<'_>,
    slot: &mut TxSlot<'_>,
    key: &FlowKey,
    h: &Hdr,
    chunk: usize,
    mss: usize,
) -> bool {
    let v6 = key.src.is_ipv6();
    let l4off = l4_offset(v6);
    let offload = cx.cfg.link_offload;
    let partial = offload.csum || offload.tso;
    let finish = if partial {
        finish_ip_frame_partial
    } else {
        finish_ip_frame
    };
    let ends = Ends::new(cx.guest.mac, cx.src_mac(key.dst), key.dst, key.src);
    let len = slot
        .buf
        .get_mut(l4off..)
        .and_then(|b| h.write(b))
        .and_then(|_| finish(slot.buf, ends, PROTO_TCP, h.len() + chunk));
    let Some(len) = len else { return false };
    slot.frame_len = pad_frame(slot.buf, len);
    if partial {
        slot.meta = FrameMeta {
            csum: Csum::Partial {
                start: l4off as u16,
                offset: 16,
            },
            gso: (chunk > mss).then_some(Gso {
                kind: if v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 },
                size: mss as u16,
                hdr_len: (l4off + h.len()) as u16,
                ecn: false,
            }),
        };
        if chunk > mss {
            cx.counters.gso_frames_out += 1;
        }
    }
    true
}

impl TcpState {
    /// A batch of guest frames begins.
    pub(crate) fn batch_begin(&mut self, now: Instant) {
        let _ = now;
        self.batches += 1;
        self.span_copies = 0;
    }

    // --- sockets ------------------------------------------------------------

    /// Asks for socket data for the guest, as far as its window allows
    /// (`probe`: one byte past a zero window).
    pub(super) fn try_peek(&mut self, cx: &mut Ctx<'_>, id: FlowId, probe: bool) {
        let now = cx.now;
        let peek_offset = cx.cfg.peek_offset;
        let Some((key, c)) = cx.tc_ref(id) else {
            return;
        };
        let room = (l4_offset(key.src.is_ipv6()) + c.hdr_len()) as u16;
        if c.phase != Phase::Established || c.peek_pending || c.tap_fin_sent {
            return;
        }
        let in_flight = c.data_in_flight();
        // Everything the socket held was peeked already, and nothing was
        // rewound: only a `Readable` edge (or the end of the stream) brings
        // more. Peeking now would return EAGAIN.
        let rewound = seq::lt(c.seq_to_tap, c.seq_max_to_tap);
        if c.sock_drained && !rewound && !probe && !c.sock_fin_rcvd {
            return;
        }
        let avail = c.wnd_from_tap.saturating_sub(in_flight).min(MAX_WINDOW);
        let len = if probe && in_flight == 0 { 1 } else { avail };
        let pol = cx.cfg.tcp;
        let Some(c) = cx.tc(id) else { return };
        if len == 0 {
            c.stalled = true;
            if c.wnd_from_tap == 0 && in_flight == 0 && c.t_retx.is_none() {
                c.t_retx = Some(now.saturating_add(pol.rto_after(c.retrans)));
            }
            self.interest(cx, id);
            self.note_timer(cx, id);
            return;
        }
        c.peek_pending = true;
        c.peek_len = len;
        c.peek_seq = c.seq_to_tap;
        let (sock, mss) = (c.sock, c.seg_payload());
        let seg = seg_to_tap(cx.cfg.link_offload, mss, usize::from(room));
        cx.act(Action::Peek {
            sock,
            skip: if peek_offset { 0 } else { in_flight },
            len,
            mss: seg as u16,
            room,
        });
    }

    /// Completes a `Peek`: writes headers in front of the payloads.
    pub(crate) fn peeked(
        &mut self,
        cx: &mut Ctx<'_>,
        sock: SockId,
        result: Result<usize, Errno>,
        slots: &mut [TxSlot<'_>],
    ) -> usize {
        for s in slots.iter_mut() {
            s.frame_len = 0;
            s.meta = FrameMeta::PLAIN;
        }
        let Some(id) = flow_of(cx.flows, sock) else {
            return 0;
        };
        match self.peek_result(cx, id, result) {
            Some(n) => self.frame_peeked(cx, id, n, slots),
            None => 0,
        }
    }

    /// Takes the result of the pending `Peek` of `id`: the bytes to frame,
    /// or `None` if there are none (no peek pending, nothing new, the end
    /// of the stream, an error, or bytes no longer the expected ones).
    fn peek_result(
        &mut self,
        cx: &mut Ctx<'_>,
        id: FlowId,
        result: Result<usize, Errno>,
    ) -> Option<usize> {
        let now = cx.now;
        let peek_offset = cx.cfg.peek_offset;
        let c = cx.tc(id)?;
        if !c.peek_pending {
            return None;
        }
        c.peek_pending = false;
        c.t_active = now;
        match result {
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {
                if c.data_in_flight() > 0 {
                    c.stalled = true;
                }
                c.sock_drained = true;
                self.interest(cx, id);
                None
            }
            Err(_) => {
                self.close(cx, id, true);
                None
            }
            Ok(0) if !c.sock_fin_rcvd => {
                // Nothing beyond what is in flight, but the socket has not
                // reported an end of stream (EPOLLRDHUP): only a peek that
                // skipped everything there was. Wait like on EAGAIN.
                if c.data_in_flight() > 0 {
                    c.stalled = true;
                }
                c.sock_drained = true;
                self.interest(cx, id);
                None
            }
            Ok(0) => {
                // End of stream, and everything before it was sent: FIN.
                c.sock_fin_rcvd = true;
                self.send_fin(cx, id);
                self.interest(cx, id);
                self.note_timer(cx, id);
                None
            }
            Ok(_) if c.seq_to_tap != c.peek_seq => {
                // The sequence moved (a rewind, or an ACK past it) after the
                // Peek was asked for: these bytes are not the ones expected.
                let (sock, off) = (c.sock, c.data_in_flight());
                if peek_offset {
                    cx.act(Action::SetOption {
                        sock,
                        opt: SockOpt::PeekOffset(off),
                    });
                }
                self.try_peek(cx, id, false);
                self.interest(cx, id);
                None
            }
            Ok(n) => Some(n.min(c.peek_len as usize)),
        }
    }

    /// Frames the `n` bytes peeked for `id` into `slots`; returns the
    /// number of frames.
    // Long by design: one pass over the peeked bytes that cuts segments, writes their
    // headers and advances the send state, so that the payload is copied once.
    fn frame_peeked(
        &mut self,
        cx: &mut Ctx<'_>,
        id: FlowId,
        n: usize,
        slots: &mut [TxSlot<'_>],
    ) -> usize {
        let now = cx.now;
        let peek_offset = cx.cfg.peek_offset;
        let pol = cx.cfg.tcp;
        let Some((key, c)) = cx.tc_ref(id) else {
            return 0;
        };
        let key = *key;
        let rto = pol.rto_after(c.retrans);
        let room = l4_offset(key.src.is_ipv6()) + c.hdr_len();
        let mss = c.seg_payload();
        let seg = seg_to_tap(cx.cfg.link_offload, mss, room);
        let mss = usize::from(mss);
        let ts = c.ts_opt(now);
        let (win, wbytes) = c.win_field(false);
        let ack = c.seq_from_tap;
        let start = c.seq_to_tap;
        let gen = cx.flows.get(id).map_or(0, |f| f.gen);
        let mut seqno = start;
        let mut left = n;
        let mut frames = 0;
        for slot in slots.iter_mut() {
            if left == 0 {
                break;
            }
            let chunk = left.min(seg).min(slot.buf.len().saturating_sub(room));
            if chunk == 0 {
                break;
            }
            let h = Hdr {
                ports: key.reply_ports(),
                seq: seqno,
                ack,
                flags: ACK | if chunk == left { PSH } else { 0 },
                win,
                syn_opts: None,
                ts,
            };
            if !frame_slot(cx, slot, &key, &h, chunk, mss) {
                break;
            }
            self.txlog(cx.counters.frames_out, id, gen, seqno, chunk as u32);
            cx.counters.frames_out += 1;
            frames += 1;
            seqno = seqno.wrapping_add(chunk as u32);
            left -= chunk;
        }
        let sent = (n - left) as u32;
        // After the peer's FIN, a peek that got less than it asked for and
        // than the slots could hold reached the end of the stream.
        let cap: usize = slots
            .iter()
            .map(|s| s.buf.len().saturating_sub(room).min(seg))
            .sum();
        let Some(c) = cx.tc(id) else { return frames };
        let at_end = c.sock_fin_rcvd && left == 0 && n < c.peek_len as usize && n < cap;
        c.seq_to_tap = seqno;
        c.seq_max_to_tap = seq::max(c.seq_max_to_tap, seqno);
        if sent > 0 {
            if c.local
                && c.t_data_in
                    .is_some_and(|t| now < t.saturating_add(pol.ack_delay_local))
            {
                // An answer: request-response traffic.
                c.pingpong = true;
            }
            c.seq_ack_to_tap = ack;
            c.wnd_to_tap = wbytes;
            c.ack_due = None;
            if c.t_retx.is_none() {
                c.t_retx = Some(now.saturating_add(rto));
            }
        }
        if sent >= c.peek_len || sent == 0 {
            c.stalled = true;
        }
        // Less than asked for and than the slots held: the socket is empty
        // beyond what was just peeked.
        c.sock_drained = n < c.peek_len as usize && n < cap;
        let sock = c.sock;
        let off = c.data_in_flight();
        if peek_offset && sent as usize != n {
            // The kernel's peek offset moved past bytes we could not frame.
            cx.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(off),
            });
        }
        if at_end {
            self.send_fin(cx, id);
        }
        self.interest(cx, id);
        self.note_timer(cx, id);
        frames
    }

    /// Our FIN to the guest, after all the socket's data.
    pub(super) fn send_fin(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let now = cx.now;
        let pol = cx.cfg.tcp;
        let Some(c) = cx.tc(id) else { return };
        if c.tap_fin_sent {
            return;
        }
        let f = *c.fin_seq.get_or_insert(c.seq_to_tap);
        c.seq_to_tap = f;
        let queued = cx.out.len();
        self.send_flags(cx, id, FIN | ACK);
        if cx.out.len() > queued {
            // Logged like data: a link that refuses the FIN has it sent
            // again as soon as it has room, not after the retransmission
            // timeout.
            let index = cx.counters.frames_out + queued as u64;
            let gen = cx.flows.get(id).map_or(0, |fl| fl.gen);
            self.txlog(index, id, gen, f, 0);
        }
        let Some(c) = cx.tc(id) else { return };
        c.tap_fin_sent = true;
        c.seq_to_tap = f.wrapping_add(1);
        c.seq_max_to_tap = seq::max(c.seq_max_to_tap, c.seq_to_tap);
        if c.t_retx.is_none() {
            c.t_retx = Some(now.saturating_add(pol.rto_after(c.retrans)));
        }
        if c.tap_fin_rcvd {
            c.t_phase = now;
        }
    }

    /// The guest link had no room for the frames of `sock`'s pending peek:
    /// the data stays in the socket (neither drained nor stalled) and the
    /// connection waits for `handle_tap_writable`.
    pub(crate) fn link_full(&mut self, cx: &mut Ctx<'_>, sock: SockId) {
        let Some(id) = flow_of(cx.flows, sock) else {
            return;
        };
        let Some(c) = cx.tc(id) else { return };
        if !c.peek_pending {
            return;
        }
        c.peek_pending = false;
        self.wait_for_link(cx, id);
        self.interest(cx, id);
    }

    /// Lists `id` among the connections waiting for room on the guest link.
    pub(super) fn wait_for_link(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let Some(c) = cx.tc(id) else { return };
        if c.link_wait {
            return;
        }
        c.link_wait = true;
        self.link_waiting.push(id);
    }

    /// The guest link has room again: every waiting connection peeks.
    pub(crate) fn link_ready(&mut self, cx: &mut Ctx<'_>) {
        let mut waiting = std::mem::take(&mut self.link_waiting);
        for &id in &waiting {
            if let Some(c) = cx.tc(id) {
                c.link_wait = false;
            }
        }
        for &id in &waiting {
            self.try_peek(cx, id, false);
        }
        waiting.clear();
        // Connections that found no room again were listed anew meanwhile.
        waiting.append(&mut self.link_waiting);
        self.link_waiting = waiting;
    }

    /// Whether a connection waits for room on the guest link.
    pub(crate) fn waiting_for_link(&self) -> bool {
        !self.link_waiting.is_empty()
    }

    /// Readiness of, or a result for, a TCP socket. Returns whether the id
    /// was one of ours.
    ///
    /// Over 100 lines: one short arm per socket event; the dispatch reads
    /// best in one place.
    pub(crate) fn sock_event(&mut self, cx: &mut Ctx<'_>, sock: SockId, ev: SockEvent) -> bool {
        let now = cx.now;
        if let SockRef::Other(idx) = flow::decode(sock) {
            return self.listener_event(cx, idx, ev);
        }
        let Some(id) = flow_of(cx.flows, sock) else {
            if let SockEvent::Accepted(Ok(_)) = ev {
                // The driver made a socket we no longer want.
                cx.act(Action::Close { sock });
            }
            return false;
        };
        let Some(c) = cx.tc(id) else { return false };
        let phase = c.phase;
        match ev {
            SockEvent::OpenFailed(_) => {
                c.sock_open = false;
                self.open_socks = self.open_socks.saturating_sub(1);
                self.close(cx, id, true);
            }
            SockEvent::Connected(Ok(())) if phase == Phase::Connecting => {
                c.phase = Phase::ConnectedInfo;
                cx.act(Action::QueryTcpInfo { sock });
                self.interest(cx, id);
            }
            SockEvent::Connected(_) => {
                if phase == Phase::Connecting {
                    self.close(cx, id, true);
                }
            }
            SockEvent::Accepted(Ok((peer, _))) if phase == Phase::Accepting => {
                // Splicing had its say already (see `accepting`).
                c.sock_open = true;
                self.open_socks += 1;
                self.accepted(cx, id, peer);
            }
            SockEvent::Accepted(Err(e)) if phase == Phase::Accepting => {
                let listener = c.listener;
                cx.flows.free(id);
                if fwd::accept_exhausted(e) {
                    cx.listeners.pause_accept(cx.actions, Some(listener), now);
                }
            }
            SockEvent::Accepted(_) => {}
            SockEvent::TcpInfo(info) => self.info(cx, id, &info),
            SockEvent::StreamSent { sent, space } => self.sent(cx, id, sent, space),
            SockEvent::Sent(r) => self.sent(cx, id, r, SendSpace::default()),
            SockEvent::SendSpace(space) => self.space(cx, id, space),
            SockEvent::Readable => {
                c.sock_drained = false;
                if phase == Phase::Established {
                    self.try_peek(cx, id, false);
                } else {
                    c.readable_early = true;
                }
            }
            SockEvent::Writable => {
                // The kernel's wake-up fired (or came along with another
                // event): the answer to the query reopens the window. (A
                // socket still not writable had its wake-up armed again by
                // the poll that reported this.)
                if phase == Phase::Established && c.need_out {
                    c.sock_full = false;
                    cx.act(Action::QuerySendSpace { sock });
                }
            }
            SockEvent::ReadHangUp => {
                c.sock_fin_rcvd = true;
                c.sock_drained = false;
                if phase == Phase::Established {
                    self.try_peek(cx, id, false);
                }
                self.interest(cx, id);
            }
            SockEvent::HangUp => {
                if phase != Phase::Established {
                    self.close(cx, id, true);
                } else {
                    // Both directions are shut. Data the guest has not
                    // acknowledged may still sit in the socket (closing it
                    // now would reset the host peer), and our FIN may still
                    // be lost on the link: the flow ends once the guest
                    // acknowledged our FIN (or on the retransmission and FIN
                    // timeouts).
                    c.sock_fin_rcvd = true;
                    c.hup = true;
                    if !c.tap_fin_sent {
                        self.try_peek(cx, id, false);
                    }
                    if self.maybe_done(cx, id) {
                        return true;
                    }
                    self.interest(cx, id);
                }
            }
            SockEvent::Error(_) => self.close(cx, id, true),
            // Spliced and datagram sockets' only.
            SockEvent::SpliceEnded(_)
            | SockEvent::DatagramPeer { .. }
            | SockEvent::Spliced(_)
            | SockEvent::Icmp(_) => {}
        }
        self.note_timer(cx, id);
        true
    }

    /// TCP_INFO of a socket: the peer's RTT, the send buffer, pending
    /// handshake steps.
    pub(super) fn info(&mut self, cx: &mut Ctx<'_>, id: FlowId, info: &TcpInfo) {
        let now = cx.now;
        let Some(c) = cx.tc(id) else { return };
        c.have_info = true;
        if info.snd_mss > 0 {
            c.info_mss = info.snd_mss;
        }
        if info.min_rtt_us > 0 && info.min_rtt_us <= LOW_RTT_US {
            c.local = true;
            if let Some(a) = c.host_addr {
                let t = &mut *self;
                if !t.low_rtt.contains(&Some(a)) {
                    let slot = t.low_rtt_next % LOW_RTT_TABLE;
                    if let Some(e) = t.low_rtt.get_mut(slot) {
                        *e = Some(a);
                    }
                    t.low_rtt_next = (slot + 1) % LOW_RTT_TABLE;
                }
            }
        }
        let pol = cx.cfg.tcp;
        let Some(c) = cx.tc(id) else { return };
        if window_from_space(info.space(), &pol).is_none() {
            // The driver could not tell: fall back to the peer's window, at
            // least the RFC 6928 initial window.
            c.sock_free = info.snd_wnd.max(WINDOW_DEFAULT);
        }
        match c.phase {
            Phase::ConnectedInfo => {
                c.set_space(info.space(), &pol);
                c.seq_to_tap = c.isn.wrapping_add(1);
                c.seq_max_to_tap = c.seq_to_tap;
                c.seq_ack_from_tap = c.seq_to_tap;
                c.phase = Phase::SynAckSent;
                c.t_phase = now;
                // Sent again until the guest's ACK arrives: a lost ACK is
                // recovered when the guest answers the repeated SYN-ACK.
                c.t_retx = Some(now.saturating_add(SYN_RTO));
                self.send_flags(cx, id, SYN | ACK);
                self.interest(cx, id);
            }
            Phase::AcceptedInfo => {
                c.set_space(info.space(), &pol);
                self.send_flags(cx, id, SYN);
                let Some(c) = cx.tc(id) else { return };
                c.phase = Phase::SynSent;
                c.t_retx = Some(now.saturating_add(SYN_RTO));
                c.seq_to_tap = c.isn.wrapping_add(1);
                c.seq_max_to_tap = c.seq_to_tap;
                c.seq_ack_from_tap = c.isn;
                self.interest(cx, id);
            }
            Phase::Established => self.space(cx, id, info.space()),
            _ => {}
        }
    }

    /// The send buffer's state (after a write, on `Writable`, on a timer):
    /// the window to the guest, window updates and deferred ACKs, and the
    /// kernel's wake-up while the window is closed.
    pub(super) fn space(&mut self, cx: &mut Ctx<'_>, id: FlowId, space: SendSpace) {
        let now = cx.now;
        let pol = cx.cfg.tcp;
        let Some(c) = cx.tc(id) else { return };
        if c.phase != Phase::Established {
            c.set_space(space, &pol);
            return;
        }
        let known = c.set_space(space, &pol);
        if known && space.writable() {
            // Writable again: the kernel's wake-up, if armed, was used up.
            c.out_armed = false;
        }
        if c.sock_full {
            // A write did not fit: the buffer is full, whatever the
            // accounting says, until `Writable` (the kernel armed it).
            c.sock_free = 0;
        }
        let new = c.wnd_avail();
        // A window is worth offering once it holds one of the guest's
        // segments, or half of what the empty buffer offers when that is
        // less (RFC 1122 4.2.3.3): a send buffer smaller than two segments
        // never frees a whole one.
        // An unknown buffer is taken to hold a segment.
        let empty = pol.window(c.sndbuf, 0);
        let mss = u32::from(c.mss_to_tap).max(1);
        let seg = empty.map_or(mss, |w| (w / 2).clamp(1, mss));
        // The window is offered again once it holds a segment, or (the
        // policy says) half the buffer.
        let reopen_at = match pol.reopen {
            Reopen::Segment => seg,
            Reopen::HalfBuffer => empty.map_or(seg, |w| (w / 2).max(seg)),
        };
        // The guest sees the window in whole units of the scale it was
        // given: what is left below one unit is not offered (a free space
        // of a segment and a bit less than a unit shows as less than a
        // segment, and a guest avoiding silly windows waits for more).
        let (_, shown) = c.win_field(false);
        let reopened = c.wnd_to_tap < reopen_at && shown >= reopen_at;
        c.need_out = shown < seg && !c.tap_fin_rcvd;
        let mut rearm = false;
        c.t_poll = None;
        if c.need_out {
            if c.sock_full || !known {
                // A write that did not fit armed the kernel's wake-up; an
                // unknown buffer is looked at again now and then.
                c.t_poll = Some(now.saturating_add(pol.window_poll_armed));
            } else if space.writable() {
                // A buffer smaller than three of the guest's segments: the
                // socket stays writable with the window closed, so no
                // wake-up comes. Look again soon.
                c.t_poll = Some(now.saturating_add(pol.window_poll_writable));
            } else {
                // Not writable: setting the interest (again) makes the
                // kernel arm its wake-up for the moment a third of the
                // buffer is free. The poll is a safety net only.
                rearm = !c.out_armed;
                c.out_armed = true;
                c.t_poll = Some(now.saturating_add(pol.window_poll_armed));
            }
        }
        let dups = c.dups_now() > 0;
        let owed = c.seq_ack_to_tap != c.seq_from_tap || dups || c.force_ack;
        // The guest used half the window we offered: a deferred ACK
        // would leave it idle (and a window's worth per 10 ms caps
        // the rate), so acknowledge now.
        let unacked = seq::dist(c.seq_ack_to_tap, c.seq_from_tap);
        let window_half_used = unacked.saturating_mul(2) >= c.wnd_to_tap;
        // A local peer gets the guest's data acknowledged at once, unless
        // the two exchange requests and answers: then less than a segment
        // waits for the answer to carry the ACK (`ack_delay_local`).
        let request = c.pingpong && unacked < u32::from(c.mss_to_tap);
        let immediate = c.force_ack
            || (pol.ack_half_window && window_half_used)
            || (c.local && !request)
            || c.sndbuf < pol.ack_at_once_below
            || c.tap_fin_rcvd
            || dups
            || reopened
            || new == 0;
        c.force_ack = false;
        if (owed || reopened) && immediate {
            self.send_ack(cx, id);
        } else if owed && c.ack_due.is_none() {
            c.ack_due = Some(now.saturating_add(c.ack_delay(&pol)));
        }
        if rearm {
            self.rearm(cx, id);
        } else {
            self.interest(cx, id);
        }
        self.note_timer(cx, id);
    }

    /// Result of a `Send`: acknowledge only what the kernel took; `space` is
    /// the send buffer after the write. Zeros (unknown: a driver may leave
    /// it out after a small write that was taken whole) are replaced by an
    /// estimate while that is safe: the last report plus what was written
    /// since (each write charged [`WRITE_OVERHEAD`] on top), as long as it
    /// says the buffer is at most half full. Otherwise the buffer's state
    /// is asked for.
    pub(super) fn sent(
        &mut self,
        cx: &mut Ctx<'_>,
        id: FlowId,
        r: Result<usize, Errno>,
        space: SendSpace,
    ) {
        let now = cx.now;
        let Some((_, c)) = cx.tc_ref(id) else { return };
        let want = c.send.bytes;
        let taken = r.map_or(0, |n| n.min(want as usize) as u32);
        // The segments the write refused, told by its spans while they are
        // this batch's.
        let l = c.send.spans;
        let split = (c.send.batch == self.batches && taken < want)
            .then(|| {
                let start = l.start as usize;
                let spans = cx.spans.get(start..start.checked_add(l.count as usize)?)?;
                Some(split_segments(spans, taken))
            })
            .flatten();
        let Some(c) = cx.tc(id) else { return };
        let fin = c.send.fin;
        c.send.bytes = 0;
        c.send.fin = false;
        let sock = c.sock;
        let mut estimate = None;
        match r {
            Ok(_) => {
                let n = taken;
                if n < want {
                    c.learn_payload_share(c.sock_free, want, n);
                    c.owe_dups_for_refused(split, n, want - n);
                }
                c.seq_from_tap = c.seq_from_tap.wrapping_add(n);
                c.sock_free = c.sock_free.saturating_sub(n);
                c.t_active = now;
                if n > 0 {
                    c.t_data_in = Some(now);
                }
                c.queued = c.queued.saturating_add(n).saturating_add(WRITE_OVERHEAD);
                if n == want && c.sndbuf > 0 && c.queued <= c.sndbuf / 2 {
                    estimate = Some(SendSpace {
                        sndbuf: c.sndbuf,
                        queued: c.queued,
                    });
                }
                if n < want {
                    c.need_out = true;
                    c.sock_full = true;
                    // The kernel armed its wake-up itself (the write ran
                    // out of room); EPOLLOUT must be in the interest.
                    c.out_armed = true;
                    self.stats.partial_writes += 1;
                } else {
                    c.sock_full = false;
                    if fin {
                        self.guest_fin(cx, id);
                    }
                }
            }
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {
                c.owe_dups_for_refused(split, 0, want);
                c.need_out = true;
                c.sock_full = true;
                c.sock_free = 0;
                c.out_armed = true;
                // Tell the guest at once that the window is closed.
                c.force_ack = true;
                self.stats.partial_writes += 1;
            }
            Err(_) => return self.close(cx, id, true),
        }
        if self.maybe_done(cx, id) {
            return;
        }
        let pol = cx.cfg.tcp;
        if let Some(c) = cx.tc(id) {
            if c.ack_due.is_none() {
                c.ack_due = Some(now.saturating_add(c.ack_delay(&pol)));
            }
        }
        if window_from_space(space, &pol).is_some() {
            self.space(cx, id, space);
        } else if let Some(est) = estimate {
            self.space(cx, id, est);
        } else {
            // The interest follows from the answer (room in the send buffer).
            cx.act(Action::QuerySendSpace { sock });
        }
    }
}

/// The live TCP flow of socket `sock`.
pub(super) fn flow_of(flows: &FlowTable, sock: SockId) -> Option<FlowId> {
    match flow::decode(sock) {
        SockRef::Flow { id, gen, side: 0 } => {
            let f = flows.get(id)?;
            match &f.data {
                FlowData::Tcp(c) if f.gen == gen && c.sock == sock => Some(id),
                _ => None,
            }
        }
        _ => None,
    }
}
