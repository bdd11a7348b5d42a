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

/// The guest-to-host mapping settings of one family, as plain IP addresses,
/// so the rules are written once for both families.
struct FamilyRules {
    dns_match: Option<IpAddr>,
    dns_host: Option<IpAddr>,
    map_host_loopback: Option<IpAddr>,
    map_guest_addr: Option<IpAddr>,
    /// The guest's assigned address.
    addr: IpAddr,
    /// The host's loopback address of the family.
    loopback: IpAddr,
}

impl FamilyRules {
    /// The rules of IPv6 if `v6`, else IPv4; `None` if that family is off.
    fn of(cfg: &Config, v6: bool) -> Option<Self> {
        if v6 {
            let c = cfg.ip6.as_ref()?;
            Some(FamilyRules {
                dns_match: c.dns_match.map(IpAddr::V6),
                dns_host: c.dns_host.map(IpAddr::V6),
                map_host_loopback: c.map_host_loopback.map(IpAddr::V6),
                map_guest_addr: c.map_guest_addr.map(IpAddr::V6),
                addr: c.addr.into(),
                loopback: Ipv6Addr::LOCALHOST.into(),
            })
        } else {
            let c = cfg.ip4.as_ref()?;
            Some(FamilyRules {
                dns_match: c.dns_match.map(IpAddr::V4),
                dns_host: c.dns_host.map(IpAddr::V4),
                map_host_loopback: c.map_host_loopback.map(IpAddr::V4),
                map_guest_addr: c.map_guest_addr.map(IpAddr::V4),
                addr: c.addr.into(),
                loopback: Ipv4Addr::LOCALHOST.into(),
            })
        }
    }
}

/// Guest-side addresses of a flow from host peer `peer`: `(source the guest
/// sees, guest address)`. `None` if the guest cannot be reached in that
/// family (disabled, or no address of ours to use).
pub(crate) fn from_host(cfg: &Config, guest: &GuestInfo, peer: IpAddr) -> Option<(IpAddr, IpAddr)> {
    match peer.to_canonical() {
        IpAddr::V4(p) => {
            let c = cfg.ip4.as_ref()?;
            let guest_addr = guest.ip4_seen.unwrap_or(c.addr);
            let src = if p == Ipv4Addr::LOCALHOST && c.map_host_loopback.is_some() {
                c.map_host_loopback?
            } else if p == c.addr && c.map_guest_addr.is_some() {
                c.map_guest_addr?
            } else if p.is_loopback()
                || p.is_unspecified()
                || p == c.addr
                || Some(p) == guest.ip4_seen
                || !is_unicast(p.into())
            {
                c.our_addr?
            } else {
                p
            };
            if src.is_unspecified() || guest_addr.is_unspecified() {
                return None;
            }
            Some((src.into(), guest_addr.into()))
        }
        IpAddr::V6(p) => {
            let c = cfg.ip6.as_ref()?;
            let src = if p == Ipv6Addr::LOCALHOST && c.map_host_loopback.is_some() {
                c.map_host_loopback?
            } else if p == c.addr && c.map_guest_addr.is_some() {
                c.map_guest_addr?
            } else if p.is_loopback()
                || p.is_unspecified()
                || p == c.addr
                || Some(p) == guest.ip6_seen
                || !is_unicast(p.into())
            {
                c.our_ll
            } else {
                p
            };
            // A global source goes to a global guest address: the one seen,
            // else the assigned one; the link-local one only if there is
            // nothing else (local mode). The guest answers from the address
            // it was sent to only over TCP; over UDP its source follows its
            // routes, and a reply must match the flow.
            let global_seen = guest.ip6_seen.filter(|a| !a.is_unicast_link_local());
            let guest_addr = if src.is_unicast_link_local() {
                guest.ip6_ll_seen.or(guest.ip6_seen).unwrap_or(c.addr)
            } else if let Some(a) = global_seen {
                a
            } else if !c.addr.is_unspecified() {
                c.addr
            } else {
                guest.ip6_seen.unwrap_or(c.addr)
            };
            if guest_addr.is_unspecified() {
                return None;
            }
            Some((src.into(), guest_addr.into()))
        }
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

    #[test]
    fn guest_to_host_rules() {
        let mut cfg = capture_config();
        let c4 = cfg.ip4.as_mut().unwrap();
        c4.dns_match = Some(Ipv4Addr::new(10, 77, 0, 3));
        c4.dns_host = Some(Ipv4Addr::new(192, 0, 2, 53));
        c4.map_guest_addr = Some(Ipv4Addr::new(10, 77, 0, 4));
        let g = a("10.77.0.2");
        // DNS forwarding, TCP and UDP on 53 and 853 only.
        assert_eq!(
            from_tap(&cfg, 6, g, 5, a("10.77.0.3"), 53),
            Some(a("192.0.2.53"))
        );
        assert_eq!(
            from_tap(&cfg, 17, g, 5, a("10.77.0.3"), 853),
            Some(a("192.0.2.53"))
        );
        assert_eq!(
            from_tap(&cfg, 6, g, 5, a("10.77.0.3"), 80),
            Some(a("10.77.0.3"))
        );
        // Gateway → host loopback.
        assert_eq!(
            from_tap(&cfg, 6, g, 5, a("10.77.0.1"), 22),
            Some(a("127.0.0.1"))
        );
        assert_eq!(
            from_tap(&cfg, 6, a("fd77::2"), 5, a("fd77::1"), 22),
            Some(a("::1"))
        );
        // map_guest_addr → the guest's assigned address.
        assert_eq!(
            from_tap(&cfg, 6, g, 5, a("10.77.0.4"), 22),
            Some(a("10.77.0.2"))
        );
        // Anything else unchanged.
        assert_eq!(
            from_tap(&cfg, 6, g, 5, a("192.0.2.1"), 443),
            Some(a("192.0.2.1"))
        );
        // Endpoint checks.
        assert_eq!(from_tap(&cfg, 6, g, 5, a("192.0.2.1"), 0), None);
        assert_eq!(from_tap(&cfg, 6, g, 0, a("192.0.2.1"), 1), None);
        assert_eq!(from_tap(&cfg, 6, g, 5, a("224.0.0.1"), 1), None);
        assert_eq!(from_tap(&cfg, 6, g, 5, a("255.255.255.255"), 1), None);
        assert_eq!(from_tap(&cfg, 6, a("0.0.0.0"), 5, a("192.0.2.1"), 1), None);
        assert_eq!(from_tap(&cfg, 6, a("fd77::2"), 5, a("ff02::1"), 1), None);
        cfg.ip6 = None;
        assert_eq!(from_tap(&cfg, 6, a("fd77::2"), 5, a("fd77::9"), 1), None);
    }

    #[test]
    fn udp_and_icmp_endpoints() {
        let cfg = capture_config();
        let g = a("10.77.0.2");
        // UDP may go to multicast and broadcast groups, TCP and ICMP may not.
        for d in ["239.255.255.250", "255.255.255.255", "224.0.0.251"] {
            assert_eq!(from_tap(&cfg, 17, g, 5, a(d), 1900), Some(a(d)));
            assert_eq!(from_tap(&cfg, 6, g, 5, a(d), 1900), None);
            assert_eq!(from_tap(&cfg, 1, g, 0, a(d), 0), None);
        }
        assert_eq!(
            from_tap(&cfg, 17, a("fd77::2"), 5, a("ff02::fb"), 5353),
            Some(a("ff02::fb"))
        );
        assert_eq!(from_tap(&cfg, 17, g, 5, a("0.0.0.0"), 1), None);
        assert_eq!(from_tap(&cfg, 17, g, 0, a("192.0.2.1"), 1), None);
        // Echo ids (the "ports") may be 0; the gateway maps to loopback.
        assert_eq!(
            from_tap(&cfg, 1, g, 0, a("10.77.0.1"), 0),
            Some(a("127.0.0.1"))
        );
        assert_eq!(
            from_tap(&cfg, 58, a("fd77::2"), 0, a("fd77::1"), 0),
            Some(a("::1"))
        );
        // No DNS redirection for ICMP.
        let mut cfg = cfg;
        let c4 = cfg.ip4.as_mut().unwrap();
        c4.dns_match = Some(Ipv4Addr::new(10, 77, 0, 3));
        c4.dns_host = Some(Ipv4Addr::new(192, 0, 2, 53));
        assert_eq!(
            from_tap(&cfg, 1, g, 53, a("10.77.0.3"), 53),
            Some(a("10.77.0.3"))
        );
    }

    #[test]
    fn host_to_guest_rules() {
        let mut cfg = capture_config();
        let g = guest();
        // Loopback peers appear as the mapped address.
        assert_eq!(
            from_host(&cfg, &g, a("127.0.0.1")),
            Some((a("10.77.0.1"), a("10.77.0.2")))
        );
        assert_eq!(
            from_host(&cfg, &g, a("::ffff:127.0.0.1")),
            Some((a("10.77.0.1"), a("10.77.0.2")))
        );
        assert_eq!(
            from_host(&cfg, &g, a("::1")),
            Some((a("fd77::1"), a("fd77::2")))
        );
        // Other loopback addresses and the host's own address: our address.
        assert_eq!(
            from_host(&cfg, &g, a("127.0.0.2")),
            Some((a("10.77.0.1"), a("10.77.0.2")))
        );
        assert_eq!(
            from_host(&cfg, &g, a("10.77.0.2")),
            Some((a("10.77.0.1"), a("10.77.0.2")))
        );
        // IPv6: our link-local, towards the guest's link-local.
        assert_eq!(
            from_host(&cfg, &g, a("fd77::2")),
            Some((a("fe80::f0d8:fdff:fe4c:e225"), a("fe80::2")))
        );
        // Before the guest used its global address, global sources go to the
        // assigned one, not to the link-local one seen.
        let mut g_ll = g;
        g_ll.ip6_seen = g.ip6_ll_seen;
        assert_eq!(
            from_host(&cfg, &g_ll, a("::1")),
            Some((a("fd77::1"), a("fd77::2")))
        );
        assert_eq!(
            from_host(&cfg, &g_ll, a("2001:db8::1")),
            Some((a("2001:db8::1"), a("fd77::2")))
        );
        assert_eq!(
            from_host(&cfg, &g_ll, a("fd77::2")),
            Some((a("fe80::f0d8:fdff:fe4c:e225"), a("fe80::2")))
        );
        // Real peers unchanged.
        assert_eq!(
            from_host(&cfg, &g, a("192.0.2.7")),
            Some((a("192.0.2.7"), a("10.77.0.2")))
        );
        // map_guest_addr.
        cfg.ip4.as_mut().unwrap().map_guest_addr = Some(Ipv4Addr::new(10, 77, 0, 9));
        assert_eq!(
            from_host(&cfg, &g, a("10.77.0.2")),
            Some((a("10.77.0.9"), a("10.77.0.2")))
        );
        // Without our address or the family, nothing.
        let c4 = cfg.ip4.as_mut().unwrap();
        c4.map_host_loopback = None;
        c4.our_addr = None;
        assert_eq!(from_host(&cfg, &g, a("127.0.0.1")), None);
        cfg.ip6 = None;
        assert_eq!(from_host(&cfg, &g, a("2001:db8::1")), None);
    }
}
