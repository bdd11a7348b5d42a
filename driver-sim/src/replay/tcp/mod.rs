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
pub use crate::guest::TcpState;
use crate::kernel::pattern;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

mod input;
mod output;
#[cfg(test)]
mod tests;

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

/// What the endpoint counted.
#[derive(Clone, Copy, Debug, Default)]
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
    let mut l4 = frame::tcp_header((src.port(), dst.port()), seq, ack, fl, win, opts);
    let total = (l4.len() + payload.len()) as u64;
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
