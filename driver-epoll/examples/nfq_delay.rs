//! Holds every packet of an NFQUEUE queue for a fixed time, then lets it go:
//! a round-trip time for benchmarks on kernels without netem.
//!
//! Usage: `nfq_delay QUEUE DELAY_US [SECONDS]`, in the network namespace
//! whose netfilter rules send packets to the queue, for example
//! `iptables -A INPUT -p tcp -j NFQUEUE --queue-num 0 --queue-bypass`.
//! Packets leave in arrival order: each wake-up releases everything that has
//! waited long enough with one batch verdict. Only metadata is copied to
//! user space, and GSO packets stay whole. Ends after SECONDS (default 3600)
//! or on SIGTERM; the rule's `--queue-bypass` then lets packets through.
//!
//! It talks nfnetlink directly (no library): a `NETLINK_NETFILTER` socket,
//! `NFQNL_MSG_CONFIG` to bind the queue, `NFQNL_MSG_PACKET` in and
//! `NFQNL_MSG_VERDICT_BATCH` out.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQA_CFG_F_GSO: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NETLINK_NO_ENOBUFS: libc::c_int = 5;

/// One netlink message under construction: header, nfgenmsg, attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(msg: u16, flags: u16, queue: u16) -> Self {
        let mut b = vec![0u8; 16];
        b[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
        b[6..8].copy_from_slice(&flags.to_ne_bytes());
        // nfgenmsg: family AF_UNSPEC, version 0, resource id (queue) in
        // network order.
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&queue.to_be_bytes());
        Msg(b)
    }

    fn attr(mut self, ty: u16, payload: &[u8]) -> Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn send(fd: i32, msg: &[u8]) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `sa` are valid for the lengths passed.
    let r = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends a configuration message and waits for its acknowledgement.
fn config(fd: i32, msg: Vec<u8>) -> io::Result<()> {
    send(fd, &msg)?;
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if ty == NLMSG_ERROR && off + 20 <= n {
                let e = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or([0; 4]));
                return if e == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-e))
                };
            }
            if len < 16 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: nfq_delay QUEUE DELAY_US [SECONDS]");
        std::process::exit(2);
    }
    let queue: u16 = args[1].parse().expect("queue number");
    let delay = Duration::from_micros(args[2].parse().expect("delay in µs"));
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3600);
    if let Err(e) = run(queue, delay, Duration::from_secs(secs)) {
        eprintln!("nfq_delay: {e}");
        std::process::exit(1);
    }
}

fn run(queue: u16, delay: Duration, limit: Duration) -> io::Result<()> {
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    let big: libc::c_int = 64 << 20;
    // SAFETY: int options, sizes passed along.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_NETLINK,
            NETLINK_NO_ENOBUFS,
            (&one as *const libc::c_int).cast(),
            4,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            4,
        );
    }
    let bind = [NFQNL_CFG_CMD_BIND, 0, 0, 0];
    config(
        fd,
        Msg::new(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue)
            .attr(NFQA_CFG_CMD, &bind)
            .finish(),
    )?;
    // Metadata only; copy range 0.
    let mut params = [0u8; 5];
    params[4] = NFQNL_COPY_META;
    config(
        fd,
        Msg::new(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue)
            .attr(NFQA_CFG_PARAMS, &params)
            .attr(NFQA_CFG_QUEUE_MAXLEN, &(1u32 << 16).to_be_bytes())
            .attr(NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes())
            .attr(NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes())
            .finish(),
    )?;
    let start = Instant::now();
    let mut held: VecDeque<(u32, Instant)> = VecDeque::with_capacity(1 << 16);
    let mut buf = vec![0u8; 1 << 16];
    let mut released: u64 = 0;
    while start.elapsed() < limit {
        let now = Instant::now();
        // Release everything due, with one verdict for the last id.
        let mut last = None;
        while let Some(&(id, t)) = held.front() {
            if now.duration_since(t) < delay {
                break;
            }
            last = Some(id);
            held.pop_front();
            released += 1;
        }
        if let Some(id) = last {
            let mut v = [0u8; 8];
            v[0..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
            v[4..8].copy_from_slice(&id.to_be_bytes());
            send(
                fd,
                &Msg::new(NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, queue)
                    .attr(NFQA_VERDICT_HDR, &v)
                    .finish(),
            )?;
        }
        let wait = match held.front() {
            Some(&(_, t)) => delay.saturating_sub(now.duration_since(t)),
            None => Duration::from_millis(200),
        };
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
        };
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd and timespec.
        let r = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
        if r <= 0 {
            continue;
        }
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                break;
            }
            let t = Instant::now();
            let n = n as usize;
            let mut off = 0;
            while off + 20 <= n {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                if len < 16 || off + len > n {
                    break;
                }
                if ty == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                    // Attributes after nlmsghdr (16) and nfgenmsg (4).
                    let mut a = off + 20;
                    while a + 4 <= off + len {
                        let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                        let aty = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]) & 0x7fff;
                        if alen < 4 {
                            break;
                        }
                        if aty == NFQA_PACKET_HDR && alen >= 8 && a + 8 <= n {
                            let id =
                                u32::from_be_bytes(buf[a + 4..a + 8].try_into().unwrap_or([0; 4]));
                            held.push_back((id, t));
                        }
                        a += (alen + 3) & !3;
                    }
                }
                off += (len + 3) & !3;
            }
        }
    }
    eprintln!("nfq_delay: {released} packets released");
    Ok(())
}
