//! The sending side: segments, payload, the output loop, retransmission and
//! the handshake's options.

use super::*;

impl TcpModel {
    fn win_field(&self, syn: bool) -> u16 {
        let free = self.rcvbuf;
        if syn {
            free.min(65535) as u16
        } else {
            (free >> self.rcv_ws).min(65535) as u16
        }
    }

    pub(super) fn emit(&mut self, now: u64, rel: u64, fl: u8, len: u64, opts: &[u8]) {
        let Some(remote) = self.remote else { return };
        let payload = self.payload(rel, len);
        let syn = fl & flags::SYN != 0;
        let fl = if self.state == TcpState::SynSent {
            fl
        } else {
            fl | flags::ACK
        };
        let ack = self.irs.wrapping_add(self.rcv_nxt as u32);
        let psum = self.payload_sum(rel, len);
        let f = tcp_frame_summed(
            (self.mac, self.peer_mac),
            (self.local, remote),
            self.iss.wrapping_add(rel as u32),
            if fl & flags::ACK != 0 { ack } else { 0 },
            fl,
            self.win_field(syn),
            opts,
            &payload,
            psum,
        );
        self.stats.segs_out += 1;
        if fl & flags::ACK != 0 {
            // Every segment acknowledges what we have.
            self.unacked_segs = 0;
            self.delack_at = None;
        }
        // Frames leave in order, after the stack's latency.
        let at = (now + self.delay).max(self.outq.back().map_or(0, |f| f.0));
        self.outq.push_back((at, f));
    }

    pub(super) fn payload(&self, rel: u64, len: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(len as usize);
        if len == 0 || rel == 0 {
            return v;
        }
        let mut off = ((rel - 1) % CONTENT_LEN as u64) as usize;
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(CONTENT_LEN - off);
            v.extend_from_slice(&self.content[off..off + n]);
            left -= n;
            off = 0;
        }
        v
    }

    /// The payload's contribution to the TCP checksum (before folding),
    /// from prefix sums of the content: big transfers are not summed byte
    /// by byte.
    pub(super) fn payload_sum(&self, rel: u64, len: u64) -> u64 {
        if len == 0 || rel == 0 {
            return 0;
        }
        let p = CONTENT_LEN as u64;
        let mut a = (rel - 1) % p;
        let mut k = 0u64;
        let (mut hi, mut lo) = (0u64, 0u64);
        while k < len {
            let b = (a + (len - k)).min(p);
            // Payload byte k is the high byte of its word when k is even;
            // here k - (j - a) has the parity of k, so table byte j is high
            // when j has the parity of a + k.
            let q = ((a + k) % 2) as usize;
            let range = |par: usize| {
                let t = &self.parity_sums[par];
                t[b as usize] - t[a as usize]
            };
            hi += range(q);
            lo += range(1 - q);
            k += b - a;
            a = 0;
        }
        (hi << 8) + lo
    }

    pub(super) fn syn_opts(&self, peer_ws: bool) -> Vec<u8> {
        let mut spec = format!("mss {}", self.mss_offer);
        if self.sack_offer {
            spec.push_str(",sackOK");
        }
        if let (Some(w), true) = (self.ws_offer, peer_ws) {
            spec.push_str(&format!(",nop,wscale {w}"));
        }
        frame::tcp_options(&spec).unwrap_or_default()
    }

    pub(super) fn send_ack(&mut self, now: u64) {
        let rel = self.snd_nxt;
        self.emit(now, rel, 0, 0, &[]);
    }

    pub(super) fn cur_rto(&self, backoff: u32) -> u64 {
        self.rto.saturating_mul(1 << backoff.min(20)).min(RTO_MAX)
    }

    pub(super) fn data_end(&self) -> u64 {
        1 + self.written
    }

    /// Sends what the windows allow.
    pub(super) fn output(&mut self, now: u64) {
        match self.state {
            TcpState::SynSent if self.snd_max == 0 => {
                let o = self.syn_opts(true);
                self.emit(now, 0, flags::SYN, 0, &o);
                self.snd_nxt = 1;
                self.snd_max = 1;
                self.rto_at = Some(now + self.cur_rto(self.backoff));
                return;
            }
            TcpState::Established => {}
            _ => return,
        }
        let end = self.data_end();
        loop {
            let wnd = self.cwnd.min(self.peer_wnd);
            if self.snd_nxt < end {
                let room = (self.snd_una + wnd).saturating_sub(self.snd_nxt);
                if room == 0 {
                    break;
                }
                let len = self.smss.min(end - self.snd_nxt).min(room);
                // Sender silly-window avoidance (RFC 1122): a short segment
                // only at the end of the data, into half the largest window,
                // or with nothing in flight.
                if len < self.smss
                    && self.snd_nxt + len < end
                    && self.snd_nxt > self.snd_una
                    && len < self.max_peer_wnd / 2
                {
                    break;
                }
                let rel = self.snd_nxt;
                let fl = if rel + len == end { flags::PSH } else { 0 };
                if rel < self.snd_max {
                    self.stats.retransmits += 1;
                    self.stats.retransmit_bytes += len.min(self.snd_max - rel);
                } else if self.timed.is_none() {
                    self.timed = Some((rel + len, now));
                }
                self.emit(now, rel, fl, len, &[]);
                self.snd_nxt += len;
                self.snd_max = self.snd_max.max(self.snd_nxt);
                if self.rto_at.is_none() {
                    self.rto_at = Some(now + self.cur_rto(self.backoff));
                }
                continue;
            }
            if self.fin_queued && self.snd_nxt == end {
                if self.snd_max > end {
                    self.stats.retransmits += 1;
                }
                self.emit(now, end, flags::FIN, 0, &[]);
                self.snd_nxt = end + 1;
                self.snd_max = self.snd_max.max(self.snd_nxt);
                if self.rto_at.is_none() {
                    self.rto_at = Some(now + self.cur_rto(self.backoff));
                }
            }
            break;
        }
        // A closed window with data waiting and nothing in flight: probe it.
        if self.snd_nxt < end
            && self.peer_wnd == 0
            && self.snd_nxt == self.snd_una
            && self.persist_at.is_none()
        {
            self.rto_at = None;
            self.persist_at = Some(now + self.cur_rto(self.persist_backoff));
        }
    }

    /// Sends the segment at `rel` again (fast retransmit, recovery).
    pub(super) fn retransmit_one(&mut self, now: u64, rel: u64) {
        let end = self.data_end();
        if rel < end {
            let len = self.smss.min(end - rel);
            self.stats.retransmits += 1;
            self.stats.retransmit_bytes += len;
            self.emit(now, rel, 0, len, &[]);
        } else if self.fin_queued && rel == end {
            self.stats.retransmits += 1;
            self.emit(now, rel, flags::FIN, 0, &[]);
        }
        self.timed = None;
    }

    pub(super) fn rtt_sample(&mut self, r: u64) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                self.rttvar = (3 * self.rttvar + s.abs_diff(r)) / 4;
                self.srtt = Some((7 * s + r) / 8);
            }
        }
        let s = self.srtt.unwrap_or(r);
        self.rto = (s + (4 * self.rttvar).max(1_000_000)).clamp(RTO_MIN, RTO_MAX);
    }

    pub(super) fn establish(&mut self, now: u64, t: &TcpSeg) {
        self.state = TcpState::Established;
        self.established_at = Some(now);
        self.snd_una = 1;
        self.snd_nxt = self.snd_nxt.max(1);
        self.rto_at = None;
        self.backoff = 0;
        self.cwnd = IW * self.smss;
        self.peer_wnd = u64::from(t.win)
            << if t.flags & flags::SYN != 0 {
                0
            } else {
                self.snd_ws
            };
        self.max_peer_wnd = self.peer_wnd;
    }

    pub(super) fn negotiate(&mut self, t: &TcpSeg) {
        let mut peer_mss = 536u64;
        let mut peer_ws = None;
        for o in t.opts.split(',') {
            if let Some(v) = o.strip_prefix("mss ") {
                peer_mss = v.parse().unwrap_or(536);
            } else if let Some(v) = o.strip_prefix("wscale ") {
                peer_ws = v.parse::<u8>().ok().map(|w| w.min(14));
            }
        }
        self.smss = peer_mss.min(u64::from(self.mss_offer)).max(64);
        if let (Some(p), Some(ours)) = (peer_ws, self.ws_offer) {
            self.snd_ws = p;
            self.rcv_ws = ours;
        }
    }
}
