use super::testns::*;
use super::*;
use crate::conf::{NsAddr, NsFamily, NsHop};

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn eui64() {
    assert_eq!(
        eui64_link_local([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
        "fe80::11:22ff:fe33:4455"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
    );
    assert_eq!(
        eui64_link_local([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]),
        "fe80::9855:9aff:fe55:9a55"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
    );
}

#[test]
fn link_changes() {
    in_netns(|| {
        ip("link add v0 type veth peer name v1");
        let i = link_index("v0").unwrap();
        assert!(link_index("nope0").is_err());
        set_mtu(i, 1400).unwrap();
        set_mac(i, [2, 0, 0, 0, 0, 9]).unwrap();
        assert_eq!(get_mac(i).unwrap(), [2, 0, 0, 0, 0, 9]);
        link_up(i).unwrap();
        let l = link(i).unwrap();
        assert_eq!(l.name, "v0");
        assert_eq!(l.mtu, 1400);
        assert!(l.flags & IFF_UP != 0);
        assert!(set_mtu(i, 10).is_err(), "MTU below the minimum must fail");
        let all = links().unwrap();
        assert!(all
            .iter()
            .any(|l| l.name == "lo" && l.flags & IFF_LOOPBACK != 0));
        assert!(all.iter().any(|l| l.name == "v1"));
    });
}

/// A veth pair `v0`/`v1`, both up (`v0` through [`link_up`]); the index
/// of `v0`.
fn veth_up() -> u32 {
    ip("link add v0 type veth peer name v1");
    ip("link set v1 up");
    let i = link_index("v0").unwrap();
    link_up(i).unwrap();
    i
}

#[test]
fn addresses_and_routes() {
    in_netns(|| {
        let i = veth_up();
        add_address(i, "192.0.2.2".parse().unwrap(), 24, false).unwrap();
        add_address(i, "2001:db8::2".parse().unwrap(), 64, true).unwrap();
        let e = add_address(i, "192.0.2.2".parse().unwrap(), 24, false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        add_route(i, &NsRoute::via(a("0.0.0.0"), 0, a("192.0.2.1"))).unwrap();
        add_route(i, &NsRoute::direct(a("198.51.100.0"), 24)).unwrap();
        add_route(i, &NsRoute::via(a("::"), 0, a("2001:db8::1"))).unwrap();

        let a4 = addresses(false).unwrap();
        assert!(a4.iter().any(|a| a.index == i
            && a.addr == "192.0.2.2".parse::<IpAddr>().unwrap()
            && a.prefix == 24));
        let a6 = addresses(true).unwrap();
        let g = a6
            .iter()
            .find(|a| a.addr == "2001:db8::2".parse::<IpAddr>().unwrap())
            .unwrap();
        assert!(g.flags & IFA_F_NODAD != 0);
        assert!(g.flags & IFA_F_TENTATIVE == 0);

        let r4 = routes(false).unwrap();
        let d = r4.iter().find(|r| r.is_default()).unwrap();
        assert_eq!(d.hops[0].gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(d.hops[0].ifindex, i);
        assert!(r4
            .iter()
            .any(|r| r.prefix == 24 && r.dst == "198.51.100.0".parse::<IpAddr>().unwrap()));
        let r6 = routes(true).unwrap();
        assert!(r6.iter().any(|r| r.is_default()
            && r.best_hop().and_then(|h| h.gateway) == Some("2001:db8::1".parse().unwrap())));
    });
}

fn hop(gw: Option<&str>, weight: u16, onlink: bool) -> NsHop {
    NsHop {
        gateway: gw.map(a),
        weight,
        onlink,
    }
}

/// Routes with flags, several next hops and attributes go in as they
/// are and come back the same from a dump.
#[test]
fn routes_round_trip() {
    in_netns(|| {
        let i = veth_up();
        add_address(i, a("192.0.2.77"), 32, false).unwrap();
        add_address(i, a("2001:db8::2"), 64, true).unwrap();
        let mut onlink = NsRoute::via(a("0.0.0.0"), 0, a("198.51.100.1"));
        onlink.hops[0].onlink = true;
        onlink.metric = Some(50);
        let mut multi4 = NsRoute::via(a("203.0.113.0"), 24, a("198.51.100.1"));
        multi4.hops = vec![
            hop(Some("198.51.100.1"), 1, true),
            hop(Some("198.51.100.2"), 3, true),
        ];
        multi4.metrics = vec![
            RouteMetric::Mtu(1400),
            RouteMetric::Advmss(1360),
            RouteMetric::Hoplimit(33),
        ];
        let mut multi6 = NsRoute::via(a("::"), 0, a("fe80::1"));
        multi6.hops = vec![
            hop(Some("fe80::1"), 1, false),
            hop(Some("fe80::2"), 1, false),
        ];
        multi6.metric = Some(1024);
        let mut attrs6 = NsRoute::via(a("2001:db8:ff::"), 48, a("fe80::1"));
        attrs6.metric = Some(1024);
        attrs6.metrics = vec![RouteMetric::Mtu(1300), RouteMetric::Hoplimit(40)];
        attrs6.pref = Some(1); // high
        for r in [&onlink, &multi4, &multi6, &attrs6] {
            add_route(i, r).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
        let dumped = |v6: bool, dst: &str, prefix: u8| -> RouteInfo {
            routes(v6)
                .unwrap()
                .into_iter()
                .find(|r| r.dst == a(dst) && r.prefix == prefix)
                .unwrap_or_else(|| panic!("no route {dst}/{prefix}"))
        };
        let d = dumped(false, "0.0.0.0", 0);
        assert_eq!(d.hops.len(), 1);
        assert!(d.hops[0].onlink && d.hops[0].gateway == Some(a("198.51.100.1")));
        assert_eq!(d.metric, Some(50));
        let m = dumped(false, "203.0.113.0", 24);
        let hops: Vec<_> = m
            .hops
            .iter()
            .map(|h| (h.gateway.unwrap(), h.weight, h.onlink, h.ifindex))
            .collect();
        assert_eq!(
            hops,
            vec![
                (a("198.51.100.1"), 1, true, i),
                (a("198.51.100.2"), 3, true, i)
            ]
        );
        for want in [
            RouteMetric::Mtu(1400),
            RouteMetric::Advmss(1360),
            RouteMetric::Hoplimit(33),
        ] {
            assert!(m.metrics.contains(&want), "{want:?} in {:?}", m.metrics);
        }
        let m6 = dumped(true, "::", 0);
        let gws: Vec<_> = m6.hops.iter().map(|h| h.gateway.unwrap()).collect();
        assert_eq!(gws, vec![a("fe80::1"), a("fe80::2")]);
        let r6 = dumped(true, "2001:db8:ff::", 48);
        assert!(r6.metrics.contains(&RouteMetric::Mtu(1300)));
        assert!(r6.metrics.contains(&RouteMetric::Hoplimit(40)));
        assert_eq!(r6.pref, Some(1));
        let shown = ip_out("-6 route show 2001:db8:ff::/48");
        assert!(
            shown.contains("mtu 1300") && shown.contains("pref high"),
            "{shown}"
        );
        // Written as ip route writes it, for error messages.
        assert_eq!(
            multi4.to_string(),
            "203.0.113.0/24 nexthop via 198.51.100.1 onlink weight 1 \
                 nexthop via 198.51.100.2 onlink weight 3 mtu 1400 advmss 1360 hoplimit 33"
        );
        assert_eq!(
            onlink.to_string(),
            "default via 198.51.100.1 onlink metric 50"
        );
    });
}

fn sequence_config() -> NsNetConfig {
    let mut onlink = NsRoute::via(a("0.0.0.0"), 0, a("192.0.2.1"));
    onlink.hops[0].onlink = true;
    let mut multi6 = NsRoute::via(a("::"), 0, a("fe80::1"));
    multi6.hops = vec![
        hop(Some("fe80::1"), 1, false),
        hop(Some("fe80::2"), 1, false),
    ];
    NsNetConfig {
        ifname: "ns0".into(),
        mtu: Some(9000),
        mac: Some([2, 0x11, 0x22, 0x33, 0x44, 0x55]),
        v4: Some(NsFamily {
            addrs: vec![NsAddr {
                addr: a("192.0.2.2"),
                prefix: 32,
            }],
            routes: vec![onlink],
            local: false,
        }),
        v6: Some(NsFamily {
            addrs: vec![NsAddr {
                addr: a("2001:db8::2"),
                prefix: 64,
            }],
            routes: vec![multi6],
            local: false,
        }),
    }
}

#[test]
fn config_net_sequence() {
    in_netns(|| {
        ip("link add ns0 type veth peer name peer0");
        ip("link set peer0 up");
        let cfg = sequence_config();
        configure_ns_interface(&cfg).unwrap();
        // Usable at once: every address has its local route, the only
        // link-local address is ours, the generation mode is as before.
        let local = ip_out("-6 route show table local dev ns0");
        assert!(local.contains("local 2001:db8::2 "), "{local}");
        assert!(local.contains("local fe80::11:22ff:fe33:4455 "), "{local}");
        assert_eq!(
            ip_out("-6 addr show dev ns0 scope link")
                .matches("inet6 ")
                .count(),
            1
        );
        assert!(ip_out("-d link show ns0").contains("addrgenmode eui64"));
        // Running it again changes nothing and doesn't fail.
        configure_ns_interface(&cfg).unwrap();

        let link = ip_out("-j link show ns0");
        assert_contains(&link, &["\"mtu\":9000", "02:11:22:33:44:55", "\"UP\""]);
        assert!(!link.contains("NOARP"), "{link}");
        let addr = ip_out("-j addr show ns0");
        assert_contains(
            &addr,
            &[
                "\"local\":\"192.0.2.2\",\"prefixlen\":32",
                "\"local\":\"2001:db8::2\",\"prefixlen\":64",
                "\"local\":\"fe80::11:22ff:fe33:4455\"",
            ],
        );
        assert!(!addr.contains("tentative"), "{addr}");
        let r4 = ip_out("-4 route show dev ns0");
        assert!(r4.contains("default via 192.0.2.1 onlink"), "{r4}");
        let r6 = ip_out("-6 route show default");
        assert!(
            r6.contains("nexthop via fe80::1 dev ns0")
                && r6.contains("nexthop via fe80::2 dev ns0"),
            "{r6}"
        );
    });
}

/// A route the namespace refuses is an error naming it; one that exists
/// already is not.
#[test]
fn config_net_route_failure_names_the_route() {
    in_netns(|| {
        ip("link add ns0 type veth peer name peer0");
        ip("link set peer0 up");
        let mut cfg = sequence_config();
        let v4 = cfg.v4.as_mut().unwrap();
        v4.routes.push(NsRoute::direct(a("192.0.2.2"), 32));
        v4.routes
            .push(NsRoute::via(a("203.0.113.0"), 24, a("198.18.0.1")));
        let e = configure_ns_interface(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("adding the route 203.0.113.0/24 via 198.18.0.1 on ns0")
                && e.contains("Network is unreachable")
                && e.contains("not on the link"),
            "{e}"
        );
    });
}

/// A family in local mode that the namespace has disabled is left out;
/// one from the host is an error.
#[test]
fn config_net_local_family_without_ipv6() {
    in_netns(|| {
        ip("link add ns0 type veth peer name peer0");
        ip("link set peer0 up");
        std::fs::write("/proc/sys/net/ipv6/conf/ns0/disable_ipv6", "1").unwrap();
        let mut cfg = sequence_config();
        let e = configure_ns_interface(&cfg).unwrap_err().to_string();
        assert!(e.contains("adding address fe80::"), "{e}");
        let v6 = cfg.v6.as_mut().unwrap();
        v6.local = true;
        v6.addrs.clear();
        v6.routes = vec![NsRoute::via(a("::"), 0, a("fe80::1"))];
        configure_ns_interface(&cfg).unwrap();
        let r4 = ip_out("-4 route show dev ns0");
        assert!(r4.contains("default via 192.0.2.1 onlink"), "{r4}");
    });
}
