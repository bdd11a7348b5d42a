//! Choice of the template interface and what is copied from it.

use super::*;

#[test]
fn template_choice() {
    let links = [
        link(1, "lo", IFF_LOOPBACK),
        link(2, "eth0", 0),
        link(3, "wlan0", 0),
    ];
    let mut notes = Vec::new();
    // Only link-local and loopback routes: nothing.
    let routes = [
        route("fe80::", 64, &[(2, None, 1)]),
        route("::1", 128, &[(1, None, 1)]),
    ];
    assert_eq!(
        pick_template(&links, &routes, None, &mut notes).unwrap(),
        None
    );
    // A non-link-local route.
    let routes = [
        route("fe80::", 64, &[(2, None, 1)]),
        route("2001:db8::", 64, &[(3, None, 1)]),
    ];
    assert_eq!(
        pick_template(&links, &routes, None, &mut notes).unwrap(),
        Some(3)
    );
    // Default routes win, the first one, with a note if there are others.
    let routes = [
        route("198.51.100.0", 24, &[(2, None, 1)]),
        route("0.0.0.0", 0, &[(3, Some("192.0.2.1"), 1)]),
        route("0.0.0.0", 0, &[(2, Some("198.51.100.1"), 1)]),
    ];
    assert_eq!(
        pick_template(&links, &routes, None, &mut notes).unwrap(),
        Some(3)
    );
    assert_eq!(notes.len(), 1);
    // Multipath: the heaviest next hop.
    let routes = [route(
        "0.0.0.0",
        0,
        &[(2, Some("192.0.2.1"), 1), (3, Some("198.51.100.1"), 5)],
    )];
    assert_eq!(
        pick_template(&links, &routes, None, &mut notes).unwrap(),
        Some(3)
    );
    // Requested by name.
    assert_eq!(
        pick_template(&links, &routes, Some("eth0"), &mut notes).unwrap(),
        Some(2)
    );
    assert!(pick_template(&links, &routes, Some("eth9"), &mut notes).is_err());
}

#[test]
fn template_contents() {
    let links = [link(2, "eth0", 0), link(3, "eth1", 0)];
    let addr = |i: u32, s: &str, p: u8, flags: u32| AddrInfo {
        index: i,
        addr: a(s),
        prefix: p,
        scope: 0,
        flags,
    };
    let addrs = [
        addr(2, "10.0.0.2", 8, 0),
        addr(2, "192.0.2.2", 24, 0),
        addr(2, "192.0.2.9", 30, IFA_F_DEPRECATED),
        addr(3, "198.51.100.2", 32, 0),
        addr(2, "fe80::2", 64, 0),
        addr(2, "2001:db8::2", 64, 0),
    ];
    let routes = [
        route(
            "0.0.0.0",
            0,
            &[
                (3, Some("198.51.100.1"), 9),
                (2, Some("192.0.2.1"), 2),
                (2, Some("192.0.2.254"), 4),
            ],
        ),
        route("192.0.2.0", 24, &[(2, None, 1)]),
        route("198.51.100.0", 24, &[(3, None, 1)]),
        route("fe80::", 64, &[(2, None, 1)]),
        route("ff00::", 8, &[(2, None, 1)]),
    ];
    let t = template_family(&links, &addrs, &routes, 2).unwrap();
    assert_eq!(t.ifname, "eth0");
    assert_eq!(t.addrs.first(), Some(&na("2001:db8::2", 64)));
    assert_eq!(
        t.addrs
            .iter()
            .filter(|x| x.addr.is_ipv4())
            .copied()
            .collect::<Vec<_>>(),
        vec![na("192.0.2.2", 24), na("10.0.0.2", 8)],
        "most specific first, deprecated left out"
    );
    assert_eq!(t.link_local, Some(a("fe80::2")));
    assert_eq!(
        t.gateway,
        Some(a("192.0.2.254")),
        "heaviest hop on this interface"
    );
    let mut multi = rt("0.0.0.0", 0, Some("192.0.2.1"));
    multi.hops = vec![hop("192.0.2.1", 2), hop("192.0.2.254", 4)];
    assert_eq!(
        t.routes,
        vec![multi, rt("192.0.2.0", 24, None)],
        "every next hop on this interface, none of the others"
    );
    assert!(template_family(&links, &addrs, &routes, 7).is_none());
    // eth1: the one hop left is a plain route.
    let t1 = template_family(&links, &addrs, &routes, 3).unwrap();
    assert_eq!(t1.gateway, Some(a("198.51.100.1")));
    assert_eq!(t1.routes[0], rt("0.0.0.0", 0, Some("198.51.100.1")));
}

fn hop(gw: &str, weight: u16) -> NsHop {
    NsHop {
        gateway: Some(a(gw)),
        weight,
        onlink: false,
    }
}

/// The gateway is one the namespace's copy routes through: equal
/// weights give the first hop, several defaults the lowest metric; flags
/// and attributes are copied; encapsulated routes are not.
#[test]
fn template_gateway_and_route_copy() {
    let links = [link(2, "eth0", 0), link(3, "eth1", 0)];
    let addrs = [AddrInfo {
        index: 2,
        addr: a("192.0.2.77"),
        prefix: 32,
        scope: 0,
        flags: 0,
    }];
    // Two link-local routers of equal weight.
    let r6 = [route(
        "::",
        0,
        &[(2, Some("fe80::1"), 1), (2, Some("fe80::2"), 1)],
    )];
    let t = template_family(&links, &[], &r6, 2).unwrap();
    assert_eq!(t.gateway, Some(a("fe80::1")), "first of equal weights");
    assert_eq!(
        t.routes[0]
            .hops
            .iter()
            .map(|h| h.gateway)
            .collect::<Vec<_>>(),
        vec![Some(a("fe80::1")), Some(a("fe80::2"))]
    );
    // Defaults with metrics: the lowest wins, whatever the dump order;
    // one on another interface with a lower metric picks that interface.
    let mut d300 = route("0.0.0.0", 0, &[(2, Some("192.0.2.254"), 1)]);
    d300.metric = Some(300);
    let mut d100 = route("0.0.0.0", 0, &[(2, Some("192.0.2.1"), 1)]);
    d100.metric = Some(100);
    d100.hops[0].onlink = true;
    d100.metrics = vec![netlink::RouteMetric::Mtu(1400)];
    let mut other = route("0.0.0.0", 0, &[(3, Some("198.51.100.1"), 1)]);
    other.metric = Some(200);
    let mut tunnel = route("203.0.113.0", 24, &[(2, Some("192.0.2.1"), 1)]);
    tunnel.encap = true;
    let routes = [other.clone(), d300, d100, tunnel];
    let t = template_family(&links, &addrs, &routes, 2).unwrap();
    assert_eq!(t.gateway, Some(a("192.0.2.1")));
    assert_eq!(t.routes.len(), 2, "{:?}", t.routes);
    let copy = t.routes.iter().find(|r| r.metric == Some(100)).unwrap();
    assert!(copy.hops[0].onlink);
    assert_eq!(copy.metrics, vec![netlink::RouteMetric::Mtu(1400)]);
    let mut notes = vec![];
    assert_eq!(
        pick_template(&links, &routes, None, &mut notes).unwrap(),
        Some(2)
    );
    other.metric = Some(50);
    assert_eq!(
        pick_template(&links, &[other], None, &mut notes).unwrap(),
        Some(3)
    );
    // A default route without gateway first: the next one's gateway.
    let mut dev = route("0.0.0.0", 0, &[(2, None, 1)]);
    dev.metric = Some(10);
    let t = template_family(&links, &addrs, &[dev, routes[1].clone()], 2).unwrap();
    assert_eq!(t.gateway, Some(a("192.0.2.254")));
}

/// Default routes `--config-net` makes itself (-g, --no-copy-routes,
/// local mode): onlink where no address of the namespace covers the
/// gateway.
#[test]
fn default_route_onlink() {
    let on = |gw: &str, addrs: &[NsAddr]| default_route(Some(a(gw)), addrs)[0].hops[0].onlink;
    assert!(!on("192.0.2.1", &[na("192.0.2.2", 24)]));
    assert!(on("192.0.2.1", &[na("192.0.2.77", 32)]));
    assert!(!on("192.0.2.1", &[na("10.0.0.1", 8), na("192.0.2.7", 25)]));
    assert!(!on("fe80::1", &[]));
    assert!(on("2001:db8:1::1", &[na("2001:db8::2", 64)]));
    assert!(!on("2001:db8::1", &[na("2001:db8::2", 64)]));
    assert!(default_route(None, &[]).is_empty());
    let h = HostInfo {
        v4: Some(HostFamily {
            addrs: vec![na("192.0.2.77", 32)],
            ..host().v4.unwrap()
        }),
        ..host()
    };
    let c = cfg(Mode::Pasta, &["--config-net", "--no-copy-routes"], &h, "");
    let r = &c.ns_net.unwrap().v4.unwrap().routes;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].to_string(), "default via 192.0.2.1 onlink");
}
