//! Spliced pairs on real loopback sockets.

use super::*;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollTimeout};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};

/// A connected pair on loopback: (the client, pasta's accepted end made
/// non-blocking).
fn conn() -> (TcpStream, OwnedFd) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (a, _) = l.accept().unwrap();
    a.set_nonblocking(true).unwrap();
    (c, OwnedFd::from(a))
}

struct T {
    ep: Epoll,
    socks: SockTable,
    sp: Splicer,
    ended: Option<SockEvent>,
    wakeups: usize,
    /// The first socket of the pair (the one its end is reported on).
    key: SockId,
}

impl T {
    fn new() -> (T, TcpStream, TcpStream) {
        let (c1, a1) = conn();
        let (c2, a2) = conn();
        let t = T::joined(a1, a2);
        assert_eq!(t.sp.len(), 1);
        (t, c1, c2)
    }

    /// The accepted ends `a1` (as socket 2) and `a2` (socket 3), joined.
    fn joined(a1: OwnedFd, a2: OwnedFd) -> T {
        let mut t = T {
            ep: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap(),
            socks: SockTable::with_capacity(4),
            sp: Splicer::new(),
            ended: None,
            wakeups: 0,
            key: SockId(2),
        };
        t.socks.insert(SockId(2), a1);
        t.socks.insert(SockId(3), a2);
        let mut cx = SockCx {
            epoll: &t.ep,
            socks: &mut t.socks,
        };
        let r = t.sp.join(&mut cx, SockId(2), SockId(3));
        assert!(r.is_none());
        t
    }

    /// Runs the loop for up to `ms` (or until the pair ended).
    fn spin(&mut self, ms: u16) {
        let mut evs = [EpollEvent::empty(); 8];
        let end = std::time::Instant::now() + std::time::Duration::from_millis(ms.into());
        while std::time::Instant::now() < end && self.ended.is_none() {
            let n = self.ep.wait(&mut evs, EpollTimeout::from(10u16)).unwrap();
            for ev in &evs[..n] {
                self.wakeups += 1;
                let (_, id) = crate::event_loop::untoken(ev.data());
                if let Some((s, e)) = self.sp.event(
                    &mut SockCx {
                        epoll: &self.ep,
                        socks: &mut self.socks,
                    },
                    SockId(id),
                    ev.events(),
                ) {
                    assert_eq!(s, self.key);
                    self.ended = Some(e);
                }
            }
        }
    }
}

fn pump_bytes(t: &mut T, from: &mut TcpStream, to: &mut TcpStream, n: usize) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let mut got = Vec::new();
    to.set_nonblocking(true).unwrap();
    let mut sent = 0;
    from.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while got.len() < n && std::time::Instant::now() < end {
        if sent < n {
            if let Ok(k) = from.write(&data[sent..]) {
                sent += k;
            }
        }
        t.spin(5);
        while let Ok(k) = to.read(&mut buf) {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
    }
    assert_eq!(got.len(), n);
    assert!(got == data, "bytes differ");
}

/// Bytes both ways, each end's half-close carried through, then a clean
/// end with the totals.
#[test]
fn bytes_both_ways_and_half_closes() {
    let (mut t, mut c1, mut c2) = T::new();
    pump_bytes(&mut t, &mut c1, &mut c2, 3 << 20);
    pump_bytes(&mut t, &mut c2, &mut c1, 1 << 20);
    c1.shutdown(Shutdown::Write).unwrap();
    t.spin(200);
    c2.set_nonblocking(false).unwrap();
    c2.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(c2.read(&mut b).unwrap(), 0, "FIN carried through");
    assert!(t.ended.is_none(), "the other way is still open");
    pump_bytes(&mut t, &mut c2, &mut c1, 100_000);
    c2.shutdown(Shutdown::Write).unwrap();
    t.spin(2000);
    assert_eq!(
        t.ended,
        Some(SockEvent::SpliceEnded(Ok(SpliceTotals {
            to_peer: 3 << 20,
            from_peer: (1 << 20) + 100_000,
        })))
    );
    t.sp.forget(SockId(3));
    assert_eq!(t.sp.len(), 0);
    assert!(!t.sp.owns(SockId(2)));
}

/// A stalled reader: the pair stops waking up once pipe and buffers are
/// full, and everything arrives when the reader goes on.
#[test]
fn a_stalled_reader_does_not_wake_the_loop() {
    let (mut t, mut c1, mut c2) = T::new();
    c1.set_nonblocking(true).unwrap();
    let chunk = vec![5u8; 1 << 16];
    let mut sent = 0usize;
    // Fill everything on the way.
    for _ in 0..2000 {
        match c1.write(&chunk) {
            Ok(k) => sent += k,
            Err(_) => {
                t.spin(20);
                if c1.write(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
        }
    }
    t.spin(200);
    let before = t.wakeups;
    t.spin(500);
    assert!(
        t.wakeups - before <= 2,
        "{} wake-ups while stalled",
        t.wakeups - before
    );
    let mut got = 0usize;
    c2.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while got < sent && std::time::Instant::now() < end {
        t.spin(2);
        while let Ok(k) = c2.read(&mut buf) {
            if k == 0 {
                break;
            }
            got += k;
        }
    }
    assert_eq!(got, sent);
}

/// A wake-up for output moves the direction towards that socket only, and
/// only if it waits for room; one for input the direction it feeds; a
/// hang-up both.
#[test]
fn readiness_picks_the_directions() {
    use EpollFlags as F;
    assert_eq!(directions(0, F::EPOLLIN, false), [true, false]);
    assert_eq!(directions(1, F::EPOLLIN, false), [false, true]);
    assert_eq!(directions(0, F::EPOLLOUT, true), [false, true]);
    assert_eq!(directions(1, F::EPOLLOUT, true), [true, false]);
    assert_eq!(directions(0, F::EPOLLOUT, false), [false, false]);
    assert_eq!(directions(1, F::EPOLLIN | F::EPOLLOUT, true), [true, true]);
    assert_eq!(
        directions(1, F::EPOLLIN | F::EPOLLOUT, false),
        [false, true]
    );
    assert_eq!(directions(0, F::EPOLLHUP, true), [true, true]);
    assert_eq!(directions(0, F::EPOLLHUP, false), [true, false]);
    assert_eq!(directions(0, F::EPOLLERR, false), [true, false]);
}

/// Data and the end of stream that follows it, arriving before the join
/// and together after it: both reach the other side, and the pair ends
/// (edges: the end is read without a wake-up of its own).
#[test]
fn data_and_end_arriving_together_are_both_carried() {
    let (mut c1, a1) = conn();
    let (mut c2, a2) = conn();
    c1.write_all(b"early").unwrap();
    c1.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut t = T::joined(a1, a2);
    t.spin(200);
    c2.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    c2.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"early");
    assert!(t.ended.is_none(), "the other way is still open");
    c2.write_all(b"late").unwrap();
    c2.shutdown(Shutdown::Write).unwrap();
    t.spin(2000);
    assert!(t.ended.is_some());
    // The core closes both at once; the close carries the last end of
    // stream.
    t.sp.forget(SockId(2));
    t.socks.remove(&t.ep, SockId(2));
    t.socks.remove(&t.ep, SockId(3));
    let mut got = Vec::new();
    c1.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    c1.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"late");
    assert_eq!(
        t.ended,
        Some(SockEvent::SpliceEnded(Ok(SpliceTotals {
            to_peer: 5,
            from_peer: 4,
        })))
    );
}

/// Each socket is registered once, at the join, and the close takes it
/// out: no `epoll_ctl` as directions end or at the end.
#[test]
fn sockets_are_registered_once() {
    let (mut t, mut c1, mut c2) = T::new();
    for s in [SockId(2), SockId(3)] {
        assert!(t.socks.get(s).unwrap().registered, "{s:?} registered");
    }
    c1.write_all(b"ping").unwrap();
    t.spin(50);
    let mut b = [0u8; 4];
    c2.read_exact(&mut b).unwrap();
    c1.shutdown(Shutdown::Write).unwrap();
    t.spin(50);
    c2.shutdown(Shutdown::Write).unwrap();
    t.spin(2000);
    assert!(matches!(t.ended, Some(SockEvent::SpliceEnded(Ok(_)))));
    // Still in the epoll set, as far as the kernel knows; the table makes
    // no call for them.
    for s in [SockId(2), SockId(3)] {
        assert!(!t.socks.get(s).unwrap().registered);
        let fd = t.socks.get(s).unwrap().fd.as_fd();
        let mut ev = nix::sys::epoll::EpollEvent::new(base_mask(), 0);
        assert_eq!(t.ep.modify(fd, &mut ev), Ok(()), "{s:?} left in the set");
    }
    t.sp.forget(SockId(2));
    t.socks.remove(&t.ep, SockId(2));
    t.socks.remove(&t.ep, SockId(3));
    let mut evs = [EpollEvent::empty(); 4];
    assert_eq!(t.ep.wait(&mut evs, EpollTimeout::ZERO).unwrap(), 0);
}

/// Small exchanges cost one read and one write each: a read that got
/// less than it asked for is not followed by one that finds nothing.
#[test]
fn a_short_read_is_not_read_again() {
    let (mut t, c1, c2) = T::new();
    let mut ends = [c1, c2];
    for from in 0..2 {
        CALLS.with(|c| c.set(0));
        ends[from].write_all(b"request").unwrap();
        t.spin(20);
        let to = &mut ends[1 - from];
        to.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut got = [0u8; 7];
        to.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"request");
        assert_eq!(CALLS.with(|c| c.get()), 2, "splice() calls");
    }
}

/// Pairs that end give their pipes back: a stream of connections opens
/// no pipe beyond the pool's first fill.
#[test]
fn ended_pairs_give_their_pipes_back() {
    let (mut t, mut c1, mut c2) = T::new();
    let opened = t.sp.pipes_opened;
    assert_eq!(opened, POOL_PIPES);
    for i in 0..20u32 {
        c1.shutdown(Shutdown::Write).unwrap();
        c2.shutdown(Shutdown::Write).unwrap();
        t.spin(2000);
        assert!(
            matches!(t.ended, Some(SockEvent::SpliceEnded(Ok(_)))),
            "{:?}",
            t.ended
        );
        t.sp.forget(SockId(2 + 2 * i));
        t.socks.remove(&t.ep, SockId(2 + 2 * i));
        t.socks.remove(&t.ep, SockId(3 + 2 * i));
        t.ended = None;
        let (n1, a1) = conn();
        let (n2, a2) = conn();
        let (a, b) = (SockId(4 + 2 * i), SockId(5 + 2 * i));
        t.socks.insert(a, a1);
        t.socks.insert(b, a2);
        let mut cx = SockCx {
            epoll: &t.ep,
            socks: &mut t.socks,
        };
        assert!(t.sp.join(&mut cx, a, b).is_none());
        (c1, c2) = (n1, n2);
        t.key = a;
    }
    assert_eq!(t.sp.pipes_opened, opened);
    assert_eq!(t.sp.len(), 1);
}

/// A new namespace with its worker running, and the namespace's inode.
fn guest_ns_with_worker() -> (GuestNs, u64) {
    let (ns, inode) = crate::netns::tests::new_netns_with_inode();
    let g = GuestNs::new(ns);
    g.start_worker().unwrap();
    (g, inode)
}

/// The far sides of connections from the host are opened in the
/// guest's namespace, a batch at a time: the pool empties, then one
/// round trip to the namespace fills it again.
#[test]
fn namespace_sockets_are_opened_ahead_in_batches() {
    use std::os::unix::fs::MetadataExt;
    let (g, want) = guest_ns_with_worker();
    let mut sp = Splicer::default();
    for round in 0..2 {
        for i in 0..NS_POOL {
            let fd = sp.ns_socket(&g, Family::V6).unwrap();
            assert_eq!(sp.ns_pooled(), [0, NS_POOL - 1 - i], "round {round}");
            // SIOCGSKNS: the socket's network namespace.
            // SAFETY: an ioctl on a socket we own; it returns a new fd.
            let nsfd = unsafe { libc::ioctl(fd.as_raw_fd(), 0x894C) };
            assert!(nsfd >= 0);
            // SAFETY: the fresh descriptor the ioctl returned.
            let f = unsafe { std::fs::File::from_raw_fd(nsfd) };
            assert_eq!(f.metadata().unwrap().ino(), want);
        }
    }
    let _ = sp.ns_socket(&g, Family::V4).unwrap();
    assert_eq!(sp.ns_pooled(), [NS_POOL - 1, 0]);
}

/// After joins, the pool of a family in use is topped up once it runs
/// low, in one round trip; a family never used is not opened; the sockets
/// come with `TCP_NODELAY` set, and setting it again costs nothing.
#[test]
fn namespace_pools_in_use_are_refilled_when_low() {
    let (g, _) = guest_ns_with_worker();
    let mut sp = Splicer::default();
    sp.refill_ns(&g);
    assert_eq!(sp.ns_pooled(), [0, 0], "nothing used yet");
    let mut taken = Vec::new();
    for _ in 0..NS_POOL - NS_LOW {
        taken.push(sp.ns_socket(&g, Family::V4).unwrap());
    }
    sp.refill_ns(&g);
    assert_eq!(sp.ns_pooled(), [NS_LOW, 0], "not low yet");
    taken.push(sp.ns_socket(&g, Family::V4).unwrap());
    sp.refill_ns(&g);
    assert_eq!(sp.ns_pooled(), [NS_POOL, 0]);
    for fd in &taken {
        let on = nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::TcpNoDelay);
        assert_eq!(on, Ok(true));
    }
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    let mut socks = SockTable::with_capacity(1);
    socks.insert_no_delay(SockId(5), taken.pop().unwrap());
    let set = passt_core::Action::SetOption {
        sock: SockId(5),
        opt: passt_core::SockOpt::NoDelay,
    };
    assert_eq!(
        socks.execute(&ep, None, set, &[]),
        crate::sock::Outcome::Done
    );
    assert!(socks.get(SockId(5)).unwrap().no_delay);
}

/// A connect on loopback is finished within the call: it is reported
/// at once, and the socket never enters the epoll set for it.
#[test]
fn a_loopback_connect_is_reported_at_once() {
    use crate::sock::Outcome;
    use passt_core::Action;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    let mut socks = SockTable::with_capacity(2);
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let s = SockId(9);
    let open = Action::Open {
        sock: s,
        kind: SockKind::TcpStream,
        family: Family::V4,
        netns: passt_core::Netns::Host,
    };
    assert_eq!(socks.execute(&ep, None, open, &[]), Outcome::Done);
    let connect = Action::Connect {
        sock: s,
        addr: l.local_addr().unwrap(),
    };
    assert_eq!(
        socks.execute(&ep, None, connect, &[]),
        Outcome::Event(s, SockEvent::Connected(Ok(())))
    );
    let mut evs = [EpollEvent::empty(); 1];
    assert_eq!(ep.wait(&mut evs, EpollTimeout::ZERO).unwrap(), 0);
}

/// A reset on one side ends the pair with the error.
#[test]
fn a_reset_ends_the_pair_with_an_error() {
    let (mut t, c1, mut c2) = T::new();
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` lives across the call and its size is passed along.
    let r = unsafe {
        libc::setsockopt(
            c1.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    c2.write_all(&[1u8; 1000]).unwrap();
    drop(c1);
    t.spin(2000);
    assert!(
        matches!(t.ended, Some(SockEvent::SpliceEnded(Err(_)))),
        "{:?}",
        t.ended
    );
}

/// A new namespace with its loopback device up and its worker running.
fn guest_ns_with_lo() -> GuestNs {
    let (ns, _) = crate::netns::tests::new_netns_with_inode();
    crate::netns::in_netns(ns.as_fd(), || crate::netlink::link_up(1))
        .unwrap()
        .unwrap();
    let g = GuestNs::new(ns);
    g.start_worker().unwrap();
    g
}

/// The local port of a socket.
fn local_port(fd: BorrowedFd<'_>) -> u16 {
    let a: nix::sys::socket::SockaddrStorage =
        nix::sys::socket::getsockname(fd.as_raw_fd()).unwrap();
    a.as_sockaddr_in()
        .map(|a| a.port())
        .or_else(|| a.as_sockaddr_in6().map(|a| a.port()))
        .unwrap()
}

/// Starts a connect of `fd` to `to` (a loopback connect may still be under
/// way when the call returns).
fn start_connect(fd: BorrowedFd<'_>, to: std::net::SocketAddr) {
    match crate::sock::connect(fd, to) {
        Ok(()) => {}
        Err(e) => assert_eq!(e, Errno::EINPROGRESS),
    }
}

/// The guest namespace's sockets each come with a window of two source
/// ports (an even one and the next), the next window two ports further
/// on, in the order the sockets are taken (across refills of the pool),
/// and `connect()` takes one of the window's ports: connections from the
/// host use the namespace's ports in turn instead of having the kernel
/// search among those in `TIME_WAIT`.
#[test]
fn namespace_sockets_take_source_ports_in_turn() {
    let g = guest_ns_with_lo();
    let mut sp = Splicer::default();
    let mut taken = Vec::new();
    for _ in 0..NS_POOL + NS_LOW {
        taken.push(sp.ns_socket(&g, Family::V4).unwrap());
        sp.refill_ns(&g);
    }
    let firsts: Vec<u16> = taken
        .iter()
        .map(|fd| {
            let w = port_window(fd.as_fd());
            let lo = u16::try_from(w & 0xffff).unwrap();
            assert!(lo >= PORT_WINDOW.0 && lo < PORT_WINDOW.1, "{w:#x}");
            assert_eq!(w >> 16, u32::from(lo) + 1, "{w:#x}");
            lo
        })
        .collect();
    for w in firsts.windows(2) {
        assert_eq!(next_window(w[0]), w[1], "{firsts:?}");
    }
    let l = g
        .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .unwrap();
    let to = l.local_addr().unwrap();
    for (fd, first) in taken.iter().zip(&firsts) {
        start_connect(fd.as_fd(), to);
        let got = local_port(fd.as_fd());
        assert!(got == *first || got == first + 1, "{got} not in {first}..");
    }
}

/// The window wraps around at the end of the range.
#[test]
fn port_windows_wrap_at_the_end_of_the_range() {
    assert!(PORT_WINDOW.0.is_multiple_of(2));
    assert_eq!(next_window(PORT_WINDOW.1 - 3), PORT_WINDOW.1 - 1);
    assert_eq!(next_window(PORT_WINDOW.1 - 1), PORT_WINDOW.0);
    assert_eq!(next_window(PORT_WINDOW.0), PORT_WINDOW.0 + 2);
    assert_eq!(next_window(0), PORT_WINDOW.0);
    let p = first_port();
    assert!(p >= PORT_WINDOW.0 && p < PORT_WINDOW.1 && p.is_multiple_of(2));
}

/// A socket whose two ports are both taken is connected all the same, on
/// a port the kernel picks from its whole range, and keeps no window.
#[test]
fn busy_port_window_falls_back_to_the_kernels_choice() {
    let g = guest_ns_with_lo();
    let mut sp = Splicer::default();
    let (l, held, p) = g
        .run(|| {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            // Two consecutive ports of the range, bound by other sockets.
            let mut p = 40000;
            loop {
                let a = TcpListener::bind((Ipv4Addr::LOCALHOST, p));
                let b = TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1));
                if let (Ok(a), Ok(b)) = (a, b) {
                    return (l, [a, b], p);
                }
                p += 2;
            }
        })
        .unwrap();
    let fd = sp.ns_socket(&g, Family::V4).unwrap();
    set_port_window(fd.as_fd(), p).unwrap();
    assert_ne!(port_window(fd.as_fd()), 0);
    start_connect(fd.as_fd(), l.local_addr().unwrap());
    let got = local_port(fd.as_fd());
    assert!(got != p && got != p + 1, "{got} is held by {held:?}");
    assert_eq!(port_window(fd.as_fd()), 0);
}
