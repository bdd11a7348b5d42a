//! Byte-level helpers: reading fields with bounds checks, writing headers into
//! caller buffers, Internet checksums.
//!
//! The core parses guest frames by hand rather than through a general packet
//! library: it needs the byte offsets of every layer inside the driver's batch
//! buffer (the zero-copy guest→socket path hands those spans to the driver), exact
//! drop reasons, and upstream's tolerance rules (trust the IP length over qemu's
//! padding). Replies are written in place into buffers the caller lends. Tests
//! check everything written here with independent parsers (etherparse, smoltcp).

pub(crate) mod arp;
pub(crate) mod checksum;
pub(crate) mod dhcp;
pub(crate) mod dhcpv6;
pub(crate) mod dns;
pub(crate) mod headers;
pub(crate) mod ndp;

pub(crate) use crate::mac::Mac;

/// Big-endian u16 at `off`, if in bounds.
#[inline]
pub(crate) fn be16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Big-endian u32 at `off`, if in bounds.
#[inline]
pub(crate) fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Writes `v` big-endian at `off`. Callers size their buffers first; the write
/// is still bounds-checked and returns `None` instead of panicking.
#[inline]
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) -> Option<()> {
    b.get_mut(off..off.checked_add(2)?)?
        .copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// Writes `v` big-endian at `off` (see [`put16`]).
#[inline]
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) -> Option<()> {
    b.get_mut(off..off.checked_add(4)?)?
        .copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// Copies `src` to `b[off..]`, bounds-checked.
#[inline]
pub(crate) fn put(b: &mut [u8], off: usize, src: &[u8]) -> Option<()> {
    b.get_mut(off..off.checked_add(src.len())?)?
        .copy_from_slice(src);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_are_bounds_checked() {
        let b = [1u8, 2, 3];
        assert_eq!(be16(&b, 1), Some(0x0203));
        assert_eq!(be16(&b, 2), None);
        assert_eq!(be32(&b, 0), None);
        assert_eq!(be16(&b, usize::MAX), None);
        let mut w = [0u8; 4];
        assert_eq!(put32(&mut w, 0, 0x01020304), Some(()));
        assert_eq!(w, [1, 2, 3, 4]);
        assert_eq!(put16(&mut w, 3, 1), None);
        assert_eq!(put(&mut w, 2, &[9, 9, 9]), None);
    }
}
