//! Address mapping between the guest's view and the host's.
//!
//! Guest → host: the destination the guest used is rewritten (DNS forwarding,
//! the host-loopback mapping, the guest-address mapping), in that order.
//! Host → guest: the source the guest will see is chosen for a host peer so
//! that the guest can answer it (loopback peers appear as the mapped address,
//! peers the guest cannot reach appear as our own address). Shared by TCP, UDP
//! and ICMP.

use crate::config::Config;
use crate::guest::GuestInfo;
use crate::wire::headers::{PROTO_TCP, PROTO_UDP};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `a` can be an endpoint of a flow: not unspecified, multicast,
/// broadcast or loopback.
pub(crate) fn is_unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast() && !a.is_loopback()
        }
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_loopback(),
    }
}

/// Whether `a` is a multicast or (IPv4) limited broadcast address.
pub(crate) fn is_group(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// The host-side destination for a guest flow of protocol `proto` to
/// `dst`:`dport`, or `None` if the endpoints are not acceptable (non-unicast
/// addresses except UDP to multicast or broadcast, TCP or UDP port 0).
pub(crate) fn from_tap(
    cfg: &Config,
    proto: u8,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
) -> Option<IpAddr> {
    let ports = matches!(proto, PROTO_TCP | PROTO_UDP);
    // UDP may go to multicast and broadcast groups; echo ids may be 0.
    let dst_ok = is_unicast(dst) || (proto == PROTO_UDP && is_group(dst));
    if !is_unicast(src) || !dst_ok || (ports && (sport == 0 || dport == 0)) {
        return None;
    }
    let dns_port = matches!(proto, PROTO_TCP | PROTO_UDP) && matches!(dport, 53 | 853);
    let r = FamilyRules::of(cfg, dst.is_ipv6())?;
    if dns_port && r.dns_match == Some(dst) {
        if let Some(h) = r.dns_host {
            return Some(h);
        }
    }
    if r.map_host_loopback == Some(dst) {
        return Some(r.loopback);
    }
    if r.map_guest_addr == Some(dst) {
        return Some(r.addr);
    }
    Some(dst)
}

/// The mapping settings of one family, as plain IP addresses, so the rules
/// are written once for both families.
struct FamilyRules {
    dns_match: Option<IpAddr>,
    dns_host: Option<IpAddr>,
    map_host_loopback: Option<IpAddr>,
    map_guest_addr: Option<IpAddr>,
    /// The guest's assigned address.
    addr: IpAddr,
    /// The host's loopback address of the family.
    loopback: IpAddr,
    /// Our address towards the guest (IPv6: link-local): the source of
    /// host peers the guest could not answer.
    our: Option<IpAddr>,
}

impl FamilyRules {
    /// The rules of IPv6 if `v6`, else IPv4; `None` if that family is off.
    fn of(cfg: &Config, v6: bool) -> Option<Self> {
        // The mappings, alike in both families' settings.
        macro_rules! maps {
            ($c:ident) => {
                [
                    $c.dns_match,
                    $c.dns_host,
                    $c.map_host_loopback,
                    $c.map_guest_addr,
                ]
            };
        }
        Some(if v6 {
            let c = cfg.ip6.as_ref()?;
            Self::new(maps!(c), c.addr, Ipv6Addr::LOCALHOST, Some(c.our_ll))
        } else {
            let c = cfg.ip4.as_ref()?;
            Self::new(maps!(c), c.addr, Ipv4Addr::LOCALHOST, c.our_addr)
        })
    }

    /// The rules from one family's settings: `maps` are the DNS match and
    /// host, the host-loopback and the guest-address mappings.
    fn new<A: Into<IpAddr>>(maps: [Option<A>; 4], addr: A, loopback: A, our: Option<A>) -> Self {
        let [dns_match, dns_host, map_host_loopback, map_guest_addr] = maps.map(|a| a.map(A::into));
        FamilyRules {
            dns_match,
            dns_host,
            map_host_loopback,
            map_guest_addr,
            addr: addr.into(),
            loopback: loopback.into(),
            our: our.map(A::into),
        }
    }
}

/// Guest-side addresses of a flow from host peer `peer`: `(source the guest
/// sees, guest address)`. `None` if the guest cannot be reached in that
/// family (disabled, or no address of ours to use).
pub(crate) fn from_host(cfg: &Config, guest: &GuestInfo, peer: IpAddr) -> Option<(IpAddr, IpAddr)> {
    let p = peer.to_canonical();
    let r = FamilyRules::of(cfg, p.is_ipv6())?;
    let seen = match p {
        IpAddr::V4(_) => guest.ip4_seen.map(IpAddr::V4),
        IpAddr::V6(_) => guest.ip6_seen.map(IpAddr::V6),
    };
    let src = if p == r.loopback && r.map_host_loopback.is_some() {
        r.map_host_loopback?
    } else if p == r.addr && r.map_guest_addr.is_some() {
        r.map_guest_addr?
    } else if p.is_loopback()
        || p.is_unspecified()
        || p == r.addr
        || Some(p) == seen
        || !is_unicast(p)
    {
        r.our?
    } else {
        p
    };
    let guest_addr = match (src, r.addr) {
        (IpAddr::V6(src), IpAddr::V6(assigned)) => guest_addr6(guest, assigned, src).into(),
        _ if src.is_unspecified() => return None,
        _ => seen.unwrap_or(r.addr),
    };
    if guest_addr.is_unspecified() {
        return None;
    }
    Some((src, guest_addr))
}

/// The guest address of an IPv6 flow from source `src`. A global source
/// goes to a global guest address: the one seen, else the `assigned` one;
/// the link-local one only if there is nothing else (local mode). The guest
/// answers from the address it was sent to only over TCP; over UDP its
/// source follows its routes, and a reply must match the flow.
fn guest_addr6(guest: &GuestInfo, assigned: Ipv6Addr, src: Ipv6Addr) -> Ipv6Addr {
    let global_seen = guest.ip6_seen.filter(|a| !a.is_unicast_link_local());
    if src.is_unicast_link_local() {
        guest.ip6_ll_seen.or(guest.ip6_seen).unwrap_or(assigned)
    } else if let Some(a) = global_seen {
        a
    } else if !assigned.is_unspecified() {
        assigned
    } else {
        guest.ip6_seen.unwrap_or(assigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::capture_config;
    use crate::wire::Mac;

    fn guest() -> GuestInfo {
        GuestInfo {
            mac: Mac::BROADCAST,
            ip4_seen: None,
            ip6_seen: None,
            ip6_ll_seen: Some("fe80::2".parse().unwrap()),
            seen: true,
        }
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A row of [`tap_rows`]: protocol, source, source port, destination,
    /// destination port, mapped destination.
    type TapRow<'a> = (u8, &'a str, u16, &'a str, u16, Option<&'a str>);

    /// Checks [`from_tap`] on `rows`.
    fn tap_rows(cfg: &Config, rows: &[TapRow<'_>]) {
        for &(proto, src, sport, dst, dport, want) in rows {
            assert_eq!(
                from_tap(cfg, proto, a(src), sport, a(dst), dport),
                want.map(a),
                "{proto} {src}:{sport} -> {dst}:{dport}"
            );
        }
    }

    /// Checks [`from_host`] on rows of `(peer, (source seen, guest
    /// address))`.
    fn host_rows(cfg: &Config, g: &GuestInfo, rows: &[(&str, Option<(&str, &str)>)]) {
        for &(peer, want) in rows {
            assert_eq!(
                from_host(cfg, g, a(peer)),
                want.map(|(s, d)| (a(s), a(d))),
                "from {peer}"
            );
        }
    }

    #[test]
    fn guest_to_host_rules() {
        let mut cfg = capture_config();
        let c4 = cfg.ip4.as_mut().unwrap();
        c4.dns_match = Some(Ipv4Addr::new(10, 77, 0, 3));
        c4.dns_host = Some(Ipv4Addr::new(192, 0, 2, 53));
        c4.map_guest_addr = Some(Ipv4Addr::new(10, 77, 0, 4));
        let g = "10.77.0.2";
        tap_rows(
            &cfg,
            &[
                // DNS forwarding, TCP and UDP on 53 and 853 only.
                (6, g, 5, "10.77.0.3", 53, Some("192.0.2.53")),
                (17, g, 5, "10.77.0.3", 853, Some("192.0.2.53")),
                (6, g, 5, "10.77.0.3", 80, Some("10.77.0.3")),
                // Gateway → host loopback.
                (6, g, 5, "10.77.0.1", 22, Some("127.0.0.1")),
                (6, "fd77::2", 5, "fd77::1", 22, Some("::1")),
                // map_guest_addr → the guest's assigned address.
                (6, g, 5, "10.77.0.4", 22, Some("10.77.0.2")),
                // Anything else unchanged.
                (6, g, 5, "192.0.2.1", 443, Some("192.0.2.1")),
                // Endpoint checks.
                (6, g, 5, "192.0.2.1", 0, None),
                (6, g, 0, "192.0.2.1", 1, None),
                (6, g, 5, "224.0.0.1", 1, None),
                (6, g, 5, "255.255.255.255", 1, None),
                (6, "0.0.0.0", 5, "192.0.2.1", 1, None),
                (6, "fd77::2", 5, "ff02::1", 1, None),
            ],
        );
        cfg.ip6 = None;
        tap_rows(&cfg, &[(6, "fd77::2", 5, "fd77::9", 1, None)]);
    }

    #[test]
    fn udp_and_icmp_endpoints() {
        let cfg = capture_config();
        let g = "10.77.0.2";
        // UDP may go to multicast and broadcast groups, TCP and ICMP may not.
        for d in ["239.255.255.250", "255.255.255.255", "224.0.0.251"] {
            tap_rows(
                &cfg,
                &[
                    (17, g, 5, d, 1900, Some(d)),
                    (6, g, 5, d, 1900, None),
                    (1, g, 0, d, 0, None),
                ],
            );
        }
        tap_rows(
            &cfg,
            &[
                (17, "fd77::2", 5, "ff02::fb", 5353, Some("ff02::fb")),
                (17, g, 5, "0.0.0.0", 1, None),
                (17, g, 0, "192.0.2.1", 1, None),
                // Echo ids (the "ports") may be 0; the gateway maps to loopback.
                (1, g, 0, "10.77.0.1", 0, Some("127.0.0.1")),
                (58, "fd77::2", 0, "fd77::1", 0, Some("::1")),
            ],
        );
        // No DNS redirection for ICMP.
        let mut cfg = cfg;
        let c4 = cfg.ip4.as_mut().unwrap();
        c4.dns_match = Some(Ipv4Addr::new(10, 77, 0, 3));
        c4.dns_host = Some(Ipv4Addr::new(192, 0, 2, 53));
        tap_rows(&cfg, &[(1, g, 53, "10.77.0.3", 53, Some("10.77.0.3"))]);
    }

    #[test]
    fn host_to_guest_rules() {
        let mut cfg = capture_config();
        let g = guest();
        let ll = "fe80::f0d8:fdff:fe4c:e225";
        host_rows(
            &cfg,
            &g,
            &[
                // Loopback peers appear as the mapped address.
                ("127.0.0.1", Some(("10.77.0.1", "10.77.0.2"))),
                ("::ffff:127.0.0.1", Some(("10.77.0.1", "10.77.0.2"))),
                ("::1", Some(("fd77::1", "fd77::2"))),
                // Other loopback addresses and the host's own address: our
                // address.
                ("127.0.0.2", Some(("10.77.0.1", "10.77.0.2"))),
                ("10.77.0.2", Some(("10.77.0.1", "10.77.0.2"))),
                // IPv6: our link-local, towards the guest's link-local.
                ("fd77::2", Some((ll, "fe80::2"))),
                // Real peers unchanged.
                ("192.0.2.7", Some(("192.0.2.7", "10.77.0.2"))),
            ],
        );
        // Before the guest used its global address, global sources go to the
        // assigned one, not to the link-local one seen.
        let mut g_ll = g;
        g_ll.ip6_seen = g.ip6_ll_seen;
        host_rows(
            &cfg,
            &g_ll,
            &[
                ("::1", Some(("fd77::1", "fd77::2"))),
                ("2001:db8::1", Some(("2001:db8::1", "fd77::2"))),
                ("fd77::2", Some((ll, "fe80::2"))),
            ],
        );
        // map_guest_addr.
        cfg.ip4.as_mut().unwrap().map_guest_addr = Some(Ipv4Addr::new(10, 77, 0, 9));
        host_rows(&cfg, &g, &[("10.77.0.2", Some(("10.77.0.9", "10.77.0.2")))]);
        // Without our address or the family, nothing.
        let c4 = cfg.ip4.as_mut().unwrap();
        c4.map_host_loopback = None;
        c4.our_addr = None;
        cfg.ip6 = None;
        host_rows(&cfg, &g, &[("127.0.0.1", None), ("2001:db8::1", None)]);
    }
}
