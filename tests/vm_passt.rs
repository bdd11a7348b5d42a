//! passt behind a real VM: the distribution's kernel with a virtio-net NIC,
//! a busybox initramfs, qemu (KVM where it works, TCG otherwise; see
//! `tests/vm/mod.rs`). passt runs as the unprivileged test user in a host
//! namespace of the test's own; the host-side peers listen there too.
//!
//! One boot covers every check of stream mode (the guest half is
//! `tests/vm/checks.sh`): DHCP with udhcpc, SLAAC, DHCPv6 with dhclient,
//! ping of the gateway in both families, 256 MiB of TCP each way over IPv4
//! and 32 MiB each way over IPv6 with SHA-256 compared, iperf3 each way,
//! and datagrams of many sizes both ways in both families.
//!
//! `vm_bench` (ignored: a benchmark, not a test) prints iperf3 throughput and
//! passt's CPU seconds per GB for the numbers in docs/performance.md.

mod ns_support;
mod vm;

use ns_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vm::{field, Nic, Vm, VmSpec};

fn s(p: &Path) -> String {
    p.display().to_string()
}

const BIG: usize = 256 << 20;
const SMALL: usize = 32 << 20;
const TCP_IN4: u16 = 5001;
const UDP_IN4: u16 = 5002;
const TCP_IN6: u16 = 5003;
const UDP_IN6: u16 = 5004;
const TCP_OUT4: u16 = 6001;
const UDP_OUT4: u16 = 6002;
const TCP_OUT6: u16 = 6003;
const UDP_OUT6: u16 = 6004;
const IPERF_PORT: u16 = 6201;

/// Whether the guest reaches the router its RAs name (passt's link-local
/// address, the host interface's own): not yet, the driver sends to
/// link-local host-side destinations without a scope id (EINVAL). Set to
/// true when it does, and the ping of it becomes a check.
const LL_ROUTER_REACHABLE: bool = false;

/// Datagram sizes for an MTU: all fit one frame (passt does not reassemble
/// fragments), from 1 byte to the largest IPv6 payload.
fn udp_sizes(mtu: usize) -> Vec<usize> {
    let max = mtu - 48;
    let mut v: Vec<usize> = [
        1, 2, 63, 100, 512, 1000, 1232, 1400, 1452, 4000, 8192, 9000, 16000, 32768, 60000,
    ]
    .into_iter()
    .filter(|&n| n < max)
    .collect();
    v.push(max);
    v
}

/// The script's variables, then the checks.
fn checks_script(udp: &[usize], iperf_secs: u32) -> String {
    let sizes: Vec<String> = udp.iter().map(|n| n.to_string()).collect();
    let vars = format!(
        "GW6={GW_IP6} BIG_BYTES={BIG} SMALL_BYTES={SMALL}\n\
         TCP_IN4={TCP_IN4} TCP_IN6={TCP_IN6} UDP_IN4={UDP_IN4} UDP_IN6={UDP_IN6}\n\
         TCP_OUT4={TCP_OUT4} TCP_OUT6={TCP_OUT6} UDP_OUT4={UDP_OUT4} UDP_OUT6={UDP_OUT6}\n\
         IPERF_PORT={IPERF_PORT} IPERF_SECS={iperf_secs}\n\
         UDP_SIZES='{}' UDP_IN_BYTES={}\n",
        sizes.join(" "),
        udp.iter().sum::<usize>()
    );
    let body = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/checks.sh"))
        .expect("tests/vm/checks.sh");
    vars + &body
}

fn sha256(path: &Path) -> String {
    let out = run_timeout(Command::new("sha256sum").arg(path), 120);
    ok_text(&out)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

fn random_file(path: &Path, len: usize) {
    let out = run_timeout(
        Command::new("sh").args([
            "-ec",
            &format!("head -c {len} /dev/urandom > '{}'", path.display()),
        ]),
        120,
    );
    ok_text(&out);
}

/// The first `n` bytes of each `sizes`, concatenated: what the UDP checks
/// send, one datagram each.
fn datagrams(big: &Path, sizes: &[usize]) -> Vec<u8> {
    let max = *sizes.iter().max().unwrap_or(&0);
    let mut head = vec![0u8; max];
    use std::io::Read;
    std::fs::File::open(big)
        .expect("big file")
        .read_exact(&mut head)
        .expect("read big file");
    sizes.iter().flat_map(|&n| head[..n].to_vec()).collect()
}

fn sha256_bytes(b: &[u8], dir: &Scratch, name: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, b).expect("write");
    sha256(&p)
}

/// A directory the test user may write into (passt's socket, PID file, pcap).
fn user_dir(dir: &Scratch) -> PathBuf {
    let d = dir.join("passt");
    std::fs::create_dir_all(&d).expect("passt dir");
    let (uid, gid) = test_user();
    std::os::unix::fs::chown(&d, Some(uid), Some(gid)).expect("chown");
    d
}

/// passt as the test user in `h`, serving qemu on its socket. With
/// `PASST_VM_PCAP=1` it captures to `passt.pcap` in the test's directory;
/// `PASST_VM_DEBUG=1` adds `-d`. Its log is printed when the test fails.
fn start_passt(h: &Netns, dir: &Scratch, extra: &[&str]) -> (Proc, PathBuf, u32) {
    let d = user_dir(dir);
    let sock = d.join("passt.socket");
    let pidf = d.join("passt.pid");
    let mut args: Vec<String> = as_test_user();
    args.extend([
        s(&bin("passt")),
        "-f".into(),
        "-s".into(),
        s(&sock),
        "-P".into(),
        s(&pidf),
    ]);
    args.extend(extra.iter().map(|a| a.to_string()));
    if std::env::var_os("PASST_VM_DEBUG").is_some() {
        args.push("-d".into());
    }
    if std::env::var_os("PASST_VM_PCAP").is_some() {
        args.extend(["-p".into(), s(&d.join("passt.pcap"))]);
    }
    let mut p = Proc::spawn(h.cmd(&args), "passt", dir.join("passt.log"));
    wait_file(&pidf, 20, &mut p);
    let pid: u32 = std::fs::read_to_string(&pidf)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    (p, sock, pid)
}

/// A host-side peer in `h`.
fn peer(h: &Netns, dir: &Scratch, name: &str, args: &[String]) -> Proc {
    Proc::spawn(h.cmd(args), name, dir.join(&format!("{name}.log")))
}

fn socat_recv(h: &Netns, dir: &Scratch, name: &str, listen: &str, out: &Path) -> Proc {
    peer(
        h,
        dir,
        name,
        &[
            "socat".into(),
            "-b".into(),
            "65536".into(),
            "-u".into(),
            listen.into(),
            format!("CREATE:{}", out.display()),
        ],
    )
}

/// Waits for a host-side receiver to exit (it does after one connection).
fn wait_receiver(p: &mut Proc, secs: u64) {
    let st = p.wait_exit(secs);
    assert!(st.success(), "{}: {st}: {}", p.what, p.output());
}

/// Polls until `path` holds `want` (bounded).
fn wait_content(path: &Path, want: &[u8], secs: u64) -> Vec<u8> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        got = std::fs::read(path).unwrap_or_default();
        if got.len() >= want.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    got
}

fn mark_field(vm: &mut Vm, key: &str, f: &str) -> String {
    let v = vm.wait_mark(key, 600);
    field(&v, f).unwrap_or_else(|| panic!("@@{key} {v}: no {f}="))
}

/// passt in stream mode behind a VM: addresses, ping, TCP, iperf3 and UDP,
/// both ways and both families, in one boot.
#[test]
fn passt_stream_vm() {
    let started = Instant::now();
    let h = Netns::host("vm");
    // ICMP echo goes through ping sockets, which the test user may open.
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
    let dir = Scratch::new("vm");
    let big = dir.join("big");
    random_file(&big, BIG);
    let big_sha = sha256(&big);
    let small = dir.join("small");
    std::fs::write(&small, &std::fs::read(&big).expect("big")[..SMALL]).expect("small");
    let small_sha = sha256(&small);
    let udp = udp_sizes(65520);
    let dgrams = datagrams(&big, &udp);
    let dgrams_sha = sha256_bytes(&dgrams, &dir, "dgrams");

    // Host-side peers behind the gateway (passt maps it to the host's
    // loopback): one connection or one stream of datagrams each.
    let out4 = dir.join("out4");
    let out6 = dir.join("out6");
    let uout4 = dir.join("udp_out4");
    let uout6 = dir.join("udp_out6");
    let mut r_out4 = socat_recv(
        &h,
        &dir,
        "tcp_out4",
        &format!("TCP4-LISTEN:{TCP_OUT4},bind=127.0.0.1"),
        &out4,
    );
    let mut r_out6 = socat_recv(
        &h,
        &dir,
        "tcp_out6",
        &format!("TCP6-LISTEN:{TCP_OUT6},bind=[::1]"),
        &out6,
    );
    let _r_uout4 = socat_recv(
        &h,
        &dir,
        "udp_out4",
        &format!("UDP4-RECV:{UDP_OUT4},bind=127.0.0.1"),
        &uout4,
    );
    let _r_uout6 = socat_recv(
        &h,
        &dir,
        "udp_out6",
        &format!("UDP6-RECV:{UDP_OUT6},bind=[::1]"),
        &uout6,
    );
    let _iperf = peer(
        &h,
        &dir,
        "iperf3",
        &[
            "iperf3".into(),
            "-s".into(),
            "-p".into(),
            IPERF_PORT.to_string(),
        ],
    );

    let ports_t = format!("{TCP_IN4},{TCP_IN6}");
    let ports_u = format!("{UDP_IN4},{UDP_IN6}");
    let (mut passt, sock, _pid) = start_passt(&h, &dir, &["-t", &ports_t, "-u", &ports_u]);

    let spec = VmSpec::new(Nic::Stream(sock), checks_script(&udp, 3));
    let mut vm = Vm::start(&h, &dir, &spec);

    let boot = vm.wait_mark("boot", 300);
    let lease = vm.wait_mark("dhcp4", 120);
    assert_eq!(field(&lease, "ip").as_deref(), Some(HOST_IP4), "{lease}");
    assert_eq!(field(&lease, "router").as_deref(), Some(GW_IP4), "{lease}");
    assert_eq!(field(&lease, "dns").as_deref(), Some(DNS4), "{lease}");
    assert_eq!(field(&lease, "mtu").as_deref(), Some("65520"), "{lease}");
    assert_eq!(field(&lease, "search").as_deref(), Some(SEARCH), "{lease}");
    assert_eq!(mark_field(&mut vm, "link", "mtu"), "65520");
    let slaac = vm.wait_mark("slaac", 120);
    let addr = field(&slaac, "addr").unwrap_or_default();
    assert!(
        addr.starts_with("fd77::") && addr.ends_with("/64"),
        "{slaac}"
    );
    assert!(
        field(&slaac, "gw6")
            .unwrap_or_default()
            .starts_with("fe80::"),
        "{slaac}"
    );
    let d6 = vm.wait_mark("dhcp6", 120);
    assert_eq!(field(&d6, "addr").as_deref(), Some(HOST_IP6), "{d6}");
    assert_eq!(mark_field(&mut vm, "ping4", "replies"), "3");
    assert_eq!(mark_field(&mut vm, "ping6", "replies"), "3");
    let router = mark_field(&mut vm, "ping6_router", "replies");
    if LL_ROUTER_REACHABLE {
        assert_eq!(router, "3", "ping of the RAs' link-local router");
    } else if router != "3" {
        eprintln!("vm: known issue: the RAs' link-local router answered {router} of 3 pings");
    }
    let t_addr = started.elapsed();

    // TCP, host → guest through the forwarded port, then guest → host.
    vm.wait_mark("listen_tcp4", 120);
    let t0 = Instant::now();
    let send = run_timeout(
        &mut h.cmd(&[
            "socat".into(),
            "-u".into(),
            format!("OPEN:{}", big.display()),
            format!("TCP4:127.0.0.1:{TCP_IN4}"),
        ]),
        600,
    );
    ok_text(&send);
    let got = vm.wait_mark("tcp_in4", 600);
    let t_in4 = t0.elapsed();
    assert_eq!(field(&got, "bytes"), Some(BIG.to_string()), "{got}");
    assert_eq!(field(&got, "sha"), Some(big_sha.clone()), "{got}");
    let t0 = Instant::now();
    vm.wait_mark("tcp_out4", 600);
    wait_receiver(&mut r_out4, 60);
    let t_out4 = t0.elapsed();
    assert_eq!(
        std::fs::metadata(&out4).map(|m| m.len() as usize).ok(),
        Some(BIG)
    );
    assert_eq!(sha256(&out4), big_sha, "guest → host over IPv4");

    vm.wait_mark("listen_tcp6", 120);
    let send = run_timeout(
        &mut h.cmd(&[
            "socat".into(),
            "-u".into(),
            format!("OPEN:{}", small.display()),
            format!("TCP6:[::1]:{TCP_IN6}"),
        ]),
        300,
    );
    ok_text(&send);
    let got = vm.wait_mark("tcp_in6", 300);
    assert_eq!(field(&got, "bytes"), Some(SMALL.to_string()), "{got}");
    assert_eq!(field(&got, "sha"), Some(small_sha.clone()), "{got}");
    vm.wait_mark("tcp_out6", 300);
    wait_receiver(&mut r_out6, 60);
    assert_eq!(sha256(&out6), small_sha, "guest → host over IPv6");

    let iperf_out = vm.wait_mark("iperf_out", 120);
    let iperf_in = vm.wait_mark("iperf_in", 120);
    assert!(iperf_out.contains("Mbits/sec"), "{iperf_out}");
    assert!(iperf_in.contains("Mbits/sec"), "{iperf_in}");

    // UDP, guest → host: every datagram, in order, intact.
    vm.wait_mark("udp_out4", 120);
    vm.wait_mark("udp_out6", 120);
    for (f, fam) in [(&uout4, "IPv4"), (&uout6, "IPv6")] {
        let got = wait_content(f, &dgrams, 10);
        assert!(
            got == dgrams,
            "UDP guest → host over {fam}: {} of {} bytes, or different",
            got.len(),
            dgrams.len()
        );
    }
    // UDP, host → guest through the forwarded ports.
    vm.wait_mark("listen_udp", 120);
    for (i, n) in udp.iter().enumerate() {
        let f = dir.join(&format!("dg{i}"));
        std::fs::write(&f, &dgrams_prefix(&dgrams, &udp, i)[..*n]).expect("datagram");
        for dst in [
            format!("UDP4-SENDTO:127.0.0.1:{UDP_IN4}"),
            format!("UDP6-SENDTO:[::1]:{UDP_IN6}"),
        ] {
            let out = h.run(
                &[
                    "socat".into(),
                    "-b".into(),
                    "65536".into(),
                    "-u".into(),
                    format!("OPEN:{}", f.display()),
                    dst,
                ],
                20,
            );
            ok_text(&out);
        }
    }
    for key in ["udp_in4", "udp_in6"] {
        let got = vm.wait_mark(key, 120);
        assert_eq!(
            field(&got, "bytes"),
            Some(dgrams.len().to_string()),
            "{key}: {got}"
        );
        assert_eq!(field(&got, "sha"), Some(dgrams_sha.clone()), "{key}: {got}");
    }

    vm.wait_exit();
    passt.assert_running();
    eprintln!(
        "vm: {:?}; boot {boot} s (guest clock); addresses and ping after {:.0} s; \
         256 MiB host → guest {:.1} s, guest → host {:.1} s; iperf3 guest → host: {}; \
         host → guest: {}; total {:.0} s",
        vm.accel,
        t_addr.as_secs_f64(),
        t_in4.as_secs_f64(),
        t_out4.as_secs_f64(),
        iperf_out.trim(),
        iperf_in.trim(),
        started.elapsed().as_secs_f64()
    );
}

/// The bytes of datagram `i` (of `sizes`) inside their concatenation.
fn dgrams_prefix<'a>(all: &'a [u8], sizes: &[usize], i: usize) -> &'a [u8] {
    let start: usize = sizes[..i].iter().sum();
    &all[start..start + sizes[i]]
}
