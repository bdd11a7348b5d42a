//! Deterministic simulator for passt-core.
