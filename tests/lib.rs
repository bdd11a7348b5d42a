//! Shared helpers of the cross-crate integration tests: reading captures,
//! checking and describing frames, and the entry point of the fuzz target.

pub mod check;
pub mod fuzz_entry;
pub mod pcap;
