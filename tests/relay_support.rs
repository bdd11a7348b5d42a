//! The guest side of passt without a VM: a tap device in a namespace whose
//! frames are relayed to and from passt's stream in qemu's framing, by the
//! test itself ([`TapRelay`]) or by qemu without a machine ([`qemu_hub`]);
//! or the test speaking that framing itself ([`StreamClient`]).

#![allow(dead_code)]

use crate::ns_support::{eventually, Netns, Proc};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// A tap device in a namespace whose frames are relayed to and from passt's
/// stream in qemu's framing, as qemu's network back-end does; it can stop
/// reading the stream for a while (a paused VM). Stops when either side
/// closes, or on drop.
pub(crate) struct TapRelay {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl TapRelay {
    pub(crate) fn start(ns: &Netns, ifname: &str, stream: UnixStream) -> TapRelay {
        let file = std::fs::File::open(ns.path()).expect("namespace file");
        let name = ifname.to_string();
        let tap = std::thread::spawn(move || open_tap(&file, &name))
            .join()
            .expect("tap");
        ns.sh(&format!("ip link set {ifname} up"));
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let tap = Arc::new(tap);
        let out = stream.try_clone().expect("stream");
        let inp = stream;
        inp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let threads = vec![
            {
                let (tap, stop) = (tap.clone(), stop.clone());
                std::thread::spawn(move || tap_to_stream(&tap, &stop, out))
            },
            {
                let (tap, stop, paused) = (tap.clone(), stop.clone(), paused.clone());
                std::thread::spawn(move || stream_to_tap(&tap, &stop, &paused, inp))
            },
        ];
        TapRelay {
            stop,
            paused,
            threads,
        }
    }

    /// Stops (or resumes) reading passt's stream.
    pub(crate) fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::Relaxed);
    }
}

/// Creates the tap device `name` in the calling thread's network
/// namespace (`file`, which the thread enters).
fn open_tap(file: &std::fs::File, name: &str) -> OwnedFd {
    // SAFETY: setns changes this thread's network namespace only.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    // SAFETY: open with a constant path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0, "/dev/net/tun: {}", std::io::Error::last_os_error());
    // SAFETY: we own the descriptor just opened.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads an ifreq, which `req` is large enough for.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, req.as_mut_ptr()) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    fd
}

/// Frames read from the tap, written to passt's stream with their length
/// in front, until `stop` or a write fails (then it sets `stop`).
fn tap_to_stream(tap: &OwnedFd, stop: &AtomicBool, mut out: UnixStream) {
    let mut buf = vec![0u8; 65536 + 4];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: reading into our buffer past the length prefix.
        let n = unsafe { libc::read(tap.as_raw_fd(), buf[4..].as_mut_ptr().cast(), 65536) };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
        if out.write_all(&buf[..4 + n]).is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
}

/// Frames of passt's stream written to the tap (dropped when its queue is
/// full), not read while `paused`, until `stop` or the stream ends (then it
/// sets `stop`).
fn stream_to_tap(tap: &OwnedFd, stop: &AtomicBool, paused: &AtomicBool, mut inp: UnixStream) {
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match inp.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                continue
            }
            Err(_) => break,
        }
        let mut off = 0;
        while buf.len() - off >= 4 {
            let len =
                u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            if buf.len() - off < 4 + len {
                break;
            }
            let f = &buf[off + 4..off + 4 + len];
            // A full tap queue drops the frame, as a guest's
            // full ring would: TCP sends it again.
            // SAFETY: writing one frame from our buffer.
            unsafe { libc::write(tap.as_raw_fd(), f.as_ptr().cast(), f.len()) };
            off += 4 + len;
        }
        buf.drain(..off);
    }
    let _ = inp.shutdown(Shutdown::Both);
    stop.store(true, Ordering::Relaxed);
}

impl Drop for TapRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// qemu without a machine (`-M none`) bridging passt's socket `sock` to a
/// tap device `tap` in `ns` through its hub, as a VM's network back-end
/// would, its output to `log`; returns once the tap device exists.
pub(crate) fn qemu_hub(ns: &Netns, sock: &Path, tap: &str, log: PathBuf) -> Proc {
    let mut q = Proc::spawn(
        ns.cmd(&[
            "qemu-system-x86_64".into(),
            "-M".into(),
            "none".into(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-netdev".into(),
            format!(
                "stream,id=s,server=off,addr.type=unix,addr.path={}",
                sock.display()
            ),
            "-netdev".into(),
            format!("tap,id=t,ifname={tap},script=no,downscript=no"),
            "-netdev".into(),
            "hubport,id=h1,hubid=0,netdev=s".into(),
            "-netdev".into(),
            "hubport,id=h2,hubid=0,netdev=t".into(),
        ]),
        "qemu",
        log,
    );
    eventually(20, || {
        q.assert_running();
        ns.sh("ip -o link show")
            .contains(&format!("{tap}:"))
            .then_some(())
    })
    .expect("qemu created its tap");
    q
}

// --- qemu stream framing -----------------------------------------------------

/// A client of passt's socket speaking qemu's framing directly.
pub(crate) struct StreamClient {
    pub(crate) s: UnixStream,
    buf: Vec<u8>,
}

impl StreamClient {
    pub(crate) fn connect(path: &Path) -> StreamClient {
        let s = eventually(10, || UnixStream::connect(path).ok())
            .unwrap_or_else(|| panic!("connect {}", path.display()));
        StreamClient::from_stream(s)
    }

    /// A client over a connected socket (one end of a pair given to passt
    /// with `--fd`).
    pub(crate) fn from_stream(s: UnixStream) -> StreamClient {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        StreamClient { s, buf: Vec::new() }
    }

    /// The bytes of `frames` in the stream encoding.
    pub(crate) fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&(f.len() as u32).to_be_bytes());
            v.extend_from_slice(f);
        }
        v
    }

    pub(crate) fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write to passt");
    }

    /// Reads frames until `want` of them matched `pred` or `secs` passed.
    /// Returns every frame read.
    pub(crate) fn collect(
        &mut self,
        secs: u64,
        want: usize,
        pred: impl Fn(&[u8]) -> bool,
    ) -> Vec<Vec<u8>> {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut frames = Vec::new();
        let mut tmp = [0u8; 65536];
        while Instant::now() < end && frames.iter().filter(|f: &&Vec<u8>| pred(f)).count() < want {
            match self.s.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(_) => {}
            }
            while self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() < 4 + len {
                    break;
                }
                frames.push(self.buf[4..4 + len].to_vec());
                self.buf.drain(..4 + len);
            }
        }
        frames
    }

    /// Whether passt closed the connection (bounded wait).
    pub(crate) fn closed_by_peer(&mut self, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut tmp = [0u8; 65536];
        while Instant::now() < end {
            match self.s.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => {}
            }
        }
        false
    }
}

pub(crate) const GUEST_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

/// An ARP request from the guest (10.77.0.2) for `target`, padded with zeros
/// to `pad_to` bytes as qemu does for short frames.
pub(crate) fn arp_request(target: [u8; 4], pad_to: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[10, 77, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    if f.len() < pad_to {
        f.resize(pad_to, 0);
    }
    f
}

/// Whether `f` is an ARP reply telling the guest where `ip` is.
pub(crate) fn is_arp_reply_for(f: &[u8], ip: [u8; 4]) -> bool {
    f.len() >= 42
        && f[12..14] == [0x08, 0x06]
        && f[20..22] == [0, 2]
        && f[28..32] == ip
        && f[0..6] == GUEST_MAC
}
