//! The socket side: accepting on listeners, socket events, peeked data for
//! the guest.

use super::*;
use crate::offload::{Csum, FrameMeta, Gso, GsoKind, LinkOffload};
use crate::wire::headers::{finish_ip_frame_partial, pad_frame};

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

impl Core {
    /// A batch of guest frames begins.
    pub(crate) fn tcp_batch_begin(&mut self, now: Instant) {
        let _ = now;
        self.tcp.batches += 1;
        self.tcp.span_copies = 0;
    }

    // --- sockets ------------------------------------------------------------

    /// Asks for socket data for the guest, as far as its window allows
    /// (`probe`: one byte past a zero window).
    pub(super) fn tcp_try_peek(&mut self, now: Instant, id: FlowId, probe: bool) {
        let peek_offset = self.cfg.peek_offset;
        let Some((key, c)) = self.tc_ref(id) else {
            return;
        };
        let room = (l4_offset(key.src.is_ipv6()) + TCP_HLEN) as u16;
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
        let pol = self.cfg.tcp;
        let Some(c) = self.tc(id) else { return };
        if len == 0 {
            c.stalled = true;
            if c.wnd_from_tap == 0 && in_flight == 0 && c.t_retx.is_none() {
                c.t_retx = Some(now.saturating_add(pol.rto_after(c.retrans)));
            }
            self.tcp_interest(id);
            self.tcp_note_timer(id);
            return;
        }
        c.peek_pending = true;
        c.peek_len = len;
        c.peek_seq = c.seq_to_tap;
        let (sock, mss) = (c.sock, c.mss_to_tap);
        let seg = seg_to_tap(self.cfg.link_offload, mss.max(MSS_MIN), usize::from(room));
        self.act(Action::Peek {
            sock,
            skip: if peek_offset { 0 } else { in_flight },
            len,
            mss: seg as u16,
            room,
        });
    }

    /// Completes a `Peek`: writes headers in front of the payloads.
    pub(crate) fn tcp_peeked(
        &mut self,
        now: Instant,
        sock: SockId,
        result: Result<usize, Errno>,
        slots: &mut [TxSlot<'_>],
    ) -> usize {
        for s in slots.iter_mut() {
            s.frame_len = 0;
            s.meta = FrameMeta::PLAIN;
        }
        let Some(id) = self.tcp_flow_of(sock) else {
            return 0;
        };
        let peek_offset = self.cfg.peek_offset;
        let pol = self.cfg.tcp;
        let Some(c) = self.tc(id) else { return 0 };
        if !c.peek_pending {
            return 0;
        }
        let rto = pol.rto_after(c.retrans);
        c.peek_pending = false;
        c.t_active = now;
        let n = match result {
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {
                if c.data_in_flight() > 0 {
                    c.stalled = true;
                }
                c.sock_drained = true;
                self.tcp_interest(id);
                return 0;
            }
            Err(_) => {
                self.tcp_close(id, true);
                return 0;
            }
            Ok(0) if !c.sock_fin_rcvd => {
                // Nothing beyond what is in flight, but the socket has not
                // reported an end of stream (EPOLLRDHUP): only a peek that
                // skipped everything there was. Wait like on EAGAIN.
                if c.data_in_flight() > 0 {
                    c.stalled = true;
                }
                c.sock_drained = true;
                self.tcp_interest(id);
                return 0;
            }
            Ok(0) => {
                // End of stream, and everything before it was sent: FIN.
                c.sock_fin_rcvd = true;
                self.tcp_send_fin(now, id);
                self.tcp_interest(id);
                self.tcp_note_timer(id);
                return 0;
            }
            Ok(_) if c.seq_to_tap != c.peek_seq => {
                // The sequence moved (a rewind, or an ACK past it) after the
                // Peek was asked for: these bytes are not the ones expected.
                let (sock, off) = (c.sock, c.data_in_flight());
                if peek_offset {
                    self.act(Action::SetOption {
                        sock,
                        opt: SockOpt::PeekOffset(off),
                    });
                }
                self.tcp_try_peek(now, id, false);
                self.tcp_interest(id);
                return 0;
            }
            Ok(n) => n.min(c.peek_len as usize),
        };
        let Some((key, c)) = self.tc_ref(id) else {
            return 0;
        };
        let key = *key;
        let v6 = key.src.is_ipv6();
        let l4off = l4_offset(v6);
        let room = l4off + TCP_HLEN;
        let offload = self.cfg.link_offload;
        let mss = usize::from(c.mss_to_tap.max(MSS_MIN));
        let seg = seg_to_tap(offload, c.mss_to_tap.max(MSS_MIN), room);
        let gso_kind = if v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 };
        let (win, wbytes) = c.win_field(false);
        let ack = c.seq_from_tap;
        let start = c.seq_to_tap;
        let gen = self.flows.get(id).map_or(0, |f| f.gen);
        let (dst_mac, our_mac) = (self.guest.mac, self.cfg.our_mac);
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
            let partial = offload.csum || offload.tso;
            let h = Hdr {
                sport: key.dport,
                dport: key.sport,
                seq: seqno,
                ack,
                flags: ACK | if chunk == left { PSH } else { 0 },
                win,
                syn_opts: None,
            };
            let len = slot
                .buf
                .get_mut(l4off..)
                .and_then(|b| h.write(b))
                .and_then(|_| {
                    let finish = if partial {
                        finish_ip_frame_partial
                    } else {
                        finish_ip_frame
                    };
                    finish(
                        slot.buf,
                        dst_mac,
                        our_mac,
                        key.dst,
                        key.src,
                        PROTO_TCP,
                        TCP_HLEN + chunk,
                    )
                });
            let Some(len) = len else { break };
            slot.frame_len = pad_frame(slot.buf, len);
            if partial {
                slot.meta = FrameMeta {
                    csum: Csum::Partial {
                        start: l4off as u16,
                        offset: 16,
                    },
                    gso: (chunk > mss).then_some(Gso {
                        kind: gso_kind,
                        size: mss as u16,
                        hdr_len: room as u16,
                        ecn: false,
                    }),
                };
                if chunk > mss {
                    self.counters.gso_frames_out += 1;
                }
            }
            self.tcp_txlog(self.counters.frames_out, id, gen, seqno, chunk as u32);
            self.counters.frames_out += 1;
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
        let Some(c) = self.tc(id) else { return frames };
        let at_end = c.sock_fin_rcvd && left == 0 && n < c.peek_len as usize && n < cap;
        c.seq_to_tap = seqno;
        c.seq_max_to_tap = seq::max(c.seq_max_to_tap, seqno);
        if sent > 0 {
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
            self.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(off),
            });
        }
        if at_end {
            self.tcp_send_fin(now, id);
        }
        self.tcp_interest(id);
        self.tcp_note_timer(id);
        frames
    }

    /// Our FIN to the guest, after all the socket's data.
    pub(super) fn tcp_send_fin(&mut self, now: Instant, id: FlowId) {
        let pol = self.cfg.tcp;
        let Some(c) = self.tc(id) else { return };
        if c.tap_fin_sent {
            return;
        }
        let f = *c.fin_seq.get_or_insert(c.seq_to_tap);
        c.seq_to_tap = f;
        let queued = self.out.len();
        self.tcp_send_flags(id, FIN | ACK);
        if self.out.len() > queued {
            // Logged like data: a link that refuses the FIN has it sent
            // again as soon as it has room, not after the retransmission
            // timeout.
            let index = self.counters.frames_out + queued as u64;
            let gen = self.flows.get(id).map_or(0, |fl| fl.gen);
            self.tcp_txlog(index, id, gen, f, 0);
        }
        let Some(c) = self.tc(id) else { return };
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
    pub(crate) fn tcp_link_full(&mut self, sock: SockId) {
        let Some(id) = self.tcp_flow_of(sock) else {
            return;
        };
        let Some(c) = self.tc(id) else { return };
        if !c.peek_pending {
            return;
        }
        c.peek_pending = false;
        self.tcp_wait_for_link(id);
        self.tcp_interest(id);
    }

    /// Lists `id` among the connections waiting for room on the guest link.
    pub(super) fn tcp_wait_for_link(&mut self, id: FlowId) {
        let Some(c) = self.tc(id) else { return };
        if c.link_wait {
            return;
        }
        c.link_wait = true;
        self.tcp.link_waiting.push(id);
    }

    /// The guest link has room again: every waiting connection peeks.
    pub(crate) fn tcp_link_ready(&mut self, now: Instant) {
        let mut waiting = std::mem::take(&mut self.tcp.link_waiting);
        for &id in &waiting {
            if let Some(c) = self.tc(id) {
                c.link_wait = false;
            }
        }
        for &id in &waiting {
            self.tcp_try_peek(now, id, false);
        }
        waiting.clear();
        // Connections that found no room again were listed anew meanwhile.
        waiting.append(&mut self.tcp.link_waiting);
        self.tcp.link_waiting = waiting;
    }

    /// Whether a connection waits for room on the guest link.
    pub(crate) fn tcp_waiting_for_link(&self) -> bool {
        !self.tcp.link_waiting.is_empty()
    }

    /// The live TCP flow of socket `sock`.
    pub(super) fn tcp_flow_of(&self, sock: SockId) -> Option<FlowId> {
        match flow::decode(sock) {
            SockRef::Flow { id, gen, side: 0 } => {
                let f = self.flows.get(id)?;
                match &f.data {
                    FlowData::Tcp(c) if f.gen == gen && c.sock == sock => Some(id),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Readiness of, or a result for, a TCP socket. Returns whether the id
    /// was one of ours.
    pub(crate) fn tcp_sock_event(&mut self, now: Instant, sock: SockId, ev: SockEvent) -> bool {
        if let SockRef::Other(idx) = flow::decode(sock) {
            return self.tcp_listener_event(now, idx, ev);
        }
        let Some(id) = self.tcp_flow_of(sock) else {
            if let SockEvent::Accepted(Ok(_)) = ev {
                // The driver made a socket we no longer want.
                self.act(Action::Close { sock });
            }
            return false;
        };
        let Some(c) = self.tc(id) else { return false };
        let phase = c.phase;
        match ev {
            SockEvent::OpenFailed(_) => {
                c.sock_open = false;
                self.tcp.open_socks = self.tcp.open_socks.saturating_sub(1);
                self.tcp_close(id, true);
            }
            SockEvent::Connected(Ok(())) if phase == Phase::Connecting => {
                c.phase = Phase::ConnectedInfo;
                self.act(Action::QueryTcpInfo { sock });
                self.tcp_interest(id);
            }
            SockEvent::Connected(_) => {
                if phase == Phase::Connecting {
                    self.tcp_close(id, true);
                }
            }
            SockEvent::Accepted(Ok((peer, local))) if phase == Phase::Accepting => {
                let (listener, target_port) = (c.listener, c.target_port);
                if self.splice_accepted(id, sock, listener, target_port, peer, local) {
                    return true;
                }
                let Some(c) = self.tc(id) else { return true };
                c.sock_open = true;
                self.tcp.open_socks += 1;
                self.tcp_accepted(now, id, peer);
            }
            SockEvent::Accepted(Err(e)) if phase == Phase::Accepting => {
                let listener = c.listener;
                self.flows.free(id);
                if fwd::accept_exhausted(e) {
                    self.listeners
                        .pause_accept(&mut self.actions, Some(listener), now);
                }
            }
            SockEvent::Accepted(_) => {}
            SockEvent::TcpInfo(info) => self.tcp_info(now, id, &info),
            SockEvent::StreamSent { sent, space } => self.tcp_sent(now, id, sent, space),
            SockEvent::Sent(r) => self.tcp_sent(now, id, r, SendSpace::default()),
            SockEvent::SendSpace(space) => self.tcp_space(now, id, space),
            SockEvent::Readable => {
                c.sock_drained = false;
                if phase == Phase::Established {
                    self.tcp_try_peek(now, id, false);
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
                    self.act(Action::QuerySendSpace { sock });
                }
            }
            SockEvent::ReadHangUp => {
                c.sock_fin_rcvd = true;
                c.sock_drained = false;
                if phase == Phase::Established {
                    self.tcp_try_peek(now, id, false);
                }
                self.tcp_interest(id);
            }
            SockEvent::HangUp => {
                if phase != Phase::Established {
                    self.tcp_close(id, true);
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
                        self.tcp_try_peek(now, id, false);
                    }
                    if self.tcp_maybe_done(id) {
                        return true;
                    }
                    self.tcp_interest(id);
                }
            }
            SockEvent::Error(_) => self.tcp_close(id, true),
            // Spliced and datagram sockets' only.
            SockEvent::SpliceEnded(_)
            | SockEvent::DatagramPeer { .. }
            | SockEvent::Spliced(_)
            | SockEvent::Icmp(_) => {}
        }
        self.tcp_note_timer(id);
        true
    }

    /// A connection accepted on a listener: map its addresses, then learn
    /// the socket's buffers before the SYN to the guest.
    pub(super) fn tcp_accepted(&mut self, now: Instant, id: FlowId, peer: SocketAddr) {
        let Some(c) = self.tc(id) else { return };
        let (sock, target, listener) = (c.sock, c.target_port, c.listener);
        let guest_side =
            self.listeners
                .guest_side(&self.cfg, &self.guest, Proto::Tcp, listener, peer.ip());
        let Some((src, guest_addr)) = guest_side else {
            self.counters.drop(DropReason::TcpBadEndpoint);
            return self.tcp_close(id, false);
        };
        let key = FlowKey {
            proto: PROTO_TCP,
            src: guest_addr,
            dst: src,
            sport: target,
            dport: peer.port(),
        };
        if peer.port() == 0 || target == 0 || !self.flows.insert_key(id, key) {
            self.counters.drop(DropReason::TcpBadEndpoint);
            return self.tcp_close(id, false);
        }
        let isn = self.tcp_isn(&key, now);
        let host = peer.ip().to_canonical();
        let known_low_rtt = self.tcp.low_rtt.contains(&Some(host));
        let Some(c) = self.tc(id) else { return };
        c.phase = Phase::AcceptedInfo;
        c.isn = isn;
        c.seq_to_tap = isn;
        c.seq_max_to_tap = isn;
        c.seq_ack_from_tap = isn;
        c.ws_to_tap = MAX_WS;
        c.t_phase = now;
        c.t_active = now;
        c.local = host.is_loopback() || known_low_rtt;
        c.host_addr = Some(host);
        self.tcp.stats.opened += 1;
        log::debug!(
            "tcp flow {}: host {peer} -> guest {}:{} as {}:{}",
            id.0,
            key.src,
            key.sport,
            key.dst,
            key.dport
        );
        if self.cfg.peek_offset {
            self.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(0),
            });
        }
        self.act(Action::QueryTcpInfo { sock });
        self.tcp_interest(id);
    }

    /// TCP_INFO of a socket: the peer's RTT, the send buffer, pending
    /// handshake steps.
    pub(super) fn tcp_info(&mut self, now: Instant, id: FlowId, info: &TcpInfo) {
        let Some(c) = self.tc(id) else { return };
        c.have_info = true;
        if info.snd_mss > 0 {
            c.info_mss = info.snd_mss;
        }
        if info.min_rtt_us > 0 && info.min_rtt_us <= LOW_RTT_US {
            c.local = true;
            if let Some(a) = c.host_addr {
                let t = &mut self.tcp;
                if !t.low_rtt.contains(&Some(a)) {
                    let slot = t.low_rtt_next % LOW_RTT_TABLE;
                    if let Some(e) = t.low_rtt.get_mut(slot) {
                        *e = Some(a);
                    }
                    t.low_rtt_next = (slot + 1) % LOW_RTT_TABLE;
                }
            }
        }
        let pol = self.cfg.tcp;
        let Some(c) = self.tc(id) else { return };
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
                self.tcp_send_flags(id, SYN | ACK);
                self.tcp_interest(id);
            }
            Phase::AcceptedInfo => {
                c.set_space(info.space(), &pol);
                self.tcp_send_flags(id, SYN);
                let Some(c) = self.tc(id) else { return };
                c.phase = Phase::SynSent;
                c.t_retx = Some(now.saturating_add(SYN_RTO));
                c.seq_to_tap = c.isn.wrapping_add(1);
                c.seq_max_to_tap = c.seq_to_tap;
                c.seq_ack_from_tap = c.isn;
                self.tcp_interest(id);
            }
            Phase::Established => self.tcp_space(now, id, info.space()),
            _ => {}
        }
    }

    /// The send buffer's state (after a write, on `Writable`, on a timer):
    /// the window to the guest, window updates and deferred ACKs, and the
    /// kernel's wake-up while the window is closed.
    pub(super) fn tcp_space(&mut self, now: Instant, id: FlowId, space: SendSpace) {
        let pol = self.cfg.tcp;
        let Some(c) = self.tc(id) else { return };
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
        let mss = u32::from(c.mss_to_tap);
        // The window is offered again once it holds a segment, or (the
        // policy says) half the buffer.
        let reopen_at = match pol.reopen {
            Reopen::Segment => mss,
            Reopen::HalfBuffer => pol.window(c.sndbuf, 0).map_or(mss, |w| (w / 2).max(mss)),
        };
        let reopened = c.wnd_to_tap < reopen_at && new >= reopen_at;
        // The guest sees the window in units of the scale it was given: a
        // free space below one unit is a closed window (a guest with an MSS
        // smaller than the unit would otherwise wait for its probe).
        c.need_out = new < mss.max(1 << c.ws_to_tap) && !c.tap_fin_rcvd;
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
        let owed = c.seq_ack_to_tap != c.seq_from_tap || c.dup_ack_pending || c.force_ack;
        // The guest used half the window we offered: a deferred ACK
        // would leave it idle (and a window's worth per 10 ms caps
        // the rate), so acknowledge now.
        let unacked = seq::dist(c.seq_ack_to_tap, c.seq_from_tap);
        let window_half_used = unacked.saturating_mul(2) >= c.wnd_to_tap;
        let immediate = c.force_ack
            || (pol.ack_half_window && window_half_used)
            || c.local
            || c.sndbuf < pol.ack_at_once_below
            || c.tap_fin_rcvd
            || c.dup_ack_pending
            || reopened
            || new == 0;
        c.force_ack = false;
        if (owed || reopened) && immediate {
            self.tcp_send_ack(id);
        } else if owed && c.ack_due.is_none() {
            c.ack_due = Some(now.saturating_add(pol.ack_delay));
        }
        if rearm {
            self.tcp_rearm(id);
        } else {
            self.tcp_interest(id);
        }
        self.tcp_note_timer(id);
    }

    /// Result of a `Send`: acknowledge only what the kernel took; `space` is
    /// the send buffer after the write (zeros: unknown, ask for it).
    pub(super) fn tcp_sent(
        &mut self,
        now: Instant,
        id: FlowId,
        r: Result<usize, Errno>,
        space: SendSpace,
    ) {
        let Some(c) = self.tc(id) else { return };
        let want = c.send_pending;
        let fin = c.fin_pending;
        c.send_pending = 0;
        c.fin_pending = false;
        let sock = c.sock;
        match r {
            Ok(n) => {
                let n = (n.min(want as usize)) as u32;
                c.seq_from_tap = c.seq_from_tap.wrapping_add(n);
                c.sock_free = c.sock_free.saturating_sub(n);
                c.t_active = now;
                if n < want {
                    c.need_out = true;
                    c.sock_full = true;
                    // The kernel armed its wake-up itself (the write ran
                    // out of room); EPOLLOUT must be in the interest.
                    c.out_armed = true;
                    self.tcp.stats.partial_writes += 1;
                } else {
                    c.sock_full = false;
                    if fin {
                        self.tcp_guest_fin(now, id);
                    }
                }
            }
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {
                c.need_out = true;
                c.sock_full = true;
                c.sock_free = 0;
                c.out_armed = true;
                // Tell the guest at once that the window is closed.
                c.force_ack = true;
                self.tcp.stats.partial_writes += 1;
            }
            Err(_) => return self.tcp_close(id, true),
        }
        if self.tcp_maybe_done(id) {
            return;
        }
        let pol = self.cfg.tcp;
        if let Some(c) = self.tc(id) {
            if c.ack_due.is_none() {
                c.ack_due = Some(now.saturating_add(pol.ack_delay));
            }
        }
        if window_from_space(space, &pol).is_some() {
            self.tcp_space(now, id, space);
        } else {
            // The interest follows from the answer (room in the send buffer).
            self.act(Action::QuerySendSpace { sock });
        }
    }

    pub(super) fn tcp_listener_event(&mut self, now: Instant, idx: u32, ev: SockEvent) -> bool {
        let sock = SockId(LISTENER_BIT | idx);
        if idx == REJECT_IDX {
            match ev {
                SockEvent::Accepted(Ok(_)) => self.act(Action::Close { sock }),
                SockEvent::Accepted(Err(e)) if fwd::accept_exhausted(e) => {
                    self.listeners.pause_accept(&mut self.actions, None, now);
                }
                _ => {}
            }
            return true;
        }
        let Some(target_port) = self
            .listeners
            .get(Proto::Tcp, idx)
            .map(|l| l.fwd.target_port)
        else {
            return false;
        };
        if ev != SockEvent::Readable || self.listeners.accept_paused(idx) {
            return true;
        }
        let id = match self.flows.alloc(FlowData::Tcp(TcpConn::default())) {
            Ok(id) => id,
            Err(reason) => {
                self.counters.drop(reason);
                self.act(Action::Accept {
                    listener: sock,
                    sock: SockId(LISTENER_BIT | REJECT_IDX),
                });
                return true;
            }
        };
        let gen = self.flows.get(id).map_or(0, |f| f.gen);
        let fs = flow::sock_id(id, gen, 0);
        if let Some(c) = self.tc(id) {
            c.phase = Phase::Accepting;
            c.sock = fs;
            c.listener = idx;
            c.target_port = target_port;
            c.t_phase = now;
            c.t_active = now;
        }
        self.act(Action::Accept {
            listener: sock,
            sock: fs,
        });
        self.tcp_note_timer(id);
        true
    }
}
