//! The guest side: segments from the guest, per flow and batch.

use super::conn::PendingSend;
use super::*;
use crate::action::SpanList;

/// Passes over a batch to fit out-of-order segments into the gap.
const REORDER_PASSES: usize = 4;

/// One flow's segments of a batch: the batch, and the packets in it, in
/// order.
#[derive(Clone, Copy)]
pub(super) struct Segs<'a> {
    batch: &'a FrameBatch<'a>,
    pkts: &'a [L4Packet],
}

impl TcpState {
    pub(super) fn parse(
        &mut self,
        cx: &mut Ctx<'_>,
        batch: &FrameBatch<'_>,
        p: &L4Packet,
    ) -> Option<Seg> {
        crate::work::tick(1);
        let start = p.l4_off as usize;
        let l4 = start
            .checked_add(p.l4_len as usize)
            .and_then(|end| batch.buffer().get(start..end));
        let s = l4.and_then(|l4| segment::parse(l4, p.l4_off));
        if s.is_none() {
            cx.counters.drop(DropReason::L4Truncated);
        }
        s
    }

    /// One flow's TCP segments from a batch, in order.
    pub(crate) fn sequence(&mut self, cx: &mut Ctx<'_>, batch: &FrameBatch<'_>, pkts: &[L4Packet]) {
        let mut rest = pkts;
        // Each round consumes at least one segment.
        while let Some(first) = rest.first() {
            let segs = Segs { batch, pkts: rest };
            let used = match cx.flows.lookup(&first.key) {
                None => self.segments_no_flow(cx, segs),
                Some(id) => self.segments(cx, id, segs),
            };
            rest = rest.get(used.max(1)..).unwrap_or(&[]);
        }
    }

    /// Segments for a 4-tuple without a connection: the first plain SYN opens
    /// one; everything before it is dropped. Returns the segments used.
    pub(super) fn segments_no_flow(&mut self, cx: &mut Ctx<'_>, segs: Segs<'_>) -> usize {
        let Segs { batch, pkts } = segs;
        let mut rst_sent = false;
        for (i, p) in pkts.iter().enumerate() {
            let Some(s) = self.parse(cx, batch, p) else {
                continue;
            };
            if !s.has(SYN) || s.has(ACK) {
                cx.counters.drop(DropReason::TcpNoFlow);
                // No connection (never was, or already freed: the guest may
                // have missed our RST or FIN): reset it, as RFC 9293
                // §3.10.7.1 asks. Upstream passt drops these silently; a
                // reset ends a guest connection that would otherwise hang
                // until its own timeouts. Resets are never answered.
                let k = &p.key;
                if !rst_sent
                    && !s.has(RST)
                    && k.sport != 0
                    && k.dport != 0
                    && nat::is_unicast(k.src)
                    && nat::is_unicast(k.dst)
                {
                    self.rst_no_flow(cx, k, &s);
                    self.stats.no_flow_resets += 1;
                    // One per batch is enough.
                    rst_sent = true;
                }
                continue;
            }
            if s.has(RST) || s.has(FIN) {
                cx.counters.drop(DropReason::TcpBadSegment);
                continue;
            }
            self.conn_from_tap(cx, &p.key, &s);
            return i + 1;
        }
        pkts.len()
    }

    /// A guest SYN: a new connection and a host socket connecting to the
    /// mapped destination.
    pub(super) fn conn_from_tap(&mut self, cx: &mut Ctx<'_>, key: &FlowKey, s: &Seg) {
        let now = cx.now;
        let Some(dst) = nat::from_tap(cx.cfg, PROTO_TCP, key.src, key.sport, key.dst, key.dport)
        else {
            return cx.counters.drop(DropReason::TcpBadEndpoint);
        };
        let v6 = key.src.is_ipv6();
        let id = match cx.flows.alloc(FlowData::Tcp(TcpConn::default())) {
            Ok(id) => id,
            Err(reason) => {
                cx.counters.drop(reason);
                self.rst_no_flow(cx, key, s);
                return;
            }
        };
        if !cx.flows.insert_key(id, *key) {
            cx.flows.free(id);
            return cx.counters.drop(DropReason::TcpNoFlow);
        }
        let gen = cx.flows.get(id).map_or(0, |f| f.gen);
        let sock = flow::sock_id(id, gen, 0);
        let isn = isn(cx.cfg, key, now);
        let ts_off = ts_offset(cx.cfg, key);
        let guest_mss = clamp_mss(s.mss, v6);
        let mss_to_tap = mss_send(cx.cfg, v6, guest_mss);
        let local = dst.is_loopback()
            || self.low_rtt.contains(&Some(dst))
            || match dst {
                IpAddr::V4(a) => cx.cfg.ip4.as_ref().is_some_and(|c| c.addr == a),
                IpAddr::V6(a) => cx.cfg.ip6.as_ref().is_some_and(|c| c.addr == a),
            };
        let (ws_from_tap, ws_to_tap) = match s.ws {
            Some(ws) => (ws.min(14), MAX_WS),
            None => (0, 0),
        };
        if let Some(c) = cx.tc(id) {
            *c = TcpConn {
                phase: Phase::Connecting,
                sock,
                sock_open: true,
                isn,
                seq_to_tap: isn,
                seq_max_to_tap: isn,
                seq_ack_from_tap: isn,
                seq_from_tap: s.seq.wrapping_add(1),
                seq_max_from_tap: s.seq.wrapping_add(1),
                seq_ack_to_tap: s.seq.wrapping_add(1),
                wnd_from_tap: u32::from(s.win),
                wnd_raw_from_tap: s.win,
                ws_from_tap,
                ws_to_tap,
                mss_to_tap,
                ts_ok: s.ts.is_some(),
                ts_recent: s.ts.map_or(0, |t| t.0),
                ts_off,
                local,
                host_addr: Some(dst),
                t_phase: now,
                t_active: now,
                ..TcpConn::default()
            };
        }
        self.stats.opened += 1;
        self.open_socks += 1;
        log::debug!(
            "tcp flow {}: guest {}:{} -> {}:{} (host {dst})",
            id.0,
            key.src,
            key.sport,
            key.dst,
            key.dport
        );
        cx.act(Action::Open {
            sock,
            kind: SockKind::TcpStream,
            family: family(dst),
            netns: Netns::Host,
        });
        cx.act(Action::SetOption {
            sock,
            // Linux refuses TCP_MAXSEG above 32767 (EINVAL).
            opt: SockOpt::TcpMaxSeg(guest_mss.min(MAXSEG_MAX)),
        });
        stream_options(cx, sock);
        self.interest(cx, id);
        cx.act(Action::Connect {
            sock,
            addr: SocketAddr::new(dst, key.dport),
        });
        self.note_timer(cx, id);
    }

    /// Segments for connection `id`. Returns how many were used: all of them
    /// unless the connection ended on one (the rest may open a new one).
    ///
    /// Over 100 lines: one match over the handshake phases, each arm the
    /// step of RFC 9293's state machine for one segment; apart, each arm
    /// would need the loop's index and its early returns handed back.
    pub(super) fn segments(&mut self, cx: &mut Ctx<'_>, id: FlowId, segs: Segs<'_>) -> usize {
        let Segs { batch, pkts } = segs;
        let now = cx.now;
        let mut i = 0;
        // Handshake segments first.
        while let Some(p) = pkts.get(i) {
            let Some(s) = self.parse(cx, batch, p) else {
                i += 1;
                continue;
            };
            let Some(c) = cx.tc(id) else { return i };
            c.t_active = now;
            c.keepalive_due = now.saturating_add(KEEPALIVE_INTERVAL);
            c.note_ts(&s);
            if s.has(RST) {
                self.guest_reset(cx, id);
                return i + 1;
            }
            match c.phase {
                Phase::Established => break,
                Phase::Connecting
                | Phase::ConnectedInfo
                | Phase::Accepting
                | Phase::AcceptedInfo => {
                    // Retransmitted SYNs while we connect; nothing else is valid.
                    if !s.has(SYN) || s.has(ACK) {
                        cx.counters.drop(DropReason::TcpBadSegment);
                    }
                    i += 1;
                }
                Phase::SynAckSent => {
                    if s.has(SYN) && !s.has(ACK) && s.seq.wrapping_add(1) == c.seq_from_tap {
                        // Our SYN-ACK was lost: send it again.
                        i += 1;
                        self.send_flags(cx, id, SYN | ACK);
                        continue;
                    }
                    if s.has(ACK) && !s.has(SYN) && s.ack == c.isn.wrapping_add(1) {
                        c.phase = Phase::Established;
                        c.retrans = 0;
                        c.t_retx = None;
                        c.wnd_from_tap = (u32::from(s.win) << c.ws_from_tap).min(MAX_WINDOW);
                        c.wnd_raw_from_tap = s.win;
                        let early = c.readable_early;
                        self.interest(cx, id);
                        // Data the host sent during the handshake (a
                        // server that speaks first) goes out at once.
                        if early {
                            self.try_peek(cx, id, false);
                        }
                        break;
                    }
                    cx.counters.drop(DropReason::TcpBadSegment);
                    self.close(cx, id, true);
                    return i + 1;
                }
                Phase::SynSent => {
                    if s.has(SYN) && s.has(ACK) && s.ack == c.isn.wrapping_add(1) {
                        let v6 = p.key.src.is_ipv6();
                        c.seq_from_tap = s.seq.wrapping_add(1);
                        c.seq_max_from_tap = c.seq_from_tap;
                        c.seq_ack_from_tap = s.ack;
                        c.seq_to_tap = s.ack;
                        c.seq_max_to_tap = s.ack;
                        match s.ws {
                            Some(ws) => c.ws_from_tap = ws.min(14),
                            None => {
                                c.ws_from_tap = 0;
                                c.ws_to_tap = 0;
                            }
                        }
                        match s.ts {
                            Some((val, _)) => c.ts_recent = val,
                            None => c.ts_ok = false,
                        }
                        c.wnd_from_tap = u32::from(s.win);
                        c.wnd_raw_from_tap = s.win;
                        let guest_mss = clamp_mss(s.mss, v6);
                        let mss = mss_send(cx.cfg, v6, guest_mss);
                        let Some(c) = cx.tc(id) else { return i };
                        c.mss_to_tap = mss;
                        c.phase = Phase::Established;
                        c.retrans = 0;
                        c.t_retx = None;
                        // Always ACK at once: the host side may wait for the
                        // guest to speak first, or the guest for the host.
                        self.send_flags(cx, id, ACK);
                        self.interest(cx, id);
                        self.try_peek(cx, id, false);
                        self.note_timer(cx, id);
                        i += 1;
                        continue;
                    }
                    cx.counters.drop(DropReason::TcpBadSegment);
                    self.close(cx, id, true);
                    return i + 1;
                }
            }
        }
        if let Some(rest) = pkts.get(i..) {
            if !rest.is_empty() {
                return i + self.data_from_tap(cx, id, Segs { batch, pkts: rest });
            }
        }
        self.note_timer(cx, id);
        pkts.len()
    }

    /// Established connection: ACKs, window updates, data and FIN from the
    /// guest. Returns the segments used.
    ///
    /// Over 100 lines: one pass over the flow's segments of a batch whose
    /// state (the `Send` being built, a gap, the FIN, the ACK owed) lives in
    /// locals; split, that state would be threaded through every part.
    pub(super) fn data_from_tap(&mut self, cx: &mut Ctx<'_>, id: FlowId, segs: Segs<'_>) -> usize {
        let Segs { batch, pkts } = segs;
        let mut span_start = cx.spans.len();
        let batch_no = self.batches;
        let Some(c) = cx.tc(id) else { return 0 };
        // A Send of an earlier batch was carried out before this batch (call
        // order): if its result never came, it cannot be trusted any more.
        if c.send.batch != batch_no {
            c.send = PendingSend::default();
        }
        let (sock, pending, fin_pending) = (c.sock, c.send.bytes, c.send.fin);
        let mut expected = c.seq_from_tap;
        // A Send of this batch is still queued (the flow's segments were
        // split into two groups): it is not carried out yet, so this group's
        // data joins it (its spans move to the end of the list, the new ones
        // follow). Only if that is impossible (no room in the span list, or
        // the guest's FIN came already) is the data left for the guest to
        // retransmit: a second Send after one whose result is unknown could
        // write past a partial write.
        let requeue = pending > 0 && !fin_pending && {
            match self.requeue_send(cx, id, sock) {
                Some(start) => {
                    span_start = start;
                    expected = expected.wrapping_add(pending);
                    true
                }
                None => false,
            }
        };
        let busy = (pending > 0 || fin_pending) && !requeue;
        let Some(c) = cx.tc(id) else { return 0 };
        let closed_in = c.tap_fin_rcvd || busy;
        let mut fin = false;
        let mut ack_now = false;
        let mut gap = false;
        // Segments dropped past the next byte expected (see `dups_owed`).
        let mut ahead: u16 = 0;
        let mut busy_dropped: u16 = 0;
        let mut seq_max = c.seq_max_from_tap;
        let mut peek = false;
        for (i, p) in pkts.iter().enumerate() {
            let Some(s) = self.parse(cx, batch, p) else {
                continue;
            };
            if let Some(c) = cx.tc(id) {
                c.note_ts(&s);
            }
            let end = s.seq.wrapping_add(s.len);
            if s.len > 0 && seq::gt(end, seq_max) {
                seq_max = end;
            }
            if s.has(RST) {
                self.flush_send(cx, id, span_start, fin, requeue);
                self.guest_reset(cx, id);
                return i + 1;
            }
            if s.has(SYN) {
                // A SYN on an open connection: answer with a challenge ACK
                // (RFC 5961 §4). A guest that lost the old connection resets
                // it, and its next SYN opens a new one.
                cx.counters.drop(DropReason::TcpBadSegment);
                ack_now = true;
                continue;
            }
            if s.has(ACK) {
                let pure = s.len == 0 && !s.has(FIN);
                match self.ack_from_tap(cx, id, &s, pure) {
                    AckResult::Fine => {}
                    AckResult::Progress => peek = true,
                    AckResult::Reset => return i + 1,
                }
            }
            if busy {
                if s.len > 0 || s.has(FIN) {
                    gap = true;
                    busy_dropped = busy_dropped.saturating_add(1);
                }
                continue;
            }
            if closed_in || fin {
                if s.len > 0 || s.has(FIN) {
                    ack_now = true;
                }
                continue;
            }
            match self.take_data(cx, &s, &mut expected, &mut fin) {
                Take::Taken | Take::Nothing => {}
                Take::Old => ack_now = true,
                Take::Ahead => {
                    gap = true;
                    ahead = ahead.saturating_add(1);
                }
            }
        }
        // Out-of-order segments: a few more passes may fill the gap.
        let mut pass = 0;
        while gap && !fin && !busy && pass < REORDER_PASSES {
            pass += 1;
            let mut progress = false;
            gap = false;
            let mut still_ahead: u16 = 0;
            for p in pkts {
                let Some(s) = self.parse(cx, batch, p) else {
                    continue;
                };
                if s.has(SYN) || s.has(RST) || fin {
                    continue;
                }
                match self.take_data(cx, &s, &mut expected, &mut fin) {
                    Take::Taken => progress = true,
                    Take::Ahead => {
                        gap = true;
                        still_ahead = still_ahead.saturating_add(1);
                    }
                    Take::Old | Take::Nothing => {}
                }
            }
            ahead = still_ahead;
            if !progress {
                break;
            }
        }
        if gap {
            if let Some(c) = cx.tc(id) {
                // Segments dropped while a Send was pending start at the
                // byte it ends with (if it is taken whole): the first of
                // them fills that gap, the others lie past it.
                let owed = ahead.saturating_add(busy_dropped.saturating_sub(1));
                c.dups_owed = c.dups_owed.saturating_add(owed);
            }
            // With a Send pending, the ACK goes out after its result.
            ack_now = !busy;
        }
        if let Some(c) = cx.tc(id) {
            c.seq_max_from_tap = seq_max;
        }
        let sent = self.flush_send(cx, id, span_start, fin, requeue);
        if !sent {
            if fin {
                self.guest_fin(cx, id);
                ack_now = true;
            }
            if ack_now {
                let small = cx.tc_ref(id).is_some_and(|(_, c)| {
                    c.wnd_to_tap < u32::from(c.mss_to_tap) && !c.tap_fin_rcvd
                });
                if let (true, Some(c)) = (small, cx.tc(id)) {
                    // Probing our closed window: answer with a fresh one.
                    c.force_ack = true;
                    let sock = c.sock;
                    cx.act(Action::QuerySendSpace { sock });
                } else {
                    self.send_ack(cx, id);
                }
            }
        } else if let (true, Some(c)) = (ack_now, cx.tc(id)) {
            // A segment owed an ACK at once (one seen before: our ACK was
            // lost): the one after the Send's result goes out at once.
            c.force_ack = true;
        }
        if peek {
            self.try_peek(cx, id, false);
        }
        if self.maybe_done(cx, id) {
            return pkts.len();
        }
        self.interest(cx, id);
        self.note_timer(cx, id);
        pkts.len()
    }

    /// Copies the spans of the queued `Send` on `sock` (the flow's pending
    /// one, found where it was queued) to the end of the span list, so that
    /// more can follow them. Returns where they now start.
    fn requeue_send(&mut self, cx: &mut Ctx<'_>, id: FlowId, sock: SockId) -> Option<usize> {
        let list = self.queued_send(cx, id, sock).map(|spans| *spans)?;
        let (from, count) = (list.start as usize, list.count as usize);
        let start = cx.spans.len();
        let end = from.checked_add(count)?;
        let copies = self.span_copies.checked_add(count)?;
        if end > start
            || copies > cx.cfg.limits.batch_frames
            || start.checked_add(count)? > cx.spans.capacity()
        {
            return None;
        }
        self.span_copies = copies;
        crate::work::tick(count);
        cx.spans.extend_from_within(from..end);
        Some(start)
    }

    /// The spans of the flow's `Send` still in the action queue, if any.
    fn queued_send<'c>(
        &self,
        cx: &'c mut Ctx<'_>,
        id: FlowId,
        sock: SockId,
    ) -> Option<&'c mut SpanList> {
        let index = cx.tc_ref(id)?.1.send.action?;
        crate::work::tick(1);
        match cx.actions.get_mut(index)? {
            Action::Send { sock: s, spans } if *s == sock => Some(spans),
            _ => None,
        }
    }

    /// Queues the `Send` for spans collected since `span_start`, if any
    /// (`requeue`: updates the queued `Send` of the flow to them instead).
    pub(super) fn flush_send(
        &mut self,
        cx: &mut Ctx<'_>,
        id: FlowId,
        span_start: usize,
        fin: bool,
        requeue: bool,
    ) -> bool {
        let count = cx.spans.len().saturating_sub(span_start);
        if count == 0 {
            return false;
        }
        crate::work::tick(count);
        let total: u64 = cx
            .spans
            .get(span_start..)
            .unwrap_or(&[])
            .iter()
            .map(|s| u64::from(s.len))
            .sum();
        let batch_no = self.batches;
        let Some(c) = cx.tc(id) else { return false };
        let list = SpanList {
            start: span_start as u32,
            count: count as u32,
        };
        c.send = PendingSend {
            bytes: total.min(u64::from(u32::MAX)) as u32,
            fin,
            action: c.send.action,
            spans: list,
            batch: batch_no,
        };
        let sock = c.sock;
        if requeue {
            if let Some(spans) = self.queued_send(cx, id, sock) {
                *spans = list;
                return true;
            }
        }
        let index = cx.actions.next_index();
        let queued = cx.actions.push(Action::Send { sock, spans: list });
        if !queued {
            cx.counters.actions_refused += 1;
        }
        if let Some(c) = cx.tc(id) {
            c.send.action = queued.then_some(index);
        }
        true
    }

    /// Takes the in-order part of `s` (a span for the send), advancing
    /// `expected`; notes an in-order FIN in `fin`.
    pub(super) fn take_data(
        &mut self,
        cx: &mut Ctx<'_>,
        s: &Seg,
        expected: &mut u32,
        fin: &mut bool,
    ) -> Take {
        let end = s.seq.wrapping_add(s.len);
        if s.len > 0 && seq::le(s.seq, *expected) && seq::gt(end, *expected) {
            let skip = expected.wrapping_sub(s.seq);
            let len = s.len - skip;
            let Some(off) = s.payload_off.checked_add(skip) else {
                return Take::Nothing;
            };
            if cx.spans.len() >= cx.spans.capacity() {
                // Never grow the span list: the guest retransmits the rest.
                return Take::Nothing;
            }
            cx.spans.push(crate::action::Span { offset: off, len });
            *expected = end;
            if s.has(FIN) {
                *fin = true;
            }
            return Take::Taken;
        }
        if s.has(FIN) && end == *expected {
            *fin = true;
            return Take::Taken;
        }
        if s.len == 0 && !s.has(FIN) {
            // Pure ACK, or a keep-alive probe (one before the next byte): answer those.
            if s.seq.wrapping_add(1) == *expected {
                return Take::Old;
            }
            return Take::Nothing;
        }
        if seq::le(end, *expected) {
            return Take::Old;
        }
        Take::Ahead
    }

    /// The guest's FIN, after everything before it was written.
    pub(super) fn guest_fin(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let now = cx.now;
        let Some(c) = cx.tc(id) else { return };
        if c.tap_fin_rcvd {
            return;
        }
        c.tap_fin_rcvd = true;
        c.seq_from_tap = c.seq_from_tap.wrapping_add(1);
        if c.tap_fin_sent {
            c.t_phase = now;
        }
        let sock = c.sock;
        cx.act(Action::ShutdownWrite { sock });
    }

    /// An ACK (and window) from the guest.
    ///
    /// About 100 lines: the checks of an ACK and its window (RFC 9293
    /// §3.10.7.4) in their order, on one connection's state.
    pub(super) fn ack_from_tap(
        &mut self,
        cx: &mut Ctx<'_>,
        id: FlowId,
        s: &Seg,
        pure: bool,
    ) -> AckResult {
        let now = cx.now;
        let peek_offset = cx.cfg.peek_offset;
        let pol = cx.cfg.tcp;
        let Some(c) = cx.tc(id) else {
            return AckResult::Fine;
        };
        let ack = s.ack;
        if seq::gt(ack, c.seq_max_to_tap) || seq::lt(ack, c.seq_ack_from_tap) {
            // Acknowledges what we never sent, or stale: ignore it entirely.
            if seq::gt(ack, c.seq_max_to_tap) {
                cx.counters.drop(DropReason::TcpBadSegment);
            }
            return AckResult::Fine;
        }
        let wnd = (u32::from(s.win) << c.ws_from_tap).min(MAX_WINDOW);
        let mut result = AckResult::Fine;
        if ack == c.seq_ack_from_tap {
            let dup = pure
                && s.win == c.wnd_raw_from_tap
                && c.data_in_flight() > 0
                && s.seq == c.seq_from_tap;
            if dup {
                c.dup_acks = c.dup_acks.saturating_add(1);
                if c.dup_acks == pol.dup_ack_threshold {
                    // Fast retransmission from the last acknowledged byte.
                    let una = c.seq_ack_from_tap;
                    self.rewind(cx, id, una);
                    self.stats.fast_retransmits += 1;
                    result = AckResult::Progress;
                }
            } else {
                c.dup_acks = 0;
            }
        } else {
            // New data acknowledged.
            let data_top = c.fin_seq.unwrap_or(c.seq_max_to_tap);
            let new_una = seq::min(ack, data_top);
            let consumed = seq::dist(c.seq_ack_from_tap, new_una);
            c.seq_ack_from_tap = new_una;
            if c.fin_seq.is_some_and(|f| ack == f.wrapping_add(1)) {
                c.tap_fin_acked = true;
                c.tap_fin_sent = true;
                if c.tap_fin_rcvd {
                    c.t_phase = now;
                }
            }
            if seq::gt(ack, c.seq_to_tap) {
                // Acknowledges data sent before a rewind.
                c.seq_to_tap = ack;
            }
            c.retrans = 0;
            c.dup_acks = 0;
            c.stalled = false;
            c.t_retx = if c.anything_in_flight() {
                Some(now.saturating_add(pol.rto))
            } else {
                None
            };
            let sock = c.sock;
            if consumed > 0 {
                cx.act(Action::Consume {
                    sock,
                    len: consumed,
                });
                // The kernel moves SO_PEEK_OFF back by what is consumed.
            }
            let _ = peek_offset;
            result = AckResult::Progress;
        }
        let Some(c) = cx.tc(id) else {
            return AckResult::Reset;
        };
        if c.wnd_from_tap == 0 && wnd > 0 && c.data_in_flight() > 0 {
            // Zero-window probes the guest dropped: send them again.
            let to = c.seq_ack_from_tap;
            self.rewind(cx, id, to);
        }
        let Some(c) = cx.tc(id) else {
            return AckResult::Reset;
        };
        // A window shrinking to zero with data in flight is ignored (some
        // guest kernels advertise it transiently): keep sending to the old edge.
        if !(wnd == 0 && c.data_in_flight() > 0) {
            if wnd > c.wnd_from_tap {
                result = AckResult::Progress;
                c.stalled = false;
            }
            c.wnd_from_tap = wnd;
        }
        if wnd == 0 {
            // The guest is alive, just full: probing goes on.
            c.retrans = 0;
        }
        c.wnd_raw_from_tap = s.win;
        result
    }

    /// Rewinds what we send to the guest to `to` (not before its last ACK).
    pub(super) fn rewind(&mut self, cx: &mut Ctx<'_>, id: FlowId, to: u32) {
        let peek_offset = cx.cfg.peek_offset;
        let Some(c) = cx.tc(id) else { return };
        let to = seq::max(to, c.seq_ack_from_tap);
        if !seq::lt(to, c.seq_to_tap) {
            return;
        }
        if let Some(f) = c.fin_seq {
            if c.tap_fin_sent && !c.tap_fin_acked && seq::le(to, f) {
                c.tap_fin_sent = false;
            }
        }
        c.seq_to_tap = to;
        c.stalled = false;
        c.sock_drained = false;
        let off = seq::dist(c.seq_ack_from_tap, to);
        let sock = c.sock;
        if peek_offset {
            cx.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(off),
            });
        }
    }
}

/// What became of a segment's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// Appended to the send.
    Taken,
    /// Already written (retransmission, keep-alive): the guest needs an ACK.
    Old,
    /// Past a gap.
    Ahead,
    /// Nothing to do (pure ACK).
    Nothing,
}

/// What an ACK from the guest did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AckResult {
    Fine,
    /// Acknowledged data or opened the window: try to send more.
    Progress,
    /// The connection is gone.
    Reset,
}
