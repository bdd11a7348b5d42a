//! The shared transmit ring under backpressure: a 200-seed sweep of a
//! mixed workload (TCP both ways with a close, UDP to an echo server, ARP)
//! through a simulated guest link that lends few slots, takes only part of
//! a flush, or nothing for a while (the `backpressure` fault profile). Every
//! invariant must hold, both model connections must finish with every byte,
//! the ring must really have refused frames, and no socket may keep the
//! loop busy while the link is full. `BACKPRESSURE_SEEDS=N` runs N seeds.

use passt_driver_sim::scenario::{run, RunOptions, Scenario};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const MIX: &str = "# Backpressure mix\n\
`sim config capture`\n\
`sim host sndbuf 16384 rcvbuf 32768`\n\
`sim peer 192.0.2.1:5001 sink`\n\
`sim peer 192.0.2.1:5002 source 40000`\n\
`sim peer 192.0.2.1:7 echo`\n\
0    `sim guest-tcp connect 192.0.2.1:5001 send 30000`\n\
+0   `sim guest-tcp connect 192.0.2.1:5002 send 0 fin-after-peer`\n\
+0   < udp 10.77.0.2:5000 > 192.0.2.1:7 (1400)\n\
+0   < udp 10.77.0.2:5000 > 192.0.2.1:7 (20)\n\
+0   < arp who-has 10.77.0.1\n\
+0.001 < udp 10.77.0.2:5000 > 192.0.2.1:7 (600)\n\
`sim drain-at-end`\n";

#[test]
fn backpressure_sweep_200_seeds() {
    let seeds: u64 = std::env::var("BACKPRESSURE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let sc = Scenario::parse("backpressure-mix", std::path::Path::new("."), MIX).expect("scenario");
    let next = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let refusing_runs = AtomicU64::new(0);
    let problems = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds {
                    break;
                }
                let opts = RunOptions::lenient(seed, "backpressure");
                let r = run(&sc, &opts).expect("run");
                let mut bad: Vec<String> = r.violations.clone();
                if r.metrics.completion.is_none() {
                    bad.push("the model connections did not finish".into());
                }
                if r.metrics.guest_received != 40_000 {
                    bad.push(format!(
                        "guest received {} of 40000 bytes",
                        r.metrics.guest_received
                    ));
                }
                if let Some(l) = r.timeline.lines().find(|l| l.contains(" spin ")) {
                    bad.push(format!("busy loop: {}", l.trim()));
                }
                if r.metrics.frames_refused > 0 {
                    refused.fetch_add(r.metrics.frames_refused, Ordering::Relaxed);
                    refusing_runs.fetch_add(1, Ordering::Relaxed);
                }
                if !bad.is_empty() {
                    problems
                        .lock()
                        .expect("lock")
                        .push(format!("seed {seed}: {}", bad.join("; ")));
                }
            });
        }
    });
    let mut problems = problems.into_inner().expect("lock");
    problems.sort();
    assert!(
        problems.is_empty(),
        "{} of {seeds} seeds failed (reproduce: passt-sim run with --faults backpressure --seed N --lenient):\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The profile really pushed back: most runs saw frames refused.
    let runs = refusing_runs.load(Ordering::Relaxed);
    assert!(
        runs * 2 >= seeds,
        "only {runs} of {seeds} runs had frames refused ({} in all)",
        refused.load(Ordering::Relaxed)
    );
}
