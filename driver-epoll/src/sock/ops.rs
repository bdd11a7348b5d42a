//! Socket set-up: open, bind, connect, accept and socket options, with the
//! address conversions they share.

use super::*;

pub(super) fn sock_type(kind: SockKind) -> (SockType, Option<SockProtocol>) {
    match kind {
        SockKind::TcpStream | SockKind::TcpListener => (SockType::Stream, Some(SockProtocol::Tcp)),
        SockKind::Udp => (SockType::Datagram, Some(SockProtocol::Udp)),
        // Ping sockets: SOCK_DGRAM with IPPROTO_ICMP / IPPROTO_ICMPV6.
        _ => (SockType::Datagram, None),
    }
}

/// Creates a non-blocking, close-on-exec socket in the current namespace.
pub(crate) fn open(kind: SockKind, family: Family) -> Result<OwnedFd, Errno> {
    let af = match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    if matches!(kind, SockKind::Ping) {
        let (dom, proto) = match family {
            Family::V4 => (libc::AF_INET, libc::IPPROTO_ICMP),
            Family::V6 => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
        };
        // SAFETY: socket() takes no pointers; a non-negative result is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::socket(dom, libc::SOCK_DGRAM | flags.bits(), proto) };
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: see above: `fd` is fresh and owned by no one else.
        return Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
    }
    let (ty, proto) = sock_type(kind);
    socket::socket(af, ty, flags, proto).map_err(errno)
}

/// Creates a socket inside the network namespace `ns` (by a thread that is
/// in it; the socket stays there).
pub(crate) fn open_in_ns(
    ns: &crate::isolate::worker::GuestNs,
    kind: SockKind,
    family: Family,
) -> Result<OwnedFd, Errno> {
    ns.run(move || open(kind, family))
        .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?
}

pub(super) fn to_storage(addr: SocketAddr) -> SockaddrStorage {
    SockaddrStorage::from(addr)
}

/// Interface index given to link-local IPv6 destinations without one: the
/// host's IPv6 template interface (0: none).
static LINK_LOCAL_SCOPE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Sets the interface of link-local host-side destinations (the template
/// interface of IPv6), once at start-up.
pub(crate) fn set_link_local_scope(ifindex: u32) {
    LINK_LOCAL_SCOPE.store(ifindex, std::sync::atomic::Ordering::Relaxed);
}

/// `addr` with the template interface as scope if it is an IPv6
/// link-local address without one: the core's addresses carry no scope,
/// and the kernel refuses to connect or send to a link-local address
/// without knowing the link (EINVAL).
pub(super) fn scoped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) if a.scope_id() == 0 && a.ip().is_unicast_link_local() => {
            let mut a = a;
            a.set_scope_id(LINK_LOCAL_SCOPE.load(std::sync::atomic::Ordering::Relaxed));
            SocketAddr::V6(a)
        }
        other => other,
    }
}

pub(super) fn from_storage(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
    }
    s.as_sockaddr_in6()
        .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
}

/// Applies bind options, then binds.
pub(crate) fn bind(fd: BorrowedFd<'_>, addr: SocketAddr, opts: BindOpts) -> Result<(), Errno> {
    if opts.reuse_addr {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(errno)?;
    }
    if opts.freebind {
        let (level, name) = match addr {
            SocketAddr::V4(_) => (libc::SOL_IP, libc::IP_FREEBIND),
            SocketAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_FREEBIND),
        };
        setsockopt_int(fd, level, name, 1)?;
    }
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &opts.v6_only).map_err(errno)?;
    }
    if let Some(ifindex) = opts.device {
        // By index: no name look-up, which would open a netlink socket.
        let i = libc::c_int::try_from(ifindex).map_err(|_| Errno(libc::ENODEV))?;
        setsockopt_int(fd, libc::SOL_SOCKET, SO_BINDTOIFINDEX, i)?;
    }
    socket::bind(fd.as_raw_fd(), &to_storage(addr)).map_err(errno)
}

/// Starts a non-blocking connect: `Ok` if it completed at once,
/// `Err(EINPROGRESS)` if it is under way.
pub(crate) fn connect(fd: BorrowedFd<'_>, addr: SocketAddr) -> Result<(), Errno> {
    let to = to_storage(scoped(addr));
    match socket::connect(fd.as_raw_fd(), &to).map_err(errno) {
        // No free port in the window of a spliced connection's socket:
        // the kernel's own search, over its whole range.
        Err(e) if e.0 == libc::EADDRNOTAVAIL && super::splice::clear_port_window(fd) => {
            socket::connect(fd.as_raw_fd(), &to).map_err(errno)
        }
        r => r,
    }
}

/// Whether a connect that returned `EINPROGRESS` has finished already, and
/// how: `None` while it is under way. On loopback the handshake is done
/// within `connect()` itself, so one `poll()` here saves registering for
/// `EPOLLOUT` and a turn of the loop.
pub(crate) fn connect_finished(fd: BorrowedFd<'_>) -> Option<Result<(), Errno>> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r != 1 || p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) == 0 {
        return None;
    }
    if p.revents & (libc::POLLERR | libc::POLLHUP) == 0 {
        return Some(Ok(()));
    }
    Some(match super::so_error(fd) {
        None => Ok(()),
        Some(e) => Err(e),
    })
}

/// Accepts one connection (non-blocking, close-on-exec): the new socket, its
/// peer (from `accept4` itself) and its local address.
pub(crate) fn accept(fd: BorrowedFd<'_>) -> Result<(OwnedFd, SocketAddr, SocketAddr), Errno> {
    // SAFETY: an all-zero sockaddr_storage is valid; accept4 writes at most
    // `len` bytes of the peer's address into it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` are valid for writes; the result is a new fd.
    let r = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    // SAFETY: a fresh descriptor owned by no one else.
    let new: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(r) };
    // SAFETY: the kernel wrote a valid address of `len` bytes.
    let peer = unsafe {
        <SockaddrStorage as socket::SockaddrLike>::from_raw(
            (&ss as *const libc::sockaddr_storage).cast(),
            Some(len),
        )
    }
    .ok_or(Errno(libc::EAFNOSUPPORT))?;
    let local: SockaddrStorage = socket::getsockname(new.as_raw_fd()).map_err(errno)?;
    let inval = Errno(libc::EAFNOSUPPORT);
    Ok((
        new,
        from_storage(&peer).ok_or(inval)?,
        from_storage(&local).ok_or(inval)?,
    ))
}

pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> Result<(), Errno> {
    // SAFETY: `v` lives across the call and its size is passed along.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(super) fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> Result<libc::c_int, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes and `len` holds `v`'s size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(v)
    }
}

/// Sets one option.
pub(crate) fn set_option(fd: BorrowedFd<'_>, opt: SockOpt) -> Result<(), Errno> {
    let clamp = |v: u32| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    match opt {
        // Linux refuses TCP_MAXSEG above MAX_TCP_WINDOW (32767) with EINVAL: a
        // larger guest MSS (MTU 65520) is clamped, the kernel's own limit.
        SockOpt::TcpMaxSeg(v) => setsockopt_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            libc::c_int::from(v).min(MAX_TCP_MAXSEG),
        ),
        SockOpt::PeekOffset(v) => setsockopt_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, clamp(v)),
        SockOpt::Broadcast(v) => setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BROADCAST, v.into()),
        SockOpt::NoDelay => setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
        SockOpt::HopLimit { family, hops } => crate::sock::dgram::set_hop_limit(fd, family, hops),
        // SO_LINGER with a zero timeout: close() sends a reset, not a FIN.
        SockOpt::ResetOnClose => socket::setsockopt(
            &fd,
            sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .map_err(errno),
        _ => Err(Errno(libc::ENOPROTOOPT)),
    }
}

/// The pending error of a socket (`SO_ERROR`), if any.
pub(crate) fn so_error(fd: BorrowedFd<'_>) -> Option<Errno> {
    match socket::getsockopt(&fd, sockopt::SocketError) {
        Ok(0) => None,
        Ok(e) => Some(Errno(e)),
        Err(e) => Some(errno(e)),
    }
}
