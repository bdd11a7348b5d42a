use super::*;
use nix::sys::epoll::EpollCreateFlags;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;

fn ep() -> Epoll {
    Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap()
}

fn wait_for(epoll: &Epoll) -> Vec<(u64, EpollFlags)> {
    let mut evs = [EpollEvent::empty(); 16];
    let n = epoll.wait(&mut evs, 2000u16).unwrap();
    evs[..n].iter().map(|e| (e.data(), e.events())).collect()
}

/// `Open` of socket `sock` of `kind` and `family` in the host's namespace.
fn open_action(sock: SockId, kind: SockKind, family: Family) -> Action {
    Action::Open {
        sock,
        kind,
        family,
        netns: passt_core::Netns::Host,
    }
}

/// Opens socket `sock` of `kind` and `family` in the host's namespace.
fn open_sock(t: &mut SockTable, epoll: &Epoll, sock: SockId, kind: SockKind, family: Family) {
    t.execute(epoll, None, open_action(sock, kind, family), &[]);
}

/// An epoll instance, and a socket table with socket `sock` of `kind` and
/// `family` open in it.
fn table_with(sock: SockId, kind: SockKind, family: Family) -> (Epoll, SockTable) {
    let epoll = ep();
    let mut t = SockTable::default();
    open_sock(&mut t, &epoll, sock, kind, family);
    (epoll, t)
}

/// Connects `sock` to `addr`: the events that say how it went, at once or
/// once epoll reports the socket.
fn connect_events(
    t: &mut SockTable,
    epoll: &Epoll,
    sock: SockId,
    addr: SocketAddr,
) -> Vec<SockEvent> {
    let r = t.execute(epoll, None, Action::Connect { sock, addr }, &[]);
    if r != Outcome::Done {
        return vec![ev(r)];
    }
    let got = wait_for(epoll);
    let mut evs = Vec::new();
    t.events_for(epoll, sock, got[0].1, &mut evs);
    evs
}

fn ev(o: Outcome) -> SockEvent {
    match o {
        Outcome::Event(_, e) => e,
        Outcome::Done => panic!("expected an event"),
    }
}

/// Listener, accept, connect, send, peek (with and without skip), consume,
/// TCP_INFO, shutdown, close: the whole stream life cycle over loopback.
#[test]
// Over 100 lines on purpose: one connection's life, open to close, each
// step depending on the state the previous one left.
fn tcp_lifecycle_on_loopback() {
    let epoll = ep();
    let mut t = SockTable::default();
    let (l, c) = (SockId(1), SockId(2));
    let open4 = |sock, kind| open_action(sock, kind, Family::V4);
    assert_eq!(
        t.execute(&epoll, None, open4(l, SockKind::TcpListener), &[]),
        Outcome::Done
    );
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let opts = BindOpts {
        reuse_addr: true,
        ..BindOpts::default()
    };
    let bind = Action::Bind {
        sock: l,
        addr: any,
        opts,
    };
    assert_eq!(t.execute(&epoll, None, bind, &[]), Outcome::Done);
    let listen = Action::Listen {
        sock: l,
        backlog: 8,
    };
    assert_eq!(t.execute(&epoll, None, listen, &[]), Outcome::Done);
    let interest = Interest {
        readable: true,
        ..Interest::default()
    };
    let si = Action::SetInterest { sock: l, interest };
    assert_eq!(t.execute(&epoll, None, si, &[]), Outcome::Done);
    let lfd = t.raw_fd(l).unwrap();
    let local: SockaddrStorage = socket::getsockname(lfd).unwrap();
    let port = from_storage(&local).unwrap().port();

    // A real peer connects; the listener turns readable.
    let mut peer = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let got = wait_for(&epoll);
    assert_eq!(got[0].0, crate::event_loop::token(TAG_SOCK, 1));
    let mut evs = Vec::new();
    t.events_for(&epoll, l, got[0].1, &mut evs);
    assert_eq!(evs, vec![SockEvent::Readable]);
    let acc = Action::Accept {
        listener: l,
        sock: c,
    };
    match ev(t.execute(&epoll, None, acc, &[])) {
        SockEvent::Accepted(Ok((p, loc))) => {
            assert_eq!(p, peer.local_addr().unwrap());
            assert_eq!(loc.port(), port);
        }
        e => panic!("{e:?}"),
    }

    // Guest → socket: one sendmsg of all the spans of `iov`; what it sent,
    // and the send buffer's state.
    let mut send = |iov: &[IoSlice<'_>]| {
        let spans = passt_core::SpanList {
            start: 0,
            count: iov.len() as u32,
        };
        match ev(t.execute(&epoll, None, Action::Send { sock: c, spans }, iov)) {
            SockEvent::StreamSent { sent, space } => (sent, space),
            e => panic!("{e:?}"),
        }
    };
    let data = b"hello, world";
    let (sent, space) = send(&[IoSlice::new(&data[..5]), IoSlice::new(&data[5..])]);
    assert_eq!(sent, Ok(12));
    // A small write taken whole: no SO_MEMINFO (the core estimates).
    assert_eq!(space, SendSpace::default());
    let mut buf = [0u8; 12];
    std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
    assert_eq!(&buf, data);
    // A larger one comes with the send buffer's state.
    let big = vec![7u8; 8192];
    let (sent, space) = send(&[IoSlice::new(&big)]);
    assert_eq!(sent, Ok(8192));
    assert!(space.sndbuf > 0 && space.writable(), "{space:?}");
    let mut buf = vec![0u8; 8192];
    std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
    assert_eq!(buf, big);

    // Socket → guest: peek into two slots, then again past a skip.
    std::io::Write::write_all(&mut peer, b"0123456789").unwrap();
    let cfd = t.get(c).unwrap().fd.try_clone().unwrap();
    let mut discard = Vec::new();
    let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
    for _ in 0..100 {
        let mut iov = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
        if peek(cfd.as_fd(), 0, &mut discard, &mut iov) == Ok(8) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!((&a, &b), (b"0123", b"4567"));
    let mut iov = [IoSliceMut::new(&mut a)];
    assert_eq!(peek(cfd.as_fd(), 6, &mut discard, &mut iov), Ok(4));
    assert_eq!(&a, b"6789");
    // Everything already in flight: not the end of the stream.
    let mut iov = [IoSliceMut::new(&mut a)];
    assert_eq!(
        peek(cfd.as_fd(), 10, &mut discard, &mut iov),
        Err(Errno::EAGAIN)
    );
    // SO_PEEK_OFF moves with each peek.
    let so = Action::SetOption {
        sock: c,
        opt: SockOpt::PeekOffset(0),
    };
    assert_eq!(t.execute(&epoll, None, so, &[]), Outcome::Done);
    let mut iov = [IoSliceMut::new(&mut a)];
    assert_eq!(peek(cfd.as_fd(), 0, &mut discard, &mut iov), Ok(4));
    let mut iov = [IoSliceMut::new(&mut a)];
    assert_eq!(peek(cfd.as_fd(), 0, &mut discard, &mut iov), Ok(4));
    assert_eq!(&a, b"4567");
    // Consume what the guest acknowledged.
    let cons = Action::Consume { sock: c, len: 3 };
    assert_eq!(t.execute(&epoll, None, cons, &[]), Outcome::Done);
    let mut rest = [0u8; 16];
    let n = socket::recv(cfd.as_raw_fd(), &mut rest, MsgFlags::MSG_DONTWAIT).unwrap();
    assert_eq!(&rest[..n], b"3456789");

    match ev(t.execute(&epoll, None, Action::QueryTcpInfo { sock: c }, &[])) {
        SockEvent::TcpInfo(i) => {
            assert!(i.sndbuf > 0);
            assert!(i.queued < i.sndbuf);
            assert_eq!(i.bytes_acked, 12 + 8192, "the bytes sent were acknowledged");
            assert!(i.snd_wnd > 0);
            assert!(i.snd_mss > 0);
        }
        e => panic!("{e:?}"),
    }

    // Read hang-up after the peer shuts down its side.
    let si = Action::SetInterest {
        sock: c,
        interest: Interest {
            readable: true,
            read_hangup: true,
            ..Interest::default()
        },
    };
    assert_eq!(t.execute(&epoll, None, si, &[]), Outcome::Done);
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let got = wait_for(&epoll);
    let mut evs = Vec::new();
    t.events_for(&epoll, c, got[0].1, &mut evs);
    assert!(evs.contains(&SockEvent::ReadHangUp), "{evs:?}");
    // Now the 7 bytes left, all in flight, are the end of the stream.
    let mut iov = [IoSliceMut::new(&mut a)];
    assert_eq!(peek(cfd.as_fd(), 7, &mut discard, &mut iov), Ok(0));
    assert_eq!(
        t.execute(&epoll, None, Action::ShutdownWrite { sock: c }, &[]),
        Outcome::Done
    );
    let n = std::io::Read::read(&mut peer, &mut buf).unwrap();
    assert_eq!(n, 0, "peer sees our FIN");
    t.execute(&epoll, None, Action::Close { sock: c }, &[]);
    assert!(t.get(c).is_none());
    drop(cfd);
}

#[test]
fn connect_in_progress_reports_connected() {
    let srv = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let s = SockId(7);
    let (epoll, mut t) = table_with(s, SockKind::TcpStream, Family::V6);
    let evs = connect_events(&mut t, &epoll, s, srv.local_addr().unwrap());
    assert_eq!(evs, vec![SockEvent::Connected(Ok(()))]);
    // Refused: a port nobody listens on.
    let port = srv.local_addr().unwrap().port();
    drop(srv);
    let s2 = SockId(8);
    open_sock(&mut t, &epoll, s2, SockKind::TcpStream, Family::V6);
    let evs = connect_events(
        &mut t,
        &epoll,
        s2,
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    );
    assert_eq!(evs[0], SockEvent::Connected(Err(Errno::ECONNREFUSED)));
}

#[test]
fn udp_datagrams_and_errors() {
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let s = SockId(3);
    let (epoll, mut t) = table_with(s, SockKind::Udp, Family::V4);
    let bind = Action::Bind {
        sock: s,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        opts: BindOpts::default(),
    };
    assert_eq!(t.execute(&epoll, None, bind, &[]), Outcome::Done);
    let conn = Action::Connect {
        sock: s,
        addr: peer.local_addr().unwrap(),
    };
    assert_eq!(
        ev(t.execute(&epoll, None, conn, &[])),
        SockEvent::Connected(Ok(()))
    );
    let iov = [
        IoSlice::new(b"one"),
        IoSlice::new(b"two!"),
        IoSlice::new(b"3"),
    ];
    let sd = Action::SendDatagrams {
        sock: s,
        spans: passt_core::SpanList { start: 0, count: 3 },
        to: None,
    };
    assert_eq!(
        ev(t.execute(&epoll, None, sd, &iov)),
        SockEvent::Sent(Ok(3))
    );
    let mut b = [0u8; 16];
    for want in [&b"one"[..], b"two!", b"3"] {
        let n = peer.recv(&mut b).unwrap();
        assert_eq!(&b[..n], want);
    }
    // Unknown sockets and failed binds are reported, not ignored.
    let bogus = Action::Send {
        sock: SockId(99),
        spans: passt_core::SpanList::default(),
    };
    assert_eq!(
        ev(t.execute(&epoll, None, bogus, &[])),
        SockEvent::StreamSent {
            sent: Err(Errno::EBADF),
            space: SendSpace::default()
        }
    );
    let s2 = SockId(4);
    open_sock(&mut t, &epoll, s2, SockKind::Udp, Family::V4);
    let taken = Action::Bind {
        sock: s2,
        addr: peer.local_addr().unwrap(),
        opts: BindOpts::default(),
    };
    assert_eq!(
        ev(t.execute(&epoll, None, taken, &[])),
        SockEvent::OpenFailed(Errno::EADDRINUSE)
    );
    assert!(t.get(s2).is_none(), "a failed bind forgets the socket");
    assert_eq!(t.len(), 1);
}

/// `--freebind`: a listener binds an address the host does not have
/// (yet); without it the kernel refuses.
#[test]
fn freebind_binds_addresses_not_configured() {
    let epoll = ep();
    let mut t = SockTable::default();
    let nonlocal = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
        .is_ok_and(|v| v.trim() != "0");
    for (i, freebind) in [(0u32, false), (1, true)] {
        let sock = SockId(10 + i);
        open_sock(&mut t, &epoll, sock, SockKind::TcpListener, Family::V4);
        let bind = Action::Bind {
            sock,
            addr: SocketAddr::from((Ipv4Addr::new(192, 0, 2, 199), 0)),
            opts: BindOpts {
                freebind,
                ..BindOpts::default()
            },
        };
        let out = t.execute(&epoll, None, bind, &[]);
        match (freebind, nonlocal) {
            (true, _) | (false, true) => assert_eq!(out, Outcome::Done),
            (false, false) => {
                assert_eq!(ev(out), SockEvent::OpenFailed(Errno(libc::EADDRNOTAVAIL)))
            }
        }
    }
}

/// The kernel version as (major, minor), from uname.
fn kernel_version() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn peek_offset_probe_matches_kernel() {
    let v = kernel_version();
    if v >= (6, 9) {
        assert!(probe_peek_offset(), "kernel {v:?} has SO_PEEK_OFF for TCP");
    } else if v.0 > 0 {
        assert!(
            !probe_peek_offset(),
            "kernel {v:?} lacks SO_PEEK_OFF for TCP"
        );
    }
}

/// The window the core derives from `SO_MEMINFO` (free space less a
/// sixteenth) is taken whole by one sendmsg of guest-sized segments,
/// round after round while the peer reads nothing, and once it is
/// smaller than a segment the socket is not writable: a guest that
/// fills the window leaves the kernel's wake-up to reopen it.
#[test]
fn window_from_meminfo_is_taken_whole_and_closes_unwritable() {
    let srv = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let c = TcpStream::connect(srv.local_addr().unwrap()).unwrap();
    let (_peer, _) = srv.accept().unwrap();
    let fd = c.as_fd();
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 65536).unwrap();
    let raw = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap();
    let info = tcp_info(fd).unwrap();
    assert_eq!(info.sndbuf, u32::try_from(raw).unwrap());
    c.set_nonblocking(true).unwrap();
    let seg = vec![0x5au8; 1448];
    let mut rounds = 0;
    loop {
        let sp = send_space(fd).unwrap();
        let free = sp.sndbuf.saturating_sub(sp.queued);
        let window = (free - free / 16) as usize;
        if window < seg.len() {
            break;
        }
        let n = window / seg.len();
        let iov: Vec<IoSlice<'_>> = (0..n).map(|_| IoSlice::new(&seg)).collect();
        let sent = send_stream(fd, &iov).unwrap();
        assert_eq!(sent, n * seg.len(), "round {rounds}: {sp:?}");
        rounds += 1;
        assert!(rounds < 1000);
    }
    let sp = send_space(fd).unwrap();
    assert!(!sp.writable(), "{sp:?}");
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    assert_eq!(r, 0, "not writable with the window closed");
}

/// More spans than one sendmsg takes (IOV_MAX) are all written: a short
/// count only ever means a full buffer.
#[test]
fn more_spans_than_iov_max_are_all_sent() {
    let srv = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let c = TcpStream::connect(srv.local_addr().unwrap()).unwrap();
    let (mut peer, _) = srv.accept().unwrap();
    c.set_nonblocking(true).unwrap();
    let seg = [0x42u8; 100];
    let iov: Vec<IoSlice<'_>> = (0..3000).map(|_| IoSlice::new(&seg)).collect();
    assert_eq!(send_stream(c.as_fd(), &iov), Ok(300_000));
    let mut got = vec![0u8; 300_000];
    std::io::Read::read_exact(&mut peer, &mut got).unwrap();
    assert!(got.iter().all(|&b| b == 0x42));
}

/// TCP_MAXSEG above 32767 (a guest MTU of 65520) is clamped rather than
/// failing with EINVAL.
#[test]
fn large_maxseg_is_clamped() {
    let fd = open(SockKind::TcpStream, Family::V4).unwrap();
    set_option(fd.as_fd(), SockOpt::TcpMaxSeg(65480)).unwrap();
    let v = getsockopt_int(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG).unwrap();
    assert!(v > 0 && v <= MAX_TCP_MAXSEG, "{v}");
    set_option(fd.as_fd(), SockOpt::TcpMaxSeg(1460)).unwrap();
}

#[test]
fn epoll_flags_map() {
    let i = Interest {
        readable: true,
        writable: false,
        read_hangup: true,
        edge: true,
    };
    assert_eq!(
        epoll_flags(i),
        EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET
    );
    assert_eq!(epoll_flags(Interest::default()), EpollFlags::empty());
}
