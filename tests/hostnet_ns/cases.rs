//! The host networks of the table-driven tests, one table per concern,
//! and the tests that start from them.

use super::*;

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// TCP to the peer in both families and to the host through the gateways.
fn tcp_to(peer4: &str, peer6: &str, gws: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("{peer4} {PEER_PORT}"),
        format!("{peer6} {PEER_PORT}"),
    ];
    v.extend(gws.iter().map(|g| format!("{g} {HOST_PORT}")));
    v
}

/// The common host: 192.0.2.2/24 via 192.0.2.1, 2001:db8:1::2/64 via the
/// link-local router fe80::1; the peer has those routers' addresses.
fn ll6_router(name: &'static str) -> Case {
    Case {
        name,
        links: 1,
        host: "ip addr add 192.0.2.2/24 dev eth0
               ip route add default via 192.0.2.1
               ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
               ip -6 route add default via fe80::1 dev eth0"
            .into(),
        peer: "ip addr add 192.0.2.1/24 dev p0
               ip -6 addr add fe80::1/64 dev p0 nodad
               ip -6 addr add 2001:db8:1::1/64 dev p0 nodad"
            .into(),
        ifname: "eth0",
        addrs: vec!["192.0.2.2/24", "2001:db8:1::2/64"],
        routes4: strs(&["default via 192.0.2.1", "192.0.2.0/24"]),
        routes6: strs(&[
            "default via fe80::1 metric 1024",
            "2001:db8:1::/64 metric 256",
            "fe80::/64 metric 256",
        ]),
        tcp: tcp_to(PEER4, PEER6, &["192.0.2.1", "fe80::1%eth0"]),
        ping: strs(&["192.0.2.1", "fe80::1%eth0", PEER4, PEER6]),
        ..Case::default()
    }
}

/// Routers, multipath, metrics, /32 and /128 hosts.
fn routing_cases() -> Vec<Case> {
    let mut v = vec![ll6_router("ipv6 default via a link-local router")];

    v.push(Case {
        name: "multipath on one interface (two link-local IPv6 routers)",
        host: "ip addr add 192.0.2.2/24 dev eth0
               ip route add default nexthop via 192.0.2.1 nexthop via 192.0.2.254
               ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
               ip -6 route add default nexthop via fe80::1 dev eth0 nexthop via fe80::2 dev eth0"
            .into(),
        peer: "ip addr add 192.0.2.1/24 dev p0
               ip addr add 192.0.2.254/24 dev p0
               ip -6 addr add fe80::1/64 dev p0 nodad
               ip -6 addr add fe80::2/64 dev p0 nodad
               ip -6 addr add 2001:db8:1::1/64 dev p0 nodad"
            .into(),
        routes4: strs(&[
            "default nexthop via 192.0.2.1 weight 1 nexthop via 192.0.2.254 weight 1",
            "192.0.2.0/24",
        ]),
        routes6: strs(&[
            "default metric 1024 nexthop via fe80::1 weight 1 nexthop via fe80::2 weight 1",
            "2001:db8:1::/64 metric 256",
            "fe80::/64 metric 256",
        ]),
        // The advertised and mapped gateway is the first of equal weights:
        // ping and TCP to it reach the host.
        ..ll6_router("")
    });

    v.push(Case {
        name: "multipath over two interfaces",
        links: 2,
        host: "ip addr add 192.0.2.2/24 dev eth0
               ip addr add 198.51.100.2/24 dev eth1
               ip route add default nexthop via 192.0.2.1 dev eth0 nexthop via 198.51.100.1 dev eth1
               ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
               ip -6 addr add 2001:db8:2::2/64 dev eth1 nodad
               ip -6 route add default nexthop via fe80::1 dev eth0 nexthop via fe80::2 dev eth1"
            .into(),
        peer: "ip addr add 192.0.2.1/24 dev p0
               ip addr add 198.51.100.1/24 dev p1
               ip -6 addr add fe80::1/64 dev p0 nodad
               ip -6 addr add 2001:db8:1::1/64 dev p0 nodad
               ip -6 addr add fe80::2/64 dev p1 nodad
               ip -6 addr add 2001:db8:2::1/64 dev p1 nodad"
            .into(),
        // The template is eth0 (first of equal weights): its hop only.
        ..ll6_router("")
    });
    v.extend(metric_cases());
    v
}

/// Default routes with metrics, /32 and /128 hosts.
fn metric_cases() -> Vec<Case> {
    vec![
        Case {
            name: "two default routes with different metrics",
            links: 2,
            host: "ip addr add 192.0.2.2/24 dev eth0
               ip addr add 198.51.100.2/24 dev eth1
               ip route add default via 198.51.100.1 dev eth1 metric 200
               ip route add default via 192.0.2.254 dev eth0 metric 300
               ip route add default via 192.0.2.1 dev eth0 metric 100
               ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
               ip -6 route add default via fe80::2 dev eth1 metric 200
               ip -6 route add default via fe80::3 dev eth0 metric 300
               ip -6 route add default via fe80::1 dev eth0 metric 100"
                .into(),
            peer: "ip addr add 192.0.2.1/24 dev p0
               ip addr add 192.0.2.254/24 dev p0
               ip addr add 198.51.100.1/24 dev p1
               ip -6 addr add fe80::1/64 dev p0 nodad
               ip -6 addr add fe80::3/64 dev p0 nodad
               ip -6 addr add 2001:db8:1::1/64 dev p0 nodad
               ip -6 addr add fe80::2/64 dev p1 nodad"
                .into(),
            routes4: strs(&[
                "default via 192.0.2.1 metric 100",
                "default via 192.0.2.254 metric 300",
                "192.0.2.0/24",
            ]),
            routes6: strs(&[
                "default via fe80::1 metric 100",
                "default via fe80::3 metric 300",
                "2001:db8:1::/64 metric 256",
                "fe80::/64 metric 256",
            ]),
            ..ll6_router("")
        },
        Case {
            name: "/32 and /128 with onlink default routes",
            host: "ip addr add 192.0.2.77/32 dev eth0
               ip route add default via 192.0.2.1 dev eth0 onlink
               ip -6 addr add 2001:db8:1::77/128 dev eth0 nodad
               ip -6 route add default via 2001:db8:1::1 dev eth0 onlink"
                .into(),
            peer: "ip addr add 192.0.2.1/24 dev p0
               ip -6 addr add 2001:db8:1::1/64 dev p0 nodad"
                .into(),
            addrs: vec!["192.0.2.77/32", "2001:db8:1::77/128"],
            routes4: strs(&["default via 192.0.2.1 onlink"]),
            routes6: strs(&[
                "default via 2001:db8:1::1 metric 1024 onlink",
                "2001:db8:1::77 metric 256",
                "fe80::/64 metric 256",
            ]),
            tcp: tcp_to(PEER4, PEER6, &["192.0.2.1", "2001:db8:1::1"]),
            ping: strs(&["192.0.2.1", "2001:db8:1::1", PEER4, PEER6]),
            ..ll6_router("")
        },
        Case {
            name: "/128 via a link-local router",
            host: "ip addr add 192.0.2.2/24 dev eth0
               ip route add default via 192.0.2.1
               ip -6 addr add 2001:db8:1::77/128 dev eth0 nodad
               ip -6 route add default via fe80::1 dev eth0"
                .into(),
            addrs: vec!["192.0.2.2/24", "2001:db8:1::77/128"],
            routes6: strs(&[
                "default via fe80::1 metric 1024",
                "2001:db8:1::77 metric 256",
                "fe80::/64 metric 256",
            ]),
            ..ll6_router("")
        },
    ]
}

/// Hosts with one family only: the other in local mode, reaching the host
/// through the mapping of its link-local gateway.
fn family_cases() -> Vec<Case> {
    vec![
        Case {
            name: "IPv6-only host (IPv4 in local mode, resolver on 127.0.0.53)",
            host: "ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
                   ip -6 route add default via fe80::1 dev eth0"
                .into(),
            resolv: Some("nameserver 127.0.0.53\n"),
            addrs: vec!["169.254.2.1/16", "2001:db8:1::2/64"],
            routes4: strs(&["default via 169.254.2.2", "169.254.0.0/16"]),
            // IPv4 reaches the host (its 127.0.0.1) through the local-mode
            // gateway; the peer only over IPv6.
            tcp: vec![
                format!("169.254.2.2 {HOST_PORT}"),
                format!("{PEER6} {PEER_PORT}"),
                format!("fe80::1%eth0 {HOST_PORT}"),
            ],
            udp: vec!["169.254.2.2 53".into()],
            ping: strs(&["169.254.2.2", "fe80::1%eth0", PEER6]),
            ..ll6_router("")
        },
        Case {
            name: "IPv4-only host (IPv6 in local mode)",
            host: "ip addr add 192.0.2.2/24 dev eth0
                   ip route add default via 192.0.2.1"
                .into(),
            addrs: vec!["192.0.2.2/24"],
            routes6: strs(&["default via fe80::1 metric 1024", "fe80::/64 metric 256"]),
            tcp: vec![
                format!("{PEER4} {PEER_PORT}"),
                format!("192.0.2.1 {HOST_PORT}"),
                format!("fe80::1%eth0 {HOST_PORT}"),
            ],
            ping: strs(&["192.0.2.1", "fe80::1%eth0", PEER4]),
            ..ll6_router("")
        },
    ]
}

/// Link MTUs, route attributes, secondary addresses.
fn link_cases() -> Vec<Case> {
    let mtu = |name, mtu: u32| Case {
        name,
        host: format!(
            "ip link set eth0 mtu {mtu}
             {}",
            ll6_router("").host
        ),
        peer: format!(
            "ip link set p0 mtu {mtu}
             {}",
            ll6_router("").peer
        ),
        bulk: 1 << 20,
        ..ll6_router("")
    };
    vec![
        mtu("MTU 9000", 9000),
        mtu("MTU 1280", 1280),
        Case {
            name: "routes with mtu, advmss, hoplimit",
            host: format!(
                "{}
                 ip route add 203.0.113.0/24 via 192.0.2.1 mtu 1400 advmss 1360 hoplimit 33
                 ip -6 route add 2001:db8:ff::/48 via fe80::1 dev eth0 mtu 1300 hoplimit 40",
                ll6_router("").host
            ),
            routes4: strs(&[
                "default via 192.0.2.1",
                "192.0.2.0/24",
                "203.0.113.0/24 via 192.0.2.1 mtu 1400 advmss 1360 hoplimit 33",
            ]),
            routes6: strs(&[
                "default via fe80::1 metric 1024",
                "2001:db8:1::/64 metric 256",
                "2001:db8:ff::/48 via fe80::1 metric 1024 mtu 1300 hoplimit 40",
                "fe80::/64 metric 256",
            ]),
            bulk: 256 << 10,
            ..ll6_router("")
        },
        Case {
            name: "secondary addresses",
            host: format!(
                "{}
                 ip addr add 192.0.2.3/24 dev eth0
                 ip addr add 10.9.0.2/16 dev eth0
                 ip -6 addr add 2001:db8:2::2/64 dev eth0 nodad",
                ll6_router("").host
            ),
            // Whichever source address the host picks, the answer comes
            // back.
            peer: format!(
                "{}
                 ip route add 10.9.0.0/16 dev p0
                 ip -6 route add 2001:db8:2::/64 dev p0",
                ll6_router("").peer
            ),
            addrs: vec![
                "192.0.2.2/24",
                "192.0.2.3/24",
                "10.9.0.2/16",
                "2001:db8:1::2/64",
                "2001:db8:2::2/64",
            ],
            routes4: strs(&["default via 192.0.2.1", "192.0.2.0/24", "10.9.0.0/16"]),
            routes6: strs(&[
                "default via fe80::1 metric 1024",
                "2001:db8:1::/64 metric 256",
                "2001:db8:2::/64 metric 256",
                "fe80::/64 metric 256",
            ]),
            ..ll6_router("")
        },
    ]
}

/// No default route in the main table: the namespace reaches what the
/// host's routes reach, and there is no gateway to map.
fn no_default_cases() -> Vec<Case> {
    let onlink_peer = Case {
        host: "ip addr add 192.0.2.2/24 dev eth0
               ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad"
            .into(),
        routes4: strs(&["192.0.2.0/24"]),
        routes6: strs(&["2001:db8:1::/64 metric 256", "fe80::/64 metric 256"]),
        tcp: tcp_to("192.0.2.1", "2001:db8:1::1", &[]),
        ping: strs(&["192.0.2.1", "2001:db8:1::1"]),
        ..ll6_router("")
    };
    vec![
        Case {
            name: "no default route",
            ..onlink_peer.clone()
        },
        Case {
            name: "default route only in another table",
            host: format!(
                "{}
                 ip route add default via 192.0.2.1 table 100
                 ip -6 route add default via fe80::1 dev eth0 table 100
                 ip rule add pref 100 lookup 100
                 ip -6 rule add pref 100 lookup 100",
                onlink_peer.host
            ),
            ..onlink_peer.clone()
        },
        Case {
            name: "default dev eth0",
            host: format!(
                "{}
                 ip route add default dev eth0
                 ip -6 route add default dev eth0",
                onlink_peer.host
            ),
            // The peer answers ARP and NDP for its service addresses.
            routes4: strs(&["default", "192.0.2.0/24"]),
            routes6: strs(&[
                "default metric 1024",
                "2001:db8:1::/64 metric 256",
                "fe80::/64 metric 256",
            ]),
            tcp: tcp_to(PEER4, PEER6, &[]),
            ping: strs(&[PEER4, PEER6]),
            ..onlink_peer
        },
    ]
}

/// Thousands of routes; a resolver on the host's 127.0.0.53.
fn scale_cases() -> Vec<Case> {
    const N: usize = 3000;
    let base = ll6_router("");
    let mut batch = String::new();
    let mut routes4 = base.routes4.clone();
    let mut routes6 = base.routes6.clone();
    for i in 0..N {
        let (a, b, c) = (i / 250, i % 250, i + 1);
        let _ = writeln!(batch, "route add 10.{a}.{b}.0/24 via 192.0.2.1");
        let _ = writeln!(
            batch,
            "route add 2001:db8:100:{c:x}::/64 via fe80::1 dev eth0"
        );
        routes4.push(format!("10.{a}.{b}.0/24 via 192.0.2.1"));
        routes6.push(format!("2001:db8:100:{c:x}::/64 via fe80::1 metric 1024"));
    }
    vec![
        Case {
            name: "3000 routes per family",
            host_batch: batch,
            routes4,
            routes6,
            ..base
        },
        Case {
            name: "resolver on 127.0.0.53",
            resolv: Some("nameserver 127.0.0.53\nsearch example.org\n"),
            udp: vec!["192.0.2.1 53".into()],
            ..ll6_router("")
        },
    ]
}

#[test]
fn routers_multipath_metrics_and_host_routes() {
    run_cases(&routing_cases());
}

#[test]
fn one_family_hosts_use_local_mode_for_the_other() {
    run_cases(&family_cases());
}

#[test]
fn link_mtus_route_attributes_secondary_addresses() {
    run_cases(&link_cases());
}

#[test]
fn hosts_without_a_main_default_route() {
    run_cases(&no_default_cases());
}

#[test]
fn thousands_of_routes_and_a_local_resolver() {
    run_cases(&scale_cases());
}

/// A host route the namespace can't take (its gateway is on the link only
/// through a policy-routing table, which is not copied): pasta fails to
/// start, with exit status 1, naming the route.
#[test]
fn route_that_cannot_be_set_is_a_start_up_error() {
    let c = Case {
        host: format!(
            "{}
             ip route add 198.51.100.0/24 dev eth0 table 100
             ip rule add pref 100 lookup 100
             ip route add 203.0.113.0/24 via 198.51.100.1 dev eth0",
            ll6_router("").host
        ),
        ..ll6_router("unsettable route")
    };
    let dir = Scratch::new("hostnet-err");
    let host = build_host(&c, &dir);
    let out = host.h.user_run(
        &[
            bin("pasta").display().to_string(),
            "--config-net".into(),
            "--".into(),
            "true".into(),
        ],
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let named = err.contains("adding the route 203.0.113.0/24 via 198.51.100.1 on eth0");
    assert!(named && err.contains("Network is unreachable"), "{err}");
}

/// 20 fresh starts on the host with two link-local IPv6 routers: the
/// command finds the namespace's addresses and routes complete the moment
/// it starts, its first connections (to the gateway's link-local address,
/// answered to the namespace's own link-local one, and to the peer) get
/// through without a retransmission, and nothing arrives for an address
/// the namespace doesn't have yet (`Ip6InAddrErrors`).
#[test]
fn fresh_starts_find_the_namespace_complete() {
    const STARTS: usize = 20;
    let mut c = routing_cases().swap_remove(1);
    assert!(c.name.starts_with("multipath on one interface"));
    c.tcp = vec![
        format!("fe80::1%eth0 {HOST_PORT}"),
        format!("{PEER6} {PEER_PORT}"),
    ];
    c.ping.clear();
    let dir = Scratch::new("hostnet-starts");
    let host = build_host(&c, &dir);
    let mut report = Vec::new();
    let mut times = Vec::new();
    for i in 0..STARTS {
        let out = run_pasta(&host, &c, &dir);
        let seen = parse(&String::from_utf8_lossy(&out.stdout));
        let mut bad = check_state(&c, &seen);
        bad.extend(check_results(&c, &seen));
        for l in seen.results.iter().filter(|l| l.starts_with("tcp ")) {
            // "tcp ADDR PORT ok MS": a connection that took a retransmission
            // (1 s) lost its first SYN or SYN-ACK.
            let ms: u64 = l
                .rsplit(' ')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            times.push(ms);
            if ms >= 900 {
                bad.push(format!("slow connection: {l}"));
            }
        }
        match seen.results.iter().find(|l| l.starts_with("snmp ")) {
            Some(l) if l.split_whitespace().last() == Some("0") => {}
            other => bad.push(format!("Ip6InAddrErrors: {other:?}")),
        }
        if !bad.is_empty() {
            report.push(format!(
                "start {i}: {}\n  pasta: {}",
                bad.join("; "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    eprintln!("connection times (ms): {times:?}");
    assert!(report.is_empty(), "{}", report.join("\n"));
}
