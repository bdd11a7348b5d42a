//! Replays the fuzz corpus (`fuzz/corpus/tap_batch/`) through the fuzz target's
//! logic, so `cargo test` holds every saved input to the same checks.

use passt_tests::fuzz_entry::tap_batch;
use std::path::Path;

#[test]
fn corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/tap_batch");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).unwrap();
        tap_batch(&data);
        n += 1;
    }
    assert!(n >= 20, "corpus too small: {n} inputs");
}

#[test]
fn empty_and_tiny_inputs() {
    tap_batch(&[]);
    tap_batch(&[0]);
    tap_batch(&[0, 0x80]);
    tap_batch(&[0xff, 0x80, 0x00]);
}
