//! Checksums, written here independent of the core's.

use super::*;

pub(super) fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

pub(super) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

pub(super) fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        (s, d) => {
            acc = sum16(&v6(s).octets(), acc);
            acc = sum16(&v6(d).octets(), acc);
        }
    }
    acc + u64::from(proto) + len as u64
}

pub(super) fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Whether the L4 checksum of `l4` (header and payload) is right.
pub fn l4_checksum_ok(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> bool {
    fold(sum16(l4, pseudo_sum(src, dst, proto, l4.len()))) == 0xffff
}

/// Writes the L4 checksum at `l4[off..off + 2]` (zeroed first).
pub(super) fn fill_l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &mut [u8], off: usize) {
    if let Some(f) = l4.get_mut(off..off + 2) {
        f.fill(0);
    }
    let mut c = !fold(sum16(l4, pseudo_sum(src, dst, proto, l4.len())));
    if c == 0 && proto == 17 {
        c = 0xffff;
    }
    if let Some(f) = l4.get_mut(off..off + 2) {
        f.copy_from_slice(&c.to_be_bytes());
    }
}
