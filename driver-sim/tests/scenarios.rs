//! Runs every scenario under `tests/scenarios/` and checks its timeline
//! against the snapshot in `snapshots/sim/`; runs each twice to check that
//! the simulator is deterministic; sweeps a few seeds of faults over each.

use passt_driver_sim::scenario::{run, RunOptions, Scenario};
use passt_driver_sim::sweep::sweep;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn scenario_dirs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("scenario.pkt").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "scenario corpus missing: {dirs:?}");
    dirs
}

#[test]
fn scenarios_match_snapshots_and_expectations() {
    let mut problems = Vec::new();
    for dir in scenario_dirs() {
        let sc = Scenario::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !sc.description.is_empty(),
            "{}: first line must be a `#` description",
            sc.name
        );
        let r = run(&sc, &RunOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", sc.name));
        for f in r.failures.iter().chain(&r.violations) {
            problems.push(format!("{}: {f}", sc.name));
        }
        let again = run(&sc, &RunOptions::default()).expect("second run");
        if again.timeline != r.timeline {
            problems.push(format!("{}: two runs gave different timelines", sc.name));
        }
        let name = sc.name.clone();
        let desc = sc.description.clone();
        let snap = catch_unwind(AssertUnwindSafe(|| {
            insta::with_settings!({
                snapshot_path => "../../snapshots/sim",
                prepend_module_to_snapshot => false,
                description => desc,
                omit_expression => true,
            }, {
                insta::assert_snapshot!(name, r.timeline);
            });
        }));
        if snap.is_err() {
            problems.push(format!(
                "{}: timeline differs from snapshots/sim/{}.snap",
                sc.name, sc.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The CI sweep: a few seeds of loss, reordering and duplication over every
/// scenario; every invariant must hold. (`passt-sim sweep` runs thousands.)
#[test]
fn small_sweep_passes_invariants() {
    let seeds = std::env::var("SIM_SWEEP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6u64);
    let dirs: Vec<PathBuf> = scenario_dirs();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let problems = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(dir) = dirs.get(i) else { break };
                let sc = Scenario::load(dir).expect("scenario");
                if sc.has_known_violations() {
                    continue;
                }
                for profile in ["chaos", "swarm"] {
                    let rep = sweep(&sc, 0..seeds, profile, None).expect("sweep");
                    for f in rep.failures {
                        problems.lock().expect("lock").push(format!(
                            "{} seed {} {profile}: {}",
                            sc.name,
                            f.seed,
                            f.problems.join("; ")
                        ));
                    }
                }
            });
        }
    });
    let mut problems = problems.into_inner().expect("lock");
    problems.sort();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A small research table of the bulk case under faults, snapshotted: a change
/// in how the translation copes with loss or reordering shows up as a diff.
#[test]
fn research_table_of_bulk_transfer() {
    use passt_driver_sim::sweep::{render_table, table};
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/tcp-bulk-both-ways");
    let sc = Scenario::load(&dir).expect("scenario");
    let rows = table(&sc, 0..4, &["none", "lossy", "reorder", "chaos"]).expect("table");
    assert!(rows.iter().all(|r| r.failing == 0), "{rows:?}");
    let text = render_table(&rows);
    insta::with_settings!({
        snapshot_path => "../../snapshots/sim",
        prepend_module_to_snapshot => false,
        description => "tcp-bulk-both-ways, seeds 0..4: completion time, retransmissions and frames per fault profile",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("research-tcp-bulk", text);
    });
}
