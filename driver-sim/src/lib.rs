//! Deterministic simulator for passt-core.
pub mod check;
pub mod frame;
pub mod guest;
pub mod kernel;
pub mod link;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod sweep;
