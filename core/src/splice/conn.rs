//! The state of one spliced TCP connection, as the flow table stores it.
//!
//! This module sits below the flow table: it imports nothing of the crate
//! but the standard library's types, so `flow.rs` can name [`SpliceConn`] as
//! an entry's data without importing the rest of `splice`, which uses the
//! table.

use core::net::SocketAddr;

/// Where a spliced connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The far side is connecting.
    Connecting,
    /// The driver moves the bytes.
    Joined,
}

/// A spliced connection: side 0 is the accepted socket, side 1 the one
/// connected in the other namespace.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpliceConn {
    pub(crate) phase: Phase,
    /// Which of the two sockets the driver holds.
    pub(crate) open: [bool; 2],
    /// Where the far side connects to.
    pub(crate) target: SocketAddr,
}
