//! Closed-loop replay of captures.
//!
//! A capture of the guest side ([`capture`]) becomes a [`plan::Plan`]: per
//! TCP connection, the application steps of the guest and of the host
//! application (bytes written after bytes received, with the recorded
//! thinking in between), and per UDP or ping exchange the guest's datagrams.
//! The plan is written as `sim replay` directives of an ordinary scenario.
//!
//! In a run, [`Replay`] plays both ends against the core: the guest through
//! a TCP model ([`tcp`]) that reacts to every segment the core sends, the
//! host through the simulated kernel's application interface ([`host`]).
//! What it measures per connection ([`ConnReport`]): bytes delivered each
//! way, completion time in virtual time, stalls (intervals with something
//! to deliver and no progress longer than the plan's threshold) and
//! retransmissions on both sides.

pub mod capture;
pub mod host;
pub mod plan;
pub mod tcp;
pub mod wire;

use crate::frame::{self, MacAddr};
use crate::kernel::Kernel;
use host::HostEnd;
use passt_core::{Errno, Family, Netns};
use plan::{Act, DgramKind, Plan, Side, TcpPlan};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tcp::{TcpModel, TcpOpts, TcpState};

/// Bytes of each frame a replay run keeps for its pcap: Ethernet, IPv6
/// and TCP with options.
pub const WIRE_SNAPLEN: usize = 128;
/// Datagram exchanges are over this long after their last datagram.
const DGRAM_WAIT_NS: u64 = 1_000_000_000;

fn si(s: Side) -> usize {
    match s {
        Side::Guest => 0,
        Side::Host => 1,
    }
}

/// One replayed TCP connection while it runs.
#[derive(Debug)]
struct ConnRun {
    started: Option<u64>,
    guest: Option<TcpModel>,
    host: HostEnd,
    /// Indices into the plan's steps, per side.
    steps: [Vec<usize>; 2],
    next: [usize; 2],
    /// When the next step's dependency was met.
    dep_t: [Option<u64>; 2],
    /// When the previous step ended.
    prev_end: [u64; 2],
    /// A write in progress: the total it ends at.
    writing: [Option<u64>; 2],
    host_est: Option<u64>,
    /// Due to start, but waiting for an earlier connection.
    blocked: bool,
    wake: Option<u64>,
    done_at: Option<u64>,
    failed: Option<String>,
    last_progress: u64,
    pending_since: Option<u64>,
    progress_key: (u64, u64, u64, u8),
    stalls: Vec<(u64, u64)>,
}

/// One replayed UDP or ping exchange while it runs.
#[derive(Debug, Default)]
struct DgramRun {
    started: Option<u64>,
    next: usize,
    sent: u64,
    replies: u64,
    dep_t: Option<u64>,
    last_t: u64,
    last_reply: Option<u64>,
    wake: Option<u64>,
}

/// A closed-loop replay in a simulator run.
#[derive(Debug)]
pub struct Replay {
    /// What to replay.
    pub plan: Plan,
    /// When it started (virtual ns), once `sim replay start` came.
    pub started: Option<u64>,
    guest_mac: MacAddr,
    our_mac: MacAddr,
    conns: Vec<ConnRun>,
    dgrams: Vec<DgramRun>,
    listeners: BTreeMap<u16, Result<i32, Errno>>,
    outq: VecDeque<(u64, Vec<u8>)>,
    notes: Vec<String>,
}

impl Replay {
    /// A replay of nothing yet; directives add to its plan.
    pub fn new(guest_mac: MacAddr, our_mac: MacAddr) -> Self {
        Replay {
            plan: Plan::default(),
            started: None,
            guest_mac,
            our_mac,
            conns: Vec::new(),
            dgrams: Vec::new(),
            listeners: BTreeMap::new(),
            outq: VecDeque::new(),
            notes: Vec::new(),
        }
    }

    /// Starts the plan at `now`.
    pub fn start(&mut self, now: u64) -> Result<(), String> {
        if self.started.is_some() {
            return Err("replay: started twice".into());
        }
        for c in &self.plan.tcp {
            if !c
                .steps
                .iter()
                .any(|s| s.side == Side::Guest && s.act == Act::Close)
                || !c
                    .steps
                    .iter()
                    .any(|s| s.side == Side::Host && s.act == Act::Close)
            {
                return Err(format!(
                    "replay: connection {} needs a close step on both sides",
                    c.id
                ));
            }
        }
        self.started = Some(now);
        self.conns = self
            .plan
            .tcp
            .iter()
            .map(|c| {
                let mut steps = [Vec::new(), Vec::new()];
                for (i, s) in c.steps.iter().enumerate() {
                    steps[si(s.side)].push(i);
                }
                ConnRun {
                    started: None,
                    guest: None,
                    host: HostEnd::new(c.read_rate),
                    steps,
                    next: [0, 0],
                    dep_t: [None, None],
                    prev_end: [0, 0],
                    writing: [None, None],
                    host_est: None,
                    blocked: false,
                    wake: None,
                    done_at: None,
                    failed: None,
                    last_progress: 0,
                    pending_since: None,
                    progress_key: (0, 0, 0, 0),
                    stalls: Vec::new(),
                }
            })
            .collect();
        self.dgrams = self
            .plan
            .dgram
            .iter()
            .map(|_| DgramRun::default())
            .collect();
        self.notes.push(format!(
            "replay: {} TCP connections, {} datagram exchanges",
            self.plan.tcp.len(),
            self.plan.dgram.len()
        ));
        Ok(())
    }

    /// Timeline lines since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// When the replay next wants to run.
    pub fn deadline(&self) -> Option<u64> {
        let t0 = self.started?;
        let mut d: Vec<u64> = Vec::new();
        for (c, p) in self.conns.iter().zip(&self.plan.tcp) {
            d.extend(c.guest.as_ref().and_then(TcpModel::deadline));
            if c.done_at.is_some() || c.failed.is_some() {
                continue;
            }
            if c.started.is_none() && !c.blocked {
                d.push(t0 + p.at_ns);
            }
            d.extend(c.wake);
            if !c.host.closed {
                d.extend(c.host.wake_at);
            }
        }
        for (r, p) in self.dgrams.iter().zip(&self.plan.dgram) {
            if r.started.is_none() {
                d.push(t0 + p.at_ns);
            }
            d.extend(r.wake);
        }
        d.extend(self.outq.front().map(|f| f.0));
        d.into_iter().min()
    }

    /// A frame that reached the guest: taken if it belongs to a replayed
    /// connection or exchange.
    pub fn on_frame(&mut self, now: u64, f: &[u8]) -> bool {
        self.started.is_some() && (self.on_tcp(now, f) || self.on_dgram(now, f))
    }

    fn on_tcp(&mut self, now: u64, f: &[u8]) -> bool {
        let Some(t) = frame::parse_tcp(f) else {
            return false;
        };
        if frame::check_frame(f, usize::MAX).is_err() {
            return false;
        }
        // A connection already talking to this remote first, then one
        // listening.
        let pos = self
            .conns
            .iter()
            .position(|c| {
                c.guest
                    .as_ref()
                    .is_some_and(|g| g.remote == Some(t.src) && g.local == t.dst)
            })
            .or_else(|| {
                self.conns
                    .iter()
                    .position(|c| c.guest.as_ref().is_some_and(|g| g.claims(&t)))
            });
        let Some(i) = pos else { return false };
        if let Some(g) = self.conns[i].guest.as_mut() {
            g.on_segment(now, &t);
        }
        true
    }

    fn on_dgram(&mut self, now: u64, f: &[u8]) -> bool {
        let Some(p) = wire::parse(0, f) else {
            return false;
        };
        for (r, d) in self.dgrams.iter_mut().zip(&self.plan.dgram) {
            let mine = match (d.kind, p.l4) {
                (DgramKind::Udp, wire::L4::Udp { .. }) => {
                    p.dst.port() == d.guest.port()
                        && p.src.port() == d.remote.port()
                        && p.dst.is_ipv4() == d.guest.is_ipv4()
                }
                (
                    DgramKind::Ping(id),
                    wire::L4::Echo {
                        request: false,
                        id: got,
                        ..
                    },
                ) => got == id && p.dst.ip() == d.guest.ip(),
                _ => false,
            };
            if mine && r.started.is_some() {
                r.replies += 1;
                r.last_reply = Some(now);
                return true;
            }
        }
        false
    }

    /// Runs what is due at `now`: starts connections, takes steps, runs the
    /// guest's timers and the host application. Frames for the core go to
    /// `out`; returns whether the kernel's state was touched.
    pub fn poll(&mut self, now: u64, k: &mut Kernel, out: &mut Vec<Vec<u8>>) -> bool {
        let Some(t0) = self.started else { return false };
        let mut touched = false;
        // Listeners for the connections the guest opens, one per port.
        for i in 0..self.conns.len() {
            let p = &self.plan.tcp[i];
            if p.opener == Side::Guest && !self.listeners.contains_key(&p.remote.port()) {
                let port = p.remote.port();
                let fam = if p.remote.is_ipv4() {
                    Family::V4
                } else {
                    Family::V6
                };
                let fd = k.app_socket(true, fam);
                let any = SocketAddr::new(
                    if p.remote.is_ipv4() {
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                    },
                    port,
                );
                let r = k
                    .app_bind(fd, any)
                    .and_then(|()| k.app_listen(fd, 128))
                    .map(|()| fd);
                if let Err(e) = r {
                    let _ = k.app_close(fd);
                    self.notes
                        .push(format!("replay: host listener on port {port}: {e:?}"));
                }
                self.listeners.insert(port, r);
                touched = true;
            }
        }
        // Accepted connections go, in order, to the connections that
        // started towards that port.
        for (&port, l) in &self.listeners {
            let Ok(lfd) = l else { continue };
            while let Ok(fd) = k.app_accept(*lfd) {
                touched = true;
                let slot = self.conns.iter_mut().zip(&self.plan.tcp).find(|(c, p)| {
                    p.opener == Side::Guest
                        && p.remote.port() == port
                        && c.started.is_some()
                        && c.host.fd.is_none()
                        && c.host.closed == c.host.reset
                });
                match slot {
                    Some((c, p)) => {
                        c.host.fd = Some(fd);
                        c.host_est = Some(now);
                        self.notes.push(format!("replay {}: host accepted", p.id));
                    }
                    None => {
                        let _ = k.app_close(fd);
                        self.notes.push(format!(
                            "replay: host listener on port {port}: unexpected connection closed"
                        ));
                    }
                }
            }
        }
        for i in 0..self.conns.len() {
            touched |= self.poll_conn(i, now, t0, k, out);
        }
        // A listener goes once every connection to its port is over.
        for (&port, l) in &mut self.listeners {
            let over = self.conns.iter().zip(&self.plan.tcp).all(|(c, p)| {
                p.opener != Side::Guest
                    || p.remote.port() != port
                    || c.done_at.is_some()
                    || c.failed.is_some()
            });
            if let (true, Ok(fd)) = (over, *l) {
                let _ = k.app_close(fd);
                *l = Err(Errno::EBADF);
                touched = true;
            }
        }
        for i in 0..self.dgrams.len() {
            self.poll_dgram(i, now, t0);
        }
        while self.outq.front().is_some_and(|f| f.0 <= now) {
            if let Some((_, f)) = self.outq.pop_front() {
                out.push(f);
            }
        }
        touched
    }

    fn opts(&self, p: &TcpPlan) -> TcpOpts {
        TcpOpts {
            mss: p.mss,
            wscale: p.wscale,
            sack: p.sack,
            rcvbuf: p.rcvbuf,
            delay: self.plan.delay_ns,
            seed: u64::from(p.id),
        }
    }

    fn start_conn(&mut self, i: usize, now: u64, k: &mut Kernel) -> bool {
        let p = self.plan.tcp[i].clone();
        // Connections to one port are opened one after the other, so that
        // the host tells them apart by the order they arrive in.
        let port_of = |q: &TcpPlan| match q.opener {
            Side::Guest => (Side::Guest, q.remote.port()),
            Side::Host => (Side::Host, q.guest.port()),
        };
        let busy = self.conns.iter().zip(&self.plan.tcp).take(i).any(|(c, q)| {
            port_of(q) == port_of(&p)
                && c.done_at.is_none()
                && c.failed.is_none()
                && (c.started.is_none()
                    || c.guest
                        .as_ref()
                        .is_none_or(|g| g.established_at.is_none() && g.state != TcpState::Reset))
        });
        if busy {
            return false;
        }
        let o = self.opts(&p);
        let c = &mut self.conns[i];
        c.started = Some(now);
        c.blocked = false;
        c.last_progress = now;
        self.notes.push(format!(
            "replay {}: {} opens {} > {}",
            p.id, p.opener, p.guest, p.remote
        ));
        match p.opener {
            Side::Guest => {
                c.guest = Some(TcpModel::connect(
                    now,
                    p.guest,
                    p.remote,
                    self.guest_mac,
                    self.our_mac,
                    o,
                ));
                false
            }
            Side::Host => {
                c.guest = Some(TcpModel::listen(p.guest, self.guest_mac, self.our_mac, o));
                let (fam, lo) = if p.guest.is_ipv4() {
                    (Family::V4, IpAddr::V4(Ipv4Addr::LOCALHOST))
                } else {
                    (Family::V6, IpAddr::V6(Ipv6Addr::LOCALHOST))
                };
                let fd = k.app_socket(true, fam);
                // From the recorded port on loopback, as the original client
                // (the core shows loopback as the gateway).
                let _ = k.app_bind(fd, SocketAddr::new(lo, p.remote.port()));
                match k.app_connect(fd, SocketAddr::new(lo, p.guest.port()), Netns::Host) {
                    Ok(()) => {
                        c.host.fd = Some(fd);
                        c.host_est = Some(now);
                    }
                    Err(e) => {
                        let _ = k.app_close(fd);
                        c.failed = Some(format!(
                            "the host's connect failed: {e:?} (port {} not forwarded?)",
                            p.guest.port()
                        ));
                        self.notes
                            .push(format!("replay {}: host connect: {e:?}", p.id));
                    }
                }
                true
            }
        }
    }

    fn poll_conn(
        &mut self,
        i: usize,
        now: u64,
        t0: u64,
        k: &mut Kernel,
        out: &mut Vec<Vec<u8>>,
    ) -> bool {
        let mut touched = false;
        if self.conns[i].done_at.is_some() || self.conns[i].failed.is_some() {
            // Keep answering: the core may send its FIN or data again.
            if let Some(g) = self.conns[i].guest.as_mut() {
                g.on_timer(now);
                g.take_frames(now, out);
            }
            return false;
        }
        if self.conns[i].started.is_none() {
            if now < t0 + self.plan.tcp[i].at_ns {
                return touched;
            }
            touched |= self.start_conn(i, now, k);
            if self.conns[i].started.is_none() {
                // Waits for an earlier connection to the same port: its
                // progress wakes us.
                self.conns[i].blocked = true;
                return touched;
            }
        }
        let p = &self.plan.tcp[i];
        let c = &mut self.conns[i];
        c.wake = None;
        for _round in 0..4 {
            let mut acted = false;
            for side in [Side::Guest, Side::Host] {
                acted |= step_side(c, p, side, now, &mut self.notes);
            }
            let did = c.host.poll(now, k);
            touched |= did;
            acted |= did;
            // Writes in progress end once all their bytes went out.
            for side in [Side::Guest, Side::Host] {
                let s = si(side);
                if let Some(target) = c.writing[s] {
                    let sent = match side {
                        Side::Guest => c.guest.as_ref().map_or(0, TcpModel::sent),
                        Side::Host => c.host.written,
                    };
                    if sent >= target {
                        c.writing[s] = None;
                        c.prev_end[s] = now;
                        acted = true;
                    }
                }
            }
            if !acted {
                break;
            }
        }
        if let Some(g) = c.guest.as_mut() {
            g.on_timer(now);
            g.take_frames(now, out);
        }
        // Progress and stalls.
        let (g_acked, g_rcvd, g_fins) = c.guest.as_ref().map_or((0, 0, 0), |g| {
            (
                g.acked(),
                g.received(),
                u8::from(g.fin_acked())
                    + 2 * u8::from(g.peer_fin())
                    + 4 * u8::from(g.established_at.is_some()),
            )
        });
        let key = (
            g_acked,
            g_rcvd,
            c.host.read,
            g_fins + 8 * u8::from(c.host.eof),
        );
        let pending = c.guest.as_ref().is_some_and(|g| {
            g.established_at.is_none()
                || g.sending()
                || c.host.written > g.received()
                || (c.host.shut && !g.peer_fin())
        }) || c.host.to_write > 0;
        if key != c.progress_key {
            c.progress_key = key;
            if let Some(ps) = c.pending_since {
                let from = ps.max(c.last_progress);
                if now - from > self.plan.stall_ns {
                    let start = c.started.unwrap_or(0);
                    c.stalls.push((from - start, now - from));
                    self.notes.push(format!(
                        "replay {}: stall of {} ms",
                        p.id,
                        plan::ms(now - from)
                    ));
                }
            }
            c.last_progress = now;
            c.pending_since = pending.then_some(now);
        } else if pending && c.pending_since.is_none() {
            c.pending_since = Some(now);
        } else if !pending {
            c.pending_since = None;
        }
        // The end.
        let all_steps = c.next[0] == c.steps[0].len() && c.next[1] == c.steps[1].len();
        let g_done = c.guest.as_ref().is_some_and(TcpModel::done);
        let g_reset = c.guest.as_ref().is_some_and(|g| g.state == TcpState::Reset);
        if (g_reset || c.host.reset) && !c.host.closed {
            if let Some(fd) = c.host.fd {
                let _ = k.app_close(fd);
                touched = true;
            }
            c.host.closed = true;
        }
        if (g_done && c.host.closed && all_steps) || g_reset || c.host.reset {
            c.done_at = Some(now);
            let start = c.started.unwrap_or(now);
            let how = if g_reset || c.host.reset {
                "reset"
            } else {
                "done"
            };
            self.notes.push(format!(
                "replay {}: {how} after {} ms",
                p.id,
                plan::ms(now - start)
            ));
        }
        touched
    }

    fn poll_dgram(&mut self, i: usize, now: u64, t0: u64) {
        let p = &self.plan.dgram[i];
        let r = &mut self.dgrams[i];
        r.wake = None;
        if r.started.is_none() {
            if now < t0 + p.at_ns {
                return;
            }
            r.started = Some(now);
            r.last_t = now;
        }
        while let Some(s) = p.steps.get(r.next) {
            if r.replies < s.after {
                r.dep_t = None;
                break;
            }
            let dep = *r.dep_t.get_or_insert(now);
            let base = if s.after > 0 {
                dep.max(r.last_t)
            } else {
                r.last_t
            };
            let due = base + s.think_ns;
            if now < due {
                r.wake = Some(due);
                break;
            }
            let len = s.act_len();
            let f = match p.kind {
                DgramKind::Udp => {
                    let payload: Vec<u8> = (0..len)
                        .map(|k| crate::kernel::pattern(u64::from(p.id), 8, k as u64))
                        .collect();
                    frame::udp_frame(self.guest_mac, self.our_mac, p.guest, p.remote, &payload)
                }
                DgramKind::Ping(id) => frame::echo_request(
                    self.guest_mac,
                    self.our_mac,
                    p.guest.ip(),
                    p.remote.ip(),
                    id,
                    s.seq.unwrap_or(r.next as u16 + 1),
                    len,
                ),
            };
            let at = (now + self.plan.delay_ns).max(self.outq.back().map_or(0, |f| f.0));
            self.outq.push_back((at, f));
            r.sent += 1;
            r.next += 1;
            r.dep_t = None;
            r.last_t = now;
        }
    }

    /// What happened, per connection, at `now`.
    pub fn report(&self, now: u64) -> Report {
        let mut conns = Vec::new();
        for (c, p) in self.conns.iter().zip(&self.plan.tcp) {
            let g = c.guest.as_ref();
            let bytes = [c.host.read, g.map_or(0, TcpModel::received)];
            let expected = [p.bytes(Side::Guest), p.bytes(Side::Host)];
            let mut stalls = c.stalls.clone();
            if let (Some(ps), None, Some(start)) = (c.pending_since, c.done_at, c.started) {
                let from = ps.max(c.last_progress);
                if now - from > self.plan.stall_ns {
                    stalls.push((from - start, now - from));
                }
            }
            let reset = g.is_some_and(|g| g.state == TcpState::Reset) || c.host.reset;
            let st = g.map(|g| g.stats).unwrap_or_default();
            conns.push(ConnReport {
                id: p.id,
                what: format!("tcp {} > {}", p.guest, p.remote),
                bytes,
                expected,
                complete: c.done_at.is_some() && !reset && bytes == expected,
                failed: c.failed.clone().or_else(|| {
                    reset.then(|| {
                        if g.is_some_and(|g| g.reset_by_peer) {
                            "reset by the core".to_string()
                        } else if c.host.reset {
                            "reset seen by the host".to_string()
                        } else {
                            "the guest gave up (retransmissions)".to_string()
                        }
                    })
                }),
                completion_ns: c.done_at.zip(c.started).map(|(d, s)| d - s),
                stalls,
                retransmits: st.retransmits,
                timeouts: st.timeouts,
                fast_retransmits: st.fast_retransmits,
                probes: st.probes,
                core_retransmits: st.dup_data_in,
                zero_windows: st.zero_windows_in,
                datagrams: None,
            });
        }
        for (r, p) in self.dgrams.iter().zip(&self.plan.dgram) {
            let n = p.steps.len() as u64;
            let finished =
                r.next == p.steps.len() && (r.replies >= n || now >= r.last_t + DGRAM_WAIT_NS);
            let end = r.last_reply.unwrap_or(r.last_t).max(r.last_t);
            conns.push(ConnReport {
                id: p.id,
                what: match p.kind {
                    DgramKind::Udp => format!("udp {} > {}", p.guest, p.remote),
                    DgramKind::Ping(id) => {
                        format!("ping {} > {} id {id}", p.guest.ip(), p.remote.ip())
                    }
                },
                bytes: [0, 0],
                expected: [0, 0],
                complete: finished && r.replies >= n,
                failed: None,
                completion_ns: (finished && r.replies >= n).then(|| end - r.started.unwrap_or(end)),
                stalls: Vec::new(),
                retransmits: 0,
                timeouts: 0,
                fast_retransmits: 0,
                probes: 0,
                core_retransmits: 0,
                zero_windows: 0,
                datagrams: Some((r.sent, r.replies, n)),
            });
        }
        conns.sort_by_key(|c| c.id);
        Report {
            stall_ns: self.plan.stall_ns,
            conns,
        }
    }
}

impl plan::Step {
    fn act_len(&self) -> usize {
        match self.act {
            Act::Send(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Act::Close => 0,
        }
    }
}

/// Takes the next steps of `side` that are due; returns whether it did.
fn step_side(c: &mut ConnRun, p: &TcpPlan, side: Side, now: u64, notes: &mut Vec<String>) -> bool {
    let s = si(side);
    let mut acted = false;
    loop {
        if c.writing[s].is_some() {
            break;
        }
        let Some(&idx) = c.steps[s].get(c.next[s]) else {
            break;
        };
        let step = p.steps[idx];
        let est = match side {
            Side::Guest => c.guest.as_ref().and_then(|g| g.established_at),
            Side::Host => c.host_est.filter(|_| c.host.fd.is_some()),
        };
        let Some(est) = est else { break };
        let (rcvd, fin) = match side {
            Side::Guest => c
                .guest
                .as_ref()
                .map_or((0, false), |g| (g.received(), g.peer_fin())),
            Side::Host => (c.host.read, c.host.eof),
        };
        if rcvd < step.after || (step.after_fin && !fin) {
            c.dep_t[s] = None;
            break;
        }
        let dep = *c.dep_t[s].get_or_insert(now);
        let dep = if step.after > 0 || step.after_fin {
            dep
        } else {
            0
        };
        let due = dep.max(c.prev_end[s]).max(est) + step.think_ns;
        if now < due {
            c.wake = Some(c.wake.map_or(due, |w| w.min(due)));
            break;
        }
        match (side, step.act) {
            (Side::Guest, Act::Send(n)) => {
                if let Some(g) = c.guest.as_mut() {
                    g.write(now, n);
                    c.writing[s] = Some(g.written());
                }
            }
            (Side::Guest, Act::Close) => {
                if let Some(g) = c.guest.as_mut() {
                    g.close(now);
                }
                c.prev_end[s] = now;
            }
            (Side::Host, Act::Send(n)) => {
                c.host.to_write += n;
                c.writing[s] = Some(c.host.written + c.host.to_write);
            }
            (Side::Host, Act::Close) => {
                c.host.shut_pending = true;
                c.prev_end[s] = now;
            }
        }
        if p.steps.len() <= 64 || matches!(step.act, Act::Close) {
            notes.push(format!(
                "replay {}: {side} {}",
                p.id,
                match step.act {
                    Act::Send(n) => format!("writes {n}"),
                    Act::Close => "closes".into(),
                }
            ));
        }
        c.next[s] += 1;
        c.dep_t[s] = None;
        acted = true;
    }
    acted
}

/// The outcome of one replayed connection or exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnReport {
    /// Its number in the plan.
    pub id: u32,
    /// `tcp GUEST > REMOTE`, `udp ...`, `ping ...`.
    pub what: String,
    /// Bytes delivered: guest to host (read by the host application), host
    /// to guest (received in order by the guest).
    pub bytes: [u64; 2],
    /// Bytes the plan has each side write.
    pub expected: [u64; 2],
    /// Everything delivered, both sides closed, no reset.
    pub complete: bool,
    /// Why it did not finish normally.
    pub failed: Option<String>,
    /// Time from its start to its end (virtual ns).
    pub completion_ns: Option<u64>,
    /// Stalls: (start since the connection's start, length), in ns.
    pub stalls: Vec<(u64, u64)>,
    /// Segments the guest sent again.
    pub retransmits: u64,
    /// Of which after a timeout.
    pub timeouts: u64,
    /// Fast retransmissions by the guest.
    pub fast_retransmits: u64,
    /// Probes of a closed window by the guest.
    pub probes: u64,
    /// Data segments from the core that brought nothing new (sent again).
    pub core_retransmits: u64,
    /// ACKs from the core with a closed window.
    pub zero_windows: u64,
    /// Datagram exchanges: sent, replies, planned.
    pub datagrams: Option<(u64, u64, u64)>,
}

impl ConnReport {
    /// The longest stall (ns).
    pub fn longest_stall(&self) -> u64 {
        self.stalls.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

/// The outcome of a replay.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Report {
    /// The stall threshold (ns).
    pub stall_ns: u64,
    /// Per connection, by number.
    pub conns: Vec<ConnReport>,
}

impl Report {
    /// Whether every connection completed.
    pub fn complete(&self) -> bool {
        self.conns.iter().all(|c| c.complete)
    }

    /// The latest completion (ns), if all completed.
    pub fn completion_ns(&self) -> Option<u64> {
        self.conns
            .iter()
            .map(|c| c.completion_ns)
            .collect::<Option<Vec<u64>>>()
            .and_then(|v| v.into_iter().max())
    }

    /// Text, one block per connection.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay: stalls are {} ms or more without progress",
            plan::ms(self.stall_ns)
        );
        for c in &self.conns {
            let _ = writeln!(
                s,
                "{} {}: {}",
                c.id,
                c.what,
                if c.complete { "complete" } else { "INCOMPLETE" }
            );
            if let Some(why) = &c.failed {
                let _ = writeln!(s, "  {why}");
            }
            match c.datagrams {
                Some((sent, replies, n)) => {
                    let _ = writeln!(s, "  sent {sent} of {n}, replies {replies}");
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  guest>host {} of {}, host>guest {} of {}",
                        c.bytes[0], c.expected[0], c.bytes[1], c.expected[1]
                    );
                }
            }
            if let Some(t) = c.completion_ns {
                let _ = writeln!(s, "  completed in {} ms", plan::ms(t));
            }
            if c.datagrams.is_none() {
                let _ = writeln!(
                    s,
                    "  stalls {} (longest {} ms), guest retransmits {} (timeouts {}, fast {}), probes {}, core sent again {}, zero windows {}",
                    c.stalls.len(),
                    plan::ms(c.longest_stall()),
                    c.retransmits,
                    c.timeouts,
                    c.fast_retransmits,
                    c.probes,
                    c.core_retransmits,
                    c.zero_windows
                );
                for (at, len) in &c.stalls {
                    let _ = writeln!(
                        s,
                        "  stall at {} ms for {} ms",
                        plan::ms(*at),
                        plan::ms(*len)
                    );
                }
            }
        }
        s
    }
}

/// The `sim replay ...` directive of a scenario: adds to the plan of `sim`'s
/// replay (made on first use), or starts it (`start`).
pub fn directive(
    sim: &mut crate::sim::Sim,
    words: &[String],
    guest_mac: MacAddr,
    our_mac: MacAddr,
) -> Result<(), String> {
    let now = sim.now().as_nanos();
    let r = sim
        .replay
        .get_or_insert_with(|| Box::new(Replay::new(guest_mac, our_mac)));
    if words.first().map(String::as_str) == Some("start") {
        r.start(now)?;
        // The guest is a model here: a realized run of raw frames would not
        // reproduce anything, and holding every frame twice costs memory.
        sim.keep_delivered = false;
        // Headers are what plots and captures of a replay need (a replay
        // may move hundreds of megabytes).
        sim.wire_snaplen = WIRE_SNAPLEN;
        return Ok(());
    }
    if r.started.is_some() {
        return Err("replay: the plan is fixed once started".into());
    }
    r.plan.apply(words)
}

/// The original next to the replay, per connection: bytes, completion time,
/// stalls and retransmissions.
pub fn compare(d: &capture::Derived, rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: original and replay (stalls: {} ms or more)",
        d.capture,
        plan::ms(rep.stall_ns)
    );
    for c in &rep.conns {
        let _ = writeln!(s, "{} {}", c.id, c.what);
        if let Some(o) = d.original.get(&c.id) {
            let longest = o.stalls.iter().map(|x| x.1).max().unwrap_or(0);
            let rows = [
                (
                    "guest>host bytes",
                    o.bytes[0].to_string(),
                    c.bytes[0].to_string(),
                ),
                (
                    "host>guest bytes",
                    o.bytes[1].to_string(),
                    c.bytes[1].to_string(),
                ),
                (
                    "time ms",
                    plan::ms(o.duration_ns),
                    c.completion_ns.map_or("-".into(), plan::ms),
                ),
                (
                    "stalls",
                    o.stalls.len().to_string(),
                    c.stalls.len().to_string(),
                ),
                (
                    "longest stall ms",
                    plan::ms(longest),
                    plan::ms(c.longest_stall()),
                ),
                (
                    "guest retransmits",
                    o.retransmits[0].to_string(),
                    c.retransmits.to_string(),
                ),
                (
                    "translator retransmits",
                    o.retransmits[1].to_string(),
                    c.core_retransmits.to_string(),
                ),
                (
                    "end",
                    match o.end {
                        capture::End::Closed => "closed".into(),
                        capture::End::Reset(side) => format!("reset by {side}"),
                        capture::End::Open => "open".into(),
                    },
                    if c.complete {
                        "closed".into()
                    } else {
                        c.failed.clone().unwrap_or_else(|| "unfinished".into())
                    },
                ),
            ];
            let _ = writeln!(s, "  {:<24} {:>14} {:>14}", "", "original", "replay");
            for (k, a, b) in rows {
                let _ = writeln!(s, "  {k:<24} {a:>14} {b:>14}");
            }
        } else if let (Some(o), Some((sent, replies, _))) =
            (d.original_dgram.get(&c.id), c.datagrams)
        {
            let _ = writeln!(
                s,
                "  sent {} replies {} (original) / sent {sent} replies {replies} (replay)",
                o.sent, o.replies
            );
        }
    }
    s
}
