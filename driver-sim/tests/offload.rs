//! TCP segmentation and checksum offload on the simulated guest link
//! (`sim config ... tap-offload`, as pasta's tap with virtio-net headers):
//! host data leaves the core in segments of up to 64 KiB with GSO metadata
//! and a partial checksum; the link checks the metadata against each frame
//! (a mismatch panics the run), completes the checksum and splits the
//! segment as the kernel would. Every byte must arrive, every invariant
//! hold, with far fewer frames from the core than without offload, on a
//! clean link and under backpressure (partial flushes of large frames).

use passt_driver_sim::scenario::{run, RunOptions, Scenario};

const BYTES: u64 = 600_000;

fn scenario(offload: bool) -> Scenario {
    let text = format!(
        "# Host data to the guest{}\n\
         `sim config capture{}`\n\
         `sim peer 192.0.2.1:5002 source {BYTES}`\n\
         `sim peer 192.0.2.1:5001 sink`\n\
         0    `sim guest-tcp connect 192.0.2.1:5002 send 0 fin-after-peer`\n\
         +0   `sim guest-tcp connect 192.0.2.1:5001 send 50000`\n\
         `sim drain-at-end`\n",
        if offload { ", offloads" } else { "" },
        if offload { " tap-offload" } else { "" },
    );
    Scenario::parse("offload", std::path::Path::new("."), &text).expect("scenario")
}

#[test]
fn host_data_in_large_segments_arrives_whole() {
    let plain = run(&scenario(false), &RunOptions::default()).expect("run");
    let off = run(&scenario(true), &RunOptions::default()).expect("run");
    for (what, r) in [("plain", &plain), ("offload", &off)] {
        assert!(r.ok(), "{what}: {:?} {:?}", r.violations, r.failures);
        assert!(r.metrics.completion.is_some(), "{what}: not finished");
        assert_eq!(r.metrics.guest_received, BYTES, "{what}");
    }
    assert_eq!(plain.metrics.gso_frames, 0);
    assert!(off.metrics.gso_frames > 0, "no GSO frame with offloads");
    // The core builds one frame where it built up to 44 (the guest's ACKs
    // and the other direction's frames are the same in both runs).
    assert!(
        off.metrics.core_frames_out * 3 < plain.metrics.core_frames_out,
        "frames built by the core: {} with offloads, {} without",
        off.metrics.core_frames_out,
        plain.metrics.core_frames_out
    );
}

#[test]
fn large_segments_under_backpressure() {
    let sc = scenario(true);
    let mut gso = 0;
    for seed in 0..20 {
        let opts = RunOptions::lenient(seed, "backpressure");
        let r = run(&sc, &opts).expect("run");
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        assert!(r.metrics.completion.is_some(), "seed {seed}: not finished");
        assert_eq!(r.metrics.guest_received, BYTES, "seed {seed}");
        gso += r.metrics.gso_frames;
    }
    assert!(gso > 0);
}
