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

use ns_support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes moved per case.
const TOTAL: u64 = 256 << 20;
/// Longest time allowed without the receiver getting a byte.
const STALL: Duration = Duration::from_millis(200);
/// Bound of one transfer.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `f` on a thread inside the network namespace at `ns`.
fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(ns).expect("namespace file");
    std::thread::scope(|sc| {
        sc.spawn(|| {
            // SAFETY: setns takes a descriptor and a flag; it only changes
            // the network namespace of this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace")
    })
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
        args.extend(
            [
                bin("pasta").display().to_string(),
                "-f".into(),
                "--config-net".into(),
                "-m".into(),
                mtu.into(),
                "-t".into(),
                "none".into(),
                "-u".into(),
                "none".into(),
                "-T".into(),
                "none".into(),
                "-U".into(),
                "none".into(),
                guest_pid.to_string(),
            ]
            .into_iter(),
        );
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
    let mut t = Setup::new(tag, mtu);
    let (lo, gw): (SocketAddr, &str) = if v6 {
        ("[::1]:0".parse().expect("addr"), GW_IP6)
    } else {
        ("127.0.0.1:0".parse().expect("addr"), GW_IP4)
    };
    let l = in_netns(&t.h.path(), || {
        TcpListener::bind(lo).expect("host listener")
    });
    let port = l.local_addr().expect("port").port();
    let dst = SocketAddr::new(gw.parse().expect("gateway"), port);
    let tx = in_netns(Path::new(&t.guest_ns()), || {
        TcpStream::connect_timeout(&dst, Duration::from_secs(10)).expect("connect from guest")
    });
    let (rx, _) = l.accept().expect("accept on host");
    let got = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn(move || {
        let mut tx = tx;
        let mut h = Sha256::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ TOTAL;
        let mut buf = vec![0u8; 256 << 10];
        let mut left = TOTAL;
        while left > 0 {
            let n = buf.len().min(left as usize);
            for c in buf[..n].chunks_mut(8) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let b = rng.to_le_bytes();
                c.copy_from_slice(&b[..c.len()]);
            }
            tx.write_all(&buf[..n]).expect("guest write");
            h.update(&buf[..n]);
            left -= n as u64;
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

/// SHA-256 (FIPS 180-4), enough for comparing two streams.
struct Sha256 {
    h: [u32; 8],
    block: [u8; 64],
    fill: usize,
    len: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Self {
        Sha256 {
            h: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            fill: 0,
            len: 0,
        }
    }

    fn compress(&mut self) {
        let mut w = [0u32; 64];
        for (i, c) in self.block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = self.h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (h, x) in self.h.iter_mut().zip(v) {
            *h = h.wrapping_add(x);
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let n = (64 - self.fill).min(data.len());
            self.block[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == 64 {
                self.compress();
                self.fill = 0;
            }
        }
    }

    fn finish(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        self.update(&[0x80]);
        while self.fill != 56 {
            self.update(&[0]);
        }
        self.block[56..].copy_from_slice(&bits.to_be_bytes());
        self.compress();
        let mut out = [0u8; 32];
        for (o, h) in out.chunks_mut(4).zip(self.h) {
            o.copy_from_slice(&h.to_be_bytes());
        }
        out
    }
}

#[test]
fn sha256_known_answers() {
    let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(Sha256::new().finish()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut h = Sha256::new();
    h.update(b"abc");
    assert_eq!(
        hex(h.finish()),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f2009615"
    );
    let mut h = Sha256::new();
    for _ in 0..1000 {
        h.update(&[b'a'; 1000]);
    }
    assert_eq!(
        hex(h.finish()),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a4e200e046e39ccc7739b0d0"
    );
}
