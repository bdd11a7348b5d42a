//! Spliced TCP pairs (pasta's loopback path): the bytes of two connected
//! sockets moved by the kernel, through a pipe per direction.
//!
//! The core decides which connections are spliced and hands the driver a
//! connected pair ([`Action::Splice`](passt_core::Action::Splice)); from then
//! on this module owns both sockets' epoll registration and moves the data:
//! `splice(socket → pipe)`, then `splice(pipe → other socket)`, with
//! `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`, the pipes resized with
//! `F_SETPIPE_SZ`.
//!
//! **What a connection costs to set up** is kept low, since a client that
//! opens a connection per request (a web page's, a health check's) pays it
//! each time:
//!
//! * pipes come from a pool opened up front; a pair that ends with its
//!   pipes empty gives them back, and the pool is refilled only when it
//!   runs low, so a steady stream of connections opens, resizes and closes
//!   no pipe at all;
//! * the far-side socket of a connection from the host goes into the
//!   guest's namespace, where only the namespace worker can open one (a
//!   round trip to another thread): they are opened there in batches of
//!   [`NS_POOL`] ahead of need (as upstream's `ns_sock_pool4`/`6`), so one
//!   round trip serves that many connections, with `TCP_NODELAY` already
//!   set. The batch is opened when the pool runs low, after a join (the
//!   first bytes of that connection are on their way), not when a
//!   connection finds it empty;
//! * each of those sockets is given the source ports it may use
//!   (`IP_LOCAL_PORT_RANGE`, a window of two ports, the next two from one
//!   socket to the next, taken in the order they were opened): see
//!   [`PORT_WINDOW`] for why the kernel's own choice is slow here.
//!
//! **Moving bytes**: a read asks for what room the pipe has, a write for
//! what the pipe holds.
//!
//! **One registration per socket for its life, edge-triggered**: both
//! sockets enter the epoll set once, at the join, for input (and read
//! hang-up); output is added, once, only when a write to the socket was
//! refused. Nothing is changed as a direction ends, and nothing is taken
//! out at the end: closing the socket (no other descriptor refers to it)
//! takes it out of the set. A level-triggered registration would have to
//! drop input interest at each end of stream (a socket at its end stays
//! readable) and output interest once written to (a socket with room stays
//! writable): two `epoll_ctl` per connection more, and as many again when a
//! reader is slow.
//!
//! With edges, a source is read again only while it may hold input
//! ([`Dir::readable`]): set by a wake-up for input, cleared when a read
//! shows the socket empty. A read that got less than it asked for emptied
//! the socket if the pipe had slots left for more (each slot holds at
//! least a byte, so fewer bytes than free slots cannot have filled it): no
//! second read follows, which could only find nothing; input that arrives
//! later is a new edge. A read after the peer's end of stream was seen goes
//! on until it finds the end (no edge comes for it again). While the
//! destination refuses data, wake-ups for input only note it: a stalled
//! reader costs a bounded number of wake-ups (until the sender's window
//! closes), not a busy loop.
//!
//! **Ends**: end of stream read from one side, once the pipe towards the other
//! side is empty, becomes `shutdown(SHUT_WR)` there (half-close carried
//! through); for the direction that ends last, the core's `Close` (which
//! follows at once) sends the FIN instead. When both directions ended, the
//! pair reports [`SockEvent::SpliceEnded`] with `Ok`; an error on either side
//! (a reset, a write to a closed peer) reports it at once, and the core
//! closes both sockets with a reset. Nothing is reported twice: after the end
//! the pair ignores wake-ups until the core's `Close`.

use crate::isolate::worker::GuestNs;
use crate::sock::pairs::{Pair, Pairs, Report, SockCx};
use crate::sock::{last_errno, SockTable};
use nix::sys::epoll::EpollFlags;
use passt_core::{Errno, Family, SockEvent, SockId, SockKind, SpliceTotals};
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// System calls of spliced pairs while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // Moving bytes socket → pipe → socket.
    SYS_splice,
    // Refilling the pipe pool.
    SYS_pipe2,
    // Sizing new pipes.
    SYS_fcntl[1: libc::F_SETPIPE_SZ],
];

/// Pipes kept open for new pairs (two per pair).
const POOL_PIPES: usize = 16;
/// The pool is refilled when fewer pipes than this are left (two pairs'
/// worth), not before: pipes that pairs give back keep it up otherwise.
const POOL_LOW: usize = 4;
/// TCP sockets of a family opened at once in the guest's namespace
/// (upstream keeps as many, `TCP_SOCK_POOL_SIZE`).
pub(crate) const NS_POOL: usize = 32;
/// The pool of a family in use is filled again, after a join, when fewer
/// sockets than this are left.
const NS_LOW: usize = 8;
/// Ports of the kernel's default `net.ipv4.ip_local_port_range`, through
/// which the source ports of the guest namespace's sockets are handed out.
///
/// The far side of a connection from the host connects, in the guest's
/// namespace, to the namespace's own address, and since the client on the
/// host usually closes first, it is that socket's end which stays in
/// `TIME_WAIT` for a minute (the end that sends the first FIN does; pasta
/// passes the client's FIN on at once, as upstream does). With
/// `net.ipv4.tcp_tw_reuse` at its default (2), the kernel reuses such ports
/// only for loopback addresses (or sockets bound to `lo`, which a connection
/// to the namespace's own address cannot be: the kernel accounts it to the
/// address's own device, and the reply is refused), so `connect()` must find
/// a port whose 4-tuple is not in `TIME_WAIT`. It searches from a
/// pseudo-random point, even ports first, skipping a random few after each
/// hit: after some 14,000 connections in a minute the even ports are taken
/// and every `connect()` walks all of them (3.5 ms each, the limit of the
/// inbound connection rate). Each socket here is instead given a window of
/// two ports, an even one and the next, the window moving two ports per
/// socket: the kernel checks those two only, so one port of each pair is
/// used in turn, and the other once the cursor came round: all of them
/// before any is needed again. A window the kernel
/// cannot use (both ports busy, or outside the namespace's range: then it
/// is ignored) falls back to the kernel's own search (see
/// [`clear_port_window`]).
const PORT_WINDOW: (u16, u16) = (32768, 60999);
/// `IP_LOCAL_PORT_RANGE` (Linux 6.3): a socket's own ephemeral port range,
/// the low port in the low 16 bits, the high port in the high 16 bits.
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;
/// Largest pipe tried (upstream's `MAX_PIPE_SIZE`); an unprivileged user
/// gets at most `fs.pipe-max-size` (1 MiB by default), and less once the
/// user's pipes exceed `fs.pipe-user-pages-soft`.
const MAX_PIPE: usize = 8 << 20;
/// A pipe's default size, which needs no `F_SETPIPE_SZ`.
const MIN_PIPE: usize = 64 << 10;

/// One pipe.
#[derive(Debug)]
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// Its capacity in bytes.
    size: usize,
    /// Its capacity in buffers (pages): a read of fewer bytes than free
    /// slots did not fill it.
    slots: usize,
}

/// One direction of a pair: from `socks[i]` to `socks[1 - i]`.
#[derive(Debug)]
struct Dir {
    pipe: Pipe,
    /// Bytes in the pipe.
    pending: usize,
    /// The source may hold input not read yet.
    readable: bool,
    /// The source reported its peer's end of stream (read hang-up): reads
    /// go on until they find it.
    hup: bool,
    /// End of stream read from the source.
    eof: bool,
    /// The destination was shut down for writing.
    shut: bool,
    /// The destination refused a write: wait for it to be writable.
    blocked: bool,
    /// Bytes written to the destination.
    total: u64,
}

/// What a joined pair moves bytes with.
#[derive(Debug)]
struct Pipes {
    dirs: [Dir; 2],
    /// Both sockets are in the epoll set.
    registered: bool,
    /// Output was added to the registration of each socket.
    out: [bool; 2],
}

/// What this module tracks: the pairs (by the id of their first socket),
/// which pair each socket belongs to, the pipe pool and the sockets opened
/// ahead in the guest's namespace.
#[derive(Debug, Default)]
pub(crate) struct Splicer {
    pairs: Pairs<Pipes>,
    pool: Vec<Pipe>,
    /// Size of the last pipe that could be resized: where new ones start.
    size: usize,
    /// TCP sockets opened in the guest's namespace, IPv4 and IPv6, with
    /// `TCP_NODELAY` set.
    /// Taken in the order they were opened (their source port windows
    /// follow each other).
    ns_socks: [VecDeque<OwnedFd>; 2],
    /// The first port of the next window handed out.
    next_port: u16,
    /// Whether a socket of each family was taken from there: only those
    /// pools are kept filled.
    ns_used: [bool; 2],
    /// Pipes opened (pool refills included), for tests.
    #[cfg(test)]
    pipes_opened: usize,
}

/// A new non-blocking pipe of at most `want` bytes (halving down to the
/// default size until the kernel accepts one).
fn new_pipe(want: usize) -> Result<Pipe, Errno> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(last_errno());
    }
    // SAFETY: two fresh descriptors owned by no one else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut size = want.clamp(MIN_PIPE, MAX_PIPE);
    while size > MIN_PIPE {
        let Ok(arg) = libc::c_int::try_from(size) else {
            size /= 2;
            continue;
        };
        // SAFETY: F_SETPIPE_SZ takes an integer; the result is the new size.
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, arg) };
        if let Ok(got) = usize::try_from(got) {
            size = got;
            break;
        }
        size /= 2;
    }
    let size = size.max(MIN_PIPE);
    Ok(Pipe {
        r,
        w,
        size,
        slots: size / page_size(),
    })
}

/// The size of a pipe buffer (a page).
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096).max(1)
}

/// The registration of a joined socket: input and read hang-up, edges.
fn base_mask() -> EpollFlags {
    EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET
}

#[cfg(test)]
thread_local! {
    /// `splice()` calls made by this thread (tests).
    static CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `splice(2)` of at most `len` bytes, non-blocking.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Result<usize, Errno> {
    #[cfg(test)]
    CALLS.with(|c| c.set(c.get() + 1));
    loop {
        // SAFETY: two valid descriptors, no offsets (sockets and pipes).
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) if last_errno().0 == libc::EINTR => continue,
            Err(_) => return Err(last_errno()),
        }
    }
}

impl Splicer {
    /// Opens the pool (pasta, when splicing is on): pipes as large as the
    /// kernel allows up to [`MAX_PIPE`].
    pub(crate) fn new() -> Self {
        let mut s = Splicer {
            size: MAX_PIPE,
            ..Splicer::default()
        };
        s.fill();
        log::debug!("splice: {} pipes of {} bytes", s.pool.len(), s.size);
        s
    }

    fn fill(&mut self) {
        while self.pool.len() < POOL_PIPES {
            match new_pipe(self.size) {
                Ok(p) => {
                    #[cfg(test)]
                    {
                        self.pipes_opened += 1;
                    }
                    self.size = p.size;
                    self.pool.push(p);
                }
                Err(e) => {
                    log::debug!("splice: pipe2: {e:?}");
                    return;
                }
            }
        }
    }

    fn take_pipe(&mut self) -> Result<Pipe, Errno> {
        if let Some(p) = self.pool.pop() {
            return Ok(p);
        }
        #[cfg(test)]
        {
            self.pipes_opened += 1;
        }
        new_pipe(if self.size == 0 { MAX_PIPE } else { self.size })
    }

    /// Whether `sock` belongs to a joined pair.
    pub(crate) fn owns(&self, sock: SockId) -> bool {
        self.pairs.owns(sock)
    }

    /// A TCP socket of `family` in the guest's namespace `ns`, for the far
    /// side of a connection from the host (`Action::Open` of a stream
    /// socket in `Netns::Guest`), with `TCP_NODELAY` set: from the sockets
    /// opened ahead, which are opened again, [`NS_POOL`] at once, if none
    /// is left (else [`Self::refill_ns`] does, off the connection's path).
    pub(crate) fn ns_socket(&mut self, ns: &GuestNs, family: Family) -> Result<OwnedFd, Errno> {
        let i = family_index(family);
        self.ns_used[i] = true;
        if let Some(fd) = self.ns_socks[i].pop_front() {
            return Ok(fd);
        }
        let err = self.fill_ns(ns, family);
        self.ns_socks[i]
            .pop_front()
            .ok_or(err.unwrap_or(Errno(libc::EIO)))
    }

    /// Tops up the pool of each family in use that runs low (see
    /// [`NS_LOW`]): one round trip to the namespace, after a join rather
    /// than before a connect.
    pub(crate) fn refill_ns(&mut self, ns: &GuestNs) {
        for family in [Family::V4, Family::V6] {
            let i = family_index(family);
            if self.ns_used[i] && self.ns_socks[i].len() < NS_LOW {
                self.fill_ns(ns, family);
            }
        }
    }

    /// Fills the pool of `family` up to [`NS_POOL`] in one round trip to
    /// the namespace; the error that stopped it, if any.
    fn fill_ns(&mut self, ns: &GuestNs, family: Family) -> Option<Errno> {
        let pool = &mut self.ns_socks[family_index(family)];
        let n = NS_POOL.saturating_sub(pool.len());
        if self.next_port < PORT_WINDOW.0 {
            self.next_port = first_port();
        }
        let first = self.next_port;
        let r = ns.run(move || {
            let mut fds = Vec::with_capacity(n);
            let mut port = first;
            for _ in 0..n {
                let fd = match crate::sock::open(SockKind::TcpStream, family) {
                    Ok(fd) => fd,
                    Err(e) => return (fds, port, Some(e)),
                };
                if let Err(e) = crate::sock::set_option(fd.as_fd(), passt_core::SockOpt::NoDelay) {
                    return (fds, port, Some(e));
                }
                // A kernel without per-socket port ranges picks as before.
                let _ = set_port_window(fd.as_fd(), port);
                port = next_window(port);
                fds.push(fd);
            }
            (fds, port, None)
        });
        let (fds, next, err) = match r {
            Ok(r) => r,
            Err(e) => (
                Vec::new(),
                first,
                Some(Errno(e.raw_os_error().unwrap_or(libc::EIO))),
            ),
        };
        if let Some(e) = err {
            log::debug!("splice: {} sockets opened ahead, then {e:?}", fds.len());
        }
        self.next_port = next;
        pool.extend(fds);
        err
    }

    /// Joins `a` (accepted) and `b` (connected) and moves what `a` holds.
    /// Returns the event for the core if the pair ended at once.
    pub(crate) fn join(&mut self, cx: &mut SockCx<'_>, a: SockId, b: SockId) -> Report {
        if let Some(r) = cx.missing(a, b) {
            return Some(r);
        }
        let pipes = match (self.take_pipe(), self.take_pipe()) {
            (Ok(p), Ok(q)) => [p, q],
            (Err(e), _) | (_, Err(e)) => {
                log::warn!("splice: no pipe for a new pair: {e:?}");
                return Some((a, SockEvent::SpliceEnded(Err(e))));
            }
        };
        let [p, q] = pipes;
        // The accepted side's peer has likely written already (a request);
        // the side just connected rarely has (a greeting), and the
        // registration reports it if so: reading it now would mostly find
        // nothing.
        let dir = |pipe, readable| Dir {
            pipe,
            pending: 0,
            readable,
            hup: false,
            eof: false,
            shut: false,
            blocked: false,
            total: 0,
        };
        let key = self.pairs.insert(Pair::new(
            a,
            b,
            Pipes {
                dirs: [dir(p, true), dir(q, false)],
                registered: false,
                out: [false; 2],
            },
        ));
        // Both sockets enter the epoll set after that first read: input
        // that came in the meantime is reported by the registration itself.
        let r = self.run(cx, key, [true, false]);
        // Refilled off the path of the first bytes, and only when low:
        // ended pairs give their pipes back.
        if self.pool.len() < POOL_LOW {
            self.fill();
        }
        r
    }

    /// Readiness of a socket of a pair.
    pub(crate) fn event(&mut self, cx: &mut SockCx<'_>, sock: SockId, flags: EpollFlags) -> Report {
        let (key, side) = self.pairs.live(sock)?;
        let pair = self.pairs.get_mut(key)?;
        if flags.contains(EpollFlags::EPOLLERR) {
            if let Some(e) = cx
                .socks
                .get(sock)
                .and_then(|e| crate::sock::so_error(e.fd.as_fd()))
            {
                return self.end(cx.socks, key, Err(e));
            }
        }
        let which = directions(side, flags, pair.dirs[1 - side].blocked);
        if which[side] {
            let d = &mut pair.dirs[side];
            d.readable = true;
            d.hup |= flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP);
        }
        if which[1 - side] {
            pair.dirs[1 - side].blocked = false;
        }
        if which == [false, false] {
            return None;
        }
        self.run(cx, key, which)
    }

    /// Moves what can be moved in the directions marked in `which`, then
    /// sets the interest, or ends the pair.
    fn run(&mut self, cx: &mut SockCx<'_>, key: u32, which: [bool; 2]) -> Report {
        let SockCx { epoll, socks } = cx;
        let pair = self.pairs.get_mut(key)?;
        for (i, go) in which.into_iter().enumerate() {
            if !go {
                continue;
            }
            let (src, dst) = (pair.socks[i], pair.socks[1 - i]);
            let (Some(s), Some(d)) = (socks.get(src), socks.get(dst)) else {
                return self.end(socks, key, Err(Errno::EBADF));
            };
            let last = pair.dirs[1 - i].shut;
            if let Err(e) = pump(&mut pair.dirs[i], s.fd.as_fd(), d.fd.as_fd(), last) {
                return self.end(socks, key, Err(e));
            }
        }
        if pair.dirs.iter().all(|d| d.shut) {
            let t = SpliceTotals {
                to_peer: pair.dirs[0].total,
                from_peer: pair.dirs[1].total,
            };
            return self.end(socks, key, Ok(t));
        }
        for side in 0..2 {
            let out = pair.out[side] || pair.dirs[1 - side].blocked;
            if pair.registered && out == pair.out[side] {
                continue;
            }
            let mut m = base_mask();
            if out {
                m |= EpollFlags::EPOLLOUT;
            }
            // A change of mask polls the socket: output possible by now is
            // reported at once.
            if let Err(e) = socks.set_mask(epoll, pair.socks[side], m) {
                return self.end(socks, key, Err(e));
            }
            pair.out[side] = out;
        }
        pair.registered = true;
        None
    }

    /// Marks the pair ended and reports `r` on its first socket. Its
    /// sockets stay in the epoll set until the core closes them, which
    /// takes them out (wake-ups until then are ignored).
    fn end(&mut self, socks: &mut SockTable, key: u32, r: Result<SpliceTotals, Errno>) -> Report {
        let pair = self.pairs.end_with_close(socks, key)?;
        if let Err(e) = r {
            log::debug!("splice {:?}/{:?}: {e:?}", pair.socks[0], pair.socks[1]);
        }
        Some((pair.socks[0], SockEvent::SpliceEnded(r)))
    }

    /// The core closes `sock`: the pair is forgotten, its empty pipes go
    /// back to the pool.
    pub(crate) fn forget(&mut self, sock: SockId) {
        let Some(pair) = self.pairs.remove(sock) else {
            return;
        };
        for d in pair.into_state().dirs {
            if d.pending == 0 && self.pool.len() < POOL_PIPES {
                self.pool.push(d.pipe);
            }
        }
    }

    /// Pairs joined and not yet closed (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Sockets opened ahead and not used yet, by family (tests).
    #[cfg(test)]
    pub(crate) fn ns_pooled(&self) -> [usize; 2] {
        [self.ns_socks[0].len(), self.ns_socks[1].len()]
    }
}

/// Where the windows of a new splicer start: anywhere in the range (from
/// the clock), so that a pasta started again in the same namespace within
/// a minute does not start on the ports its predecessor left in
/// `TIME_WAIT`.
fn first_port() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
    let span = u32::from(PORT_WINDOW.1 - PORT_WINDOW.0);
    (PORT_WINDOW.0 + u16::try_from(t % span).unwrap_or(0)) & !1
}

/// The window after the one that starts at `port`: two ports further on,
/// back to the start of the range past its end (a window is `port`, even,
/// and `port + 1`).
fn next_window(port: u16) -> u16 {
    if port < PORT_WINDOW.0 || port >= PORT_WINDOW.1 - 2 {
        PORT_WINDOW.0
    } else {
        (port + 2) & !1
    }
}

/// Restricts the source port `connect()` picks for `fd` to `port` and
/// `port + 1` (see [`PORT_WINDOW`]).
fn set_port_window(fd: BorrowedFd<'_>, port: u16) -> Result<(), Errno> {
    let v = u32::from(port) | (u32::from(port.saturating_add(1)) << 16);
    crate::sock::setsockopt_int(
        fd,
        libc::IPPROTO_IP,
        IP_LOCAL_PORT_RANGE,
        i32::from_ne_bytes(v.to_ne_bytes()),
    )
}

/// The source port window of `fd`, if it has one (0: none).
fn port_window(fd: BorrowedFd<'_>) -> u32 {
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `v` and `len` live across the call; the kernel writes at most
    // `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_LOCAL_PORT_RANGE,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    if r < 0 {
        0
    } else {
        v
    }
}

/// After a `connect()` of `fd` that failed with `EADDRNOTAVAIL`: if the
/// socket had a source port window, it is dropped (the kernel searches its
/// whole range again) and `true` says to connect once more.
pub(crate) fn clear_port_window(fd: BorrowedFd<'_>) -> bool {
    port_window(fd) != 0
        && crate::sock::setsockopt_int(fd, libc::IPPROTO_IP, IP_LOCAL_PORT_RANGE, 0).is_ok()
}

/// The index of `family` in per-family arrays.
fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The directions a readiness of the socket on `side` lets move: the one
/// it feeds if it has input (or hung up, or has an error, which a read
/// finds), the one towards it if that one waits for room (`waiting`) and
/// the socket can take output (or hung up). A socket woken only for output
/// is not read: it had no input, or its input is not wanted now; output
/// reported while nothing waits for it (edges report the whole state)
/// moves nothing.
fn directions(side: usize, flags: EpollFlags, waiting: bool) -> [bool; 2] {
    let input =
        EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
    let output = EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
    let mut run = [false; 2];
    run[side] = flags.intersects(input);
    run[1 - side] = waiting && flags.intersects(output);
    run
}

/// Moves bytes of one direction until the source has nothing more, or the
/// destination takes nothing more; then carries an end of stream through.
/// `last`: the other direction has ended, so this one ending ends the
/// pair, whose sockets the core closes at once: the close sends the FIN,
/// no `shutdown` is needed.
fn pump(d: &mut Dir, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, last: bool) -> Result<(), Errno> {
    if d.blocked {
        // Input noted; nothing moves until the destination has room.
        return Ok(());
    }
    loop {
        let mut moved = false;
        if !d.eof && d.readable && d.pending < d.pipe.size {
            let want = d.pipe.size - d.pending;
            // Each buffer in the pipe holds at least a byte.
            let free = d.pipe.slots.saturating_sub(d.pending);
            match splice(src, d.pipe.w_fd(), want) {
                Ok(0) => {
                    d.eof = true;
                    d.readable = false;
                }
                Ok(n) => {
                    d.pending += n;
                    moved = true;
                    // Fewer bytes than asked for and than free slots: the
                    // socket had no more (new input is a new edge), unless
                    // its end is still to be read.
                    if n < want && n < free && !d.hup {
                        d.readable = false;
                    }
                }
                // Nothing to read, or the pipe has no free slot (writing
                // below makes room, or the destination is blocked): from an
                // empty pipe, the socket is empty.
                Err(e) if e == Errno::EAGAIN => {
                    if d.pending == 0 {
                        d.readable = false;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if d.pending > 0 {
            match splice(d.pipe.r_fd(), dst, d.pending) {
                Ok(n) => {
                    d.pending -= n;
                    d.total += n as u64;
                    moved |= n > 0;
                }
                Err(e) if e == Errno::EAGAIN => {
                    d.blocked = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !moved {
            break;
        }
    }
    if d.eof && d.pending == 0 && !d.shut {
        // SAFETY: shutdown on a socket descriptor we hold.
        if !last && unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) } < 0 {
            let e = last_errno();
            if e.0 != libc::ENOTCONN {
                return Err(e);
            }
        }
        d.shut = true;
    }
    Ok(())
}

impl Pipe {
    fn r_fd(&self) -> BorrowedFd<'_> {
        self.r.as_fd()
    }
    fn w_fd(&self) -> BorrowedFd<'_> {
        self.w.as_fd()
    }
}

#[cfg(test)]
mod tests;
