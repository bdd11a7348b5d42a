//! Time-sequence graphs: the SVG parses and names every series, two panels
//! draw side by side, and the data points behind the pixels are pinned by
//! snapshots (of a run with losses and a closed window, and of a capture).

use passt_driver_sim::plot::{capture_of_run, svg, TimeSeq, SERIES};
use passt_driver_sim::replay::capture::{guest_ips, Capture};
use passt_driver_sim::replay::plan::Side;
use passt_driver_sim::scenario::{capture_config, run, RunOptions, Scenario};
use std::path::PathBuf;

/// A bulk transfer to a slow reader with small host buffers (the window
/// closes) over a link that loses ACKs (the guest sends again).
const SCENARIO: &str = "# a slow reader behind a lossy link\n\
`sim config capture`\n\
`sim host sndbuf 4096 rcvbuf 2048`\n\
`sim link to-guest loss 0.1`\n\
`sim seed 7`\n\
`sim replay options delay 1 stall 200`\n\
`sim replay tcp 1 10.77.0.2:40000 10.77.0.1:8080 open guest at 0 mss 1400 wscale 7 rcvbuf 65536 read-rate 50`\n\
`sim replay step 1 guest send 30000`\n\
`sim replay step 1 guest close`\n\
`sim replay step 1 host send 2000 after 30000`\n\
`sim replay step 1 host close fin`\n\
`sim replay start`\n";

fn graph(seed: u64) -> TimeSeq {
    let sc = Scenario::parse("slow-lossy", std::path::Path::new("."), SCENARIO).unwrap();
    let r = run(
        &sc,
        &RunOptions {
            seed: Some(seed),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert!(r.ok(), "{:?} {:?}", r.failures, r.violations);
    let cap = capture_of_run(&sc.name, &r).unwrap();
    TimeSeq::from_capture(
        &cap,
        Some("8080"),
        Some(Side::Guest),
        &format!("seed {seed}"),
    )
    .unwrap()
}

fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the plot parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty())
        .collect()
}

#[test]
fn svg_names_every_series_and_draws_panels_side_by_side() {
    let a = graph(7);
    let one = svg(std::slice::from_ref(&a)).unwrap();
    let t = texts(&one);
    for s in SERIES {
        assert!(t.iter().any(|x| x == s), "legend lacks `{s}`: {t:?}");
    }
    assert!(
        t.iter()
            .any(|x| x.starts_with("seed 7: 10.77.0.2:40000 > 10.77.0.1:8080")),
        "{t:?}"
    );
    assert!(t.iter().any(|x| x == "time (s)"));
    // Every series has points in this run.
    assert!(!a.sent.is_empty() && !a.acked.is_empty() && !a.window.is_empty());
    assert!(
        !a.retransmitted.is_empty(),
        "lost ACKs make the guest send again"
    );
    assert!(
        !a.zero_windows.is_empty(),
        "the slow reader closes the window"
    );
    assert_eq!(
        a.acked.last().map(|x| x.1),
        Some(30_001),
        "all data and the FIN acknowledged"
    );
    // Side by side: two captions, twice the legend.
    let b = graph(8);
    let two = svg(&[a, b]).unwrap();
    let t = texts(&two);
    assert!(t.iter().any(|x| x.starts_with("seed 8:")), "{t:?}");
    assert_eq!(t.iter().filter(|x| *x == "data sent").count(), 2);
}

#[test]
fn data_points_of_a_run() {
    let a = graph(7);
    insta::with_settings!({
        snapshot_path => "../../snapshots/sim",
        prepend_module_to_snapshot => false,
        description => "time-sequence data of a replayed bulk transfer to a slow reader over a link losing 10 % of ACKs (seed 7): sent, retransmitted, acked, window edge, zero-window periods (ms, bytes)",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("plot-slow-lossy", a.data());
    });
}

#[test]
fn data_points_of_a_capture() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/captures/pasta-upstream-inbound_bulk.ns.pcap");
    let cap = Capture::load(&file, None, &guest_ips(&capture_config())).unwrap();
    let ts = TimeSeq::from_capture(&cap, None, None, "pasta-upstream-inbound_bulk").unwrap();
    assert!(ts.flow.ends_with("data from the guest"), "{}", ts.flow);
    assert_eq!(ts.sent.last().map(|x| x.2), Some(2_000_000));
    assert!(svg(std::slice::from_ref(&ts))
        .unwrap()
        .contains("window edge"));
    insta::with_settings!({
        snapshot_path => "../../snapshots/sim",
        prepend_module_to_snapshot => false,
        description => "time-sequence data of tests/captures/pasta-upstream-inbound_bulk.ns.pcap (2 MB from the guest)",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("plot-capture-upstream-inbound_bulk", ts.data());
    });
}
