//! pasta's tap with virtio-net headers and offloads (checksum, TSO4/TSO6),
//! end to end, pasta run as the unprivileged test user with its sandbox.
//!
//! With offloads on (the default) the namespace's interface must show them
//! (`ethtool -k`), 256 MiB must cross each way intact (SHA-256 of what was
//! sent and of what arrived, IPv4 and IPv6, MTU 1500, where one frame of
//! 64 KiB stands for 44 frames of one MTU), and the frames must really be
//! large: the interface's packet counters (one per frame, whatever its
//! size) stay far below what MTU-sized frames would need. The same run with
//! `--no-tap-offload` gives a plain tap (offloads off, one MTU per frame)
//! and the same bytes.
//!
//! The guest namespace is owned by a user namespace of the test user, which
//! pasta joins (`--userns`, `--netns`) with `--config-net`; the test's own
//! sockets are made by threads that enter either namespace.

mod ns_support;
mod pasta_support;
mod stream_support;

use ns_support::*;
use pasta_support::{net_dev, Pasta};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use stream_support::*;

/// Bytes moved per direction and family.
const TOTAL: u64 = 256 << 20;
/// Bound of one transfer.
const LIMIT: Duration = Duration::from_secs(120);

/// The namespace's interface (the one that is not `lo`).
fn ifname(t: &Pasta) -> String {
    let links = t.g.sh("ip -o link show");
    links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .find(|n| n != "lo")
        .unwrap_or_else(|| panic!("no interface in the namespace: {links}"))
}

/// `ethtool -k` of the namespace's interface: feature name → on.
fn features(t: &Pasta) -> Vec<(String, bool)> {
    let out = t.g.sh(&format!("ethtool -k {}", ifname(t)));
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().starts_with("on")))
        })
        .collect()
}

fn feature(t: &Pasta, name: &str) -> bool {
    let f = features(t);
    f.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in ethtool -k: {f:?}"))
        .1
}

/// Packets received and sent by the namespace's interface (one per
/// frame the tap carried, whatever its size).
fn packets(t: &Pasta) -> (u64, u64) {
    let name = ifname(t);
    let dev = t.g.sh("cat /proc/net/dev");
    let (_, v) = net_dev(&dev)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} not in /proc/net/dev: {dev}"));
    (v[1], v[9])
}

/// Sends `TOTAL` bytes of the pattern over `tx`, reads them from `rx`;
/// returns the SHA-256 of what was sent and of what arrived.
fn transfer(tx: TcpStream, rx: TcpStream) -> (String, String) {
    let sender = std::thread::spawn(move || {
        let mut tx = tx;
        let mut h = Sha256::new();
        let p = pattern();
        let (mut pos, mut left) = (0usize, TOTAL);
        while left > 0 {
            let n = (left.min(256 << 10) as usize).min(PERIOD);
            tx.write_all(&p[pos..pos + n]).expect("write");
            h.update(&p[pos..pos + n]);
            pos = (pos + n) % PERIOD;
            left -= n as u64;
        }
        tx.shutdown(std::net::Shutdown::Write).expect("shutdown");
        h.finish()
    });
    let mut rx = rx;
    rx.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    loop {
        match rx.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                got += n as u64;
            }
            Err(e) => panic!("read after {got} bytes: {e}"),
        }
    }
    assert_eq!(got, TOTAL, "bytes received");
    (sender.join().expect("sender"), h.finish())
}

/// One run: pasta at MTU 1500 with `extra` options; 256 MiB namespace →
/// host and host → namespace, IPv4 and IPv6. Returns the digests of what
/// arrived, in that order, and the interface's packet counts (received,
/// sent) over the host → namespace and namespace → host transfers.
fn run(tag: &str, extra: &[&str]) -> (Pasta, Vec<String>, (u64, u64)) {
    let mut args = vec!["-m", "1500", "-t", "7001,7002"];
    args.extend_from_slice(extra);
    let mut t = Pasta::start(tag, &args);
    let host4: Ipv4Addr = HOST_IP4.parse().unwrap();
    let host6: Ipv6Addr = HOST_IP6.parse().unwrap();
    let gw4: Ipv4Addr = GW_IP4.parse().unwrap();
    let gw6: Ipv6Addr = GW_IP6.parse().unwrap();
    let mut digests = Vec::new();
    let mut rx_pkts = 0;
    let mut tx_pkts = 0;
    for (gw, port, host) in [
        (
            SocketAddr::from((gw4, 7000)),
            7001,
            SocketAddr::from((host4, 7001)),
        ),
        (
            SocketAddr::from((gw6, 7000)),
            7002,
            SocketAddr::from((host6, 7002)),
        ),
    ] {
        // Namespace → host, through the gateway to the host's loopback.
        let lo = if gw.is_ipv6() { lo6(7000) } else { lo4(7000) };
        let l = in_ns(&t.h, || TcpListener::bind(lo).expect("host listener"));
        let c = in_ns(&t.g, || {
            TcpStream::connect_timeout(&gw, Duration::from_secs(10)).expect("connect to the host")
        });
        let a = accept_timeout(&l, 10);
        let (_, before) = packets(&t);
        let (sent, got) = transfer(c, a);
        tx_pkts += packets(&t).1 - before;
        assert_eq!(sent, got, "{tag}: namespace → host {gw}: SHA-256 differs");
        digests.push(got);
        // Host → namespace, a forwarded port at the host's own address (from
        // its loopback the connection would be spliced, off the tap).
        let any = if host.is_ipv6() {
            any6(port)
        } else {
            any4(port)
        };
        let l = in_ns(&t.g, || TcpListener::bind(any).expect("guest listener"));
        let c = in_ns(&t.h, || {
            TcpStream::connect_timeout(&host, Duration::from_secs(10))
                .expect("connect to the guest")
        });
        let a = accept_timeout(&l, 10);
        let (before, _) = packets(&t);
        let (sent, got) = transfer(c, a);
        rx_pkts += packets(&t).0 - before;
        assert_eq!(sent, got, "{tag}: host → namespace {host}: SHA-256 differs");
        digests.push(got);
    }
    t.p.assert_running();
    (t, digests, (rx_pkts, tx_pkts))
}

/// Fewest frames of one MTU that carry `TOTAL` bytes twice (IPv4 and
/// IPv6): at most 1460 bytes of payload each.
const MTU_FRAMES: u64 = 2 * TOTAL / 1460;

#[test]
fn offload_on_and_off_carry_the_same_bytes() {
    // Offloads on (the default).
    let (t, on, (rx, tx)) = run("offl", &[]);
    for f in [
        "tx-checksumming",
        "tcp-segmentation-offload",
        "tx-tcp-segmentation",
        "tx-tcp6-segmentation",
    ] {
        assert!(
            feature(&t, f),
            "{f} off with offloads on: {:?}",
            features(&t)
        );
    }
    // Each way, far fewer frames than MTU-sized ones would take: the tap
    // carried segments of up to 64 KiB (a tenth is generous: 44 MSS per
    // frame when the sender has data queued).
    assert!(
        rx < MTU_FRAMES / 10,
        "host → namespace: {rx} frames for {MTU_FRAMES} MTUs of data: no large segments"
    );
    assert!(
        tx < MTU_FRAMES / 10,
        "namespace → host: {tx} frames for {MTU_FRAMES} MTUs of data: no large segments"
    );
    eprintln!("offloads on: {rx} frames in, {tx} frames out for {MTU_FRAMES} MTUs each way");
    drop(t);

    // Offloads off: a plain tap, MTU-sized frames, the same bytes.
    let (t, off, (rx, tx)) = run("offn", &["--no-tap-offload"]);
    assert!(
        !feature(&t, "tcp-segmentation-offload"),
        "{:?}",
        features(&t)
    );
    assert!(!feature(&t, "tx-checksumming"), "{:?}", features(&t));
    assert!(
        rx >= MTU_FRAMES,
        "host → namespace: {rx} frames, fewer than MTUs"
    );
    assert!(
        tx >= MTU_FRAMES,
        "namespace → host: {tx} frames, fewer than MTUs"
    );
    assert_eq!(on, off, "the same bytes with offloads on and off");
}
