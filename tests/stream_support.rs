//! TCP helpers shared by the namespace suites that move streams: running
//! code inside a namespace, addresses, accepting with a timeout, a
//! self-checking byte pattern, resets, and a process's CPU time.

#![allow(dead_code)]

use crate::ns_support::Netns;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside the network namespace `ns`; sockets it
/// creates stay there and can be used from any thread afterwards.
pub(crate) fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    in_netns_at(&ns.path(), f)
}

/// [`in_ns`] for the network namespace file at `path` (a bind mount, or
/// `/proc/PID/ns/net`).
pub(crate) fn in_netns_at<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(path).expect("namespace file");
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

pub(crate) fn any4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}

pub(crate) fn any6(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
}

pub(crate) fn lo4(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub(crate) fn lo6(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
}

/// The next connection on `l`, waiting at most `secs`.
pub(crate) fn accept_timeout(l: &TcpListener, secs: u64) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        match l.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false).unwrap();
                return c;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Period of the pattern: odd, so that no power-of-two buffer lines up with it.
pub(crate) const PERIOD: usize = (4 << 20) + 13;

/// The pattern, twice over, so that any `PERIOD` bytes from any start are one
/// slice.
pub(crate) fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut v = Vec::with_capacity(2 * PERIOD);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while v.len() < PERIOD {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(PERIOD);
        v.extend_from_within(..);
        v
    })
}

/// Writes `total` bytes of the pattern starting at `start`.
pub(crate) fn send_pattern(w: &mut impl Write, start: usize, total: u64) -> std::io::Result<()> {
    let p = pattern();
    let mut pos = start % PERIOD;
    let mut left = total;
    while left > 0 {
        let n = (left.min(256 << 10) as usize).min(PERIOD);
        w.write_all(&p[pos..pos + n])?;
        pos = (pos + n) % PERIOD;
        left -= n as u64;
    }
    Ok(())
}

/// Reads to end of stream, checking every byte against the pattern from
/// `start`; returns the count, or where it first differed.
pub(crate) fn check_pattern(r: &mut impl Read, start: usize, max: u64) -> Result<u64, String> {
    let p = pattern();
    let mut pos = start % PERIOD;
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read error after {got} bytes: {e}")),
        };
        if got + n as u64 > max {
            return Err(format!("more than {max} bytes"));
        }
        if buf[..n] != p[pos..pos + n] {
            let i = (0..n).find(|&i| buf[i] != p[pos + i]).unwrap_or(0);
            return Err(format!("byte {} differs", got + i as u64));
        }
        got += n as u64;
        pos = (pos + n) % PERIOD;
    }
}

/// How a slow reader reads: at most `piece` bytes a call, and a pause of
/// `pause` every `every` calls.
#[derive(Clone, Copy)]
pub(crate) struct Slow {
    pub(crate) piece: usize,
    pub(crate) every: u32,
    pub(crate) pause: Duration,
}

/// `total` bytes of the pattern from `start` written to `tx` (then a
/// half-close) by a thread while `rx` reads them as `slow` says; what
/// [`check_pattern`] found. The writer is joined only on success: on a
/// failure it may be blocked on a reader that stopped.
pub(crate) fn pattern_to_slow_reader(
    mut tx: TcpStream,
    rx: TcpStream,
    start: usize,
    total: u64,
    slow: Slow,
) -> Result<u64, String> {
    let w = std::thread::spawn(move || {
        send_pattern(&mut tx, start, total).unwrap();
        tx.shutdown(std::net::Shutdown::Write).unwrap();
        tx
    });
    struct Reader(TcpStream, u32, Slow);
    impl Read for Reader {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.1 += 1;
            if self.1.is_multiple_of(self.2.every) {
                std::thread::sleep(self.2.pause);
            }
            let n = b.len().min(self.2.piece);
            self.0.read(&mut b[..n])
        }
    }
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = check_pattern(&mut Reader(rx, 0, slow), start, total);
    if r.is_ok() {
        drop(w.join().unwrap());
    }
    r
}

/// `setsockopt(fd, SOL_SOCKET, opt, value)`; its return value (0 on
/// success).
pub(crate) fn set_sock_opt<T>(fd: &impl AsRawFd, opt: libc::c_int, value: &T) -> libc::c_int {
    // SAFETY: `value` lives across the call and its size is passed along.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

/// Sets SO_LINGER to zero, so that close() sends an RST.
pub(crate) fn linger_zero(c: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let r = set_sock_opt(c, libc::SO_LINGER, &l);
    assert_eq!(r, 0);
}

/// Reads until end of stream or error; `Err` holds the error kind.
pub(crate) fn read_until_closed(c: &mut TcpStream, secs: u64) -> Result<usize, ErrorKind> {
    c.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut n = 0;
    let mut b = [0u8; 65536];
    loop {
        match c.read(&mut b) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) => return Err(e.kind()),
        }
    }
}

/// User + system time of `pid` in clock ticks (fields 14 and 15 of
/// `/proc/PID/stat`, counted after the command name's closing parenthesis).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let t = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let rest = &t[t.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Clock ticks per second.
pub(crate) fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// CPU time (user + system) of `pid` so far.
pub(crate) fn cpu_time(pid: u32) -> Duration {
    Duration::from_millis(cpu_ticks(pid) * 1000 / ticks_per_sec())
}

/// `sha256sum` of what is written to it, computed by a child process so
/// that hashing costs the test threads nothing but a pipe write.
pub(crate) struct Sha256 {
    child: std::process::Child,
}

impl Sha256 {
    pub(crate) fn new() -> Self {
        let child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        Sha256 { child }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(data)
            .expect("sha256sum input");
    }

    pub(crate) fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}
