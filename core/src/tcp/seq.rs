//! TCP sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4).

/// `a < b` in sequence space.
#[inline]
pub(crate) fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub(crate) fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in sequence space.
#[inline]
pub(crate) fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// `a >= b` in sequence space.
#[inline]
#[allow(dead_code)]
pub(crate) fn ge(a: u32, b: u32) -> bool {
    le(b, a)
}

/// Bytes from `from` to `to` (`to - from`), 0 if `to` is before `from`.
#[inline]
pub(crate) fn dist(from: u32, to: u32) -> u32 {
    if lt(to, from) {
        0
    } else {
        to.wrapping_sub(from)
    }
}

/// The earlier of two sequence numbers.
#[inline]
pub(crate) fn min(a: u32, b: u32) -> u32 {
    if lt(a, b) {
        a
    } else {
        b
    }
}

/// The later of two sequence numbers.
#[inline]
pub(crate) fn max(a: u32, b: u32) -> u32 {
    if gt(a, b) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrap_examples() {
        assert!(lt(u32::MAX, 0));
        assert!(lt(u32::MAX - 5, 10));
        assert!(gt(3, u32::MAX - 3));
        assert!(le(7, 7) && ge(7, 7) && !lt(7, 7));
        assert_eq!(dist(u32::MAX - 1, 2), 4);
        assert_eq!(dist(2, u32::MAX - 1), 0);
        assert_eq!(min(u32::MAX, 1), u32::MAX);
        assert_eq!(max(u32::MAX, 1), 1);
    }

    proptest! {
        /// Comparisons agree with plain integer arithmetic after shifting
        /// both numbers by the same base, across the wrap-around.
        #[test]
        fn shift_invariant(base in any::<u32>(), a in 0u32..(1 << 30), b in 0u32..(1 << 30)) {
            let (x, y) = (base.wrapping_add(a), base.wrapping_add(b));
            prop_assert_eq!(lt(x, y), a < b);
            prop_assert_eq!(le(x, y), a <= b);
            prop_assert_eq!(gt(x, y), a > b);
            prop_assert_eq!(ge(x, y), a >= b);
            prop_assert_eq!(dist(x, y), b.saturating_sub(a));
            prop_assert_eq!(min(x, y), base.wrapping_add(a.min(b)));
            prop_assert_eq!(max(x, y), base.wrapping_add(a.max(b)));
        }
    }
}
