//! Arbitrary batches of guest frames into the core: no panic, every emitted
//! frame valid, counters consistent. See `tests/fuzz_entry.rs` for the layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    passt_tests::fuzz_entry::tap_batch(data);
});
