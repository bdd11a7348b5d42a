//! Discovery against real interfaces in throw-away namespaces, and
//! `--config-net` end to end.

use super::*;

/// Discovery against real interfaces in a throw-away namespace.
fn discover(args: &[&str]) -> io::Result<HostInfo> {
    discover_host(&opts(Mode::Pasta, args))
}

fn veth(name: &str, peer: &str) {
    ip(&format!("link add {name} type veth peer name {peer}"));
    ip(&format!("link set {peer} up"));
    ip(&format!("link set {name} up"));
}

#[test]
fn discovery_default_route() {
    in_netns(|| {
        veth("wan0", "wanp");
        veth("lan0", "lanp");
        ip("addr add 198.51.100.2/24 dev lan0");
        ip("addr add 10.0.0.2/8 dev wan0");
        ip("addr add 192.0.2.2/24 dev wan0");
        ip("addr add 192.0.2.9/30 dev wan0 preferred_lft 0");
        ip("route add default via 192.0.2.1 dev wan0");
        ip("-6 addr add 2001:db8::2/64 dev wan0 nodad");
        ip("-6 addr add 2001:db8:1::2/80 dev wan0 nodad preferred_lft 0");
        ip("-6 route add default via fe80::1 dev wan0");
        ip("-6 addr add fe80::2/64 dev wan0 nodad");
        let h = discover(&[]).unwrap();
        let v4 = h.v4.as_ref().unwrap();
        assert_eq!(v4.ifname, "wan0");
        assert_eq!(
            v4.addrs.first(),
            Some(&na("192.0.2.2", 24)),
            "most specific, not deprecated"
        );
        assert!(!v4.addrs.contains(&na("192.0.2.9", 30)));
        assert_eq!(v4.gateway, Some(a("192.0.2.1")));
        assert_eq!(v4.mtu, 1500);
        let plain: Vec<NsRoute> = v4
            .routes
            .iter()
            .map(|r| NsRoute {
                metric: None,
                ..r.clone()
            })
            .collect();
        assert!(plain.contains(&rt("0.0.0.0", 0, Some("192.0.2.1"))));
        assert!(plain.contains(&rt("192.0.2.0", 24, None)));
        assert!(
            !v4.routes.iter().any(|r| r.dst == a("198.51.100.0")),
            "other interface's routes"
        );
        let v6 = h.v6.as_ref().unwrap();
        assert_eq!(v6.ifname, "wan0");
        assert_eq!(v6.addrs, vec![na("2001:db8::2", 64)]);
        assert_eq!(v6.gateway, Some(a("fe80::1")));
        assert!(v6.link_local.is_some_and(netlink::is_link_local));
        assert!(!v6.routes.iter().any(|r| netlink::is_link_local(r.dst)));
        let c = cfg(Mode::Pasta, &[], &h, "");
        assert_eq!(
            c.core.ip6.as_ref().unwrap().our_ll,
            "fe80::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(c.ns_ifname, "wan0");
        // -i chooses another one; a missing one is an error.
        let h = discover(&["-i", "lan0"]).unwrap();
        assert_eq!(h.v4.as_ref().unwrap().ifname, "lan0");
        assert_eq!(h.v4.as_ref().unwrap().gateway, None);
        let h = discover(&["--outbound-if4", "lan0"]).unwrap();
        assert_eq!(h.v4.as_ref().unwrap().ifname, "lan0");
        assert_eq!(h.v6.as_ref().unwrap().ifname, "wan0");
        assert!(discover(&["-i", "nope0"]).is_err());
        let h = discover(&["-4"]).unwrap();
        assert!(h.v6.is_none());
    });
}

#[test]
fn discovery_without_default_route() {
    in_netns(|| {
        veth("a0", "ap");
        ip("-6 addr flush dev a0");
        let h = discover(&[]).unwrap();
        assert!(h.v4.is_none(), "{h:?}");
        let c = cfg(Mode::Pasta, &[], &h, "");
        assert!(c.local4 && c.local6);
        veth("b0", "bp");
        ip("addr add 198.51.100.2/24 dev b0");
        let h = discover(&[]).unwrap();
        let v4 = h.v4.as_ref().unwrap();
        assert_eq!(v4.ifname, "b0");
        assert_eq!(v4.gateway, None);
        let c = cfg(Mode::Passt, &[], &h, "");
        assert!(!c.local4);
        assert!(!c.core.features.dhcp);
    });
}

#[test]
fn discovery_multipath() {
    in_netns(|| {
        veth("m0", "mp0");
        veth("m1", "mp1");
        ip("addr add 192.0.2.2/24 dev m0");
        ip("addr add 198.51.100.2/24 dev m1");
        ip("route add default nexthop via 192.0.2.1 dev m0 weight 1 nexthop via 198.51.100.1 dev m1 weight 10");
        let h = discover(&[]).unwrap();
        let v4 = h.v4.as_ref().unwrap();
        assert_eq!(v4.ifname, "m1", "heaviest next hop");
        assert_eq!(v4.gateway, Some(a("198.51.100.1")));
        let h = discover(&["-i", "m0"]).unwrap();
        assert_eq!(h.v4.as_ref().unwrap().gateway, Some(a("192.0.2.1")));
    });
}

#[test]
fn discovery_nexthop_objects() {
    in_netns(|| {
        veth("n0", "np0");
        ip("addr add 192.0.2.2/24 dev n0");
        ip("-6 addr add 2001:db8::2/64 dev n0 nodad");
        ip("nexthop add id 7 via 192.0.2.1 dev n0");
        ip("route add default nhid 7");
        ip("nexthop add id 8 via 2001:db8::1 dev n0");
        ip("-6 route add default nhid 8");
        let h = discover(&[]).unwrap();
        assert_eq!(h.v4.as_ref().unwrap().ifname, "n0");
        assert_eq!(h.v4.as_ref().unwrap().gateway, Some(a("192.0.2.1")));
        assert_eq!(h.v6.as_ref().unwrap().gateway, Some(a("2001:db8::1")));
    });
}

/// Discovery in one namespace, --config-net in another: the namespace
/// ends up with the host's addresses and routes.
#[test]
fn config_net_end_to_end() {
    let Some(ns) = in_netns(|| {
        veth("eth7", "peer7");
        ip("addr add 192.0.2.2/24 dev eth7");
        ip("route add default via 192.0.2.1");
        ip("route add 203.0.113.0/24 via 192.0.2.254");
        ip("-6 addr add 2001:db8::2/64 dev eth7 nodad");
        ip("-6 route add default via 2001:db8::1");
        let h = discover(&[]).unwrap();
        let c = cfg(Mode::Pasta, &["--config-net", "-m", "4000"], &h, "");
        c.ns_net.unwrap()
    }) else {
        return;
    };
    in_netns(move || {
        veth(&ns.ifname, "tapp");
        ip(&format!("link set {} down", ns.ifname));
        netlink::configure_ns_interface(&ns).unwrap();
        let out = ip_out(&format!("-j addr show {}", ns.ifname));
        assert_contains(
            &out,
            &[
                "\"local\":\"192.0.2.2\",\"prefixlen\":24",
                "\"local\":\"2001:db8::2\",\"prefixlen\":64",
                "\"mtu\":4000",
            ],
        );
        let r = ip_out("-j route");
        assert_contains(
            &r,
            &[
                "\"dst\":\"default\",\"gateway\":\"192.0.2.1\"",
                "\"dst\":\"203.0.113.0/24\",\"gateway\":\"192.0.2.254\"",
            ],
        );
        let r6 = ip_out("-j -6 route");
        assert_eq!(
            r6.matches("\"dst\":\"2001:db8::/64\"").count(),
            1,
            "prefix route copied with its metric, not duplicated: {r6}"
        );
        assert!(
            r6.contains("\"dst\":\"default\",\"gateway\":\"2001:db8::1\""),
            "{r6}"
        );
    });
}
