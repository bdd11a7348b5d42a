//! TCP translation: guest segments on one side, a kernel socket on the other.
//!
//! The kernel does the real TCP with the host peer; this module only keeps the
//! two sequence spaces in step and never holds payload:
//!
//! * guest → socket: a flow's in-order payload of one batch goes out as one
//!   `Action::Send` over spans of the batch buffer; the guest is acknowledged
//!   exactly what the kernel took (`SockEvent::StreamSent`), and the window
//!   offered to the guest is the free space of the socket's send buffer in
//!   the kernel's own accounting (`SendSpace`, reported with every write), so
//!   whole segments are accepted and a guest that fills the window leaves the
//!   socket not writable: the kernel then wakes us (`EPOLLOUT`) as soon as
//!   it drained a third of the buffer, and the window reopens at once (see
//!   [`window_from_space`]);
//! * socket → guest: data stays in the kernel until the guest acknowledges
//!   it; `Action::Peek` copies it straight into the driver's transmit slots,
//!   [`Core::handle_peeked`](crate::Core::handle_peeked) writes the headers, `Action::Consume` drops what
//!   the guest acknowledged, and retransmission rewinds and peeks again.
//!
//! Each connection has one timer (the earliest of its handshake, ACK,
//! retransmission, FIN and activity deadlines) in a heap of timers
//! (`timers.rs`): [`Core::poll_timeout`](crate::Core::poll_timeout) reads
//! the earliest in O(1), and each due one costs O(log n).
//!
//! TCP state lives in [`TcpState`]; the engine lends it a [`Ctx`] for each
//! input, and nothing else of the core. The files: `guest.rs` (segments from
//! the guest), `sock.rs` (socket events, peeked data), `accept.rs`
//! (connections from host peers), `ctl.rs` (timers, interest, control
//! segments, ends), `timer.rs` (link feedback and timers).

mod accept;
pub(crate) mod conn;
mod ctl;
mod guest;
#[cfg(test)]
mod scale_tests;
mod segment;
pub(crate) mod seq;
mod sock;
#[cfg(test)]
mod tests;
mod timer;

use crate::action::{
    Action, Errno, Family, Interest, Netns, SendSpace, SockEvent, SockId, SockKind, SockOpt, Span,
    TcpInfo, TxSlot,
};
use crate::config::Config;
use crate::counters::DropReason;
use crate::flow::{self, FlowData, FlowId, FlowTable, SockRef, LISTENER_BIT};
use crate::fwd::{self, Proto};
use crate::nat;
use crate::policy::{Reopen, TcpPolicy};
use crate::tap::{FlowKey, FrameBatch, L4Packet};
use crate::time::{earliest, Instant};
use crate::timers::FlowTimers;
/// TCP is lent the context of UDP and ICMP echo: it needs the same parts of
/// the core (configuration, guest, counters, action queue, spans, flow
/// table, listeners, frame queue).
pub(crate) use crate::udp::Ctx;
use crate::wire::headers::{finish_ip_frame, l4_offset, PROTO_TCP};
pub(crate) use conn::{Phase, TcpConn};
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use segment::{Hdr, Seg, ACK, FIN, PSH, RST, SYN, TCP_HLEN, TS_OPT_LEN};

/// Largest window in either direction (upstream's `MAX_WINDOW`).
pub(crate) const MAX_WINDOW: u32 = 16 << 20;
/// Window scale we offer the guest (upstream's `MAX_WS`).
pub(crate) const MAX_WS: u8 = 8;
/// Guest MSS assumed when its SYN carries none.
pub(crate) const MSS_DEFAULT: u16 = 536;
/// Largest MSS over IPv4 / IPv6.
pub(crate) const MSS4: u16 = 65492;
/// Largest MSS over IPv6.
pub(crate) const MSS6: u16 = 65472;
/// Largest value Linux accepts for `TCP_MAXSEG` (its `MAX_TCP_WINDOW`).
pub(crate) const MAXSEG_MAX: u16 = 32767;
/// Window offered when the send buffer size is unknown (RFC 6928).
const WINDOW_DEFAULT: u32 = 14600;
/// Smallest segment size we send, whatever the guest says (as Linux's
/// `tcp_min_snd_mss`).
const MSS_MIN: u16 = 48;
/// Handshake timeout.
pub(crate) const SYN_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of SYN and SYN-ACK retransmissions within [`SYN_TIMEOUT`]
/// (linear, as the kernel's and upstream's first `tcp_syn_linear_timeouts`).
pub(crate) const SYN_RTO: Duration = Duration::from_secs(1);
/// Interval of send-buffer queries while the window to the guest is closed
/// and the kernel armed its wake-up, as shipped (the policy's
/// `window_poll_armed`; the ACK delay, retransmission timeout and the rest
/// of what decides throughput are in [`TcpPolicy`]).
#[cfg(test)]
pub(crate) const WINDOW_POLL: Duration = TcpPolicy::SHIPPED.window_poll_armed;
/// Time allowed to close once both sides sent their FIN.
pub(crate) const FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Inactivity timeout.
pub(crate) const ACT_TIMEOUT: Duration = Duration::from_secs(7200);
/// Time without a segment from the guest after which an established
/// connection gets a keepalive (upstream's `KEEPALIVE_INTERVAL`), and between
/// keepalives while the guest stays silent: a guest that forgot the
/// connection (rebooted, or timed out its `FIN_WAIT_2`) answers with a
/// reset, and the connection ends. See `timer.rs`.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Low-RTT peers remembered for new connections.
const LOW_RTT_TABLE: usize = 8;
/// Most duplicate ACKs sent at once for segments of the guest we dropped:
/// a guest without SACK (we offer none) retransmits fast after three
/// (Linux's `tcp_reordering`), and waits for its retransmission timeout
/// otherwise. Never more than the segments dropped: Linux takes duplicates
/// beyond the segments it has in flight for reordering, raises its
/// threshold, and then no longer retransmits fast at all.
const DUP_ACK_BURST: u16 = 3;
/// [`TcpConn::payload_share`] for "all of it".
const PAYLOAD_SHARE_ONE: u16 = 256;
/// Runs of frames remembered for `handle_tap_sent`.
const TX_LOG: usize = 8192;
/// Index (with [`LISTENER_BIT`]) of the id used to accept and close a
/// connection when the flow table is full.
const REJECT_IDX: u32 = LISTENER_BIT - 1;
/// Salt of the timestamps offsets' hash (the ISN's is 0).
const TS_SALT: u64 = 0x7473;

impl TcpConn {
    fn v6(key: &FlowKey) -> bool {
        key.src.is_ipv6()
    }

    /// The timestamps option of a segment to the guest sent at `now`:
    /// our clock in milliseconds (Linux's granularity) and the guest's
    /// TSval to echo. `None` on a connection without timestamps.
    fn ts_opt(&self, now: Instant) -> Option<(u32, u32)> {
        self.ts_ok.then(|| {
            let ms = (now.as_nanos() / 1_000_000) as u32;
            (ms.wrapping_add(self.ts_off), self.ts_recent)
        })
    }

    /// Length of the options of our segments without SYN.
    fn opts_len(&self) -> u16 {
        if self.ts_ok {
            TS_OPT_LEN as u16
        } else {
            0
        }
    }

    /// Length of the TCP header of our segments without SYN.
    fn hdr_len(&self) -> usize {
        TCP_HLEN + usize::from(self.opts_len())
    }

    /// Payload of a full segment to the guest: its MSS less our options.
    fn seg_payload(&self) -> u16 {
        self.mss_to_tap.saturating_sub(self.opts_len()).max(MSS_MIN)
    }

    /// Takes the timestamps of a segment from the guest: its TSval is the
    /// one to echo if the segment starts at or before the last byte we
    /// acknowledged and the value is not older (RFC 7323 §4.3), so that
    /// a delayed ACK echoes the earliest segment it covers.
    fn note_ts(&mut self, s: &Seg) {
        if let (true, Some((val, _))) = (self.ts_ok, s.ts) {
            if seq::le(s.seq, self.seq_ack_to_tap) && seq::ge(val, self.ts_recent) {
                self.ts_recent = val;
            }
        }
    }

    /// Bytes of data (not FIN) sent and not yet acknowledged.
    fn data_in_flight(&self) -> u32 {
        let top = if self.tap_fin_sent {
            self.fin_seq.unwrap_or(self.seq_to_tap)
        } else {
            self.seq_to_tap
        };
        seq::dist(self.seq_ack_from_tap, top)
    }

    /// Whether anything (data or FIN) awaits the guest's acknowledgement.
    fn anything_in_flight(&self) -> bool {
        self.seq_to_tap != self.seq_ack_from_tap || (self.tap_fin_sent && !self.tap_fin_acked)
    }

    /// Delay of a deferred ACK of the guest's data: short for a local peer,
    /// whose answer (carrying the ACK) usually comes within it.
    fn ack_delay(&self, pol: &TcpPolicy) -> Duration {
        if self.local {
            pol.ack_delay_local
        } else {
            pol.ack_delay
        }
    }

    /// The window we can offer the guest now, in bytes.
    fn wnd_avail(&self) -> u32 {
        let clamp = if self.wnd_clamp == 0 {
            MAX_WINDOW
        } else {
            self.wnd_clamp.min(MAX_WINDOW)
        };
        self.sock_free.min(clamp)
    }

    /// The window field for our next segment (SYNs are never scaled).
    fn win_field(&self, syn: bool) -> (u16, u32) {
        let w = self.wnd_avail();
        if syn {
            let f = w.min(65535);
            (f as u16, f)
        } else {
            let f = (w >> self.ws_to_tap).min(65535);
            (f as u16, f << self.ws_to_tap)
        }
    }

    /// The earliest deadline of this connection.
    fn deadline(&self) -> Option<Instant> {
        let mut d = Some(self.t_active.saturating_add(ACT_TIMEOUT));
        if self.phase != Phase::Established {
            d = earliest(d, Some(self.t_phase.saturating_add(SYN_TIMEOUT)));
        }
        if self.phase == Phase::Established {
            d = earliest(d, Some(self.keepalive_due));
        }
        d = earliest(d, self.ack_due);
        d = earliest(d, self.t_retx);
        d = earliest(d, self.t_poll);
        if self.tap_fin_rcvd && self.tap_fin_sent {
            d = earliest(d, Some(self.t_phase.saturating_add(FIN_TIMEOUT)));
        }
        d
    }

    /// The epoll interest: one mask, edge-triggered, for the whole life of
    /// the socket, so that it is registered once and never changed (one
    /// `epoll_ctl` per connection). Edge-triggered because data peeked and
    /// not yet acknowledged stays in the receive queue: a level-triggered
    /// socket would be reported readable on every wait; the guest's ACKs
    /// drive the next peek and new data raises an edge. `Readable` before
    /// the handshake completes is remembered (`readable_early`), `Writable`
    /// matters only while the window to the guest is closed, and an
    /// `EPOLLOUT` edge needs the kernel's wake-up, armed by setting the
    /// interest again ([`TcpState::rearm`]) when the window closes on a full
    /// buffer.
    fn wanted_interest(&self) -> Interest {
        Interest {
            readable: true,
            writable: true,
            read_hangup: true,
            edge: true,
        }
    }
}

/// The window to offer the guest for a send buffer in state `space`: its
/// free space in the kernel's accounting, less a sixteenth for the overhead
/// the kernel charges per buffer on top of the payload (about 2 % for the
/// 64 KiB buffers of a bulk write), so that a window's worth is taken whole.
///
/// Sizing it from the whole buffer (rather than from half of `SO_SNDBUF`,
/// or from its free payload counted against the outgoing queue) has two
/// effects the data path depends on: a guest that fills the window leaves
/// the socket above two thirds of its buffer, not writable, so that the
/// kernel arms the `EPOLLOUT` wake-up that reopens the window as soon as a
/// third of the buffer drained; and the kernel grows the buffer
/// (autotuning) only for a sender that runs into its limit. `None` if the
/// driver could not read the buffer's state.
///
/// The share kept back is the policy's ([`TcpPolicy::window_headroom`]).
pub(crate) fn window_from_space(space: SendSpace, pol: &TcpPolicy) -> Option<u32> {
    pol.window(space.sndbuf, space.queued)
}

/// Where a write that took only part of a `Send` ended, among the guest's
/// segments (one span each).
#[derive(Clone, Copy, Debug)]
pub(super) struct Split {
    /// Segments with bytes past the end of the write.
    lost: u16,
    /// The write ended inside a segment.
    inside: bool,
}

/// Where a write of `taken` bytes of `spans` ended.
pub(super) fn split_segments(spans: &[Span], taken: u32) -> Split {
    let mut end = 0u32;
    let mut split = Split {
        lost: 0,
        inside: false,
    };
    for s in spans {
        let start = end;
        end = end.saturating_add(s.len);
        if end > taken {
            split.lost = split.lost.saturating_add(1);
            split.inside |= start < taken;
        }
    }
    split
}

/// A run of consecutive frames of one connection handed to the driver, for
/// rewinding after `handle_tap_sent`: frame `k` of the run starts at
/// `seq + k * stride` (every frame but the last carries `stride` bytes). One
/// record per peek, not per frame.
#[derive(Clone, Copy, Debug)]
struct TxRec {
    /// Index of the first frame (`Counters::frames_out` numbering).
    index: u64,
    count: u32,
    flow: FlowId,
    gen: u8,
    seq: u32,
    stride: u32,
    /// Payload of the last frame of the run.
    last_len: u32,
}

/// TCP state outside the flow table.
#[derive(Debug)]
pub(crate) struct TcpState {
    /// One timer per connection, at (or before) its earliest deadline
    /// ([`TcpConn::deadline`]).
    timers: FlowTimers,
    txlog: Vec<TxRec>,
    /// `frames_out` at the last `handle_tap_sent`.
    tx_base: u64,
    /// Connections waiting for room on the guest link, to peek again once
    /// it has some (`handle_tap_writable`).
    link_waiting: Vec<FlowId>,
    /// Sockets the driver holds for connections.
    pub(crate) open_socks: usize,
    /// Guest batches seen (tells a `Send` of this batch from older ones).
    batches: u64,
    /// Spans copied in this batch to extend a queued `Send` (at most
    /// `Limits::batch_frames`: the span list holds twice that, so the
    /// spans of every frame of the batch fit besides).
    span_copies: usize,
    /// Host peers seen with a very low RTT (replaced oldest first).
    low_rtt: [Option<IpAddr>; LOW_RTT_TABLE],
    low_rtt_next: usize,
    pub(crate) stats: TcpStats,
}

/// What TCP translation did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections opened (both directions).
    pub opened: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// Connections reset towards the guest.
    pub resets: u64,
    /// Retransmissions after a timeout.
    pub retransmits: u64,
    /// Fast retransmissions after duplicate ACKs from the guest.
    pub fast_retransmits: u64,
    /// Writes to a socket that took less than offered (or nothing).
    pub partial_writes: u64,
    /// Connections ended by a timer.
    pub timeouts: u64,
    /// Segments for a 4-tuple without a connection answered with a reset.
    pub no_flow_resets: u64,
    /// Keepalives sent to a silent guest.
    pub keepalives: u64,
}

impl TcpState {
    pub(crate) fn new(cfg: &Config) -> Self {
        // Flow ids stay below the table's capacity.
        let flows = cfg.limits.flows.min(flow::MAX_FLOWS);
        TcpState {
            timers: FlowTimers::new(flows),
            txlog: Vec::with_capacity(TX_LOG),
            tx_base: 0,
            link_waiting: Vec::with_capacity(cfg.limits.flows.min(4096)),
            open_socks: 0,
            batches: 0,
            span_copies: 0,
            low_rtt: [None; LOW_RTT_TABLE],
            low_rtt_next: 0,
            stats: TcpStats::default(),
        }
    }
}

impl Ctx<'_> {
    fn tc(&mut self, id: FlowId) -> Option<&mut TcpConn> {
        match &mut self.flows.get_mut(id)?.data {
            FlowData::Tcp(c) => Some(c),
            _ => None,
        }
    }

    fn tc_ref(&self, id: FlowId) -> Option<(&FlowKey, &TcpConn)> {
        let f = self.flows.get(id)?;
        match &f.data {
            FlowData::Tcp(c) => Some((&f.key, c)),
            _ => None,
        }
    }

    /// Queues `a`, or counts it refused if the action queue is full.
    fn act(&mut self, a: Action) {
        if !self.actions.push(a) {
            self.counters.actions_refused += 1;
        }
    }
}

fn family(a: IpAddr) -> Family {
    if a.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    }
}

/// Options of the host socket of every connection with the guest, from it
/// or accepted for it: no Nagle (the guest's own stack already decided
/// when small segments go, the socket adds no wait of its own), and the
/// peek offset where the kernel has it.
fn stream_options(cx: &mut Ctx<'_>, sock: SockId) {
    cx.act(Action::SetOption {
        sock,
        opt: SockOpt::NoDelay,
    });
    if cx.cfg.peek_offset {
        cx.act(Action::SetOption {
            sock,
            opt: SockOpt::PeekOffset(0),
        });
    }
}

/// Offset of our timestamps clock on connection `key` (see
/// `TcpConn::ts_off`): a keyed hash of the 4-tuple, as for the ISN.
fn ts_offset(cfg: &Config, key: &FlowKey) -> u32 {
    flow::TupleHasher::new(&cfg.secret, TS_SALT).hash(key, false) as u32
}

/// RFC 6528 initial sequence number: a keyed hash of the 4-tuple plus a
/// clock ticking every 32 ns.
pub(crate) fn isn(cfg: &Config, key: &FlowKey, now: Instant) -> u32 {
    let h = flow::TupleHasher::new(&cfg.secret, 0).hash(key, false);
    (h as u32).wrapping_add((now.as_nanos() >> 5) as u32)
}

/// The MSS we advertise to the guest: from the MTU, rounded down to a
/// page multiple when larger than a page.
fn mss_adv(cfg: &Config, v6: bool, info_mss: u32) -> u16 {
    let hdrs = if v6 { 60 } else { 40 };
    let m = match cfg.mtu {
        Some(mtu) => u32::from(mtu).saturating_sub(hdrs),
        None if info_mss > 0 => info_mss,
        None => u32::from(MSS_DEFAULT),
    };
    let m = if m > 4096 { m / 4096 * 4096 } else { m };
    m.clamp(u32::from(MSS_MIN), u32::from(if v6 { MSS6 } else { MSS4 })) as u16
}

/// Largest payload per frame to the guest: its MSS, within our MTU.
fn mss_send(cfg: &Config, v6: bool, guest_mss: u16) -> u16 {
    let hdrs: u16 = if v6 { 60 } else { 40 };
    let mtu_mss = cfg
        .mtu
        .map_or(u16::MAX, |m| m.saturating_sub(hdrs))
        .max(MSS_MIN);
    guest_mss.min(mtu_mss)
}

fn clamp_mss(mss: Option<u16>, v6: bool) -> u16 {
    mss.unwrap_or(MSS_DEFAULT)
        .clamp(MSS_MIN, if v6 { MSS6 } else { MSS4 })
}

impl TcpConn {
    fn mss_info(&self) -> u32 {
        self.info_mss
    }

    /// Takes the send buffer's state in: the window to the guest follows.
    /// Returns whether the state was known (else the window stays as it was).
    fn set_space(&mut self, space: SendSpace, pol: &TcpPolicy) -> bool {
        let Some(w) = window_from_space(space, pol) else {
            return false;
        };
        self.sndbuf = space.sndbuf;
        self.queued = space.queued;
        if self.payload_share != 0 && space.queued <= space.sndbuf / 4 {
            // The peer keeps up: what was learnt about the overhead
            // fades (the peer's reads may have grown).
            let s = self.payload_share;
            self.payload_share = s + (PAYLOAD_SHARE_ONE - s) / 16 + 1;
            if self.payload_share >= PAYLOAD_SHARE_ONE {
                self.payload_share = 0;
            }
        }
        self.sock_free = self.payload_of(w);
        true
    }

    /// The payload that fits in `free` bytes of the send buffer, as far as
    /// writes that did not fit taught (`payload_share`).
    fn payload_of(&self, free: u32) -> u32 {
        match self.payload_share {
            0 => free,
            s => (u64::from(free) * u64::from(s) / u64::from(PAYLOAD_SHARE_ONE)) as u32,
        }
    }

    /// A write of `want` bytes, with `promised` bytes of free space
    /// expected, took only `took`: the buffer holds less payload than its
    /// free space says. Lowers `payload_share` to what this write shows
    /// (never below a quarter).
    fn learn_payload_share(&mut self, promised: u32, want: u32, took: u32) {
        let promised = promised.min(want);
        if promised == 0 || took >= promised {
            return;
        }
        let s = match self.payload_share {
            0 => PAYLOAD_SHARE_ONE,
            s => s,
        };
        let learnt = u64::from(s) * u64::from(took) / u64::from(promised);
        self.payload_share = (learnt as u16).max(PAYLOAD_SHARE_ONE / 4);
    }

    /// A write took `taken` bytes and refused the `refused` after them: the
    /// guest's segments that held them are lost, and all but the first lie
    /// past the new gap. `split` counts them from the write's spans
    /// ([`split_segments`]); without, they are counted in the guest's
    /// largest segment.
    fn owe_dups_for_refused(&mut self, split: Option<Split>, taken: u32, refused: u32) {
        if refused == 0 {
            return;
        }
        let past = match split {
            Some(s) => {
                if s.inside {
                    self.split_gap = Some(self.seq_from_tap.wrapping_add(taken));
                }
                s.lost.saturating_sub(1)
            }
            None => self.segments_past_first(refused),
        };
        self.dups_owed = self.dups_owed.saturating_add(past);
    }

    /// How many of the guest's segments `bytes` fill after the first one,
    /// counted in its largest segment, so never too many.
    fn segments_past_first(&self, bytes: u32) -> u16 {
        let seg = u32::from(self.mss_to_tap).max(1);
        let past = bytes.div_ceil(seg).saturating_sub(1);
        past.min(u32::from(u16::MAX)) as u16
    }

    /// Duplicate ACKs to send now for segments we dropped: those owed, at
    /// most `DUP_ACK_BURST`, fewer than the guest's segments in flight past
    /// the gap, and none unless the window is open for a segment (the
    /// guest's fast retransmission would otherwise hit a full buffer, be
    /// dropped again, and leave it waiting for its timeout).
    fn dups_now(&self) -> u16 {
        let open = !self.sock_full && self.wnd_avail() >= u32::from(self.mss_to_tap);
        if self.dups_owed == 0 || !open || !seq::gt(self.seq_max_from_tap, self.seq_from_tap) {
            return 0;
        }
        let in_flight = seq::dist(self.seq_from_tap, self.seq_max_from_tap);
        let split = u16::from(self.split_gap == Some(self.seq_from_tap));
        self.dups_owed
            .min(DUP_ACK_BURST)
            .min(self.segments_past_first(in_flight).saturating_add(split))
    }
}
