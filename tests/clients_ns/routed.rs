//! A host whose gateway is a router of the test that is also its
//! resolver: DNS to the gateway address, link-local destinations.

use super::*;

/// A host whose gateway is a router of the test (a namespace behind a veth
/// link, 10.77.0.1 and fd77::1) that is also the host's resolver.
struct RoutedHost {
    h: Netns,
    router: Netns,
}

impl RoutedHost {
    fn new(tag: &str) -> RoutedHost {
        let h = Netns::new(tag);
        let router = Netns::new(&format!("{tag}r"));
        let rn = &router.name;
        h.sh(&format!(
            "ip link add eth0 type veth peer name eth0 netns {rn}
             ip link set eth0 up
             ip addr add {HOST_IP4}/24 dev eth0
             ip addr add {HOST_IP6}/64 dev eth0 nodad
             ip route add default via {GW_IP4} dev eth0
             ip -6 route add default via {GW_IP6} dev eth0"
        ));
        router.sh(&format!(
            "ip link set eth0 up
             ip addr add {GW_IP4}/24 dev eth0
             ip addr add {GW_IP6}/64 dev eth0 nodad"
        ));
        h.resolv(&format!("nameserver {GW_IP4}\n"));
        RoutedHost { h, router }
    }
}

/// The gateway is the resolver: DNS the namespace sends to the gateway
/// address goes to that resolver, not to the host's loopback (which the
/// gateway address otherwise stands for), where another resolver with
/// another answer listens.
#[test]
fn dns_to_gateway_that_is_the_resolver() {
    let r = RoutedHost::new("gwdns");
    let dir = Scratch::new("gwdns");
    let _router_dns = service(
        &r.router,
        &dir,
        "dns_srv.py",
        &[GW_IP4, "53", "60", "192.0.2.1"],
    );
    let _decoy = service(
        &r.h,
        &dir,
        "dns_srv.py",
        &["127.0.0.1", "53", "60", "192.0.2.99"],
    );
    let _host_echo = echo(&r.h, &dir, "tcp", "127.0.0.1", 7600);
    let out = r.h.user_pasta(
        &["--config-net", "-t", "none", "-u", "none"],
        &[
            "sh",
            "-c",
            &format!(
                "{}; python3 {} tcp {GW_IP4} 7600 1000",
                dig_udp_tcp(GW_IP4),
                script(&dir, "xfer.py")
            ),
        ],
        60,
    );
    let t = text(&out);
    assert_eq!(
        t.matches("192.0.2.1\n").count(),
        2,
        "the router's resolver answers: {t}"
    );
    assert!(!t.contains("192.0.2.99"), "not the host's loopback: {t}");
    assert!(
        t.contains("ok 1000 1000"),
        "other traffic to the gateway reaches the host: {t}"
    );
}

/// Link-local destinations on the host's side: the namespace reaches its
/// router's link-local address (ICMPv6 echo, TCP, UDP) and the host
/// interface's own one, which pasta connects to on the template interface.
#[test]
fn link_local_destinations_on_the_template_interface() {
    let r = RoutedHost::new("llgw");
    allow_ping(&r.h);
    let dir = Scratch::new("llgw");
    let ll = |ns: &Netns| -> String {
        eventually(10, || {
            let a = ns.sh("ip -6 -o addr show dev eth0 scope link");
            (!a.is_empty() && !a.contains("tentative")).then(|| {
                a.split_whitespace()
                    .skip_while(|w| *w != "inet6")
                    .nth(1)
                    .and_then(|w| w.split('/').next())
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .expect("a link-local address")
    };
    let router_ll = ll(&r.router);
    let host_ll = ll(&r.h);
    let _t = echo(&r.router, &dir, "tcp", "::", 7700);
    let _u = echo(&r.router, &dir, "udp", "::", 7701);
    let xfer = script(&dir, "xfer.py");
    let out = r.h.user_pasta(
        &["--config-net", "-t", "none", "-u", "none"],
        &[
            "sh",
            "-c",
            &format!(
                "ping -6 -c 2 -W 3 {router_ll}%eth0 >/dev/null && echo ping-router-ok; \
                 ping -6 -c 2 -W 3 {host_ll}%eth0 >/dev/null && echo ping-host-ok; \
                 python3 {xfer} tcp {router_ll}%eth0 7700 100000; \
                 python3 {xfer} udp {router_ll}%eth0 7701 100000"
            ),
        ],
        90,
    );
    let t = text(&out);
    for want in ["ping-router-ok", "ping-host-ok", "ok 100000 100000"] {
        assert!(t.contains(want), "{want}: {t}");
    }
    assert_eq!(t.matches("ok 100000 100000").count(), 2, "TCP and UDP: {t}");
}
