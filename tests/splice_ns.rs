//! pasta's loopback path, end to end: connections between the host's
//! loopback and the namespace's, spliced off the tap.
//!
//! The set-up is `tcp_ns`'s: a "host" namespace, a guest namespace owned by
//! the test user's user namespace, pasta (as the test user, sandbox on)
//! joining them with `--config-net`; both ends of every connection are
//! sockets of this process, made by threads that entered either namespace,
//! and every byte is checked against a position-dependent pattern.
//!
//! A spliced connection shows in the namespace as a local one: the server
//! sees the namespace's own address (or, with `--host-lo-to-ns-lo`, a
//! loopback address) as its peer, never the gateway address that
//! connections through the tap come from.

mod ns_support;
mod pasta_support;
mod stream_support;

use ns_support::*;
use pasta_support::Pasta;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use stream_support::*;

// --- the byte pattern ----------------------------------------------------------

/// `total` bytes each way at once over the connection `(a, b)`, each
/// direction ended with a half-close, every byte checked.
fn each_way(a: TcpStream, b: TcpStream, total: u64) {
    let run = |mut tx: TcpStream, mut rx: TcpStream, start: usize| {
        tx.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let w = std::thread::spawn(move || {
            send_pattern(&mut tx, start, total).expect("send");
            tx.shutdown(Shutdown::Write).expect("shutdown");
        });
        let r = std::thread::spawn(move || check_pattern(&mut rx, start, total));
        (w, r)
    };
    let (w1, r1) = run(a.try_clone().unwrap(), b.try_clone().unwrap(), 1);
    let (w2, r2) = run(b, a, 5);
    w1.join().unwrap();
    w2.join().unwrap();
    assert_eq!(r1.join().unwrap(), Ok(total), "first way");
    assert_eq!(r2.join().unwrap(), Ok(total), "other way");
}

const BULK: u64 = 256 << 20;

/// `-t PORT`: clients on the host's 127.0.0.1 and ::1 reach a server in the
/// namespace, spliced (the server sees the namespace's own address, not the
/// gateway's), 256 MiB each way intact; and the connections leave nothing
/// behind.
#[test]
fn host_loopback_to_namespace() {
    let t = Pasta::start("spt", &["-t", "7100"]);
    let l = t.listen_guest(any6(7100));
    for (addr, own) in [
        (
            lo4(7100),
            IpAddr::from(HOST_IP4.parse::<Ipv4Addr>().unwrap()),
        ),
        (
            lo6(7100),
            IpAddr::from(HOST_IP6.parse::<Ipv6Addr>().unwrap()),
        ),
    ] {
        let c = t.connect_host(addr).expect("connect");
        let a = accept_timeout(&l, 10);
        let peer = a.peer_addr().unwrap().ip().to_canonical();
        assert_eq!(
            peer, own,
            "spliced: the peer is the namespace's own address"
        );
        let t0 = Instant::now();
        each_way(c, a, BULK);
        eprintln!(
            "{addr}: 2 x {} MiB in {:?} (load: {})",
            BULK >> 20,
            t0.elapsed(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    // Both pairs are gone once both ends closed.
    let gone = eventually(5, || {
        let ss = t.g.sh("ss -Htn state established");
        (!ss.contains(":7100")).then_some(())
    });
    assert!(gone.is_some(), "spliced connections left behind");
}

/// A burst of connections from the host's loopback, each closed by the
/// client first (so pasta's end in the namespace stays in `TIME_WAIT`):
/// the far sides take the namespace's source ports in turn, one of each
/// pair of ports, the next pair for the next connection, instead of the
/// kernel's search from a pseudo-random point, which skips a random few
/// ports after each and, once the even ports are in `TIME_WAIT`, walks all
/// of them for every connection.
#[test]
fn inbound_connections_take_namespace_ports_in_turn() {
    let t = Pasta::start("sptw", &["-t", "7150"]);
    let l = t.listen_guest(any6(7150));
    for addr in [lo4(7150), lo6(7150)] {
        let mut ports = Vec::new();
        for _ in 0..48 {
            let mut c = t.connect_host(addr).expect("connect");
            let mut a = accept_timeout(&l, 10);
            ports.push(a.peer_addr().unwrap().port());
            c.write_all(b"q").unwrap();
            let mut b = [0u8; 1];
            a.read_exact(&mut b).unwrap();
            a.write_all(b"r").unwrap();
            c.read_exact(&mut b).unwrap();
            // The client closes first, then the server, as a client that
            // opens a connection per request does.
            drop(c);
            a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(a.read(&mut b).unwrap(), 0);
        }
        for w in ports.windows(2) {
            let (p, q) = (w[0] & !1, w[1] & !1);
            let next = if p >= 60998 { 32768 } else { p + 2 };
            assert_eq!(q, next, "{addr}: ports not taken in turn: {ports:?}");
        }
        let tw = t.g.sh("ss -Htan state time-wait");
        eprintln!(
            "{addr}: {} in TIME_WAIT in the namespace",
            tw.lines().count()
        );
    }
}

/// A server on the namespace's loopback only is private by default (the
/// spliced connection goes to the namespace's address and is refused); with
/// `--host-lo-to-ns-lo` it is reached, and sees a loopback peer.
#[test]
fn namespace_loopback_only_with_host_lo_to_ns_lo() {
    let t = Pasta::start("splo", &["-t", "7200"]);
    let _l = t.listen_guest(lo4(7200));
    let r = t.connect_host(lo4(7200)).and_then(|mut c| {
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [0u8; 1];
        c.read(&mut b)
    });
    assert!(
        matches!(&r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "a loopback-only server is not reached: {r:?}"
    );
    drop(t);

    let t = Pasta::start("splo2", &["-t", "7200", "--host-lo-to-ns-lo"]);
    let l = t.listen_guest(lo4(7200));
    let mut c = t.connect_host(lo4(7200)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    assert!(a.peer_addr().unwrap().ip().is_loopback());
    c.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    a.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
}

/// `-T PORT`: clients on the namespace's 127.0.0.1 and ::1 reach a server on
/// the host's loopback, 256 MiB each way intact; a `-T` port nobody listens
/// on is reset.
#[test]
fn namespace_loopback_to_host() {
    let t = Pasta::start("spT", &["-t", "none", "-T", "7300,7301:7302"]);
    let l4 = t.listen_host(lo4(7300));
    let l6 = t.listen_host(lo6(7300));
    for (addr, l) in [(lo4(7300), &l4), (lo6(7300), &l6)] {
        let c = t.connect_guest(addr).expect("connect");
        let a = accept_timeout(l, 10);
        assert!(a.peer_addr().unwrap().ip().is_loopback());
        let t0 = Instant::now();
        each_way(c, a, BULK);
        eprintln!(
            "-T {addr}: 2 x {} MiB in {:?} (load: {})",
            BULK >> 20,
            t0.elapsed(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    // 7301 maps to 7302, where the host listens on 127.0.0.1 only.
    let l = t.listen_host(lo4(7302));
    let mut c = t.connect_guest(lo4(7301)).expect("connect");
    let mut a = accept_timeout(&l, 10);
    c.write_all(b"mapped").unwrap();
    let mut b = [0u8; 6];
    a.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"mapped");
    drop(l);
    // Nobody listens on the host's ::1 port 7302: reset.
    let r = t.connect_guest(lo6(7301)).and_then(|mut c| {
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [0u8; 1];
        c.read(&mut b)
    });
    assert!(
        r.as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "refused on the host: {r:?}"
    );
}

/// A connection from the host's loopback to the guest's listener `l`
/// through `t`'s `port`: the host's end first if `host_first`, else the
/// guest's.
fn ends(t: &Pasta, l: &TcpListener, port: u16, host_first: bool) -> (TcpStream, TcpStream) {
    let c = t.connect_host(lo4(port)).expect("connect");
    let a = accept_timeout(l, 10);
    if host_first {
        (c, a)
    } else {
        (a, c)
    }
}

/// Half-close each way with data in flight the other way, and a reset each
/// way, over spliced connections.
#[test]
fn half_close_and_reset_each_way() {
    let t = Pasta::start("sphc", &["-t", "7400"]);
    let l = t.listen_guest(any6(7400));
    const N: u64 = 32 << 20;
    // The client closes its side first; the server keeps sending, and its
    // data is already on the way when the client's FIN arrives.
    for client_first in [true, false] {
        let (mut first, mut second) = ends(&t, &l, 7400, client_first);
        let mut w2 = second.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            send_pattern(&mut w2, 9, N).unwrap();
            w2.shutdown(Shutdown::Write).unwrap();
        });
        first.write_all(b"last words").unwrap();
        first.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        second.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words", "client first: {client_first}");
        first
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(check_pattern(&mut first, 9, N), Ok(N), "{}", t.p.output());
        sender.join().unwrap();
    }
    // A reset from either end resets the other.
    for client_resets in [true, false] {
        let (gone, mut other) = ends(&t, &l, 7400, client_resets);
        let mut o2 = other.try_clone().unwrap();
        // Data in flight towards the end that resets.
        let _ = o2.write_all(&[7u8; 100_000]);
        std::thread::sleep(Duration::from_millis(100));
        linger_zero(&gone);
        drop(gone);
        let r = read_until_closed(&mut other, 5);
        assert_eq!(
            r,
            Err(ErrorKind::ConnectionReset),
            "reset carried through (client resets: {client_resets})"
        );
    }
}

/// A reader that stops for 3 s with a full pipe and full socket buffers
/// behind it: pasta sleeps (under 5 % of a CPU) while it waits, and every
/// byte arrives once the reader goes on. Both directions.
#[test]
fn slow_reader_costs_no_cpu() {
    let t = Pasta::start("spslow", &["-t", "7500"]);
    let l = t.listen_guest(any6(7500));
    const N: u64 = 96 << 20;
    for server_reads in [true, false] {
        let (mut tx, mut rx) = ends(&t, &l, 7500, server_reads);
        tx.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let w = std::thread::spawn(move || {
            send_pattern(&mut tx, 3, N).unwrap();
            tx.shutdown(Shutdown::Write).unwrap();
        });
        // Let the buffers fill up, then measure a stall of 3 s.
        std::thread::sleep(Duration::from_millis(700));
        let (c0, t0) = (t.cpu(), Instant::now());
        std::thread::sleep(Duration::from_secs(3));
        let (used, wall) = (t.cpu() - c0, t0.elapsed());
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        assert!(
            used.as_secs_f64() < 0.05 * wall.as_secs_f64(),
            "pasta used {used:?} of {wall:?} while the reader stalled (load {})",
            load.trim()
        );
        rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(check_pattern(&mut rx, 3, N), Ok(N));
        w.join().unwrap();
    }
}

/// `-T auto` (pasta's default): a listener the host opens later on its
/// loopback is reachable from the namespace's loopback within 2 s (the scan
/// runs once a second; half a second more for a loaded machine), and goes
/// away with it. Ports pasta itself listens on for `-t` are not taken.
#[test]
fn auto_outbound_follows_host_listeners() {
    let t = Pasta::start("spTa", &["-t", "7700"]);
    let probe = |port: u16| {
        t.connect_guest(lo4(port)).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut b = [0u8; 2];
            c.read_exact(&mut b)?;
            Ok(b)
        })
    };
    std::thread::sleep(Duration::from_millis(1200));
    assert!(probe(7701).is_err(), "nothing listens on the host yet");
    let l = t.listen_host(lo4(7701));
    let t0 = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let srv = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"hi");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let mut reached = None;
    while t0.elapsed() < Duration::from_millis(2500) {
        if probe(7701).is_ok() {
            reached = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        reached.is_some(),
        "-T auto did not pick up the host listener: {}",
        t.p.output()
    );
    eprintln!("host listener reachable from the namespace after {reached:?}");
    // pasta's own -t listener on the host is not forwarded back.
    let ss = t.g.sh("ss -Htln");
    assert!(
        !ss.contains(":7700 "),
        "-t port taken in the namespace: {ss}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    srv.join().unwrap();
    let gone = eventually(4, || (!t.g.sh("ss -Htln").contains(":7701 ")).then_some(()));
    assert!(gone.is_some(), "listener of a vanished host port stays");
}

// --- UDP ---------------------------------------------------------------------

/// Datagrams of the UDP tests: every size from 1 to the largest IPv4 UDP
/// payload shows up (1 and 65507 first, the rest spread over the range).
const UDP_COUNT: usize = 10_000;
const UDP_MAX: usize = 65_507;

fn udp_size(i: usize) -> usize {
    match i {
        0 => 1,
        1 => UDP_MAX,
        _ => 1 + (i.wrapping_mul(2_654_435_761) % UDP_MAX),
    }
}

fn udp_payload(i: usize, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend((0..len).map(|k| (k.wrapping_mul(31) ^ i.wrapping_mul(7)) as u8));
}

/// An echo server on `sock` (made in either namespace): every datagram goes
/// back to its sender, until `stop`; returns the senders seen.
fn udp_echo(
    sock: std::net::UdpSocket,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<SocketAddr>> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut peers = Vec::new();
        let mut b = vec![0u8; 65536];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut b) {
                if !peers.contains(&from) {
                    peers.push(from);
                }
                let _ = sock.send_to(&b[..n], from);
            }
        }
        peers
    })
}

/// `UDP_COUNT` datagrams from `client` (connected) and their echoes, every
/// byte checked; a datagram lost either way is sent again (at most a few
/// times in all).
fn udp_exchange(client: &std::net::UdpSocket, what: &str) {
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (mut out, mut back) = (Vec::new(), vec![0u8; 65536]);
    let mut resent = 0;
    let t0 = Instant::now();
    for i in 0..UDP_COUNT {
        let len = udp_size(i);
        udp_payload(i, len, &mut out);
        loop {
            client
                .send(&out)
                .unwrap_or_else(|e| panic!("{what}: send {i}: {e}"));
            match client.recv(&mut back) {
                Ok(n) => {
                    assert_eq!(n, len, "{what}: datagram {i}: length");
                    assert!(back[..n] == out[..], "{what}: datagram {i}: bytes");
                    break;
                }
                Err(e) => {
                    resent += 1;
                    assert!(resent <= 10, "{what}: datagram {i} lost again: {e}");
                }
            }
        }
    }
    eprintln!(
        "{what}: {UDP_COUNT} datagrams and echoes in {:?}, {resent} sent again (load: {})",
        t0.elapsed(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

/// `-U PORT`: a client on the namespace's 127.0.0.1 and ::1 reaches a server
/// on the host's loopback, spliced, with its source address and port kept;
/// 10 000 datagrams of every size up to 65507 bytes and their replies
/// intact. A datagram to a loopback port nobody listens on on the host is
/// simply lost, and the flow keeps working.
#[test]
fn udp_namespace_loopback_to_host() {
    use std::net::UdpSocket;
    use std::sync::{atomic::AtomicBool, Arc};
    let t = Pasta::start("spU", &["-t", "none", "-u", "none", "-U", "7500"]);
    for (lo, any) in [
        (lo4 as fn(u16) -> SocketAddr, any4 as fn(u16) -> SocketAddr),
        (lo6, any6),
    ] {
        let _ = any;
        let stop = Arc::new(AtomicBool::new(false));
        let srv = in_ns(&t.h, || UdpSocket::bind(lo(7500)).expect("host server"));
        let echo = udp_echo(srv, stop.clone());
        let client = in_ns(&t.g, || UdpSocket::bind(lo(0)).expect("client"));
        let me = client.local_addr().unwrap();
        // The listener in the namespace may still be opening.
        assert!(
            echo_answers(&client, lo(7500)),
            "-U {}: no echo: {}",
            lo(7500),
            t.p.output()
        );
        udp_exchange(&client, &format!("-U {}", lo(7500)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peers = echo.join().unwrap();
        assert_eq!(
            peers,
            vec![me],
            "the host server sees the client's own loopback address and port"
        );
    }
}

/// Connects `client` to `to` and waits up to 10 s for the echo server
/// behind it to answer (the listener on the way may still be opening).
fn echo_answers(client: &std::net::UdpSocket, to: SocketAddr) -> bool {
    let answer = || {
        client.connect(to).unwrap();
        let wait = Some(Duration::from_millis(200));
        client.set_read_timeout(wait).unwrap();
        client.send(b"hello").ok()?;
        let mut b = [0u8; 8];
        (client.recv(&mut b).ok()? == 5).then_some(())
    };
    eventually(10, answer).is_some()
}

/// `-u PORT` from the host's loopback: spliced to the namespace's own
/// address (the server sees it, with the client's port kept), both
/// families, 10 000 datagrams each way intact.
#[test]
fn udp_host_loopback_to_namespace() {
    use std::net::UdpSocket;
    use std::sync::{atomic::AtomicBool, Arc};
    let t = Pasta::start("spu", &["-t", "none", "-u", "7600", "-U", "none"]);
    let own4 = IpAddr::from(HOST_IP4.parse::<Ipv4Addr>().unwrap());
    let own6 = IpAddr::from(HOST_IP6.parse::<Ipv6Addr>().unwrap());
    for (lo, own) in [(lo4 as fn(u16) -> SocketAddr, own4), (lo6, own6)] {
        let stop = Arc::new(AtomicBool::new(false));
        let srv = in_ns(&t.g, || {
            UdpSocket::bind(any6(7600)).expect("namespace server")
        });
        let echo = udp_echo(srv, stop.clone());
        let client = in_ns(&t.h, || UdpSocket::bind(lo(0)).expect("client"));
        let port = client.local_addr().unwrap().port();
        assert!(
            echo_answers(&client, lo(7600)),
            "-u {}: no echo: {}",
            lo(7600),
            t.p.output()
        );
        udp_exchange(&client, &format!("-u {}", lo(7600)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peers: Vec<(IpAddr, u16)> = echo
            .join()
            .unwrap()
            .into_iter()
            .map(|p| (p.ip().to_canonical(), p.port()))
            .collect();
        assert_eq!(
            peers,
            vec![(own, port)],
            "spliced: the namespace's own address, the client's port"
        );
    }
}

/// A UDP echo of `msg` from `client` (connected) within a few tries.
fn udp_ping(client: &std::net::UdpSocket, msg: &[u8]) -> Option<Vec<u8>> {
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = vec![0u8; 65536];
    for _ in 0..3 {
        client.send(msg).ok()?;
        if let Ok(n) = client.recv(&mut b) {
            return Some(b[..n].to_vec());
        }
    }
    None
}

/// `--splice-only`: no tap device in the namespace (only `lo`), and `-t`,
/// `-T`, `-u`, `-U` all work between the loopbacks (`-t` and `-u` to the
/// namespace's loopback: `--host-lo-to-ns-lo` is implied). Traffic that
/// would need the tap (a datagram from the host's own address) is dropped.
#[test]
fn splice_only_without_tap() {
    use std::net::UdpSocket;
    use std::sync::{atomic::AtomicBool, Arc};
    let t = Pasta::start(
        "spso",
        &[
            "--splice-only",
            "-t",
            "7800",
            "-T",
            "7801",
            "-u",
            "7802",
            "-U",
            "7803",
        ],
    );
    let links = t.g.sh("ip -o link show");
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    assert!(links.contains(": lo:"), "{links}");
    // -t: the host's loopback to a server on the namespace's loopback only.
    let l = t.listen_guest(lo4(7800));
    let mut c = eventually(10, || t.connect_host(lo4(7800)).ok())
        .unwrap_or_else(|| panic!("-t 7800: {}", t.p.output()));
    let mut a = accept_timeout(&l, 10);
    assert!(a.peer_addr().unwrap().ip().is_loopback());
    c.write_all(b"in").unwrap();
    let mut b = [0u8; 2];
    a.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"in");
    // -T: the namespace's loopback to the host's.
    let l = t.listen_host(lo4(7801));
    let mut c = eventually(10, || t.connect_guest(lo4(7801)).ok())
        .unwrap_or_else(|| panic!("-T 7801: {}", t.p.output()));
    let mut a = accept_timeout(&l, 10);
    a.write_all(b"out").unwrap();
    let mut b = [0u8; 3];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"out");
    // -u and -U, echoed.
    let stop = Arc::new(AtomicBool::new(false));
    let e1 = udp_echo(
        in_ns(&t.g, || UdpSocket::bind(lo4(7802)).unwrap()),
        stop.clone(),
    );
    let e2 = udp_echo(
        in_ns(&t.h, || UdpSocket::bind(lo4(7803)).unwrap()),
        stop.clone(),
    );
    let c1 = in_ns(&t.h, || UdpSocket::bind(lo4(0)).unwrap());
    c1.connect(lo4(7802)).unwrap();
    let got = eventually(10, || udp_ping(&c1, b"udp in"));
    assert_eq!(got.as_deref(), Some(&b"udp in"[..]), "-u: {}", t.p.output());
    let c2 = in_ns(&t.g, || UdpSocket::bind(lo4(0)).unwrap());
    c2.connect(lo4(7803)).unwrap();
    let got = eventually(10, || udp_ping(&c2, b"udp out"));
    assert_eq!(
        got.as_deref(),
        Some(&b"udp out"[..]),
        "-U: {}",
        t.p.output()
    );
    // From the host's own address: it would need the tap; dropped.
    let c3 = in_ns(&t.h, || UdpSocket::bind(any4(0)).unwrap());
    c3.connect(SocketAddr::new(HOST_IP4.parse().unwrap(), 7802))
        .unwrap();
    assert_eq!(udp_ping(&c3, b"via tap"), None);
    // And pasta is still there.
    assert_eq!(udp_ping(&c1, b"again").as_deref(), Some(&b"again"[..]));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(e1.join().unwrap().len(), 1, "only the loopback client");
    e2.join().unwrap();
}
