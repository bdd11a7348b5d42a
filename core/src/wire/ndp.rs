//! Neighbour discovery messages (RFC 4861, RFC 8106): parsing what the guest
//! sends, writing our neighbour and router advertisements.
//!
//! What the guest sends is checked as RFC 4861 §6.1 and §7.1 ask (code 0,
//! minimum lengths, no option of length 0, no option running past the end,
//! hop limit 255), except the ICMPv6 checksum, which upstream does not verify
//! on the guest link either.

use super::dns::{encode_name, NAME_MAX};
use super::{put, put16, put32, Mac};
use crate::config::{Config, MAX_DNS, MAX_SEARCH};
use crate::counters::DropReason;
use core::net::Ipv6Addr;

/// ICMPv6 router solicitation.
pub(crate) const TYPE_RS: u8 = 133;
/// ICMPv6 router advertisement.
pub(crate) const TYPE_RA: u8 = 134;
/// ICMPv6 neighbour solicitation.
pub(crate) const TYPE_NS: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub(crate) const TYPE_NA: u8 = 136;
/// ICMPv6 redirect.
pub(crate) const TYPE_REDIRECT: u8 = 137;

/// Option: source link-layer address.
pub(crate) const OPT_SOURCE_LL: u8 = 1;
/// Option: target link-layer address.
pub(crate) const OPT_TARGET_LL: u8 = 2;
/// Option: prefix information.
pub(crate) const OPT_PREFIX: u8 = 3;
/// Option: MTU.
pub(crate) const OPT_MTU: u8 = 5;
/// Option: recursive DNS servers (RFC 8106).
pub(crate) const OPT_RDNSS: u8 = 25;
/// Option: DNS search list (RFC 8106).
pub(crate) const OPT_DNSSL: u8 = 31;

/// Hop limit every NDP message must carry (RFC 4861): proof that it was not
/// forwarded by a router.
pub(crate) const NDP_HOP_LIMIT: u8 = 255;
/// Router lifetime advertised, in seconds (upstream's `RT_LIFETIME`).
pub(crate) const RT_LIFETIME: u16 = 65535;
/// "Managed address configuration" flag: the guest should ask DHCPv6.
pub(crate) const RA_MANAGED: u8 = 0x80;
/// Router and override flags of our neighbour advertisements.
pub(crate) const NA_FLAGS: u8 = 0xa0;
/// The solicited flag of a neighbour advertisement: set in answers, clear
/// in announcements (RFC 4861 §4.4, §7.2.6).
pub(crate) const NA_SOLICITED: u8 = 0x40;
/// On-link and autonomous flags of the prefix information option.
pub(crate) const PREFIX_FLAGS: u8 = 0xc0;
/// An infinite lifetime.
pub(crate) const INFINITE: u32 = u32::MAX;
/// Prefix length advertised (upstream: always 64).
pub(crate) const PREFIX_LEN: u8 = 64;

/// ff02::1, all nodes.
pub(crate) const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Length of a neighbour advertisement with a target link-layer option.
pub(crate) const NA_LEN: usize = 32;
/// Longest DNSSL option.
pub(crate) const DNSSL_MAX: usize = 8 + (MAX_SEARCH * NAME_MAX).next_multiple_of(8);
/// Longest router advertisement: header, prefix, source link-layer, MTU,
/// RDNSS and DNSSL.
pub(crate) const RA_MAX: usize = 16 + 32 + 8 + 8 + (8 + 16 * MAX_DNS) + DNSSL_MAX;

/// Shortest message of each NDP type (RFC 4861 §4).
fn min_len(icmp_type: u8) -> Option<usize> {
    match icmp_type {
        TYPE_RS => Some(8),
        TYPE_RA => Some(16),
        TYPE_NS | TYPE_NA => Some(24),
        TYPE_REDIRECT => Some(40),
        _ => None,
    }
}

/// An NDP message from the guest, as far as we care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NdpMsg {
    /// Router solicitation.
    RouterSolicit,
    /// Neighbour solicitation for `target`.
    NeighborSolicit {
        /// The address whose link-layer address is asked for.
        target: Ipv6Addr,
    },
    /// A router or neighbour advertisement or a redirect: valid, not answered.
    Other(u8),
}

/// Whether the options of an NDP message are well-formed: each has a non-zero
/// length and none runs past the end.
pub(crate) fn options_valid(mut opts: &[u8]) -> bool {
    // Every round consumes at least 8 bytes, so this ends.
    while !opts.is_empty() {
        let Some(&units) = opts.get(1) else {
            return false;
        };
        let len = usize::from(units) * 8;
        if len == 0 {
            return false;
        }
        match opts.get(len..) {
            Some(rest) => opts = rest,
            None => return false,
        }
    }
    true
}

/// Parses and validates an NDP message (`icmp`: the ICMPv6 header and body,
/// cut to the IP payload length) that arrived with hop limit `hop_limit`.
///
/// Hop limit 255 is required, as RFC 4861 asks of receivers: a message with a
/// lower hop limit may have been forwarded from off-link and must not change
/// neighbour state. Linux and every other stack send 255 (the reference
/// captures do), so nothing legitimate is lost; upstream passt does not check.
pub(crate) fn parse_ndp(hop_limit: u8, icmp: &[u8]) -> Result<NdpMsg, DropReason> {
    let malformed = DropReason::ServiceMalformed;
    let (&icmp_type, &code) = (
        icmp.first().ok_or(malformed)?,
        icmp.get(1).ok_or(malformed)?,
    );
    let min = min_len(icmp_type).ok_or(malformed)?;
    if hop_limit != NDP_HOP_LIMIT || code != 0 || !options_valid(icmp.get(min..).ok_or(malformed)?)
    {
        return Err(malformed);
    }
    match icmp_type {
        TYPE_RS => Ok(NdpMsg::RouterSolicit),
        TYPE_NS => {
            let t: [u8; 16] = icmp
                .get(8..24)
                .and_then(|s| s.try_into().ok())
                .ok_or(malformed)?;
            let target = Ipv6Addr::from(t);
            if target.is_multicast() {
                return Err(malformed);
            }
            Ok(NdpMsg::NeighborSolicit { target })
        }
        t => Ok(NdpMsg::Other(t)),
    }
}

/// The Ethernet address of IPv6 multicast group `a` (RFC 2464 §7).
pub(crate) fn multicast_mac(a: Ipv6Addr) -> Mac {
    let o = a.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Writes a neighbour advertisement for `target` at `mac` (flags R, O, and
/// S if `solicited`; a target link-layer option) with the checksum left
/// zero.
pub(crate) fn write_na(b: &mut [u8], target: Ipv6Addr, mac: Mac, solicited: bool) -> Option<usize> {
    let b = b.get_mut(..NA_LEN)?;
    let flags = if solicited {
        NA_FLAGS | NA_SOLICITED
    } else {
        NA_FLAGS
    };
    put(b, 0, &[TYPE_NA, 0, 0, 0, flags, 0, 0, 0])?;
    put(b, 8, &target.octets())?;
    put(b, 24, &[OPT_TARGET_LL, 1])?;
    put(b, 26, &mac.0)?;
    Some(NA_LEN)
}

/// Writes a neighbour solicitation for `target` from `mac` (source
/// link-layer address option); same length as an advertisement.
pub(crate) fn write_ns(b: &mut [u8], target: Ipv6Addr, mac: Mac) -> Option<usize> {
    let b = b.get_mut(..NA_LEN)?;
    put(b, 0, &[TYPE_NS, 0, 0, 0, 0, 0, 0, 0])?;
    put(b, 8, &target.octets())?;
    put(b, 24, &[OPT_SOURCE_LL, 1])?;
    put(b, 26, &mac.0)?;
    Some(NA_LEN)
}

/// Writes a DNSSL option (RFC 8106 §5.2) with the first [`MAX_SEARCH`] of
/// `names`, skipping any that cannot be encoded, padded with zeros to a
/// multiple of 8 bytes. `None` if no name could be written.
pub(crate) fn write_dnssl(b: &mut [u8], names: &[String]) -> Option<usize> {
    let mut off = 8;
    for name in names.iter().take(MAX_SEARCH) {
        if let Some(n) = encode_name(b.get_mut(off..)?, name) {
            off += n;
        }
    }
    if off == 8 {
        return None;
    }
    let end = off.next_multiple_of(8);
    b.get_mut(off..end)?.fill(0);
    let units = u8::try_from(end / 8).ok()?;
    put(b, 0, &[OPT_DNSSL, units, 0, 0])?;
    put32(b, 4, INFINITE)?;
    Some(end)
}

/// Writes our router advertisement for `cfg` with the checksum left zero:
/// hop limit 255, M=1 O=0, router lifetime 65535 s, reachable time and
/// retransmission timer unspecified, then the options in upstream's order:
/// prefix information (the guest's address with length 64, L and A, infinite
/// lifetimes; not in local mode, where the address is unspecified), source
/// link-layer address, MTU (if advertised), RDNSS (if resolvers are
/// advertised and there are any) and DNSSL (only after an RDNSS option, if the
/// search list is advertised and not empty).
pub(crate) fn write_ra(b: &mut [u8], cfg: &Config) -> Option<usize> {
    let ip6 = cfg.ip6.as_ref()?;
    put(b, 0, &[TYPE_RA, 0, 0, 0, NDP_HOP_LIMIT, RA_MANAGED])?;
    put16(b, 6, RT_LIFETIME)?;
    put32(b, 8, 0)?;
    put32(b, 12, 0)?;
    let mut off = 16;

    if !ip6.addr.is_unspecified() {
        // Upstream advertises the guest's address as it is, host bits included.
        put(b, off, &[OPT_PREFIX, 4, PREFIX_LEN, PREFIX_FLAGS])?;
        put32(b, off + 4, INFINITE)?;
        put32(b, off + 8, INFINITE)?;
        put32(b, off + 12, 0)?;
        put(b, off + 16, &ip6.addr.octets())?;
        off += 32;
    }

    put(b, off, &[OPT_SOURCE_LL, 1])?;
    put(b, off + 2, &cfg.our_mac.0)?;
    off += 8;

    if let Some(mtu) = cfg.mtu {
        put(b, off, &[OPT_MTU, 1, 0, 0])?;
        put32(b, off + 4, u32::from(mtu))?;
        off += 8;
    }

    if cfg.features.advertise_dns && !ip6.dns.is_empty() {
        let n = ip6.dns.len().min(MAX_DNS);
        let units = u8::try_from(1 + 2 * n).ok()?;
        put(b, off, &[OPT_RDNSS, units, 0, 0])?;
        put32(b, off + 4, INFINITE)?;
        for (i, a) in ip6.dns.iter().take(n).enumerate() {
            put(b, off + 8 + 16 * i, &a.octets())?;
        }
        off += 8 + 16 * n;

        if cfg.features.advertise_search && !cfg.search.is_empty() {
            if let Some(n) = write_dnssl(b.get_mut(off..)?, &cfg.search) {
                off += n;
            }
        }
    }
    Some(off)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::dns::tests::{decode_name, name};
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet,
        NdiscNeighborFlags, NdiscOption, NdiscRepr, RawHardwareAddress,
    };

    const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x2072, 0xeeff, 0xfe22, 0xd237);

    pub(crate) fn lladdr(m: Mac) -> Option<RawHardwareAddress> {
        Some(RawHardwareAddress::from_bytes(&m.0))
    }

    /// Decodes the names of a DNSSL option body (after the lifetime); checks
    /// that only zero padding follows the last name.
    pub(crate) fn decode_names(mut b: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        while let Some((name, rest)) = decode_name(b) {
            names.push(name);
            b = rest;
        }
        assert!(b.iter().all(|&x| x == 0), "padding is zeros");
        assert!(b.len() < 8, "padding shorter than 8");
        names
    }

    /// The ICMPv6 bytes of `repr`, built by smoltcp.
    pub(crate) fn smol_icmp(src: Ipv6Addr, dst: Ipv6Addr, repr: NdiscRepr<'_>) -> Vec<u8> {
        let r = Icmpv6Repr::Ndisc(repr);
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(&mut b[..]),
            &ChecksumCapabilities::default(),
        );
        b
    }

    /// A frame we sent, checked by smoltcp: Ethernet, IPv6 with hop limit 255
    /// and flow label 0, ICMPv6 with a valid checksum, a parseable NDP message.
    pub(crate) struct Reply<'a> {
        pub(crate) dst_mac: Mac,
        pub(crate) src: Ipv6Addr,
        pub(crate) dst: Ipv6Addr,
        pub(crate) icmp: &'a [u8],
        pub(crate) repr: NdiscRepr<'a>,
    }

    pub(crate) fn reparse(frame: &[u8]) -> Reply<'_> {
        let eth = EthernetFrame::new_checked(frame).expect("ethernet");
        assert_eq!(eth.ethertype(), EthernetProtocol::Ipv6);
        assert_eq!(eth.src_addr().0, Mac::OUR_DEFAULT.0);
        let ip = Ipv6Packet::new_checked(&frame[14..]).expect("ipv6");
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(ip.flow_label(), 0);
        assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
        assert_eq!(ip.total_len(), frame.len() - 14, "no trailing bytes");
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let icmp = ip.payload();
        let pkt = Icmpv6Packet::new_checked(icmp).expect("icmpv6");
        assert!(pkt.verify_checksum(&src, &dst), "ICMPv6 checksum");
        let Icmpv6Repr::Ndisc(repr) =
            Icmpv6Repr::parse(&src, &dst, &pkt, &ChecksumCapabilities::default()).expect("ndisc")
        else {
            panic!("not NDP")
        };
        if dst.is_multicast() {
            assert_eq!(Mac(eth.dst_addr().0), multicast_mac(dst));
        }
        // Second opinion from etherparse.
        {
            use etherparse::{Icmpv6Type, SlicedPacket, TransportSlice};
            let p = SlicedPacket::from_ethernet(frame).expect("etherparse");
            let Some(TransportSlice::Icmpv6(i)) = &p.transport else {
                panic!("etherparse: not ICMPv6")
            };
            assert!(i.is_checksum_valid(src.octets(), dst.octets()));
            assert!(matches!(
                i.icmp_type(),
                Icmpv6Type::RouterAdvertisement(_) | Icmpv6Type::NeighborAdvertisement(_)
            ));
        }
        Reply {
            dst_mac: Mac(eth.dst_addr().0),
            src,
            dst,
            icmp,
            repr,
        }
    }

    /// (type, data after the 2-byte option header) of each option after the
    /// `fixed`-byte message header.
    pub(crate) fn options(icmp: &[u8], fixed: usize) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        let mut off = fixed;
        while off < icmp.len() {
            let o = NdiscOption::new_checked(&icmp[off..]).expect("option");
            let len = usize::from(o.data_len()) * 8;
            assert!(len > 0);
            out.push((u8::from(o.option_type()), &icmp[off + 2..off + len]));
            off += len;
        }
        assert_eq!(off, icmp.len());
        out
    }

    #[test]
    fn option_walk() {
        assert!(options_valid(&[]));
        assert!(options_valid(&[1, 1, 0, 0, 0, 0, 0, 0]));
        assert!(options_valid(&[
            9, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        assert!(!options_valid(&[1]));
        assert!(!options_valid(&[1, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!options_valid(&[1, 1, 0, 0, 0, 0, 0]));
        assert!(!options_valid(&[1, 1, 0, 0, 0, 0, 0, 0, 1, 255]));
        assert!(!options_valid(&[1, 255, 0, 0, 0, 0, 0, 0]));
    }

    proptest! {
        /// A DNSSL option decodes to the valid names among the first six.
        #[test]
        fn dnssl_round_trip(names in proptest::collection::vec(
            prop_oneof![4 => name(), 1 => Just("bad..".to_string())], 0..9)) {
            let mut b = vec![0x77u8; DNSSL_MAX];
            let expect: Vec<String> = names.iter().take(MAX_SEARCH)
                .filter(|n| !n.contains("..")).cloned().collect();
            match write_dnssl(&mut b, &names) {
                None => prop_assert!(expect.is_empty()),
                Some(n) => {
                    prop_assert_eq!(n % 8, 0);
                    prop_assert_eq!(usize::from(b[1]) * 8, n);
                    prop_assert_eq!(b[0], OPT_DNSSL);
                    prop_assert_eq!(&b[2..8], &[0, 0, 0xff, 0xff, 0xff, 0xff]);
                    prop_assert_eq!(decode_names(&b[8..n]), expect);
                }
            }
        }

        /// What we write, smoltcp reads: a neighbour advertisement for any
        /// target and MAC.
        #[test]
        fn na_writer_against_smoltcp(target in any::<[u8; 16]>(), mac in any::<[u8; 6]>()) {
            let target = Ipv6Addr::from(target);
            let mut b = [0xeeu8; 40];
            prop_assert_eq!(write_na(&mut b, target, Mac(mac), true), Some(NA_LEN));
            let pkt = Icmpv6Packet::new_checked(&b[..NA_LEN]).unwrap();
            let caps = {
                let mut c = ChecksumCapabilities::default();
                c.icmpv6 = smoltcp::phy::Checksum::None;
                c
            };
            let r = Icmpv6Repr::parse(&GUEST_LL, &GUEST_LL, &pkt, &caps).unwrap();
            prop_assert_eq!(r, Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::SOLICITED
                    | NdiscNeighborFlags::OVERRIDE,
                target_addr: target,
                lladdr: lladdr(Mac(mac)),
            }));
            prop_assert_eq!(write_na(&mut b[..NA_LEN - 1], target, Mac(mac), true), None);
        }
    }
}
