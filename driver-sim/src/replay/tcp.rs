//! The guest's TCP endpoint in a replay: a sender and receiver written after
//! the RFCs a Linux guest follows, so that a replayed connection reacts to
//! what the core does as the recorded guest would have.
//!
//! * Handshake, active or passive, with MSS, window scaling and SACK
//!   permitted offered as recorded (SACK blocks themselves are neither sent
//!   nor used: recovery is NewReno's).
//! * Sending: segments of the negotiated MSS within the smaller of the
//!   congestion window and the peer's window; slow start from ten segments
//!   (RFC 6928), congestion avoidance by byte counting (RFC 5681), fast
//!   retransmit on three duplicate ACKs with NewReno recovery (RFC 6582),
//!   retransmission timeout from smoothed RTT samples (RFC 6298, Karn's rule,
//!   200 ms floor as Linux, doubling back-off), sender-side silly window
//!   avoidance, and one-byte probes into a closed window on the persist
//!   timer.
//! * Receiving: in order with out-of-order ranges kept; an ACK for every
//!   second segment, at once for anything out of order, a filled gap or a
//!   FIN, else after 40 ms (delayed ACK); the application reads at once, so
//!   the window offered is the receive buffer.
//! * Every frame leaves after the stack's latency (`delay`), in order.

use crate::frame::{self, flags, MacAddr, TcpSeg};
use crate::kernel::pattern;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// Lowest retransmission timeout (Linux's `TCP_RTO_MIN`).
const RTO_MIN: u64 = 200_000_000;
/// Highest retransmission timeout (`TCP_RTO_MAX`).
const RTO_MAX: u64 = 120_000_000_000;
/// Timeout before any RTT sample (RFC 6298).
const RTO_INIT: u64 = 1_000_000_000;
/// Delayed ACK timeout (Linux's `TCP_DELACK_MIN`).
const DELACK: u64 = 40_000_000;
/// Initial congestion window, in segments (RFC 6928).
const IW: u64 = 10;
/// Timeouts in a row after which the endpoint gives up (resets).
const MAX_BACKOFF: u32 = 15;
/// Length of the content table: a prime, so that segment sizes never line
/// up with it.
const CONTENT_LEN: usize = 65521;

/// Where the endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// Waiting for the core's SYN.
    Listen,
    /// Our SYN sent.
    SynSent,
    /// Our SYN-ACK sent.
    SynRcvd,
    /// Connected (both directions may still carry data or FINs).
    Established,
    /// A reset was received or sent.
    Reset,
}

/// What the endpoint counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments sent.
    pub segs_out: u64,
    /// Segments sent again (timeouts, fast retransmits, recovery).
    pub retransmits: u64,
    /// Bytes sent again.
    pub retransmit_bytes: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Fast retransmissions (three duplicate ACKs).
    pub fast_retransmits: u64,
    /// Probes into a closed window.
    pub probes: u64,
    /// Segments received.
    pub segs_in: u64,
    /// Data segments received that held nothing new (the core sent them
    /// again).
    pub dup_data_in: u64,
    /// Data segments received out of order.
    pub ooo_in: u64,
    /// ACKs from the core with a closed window.
    pub zero_windows_in: u64,
}

/// The guest's end of one TCP connection.
#[derive(Clone, Debug)]
pub struct TcpModel {
    /// Our address.
    pub local: SocketAddr,
    /// The core's side (learnt from its SYN when passive).
    pub remote: Option<SocketAddr>,
    mac: MacAddr,
    peer_mac: MacAddr,
    /// State.
    pub state: TcpState,
    iss: u32,
    irs: u32,
    mss_offer: u16,
    ws_offer: Option<u8>,
    sack_offer: bool,
    /// Scale of the peer's window field.
    snd_ws: u8,
    /// Scale of ours.
    rcv_ws: u8,
    smss: u64,
    // Sending, in offsets from our SYN (data byte k is at 1 + k).
    written: u64,
    fin_queued: bool,
    snd_una: u64,
    snd_nxt: u64,
    snd_max: u64,
    peer_wnd: u64,
    max_peer_wnd: u64,
    cwnd: u64,
    ssthresh: u64,
    ca_acc: u64,
    dupacks: u32,
    recover: Option<u64>,
    srtt: Option<u64>,
    rttvar: u64,
    rto: u64,
    backoff: u32,
    rto_at: Option<u64>,
    persist_at: Option<u64>,
    persist_backoff: u32,
    timed: Option<(u64, u64)>,
    // Receiving, in offsets from the peer's SYN.
    rcv_nxt: u64,
    ooo: BTreeMap<u64, u64>,
    fin_rcvd: bool,
    rcvbuf: u64,
    unacked_segs: u32,
    delack_at: Option<u64>,
    // Output.
    delay: u64,
    outq: VecDeque<(u64, Vec<u8>)>,
    content: Vec<u8>,
    /// Prefix sums of the content's bytes at even and at odd positions.
    parity_sums: [Vec<u64>; 2],
    /// Counters.
    pub stats: TcpStats,
    /// When the handshake completed.
    pub established_at: Option<u64>,
    /// The reset came from the core (else we gave up).
    pub reset_by_peer: bool,
}

/// Options of a model endpoint.
#[derive(Clone, Copy, Debug)]
pub struct TcpOpts {
    /// MSS we announce (and the largest segment we send).
    pub mss: u16,
    /// Window scale we announce.
    pub wscale: Option<u8>,
    /// SACK permitted, announced.
    pub sack: bool,
    /// Receive buffer.
    pub rcvbuf: u32,
    /// Stack latency (ns).
    pub delay: u64,
    /// Seed of the content (a connection number).
    pub seed: u64,
}

impl TcpModel {
    fn new(local: SocketAddr, mac: MacAddr, peer_mac: MacAddr, o: TcpOpts) -> Self {
        // Content that differs per connection: a mixed-up stream is caught
        // by the byte-stream invariant.
        let content: Vec<u8> = (0..CONTENT_LEN as u64)
            .map(|k| pattern(o.seed, 9, k))
            .collect();
        let mut parity_sums = [vec![0u64; CONTENT_LEN + 1], vec![0u64; CONTENT_LEN + 1]];
        for (j, b) in content.iter().enumerate() {
            for (par, sums) in parity_sums.iter_mut().enumerate() {
                sums[j + 1] = sums[j] + if j % 2 == par { u64::from(*b) } else { 0 };
            }
        }
        TcpModel {
            local,
            remote: None,
            mac,
            peer_mac,
            state: TcpState::Listen,
            iss: 0x1000_0000u32.wrapping_mul(o.seed as u32 | 1) ^ u32::from(local.port()),
            irs: 0,
            mss_offer: o.mss.max(64),
            ws_offer: o.wscale,
            sack_offer: o.sack,
            snd_ws: 0,
            rcv_ws: 0,
            smss: 536,
            written: 0,
            fin_queued: false,
            snd_una: 0,
            snd_nxt: 0,
            snd_max: 0,
            peer_wnd: 0,
            max_peer_wnd: 0,
            cwnd: 0,
            ssthresh: u64::MAX,
            ca_acc: 0,
            dupacks: 0,
            recover: None,
            srtt: None,
            rttvar: 0,
            rto: RTO_INIT,
            backoff: 0,
            rto_at: None,
            persist_at: None,
            persist_backoff: 0,
            timed: None,
            rcv_nxt: 0,
            ooo: BTreeMap::new(),
            fin_rcvd: false,
            rcvbuf: u64::from(o.rcvbuf.max(1024)),
            unacked_segs: 0,
            delack_at: None,
            delay: o.delay,
            outq: VecDeque::new(),
            content,
            parity_sums,
            stats: TcpStats::default(),
            established_at: None,
            reset_by_peer: false,
        }
    }

    /// An endpoint that connects to `remote` now.
    pub fn connect(
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        mac: MacAddr,
        peer_mac: MacAddr,
        o: TcpOpts,
    ) -> Self {
        let mut m = TcpModel::new(local, mac, peer_mac, o);
        m.remote = Some(remote);
        m.state = TcpState::SynSent;
        m.output(now);
        m
    }

    /// An endpoint that waits for the core's SYN on `local`.
    pub fn listen(local: SocketAddr, mac: MacAddr, peer_mac: MacAddr, o: TcpOpts) -> Self {
        TcpModel::new(local, mac, peer_mac, o)
    }

    // --- the application's side ------------------------------------------

    /// The application writes `n` more bytes.
    pub fn write(&mut self, now: u64, n: u64) {
        if self.fin_queued || self.state == TcpState::Reset {
            return;
        }
        self.written += n;
        self.output(now);
    }

    /// The application shuts down its sending side.
    pub fn close(&mut self, now: u64) {
        if self.state == TcpState::Reset {
            return;
        }
        self.fin_queued = true;
        self.output(now);
    }

    /// Bytes written by the application.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes sent at least once.
    pub fn sent(&self) -> u64 {
        self.snd_max.saturating_sub(1).min(self.written)
    }

    /// Bytes the core acknowledged.
    pub fn acked(&self) -> u64 {
        self.snd_una.saturating_sub(1).min(self.written)
    }

    /// Bytes received in order.
    pub fn received(&self) -> u64 {
        self.rcv_nxt.saturating_sub(1 + u64::from(self.fin_rcvd))
    }

    /// Whether the core's FIN arrived (in order).
    pub fn peer_fin(&self) -> bool {
        self.fin_rcvd
    }

    /// Whether our FIN was acknowledged.
    pub fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_una > self.written + 1
    }

    /// Whether there is something left to send or acknowledge.
    pub fn sending(&self) -> bool {
        self.snd_una < self.written + 1 + u64::from(self.fin_queued)
    }

    /// Whether the exchange is over: both FINs through, or a reset.
    pub fn done(&self) -> bool {
        self.state == TcpState::Reset || (self.fin_acked() && self.fin_rcvd)
    }

    /// When the endpoint next wants to run.
    pub fn deadline(&self) -> Option<u64> {
        [
            self.rto_at,
            self.persist_at,
            self.delack_at,
            self.outq.front().map(|f| f.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Frames whose time has come.
    pub fn take_frames(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        while self.outq.front().is_some_and(|f| f.0 <= now) {
            if let Some((_, f)) = self.outq.pop_front() {
                out.push(f);
            }
        }
    }

    /// Whether a segment from the core belongs here.
    pub fn claims(&self, t: &TcpSeg) -> bool {
        t.dst == self.local
            && match self.remote {
                Some(r) => r == t.src,
                None => self.state == TcpState::Listen && t.flags & flags::SYN != 0,
            }
    }

    // --- segments -----------------------------------------------------------

    fn win_field(&self, syn: bool) -> u16 {
        let free = self.rcvbuf;
        if syn {
            free.min(65535) as u16
        } else {
            (free >> self.rcv_ws).min(65535) as u16
        }
    }

    fn emit(&mut self, now: u64, rel: u64, fl: u8, len: u64, opts: &[u8]) {
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

    fn payload(&self, rel: u64, len: u64) -> Vec<u8> {
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
    fn payload_sum(&self, rel: u64, len: u64) -> u64 {
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

    fn syn_opts(&self, peer_ws: bool) -> Vec<u8> {
        let mut spec = format!("mss {}", self.mss_offer);
        if self.sack_offer {
            spec.push_str(",sackOK");
        }
        if let (Some(w), true) = (self.ws_offer, peer_ws) {
            spec.push_str(&format!(",nop,wscale {w}"));
        }
        frame::tcp_options(&spec).unwrap_or_default()
    }

    fn send_ack(&mut self, now: u64) {
        let rel = self.snd_nxt;
        self.emit(now, rel, 0, 0, &[]);
    }

    fn cur_rto(&self, backoff: u32) -> u64 {
        self.rto.saturating_mul(1 << backoff.min(20)).min(RTO_MAX)
    }

    fn data_end(&self) -> u64 {
        1 + self.written
    }

    /// Sends what the windows allow.
    fn output(&mut self, now: u64) {
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
    fn retransmit_one(&mut self, now: u64, rel: u64) {
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

    fn rtt_sample(&mut self, r: u64) {
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

    fn establish(&mut self, now: u64, t: &TcpSeg) {
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

    fn negotiate(&mut self, t: &TcpSeg) {
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
                self.state = TcpState::SynRcvd;
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
            TcpState::SynRcvd => {
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
        if ack > self.snd_max {
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
            TcpState::SynRcvd => {
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

/// Sum of 16-bit words (short buffers: headers).
fn sum_words(b: &[u8]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < b.len() {
        s += u64::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    if i < b.len() {
        s += u64::from(b[i]) << 8;
    }
    s
}

/// A TCP segment like [`frame::tcp_frame`], with the payload's share of the
/// checksum given (`payload_sum`) instead of summed here.
#[allow(clippy::too_many_arguments)]
fn tcp_frame_summed(
    (src_mac, dst_mac): (MacAddr, MacAddr),
    (src, dst): (SocketAddr, SocketAddr),
    seq: u32,
    ack: u32,
    fl: u8,
    win: u16,
    opts: &[u8],
    payload: &[u8],
    payload_sum: u64,
) -> Vec<u8> {
    let hlen = 20 + opts.len();
    let mut l4 = vec![0u8; hlen];
    l4[0..2].copy_from_slice(&src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[12] = ((hlen / 4) as u8) << 4;
    l4[13] = fl;
    l4[14..16].copy_from_slice(&win.to_be_bytes());
    l4[20..].copy_from_slice(opts);
    let total = (hlen + payload.len()) as u64;
    let mut sum = sum_words(&l4) + payload_sum + 6 + (total >> 16) + (total & 0xffff);
    for ip in [src.ip(), dst.ip()] {
        sum += match ip {
            std::net::IpAddr::V4(a) => sum_words(&a.octets()),
            std::net::IpAddr::V6(a) => sum_words(&a.octets()),
        };
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    l4[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    l4.extend_from_slice(payload);
    frame::ip_frame(src_mac, dst_mac, src.ip(), dst.ip(), 6, l4, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_tcp;

    /// Frames with the checksum from prefix sums are the frames the
    /// simulator's builder makes, at every offset and length.
    #[test]
    fn summed_checksums_match() {
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "[fd00::2]:2000".parse().unwrap();
        let c: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        let m = TcpModel::listen(a, [1; 6], [2; 6], opts(3));
        for (rel, len) in [
            (1, 1),
            (2, 7),
            (65520, 3),
            (65521, 65535),
            (131_042, 2),
            (5, 0),
        ] {
            let p = m.payload(rel, len);
            for dst in [b, c] {
                let src = if dst.is_ipv4() {
                    a
                } else {
                    "[fd00::1]:1000".parse().unwrap()
                };
                let want = frame::tcp_frame(
                    [1; 6],
                    [2; 6],
                    src,
                    dst,
                    9,
                    8,
                    flags::ACK,
                    7,
                    &[1, 1, 1, 1],
                    &p,
                );
                let got = tcp_frame_summed(
                    ([1; 6], [2; 6]),
                    (src, dst),
                    9,
                    8,
                    flags::ACK,
                    7,
                    &[1, 1, 1, 1],
                    &p,
                    m.payload_sum(rel, len),
                );
                assert_eq!(got, want, "rel {rel} len {len}");
            }
        }
    }
    use passt_core::Rng as SimRng;

    fn opts(seed: u64) -> TcpOpts {
        TcpOpts {
            mss: 1000,
            wscale: Some(7),
            sack: true,
            rcvbuf: 200_000,
            delay: 10_000,
            seed,
        }
    }

    /// Two model endpoints over a channel that loses and delays frames:
    /// both directions arrive whole, both FINs go through, and the losses
    /// show up as retransmissions.
    #[test]
    fn two_endpoints_converge_over_a_lossy_channel() {
        for seed in 0..12 {
            let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
            let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
            let mut rng = SimRng::new(seed);
            let mut x = TcpModel::connect(0, a, b, [1; 6], [2; 6], opts(1));
            let mut y = TcpModel::listen(b, [2; 6], [1; 6], opts(2));
            let mut wire: Vec<(u64, bool, Vec<u8>)> = Vec::new();
            let mut now = 0;
            let (mut wx, mut wy) = (false, false);
            for _ in 0..200_000 {
                let mut out = Vec::new();
                x.take_frames(now, &mut out);
                for f in out.drain(..) {
                    if !rng.chance(0.05) {
                        wire.push((now + 1_000_000 + rng.below(500_000), true, f));
                    }
                }
                y.take_frames(now, &mut out);
                for f in out.drain(..) {
                    if !rng.chance(0.05) {
                        wire.push((now + 1_000_000 + rng.below(500_000), false, f));
                    }
                }
                if x.state == TcpState::Established && !wx {
                    x.write(now, 300_000);
                    x.close(now);
                    wx = true;
                }
                if y.state == TcpState::Established && !wy && y.received() >= 1000 {
                    y.write(now, 50_000);
                    wy = true;
                }
                if wy && y.peer_fin() && y.received() == 300_000 {
                    y.close(now);
                }
                if x.done() && y.done() && wire.is_empty() {
                    break;
                }
                let next = wire
                    .iter()
                    .map(|w| w.0)
                    .chain(x.deadline())
                    .chain(y.deadline())
                    .min()
                    .expect("something to do");
                now = next;
                let (due, rest): (Vec<_>, Vec<_>) = wire.into_iter().partition(|w| w.0 <= now);
                wire = rest;
                for (_, to_y, f) in due {
                    let t = parse_tcp(&f).unwrap();
                    if to_y {
                        assert!(y.claims(&t) || y.remote.is_some());
                        y.on_segment(now, &t);
                    } else {
                        x.on_segment(now, &t);
                    }
                }
                x.on_timer(now);
                y.on_timer(now);
            }
            assert!(x.done() && y.done(), "seed {seed}: {x:?} {y:?}");
            assert_eq!(
                (y.received(), x.received()),
                (300_000, 50_000),
                "seed {seed}"
            );
            assert!(x.stats.retransmits > 0, "seed {seed}: losses retransmitted");
        }
    }

    /// A closed window is probed, with back-off, until it opens.
    #[test]
    fn closed_window_is_probed() {
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        let mut x = TcpModel::connect(0, a, b, [1; 6], [2; 6], opts(1));
        let s = TcpSeg {
            src: b,
            dst: a,
            seq: 5000,
            ack: x.iss.wrapping_add(1),
            flags: flags::SYN | flags::ACK,
            win: 0,
            opts: "mss 1000".into(),
            payload: Vec::new(),
        };
        x.on_segment(10, &s);
        assert_eq!(x.state, TcpState::Established);
        x.write(10, 5000);
        let mut out = Vec::new();
        x.take_frames(u64::MAX, &mut out);
        assert_eq!(
            out.len(),
            2,
            "SYN and the ACK of the SYN-ACK: the window is closed"
        );
        let p1 = x.deadline().unwrap();
        x.on_timer(p1);
        x.take_frames(u64::MAX, &mut out);
        assert_eq!(x.stats.probes, 1);
        let p2 = x.deadline().unwrap();
        x.on_timer(p2);
        assert_eq!(x.stats.probes, 2);
        assert!(p2 - p1 > RTO_INIT, "backed off: {} then {}", p1, p2);
    }
}
