//! Programs of guest and host events run on the simulator: established TCP
//! both ways, UDP and ICMP with host replies, partial writes, a guest link
//! that refuses frames, paused guests, time; every simulator invariant
//! checked. See `tests/fuzz_entry.rs` and `driver-sim/src/fuzz.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    passt_tests::fuzz_entry::sim_flows(data);
});
