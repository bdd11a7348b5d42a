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

#[path = "hostnet_ns/cases.rs"]
mod cases;
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
    let srv = dir.script("echo_srv.py", ECHO_SRV);
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
        let p = Proc::spawn_ready(
            ns.cmd(&args),
            &format!("{tag} echo server"),
            dir.join(&format!("{}-{tag}.log", h.name)),
            &ready,
        );
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
    let check = dir.script("ns_check.py", NS_CHECK);
    let mut args = vec![s(&pasta()), "--config-net".into()];
    args.extend(NO_FORWARDS.map(String::from));
    args.extend(["--".into(), "python3".into(), check, spec]);
    host.h.user_run(&args, 120)
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
