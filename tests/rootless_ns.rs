//! pasta and passt run by an unprivileged user, in every way users start
//! them, and what the namespace finds when pasta says it is ready.
//!
//! The translators run as the test user `passt-test` (see `ns_support.rs`);
//! the tests themselves, the "host" and the guests' clients run as root.
//! One test per way of starting pasta: a command in new namespaces
//! (`pasta -- CMD`), a process's namespaces by PID (rootlesskit),
//! `--userns PATH --netns PATH` (rootlesskit's other form), `--netns PATH`
//! from inside the user namespace that owns it (Podman, in the background),
//! `--netns-only`; and passt behind qemu. Each brings the namespace up with
//! `--config-net` and checks ICMP, TCP and UDP to the gateway and a `-t`
//! forward, then starts again without it for DHCP and SLAAC.
//!
//! Start-up failures must name the step and the object. IPv6 must be usable
//! when pasta is ready: the first connection's SYN follows the first
//! neighbour solicitation at once (from pasta's capture), and datagrams to a
//! `-u` forward sent the moment pasta returns all arrive — 20 fresh starts
//! each.

#[path = "rootless_ns/first_packets.rs"]
mod first_packets;
mod ns_support;
mod relay_support;
#[path = "rootless_ns/startup.rs"]
mod startup;

use ns_support::*;
use relay_support::qemu_hub;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The host's echo service (TCP and UDP), reached from the guest through
/// the gateway addresses.
const ECHO_PORT: u16 = 7100;

/// Forwarded with `-t` from the host to the guest.
const FWD_PORT: u16 = 7101;

/// `echo_srv.py PORT IDLE_SECS READY_FILE`: TCP and UDP echo, dual-stack.
const ECHO_SRV: &str = r#"
import socket, sys, threading
port, idle = int(sys.argv[1]), float(sys.argv[2])
def sock(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.settimeout(idle)
    return s
t, u = sock(socket.SOCK_STREAM), sock(socket.SOCK_DGRAM)
t.listen(16)
open(sys.argv[3], "w").write("ready")
def udp():
    try:
        while True:
            d, a = u.recvfrom(2048)
            u.sendto(d, a)
    except socket.timeout:
        pass
threading.Thread(target=udp, daemon=True).start()
try:
    while True:
        c, _ = t.accept()
        c.settimeout(5)
        try:
            c.sendall(c.recv(2048))
        except OSError:
            pass
        c.close()
except socket.timeout:
    pass
"#;

/// `echo_cli.py PORT ADDR...`: a TCP and a UDP exchange with each address;
/// prints "tcp ADDR ok" and "udp ADDR ok" (or "bad").
const ECHO_CLI: &str = r#"
import socket, sys
port = int(sys.argv[1])
for a in sys.argv[2:]:
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    msg = ("hello " + a).encode()
    c = socket.create_connection((a, port), timeout=5)
    c.sendall(msg)
    print("tcp", a, "ok" if c.recv(2048) == msg else "bad")
    c.close()
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.settimeout(1)
    ok = False
    for _ in range(5):
        u.sendto(msg, (a, port))
        try:
            if u.recvfrom(2048)[0] == msg:
                ok = True
                break
        except socket.timeout:
            pass
    print("udp", a, "ok" if ok else "bad")
"#;

/// `fwd_srv.py PORT IDLE_SECS READY_FILE`: answers "fwd" to every TCP
/// connection, dual-stack.
const FWD_SRV: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(4)
s.settimeout(float(sys.argv[2]))
open(sys.argv[3], "w").write("ready")
try:
    while True:
        c, _ = s.accept()
        c.sendall(b"fwd")
        c.close()
except socket.timeout:
    pass
"#;

/// `fwd_cli.py PORT`: reads the answer of the forwarded port on both
/// loopback addresses; prints them.
const FWD_CLI: &str = r#"
import socket, sys
for a in ("127.0.0.1", "::1"):
    c = socket.create_connection((a, int(sys.argv[1])), timeout=5)
    c.settimeout(5)
    print(a, c.recv(16).decode())
"#;

/// `connect.py ADDR PORT`: one TCP connection; prints "connected".
const CONNECT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected")
"#;

/// `udp_recv.py PORT COUNT READY_FILE`: counts distinct numbered datagrams
/// until COUNT arrived, 2 s passed without one after the first, or 20 s in
/// all; prints the count.
const UDP_RECV: &str = r#"
import socket, sys, time
port, want = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("::", port))
s.settimeout(20)
open(sys.argv[3], "w").write("ready")
seen, end = set(), time.time() + 20
try:
    while len(seen) < want and time.time() < end:
        seen.add(int.from_bytes(s.recv(2048)[:4], "big"))
        s.settimeout(2)
except socket.timeout:
    pass
print(len(seen))
"#;

/// `udp_send.py ADDR PORT COUNT PID_FILE`: waits (up to 20 s) for the PID
/// file to be written, then sends COUNT numbered datagrams, two at a time
/// with a millisecond between pairs: paced, so that what is measured is
/// whether the guest takes them from the first moment, not how fast a
/// loaded machine drains a burst. For the same reason a pair waits (up to
/// 20 s in all) while the receive queues of the sockets bound to PORT
/// (pasta's, from `/proc/net/udp` and `udp6`) hold more than 64 KiB: a
/// pasta that gets no CPU for a while would otherwise find its socket's
/// buffer overflowed, and the datagrams lost before it.
const UDP_SEND: &str = r#"
import os, socket, sys, time
addr, port, count, pidf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
end = time.time() + 20
while time.time() < end:
    try:
        if os.path.getsize(pidf) > 0:
            break
    except OSError:
        pass
    time.sleep(0.0005)
def queued():
    n = 0
    for f in ("/proc/net/udp", "/proc/net/udp6"):
        for l in open(f).readlines()[1:]:
            v = l.split()
            if int(v[1].split(":")[1], 16) == port:
                n += int(v[4].split(":")[1], 16)
    return n
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 20
for i in range(count):
    s.sendto(i.to_bytes(4, "big") + bytes(60), (addr, port))
    if i % 2 == 1:
        time.sleep(0.001)
        while queued() > 65536 and time.time() < end:
            time.sleep(0.001)
print("sent", count)
"#;

/// Writes the scripts into `dir`; returns the path of each, by name.
fn script(dir: &Scratch, name: &str) -> String {
    let text = match name {
        "echo_srv.py" => ECHO_SRV,
        "echo_cli.py" => ECHO_CLI,
        "fwd_srv.py" => FWD_SRV,
        "fwd_cli.py" => FWD_CLI,
        "connect.py" => CONNECT,
        "udp_recv.py" => UDP_RECV,
        "udp_send.py" => UDP_SEND,
        _ => panic!("no script {name}"),
    };
    dir.script(name, text)
}

/// Allows ping sockets for every group in the host namespace: pasta, as the
/// test user, answers the guest's echo requests with them.
fn allow_ping(h: &Netns) {
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
}

/// The real user ID of a process.
fn uid_of(pid: u32) -> u32 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    st.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("Uid line")
}

/// The ways of starting pasta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `pasta [options] -- CMD`: new user and network namespaces.
    Command,
    /// `pasta [options] PID`, as rootlesskit: the process's user namespace,
    /// then its network namespace.
    Pid,
    /// `pasta --userns PATH --netns PATH`, as rootlesskit can.
    UsernsNetns,
    /// `pasta --netns PATH`, started inside the user namespace that owns it,
    /// in the background with a PID file, as Podman does.
    InsideUserns,
    /// `pasta --netns-only PID`, started inside the owning user namespace.
    NetnsOnly,
}

/// A running pasta and the guest namespace it serves.
struct Pasta {
    /// Foreground pasta.
    proc: Option<Proc>,
    /// Background pasta's PID (from its PID file).
    daemon: Option<u32>,
    /// Name of the network namespace of pasta's command.
    attached: Option<Netns>,
    /// The namespaces pasta joined.
    user: Option<UserNetns>,
}

impl Pasta {
    /// Starts pasta as the test user, in `mode`, from the host namespace,
    /// and waits until it is ready (its PID file).
    fn start(h: &Netns, mode: Mode, config_net: bool, dir: &Scratch, extra: &[&str]) -> Pasta {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pidf = dir.join(&format!("pasta-{n}.pid"));
        let log = dir.join(&format!("pasta-{n}.log"));
        let mut opts: Vec<String> = vec!["-P".into(), s(&pidf)];
        if config_net {
            opts.push("--config-net".into());
        }
        opts.extend(extra.iter().map(|a| a.to_string()));
        let user = (mode != Mode::Command).then(|| UserNetns::new("rlg"));
        let fg = |mut v: Vec<String>| {
            v.insert(1, "-f".into());
            v
        };
        let mut p = Pasta {
            proc: None,
            daemon: None,
            attached: None,
            user: None,
        };
        let mut args = vec![s(&pasta())];
        args.extend(opts);
        match (mode, &user) {
            (Mode::Command, _) => {
                args.extend(["--".into(), "sleep".into(), "120".into()]);
                p.proc = Some(Proc::spawn(h.user_cmd(&args), "pasta", log));
            }
            (Mode::Pid, Some(u)) => {
                args.push(u.pid().to_string());
                p.proc = Some(Proc::spawn(h.user_cmd(&fg(args)), "pasta", log));
            }
            (Mode::UsernsNetns, Some(u)) => {
                args.extend([
                    "--userns".into(),
                    s(&u.userns_path()),
                    "--netns".into(),
                    s(&u.path()),
                ]);
                p.proc = Some(Proc::spawn(h.user_cmd(&fg(args)), "pasta", log));
            }
            (Mode::NetnsOnly, Some(u)) => {
                args.extend(["--netns-only".into(), u.pid().to_string()]);
                let mut v = u.inside();
                v.extend(fg(args));
                p.proc = Some(Proc::spawn(h.cmd(&v), "pasta", log));
            }
            (Mode::InsideUserns, Some(u)) => {
                args.extend(["--quiet".into(), "--netns".into(), s(&u.path())]);
                let mut v = u.inside();
                v.extend(args);
                let out = h.run(&v, 30);
                ok_text(&out);
                let pid = std::fs::read_to_string(&pidf)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .expect("background pasta wrote its PID file before returning");
                p.daemon = Some(pid);
            }
            _ => unreachable!(),
        }
        p.user = user;
        if let Some(pr) = p.proc.as_mut() {
            wait_file(&pidf, 20, pr);
        }
        let pid = p.pid();
        assert_eq!(uid_of(pid), test_user().0, "pasta runs as the test user");
        if mode == Mode::Command {
            let child = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .expect("pasta's command");
            p.attached = Some(Netns::attach("rlc", child));
        }
        p
    }

    fn pid(&self) -> u32 {
        match (&self.proc, self.daemon) {
            (Some(p), _) => p.pid(),
            (None, Some(d)) => d,
            _ => unreachable!(),
        }
    }

    /// The guest namespace.
    fn g(&self) -> &Netns {
        match (&self.attached, &self.user) {
            (Some(a), _) => a,
            (None, Some(u)) => u,
            _ => unreachable!(),
        }
    }

    fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon {
            // Our daemon (started through the parent that returned); gone
            // already if its namespace is.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
            // Gone, or a zombie waiting for whoever adopted it.
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while !gone(pid) && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !gone(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// ICMP, TCP and UDP from the guest to the gateway addresses (the host's
/// echo service on its loopback), and the `-t` forward from the host's
/// loopback to the guest.
fn check_traffic(h: &Netns, g: &Netns, dir: &Scratch, what: &str, log: &dyn Fn() -> String) {
    for (cmd, gw) in [("ping", GW_IP4), ("ping -6", GW_IP6)] {
        let out = g.run(&["sh", "-c", &format!("{cmd} -c 1 -W 5 {gw}")], 20);
        assert!(
            out.status.success(),
            "{what}: {cmd} {gw}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            log()
        );
    }
    let ready = dir.join("echo.ready");
    let _ = std::fs::remove_file(&ready);
    let _srv = Proc::spawn_ready(
        h.cmd(&[
            "python3",
            &script(dir, "echo_srv.py"),
            &ECHO_PORT.to_string(),
            "10",
            &s(&ready),
        ]),
        "echo server",
        dir.join("echo_srv.log"),
        &ready,
    );
    let out = g.run(
        &[
            "python3",
            &script(dir, "echo_cli.py"),
            &ECHO_PORT.to_string(),
            GW_IP4,
            GW_IP6,
        ],
        60,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("tcp {GW_IP4} ok"),
        format!("udp {GW_IP4} ok"),
        format!("tcp {GW_IP6} ok"),
        format!("udp {GW_IP6} ok"),
    ] {
        assert!(
            text.contains(&want),
            "{what}: no {want}: {text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log()
        );
    }
    let ready = dir.join("fwd.ready");
    let _ = std::fs::remove_file(&ready);
    let _fwd = Proc::spawn_ready(
        g.cmd(&[
            "python3",
            &script(dir, "fwd_srv.py"),
            &FWD_PORT.to_string(),
            "10",
            &s(&ready),
        ]),
        "forwarded server",
        dir.join("fwd_srv.log"),
        &ready,
    );
    let out = h.run(
        &["python3", &script(dir, "fwd_cli.py"), &FWD_PORT.to_string()],
        30,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("127.0.0.1 fwd") && text.contains("::1 fwd"),
        "{what}: -t {FWD_PORT}: {text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
}

/// What `--config-net` set up: the host's addresses (none tentative) and
/// default routes on `dummy0`.
fn check_config_net(g: &Netns, what: &str) {
    let a = g.sh("ip -o addr show dev dummy0; ip -4 route show default; ip -6 route show default");
    for want in [
        format!("inet {HOST_IP4}/24"),
        format!("inet6 {HOST_IP6}/64"),
        format!("default via {GW_IP4}"),
        format!("default via {GW_IP6}"),
    ] {
        assert!(a.contains(&want), "{what}: no {want}: {a}");
    }
    assert!(!a.contains("tentative"), "{what}: {a}");
}

/// A guest configured by its own clients: busybox udhcpc applies its lease,
/// the kernel's SLAAC an address from pasta's router advertisement.
fn check_dhcp_slaac(g: &Netns, ifname: &str, dir: &Scratch, what: &str, log: &dyn Fn() -> String) {
    let (script, lease) = udhcpc_apply_script(dir, false);
    let mac = jq(
        &g.sh(&format!("ip -j link show dev {ifname}")),
        ".[0].address",
    );
    let m: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).expect("MAC"))
        .collect();
    let slaac = format!(
        "fd77::{:x}:{:x}:{:x}:{:x}/64",
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]])
    );
    g.sh(&format!(
        "sysctl -qw net.ipv6.conf.{ifname}.accept_ra=1
         sysctl -qw net.ipv6.conf.{ifname}.addr_gen_mode=0
         ip link set {ifname} up"
    ));
    let out = run_udhcpc(g, ifname, &[], &script);
    let env = std::fs::read_to_string(&lease).unwrap_or_else(|_| {
        panic!(
            "{what}: no DHCP lease: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log()
        )
    });
    assert_eq!(
        env_value(&env, "ip").as_deref(),
        Some(HOST_IP4),
        "{what}: {env}"
    );
    assert_eq!(env_value(&env, "router").as_deref(), Some(GW_IP4), "{what}");
    let a = g.sh(&format!(
        "ip -o -4 addr show dev {ifname}; ip -4 route show default"
    ));
    assert!(
        a.contains(&format!("inet {HOST_IP4}/24")) && a.contains(&format!("via {GW_IP4}")),
        "{what}: lease applied: {a}"
    );
    let got = eventually(20, || {
        let a = g.sh(&format!(
            "ip -6 -o addr show dev {ifname} scope global; ip -6 route show default"
        ));
        (a.contains(&slaac) && !a.contains("tentative") && a.contains("default via fe80::"))
            .then_some(())
    });
    assert!(
        got.is_some(),
        "{what}: no SLAAC address {slaac} and default route: {}\n{}",
        g.sh("ip -6 addr; ip -6 route"),
        log()
    );
}

/// A mode of pasta, run twice: with `--config-net` (addresses, routes,
/// ICMP, TCP, UDP, `-t`), and without (DHCP, SLAAC).
fn mode_works(mode: Mode, tag: &str) {
    let h = Netns::host(tag);
    allow_ping(&h);
    let dir = Scratch::new(tag);
    let fwd = FWD_PORT.to_string();
    let opts = ["-t", &fwd, "-u", "none", "-T", "none", "-U", "none"];
    let what = format!("{mode:?} with --config-net");
    {
        let p = Pasta::start(&h, mode, true, &dir, &opts);
        check_config_net(p.g(), &what);
        check_traffic(&h, p.g(), &dir, &what, &|| p.output());
    }
    let what = format!("{mode:?} without --config-net");
    let p = Pasta::start(&h, mode, false, &dir, &opts);
    check_dhcp_slaac(p.g(), "dummy0", &dir, &what, &|| p.output());
}

#[test]
fn command_in_new_namespaces() {
    mode_works(Mode::Command, "rlcmd");
}

#[test]
fn pid_as_rootlesskit() {
    mode_works(Mode::Pid, "rlpid");
}

#[test]
fn userns_and_netns_paths() {
    mode_works(Mode::UsernsNetns, "rlpath");
}

#[test]
fn netns_inside_owning_userns_as_podman() {
    mode_works(Mode::InsideUserns, "rlpod");
}

#[test]
fn netns_only_inside_owning_userns() {
    mode_works(Mode::NetnsOnly, "rlonly");
}

/// passt as the test user, serving qemu, which bridges its socket to a tap
/// in a guest namespace: DHCP and SLAAC configure the guest, then ICMP, TCP,
/// UDP and a `-t` forward work through passt.
#[test]
fn passt_as_the_test_user() {
    let h = Netns::host("rlpasst");
    allow_ping(&h);
    let g = Netns::new("rlpasstg");
    let dir = Scratch::new("rlpasst");
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let mut p = Proc::spawn(
        h.user_cmd(&[
            s(&passt()),
            "-f".into(),
            "-s".into(),
            s(&sock),
            "-P".into(),
            s(&pidf),
            "-t".into(),
            FWD_PORT.to_string(),
            "-u".into(),
            "none".into(),
        ]),
        "passt",
        dir.join("passt.log"),
    );
    wait_file(&pidf, 20, &mut p);
    assert_eq!(
        uid_of(p.pid()),
        test_user().0,
        "passt runs as the test user"
    );
    let mut q = qemu_hub(&g, &sock, "qtap0", dir.join("qemu.log"));
    let log = || p.output();
    check_dhcp_slaac(&g, "qtap0", &dir, "passt", &log);
    check_traffic(&h, &g, &dir, "passt", &log);
    q.assert_running();
}
