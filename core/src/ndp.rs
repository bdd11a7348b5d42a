//! Neighbour discovery: neighbour and router advertisements.
//!
//! As upstream passt does, the core is a proxy for every IPv6 neighbour: a
//! neighbour solicitation for any target is answered with our MAC, so all the
//! guest's traffic comes to us. Router solicitations are answered with a router
//! advertisement carrying the guest's prefix, our MAC, the MTU and the resolvers
//! and search list; once the guest has been seen, unsolicited advertisements go
//! to all nodes every 200 to 600 seconds.
//!
//! What the guest sends is checked as RFC 4861 §6.1 and §7.1 ask (code 0,
//! minimum lengths, no option of length 0, no option running past the end,
//! hop limit 255), except the ICMPv6 checksum, which upstream does not verify
//! on the guest link either. Router and neighbour advertisements and redirects
//! from the guest are well-formed but ignored, as are duplicate address
//! detection probes (solicitations from the unspecified address).

use crate::config::{Config, MAX_DNS, MAX_SEARCH};
use crate::counters::{DropReason, ReplyKind};
use crate::engine::Core;
use crate::tap::{EthHdr, IpHdr};
use crate::time::Instant;
use crate::wire::headers::PROTO_ICMPV6;
use crate::wire::{put, put16, put32, Mac};
use core::net::{IpAddr, Ipv6Addr};
use core::time::Duration;

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
const OPT_SOURCE_LL: u8 = 1;
/// Option: target link-layer address.
const OPT_TARGET_LL: u8 = 2;
/// Option: prefix information.
const OPT_PREFIX: u8 = 3;
/// Option: MTU.
const OPT_MTU: u8 = 5;
/// Option: recursive DNS servers (RFC 8106).
const OPT_RDNSS: u8 = 25;
/// Option: DNS search list (RFC 8106).
const OPT_DNSSL: u8 = 31;

/// Hop limit every NDP message must carry (RFC 4861): proof that it was not
/// forwarded by a router.
pub(crate) const NDP_HOP_LIMIT: u8 = 255;
/// Router lifetime advertised, in seconds (upstream's `RT_LIFETIME`).
const RT_LIFETIME: u16 = 65535;
/// "Managed address configuration" flag: the guest should ask DHCPv6.
const RA_MANAGED: u8 = 0x80;
/// Router, solicited and override flags of our neighbour advertisements.
const NA_FLAGS: u8 = 0xe0;
/// On-link and autonomous flags of the prefix information option.
const PREFIX_FLAGS: u8 = 0xc0;
/// An infinite lifetime.
const INFINITE: u32 = u32::MAX;
/// Prefix length advertised (upstream: always 64).
const PREFIX_LEN: u8 = 64;

/// Shortest interval between unsolicited router advertisements, in ms
/// (a third of `MaxRtrAdvInterval`, RFC 4861 §6.2.1).
pub(crate) const RA_INTERVAL_MIN_MS: u64 = 200_000;
/// Longest interval (`MaxRtrAdvInterval`, 600 s), exclusive.
pub(crate) const RA_INTERVAL_MAX_MS: u64 = 600_000;

/// ff02::1, all nodes.
pub(crate) const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Length of a neighbour advertisement with a target link-layer option.
const NA_LEN: usize = 32;
/// Longest encoding of one domain name.
const NAME_MAX: usize = 255;
/// Longest DNSSL option.
const DNSSL_MAX: usize = 8 + (MAX_SEARCH * NAME_MAX).next_multiple_of(8);
/// Longest router advertisement: header, prefix, source link-layer, MTU,
/// RDNSS and DNSSL.
const RA_MAX: usize = 16 + 32 + 8 + 8 + (8 + 16 * MAX_DNS) + DNSSL_MAX;

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

/// Writes a neighbour advertisement for `target` at `mac` (flags R, S, O, a
/// target link-layer option) with the checksum left zero.
pub(crate) fn write_na(b: &mut [u8], target: Ipv6Addr, mac: Mac) -> Option<usize> {
    let b = b.get_mut(..NA_LEN)?;
    put(b, 0, &[TYPE_NA, 0, 0, 0, NA_FLAGS, 0, 0, 0])?;
    put(b, 8, &target.octets())?;
    put(b, 24, &[OPT_TARGET_LL, 1])?;
    put(b, 26, &mac.0)?;
    Some(NA_LEN)
}

/// Writes `name` in RFC 1035 label form (`3foo3org0`) at the start of `b`.
/// One trailing dot is allowed. `None` if a label is empty or longer than 63
/// bytes, the encoding would exceed 255 bytes, or `b` is too short.
pub(crate) fn encode_dns_name(b: &mut [u8], name: &str) -> Option<usize> {
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

/// Writes a DNSSL option (RFC 8106 §5.2) with the first [`MAX_SEARCH`] of
/// `names`, skipping any that cannot be encoded, padded with zeros to a
/// multiple of 8 bytes. `None` if no name could be written.
pub(crate) fn write_dnssl(b: &mut [u8], names: &[String]) -> Option<usize> {
    let mut off = 8;
    for name in names.iter().take(MAX_SEARCH) {
        if let Some(n) = encode_dns_name(b.get_mut(off..)?, name) {
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
    let b = b.get_mut(..RA_MAX.min(b.len()))?;
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

impl Core {
    /// Handles an NDP message (ICMPv6 types 133 to 137) from the guest: `icmp`
    /// is the ICMPv6 header and body. See [`parse_ndp`] for what is checked.
    pub(crate) fn ndp_input(&mut self, now: Instant, eth: &EthHdr, ip: &IpHdr, icmp: &[u8]) {
        let _ = (now, eth);
        let IpAddr::V6(src) = ip.src else {
            return self.counters.drop(DropReason::ServiceMalformed);
        };
        let msg = match parse_ndp(ip.hop_limit, icmp) {
            Ok(m) => m,
            Err(r) => return self.counters.drop(r),
        };
        if src.is_multicast() {
            return self.counters.drop(DropReason::ServiceMalformed);
        }
        match msg {
            NdpMsg::NeighborSolicit { .. } if src.is_unspecified() => {
                // Duplicate address detection: the address is the guest's to take.
                self.counters.drop(DropReason::ServiceIgnored);
            }
            NdpMsg::NeighborSolicit { target } => self.send_na(src, target),
            NdpMsg::RouterSolicit if !self.cfg.features.ra => {
                self.counters.drop(DropReason::ServiceIgnored);
            }
            NdpMsg::RouterSolicit => {
                let dst = if src.is_unspecified() { ALL_NODES } else { src };
                self.send_ra(dst);
            }
            NdpMsg::Other(_) => self.counters.drop(DropReason::ServiceIgnored),
        }
    }

    /// The first frame from the guest arrived: schedule router advertisements.
    pub(crate) fn ndp_guest_seen(&mut self, now: Instant) {
        if self.ra_enabled() && self.ra_next.is_none() {
            self.schedule_ra(now);
        }
    }

    /// Sends an unsolicited router advertisement when due.
    pub(crate) fn ndp_timer(&mut self, now: Instant) {
        let Some(due) = self.ra_next else { return };
        if now < due {
            return;
        }
        if !self.ra_enabled() {
            self.ra_next = None;
            return;
        }
        self.send_ra(ALL_NODES);
        self.schedule_ra(now);
    }

    /// Whether unsolicited router advertisements are sent at all.
    fn ra_enabled(&self) -> bool {
        self.cfg.features.ndp && self.cfg.features.ra && self.cfg.ip6.is_some()
    }

    fn schedule_ra(&mut self, now: Instant) {
        let ms = self.rng.range(RA_INTERVAL_MIN_MS, RA_INTERVAL_MAX_MS);
        self.ra_next = Some(now.add(Duration::from_millis(ms)));
    }

    /// Destination MAC for an NDP message to `dst`.
    fn ndp_dst_mac(&self, dst: Ipv6Addr) -> Mac {
        if dst.is_multicast() {
            multicast_mac(dst)
        } else {
            self.guest.mac
        }
    }

    fn send_na(&mut self, dst: Ipv6Addr, target: Ipv6Addr) {
        let Some(our_ll) = self.cfg.ip6.as_ref().map(|c| c.our_ll) else {
            return self.counters.drop(DropReason::Ipv6Disabled);
        };
        let mac = self.ndp_dst_mac(dst);
        let queued = self.queue_ip(
            mac,
            our_ll.into(),
            dst.into(),
            PROTO_ICMPV6,
            NA_LEN,
            |l4, cfg| write_na(l4, target, cfg.our_mac),
        );
        if queued {
            self.counters.reply(ReplyKind::NeighborAdvert);
        }
    }

    fn send_ra(&mut self, dst: Ipv6Addr) {
        let Some(our_ll) = self.cfg.ip6.as_ref().map(|c| c.our_ll) else {
            return self.counters.drop(DropReason::Ipv6Disabled);
        };
        let mac = self.ndp_dst_mac(dst);
        let queued = self.queue_ip(
            mac,
            our_ll.into(),
            dst.into(),
            PROTO_ICMPV6,
            RA_MAX,
            write_ra,
        );
        if queued {
            self.counters.reply(ReplyKind::RouterAdvert);
        }
    }
}
