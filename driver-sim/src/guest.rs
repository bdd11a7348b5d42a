//! A small model of a guest TCP endpoint: it opens a connection (or answers
//! one), sends N bytes, acknowledges what it receives in order, retransmits
//! on timeout and on three duplicate acknowledgements (same acknowledgement,
//! same window, as Linux counts them; an older acknowledgement is ignored,
//! window and count alike), and closes. With it, a
//! run can push bulk data through a faulty link and check that everything
//! arrives (liveness), not just that nothing wrong happens.

use crate::frame::{self, flags, MacAddr, TcpSeg};
use crate::kernel::pattern;
use passt_core::Instant;
use std::fmt;
use std::net::SocketAddr;

/// Retransmission timeout of the model.
const RTO_NS: u64 = 200_000_000;
/// Segment size, unless set.
const MSS: u32 = 1400;
/// Window the model advertises (no scaling).
const WIN: u16 = 65535;

/// Where a guest TCP endpoint stands: this model's, and the replay's
/// (`crate::replay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// Waiting for the core's SYN (passive).
    Listen,
    /// Our SYN sent.
    SynSent,
    /// Our SYN-ACK sent (passive).
    SynReceived,
    /// Connected (both directions may still carry data or FINs).
    Established,
    /// A reset was received or sent.
    Reset,
}

/// One guest TCP endpoint.
#[derive(Clone, Debug)]
pub struct GuestTcp {
    /// Guest address and port.
    pub local: SocketAddr,
    /// Remote address and port (learnt from the SYN for passive endpoints).
    pub remote: Option<SocketAddr>,
    mac: MacAddr,
    our_mac: MacAddr,
    /// Connection state.
    pub state: TcpState,
    isn: u32,
    /// Bytes to send.
    pub total: u32,
    snd_una: u32,
    snd_nxt: u32,
    snd_wnd: u32,
    fin_sent: bool,
    fin_acked: bool,
    peer_isn: Option<u32>,
    /// Bytes received in order.
    pub received: u64,
    rcv_fin: bool,
    rto_at: Option<u64>,
    dup_acks: u32,
    /// Retransmissions made.
    pub retransmits: u64,
    /// The core's window scale.
    pub wscale: u8,
    /// Send our FIN only after the peer's (a passive close).
    pub fin_after_peer: bool,
    /// Largest segment sent (and the MSS announced in the SYN).
    pub mss: u32,
    /// The next output may send one byte into a closed window.
    probe: bool,
    /// When the exchange finished (virtual ns).
    pub done_at: Option<u64>,
}

impl fmt::Display for GuestTcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} > {}: {:?} sent {}/{} acked {} fin_acked {} received {} peer_fin {} retransmits {}",
            self.local,
            self.remote.map_or("?".to_string(), |r| r.to_string()),
            self.state,
            self.snd_nxt.saturating_sub(1).min(self.total),
            self.total,
            self.snd_una.saturating_sub(1).min(self.total),
            self.fin_acked,
            self.received,
            self.rcv_fin,
            self.retransmits
        )
    }
}

impl GuestTcp {
    /// Our SYN-ACK (`seg` adds the ACK once the core's SYN is known), with
    /// window scaling if the core offered it.
    fn send_syn_ack(&self, out: &mut Vec<Vec<u8>>) {
        let o = if self.wscale > 0 {
            "mss 1400,nop,wscale 7"
        } else {
            "mss 1400"
        };
        let opts = frame::tcp_options(o).unwrap_or_default();
        out.extend(self.seg(0, flags::SYN, &[], &opts));
    }

    /// An endpoint that connects from `local` to `remote` and sends `total` bytes.
    pub fn connect(
        local: SocketAddr,
        remote: SocketAddr,
        total: u32,
        mac: MacAddr,
        our_mac: MacAddr,
    ) -> Self {
        GuestTcp {
            remote: Some(remote),
            state: TcpState::SynSent,
            ..Self::listen(local, total, mac, our_mac)
        }
    }

    /// An endpoint that waits for the core's SYN on `local` and sends `total`
    /// bytes once connected.
    pub fn listen(local: SocketAddr, total: u32, mac: MacAddr, our_mac: MacAddr) -> Self {
        GuestTcp {
            local,
            remote: None,
            mac,
            our_mac,
            state: TcpState::Listen,
            isn: 0x4000_0000 ^ u32::from(local.port()),
            total,
            snd_una: 0,
            snd_nxt: 0,
            snd_wnd: 0,
            fin_sent: false,
            fin_acked: false,
            peer_isn: None,
            received: 0,
            rcv_fin: false,
            rto_at: None,
            dup_acks: 0,
            retransmits: 0,
            wscale: 0,
            fin_after_peer: false,
            mss: MSS,
            probe: false,
            done_at: None,
        }
    }

    /// Whether the exchange finished: everything sent and acknowledged, both
    /// FINs through, or a reset.
    pub fn done(&self) -> bool {
        self.state == TcpState::Reset
            || (self.snd_una > self.total && self.fin_sent && self.rcv_fin)
    }

    /// Whether our FIN was acknowledged too (a clean close).
    pub fn fin_acked(&self) -> bool {
        self.fin_acked
    }

    /// When the model wants to run next.
    pub fn deadline(&self) -> Option<Instant> {
        if self.state == TcpState::Reset
            || (self.done() && self.fin_acked)
            || self.retransmits > 1000
        {
            return None;
        }
        self.rto_at.map(Instant::from_nanos)
    }

    fn seg(&self, seq: u32, fl: u8, payload: &[u8], opts: &[u8]) -> Option<Vec<u8>> {
        let remote = self.remote?;
        let ack = match self.peer_isn {
            Some(p) => p
                .wrapping_add(1)
                .wrapping_add(self.received as u32)
                .wrapping_add(u32::from(self.rcv_fin)),
            None => 0,
        };
        let fl = if self.peer_isn.is_some() {
            fl | flags::ACK
        } else {
            fl
        };
        Some(frame::tcp_frame(
            self.mac,
            self.our_mac,
            self.local,
            remote,
            self.isn.wrapping_add(seq),
            ack,
            fl,
            WIN,
            opts,
            payload,
        ))
    }

    fn payload(&self, off: u32, len: u32) -> Vec<u8> {
        (off..off + len)
            .map(|k| pattern(0, 9, u64::from(k)))
            .collect()
    }

    /// Frames to send now: new data within the window, or the SYN.
    fn output(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        match self.state {
            TcpState::SynSent if self.snd_nxt == 0 => {
                let opts = frame::tcp_options(&format!("mss {},nop,wscale 7", self.mss))
                    .unwrap_or_default();
                out.extend(self.seg(0, flags::SYN, &[], &opts));
                self.snd_nxt = 1;
                self.snd_una = 0;
                self.rto_at = Some(now + RTO_NS);
            }
            TcpState::Established => {
                // Sequence 1 is the first data byte.
                let end = self.total + 1;
                // A closed window is probed from the timer only (persist).
                let window = if self.probe {
                    1
                } else {
                    self.snd_wnd.min(16 * self.mss)
                };
                self.probe = false;
                let limit = self.snd_una.saturating_add(window);
                let mut sent = false;
                while self.snd_nxt < end && self.snd_nxt < limit {
                    let len = self.mss.min(end - self.snd_nxt).min(limit - self.snd_nxt);
                    let p = self.payload(self.snd_nxt - 1, len);
                    out.extend(self.seg(self.snd_nxt, flags::PSH, &p, &[]));
                    self.snd_nxt += len;
                    sent = true;
                }
                if self.snd_nxt == end
                    && !self.fin_sent
                    && self.snd_una == end
                    && (self.rcv_fin || !self.fin_after_peer)
                {
                    out.extend(self.seg(end, flags::FIN, &[], &[]));
                    self.fin_sent = true;
                    self.snd_nxt = end + 1;
                    sent = true;
                }
                let waiting = self.snd_nxt < end || (self.fin_sent && !self.fin_acked);
                if (sent || (self.snd_wnd == 0 && waiting)) && self.rto_at.is_none() {
                    self.rto_at = Some(now + RTO_NS);
                }
            }
            _ => {}
        }
    }

    /// Notes the time the exchange finished, the first time it is.
    pub fn mark_done(&mut self, now: u64) {
        if self.done_at.is_none() && self.done() {
            self.done_at = Some(now);
        }
    }

    /// Sends the SYN of an active endpoint.
    pub fn start(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        self.output(now, out);
    }

    /// The retransmission timer.
    pub fn on_timer(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        if self.rto_at.is_none_or(|t| t > now) {
            return;
        }
        self.rto_at = None;
        self.retransmits += 1;
        match self.state {
            TcpState::SynSent => {
                self.snd_nxt = 0;
                self.output(now, out);
            }
            TcpState::SynReceived => {
                self.send_syn_ack(out);
                self.rto_at = Some(now + RTO_NS);
            }
            TcpState::Established => {
                // Go back to the first unacknowledged byte; into a closed
                // window, one byte.
                self.snd_nxt = self.snd_una;
                self.probe = self.snd_wnd == 0;
                if self.fin_sent && self.snd_una == self.total + 1 {
                    self.fin_sent = false;
                }
                self.output(now, out);
                if self.rto_at.is_none() && !self.done() {
                    self.rto_at = Some(now + RTO_NS);
                }
            }
            _ => {}
        }
    }

    /// Whether `t` belongs to this endpoint.
    pub fn claims(&self, t: &TcpSeg) -> bool {
        t.dst == self.local && self.remote.is_none_or(|r| r == t.src)
    }

    /// A segment from the core.
    // Long by design: one arm per state of the model's TCP state machine.
    pub fn on_segment(&mut self, now: u64, t: &TcpSeg, out: &mut Vec<Vec<u8>>) {
        if t.flags & flags::RST != 0 {
            self.state = TcpState::Reset;
            self.rto_at = None;
            return;
        }
        match self.state {
            TcpState::Reset => return,
            TcpState::Listen => {
                if t.flags & flags::SYN == 0 {
                    return;
                }
                self.remote = Some(t.src);
                self.peer_isn = Some(t.seq);
                self.snd_wnd = u32::from(t.win);
                self.wscale = ws(&t.opts);
                self.state = TcpState::SynReceived;
                let opts = if t.opts.contains("wscale") {
                    "mss 1400,nop,wscale 7"
                } else {
                    "mss 1400"
                };
                let opts = frame::tcp_options(opts).unwrap_or_default();
                out.extend(self.seg(0, flags::SYN, &[], &opts));
                self.snd_nxt = 1;
                self.snd_una = 0;
                self.rto_at = Some(now + RTO_NS);
                return;
            }
            TcpState::SynSent => {
                if t.flags & (flags::SYN | flags::ACK) != flags::SYN | flags::ACK
                    || t.ack != self.isn.wrapping_add(1)
                {
                    return;
                }
                self.peer_isn = Some(t.seq);
                self.wscale = ws(&t.opts);
                self.state = TcpState::Established;
                self.snd_una = 1;
                self.snd_wnd = u32::from(t.win);
                self.rto_at = None;
                out.extend(self.seg(1, 0, &[], &[]));
                self.output(now, out);
                return;
            }
            TcpState::SynReceived => {
                if t.flags & flags::SYN != 0 {
                    // Our SYN-ACK was lost: send it again.
                    self.send_syn_ack(out);
                    return;
                }
                if t.flags & flags::ACK != 0 && t.ack == self.isn.wrapping_add(1) {
                    self.state = TcpState::Established;
                    self.snd_una = 1;
                    self.rto_at = None;
                } else {
                    return;
                }
            }
            TcpState::Established => {}
        }
        if t.flags & flags::SYN != 0 {
            // A retransmitted SYN-ACK: our ACK was lost.
            out.extend(self.seg(self.snd_nxt.min(self.snd_una.max(1)), 0, &[], &[]));
            return;
        }
        // Acknowledgements.
        if t.flags & flags::ACK != 0 {
            let ack = t.ack.wrapping_sub(self.isn);
            let wnd = u32::from(t.win) << self.wscale;
            let same_wnd = wnd == self.snd_wnd;
            if ack >= self.snd_una {
                self.snd_wnd = wnd;
            }
            if ack > self.snd_una && ack <= self.snd_nxt.max(self.total + 2) {
                self.snd_una = ack;
                self.dup_acks = 0;
                self.rto_at = if self.snd_una < self.snd_nxt {
                    Some(now + RTO_NS)
                } else {
                    None
                };
                if self.fin_sent && ack == self.total + 2 {
                    self.fin_acked = true;
                }
            } else if ack == self.snd_una
                && same_wnd
                && t.payload.is_empty()
                && self.snd_nxt > self.snd_una
            {
                self.dup_acks += 1;
                if self.dup_acks == 3 {
                    self.retransmits += 1;
                    self.snd_nxt = self.snd_una;
                    if self.fin_sent && self.snd_una == self.total + 1 {
                        self.fin_sent = false;
                    }
                }
            }
        }
        // Data and FIN, in order only.
        let mut need_ack = false;
        if let Some(p) = self.peer_isn {
            let expected = p.wrapping_add(1).wrapping_add(self.received as u32);
            if !t.payload.is_empty() || t.flags & flags::FIN != 0 {
                need_ack = true;
            }
            if t.seq == expected && !self.rcv_fin {
                self.received += t.payload.len() as u64;
                if t.flags & flags::FIN != 0 {
                    self.rcv_fin = true;
                }
            }
        }
        let before = out.len();
        self.output(now, out);
        if need_ack && out.len() == before {
            out.extend(self.seg(self.snd_nxt, 0, &[], &[]));
        }
    }
}

fn ws(opts: &str) -> u8 {
    opts.split(',')
        .find_map(|o| o.strip_prefix("wscale "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(14)
}

#[cfg(test)]
mod tests {
    use super::*;
    use passt_core::Rng;

    /// Two model endpoints talk to each other over a lossy, reordering
    /// channel: both transfers complete, in order, and both close.
    #[test]
    fn two_models_converge_over_a_lossy_channel() {
        for seed in 0..20 {
            let a_addr: SocketAddr = "10.0.0.1:1000".parse().unwrap();
            let b_addr: SocketAddr = "10.0.0.2:2000".parse().unwrap();
            let mut a = GuestTcp::connect(a_addr, b_addr, 50_000, [2; 6], [4; 6]);
            let mut b = GuestTcp::listen(b_addr, 30_000, [4; 6], [2; 6]);
            let mut rng = Rng::new(seed);
            // (arrival time, to b?, frame)
            let mut wire: Vec<(u64, bool, Vec<u8>)> = Vec::new();
            let mut out = Vec::new();
            a.start(0, &mut out);
            let mut now = 0u64;
            for _ in 0..200_000 {
                let lossy = now < 2_000_000_000;
                for (i, f) in out.drain(..).enumerate() {
                    if lossy && rng.chance(0.1) {
                        continue;
                    }
                    let delay = 100_000 + if lossy { rng.below(2_000_000) } else { 0 } + i as u64;
                    let to_b = frame::parse_tcp(&f).is_some_and(|t| t.dst == b_addr);
                    wire.push((now + delay, to_b, f));
                }
                let next_wire = wire.iter().map(|w| w.0).min();
                let next_timer = [a.deadline(), b.deadline()]
                    .into_iter()
                    .flatten()
                    .map(Instant::as_nanos)
                    .min();
                let Some(t) = [next_wire, next_timer].into_iter().flatten().min() else {
                    break;
                };
                now = t;
                let (due, rest): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
                wire = rest;
                for (_, to_b, f) in due {
                    let t = frame::parse_tcp(&f).unwrap();
                    if to_b {
                        assert!(b.claims(&t));
                        b.on_segment(now, &t, &mut out);
                    } else {
                        assert!(a.claims(&t));
                        a.on_segment(now, &t, &mut out);
                    }
                }
                a.on_timer(now, &mut out);
                b.on_timer(now, &mut out);
                if a.done() && b.done() && a.fin_acked() && b.fin_acked() {
                    break;
                }
            }
            assert!(a.done() && b.done(), "seed {seed}: {a} / {b}");
            assert_eq!(a.received, 30_000, "seed {seed}");
            assert_eq!(b.received, 50_000, "seed {seed}");
        }
    }

    /// Endpoint a connecting to b to send `total` bytes: the two addresses,
    /// and its SYN.
    fn connecting(total: u32) -> (GuestTcp, (SocketAddr, SocketAddr), Vec<Vec<u8>>) {
        let a_addr: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b_addr: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        let mut a = GuestTcp::connect(a_addr, b_addr, total, [2; 6], [4; 6]);
        let mut out = Vec::new();
        a.start(0, &mut out);
        assert_eq!(out.len(), 1, "the SYN");
        (a, (a_addr, b_addr), out)
    }

    /// As Linux: an ACK that changes the window is no duplicate, and one
    /// older than what was acknowledged does not change the window.
    #[test]
    fn window_updates_are_not_duplicates_and_old_acks_keep_the_window() {
        let (mut a, (a_addr, b_addr), mut out) = connecting(10_000);
        let isn = frame::parse_tcp(&out[0]).unwrap().seq;
        let from_b = |fl, ack: u32, win| {
            let f = frame::tcp_frame([4; 6], [2; 6], b_addr, a_addr, 7, ack, fl, win, &[], &[]);
            frame::parse_tcp(&f).unwrap()
        };
        a.on_segment(1, &from_b(flags::SYN | flags::ACK, isn + 1, 4000), &mut out);
        let acked = isn + 1 + 1400;
        a.on_segment(2, &from_b(flags::ACK, acked, 0), &mut out);
        for (k, win) in [1000, 2000, 3000].into_iter().enumerate() {
            a.on_segment(3 + k as u64, &from_b(flags::ACK, acked, win), &mut out);
        }
        assert_eq!(a.retransmits, 0, "window updates counted as duplicates");
        assert_eq!(a.snd_wnd, 3000);
        a.on_segment(9, &from_b(flags::ACK, isn + 1, 65535), &mut out);
        assert_eq!(a.snd_wnd, 3000, "an old ACK moved the window");
    }

    /// As Linux (`tcp_ack`'s old-ACK path): an ACK older than what was
    /// acknowledged, overtaken on the link by a newer one, is ignored and
    /// does not break the count of duplicates that follows.
    #[test]
    fn an_old_ack_between_duplicates_leaves_the_count() {
        let (mut a, (a_addr, b_addr), mut out) = connecting(10_000);
        let isn = frame::parse_tcp(&out[0]).unwrap().seq;
        let from_b = |fl, ack: u32| {
            let f = frame::tcp_frame([4; 6], [2; 6], b_addr, a_addr, 7, ack, fl, 8000, &[], &[]);
            frame::parse_tcp(&f).unwrap()
        };
        a.on_segment(1, &from_b(flags::SYN | flags::ACK, isn + 1), &mut out);
        let acked = isn + 1 + 1400;
        a.on_segment(2, &from_b(flags::ACK, acked), &mut out);
        a.on_segment(3, &from_b(flags::ACK, acked), &mut out);
        a.on_segment(4, &from_b(flags::ACK, isn + 1), &mut out);
        a.on_segment(5, &from_b(flags::ACK, acked), &mut out);
        assert_eq!(a.retransmits, 0, "two duplicates so far");
        out.clear();
        a.on_segment(6, &from_b(flags::ACK, acked), &mut out);
        assert_eq!(a.retransmits, 1, "the third duplicate, past an old ACK");
        let resent = frame::parse_tcp(&out[0]).unwrap();
        assert_eq!(
            resent.seq, acked,
            "goes back to the first byte not acknowledged"
        );
    }

    #[test]
    fn reset_ends_the_exchange() {
        let (mut a, (a_addr, b_addr), mut out) = connecting(10);
        assert!(a.deadline().is_some());
        let rst = frame::tcp_frame(
            [4; 6],
            [2; 6],
            b_addr,
            a_addr,
            0,
            0,
            flags::RST,
            0,
            &[],
            &[],
        );
        a.on_segment(1, &frame::parse_tcp(&rst).unwrap(), &mut out);
        assert!(a.done());
        assert_eq!(a.deadline(), None);
    }
}
