//! Namespace tests of UDP, ICMP echo and DNS forwarding through `pasta` (run
//! as root).
//!
//! Each test makes its own "host" namespace (see `ns_support.rs`); pasta runs
//! in it and makes the guest namespace for its command. Small Python scripts
//! (written to a scratch directory) serve as echo servers, echo clients and
//! a DNS responder; every one of them ends by itself after a few idle
//! seconds, and every command is bounded in time.

mod ns_support;

use ns_support::*;
use std::path::PathBuf;

fn pasta() -> PathBuf {
    bin("pasta")
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

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

/// A UDP echo client: `echo_cli.py HOST PORT COUNT`: sends COUNT numbered
/// datagrams (at most 16 unanswered), sends missing ones again after a
/// 2 s silence, prints "answered resent".
const ECHO_CLI: &str = r#"
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.connect((host, port))
s.settimeout(2)
got, sent, resent = set(), 0, 0
deadline = time.time() + 60
def send(i):
    try:
        s.send(i.to_bytes(4, "big") + b"x" * 200)
    except ConnectionRefusedError:
        time.sleep(0.1)
while len(got) < count and time.time() < deadline:
    while sent < count and sent - len(got) < 16:
        send(sent)
        sent += 1
    try:
        d = s.recv(65535)
        if len(d) == 204 and d[4:] == b"x" * 200:
            got.add(int.from_bytes(d[:4], "big"))
    except socket.timeout:
        for i in range(sent):
            if i not in got:
                send(i)
                resent += 1
    except ConnectionRefusedError:
        time.sleep(0.1)
print(len(got), resent)
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
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("script");
        s(&p)
    };
    (
        w("echo_srv.py", ECHO_SRV),
        w("echo_cli.py", ECHO_CLI),
        w("dns_srv.py", DNS_SRV),
    )
}

/// Allows ping sockets for every group in the host namespace (new network
/// namespaces start with none allowed).
fn allow_ping(h: &Netns) {
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
}

/// `answered resent` from the echo client's output.
fn echo_result(out: &str) -> (u32, u32) {
    let line = out.lines().last().unwrap_or_default();
    let mut it = line.split_whitespace().map(|v| v.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn pasta_ping_gateway_both_families() {
    let h = Netns::host("ping");
    allow_ping(&h);
    let out = h.run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "sh".into(),
            "-ec".into(),
            // IPv6 waits for duplicate address detection in the guest.
            format!("ping -c 3 -i 0.2 -W 2 {GW_IP4}; sleep 2; ping -6 -c 3 -i 0.2 -W 2 {GW_IP6}"),
        ],
        60,
    );
    let text = ok_text(&out);
    assert_eq!(
        text.matches(" 0% packet loss").count(),
        2,
        "both families answered: {text}"
    );
}

#[test]
fn pasta_ping_refused_warns() {
    let h = Netns::host("noping");
    h.sh("sysctl -q -w net.ipv4.ping_group_range='1 0'");
    let out = h.run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "ping".into(),
            "-c".into(),
            "1".into(),
            "-W".into(),
            "1".into(),
            GW_IP4.into(),
        ],
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no echo without ping sockets");
    assert!(
        err.contains("ping_group_range"),
        "a warning names the sysctl: {err}"
    );
}

#[test]
fn pasta_udp_ten_thousand_datagrams_echoed() {
    let h = Netns::host("udpecho");
    let dir = Scratch::new("udpecho");
    let (srv, cli, _) = scripts(&dir);
    let ready = dir.join("srv.ready");
    let mut srv = Proc::spawn(
        h.cmd(&["python3", &srv, "::", "5700", "15", &s(&ready)]),
        "echo server",
        dir.join("srv.log"),
    );
    wait_file(&ready, 20, &mut srv);
    // The gateway is the host's loopback, in both families.
    for (dst, count) in [(GW_IP4, 10_000), (GW_IP6, 2_000)] {
        // IPv6 addresses are usable after duplicate address detection.
        let sleep = if dst.contains(':') { "sleep 2; " } else { "" };
        let args = [
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!("{sleep}python3 {cli} {dst} 5700 {count}"),
        ];
        let out = h.run(&args, 90);
        let text = ok_text(&out);
        let (got, resent) = echo_result(&text);
        assert_eq!(got, count, "{dst}: datagrams echoed: {text}");
        assert!(resent <= count / 100, "{dst}: {resent} sent again: {text}");
    }
}

/// A UDP client that sends from one port to several servers:
/// `multi_cli.py HOST PORT...`; prints how many answered.
const MULTI_CLI: &str = r#"
import socket, sys, time
host, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 6000))
s.settimeout(1)
seen = set()
for _ in range(5):
    for p in ports:
        if p not in seen:
            s.sendto(b"hi", (host, p))
    try:
        while len(seen) < len(ports):
            d, a = s.recvfrom(100)
            if d == b"hi":
                seen.add(a[1])
    except socket.timeout:
        pass
print(len(seen))
"#;

#[test]
fn pasta_udp_one_source_port_many_peers() {
    let h = Netns::host("udpmulti");
    let dir = Scratch::new("udpmulti");
    let (srv, _, _) = scripts(&dir);
    let cli = dir.join("multi_cli.py");
    std::fs::write(&cli, MULTI_CLI).unwrap();
    let mut servers = Vec::new();
    for port in ["5710", "5711", "5712"] {
        let ready = dir.join(&format!("{port}.ready"));
        let mut p = Proc::spawn(
            h.cmd(&["python3", &srv, "::", port, "15", &s(&ready)]),
            "echo server",
            dir.join(&format!("{port}.log")),
        );
        wait_file(&ready, 20, &mut p);
        servers.push(p);
    }
    let out = h.run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "python3".into(),
            s(&cli),
            GW_IP4.into(),
            "5710".into(),
            "5711".into(),
            "5712".into(),
        ],
        60,
    );
    let text = ok_text(&out);
    assert_eq!(text.trim(), "3", "every server answered port 6000: {text}");
}

/// A multicast responder: `mcast_srv.py GROUP PORT IDLE_SECS READY_FILE`
/// joins GROUP and answers every datagram with "answer" from a unicast
/// socket of its own.
const MCAST_SRV: &str = r#"
import socket, struct, sys
group, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0")))
s.settimeout(secs)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
open(sys.argv[4], "w").write("ready")
try:
    while True:
        d, a = s.recvfrom(100)
        u.sendto(b"answer", a)
except socket.timeout:
    pass
"#;

/// A client asking a multicast group: `mcast_cli.py GROUP PORT`; prints
/// the answer and then the answer to a unicast follow-up to the peer.
const MCAST_CLI: &str = r#"
import socket, sys
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 6100))
s.settimeout(1)
for _ in range(5):
    s.sendto(b"search", (group, port))
    try:
        d, a = s.recvfrom(100)
        print(d.decode(), a[0])
        break
    except socket.timeout:
        pass
"#;

#[test]
fn pasta_udp_multicast_answered_by_unicast() {
    let h = Netns::host("udpmcast");
    let dir = Scratch::new("udpmcast");
    let srv = dir.join("mcast_srv.py");
    let cli = dir.join("mcast_cli.py");
    std::fs::write(&srv, MCAST_SRV).unwrap();
    std::fs::write(&cli, MCAST_CLI).unwrap();
    let ready = dir.join("srv.ready");
    let mut p = Proc::spawn(
        h.cmd(&[
            "python3",
            &s(&srv),
            "239.255.77.1",
            "5730",
            "15",
            &s(&ready),
        ]),
        "multicast server",
        dir.join("srv.log"),
    );
    wait_file(&ready, 20, &mut p);
    let out = h.run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "python3".into(),
            s(&cli),
            "239.255.77.1".into(),
            "5730".into(),
        ],
        60,
    );
    let text = ok_text(&out);
    // The answer from host loopback appears to come from the gateway.
    assert_eq!(
        text.trim(),
        format!("answer {GW_IP4}"),
        "the unicast answer reached the guest: {text}; server: {}",
        p.output()
    );
}

#[test]
fn pasta_udp_forwarded_port_remapped() {
    let h = Netns::host("udpfwd");
    let dir = Scratch::new("udpfwd");
    let (srv, cli, _) = scripts(&dir);
    let pidf = dir.join("pasta.pid");
    let mut p = Proc::spawn(
        h.cmd(&[
            s(&pasta()),
            "--config-net".into(),
            "-P".into(),
            s(&pidf),
            "-u".into(),
            "5353:53".into(),
            "--".into(),
            "python3".into(),
            srv,
            "::".into(),
            "53".into(),
            "6".into(),
        ]),
        "pasta",
        dir.join("pasta.log"),
    );
    wait_file(&pidf, 20, &mut p);
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (dst, count) in [("127.0.0.1", 1_000), (HOST_IP4, 200), ("::1", 200)] {
        let out = h.run(&["python3", &cli, dst, "5353", &count.to_string()], 60);
        let text = ok_text(&out);
        let (got, resent) = echo_result(&text);
        assert_eq!(
            got,
            count,
            "{dst}:5353 answered by the guest's port 53: {text}; pasta: {}",
            p.output()
        );
        assert!(resent <= count / 100, "{dst}: {resent} sent again");
    }
    assert_eq!(
        p.wait_exit(20).code(),
        Some(0),
        "the guest's server ends by itself: {}",
        p.output()
    );
}

#[test]
fn pasta_dns_forward_udp_and_tcp() {
    let h = Netns::host("dnsfwd");
    let dir = Scratch::new("dnsfwd");
    let (_, _, dns) = scripts(&dir);
    // The host's resolver (from its resolv.conf) answers on its address.
    h.sh(&format!("ip addr add {DNS4}/32 dev dummy0"));
    let ready = dir.join("dns.ready");
    let mut srv = Proc::spawn(
        h.cmd(&["python3", &dns, DNS4, "53", "15", &s(&ready)]),
        "dns server",
        dir.join("dns.log"),
    );
    wait_file(&ready, 20, &mut srv);
    let out = h.run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--dns-forward".into(),
            "10.77.0.3".into(),
            "--".into(),
            "sh".into(),
            "-ec".into(),
            "dig +short +tries=1 +time=3 @10.77.0.3 example.org; \
             dig +tcp +short +tries=1 +time=3 @10.77.0.3 example.org; \
             dig +tries=1 +time=3 @10.77.0.3 example.org | grep SERVER"
                .into(),
        ],
        60,
    );
    let text = ok_text(&out);
    assert_eq!(
        text.matches("192.0.2.1").count(),
        2,
        "answers over UDP and TCP: {text}"
    );
    assert!(
        text.contains("SERVER: 10.77.0.3#53"),
        "the answer comes from the forwarded address: {text}"
    );
}

/// Over passt's qemu socket: datagrams and echo requests as raw frames, the
/// answers re-parsed with their checksums checked.
#[test]
fn passt_udp_and_echo_frames() {
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    let h = Netns::host("passtudp");
    allow_ping(&h);
    let dir = Scratch::new("passtudp");
    let (srv, _, _) = scripts(&dir);
    let ready = dir.join("srv.ready");
    let mut srvp = Proc::spawn(
        h.cmd(&["python3", &srv, "::", "5701", "10", &s(&ready)]),
        "echo server",
        dir.join("srv.log"),
    );
    wait_file(&ready, 20, &mut srvp);
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let mut p = Proc::spawn(
        h.cmd(&[
            s(&bin("passt")),
            "-f".into(),
            "-s".into(),
            s(&sock),
            "-P".into(),
            s(&pidf),
        ]),
        "passt",
        dir.join("passt.log"),
    );
    wait_file(&pidf, 20, &mut p);
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
