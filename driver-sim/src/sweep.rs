//! Fault profiles, seed sweeps and shrinking of failures into scenarios.

use crate::link::LinkProfile;
use crate::scenario::{run, shrink, RunOptions, Scenario};
use crate::sim::PlantedBug;
use crate::tx::TxProfile;
use passt_core::Rng;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Impairments of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Guest-to-core direction.
    pub to_core: LinkProfile,
    /// Core-to-guest direction.
    pub to_guest: LinkProfile,
    /// How the guest link takes the core's frames.
    pub tx: TxProfile,
    /// Host send buffer, if changed.
    pub sndbuf: Option<u32>,
    /// Host receive buffer, if changed.
    pub rcvbuf: Option<u32>,
}

/// Names of the fault profiles.
pub const PROFILES: &[&str] = &[
    "none",
    "lossy",
    "dup",
    "reorder",
    "chaos",
    "host",
    "backpressure",
    "swarm",
];

/// The fault profile `name` for `seed`. `swarm` draws every impairment and
/// its size from the seed; the others are fixed.
// Long by design: a table: one arm per fault profile.
pub fn profile(name: &str, seed: u64) -> Result<Faults, String> {
    let both = |p: LinkProfile| Faults {
        to_core: p.clone(),
        to_guest: p,
        ..Default::default()
    };
    Ok(match name {
        "none" => Faults::default(),
        "lossy" => both(LinkProfile {
            loss: 0.05,
            ..Default::default()
        }),
        "dup" => both(LinkProfile {
            dup: 0.1,
            ..Default::default()
        }),
        "reorder" => both(LinkProfile {
            reorder: 0.3,
            reorder_ns: 5_000_000,
            ..Default::default()
        }),
        "chaos" => both(LinkProfile {
            loss: 0.05,
            dup: 0.05,
            reorder: 0.2,
            reorder_ns: 5_000_000,
            jitter_ns: 1_000_000,
            ..Default::default()
        }),
        "host" => Faults {
            sndbuf: Some(4096),
            rcvbuf: Some(4096),
            ..Default::default()
        },
        // A guest link that takes part of what it is given, or nothing for
        // a while (a guest slow to post receive buffers, a full socket), and
        // lends few slots at a time; clean otherwise.
        "backpressure" => {
            let mut r = Rng::derive(seed, 5);
            Faults {
                tx: TxProfile {
                    partial: 0.05 + r.unit() * 0.45,
                    busy_ns: r.range(10_000, 20_000_000),
                    max_slots: [0, 1, 2, 4, 16, 64][r.below(6) as usize],
                },
                ..Default::default()
            }
        }
        "swarm" => {
            let mut r = Rng::derive(seed, 3);
            let draw = |r: &mut Rng| {
                let mut p = LinkProfile::default();
                if r.chance(0.5) {
                    p.loss = r.unit() * 0.3;
                }
                if r.chance(0.5) {
                    p.dup = r.unit() * 0.3;
                }
                if r.chance(0.5) {
                    p.reorder = r.unit() * 0.5;
                    p.reorder_ns = r.range(100_000, 20_000_000);
                }
                if r.chance(0.5) {
                    p.delay_ns = r.range(0, 10_000_000);
                    p.jitter_ns = r.range(0, 2_000_000);
                }
                if r.chance(0.2) {
                    p.corrupt = r.unit() * 0.05;
                }
                if r.chance(0.2) {
                    p.mtu = Some(r.range(576, 9000) as usize);
                }
                p
            };
            let to_core = draw(&mut r);
            let to_guest = draw(&mut r);
            let bufs = [2304u32, 4096, 16384, 65536, 212_992];
            let sndbuf = r
                .chance(0.5)
                .then(|| bufs[r.below(bufs.len() as u64) as usize]);
            let rcvbuf = r
                .chance(0.5)
                .then(|| bufs[r.below(bufs.len() as u64) as usize]);
            let tx = if r.chance(0.3) {
                TxProfile {
                    partial: r.unit() * 0.5,
                    busy_ns: r.range(10_000, 20_000_000),
                    max_slots: [0, 1, 4, 16][r.below(4) as usize],
                }
            } else {
                TxProfile::default()
            };
            Faults {
                to_core,
                to_guest,
                sndbuf,
                rcvbuf,
                tx,
            }
        }
        _ => {
            return Err(format!(
                "unknown fault profile `{name}` (known: {})",
                PROFILES.join(", ")
            ))
        }
    })
}

/// One failing seed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What went wrong.
    pub problems: Vec<String>,
}

/// What a sweep found.
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Seeds run.
    pub runs: u64,
    /// Failing seeds.
    pub failures: Vec<Failure>,
    /// The smallest failing case, as a fault-free scenario, with its seed and
    /// the violation it reproduces.
    pub shrunk: Option<(u64, Scenario, String)>,
}

/// The kind of a violation: `"12.5: ACK honesty: ..."` → `"ACK honesty"`.
fn kind(v: &str) -> String {
    v.split(": ").nth(1).unwrap_or(v).to_string()
}

fn run_problems(sc: &Scenario, opts: &RunOptions) -> Vec<String> {
    match catch_unwind(AssertUnwindSafe(|| run(sc, opts))) {
        Ok(Ok(r)) => r.violations,
        Ok(Err(e)) => vec![format!("0: script: {e}")],
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            vec![format!("0: panic: {msg}")]
        }
    }
}

/// Runs `sc` with seeds `seeds` under fault profile `faults`, leniently
/// (invariants only), and shrinks the smallest of the first few failures.
pub fn sweep(
    sc: &Scenario,
    seeds: Range<u64>,
    faults: &str,
    planted: Option<PlantedBug>,
) -> Result<SweepReport, String> {
    profile(faults, 0)?;
    let mut rep = SweepReport::default();
    for seed in seeds {
        let opts = lenient(seed, faults, planted, None);
        rep.runs += 1;
        let problems = run_problems(sc, &opts);
        if !problems.is_empty() {
            rep.failures.push(Failure { seed, problems });
        }
    }
    for f in rep.failures.iter().take(3) {
        let opts = lenient(f.seed, faults, planted, None);
        let Ok(Ok(r)) = catch_unwind(AssertUnwindSafe(|| run(sc, &opts))) else {
            continue;
        };
        let Some(first) = r.violations.first().cloned() else {
            continue;
        };
        let want = kind(&first);
        let replay = lenient(f.seed, "none", planted, None);
        let fails = |s: &Scenario| run_problems(s, &replay).iter().any(|v| kind(v) == want);
        if !fails(&r.realized) {
            // The failure depends on the core-to-guest link or timing the
            // replay does not reproduce: keep the seed only.
            continue;
        }
        let mut small = shrink(&r.realized, &fails);
        // What is written must fail the same way once read back.
        match Scenario::parse(&small.name, &small.dir, &small.to_text()) {
            Ok(back) if fails(&back) => {}
            _ => continue,
        }
        small.name = format!("{}-seed{}", sc.name, f.seed);
        small.description = format!(
            "Shrunk from {} seed {} with faults {}: {}",
            sc.name, f.seed, faults, first
        );
        let better = rep
            .shrunk
            .as_ref()
            .is_none_or(|(_, s, _)| small.len() < s.len());
        if better {
            rep.shrunk = Some((f.seed, small, first));
        }
    }
    Ok(rep)
}

/// The options of a lenient run (invariants only) of one seed.
fn lenient(
    seed: u64,
    faults: &str,
    planted: Option<PlantedBug>,
    policy: Option<&str>,
) -> RunOptions {
    RunOptions {
        planted,
        policy: policy.map(str::to_string),
        ..RunOptions::lenient(seed, faults)
    }
}

/// Left- or right-aligned columns of a text table, one space apart.
fn render_columns(cols: &[(&str, usize, bool)], rows: impl Iterator<Item = Vec<String>>) -> String {
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, ((_, w, left), c)) in cols.iter().zip(cells).enumerate() {
            if i > 0 {
                l.push(' ');
            }
            if *left {
                l.push_str(&format!("{c:<w$}"));
            } else {
                l.push_str(&format!("{c:>w$}"));
            }
        }
        l.push('\n');
        l
    };
    let mut s = line(cols.iter().map(|c| c.0.to_string()).collect());
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

/// What the rows of both tables count over the seeds of one cell.
#[derive(Default)]
struct Tally {
    runs: u64,
    failing: u64,
    /// Completion times of the runs that completed (ms).
    times: Vec<f64>,
    retx: u64,
}

impl Tally {
    fn add(&mut self, r: &crate::scenario::RunResult) {
        self.runs += 1;
        if !r.violations.is_empty() {
            self.failing += 1;
        }
        if let Some(t) = r.metrics.completion {
            self.times.push(t.as_secs_f64() * 1000.0);
        }
        self.retx += r.metrics.guest_retransmits;
    }

    /// Median and worst completion time, once `times` is sorted.
    fn median_worst(&self) -> (f64, f64) {
        (
            self.times
                .get(self.times.len() / 2)
                .copied()
                .unwrap_or(f64::NAN),
            self.times.last().copied().unwrap_or(f64::NAN),
        )
    }
}

/// The columns both tables share: runs, failing and completed ones, and the
/// median and worst completion time (`ms_width` wide, the worst one less).
fn count_cols(ms_width: usize) -> [(&'static str, usize, bool); 5] {
    [
        ("runs", 5, false),
        ("failing", 7, false),
        ("completed", 9, false),
        ("median_ms", ms_width, false),
        ("worst_ms", ms_width - 1, false),
    ]
}

/// A row's runs, failing runs, completed runs, and median and worst
/// completion times (ms): the cells under [`count_cols`].
type Counts = (u64, u64, u64, (f64, f64));

/// A table of `lead` columns, [`count_cols`] (`ms_width`), then `tail`
/// columns; `cells` gives each row's cells in the same three parts.
fn render_counted<R>(
    lead: &[(&'static str, usize, bool)],
    ms_width: usize,
    tail: &[(&'static str, usize, bool)],
    rows: &[R],
    cells: impl Fn(&R) -> (Vec<String>, Counts, Vec<String>),
) -> String {
    let cols = [lead, &count_cols(ms_width), tail].concat();
    render_columns(
        &cols,
        rows.iter().map(|r| {
            let (mut line, (runs, failing, completed, ms), tail) = cells(r);
            line.extend([
                runs.to_string(),
                failing.to_string(),
                completed.to_string(),
                format!("{:.1}", ms.0),
                format!("{:.1}", ms.1),
            ]);
            line.extend(tail);
            line
        }),
    )
}

/// One row of a research table: a fault profile over many seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRow {
    /// Fault profile.
    pub profile: String,
    /// Runs.
    pub runs: u64,
    /// Runs with a violation.
    pub failing: u64,
    /// Runs whose model endpoints all finished.
    pub completed: u64,
    /// Median and worst completion time of those, in milliseconds.
    pub completion_ms: (f64, f64),
    /// Mean retransmissions by the model endpoints per run.
    pub retransmits: f64,
    /// Mean frames to and from the core per run.
    pub frames: (f64, f64),
}

/// Runs `sc` under each profile for `seeds` and gathers figures: a research
/// table (how the translation copes with each kind of impairment).
pub fn table(sc: &Scenario, seeds: Range<u64>, profiles: &[&str]) -> Result<Vec<TableRow>, String> {
    let mut rows = Vec::new();
    for p in profiles {
        profile(p, 0)?;
        let mut tally = Tally::default();
        let (mut fin, mut fout) = (0u64, 0u64);
        for seed in seeds.clone() {
            let r = run(sc, &lenient(seed, p, None, None))?;
            tally.add(&r);
            fin += r.metrics.frames_to_core;
            fout += r.metrics.frames_from_core;
        }
        tally.times.sort_by(f64::total_cmp);
        let n = tally.runs.max(1) as f64;
        rows.push(TableRow {
            profile: p.to_string(),
            runs: tally.runs,
            failing: tally.failing,
            completed: tally.times.len() as u64,
            completion_ms: tally.median_worst(),
            retransmits: tally.retx as f64 / n,
            frames: (fin as f64 / n, fout as f64 / n),
        });
    }
    Ok(rows)
}

/// A research table as text.
pub fn render_table(rows: &[TableRow]) -> String {
    let tail = [
        ("retx/run", 9, false),
        ("to_core/run", 11, false),
        ("from_core/run", 11, false),
    ];
    render_counted(&[("profile", 8, true)], 11, &tail, rows, |r| {
        let counts = (r.runs, r.failing, r.completed, r.completion_ms);
        let tail = [r.retransmits, r.frames.0, r.frames.1].map(|x| format!("{x:.1}"));
        (vec![r.profile.clone()], counts, tail.to_vec())
    })
}

/// One row of a policy table: a TCP policy of the core under a fault
/// profile, over many seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRow {
    /// The policy's name ([`passt_core::TcpPolicy::named`]).
    pub policy: String,
    /// Fault profile.
    pub profile: String,
    /// Runs.
    pub runs: u64,
    /// Runs with an invariant violation (for policies other than the
    /// shipped one, often the window-stall check).
    pub failing: u64,
    /// Runs whose model endpoints all finished.
    pub completed: u64,
    /// Median and worst completion time of those (ms).
    pub completion_ms: (f64, f64),
    /// Median throughput of those: bytes delivered per second of virtual
    /// time, in MB/s.
    pub throughput_mbs: f64,
    /// Mean stalls per run: intervals of [`POLICY_STALL_NS`] or more with
    /// something to deliver and no progress.
    pub stalls: f64,
    /// The longest stall of all runs (ms).
    pub longest_stall_ms: f64,
    /// Mean segments the guest's endpoints sent again per run.
    pub retransmits: f64,
}

/// Stall threshold of policy tables.
pub const POLICY_STALL_NS: u64 = 200_000_000;

/// Stalls of a run: a replay's own, else those its frames show (data in
/// flight and no acknowledgement moving, per connection).
fn run_stalls(r: &crate::scenario::RunResult) -> (u64, u64) {
    if r.replay.is_some() {
        return (
            r.metrics.stalls,
            u64::try_from(r.metrics.longest_stall.as_nanos()).unwrap_or(u64::MAX),
        );
    }
    let Ok(cap) = crate::plot::capture_of_run("run", r) else {
        return (0, 0);
    };
    let d = crate::replay::capture::derive(&cap, POLICY_STALL_NS);
    let all: Vec<u64> = d
        .original
        .values()
        .flat_map(|o| o.stalls.iter().map(|s| s.1))
        .collect();
    (all.len() as u64, all.iter().copied().max().unwrap_or(0))
}

/// Runs `sc` under each TCP policy and fault profile for `seeds`: a table
/// of throughput, stalls and retransmissions per policy.
pub fn policy_table(
    sc: &Scenario,
    seeds: Range<u64>,
    policies: &[&str],
    profiles: &[&str],
) -> Result<Vec<PolicyRow>, String> {
    let mut rows = Vec::new();
    for pol in policies {
        if passt_core::TcpPolicy::named(pol).is_none() {
            return Err(format!(
                "unknown TCP policy `{pol}` (known: {})",
                passt_core::TcpPolicy::NAMES.join(", ")
            ));
        }
        for p in profiles {
            profile(p, 0)?;
            let mut tally = Tally::default();
            let (mut stalls, mut longest) = (0u64, 0u64);
            let mut rates = Vec::new();
            for seed in seeds.clone() {
                let r = run(sc, &lenient(seed, p, None, Some(pol)))?;
                tally.add(&r);
                if let Some(t) = r.metrics.completion {
                    if t > std::time::Duration::ZERO {
                        rates.push(r.metrics.bytes as f64 / t.as_secs_f64() / 1e6);
                    }
                }
                let (n, l) = run_stalls(&r);
                stalls += n;
                longest = longest.max(l);
            }
            tally.times.sort_by(f64::total_cmp);
            rates.sort_by(f64::total_cmp);
            let n = tally.runs.max(1) as f64;
            rows.push(PolicyRow {
                policy: pol.to_string(),
                profile: p.to_string(),
                runs: tally.runs,
                failing: tally.failing,
                completed: tally.times.len() as u64,
                completion_ms: tally.median_worst(),
                throughput_mbs: rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN),
                stalls: stalls as f64 / n,
                longest_stall_ms: longest as f64 / 1e6,
                retransmits: tally.retx as f64 / n,
            });
        }
    }
    Ok(rows)
}

/// A policy table as text.
pub fn render_policy_table(rows: &[PolicyRow]) -> String {
    let lead = [("policy", 13, true), ("profile", 8, true)];
    let tail = [
        ("MB/s", 8, false),
        ("stalls/run", 10, false),
        ("longest_stall_ms", 15, false),
        ("retx/run", 9, false),
    ];
    render_counted(&lead, 10, &tail, rows, |r| {
        let counts = (r.runs, r.failing, r.completed, r.completion_ms);
        let tail = vec![
            format!("{:.1}", r.throughput_mbs),
            format!("{:.2}", r.stalls),
            format!("{:.1}", r.longest_stall_ms),
            format!("{:.1}", r.retransmits),
        ];
        (vec![r.policy.clone(), r.profile.clone()], counts, tail)
    })
}

/// The time-sequence graphs of one run per policy (seed `seed`, fault
/// profile `faults`) of one connection (`flow`: a port or `ADDR:PORT` of
/// either end; `None`: the one that carried the most data), to draw side
/// by side with [`crate::plot::svg`] (`passt-sim table --policies --plot`).
pub fn policy_plot(
    sc: &Scenario,
    seed: u64,
    faults: &str,
    policies: &[&str],
    flow: Option<&str>,
) -> Result<Vec<crate::plot::TimeSeq>, String> {
    profile(faults, seed)?;
    let mut panels = Vec::new();
    for pol in policies {
        let r = run(sc, &lenient(seed, faults, None, Some(pol)))?;
        let cap = crate::plot::capture_of_run(&sc.name, &r)?;
        panels.push(crate::plot::TimeSeq::from_capture(
            &cap,
            flow,
            None,
            &format!("{pol}, {faults} seed {seed}"),
        )?);
    }
    Ok(panels)
}

/// Parses `A..B` (or a single seed).
pub fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.parse().map_err(|_| format!("bad seed `{a}`"))?;
            let b: u64 = b.parse().map_err(|_| format!("bad seed `{b}`"))?;
            if b < a {
                return Err("empty seed range".into());
            }
            Ok(a..b)
        }
        None => {
            let a: u64 = s.parse().map_err(|_| format!("bad seed `{s}`"))?;
            Ok(a..a + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles() {
        for p in PROFILES {
            profile(p, 1).unwrap();
        }
        assert!(profile("nope", 1).is_err());
        assert_eq!(profile("swarm", 5), profile("swarm", 5));
        let distinct = (0..20)
            .map(|s| format!("{:?}", profile("swarm", s).unwrap()))
            .collect::<std::collections::BTreeSet<_>>();
        assert!(distinct.len() > 15);
        assert_eq!(parse_seeds("3..7"), Ok(3..7));
        assert_eq!(parse_seeds("9"), Ok(9..10));
        assert!(parse_seeds("7..3").is_err());
        assert!(parse_seeds("x..3").is_err());
        assert_eq!(kind("1.0: ACK honesty: x: y"), "ACK honesty");
    }

    const SERVICES: &str = "# services\n`sim config capture`\n\
        0 < arp who-has 10.77.0.1\n\
        +0.1 < dhcp discover xid 0x1234\n\
        +0.1 < rs\n\
        +0.1 < ns fd77::1\n\
        +0.1 < dhcpv6 solicit\n";

    /// A driver bug planted on purpose (the second descriptor of a batch one
    /// byte short) is caught by the malformed-drop invariant once duplication
    /// puts two frames into one batch, and the failure shrinks to a two-frame
    /// scenario that fails without any faults, and passes without the bug.
    /// The violations of a lenient run of `sc` without faults, with `planted`.
    fn lenient_violations(sc: &Scenario, planted: Option<PlantedBug>) -> Vec<String> {
        let opts = RunOptions {
            planted,
            lenient: true,
            ..Default::default()
        };
        run(sc, &opts).unwrap().violations
    }

    #[test]
    fn planted_bug_is_caught_and_shrunk() {
        let sc = Scenario::parse("services", std::path::Path::new("."), SERVICES).unwrap();
        let clean = sweep(&sc, 0..20, "dup", None).unwrap();
        assert!(clean.failures.is_empty(), "{:?}", clean.failures);
        let bug = Some(PlantedBug::TruncateSecondOfBatch);
        let rep = sweep(&sc, 0..20, "dup", bug).unwrap();
        assert!(!rep.failures.is_empty(), "the planted bug went unnoticed");
        assert!(rep
            .failures
            .iter()
            .all(|f| f.problems.iter().all(|p| p.contains("malformed drops"))));
        let (seed, small, why) = rep.shrunk.expect("a shrunk case");
        assert!(why.contains("malformed drops"), "{why}");
        let text = small.to_text();
        assert_eq!(text.matches("< raw").count(), 2, "{text}");
        assert!(
            text.starts_with(&format!(
                "# Shrunk from services seed {seed} with faults dup"
            )),
            "{text}"
        );
        // The shrunk file reproduces on its own, without faults.
        let again = Scenario::parse("again", std::path::Path::new("."), &text).unwrap();
        let v = lenient_violations(&again, bug);
        assert!(v.iter().any(|v| v.contains("malformed drops")), "{v:?}");
        let v = lenient_violations(&again, None);
        assert!(v.is_empty(), "{v:?}");
    }

    /// A partial write reported one byte long (`AckOneMore`) makes the core
    /// acknowledge a byte its socket never took: the ACK-honesty invariant
    /// catches it, and the failure shrinks to a replayable scenario.
    #[test]
    fn planted_ack_bug_is_caught_and_shrunk() {
        let text = "# partial write\n`sim config capture`\n`sim host sndbuf 4096 rcvbuf 4096`\n\
            `sim flow 10.77.0.2:40000 > 192.0.2.1:8080`\n\
            0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\
            +0 bind(3, ..., ...) = 0\n\
            +0 listen(3, 1) = 0\n\
            +0 < S 0:0(0) win 65535 <mss 1460>\n\
            +0.01 < . 1:1(0) ack 1 win 65535\n\
            +0 < . 1:1461(1460) ack 1 win 65535\n\
            +0 < . 1461:2921(1460) ack 1 win 65535\n\
            +0 < . 2921:4381(1460) ack 1 win 65535\n\
            +0 < . 4381:5841(1460) ack 1 win 65535\n\
            +0.1 accept(3, ..., ...) = 4\n";
        let sc = Scenario::parse("partial", std::path::Path::new("."), text).unwrap();
        let clean = sweep(&sc, 0..3, "none", None).unwrap();
        assert!(clean.failures.is_empty(), "{:?}", clean.failures);
        let bug = Some(PlantedBug::AckOneMore);
        let rep = sweep(&sc, 0..3, "none", bug).unwrap();
        assert_eq!(rep.failures.len(), 3, "the planted bug went unnoticed");
        let (_, small, why) = rep.shrunk.expect("a shrunk case");
        assert!(why.contains("ACK honesty"), "{why}");
        assert!(small.len() < sc.len(), "{}", small.to_text());
        // Written as a scenario file and loaded back, it still fails.
        let dir = std::env::temp_dir().join(format!("passt-sim-shrunk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("scenario.pkt"), small.to_text()).unwrap();
        let again = Scenario::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let v = lenient_violations(&again, bug);
        assert!(v.iter().any(|v| v.contains("ACK honesty")), "{v:?}");
    }

    #[test]
    fn research_table() {
        let text = "# t\n`sim config capture`\n`sim peer 192.0.2.1:80 sink`\n0 `sim guest-tcp connect 192.0.2.1:80 send 20000`\n";
        let sc = Scenario::parse("t", std::path::Path::new("."), text).unwrap();
        let rows = table(&sc, 0..3, &["none", "lossy"]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].runs, rows[0].failing, rows[0].completed),
            (3, 0, 3)
        );
        assert_eq!(rows[0].retransmits, 0.0);
        assert!(rows[0].frames.0 > 10.0);
        let text = render_table(&rows);
        assert!(text.starts_with("profile"), "{text}");
        assert_eq!(text.lines().count(), 3);
        assert!(table(&sc, 0..1, &["bogus"]).is_err());
    }
}
