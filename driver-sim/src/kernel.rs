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

/// How a host peer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerModel {
    /// Reads and discards everything; closes after EOF.
    Sink,
    /// Sends N bytes, then shuts down its side; discards what it receives.
    Source(u64),
    /// Sends back what it reads; shuts down after EOF.
    Echo,
    /// Refuses connections (ECONNREFUSED).
    Refuse,
    /// Never answers (ETIMEDOUT after the connect timeout).
    Blackhole,
    /// Unreachable (EHOSTUNREACH).
    Unreachable,
    /// Reads N bytes, then closes with unread data pending: a reset.
    ResetAfter(u64),
    /// Reads at most B bytes per millisecond.
    SlowReader(u64),
    /// Sends N bytes as soon as connected, then echoes.
    SpeaksFirst(u64),
}

impl fmt::Display for PeerModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerModel::Sink => write!(f, "sink"),
            PeerModel::Source(n) => write!(f, "source {n}"),
            PeerModel::Echo => write!(f, "echo"),
            PeerModel::Refuse => write!(f, "refuse"),
            PeerModel::Blackhole => write!(f, "blackhole"),
            PeerModel::Unreachable => write!(f, "unreachable"),
            PeerModel::ResetAfter(n) => write!(f, "reset {n}"),
            PeerModel::SlowReader(b) => write!(f, "slow {b}"),
            PeerModel::SpeaksFirst(n) => write!(f, "speaks-first {n}"),
        }
    }
}

impl PeerModel {
    /// Parses `sink`, `source N`, `echo`, `refuse`, `blackhole`, `unreachable`,
    /// `reset N`, `slow B`, `speaks-first N`.
    pub fn parse(words: &[&str]) -> Result<PeerModel, String> {
        let num = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .ok_or_else(|| format!("`{}` needs a number", words.join(" ")))?
                .parse::<u64>()
                .map_err(|e| format!("{}: {e}", words.join(" ")))
        };
        Ok(match words.first().copied() {
            Some("sink") => PeerModel::Sink,
            Some("source") => PeerModel::Source(num(1)?),
            Some("echo") => PeerModel::Echo,
            Some("refuse") => PeerModel::Refuse,
            Some("blackhole") => PeerModel::Blackhole,
            Some("unreachable") => PeerModel::Unreachable,
            Some("reset") => PeerModel::ResetAfter(num(1)?),
            Some("slow") => PeerModel::SlowReader(num(1)?),
            Some("speaks-first") => PeerModel::SpeaksFirst(num(1)?),
            _ => return Err(format!("unknown peer model `{}`", words.join(" "))),
        })
    }
}

/// A peer model with its connect delay and distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Behaviour.
    pub model: PeerModel,
    /// Time from connect to its outcome.
    pub connect_delay_ns: u64,
    /// Round-trip time of the path to the peer: data reaches it half of it
    /// after it was sent, and leaves the sender's queue (acknowledged) a
    /// whole one after. 0: the peer is local (bytes move at once).
    pub rtt_ns: u64,
    /// A slow reader turns into one that reads everything at this virtual
    /// time (ns since the start of the run).
    pub fast_at_ns: Option<u64>,
}

impl PeerSpec {
    /// A peer answering at once.
    pub fn new(model: PeerModel) -> Self {
        PeerSpec {
            model,
            connect_delay_ns: 0,
            rtt_ns: 0,
            fast_at_ns: None,
        }
    }
}

/// A destination pattern and its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRule {
    /// Address to match (any if `None`).
    pub addr: Option<IpAddr>,
    /// Port to match (any if `None`).
    pub port: Option<u16>,
    /// The peer.
    pub spec: PeerSpec,
}

impl PeerRule {
    fn matches(&self, a: SocketAddr) -> bool {
        self.addr.is_none_or(|x| x == a.ip()) && self.port.is_none_or(|p| p == a.port())
    }
}

/// The deterministic content of byte `off` of the stream `dir` of connection
/// `conn`: scenario writers and checkers agree on it.
pub fn pattern(conn: u64, dir: u8, off: u64) -> u8 {
    let x = off
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(conn.wrapping_mul(0x85eb_ca6b))
        .wrapping_add(u64::from(dir) * 0x27d4_eb2f);
    (x >> 13) as u8 ^ (off as u8)
}

/// The reply of a pinged host to an ICMP (`v4`) or ICMPv6 echo request
/// message: type 0 or 129, same identifier, sequence and data, with the ICMP
/// checksum recomputed (ICMPv6's depends on addresses: the core sets it).
fn echo_reply(req: &[u8], v4: bool) -> Option<Vec<u8>> {
    let want = if v4 { 8 } else { 128 };
    if req.len() < 8 || req.first() != Some(&want) {
        return None;
    }
    let mut r = req.to_vec();
    r[0] = if v4 { 0 } else { 129 };
    r[2] = 0;
    r[3] = 0;
    if v4 {
        let mut sum: u32 = 0;
        for c in r.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let c = !(sum as u16);
        r[2..4].copy_from_slice(&c.to_be_bytes());
    }
    Some(r)
}

/// The echo identifier the kernel gives the ping socket of handle `h` when it
/// is bound to port 0 (or sends unbound): never 0, and distinct per socket.
fn ping_id(h: usize) -> u16 {
    0x8000 | (h % 0x7fff + 1) as u16
}

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

/// One direction of a connection: the sender's send queue and the receiver's
/// receive queue.
#[derive(Debug, Default)]
struct Pipe {
    snd: VecDeque<u8>,
    snd_cap: usize,
    rcv: VecDeque<u8>,
    rcv_cap: usize,
    /// The sender shut down (FIN queued after the data).
    fin: bool,
    /// Every byte the sender wrote, for the checkers.
    log: Vec<u8>,
    /// Bytes moved into the receive queue (acknowledged by the receiver).
    delivered: u64,
    /// Bytes the receiver read or discarded.
    consumed: u64,
    /// Round-trip time of the path (0: bytes move at once).
    rtt: u64,
    /// Chunks on their way to the receiver: (arrival time, bytes).
    flights: VecDeque<(u64, usize)>,
    /// Bytes in `flights`.
    in_flight: usize,
    /// Chunks that arrived, waiting for their acknowledgement to reach the
    /// sender: (time, bytes). They are the first `arrived` bytes of `snd`.
    acks: VecDeque<(u64, usize)>,
    arrived: usize,
}

/// What the kernel charges per buffer of queued data on top of the payload
/// (`sizeof(struct sk_buff)` and shared info, roughly), and the payload one
/// buffer holds (the GSO size of a bulk write).
const SKB_OVERHEAD: usize = 768;
const SKB_PAYLOAD: usize = 65536;

/// What `n` queued bytes cost in the kernel's accounting.
fn queued_cost(n: usize) -> usize {
    n + n.div_ceil(SKB_PAYLOAD) * SKB_OVERHEAD
}

impl Pipe {
    fn eof(&self) -> bool {
        self.fin && self.snd.is_empty()
    }
    /// What the send queue costs (`SK_MEMINFO_WMEM_QUEUED`).
    fn queued(&self) -> usize {
        queued_cost(self.snd.len())
    }
    /// Free room in the kernel's accounting; writes are taken while it is
    /// positive (a buffer at a time, so a write may overshoot).
    fn snd_free(&self) -> usize {
        self.snd_cap.saturating_sub(self.queued())
    }
    /// Bytes a write of `want` bytes may queue now: whole buffers while
    /// the accounting has room for their start (a buffer holds at most half
    /// the send buffer, as Linux bounds its size goal).
    fn snd_take(&self, want: usize) -> usize {
        let mut q = self.snd.len();
        let mut taken = 0;
        let skb = SKB_PAYLOAD.min(self.snd_cap / 2).max(1);
        while taken < want && queued_cost(q) < self.snd_cap {
            let n = (want - taken).min(skb);
            q += n;
            taken += n;
        }
        taken
    }
    /// Whether epoll reports the sender writable: at most two thirds of the
    /// buffer used.
    fn writable(&self) -> bool {
        self.queued() * 3 <= self.snd_cap * 2
    }
    /// Moves bytes towards the receiver at time `now`. Returns whether bytes
    /// reached the receive queue, and whether the send queue shrank.
    fn pump(&mut self, now: u64) -> (bool, bool) {
        if self.rtt == 0 {
            let room = self.rcv_cap.saturating_sub(self.rcv.len());
            let n = room.min(self.snd.len());
            if n == 0 {
                return (false, false);
            }
            self.rcv.extend(self.snd.drain(..n));
            self.delivered += n as u64;
            return (true, true);
        }
        let (mut moved, mut freed) = (false, false);
        while let Some(&(t, n)) = self.acks.front() {
            if t > now {
                break;
            }
            self.acks.pop_front();
            let n = n.min(self.snd.len());
            self.snd.drain(..n);
            self.arrived -= n.min(self.arrived);
            freed = true;
        }
        while let Some(&(t, n)) = self.flights.front() {
            if t > now {
                break;
            }
            self.flights.pop_front();
            let start = self.arrived;
            self.rcv.extend(self.snd.iter().skip(start).take(n));
            self.arrived += n;
            self.in_flight -= n.min(self.in_flight);
            self.delivered += n as u64;
            self.acks.push_back((t + self.rtt / 2, n));
            moved = true;
        }
        let unsent = self.snd.len() - self.arrived - self.in_flight;
        let wnd = self.rcv_cap.saturating_sub(self.rcv.len() + self.in_flight);
        let n = unsent.min(wnd);
        if n > 0 {
            self.flights.push_back((now + self.rtt / 2, n));
            self.in_flight += n;
        }
        (moved, freed)
    }
    fn next_deadline(&self) -> Option<u64> {
        let a = self.flights.front().map(|f| f.0);
        let b = self.acks.front().map(|f| f.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug)]
struct Conn {
    id: u64,
    /// `pipes[s]` carries data from side `s` to side `1 - s`.
    pipes: [Pipe; 2],
    /// Socket handle of each side, `None` once closed.
    ends: [Option<usize>; 2],
    /// The connection was reset; the error each side still has to see.
    reset: bool,
    err: [Option<Errno>; 2],
    /// Wake-ups of each side's socket (data or a FIN arrived, a reset, a
    /// close): epoll reports an edge-triggered socket again only after one.
    gen: [u64; 2],
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
    pub const IN: u8 = 1;
    /// EPOLLOUT
    pub const OUT: u8 = 2;
    /// EPOLLRDHUP
    pub const RDHUP: u8 = 4;
    /// EPOLLHUP
    pub const HUP: u8 = 8;
    /// EPOLLERR
    pub const ERR: u8 = 16;
}

#[derive(Debug)]
struct Peer {
    model: PeerModel,
    sock: usize,
    read: u64,
    to_write: u64,
    echo: VecDeque<u8>,
    done: bool,
    next_tick: Option<u64>,
    /// A slow reader reads everything from this time on.
    fast_at: Option<u64>,
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

    // --- the core's side ----------------------------------------------------

    /// `socket()`.
    pub fn open(
        &mut self,
        id: SockId,
        kind: SockKind,
        family: Family,
        netns: Netns,
    ) -> Result<(), Errno> {
        if self.by_core.contains_key(&id) {
            return err(Errno::EBADF);
        }
        if self.by_core.len() >= self.cfg.fd_limit {
            return err(Errno::EMFILE);
        }
        let kind = match kind {
            SockKind::TcpStream => Kind::Stream,
            SockKind::TcpListener => Kind::Listener,
            SockKind::Udp => Kind::Udp,
            SockKind::Ping => Kind::Ping,
            _ => return err(Errno::EPERM),
        };
        let h = self.new_sock(Owner::Core(id), kind, family, netns);
        self.by_core.insert(id, h);
        Ok(())
    }

    /// `bind()`.
    pub fn bind(&mut self, id: SockId, addr: SocketAddr, reuse: bool) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.bind_handle(h, addr, reuse)
    }

    fn bind_handle(&mut self, h: usize, addr: SocketAddr, reuse: bool) -> Result<(), Errno> {
        let (kind, netns) = {
            let s = self.sock(h).ok_or(Errno::EBADF)?;
            (s.kind, s.netns)
        };
        let clash = self.socks.iter().enumerate().any(|(i, o)| {
            o.as_ref().is_some_and(|s| {
                i != h
                    && s.netns == netns
                    && (s.kind == Kind::Udp) == (kind == Kind::Udp)
                    && s.local.is_some_and(|l| {
                        l.port() == addr.port()
                            && addr.port() != 0
                            && (l.ip() == addr.ip()
                                || l.ip().is_unspecified()
                                || addr.ip().is_unspecified())
                            && !(reuse && s.reuse_addr && s.state != State::Listening)
                    })
            })
        });
        if clash {
            return err(Errno::EADDRINUSE);
        }
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        let mut addr = addr;
        if kind == Kind::Ping && addr.port() == 0 {
            // Linux picks the echo identifier of a ping socket bound to port 0.
            addr.set_port(ping_id(h));
        }
        s.local = Some(addr);
        s.reuse_addr = reuse;
        Ok(())
    }

    /// `listen()`.
    pub fn listen(&mut self, id: SockId, backlog: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.listen_handle(h, backlog)
    }

    fn listen_handle(&mut self, h: usize, backlog: u32) -> Result<(), Errno> {
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        if s.kind != Kind::Listener && s.kind != Kind::Stream {
            return err(Errno::EPERM);
        }
        s.kind = Kind::Listener;
        s.state = State::Listening;
        s.backlog_max = backlog.max(1) as usize;
        Ok(())
    }

    fn make_conn(&mut self, a: usize, b: usize) -> usize {
        let (a_snd, a_rcv) = self.sock(a).map_or((0, 0), |s| (s.sndbuf, s.rcvbuf));
        let (b_snd, b_rcv) = self.sock(b).map_or((0, 0), |s| (s.sndbuf, s.rcvbuf));
        let c = Conn {
            id: self.next_conn,
            pipes: [
                Pipe {
                    snd_cap: a_snd as usize,
                    rcv_cap: b_rcv as usize,
                    ..Default::default()
                },
                Pipe {
                    snd_cap: b_snd as usize,
                    rcv_cap: a_rcv as usize,
                    ..Default::default()
                },
            ],
            ends: [Some(a), Some(b)],
            reset: false,
            err: [None, None],
            gen: [0, 0],
        };
        self.next_conn += 1;
        let ci = if let Some(i) = self.conns.iter().position(Option::is_none) {
            self.conns[i] = Some(c);
            i
        } else {
            self.conns.push(Some(c));
            self.conns.len() - 1
        };
        if let Some(s) = self.sock_mut(a) {
            s.conn = Some((ci, 0));
            s.state = State::Connected;
        }
        if let Some(s) = self.sock_mut(b) {
            s.conn = Some((ci, 1));
            s.state = State::Connected;
        }
        self.mutations += 1;
        ci
    }

    fn add_timer(&mut self, at: u64, t: Timer) {
        self.timer_order += 1;
        self.timers.push((at, self.timer_order, t));
    }

    fn find_listener(&self, netns: Netns, dst: SocketAddr, core_owned: bool) -> Option<usize> {
        self.socks.iter().position(|o| {
            o.as_ref().is_some_and(|s| {
                s.state == State::Listening
                    && s.netns == netns
                    && matches!(s.owner, Owner::Core(_)) == core_owned
                    && s.local.is_some_and(|l| {
                        l.port() == dst.port()
                            && (l.ip() == dst.ip()
                                || l.ip().is_unspecified()
                                || (l.ip().is_loopback() && dst.ip().is_loopback()))
                    })
            })
        })
    }

    /// A non-blocking `connect()` at virtual time `now` (ns). The outcome is
    /// reported later by [`Self::advance`] as `SockEvent::Connected`.
    pub fn connect(&mut self, id: SockId, addr: SocketAddr, now: u64) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let (kind, netns, family) = {
            let s = self.sock(h).ok_or(Errno::EBADF)?;
            (s.kind, s.netns, s.family)
        };
        if let Some(s) = self.sock_mut(h) {
            s.remote = Some(addr);
            if s.local.is_none() {
                s.local = Some(SocketAddr::new(
                    if family == Family::V4 {
                        IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1))
                    } else {
                        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 1))
                    },
                    (40000 + h % 20000) as u16,
                ));
            }
        }
        match kind {
            Kind::Udp | Kind::Ping => {
                if let Some(s) = self.sock_mut(h) {
                    s.state = State::Connected;
                }
                return Ok(());
            }
            Kind::Listener => return err(Errno::EPERM),
            Kind::Stream => {}
        }
        if let Some(s) = self.sock_mut(h) {
            s.state = State::Connecting;
        }
        // A listening application first, then the peer models.
        if let Some(l) = self.find_listener(netns, addr, false) {
            let full = self
                .sock(l)
                .is_some_and(|s| s.backlog.len() >= s.backlog_max);
            if full {
                self.add_timer(
                    now + self.cfg.connect_timeout_ns,
                    Timer::ConnectDone(h, Err(Errno::ETIMEDOUT)),
                );
                return Ok(());
            }
            let peer_side = self.new_sock(Owner::Pending, Kind::Stream, family, netns);
            if let Some(s) = self.sock_mut(peer_side) {
                s.local = Some(addr);
            }
            let local = self.sock(h).and_then(|s| s.local);
            if let Some(s) = self.sock_mut(peer_side) {
                s.remote = local;
            }
            self.make_conn(h, peer_side);
            if let Some(s) = self.sock_mut(h) {
                s.state = State::Connecting;
            }
            if let Some(s) = self.sock_mut(l) {
                s.backlog.push_back(peer_side);
                s.gen += 1;
            }
            self.add_timer(now, Timer::ConnectDone(h, Ok(())));
            return Ok(());
        }
        let spec = self
            .cfg
            .peers
            .iter()
            .find(|r| r.matches(addr))
            .map_or(self.cfg.default_peer, |r| r.spec);
        let at = now + spec.connect_delay_ns;
        match spec.model {
            PeerModel::Refuse => {
                self.add_timer(at, Timer::ConnectDone(h, Err(Errno::ECONNREFUSED)))
            }
            PeerModel::Unreachable => {
                self.add_timer(at, Timer::ConnectDone(h, Err(Errno::EHOSTUNREACH)))
            }
            PeerModel::Blackhole => self.add_timer(
                now + self.cfg.connect_timeout_ns,
                Timer::ConnectDone(h, Err(Errno::ETIMEDOUT)),
            ),
            model => {
                let ps = self.new_sock(
                    Owner::Peer(self.peers.len()),
                    Kind::Stream,
                    family,
                    Netns::Host,
                );
                if let Some(s) = self.sock_mut(ps) {
                    s.local = Some(addr);
                }
                let to_write = match model {
                    PeerModel::Source(n) | PeerModel::SpeaksFirst(n) => n,
                    _ => 0,
                };
                self.peers.push(Peer {
                    model,
                    sock: ps,
                    read: 0,
                    to_write,
                    echo: VecDeque::new(),
                    done: false,
                    next_tick: None,
                    fast_at: spec.fast_at_ns,
                });
                let ci = self.make_conn(h, ps);
                if let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) {
                    c.pipes[0].rtt = spec.rtt_ns;
                    c.pipes[1].rtt = spec.rtt_ns;
                }
                if let Some(s) = self.sock_mut(h) {
                    s.state = State::Connecting;
                }
                self.add_timer(at, Timer::ConnectDone(h, Ok(())));
                self.notes.push(format!("peer {addr} ({model}) answers"));
            }
        }
        Ok(())
    }

    /// `accept()` on the core's listener, naming the new socket `id`.
    pub fn accept(
        &mut self,
        listener: SockId,
        id: SockId,
    ) -> Result<(SocketAddr, SocketAddr), Errno> {
        let l = self.core_handle(listener)?;
        if self.by_core.contains_key(&id) {
            return err(Errno::EBADF);
        }
        let empty = self.sock(l).is_none_or(|s| s.backlog.is_empty());
        if empty {
            return err(Errno::EAGAIN);
        }
        if self.by_core.len() >= self.cfg.fd_limit {
            return err(Errno::EMFILE);
        }
        let Some(h) = self.sock_mut(l).and_then(|s| s.backlog.pop_front()) else {
            return err(Errno::EAGAIN);
        };
        self.mutations += 1;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.owner = Owner::Core(id);
        let peer = s
            .remote
            .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let local = s
            .local
            .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        self.by_core.insert(id, h);
        Ok((peer, local))
    }

    /// `setsockopt(SO_SNDBUF)`: the payload the send buffer holds.
    pub fn set_sndbuf(&mut self, id: SockId, v: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.set_buf(h, Some(v), None)
    }

    /// SO_RCVBUF.
    pub fn set_rcvbuf(&mut self, id: SockId, v: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.set_buf(h, None, Some(v))
    }

    fn set_buf(&mut self, h: usize, snd: Option<u32>, rcv: Option<u32>) -> Result<(), Errno> {
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        // Linux reserves twice the value for its own accounting (payload
        // plus per-buffer overhead, what the model counts for the send
        // buffer); the receive buffer is modelled as payload.
        if let Some(v) = snd {
            s.sndbuf = v.max(2304).saturating_mul(2);
        }
        if let Some(v) = rcv {
            s.rcvbuf = v.max(1152);
        }
        let (sb, rb, conn) = (s.sndbuf, s.rcvbuf, s.conn);
        if let Some((ci, side)) = conn {
            if let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) {
                c.pipes[side].snd_cap = sb as usize;
                c.pipes[1 - side].rcv_cap = rb as usize;
            }
        }
        self.pump_all();
        Ok(())
    }

    /// SO_PEEK_OFF.
    pub fn set_peek_off(&mut self, id: SockId, v: u32) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.peek_off = Some(v);
        Ok(())
    }

    /// SO_LINGER on with a zero timeout: closing the socket resets its peer.
    pub fn set_linger_zero(&mut self, id: SockId) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.linger_zero = true;
        Ok(())
    }

    /// The epoll interest of a socket. Like `EPOLL_CTL_MOD`, this re-arms
    /// edge-triggered readiness: a socket ready now is reported again.
    pub fn set_interest(&mut self, id: SockId, i: Interest) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.interest = Some(i);
        s.reported = (0, u64::MAX);
        Ok(())
    }

    /// Takes a socket of the core out of the readiness set altogether (no
    /// error or hang-up reported either), as `EPOLL_CTL_DEL` does.
    pub fn clear_interest(&mut self, id: SockId) {
        if let Some(s) = self.core_handle(id).ok().and_then(|h| self.sock_mut(h)) {
            s.interest = None;
        }
    }

    fn conn_side(&self, h: usize) -> Result<(usize, usize), Errno> {
        let s = self.sock(h).ok_or(Errno::EBADF)?;
        s.conn.ok_or(Errno::EBADF)
    }

    fn take_err(&mut self, ci: usize, side: usize) -> Option<Errno> {
        let c = self.conns.get_mut(ci)?.as_mut()?;
        c.err[side].take()
    }

    /// A non-blocking `send()` of `data` on a connected stream.
    pub fn send(&mut self, id: SockId, data: &[u8]) -> Result<usize, Errno> {
        let h = self.core_handle(id)?;
        self.send_handle(h, data)
    }

    fn send_handle(&mut self, h: usize, data: &[u8]) -> Result<usize, Errno> {
        let (state, shut) = {
            let s = self.sock(h).ok_or(Errno::EBADF)?;
            (s.state, s.shut_wr)
        };
        if state == State::Connecting {
            return err(Errno::EAGAIN);
        }
        let (ci, side) = self.conn_side(h).map_err(|_| Errno::EPIPE)?;
        if let Some(e) = self.take_err(ci, side) {
            return Err(e);
        }
        let c = self
            .conns
            .get_mut(ci)
            .and_then(Option::as_mut)
            .ok_or(Errno::EPIPE)?;
        if c.reset || shut {
            return err(Errno::EPIPE);
        }
        if c.ends[1 - side].is_none() {
            // The other end is gone: its kernel answers with a reset.
            c.reset = true;
            c.gen[0] += 1;
            c.gen[1] += 1;
            self.mutations += 1;
            return err(Errno::EPIPE);
        }
        let p = &mut c.pipes[side];
        let n = p.snd_take(data.len());
        let short = n < data.len();
        if n == 0 && !data.is_empty() {
            if let Some(s) = self.sock_mut(h) {
                s.nospace = true;
            }
            return err(Errno::EAGAIN);
        }
        p.snd.extend(&data[..n]);
        p.log.extend_from_slice(&data[..n]);
        self.mutations += 1;
        if short {
            // The write ran out of room: the kernel arms the wake-up.
            if let Some(s) = self.sock_mut(h) {
                s.nospace = true;
            }
        }
        self.pump_all();
        Ok(n)
    }

    /// `recvmsg(MSG_PEEK)` of at most `len` bytes after skipping `skip` (from
    /// the peek offset when SO_PEEK_OFF is set, which then advances). Returns
    /// the bytes; empty at end of stream.
    pub fn peek(&mut self, id: SockId, skip: u32, len: usize) -> Result<Vec<u8>, Errno> {
        let h = self.core_handle(id)?;
        let (ci, side) = self.conn_side(h).map_err(|_| Errno::EAGAIN)?;
        if let Some(e) = self.take_err(ci, side) {
            return Err(e);
        }
        let peek_off = self.sock(h).and_then(|s| s.peek_off);
        let c = self
            .conns
            .get(ci)
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)?;
        if c.reset {
            return err(Errno::ECONNRESET);
        }
        let p = &c.pipes[1 - side];
        let start = (peek_off.unwrap_or(0) as usize).saturating_add(skip as usize);
        let avail = p.rcv.len().saturating_sub(start);
        if avail == 0 {
            return if p.eof() {
                Ok(Vec::new())
            } else {
                err(Errno::EAGAIN)
            };
        }
        let n = avail.min(len);
        let out: Vec<u8> = p.rcv.iter().skip(start).take(n).copied().collect();
        if let Some(s) = self.sock_mut(h) {
            if let Some(o) = s.peek_off.as_mut() {
                *o = o.saturating_add(skip).saturating_add(n as u32);
            }
        }
        Ok(out)
    }

    /// `recv(MSG_TRUNC)`: discards up to `len` bytes; returns how many.
    pub fn consume(&mut self, id: SockId, len: usize) -> Result<usize, Errno> {
        let h = self.core_handle(id)?;
        self.consume_handle(h, len)
    }

    fn consume_handle(&mut self, h: usize, len: usize) -> Result<usize, Errno> {
        let (ci, side) = self.conn_side(h)?;
        let c = self
            .conns
            .get_mut(ci)
            .and_then(Option::as_mut)
            .ok_or(Errno::EBADF)?;
        let p = &mut c.pipes[1 - side];
        let n = len.min(p.rcv.len());
        p.rcv.drain(..n);
        p.consumed += n as u64;
        if let Some(s) = self.sock_mut(h) {
            if let Some(o) = s.peek_off.as_mut() {
                *o = o.saturating_sub(n as u32);
            }
        }
        self.mutations += 1;
        self.pump_all();
        Ok(n)
    }

    /// TCP_INFO, SO_SNDBUF and SIOCOUTQ of a stream.
    pub fn tcp_info(&self, id: SockId) -> Result<TcpInfo, Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock(h).ok_or(Errno::EBADF)?;
        let (ci, side) = s.conn.ok_or(Errno::EBADF)?;
        let c = self
            .conns
            .get(ci)
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)?;
        let p = &c.pipes[side];
        let min_rtt_us = if p.rtt > 0 {
            (p.rtt / 1000) as u32
        } else {
            self.cfg.min_rtt_us
        };
        Ok(TcpInfo {
            bytes_acked: p.delivered,
            snd_wnd: p.rcv_cap.saturating_sub(p.rcv.len()) as u32,
            snd_wscale: 7,
            snd_mss: 65480,
            min_rtt_us,
            sndbuf: p.snd_cap as u32,
            queued: p.queued() as u32,
        })
    }

    /// `SO_MEMINFO` of a stream: the send buffer and what its queue costs.
    pub fn send_space(&self, id: SockId) -> Result<SendSpace, Errno> {
        let h = self.core_handle(id)?;
        let (ci, side) = self.conn_side(h)?;
        let c = self
            .conns
            .get(ci)
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)?;
        let p = &c.pipes[side];
        Ok(SendSpace {
            sndbuf: p.snd_cap as u32,
            queued: p.queued() as u32,
        })
    }

    /// `shutdown(SHUT_WR)`.
    pub fn shutdown_write(&mut self, id: SockId) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.shutdown_handle(h)
    }

    fn shutdown_handle(&mut self, h: usize) -> Result<(), Errno> {
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        s.shut_wr = true;
        let conn = s.conn;
        if let Some((ci, side)) = conn {
            if let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) {
                c.pipes[side].fin = true;
                if c.pipes[side].snd.is_empty() {
                    // The FIN reaches the other side now.
                    c.gen[1 - side] += 1;
                }
            }
        }
        self.mutations += 1;
        Ok(())
    }

    /// `close()` by the core.
    pub fn close(&mut self, id: SockId) -> Result<(), Errno> {
        let h = self.core_handle(id)?;
        self.by_core.remove(&id);
        self.close_handle(h, false);
        Ok(())
    }

    fn close_handle(&mut self, h: usize, force_rst: bool) {
        self.mutations += 1;
        let Some(s) = self.socks.get_mut(h).and_then(Option::take) else {
            return;
        };
        // Pending connections of a listener die with it.
        for p in s.backlog {
            self.close_handle(p, true);
        }
        let Some((ci, side)) = s.conn else { return };
        let Some(c) = self.conns.get_mut(ci).and_then(Option::as_mut) else {
            return;
        };
        c.ends[side] = None;
        c.gen[0] += 1;
        c.gen[1] += 1;
        let unread = !c.pipes[1 - side].rcv.is_empty() || !c.pipes[1 - side].snd.is_empty();
        let linger = s.linger_zero && !unread && !force_rst;
        if !c.reset && (unread || force_rst || s.linger_zero) {
            c.reset = true;
            c.err[1 - side] = Some(Errno::ECONNRESET);
            c.pipes[0].snd.clear();
            c.pipes[1].snd.clear();
            let id = c.id;
            self.notes.push(if linger {
                format!("conn#{id}: reset by close with SO_LINGER 0")
            } else {
                format!("conn#{id}: reset by close with unread data")
            });
        } else if !c.reset {
            c.pipes[side].fin = true;
        }
        if c.ends.iter().all(Option::is_none) {
            let id = c.id;
            self.closed_views.push(id);
            // Keep the pipes for the final checks: the connection stays in the
            // table without ends.
        }
        self.pump_all();
    }

    fn pump_all(&mut self) {
        let now = self.now;
        for c in self.conns.iter_mut().flatten() {
            if c.reset {
                continue;
            }
            for k in 0..2 {
                let eof = c.pipes[k].eof();
                let (moved, freed) = c.pipes[k].pump(now);
                if moved || (c.pipes[k].eof() && !eof) {
                    // Data or the FIN reached the receiver: it wakes up.
                    c.gen[1 - k] += 1;
                }
                if moved || freed {
                    self.mutations += 1;
                }
            }
        }
    }

    /// Datagrams sent by the core on a UDP or ping socket, to `to` or, if
    /// `None`, to the connected peer. An echo peer (and, for ping sockets, the
    /// pinged host) answers each; a refusing destination queues
    /// ECONNREFUSED on the error queue (an ICMP port unreachable). Returns
    /// how many were sent.
    pub fn send_datagrams(
        &mut self,
        id: SockId,
        dgrams: &[&[u8]],
        to: Option<SocketAddr>,
    ) -> Result<usize, Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock(h).ok_or(Errno::EBADF)?;
        let Some(dst) = to.or(s.remote) else {
            return err(Errno::EPERM); // EDESTADDRREQ, really
        };
        let kind = s.kind;
        if kind != Kind::Udp && kind != Kind::Ping {
            return err(Errno::EPERM);
        }
        let spec = self
            .cfg
            .peers
            .iter()
            .find(|r| r.matches(dst))
            .map_or(self.cfg.default_peer, |r| r.spec);
        let Some(s) = self.sock_mut(h) else {
            return err(Errno::EBADF);
        };
        // A ping socket writes its own identifier (its port) into each request.
        let id = s.local.map_or(0, |l| l.port());
        let id = if id == 0 { ping_id(h) } else { id };
        for d in dgrams {
            if kind == Kind::Ping {
                let mut req = d.to_vec();
                if let Some(f) = req.get_mut(4..6) {
                    f.copy_from_slice(&id.to_be_bytes());
                }
                if let Some(reply) = echo_reply(&req, dst.is_ipv4()) {
                    if s.dgrams.len() < 256 {
                        s.dgrams.push_back((dst, reply));
                    }
                }
            } else {
                match spec.model {
                    PeerModel::Echo if s.dgrams.len() < 256 => {
                        s.dgrams.push_back((dst, d.to_vec()))
                    }
                    PeerModel::Refuse | PeerModel::Unreachable if s.errq.len() < 64 => {
                        s.errq.push_back(if spec.model == PeerModel::Refuse {
                            Errno::ECONNREFUSED
                        } else {
                            Errno::EHOSTUNREACH
                        })
                    }
                    _ => {}
                }
            }
            s.gen += 1;
        }
        self.mutations += 1;
        Ok(dgrams.len())
    }

    /// `recvmmsg()` of at most `max` datagrams with their sources; empty when
    /// nothing is queued.
    pub fn recv_datagrams(
        &mut self,
        id: SockId,
        max: usize,
    ) -> Result<Vec<(SocketAddr, Vec<u8>)>, Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        if s.kind != Kind::Udp && s.kind != Kind::Ping {
            return err(Errno::EPERM);
        }
        let n = max.min(s.dgrams.len());
        let out: Vec<_> = s.dgrams.drain(..n).collect();
        if n > 0 {
            self.mutations += 1;
        }
        Ok(out)
    }

    // --- readiness ------------------------------------------------------------

    fn mask(&self, h: usize) -> u8 {
        let Some(s) = self.sock(h) else { return 0 };
        match s.kind {
            Kind::Listener => {
                if s.backlog.is_empty() {
                    0
                } else {
                    ready::IN
                }
            }
            Kind::Udp | Kind::Ping => {
                ready::OUT
                    | if s.dgrams.is_empty() { 0 } else { ready::IN }
                    | if s.errq.is_empty() { 0 } else { ready::ERR }
            }
            Kind::Stream => {
                if s.state != State::Connected {
                    return 0;
                }
                let Some((ci, side)) = s.conn else { return 0 };
                let Some(c) = self.conns.get(ci).and_then(Option::as_ref) else {
                    return 0;
                };
                if c.reset {
                    let e = if c.err[side].is_some() { ready::ERR } else { 0 };
                    return e | ready::HUP | ready::IN | ready::RDHUP;
                }
                let inp = &c.pipes[1 - side];
                let out = &c.pipes[side];
                let mut m = 0;
                if !inp.rcv.is_empty() || inp.eof() {
                    m |= ready::IN;
                }
                if inp.eof() {
                    m |= ready::RDHUP;
                }
                if !s.shut_wr && out.writable() {
                    m |= ready::OUT;
                }
                if inp.eof() && s.shut_wr {
                    m |= ready::HUP;
                }
                m
            }
        }
    }

    fn gen_of(&self, h: usize) -> u64 {
        let Some(s) = self.sock(h) else { return 0 };
        let cg = s
            .conn
            .and_then(|(ci, _)| self.conns.get(ci).and_then(Option::as_ref))
            .map_or(0, |c| c.gen[s.conn.map_or(0, |x| x.1)]);
        s.gen.wrapping_add(cg.wrapping_mul(1 << 20))
    }

    /// Readiness events for the core's sockets, as epoll would report them now,
    /// in socket order. Edge-triggered sockets report only changes.
    pub fn ready_events(&mut self) -> Vec<(SockId, SockEvent)> {
        let mut out = Vec::new();
        let ids: Vec<(SockId, usize)> = self.by_core.iter().map(|(k, v)| (*k, *v)).collect();
        for (id, h) in ids {
            let Some(interest) = self.sock(h).and_then(|s| s.interest) else {
                continue;
            };
            let mask = self.mask(h);
            let gen = self.gen_of(h);
            let mut want = ready::ERR | ready::HUP;
            if interest.readable {
                want |= ready::IN;
            }
            if interest.writable {
                want |= ready::OUT;
            }
            if interest.read_hangup {
                want |= ready::RDHUP;
            }
            let stream = self.sock(h).is_some_and(|s| s.kind == Kind::Stream);
            // Freed room wakes a stream socket only if a poll found it not
            // writable, or a write did not fit (Linux's SOCK_NOSPACE), and
            // only once it is writable again.
            let nospace = self.sock(h).is_some_and(|s| s.nospace);
            let write_space = stream && nospace && mask & ready::OUT != 0;
            if write_space {
                if let Some(s) = self.sock_mut(h) {
                    s.nospace = false;
                }
            }
            let mut m = mask & want;
            let (last_mask, last_gen) = self.sock(h).map_or((0, u64::MAX), |s| s.reported);
            // A poll of the socket: level-triggered ones at every wait, an
            // edge-triggered one after `epoll_ctl` or a wake-up.
            let polled = !interest.edge || last_gen != gen || write_space;
            if polled && interest.writable && stream && mask & ready::OUT == 0 {
                if let Some(s) = self.sock_mut(h) {
                    s.nospace = true;
                }
            }
            if m == 0 {
                if let Some(s) = self.sock_mut(h) {
                    s.reported = (0, gen);
                }
                continue;
            }
            if interest.edge {
                if last_gen == gen {
                    m &= !last_mask;
                    if stream {
                        // Room alone wakes nobody: only the write-space
                        // wake-up above.
                        m &= !ready::OUT;
                        if write_space && interest.writable {
                            m |= ready::OUT;
                        }
                    }
                }
                if m == 0 {
                    continue;
                }
            }
            if let Some(s) = self.sock_mut(h) {
                s.reported = (mask & want, gen);
            }
            let dgram = self
                .sock(h)
                .is_some_and(|s| s.kind == Kind::Udp || s.kind == Kind::Ping);
            if m & ready::ERR != 0 && dgram {
                // One event per error drained from the error queue.
                let errs: Vec<Errno> = self
                    .sock_mut(h)
                    .map(|s| s.errq.drain(..).collect())
                    .unwrap_or_default();
                self.mutations += 1;
                for e in errs {
                    out.push((id, SockEvent::Error(e)));
                }
            } else if m & ready::ERR != 0 {
                let e = self
                    .sock(h)
                    .and_then(|s| s.conn)
                    .and_then(|(ci, side)| {
                        self.conns
                            .get(ci)
                            .and_then(Option::as_ref)
                            .and_then(|c| c.err[side])
                    })
                    .unwrap_or(Errno::ECONNRESET);
                out.push((id, SockEvent::Error(e)));
            }
            if m & ready::IN != 0 {
                out.push((id, SockEvent::Readable));
            }
            if m & ready::OUT != 0 {
                out.push((id, SockEvent::Writable));
            }
            if m & ready::RDHUP != 0 {
                out.push((id, SockEvent::ReadHangUp));
            }
            if m & ready::HUP != 0 {
                out.push((id, SockEvent::HangUp));
            }
        }
        out
    }

    // --- time -----------------------------------------------------------------

    /// The next time the kernel has something to do, in ns.
    pub fn next_deadline(&self) -> Option<u64> {
        let t = self.timers.iter().map(|t| t.0).min();
        let p = self.peers.iter().filter_map(|p| p.next_tick).min();
        let f = self
            .peers
            .iter()
            .filter_map(|p| p.fast_at.filter(|&t| t > self.now))
            .min();
        let q = self
            .conns
            .iter()
            .flatten()
            .filter(|c| !c.reset)
            .flat_map(|c| c.pipes.iter().filter_map(Pipe::next_deadline))
            .min();
        [t, p, f, q].into_iter().flatten().min()
    }

    /// Runs timers due at `now` and lets the peers act. Returns the events
    /// for the core (connect outcomes).
    pub fn advance(&mut self, now: u64) -> Vec<(SockId, SockEvent)> {
        self.set_now(now);
        self.pump_all();
        let mut out = Vec::new();
        let mut due: Vec<_> = Vec::new();
        self.timers.retain(|t| {
            if t.0 <= now {
                due.push(*t);
                false
            } else {
                true
            }
        });
        due.sort_by_key(|t| (t.0, t.1));
        for (_, _, t) in due {
            match t {
                Timer::ConnectDone(h, res) => {
                    let Some(s) = self.sock_mut(h) else { continue };
                    let Owner::Core(id) = s.owner else { continue };
                    if s.state != State::Connecting {
                        continue;
                    }
                    s.state = if res.is_ok() {
                        State::Connected
                    } else {
                        State::Fresh
                    };
                    self.mutations += 1;
                    out.push((id, SockEvent::Connected(res)));
                }
            }
        }
        for p in &mut self.peers {
            if p.next_tick.is_some_and(|t| t <= now) {
                p.next_tick = None;
            }
        }
        self.run_peers(now);
        out
    }

    /// Lets every peer model act on its socket.
    pub fn run_peers(&mut self, now: u64) {
        self.set_now(now);
        for i in 0..self.peers.len() {
            // A few rounds: reading frees room the writer may use.
            for _ in 0..4 {
                if !self.peer_step(i, now) {
                    break;
                }
            }
        }
    }

    fn peer_step(&mut self, i: usize, now: u64) -> bool {
        let Some(p) = self.peers.get(i) else {
            return false;
        };
        if p.done {
            return false;
        }
        let (h, model) = (p.sock, p.model);
        let Some((ci, side)) = self.sock(h).and_then(|s| s.conn) else {
            return false;
        };
        let Some(c) = self.conns.get(ci).and_then(Option::as_ref) else {
            return false;
        };
        if c.reset {
            self.peers[i].done = true;
            self.close_handle(h, false);
            return true;
        }
        if self.sock(h).is_some_and(|s| s.state != State::Connected) {
            return false;
        }
        let cid = c.id;
        let avail = c.pipes[1 - side].rcv.len();
        let eof = c.pipes[1 - side].eof();
        let mut progress = false;
        // Read.
        let fast = p.fast_at.is_some_and(|t| t <= now);
        let want = match model {
            PeerModel::SlowReader(_) if fast => avail,
            PeerModel::SlowReader(b) => {
                if p.next_tick.is_some() {
                    0
                } else {
                    b as usize
                }
            }
            PeerModel::Echo | PeerModel::SpeaksFirst(_) => {
                let free = c.pipes[side].snd_free();
                avail.min(free.saturating_sub(p.echo.len()))
            }
            _ => avail,
        };
        let n = want.min(avail);
        if n > 0 {
            let echoed: Vec<u8> = if matches!(model, PeerModel::Echo | PeerModel::SpeaksFirst(_)) {
                c.pipes[1 - side].rcv.iter().take(n).copied().collect()
            } else {
                Vec::new()
            };
            let _ = self.consume_handle(h, n);
            let p = &mut self.peers[i];
            p.read += n as u64;
            p.echo.extend(echoed);
            if let (PeerModel::SlowReader(_), false) = (model, fast) {
                p.next_tick = Some(now + 1_000_000);
            }
            progress = true;
        }
        if let PeerModel::ResetAfter(limit) = model {
            if self.peers[i].read >= limit {
                self.peers[i].done = true;
                self.notes.push(format!(
                    "conn#{cid}: peer resets after {} bytes",
                    self.peers[i].read
                ));
                self.close_handle(h, true);
                return true;
            }
        }
        // Write what the model owes.
        let owed = self.peers[i].to_write + self.peers[i].echo.len() as u64;
        if owed > 0 {
            let (ci2, side2) = (ci, side);
            let written = self
                .conns
                .get(ci2)
                .and_then(Option::as_ref)
                .map_or(0, |c| c.pipes[side2].log.len() as u64);
            let free = self
                .conns
                .get(ci2)
                .and_then(Option::as_ref)
                .map_or(0, |c| c.pipes[side2].snd_free()) as u64;
            let n = owed.min(free).min(1 << 20);
            if n > 0 {
                let p = &self.peers[i];
                let src = p.to_write.min(n);
                let mut data: Vec<u8> = (0..src)
                    .map(|k| pattern(cid, side2 as u8, written + k))
                    .collect();
                data.extend(p.echo.iter().take((n - src) as usize));
                if let Ok(w) = self.send_handle(h, &data) {
                    let p = &mut self.peers[i];
                    let w = w as u64;
                    let from_src = w.min(p.to_write);
                    p.to_write -= from_src;
                    let from_echo = ((w - from_src) as usize).min(p.echo.len());
                    p.echo.drain(..from_echo);
                    progress = true;
                }
            }
        }
        // Finish: shut down once everything owed is written, close at EOF.
        let p = &self.peers[i];
        let owes = p.to_write > 0 || !p.echo.is_empty();
        let shut = self.sock(h).is_some_and(|s| s.shut_wr);
        if !owes && !shut && matches!(model, PeerModel::Source(_)) {
            let _ = self.shutdown_handle(h);
            progress = true;
        }
        let left = self
            .conns
            .get(ci)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.pipes[1 - side].rcv.len());
        if eof && left == 0 && !owes {
            self.peers[i].done = true;
            self.notes
                .push(format!("conn#{cid}: peer closes after EOF"));
            self.close_handle(h, false);
            return true;
        }
        progress
    }

    // --- the host application ---------------------------------------------------

    fn app_handle(&self, fd: i32) -> Result<usize, Errno> {
        self.by_fd.get(&fd).copied().ok_or(Errno::EBADF)
    }

    fn next_fd(&self) -> i32 {
        let mut fd = 3;
        while self.by_fd.contains_key(&fd) {
            fd += 1;
        }
        fd
    }

    /// `socket()` by the application; returns the fd.
    pub fn app_socket(&mut self, stream: bool, family: Family) -> i32 {
        self.app_socket_in(stream, family, Netns::Host)
    }

    /// `socket()` by an application in `netns` (pasta's guest namespace
    /// has applications too); returns the fd.
    pub fn app_socket_in(&mut self, stream: bool, family: Family, netns: Netns) -> i32 {
        let fd = self.next_fd();
        let kind = if stream { Kind::Stream } else { Kind::Udp };
        let h = self.new_sock(Owner::App(fd), kind, family, netns);
        self.by_fd.insert(fd, h);
        fd
    }

    /// `bind()` by the application.
    pub fn app_bind(&mut self, fd: i32, addr: SocketAddr) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.bind_handle(h, addr, true)
    }

    /// `listen()` by the application.
    pub fn app_listen(&mut self, fd: i32, backlog: u32) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.listen_handle(h, backlog)
    }

    /// `accept()` by the application; EAGAIN if nothing is pending.
    pub fn app_accept(&mut self, fd: i32) -> Result<i32, Errno> {
        let l = self.app_handle(fd)?;
        let Some(h) = self.sock_mut(l).and_then(|s| s.backlog.pop_front()) else {
            return err(Errno::EAGAIN);
        };
        let nfd = self.next_fd();
        if let Some(s) = self.sock_mut(h) {
            s.owner = Owner::App(nfd);
        }
        self.by_fd.insert(nfd, h);
        self.mutations += 1;
        Ok(nfd)
    }

    /// A blocking `connect()` by the application to a listener of the core in
    /// namespace `netns`.
    pub fn app_connect(&mut self, fd: i32, addr: SocketAddr, netns: Netns) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        let family = self.sock(h).map_or(Family::V4, |s| s.family);
        let Some(l) = self.find_listener(netns, addr, true) else {
            return err(Errno::ECONNREFUSED);
        };
        if self
            .sock(l)
            .is_some_and(|s| s.backlog.len() >= s.backlog_max)
        {
            return err(Errno::ECONNREFUSED);
        }
        let pending = self.new_sock(Owner::Pending, Kind::Stream, family, netns);
        let local = self
            .sock(h)
            .and_then(|s| s.local)
            .unwrap_or(SocketAddr::new(
                if family == Family::V4 {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))
                } else {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99))
                },
                (50000 + fd as u32 % 10000) as u16,
            ));
        if let Some(s) = self.sock_mut(h) {
            s.local = Some(local);
            s.remote = Some(addr);
        }
        if let Some(s) = self.sock_mut(pending) {
            s.local = Some(addr);
            s.remote = Some(local);
        }
        self.make_conn(pending, h);
        if let Some(s) = self.sock_mut(l) {
            s.backlog.push_back(pending);
            s.gen += 1;
        }
        Ok(())
    }

    /// A peer model on the host connects to a listener of the core.
    pub fn peer_connect(
        &mut self,
        addr: SocketAddr,
        model: PeerModel,
        netns: Netns,
    ) -> Result<(), Errno> {
        let family = if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let fd = self.app_socket(true, family);
        let r = self.app_connect(fd, addr, netns);
        let h = self.by_fd.remove(&fd).ok_or(Errno::EBADF)?;
        if let Err(e) = r {
            self.close_handle(h, false);
            return Err(e);
        }
        let to_write = match model {
            PeerModel::Source(n) | PeerModel::SpeaksFirst(n) => n,
            _ => 0,
        };
        let idx = self.peers.len();
        if let Some(s) = self.sock_mut(h) {
            s.owner = Owner::Peer(idx);
        }
        self.peers.push(Peer {
            model,
            sock: h,
            read: 0,
            to_write,
            echo: VecDeque::new(),
            done: false,
            next_tick: None,
            fast_at: None,
        });
        self.notes
            .push(format!("peer ({model}) connects to {addr}"));
        Ok(())
    }

    /// `write()` of `n` pattern bytes by the application.
    pub fn app_write(&mut self, fd: i32, n: usize) -> Result<usize, Errno> {
        let h = self.app_handle(fd)?;
        let (ci, side) = self.conn_side(h)?;
        let (cid, off) = self
            .conns
            .get(ci)
            .and_then(Option::as_ref)
            .map_or((0, 0), |c| (c.id, c.pipes[side].log.len() as u64));
        let data: Vec<u8> = (0..n as u64)
            .map(|k| pattern(cid, side as u8, off + k))
            .collect();
        self.send_handle(h, &data)
    }

    /// `read()` of at most `n` bytes by the application; 0 at end of stream.
    pub fn app_read(&mut self, fd: i32, n: usize) -> Result<usize, Errno> {
        let h = self.app_handle(fd)?;
        let (ci, side) = self.conn_side(h)?;
        if let Some(e) = self.take_err(ci, side) {
            return Err(e);
        }
        let c = self
            .conns
            .get(ci)
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)?;
        let p = &c.pipes[1 - side];
        if p.rcv.is_empty() {
            return if p.eof() || c.reset {
                Ok(0)
            } else {
                err(Errno::EAGAIN)
            };
        }
        self.consume_handle(h, n)
    }

    /// `shutdown(SHUT_WR)` by the application.
    pub fn app_shutdown(&mut self, fd: i32) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.shutdown_handle(h)
    }

    /// `close()` by the application.
    pub fn app_close(&mut self, fd: i32) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.by_fd.remove(&fd);
        self.close_handle(h, false);
        Ok(())
    }

    /// SO_RCVBUF / SO_SNDBUF by the application.
    pub fn app_setbuf(&mut self, fd: i32, snd: Option<u32>, rcv: Option<u32>) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.set_buf(h, snd, rcv)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn kernel_with(model: PeerModel) -> Kernel {
        let mut cfg = KernelConfig::default();
        cfg.peers.push(PeerRule {
            addr: None,
            port: Some(80),
            spec: PeerSpec::new(model),
        });
        Kernel::new(cfg)
    }

    fn connected(k: &mut Kernel, id: u32, port: u16) -> SockId {
        let s = SockId(id);
        k.open(s, SockKind::TcpStream, Family::V4, Netns::Host)
            .unwrap();
        k.connect(s, SocketAddr::new([192, 0, 2, 1].into(), port), 0)
            .unwrap();
        let ev = k.advance(0);
        assert_eq!(ev, vec![(s, SockEvent::Connected(Ok(())))]);
        s
    }

    #[test]
    fn partial_writes_eagain_and_tcp_info() {
        let mut k = kernel_with(PeerModel::SlowReader(1000));
        k.cfg.rcvbuf = 4096;
        let s = connected(&mut k, 1, 80);
        // The peer's socket was made before the rcvbuf change: set it now.
        let big = vec![7u8; 100_000];
        let mut n = k.send(s, &big).unwrap();
        assert!(n > 0 && n < big.len(), "partial write: {n}");
        while let Ok(m) = k.send(s, &big) {
            n += m;
        }
        // A write is taken a buffer (at most half the send buffer) at a time
        // while the accounting has room for its start: one overshoot.
        assert_eq!(
            n,
            4096 + 16384 + 4096,
            "receive buffer, send buffer, one overshoot"
        );
        assert_eq!(k.send(s, &big), Err(Errno::EAGAIN));
        let info = k.tcp_info(s).unwrap();
        assert_eq!(info.sndbuf, 16384);
        assert_eq!(info.bytes_acked, 4096, "the peer's receive buffer");
        assert_eq!(info.queued as usize, queued_cost(n - 4096));
        assert!(!info.space().writable());
        // The slow reader drains 1000 bytes per ms.
        k.run_peers(0);
        let before = k.tcp_info(s).unwrap();
        for ms in 1..=50 {
            k.advance(ms * 1_000_000);
        }
        let after = k.tcp_info(s).unwrap();
        assert!(after.queued < before.queued);
        assert!(after.bytes_acked > before.bytes_acked);
        assert!(k.send(s, &big).is_ok());
    }

    #[test]
    fn peek_offset_and_consume() {
        let mut k = kernel_with(PeerModel::Source(10_000));
        let s = connected(&mut k, 1, 80);
        k.run_peers(0);
        k.set_peek_off(s, 0).unwrap();
        let a = k.peek(s, 0, 1000).unwrap();
        let b = k.peek(s, 0, 1000).unwrap();
        assert_eq!(a.len(), 1000);
        assert_eq!(b.len(), 1000);
        assert_ne!(a, b, "the peek offset advanced");
        assert_eq!(a[0], pattern(1, 1, 0));
        assert_eq!(b[0], pattern(1, 1, 1000));
        // Consuming 1500 moves the offset back to 500 past the new head.
        assert_eq!(k.consume(s, 1500).unwrap(), 1500);
        let c = k.peek(s, 0, 10).unwrap();
        assert_eq!(c[0], pattern(1, 1, 2000));
        // Without SO_PEEK_OFF, `skip` says where to start.
        let mut k2 = kernel_with(PeerModel::Source(100));
        let s2 = connected(&mut k2, 1, 80);
        k2.run_peers(0);
        assert_eq!(k2.peek(s2, 40, 1000).unwrap().len(), 60);
        assert_eq!(k2.peek(s2, 40, 1000).unwrap().len(), 60);
        // End of stream: the source shut down after its bytes.
        assert_eq!(k2.consume(s2, 100).unwrap(), 100);
        assert_eq!(k2.peek(s2, 0, 1000).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn echo_roundtrip_and_close() {
        let mut k = kernel_with(PeerModel::Echo);
        let s = connected(&mut k, 1, 80);
        k.set_interest(
            s,
            Interest {
                readable: true,
                read_hangup: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(k.send(s, b"hello").unwrap(), 5);
        k.run_peers(0);
        assert_eq!(k.peek(s, 0, 100).unwrap(), b"hello".to_vec());
        assert!(k.ready_events().contains(&(s, SockEvent::Readable)));
        k.consume(s, 5).unwrap();
        k.shutdown_write(s).unwrap();
        k.run_peers(0);
        // The echo peer saw EOF and closed: the core reads EOF and RDHUP.
        assert_eq!(k.peek(s, 0, 100).unwrap(), Vec::<u8>::new());
        let ev = k.ready_events();
        assert!(ev.contains(&(s, SockEvent::ReadHangUp)), "{ev:?}");
        assert!(ev.contains(&(s, SockEvent::HangUp)), "{ev:?}");
        k.close(s).unwrap();
        assert_eq!(k.core_sockets(), 0);
        let v = k.conn_views();
        assert_eq!(v.len(), 1);
        assert!(v[0].1.core_closed && v[0].1.host_closed && !v[0].1.reset);
        assert_eq!(v[0].1.from_core, b"hello");
    }

    #[test]
    fn refuse_timeout_unreachable_and_delay() {
        let mut cfg = KernelConfig::default();
        cfg.peers.push(PeerRule {
            addr: None,
            port: Some(1),
            spec: PeerSpec::new(PeerModel::Blackhole),
        });
        cfg.peers.push(PeerRule {
            addr: None,
            port: Some(2),
            spec: PeerSpec::new(PeerModel::Unreachable),
        });
        cfg.peers.push(PeerRule {
            addr: None,
            port: Some(3),
            spec: PeerSpec {
                connect_delay_ns: 5_000_000,
                ..PeerSpec::new(PeerModel::Sink)
            },
        });
        let mut k = Kernel::new(cfg);
        for (i, port) in [1u16, 2, 3, 4].iter().enumerate() {
            let s = SockId(i as u32);
            k.open(s, SockKind::TcpStream, Family::V4, Netns::Host)
                .unwrap();
            k.connect(s, SocketAddr::new([192, 0, 2, 1].into(), *port), 0)
                .unwrap();
        }
        let ev = k.advance(0);
        assert_eq!(
            ev,
            vec![
                (SockId(1), SockEvent::Connected(Err(Errno::EHOSTUNREACH))),
                (SockId(3), SockEvent::Connected(Err(Errno::ECONNREFUSED))),
            ]
        );
        assert_eq!(k.next_deadline(), Some(5_000_000));
        assert_eq!(
            k.advance(5_000_000),
            vec![(SockId(2), SockEvent::Connected(Ok(())))]
        );
        assert_eq!(
            k.advance(2_000_000_000),
            vec![(SockId(0), SockEvent::Connected(Err(Errno::ETIMEDOUT)))]
        );
        assert_eq!(k.send(SockId(2), b""), Ok(0));
    }

    #[test]
    fn reset_on_close_with_unread_data_and_reset_after() {
        let mut k = Kernel::new(KernelConfig::default());
        let lfd = k.app_socket(true, Family::V4);
        k.app_bind(lfd, sa("0.0.0.0:8080")).unwrap();
        k.app_listen(lfd, 4).unwrap();
        let s = SockId(9);
        k.open(s, SockKind::TcpStream, Family::V4, Netns::Host)
            .unwrap();
        k.connect(s, sa("192.0.2.1:8080"), 0).unwrap();
        assert_eq!(k.advance(0), vec![(s, SockEvent::Connected(Ok(())))]);
        let fd = k.app_accept(lfd).unwrap();
        assert_eq!(fd, 4);
        assert_eq!(k.app_accept(lfd), Err(Errno::EAGAIN));
        k.send(s, &[1; 1000]).unwrap();
        assert_eq!(k.app_read(fd, 100).unwrap(), 100);
        k.app_close(fd).unwrap();
        // 900 bytes unread: the core sees a reset.
        k.set_interest(
            s,
            Interest {
                readable: true,
                ..Default::default()
            },
        )
        .unwrap();
        let ev = k.ready_events();
        assert!(
            ev.contains(&(s, SockEvent::Error(Errno::ECONNRESET))),
            "{ev:?}"
        );
        assert_eq!(k.peek(s, 0, 10), Err(Errno::ECONNRESET));
        assert_eq!(k.send(s, b"x"), Err(Errno::EPIPE));
        assert!(k.conn_views()[0].1.reset);

        let mut k = kernel_with(PeerModel::ResetAfter(10));
        let s = connected(&mut k, 1, 80);
        k.send(s, &[0; 50]).unwrap();
        k.run_peers(0);
        assert_eq!(k.peek(s, 0, 10), Err(Errno::ECONNRESET));
    }

    #[test]
    fn half_close_and_app_side() {
        let mut k = Kernel::new(KernelConfig::default());
        let lfd = k.app_socket(true, Family::V4);
        k.app_bind(lfd, sa("0.0.0.0:8080")).unwrap();
        k.app_listen(lfd, 4).unwrap();
        let s = SockId(1);
        k.open(s, SockKind::TcpStream, Family::V4, Netns::Host)
            .unwrap();
        k.connect(s, sa("127.0.0.1:8080"), 0).unwrap();
        k.advance(0);
        let fd = k.app_accept(lfd).unwrap();
        k.shutdown_write(s).unwrap();
        assert_eq!(k.app_read(fd, 10), Ok(0), "EOF after the core's FIN");
        assert_eq!(
            k.app_write(fd, 300),
            Ok(300),
            "the other direction still works"
        );
        assert_eq!(k.peek(s, 0, 1000).unwrap().len(), 300);
        assert_eq!(k.send(s, b"x"), Err(Errno::EPIPE));
    }

    #[test]
    fn listeners_accept_and_emfile() {
        let cfg = KernelConfig {
            fd_limit: 2,
            ..Default::default()
        };
        let mut k = Kernel::new(cfg);
        let l = SockId(1);
        k.open(l, SockKind::TcpListener, Family::V4, Netns::Host)
            .unwrap();
        k.bind(l, sa("0.0.0.0:8080"), true).unwrap();
        k.listen(l, 128).unwrap();
        // Address in use for a second listener.
        k.open(SockId(2), SockKind::TcpListener, Family::V4, Netns::Host)
            .unwrap();
        assert_eq!(
            k.bind(SockId(2), sa("0.0.0.0:8080"), true),
            Err(Errno::EADDRINUSE)
        );
        assert_eq!(
            k.open(SockId(3), SockKind::Udp, Family::V4, Netns::Host),
            Err(Errno::EMFILE)
        );
        k.close(SockId(2)).unwrap();
        k.set_interest(
            l,
            Interest {
                readable: true,
                edge: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(k.ready_events(), vec![]);
        let fd = k.app_socket(true, Family::V4);
        k.app_connect(fd, sa("10.77.0.2:8080"), Netns::Host)
            .unwrap();
        assert_eq!(k.ready_events(), vec![(l, SockEvent::Readable)]);
        // Edge-triggered: not again until something changes.
        assert_eq!(k.ready_events(), vec![]);
        let (peer, local) = k.accept(l, SockId(4)).unwrap();
        assert_eq!(local, sa("10.77.0.2:8080"));
        assert_eq!(peer.port(), 50003);
        assert_eq!(k.accept(l, SockId(5)), Err(Errno::EAGAIN));
        assert_eq!(k.app_write(fd, 10), Ok(10));
        assert_eq!(k.peek(SockId(4), 0, 100).unwrap().len(), 10);
        let fd2 = k.app_socket(true, Family::V4);
        assert_eq!(
            k.app_connect(fd2, sa("10.77.0.2:9999"), Netns::Host),
            Err(Errno::ECONNREFUSED)
        );
        // A third connection is pending; accepting it hits the fd limit.
        k.app_connect(fd2, sa("10.77.0.2:8080"), Netns::Host)
            .unwrap();
        assert_eq!(k.accept(l, SockId(6)), Err(Errno::EMFILE));
        k.close(l).unwrap();
        k.close(SockId(4)).unwrap();
        assert_eq!(k.core_sockets(), 0);
    }

    #[test]
    fn buffer_sizes_set_the_payload_capacity() {
        let mut k = kernel_with(PeerModel::SlowReader(0));
        let s = connected(&mut k, 1, 80);
        k.set_sndbuf(s, 5000).unwrap();
        k.set_rcvbuf(s, 7000).unwrap();
        let info = k.tcp_info(s).unwrap();
        // Linux doubles SO_SNDBUF for its accounting.
        assert_eq!(info.sndbuf, 10000);
        // The peer's receive buffer (default 131072) fills first, then ours
        // (a buffer at a time).
        let mut n = 0;
        while let Ok(m) = k.send(s, &[0; 65536]) {
            n += m;
        }
        let info = k.tcp_info(s).unwrap();
        assert!(n > 131072 + 10000, "{n}");
        assert!(info.queued >= info.sndbuf, "{info:?}");
        assert_eq!(k.tcp_info(s).unwrap().snd_wnd, 0);
        assert_eq!(k.set_sndbuf(SockId(77), 1), Err(Errno::EBADF));
    }

    #[test]
    fn peer_connects_to_a_core_listener() {
        let mut k = Kernel::new(KernelConfig::default());
        let l = SockId(1);
        k.open(l, SockKind::TcpListener, Family::V6, Netns::Host)
            .unwrap();
        k.bind(l, sa("[::]:8080"), true).unwrap();
        k.listen(l, 128).unwrap();
        assert_eq!(
            k.peer_connect(sa("10.77.0.2:9"), PeerModel::Sink, Netns::Host),
            Err(Errno::ECONNREFUSED)
        );
        k.peer_connect(sa("10.77.0.2:8080"), PeerModel::Source(5000), Netns::Host)
            .unwrap();
        assert_eq!(
            k.app_sockets(),
            0,
            "the peer's socket is not the application's"
        );
        let (_, local) = k.accept(l, SockId(2)).unwrap();
        assert_eq!(local, sa("10.77.0.2:8080"));
        k.run_peers(0);
        assert_eq!(k.peek(SockId(2), 0, 10_000).unwrap().len(), 5000);
    }

    #[test]
    fn level_triggered_repeats_edge_does_not() {
        let mut k = kernel_with(PeerModel::Source(10));
        let s = connected(&mut k, 1, 80);
        k.run_peers(0);
        k.set_interest(
            s,
            Interest {
                readable: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(k.ready_events(), vec![(s, SockEvent::Readable)]);
        assert_eq!(k.ready_events(), vec![(s, SockEvent::Readable)]);
        k.set_interest(
            s,
            Interest {
                readable: true,
                edge: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(k.ready_events(), vec![(s, SockEvent::Readable)]);
        assert_eq!(k.ready_events(), vec![]);
    }

    #[test]
    fn udp_and_ping_echo() {
        let mut cfg = KernelConfig::default();
        cfg.peers.push(PeerRule {
            addr: None,
            port: Some(53),
            spec: PeerSpec::new(PeerModel::Echo),
        });
        let mut k = Kernel::new(cfg);
        let u = SockId(1);
        k.open(u, SockKind::Udp, Family::V4, Netns::Host).unwrap();
        k.connect(u, sa("192.0.2.1:53"), 0).unwrap();
        assert_eq!(k.send_datagrams(u, &[b"a", b"bc"], None), Ok(2));
        let readable = Interest {
            readable: true,
            ..Default::default()
        };
        k.set_interest(u, readable).unwrap();
        assert_eq!(k.ready_events(), vec![(u, SockEvent::Readable)]);
        let got = k.recv_datagrams(u, 10).unwrap();
        assert_eq!(
            got,
            vec![
                (sa("192.0.2.1:53"), b"a".to_vec()),
                (sa("192.0.2.1:53"), b"bc".to_vec())
            ]
        );
        assert_eq!(k.recv_datagrams(u, 10).unwrap(), vec![]);
        // Unconnected, to a refusing port: one error from the error queue.
        let v = SockId(3);
        k.open(v, SockKind::Udp, Family::V4, Netns::Host).unwrap();
        k.set_interest(v, readable).unwrap();
        assert_eq!(k.send_datagrams(v, &[b"q"], Some(sa("192.0.2.1:9"))), Ok(1));
        assert_eq!(
            k.ready_events(),
            vec![(v, SockEvent::Error(Errno::ECONNREFUSED))]
        );
        assert_eq!(k.ready_events(), vec![]);
        // Ping sockets: no destination, no send; a request gets its reply.
        let p = SockId(2);
        k.open(p, SockKind::Ping, Family::V6, Netns::Host).unwrap();
        assert_eq!(k.send_datagrams(p, &[b"x"], None), Err(Errno::EPERM));
        let p4 = SockId(4);
        k.open(p4, SockKind::Ping, Family::V4, Netns::Host).unwrap();
        let req = [8u8, 0, 0, 0, 0, 1, 0, 2, 0xaa, 0xbb];
        assert_eq!(
            k.send_datagrams(p4, &[&req], Some(sa("192.0.2.7:0"))),
            Ok(1)
        );
        let got = k.recv_datagrams(p4, 1).unwrap();
        assert_eq!(got[0].1[0], 0, "an echo reply");
        let kid = u16::from_be_bytes([got[0].1[4], got[0].1[5]]);
        assert_ne!(kid, 1, "the kernel's identifier, not the request's");
        assert!(kid & 0x8000 != 0);
        assert_eq!(&got[0].1[6..], &req[6..]);
        // Bound to a port: that port is the identifier.
        let p5 = SockId(5);
        k.open(p5, SockKind::Ping, Family::V4, Netns::Host).unwrap();
        k.bind(p5, sa("0.0.0.0:4321"), false).unwrap();
        k.send_datagrams(p5, &[&req], Some(sa("192.0.2.7:0")))
            .unwrap();
        let got = k.recv_datagrams(p5, 1).unwrap();
        assert_eq!(&got[0].1[4..6], &4321u16.to_be_bytes());
        assert_eq!(k.recv_datagrams(SockId(9), 1), Err(Errno::EBADF));
        assert_eq!(
            PeerModel::parse(&["slow", "10"]),
            Ok(PeerModel::SlowReader(10))
        );
        assert!(PeerModel::parse(&["slow"]).is_err());
        assert!(PeerModel::parse(&["nope"]).is_err());
    }
}
