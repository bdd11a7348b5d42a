//! TCP policies of the core compared in the simulator: a table of
//! throughput, stalls and retransmissions per window policy and fault
//! profile, snapshotted, so that a change in how the translation sizes and
//! reopens its window shows up as a reviewed diff.

use passt_driver_sim::plot::{svg, SERIES};
use passt_driver_sim::scenario::{run, RunOptions, Scenario};
use passt_driver_sim::sweep::{policy_plot, policy_table, render_policy_table};
use std::path::PathBuf;

fn scenario(name: &str) -> Scenario {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(name);
    Scenario::load(&dir).expect("scenario")
}

/// The slow-then-fast reader (the window closes for 100 ms, then the reader
/// takes everything) under three window policies and three fault profiles.
#[test]
fn window_policies_under_faults() {
    let sc = scenario("tcp-window-slow-then-fast-1500");
    let policies = ["shipped", "reopen-half", "window-whole"];
    let profiles = ["none", "lossy", "reorder"];
    let rows = policy_table(&sc, 0..3, &policies, &profiles).expect("table");
    assert_eq!(rows.len(), 9);
    let row = |p: &str, f: &str| {
        rows.iter()
            .find(|r| r.policy == p && r.profile == f)
            .expect("row")
    };
    // What ships keeps every invariant, the window-stall check included.
    assert_eq!(row("shipped", "none").failing, 0, "{rows:?}");
    // Waiting for half the buffer leaves the window closed while the socket
    // has room: the check catches it, and the transfer takes longer.
    assert_eq!(row("reopen-half", "none").failing, 3, "{rows:?}");
    assert!(
        row("reopen-half", "none").completion_ms.0 > row("shipped", "none").completion_ms.0,
        "{rows:?}"
    );
    for r in &rows {
        assert_eq!(r.completed, r.runs, "every run finishes: {r:?}");
    }
    let text = render_policy_table(&rows);
    insta::with_settings!({
        snapshot_path => "../../snapshots/sim",
        prepend_module_to_snapshot => false,
        description => "tcp-window-slow-then-fast-1500, seeds 0..3: throughput, stalls and retransmissions per TCP policy (shipped, reopen-half, window-whole) and fault profile (none, lossy, reorder)",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("research-policies", text);
    });
}

/// A policy named in a run shows in its header; an unknown one is an error
/// that names the known ones.
#[test]
fn policies_by_name() {
    let sc = scenario("tcp-outbound-basic");
    let r = run(
        &sc,
        &RunOptions {
            policy: Some("rto-fixed".into()),
            lenient: true,
            ..RunOptions::default()
        },
    )
    .expect("run");
    assert!(
        r.timeline
            .lines()
            .next()
            .unwrap_or("")
            .contains("policy rto-fixed"),
        "{}",
        r.timeline
    );
    let e = run(
        &sc,
        &RunOptions {
            policy: Some("fastest".into()),
            ..RunOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("fastest") && e.contains("reopen-half"), "{e}");
    let text = "# policy in the file\n`sim config capture tcp-policy=bogus`\n";
    let sc = Scenario::parse("p", std::path::Path::new("."), text).unwrap();
    assert!(run(&sc, &RunOptions::default())
        .unwrap_err()
        .contains("unknown TCP policy"));
}

/// `table --policies --plot`: one graph per policy, side by side. On the
/// slow-then-fast reader the shipped policy has everything acknowledged
/// about 100 ms before the policy that waits for half the buffer, and the
/// drawing names both panels and every series.
#[test]
fn policy_graphs_side_by_side() {
    let sc = scenario("tcp-window-slow-then-fast-1500");
    let panels = policy_plot(&sc, 0, "none", &["shipped", "reopen-half"], None).expect("plot");
    assert_eq!(panels.len(), 2);
    let done = |i: usize| {
        let p = &panels[i];
        let top = p.sent.iter().map(|s| s.2).max().expect("data sent");
        assert!(top >= 400_000, "{}: {top}", p.title);
        p.acked
            .iter()
            .find(|a| a.1 >= top)
            .map(|a| a.0)
            .expect("all acknowledged")
    };
    let (shipped, half) = (done(0), done(1));
    assert!(
        half >= shipped + 80_000_000,
        "shipped done at {shipped} ns, reopen-half at {half} ns"
    );
    let text = svg(&panels).expect("svg");
    let doc = roxmltree::Document::parse(&text).expect("the plot parses as XML");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for want in ["shipped, none seed 0", "reopen-half, none seed 0"] {
        assert!(texts.iter().any(|t| t.contains(want)), "{want}: {texts:?}");
    }
    for s in SERIES {
        assert_eq!(
            texts.iter().filter(|t| **t == s).count(),
            2,
            "{s} once per panel"
        );
    }
    assert!(policy_plot(&sc, 0, "none", &["fastest"], None).is_err());
    assert!(policy_plot(&sc, 0, "fog", &["shipped"], None).is_err());
}
