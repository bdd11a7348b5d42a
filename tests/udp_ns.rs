//! Namespace tests of UDP, ICMP echo and DNS forwarding through `pasta`, run
//! as the unprivileged test user.
//!
//! Each test makes its own "host" namespace (see `ns_support.rs`); pasta runs
//! in it, as the test user, and makes the guest's user and network
//! namespaces for its command. Small Python scripts
//! (written to a scratch directory) serve as echo servers, echo clients and
//! a DNS responder; every one of them ends by itself after a few idle
//! seconds, and every command is bounded in time.

mod ns_support;
#[path = "udp_ns/ports.rs"]
mod ports;
mod relay_support;

use ns_support::*;
use relay_support::*;

/// A UDP echo server: `echo_srv.py ADDR PORT IDLE_SECS [READY_FILE]`
/// ("::" is dual-stack); writes READY_FILE once bound.
const ECHO_SRV: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
if len(sys.argv) > 4:
    open(sys.argv[4], "w").write("ready")
try:
    while True:
        d, a = s.recvfrom(65535)
        s.sendto(d, a)
except socket.timeout:
    pass
"#;

/// A UDP echo client: `echo_cli.py HOST PORT COUNT [MAXLEN [LPORT]]`: sends
/// COUNT numbered datagrams of random sizes from 4 to MAXLEN bytes (default
/// 204; the first at MAXLEN, the second at 4) with content given by their
/// number, from local port LPORT if given, at most 16 unanswered (fewer if
/// large); sends missing
/// ones again after a 2 s silence. An answer counts if it is exactly what was
/// sent under its number. Prints "answered resent bad".
const ECHO_CLI: &str = r#"
import random, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
maxlen = int(sys.argv[4]) if len(sys.argv) > 4 else 204
lport = int(sys.argv[5]) if len(sys.argv) > 5 else 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
# Unanswered datagrams at most: fewer when they are large, so that the
# sockets' receive buffers (capped by net.core.rmem_max) hold them.
window = min(16, max(1, 100000 // maxlen))
rnd = random.Random(count * 65536 + maxlen)
sizes = [rnd.randint(4, maxlen) for _ in range(count)]
sizes[0] = maxlen
if count > 1:
    sizes[1] = 4
pat = bytes((j * 31 + 7) & 255 for j in range(maxlen + 256))
def dgram(i):
    return i.to_bytes(4, "big") + pat[i % 251:i % 251 + sizes[i] - 4]
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", lport))
s.connect((host, port))
s.settimeout(2)
got, sent, resent, bad = set(), 0, 0, 0
deadline = time.time() + 60
def send(i):
    try:
        s.send(dgram(i))
    except ConnectionRefusedError:
        time.sleep(0.1)
while len(got) < count and time.time() < deadline:
    while sent < count and sent - len(got) < window:
        send(sent)
        sent += 1
    try:
        d = s.recv(65535)
        i = int.from_bytes(d[:4], "big")
        if len(d) >= 4 and i < count and d == dgram(i):
            got.add(i)
        else:
            bad += 1
    except socket.timeout:
        for i in range(sent):
            if i not in got:
                send(i)
                resent += 1
    except ConnectionRefusedError:
        time.sleep(0.1)
print(len(got), resent, bad)
"#;

/// A DNS responder on UDP and TCP: `dns_srv.py ADDR PORT IDLE_SECS
/// READY_FILE`; every query gets one A record, 192.0.2.1.
const DNS_SRV: &str = r#"
import socket, struct, sys, threading
addr, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def answer(q):
    i = 12
    while i < len(q) and q[i] != 0:
        i += q[i] + 1
    hdr = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
    return hdr + q[12:i + 5] + rr
def udp():
    s = us
    try:
        while True:
            q, a = s.recvfrom(4096); s.sendto(answer(q), a)
    except socket.timeout:
        pass
ts = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ts.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ts.bind((addr, port)); ts.listen(4); ts.settimeout(secs)
us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
us.bind((addr, port)); us.settimeout(secs)
open(sys.argv[4], "w").write("ready")
def tcp():
    s = ts
    try:
        while True:
            c, _ = s.accept(); c.settimeout(5)
            n = struct.unpack("!H", c.recv(2))[0]
            q = b""
            while len(q) < n:
                q += c.recv(n - len(q))
            r = answer(q); c.sendall(struct.pack("!H", len(r)) + r); c.close()
    except socket.timeout:
        pass
t = threading.Thread(target=tcp); t.start(); udp(); t.join()
"#;

fn scripts(dir: &Scratch) -> (String, String, String) {
    (
        dir.script("echo_srv.py", ECHO_SRV),
        dir.script("echo_cli.py", ECHO_CLI),
        dir.script("dns_srv.py", DNS_SRV),
    )
}

/// The UDP echo server (`ECHO_SRV`) in `h` on `port`, which ends after
/// `idle` seconds without a datagram; returned once it is bound.
fn echo_server(h: &Netns, dir: &Scratch, port: &str, idle: &str) -> Proc {
    let srv = dir.script("echo_srv.py", ECHO_SRV);
    let ready = dir.join(&format!("{port}.ready"));
    Proc::spawn_ready(
        h.cmd(&["python3", &srv, "::", port, idle, &s(&ready)]),
        "echo server",
        dir.join(&format!("{port}.log")),
        &ready,
    )
}

/// Allows ping sockets for every group in the host namespace (new network
/// namespaces start with none allowed).
fn allow_ping(h: &Netns) {
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
}

/// `answered resent` from the echo client's output; fails the test if any
/// answer was not a datagram as sent.
fn echo_result(out: &str) -> (u32, u32) {
    let line = out.lines().last().unwrap_or_default();
    let mut it = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(u32::MAX));
    let (got, resent) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    assert_eq!(it.next(), Some(0), "answers damaged or unknown: {out}");
    (got, resent)
}

/// The echo client's run `out` got every one of `count` datagrams back, at
/// most 1 % of them sent again; `what` names the path in a failure, `log`
/// is the translator's output.
fn assert_all_echoed(out: &std::process::Output, count: u32, what: &str, log: &str) {
    let text = ok_text(out);
    let (got, resent) = echo_result(&text);
    assert_eq!(got, count, "{what}: datagrams echoed: {text}{log}");
    assert!(resent <= count / 100, "{what}: {resent} sent again: {text}");
}

/// The server pasta runs as its command in the guest ends by itself, and
/// with it pasta.
fn assert_guest_server_ends(p: &mut Proc) {
    assert_eq!(
        p.wait_exit(20).code(),
        Some(0),
        "the guest's server ends by itself: {}",
        p.output()
    );
}

/// The guest's MTU in the datagram tests, and the largest UDP payloads it
/// carries (IPv4: 20 bytes of IP header and 8 of UDP; IPv6: 40 and 8).
const MTU: u32 = 1500;

const MAX4: u32 = MTU - 28;

const MAX6: u32 = MTU - 48;

/// A counter of the namespace's `/proc/net/snmp` (`Icmp`, `InEchos`: a
/// header line of names, then one of values) or, with `group` empty, of
/// `/proc/net/snmp6` (one `name value` per line).
fn snmp(h: &Netns, group: &str, name: &str) -> u64 {
    let (file, text) = if group.is_empty() {
        ("snmp6", h.sh("cat /proc/net/snmp6"))
    } else {
        ("snmp", h.sh("cat /proc/net/snmp"))
    };
    let value = if group.is_empty() {
        text.lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().to_string())
    } else {
        let tag = format!("{group}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&tag));
        let names = lines.next().unwrap_or_default();
        let values = lines.next().unwrap_or_default();
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i))
            .map(str::to_string)
    };
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/net/{file}: {text}"))
}

#[test]
fn pasta_ping_gateway_both_families() {
    let h = Netns::host("ping");
    allow_ping(&h);
    let (in4, in6) = (snmp(&h, "Icmp", "InEchos"), snmp(&h, "", "Icmp6InEchos"));
    let out = h.user_pasta(
        &["--config-net"],
        &[
            "sh",
            "-ec",
            // Both families are usable as soon as the command starts.
            &format!("ping -c 3 -i 0.2 -W 2 {GW_IP4}; ping -6 -c 3 -i 0.2 -W 2 {GW_IP6}"),
        ],
        60,
    );
    let text = ok_text(&out);
    assert_eq!(
        text.matches(" 0% packet loss").count(),
        2,
        "both families answered: {text}"
    );
    // The requests reached the host's own stack (its loopback answered).
    let (in4, in6) = (
        snmp(&h, "Icmp", "InEchos") - in4,
        snmp(&h, "", "Icmp6InEchos") - in6,
    );
    assert!(in4 >= 3, "host ICMP echo requests received: {in4}");
    assert!(in6 >= 3, "host ICMPv6 echo requests received: {in6}");
}

#[test]
fn pasta_ping_refused_warns() {
    let h = Netns::host("noping");
    h.sh("sysctl -q -w net.ipv4.ping_group_range='1 0'");
    let out = h.user_pasta(
        &["--config-net"],
        &["ping", "-c", "1", "-W", "1", GW_IP4],
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no echo without ping sockets");
    assert!(
        err.contains("ping_group_range"),
        "a warning names the sysctl: {err}"
    );
}

/// Outbound: 10 000 IPv4 and 2 000 IPv6 datagrams of random sizes up to the
/// guest's MTU, from one guest port, to an echo server on the host's loopback
/// (the gateway address): every one comes back intact to that port.
#[test]
fn pasta_udp_ten_thousand_datagrams_echoed() {
    let h = Netns::host("udpecho");
    let dir = Scratch::new("udpecho");
    let (_, cli, _) = scripts(&dir);
    let _srv = echo_server(&h, &dir, "5700", "15");
    // The gateway is the host's loopback, in both families.
    // Then a few hundred up to pasta's default MTU, 65520.
    for (dst, count, max, mtu) in [
        (GW_IP4, 10_000, MAX4, MTU),
        (GW_IP6, 2_000, MAX6, MTU),
        (GW_IP4, 300, 65_520 - 28, 65_520),
        (GW_IP6, 300, 65_520 - 48, 65_520),
    ] {
        let args = [
            s(&pasta()),
            "--config-net".into(),
            "-m".into(),
            mtu.to_string(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!(
                "ip link | grep -q 'mtu {mtu} ' || {{ ip link; exit 1; }}; \
                 python3 {cli} {dst} 5700 {count} {max} 40000"
            ),
        ];
        let out = h.user_run(&args, 90);
        assert_all_echoed(&out, count, dst, "");
    }
}

/// Inbound through `-u`: the same from a client on the host's loopback to a
/// forwarded port, echoed by a server in the guest; answers come back to the
/// client's port, intact.
#[test]
fn pasta_udp_ten_thousand_datagrams_inbound() {
    let h = Netns::host("udpin");
    let dir = Scratch::new("udpin");
    let (srv, cli, _) = scripts(&dir);
    let runs = [
        (MTU, [("127.0.0.1", 10_000, MAX4), ("::1", 2_000, MAX6)]),
        // A few hundred up to pasta's default MTU.
        (
            65_520,
            [("127.0.0.1", 300, 65_520 - 28), ("::1", 300, 65_520 - 48)],
        ),
    ];
    for (round, (mtu, clients)) in runs.into_iter().enumerate() {
        let pidf = dir.join(&format!("pasta{round}.pid"));
        let mut p = h.start_ready(
            as_test_user(),
            &pasta(),
            &pidf,
            dir.join(&format!("pasta{round}.log")),
            &[
                "--config-net",
                "-m",
                &mtu.to_string(),
                "-u",
                "5701",
                "--",
                "python3",
                &srv,
                "::",
                "5701",
                "4",
            ],
        );
        for (dst, count, max) in clients {
            let out = h.run(
                &[
                    "python3",
                    &cli,
                    dst,
                    "5701",
                    &count.to_string(),
                    &max.to_string(),
                    "40001",
                ],
                90,
            );
            let what = format!("{dst}:5701 (MTU {mtu}) to the guest");
            assert_all_echoed(&out, count, &what, &format!("; pasta: {}", p.output()));
        }
        assert_guest_server_ends(&mut p);
    }
}

/// `iperf3 -u` at a fixed rate: from the guest to a server on the host's
/// loopback (the gateway), and from the host's loopback to a server in the
/// guest through `-t`/`-u` forwards. Each run must finish and report its loss.
#[test]
fn pasta_iperf3_udp_both_directions() {
    let h = Netns::host("iperfu");
    let dir = Scratch::new("iperfu");
    let check = |json: &str, what: &str| {
        assert_eq!(jq(json, ".error // \"none\""), "none", "{what}: {json}");
        let secs: f64 = jq(json, ".end.sum.seconds").parse().unwrap_or(0.0);
        assert!(secs >= 2.5, "{what}: ran {secs} s");
        let packets: u64 = jq(json, ".end.sum.packets").parse().unwrap_or(0);
        assert!(packets > 0, "{what}: no datagrams: {json}");
        let loss = jq(json, ".end.sum.lost_percent");
        assert!(
            loss.parse::<f64>()
                .is_ok_and(|l| (0.0..=100.0).contains(&l)),
            "{what}: a loss figure, not {loss}"
        );
        jq(json, ".end.sum.lost_packets")
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{what}: lost_packets in {json}"));
    };
    // Guest to host.
    let mut srv = Proc::spawn(
        h.cmd(&["timeout", "30", "iperf3", "-s", "-1", "-p", "5202"]),
        "iperf3 server",
        dir.join("srv.log"),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    srv.assert_running();
    let out = h.user_pasta(
        &["--config-net"],
        &[
            "iperf3", "-c", GW_IP4, "-p", "5202", "-u", "-b", "200M", "-t", "3", "-J",
        ],
        40,
    );
    check(&ok_text(&out), "guest to host");
    srv.wait_exit(10);
    // Host to guest.
    let mut p = h.start_pasta(
        as_test_user(),
        &dir,
        &[
            "--config-net",
            "-t",
            "5203",
            "-u",
            "5203",
            "--",
            "timeout",
            "30",
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5203",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = h.run(
        &[
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            "5203",
            "-u",
            "-b",
            "200M",
            "-t",
            "3",
            "-J",
        ],
        40,
    );
    check(&ok_text(&out), "host to guest");
    assert_guest_server_ends(&mut p);
}

/// Over passt's qemu socket: datagrams and echo requests as raw frames, the
/// answers re-parsed with their checksums checked.
#[test]
fn passt_udp_and_echo_frames() {
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    let h = Netns::host("passtudp");
    allow_ping(&h);
    let dir = Scratch::new("passtudp");
    // passt first: the first start of a test run builds it, which on a
    // loaded machine takes longer than the echo server waits idle.
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let mut p = h.start_ready(
        as_test_user(),
        &bin("passt"),
        &pidf,
        dir.join("passt.log"),
        &["-f", "-s", &s(&sock)],
    );
    let _srvp = echo_server(&h, &dir, "5701", "10");
    let mut c = StreamClient::connect(&sock);
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let ours = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
    let (guest, gw) = ([10, 77, 0, 2], [10, 77, 0, 1]);
    let mut frames = Vec::new();
    for i in 0..50u32 {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(mac, ours)
            .ipv4(guest, gw, 64)
            .udp(40000, 5701)
            .write(&mut f, &i.to_be_bytes())
            .unwrap();
        frames.push(f);
    }
    let mut f = Vec::new();
    PacketBuilder::ethernet2(mac, ours)
        .ipv4(guest, gw, 64)
        .icmpv4_echo_request(0x4242, 1)
        .write(&mut f, b"passt-rs")
        .unwrap();
    frames.push(f);
    c.send_raw(&StreamClient::encode(&frames));
    let is_answer = |f: &[u8]| {
        let Ok(p) = SlicedPacket::from_ethernet(f) else {
            return false;
        };
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            return false;
        };
        let h = ip.header().to_header();
        if h.source != gw || h.destination != guest {
            return false;
        }
        match &p.transport {
            Some(TransportSlice::Udp(u)) => {
                u.source_port() == 5701
                    && u.destination_port() == 40000
                    && u.checksum()
                        == u.to_header()
                            .calc_checksum_ipv4_raw(h.source, h.destination, u.payload())
                            .unwrap()
            }
            Some(TransportSlice::Icmpv4(i)) => {
                matches!(i.icmp_type(), etherparse::Icmpv4Type::EchoReply(e) if e.id == 0x4242 && e.seq == 1)
                    && i.payload() == b"passt-rs"
                    && i.checksum()
                        == etherparse::Icmpv4Header::with_checksum(i.icmp_type(), i.payload())
                            .checksum
            }
            _ => false,
        }
    };
    let got = c.collect(10, 51, is_answer);
    let answers: Vec<&Vec<u8>> = got.iter().filter(|f| is_answer(f)).collect();
    assert_eq!(
        answers.len(),
        51,
        "50 datagrams and one echo reply; passt: {}",
        p.output()
    );
    p.assert_running();
}
