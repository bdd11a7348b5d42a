//! Host peer models: how a peer behaves (sink, source, echo, slow reader, …),
//! the rules that pick one by address, and the steps they take on their socket.

use super::*;

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
            PeerModel::Sink => f.write_str("sink"),
            PeerModel::Source(n) => write!(f, "source {n}"),
            PeerModel::Echo => f.write_str("echo"),
            PeerModel::Refuse => f.write_str("refuse"),
            PeerModel::Blackhole => f.write_str("blackhole"),
            PeerModel::Unreachable => f.write_str("unreachable"),
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
    pub(super) fn matches(&self, a: SocketAddr) -> bool {
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
pub(super) fn echo_reply(req: &[u8], v4: bool) -> Option<Vec<u8>> {
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
pub(super) fn ping_id(h: usize) -> u16 {
    0x8000 | (h % 0x7fff + 1) as u16
}
#[derive(Debug)]
pub(super) struct Peer {
    model: PeerModel,
    sock: usize,
    read: u64,
    to_write: u64,
    echo: VecDeque<u8>,
    pub(super) next_tick: Option<u64>,
    /// A slow reader reads everything from this time on.
    pub(super) fast_at: Option<u64>,
    done: bool,
}

impl Peer {
    /// The peer of socket `sock`, answering as `model` (a slow reader
    /// speeds up at `fast_at`).
    pub(super) fn new(model: PeerModel, sock: usize, fast_at: Option<u64>) -> Peer {
        let to_write = match model {
            PeerModel::Source(n) | PeerModel::SpeaksFirst(n) => n,
            _ => 0,
        };
        Peer {
            model,
            sock,
            read: 0,
            to_write,
            echo: VecDeque::new(),
            next_tick: None,
            fast_at,
            done: false,
        }
    }
}

impl Kernel {
    /// Lets every peer model act on its socket.
    pub fn run_peers(&mut self, now: u64) {
        self.set_now(now);
        self.peers_busy = false;
        for i in 0..self.peers.len() {
            // A few rounds: reading frees room the writer may use. A peer
            // busy after them goes on in the next step at this instant, as
            // a real reader keeps reading while data comes in.
            let mut rounds = 0;
            while self.peer_step(i, now) {
                rounds += 1;
                if rounds == 4 {
                    self.peers_busy = true;
                    break;
                }
            }
        }
    }

    // Long by design: one arm per peer model (sink, source, echo, slow reader, …) acting on
    // the same socket state.
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
}
