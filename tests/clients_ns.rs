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
mod relay_support;

use ns_support::*;
use relay_support::TapRelay;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn pasta() -> PathBuf {
    bin("pasta")
}

fn passt() -> PathBuf {
    bin("passt")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

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
    let p = dir.join(name);
    if !p.exists() {
        std::fs::write(&p, body).expect("script");
    }
    s(&p)
}

/// A service of the test in namespace `ns`, ready once its file is written.
fn service(ns: &Netns, dir: &Scratch, name: &str, args: &[&str]) -> Proc {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ready = dir.join(&format!("{name}-{n}.ready"));
    let mut v = vec!["python3".to_string(), script(dir, name)];
    v.extend(args.iter().map(|a| a.to_string()));
    v.push(s(&ready));
    let mut p = Proc::spawn(ns.cmd(&v), name, dir.join(&format!("{name}-{n}.log")));
    wait_file(&ready, 20, &mut p);
    p
}

/// An echo service (`tcp` or `udp`) on ADDR:PORT in `ns`, ending after 60 s
/// without a client.
fn echo(ns: &Netns, dir: &Scratch, proto: &str, addr: &str, port: u16) -> Proc {
    service(
        ns,
        dir,
        "echo_srv.py",
        &[proto, addr, &port.to_string(), "60"],
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

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
        st.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
    })
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
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
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

/// One `-p` mapping of Podman: `[HOSTIP:]HOSTPORT[-END]:CPORT/PROTO`.
struct PortMapping {
    host_ip: &'static str,
    host_port: u16,
    container_port: u16,
    range: u16,
    proto: &'static str,
}

/// pasta's arguments as Podman 5 builds them: `--config-net`, the port
/// mappings, containers.conf's and the user's options, then each default
/// that the user did not give, `--quiet --netns PATH --map-guest-addr
/// 169.254.1.2`.
fn podman_args(ports: &[PortMapping], opts: &[&str], netns: &Path) -> Vec<String> {
    let mut v: Vec<String> = vec!["--config-net".into()];
    let (mut t, mut u, mut big_t, mut big_u, mut map_gw) = (true, true, true, true, true);
    for p in ports {
        v.push(if p.proto == "tcp" { "-t" } else { "-u" }.into());
        let addr = if p.host_ip.is_empty() {
            String::new()
        } else {
            format!("{}/", p.host_ip)
        };
        v.push(format!(
            "{addr}{}-{}:{}-{}",
            p.host_port,
            p.host_port + p.range - 1,
            p.container_port,
            p.container_port + p.range - 1
        ));
    }
    v.extend(opts.iter().map(|o| o.to_string()));
    v.retain(|a| {
        if a == "--map-gw" {
            map_gw = false;
            false
        } else {
            true
        }
    });
    let mut dns_forward = false;
    for a in &v {
        match a.as_str() {
            "-t" | "--tcp-ports" => t = false,
            "-u" | "--udp-ports" => u = false,
            "-T" | "--tcp-ns" => big_t = false,
            "-U" | "--udp-ns" => big_u = false,
            "--dns-forward" => dns_forward = true,
            _ => {}
        }
    }
    if !dns_forward {
        v.extend(["--dns-forward".into(), "169.254.1.1".into()]);
    }
    for (def, opt) in [(t, "-t"), (u, "-u"), (big_t, "-T"), (big_u, "-U")] {
        if def {
            v.extend([opt.into(), "none".into()]);
        }
    }
    if map_gw {
        v.push("--no-map-gw".into());
    }
    v.extend([
        "--quiet".into(),
        "--netns".into(),
        s(netns),
        "--map-guest-addr".into(),
        "169.254.1.2".into(),
    ]);
    v
}

/// Runs pasta as Podman does: inside the rootless user namespace, as the
/// test user, waiting for it to return; its combined output and status.
fn podman_run(h: &Netns, ns: &PodmanNetns, args: &[String]) -> Output {
    let mut v = ns.user.inside();
    v.push(s(&pasta()));
    v.extend(args.iter().cloned());
    h.run(&v, 60)
}

/// The pasta daemon serving `ns` (found by its `--netns` argument).
fn podman_daemon(ns: &PodmanNetns) -> Daemon {
    let pids = pids_with_arg(&s(&ns.file));
    assert_eq!(
        pids.len(),
        1,
        "one pasta for {}: {pids:?}",
        ns.file.display()
    );
    let pid = pids[0];
    assert_eq!(uid_of(pid), test_user().0, "pasta runs as the test user");
    Daemon { pid }
}

/// What the container must find the moment pasta returns: the host's
/// addresses (not tentative), its default routes, MTU 65520.
fn check_configured_now(g: &Netns, what: &str) {
    let a = g.sh(
        "ip -o addr show dev dummy0; ip -4 route show default; ip -6 route show default; \
         ip -o link show dev dummy0",
    );
    for want in [
        format!("inet {HOST_IP4}/24"),
        format!("inet6 {HOST_IP6}/64"),
        format!("default via {GW_IP4}"),
        format!("default via {GW_IP6}"),
        "mtu 65520".to_string(),
    ] {
        assert!(
            a.contains(&want),
            "{what}: no {want} when pasta returned: {a}"
        );
    }
    assert!(!a.contains("tentative"), "{what}: {a}");
}

/// Podman's `-p` forwards: translated ranges, address-bound ones on IPv4
/// and IPv6, UDP on the wildcard and on `::1`. The moment pasta returns,
/// the namespace is configured and every forwarded port is bound; then 10
/// MiB go each way through each forward, intact.
#[test]
fn podman_port_forwards() {
    let h = Netns::host("podfwd");
    let dir = Scratch::new("podfwd");
    let ns = PodmanNetns::new("podfwdg", &dir);
    let m = |host_ip, host_port, container_port, range, proto| PortMapping {
        host_ip,
        host_port,
        container_port,
        range,
        proto,
    };
    let ports = [
        m("", 5080, 8080, 3, "tcp"),
        m("127.0.0.1", 5090, 80, 1, "tcp"),
        m("::1", 5091, 81, 1, "tcp"),
        m("", 5570, 5570, 1, "udp"),
        m("::1", 5571, 5571, 1, "udp"),
        m("127.0.0.1", 5572, 53, 1, "udp"),
    ];
    let args = podman_args(&ports, &[], &ns.file);
    let out = podman_run(&h, &ns, &args);
    assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
    let g: &Netns = &ns.user;
    check_configured_now(g, "podman");
    let (tcp, udp) = (bound(&h, "tcp"), bound(&h, "udp"));
    for (socks, addr, port) in [
        (&tcp, "*", 5080),
        (&tcp, "*", 5081),
        (&tcp, "*", 5082),
        (&tcp, "127.0.0.1", 5090),
        (&tcp, "::1", 5091),
        (&udp, "*", 5570),
        (&udp, "::1", 5571),
        (&udp, "127.0.0.1", 5572),
    ] {
        assert!(
            has_port(socks, addr, port),
            "port {port} on {addr} not bound when pasta returned: {socks:?}"
        );
    }
    assert!(
        text(&out).trim().is_empty(),
        "--quiet: nothing printed: {}",
        text(&out)
    );
    let d = podman_daemon(&ns);
    let log = || format!("pasta PID {}", d.pid);
    let _servers = [
        echo(g, &dir, "tcp", "::", 8081),
        echo(g, &dir, "tcp", "::", 8082),
        echo(g, &dir, "tcp", "::", 80),
        echo(g, &dir, "tcp", "::", 81),
        echo(g, &dir, "udp", "::", 5570),
        echo(g, &dir, "udp", "::", 5571),
        echo(g, &dir, "udp", "0.0.0.0", 53),
    ];
    for (proto, addr, port) in [
        ("tcp", "127.0.0.1", 5081),
        ("tcp", "::1", 5082),
        ("tcp", HOST_IP4, 5081),
        ("tcp", "127.0.0.1", 5090),
        ("tcp", "::1", 5091),
        ("udp", "127.0.0.1", 5570),
        ("udp", "::1", 5570),
        ("udp", "::1", 5571),
        ("udp", "127.0.0.1", 5572),
    ] {
        transfer(&h, &dir, proto, addr, port, "podman -p", &log);
    }
    // What is not forwarded is not reachable.
    let out = h.run(
        &[
            "python3",
            &script(&dir, "xfer.py"),
            "tcp",
            "127.0.0.1",
            "8081",
            "10",
        ],
        30,
    );
    assert!(!text(&out).starts_with("ok"), "port 8081 is not forwarded");
}

/// Podman's defaults: DNS to 169.254.1.1 answered by the host's resolver
/// (over UDP and TCP), 169.254.1.2 reaching the host's own address; pasta
/// gone within 2 s of the namespace file going away.
#[test]
fn podman_dns_host_address_and_netns_removal() {
    let h = Netns::host("poddns");
    allow_ping(&h);
    let dir = Scratch::new("poddns");
    h.sh(&format!("ip addr add {DNS4}/24 dev dummy0"));
    let _dns = service(&h, &dir, "dns_srv.py", &[DNS4, "53", "60", "192.0.2.1"]);
    let _host_echo = echo(&h, &dir, "tcp", HOST_IP4, 7300);
    let ns = PodmanNetns::new("poddnsg", &dir);
    let args = podman_args(&[], &[], &ns.file);
    let out = podman_run(&h, &ns, &args);
    assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
    let d = podman_daemon(&ns);
    let g: &Netns = &ns.user;
    let out = g.run(
        &[
            "sh",
            "-c",
            "dig +short +tries=2 +time=3 @169.254.1.1 example.org; \
             dig +tcp +short +tries=2 +time=3 @169.254.1.1 example.org",
        ],
        30,
    );
    let t = text(&out);
    assert_eq!(
        t.matches("192.0.2.1").count(),
        2,
        "DNS to 169.254.1.1 over UDP and TCP: {t}"
    );
    // 169.254.1.2 is the host's address (which the container shadows).
    transfer(
        g,
        &dir,
        "tcp",
        "169.254.1.2",
        7300,
        "--map-guest-addr",
        &|| String::new(),
    );
    // The gateway is not the host (--no-map-gw): nothing answers there.
    let out = g.run(
        &[
            "python3",
            &script(&dir, "xfer.py"),
            "tcp",
            GW_IP4,
            "7300",
            "10",
        ],
        30,
    );
    assert!(!text(&out).starts_with("ok"), "--no-map-gw: {}", text(&out));
    ns.remove();
    let t = d.exits_within(2.0);
    assert!(
        t.is_some(),
        "pasta still running 2 s after the namespace file went"
    );
}

/// `--map-gw`, Podman's own option, taken out of the list: no
/// `--no-map-gw` then, and the gateway address reaches the host's loopback.
#[test]
fn podman_map_gw() {
    let h = Netns::host("podgw");
    let dir = Scratch::new("podgw");
    let _e = echo(&h, &dir, "tcp", "127.0.0.1", 7310);
    let ns = PodmanNetns::new("podgwg", &dir);
    let args = podman_args(&[], &["--map-gw"], &ns.file);
    assert!(!args.iter().any(|a| a.contains("map-gw")), "{args:?}");
    let out = podman_run(&h, &ns, &args);
    assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
    let _d = podman_daemon(&ns);
    transfer(
        &ns.user,
        &dir,
        "tcp",
        GW_IP4,
        7310,
        "gateway to host loopback",
        &String::new,
    );
}

/// A host port already taken: pasta exits 1 with a message naming the
/// port before it returns, and leaves nothing running; the same for a
/// second container asking for a port the first one's pasta holds, which
/// keeps working.
#[test]
fn podman_port_in_use() {
    let h = Netns::host("podbusy");
    let dir = Scratch::new("podbusy");
    let _tcp_holder = service(&h, &dir, "hold.py", &["tcp", "0.0.0.0", "5180", "120"]);
    let _udp_holder = service(&h, &dir, "hold.py", &["udp", "::", "5181", "120"]);
    let m = |host_port, proto| PortMapping {
        host_ip: "",
        host_port,
        container_port: 80,
        range: 1,
        proto,
    };
    for (port, proto) in [(5180, "tcp"), (5181, "udp")] {
        let ns = PodmanNetns::new("podbusyg", &dir);
        let args = podman_args(&[m(port, proto)], &[], &ns.file);
        let start = Instant::now();
        let out = podman_run(&h, &ns, &args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{proto} {port} taken: {t}");
        assert!(
            t.contains(&port.to_string()),
            "the message names port {port}: {t}"
        );
        assert!(
            pids_with_arg(&s(&ns.file)).is_empty(),
            "nothing left running ({:?})",
            start.elapsed()
        );
    }
    // Two containers, one port.
    let first = PodmanNetns::new("podbusy1", &dir);
    let out = podman_run(
        &h,
        &first,
        &podman_args(&[m(5190, "tcp")], &[], &first.file),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = podman_daemon(&first);
    let second = PodmanNetns::new("podbusy2", &dir);
    let out = podman_run(
        &h,
        &second,
        &podman_args(&[m(5190, "tcp")], &[], &second.file),
    );
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "second container, port 5190: {t}"
    );
    assert!(t.contains("5190"), "the message names port 5190: {t}");
    assert!(pids_with_arg(&s(&second.file)).is_empty());
    assert!(!gone(d.pid), "the first container's pasta keeps running");
    let g: &Netns = &first.user;
    let _srv = echo(g, &dir, "tcp", "::", 80);
    transfer(
        &h,
        &dir,
        "tcp",
        "127.0.0.1",
        5190,
        "first container",
        &|| String::new(),
    );
}

/// The rootless network namespace of Podman's bridge networks: pasta with
/// `--pid FILE`, the file holding the daemon's PID when pasta returns.
#[test]
fn podman_rootless_netns_pid_file() {
    let h = Netns::host("podpid");
    let dir = Scratch::new("podpid");
    let ns = PodmanNetns::new("podpidg", &dir);
    let pidf = dir.join("rootless-netns.pid");
    let args = podman_args(&[], &["--pid", &s(&pidf)], &ns.file);
    let out = podman_run(&h, &ns, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid: u32 = std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("the PID file is written before pasta returns");
    assert_eq!(
        pids_with_arg(&s(&ns.file)),
        vec![pid],
        "the PID file names the daemon"
    );
    let d = Daemon { pid };
    assert_eq!(uid_of(pid), test_user().0);
    check_configured_now(&ns.user, "rootless netns");
    ns.remove();
    assert!(d.exits_within(2.0).is_some(), "pasta gone within 2 s");
}

// --- rootlesskit -------------------------------------------------------------------

/// rootlesskit's arguments (10.0.2.0/24: the child .100, the gateway .2,
/// DNS .3).
fn rootlesskit_args(no_map_gw: bool, ipv4_only: bool, auto: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "--stderr",
        "--ns-ifname=tap0",
        "--mtu=65520",
        "--config-net",
        "--address=10.0.2.100",
        "--netmask=24",
        "--gateway=10.0.2.2",
        "--dns-forward=10.0.2.3",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if no_map_gw {
        v.push("--no-map-gw".into());
    }
    if ipv4_only {
        v.push("--ipv4-only".into());
    }
    let mode = if auto { "auto" } else { "none" };
    v.push(format!("--tcp-ports={mode}"));
    v.push(format!("--udp-ports={mode}"));
    v
}

/// Runs pasta as rootlesskit's parent does (as the test user in the host
/// namespace, waiting for it to return) and returns the daemon.
fn rootlesskit_run(h: &Netns, args: &[String], find_by: &str) -> (Output, Daemon) {
    let mut v = vec![s(&pasta())];
    v.extend(args.iter().cloned());
    let out = h.user_run(&v, 60);
    assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
    let pids: Vec<u32> = pids_with_arg(find_by)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"--ns-ifname=tap0"))
        })
        .collect();
    assert_eq!(pids.len(), 1, "one pasta daemon: {pids:?}");
    (out, Daemon { pid: pids[0] })
}

/// What rootlesskit's child finds: tap0 with 10.0.2.100/24, MTU 65520,
/// the default route via 10.0.2.2; DNS through 10.0.2.3.
fn check_rootlesskit_child(g: &Netns, ipv4_only: bool) {
    let a = g.sh(
        "ip -o addr show dev tap0; ip -4 route show default; ip -o link show dev tap0; \
         ip -6 route show default",
    );
    for want in ["inet 10.0.2.100/24", "default via 10.0.2.2", "mtu 65520"] {
        assert!(a.contains(want), "no {want}: {a}");
    }
    let v6 = format!("inet6 {HOST_IP6}/64");
    if ipv4_only {
        assert!(!a.contains(&v6), "--ipv4-only: {a}");
    } else {
        assert!(
            a.contains(&v6) && a.contains(&format!("default via {GW_IP6}")),
            "{a}"
        );
    }
    let out = g.run(
        &[
            "dig",
            "+short",
            "+tries=2",
            "+time=3",
            "@10.0.2.3",
            "example.org",
        ],
        30,
    );
    assert!(
        text(&out).contains("192.0.2.1"),
        "DNS via 10.0.2.3: {}",
        text(&out)
    );
}

/// `--tcp-ports=auto --udp-ports=auto`: a TCP listener and a UDP socket
/// opened in the namespace after pasta returned are reachable from the
/// host's loopback within 2 s.
fn check_auto_picks_up(h: &Netns, g: &Netns, dir: &Scratch, tcp_port: u16, udp_port: u16) {
    let _t = echo(g, dir, "tcp", "0.0.0.0", tcp_port);
    let _u = echo(g, dir, "udp", "0.0.0.0", udp_port);
    let opened = Instant::now();
    let probe = format!(
        "import socket, sys, time\n\
         end = time.time() + 2.0\n\
         ok = set()\n\
         while time.time() < end and len(ok) < 2:\n\
         \x20   try:\n\
         \x20       c = socket.create_connection(('127.0.0.1', {tcp_port}), timeout=0.2)\n\
         \x20       c.sendall(b'x'); c.settimeout(0.5)\n\
         \x20       if c.recv(1) == b'x': ok.add('tcp')\n\
         \x20       c.close()\n\
         \x20   except OSError: pass\n\
         \x20   u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(0.1)\n\
         \x20   try:\n\
         \x20       u.sendto(b'y', ('127.0.0.1', {udp_port}))\n\
         \x20       if u.recv(16) == b'y': ok.add('udp')\n\
         \x20   except OSError: pass\n\
         \x20   u.close(); time.sleep(0.05)\n\
         print(sorted(ok))\n"
    );
    let out = h.run(&["python3", "-c", &probe], 20);
    let t = text(&out);
    assert!(
        t.contains("['tcp', 'udp']"),
        "auto forwarding after {:?}: {t}",
        opened.elapsed()
    );
}

/// rootlesskit's PID form, as Docker's rootless mode runs it
/// (`--disable-host-loopback`: `--no-map-gw`), with automatic forwarding.
#[test]
fn rootlesskit_pid_form() {
    let h = Netns::host("rlkpid");
    let dir = Scratch::new("rlkpid");
    h.sh(&format!("ip addr add {DNS4}/24 dev dummy0"));
    let _dns = service(&h, &dir, "dns_srv.py", &[DNS4, "53", "60", "192.0.2.1"]);
    let child = UserNetns::new("rlkpidc");
    let mut args = rootlesskit_args(true, false, true);
    // Added once `pasta --host-lo-to-ns-lo --version` succeeded.
    args.push("--host-lo-to-ns-lo".into());
    let pid = child.pid().to_string();
    args.push(pid.clone());
    let (out, d) = rootlesskit_run(&h, &args, &pid);
    let t = text(&out);
    assert!(
        t.contains("--stderr") && t.contains("dropped soon"),
        "deprecation: {t}"
    );
    check_rootlesskit_child(&child, false);
    check_auto_picks_up(&h, &child, &dir, 7400, 7401);
    let _srv = echo(&h, &dir, "tcp", HOST_IP4, 7402);
    transfer(
        &child,
        &dir,
        "tcp",
        HOST_IP4,
        7402,
        "child to host",
        &|| String::new(),
    );
    // The child going away ends pasta.
    drop(child);
    assert!(d.exits_within(2.0).is_some(), "pasta gone with its child");
}

/// rootlesskit's `--userns --netns` form (detached network namespace),
/// with `--ipv4-only` and automatic forwarding.
#[test]
fn rootlesskit_userns_netns_ipv4_only() {
    let h = Netns::host("rlkns");
    let dir = Scratch::new("rlkns");
    h.sh(&format!("ip addr add {DNS4}/24 dev dummy0"));
    let _dns = service(&h, &dir, "dns_srv.py", &[DNS4, "53", "60", "192.0.2.1"]);
    let child = PodmanNetns::new("rlknsc", &dir);
    let mut args = rootlesskit_args(false, true, true);
    args.push(format!("--userns=/proc/{}/ns/user", child.user.pid()));
    args.push(format!("--netns={}", child.file.display()));
    let (_out, d) = rootlesskit_run(&h, &args, &format!("--netns={}", child.file.display()));
    let g: &Netns = &child.user;
    check_rootlesskit_child(g, true);
    check_auto_picks_up(&h, g, &dir, 7410, 7411);
    child.remove();
    assert!(
        d.exits_within(2.0).is_some(),
        "pasta gone with the namespace"
    );
}

/// rootlesskit's feature probes.
#[test]
fn rootlesskit_version_probes() {
    for args in [&["--version"][..], &["--host-lo-to-ns-lo", "--version"]] {
        let out = run_timeout(Command::new(pasta()).args(args), 10);
        assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
        let first = String::from_utf8_lossy(&out.stdout);
        let first = first.lines().next().unwrap_or_default();
        assert!(first.starts_with("pasta "), "{args:?}: {first}");
    }
}

/// udhcpc on `ifname` in `g`, applying its lease; the lease's variables.
fn udhcpc(g: &Netns, ifname: &str, dir: &Scratch, log: &dyn Fn() -> String) -> String {
    let script = dir.join("udhcpc-apply.sh");
    let lease = dir.join("lease.env");
    let _ = std::fs::remove_file(&lease);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew)\n  env > {l}\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  [ -n \"$mtu\" ] && ip link set \"$interface\" mtu \"$mtu\"\n  ip route add default via \"$router\" dev \"$interface\" ;;\nesac\nexit 0\n",
            l = lease.display()
        ),
    )
    .expect("script");
    let _ = Command::new("chmod").arg("755").arg(&script).status();
    let out = g.run(
        &[
            "busybox",
            "udhcpc",
            "-i",
            ifname,
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
            "-O",
            "mtu",
            "-s",
            &s(&script),
        ],
        30,
    );
    std::fs::read_to_string(&lease)
        .unwrap_or_else(|_| panic!("no DHCP lease: {}\n{}", text(&out), log()))
}

// --- QEMU ----------------------------------------------------------------------------

/// QEMU's `-netdev passt`: passt spawned with QEMU's flags and one end of a
/// socketpair on descriptor 3, the PID file created empty beforehand.
/// passt returns, the PID file names the daemon; DHCP configures the guest,
/// 10 MiB go each way to the host through the gateway and through a `-t`
/// forward; passt exits when QEMU's end closes.
#[test]
fn qemu_netdev_passt() {
    use std::os::unix::process::CommandExt;
    let h = Netns::host("qemu");
    let g = Netns::new("qemug");
    let dir = Scratch::new("qemu");
    // g_file_open_tmp("passt-XXXXXX.pid"): created, empty, the user's.
    let pidf = dir.join("passt-Ab12Cd.pid");
    std::fs::write(&pidf, b"").expect("pid file");
    let (uid, gid) = test_user();
    std::os::unix::fs::chown(&pidf, Some(uid), Some(gid)).expect("chown");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut v: Vec<String> = vec![s(&passt())];
    v.extend(
        [
            "--quiet",
            "--mtu",
            "1500",
            "--dns",
            "10.77.0.53",
            "--search",
            "a.test b.test",
            "--tcp-ports",
            "5200,5201",
            "--udp-ports",
            "5202",
            "--pid",
        ]
        .iter()
        .map(|a| a.to_string()),
    );
    v.push(s(&pidf));
    v.extend(["--fd".into(), "3".into()]);
    let mut cmd = h.user_cmd(&v);
    let t = theirs.as_raw_fd();
    // SAFETY: descriptor calls in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let t = libc::fcntl(t, libc::F_DUPFD_CLOEXEC, 100);
            if t < 0 || libc::dup2(t, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_timeout(&mut cmd, 60);
    drop(theirs);
    assert_eq!(out.status.code(), Some(0), "passt {v:?}: {}", text(&out));
    assert!(text(&out).trim().is_empty(), "--quiet: {}", text(&out));
    let pid: u32 = std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("PID file written before passt returned");
    let d = Daemon { pid };
    assert!(!gone(pid), "passt runs");
    assert_eq!(uid_of(pid), uid);
    let relay = TapRelay::start(&g, "qtap0", ours);
    let log = || format!("passt PID {pid}");
    let lease = udhcpc(&g, "qtap0", &dir, &log);
    assert_eq!(
        env_value(&lease, "ip").as_deref(),
        Some(HOST_IP4),
        "{lease}"
    );
    assert_eq!(
        env_value(&lease, "router").as_deref(),
        Some(GW_IP4),
        "{lease}"
    );
    assert_eq!(env_value(&lease, "mtu").as_deref(), Some("1500"), "{lease}");
    assert_eq!(
        env_value(&lease, "dns").as_deref(),
        Some("10.77.0.53"),
        "{lease}"
    );
    let _host = echo(&h, &dir, "tcp", "::", 7500);
    transfer(
        &g,
        &dir,
        "tcp",
        GW_IP4,
        7500,
        "guest to host loopback",
        &log,
    );
    let _guest = echo(&g, &dir, "tcp", "0.0.0.0", 5201);
    transfer(&h, &dir, "tcp", "127.0.0.1", 5201, "-t 5201", &log);
    // QEMU's end closes: passt (one-off through --fd) exits.
    drop(relay);
    assert!(
        d.exits_within(5.0).is_some(),
        "passt exits when QEMU closes"
    );
}

// --- libvirt -----------------------------------------------------------------------

/// libvirt's passt back-end: `--one-off --socket DIR/DOM-ALIAS.socket --pid
/// FILE` and the domain's settings, port forwards in its grammar; qemu
/// connects to the socket. The guest gets its address and MTU by DHCP;
/// forwards work, with translated ranges, bound to an address and an
/// interface, exclusions; passt exits when qemu disconnects.
#[test]
fn libvirt_domain_interface() {
    let h = Netns::host("virt");
    let g = Netns::new("virtg");
    let dir = Scratch::new("virt");
    let sock_dir = dir.join("passt");
    std::fs::create_dir_all(&sock_dir).expect("dir");
    let (uid, gid) = test_user();
    std::os::unix::fs::chown(&sock_dir, Some(uid), Some(gid)).expect("chown");
    let sock = sock_dir.join("1-prs-dom-net0.socket");
    let pidf = sock_dir.join("1-prs-dom-net0-passt.pid");
    let logf = dir.join("passt.log");
    let mut v: Vec<String> = vec![s(&passt())];
    v.extend(
        [
            "--one-off",
            "--socket",
            &s(&sock),
            "--pid",
            &s(&pidf),
            "--mtu",
            "1500",
            "--interface",
            "dummy0",
            "--log-file",
            &s(&logf),
            "--hostname",
            "prs-dom",
            "--fqdn",
            "prs-dom.example.org",
            "--address",
            "10.77.0.50",
            "--netmask",
            "24",
            "--address",
            "fd77::50",
            "--tcp-ports",
            "5300-5301:6300-6301",
            "--tcp-ports",
            "127.0.0.1/5302:6302",
            "--tcp-ports",
            "::1%lo/5303:6303",
            "--udp-ports",
            "~1-5303,~5306-65535",
        ]
        .iter()
        .map(|a| a.to_string()),
    );
    let out = h.user_run(&v, 60);
    assert_eq!(out.status.code(), Some(0), "passt {v:?}: {}", text(&out));
    let pid: u32 = std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("PID file written before passt returned");
    let d = Daemon { pid };
    let log = || std::fs::read_to_string(&logf).unwrap_or_default();
    let udp = bound(&h, "udp");
    for port in [5304, 5305] {
        assert!(has_port(&udp, "*", port), "UDP {port}: {udp:?}");
    }
    assert!(
        !has_port(&udp, "*", 5303) && !has_port(&udp, "*", 5306),
        "{udp:?}"
    );
    let stream = eventually(10, || UnixStream::connect(&sock).ok()).expect("connect");
    let relay = TapRelay::start(&g, "vnet0", stream);
    let lease = udhcpc(&g, "vnet0", &dir, &log);
    assert_eq!(
        env_value(&lease, "ip").as_deref(),
        Some("10.77.0.50"),
        "{lease}"
    );
    assert_eq!(env_value(&lease, "mask").as_deref(), Some("24"), "{lease}");
    assert_eq!(env_value(&lease, "mtu").as_deref(), Some("1500"), "{lease}");
    // The IPv6 address DHCPv6 would give (--address fd77::50).
    g.sh("ip -6 addr add fd77::50/64 dev vnet0 nodad");
    let _a = echo(&g, &dir, "tcp", "::", 6301);
    let _b = echo(&g, &dir, "tcp", "::", 6302);
    let _c = echo(&g, &dir, "tcp", "::", 6303);
    let _u = echo(&g, &dir, "udp", "0.0.0.0", 5305);
    transfer(&h, &dir, "tcp", HOST_IP4, 5301, "5300-5301:6300-6301", &log);
    transfer(
        &h,
        &dir,
        "tcp",
        "127.0.0.1",
        5302,
        "127.0.0.1/5302:6302",
        &log,
    );
    transfer(&h, &dir, "tcp", "::1", 5303, "::1%lo/5303:6303", &log);
    transfer(
        &h,
        &dir,
        "udp",
        "127.0.0.1",
        5305,
        "~1-5303,~5306-65535",
        &log,
    );
    // qemu goes: --one-off ends passt.
    drop(relay);
    assert!(
        d.exits_within(5.0).is_some(),
        "passt exits with --one-off: {}",
        log()
    );
    assert!(!log().is_empty(), "the log file has passt's messages");
}

// --- other ways of starting ------------------------------------------------------

/// inetd style (`--fd 0`, as s6-ipcserver starts it): the connected socket
/// is standard input; frames flow over it and passt exits when the other
/// end closes.
#[test]
fn passt_fd_zero_inetd_style() {
    use std::os::unix::process::CommandExt;
    let h = Netns::host("fd0");
    let dir = Scratch::new("fd0");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut cmd = h.user_cmd(&[s(&passt()), "-f".into(), "--fd".into(), "0".into()]);
    let t = theirs.as_raw_fd();
    // SAFETY: descriptor calls in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(t, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Proc::spawn(cmd, "passt", dir.join("passt.log"));
    drop(theirs);
    let mut c = StreamClient::from_stream(ours);
    let gw = [10, 77, 0, 1];
    c.send_raw(&StreamClient::encode(&[arp_request(gw, 60)]));
    let got = c.collect(10, 1, |f| is_arp_reply_for(f, gw));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, gw)),
        "ARP over standard input: {}",
        p.output()
    );
    drop(c);
    assert_eq!(p.wait_exit(10).code(), Some(0), "{}", p.output());
}

/// `-H NAME`: the hostname of pasta's command's namespace.
#[test]
fn pasta_hostname_option() {
    let h = Netns::host("hname");
    let out = h.user_run(
        &[
            s(&pasta()),
            "-H".into(),
            "prs-box".into(),
            "--".into(),
            "hostname".into(),
        ],
        30,
    );
    assert_eq!(ok_text(&out).trim(), "prs-box");
}

// --- DNS -----------------------------------------------------------------------------

/// Podman's defaults with the host's resolver on its loopback
/// (systemd-resolved's 127.0.0.53): `--dns-forward 169.254.1.1` still
/// reaches it although `--no-map-gw` turns the general mapping off.
#[test]
fn podman_dns_to_resolver_on_host_loopback() {
    let h = Netns::host("podstub");
    h.resolv("nameserver 127.0.0.53\n");
    let dir = Scratch::new("podstub");
    let _dns = service(
        &h,
        &dir,
        "dns_srv.py",
        &["127.0.0.53", "53", "60", "192.0.2.1"],
    );
    let ns = PodmanNetns::new("podstubg", &dir);
    let args = podman_args(&[], &[], &ns.file);
    let out = podman_run(&h, &ns, &args);
    assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
    let _d = podman_daemon(&ns);
    let g: &Netns = &ns.user;
    let out = g.run(
        &[
            "sh",
            "-c",
            "dig +short +tries=2 +time=3 @169.254.1.1 example.org; \
             dig +tcp +short +tries=2 +time=3 @169.254.1.1 example.org",
        ],
        30,
    );
    let t = text(&out);
    assert_eq!(t.matches("192.0.2.1").count(), 2, "via 169.254.1.1: {t}");
}

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
    let out = r.h.user_run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "-t".into(),
            "none".into(),
            "-u".into(),
            "none".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!(
                "dig +short +tries=2 +time=3 @{GW_IP4} example.org; \
                 dig +tcp +short +tries=2 +time=3 @{GW_IP4} example.org; \
                 python3 {} tcp {GW_IP4} 7600 1000",
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
    let out = r.h.user_run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "-t".into(),
            "none".into(),
            "-u".into(),
            "none".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!(
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

// --- diagnostics -------------------------------------------------------------------

/// `--stats SECS`: lines of event counts on standard error while events
/// happen, under a heading; refused in the background.
#[test]
fn stats_print_event_counts() {
    let h = Netns::host("stats");
    let dir = Scratch::new("stats");
    let _e = echo(&h, &dir, "tcp", "::", 7800);
    let xfer = script(&dir, "xfer.py");
    let out = h.user_run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--stats".into(),
            "1".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!(
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
