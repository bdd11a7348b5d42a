//! The Internet checksum (RFC 1071), computed incrementally.

use core::net::{Ipv4Addr, Ipv6Addr};

/// A running ones'-complement sum of 16-bit big-endian words.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sum(u64);

impl Sum {
    pub(crate) fn new() -> Self {
        Sum(0)
    }

    /// Adds `data`. An odd trailing byte is padded with zero, so only the last
    /// slice of a message may have odd length.
    pub(crate) fn add(mut self, data: &[u8]) -> Self {
        let mut chunks = data.chunks_exact(8);
        let mut acc = self.0;
        for c in &mut chunks {
            let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            // Fold the 64-bit word as four 16-bit words without carries lost.
            acc += (v >> 48) + ((v >> 32) & 0xffff) + ((v >> 16) & 0xffff) + (v & 0xffff);
        }
        let rest = chunks.remainder();
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let [last] = pairs.remainder() {
            acc += u64::from(*last) << 8;
        }
        self.0 = acc;
        self
    }

    pub(crate) fn add_u16(mut self, v: u16) -> Self {
        self.0 += u64::from(v);
        self
    }

    pub(crate) fn add_u32(self, v: u32) -> Self {
        self.add_u16((v >> 16) as u16).add_u16(v as u16)
    }

    /// The folded, complemented checksum.
    pub(crate) fn finish(self) -> u16 {
        let mut s = self.0;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
}

/// Pseudo-header sum for IPv4 (RFC 768/793).
pub(crate) fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> Sum {
    Sum::new()
        .add(&src.octets())
        .add(&dst.octets())
        .add_u16(u16::from(proto))
        .add_u16(len)
}

/// Pseudo-header sum for IPv6 (RFC 8200 §8.1).
pub(crate) fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: u32) -> Sum {
    Sum::new()
        .add(&src.octets())
        .add(&dst.octets())
        .add_u32(len)
        .add_u16(u16::from(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let w = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // The example from RFC 1071 §3: sum is 0xddf2, checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Sum::new().add(&data).finish(), !0xddf2);
    }

    proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(Sum::new().add(&data).finish(), reference(&data));
        }

        #[test]
        fn split_at_even_offset_is_same(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..150) {
            let cut = (cut * 2).min(data.len() & !1);
            let whole = Sum::new().add(&data).finish();
            let parts = Sum::new().add(&data[..cut]).add(&data[cut..]).finish();
            prop_assert_eq!(whole, parts);
        }
    }
}
