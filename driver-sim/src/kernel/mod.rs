//! The simulated host kernel: TCP, UDP and ping sockets of the core (named by
//! `SockId`), of a scripted host application (named by file descriptor) and of
//! host peer models, connected by byte pipes with send and receive buffers.
//!
//! The model follows Linux where the core depends on it: non-blocking sends
//! that take what fits and fail with EAGAIN when nothing does; MSG_PEEK with
//! SO_PEEK_OFF (the offset moves back when data is consumed); MSG_TRUNC
//! discards; TCP_INFO's `bytes_acked`, `snd_wnd` and SIOCOUTQ derive from
//! where bytes are; closing with unread data resets the connection; EPOLLRDHUP
//! once the peer's FIN has arrived; EMFILE at the fd limit.

use passt_core::{Errno, Family, Interest, Netns, SendSpace, SockEvent, SockId, SockKind, TcpInfo};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Knobs of the host kernel model.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelConfig {
    /// Default SO_SNDBUF of new sockets.
    pub sndbuf: u32,
    /// Default SO_RCVBUF of new sockets.
    pub rcvbuf: u32,
    /// Most sockets the core's process may hold (EMFILE beyond).
    pub fd_limit: usize,
    /// Time a connect to a black hole takes to fail (ETIMEDOUT).
    pub connect_timeout_ns: u64,
    /// Round-trip time reported in TCP_INFO.
    pub min_rtt_us: u32,
    /// Peer models by destination, first match wins.
    pub peers: Vec<PeerRule>,
    /// Peer model of destinations no rule matches.
    pub default_peer: PeerSpec,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            sndbuf: 16384,
            rcvbuf: 131072,
            fd_limit: 1024,
            connect_timeout_ns: 2_000_000_000,
            min_rtt_us: 50,
            peers: Vec::new(),
            default_peer: PeerSpec::new(PeerModel::Refuse),
        }
    }
}

impl KernelConfig {
    /// The peer model of destination `dst`: the first rule that matches it,
    /// else the default.
    pub fn peer_for(&self, dst: SocketAddr) -> PeerSpec {
        self.peers
            .iter()
            .find(|r| r.matches(dst))
            .map_or(self.default_peer, |r| r.spec)
    }
}

mod app;
mod datagram;
mod events;
mod peer;
mod pipe;
mod stream;
#[cfg(test)]
pub(crate) mod tests;

use peer::{echo_reply, ping_id, Peer};
pub use peer::{pattern, PeerModel, PeerRule, PeerSpec};
use pipe::{Conn, Pipe};

/// Who holds a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// The core, by its id.
    Core(SockId),
    /// The scripted host application, by fd.
    App(i32),
    /// A peer model, by index.
    Peer(usize),
    /// Waiting in a listener's accept queue.
    Pending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stream,
    Listener,
    Udp,
    Ping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    Connecting,
    Connected,
    Listening,
}

#[derive(Debug)]
struct Sock {
    owner: Owner,
    kind: Kind,
    family: Family,
    netns: Netns,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    state: State,
    conn: Option<(usize, usize)>,
    backlog: VecDeque<usize>,
    backlog_max: usize,
    peek_off: Option<u32>,
    /// SO_LINGER with a zero timeout: close resets the peer.
    linger_zero: bool,
    interest: Option<Interest>,
    sndbuf: u32,
    rcvbuf: u32,
    shut_wr: bool,
    /// Received datagrams with their source.
    dgrams: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Pending errors of a datagram socket (IP_RECVERR's error queue).
    errq: VecDeque<Errno>,
    gen: u64,
    /// Edge-triggered bookkeeping: mask and generation last reported.
    reported: (u8, u64),
    reuse_addr: bool,
    /// Linux's `SOCK_NOSPACE`: the socket was found not writable by a poll
    /// (`epoll_ctl`, or a reported wake-up), or a write did not fit. Only
    /// then does freed room wake it (`EPOLLOUT`), once it is writable.
    nospace: bool,
}

/// Readiness bits.
pub mod ready {
    /// EPOLLIN
    pub const IN: u8 = 1 << 0;
    /// EPOLLOUT
    pub const OUT: u8 = 1 << 1;
    /// EPOLLRDHUP
    pub const RDHUP: u8 = 1 << 2;
    /// EPOLLHUP
    pub const HUP: u8 = 1 << 3;
    /// EPOLLERR
    pub const ERR: u8 = 1 << 4;
}

/// A view of a TCP connection for the checkers.
#[derive(Debug, Clone, Copy)]
pub struct ConnView<'a> {
    /// Connection number (stable for a run).
    pub id: u64,
    /// Bytes the core's socket accepted, in order.
    pub from_core: &'a [u8],
    /// Bytes the host side wrote towards the core, in order.
    pub to_core: &'a [u8],
    /// Bytes of `to_core` the core discarded (acknowledged to the guest).
    pub consumed_by_core: u64,
    /// Bytes of `from_core` the host side read.
    pub read_by_host: u64,
    /// The core shut down its sending side (or closed).
    pub core_fin: bool,
    /// The host side shut down its sending side (or closed).
    pub host_fin: bool,
    /// The connection was reset.
    pub reset: bool,
    /// The core's socket is closed.
    pub core_closed: bool,
    /// The host side's socket is closed.
    pub host_closed: bool,
    /// The host side's address (the core's remote).
    pub host_addr: Option<SocketAddr>,
}

/// Something the kernel tells the core when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    ConnectDone(usize, Result<(), Errno>),
}

/// The simulated host kernel.
#[derive(Debug)]
pub struct Kernel {
    /// Configuration.
    pub cfg: KernelConfig,
    socks: Vec<Option<Sock>>,
    by_core: BTreeMap<SockId, usize>,
    by_fd: BTreeMap<i32, usize>,
    conns: Vec<Option<Conn>>,
    peers: Vec<Peer>,
    /// A peer still had work when its turn ended (it reads a small receive
    /// buffer that refills at once): it acts again at the same instant.
    peers_busy: bool,
    timers: Vec<(u64, u64, Timer)>,
    timer_order: u64,
    next_conn: u64,
    /// Count of state changes: the simulator detects busy loops with it.
    pub mutations: u64,
    /// Log of peer and kernel happenings, drained into the timeline.
    pub notes: Vec<String>,
    /// Connections ever made, by id, kept after close for the final checks.
    closed_views: Vec<u64>,
    /// The current virtual time (ns), as last told.
    now: u64,
}

fn err<T>(e: Errno) -> Result<T, Errno> {
    Err(e)
}

impl Kernel {
    /// A kernel with `cfg`.
    pub fn new(cfg: KernelConfig) -> Self {
        Kernel {
            cfg,
            socks: Vec::new(),
            by_core: BTreeMap::new(),
            by_fd: BTreeMap::new(),
            conns: Vec::new(),
            peers: Vec::new(),
            peers_busy: false,
            timers: Vec::new(),
            timer_order: 0,
            next_conn: 1,
            mutations: 0,
            notes: Vec::new(),
            closed_views: Vec::new(),
            now: 0,
        }
    }

    /// Tells the kernel the virtual time (paths with a round-trip time move
    /// bytes by it).
    pub fn set_now(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    fn new_sock(&mut self, owner: Owner, kind: Kind, family: Family, netns: Netns) -> usize {
        let s = Sock {
            owner,
            kind,
            family,
            netns,
            local: None,
            remote: None,
            state: State::Fresh,
            conn: None,
            backlog: VecDeque::new(),
            backlog_max: 128,
            peek_off: None,
            linger_zero: false,
            interest: None,
            sndbuf: self.cfg.sndbuf,
            rcvbuf: self.cfg.rcvbuf,
            shut_wr: false,
            dgrams: VecDeque::new(),
            errq: VecDeque::new(),
            gen: 0,
            reported: (0, u64::MAX),
            reuse_addr: false,
            nospace: false,
        };
        self.mutations += 1;
        if let Some(i) = self.socks.iter().position(Option::is_none) {
            self.socks[i] = Some(s);
            i
        } else {
            self.socks.push(Some(s));
            self.socks.len() - 1
        }
    }

    fn sock(&self, h: usize) -> Option<&Sock> {
        self.socks.get(h).and_then(Option::as_ref)
    }

    fn sock_mut(&mut self, h: usize) -> Option<&mut Sock> {
        self.socks.get_mut(h).and_then(Option::as_mut)
    }

    /// Connection `ci`, or EBADF if it is gone.
    fn conn(&self, ci: usize) -> Result<&Conn, Errno> {
        self.conns
            .get(ci)
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)
    }

    /// Connection `ci`, to change, or EBADF if it is gone.
    fn conn_mut(&mut self, ci: usize) -> Result<&mut Conn, Errno> {
        self.conns
            .get_mut(ci)
            .and_then(Option::as_mut)
            .ok_or(Errno::EBADF)
    }

    fn core_handle(&self, id: SockId) -> Result<usize, Errno> {
        self.by_core.get(&id).copied().ok_or(Errno::EBADF)
    }

    /// Sockets the core holds open.
    pub fn core_sockets(&self) -> usize {
        self.by_core.len()
    }

    /// Sockets the core holds open other than listeners (those of flows).
    pub fn core_flow_sockets(&self) -> usize {
        self.by_core
            .values()
            .filter(|h| self.sock(**h).is_some_and(|s| s.kind != Kind::Listener))
            .count()
    }

    /// Sockets the host application holds open.
    pub fn app_sockets(&self) -> usize {
        self.by_fd.len()
    }

    /// Connections with at least one open end.
    pub fn open_conns(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.ends.iter().any(Option::is_some))
            .count()
    }

    /// The ids of the core's open sockets, in order.
    pub fn core_ids(&self) -> Vec<SockId> {
        self.by_core.keys().copied().collect()
    }

    // --- views for the checkers ---------------------------------------------------

    /// Every connection that has (or had) a core-owned end, keyed by the
    /// core's socket id while it is open.
    pub fn conn_views(&self) -> Vec<(Option<SockId>, ConnView<'_>)> {
        let mut out = Vec::new();
        for c in self.conns.iter().flatten() {
            // Which side is the core's? The side whose socket is core-owned,
            // or, after close, side 0 for connects and 1 for accepts: recorded
            // by the end's owner while open; closed conns report both closed.
            let core_side = c.ends.iter().position(|e| {
                e.and_then(|h| self.sock(h))
                    .is_some_and(|s| matches!(s.owner, Owner::Core(_)))
            });
            let side = core_side.unwrap_or(0);
            let id = c.ends[side].and_then(|h| self.sock(h)).and_then(|s| {
                if let Owner::Core(id) = s.owner {
                    Some(id)
                } else {
                    None
                }
            });
            let host_addr = c.ends[side]
                .and_then(|h| self.sock(h))
                .and_then(|s| s.remote);
            out.push((
                id,
                ConnView {
                    id: c.id,
                    from_core: &c.pipes[side].log,
                    to_core: &c.pipes[1 - side].log,
                    consumed_by_core: c.pipes[1 - side].consumed,
                    read_by_host: c.pipes[side].consumed,
                    core_fin: c.pipes[side].fin,
                    host_fin: c.pipes[1 - side].fin,
                    reset: c.reset,
                    core_closed: c.ends[side].is_none(),
                    host_closed: c.ends[1 - side].is_none(),
                    host_addr,
                },
            ));
        }
        out
    }

    /// Remote address of a core socket.
    pub fn remote_of(&self, id: SockId) -> Option<SocketAddr> {
        self.by_core
            .get(&id)
            .and_then(|h| self.sock(*h))
            .and_then(|s| s.remote)
    }
}
