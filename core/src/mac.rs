//! Ethernet MAC addresses.

use core::fmt;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// The locally administered address upstream uses for its side of the link.
    pub const OUR_DEFAULT: Mac = Mac([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);

    /// Whether the group bit is set (multicast or broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Parses `aa:bb:cc:dd:ee:ff`.
    pub fn parse(s: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next()?;
            if p.is_empty() || p.len() > 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_display() {
        let m = Mac::parse("9a:55:9A:55:9a:5").unwrap();
        assert_eq!(m.0, [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x05]);
        assert_eq!(m.to_string(), "9a:55:9a:55:9a:05");
        for bad in [
            "",
            "1:2:3:4:5",
            "1:2:3:4:5:6:7",
            "100:2:3:4:5:6",
            "x:2:3:4:5:6",
            "1::3:4:5:6",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
        assert!(Mac::BROADCAST.is_multicast());
        assert!(!Mac::OUR_DEFAULT.is_multicast());
    }
}
