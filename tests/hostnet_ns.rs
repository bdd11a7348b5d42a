//! `pasta --config-net` on the host network set-ups users have: a table of
//! hosts, each built in a namespace of its own whose uplinks are veth links
//! to a peer namespace (the "internet": it answers TCP in both families and
//! ping on 203.0.113.7 and 2001:db8:ff::7, reached through the host's
//! routes).
//!
//! For each host, pasta runs as the unprivileged test user with
//! `--config-net` and a command that first dumps the namespace's links,
//! addresses and routes — they must be complete when the command starts —
//! and then tries TCP to the peer in both families, ping to the gateway
//! (which pasta maps to the host), TCP to the host through the gateway and,
//! where the case says so, DNS to the host's resolver. The test compares the
//! namespace's addresses, main-table routes (flags, next hops and attributes
//! included) and MTU with the expected copy, exactly.
//!
//! Apart from the table: a route the namespace can't take is a start-up
//! error naming it, and 20 fresh starts on a host with two link-local IPv6
//! routers find the addresses and routes complete and lose nothing to the
//! namespace's link-local address (`Ip6InAddrErrors`).

mod ns_support;

use ns_support::*;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The peer's TCP echo service.
const PEER_PORT: u16 = 7400;
/// The host's TCP echo service on its loopback addresses, reached through
/// the gateway mapping.
const HOST_PORT: u16 = 7401;
/// The peer's service addresses.
const PEER4: &str = "203.0.113.7";
const PEER6: &str = "2001:db8:ff::7";
/// pasta's default MTU: the namespace's whatever the host's.
const NS_MTU: u32 = 65520;

/// `echo_srv.py READY_FILE TCP_PORT [UDP_ADDR UDP_PORT]`: TCP echo until the
/// client closes, dual-stack, one thread per connection; optionally a UDP
/// echo (a stand-in resolver). Runs 300 s at most.
const ECHO_SRV: &str = r#"
import socket, sys, threading, time
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("::", int(sys.argv[2])))
t.listen(64)
if len(sys.argv) > 4:
    fam = socket.AF_INET6 if ":" in sys.argv[3] else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((sys.argv[3], int(sys.argv[4])))
    def udp():
        while True:
            d, a = u.recvfrom(2048)
            u.sendto(d, a)
    threading.Thread(target=udp, daemon=True).start()
def serve(c):
    c.settimeout(30)
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
def accept():
    while True:
        c, _ = t.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
open(sys.argv[1], "w").write("ready")
time.sleep(300)
"#;

/// `ns_check.py SPEC_JSON`, pasta's command: the namespace's state first,
/// then the traffic checks, one result per line.
const NS_CHECK: &str = r#"
import json, os, socket, subprocess, sys, threading, time
spec = json.loads(sys.argv[1])
def run(*a):
    return subprocess.run(a, capture_output=True, text=True).stdout
for l in run("ip", "-o", "link", "show").splitlines():
    print("@link", l)
for l in run("ip", "-o", "addr", "show").splitlines():
    print("@addr", l)
for fam in ("4", "6"):
    for l in run("ip", "-o", "-" + fam, "route", "show", "table", "main").splitlines():
        print("@route" + fam, l)
sys.stdout.flush()
def target(s):
    a, p = s.rsplit(" ", 1)
    return a, int(p)
for i, t in enumerate(spec["tcp"]):
    a, p = target(t)
    t0 = time.monotonic()
    try:
        c = socket.create_connection((a, p), timeout=5)
        ms = int((time.monotonic() - t0) * 1000)
        c.settimeout(10)
        data = os.urandom(spec["bulk"] if i == 0 else 64)
        th = threading.Thread(target=c.sendall, args=(data,))
        th.start()
        got = bytearray()
        while len(got) < len(data):
            d = c.recv(65536)
            if not d:
                break
            got += d
        th.join()
        c.close()
        print("tcp", t, "ok" if got == data else "short %d/%d" % (len(got), len(data)), ms)
    except OSError as e:
        print("tcp", t, "fail", repr(e).replace(" ", "_"))
    sys.stdout.flush()
for t in spec["udp"]:
    a, p = target(t)
    u = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(1)
    ok = False
    for _ in range(3):
        try:
            u.sendto(b"query", (a, p))
            ok = u.recvfrom(2048)[0] == b"query"
            break
        except OSError:
            time.sleep(0.2)
    print("udp", t, "ok" if ok else "fail")
for a in spec["ping"]:
    r = subprocess.run(["ping", "-c", "1", "-W", "3", a], capture_output=True)
    print("ping", a, "ok" if r.returncode == 0 else "fail")
for l in open("/proc/net/snmp6"):
    if l.startswith("Ip6InAddrErrors"):
        print("snmp", l.strip())
"#;

/// One host set-up and what the namespace must get from it.
#[derive(Clone, Debug, Default)]
struct Case {
    name: &'static str,
    /// Uplinks `eth0`, `eth1`, ... of the host, each a veth to `p0`, `p1`,
    /// ... in the peer namespace. The peer's service addresses are on `p0`.
    links: usize,
    /// Shell run in the host namespace (addresses, routes, MTU).
    host: String,
    /// `ip -batch` commands run in the host namespace after [`Self::host`].
    host_batch: String,
    /// Shell run in the peer namespace.
    peer: String,
    /// The host's resolv.conf.
    resolv: Option<&'static str>,
    /// The namespace's interface.
    ifname: &'static str,
    /// Its addresses (link-local ones aside), exactly.
    addrs: Vec<&'static str>,
    /// Its main-table routes, as [`norm_route`] writes them, exactly.
    routes4: Vec<String>,
    /// See [`Self::routes4`].
    routes6: Vec<String>,
    /// `ADDR PORT` to exchange data with over TCP (the first with
    /// [`Self::bulk`] bytes).
    tcp: Vec<String>,
    /// Bytes sent and echoed on the first TCP connection.
    bulk: usize,
    /// `ADDR PORT` to exchange a datagram with.
    udp: Vec<String>,
    /// Addresses to ping.
    ping: Vec<String>,
}

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

    v.push(Case {
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
    });

    v.push(Case {
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
    });

    v.push(Case {
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
    });
    v
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

/// A route line of `ip -o route` without what varies or doesn't belong to
/// the copy: protocol, scope, preferred source, device (the namespace has
/// one), default preference, link state.
fn norm_route(line: &str) -> String {
    let line = line.replace(['\\', '\t'], " ");
    let t: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            "proto" | "scope" | "src" | "dev" | "expires" => i += 2,
            "pref" if t.get(i + 1) == Some(&"medium") => i += 2,
            "linkdown" => i += 1,
            w => {
                out.push(w);
                i += 1;
            }
        }
    }
    out.join(" ")
}

/// What the command saw and did.
#[derive(Debug, Default)]
struct Seen {
    links: Vec<String>,
    addrs: Vec<String>,
    routes4: Vec<String>,
    routes6: Vec<String>,
    results: Vec<String>,
}

fn parse(out: &str) -> Seen {
    let mut s = Seen::default();
    for l in out.lines() {
        if let Some(r) = l.strip_prefix("@link ") {
            s.links.push(r.into());
        } else if let Some(r) = l.strip_prefix("@addr ") {
            s.addrs.push(r.into());
        } else if let Some(r) = l.strip_prefix("@route4 ") {
            s.routes4.push(norm_route(r));
        } else if let Some(r) = l.strip_prefix("@route6 ") {
            s.routes6.push(norm_route(r));
        } else {
            s.results.push(l.into());
        }
    }
    s
}

/// Differences between the expected and the seen set, as text.
fn diff(what: &str, want: &[String], seen: &[String]) -> Option<String> {
    let w: BTreeSet<&String> = want.iter().collect();
    let s: BTreeSet<&String> = seen.iter().collect();
    let missing: Vec<_> = w.difference(&s).take(10).collect();
    let extra: Vec<_> = s.difference(&w).take(10).collect();
    (!missing.is_empty() || !extra.is_empty() || seen.len() != want.len())
        .then(|| format!("{what}: missing {missing:?}, unexpected {extra:?}"))
}

/// The namespace's state against the case.
fn check_state(c: &Case, s: &Seen) -> Vec<String> {
    let mut bad = Vec::new();
    let link = s
        .links
        .iter()
        .find(|l| l.contains(&format!(" {}:", c.ifname)) || l.contains(&format!(" {}@", c.ifname)));
    match link {
        None => bad.push(format!("no interface {} in {:?}", c.ifname, s.links)),
        Some(l) => {
            if !l.contains(&format!(" mtu {NS_MTU} ")) || !l.contains(",UP") {
                bad.push(format!("link: want MTU {NS_MTU} and up: {l}"));
            }
        }
    }
    let mut global = Vec::new();
    let mut link_local = 0;
    for l in s.addrs.iter().filter(|l| !l.contains(" lo ")) {
        if l.contains("tentative") || l.contains("dadfailed") {
            bad.push(format!("address not usable: {l}"));
        }
        let mut w = l.split_whitespace();
        while let Some(x) = w.next() {
            if x == "inet" || x == "inet6" {
                let a = w.next().unwrap_or_default().to_string();
                if a.starts_with("fe80:") {
                    link_local += 1;
                } else {
                    global.push(a);
                }
            }
        }
    }
    let want_addrs: Vec<String> = c.addrs.iter().map(|a| a.to_string()).collect();
    bad.extend(diff("addresses", &want_addrs, &global));
    if link_local != 1 {
        bad.push(format!(
            "{link_local} link-local addresses, want 1: {:?}",
            s.addrs
        ));
    }
    bad.extend(diff("IPv4 routes", &c.routes4, &s.routes4));
    bad.extend(diff("IPv6 routes", &c.routes6, &s.routes6));
    bad
}

/// The traffic results against the case.
fn check_results(c: &Case, s: &Seen) -> Vec<String> {
    let mut bad = Vec::new();
    let wants = c
        .tcp
        .iter()
        .map(|t| ("tcp", t))
        .chain(c.udp.iter().map(|t| ("udp", t)))
        .chain(c.ping.iter().map(|t| ("ping", t)));
    for (kind, t) in wants {
        let prefix = format!("{kind} {t} ");
        match s.results.iter().find(|l| l.starts_with(&prefix)) {
            Some(l) if l[prefix.len()..].starts_with("ok") => {}
            Some(l) => bad.push(l.clone()),
            None => bad.push(format!("{kind} {t}: no result")),
        }
    }
    bad
}

/// A host namespace built as the case says, its peer, and their services
/// (stopped first on drop, then the namespaces go).
struct Host {
    _servers: Vec<Proc>,
    h: Netns,
    _peer: Netns,
}

fn script(dir: &Scratch, name: &str, text: &str) -> String {
    let p = dir.join(name);
    if !p.exists() {
        std::fs::write(&p, text).expect("script");
    }
    p.display().to_string()
}

/// Builds the host of `c`: namespaces without duplicate address detection,
/// veth uplinks to the peer, the case's addresses and routes, echo services
/// (the peer's on its service addresses, the host's on its loopback, with a
/// UDP stand-in resolver on 127.0.0.53 if resolv.conf names it).
fn build_host(c: &Case, dir: &Scratch) -> Host {
    let h = Netns::new("hnh");
    let peer = Netns::new("hnp");
    for ns in [&h, &peer] {
        ns.sh(
            "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
             sysctl -qw net.ipv4.ping_group_range='0 2147483647'",
        );
    }
    for i in 0..c.links {
        ok_text(&run_timeout(
            std::process::Command::new("ip").args([
                "link",
                "add",
                &format!("eth{i}"),
                "netns",
                &h.name,
                "type",
                "veth",
                "peer",
                "name",
                &format!("p{i}"),
                "netns",
                &peer.name,
            ]),
            20,
        ));
        h.sh(&format!("ip link set eth{i} up"));
        peer.sh(&format!("ip link set p{i} up"));
    }
    h.sh(&c.host);
    if !c.host_batch.is_empty() {
        let batch = dir.join(&format!("{}.batch", h.name));
        std::fs::write(&batch, &c.host_batch).expect("batch file");
        h.sh(&format!("ip -batch {}", batch.display()));
    }
    peer.sh(&format!(
        "ip addr add {PEER4}/32 dev p0
         ip -6 addr add {PEER6}/128 dev p0 nodad
         {}",
        c.peer
    ));
    h.resolv(c.resolv.unwrap_or("nameserver 192.0.2.53\n"));
    let srv = script(dir, "echo_srv.py", ECHO_SRV);
    let mut servers = Vec::new();
    let dns = c.resolv.is_some_and(|r| r.contains("127.0.0.53"));
    for (ns, port, tag) in [(&peer, PEER_PORT, "peer"), (&h, HOST_PORT, "host")] {
        let ready = dir.join(&format!("{}-{tag}.ready", h.name));
        let mut args = vec![
            "python3".to_string(),
            srv.clone(),
            ready.display().to_string(),
            port.to_string(),
        ];
        if tag == "host" && dns {
            args.extend(["127.0.0.53".into(), "53".into()]);
        }
        let mut p = Proc::spawn(
            ns.cmd(&args),
            &format!("{tag} echo server"),
            dir.join(&format!("{}-{tag}.log", h.name)),
        );
        wait_file(&ready, 20, &mut p);
        servers.push(p);
    }
    Host {
        _servers: servers,
        h,
        _peer: peer,
    }
}

/// pasta as the test user with `--config-net` and the check as its command.
fn run_pasta(host: &Host, c: &Case, dir: &Scratch) -> std::process::Output {
    let spec = format!(
        "{{\"tcp\": {:?}, \"udp\": {:?}, \"ping\": {:?}, \"bulk\": {}}}",
        c.tcp,
        c.udp,
        c.ping,
        c.bulk.max(64)
    );
    let check = script(dir, "ns_check.py", NS_CHECK);
    host.h.user_run(
        &[
            bin("pasta").display().to_string(),
            "--config-net".into(),
            "-t".into(),
            "none".into(),
            "-u".into(),
            "none".into(),
            "-T".into(),
            "none".into(),
            "-U".into(),
            "none".into(),
            "--".into(),
            "python3".into(),
            check,
            spec,
        ],
        120,
    )
}

/// Runs every case; fails with every problem of every case.
fn run_cases(cases: &[Case]) {
    let dir = Scratch::new("hostnet");
    let mut report = String::new();
    for c in cases {
        let host = build_host(c, &dir);
        let out = run_pasta(&host, c, &dir);
        let text = String::from_utf8_lossy(&out.stdout);
        let seen = parse(&text);
        let mut bad = Vec::new();
        if !out.status.success() {
            bad.push(format!("pasta exited with {}", out.status));
        }
        bad.extend(check_state(c, &seen));
        bad.extend(check_results(c, &seen));
        if !bad.is_empty() {
            let host_routes = host.h.sh("ip -o addr; ip -o route; ip -o -6 route");
            let _ = writeln!(
                report,
                "== {}:\n  {}\n  namespace routes: {:?} {:?}\n  results: {:?}\n  host: {}\n  pasta: {}",
                c.name,
                bad.join("\n  "),
                seen.routes4.iter().take(8).collect::<Vec<_>>(),
                seen.routes6.iter().take(8).collect::<Vec<_>>(),
                seen.results,
                host_routes.lines().take(20).collect::<Vec<_>>().join("\n        "),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            eprintln!("{}: ok", c.name);
        }
    }
    assert!(report.is_empty(), "{report}");
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
    assert!(
        err.contains("adding the route 203.0.113.0/24 via 198.51.100.1 on eth0")
            && err.contains("Network is unreachable"),
        "{err}"
    );
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
