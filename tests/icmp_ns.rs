//! ICMP errors from the host's sockets reach the guest of `pasta`, run as
//! the unprivileged test user: `traceroute` from the guest, UDP to closed
//! ports, ping to unreachable networks.
//!
//! The topology, all namespaces of the test:
//!
//! ```text
//!  guest (pasta's) ── tap ── pasta, in "host" ── veth ── router ── veth ── far
//!  10.77.0.2                 10.78.1.1               10.78.1.2  10.78.2.1   10.78.2.2
//!  fd77::2                   fd78:1::1               fd78:1::2  fd78:2::1   fd78:2::2
//! ```
//!
//! The host routes 10.78.0.0/16 and fd78::/16 through the router, which
//! forwards between its links and knows no more; the far namespace has its
//! default route through the router. ICMP rate limits are off in the router
//! and far namespaces, so every probe gets its answer.
//!
//! What a user of pasta sees (as with upstream since 2025): the guest's
//! datagrams leave the host with the guest's TTL, so a probe of TTL 1
//! expires at the router and a probe of TTL 2 reaches the far end; the host
//! itself is no hop (its kernel sends the guest's datagrams, it does not
//! route them). `traceroute -n` (UDP) to the far end therefore shows the
//! router at hop 1 and the far end at hop 2, both families. ICMP mode
//! (`-I`) shows the same: pasta gives echo requests the guest's TTL too
//! and relays "time exceeded" for them (upstream sends echo requests with
//! the host's default TTL, and its `-I` shows the far end at hop 1; see
//! docs/differences.md).
//!
//! The last test is about the TCP counterpart of the same upstream work: a
//! connection the guest forgot without a word on the wire ends through
//! pasta's keepalives.

mod ns_support;

use ns_support::*;

const ROUTER_IN4: &str = "10.78.1.2";
const FAR4: &str = "10.78.2.2";
const ROUTER_IN6: &str = "fd78:1::2";
const FAR6: &str = "fd78:2::2";
/// An address the router has no route for.
const NOWHERE4: &str = "10.78.3.3";

/// The host, router and far namespaces, linked and routed.
struct Topology {
    host: Netns,
    _router: Netns,
    _far: Netns,
}

fn topology(tag: &str) -> Topology {
    let host = Netns::host(tag);
    let router = Netns::new(&format!("{tag}r"));
    let far = Netns::new(&format!("{tag}f"));
    let (h, r, f) = (&host.name, &router.name, &far.name);
    let pid = std::process::id();
    // Link names are per namespace: the ends are created in the host and
    // router namespaces and moved, so names cannot clash with other tests.
    let sh = |cmd: &str| {
        let out = run_timeout(std::process::Command::new("sh").args(["-ec", cmd]), 30);
        ok_text(&out);
    };
    sh(&format!(
        "ip -n {h} link add hr{pid} type veth peer name rh{pid} netns {r}
         ip -n {h} link set hr{pid} name tor0
         ip -n {r} link set rh{pid} name toh0
         ip -n {r} link add rf{pid} type veth peer name fr{pid} netns {f}
         ip -n {r} link set rf{pid} name tof0
         ip -n {f} link set fr{pid} name tor0
         ip -n {h} link set tor0 up
         ip -n {r} link set toh0 up
         ip -n {r} link set tof0 up
         ip -n {f} link set tor0 up
         ip -n {h} addr add 10.78.1.1/24 dev tor0
         ip -n {h} addr add fd78:1::1/64 dev tor0 nodad
         ip -n {r} addr add {ROUTER_IN4}/24 dev toh0
         ip -n {r} addr add {ROUTER_IN6}/64 dev toh0 nodad
         ip -n {r} addr add 10.78.2.1/24 dev tof0
         ip -n {r} addr add fd78:2::1/64 dev tof0 nodad
         ip -n {f} addr add {FAR4}/24 dev tor0
         ip -n {f} addr add {FAR6}/64 dev tor0 nodad
         ip -n {h} route add 10.78.0.0/16 via {ROUTER_IN4}
         ip -n {h} -6 route add fd78::/16 via {ROUTER_IN6}
         ip -n {f} route add default via 10.78.2.1
         ip -n {f} -6 route add default via fd78:2::1
         ip netns exec {r} sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
         for n in {r} {f}; do
           ip netns exec $n sysctl -q -w net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
         done
         ip netns exec {h} sysctl -q -w net.ipv4.ping_group_range='0 2147483647'"
    ));
    // The routed path works from the host itself (neighbour resolution
    // included) before pasta starts.
    host.sh(&format!(
        "ping -c 1 -W 5 {FAR4} >/dev/null; ping -6 -c 1 -W 5 {FAR6} >/dev/null"
    ));
    Topology {
        host,
        _router: router,
        _far: far,
    }
}

/// Runs `script` in pasta's guest namespace (pasta as the test user, in the
/// topology's host); its output.
fn in_guest(t: &Topology, script: &str) -> String {
    in_guest_of(&t.host, script)
}

/// Runs `script` in the guest namespace of pasta started in `host`.
fn in_guest_of(host: &Netns, script: &str) -> String {
    let out = host.user_run(
        &[
            pasta().display().to_string(),
            "--config-net".into(),
            "--".into(),
            "sh".into(),
            "-ec".into(),
            script.into(),
        ],
        120,
    );
    ok_text(&out)
}

/// The hops of `traceroute -n` output, in order: the first address of each
/// numbered line ("*" if none answered).
fn hops(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .find(|w| *w != "*")
                .unwrap_or("*")
                .to_string()
        })
        .collect()
}

/// The output of each traceroute run, between marker lines.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = format!("== {name}\n");
    let i = out
        .find(&start)
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        + start.len();
    let rest = &out[i..];
    &rest[..rest.find("== ").unwrap_or(rest.len())]
}

#[test]
fn pasta_traceroute_udp_and_icmp_show_the_routed_hops_both_families() {
    let t = topology("trace");
    // At most 3 hops, one probe per hop at a time, 3 s per probe.
    let opts = "-n -q 1 -N 1 -w 3 -m 3";
    let out = in_guest(
        &t,
        &format!(
            "echo '== udp4'; traceroute {opts} {FAR4}
             echo '== udp6'; traceroute -6 {opts} {FAR6}
             echo '== icmp4'; traceroute -I {opts} {FAR4}
             echo '== icmp6'; traceroute -6 -I {opts} {FAR6}
             echo '== end'"
        ),
    );
    for (name, router, far) in [
        ("udp4", ROUTER_IN4, FAR4),
        ("udp6", ROUTER_IN6, FAR6),
        ("icmp4", ROUTER_IN4, FAR4),
        ("icmp6", ROUTER_IN6, FAR6),
    ] {
        let s = section(&out, name);
        assert_eq!(hops(s), [router, far], "{name}: {s}\n(all output: {out})");
    }
}

/// A UDP client in the guest sending to a closed port gets ECONNREFUSED, on
/// the host's loopback (through the gateway address) and across the router,
/// both families; ping to a network the router cannot reach reports the
/// router's "unreachable".
#[test]
fn pasta_closed_ports_and_unreachable_networks_reach_the_guest() {
    let t = topology("unreach");
    const PROBE: &str = r#"
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
u = socket.socket(fam, socket.SOCK_DGRAM)
u.settimeout(3)
u.connect((addr, port))
res = "timeout"
for _ in range(3):
    u.send(b"anyone there?")
    try:
        u.recv(100)
        res = "answered"
        break
    except ConnectionRefusedError:
        res = "refused"
        break
    except socket.timeout:
        pass
print(addr, port, res)
"#;
    let dir = Scratch::new("unreach");
    let probe = dir.join("probe.py");
    std::fs::write(&probe, PROBE).expect("script");
    let p = probe.display();
    let out = in_guest(
        &t,
        &format!(
            "for a in {GW_IP4} {GW_IP6} {FAR4} {FAR6}; do python3 {p} $a 9; done
             echo '== ping'; ping -c 1 -W 3 {NOWHERE4} || true
             echo '== end'"
        ),
    );
    for a in [GW_IP4, GW_IP6, FAR4, FAR6] {
        assert!(
            out.contains(&format!("{a} 9 refused")),
            "{a}: ECONNREFUSED expected: {out}"
        );
    }
    let ping = section(&out, "ping");
    assert!(
        ping.contains(&format!("From {ROUTER_IN4}")) && ping.contains("Unreachable"),
        "ping reports the router's unreachable: {ping}"
    );
}

/// The case upstream's tap-side keepalives are for: the guest closes its
/// side (FIN) and its socket, the host peer keeps its own open and silent;
/// Linux forgets the orphaned `FIN_WAIT_2` socket after `tcp_fin_timeout`
/// (1 s here) without a word on the wire. pasta's keepalive, 30 s after the
/// guest's last segment, gets the guest kernel's reset, and the host peer
/// learns that the connection is gone (ECONNRESET) instead of holding it
/// for hours.
#[test]
fn pasta_keepalive_ends_a_connection_the_guest_forgot() {
    const SERVER: &str = r#"
import socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(1)
s.settimeout(30)
open(out + ".ready", "w").write("ready")
c, _ = s.accept()
c.settimeout(30)
while c.recv(100):
    pass
eof = time.time()
# The end of the stream keeps the socket readable: watch its state
# (TCP_INFO) go from CLOSE_WAIT to CLOSE, which only a reset does.
res = "silent"
while time.time() < eof + 100:
    state = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    if state == 7:
        err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        res = "reset" if err else "closed"
        break
    time.sleep(0.2)
open(out, "w").write("%s %.1f" % (res, time.time() - eof))
"#;
    const CLIENT: &str = r#"
import os, socket, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
c = socket.create_connection(("10.77.0.1", port), timeout=10)
c.sendall(b"x")
c.shutdown(socket.SHUT_WR)
time.sleep(0.5)
c.close()
end = time.time() + 100
while not os.path.exists(out) and time.time() < end:
    time.sleep(0.2)
"#;
    let h = Netns::host("kalive");
    let dir = Scratch::new("kalive");
    let (server, client, out) = (
        dir.join("server.py"),
        dir.join("client.py"),
        dir.join("result"),
    );
    std::fs::write(&server, SERVER).expect("script");
    std::fs::write(&client, CLIENT).expect("script");
    let port = 20000 + (std::process::id() % 20000);
    let mut srv = Proc::spawn(
        h.cmd(&[
            "python3".into(),
            server.display().to_string(),
            port.to_string(),
            out.display().to_string(),
        ]),
        "server",
        dir.join("server.log"),
    );
    wait_file(&dir.join("result.ready"), 20, &mut srv);
    let guest = in_guest_of(
        &h,
        &format!(
            "sysctl -q -w net.ipv4.tcp_fin_timeout=1
             python3 {} {port} {}",
            client.display(),
            out.display()
        ),
    );
    let res = std::fs::read_to_string(&out).unwrap_or_default();
    let mut it = res.split_whitespace();
    let (what, secs) = (
        it.next().unwrap_or(""),
        it.next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
    );
    assert_eq!(
        what,
        "reset",
        "the host peer learns the guest forgot the connection: {res} (guest: {guest}; server: {})",
        srv.output()
    );
    // Not before the keepalive interval: nothing else told it.
    assert!(
        (25.0..70.0).contains(&secs),
        "reset {secs} s after the guest's FIN, expected about 30"
    );
}

/// The guest link is up: pasta asks for the guest's MAC at its address
/// (ARP), as upstream does since 2025, and the guest's kernel notes our
/// address and MAC from the request before it sent anything itself.
#[test]
fn pasta_probes_the_guest_at_start() {
    let h = Netns::host("probe");
    let out = in_guest_of(&h, "sleep 1; ip -4 neigh show");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{GW_IP4} ")) && l.contains("lladdr")),
        "the gateway's entry, from our request: {out}"
    );
}
