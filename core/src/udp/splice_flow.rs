//! The state of one spliced UDP flow, as the flow table stores it.
//!
//! This module sits below the flow table: it imports only the lowest layers
//! (`action`, `time`), so `flow.rs` can name [`UdpSpliceFlow`] as an entry's
//! data without importing the rest of `udp`, which uses the table. The
//! flow's behaviour stays in `udp/splice.rs`; its fields are `pub(super)`
//! here, visible to `udp` as they were.

use crate::action::SockId;
use crate::time::Instant;

/// A spliced UDP flow: side 0 in the listener's namespace, side 1 in the
/// other one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UdpSpliceFlow {
    pub(super) socks: [SockId; 2],
    /// Which of the two sockets the driver holds.
    pub(super) open: [bool; 2],
    /// The pair was joined.
    pub(super) joined: bool,
    /// Last time traffic was seen.
    pub(super) t_active: Instant,
    /// Datagrams the driver reported moved at the last query.
    pub(super) moved: u64,
    /// When a `QuerySpliced` went out that was not answered yet.
    pub(super) query_at: Option<Instant>,
}
