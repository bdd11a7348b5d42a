//! Work done by the core, counted in test builds only: a deterministic
//! measure of cost (frames looked at, segments parsed, queued actions
//! visited, spans copied or summed) for the tests that show the cost of a
//! batch linear in its frames. A no-op otherwise.

#[cfg(test)]
std::thread_local! {
    static UNITS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Counts `n` units of work.
#[inline(always)]
pub(crate) fn tick(n: usize) {
    #[cfg(test)]
    UNITS.with(|c| c.set(c.get() + n as u64));
    let _ = n;
}

/// The units counted on this thread since the last call.
#[cfg(test)]
pub(crate) fn take() -> u64 {
    UNITS.with(|c| c.replace(0))
}
