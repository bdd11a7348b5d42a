//! The translators as their real clients start them: each test builds the
//! namespaces and the argument list exactly as the client does, and checks
//! what that client relies on.
//!
//! - **Podman 5** (`common/libnetwork/pasta`): a network namespace owned by
//!   the rootless user namespace and bind-mounted on a file, pasta started
//!   inside that user namespace with `--config-net`, the port mappings as
//!   `-t|-u [HOSTIP/]H1-H2:C1-C2`, and Podman's defaults (`--dns-forward
//!   169.254.1.1 -t none -u none -T none -U none --no-map-gw --quiet --netns
//!   PATH --map-guest-addr 169.254.1.2`, each only where the user gave none);
//!   Podman waits for pasta to return (pasta daemonises), reads its combined
//!   output, and removes the namespace file when the container stops.
//! - **rootlesskit** (`pkg/network/pasta`): `--stderr --ns-ifname=tap0
//!   --mtu=65520 --config-net --address= --netmask= --gateway= --dns-forward=
//!   [--no-map-gw] [--ipv4-only] --tcp-ports=auto|none --udp-ports=auto|none`
//!   and the child's PID, or `--userns=/proc/PID/ns/user --netns=PATH`; it
//!   probes features with `pasta --version`.
//! - **QEMU `-netdev passt`** (`net/passt.c`): `passt --quiet [options] --pid
//!   TMP --fd 3`, one end of a socketpair on descriptor 3 and the PID file
//!   created empty beforehand; QEMU waits for passt to return, then reads the
//!   PID file.
//! - **libvirt** (`qemu_passt.c`): `passt --one-off --socket
//!   DIR/DOM-ALIAS.socket --pid FILE [--mtu] [--interface] [--log-file]
//!   [--hostname] [--fqdn] [--address A [--netmask N]]... [--tcp-ports|--udp-ports
//!   [ADDR][%DEV]/{all|[~]S[-E][:T[-T2]],...}]`, then qemu connects to the
//!   socket.
//!
//! The guest of passt is a real kernel interface: a tap device in a
//! namespace of the test, its frames relayed to and from passt's stream in
//! qemu's framing (4-byte length, frame) by the test itself, as qemu's
//! network back-end would; udhcpc and the kernel's TCP run on it.
//!
//! Translators run as the unprivileged test user; the test's helpers (the
//! "host" and the "container" services) run as root in the namespaces.
//! Every data transfer carries 10 MiB each way and compares it byte for
//! byte (UDP with numbered datagrams, resent until echoed).

mod ns_support;
#[path = "clients_ns/podman.rs"]
mod podman;
mod relay_support;
#[path = "clients_ns/rootlesskit.rs"]
mod rootlesskit;
#[path = "clients_ns/routed.rs"]
mod routed;
#[path = "clients_ns/vm.rs"]
mod vm;

use ns_support::*;
use relay_support::*;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Bytes each way of every transfer.
const XFER_BYTES: usize = 10 << 20;

// --- scripts -------------------------------------------------------------------

/// `echo_srv.py tcp|udp ADDR PORT IDLE_SECS READY_FILE`: echoes every TCP
/// connection (one thread each) or every datagram; ADDR "::" is
/// dual-stack. Ends after IDLE_SECS without a new connection or datagram.
const ECHO_SRV: &str = r#"
import socket, sys, threading
proto, addr, port, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
if fam == socket.AF_INET6 and addr == "::":
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((addr, port))
s.settimeout(idle)
if proto == "tcp":
    s.listen(16)
open(sys.argv[5], "w").write("ready")
def serve(c):
    c.settimeout(30)
    try:
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
try:
    while True:
        if proto == "tcp":
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        else:
            d, a = s.recvfrom(65535)
            s.sendto(d, a)
except socket.timeout:
    pass
"#;

/// `xfer.py tcp|udp ADDR PORT BYTES [SRC_ADDR]`: sends BYTES of a
/// pseudo-random stream to an echo service and checks that exactly that
/// comes back. TCP: one connection, sending and receiving at once. UDP:
/// numbered datagrams of 1200 bytes, 64 unanswered at most, the missing ones
/// sent again after 0.3 s of silence. Prints "ok SENT RECEIVED" or "bad
/// ...".
const XFER: &str = r#"
import hashlib, random, socket, sys, threading, time
proto, addr, port, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
src = sys.argv[5] if len(sys.argv) > 5 else None
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
# getaddrinfo keeps a scope ("fe80::1%eth0").
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
dst = socket.getaddrinfo(addr, port, fam, kind)[0][4]
data = random.Random(port * 7 + total).randbytes(total)
deadline = time.time() + 120
if proto == "tcp":
    c = socket.socket(fam, socket.SOCK_STREAM)
    if src:
        c.bind((src, 0))
    c.settimeout(30)
    c.connect(dst)
    def tx():
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=tx)
    t.start()
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        h.update(d)
        n += len(d)
    t.join()
    ok = n == total and h.digest() == hashlib.sha256(data).digest()
    print("ok" if ok else "bad", total, n)
else:
    CH = 1196
    count = (total + CH - 1) // CH
    def dgram(i):
        return i.to_bytes(4, "big") + data[i * CH:(i + 1) * CH]
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    if src:
        u.bind((src, 0))
    u.connect(dst)
    u.settimeout(0.3)
    got, nxt, n, bad, resent = set(), 0, 0, 0, 0
    while len(got) < count and time.time() < deadline:
        while nxt < count and nxt - len(got) < 64:
            u.send(dgram(nxt))
            nxt += 1
        try:
            d = u.recv(65535)
            i = int.from_bytes(d[:4], "big")
            if i < count and d == dgram(i):
                if i not in got:
                    got.add(i)
                    n += len(d) - 4
            else:
                bad += 1
        except socket.timeout:
            for i in range(nxt):
                if i not in got:
                    u.send(dgram(i))
                    resent += 1
        except ConnectionRefusedError:
            time.sleep(0.1)
    ok = n == total and bad == 0
    print("ok" if ok else "bad", total, n, "bad", bad, "resent", resent)
"#;

/// `dns_srv.py ADDR PORT IDLE_SECS ANSWER READY_FILE`: a resolver on UDP
/// and TCP; every query gets one A record, ANSWER.
const DNS_SRV: &str = r#"
import socket, struct, sys, threading
addr, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ans = socket.inet_aton(sys.argv[4])
def answer(q):
    i = 12
    while i < len(q) and q[i] != 0:
        i += q[i] + 1
    hdr = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + ans
    return hdr + q[12:i + 5] + rr
ts = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ts.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ts.bind((addr, port)); ts.listen(4); ts.settimeout(secs)
us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
us.bind((addr, port)); us.settimeout(secs)
open(sys.argv[5], "w").write("ready")
def tcp():
    try:
        while True:
            c, _ = ts.accept(); c.settimeout(5)
            n = struct.unpack("!H", c.recv(2))[0]
            q = b""
            while len(q) < n:
                q += c.recv(n - len(q))
            r = answer(q); c.sendall(struct.pack("!H", len(r)) + r); c.close()
    except socket.timeout:
        pass
threading.Thread(target=tcp, daemon=True).start()
try:
    while True:
        q, a = us.recvfrom(4096); us.sendto(answer(q), a)
except socket.timeout:
    pass
"#;

/// `hold.py tcp|udp ADDR PORT SECS READY_FILE`: holds a port (a listener,
/// or a bound datagram socket without SO_REUSEADDR) for SECS seconds.
const HOLD: &str = r#"
import socket, sys, time
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
if fam == socket.AF_INET6 and addr == "::":
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind((addr, port))
if proto == "tcp":
    s.listen(4)
open(sys.argv[5], "w").write("ready")
time.sleep(float(sys.argv[4]))
"#;

/// Writes the script `name` into `dir` (once); returns its path.
fn script(dir: &Scratch, name: &str) -> String {
    let body = match name {
        "echo_srv.py" => ECHO_SRV,
        "xfer.py" => XFER,
        "dns_srv.py" => DNS_SRV,
        "hold.py" => HOLD,
        _ => panic!("no script {name}"),
    };
    dir.script(name, body)
}

/// A service of the test in namespace `ns`, ready once its file is written.
fn service(ns: &Netns, dir: &Scratch, name: &str, args: &[&str]) -> Proc {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ready = dir.join(&format!("{name}-{n}.ready"));
    let mut v = vec!["python3".to_string(), script(dir, name)];
    v.extend(args.iter().map(|a| a.to_string()));
    v.push(s(&ready));
    let p = Proc::spawn_ready(
        ns.cmd(&v),
        name,
        dir.join(&format!("{name}-{n}.log")),
        &ready,
    );
    p
}

/// An echo service (`tcp` or `udp`) on ADDR:PORT in `ns`, ending after 600 s
/// without a client (or when the test drops it).
fn echo(ns: &Netns, dir: &Scratch, proto: &str, addr: &str, port: u16) -> Proc {
    service(
        ns,
        dir,
        "echo_srv.py",
        // Idle time before it gives up: the test kills it at its end; under
        // load a Podman start and two DNS queries took over a minute.
        &[proto, addr, &port.to_string(), "600"],
    )
}

/// Carries [`XFER_BYTES`] each way between `from` and an echo service at
/// ADDR:PORT; panics with `what` and `log` unless all arrived intact.
fn transfer(
    from: &Netns,
    dir: &Scratch,
    proto: &str,
    addr: &str,
    port: u16,
    what: &str,
    log: &dyn Fn() -> String,
) {
    let out = from.run(
        &[
            "python3",
            &script(dir, "xfer.py"),
            proto,
            addr,
            &port.to_string(),
            &XFER_BYTES.to_string(),
        ],
        180,
    );
    let t = text(&out);
    assert!(
        t.starts_with("ok "),
        "{what}: {proto} to {addr} port {port}: {t}\n{}",
        log()
    );
}

// --- processes -------------------------------------------------------------------

/// PIDs of the processes whose arguments include `arg` exactly.
fn pids_with_arg(arg: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmd.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
            v.push(pid);
        }
    }
    v
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

/// A translator that daemonised (its parent returned): ended by its PID
/// on drop if still there.
struct Daemon {
    pid: u32,
}

impl Daemon {
    /// How long it takes to go, at most `secs` seconds.
    fn exits_within(&self, secs: f64) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs) {
            if gone(self.pid) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if gone(self.pid) {
            return;
        }
        sigterm(self.pid);
        if self.exits_within(5.0).is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// Allows ping sockets for every group in `h`.
fn allow_ping(h: &Netns) {
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
}

/// Listening TCP and bound UDP sockets of namespace `ns`, as `ss` prints
/// their local addresses ("127.0.0.1:5090", "[::1]:5091", "*:5080").
fn bound(ns: &Netns, proto: &str) -> Vec<String> {
    let flag = if proto == "tcp" { "-Htln" } else { "-Huln" };
    ns.sh(&format!("ss {flag}"))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

/// Whether one of `socks` (from [`bound`]) is on `port` at `addr` ("*"
/// for the wildcard).
fn has_port(socks: &[String], addr: &str, port: u16) -> bool {
    let want = if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    };
    socks.contains(&want)
}

// --- Podman ------------------------------------------------------------------------

/// A network namespace as Podman makes it for a rootless container: owned
/// by the rootless user namespace, bind-mounted on a file under the
/// runtime directory (`$XDG_RUNTIME_DIR/netns/netns-UUID`); removing the
/// file (unmount, unlink) is how the container's network goes away.
struct PodmanNetns {
    user: UserNetns,
    file: PathBuf,
}

impl PodmanNetns {
    fn new(tag: &str, dir: &Scratch) -> PodmanNetns {
        let user = UserNetns::new(tag);
        let netns_dir = dir.join("netns");
        std::fs::create_dir_all(&netns_dir).expect("netns directory");
        let (uid, gid) = test_user();
        std::os::unix::fs::chown(&netns_dir, Some(uid), Some(gid)).expect("chown");
        let file = netns_dir.join(format!("netns-{}-{}", std::process::id(), user.pid()));
        std::fs::write(&file, b"").expect("netns file");
        let out = run_timeout(
            Command::new("mount")
                .arg("--bind")
                .arg(format!("/proc/{}/ns/net", user.pid()))
                .arg(&file),
            10,
        );
        ok_text(&out);
        PodmanNetns { user, file }
    }

    /// Unmounts and removes the file, as Podman does when the container
    /// stops.
    fn remove(&self) {
        let _ = run_timeout(Command::new("umount").arg(&self.file), 10);
        std::fs::remove_file(&self.file).expect("removing the netns file");
    }
}

impl Drop for PodmanNetns {
    fn drop(&mut self) {
        if self.file.exists() {
            self.remove();
        }
    }
}

/// A shell command: `example.org` looked up at `server`, over UDP, then
/// over TCP.
fn dig_udp_tcp(server: &str) -> String {
    format!(
        "dig +short +tries=2 +time=3 @{server} example.org; \
         dig +tcp +short +tries=2 +time=3 @{server} example.org"
    )
}

/// `-H NAME`: the hostname of pasta's command's namespace.
#[test]
fn pasta_hostname_option() {
    let h = Netns::host("hname");
    let out = h.user_pasta(&["-H", "prs-box"], &["hostname"], 30);
    assert_eq!(ok_text(&out).trim(), "prs-box");
}

// --- diagnostics -------------------------------------------------------------------

/// `--stats SECS`: lines of event counts on standard error while events
/// happen, under a heading; refused in the background.
#[test]
fn stats_print_event_counts() {
    let h = Netns::host("stats");
    let dir = Scratch::new("stats");
    let _e = echo(&h, &dir, "tcp", "::", 7800);
    let xfer = script(&dir, "xfer.py");
    let out = h.user_pasta(
        &["--config-net", "--stats", "1"],
        &[
            "sh",
            "-c",
            &format!(
                "python3 {xfer} tcp {GW_IP4} 7800 200000; sleep 1.5; \
                 python3 {xfer} tcp {GW_IP4} 7800 200000"
            ),
        ],
        60,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert_eq!(t.matches("ok 200000 200000").count(), 2, "{t}");
    assert!(t.contains("socket") && t.contains("link"), "headings: {t}");
    let lines: Vec<Vec<u64>> = t
        .lines()
        .filter_map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (v.len() == 6 && l.split_whitespace().count() == 6).then_some(v)
        })
        .collect();
    assert!(lines.len() >= 2, "a line per second with events: {t}");
    let (first, last) = (&lines[0], &lines[lines.len() - 1]);
    assert!(
        last[0] > first[0] && last[1] > first[1],
        "socket and link events counted: {t}"
    );
    let out = h.user_run(&[s(&passt()), "--stats".into(), "1".into()], 10);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--stats"), "{}", text(&out));
}
