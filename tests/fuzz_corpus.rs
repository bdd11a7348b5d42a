//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz
//! targets' logic, so `cargo test` holds every saved input to the same checks.

use passt_tests::fuzz_entry::{qemu_stream, sim_flows, tap_batch};
use std::path::Path;

/// Runs `f` on every input of `target`'s corpus; returns how many.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in &entries {
        let data = std::fs::read(path).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| f(&data)) {
            panic!("{}: {:?}", path.display(), e.downcast_ref::<String>());
        }
    }
    entries.len()
}

#[test]
fn corpus_replays_cleanly() {
    let n = replay("tap_batch", tap_batch);
    assert!(n >= 20, "corpus too small: {n} inputs");
}

#[test]
fn sim_flows_corpus_replays_cleanly() {
    let n = replay("sim_flows", sim_flows);
    assert!(n >= 20, "corpus too small: {n} inputs");
}

#[test]
fn qemu_stream_corpus_replays_cleanly() {
    let n = replay("qemu_stream", qemu_stream);
    assert!(n >= 10, "corpus too small: {n} inputs");
}

#[test]
fn empty_and_tiny_inputs() {
    for f in [tap_batch, sim_flows, qemu_stream] {
        f(&[]);
        f(&[0]);
        f(&[0, 0x80]);
        f(&[0xff, 0x80, 0x00]);
    }
}

/// The stream target's checks can fail: a reassembler that hands a frame
/// over twice, or drops one, differs from the sequential decoder.
#[test]
fn qemu_stream_checks_bite() {
    // Frames of 14 and 60 bytes, read in one go: fine.
    qemu_stream(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2e, 0x03, 0x00, 0x00]);
    // A bad length (13) after one frame resets after that frame.
    qemu_stream(&[0x00, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 13, 0x03, 0, 0]);
}

/// Prints the scenario of a `sim_flows` input and runs it:
/// `FUZZ_INPUT=fuzz/artifacts/sim_flows/crash-... cargo test -p passt-tests
/// --test fuzz_corpus show_sim_flows_input -- --ignored --nocapture`.
#[test]
#[ignore = "a tool: needs FUZZ_INPUT"]
fn show_sim_flows_input() {
    let path = std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT=path");
    let data = std::fs::read(&path).unwrap();
    println!("{}", passt_driver_sim::fuzz::program(&data));
    let t = std::time::Instant::now();
    let r = passt_driver_sim::fuzz::run(&data);
    println!("ran in {:?}", t.elapsed());
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// The input that found a host datagram longer than the MTU (1712 bytes at
/// MTU 1500): it goes to the guest in one frame, as upstream sends it and as
/// a Linux tap or virtio-net guest takes it; the simulator's frame check
/// allowed no frame over the MTU and reported a violation.
#[test]
fn host_datagram_over_the_mtu_goes_whole() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sim_flows/48f35f894aac07a8");
    sim_flows(&std::fs::read(path).unwrap());
}
