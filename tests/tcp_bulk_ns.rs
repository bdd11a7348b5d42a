//! 256 MiB namespace → host through pasta, run as an unprivileged user, with
//! a stall detector: the window pasta offers the guest must reopen as the
//! host socket drains, so no interval of 200 ms may pass without the host
//! receiving anything (a stall detector, not a throughput threshold). The
//! bytes are compared by SHA-256 at both ends. MTU 1500 and 65520, IPv4 and
//! IPv6.
//!
//! The guest is a user and network namespace owned by the test user
//! (`unshare -rn` run as it), which pasta joins by PID, as Podman and
//! rootlesskit start it. The test's own sockets are made by threads that
//! enter the host namespace or the guest's network namespace.

mod ns_support;
mod stream_support;

use ns_support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream_support::{in_netns_at, Sha256};

/// Bytes moved per case.
const TOTAL: u64 = 256 << 20;
/// Longest time allowed without the receiver getting a byte.
const STALL: Duration = Duration::from_millis(200);
/// Bound of one transfer.
const LIMIT: Duration = Duration::from_secs(120);

/// About 2 MiB from the kernel's random source (odd length).
fn random_block() -> Vec<u8> {
    let mut b = vec![0u8; (2 << 20) + 4093];
    let mut f = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    f.read_exact(&mut b).expect("random bytes");
    b
}

/// The host namespace, the guest's holder process, and pasta joining it.
struct Setup {
    h: Netns,
    _guest: Proc,
    guest_pid: u32,
    pasta: Proc,
    _dir: Scratch,
}

impl Setup {
    fn new(tag: &str, mtu: &str) -> Setup {
        let h = Netns::host(tag);
        let dir = Scratch::new(tag);
        let pidf = dir.join("guest.pid");
        // The directory must be writable by the test user's shell.
        let _ = std::fs::set_permissions(
            pidf.parent().expect("scratch"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        );
        let mut args = as_test_user();
        args.extend(
            [
                "unshare",
                "-rn",
                "sh",
                "-c",
                &format!("echo $$ > {}; exec sleep 600", pidf.display()),
            ]
            .map(String::from),
        );
        let mut guest = Proc::spawn(h.cmd(&args), "guest", dir.join("guest.log"));
        wait_file(&pidf, 10, &mut guest);
        let guest_pid: u32 = eventually(5, || {
            std::fs::read_to_string(&pidf)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .expect("guest PID");
        let mut args = as_test_user();
        args.extend([
            bin("pasta").display().to_string(),
            "-f".into(),
            "--config-net".into(),
            "-m".into(),
            mtu.into(),
        ]);
        args.extend(NO_FORWARDS.map(String::from));
        args.push(guest_pid.to_string());
        let mut pasta = Proc::spawn(h.cmd(&args), "pasta", dir.join("pasta.log"));
        let ns = format!("/proc/{guest_pid}/ns/net");
        let ready = eventually(15, || {
            let out = run_timeout(
                std::process::Command::new("nsenter")
                    .args(["--net=".to_string() + &ns, "sh".into(), "-c".into()])
                    .arg("ip -o addr show; ip -4 route show default; ip -6 route show default"),
                10,
            );
            let a = String::from_utf8_lossy(&out.stdout).to_string();
            (a.contains(HOST_IP4)
                && a.contains(HOST_IP6)
                && !a.contains("tentative")
                && a.contains("default via"))
            .then_some(())
        });
        if ready.is_none() {
            pasta.assert_running();
            panic!("guest not configured: {}", pasta.output());
        }
        Setup {
            h,
            _guest: guest,
            guest_pid,
            pasta,
            _dir: dir,
        }
    }

    fn guest_ns(&self) -> String {
        format!("/proc/{}/ns/net", self.guest_pid)
    }
}

/// Namespace → host through the gateway address (the host's loopback):
/// `TOTAL` bytes of a pseudo-random stream, hashed at both ends, with the
/// receiver's progress watched for stalls.
fn bulk_ns_to_host(tag: &str, mtu: &str, v6: bool) {
    // One transfer at a time: four at once on a small machine would measure
    // the scheduler, not pasta.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Setup::new(tag, mtu);
    let (lo, gw): (SocketAddr, &str) = if v6 {
        ("[::1]:0".parse().expect("addr"), GW_IP6)
    } else {
        ("127.0.0.1:0".parse().expect("addr"), GW_IP4)
    };
    let l = in_netns_at(&t.h.path(), || {
        TcpListener::bind(lo).expect("host listener")
    });
    let port = l.local_addr().expect("port").port();
    let dst = SocketAddr::new(gw.parse().expect("gateway"), port);
    let tx = in_netns_at(Path::new(&t.guest_ns()), || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(10)).expect("connect from guest")
    });
    let (rx, _) = l.accept().expect("accept on host");
    let got = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn(move || {
        let mut tx = tx;
        let mut h = Sha256::new();
        // A random block of odd length, sent from a moving offset: every
        // chunk differs from its neighbours, and nothing is computed per byte.
        let block = random_block();
        let mut off = 0usize;
        let mut left = TOTAL;
        while left > 0 {
            let n = (256usize << 10).min(left as usize);
            let end = (off + n).min(block.len());
            let chunk = &block[off..end];
            tx.write_all(chunk).expect("guest write");
            h.update(chunk);
            left -= chunk.len() as u64;
            off = (end + 7919) % (block.len() / 2);
        }
        tx.shutdown(std::net::Shutdown::Write).expect("shutdown");
        h.finish()
    });
    let (got2, done2) = (got.clone(), done.clone());
    let receiver = std::thread::spawn(move || {
        let mut rx = rx;
        rx.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match rx.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    got2.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => panic!("host read: {e}"),
            }
        }
        done2.store(true, Ordering::Relaxed);
        h.finish()
    });
    // The stall detector: sample the receiver's progress; the longest time
    // without any, from the first byte to the last.
    let start = Instant::now();
    let mut last = (0u64, Instant::now());
    let mut worst = Duration::ZERO;
    let mut worst_at = 0u64;
    while !done.load(Ordering::Relaxed) && start.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(5));
        let n = got.load(Ordering::Relaxed);
        let now = Instant::now();
        if n != last.0 || n == 0 {
            last = (n, now);
        } else if now - last.1 > worst {
            worst = now - last.1;
            worst_at = n;
        }
    }
    assert!(
        done.load(Ordering::Relaxed),
        "{tag}: transfer not finished after {LIMIT:?}: {} of {TOTAL} bytes; pasta: {}",
        got.load(Ordering::Relaxed),
        t.pasta.output()
    );
    let secs = start.elapsed().as_secs_f64();
    let sent = sender.join().expect("sender");
    let recvd = receiver.join().expect("receiver");
    t.pasta.assert_running();
    eprintln!(
        "{tag}: {TOTAL} bytes in {secs:.2} s ({:.2} Gbit/s), longest pause {worst:?}",
        TOTAL as f64 * 8.0 / secs / 1e9
    );
    assert_eq!(sent, recvd, "{tag}: SHA-256 differs");
    assert!(
        worst <= STALL,
        "{tag}: no progress for {worst:?} (after {worst_at} bytes): the window to the guest stalled"
    );
}

#[test]
fn bulk_ns_to_host_v4_mtu1500() {
    bulk_ns_to_host("bk41", "1500", false);
}

#[test]
fn bulk_ns_to_host_v4_mtu65520() {
    bulk_ns_to_host("bk4j", "65520", false);
}

#[test]
fn bulk_ns_to_host_v6_mtu1500() {
    bulk_ns_to_host("bk61", "1500", true);
}

#[test]
fn bulk_ns_to_host_v6_mtu65520() {
    bulk_ns_to_host("bk6j", "65520", true);
}

#[test]
fn sha256_known_answer() {
    let mut h = Sha256::new();
    h.update(b"abc");
    assert_eq!(
        h.finish(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
