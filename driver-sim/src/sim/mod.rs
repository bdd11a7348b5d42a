//! The simulator: a [`Core`] driven exactly as the epoll driver drives it, on
//! the simulated kernel, with an impaired guest link, in virtual time.

use crate::check::Checker;
use crate::frame::{self, SeqTracker};
use crate::kernel::{Kernel, KernelConfig};
use crate::link::{Fate, Link, LinkProfile};
use crate::tx::{SimTx, TxProfile};
use passt_core::Rng;
use passt_core::{
    Action, Config, Core, DropReason, FrameBatch, FrameRef, Instant, PeekRequest, SockEvent,
    SockOpt,
};
use std::time::Duration;

/// A driver bug planted on purpose in test builds, to show that the
/// invariants catch it and the sweep shrinks it to a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// The second frame descriptor of a batch is one byte short (an
    /// off-by-one in the driver's batch bookkeeping).
    TruncateSecondOfBatch,
    /// A partial write is reported as one byte longer than the kernel took,
    /// so the core acknowledges one byte too many to the guest.
    AckOneMore,
}

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The core's configuration.
    pub core: Config,
    /// The host kernel model.
    pub kernel: KernelConfig,
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// Impairments of the guest-to-core direction.
    pub to_core: LinkProfile,
    /// Impairments of the core-to-guest direction.
    pub to_guest: LinkProfile,
    /// How the guest link takes the core's frames.
    pub tx: TxProfile,
    /// A bug to plant (test builds only).
    pub planted: Option<PlantedBug>,
}

impl SimConfig {
    /// A clean run of `core` with seed 0.
    pub fn new(core: Config) -> Self {
        SimConfig {
            core,
            kernel: KernelConfig::default(),
            seed: 0,
            to_core: LinkProfile::default(),
            to_guest: LinkProfile::default(),
            tx: TxProfile::default(),
            planted: None,
        }
    }
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Batches handed to the core.
    pub batches: u64,
    /// Frames delivered to the core.
    pub frames_to_core: u64,
    /// Frames the core emitted.
    pub frames_from_core: u64,
    /// Of those, frames the transmit ring refused (backpressure).
    pub frames_refused: u64,
    /// Actions carried out.
    pub actions: u64,
    /// Readiness events handled without any effect (wasted wakeups).
    pub idle_wakeups: u64,
    /// Places where readiness kept being reported without progress (a
    /// driver on real epoll would spin there).
    pub spins: u64,
}

/// Bound on readiness rounds per instant.
const MAX_ROUNDS: usize = 64;
/// Wakeups in a row without progress that count as a busy loop.
const SPIN_ROUNDS: u32 = 8;
/// Malformation reasons: the core may count one only for a frame that is not
/// well-formed by the independent parser's rules.
const MALFORMED: &[DropReason] = &[
    DropReason::BadDescriptor,
    DropReason::EthTruncated,
    DropReason::Ipv4BadHeader,
    DropReason::Ipv4BadLength,
    DropReason::Ipv6BadHeader,
    DropReason::Ipv6BadLength,
    DropReason::Ipv6BadExtension,
    DropReason::L4Truncated,
];

/// A simulation run.
pub struct Sim {
    /// The core under test.
    pub core: Core,
    /// The host kernel.
    pub kernel: Kernel,
    /// Spliced pairs (pasta's loopback path).
    pub splicer: crate::splice::SimSplicer,
    now: Instant,
    to_core: Link,
    to_guest: Link,
    planted: Option<PlantedBug>,
    max_frame: usize,
    /// One line per event.
    pub timeline: Vec<String>,
    /// Frames that arrived at the guest, with their arrival time.
    pub guest_inbox: Vec<(Instant, Vec<u8>)>,
    /// Frames on the wire at the core's end (both directions), for pcap.
    pub wire: Vec<(Instant, Vec<u8>)>,
    /// Guest frames as delivered to the core (after impairments), with time
    /// and batch number.
    pub delivered: Vec<(Instant, u64, Vec<u8>)>,
    /// Invariant violations, with the time they were seen.
    pub violations: Vec<String>,
    /// Counters.
    pub stats: SimStats,
    /// Model guest TCP endpoints; frames for them do not reach the inbox.
    pub guests: Vec<crate::guest::GuestTcp>,
    /// A closed-loop replay (both ends of recorded connections); frames
    /// for it do not reach the inbox.
    pub replay: Option<Box<crate::replay::Replay>>,
    /// Whether to keep every delivered frame (for realized runs).
    pub keep_delivered: bool,
    /// Bytes of each frame kept in `wire` (a snapshot length).
    pub wire_snaplen: usize,
    /// The model endpoints are paused until then (a stopped VM, a guest
    /// that stops reading its link): frames for them are lost, their
    /// timers wait.
    pub guest_paused_until: Option<Instant>,
    /// Frames for model endpoints lost while they were paused.
    pub guest_paused_lost: u64,
    /// Frames lost (or too big) on either link so far, and when the count
    /// last grew: a guest waits for its own retransmission of those.
    link_losses: (u64, Instant),
    seqs: SeqTracker,
    checker: Checker,
    /// The guest link's transmit side.
    ring: SimTx,
    /// Sockets the core opened or accepted and did not close.
    known_socks: std::collections::BTreeSet<passt_core::SockId>,
    /// Consecutive steps after which the core's deadline was still due.
    stuck_timer: u32,
    /// Sockets whose Open or Accept failed.
    failed_socks: std::collections::BTreeSet<passt_core::SockId>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("stats", &self.stats)
            .finish()
    }
}

fn ts(t: Instant) -> String {
    let us = t.as_nanos() / 1000;
    format!("{:>4}.{:06}", us / 1_000_000, us % 1_000_000)
}

impl Sim {
    /// A simulation of `cfg`.
    pub fn new(cfg: SimConfig) -> Self {
        let mtu = usize::from(cfg.core.mtu.unwrap_or(passt_core::DEFAULT_MTU));
        Sim {
            core: Core::new(cfg.core),
            kernel: Kernel::new(cfg.kernel),
            splicer: crate::splice::SimSplicer::default(),
            now: Instant::ZERO,
            to_core: Link::new(cfg.to_core, Rng::derive(cfg.seed, 1)),
            to_guest: Link::new(cfg.to_guest, Rng::derive(cfg.seed, 2)),
            // Planted bugs exist in test builds and with the `planted-bug`
            // feature only.
            planted: if cfg!(any(test, feature = "planted-bug")) {
                cfg.planted
            } else {
                None
            },
            max_frame: mtu.max(1500) + 14,
            timeline: Vec::new(),
            guest_inbox: Vec::new(),
            wire: Vec::new(),
            delivered: Vec::new(),
            violations: Vec::new(),
            stats: SimStats::default(),
            guests: Vec::new(),
            replay: None,
            keep_delivered: true,
            wire_snaplen: usize::MAX,
            guest_paused_until: None,
            guest_paused_lost: 0,
            link_losses: (0, Instant::ZERO),
            seqs: SeqTracker::default(),
            checker: Checker::default(),
            ring: SimTx::new(cfg.tx, Rng::derive(cfg.seed, 4)),
            known_socks: std::collections::BTreeSet::new(),
            failed_socks: std::collections::BTreeSet::new(),
            stuck_timer: 0,
        }
    }

    /// The initial sequence number the core used towards `guest` from
    /// `remote`, once its SYN or SYN-ACK was seen.
    pub fn core_isn(
        &self,
        remote: std::net::SocketAddr,
        guest: std::net::SocketAddr,
    ) -> Option<u32> {
        self.seqs.isn(remote, guest)
    }

    /// Starts the core (listeners of forwarded ports) and carries out what
    /// it asks for; call once, before anything else.
    pub fn start(&mut self) {
        self.core.start(self.now);
        self.drain();
        // The listeners the core could not open, as the epoll driver reads
        // them to refuse explicit ports.
        let failed: Vec<_> = self.core.failed_forwards().collect();
        for f in failed {
            let what = match (f.addr, f.error) {
                (Some(a), Some(e)) => format!("{a}: {e:?}"),
                (Some(a), None) => format!("{a}: hung up"),
                _ => "address family disabled".to_string(),
            };
            let fwd = f.forward;
            self.note(
                "core",
                format!("{} port {} not forwarded: {what}", fwd.proto, fwd.first),
            );
        }
    }

    /// Frames the link took with TCP segmentation metadata (split into
    /// MSS-sized segments before they reached the wire).
    pub fn gso_frames(&self) -> u64 {
        self.ring.gso_frames
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Adds a line to the timeline.
    pub fn note(&mut self, who: &str, what: impl AsRef<str>) {
        self.timeline
            .push(format!("{} {:<6} {}", ts(self.now), who, what.as_ref()));
    }

    fn violation(&mut self, what: String) {
        self.note("FAIL", &what);
        self.violations
            .push(format!("{}: {what}", ts(self.now).trim()));
    }

    /// Replaces the link impairments (the heal phase sets clean ones).
    pub fn set_links(&mut self, to_core: LinkProfile, to_guest: LinkProfile) {
        self.to_core.profile = to_core;
        self.to_guest.profile = to_guest;
    }

    /// Replaces how the guest link takes the core's frames; the link has
    /// room at once (the heal phase).
    pub fn set_tx(&mut self, tx: TxProfile) {
        self.ring.profile = tx;
        if self.ring.busy_until > self.now {
            self.ring.busy_until = self.now;
            if self.core.tap_blocked() {
                self.note("link", "core> room again");
                self.core.handle_tap_writable(self.now);
                self.drain();
            }
        }
    }

    /// The guest puts `frame` on the link now.
    pub fn guest_send(&mut self, frame: &[u8]) {
        let s = frame::summarize(frame, &mut self.seqs);
        self.note("guest>", s);
        self.checker.on_guest_frame(frame);
        match self.to_core.send(self.now, frame) {
            Fate::Sent => {}
            fate => self.note("link", format!("guest> frame {fate:?}")),
        }
    }

    /// The host's neighbour table changed: `addr` is at `mac`, or (`None`)
    /// has no valid entry any more. The core hears it as the epoll driver
    /// reports a netlink neighbour event.
    pub fn neighbour(&mut self, addr: std::net::IpAddr, mac: Option<passt_core::Mac>) {
        match mac {
            Some(m) => self.note("host", format!("neighbour {addr} lladdr {m}")),
            None => self.note("host", format!("neighbour {addr} gone")),
        }
        self.core.handle_neighbour(self.now, addr, mac);
        self.drain();
    }

    /// Frames that reached the guest since the last call.
    pub fn take_inbox(&mut self) -> Vec<(Instant, Vec<u8>)> {
        std::mem::take(&mut self.guest_inbox)
    }

    /// The next time anything happens, if anything will.
    pub fn next_event(&self) -> Option<Instant> {
        [
            self.to_core.next_arrival(),
            self.to_guest.next_arrival(),
            // A deadline stuck in the past (reported above) does not hold the
            // clock.
            self.core.poll_timeout().map(|t| {
                if self.stuck_timer >= 100 {
                    t.max(self.now.saturating_add(Duration::from_millis(1)))
                } else {
                    t
                }
            }),
            self.kernel.next_deadline().map(Instant::from_nanos),
            // The link has room again for frames it refused.
            (self.core.tap_blocked() && self.ring.busy_until > self.now)
                .then_some(self.ring.busy_until),
            self.guests
                .iter()
                .filter_map(crate::guest::GuestTcp::deadline)
                .min()
                .map(|t| self.guest_paused_until.map_or(t, |p| t.max(p))),
            self.replay
                .as_ref()
                .and_then(|r| r.deadline())
                .map(Instant::from_nanos),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs everything due up to and including `until`, jumping the clock
    /// from event to event, and leaves the clock at `until`.
    pub fn run_until(&mut self, until: Instant) {
        // Work left from host-side operations at the current instant.
        self.settle_now();
        for _ in 0..1_000_000 {
            let Some(next) = self.next_event() else { break };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now.saturating_add(d);
        self.run_until(t);
    }

    /// Runs the end-of-run checks and returns every violation of the run.
    pub fn finish(&mut self) -> Vec<String> {
        let unfinished: Vec<String> = if self.checker.corrupted {
            Vec::new()
        } else {
            self.guests
                .iter()
                .filter(|g| !g.done())
                .map(ToString::to_string)
                .collect()
        };
        for g in unfinished {
            self.violation(format!("liveness: guest endpoint did not finish: {g}"));
        }
        for g in self.guests.clone() {
            self.note("guest", g.to_string());
        }
        for v in self.checker.finish(&self.kernel) {
            self.violation(v);
        }
        if self.kernel.core_sockets() > self.core.config().limits.flows.saturating_mul(2) {
            self.violation("resources: core sockets above bound at the end".into());
        }
        // The core's idea of its sockets matches the kernel's, and once no
        // flow socket is left, no flow is either.
        if self.core.socket_count() != self.kernel.core_sockets() {
            self.violation(format!(
                "resources: the core counts {} sockets, the kernel holds {} for it",
                self.core.socket_count(),
                self.kernel.core_sockets()
            ));
        }
        if self.kernel.core_flow_sockets() == 0
            && self.core.flow_count() != 0
            && !self.checker.corrupted
        {
            self.violation(format!(
                "resources: no socket left but {} flows in the table",
                self.core.flow_count()
            ));
        }
        self.violations.clone()
    }

    /// A one-line summary of the run's counters.
    pub fn summary(&self) -> Vec<String> {
        vec![
            format!("core: {}", self.core.counters()),
            format!(
                "sim: batches={} frames_to_core={} frames_from_core={} actions={} idle_wakeups={} spins={}",
                self.stats.batches,
                self.stats.frames_to_core,
                self.stats.frames_from_core,
                self.stats.actions,
                self.stats.idle_wakeups,
                self.stats.spins
            ),
            format!(
                "host: core_sockets={} app_sockets={} open_conns={} tcp_flows={} core_flows={}",
                self.kernel.core_sockets(),
                self.kernel.app_sockets(),
                self.kernel.open_conns(),
                self.checker.flows(),
                self.core.flow_count()
            ),
            format!(
                "link: to_core {} / to_guest {}",
                self.to_core.stats, self.to_guest.stats
            ),
        ]
    }

    /// Checks host-side application operations against the tracker too.
    pub fn app_did(&mut self, what: String) {
        self.note("app", what);
        self.settle_now();
    }
}

/// Writes frames as a classic pcap file (Ethernet, microseconds).
pub fn write_pcap(path: &std::path::Path, frames: &[(Instant, Vec<u8>)]) -> Result<(), String> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let header = PcapHeader {
        snaplen: 262_144,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).map_err(|e| e.to_string())?;
    for (t, f) in frames {
        let ts = Duration::from_nanos(t.as_nanos() / 1000 * 1000);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

mod exec;
mod step;
#[cfg(test)]
mod tests;
