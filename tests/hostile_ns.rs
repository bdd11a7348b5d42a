//! A stuck or hostile guest, end to end through `pasta` run as the
//! unprivileged test user with the sandbox on: a guest that stops reading
//! while a host peer sends, a translator short of descriptors under a burst
//! of connections.
//!
//! Each test makes a "host" namespace (see `ns_support.rs`) and a guest
//! namespace owned by a user namespace of the test user; pasta runs in the
//! host namespace and joins the guest's. The test's sockets are made by
//! threads that enter either namespace, so both ends of a connection are in
//! this process and every byte is checked. Host peers connect to the host's
//! own (non-loopback) address, so connections go through the tap device, not
//! the loopback splice. CPU use is read from `/proc/PID/stat` (user plus
//! system time) over a window where the translator has nothing to do but
//! wait: a busy loop shows as a large share of it.

mod ns_support;
mod pasta_support;
mod relay_support;
mod stream_support;

use ns_support::*;
use pasta_support::{net_dev, open_fds, Pasta, Ready};
use relay_support::TapRelay;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use stream_support::*;

/// The guest's network namespace: a container's (pasta), owned by a user
/// namespace of the test user, or a VM's stand-in (passt), a namespace
/// whose tap device the test relays to passt's socket.
enum Guest {
    Container(UserNetns),
    Vm(Netns),
}

impl std::ops::Deref for Guest {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        match self {
            Guest::Container(u) => u,
            Guest::Vm(n) => n,
        }
    }
}

/// A host namespace, a guest namespace, and pasta or passt connecting them.
struct Setup {
    // Dropped in order: the relay before the translator it talks to.
    relay: Option<TapRelay>,
    p: Proc,
    g: Guest,
    h: Netns,
    /// The translator's own PID (from its PID file).
    pid: u32,
    _dir: Scratch,
}

impl Setup {
    /// pasta with `--config-net` and `extra` options, its command line behind
    /// `prefix` (run as root before the switch to the test user, such as
    /// `prlimit`); returns once the guest has its IPv4 address and route.
    fn pasta(tag: &str, prefix: &[&str], extra: &[&str]) -> Setup {
        let t = Pasta::start_with(tag, prefix, extra, Ready::V4);
        let pid = t.pid();
        let Pasta { p, g, h, dir, .. } = t;
        Setup {
            relay: None,
            h,
            g: Guest::Container(g),
            p,
            pid,
            _dir: dir,
        }
    }

    /// passt with `extra` options, and a guest namespace whose tap device
    /// `tap0` is relayed to passt's socket as qemu relays a VM's interface,
    /// configured as passt's DHCP would (the host's address, its gateway,
    /// MTU 65520).
    fn passt(tag: &str, extra: &[&str]) -> Setup {
        let h = Netns::host(tag);
        let g = Netns::new(&format!("{tag}g"));
        let dir = Scratch::new(tag);
        let pidf = dir.join("passt.pid");
        let sock = dir.join("passt.socket");
        let p = h.start_passt(&sock, &pidf, dir.join("passt.log"), extra);
        let pid = read_pid(&pidf);
        let stream = eventually(10, || UnixStream::connect(&sock).ok()).expect("passt's socket");
        let relay = TapRelay::start(&g, "tap0", stream);
        g.sh(&format!(
            "ip link set tap0 mtu 65520
             ip addr add {HOST_IP4}/24 dev tap0
             ip route add default via {GW_IP4} dev tap0"
        ));
        Setup {
            relay: Some(relay),
            h,
            g: Guest::Vm(g),
            p,
            pid,
            _dir: dir,
        }
    }

    fn connect_host(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        in_ns(&self.h, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        })
    }

    /// The translator's CPU time so far (user + system), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid)
    }

    /// Ends the translator with SIGTERM and returns its count of drops for `reason`
    /// (a `DropReason` name) from the summary it logs with `-d` as it exits.
    fn stop_for_counters(&mut self, reason: &str) -> u64 {
        sigterm(self.pid);
        self.p.wait_exit(10);
        drop_count(&self.p.output(), reason)
            .unwrap_or_else(|| panic!("no counters in the log: {}", self.p.output()))
    }

    /// Open descriptors of the translator.
    fn fds(&self) -> usize {
        open_fds(self.pid)
    }
}

/// The count of drops for `reason` in the summary line a translator logs
/// with `-d` as it exits ("...; dropped: flow_quota 1416, tcp_no_flow 3"),
/// 0 if the reason is not listed; `None` without a summary.
fn drop_count(log: &str, reason: &str) -> Option<u64> {
    let list = log
        .lines()
        .rev()
        .find_map(|l| l.split("; dropped: ").nth(1))?;
    Some(
        list.split(", ")
            .filter_map(|e| e.trim().split_once(' '))
            .find(|(r, _)| *r == reason)
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0),
    )
}

/// Share of one CPU that `pid` used while `f` ran.
fn cpu_share_during(t: &Setup, f: impl FnOnce()) -> f64 {
    let (c0, t0) = (t.cpu_ticks(), Instant::now());
    f();
    let (c1, dt) = (t.cpu_ticks(), t0.elapsed().as_secs_f64());
    (c1 - c0) as f64 / ticks_per_sec() as f64 / dt
}

fn host4(port: u16) -> SocketAddr {
    SocketAddr::from((HOST_IP4.parse::<Ipv4Addr>().unwrap(), port))
}

/// The byte at stream offset `i` (a pattern that no buffer size lines up with).
fn pat(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29;
    (x ^ (i / 4093)) as u8
}

fn send_pattern(w: &mut impl Write, total: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0u64;
    while off < total {
        let n = (total - off).min(buf.len() as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pat(off + k as u64);
        }
        w.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Reads up to `want` bytes (or to end of stream), checking each against
/// the pattern from `*off`.
fn check_pattern(r: &mut impl Read, off: &mut u64, want: u64) -> Result<(), String> {
    let mut buf = vec![0u8; 64 << 10];
    let end = off.saturating_add(want);
    while *off < end {
        let n = ((end - *off).min(buf.len() as u64)) as usize;
        let n = match r.read(&mut buf[..n]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read error after {off} bytes: {e}")),
        };
        if let Some(k) = (0..n).find(|&k| buf[k] != pat(*off + k as u64)) {
            return Err(format!("byte {} differs", *off + k as u64));
        }
        *off += n as u64;
    }
    Ok(())
}

// --- a guest that stops reading ------------------------------------------------

/// A host peer sends 16 MiB to a guest that stops reading for 20 s after the
/// first 2 MiB: the guest's window closes, pasta waits on it (probing now and
/// then) without spinning, nothing is reset, and once the guest reads again
/// every byte arrives.
#[test]
fn guest_stops_reading_for_20_s() {
    const PORT: u16 = 6710;
    let t = Setup::pasta("stall", &[], &["-t", &PORT.to_string()]);
    stalled_guest(&t, PORT);
}

/// The same with passt, whose guest stops reading the qemu socket for 20 s
/// (a paused VM): the socket fills, passt stops polling the flow's socket
/// until the link takes frames again, without spinning, and nothing is
/// reset or lost.
#[test]
fn passt_guest_stops_reading_for_20_s() {
    const PORT: u16 = 6711;
    let t = Setup::passt("pstall", &["-t", &PORT.to_string()]);
    stalled_guest(&t, PORT);
}

/// The stall: a host peer sends to a guest listener through a forwarded
/// port; after the first part the guest (pasta) or its link (passt) stops
/// reading for 20 s; the translator's CPU use in that time is under 5 %.
fn stalled_guest(t: &Setup, port: u16) {
    const TOTAL: u64 = 16 << 20;
    const BEFORE: u64 = 2 << 20;
    let t0 = Instant::now();
    let what = &t.p.what;
    let l = in_ns(&t.g, || {
        TcpListener::bind(any4(port)).expect("guest listener")
    });
    let mut c = t.connect_host(host4(port)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    c.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let w = std::thread::spawn(move || {
        let r = send_pattern(&mut c, TOTAL).and_then(|()| c.shutdown(Shutdown::Write));
        (r, c)
    });
    let mut off = 0;
    eprintln!("{:.1} s: connected", t0.elapsed().as_secs_f64());
    check_pattern(&mut a, &mut off, BEFORE).expect("first part");
    assert_eq!(off, BEFORE);
    if let Some(r) = &t.relay {
        r.pause(true);
    }
    // The stall: buffers on the way fill within a moment; the translator's
    // CPU is measured over the rest of it.
    std::thread::sleep(Duration::from_secs(2));
    let share = cpu_share_during(t, || std::thread::sleep(Duration::from_secs(18)));
    eprintln!(
        "{:.1} s: {what} used {:.2} % of a CPU during the stall",
        t0.elapsed().as_secs_f64(),
        share * 100.0
    );
    if let Some(r) = &t.relay {
        r.pause(false);
    }
    let rest = check_pattern(&mut a, &mut off, TOTAL);
    eprintln!("{:.1} s: all read", t0.elapsed().as_secs_f64());
    assert_eq!(rest, Ok(()), "{}", t.p.output());
    assert_eq!(off, TOTAL, "connection ended early: {}", t.p.output());
    let mut b = [0u8; 1];
    assert_eq!(a.read(&mut b).ok(), Some(0), "end of stream");
    let (r, _c) = w.join().expect("writer");
    r.expect("the host peer's writes all succeed");
    assert!(
        share < 0.05,
        "{what} used {:.1} % of a CPU while the guest did not read",
        share * 100.0
    );
}

// --- out of descriptors ----------------------------------------------------------

/// pasta limited to 64 open files (soft and hard, so that raising the soft
/// limit at start does not help): 80 host connections to a forwarded port,
/// held open by the guest, exhaust its descriptors. The connections it cannot
/// accept wait in the backlog without pasta spinning on `accept()` (under
/// 5 % of a CPU), and once the guest and the host close some, the waiting
/// ones are accepted and work.
#[test]
fn out_of_descriptors_accept_waits() {
    const PORT: u16 = 6720;
    const N: usize = 80;
    const CLOSE: usize = 40;
    let t = Setup::pasta(
        "nofile",
        &["prlimit", "--nofile=64:64", "--"],
        // The tap path only: no pool of splice pipes taking descriptors, no
        // `-T auto` listeners.
        &["-t", &PORT.to_string(), "--no-splice", "-T", "none"],
    );
    let l = in_ns(&t.g, || {
        TcpListener::bind(any4(PORT)).expect("guest listener")
    });
    l.set_nonblocking(true).unwrap();
    // Guest: every connection echoes one byte, then waits for end of stream.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut served = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => served.push(std::thread::spawn(move || {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
                    let mut b = [0u8; 1];
                    if c.read_exact(&mut b).is_ok() && c.write_all(&b).is_ok() {
                        let _ = c.read(&mut b);
                    }
                })),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("guest accept: {e}"),
            }
        }
        served
    });
    let mut conns: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut c = t
                .connect_host(host4(PORT))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c.write_all(&[i as u8]).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            c
        })
        .collect();
    let mut echoed = vec![false; N];
    let poll = |conns: &mut [TcpStream], echoed: &mut [bool]| {
        for (i, c) in conns.iter_mut().enumerate() {
            let mut b = [0u8; 1];
            if !echoed[i] && c.read(&mut b).ok() == Some(1) {
                assert_eq!(b[0], i as u8);
                echoed[i] = true;
            }
        }
        echoed.iter().filter(|&&e| e).count()
    };
    // What fits is served; then pasta is out of descriptors.
    std::thread::sleep(Duration::from_secs(2));
    let before = poll(&mut conns, &mut echoed);
    assert!(
        (CLOSE..N).contains(&before),
        "{before} of {N} connections served with 64 descriptors ({} open)",
        t.fds()
    );
    let share = cpu_share_during(&t, || std::thread::sleep(Duration::from_secs(5)));
    eprintln!(
        "{before} of {N} served, {} descriptors open; pasta used {:.2} % of a CPU meanwhile",
        t.fds(),
        share * 100.0
    );
    assert_eq!(
        poll(&mut conns, &mut echoed),
        before,
        "no descriptor freed up"
    );
    // The first served connections end on both sides: the rest get in.
    let mut closed = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        if echoed[i] && closed < CLOSE {
            c.shutdown(Shutdown::Both).unwrap();
            closed += 1;
        }
    }
    let all = eventually(20, || (poll(&mut conns, &mut echoed) == N).then_some(()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(conns);
    for h in server.join().expect("guest server") {
        let _ = h.join();
    }
    assert!(
        all.is_some(),
        "{} of {N} connections served after descriptors freed up: {}",
        echoed.iter().filter(|&&e| e).count(),
        t.p.output()
    );
    assert!(
        share < 0.05,
        "pasta used {:.1} % of a CPU while out of descriptors",
        share * 100.0
    );
}

// --- a SYN flood -------------------------------------------------------------------

/// Frames the calling thread's network namespace sent on its interfaces
/// other than loopback, and frames their queues dropped, from
/// `/proc/thread-self/net/dev`. A tap counts a frame as sent once its reader
/// (pasta, or the relay to passt's socket) took it off the queue.
fn tx_frames() -> (u64, u64) {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
    net_dev(&dev)
        .into_iter()
        .filter(|(name, _)| name != "lo")
        .filter_map(|(_, v)| Some((*v.get(9)?, *v.get(11)?)))
        .fold((0, 0), |(p, d), (p2, d2)| (p + p2, d + d2))
}

/// A flood of `n` frames from the calling thread's network namespace:
/// `send(i)` sends the `i`th and says whether the kernel took it. They go
/// in rounds of 100, a tenth of what a tap queue holds (1000 frames), each
/// once the translator has taken the previous ones off the queue: on a
/// loaded machine the flood slows down with the translator instead of
/// overflowing the queue, so that every frame sent reaches it. Fails if the
/// queue drops a frame anyway, or if the translator takes none for 30 s.
fn paced_flood(n: u16, mut send: impl FnMut(u16) -> bool) {
    const ROUND: u16 = 100;
    let (taken0, dropped0) = tx_frames();
    let mut sent = 0u64;
    for i in 0..n {
        sent += u64::from(send(i));
        if i % ROUND != ROUND - 1 && i != n - 1 {
            continue;
        }
        let mut last = (tx_frames().0, Instant::now());
        while last.0 - taken0 < sent {
            std::thread::sleep(Duration::from_millis(1));
            let taken = tx_frames().0;
            if taken != last.0 {
                last = (taken, Instant::now());
            }
            assert!(
                last.1.elapsed() < Duration::from_secs(30),
                "{} of {sent} frames taken off the tap after {i} sent, none for 30 s",
                last.0 - taken0
            );
        }
    }
    let dropped = tx_frames().1 - dropped0;
    assert_eq!(
        dropped, 0,
        "the tap queue dropped {dropped} of {sent} frames"
    );
}

/// Internet checksum of `data` (one's complement sum of 16-bit words).
fn csum(data: &[u8], mut sum: u32) -> u16 {
    for w in data.chunks(2) {
        let v = u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]);
        sum += u32::from(v);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A bare TCP SYN from `src:sport` to `dst:dport` (the kernel adds the IP
/// header).
fn syn_segment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&(u32::from(sport) * 7919).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&t);
    let c = csum(&pseudo, 0);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// 5000 SYNs from the guest (a raw socket, as many source ports) to a host
/// that never answers (the host's uplink is a sink): pasta holds TCP's
/// quota of the flow table as half-open connections and refuses the rest
/// with an RST each (counted by the guest, and by pasta as `flow_quota`
/// drops, which it logs with `-d` on its way out); its resident memory grows
/// by less than 1 MiB; once the half-open connections end (the handshake
/// timeout is 10 s), a legitimate connection works. No half-open
/// connection ends while the flood goes on (the host's uplink drops the
/// SYNs without a word), so every reset is a refusal.
#[test]
fn syn_flood_memory_flat() {
    syn_flood(Setup::pasta("synf", &[], &["-d"]), 6730);
}

/// The same through passt: the SYNs come from the guest's raw socket over
/// the tap relayed to passt's socket.
#[test]
fn passt_syn_flood_memory_flat() {
    syn_flood(Setup::passt("psynf", &["-d"]), 6731);
}

fn syn_flood(mut t: Setup, port: u16) {
    const N: u16 = 5000;
    let what = t.p.what.clone();
    let src: Ipv4Addr = HOST_IP4.parse().unwrap();
    let dst = Ipv4Addr::new(192, 0, 2, 1);
    // Warm up: a first connection through the gateway, with a transfer each
    // way, so that "idle" is the memory of a pasta that has carried traffic
    // (a download fills every slot of the transmit arena once).
    let hl = in_ns(&t.h, || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap()
    });
    let gw = SocketAddr::from((GW_IP4.parse::<Ipv4Addr>().unwrap(), port));
    let connect = || {
        in_ns(&t.g, || {
            TcpStream::connect_timeout(&gw, Duration::from_secs(5))
        })
    };
    let mut c = connect().expect("first connection");
    let mut a = accept_timeout(&hl, 5);
    const WARM: usize = 4 << 20;
    let w = std::thread::spawn(move || {
        a.write_all(&vec![0x5a; WARM]).unwrap();
        a
    });
    let mut got = vec![0u8; WARM];
    c.read_exact(&mut got).unwrap();
    let mut a = w.join().unwrap();
    c.write_all(&got[..1 << 20]).unwrap();
    a.read_exact(&mut got[..1 << 20]).unwrap();
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    a.read_exact(&mut b).unwrap();
    drop((c, a));
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(t.pid);
    // The flood, and the resets it gets back.
    let rsts = in_ns(&t.g, || flood_syns(src, dst, N));
    let flood_end = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(t.pid);
    eprintln!(
        "RSS idle {idle} KiB, after {N} SYNs {after} KiB (+{} KiB); {rsts} resets; {} descriptors",
        after as i64 - idle as i64,
        t.fds()
    );
    // TCP's quota of the flow table (3584 by default) is held; the rest is
    // refused with an RST each (frames the guest's tap queue dropped on the
    // way aside).
    assert!(
        rsts >= 1000 && t.fds() < 3584 + 64,
        "{rsts} of {N} SYNs refused, {} descriptors: the flow table's TCP quota should refuse the rest",
        t.fds()
    );
    // The flow table and the other working memory are allocated at start;
    // what the flood touches for the first time (the socket table's
    // entries, the transmit slots of a batch of resets) stays well within
    // 1 MiB.
    assert!(
        after < idle + 1024,
        "RSS grew from {idle} to {after} KiB under a SYN flood"
    );
    // Once the half-open flows are gone, connections work again.
    let ok = eventually(20, || connect().ok());
    eprintln!(
        "connected again {:.1} s after the flood",
        flood_end.elapsed().as_secs_f64()
    );
    let mut c = ok.expect("a connection after the handshake timeout");
    let mut a = accept_timeout(&hl, 5);
    c.write_all(b"y").unwrap();
    a.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"y");
    // Every reset the guest saw was a counted refusal.
    let refused = t.stop_for_counters("flow_quota");
    eprintln!("{what} counted {refused} SYNs refused over the TCP quota");
    assert!(
        refused >= u64::from(rsts),
        "{refused} SYNs counted as refused, {rsts} resets: {}",
        t.p.output()
    );
}

/// `n` SYNs from `src` to `dst` (ports 20000 and up) through a raw socket
/// of the calling thread's namespace, paced within the tap queue; the
/// resets that came back.
fn flood_syns(src: Ipv4Addr, dst: Ipv4Addr, n: u16) -> u32 {
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor owned by no one else.
    let sock: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // Room for every reset while the flood is still going out.
    let big: libc::c_int = 16 << 20;
    set_sock_opt(&sock, libc::SO_RCVBUFFORCE, &big);
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    paced_flood(n, |i| {
        let seg = syn_segment(src, dst, 20000 + i, 9);
        // SAFETY: `seg` and `to` live across the call, lengths passed along.
        let r = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                seg.as_ptr().cast(),
                seg.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 20, "sendto: {}", std::io::Error::last_os_error());
        true
    });
    // Count the resets from the unreachable host (IP header + TCP).
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 500_000,
    };
    set_sock_opt(&sock, libc::SO_RCVTIMEO, &tv);
    let mut rsts = 0u32;
    let mut buf = [0u8; 1500];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        let n = n as usize;
        let ihl = usize::from(buf[0] & 0xf) * 4;
        if n >= ihl + 20 && buf[12..16] == dst.octets() && buf[ihl + 13] & 0x04 != 0 {
            rsts += 1;
        }
    }
    rsts
}

// --- a UDP flood -------------------------------------------------------------------

/// 5000 UDP flows from the guest (one datagram each to as many ports of a
/// host that never answers): pasta (and passt, below) opens UDP's quota of the flow table
/// (3072 by default) and refuses the rest, counted as `flow_quota`; its
/// resident memory grows by less than 1 MiB; and while it holds those flows,
/// the guest's TCP connections still work (the table keeps room for TCP).
#[test]
fn udp_flood_leaves_room_for_tcp() {
    udp_flood(Setup::pasta("udpf", &[], &["-d"]), 6740);
}

/// The same through passt.
#[test]
fn passt_udp_flood_leaves_room_for_tcp() {
    udp_flood(Setup::passt("pudpf", &["-d"]), 6741);
}

fn udp_flood(mut t: Setup, port: u16) {
    const N: u16 = 5000;
    const QUOTA: usize = 3072;
    let what = t.p.what.clone();
    let hl = in_ns(&t.h, || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap()
    });
    let gw = SocketAddr::from((GW_IP4.parse::<Ipv4Addr>().unwrap(), port));
    let round_trip = |what: &str| {
        let mut c = in_ns(&t.g, || {
            TcpStream::connect_timeout(&gw, Duration::from_secs(5))
        })
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        let mut a = accept_timeout(&hl, 5);
        c.write_all(what.as_bytes()).unwrap();
        let mut b = vec![0u8; what.len()];
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        a.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        assert_eq!(b, what.as_bytes());
    };
    round_trip("warm-up");
    let fds0 = t.fds();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(t.pid);
    let dst = Ipv4Addr::new(192, 0, 2, 1);
    in_ns(&t.g, || {
        let u = std::net::UdpSocket::bind(any4(0)).unwrap();
        // The guest's own neighbour and socket buffers may refuse a
        // datagram now and then: the translator's count is what matters.
        paced_flood(N, |i| u.send_to(b"flood", (dst, 10000 + i)).is_ok());
    });
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(t.pid);
    let flows = t.fds() - fds0;
    eprintln!(
        "RSS idle {idle} KiB, after {N} UDP flows {after} KiB (+{} KiB); {flows} sockets opened",
        after as i64 - idle as i64
    );
    // TCP still works while UDP holds its share of the table.
    round_trip("during the flood");
    // (Give or take a descriptor of the translator's own coming or going.)
    assert!(
        (QUOTA - 100..=QUOTA + 8).contains(&flows),
        "{flows} UDP sockets for {N} flows: UDP's quota is {QUOTA}"
    );
    assert!(
        after < idle + 1024,
        "RSS grew from {idle} to {after} KiB under a UDP flood"
    );
    let refused = t.stop_for_counters("flow_quota");
    eprintln!("{what} counted {refused} UDP flows refused over the quota");
    assert!(
        refused >= 1000 && refused <= u64::from(N) - QUOTA as u64,
        "{refused} flows counted as refused, {flows} opened of {N}: {}",
        t.p.output()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
