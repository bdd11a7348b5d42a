//! Deterministic simulator for passt-core.
pub mod frame;
pub mod kernel;
pub mod link;
pub mod rng;
