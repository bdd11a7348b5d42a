//! The state of one translated TCP connection, as the flow table stores it.
//!
//! This module sits below the flow table: it imports only the lowest layers
//! (`action`, `time`), so `flow.rs` can name [`TcpConn`] as an entry's data
//! without importing the rest of `tcp`, which uses the table. The
//! connection's behaviour (its `impl` blocks) stays in `tcp/mod.rs` and the
//! files beside it; fields private to `tcp` are `pub(super)` here.

use crate::action::{Interest, SockId, SpanList};
use crate::time::Instant;
use core::net::IpAddr;

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

/// The `Send` of the guest's data a batch queued, until its result comes.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PendingSend {
    /// Bytes to write (0: none pending).
    pub(super) bytes: u32,
    /// The guest's FIN follows them.
    pub(super) fin: bool,
    /// Where the `Send` waits in the action queue (`ActionQueue::get_mut`),
    /// while its batch is handled: a later group of the flow's segments
    /// amends it there instead of searching the queue.
    pub(super) action: Option<u64>,
    /// Its spans, one per segment of the guest: while its batch is handled
    /// they tell which segments a partial write refused.
    pub(super) spans: SpanList,
    /// Number of the batch that queued it.
    pub(super) batch: u64,
}

/// State of one translated TCP connection.
#[derive(Clone, Copy, Debug, Default)]
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct TcpConn {
    pub(crate) phase: Phase,
    pub(crate) sock: SockId,
    /// Whether the driver holds a socket under `sock`.
    pub(super) sock_open: bool,
    /// Epoll interest last asked for.
    pub(super) interest: Option<Interest>,
    /// Address of the host peer.
    pub(super) host_addr: Option<IpAddr>,
    /// Listener index (inbound connections).
    pub(super) listener: u32,
    /// Port the guest is connected on, for inbound connections.
    pub(super) target_port: u16,

    // --- time
    /// Deferred ACK to the guest.
    pub(super) ack_due: Option<Instant>,
    /// Start of the handshake, or when both FINs were exchanged.
    pub(super) t_phase: Instant,
    /// Last activity.
    pub(super) t_active: Instant,
    /// Retransmission (or zero-window probe) deadline.
    pub(super) t_retx: Option<Instant>,
    /// When an established connection sends the guest a keepalive, unless
    /// a segment from the guest comes first (it moves this on).
    pub(super) keepalive_due: Instant,
    /// Next look at the send buffer while our window is closed.
    pub(super) t_poll: Option<Instant>,
    /// When the guest's data was last written to the socket.
    pub(super) t_data_in: Option<Instant>,

    // --- close state
    /// The guest's FIN was taken and the socket shut down for writing.
    pub(crate) tap_fin_rcvd: bool,
    /// Our FIN is in flight or acknowledged.
    pub(crate) tap_fin_sent: bool,
    /// The guest acknowledged our FIN.
    pub(crate) tap_fin_acked: bool,
    /// The socket reported end of stream (or hang-up).
    pub(crate) sock_fin_rcvd: bool,
    /// Sequence number of our FIN, once sent.
    pub(super) fin_seq: Option<u32>,
    /// EPOLLHUP seen.
    pub(super) hup: bool,

    // --- the guest's data to the socket
    /// Where the gap in the guest's data starts when a write ended inside
    /// one of its segments: while `seq_from_tap` is there, the guest counts
    /// one segment more in flight past it than its bytes show (the rest of
    /// the split one).
    pub(super) split_gap: Option<u32>,
    /// Segments of the guest that were dropped past the next byte we
    /// expect (beyond a gap, or the tail of a write that did not fit) and
    /// that no duplicate ACK answered yet. The guest still counts them in
    /// flight; at most this many duplicate ACKs go out for them (see
    /// `TcpState::send_ack`).
    pub(super) dups_owed: u16,
    /// The guest's data on its way to the socket.
    pub(super) send: PendingSend,
    /// Waiting for the socket's send buffer to drain (EPOLLOUT wanted).
    pub(crate) need_out: bool,
    /// The kernel's wake-up for free send space is armed: the socket was
    /// found not writable when its interest was last set, or a write did
    /// not fit. Cleared when the socket is seen writable again.
    pub(super) out_armed: bool,
    /// The last write was partial or refused: the send buffer is full
    /// whatever TCP_INFO says (the kernel counts buffer overhead, not just
    /// payload), so the window stays closed until EPOLLOUT or the next
    /// poll of a closed window.
    pub(super) sock_full: bool,
    /// Share of the send buffer's free space (in 1/256) that writes fill
    /// with payload: below 256 once a write did not fit in a window the
    /// free space promised (the kernel charges every buffer of the queue
    /// its overhead, and more buffers with a peer that reads in small
    /// pieces). 0 stands for 256 (nothing learnt yet).
    pub(super) payload_share: u16,
    /// Send an ACK when the next `TcpInfo` arrives.
    pub(super) force_ack: bool,

    // --- the socket's data to the guest
    /// The last peek found nothing beyond what it took: wait for `Readable`
    /// before peeking again (a peek would only return `EAGAIN`).
    pub(super) sock_drained: bool,
    /// The socket was reported readable before the handshake completed.
    pub(super) readable_early: bool,
    /// A `Peek` is queued and not answered yet.
    pub(super) peek_pending: bool,
    /// Bytes asked for by the pending `Peek`.
    pub(super) peek_len: u32,
    /// `seq_to_tap` when the pending `Peek` was asked for.
    pub(super) peek_seq: u32,
    /// Waiting for room on the guest link (listed in `TcpState::link_waiting`).
    pub(super) link_wait: bool,
    /// Cannot send more to the guest until it acknowledges or opens its window.
    pub(crate) stalled: bool,

    // --- flags
    /// Host peer is local or has a very low RTT: ACK at once.
    pub(crate) local: bool,
    /// Request-response traffic with a local peer: data went to the guest
    /// soon (within the policy's `ack_delay_local`) after the guest's last
    /// data was written, so the ACK of the guest's next small write waits
    /// for the answer to carry it. Off again when that wait runs out.
    pub(super) pingpong: bool,

    // --- sequence numbers (guest's view of us: "to tap"; of itself: "from tap")
    /// Our initial sequence number.
    pub(super) isn: u32,
    /// Next sequence number we send to the guest.
    pub(crate) seq_to_tap: u32,
    /// Highest `seq_to_tap` ever reached.
    pub(super) seq_max_to_tap: u32,
    /// Highest ACK from the guest (never past our FIN).
    pub(crate) seq_ack_from_tap: u32,
    /// Next sequence number expected from the guest: everything before it
    /// was written to the socket.
    pub(crate) seq_from_tap: u32,
    /// End of the furthest segment seen from the guest: it has everything
    /// up to here in flight, past `seq_from_tap` (bounds the duplicate
    /// ACKs it may be sent).
    pub(super) seq_max_from_tap: u32,
    /// The ACK number last sent to the guest.
    pub(crate) seq_ack_to_tap: u32,

    // --- windows and sizes
    /// Guest's window, scaled, in bytes.
    pub(crate) wnd_from_tap: u32,
    /// Raw window field of the guest's last segment (duplicate ACK detection).
    pub(super) wnd_raw_from_tap: u16,
    /// Guest's window scale (0 if scaling is off).
    pub(super) ws_from_tap: u8,
    /// Our window scale (0 if scaling is off).
    pub(super) ws_to_tap: u8,
    /// Window last advertised to the guest, in bytes.
    pub(crate) wnd_to_tap: u32,
    /// Largest window offered to the guest (0: `MAX_WINDOW`), from the
    /// MSS we advertised and the guest link's queue (`TAP_QUEUE_FRAMES`).
    pub(super) wnd_clamp: u32,
    /// Estimated free space of the socket's send buffer.
    pub(crate) sock_free: u32,
    /// The send buffer's size (kernel accounting) as last reported.
    pub(super) sndbuf: u32,
    /// Its queue as last reported, plus at least what was written since
    /// without a report (see `TcpState::sent`).
    pub(super) queued: u32,
    /// Whether a `TcpInfo` arrived yet.
    pub(super) have_info: bool,
    /// `tcpi_snd_mss` as last reported.
    pub(super) info_mss: u32,
    /// Largest segment we send to the guest (its payload; the timestamps
    /// option, when used, comes out of it).
    pub(crate) mss_to_tap: u16,

    // --- timestamps (RFC 7323): offered on our SYN, taken up when the
    // guest's SYN or SYN-ACK carries them
    /// Every segment to the guest carries the timestamps option.
    pub(super) ts_ok: bool,
    /// The guest's TSval to echo (`TS.Recent`).
    pub(super) ts_recent: u32,
    /// Offset of our TSval clock for this connection (from its 4-tuple, as
    /// Linux offsets its own, so that the clock's value is not shown).
    pub(super) ts_off: u32,
    /// Consecutive retransmissions.
    pub(crate) retrans: u8,
    /// Consecutive duplicate ACKs from the guest.
    pub(super) dup_acks: u8,
}
