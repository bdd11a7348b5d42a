//! UDP ports and peers: one source port towards many peers, multicast
//! answered by unicast, remapped and automatic forwards, DNS forwarding.

use super::*;

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
    let cli = dir.join("multi_cli.py");
    std::fs::write(&cli, MULTI_CLI).unwrap();
    let _servers: Vec<_> = ["5710", "5711", "5712"]
        .into_iter()
        .map(|port| echo_server(&h, &dir, port, "15"))
        .collect();
    let out = h.user_pasta(
        &["--config-net"],
        &["python3", &s(&cli), GW_IP4, "5710", "5711", "5712"],
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
    let p = Proc::spawn_ready(
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
        &ready,
    );
    let out = h.user_pasta(
        &["--config-net"],
        &["python3", &s(&cli), "239.255.77.1", "5730"],
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
    let mut p = h.start_pasta(
        as_test_user(),
        &dir,
        &[
            "--config-net",
            "-u",
            "5353:53",
            "--",
            "python3",
            &srv,
            "::",
            "53",
            "6",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (dst, count) in [("127.0.0.1", 1_000), (HOST_IP4, 200), ("::1", 200)] {
        let out = h.run(&["python3", &cli, dst, "5353", &count.to_string()], 60);
        let what = format!("{dst}:5353 to the guest's port 53");
        assert_all_echoed(&out, count, &what, &format!("; pasta: {}", p.output()));
    }
    assert_guest_server_ends(&mut p);
}

#[test]
fn pasta_dns_forward_udp_and_tcp() {
    let h = Netns::host("dnsfwd");
    let dir = Scratch::new("dnsfwd");
    let (_, _, dns) = scripts(&dir);
    // The host's resolver (from its resolv.conf) answers on its address.
    h.sh(&format!("ip addr add {DNS4}/32 dev dummy0"));
    let ready = dir.join("dns.ready");
    let _srv = Proc::spawn_ready(
        h.cmd(&["python3", &dns, DNS4, "53", "15", &s(&ready)]),
        "dns server",
        dir.join("dns.log"),
        &ready,
    );
    let out = h.user_pasta(
        &["--config-net", "--dns-forward", "10.77.0.3"],
        &[
            "sh",
            "-ec",
            "dig +short +tries=1 +time=3 @10.77.0.3 example.org; \
             dig +tcp +short +tries=1 +time=3 @10.77.0.3 example.org; \
             dig +tries=1 +time=3 @10.77.0.3 example.org | grep SERVER",
        ],
        60,
    );
    let text = ok_text(&out);
    let answers = text.matches("192.0.2.1").count();
    assert_eq!(answers, 2, "answers over UDP and TCP: {text}");
    assert!(
        text.contains("SERVER: 10.77.0.3#53"),
        "the answer comes from the forwarded address: {text}"
    );
}

/// Probes a UDP port until it answers (`up`) or refuses (`down`), each
/// attempt from a new socket (a new source port: not a flow of an earlier
/// attempt): `udp_probe.py HOST PORT up|down SECS`. Prints the seconds it
/// took, or "timeout".
const UDP_PROBE: &str = r#"
import socket, sys, time
host, port, mode, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
t0 = time.time()
while time.time() - t0 < secs:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((host, port))
    s.settimeout(0.1)
    try:
        s.send(b"probe")
        d = s.recv(100)
        if mode == "up" and d == b"probe":
            print(time.time() - t0); sys.exit(0)
    except ConnectionRefusedError:
        if mode == "down":
            print(time.time() - t0); sys.exit(0)
        time.sleep(0.05)
    except socket.timeout:
        pass
    finally:
        s.close()
print("timeout")
"#;

/// `-u` left at pasta's default (`auto`): a UDP server started in the
/// namespace after pasta is up becomes reachable at the host's address
/// within 2 s, and its port closes within 2 s after the server ends (as
/// the probe measures it from its first datagram: a loaded machine may take
/// a second to start the probe itself).
#[test]
fn pasta_udp_auto_forwarding_follows_guest_sockets() {
    let h = Netns::host("udpauto");
    let dir = Scratch::new("udpauto");
    let (srv, _, _) = scripts(&dir);
    let probe = dir.join("udp_probe.py");
    std::fs::write(&probe, UDP_PROBE).expect("script");
    let pidf = dir.join("pasta.pid");
    let ready = dir.join("ready");
    let done = dir.join("done");
    let guest = format!(
        "sleep 2; python3 {srv} :: 5400 3 {}; echo done > {}; sleep 8",
        s(&ready),
        s(&done)
    );
    let mut p = h.start_ready(
        as_test_user(),
        &pasta(),
        &pidf,
        dir.join("pasta.log"),
        &["--config-net", "--", "sh", "-c", &guest],
    );
    let probe_up = |mode: &str| {
        let out = h.run(&["python3", &s(&probe), HOST_IP4, "5400", mode, "5"], 20);
        ok_text(&out).trim().to_string()
    };
    // Nothing is bound in the namespace yet: refused at once.
    assert!(!ready.exists(), "the server started too early");
    let before = probe_up("down");
    assert_ne!(before, "timeout", "port 5400 forwarded before any server");
    // The probe prints how long it took, from its first datagram.
    let took = |out: &str| out.parse::<f64>().expect("the probe's time");
    wait_file(&ready, 20, &mut p);
    let up = probe_up("up");
    assert_ne!(up, "timeout", "server not reached: {}", p.output());
    assert!(took(&up) < 2.0, "forwarded after {up} s");
    // The server ends after 3 s without datagrams.
    wait_file(&done, 20, &mut p);
    let down = probe_up("down");
    assert_ne!(down, "timeout", "port still forwarded: {}", p.output());
    assert!(took(&down) < 2.0, "closed after {down} s");
    p.assert_running();
}
