//! Time-sequence graphs.
