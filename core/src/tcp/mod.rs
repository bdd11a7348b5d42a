//! TCP translation: guest segments on one side, a kernel socket on the other.
//!
//! The kernel does the real TCP with the host peer; this module only keeps the
//! two sequence spaces in step and never holds payload:
//!
//! * guest → socket: a flow's in-order payload of one batch goes out as one
//!   `Action::Send` over spans of the batch buffer; the guest is acknowledged
//!   exactly what the kernel took (`SockEvent::Sent`), and the window offered
//!   to the guest is the free space of the socket's send buffer
//!   (`SockEvent::TcpInfo`), so whole segments are always accepted;
//! * socket → guest: data stays in the kernel until the guest acknowledges
//!   it; `Action::Peek` copies it straight into the driver's transmit slots,
//!   [`Core::handle_peeked`] writes the headers, `Action::Consume` drops what
//!   the guest acknowledged, and retransmission rewinds and peeks again.
//!
//! Each connection has one timer slot (the earliest of its handshake, ACK,
//! retransmission, FIN and activity deadlines); [`Core::poll_timeout`] reports
//! a lower bound over all of them, kept without scanning.

mod segment;
pub(crate) mod seq;
#[cfg(test)]
mod tests;

use crate::action::{
    Action, BindOpts, Errno, Family, Interest, Netns, SockEvent, SockId, SockKind, SockOpt,
    TcpInfo, TxSlot,
};
use crate::config::Config;
use crate::counters::DropReason;
use crate::engine::Core;
use crate::flow::{self, FlowData, FlowId, SockRef, LISTENER_BIT};
use crate::nat;
use crate::tap::{FlowKey, FrameBatch, L4Packet};
use crate::time::{earliest, Instant};
use crate::wire::headers::{finish_ip_frame, l4_offset, PROTO_TCP};
use core::hash::Hasher;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use segment::{Hdr, Seg, ACK, FIN, PSH, RST, SYN, TCP_HLEN};

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
/// Window offered when the send buffer size is unknown (RFC 6928).
const WINDOW_DEFAULT: u32 = 14600;
/// Smallest segment size we send, whatever the guest says (as Linux's
/// `tcp_min_snd_mss`).
const MSS_MIN: u16 = 48;
/// Delay of a deferred ACK to the guest.
pub(crate) const ACK_INTERVAL: Duration = Duration::from_millis(10);
/// Handshake timeout.
pub(crate) const SYN_TIMEOUT: Duration = Duration::from_secs(10);
/// Retransmission timeout for data sent to the guest.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Interval of TCP_INFO queries while the window to the guest is closed.
pub(crate) const WINDOW_POLL: Duration = Duration::from_millis(100);
/// Time allowed to close once both sides sent their FIN.
pub(crate) const FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Inactivity timeout.
pub(crate) const ACT_TIMEOUT: Duration = Duration::from_secs(7200);
/// Consecutive retransmissions before the connection is reset.
pub(crate) const MAX_RETRANS: u8 = 7;
/// Send buffers smaller than this get immediate ACKs (upstream's `SNDBUF_SMALL`).
const SNDBUF_SMALL: u32 = 128 << 10;
/// Minimum RTT (µs) below which a peer counts as local.
const LOW_RTT_US: u32 = 10;
/// Low-RTT peers remembered for new connections.
const LOW_RTT_TABLE: usize = 8;
/// Duplicate ACKs from the guest that trigger a fast retransmission.
const DUP_ACK_THRESHOLD: u8 = 2;
/// Passes over a batch to fit out-of-order segments into the gap.
const REORDER_PASSES: usize = 4;
/// Listen backlog (as upstream).
const BACKLOG: u32 = 128;
/// Frames remembered for `handle_tap_sent`.
const TX_LOG: usize = 8192;
/// Index (with [`LISTENER_BIT`]) of the id used to accept and close a
/// connection when the flow table is full.
const REJECT_IDX: u32 = 0x7fff_ffff;

/// Where a connection is in its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Phase {
    /// Guest SYN received; the host connect is in progress.
    #[default]
    Connecting,
    /// The host connect completed; waiting for TCP_INFO to answer the guest.
    ConnectedInfo,
    /// SYN-ACK sent to the guest; waiting for its ACK.
    SynAckSent,
    /// `Accept` asked of a listener.
    Accepting,
    /// Accepted; waiting for TCP_INFO before the SYN to the guest.
    AcceptedInfo,
    /// SYN sent to the guest; waiting for its SYN-ACK.
    SynSent,
    /// Data may move both ways.
    Established,
}

/// State of one translated TCP connection.
#[derive(Clone, Copy, Debug, Default)]
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct TcpConn {
    pub(crate) phase: Phase,
    pub(crate) sock: SockId,
    /// Whether the driver holds a socket under `sock`.
    sock_open: bool,
    /// Listener index (inbound connections).
    listener: u32,
    /// Port the guest is connected on, for inbound connections.
    target_port: u16,

    // --- close state
    /// The socket reported end of stream (or hang-up).
    pub(crate) sock_fin_rcvd: bool,
    /// EPOLLHUP seen.
    hup: bool,
    /// The guest's FIN was taken and the socket shut down for writing.
    pub(crate) tap_fin_rcvd: bool,
    /// Our FIN is in flight or acknowledged.
    pub(crate) tap_fin_sent: bool,
    /// The guest acknowledged our FIN.
    pub(crate) tap_fin_acked: bool,
    /// Sequence number of our FIN, once sent.
    fin_seq: Option<u32>,

    // --- flags
    /// Host peer is local or has a very low RTT: ACK at once.
    pub(crate) local: bool,
    /// Address of the host peer.
    host_addr: Option<IpAddr>,
    /// Cannot send more to the guest until it acknowledges or opens its window.
    pub(crate) stalled: bool,
    /// Waiting for the socket's send buffer to drain (EPOLLOUT wanted).
    pub(crate) need_out: bool,
    /// A `Peek` is queued and not answered yet.
    peek_pending: bool,
    /// Bytes asked for by the pending `Peek`.
    peek_len: u32,
    /// `seq_to_tap` when the pending `Peek` was asked for.
    peek_seq: u32,
    /// Bytes of the pending `Send`.
    send_pending: u32,
    /// Batch number of the pending `Send`.
    send_batch: u64,
    /// The guest's FIN follows the pending `Send`.
    fin_pending: bool,
    /// Send the next ACK twice (a duplicate ACK pair for a gap).
    dup_ack_pending: bool,
    /// Send an ACK when the next `TcpInfo` arrives.
    force_ack: bool,
    /// `seq_from_tap` for which a duplicate ACK pair was last sent.
    dup_ack_sent_at: Option<u32>,

    // --- sequence numbers (guest's view of us: "to tap"; of itself: "from tap")
    /// Our initial sequence number.
    isn: u32,
    /// Next sequence number we send to the guest.
    pub(crate) seq_to_tap: u32,
    /// Highest `seq_to_tap` ever reached.
    seq_max_to_tap: u32,
    /// Highest ACK from the guest (never past our FIN).
    pub(crate) seq_ack_from_tap: u32,
    /// Next sequence number expected from the guest: everything before it
    /// was written to the socket.
    pub(crate) seq_from_tap: u32,
    /// The ACK number last sent to the guest.
    pub(crate) seq_ack_to_tap: u32,

    // --- windows and sizes
    /// Guest's window, scaled, in bytes.
    pub(crate) wnd_from_tap: u32,
    /// Raw window field of the guest's last segment (duplicate ACK detection).
    wnd_raw_from_tap: u16,
    /// Guest's window scale (0 if scaling is off).
    ws_from_tap: u8,
    /// Our window scale (0 if scaling is off).
    ws_to_tap: u8,
    /// Window last advertised to the guest, in bytes.
    pub(crate) wnd_to_tap: u32,
    /// Estimated free space of the socket's send buffer.
    pub(crate) sock_free: u32,
    /// SO_SNDBUF as last reported.
    sndbuf: u32,
    /// Whether a `TcpInfo` arrived yet.
    have_info: bool,
    /// `tcpi_snd_mss` as last reported.
    info_mss: u32,
    /// Largest segment we send to the guest.
    pub(crate) mss_to_tap: u16,
    /// Consecutive retransmissions.
    pub(crate) retrans: u8,
    /// Consecutive duplicate ACKs from the guest.
    dup_acks: u8,

    // --- time
    /// Start of the handshake, or when both FINs were exchanged.
    t_phase: Instant,
    /// Last activity.
    t_active: Instant,
    /// Deferred ACK to the guest.
    ack_due: Option<Instant>,
    /// Retransmission (or zero-window probe) deadline.
    t_retx: Option<Instant>,
    /// Next look at TCP_INFO while our window is closed.
    t_poll: Option<Instant>,
    /// Epoll interest last asked for.
    interest: Option<Interest>,
}

impl TcpConn {
    fn v6(key: &FlowKey) -> bool {
        key.src.is_ipv6()
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

    /// The window we can offer the guest now, in bytes.
    fn wnd_avail(&self) -> u32 {
        self.sock_free.min(MAX_WINDOW)
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
        d = earliest(d, self.ack_due);
        d = earliest(d, self.t_retx);
        d = earliest(d, self.t_poll);
        if self.tap_fin_rcvd && self.tap_fin_sent {
            d = earliest(d, Some(self.t_phase.saturating_add(FIN_TIMEOUT)));
        }
        d
    }

    /// The epoll interest for the current state.
    fn wanted_interest(&self) -> Interest {
        match self.phase {
            Phase::Connecting => Interest {
                writable: true,
                read_hangup: true,
                edge: true,
                ..Interest::default()
            },
            Phase::Established if self.tap_fin_sent || self.hup => Interest {
                writable: self.need_out && !self.tap_fin_rcvd,
                edge: true,
                ..Interest::default()
            },
            Phase::Established => Interest {
                readable: true,
                read_hangup: !self.sock_fin_rcvd,
                writable: self.need_out && !self.tap_fin_rcvd,
                edge: self.stalled || self.need_out,
            },
            _ => Interest {
                read_hangup: true,
                edge: true,
                ..Interest::default()
            },
        }
    }
}

/// A listening socket from [`Config::tcp_forwards`].
#[derive(Clone, Copy, Debug)]
struct Listener {
    target_port: u16,
    open: bool,
}

/// A frame handed to the driver, for rewinding after `handle_tap_sent`.
#[derive(Clone, Copy, Debug)]
struct TxRec {
    index: u64,
    flow: FlowId,
    gen: u8,
    seq: u32,
}

/// TCP state outside the flow table.
#[derive(Debug)]
pub(crate) struct TcpState {
    started: bool,
    listeners: Vec<Listener>,
    /// Lower bound of every connection's deadline.
    next_timer: Option<Instant>,
    txlog: Vec<TxRec>,
    /// `frames_out` at the last `handle_tap_sent`.
    tx_base: u64,
    /// Sockets the driver holds for us (flows and listeners).
    pub(crate) open_socks: usize,
    /// Guest batches seen (tells a `Send` of this batch from older ones).
    batches: u64,
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
}

impl TcpState {
    pub(crate) fn new(cfg: &Config) -> Self {
        TcpState {
            started: false,
            listeners: Vec::with_capacity(cfg.tcp_forwards.len()),
            next_timer: None,
            txlog: Vec::with_capacity(TX_LOG),
            tx_base: 0,
            open_socks: 0,
            batches: 0,
            low_rtt: [None; LOW_RTT_TABLE],
            low_rtt_next: 0,
            stats: TcpStats::default(),
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

fn clamp_mss(mss: Option<u16>, v6: bool) -> u16 {
    mss.unwrap_or(MSS_DEFAULT)
        .clamp(MSS_MIN, if v6 { MSS6 } else { MSS4 })
}

impl Core {
    // --- helpers -------------------------------------------------------------

    fn tc(&mut self, id: FlowId) -> Option<&mut TcpConn> {
        match self.flows.get_mut(id) {
            Some(f) => match &mut f.data {
                FlowData::Tcp(c) => Some(c),
                FlowData::Free => None,
            },
            None => None,
        }
    }

    fn tc_ref(&self, id: FlowId) -> Option<(&FlowKey, &TcpConn)> {
        match self.flows.get(id) {
            Some(f) => match &f.data {
                FlowData::Tcp(c) => Some((&f.key, c)),
                FlowData::Free => None,
            },
            None => None,
        }
    }

    fn act(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    /// Notes that the deadline of `id` may have moved earlier.
    fn tcp_note_timer(&mut self, id: FlowId) {
        let d = self.tc_ref(id).and_then(|(_, c)| c.deadline());
        self.tcp.next_timer = earliest(self.tcp.next_timer, d);
    }

    /// Asks for the epoll interest the state of `id` needs, if it changed.
    fn tcp_interest(&mut self, id: FlowId) {
        let Some(c) = self.tc(id) else { return };
        if !c.sock_open {
            return;
        }
        let want = c.wanted_interest();
        if c.interest == Some(want) {
            return;
        }
        c.interest = Some(want);
        let sock = c.sock;
        self.act(Action::SetInterest {
            sock,
            interest: want,
        });
    }

    /// RFC 6528 initial sequence number: a keyed hash of the 4-tuple plus a
    /// clock ticking every 32 ns.
    fn tcp_isn(&self, key: &FlowKey, now: Instant) -> u32 {
        let mut h = siphasher::sip::SipHasher13::new_with_key(&self.cfg.secret);
        for a in [key.src, key.dst] {
            match a {
                IpAddr::V4(a) => h.write(&a.octets()),
                IpAddr::V6(a) => h.write(&a.octets()),
            }
        }
        h.write_u16(key.sport);
        h.write_u16(key.dport);
        (h.finish() as u32).wrapping_add((now.as_nanos() >> 5) as u32)
    }

    /// The MSS we advertise to the guest: from the MTU, rounded down to a
    /// page multiple when larger than a page.
    fn tcp_mss_adv(&self, v6: bool, info_mss: u32) -> u16 {
        let hdrs = if v6 { 60 } else { 40 };
        let m = match self.cfg.mtu {
            Some(mtu) => u32::from(mtu).saturating_sub(hdrs),
            None if info_mss > 0 => info_mss,
            None => u32::from(MSS_DEFAULT),
        };
        let m = if m > 4096 { m / 4096 * 4096 } else { m };
        m.clamp(u32::from(MSS_MIN), u32::from(if v6 { MSS6 } else { MSS4 })) as u16
    }

    /// Largest payload per frame to the guest: its MSS, within our MTU.
    fn tcp_mss_send(&self, v6: bool, guest_mss: u16) -> u16 {
        let hdrs: u16 = if v6 { 60 } else { 40 };
        let mtu_mss = self
            .cfg
            .mtu
            .map_or(u16::MAX, |m| m.saturating_sub(hdrs))
            .max(MSS_MIN);
        guest_mss.min(mtu_mss)
    }

    /// Queues a segment without payload to the guest.
    fn tcp_ctl(&mut self, key: &FlowKey, h: Hdr) -> bool {
        let dst_mac = self.guest.mac;
        self.queue_ip(dst_mac, key.dst, key.src, PROTO_TCP, h.len(), |b, _| {
            h.write(b)
        })
    }

    /// Sends flags `flags` (with ACK unless RST alone) on connection `id`,
    /// at `seq_to_tap`.
    fn tcp_send_flags(&mut self, id: FlowId, flags: u8) {
        let Some((key, c)) = self.tc_ref(id) else {
            return;
        };
        let key = *key;
        let syn = flags & SYN != 0;
        let (win, wbytes) = c.win_field(syn);
        let syn_opts = if syn {
            let ws = if c.ws_to_tap > 0 || c.phase == Phase::AcceptedInfo {
                Some(MAX_WS)
            } else {
                None
            };
            Some((self.tcp_mss_adv(TcpConn::v6(&key), c.mss_info()), ws))
        } else {
            None
        };
        let seq = if syn { c.isn } else { c.seq_to_tap };
        let h = Hdr {
            sport: key.dport,
            dport: key.sport,
            seq,
            ack: c.seq_from_tap,
            flags,
            win,
            syn_opts,
        };
        let index = self.counters.frames_out + self.out.len() as u64;
        if !self.tcp_ctl(&key, h) {
            return;
        }
        let gen = self.flows.get(id).map_or(0, |f| f.gen);
        if flags & FIN != 0 && self.tcp.txlog.len() < TX_LOG {
            self.tcp.txlog.push(TxRec {
                index,
                flow: id,
                gen,
                seq,
            });
        }
        if let Some(c) = self.tc(id) {
            if flags & ACK != 0 {
                c.seq_ack_to_tap = c.seq_from_tap;
                c.wnd_to_tap = wbytes;
                c.ack_due = None;
            }
        }
    }

    /// Sends an ACK (twice if a duplicate pair is owed).
    fn tcp_send_ack(&mut self, id: FlowId) {
        let Some(c) = self.tc(id) else { return };
        let twice = c.dup_ack_pending && c.dup_ack_sent_at != Some(c.seq_from_tap);
        if twice {
            c.dup_ack_sent_at = Some(c.seq_from_tap);
        }
        c.dup_ack_pending = false;
        self.tcp_send_flags(id, ACK);
        if twice {
            self.tcp_send_flags(id, ACK);
        }
    }

    /// Resets a segment that belongs to no connection (RFC 9293 §3.10.7.1).
    fn tcp_rst_no_flow(&mut self, key: &FlowKey, s: &Seg) {
        let h = if s.has(ACK) {
            Hdr {
                sport: key.dport,
                dport: key.sport,
                seq: s.ack,
                ack: 0,
                flags: RST,
                win: 0,
                syn_opts: None,
            }
        } else {
            let len = s.len + u32::from(s.has(SYN)) + u32::from(s.has(FIN));
            Hdr {
                sport: key.dport,
                dport: key.sport,
                seq: 0,
                ack: s.seq.wrapping_add(len),
                flags: RST | ACK,
                win: 0,
                syn_opts: None,
            }
        };
        self.tcp_ctl(key, h);
    }

    /// Ends connection `id`: optionally resets the guest side, closes the
    /// socket and frees the flow.
    fn tcp_close(&mut self, id: FlowId, rst: bool) {
        let Some((key, c)) = self.tc_ref(id) else {
            return;
        };
        let key = *key;
        let c = *c;
        if rst {
            match c.phase {
                // The guest is in SYN-SENT: only an RST acknowledging its SYN counts.
                Phase::Connecting | Phase::ConnectedInfo => {
                    let h = Hdr {
                        sport: key.dport,
                        dport: key.sport,
                        seq: 0,
                        ack: c.seq_from_tap,
                        flags: RST | ACK,
                        win: 0,
                        syn_opts: None,
                    };
                    self.tcp_ctl(&key, h);
                }
                // The guest knows nothing of it yet.
                Phase::Accepting | Phase::AcceptedInfo => {}
                _ => self.tcp_send_flags(id, RST),
            }
            self.tcp.stats.resets += 1;
        }
        if c.sock_open {
            self.act(Action::Close { sock: c.sock });
            self.tcp.open_socks = self.tcp.open_socks.saturating_sub(1);
        }
        self.flows.free(id);
        self.tcp.stats.closed += 1;
    }

    /// Closes `id` if both directions are finished.
    fn tcp_maybe_done(&mut self, id: FlowId) -> bool {
        let done = self
            .tc_ref(id)
            .is_some_and(|(_, c)| c.tap_fin_rcvd && c.tap_fin_acked);
        if done {
            self.tcp_close(id, false);
        }
        done
    }

    // --- start-up ----------------------------------------------------------

    /// A batch of guest frames begins.
    pub(crate) fn tcp_batch_begin(&mut self, now: Instant) {
        self.tcp_start(now);
        self.tcp.batches += 1;
    }

    /// Opens the configured listeners, once.
    pub(crate) fn tcp_start(&mut self, _now: Instant) {
        if self.tcp.started {
            return;
        }
        self.tcp.started = true;
        for i in 0..self.cfg.tcp_forwards.len() {
            let f = self.cfg.tcp_forwards[i];
            let bind = match f.addr {
                None if self.cfg.ip6.is_some() => {
                    Some((Family::V6, IpAddr::V6(Ipv6Addr::UNSPECIFIED), false))
                }
                None if self.cfg.ip4.is_some() => {
                    Some((Family::V4, IpAddr::V4(Ipv4Addr::UNSPECIFIED), false))
                }
                Some(a @ IpAddr::V4(_)) if self.cfg.ip4.is_some() => Some((Family::V4, a, false)),
                Some(a @ IpAddr::V6(_)) if self.cfg.ip6.is_some() => Some((Family::V6, a, true)),
                _ => None,
            };
            let open = bind.is_some() && self.cfg.features.tcp;
            self.tcp.listeners.push(Listener {
                target_port: f.target_port,
                open,
            });
            let (Some((fam, addr, v6_only)), true) = (bind, open) else {
                continue;
            };
            let sock = SockId(LISTENER_BIT | i as u32);
            self.tcp.open_socks += 1;
            self.act(Action::Open {
                sock,
                kind: SockKind::TcpListener,
                family: fam,
                netns: Netns::Host,
            });
            self.act(Action::Bind {
                sock,
                addr: SocketAddr::new(addr, f.port),
                opts: BindOpts {
                    reuse_addr: true,
                    v6_only,
                    ..BindOpts::default()
                },
            });
            self.act(Action::Listen {
                sock,
                backlog: BACKLOG,
            });
            self.act(Action::SetInterest {
                sock,
                interest: Interest {
                    readable: true,
                    ..Interest::default()
                },
            });
        }
    }

    // --- guest side --------------------------------------------------------

    fn tcp_parse(&mut self, batch: &FrameBatch<'_>, p: &L4Packet) -> Option<Seg> {
        let start = p.l4_off as usize;
        let l4 = start
            .checked_add(p.l4_len as usize)
            .and_then(|end| batch.buffer().get(start..end));
        let s = l4.and_then(|l4| segment::parse(l4, p.l4_off));
        if s.is_none() {
            self.counters.drop(DropReason::L4Truncated);
        }
        s
    }

    /// One flow's TCP segments from a batch, in order.
    pub(crate) fn tcp_sequence(&mut self, now: Instant, batch: &FrameBatch<'_>, pkts: &[L4Packet]) {
        let mut rest = pkts;
        // Each round consumes at least one segment.
        while let Some(first) = rest.first() {
            let used = match self.flows.lookup(&first.key) {
                None => self.tcp_from_tap_new(now, batch, rest),
                Some(id) => self.tcp_from_tap(now, id, batch, rest),
            };
            rest = rest.get(used.max(1)..).unwrap_or(&[]);
        }
    }

    /// Segments for a 4-tuple without a connection: the first plain SYN opens
    /// one; everything before it is dropped. Returns the segments used.
    fn tcp_from_tap_new(
        &mut self,
        now: Instant,
        batch: &FrameBatch<'_>,
        pkts: &[L4Packet],
    ) -> usize {
        for (i, p) in pkts.iter().enumerate() {
            let Some(s) = self.tcp_parse(batch, p) else {
                continue;
            };
            if !s.has(SYN) || s.has(ACK) {
                self.counters.drop(DropReason::TcpNoFlow);
                continue;
            }
            if s.has(RST) || s.has(FIN) {
                self.counters.drop(DropReason::TcpBadSegment);
                continue;
            }
            self.tcp_conn_from_tap(now, &p.key, &s);
            return i + 1;
        }
        pkts.len()
    }

    /// A guest SYN: a new connection and a host socket connecting to the
    /// mapped destination.
    fn tcp_conn_from_tap(&mut self, now: Instant, key: &FlowKey, s: &Seg) {
        let Some(dst) = nat::from_tap(&self.cfg, PROTO_TCP, key.src, key.sport, key.dst, key.dport)
        else {
            return self.counters.drop(DropReason::TcpBadEndpoint);
        };
        let v6 = key.src.is_ipv6();
        let Some(id) = self.flows.alloc(FlowData::Tcp(TcpConn::default())) else {
            self.counters.drop(DropReason::FlowTableFull);
            self.tcp_rst_no_flow(key, s);
            return;
        };
        if !self.flows.insert_key(id, *key) {
            self.flows.free(id);
            return self.counters.drop(DropReason::TcpNoFlow);
        }
        let gen = self.flows.get(id).map_or(0, |f| f.gen);
        let sock = flow::sock_id(id, gen, 0);
        let isn = self.tcp_isn(key, now);
        let guest_mss = clamp_mss(s.mss, v6);
        let mss_to_tap = self.tcp_mss_send(v6, guest_mss);
        let local = dst.is_loopback()
            || self.tcp.low_rtt.contains(&Some(dst))
            || match dst {
                IpAddr::V4(a) => self.cfg.ip4.as_ref().is_some_and(|c| c.addr == a),
                IpAddr::V6(a) => self.cfg.ip6.as_ref().is_some_and(|c| c.addr == a),
            };
        let (ws_from_tap, ws_to_tap) = match s.ws {
            Some(ws) => (ws.min(14), MAX_WS),
            None => (0, 0),
        };
        if let Some(c) = self.tc(id) {
            *c = TcpConn {
                phase: Phase::Connecting,
                sock,
                sock_open: true,
                isn,
                seq_to_tap: isn,
                seq_max_to_tap: isn,
                seq_ack_from_tap: isn,
                seq_from_tap: s.seq.wrapping_add(1),
                seq_ack_to_tap: s.seq.wrapping_add(1),
                wnd_from_tap: u32::from(s.win),
                wnd_raw_from_tap: s.win,
                ws_from_tap,
                ws_to_tap,
                mss_to_tap,
                local,
                host_addr: Some(dst),
                t_phase: now,
                t_active: now,
                ..TcpConn::default()
            };
        }
        self.tcp.stats.opened += 1;
        self.tcp.open_socks += 1;
        self.act(Action::Open {
            sock,
            kind: SockKind::TcpStream,
            family: family(dst),
            netns: Netns::Host,
        });
        self.act(Action::SetOption {
            sock,
            opt: SockOpt::TcpMaxSeg(guest_mss),
        });
        if self.cfg.peek_offset {
            self.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(0),
            });
        }
        self.tcp_interest(id);
        self.act(Action::Connect {
            sock,
            addr: SocketAddr::new(dst, key.dport),
        });
        self.tcp_note_timer(id);
    }

    /// Segments for connection `id`. Returns how many were used: all of them
    /// unless the connection ended on one (the rest may open a new one).
    fn tcp_from_tap(
        &mut self,
        now: Instant,
        id: FlowId,
        batch: &FrameBatch<'_>,
        pkts: &[L4Packet],
    ) -> usize {
        let mut i = 0;
        // Handshake segments first.
        while let Some(p) = pkts.get(i) {
            let Some(s) = self.tcp_parse(batch, p) else {
                i += 1;
                continue;
            };
            let Some(c) = self.tc(id) else { return i };
            c.t_active = now;
            if s.has(RST) {
                self.tcp_close(id, false);
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
                        self.counters.drop(DropReason::TcpBadSegment);
                    }
                    i += 1;
                }
                Phase::SynAckSent => {
                    if s.has(SYN) && !s.has(ACK) && s.seq.wrapping_add(1) == c.seq_from_tap {
                        // Our SYN-ACK was lost: send it again.
                        i += 1;
                        self.tcp_send_flags(id, SYN | ACK);
                        continue;
                    }
                    if s.has(ACK) && !s.has(SYN) && s.ack == c.isn.wrapping_add(1) {
                        c.phase = Phase::Established;
                        c.retrans = 0;
                        c.wnd_from_tap = (u32::from(s.win) << c.ws_from_tap).min(MAX_WINDOW);
                        c.wnd_raw_from_tap = s.win;
                        self.tcp_interest(id);
                        break;
                    }
                    self.counters.drop(DropReason::TcpBadSegment);
                    self.tcp_close(id, true);
                    return i + 1;
                }
                Phase::SynSent => {
                    if s.has(SYN) && s.has(ACK) && s.ack == c.isn.wrapping_add(1) {
                        let v6 = p.key.src.is_ipv6();
                        c.seq_from_tap = s.seq.wrapping_add(1);
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
                        c.wnd_from_tap = u32::from(s.win);
                        c.wnd_raw_from_tap = s.win;
                        let guest_mss = clamp_mss(s.mss, v6);
                        let mss = self.tcp_mss_send(v6, guest_mss);
                        let Some(c) = self.tc(id) else { return i };
                        c.mss_to_tap = mss;
                        c.phase = Phase::Established;
                        c.retrans = 0;
                        c.t_retx = None;
                        // Always ACK at once: the host side may wait for the
                        // guest to speak first, or the guest for the host.
                        self.tcp_send_flags(id, ACK);
                        self.tcp_interest(id);
                        self.tcp_try_peek(now, id, false);
                        self.tcp_note_timer(id);
                        i += 1;
                        continue;
                    }
                    self.counters.drop(DropReason::TcpBadSegment);
                    self.tcp_close(id, true);
                    return i + 1;
                }
            }
        }
        if let Some(rest) = pkts.get(i..) {
            if !rest.is_empty() {
                return i + self.tcp_data_from_tap(now, id, batch, rest);
            }
        }
        self.tcp_note_timer(id);
        pkts.len()
    }

    /// Established connection: ACKs, window updates, data and FIN from the
    /// guest. Returns the segments used.
    fn tcp_data_from_tap(
        &mut self,
        now: Instant,
        id: FlowId,
        batch: &FrameBatch<'_>,
        pkts: &[L4Packet],
    ) -> usize {
        let span_start = self.spans.len();
        let batch_no = self.tcp.batches;
        let Some(c) = self.tc(id) else { return 0 };
        // A Send of an earlier batch was carried out before this batch (call
        // order): if its result never came, it cannot be trusted any more.
        if c.send_batch != batch_no {
            c.send_pending = 0;
            c.fin_pending = false;
        }
        // A Send of this batch is still queued (the flow's segments were
        // split into two groups): its result is unknown, so data after it
        // cannot be sent yet. Such data is left for the guest to retransmit.
        let busy = c.send_pending > 0 || c.fin_pending;
        let mut expected = c.seq_from_tap;
        let closed_in = c.tap_fin_rcvd || busy;
        let mut fin = false;
        let mut ack_now = false;
        let mut gap = false;
        let mut peek = false;
        for (i, p) in pkts.iter().enumerate() {
            let Some(s) = self.tcp_parse(batch, p) else {
                continue;
            };
            if s.has(RST) {
                self.tcp_flush_send(id, span_start, fin);
                self.tcp_close(id, false);
                return i + 1;
            }
            if s.has(SYN) {
                // A SYN on an open connection: answer with a challenge ACK
                // (RFC 5961 §4). A guest that lost the old connection resets
                // it, and its next SYN opens a new one.
                self.counters.drop(DropReason::TcpBadSegment);
                ack_now = true;
                continue;
            }
            if s.has(ACK) {
                let pure = s.len == 0 && !s.has(FIN);
                match self.tcp_ack_from_tap(now, id, &s, pure) {
                    AckResult::Fine => {}
                    AckResult::Progress => peek = true,
                    AckResult::Reset => return i + 1,
                }
            }
            if busy {
                if s.len > 0 || s.has(FIN) {
                    gap = true;
                }
                continue;
            }
            if closed_in || fin {
                if s.len > 0 || s.has(FIN) {
                    ack_now = true;
                }
                continue;
            }
            match self.tcp_take_data(&s, &mut expected, &mut fin) {
                Take::Taken | Take::Nothing => {}
                Take::Old => ack_now = true,
                Take::Ahead => gap = true,
            }
        }
        // Out-of-order segments: a few more passes may fill the gap.
        let mut pass = 0;
        while gap && !fin && !busy && pass < REORDER_PASSES {
            pass += 1;
            let mut progress = false;
            gap = false;
            for p in pkts {
                let Some(s) = self.tcp_parse(batch, p) else {
                    continue;
                };
                if s.has(SYN) || s.has(RST) || fin {
                    continue;
                }
                match self.tcp_take_data(&s, &mut expected, &mut fin) {
                    Take::Taken => progress = true,
                    Take::Ahead => gap = true,
                    Take::Old | Take::Nothing => {}
                }
            }
            if !progress {
                break;
            }
        }
        if gap {
            if let Some(c) = self.tc(id) {
                c.dup_ack_pending = true;
            }
            // With a Send pending, the ACK goes out after its result.
            ack_now = !busy;
        }
        let sent = self.tcp_flush_send(id, span_start, fin);
        if !sent {
            if fin {
                self.tcp_guest_fin(now, id);
                ack_now = true;
            }
            if ack_now {
                let small = self.tc_ref(id).is_some_and(|(_, c)| {
                    c.wnd_to_tap < u32::from(c.mss_to_tap) && !c.tap_fin_rcvd
                });
                if let (true, Some(c)) = (small, self.tc(id)) {
                    // Probing our closed window: answer with a fresh one.
                    c.force_ack = true;
                    let sock = c.sock;
                    self.act(Action::QueryTcpInfo { sock });
                } else {
                    self.tcp_send_ack(id);
                }
            }
        }
        if peek {
            self.tcp_try_peek(now, id, false);
        }
        if self.tcp_maybe_done(id) {
            return pkts.len();
        }
        self.tcp_interest(id);
        self.tcp_note_timer(id);
        pkts.len()
    }

    /// Queues the `Send` for spans collected since `span_start`, if any.
    fn tcp_flush_send(&mut self, id: FlowId, span_start: usize, fin: bool) -> bool {
        let count = self.spans.len().saturating_sub(span_start);
        if count == 0 {
            return false;
        }
        let total: u64 = self
            .spans
            .get(span_start..)
            .unwrap_or(&[])
            .iter()
            .map(|s| u64::from(s.len))
            .sum();
        let batch_no = self.tcp.batches;
        let Some(c) = self.tc(id) else { return false };
        c.send_pending = total.min(u64::from(u32::MAX)) as u32;
        c.fin_pending = fin;
        c.send_batch = batch_no;
        let sock = c.sock;
        self.act(Action::Send {
            sock,
            spans: crate::action::SpanList {
                start: span_start as u32,
                count: count as u32,
            },
        });
        true
    }

    /// Takes the in-order part of `s` (a span for the send), advancing
    /// `expected`; notes an in-order FIN in `fin`.
    fn tcp_take_data(&mut self, s: &Seg, expected: &mut u32, fin: &mut bool) -> Take {
        let end = s.seq.wrapping_add(s.len);
        if s.len > 0 && seq::le(s.seq, *expected) && seq::gt(end, *expected) {
            let skip = expected.wrapping_sub(s.seq);
            let len = s.len - skip;
            let Some(off) = s.payload_off.checked_add(skip) else {
                return Take::Nothing;
            };
            if self.spans.len() >= self.spans.capacity() {
                // Never grow the span list: the guest retransmits the rest.
                return Take::Nothing;
            }
            self.spans.push(crate::action::Span { offset: off, len });
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
    fn tcp_guest_fin(&mut self, now: Instant, id: FlowId) {
        let Some(c) = self.tc(id) else { return };
        if c.tap_fin_rcvd {
            return;
        }
        c.tap_fin_rcvd = true;
        c.seq_from_tap = c.seq_from_tap.wrapping_add(1);
        if c.tap_fin_sent {
            c.t_phase = now;
        }
        let sock = c.sock;
        self.act(Action::ShutdownWrite { sock });
    }

    /// An ACK (and window) from the guest.
    fn tcp_ack_from_tap(&mut self, now: Instant, id: FlowId, s: &Seg, pure: bool) -> AckResult {
        let peek_offset = self.cfg.peek_offset;
        let Some(c) = self.tc(id) else {
            return AckResult::Fine;
        };
        let ack = s.ack;
        if seq::gt(ack, c.seq_max_to_tap) || seq::lt(ack, c.seq_ack_from_tap) {
            // Acknowledges what we never sent, or stale: ignore it entirely.
            if seq::gt(ack, c.seq_max_to_tap) {
                self.counters.drop(DropReason::TcpBadSegment);
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
                if c.dup_acks == DUP_ACK_THRESHOLD {
                    // Fast retransmission from the last acknowledged byte.
                    let una = c.seq_ack_from_tap;
                    self.tcp_rewind(id, una);
                    self.tcp.stats.fast_retransmits += 1;
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
                Some(now.saturating_add(ACK_TIMEOUT))
            } else {
                None
            };
            let sock = c.sock;
            if consumed > 0 {
                self.act(Action::Consume {
                    sock,
                    len: consumed,
                });
                // The kernel moves SO_PEEK_OFF back by what is consumed.
            }
            let _ = peek_offset;
            result = AckResult::Progress;
        }
        let Some(c) = self.tc(id) else {
            return AckResult::Reset;
        };
        if c.wnd_from_tap == 0 && wnd > 0 && c.data_in_flight() > 0 {
            // Zero-window probes the guest dropped: send them again.
            let to = c.seq_ack_from_tap;
            self.tcp_rewind(id, to);
        }
        let Some(c) = self.tc(id) else {
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
    fn tcp_rewind(&mut self, id: FlowId, to: u32) {
        let peek_offset = self.cfg.peek_offset;
        let Some(c) = self.tc(id) else { return };
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
        let off = seq::dist(c.seq_ack_from_tap, to);
        let sock = c.sock;
        if peek_offset {
            self.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(off),
            });
        }
    }

    // --- socket side -------------------------------------------------------

    /// Asks for socket data for the guest, as far as its window allows
    /// (`probe`: one byte past a zero window).
    fn tcp_try_peek(&mut self, now: Instant, id: FlowId, probe: bool) {
        let peek_offset = self.cfg.peek_offset;
        let Some((key, c)) = self.tc_ref(id) else {
            return;
        };
        let room = (l4_offset(key.src.is_ipv6()) + TCP_HLEN) as u16;
        if c.phase != Phase::Established || c.peek_pending || c.tap_fin_sent {
            return;
        }
        let in_flight = c.data_in_flight();
        let avail = c.wnd_from_tap.saturating_sub(in_flight).min(MAX_WINDOW);
        let len = if probe && in_flight == 0 { 1 } else { avail };
        let Some(c) = self.tc(id) else { return };
        if len == 0 {
            c.stalled = true;
            if c.wnd_from_tap == 0 && in_flight == 0 && c.t_retx.is_none() {
                c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
            }
            self.tcp_interest(id);
            self.tcp_note_timer(id);
            return;
        }
        c.peek_pending = true;
        c.peek_len = len;
        c.peek_seq = c.seq_to_tap;
        let (sock, mss) = (c.sock, c.mss_to_tap);
        self.act(Action::Peek {
            sock,
            skip: if peek_offset { 0 } else { in_flight },
            len,
            mss,
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
        }
        let Some(id) = self.tcp_flow_of(sock) else {
            return 0;
        };
        let peek_offset = self.cfg.peek_offset;
        let Some(c) = self.tc(id) else { return 0 };
        if !c.peek_pending {
            return 0;
        }
        c.peek_pending = false;
        c.t_active = now;
        let n = match result {
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {
                if c.data_in_flight() > 0 {
                    c.stalled = true;
                }
                self.tcp_interest(id);
                return 0;
            }
            Err(_) => {
                self.tcp_close(id, true);
                return 0;
            }
            Ok(0) => {
                // End of stream, and everything before it was sent: FIN.
                c.sock_fin_rcvd = true;
                if !c.tap_fin_sent {
                    let f = *c.fin_seq.get_or_insert(c.seq_to_tap);
                    c.seq_to_tap = f;
                    self.tcp_send_flags(id, FIN | ACK);
                    if let Some(c) = self.tc(id) {
                        c.tap_fin_sent = true;
                        c.seq_to_tap = f.wrapping_add(1);
                        c.seq_max_to_tap = seq::max(c.seq_max_to_tap, c.seq_to_tap);
                        if c.t_retx.is_none() {
                            c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
                        }
                        if c.tap_fin_rcvd {
                            c.t_phase = now;
                        }
                    }
                }
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
        let mss = usize::from(c.mss_to_tap.max(MSS_MIN));
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
            let chunk = left.min(mss).min(slot.buf.len().saturating_sub(room));
            if chunk == 0 {
                break;
            }
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
                    finish_ip_frame(
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
            slot.frame_len = len;
            if self.tcp.txlog.len() < TX_LOG {
                self.tcp.txlog.push(TxRec {
                    index: self.counters.frames_out,
                    flow: id,
                    gen,
                    seq: seqno,
                });
            }
            self.counters.frames_out += 1;
            frames += 1;
            seqno = seqno.wrapping_add(chunk as u32);
            left -= chunk;
        }
        let sent = (n - left) as u32;
        let Some(c) = self.tc(id) else { return frames };
        c.seq_to_tap = seqno;
        c.seq_max_to_tap = seq::max(c.seq_max_to_tap, seqno);
        if sent > 0 {
            c.seq_ack_to_tap = ack;
            c.wnd_to_tap = wbytes;
            c.ack_due = None;
            if c.t_retx.is_none() {
                c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
            }
        }
        if sent >= c.peek_len || sent == 0 {
            c.stalled = true;
        }
        let sock = c.sock;
        let off = c.data_in_flight();
        if peek_offset && sent as usize != n {
            // The kernel's peek offset moved past bytes we could not frame.
            self.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(off),
            });
        }
        self.tcp_interest(id);
        self.tcp_note_timer(id);
        frames
    }

    /// The live TCP flow of socket `sock`.
    fn tcp_flow_of(&self, sock: SockId) -> Option<FlowId> {
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
            SockEvent::Accepted(Ok((peer, _local))) if phase == Phase::Accepting => {
                c.sock_open = true;
                self.tcp.open_socks += 1;
                self.tcp_accepted(now, id, peer);
            }
            SockEvent::Accepted(Err(_)) if phase == Phase::Accepting => {
                self.flows.free(id);
            }
            SockEvent::Accepted(_) => {}
            SockEvent::TcpInfo(info) => self.tcp_info(now, id, &info),
            SockEvent::Sent(r) => self.tcp_sent(now, id, r),
            SockEvent::Readable => {
                if phase == Phase::Established {
                    self.tcp_try_peek(now, id, false);
                }
            }
            SockEvent::Writable => {
                if phase == Phase::Established && c.need_out {
                    c.need_out = false;
                    self.act(Action::QueryTcpInfo { sock });
                    self.tcp_interest(id);
                }
            }
            SockEvent::ReadHangUp => {
                c.sock_fin_rcvd = true;
                if phase == Phase::Established {
                    self.tcp_try_peek(now, id, false);
                }
                self.tcp_interest(id);
            }
            SockEvent::HangUp => {
                if phase != Phase::Established {
                    self.tcp_close(id, true);
                } else if c.tap_fin_sent {
                    self.tcp_close(id, false);
                } else {
                    c.sock_fin_rcvd = true;
                    c.hup = true;
                    self.tcp_try_peek(now, id, false);
                    self.tcp_interest(id);
                }
            }
            SockEvent::Error(_) => self.tcp_close(id, true),
        }
        self.tcp_note_timer(id);
        true
    }

    /// A connection accepted on a listener: map its addresses, then learn
    /// the socket's buffers before the SYN to the guest.
    fn tcp_accepted(&mut self, now: Instant, id: FlowId, peer: SocketAddr) {
        let Some(c) = self.tc(id) else { return };
        let (sock, target) = (c.sock, c.target_port);
        let Some((src, guest_addr)) = nat::from_host(&self.cfg, &self.guest, peer.ip()) else {
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
        if self.cfg.peek_offset {
            self.act(Action::SetOption {
                sock,
                opt: SockOpt::PeekOffset(0),
            });
        }
        self.act(Action::QueryTcpInfo { sock });
        self.tcp_interest(id);
    }

    /// TCP_INFO of a socket: window to the guest, pending handshake steps.
    fn tcp_info(&mut self, now: Instant, id: FlowId, info: &TcpInfo) {
        let Some(c) = self.tc(id) else { return };
        c.sndbuf = info.sndbuf;
        c.sock_free = if info.sndbuf == 0 {
            // The driver could not tell: fall back to the peer's window, at
            // least the RFC 6928 initial window.
            info.snd_wnd.max(WINDOW_DEFAULT)
        } else {
            info.sndbuf.saturating_sub(info.outq)
        };
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
        let Some(c) = self.tc(id) else { return };
        match c.phase {
            Phase::ConnectedInfo => {
                c.seq_to_tap = c.isn.wrapping_add(1);
                c.seq_max_to_tap = c.seq_to_tap;
                c.seq_ack_from_tap = c.seq_to_tap;
                c.phase = Phase::SynAckSent;
                c.t_phase = now;
                self.tcp_send_flags(id, SYN | ACK);
                self.tcp_interest(id);
            }
            Phase::AcceptedInfo => {
                self.tcp_send_flags(id, SYN);
                let Some(c) = self.tc(id) else { return };
                c.phase = Phase::SynSent;
                c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
                c.seq_to_tap = c.isn.wrapping_add(1);
                c.seq_max_to_tap = c.seq_to_tap;
                c.seq_ack_from_tap = c.isn;
                self.tcp_interest(id);
            }
            Phase::Established => {
                let new = c.wnd_avail();
                let mss = u32::from(c.mss_to_tap);
                let reopened = c.wnd_to_tap < mss && new >= mss;
                c.need_out = new < mss && !c.tap_fin_rcvd;
                // While the window stays closed, look again now and then:
                // EPOLLOUT may not come if the socket counts as writable
                // before it has room for a whole segment.
                c.t_poll = if c.need_out {
                    Some(now.saturating_add(WINDOW_POLL))
                } else {
                    None
                };
                let owed = c.seq_ack_to_tap != c.seq_from_tap || c.dup_ack_pending || c.force_ack;
                let immediate = c.force_ack
                    || c.local
                    || c.sndbuf < SNDBUF_SMALL
                    || c.tap_fin_rcvd
                    || c.dup_ack_pending
                    || reopened
                    || new == 0;
                c.force_ack = false;
                if (owed || reopened) && immediate {
                    self.tcp_send_ack(id);
                } else if owed && c.ack_due.is_none() {
                    c.ack_due = Some(now.saturating_add(ACK_INTERVAL));
                }
                self.tcp_interest(id);
            }
            _ => {}
        }
    }

    /// Result of a `Send`: acknowledge only what the kernel took.
    fn tcp_sent(&mut self, now: Instant, id: FlowId, r: Result<usize, Errno>) {
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
                    self.tcp.stats.partial_writes += 1;
                } else if fin {
                    self.tcp_guest_fin(now, id);
                }
            }
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {
                c.need_out = true;
                c.sock_free = 0;
                self.tcp.stats.partial_writes += 1;
            }
            Err(_) => return self.tcp_close(id, true),
        }
        if self.tcp_maybe_done(id) {
            return;
        }
        self.act(Action::QueryTcpInfo { sock });
        if let Some(c) = self.tc(id) {
            if c.ack_due.is_none() {
                c.ack_due = Some(now.saturating_add(ACK_INTERVAL));
            }
        }
        self.tcp_interest(id);
    }

    fn tcp_listener_event(&mut self, now: Instant, idx: u32, ev: SockEvent) -> bool {
        let sock = SockId(LISTENER_BIT | idx);
        if idx == REJECT_IDX {
            if let SockEvent::Accepted(Ok(_)) = ev {
                self.act(Action::Close { sock });
            }
            return true;
        }
        let Some(l) = self.tcp.listeners.get(idx as usize).copied() else {
            return false;
        };
        if !l.open {
            return true;
        }
        match ev {
            SockEvent::Readable => {
                let Some(id) = self.flows.alloc(FlowData::Tcp(TcpConn::default())) else {
                    self.counters.drop(DropReason::FlowTableFull);
                    self.act(Action::Accept {
                        listener: sock,
                        sock: SockId(LISTENER_BIT | REJECT_IDX),
                    });
                    return true;
                };
                let gen = self.flows.get(id).map_or(0, |f| f.gen);
                let fs = flow::sock_id(id, gen, 0);
                if let Some(c) = self.tc(id) {
                    c.phase = Phase::Accepting;
                    c.sock = fs;
                    c.listener = idx;
                    c.target_port = l.target_port;
                    c.t_phase = now;
                    c.t_active = now;
                }
                self.act(Action::Accept {
                    listener: sock,
                    sock: fs,
                });
                self.tcp_note_timer(id);
            }
            SockEvent::OpenFailed(e) => {
                log::warn!("TCP listener {idx}: {e:?}");
                if let Some(l) = self.tcp.listeners.get_mut(idx as usize) {
                    l.open = false;
                }
                self.tcp.open_socks = self.tcp.open_socks.saturating_sub(1);
            }
            _ => {}
        }
        true
    }

    // --- link feedback and timers -------------------------------------------

    /// Frames after the first `accepted` handed out since the last call did
    /// not reach the guest: rewind their connections.
    pub(crate) fn tcp_tap_sent(&mut self, now: Instant, accepted: usize) {
        let cutoff = self.tcp.tx_base.saturating_add(accepted as u64);
        for i in 0..self.tcp.txlog.len() {
            let Some(r) = self.tcp.txlog.get(i).copied() else {
                break;
            };
            if r.index < cutoff {
                continue;
            }
            if self.flows.get(r.flow).is_some_and(|f| f.gen == r.gen) {
                self.tcp_rewind(r.flow, r.seq);
                self.tcp_interest(r.flow);
                if let Some(c) = self.tc(r.flow) {
                    if c.t_retx.is_none() {
                        c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
                    }
                }
                self.tcp_note_timer(r.flow);
            }
        }
        self.tcp.txlog.clear();
        self.tcp.tx_base = self.counters.frames_out;
    }

    /// Runs the timers that are due.
    pub(crate) fn tcp_timeout(&mut self, now: Instant) {
        match self.tcp.next_timer {
            Some(t) if t <= now => {}
            _ => return,
        }
        let mut next = None;
        for idx in self.flows.indices() {
            let id = FlowId(idx);
            let Some((_, c)) = self.tc_ref(id) else {
                continue;
            };
            if c.deadline().is_some_and(|d| d <= now) {
                self.tcp_conn_timer(now, id);
            }
            if let Some((_, c)) = self.tc_ref(id) {
                next = earliest(next, c.deadline());
            }
        }
        self.tcp.next_timer = next;
    }

    fn tcp_conn_timer(&mut self, now: Instant, id: FlowId) {
        let Some(c) = self.tc(id) else { return };
        if c.phase != Phase::Established {
            if now >= c.t_phase.saturating_add(SYN_TIMEOUT) {
                self.tcp.stats.timeouts += 1;
                self.tcp_close(id, true);
            } else if c.phase == Phase::SynSent && c.t_retx.is_some_and(|t| t <= now) {
                // Our SYN may not have reached the guest: send it again.
                c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
                self.tcp.stats.retransmits += 1;
                self.tcp_send_flags(id, SYN);
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
            self.tcp.stats.timeouts += 1;
            return self.tcp_close(id, true);
        }
        if c.ack_due.is_some_and(|t| t <= now) {
            c.ack_due = None;
            self.tcp_send_ack(id);
        }
        let Some(c) = self.tc(id) else { return };
        if c.t_poll.is_some_and(|t| t <= now) {
            c.t_poll = None;
            let sock = c.sock;
            self.act(Action::QueryTcpInfo { sock });
        }
        let Some(c) = self.tc(id) else { return };
        if c.t_retx.is_some_and(|t| t <= now) {
            c.t_retx = None;
            if c.anything_in_flight() {
                c.retrans += 1;
                if c.retrans > MAX_RETRANS {
                    self.tcp.stats.timeouts += 1;
                    return self.tcp_close(id, true);
                }
                let una = c.seq_ack_from_tap;
                c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
                self.tcp.stats.retransmits += 1;
                self.tcp_rewind(id, una);
                self.tcp_try_peek(now, id, false);
            } else if c.wnd_from_tap == 0 && !c.tap_fin_sent {
                c.t_retx = Some(now.saturating_add(ACK_TIMEOUT));
                self.tcp_try_peek(now, id, true);
            }
            self.tcp_interest(id);
        }
    }

    /// Lower bound of the next TCP deadline.
    pub(crate) fn tcp_poll_timeout(&self) -> Option<Instant> {
        self.tcp.next_timer
    }

    /// The guest link went away: every connection ends (sockets closed).
    pub(crate) fn tcp_tap_reset(&mut self) {
        for idx in self.flows.indices() {
            let id = FlowId(idx);
            if self.tc_ref(id).is_some() {
                self.tcp_close(id, false);
            }
        }
        self.tcp.txlog.clear();
        self.tcp.tx_base = self.counters.frames_out;
    }
}

impl TcpConn {
    fn mss_info(&self) -> u32 {
        self.info_mss
    }
}

/// What became of a segment's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Take {
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
enum AckResult {
    Fine,
    /// Acknowledged data or opened the window: try to send more.
    Progress,
    /// The connection is gone.
    Reset,
}
