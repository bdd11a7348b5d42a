//! # passt-core
//!
//! The protocol core of passt-rs: it plugs a guest's Layer-2 link (a qemu
//! stream socket for passt, a tap device for pasta) into Layer-4 sockets of the
//! host. It is *sans-IO*: frames, socket events and clock ticks go in, frames and
//! socket actions come out. It makes no system calls, reads no clock and takes
//! no randomness from the system (the seed and secret come in [`Config`]), so the
//! same inputs always give the same outputs. Two drivers use it: the epoll driver
//! (real sockets, the `passt` and `pasta` binaries) and the simulator.
//!
//! ## The API
//!
//! Inputs are the `handle_*` methods, each taking the current [`Instant`]:
//! - [`Core::handle_tap_batch`]: frames from the guest, in a buffer the driver owns;
//! - [`Core::handle_sock_event`]: readiness of sockets and results of actions;
//! - [`Core::handle_peeked`], [`Core::handle_datagrams`] and
//!   [`Core::handle_tap_sent`]: the socket-to-guest data path (see
//!   `docs/architecture.md`);
//! - [`Core::handle_timeout`]: the deadline from `poll_timeout` passed;
//! - [`Core::handle_tap_reset`]: the guest link went away;
//! - [`Core::handle_neighbour`]: an entry of the host's neighbour table
//!   appeared, changed or went away (the real MACs of LAN hosts).
//!
//! Outputs are the `poll_*` methods:
//! - [`Core::poll_frame`]: a frame for the guest, written into a buffer the
//!   driver lends;
//! - [`Core::poll_action`]: socket work for the driver ([`Action`]);
//! - [`Core::poll_timeout`]: when to call `handle_timeout` next.
//!
//! ## Call order
//!
//! Right after building the core the driver calls [`Core::start`] (it queues
//! the listeners of forwarded ports; nothing else opens them) and drains the
//! outputs as below. After
//! **every** input the driver drains the outputs: it calls `poll_action`
//! until it returns `None`, carrying each action out at once and feeding its
//! result back with `handle_sock_event` (which may queue more work), then
//! `poll_frame` until `None`, and sends those frames to the guest. Only then may
//! it reuse the batch buffer of the last `handle_tap_batch` (send actions point
//! into it), and only then does it wait for events, at most until
//! `poll_timeout`. Time passed in must never go backwards. Before carrying out
//! an [`Action::Peek`] the driver sends the frames already queued by
//! `poll_frame`, so that the peeked frames follow them, and it reports with
//! [`Core::handle_tap_sent`] how many of the frames handed out reached the guest.
//!
//! [`Core::set_forwards`] counts as an input: the driver calls it whenever
//! the set of forwarded ports changes (a rescan of `auto` forwarding), with
//! the complete set of [`Forward`]s, TCP and UDP, and drains the outputs
//! afterwards. After the listeners' actions are carried out,
//! [`Core::failed_forwards`] names the forwards whose listener could not be
//! opened, for both protocols alike (for an explicit port, a fatal start-up
//! error in the epoll driver).
//!
//! The host's neighbour table reaches the core through
//! [`Core::handle_neighbour`], an input like the others: once per entry of
//! the table as the driver loads it at start (after [`Core::start`]), then
//! once per change the kernel reports, each followed by draining the outputs
//! (a new entry may queue an announcement for the guest).
//!
//! ```no_run
//! use passt_core::{Config, Core, FrameBatch, FrameRef, Instant, SockEvent, SockId};
//!
//! # fn now() -> Instant { Instant::ZERO }
//! # fn read_tap(buf: &mut [u8], refs: &mut Vec<FrameRef>) {}
//! # fn carry_out(a: passt_core::Action) -> Option<(SockId, SockEvent)> { None }
//! # fn send_to_guest(frame: &[u8]) {}
//! # fn wait_for_events(deadline: Option<Instant>) -> Vec<(SockId, SockEvent)> { vec![] }
//! let mut core = Core::new(Config::default());
//! core.start(now());
//! let mut rx = vec![0u8; 8 << 20];
//! let mut refs = Vec::new();
//! let mut tx = vec![0u8; 65536];
//! loop {
//!     // 1. Inputs: a batch of guest frames, socket events, the timer.
//!     read_tap(&mut rx, &mut refs);
//!     core.handle_tap_batch(now(), &FrameBatch::new(&rx, &refs));
//!     // 2. Drain actions, feeding results straight back.
//!     while let Some(action) = core.poll_action() {
//!         if let Some((sock, result)) = carry_out(action) {
//!             core.handle_sock_event(now(), sock, result);
//!         }
//!     }
//!     // 3. Drain frames for the guest.
//!     while let Some(n) = core.poll_frame(&mut tx) {
//!         send_to_guest(&tx[..n]);
//!     }
//!     // 4. Wait, at most until the next deadline.
//!     for (sock, event) in wait_for_events(core.poll_timeout()) {
//!         core.handle_sock_event(now(), sock, event);
//!         // ... and drain again, as in 2 and 3.
//!     }
//!     core.handle_timeout(now());
//! }
//! ```
//!
//! ## Offloads
//!
//! On a link that checksums and segments (pasta's tap with virtio-net
//! headers), the driver sets [`Config::link_offload`]; TCP data then leaves
//! in segments of up to 64 KiB with a partial checksum, each with its
//! [`FrameMeta`] handed to the ring by [`TxRing::commit_meta`]. Frames from
//! such a link come in a batch built with [`FrameBatch::with_virtio_hdr`];
//! the core reads each header ([`FrameMeta::parse_virtio`]) and takes large
//! segments with partial checksums as they are. Without it, nothing changes.
//!
//! ## Bad input
//!
//! Nothing a guest sends can make the core panic. A frame that does not parse
//! is dropped and counted by [`DropReason`]; see [`Core::counters`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod config;
mod counters;
mod engine;
mod flow;
mod fwd;
mod guest;
mod link;
mod mac;
mod nat;
mod neigh;
mod offload;
mod policy;
mod queue;
mod rng;
mod splice;
mod tap;
mod tcp;
mod time;
mod timers;
mod txring;
mod udp;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod layers_tests;
#[cfg(test)]
mod testutil;
mod wire;
mod work;

pub use action::{
    Action, BindOpts, Errno, Family, IcmpError, Interest, Netns, PeekRequest, RecvRequest,
    RxDatagram, SendSpace, SockEvent, SockId, SockKind, SockOpt, Span, SpanList, SpliceTotals,
    TcpInfo, TxSlot, DATAGRAM_ROOM, ICMP_QUOTE_MAX,
};
pub use config::{
    Config, Features, Forward, Ip4Config, Ip6Config, Limits, Proto, DEFAULT_MTU, MAX_DNS,
    MAX_SEARCH, MIN_MTU,
};
pub use counters::{Counters, DropReason, ReplyKind};
pub use engine::Core;
pub use fwd::{ListenFailure, ListenStats};
pub use guest::GuestInfo;
pub use mac::Mac;
pub use neigh::{NeighStats, NEIGH_CAPACITY};
pub use offload::{
    Csum, FrameMeta, Gso, GsoKind, LinkOffload, VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_V1_LEN,
};
pub use policy::{Reopen, TcpPolicy};
pub use rng::Rng;
pub use splice::SpliceStats;
pub use tap::{FrameBatch, FrameRef};
pub use tcp::TcpStats;
pub use time::Instant;
pub use txring::{Reserved, SlotUse, TxRing, MAX_FRAME, MAX_RESERVE, MIN_SLOT};
pub use udp::fatal as datagram_error_is_fatal;
pub use udp::splice::UdpSpliceStats;
pub use udp::UdpStats;
