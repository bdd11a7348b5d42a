//! The receiving side: segments from the core, ACKs, data, and timers.

use super::*;

impl TcpModel {
    /// A segment from the core, at `now`.
    pub fn on_segment(&mut self, now: u64, t: &TcpSeg) {
        self.stats.segs_in += 1;
        if t.flags & flags::RST != 0 {
            if self.state != TcpState::Listen {
                self.state = TcpState::Reset;
                self.reset_by_peer = true;
                self.rto_at = None;
                self.persist_at = None;
                self.delack_at = None;
            }
            return;
        }
        match self.state {
            TcpState::Reset => return,
            TcpState::Listen => {
                if t.flags & flags::SYN == 0 || t.flags & flags::ACK != 0 {
                    return;
                }
                self.remote = Some(t.src);
                self.irs = t.seq;
                self.rcv_nxt = 1;
                self.negotiate(t);
                self.state = TcpState::SynReceived;
                let o = self.syn_opts(t.opts.contains("wscale"));
                self.emit(now, 0, flags::SYN, 0, &o);
                self.snd_nxt = 1;
                self.snd_max = 1;
                self.rto_at = Some(now + self.cur_rto(0));
                return;
            }
            TcpState::SynSent => {
                let ack = t.ack.wrapping_sub(self.iss);
                if t.flags & (flags::SYN | flags::ACK) != flags::SYN | flags::ACK || ack != 1 {
                    return;
                }
                self.irs = t.seq;
                self.rcv_nxt = 1;
                self.negotiate(t);
                self.establish(now, t);
                self.send_ack(now);
                self.output(now);
                return;
            }
            TcpState::SynReceived => {
                if t.flags & flags::SYN != 0 {
                    // The core sent its SYN again: our SYN-ACK was lost.
                    let o = self.syn_opts(t.opts.contains("wscale"));
                    self.stats.retransmits += 1;
                    self.emit(now, 0, flags::SYN, 0, &o);
                    return;
                }
                if t.flags & flags::ACK == 0 || t.ack.wrapping_sub(self.iss) != 1 {
                    return;
                }
                self.establish(now, t);
            }
            TcpState::Established => {
                if t.flags & flags::SYN != 0 {
                    // A SYN-ACK again: our ACK of it was lost.
                    self.send_ack(now);
                    return;
                }
            }
        }
        if t.flags & flags::ACK != 0 {
            self.on_ack(now, t);
        }
        let len = t.payload.len() as u64;
        let fin = t.flags & flags::FIN != 0;
        let ack_now = self.on_data(now, t.seq, len, fin);
        let before = self.stats.segs_out;
        self.output(now);
        let sent = self.stats.segs_out > before;
        if ack_now && !sent {
            self.send_ack(now);
        } else if !sent && self.unacked_segs > 0 && self.delack_at.is_none() {
            self.delack_at = Some(now + DELACK);
        }
    }

    fn on_ack(&mut self, now: u64, t: &TcpSeg) {
        let rel = t
            .ack
            .wrapping_sub(self.iss)
            .wrapping_sub(self.snd_una as u32) as i32;
        let ack = self.snd_una.saturating_add_signed(i64::from(rel));
        let wnd = u64::from(t.win) << self.snd_ws;
        if wnd == 0 {
            self.stats.zero_windows_in += 1;
        }
        // Ahead of what was sent, or older than what was acknowledged (a
        // newer ACK overtook it on the link): ignored, window included, as
        // Linux ignores it (RFC 9293's `SND.WL2` check).
        if ack > self.snd_max || ack < self.snd_una {
            return;
        }
        let has_data = !t.payload.is_empty() || t.flags & flags::FIN != 0;
        if ack > self.snd_una {
            let acked = ack - self.snd_una;
            if let Some((end, at)) = self.timed {
                if ack >= end {
                    self.rtt_sample(now - at);
                    self.timed = None;
                }
            }
            match self.recover {
                Some(r) if ack >= r => {
                    self.recover = None;
                    self.cwnd = self.ssthresh;
                }
                Some(_) => {
                    // A partial ACK: the next hole is lost too.
                    self.snd_una = ack;
                    self.retransmit_one(now, ack);
                    self.cwnd = self.cwnd.saturating_sub(acked).saturating_add(self.smss);
                }
                None if self.cwnd < self.ssthresh => self.cwnd += acked.min(self.smss),
                None => {
                    self.ca_acc += acked;
                    if self.ca_acc >= self.cwnd {
                        self.ca_acc -= self.cwnd;
                        self.cwnd += self.smss;
                    }
                }
            }
            self.snd_una = ack;
            self.snd_nxt = self.snd_nxt.max(ack);
            if self.recover.is_none() {
                self.dupacks = 0;
            }
            self.backoff = 0;
            self.rto_at = (self.snd_una < self.snd_max).then(|| now + self.cur_rto(0));
        } else if ack == self.snd_una
            && !has_data
            && wnd == self.peer_wnd
            && self.snd_max > self.snd_una
        {
            self.dupacks += 1;
            if self.dupacks == 3 && self.recover.is_none() {
                let flight = self.snd_max - self.snd_una;
                self.ssthresh = (flight / 2).max(2 * self.smss);
                self.recover = Some(self.snd_max);
                self.stats.fast_retransmits += 1;
                self.retransmit_one(now, self.snd_una);
                self.cwnd = self.ssthresh + 3 * self.smss;
            } else if self.dupacks > 3 && self.recover.is_some() {
                self.cwnd += self.smss;
            }
        }
        self.peer_wnd = wnd;
        self.max_peer_wnd = self.max_peer_wnd.max(wnd);
        if wnd > 0 && self.persist_at.is_some() {
            self.persist_at = None;
            self.persist_backoff = 0;
            if self.snd_una < self.snd_max && self.rto_at.is_none() {
                self.rto_at = Some(now + self.cur_rto(0));
            }
        }
    }

    /// Takes data and a FIN; returns whether to acknowledge at once.
    fn on_data(&mut self, now: u64, seq: u32, len: u64, fin: bool) -> bool {
        if len == 0 && !fin {
            return false;
        }
        let d = seq.wrapping_sub(self.irs).wrapping_sub(self.rcv_nxt as u32) as i32;
        let start = self.rcv_nxt.saturating_add_signed(i64::from(d));
        let end = start + len;
        if end + u64::from(fin) <= self.rcv_nxt || (self.fin_rcvd && len == 0) {
            self.stats.dup_data_in += 1;
            return true;
        }
        // The application reads at once: the window is the whole buffer.
        let wnd_end = self.rcv_nxt + self.rcvbuf;
        if start > self.rcv_nxt {
            self.stats.ooo_in += 1;
            let e = end.min(wnd_end);
            if e > start {
                let x = self.ooo.entry(start).or_insert(e);
                *x = (*x).max(e);
            }
            return true;
        }
        let _ = now;
        let had_gap = !self.ooo.is_empty();
        self.rcv_nxt = self.rcv_nxt.max(end.min(wnd_end));
        while let Some((&a, &b)) = self.ooo.iter().next() {
            if a > self.rcv_nxt {
                break;
            }
            self.rcv_nxt = self.rcv_nxt.max(b);
            self.ooo.remove(&a);
        }
        if fin && self.rcv_nxt == end && !self.fin_rcvd {
            self.fin_rcvd = true;
            self.rcv_nxt += 1;
            return true;
        }
        self.unacked_segs += 1;
        had_gap || self.unacked_segs >= 2
    }

    /// Runs the timers due at `now`.
    pub fn on_timer(&mut self, now: u64) {
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.send_ack(now);
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.persist_at = None;
            if self.state == TcpState::Established
                && self.snd_una < self.data_end()
                && self.peer_wnd == 0
            {
                // One byte into the closed window.
                self.stats.probes += 1;
                let rel = self.snd_una;
                self.emit(now, rel, 0, 1, &[]);
                self.snd_nxt = rel + 1;
                self.snd_max = self.snd_max.max(self.snd_nxt);
                self.persist_backoff = (self.persist_backoff + 1).min(MAX_BACKOFF);
                self.persist_at = Some(now + self.cur_rto(self.persist_backoff));
            }
        }
        if self.rto_at.is_none_or(|t| t > now) {
            return;
        }
        self.rto_at = None;
        if self.backoff >= MAX_BACKOFF {
            // Give up, as a stack does after its retries.
            self.emit(now, self.snd_nxt, flags::RST, 0, &[]);
            self.state = TcpState::Reset;
            self.persist_at = None;
            return;
        }
        self.backoff += 1;
        self.stats.timeouts += 1;
        match self.state {
            TcpState::SynSent => {
                self.stats.retransmits += 1;
                self.snd_max = 0;
                self.output(now);
            }
            TcpState::SynReceived => {
                self.stats.retransmits += 1;
                let o = self.syn_opts(self.ws_offer.is_some() && self.rcv_ws > 0);
                self.emit(now, 0, flags::SYN, 0, &o);
                self.rto_at = Some(now + self.cur_rto(self.backoff));
            }
            TcpState::Established if self.snd_una < self.snd_max => {
                let flight = self.snd_max - self.snd_una;
                self.ssthresh = (flight / 2).max(2 * self.smss);
                self.cwnd = self.smss;
                self.ca_acc = 0;
                self.recover = None;
                self.dupacks = 0;
                self.timed = None;
                self.snd_nxt = self.snd_una;
                self.output(now);
                if self.rto_at.is_none() && self.snd_una < self.snd_max {
                    self.rto_at = Some(now + self.cur_rto(self.backoff));
                }
            }
            _ => self.backoff -= 1,
        }
    }
}
