//! Running a scenario, realizing a faulted run as a fault-free one, and
//! shrinking a failing scenario.

use super::*;

/// Runs a scenario.
// Long by design: the runner: set-up lines, then the event loop over the scenario's lines
// with its timing rules, then the final checks; they share the runner's state and read in
// run order.
pub fn run(sc: &Scenario, opts: &RunOptions) -> Result<RunResult, String> {
    let mut setup = Setup {
        cfg: SimConfig::new(capture_config()),
        known: Vec::new(),
        sweep_known: Vec::new(),
        settle: Duration::from_secs(1),
        heal: Duration::from_secs(20),
        faults: None,
    };
    let mut body = Vec::new();
    let mut started = false;
    for l in &sc.lines {
        if let (Ev::Directive(w), false) = (&l.ev, started) {
            if setup_directive(&mut setup, w).map_err(|e| format!("line {}: {e}", l.no))? {
                continue;
            }
        }
        started = true;
        body.push(l.clone());
    }
    if let Some(s) = opts.seed {
        setup.cfg.seed = s;
    }
    let faults = opts.faults.clone().or(setup.faults.clone());
    let mut host_note = String::new();
    if let Some(p) = &opts.policy {
        setup.cfg.core.tcp = passt_core::TcpPolicy::named(p).ok_or_else(|| {
            format!(
                "unknown TCP policy `{p}` (known: {})",
                passt_core::TcpPolicy::NAMES.join(", ")
            )
        })?;
        host_note.push_str(&format!(" policy {p}"));
    }
    if let Some(name) = &faults {
        let f = crate::sweep::profile(name, setup.cfg.seed)?;
        setup.cfg.to_core = f.to_core;
        setup.cfg.to_guest = f.to_guest;
        setup.cfg.tx = f.tx;
        if let Some(b) = f.sndbuf {
            setup.cfg.kernel.sndbuf = b;
        }
        if let Some(b) = f.rcvbuf {
            setup.cfg.kernel.rcvbuf = b;
        }
        host_note.push_str(&format!(
            " host sndbuf {} rcvbuf {}",
            setup.cfg.kernel.sndbuf, setup.cfg.kernel.rcvbuf
        ));
    }
    setup.cfg.planted = opts.planted;
    let guest_mac = setup.cfg.core.guest_mac.map_or(GUEST_MAC, |m| m.0);
    let our_mac = setup.cfg.core.our_mac.0;
    let faulty =
        !setup.cfg.to_core.is_clean() || !setup.cfg.to_guest.is_clean() || !setup.cfg.tx.is_clean();
    let mut header = format!(
        "scenario {} seed {} faults {}{}\nlink to-core: {}\nlink to-guest: {}",
        sc.name,
        setup.cfg.seed,
        faults.as_deref().unwrap_or("none"),
        host_note,
        setup.cfg.to_core,
        setup.cfg.to_guest
    );
    if !setup.cfg.tx.is_clean() {
        header.push_str(&format!("\nlink tx: {}", setup.cfg.tx));
    }
    let mut r = Runner {
        sc,
        sim: Sim::new(setup.cfg.clone()),
        opts,
        flow: None,
        guest_mac,
        our_mac,
        failures: Vec::new(),
        tolerance_ns: 0,
        expect_seqs: SeqTracker::default(),
        realized_sys: Vec::new(),
        drain_at_end: false,
        pending_inject: false,
    };
    r.sim.start();
    let mut t = 0u64;
    for l in &body {
        let at = match l.time {
            Time::Abs(x) => x,
            Time::Rel(d) => t.saturating_add(d),
            Time::Any | Time::Now => t,
        };
        if at < t {
            r.fail(l.no, "time goes backwards".into());
            continue;
        }
        // Frames the guest sends at one instant reach the core as one batch:
        // the clock runs only when something else comes.
        let batching = matches!(l.ev, Ev::Inject(_)) && at == t && r.pending_inject;
        t = at;
        if !batching {
            r.sim.run_until(Instant::from_nanos(at));
        }
        r.pending_inject = matches!(l.ev, Ev::Inject(_));
        match &l.ev {
            Ev::Inject(spec) => match r.build_frame(spec) {
                Ok(f) => {
                    // Keep relative numbering for `>` lines in step.
                    if let Some(seg) = frame::parse_tcp(&f) {
                        r.expect_seqs.rel_seq(
                            seg.src,
                            seg.dst,
                            seg.seq,
                            seg.flags & flags::SYN != 0,
                        );
                    }
                    // Delivered when the clock next runs: guest frames sent at
                    // the same instant reach the core as one batch.
                    r.sim.guest_send(&f);
                }
                Err(e) => r.fail(l.no, e),
            },
            Ev::Expect(p) => {
                if l.time == Time::Any {
                    // Wait until something arrives (bounded).
                    for _ in 0..10_000 {
                        if !r.sim.guest_inbox.is_empty() {
                            break;
                        }
                        match r.sim.next_event() {
                            Some(n) => r.sim.run_until(n),
                            None => break,
                        }
                    }
                    t = r.sim.now().as_nanos();
                }
                r.expect(l.no, l.time, p)
            }
            Ev::Sys(s) => r.syscall(l.no, s),
            Ev::Directive(w) => r.directive(l.no, w),
        }
    }
    r.sim.run_for(setup.settle);
    if faulty {
        r.sim.note("sim", "heal: faults off");
        r.sim
            .set_links(LinkProfile::default(), LinkProfile::default());
        r.sim.set_tx(crate::tx::TxProfile::default());
        r.sim.run_for(setup.heal);
    }
    let leftover = r.sim.guest_inbox.len();
    if leftover > 0 && !opts.lenient && !r.drain_at_end {
        let first = frame::summarize(&r.sim.guest_inbox[0].1, &mut r.expect_seqs.clone());
        r.failures.push(format!(
            "{leftover} frames reached the guest unchecked, first: {first}"
        ));
    }
    let mut violations = r.sim.finish();
    // Known violations (a bug found and not fixed yet) are reported but do not
    // fail the run; a known violation that no longer happens does. They match
    // invariant violations and expectation failures alike.
    for k in &setup.known {
        let before = violations.len() + r.failures.len();
        violations.retain(|v| !v.contains(k.as_str()));
        r.failures.retain(|v| !v.contains(k.as_str()));
        let after = violations.len() + r.failures.len();
        if before == after && !opts.lenient {
            r.failures.push(format!(
                "known violation `{k}` did not happen: remove it from the scenario"
            ));
        } else if before != after {
            r.sim.note(
                "sim",
                format!("known violation `{k}` happened {} times", before - after),
            );
        }
    }
    // Known to happen under faults only (a bug pinned by another case).
    if opts.lenient {
        violations.retain(|v| !setup.sweep_known.iter().any(|k| v.contains(k.as_str())));
    }
    let mut out = vec![header];
    out.extend(r.sim.timeline.iter().cloned());
    out.push("--- end".into());
    out.extend(r.sim.summary());
    if violations.is_empty() {
        out.push("invariants: ok".into());
    } else {
        out.push(format!("invariants: {} violated", violations.len()));
    }
    let replay = r
        .sim
        .replay
        .as_ref()
        .map(|x| x.report(r.sim.now().as_nanos()));
    let mut metrics = Metrics {
        completion: if r.sim.guests.iter().all(|g| g.done_at.is_some()) && !r.sim.guests.is_empty()
        {
            r.sim
                .guests
                .iter()
                .filter_map(|g| g.done_at)
                .max()
                .map(Duration::from_nanos)
        } else {
            None
        },
        guest_retransmits: r.sim.guests.iter().map(|g| g.retransmits).sum(),
        guest_received: r.sim.guests.iter().map(|g| g.received).sum(),
        frames_to_core: r.sim.stats.frames_to_core,
        frames_from_core: r.sim.stats.frames_from_core,
        frames_refused: r.sim.stats.frames_refused,
        core_frames_out: r.sim.core.counters().frames_out,
        gso_frames: r.sim.gso_frames(),
        idle_wakeups: r.sim.stats.idle_wakeups,
        stalls: 0,
        longest_stall: Duration::ZERO,
        bytes: r
            .sim
            .guests
            .iter()
            .map(|g| {
                g.received
                    + if g.done_at.is_some() {
                        u64::from(g.total)
                    } else {
                        0
                    }
            })
            .sum(),
    };
    if let Some(rep) = &replay {
        // A replay's figures: its connections' completion (from the
        // replay's start), retransmissions and stalls.
        metrics.completion = if r.sim.guests.is_empty() || metrics.completion.is_some() {
            rep.completion_ns()
                .filter(|_| rep.complete())
                .map(Duration::from_nanos)
                .map(|d| metrics.completion.map_or(d, |c| c.max(d)))
        } else {
            None
        };
        metrics.guest_retransmits += rep.conns.iter().map(|c| c.retransmits).sum::<u64>();
        metrics.guest_received += rep.conns.iter().map(|c| c.bytes[1]).sum::<u64>();
        metrics.stalls = rep.conns.iter().map(|c| c.stalls.len() as u64).sum();
        metrics.bytes += rep
            .conns
            .iter()
            .map(|c| c.bytes[0] + c.bytes[1])
            .sum::<u64>();
        metrics.longest_stall = Duration::from_nanos(
            rep.conns
                .iter()
                .map(crate::replay::ConnReport::longest_stall)
                .max()
                .unwrap_or(0),
        );
    }
    let realized = realize(sc, &r.sim.delivered, &r.realized_sys, &setup_lines(sc));
    Ok(RunResult {
        timeline: out.join("\n") + "\n",
        violations,
        failures: r.failures,
        wire: std::mem::take(&mut r.sim.wire),
        realized,
        metrics,
        replay,
    })
}

pub(super) fn setup_lines(sc: &Scenario) -> Vec<Line> {
    let mut out = Vec::new();
    for l in &sc.lines {
        match &l.ev {
            Ev::Directive(w)
                if matches!(
                    w.first().map(String::as_str),
                    Some(
                        "config" | "host" | "peer" | "default-peer" | "settle" | "known-violation"
                    )
                ) =>
            {
                out.push(l.clone())
            }
            Ev::Directive(w)
                if matches!(
                    w.first().map(String::as_str),
                    Some("seed" | "faults" | "link" | "heal")
                ) => {}
            Ev::Directive(_) => {}
            _ => break,
        }
    }
    out
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fault-free scenario that replays what a run delivered, batch by batch.
pub(super) fn realize(
    sc: &Scenario,
    delivered: &[(Instant, u64, Vec<u8>)],
    sys: &[(Instant, usize, String)],
    setup: &[Line],
) -> Scenario {
    let mut lines: Vec<Line> = setup.to_vec();
    // Order of occurrence: a host operation done after k frames were
    // delivered comes right before frame k.
    let mut events: Vec<(Instant, usize, String)> = Vec::new();
    let mut last_batch = None;
    for (i, (t, b, f)) in delivered.iter().enumerate() {
        if last_batch.is_some_and(|l| l != *b) {
            events.push((*t, 2 * i, "`sim flush`".into()));
        }
        last_batch = Some(*b);
        events.push((*t, 2 * i + 1, format!("< raw {}", hex(f))));
    }
    for (t, k, s) in sys {
        events.push((*t, 2 * k, s.clone()));
    }
    events.sort_by_key(|e| (e.1, e.0));
    for (t, _, s) in events {
        // Nanoseconds: frames a few hundred ns apart must not merge into
        // one batch when the file is read back.
        let ns = t.as_nanos();
        let text = format!("{}.{:09} {s}", ns / 1_000_000_000, ns % 1_000_000_000);
        let ev = if let Some(p) = s.strip_prefix("< ") {
            Ev::Inject(p.to_string())
        } else if let Some(d) = s.strip_prefix("`sim ").and_then(|d| d.strip_suffix('`')) {
            Ev::Directive(d.split_whitespace().map(str::to_string).collect())
        } else {
            Ev::Sys(s.clone())
        };
        lines.push(Line {
            no: 0,
            time: Time::Abs(t.as_nanos()),
            ev,
            text,
        });
    }
    Scenario {
        name: format!("{}-realized", sc.name),
        dir: sc.dir.clone(),
        description: sc.description.clone(),
        lines,
    }
}

/// Shrinks a failing fault-free scenario: removes event lines (delta
/// debugging) while `fails` still holds. Set-up directives are kept.
pub fn shrink(sc: &Scenario, fails: &dyn Fn(&Scenario) -> bool) -> Scenario {
    let fixed: Vec<bool> = sc
        .lines
        .iter()
        .map(
            |l| matches!(&l.ev, Ev::Directive(w) if w.first().map(String::as_str) != Some("flush")),
        )
        .collect();
    let mut keep = vec![true; sc.lines.len()];
    let mut chunk = sc.lines.len().div_ceil(2).max(1);
    let mut budget = 2000;
    loop {
        let mut progress = false;
        let mut start = 0;
        while start < keep.len() && budget > 0 {
            let idx: Vec<usize> = (start..keep.len())
                .filter(|&i| keep[i] && !fixed[i])
                .take(chunk)
                .collect();
            if idx.is_empty() {
                break;
            }
            let mut trial = keep.clone();
            for &i in &idx {
                trial[i] = false;
            }
            budget -= 1;
            if fails(&sc.without(&trial)) {
                keep = trial;
                progress = true;
            } else {
                start = idx.last().map_or(keep.len(), |l| l + 1);
            }
        }
        if budget == 0 || (chunk == 1 && !progress) {
            break;
        }
        if !progress {
            chunk = chunk.div_ceil(2);
        }
    }
    sc.without(&keep)
}
