//! Link feedback (`handle_tap_sent`) and the per-connection timers.

use super::*;

impl TcpState {
    /// Frames after the first `accepted` handed out since the last call did
    /// not reach the guest: rewind their connections.
    pub(crate) fn tap_sent(&mut self, cx: &mut Ctx<'_>, accepted: usize) {
        let now = cx.now;
        let cutoff = self.tx_base.saturating_add(accepted as u64);
        for i in 0..self.txlog.len() {
            let Some(r) = self.txlog.get(i).copied() else {
                break;
            };
            let end = r.index.saturating_add(u64::from(r.count));
            if end <= cutoff {
                continue;
            }
            // The first frame of the run the guest did not get.
            let k = cutoff.saturating_sub(r.index) as u32;
            let seq = r.seq.wrapping_add(k.wrapping_mul(r.stride));
            if cx.flows.get(r.flow).is_some_and(|f| f.gen == r.gen) {
                self.rewind(cx, r.flow, seq);
                // Sent again as soon as the link has room.
                self.wait_for_link(cx, r.flow);
                self.interest(cx, r.flow);
                let pol = cx.cfg.tcp;
                if let Some(c) = cx.tc(r.flow) {
                    if c.t_retx.is_none() {
                        c.t_retx = Some(now.saturating_add(pol.rto_after(c.retrans)));
                    }
                }
                self.note_timer(cx, r.flow);
            }
        }
        self.txlog.clear();
        self.tx_base = cx.counters.frames_out;
    }

    /// Runs the timers that are due, connection by connection in flow
    /// order. A timer armed before its connection's deadline moved later
    /// is armed again for the new one.
    pub(crate) fn timeout(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        let due = self.timers.take_due(now, cx.flows, conn_deadline);
        for &id in &due {
            self.conn_timer(cx, id);
            self.note_timer(cx, id);
        }
        self.timers.done(due);
    }

    pub(super) fn conn_timer(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let now = cx.now;
        let pol = cx.cfg.tcp;
        let Some(c) = cx.tc(id) else { return };
        if c.phase != Phase::Established {
            if now >= c.t_phase.saturating_add(SYN_TIMEOUT) {
                self.stats.timeouts += 1;
                self.close(cx, id, true);
            } else if matches!(c.phase, Phase::SynSent | Phase::SynAckSent)
                && c.t_retx.is_some_and(|t| t <= now)
            {
                // Our SYN or SYN-ACK, or the guest's answer to it, may have
                // been lost: send it again.
                let flags = if c.phase == Phase::SynSent {
                    SYN
                } else {
                    SYN | ACK
                };
                c.t_retx = Some(now.saturating_add(SYN_RTO));
                self.stats.retransmits += 1;
                self.send_flags(cx, id, flags);
            } else {
                // Nothing else runs before the handshake completes.
                c.ack_due = None;
                c.t_retx = c.t_retx.filter(|&t| t > now);
            }
            return;
        }
        if now >= c.t_active.saturating_add(ACT_TIMEOUT)
            || (c.tap_fin_rcvd && c.tap_fin_sent && now >= c.t_phase.saturating_add(FIN_TIMEOUT))
        {
            self.stats.timeouts += 1;
            return self.close(cx, id, true);
        }
        if now >= c.keepalive_due {
            c.keepalive_due = now.saturating_add(KEEPALIVE_INTERVAL);
            // While something is in flight the retransmission timer finds
            // out whether the guest is there (and an ACK of nothing new
            // would count as a duplicate).
            if !c.anything_in_flight() {
                self.send_keepalive(cx, id);
            }
        }
        let Some(c) = cx.tc(id) else { return };
        if c.ack_due.is_some_and(|t| t <= now) {
            c.ack_due = None;
            // No answer carried it in time: not request-response traffic
            // (any more); the guest's data is acknowledged at once again.
            c.pingpong = false;
            self.send_ack(cx, id);
        }
        let Some(c) = cx.tc(id) else { return };
        if c.t_poll.is_some_and(|t| t <= now) {
            c.t_poll = None;
            // No EPOLLOUT for a while: look at the send buffer again.
            c.sock_full = false;
            let sock = c.sock;
            cx.act(Action::QuerySendSpace { sock });
        }
        let Some(c) = cx.tc(id) else { return };
        if c.t_retx.is_some_and(|t| t <= now) {
            c.t_retx = None;
            if c.anything_in_flight() {
                c.retrans += 1;
                if c.retrans > pol.max_retrans {
                    self.stats.timeouts += 1;
                    return self.close(cx, id, true);
                }
                let una = c.seq_ack_from_tap;
                c.t_retx = Some(now.saturating_add(pol.rto_after(c.retrans)));
                self.stats.retransmits += 1;
                self.rewind(cx, id, una);
                self.try_peek(cx, id, false);
            } else if c.wnd_from_tap == 0 && !c.tap_fin_sent {
                c.t_retx = Some(now.saturating_add(pol.rto_after(c.retrans)));
                self.try_peek(cx, id, true);
            }
            self.interest(cx, id);
        }
    }

    /// A keepalive to the guest (RFC 9293 §3.8.4): an ACK one byte before
    /// the next sequence number, which a guest that still knows the
    /// connection answers with an ACK, and one that forgot it with a reset.
    fn send_keepalive(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let Some((key, c)) = cx.tc_ref(id) else {
            return;
        };
        let key = *key;
        let (win, wbytes) = c.win_field(false);
        let h = Hdr {
            ports: key.reply_ports(),
            seq: c.seq_to_tap.wrapping_sub(1),
            ack: c.seq_from_tap,
            flags: ACK,
            win,
            syn_opts: None,
            ts: c.ts_opt(cx.now),
        };
        if !self.ctl(cx, &key, h) {
            return;
        }
        self.stats.keepalives += 1;
        log::debug!("tcp flow {}: keepalive to the guest", id.0);
        if let Some(c) = cx.tc(id) {
            c.seq_ack_to_tap = c.seq_from_tap;
            c.wnd_to_tap = wbytes;
            c.ack_due = None;
        }
    }

    /// The next TCP deadline (at or before it).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The guest link went away: every connection ends (sockets closed).
    pub(crate) fn tap_reset(&mut self, cx: &mut Ctx<'_>) {
        for idx in cx.flows.indices() {
            let id = FlowId(idx);
            if cx.tc_ref(id).is_some() {
                self.close(cx, id, false);
            }
        }
        self.txlog.clear();
        self.tx_base = cx.counters.frames_out;
        self.link_waiting.clear();
    }
}

/// The deadline of connection `id`'s timer, if it is a TCP connection.
fn conn_deadline(flows: &FlowTable, id: FlowId) -> Option<Instant> {
    match &flows.get(id)?.data {
        FlowData::Tcp(c) => c.deadline(),
        _ => None,
    }
}
