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
mod drive;
pub mod host;
pub mod plan;
mod report;
pub mod tcp;
pub mod wire;

pub use report::{compare, ConnReport, Report};

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
