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

    fn step(&mut self) {
        let now = self.now;
        self.kernel.set_now(now.as_nanos());
        let arrived = self.to_core.take_arrived(now);
        if !arrived.is_empty() {
            for (f, corrupted) in &arrived {
                if *corrupted {
                    self.checker.on_corrupted(f);
                }
            }
            self.deliver_batch(arrived.into_iter().map(|f| f.0).collect());
        }
        self.ring.now = now;
        if self.core.tap_blocked() && now >= self.ring.busy_until {
            self.note("link", "core> room again");
            self.core.handle_tap_writable(now);
            self.drain();
        }
        let events = self.kernel.advance(now.as_nanos());
        self.kernel_notes();
        for (sock, ev) in events {
            self.note("host", format!("{sock:?} {ev:?}"));
            self.event(sock, ev);
            self.drain();
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            self.drain();
            // A deadline still due right after handling it would make an event
            // loop spin: tolerated a few times (timers that fire in steps),
            // then a violation, and the clock moves on.
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.stuck_timer += 1;
                if self.stuck_timer == 100 {
                    self.violation(
                        "timers: poll_timeout stays in the past after handle_timeout".into(),
                    );
                }
            } else {
                self.stuck_timer = 0;
            }
        }
        self.settle_now();
        // Window stalls are a matter of the core reacting to the socket: on
        // an impaired link the guest also waits for its own retransmissions,
        // which the check cannot tell apart.
        // Frames lost before the links healed leave the guest waiting for
        // its retransmission timeout (the model's is 200 ms) too: the check
        // starts a second after the last loss.
        let losses = self.to_core.stats.lost
            + self.to_core.stats.too_big
            + self.to_guest.stats.lost
            + self.to_guest.stats.too_big;
        // A paused guest loses the frames for it too (a window update among
        // them): the check starts a second after it resumes (the pause is
        // cleared later in the step that resumes it).
        let paused_now = self.guest_paused_until.is_some();
        if losses != self.link_losses.0 || paused_now {
            self.link_losses = (losses, now);
        }
        let settled = !paused_now
            && ((losses == 0 && self.link_losses.1 == Instant::ZERO)
                || now >= self.link_losses.1.saturating_add(Duration::from_secs(1)));
        if settled
            && self.to_core.profile.is_clean()
            && self.to_guest.profile.is_clean()
            && self.ring.profile.is_clean()
        {
            for v in self.checker.on_turn_end(now.as_nanos(), &self.kernel) {
                self.violation(v);
            }
        }
        let mut replies = Vec::new();
        let paused = self.guest_paused_until.is_some_and(|p| now < p);
        if !paused && self.guest_paused_until.take().is_some() {
            let lost = std::mem::take(&mut self.guest_paused_lost);
            self.note(
                "sim",
                format!("guest resumes: {lost} frames for it were lost"),
            );
        }
        for (f, corrupted) in self.to_guest.take_arrived(now) {
            if corrupted {
                self.note("link", "core> frame corrupted on the way to the guest");
            }
            let seg = frame::parse_tcp(&f).filter(|_| frame::check_frame(&f, usize::MAX).is_ok());
            match seg.and_then(|t| {
                self.guests
                    .iter()
                    .position(|g| g.claims(&t))
                    .map(|i| (i, t))
            }) {
                Some(_) if paused => self.guest_paused_lost += 1,
                Some((i, t)) => self.guests[i].on_segment(now.as_nanos(), &t, &mut replies),
                None => {
                    let replayed = self
                        .replay
                        .as_mut()
                        .is_some_and(|r| r.on_frame(now.as_nanos(), &f));
                    if !replayed {
                        self.guest_inbox.push((now, f));
                    }
                }
            }
        }
        if paused {
            return;
        }
        for g in &mut self.guests {
            g.on_timer(now.as_nanos(), &mut replies);
            g.mark_done(now.as_nanos());
        }
        let mut touched = false;
        if let Some(r) = self.replay.as_mut() {
            touched = r.poll(now.as_nanos(), &mut self.kernel, &mut replies);
            for n in r.take_notes() {
                self.timeline
                    .push(format!("{} {:<6} {}", ts(now), "replay", n));
            }
        }
        for f in replies {
            self.guest_send(&f);
        }
        if touched {
            // The host application did something: readiness for the core.
            self.settle_now();
        }
    }

    /// Delivers readiness until nothing changes at this instant.
    pub fn settle_now(&mut self) {
        self.kernel.run_peers(self.now.as_nanos());
        self.kernel_notes();
        let mut idle = 0;
        for _ in 0..MAX_ROUNDS {
            let events = self.kernel.ready_events();
            if events.is_empty() {
                return;
            }
            // Progress: the kernel changed or a frame went out. Actions alone
            // (a peek that finds nothing new) are not.
            let before = (self.kernel.mutations, self.stats.frames_from_core);
            let what: Vec<String> = events.iter().map(|(s, e)| format!("{s:?} {e:?}")).collect();
            for (sock, ev) in events {
                // Errors and hang-ups are worth a line; readiness is not.
                if matches!(
                    ev,
                    SockEvent::Error(_) | SockEvent::HangUp | SockEvent::ReadHangUp
                ) {
                    self.note("host", format!("{sock:?} {ev:?}"));
                }
                self.event(sock, ev);
                self.drain();
            }
            self.kernel.run_peers(self.now.as_nanos());
            self.kernel_notes();
            let after = (self.kernel.mutations, self.stats.frames_from_core);
            if before != after {
                idle = 0;
                continue;
            }
            self.stats.idle_wakeups += 1;
            idle += 1;
            if idle >= SPIN_ROUNDS {
                // Readiness keeps being reported and nothing changes: on real
                // epoll the event loop would spin here until something else
                // happens.
                self.stats.spins += 1;
                self.note(
                    "spin",
                    format!(
                        "readiness without progress {idle} times: {}",
                        what.join(", ")
                    ),
                );
                return;
            }
        }
        self.stats.spins += 1;
    }

    fn kernel_notes(&mut self) {
        for n in std::mem::take(&mut self.kernel.notes) {
            self.note("host", n);
        }
    }

    fn deliver_batch(&mut self, frames: Vec<Vec<u8>>) {
        let now = self.now;
        let mut buf = Vec::new();
        let mut refs = Vec::new();
        let mut malformed_ok = 0u64;
        for (i, f) in frames.iter().enumerate() {
            self.wire
                .push((now, f.get(..self.wire_snaplen).unwrap_or(f).to_vec()));
            if self.keep_delivered {
                self.delivered.push((now, self.stats.batches, f.clone()));
            }
            if !frame::well_formed(f) {
                malformed_ok += 1;
            }
            let mut len = f.len() as u32;
            if i == 1 && self.planted == Some(PlantedBug::TruncateSecondOfBatch) {
                len = len.saturating_sub(1);
            }
            refs.push(FrameRef {
                offset: buf.len() as u32,
                len,
            });
            buf.extend_from_slice(f);
        }
        self.stats.batches += 1;
        self.stats.frames_to_core += frames.len() as u64;
        let before: u64 = MALFORMED
            .iter()
            .map(|r| self.core.counters().dropped(*r))
            .sum();
        let total_before = self.core.counters().dropped_total();
        self.core
            .handle_tap_batch(now, &FrameBatch::new(&buf, &refs));
        let after: u64 = MALFORMED
            .iter()
            .map(|r| self.core.counters().dropped(*r))
            .sum();
        let total_after = self.core.counters().dropped_total();
        if total_after > total_before {
            let reasons: Vec<String> = self
                .core
                .counters()
                .drop_reasons()
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            self.note(
                "core",
                format!(
                    "dropped {} (totals: {})",
                    total_after - total_before,
                    reasons.join(" ")
                ),
            );
        }
        if after - before > malformed_ok {
            self.violation(format!(
                "malformed drops: core dropped {} frames as malformed in a batch of {} with {} malformed",
                after - before,
                frames.len(),
                malformed_ok
            ));
        }
        self.drain_with(&buf);
    }

    fn drain(&mut self) {
        self.drain_with(&[]);
    }

    /// Carries out every action, then sends every frame, as the call order
    /// requires. `batch` is the buffer of the last batch (send spans).
    fn drain_with(&mut self, batch: &[u8]) {
        for _ in 0..1_000_000 {
            let Some(a) = self.core.poll_action() else {
                break;
            };
            self.stats.actions += 1;
            self.exec(a, batch);
        }
        self.ring.now = self.now;
        self.core.transmit_queued(self.now, &mut self.ring);
        self.flush();
    }

    /// Sends what the ring holds, then puts what the link took on the wire.
    fn flush(&mut self) {
        self.core.flush_ring(self.now, &mut self.ring);
        self.put_on_wire();
    }

    /// The frames the link took, in order; a line for those it refused.
    fn put_on_wire(&mut self) {
        for f in std::mem::take(&mut self.ring.sent) {
            self.emit(&f);
        }
        let refused = std::mem::take(&mut self.ring.refused);
        if !refused.is_empty() {
            self.note(
                "link",
                format!(
                    "core> {} frames refused, no room until {}",
                    refused.len(),
                    ts(self.ring.busy_until).trim()
                ),
            );
        }
        // To the invariants a refused frame is one the link lost: the
        // core made it, the guest never saw it.
        for f in refused {
            self.stats.frames_from_core += 1;
            self.stats.frames_refused += 1;
            let s = frame::summarize(&f, &mut self.seqs);
            self.note("core>", format!("{s} (refused)"));
            if let Err(e) = frame::check_frame(&f, self.max_frame) {
                self.violation(format!("frame check: {e}"));
            }
            for v in self.checker.on_core_frame(&f, &self.kernel) {
                self.violation(v);
            }
        }
    }

    fn emit(&mut self, f: &[u8]) {
        self.stats.frames_from_core += 1;
        let s = frame::summarize(f, &mut self.seqs);
        self.note("core>", s);
        if let Err(e) = frame::check_core_frame(f, self.max_frame) {
            self.violation(format!("frame check: {e}"));
        }
        for v in self.checker.on_core_frame(f, &self.kernel) {
            self.violation(v);
        }
        self.wire
            .push((self.now, f.get(..self.wire_snaplen).unwrap_or(f).to_vec()));
        match self.to_guest.send(self.now, f) {
            Fate::Sent => {}
            fate => self.note("link", format!("core> frame {fate:?}")),
        }
    }

    fn event(&mut self, sock: passt_core::SockId, ev: SockEvent) {
        if self.splicer.owns(sock) {
            if let Some((s, ev)) = self.splicer.event(&mut self.kernel, sock, ev) {
                self.note("host", format!("{s:?} {ev:?}"));
                self.core.handle_sock_event(self.now, s, ev);
            }
            return;
        }
        self.core.handle_sock_event(self.now, sock, ev);
    }

    fn exec(&mut self, a: Action, batch: &[u8]) {
        let now_ns = self.now.as_nanos();
        match a {
            Action::Open {
                sock,
                kind,
                family,
                netns,
            } => {
                let r = self.kernel.open(sock, kind, family, netns);
                self.note(
                    "host",
                    format!("socket({kind:?}, {family:?}, {netns:?}) as {sock:?} = {r:?}"),
                );
                if let Err(e) = r {
                    self.event(sock, SockEvent::OpenFailed(e));
                }
                if self.kernel.core_sockets() > self.core.config().limits.flows.saturating_mul(2) {
                    self.violation("resources: more core sockets than twice the flow table".into());
                }
            }
            Action::Bind { sock, addr, opts } => {
                let r = self.kernel.bind(sock, addr, opts.reuse_addr);
                self.note("host", format!("bind({sock:?}, {addr}) = {r:?}"));
                if let Err(e) = r {
                    let _ = self.kernel.close(sock);
                    self.event(sock, SockEvent::OpenFailed(e));
                }
            }
            Action::Connect { sock, addr } => {
                let r = self.kernel.connect(sock, addr, now_ns);
                self.note("host", format!("connect({sock:?}, {addr}) = {r:?}"));
                self.checker.on_connect(sock, addr, &self.kernel);
                if let Err(e) = r {
                    self.event(sock, SockEvent::Connected(Err(e)));
                }
            }
            Action::Listen { sock, backlog } => {
                let r = self.kernel.listen(sock, backlog);
                self.note("host", format!("listen({sock:?}, {backlog}) = {r:?}"));
                if let Err(e) = r {
                    let _ = self.kernel.close(sock);
                    self.event(sock, SockEvent::OpenFailed(e));
                }
            }
            Action::Accept { listener, sock } => {
                let r = self.kernel.accept(listener, sock);
                self.note("host", format!("accept({listener:?}) as {sock:?} = {r:?}"));
                if r.is_ok() {
                    self.checker.on_accepted(sock);
                }
                self.event(sock, SockEvent::Accepted(r));
            }
            Action::SetInterest { sock, interest } => {
                let r = self.kernel.set_interest(sock, interest);
                let mut m = String::new();
                for (on, c) in [
                    (interest.readable, "IN"),
                    (interest.writable, "OUT"),
                    (interest.read_hangup, "RDHUP"),
                    (interest.edge, "ET"),
                ] {
                    if on {
                        if !m.is_empty() {
                            m.push('|');
                        }
                        m.push_str(c);
                    }
                }
                self.note("host", format!("epoll({sock:?}, {m}) = {r:?}"));
            }
            Action::SetOption { sock, opt } => {
                let r = match opt {
                    SockOpt::PeekOffset(v) => self.kernel.set_peek_off(sock, v),
                    SockOpt::ResetOnClose => self.kernel.set_linger_zero(sock),
                    _ => Ok(()),
                };
                self.note("host", format!("setsockopt({sock:?}, {opt:?}) = {r:?}"));
            }
            Action::Send { sock, spans } => {
                let mut data = Vec::new();
                let mut bad = false;
                for sp in self.core.spans(spans) {
                    let start = sp.offset as usize;
                    match batch.get(start..start.saturating_add(sp.len as usize)) {
                        Some(b) => data.extend_from_slice(b),
                        None => bad = true,
                    }
                }
                if bad {
                    self.violation("send: a span points outside the batch buffer".into());
                }
                let mut r = self.kernel.send(sock, &data);
                if self.planted == Some(PlantedBug::AckOneMore) {
                    if let Ok(n) = r {
                        if n < data.len() {
                            r = Ok(n + 1);
                        }
                    }
                }
                self.note("host", format!("send({sock:?}, {}) = {r:?}", data.len()));
                for v in self.checker.on_sent(sock, &self.kernel) {
                    self.violation(v);
                }
                let space = self.kernel.send_space(sock).unwrap_or_default();
                self.event(sock, SockEvent::StreamSent { sent: r, space });
            }
            Action::SendDatagrams { sock, spans, to } => {
                let mut dgrams: Vec<&[u8]> = Vec::new();
                let mut bad = false;
                for sp in self.core.spans(spans) {
                    let start = sp.offset as usize;
                    match batch.get(start..start.saturating_add(sp.len as usize)) {
                        Some(b) => dgrams.push(b),
                        None => bad = true,
                    }
                }
                let r = self.kernel.send_datagrams(sock, &dgrams, to);
                let sizes: Vec<String> = dgrams.iter().map(|d| d.len().to_string()).collect();
                let dest = to.map_or(String::new(), |t| format!(" to {t}"));
                self.note(
                    "host",
                    format!("sendmmsg({sock:?}, [{}]{dest}) = {r:?}", sizes.join(", ")),
                );
                if bad {
                    self.violation("send: a span points outside the batch buffer".into());
                }
                self.core
                    .handle_sock_event(self.now, sock, SockEvent::Sent(r));
            }
            Action::Recv { sock, max, room } => self.recv(sock, max, room),
            Action::Peek {
                sock,
                skip,
                len,
                mss,
                room,
            } => self.peek(sock, skip, len, mss, room),
            Action::Consume { sock, len } => {
                let r = self.kernel.consume(sock, len as usize);
                self.note("host", format!("recv({sock:?}, {len}, MSG_TRUNC) = {r:?}"));
                if r != Ok(len as usize) {
                    self.violation(format!(
                        "consume: core discarded {len} bytes but the queue held {r:?}"
                    ));
                }
            }
            Action::QueryTcpInfo { sock } => match self.kernel.tcp_info(sock) {
                Ok(i) => self.event(sock, SockEvent::TcpInfo(i)),
                Err(e) => self.note("host", format!("tcp_info({sock:?}) = {e:?}")),
            },
            Action::QuerySendSpace { sock } => match self.kernel.send_space(sock) {
                Ok(sp) => self.event(sock, SockEvent::SendSpace(sp)),
                Err(e) => self.note("host", format!("meminfo({sock:?}) = {e:?}")),
            },
            Action::ShutdownWrite { sock } => {
                let r = self.kernel.shutdown_write(sock);
                self.note("host", format!("shutdown({sock:?}, SHUT_WR) = {r:?}"));
            }
            Action::Splice { sock, peer } => {
                self.note("host", format!("splice({sock:?}, {peer:?})"));
                if let Some((s, ev)) = self.splicer.join(&mut self.kernel, sock, peer) {
                    self.note("host", format!("{s:?} {ev:?}"));
                    self.core.handle_sock_event(self.now, s, ev);
                }
            }
            Action::Close { sock } => {
                self.splicer.forget(sock);
                let r = self.kernel.close(sock);
                self.note("host", format!("close({sock:?}) = {r:?}"));
            }
            other => self.violation(format!("the simulator cannot carry out {other:?}")),
        }
        self.kernel_notes();
        // Every action but Open and Accept names a socket the core opened and
        // has not closed.
        let sock = match a {
            Action::Bind { sock, .. }
            | Action::Connect { sock, .. }
            | Action::Listen { sock, .. }
            | Action::SetInterest { sock, .. }
            | Action::SetOption { sock, .. }
            | Action::Send { sock, .. }
            | Action::SendDatagrams { sock, .. }
            | Action::Peek { sock, .. }
            | Action::Recv { sock, .. }
            | Action::Consume { sock, .. }
            | Action::QueryTcpInfo { sock }
            | Action::QuerySendSpace { sock }
            | Action::ShutdownWrite { sock }
            | Action::Close { sock } => Some(sock),
            _ => None,
        };
        if let Some(sock) = sock {
            // The core queues a new socket's set-up behind its Open; when the
            // Open fails, the rest of it names a socket that never existed
            // (the driver ignores it).
            if !self.known_socks.contains(&sock) && !self.failed_socks.contains(&sock) {
                self.violation(format!("socket ids: {a:?} names a socket that is not open"));
            }
        }
        match a {
            Action::Open { sock, .. } | Action::Accept { sock, .. } => {
                if self.kernel.core_ids().contains(&sock) {
                    self.known_socks.insert(sock);
                    self.failed_socks.remove(&sock);
                } else {
                    self.failed_socks.insert(sock);
                }
            }
            _ => {}
        }
        // Closed sockets leave the set; sockets the driver dropped because a
        // Bind or Listen failed count as failed opens.
        let open = self.kernel.core_ids();
        let closed = if let Action::Close { sock } = a {
            Some(sock)
        } else {
            None
        };
        let gone: Vec<_> = self
            .known_socks
            .iter()
            .filter(|s| !open.contains(s))
            .copied()
            .collect();
        for s in gone {
            self.known_socks.remove(&s);
            if Some(s) != closed {
                self.failed_socks.insert(s);
            }
        }
    }

    fn peek(&mut self, sock: passt_core::SockId, skip: u32, len: u32, mss: u16, room: u16) {
        let p = PeekRequest {
            skip,
            len,
            mss,
            room,
        };
        let kernel = &mut self.kernel;
        let mut line = None;
        self.ring.now = self.now;
        self.core
            .peek_into(self.now, &mut self.ring, sock, p, |skip, iov| {
                let want: usize = iov.iter().map(|s| s.len()).sum();
                let r = kernel.peek(sock, skip, want);
                line = Some(format!(
                    "recvmsg({sock:?}, skip {skip}, {want}, MSG_PEEK) = {:?}",
                    r.as_ref().map(Vec::len)
                ));
                let data = r?;
                let mut rest = &data[..];
                for s in iov.iter_mut() {
                    let n = s.len().min(rest.len());
                    s[..n].copy_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                Ok(data.len())
            });
        match line {
            Some(l) => self.note("host", l),
            None => self.note("link", format!("no room for {sock:?}'s data")),
        }
        self.flush();
    }

    fn recv(&mut self, sock: passt_core::SockId, max: u16, room: u16) {
        let kernel = &mut self.kernel;
        let mut line = None;
        let mut failed = false;
        let mut got = Vec::new();
        self.ring.now = self.now;
        self.core.recv_into(
            self.now,
            &mut self.ring,
            sock,
            max,
            room,
            &mut got,
            |bufs, room, got| {
                let r = kernel.recv_datagrams(sock, bufs.len().min(usize::from(max)));
                let d = match r {
                    Ok(d) => d,
                    Err(e) => {
                        line = Some(format!("recvmmsg({sock:?}, {max}) = {e:?}"));
                        failed = true;
                        return Err(e);
                    }
                };
                let sizes: Vec<String> = d
                    .iter()
                    .map(|(p, d)| format!("{} from {p}", d.len()))
                    .collect();
                line = Some(format!(
                    "recvmmsg({sock:?}, {max}) = [{}]",
                    sizes.join(", ")
                ));
                for (b, (peer, data)) in bufs.iter_mut().zip(&d) {
                    if let Some(dst) = b.get_mut(room..) {
                        let n = dst.len().min(data.len());
                        dst[..n].copy_from_slice(&data[..n]);
                    }
                    got.push((data.len(), *peer));
                }
                Ok(())
            },
        );
        if let Some(l) = line {
            self.note("host", l);
        }
        if !failed {
            self.flush();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::capture_config;
    use passt_core::{Family, Interest, Netns, SockId, SockKind};

    fn sim() -> Sim {
        Sim::new(SimConfig::new(capture_config()))
    }

    #[test]
    fn actions_on_unknown_sockets_are_violations() {
        let mut s = sim();
        s.exec(Action::Close { sock: SockId(99) }, &[]);
        assert!(
            s.violations.iter().any(|v| v.contains("socket ids")),
            "{:?}",
            s.violations
        );

        let mut s = sim();
        let sock = SockId(1);
        s.exec(
            Action::Open {
                sock,
                kind: SockKind::TcpStream,
                family: Family::V4,
                netns: Netns::Host,
            },
            &[],
        );
        s.exec(
            Action::SetInterest {
                sock,
                interest: Interest::default(),
            },
            &[],
        );
        s.exec(Action::Close { sock }, &[]);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        // Used after close.
        s.exec(Action::QueryTcpInfo { sock }, &[]);
        assert_eq!(s.violations.len(), 1, "{:?}", s.violations);

        // Set-up queued behind a failed open is tolerated.
        let mut cfg = SimConfig::new(capture_config());
        cfg.kernel.fd_limit = 0;
        let mut s = Sim::new(cfg);
        s.exec(
            Action::Open {
                sock,
                kind: SockKind::TcpStream,
                family: Family::V4,
                netns: Netns::Host,
            },
            &[],
        );
        s.exec(
            Action::SetInterest {
                sock,
                interest: Interest::default(),
            },
            &[],
        );
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }

    #[test]
    fn broken_frames_from_the_core_are_violations() {
        let mut s = sim();
        let mut f = crate::frame::udp_frame(
            crate::frame::GUEST_MAC,
            crate::frame::BROADCAST,
            "10.77.0.1:67".parse().unwrap(),
            "10.77.0.2:68".parse().unwrap(),
            b"payload, long enough for a 60-byte frame",
        );
        s.emit(&f.clone());
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        // A short frame the core did not pad is one too.
        let short = crate::frame::udp_frame(
            crate::frame::GUEST_MAC,
            crate::frame::BROADCAST,
            "10.77.0.1:67".parse().unwrap(),
            "10.77.0.2:68".parse().unwrap(),
            b"short",
        );
        s.emit(&short);
        assert!(
            s.violations.iter().any(|v| v.contains("802.3 minimum")),
            "{:?}",
            s.violations
        );
        s.violations.clear();
        let n = f.len();
        f[n - 1] ^= 1;
        s.emit(&f);
        assert!(
            s.violations.iter().any(|v| v.contains("frame check")),
            "{:?}",
            s.violations
        );
        assert_eq!(s.stats.frames_from_core, 3);
    }

    /// TCP and UDP forwards open listeners in the simulated kernel, and
    /// those that cannot be opened are reported the way the epoll driver
    /// reads them.
    #[test]
    fn forwards_open_listeners_and_failures_are_reported() {
        use passt_core::{Forward, Proto};
        let mut cfg = SimConfig::new(capture_config());
        cfg.core.forwards = vec![
            Forward::new(Proto::Tcp, 8080, 80),
            Forward::new(Proto::Udp, 5353, 53),
        ];
        let mut s = Sim::new(cfg.clone());
        s.start();
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.core.failed_forwards().count(), 0);
        assert_eq!(s.core.socket_count(), 2);
        assert_eq!(s.kernel.core_ids().len(), 2);

        // No descriptors left: neither listener opens.
        cfg.kernel.fd_limit = 0;
        let mut s = Sim::new(cfg);
        s.start();
        let failed: Vec<_> = s
            .core
            .failed_forwards()
            .map(|f| (f.forward.proto, f.forward.first, f.error.is_some()))
            .collect();
        assert_eq!(
            failed,
            vec![(Proto::Tcp, 8080, true), (Proto::Udp, 5353, true)]
        );
        assert_eq!(s.core.socket_count(), 0);
        assert!(s
            .timeline
            .iter()
            .any(|l| l.contains("UDP port 5353 not forwarded")));
    }

    #[test]
    fn consume_beyond_the_queue_is_a_violation() {
        let mut s = sim();
        let sock = SockId(1);
        s.exec(
            Action::Open {
                sock,
                kind: SockKind::TcpStream,
                family: Family::V4,
                netns: Netns::Host,
            },
            &[],
        );
        s.exec(Action::Consume { sock, len: 10 }, &[]);
        assert!(
            s.violations.iter().any(|v| v.contains("consume")),
            "{:?}",
            s.violations
        );
    }
}
