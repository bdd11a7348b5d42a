//! TCP end to end through the `pasta` and `passt` binaries, run as the
//! unprivileged test user.
//!
//! Each test makes a "host" namespace (see `ns_support.rs`) and a guest
//! namespace owned by a user namespace of the test user; pasta runs in the
//! host namespace and joins the guest's (`--userns`, `--netns`) with
//! `--config-net`, so the guest has the host's addresses and reaches the host's
//! loopback through the gateway address. The test's own sockets are created
//! by threads that enter either namespace with `setns()`, so both ends of
//! every connection are in this process and the bytes are checked exactly:
//! each stream is a position-dependent pattern (a random block of odd length,
//! repeated), compared slice by slice at the receiver.

#[path = "tcp_ns/forwarding.rs"]
mod forwarding;
mod ns_support;
mod pasta_support;
mod relay_support;
mod stream_support;
#[path = "tcp_ns/timestamps.rs"]
mod timestamps;

use ns_support::*;
use pasta_support::Pasta;
use relay_support::qemu_hub;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use stream_support::*;

// --- namespaces and pasta ----------------------------------------------------

fn gw4(port: u16) -> SocketAddr {
    SocketAddr::from((GW_IP4.parse::<Ipv4Addr>().unwrap(), port))
}

fn gw6(port: u16) -> SocketAddr {
    SocketAddr::from((GW_IP6.parse::<Ipv6Addr>().unwrap(), port))
}

// --- the byte pattern ----------------------------------------------------------

/// Sends `total` bytes one way over `(tx, rx)` and checks them.
fn one_way(mut tx: TcpStream, mut rx: TcpStream, total: u64, secs: u64) {
    rx.set_read_timeout(Some(Duration::from_secs(secs)))
        .unwrap();
    // A stalled path fails the writer too instead of leaving it blocked.
    tx.set_write_timeout(Some(Duration::from_secs(secs)))
        .unwrap();
    let w = std::thread::spawn(move || {
        send_pattern(&mut tx, 7, total).expect("send");
        tx.shutdown(Shutdown::Write).expect("shutdown");
        tx
    });
    let r = check_pattern(&mut rx, 7, total);
    assert_eq!(r, Ok(total));
    let _tx = w.join().expect("writer");
}

// --- iperf3 ------------------------------------------------------------------

const IPERF_BYTES: u64 = 256 << 20;

/// iperf3 client → server through pasta with `-n`: the client sent exactly
/// that, and the server received it (up to what was in flight at the end).
fn iperf(mtu: &str, v6: bool, host_to_ns: bool) {
    let tag = format!(
        "ip{}{}",
        if v6 { 6 } else { 4 },
        if host_to_ns { "h" } else { "n" }
    );
    let port = "5201";
    // Inbound forwarding only where the server is in the guest: a listener
    // of pasta's on the host's port would take the host server's place.
    let fwd = if host_to_ns { port } else { "none" };
    let t = Pasta::start(&tag, &["-m", mtu, "-t", fwd]);
    // Host → namespace goes to the host's own address: a client on the
    // host's loopback would be spliced (pasta's loopback path, off the tap;
    // `splice_ns` covers it), and this is about the tap.
    let (srv_ns, cli_ns, target) = if host_to_ns {
        (&t.g.ns, &t.h, if v6 { HOST_IP6 } else { HOST_IP4 })
    } else {
        (&t.h, &t.g.ns, if v6 { GW_IP6 } else { GW_IP4 })
    };
    let srv = Proc::spawn(
        srv_ns.cmd(&["iperf3", "-s", "-1", "-p", port]),
        "iperf3 server",
        t.dir.join("iperf3-s.log"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let n = IPERF_BYTES.to_string();
    let out = cli_ns.run(&["iperf3", "-c", target, "-p", port, "-n", &n, "-J"], 120);
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "MTU {mtu} v6 {v6} host→ns {host_to_ns}: iperf3: {json}\nserver: {}\npasta: {}",
        srv.output(),
        t.p.output()
    );
    let num = |f: &str| -> u64 {
        jq(&json, f)
            .parse()
            .unwrap_or_else(|_| panic!("{f} in {json}\npasta: {}", t.p.output()))
    };
    let sent = num(".end.sum_sent.bytes");
    let recv = num(".end.sum_received.bytes");
    // iperf3 checks the count after each 128 KiB block: it may send one more.
    assert!(
        (IPERF_BYTES..=IPERF_BYTES + (128 << 10)).contains(&sent),
        "MTU {mtu} v6 {v6} host→ns {host_to_ns}: sent {sent}"
    );
    // iperf3's server stops counting when the client's end-of-test message
    // arrives on the control connection, which overtakes data still queued
    // in socket buffers along the way: its count may fall short by what is
    // in flight (the exact byte counts are checked by the tests below).
    assert!(
        recv <= sent && recv >= sent - (32 << 20),
        "MTU {mtu} v6 {v6} host→ns {host_to_ns}: received {recv} of {sent}"
    );
}

#[test]
fn iperf3_ns_to_host() {
    for mtu in ["65520", "1500"] {
        for v6 in [false, true] {
            iperf(mtu, v6, false);
        }
    }
}

#[test]
fn iperf3_host_to_ns() {
    for mtu in ["65520", "1500"] {
        for v6 in [false, true] {
            iperf(mtu, v6, true);
        }
    }
}

// --- integrity -----------------------------------------------------------------

const GIB: u64 = 1 << 30;

/// 1 GiB each way through pasta, every byte checked: guest → host (IPv4,
/// through the gateway to the host's loopback) and host → guest (IPv6, a
/// forwarded port reached at the host's own address, through the tap).
#[test]
fn pasta_one_gib_each_way() {
    let t = Pasta::start("gib", &["-t", "6001"]);
    let l = t.listen_host(any4(6000));
    let c = t.connect_guest(gw4(6000)).expect("connect to the host");
    let a = accept_timeout(&l, 10);
    one_way(c, a, GIB, 60);

    // To the host's own address: from its loopback the connection would be
    // spliced, off the tap (`splice_ns`).
    let l = t.listen_guest(any6(6001));
    let host6: Ipv6Addr = HOST_IP6.parse().unwrap();
    let c = t
        .connect_host(SocketAddr::from((host6, 6001)))
        .expect("connect to the guest");
    let a = accept_timeout(&l, 10);
    one_way(c, a, GIB, 60);
    t.p.output();
}

// --- many connections ------------------------------------------------------------

const CONNS: usize = 500;

const CONN_BYTES: u64 = 1 << 20;

/// Both directions of one connection at once, each checked: the pattern
/// from `start` out, from `peer` in.
fn both_ways(c: TcpStream, start: usize, peer: usize) -> Result<(), String> {
    // Generous: on a starved machine a guest whose window closed waits out
    // its persist timer (exponential back-off) before probing again; a
    // connection that never moves again still fails.
    c.set_read_timeout(Some(Duration::from_secs(180)))
        .map_err(|e| e.to_string())?;
    let mut w = c.try_clone().map_err(|e| e.to_string())?;
    let writer = std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || {
            send_pattern(&mut w, start, CONN_BYTES)
                .and_then(|()| w.shutdown(Shutdown::Write))
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
    let mut r = c;
    let got = check_pattern(&mut r, peer, CONN_BYTES);
    writer.join().map_err(|_| "writer panicked".to_string())??;
    match got {
        Ok(n) if n == CONN_BYTES => Ok(()),
        Ok(n) => Err(format!("{n} bytes")),
        Err(e) => Err(e),
    }
}

/// 500 connections from the guest at once, each moving 1 MiB both ways;
/// afterwards pasta's descriptors and flows are back where they started.
#[test]
fn five_hundred_connections() {
    let t = Pasta::start("conns", &["-t", "none"]);
    let l = t.listen_host(any4(6100));
    // An accept queue with room for every connection: the accepting thread
    // shares the CPU with the transfers it starts, and on a loaded machine
    // it fell more than a default backlog behind; the host then dropped
    // pasta's handshake, which took a retransmission a second later (and
    // a connection whose retransmissions were dropped too could run out
    // its time).
    // SAFETY: listen() on a socket of ours, with a new backlog only.
    let r = unsafe { libc::listen(l.as_raw_fd(), CONNS as libc::c_int) };
    assert_eq!(r, 0, "listen: {}", std::io::Error::last_os_error());
    std::thread::sleep(Duration::from_millis(300));
    let fds_before = t.fds();
    assert!(fds_before > 0);
    // Host side: accept everything, then serve each connection (the peer's
    // pattern starts one byte later than ours).
    let server = std::thread::spawn(move || {
        let mut handles = Vec::new();
        for _ in 0..CONNS {
            let c = accept_timeout(&l, 30);
            let mut first = [0u8; 4];
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            (&c).read_exact(&mut first).expect("connection index");
            let i = u32::from_be_bytes(first) as usize;
            handles.push(
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || both_ways(c, i * 4099 + 1, i * 4099))
                    .expect("thread"),
            );
        }
        let errs: Vec<String> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or(Err("panic".into())).err())
            .collect();
        errs
    });
    let clients: Vec<TcpStream> = in_ns(&t.g, || {
        (0..CONNS)
            .map(|i| {
                let mut c = TcpStream::connect_timeout(&gw4(6100), Duration::from_secs(10))
                    .expect("connect");
                c.write_all(&(i as u32).to_be_bytes()).unwrap();
                c
            })
            .collect()
    });
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || both_ways(c, i * 4099, i * 4099 + 1))
                .expect("thread")
        })
        .collect();
    let bad_clients: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap_or(Err("panic".into())).err())
        .collect();
    let bad_server = server.join().expect("server");
    assert!(
        bad_clients.is_empty() && bad_server.is_empty(),
        "{} clients failed ({:?}), {} server sides ({:?}); pasta: {}",
        bad_clients.len(),
        bad_clients.iter().take(3).collect::<Vec<_>>(),
        bad_server.len(),
        bad_server.iter().take(3).collect::<Vec<_>>(),
        t.p.output()
    );
    let back = eventually(10, || (t.fds() <= fds_before).then_some(()));
    assert!(
        back.is_some(),
        "pasta holds {} descriptors, {} before",
        t.fds(),
        fds_before
    );
}

// --- connection life cycle ---------------------------------------------------------

/// Half-close each way with data still flowing the other way.
#[test]
fn half_close_both_ways() {
    let t = Pasta::start("half", &["-t", "none"]);
    let l = t.listen_host(any6(6200));
    // The guest closes its side first, the host keeps sending.
    let mut c = t.connect_guest(gw6(6200)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut req = Vec::new();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    a.read_to_end(&mut req).unwrap();
    assert_eq!(req, b"request");
    let w = std::thread::spawn(move || {
        send_pattern(&mut a, 0, 32 << 20).unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        a
    });
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(check_pattern(&mut c, 0, 32 << 20), Ok(32 << 20));
    drop(w.join().unwrap());

    // The host closes its side first, the guest keeps sending.
    let mut c = t.connect_guest(gw6(6200)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    a.write_all(b"banner").unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    let mut b = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.read_to_end(&mut b).unwrap();
    assert_eq!(b, b"banner");
    let w = std::thread::spawn(move || {
        send_pattern(&mut c, 3, 32 << 20).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        c
    });
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(check_pattern(&mut a, 3, 32 << 20), Ok(32 << 20));
    drop(w.join().unwrap());
}

/// A host peer closing with unread data resets the guest's connection; a
/// guest RST resets the host peer; a banner from a server that speaks first
/// arrives; a refused port is refused at once.
#[test]
fn resets_banner_and_refusal() {
    let t = Pasta::start("rst", &["-t", "none"]);
    let l = t.listen_host(any4(6300));

    // Host closes with unread data: the kernel sends an RST, pasta resets
    // the guest.
    let mut c = t.connect_guest(gw4(6300)).expect("connect");
    let a = accept_timeout(&l, 10);
    c.write_all(&[1u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(a);
    let r = read_until_closed(&mut c, 5);
    assert_eq!(r, Err(ErrorKind::ConnectionReset), "{}", t.p.output());

    // Guest RST: the host peer is reset too (not a FIN), as upstream
    // since 2026.
    let c = t.connect_guest(gw4(6300)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    linger_zero(&c);
    drop(c);
    let r = read_until_closed(&mut a, 5);
    assert_eq!(
        r,
        Err(ErrorKind::ConnectionReset),
        "host socket after guest RST"
    );

    // Server speaks first.
    let mut c = t.connect_guest(gw4(6300)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    a.write_all(b"220 ready\r\n").unwrap();
    let mut b = [0u8; 11];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.read_exact(&mut b).expect("banner");
    assert_eq!(&b, b"220 ready\r\n");

    // Refused at once.
    let t0 = Instant::now();
    let e = t.connect_guest(gw4(6301)).expect_err("nobody listens");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

/// Frames pasta sends the guest are at least 60 bytes (802.3): short
/// packets, such as bare ACKs and one-byte segments, are padded with zeros,
/// as upstream since 2025. A packet socket on the guest's interface sees
/// the frames as they come off the tap. The guest's timestamps are off:
/// with them, every segment carries 12 bytes of options and a bare ACK
/// fills 66 bytes.
#[test]
fn short_frames_to_the_guest_are_padded() {
    let t = Pasta::start("pad", &["-t", "none"]);
    t.guest_sysctl("net/ipv4/tcp_timestamps", "0");
    let l = t.listen_host(any4(6310));
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = in_ns(&t.g, || unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    });
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` was just created and is owned by nothing else.
    let sock: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    let r = set_sock_opt(&sock, libc::SO_RCVTIMEO, &tv);
    assert_eq!(r, 0);

    let mut c = t.connect_guest(gw4(6310)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    a.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.read_exact(&mut b).expect("one byte");
    c.write_all(b"y").unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    a.read_exact(&mut b).expect("one byte back");

    // Frames from port 6310 of the gateway: pasta's.
    let mut ours = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && ours.len() < 4 {
        let mut f = [0u8; 2048];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), f.as_mut_ptr().cast(), f.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let f = &f[..n];
        let tcp4 = n >= 38 && f[12..14] == [0x08, 0x00] && f[23] == 6;
        let gw = GW_IP4.parse::<Ipv4Addr>().unwrap().octets();
        if tcp4 && f[26..30] == gw && f[34..36] == 6310u16.to_be_bytes() {
            ours.push(f.to_vec());
        }
    }
    assert!(!ours.is_empty(), "no frames from pasta seen");
    let mut padded = 0;
    for f in &ours {
        let ip_len = usize::from(u16::from_be_bytes([f[16], f[17]]));
        assert!(f.len() >= 60, "frame of {} bytes", f.len());
        if 14 + ip_len < 60 {
            assert_eq!(f.len(), 60, "padded to 60, no more");
            assert!(f[14 + ip_len..].iter().all(|&b| b == 0), "zero padding");
            padded += 1;
        }
    }
    assert!(padded > 0, "no short packet among {} frames", ours.len());
}

// --- zero window -----------------------------------------------------------------

/// A guest with a tiny receive buffer reading slowly: 100 MiB from the host
/// still arrive whole (pasta waits on the zero window and probes it).
#[test]
fn zero_window_slow_reader() {
    let t = Pasta::start("zwin", &["-t", "6600"]);
    let l = in_ns(&t.g, || {
        let s = TcpListener::bind(any4(6600)).unwrap();
        // The buffer size of a listener passes on to accepted sockets.
        let v: libc::c_int = 4096;
        let r = set_sock_opt(&s, libc::SO_RCVBUF, &v);
        assert_eq!(r, 0);
        s
    });
    // The host's own address, not its loopback: that would be spliced.
    let host4: Ipv4Addr = HOST_IP4.parse().unwrap();
    let c = t
        .connect_host(SocketAddr::from((host4, 6600)))
        .expect("connect");
    let a = accept_timeout(&l, 10);
    const TOTAL: u64 = 100 << 20;
    // Reads in small pieces, pausing now and then.
    let slow = Slow {
        piece: 8192,
        every: 64,
        pause: Duration::from_millis(2),
    };
    let r = pattern_to_slow_reader(c, a, 11, TOTAL, slow);
    assert_eq!(r, Ok(TOTAL), "{}", t.p.output());
}

// --- passt through qemu ------------------------------------------------------------

/// Bytes each way through passt and qemu's `-M none` hub: a framing check,
/// kept below what the sockets on the way buffer. qemu 7.2's hub aborts or
/// stops moving frames once the stream socket pushes back, so bulk TCP
/// through passt is judged behind a real guest kernel instead (`vm_passt`).
const QEMU_BYTES: u64 = 48 << 10;

/// passt serving qemu, which bridges its socket to a tap in the guest
/// namespace (configured by hand with passt's addresses): data both ways,
/// every byte checked.
#[test]
fn passt_qemu_framing() {
    let h = Netns::host("pq");
    let g = Netns::new("pqg");
    let dir = Scratch::new("pq");
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let mut p = h.start_passt(&sock, &pidf, dir.join("passt.log"), &["-t", "6701"]);
    let _q = qemu_hub(&g, &sock, "qtap0", dir.join("qemu.log"));
    g.sh(&format!(
        "ip link set qtap0 up
         ip addr add {HOST_IP4}/24 dev qtap0
         ip route add default via {GW_IP4}"
    ));

    // Guest → host's loopback through the gateway address.
    let l = in_ns(&h, || TcpListener::bind(any4(6700)).expect("listener"));
    let c = eventually(10, || {
        in_ns(&g, || {
            TcpStream::connect_timeout(&gw4(6700), Duration::from_secs(2)).ok()
        })
    })
    .unwrap_or_else(|| panic!("guest cannot connect: {}", p.output()));
    let a = accept_timeout(&l, 10);
    one_way(c, a, QEMU_BYTES, 60);

    // Host → guest through the forwarded port.
    let l = in_ns(&g, || TcpListener::bind(any4(6701)).expect("listener"));
    let c = in_ns(&h, || {
        TcpStream::connect_timeout(&lo4(6701), Duration::from_secs(10)).expect("connect")
    });
    let a = accept_timeout(&l, 10);
    one_way(c, a, QEMU_BYTES, 60);
    p.assert_running();
}

/// Guest → host with a host reader that has a tiny receive buffer and reads
/// slowly: pasta's socket send buffer fills, the window to the guest closes,
/// and reopens when the socket turns writable again; 64 MiB arrive whole.
#[test]
fn full_send_buffer_reopens_window() {
    let t = Pasta::start("sbuf", &["-t", "none"]);
    let l = in_ns(&t.h, || {
        let s = TcpListener::bind(any4(7000)).unwrap();
        let v: libc::c_int = 4096;
        let r = set_sock_opt(&s, libc::SO_RCVBUF, &v);
        assert_eq!(r, 0);
        s
    });
    let c = t.connect_guest(gw4(7000)).expect("connect");
    let a = accept_timeout(&l, 10);
    const TOTAL: u64 = 64 << 20;
    // Reads in small pieces, pausing now and then.
    let slow = Slow {
        piece: 4096,
        every: 32,
        pause: Duration::from_millis(1),
    };
    let r = pattern_to_slow_reader(c, a, 5, TOTAL, slow);
    assert_eq!(r, Ok(TOTAL), "{}", t.p.output());
}
