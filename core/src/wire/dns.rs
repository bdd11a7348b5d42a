//! Domain names in RFC 1035 label form, uncompressed (`3foo3org0`), as
//! NDP's DNSSL option and DHCPv6's Domain Search List carry them. (DHCPv4's
//! search list compresses its names: `wire/dhcp.rs`.)

use super::put;

/// Longest encoding of one domain name.
pub(crate) const NAME_MAX: usize = 255;

/// Writes `name` in RFC 1035 label form (`3foo3org0`) at the start of `b`.
/// One trailing dot is allowed. `None` if a label is empty or longer than 63
/// bytes, the encoding would exceed 255 bytes, or `b` is too short.
pub(crate) fn encode_name(b: &mut [u8], name: &str) -> Option<usize> {
    let name = name.strip_suffix('.').unwrap_or(name);
    // Each dot becomes a length byte, plus the first length and the root.
    if name.is_empty() || name.len() + 2 > NAME_MAX {
        return None;
    }
    let mut off = 0;
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        *b.get_mut(off)? = len;
        put(b, off + 1, label.as_bytes())?;
        off += 1 + label.len();
    }
    *b.get_mut(off)? = 0;
    Some(off + 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One name in label form at the start of `b`; `None` at padding.
    pub(crate) fn decode_name(b: &[u8]) -> Option<(String, &[u8])> {
        let mut labels = Vec::new();
        let mut off = 0;
        loop {
            let len = usize::from(*b.get(off)?);
            if len == 0 {
                off += 1;
                break;
            }
            assert!(len <= 63);
            labels.push(std::str::from_utf8(&b[off + 1..off + 1 + len]).unwrap());
            off += 1 + len;
        }
        if labels.is_empty() {
            return None;
        }
        Some((labels.join("."), &b[off..]))
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9_-][a-z0-9-]{0,62}"
    }

    pub(crate) fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(label(), 1..5)
            .prop_map(|l| l.join("."))
            .prop_filter("fits", |n| n.len() <= 253)
    }

    proptest! {
        /// Encoding then decoding a name gives it back; the length is exact.
        #[test]
        fn dns_name_round_trip(n in name(), dot in any::<bool>()) {
            let mut b = [0xaau8; 300];
            let input = if dot { format!("{n}.") } else { n.clone() };
            let len = encode_name(&mut b, &input).unwrap();
            prop_assert_eq!(len, n.len() + 2);
            let (back, rest) = decode_name(&b[..len]).unwrap();
            prop_assert_eq!(back, n);
            prop_assert!(rest.is_empty());
            // One byte short: refused, no panic.
            prop_assert_eq!(encode_name(&mut b[..len - 1], &input), None);
        }

        /// Names with an empty or over-long label never encode.
        #[test]
        fn bad_dns_names_are_refused(a in label(), b in label()) {
            let mut buf = [0u8; 600];
            for bad in [format!("{a}..{b}"), format!(".{a}"), format!("{a}.{}", "x".repeat(64)),
                        format!("{a}.{b}.."), String::new()] {
                prop_assert_eq!(encode_name(&mut buf, &bad), None, "{}", bad);
            }
        }
    }
}
