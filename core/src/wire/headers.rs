//! Writers for the Ethernet, IPv4, IPv6 and UDP headers of frames sent to the guest.
//!
//! Frames are built back to front: the L4 payload is written first at
//! [`l4_offset`], then [`finish_ip_frame`] fills the Ethernet and IP headers and
//! the L4 checksum in place.

use super::checksum::{pseudo4, pseudo6, Sum};
use super::{put, put16, put32, Mac};
use core::net::IpAddr;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const IPV4_HLEN: usize = 20;
pub(crate) const IPV6_HLEN: usize = 40;
pub(crate) const UDP_HLEN: usize = 8;

pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;

pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// Hop limit / TTL of everything sent to the guest (as upstream).
pub(crate) const HOP_LIMIT: u8 = 255;

/// Least length of an Ethernet frame without its FCS (IEEE 802.3: 46 bytes
/// of payload at least; Linux's `ETH_ZLEN`).
pub(crate) const ETH_ZLEN: usize = 60;

/// Pads the frame `buf[..len]` with zeros to [`ETH_ZLEN`] bytes, as upstream
/// passt does since 2025 (short frames are IPv4 ACKs, small datagrams, ARP);
/// returns the frame's new length. The IP header keeps the real length.
pub(crate) fn pad_frame(buf: &mut [u8], len: usize) -> usize {
    match buf.get_mut(len..ETH_ZLEN) {
        Some(pad) => {
            pad.fill(0);
            ETH_ZLEN
        }
        None => len,
    }
}

/// Offset of the L4 header in a frame whose network layer is `v6` or not.
pub(crate) const fn l4_offset(v6: bool) -> usize {
    if v6 {
        ETH_HLEN + IPV6_HLEN
    } else {
        ETH_HLEN + IPV4_HLEN
    }
}

pub(crate) fn write_eth(b: &mut [u8], dst: Mac, src: Mac, ethertype: u16) -> Option<()> {
    put(b, 0, &dst.0)?;
    put(b, 6, &src.0)?;
    put16(b, 12, ethertype)
}

/// Writes the IP header of `src`'s family at `b[0..]` for `payload_len`
/// bytes of protocol `proto`: IPv4 (20 bytes) with TTL 255, ID 0 and DF
/// clear; IPv6 (40 bytes) with hop limit 255 and flow label 0. Mixed
/// families yield `None`.
pub(crate) fn write_ip(
    b: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    payload_len: usize,
) -> Option<()> {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total = u16::try_from(IPV4_HLEN + payload_len).ok()?;
            let h = b.get_mut(..IPV4_HLEN)?;
            h[0] = 0x45;
            h[1] = 0;
            put16(h, 2, total)?;
            put32(h, 4, 0)?; // ID 0, no flags, offset 0
            h[8] = HOP_LIMIT;
            h[9] = proto;
            put16(h, 10, 0)?;
            put(h, 12, &src.octets())?;
            put(h, 16, &dst.octets())?;
            let csum = Sum::new().add(h).finish();
            put16(h, 10, csum)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let plen = u16::try_from(payload_len).ok()?;
            let h = b.get_mut(..IPV6_HLEN)?;
            put32(h, 0, 6 << 28)?;
            put16(h, 4, plen)?;
            h[6] = proto;
            h[7] = HOP_LIMIT;
            put(h, 8, &src.octets())?;
            put(h, 24, &dst.octets())
        }
        _ => None,
    }
}

/// The sum of the pseudo-header of `src`/`dst` for an L4 segment of `len`
/// bytes. Mixed families yield `None`.
fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Option<Sum> {
    Some(match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo4(s, d, proto, u16::try_from(len).ok()?),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo6(s, d, proto, u32::try_from(len).ok()?),
        _ => return None,
    })
}

/// Checksum of an L4 segment `l4` (with its checksum field zeroed) under the
/// pseudo-header of `src`/`dst`. Mixed families yield `None`.
pub(crate) fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Option<u16> {
    Some(pseudo_sum(src, dst, proto, l4.len())?.add(l4).finish())
}

/// Offset of the checksum field inside an L4 header of protocol `proto`.
fn l4_checksum_offset(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(16),
        PROTO_UDP => Some(6),
        PROTO_ICMP | PROTO_ICMPV6 => Some(2),
        _ => None,
    }
}

/// The two ends of a frame to the guest: Ethernet destination and source,
/// IP source and destination (of one family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ends {
    dst_mac: Mac,
    src_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
}

impl Ends {
    pub(crate) fn new(dst_mac: Mac, src_mac: Mac, src: IpAddr, dst: IpAddr) -> Self {
        Ends {
            dst_mac,
            src_mac,
            src,
            dst,
        }
    }
}

/// Completes a frame whose L4 header and payload (`l4_len` bytes) already sit at
/// [`l4_offset`]: writes Ethernet and IP headers of `e` and the L4 checksum
/// (not for ICMPv4, whose checksum has no pseudo-header: the caller fills
/// it). Returns the frame length.
pub(crate) fn finish_ip_frame(b: &mut [u8], e: Ends, proto: u8, l4_len: usize) -> Option<usize> {
    finish_frame(b, e, proto, l4_len, false)
}

/// Like [`finish_ip_frame`] for TCP or UDP, but with a partial L4 checksum:
/// the checksum field holds the folded pseudo-header sum (length included),
/// for a link that sums the rest from the L4 header on (checksum offload).
/// The payload is not read.
pub(crate) fn finish_ip_frame_partial(
    b: &mut [u8],
    e: Ends,
    proto: u8,
    l4_len: usize,
) -> Option<usize> {
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    finish_frame(b, e, proto, l4_len, true)
}

fn finish_frame(b: &mut [u8], e: Ends, proto: u8, l4_len: usize, partial: bool) -> Option<usize> {
    let Ends {
        dst_mac,
        src_mac,
        src,
        dst,
    } = e;
    let v6 = src.is_ipv6();
    let off = l4_offset(v6);
    let end = off.checked_add(l4_len)?;
    let l4 = b.get_mut(off..end)?;
    if let Some(c) = l4_checksum_offset(proto) {
        put16(l4, c, 0)?;
        let csum = if partial {
            // The pseudo-header's sum, folded and not complemented: summing
            // the segment over it and complementing gives the checksum.
            !pseudo_sum(src, dst, proto, l4_len)?.finish()
        } else if proto == PROTO_ICMP {
            Sum::new().add(l4).finish()
        } else {
            let mut v = l4_checksum(src, dst, proto, l4)?;
            if proto == PROTO_UDP && v == 0 {
                v = 0xffff; // RFC 768: zero means "no checksum"
            }
            v
        };
        put16(l4, c, csum)?;
    }
    let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    write_eth(b, dst_mac, src_mac, ethertype)?;
    write_ip(b.get_mut(ETH_HLEN..)?, src, dst, proto, l4_len)?;
    Some(end)
}

/// Writes the UDP header for a payload of `payload_len` bytes already placed at
/// `l4_offset + 8`, then completes the frame. Returns the frame length.
pub(crate) fn finish_udp_frame(
    b: &mut [u8],
    e: Ends,
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Option<usize> {
    let off = l4_offset(e.src.is_ipv6());
    let l4_len = UDP_HLEN.checked_add(payload_len)?;
    let udp = b.get_mut(off..off + UDP_HLEN)?;
    put16(udp, 0, sport)?;
    put16(udp, 2, dport)?;
    put16(udp, 4, u16::try_from(l4_len).ok()?)?;
    finish_ip_frame(b, e, PROTO_UDP, l4_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    /// A partial checksum, completed as a link would (summing from the L4
    /// header on, seed included), is the full checksum.
    #[test]
    fn partial_checksum_completes_to_the_full_one() {
        for (src, dst) in [
            ("10.0.2.2".parse().unwrap(), "10.0.2.15".parse().unwrap()),
            ("fd00::2".parse().unwrap(), "fd00::15".parse().unwrap()),
        ] {
            let (src, dst): (IpAddr, IpAddr) = (src, dst);
            let off = l4_offset(src.is_ipv6());
            let mut full = vec![0u8; off + 20 + 1001];
            for (i, x) in full[off..].iter_mut().enumerate() {
                *x = (i * 7 + 3) as u8;
            }
            let mut part = full.clone();
            let e = Ends::new(Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]), src, dst);
            let n = finish_ip_frame(&mut full, e, PROTO_TCP, 1021).unwrap();
            let p = finish_ip_frame_partial(&mut part, e, PROTO_TCP, 1021).unwrap();
            assert_eq!(n, p);
            assert_eq!(full[..off], part[..off], "same headers");
            let done = Sum::new().add(&part[off..p]).finish();
            part[off + 16..off + 18].copy_from_slice(&done.to_be_bytes());
            assert_eq!(full, part);
            assert!(finish_ip_frame_partial(&mut part, e, PROTO_ICMP, 8).is_none());
        }
    }

    #[test]
    fn short_frames_are_padded_with_zeros_where_the_buffer_allows() {
        let mut b = [0xaau8; 80];
        assert_eq!(pad_frame(&mut b, 42), 60);
        assert!(b[42..60].iter().all(|&x| x == 0));
        assert_eq!(b[60], 0xaa, "nothing past 60 bytes");
        assert_eq!(pad_frame(&mut b, 60), 60);
        assert_eq!(pad_frame(&mut b, 70), 70);
        assert_eq!(b[65], 0xaa);
        // A buffer too small to pad: the frame is left as it is.
        let mut small = [0xaau8; 50];
        assert_eq!(pad_frame(&mut small, 42), 42);
        assert_eq!(small[45], 0xaa);
    }

    /// UDP frames of both families re-parse, with valid IP and UDP
    /// checksums, TTL or hop limit 255, and the payload in place.
    #[test]
    fn udp_frames_reparse_with_valid_checksums() {
        let cases: [(IpAddr, IpAddr, u16, u16, &[u8]); 2] = [
            (
                Ipv4Addr::new(10, 0, 0, 1).into(),
                Ipv4Addr::new(10, 0, 0, 2).into(),
                67,
                68,
                b"hello",
            ),
            (
                "fe80::1".parse().unwrap(),
                "fe80::2".parse().unwrap(),
                547,
                546,
                b"abc",
            ),
        ];
        for (src, dst, sport, dport, payload) in cases {
            let mut b = [0u8; 128];
            let off = l4_offset(src.is_ipv6()) + UDP_HLEN;
            b[off..off + payload.len()].copy_from_slice(payload);
            let e = Ends::new(Mac([2; 6]), Mac::OUR_DEFAULT, src, dst);
            let n = finish_udp_frame(&mut b, e, sport, dport, payload.len()).unwrap();
            assert_eq!(n, off + payload.len());
            let p = SlicedPacket::from_ethernet(&b[..n]).unwrap();
            let Some(TransportSlice::Udp(udp)) = &p.transport else {
                panic!()
            };
            let expected = match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    assert_eq!(h.ttl(), 255);
                    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                    udp.to_header()
                        .calc_checksum_ipv4(&h.to_header(), udp.payload())
                }
                Some(NetSlice::Ipv6(ip)) => {
                    assert_eq!(ip.header().hop_limit(), 255);
                    udp.to_header()
                        .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
                }
                _ => panic!("not IP"),
            };
            assert_eq!(udp.checksum(), expected.unwrap());
            assert_eq!(udp.payload(), payload);
        }
    }

    #[test]
    fn too_small_buffer_is_none_not_panic() {
        let mut b = [0u8; 40];
        let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let e = Ends::new(Mac::BROADCAST, Mac::BROADCAST, src, src);
        assert_eq!(finish_udp_frame(&mut b, e, 1, 2, 100), None);
        let v6: IpAddr = "::1".parse().unwrap();
        let mixed = Ends { dst: v6, ..e };
        assert_eq!(finish_ip_frame(&mut b, mixed, PROTO_UDP, 0), None);
    }
}
