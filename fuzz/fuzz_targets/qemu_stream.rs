//! The qemu stream framing (4-byte length + frame) cut into arbitrary
//! reads and batches. See `tests/fuzz_entry.rs` for the layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    passt_tests::fuzz_entry::qemu_stream(data);
});
