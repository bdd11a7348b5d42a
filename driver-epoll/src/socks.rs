//! Socket actions of the core carried out on real file descriptors.
//!
//! [`SockTable`] maps the core's [`SockId`]s to owned file descriptors and
//! carries out every [`Action`] variant except `Peek`, which needs the transmit
//! slots of the event loop (see `event_loop.rs`; the `recvmsg(MSG_PEEK)` itself
//! is [`peek`] here). Results go back to the core as [`SockEvent`]s.
//!
//! Connect: a non-blocking `connect()` that returns `EINPROGRESS` is finished
//! when epoll reports the socket writable (or in error); until then the socket
//! is watched for `EPOLLOUT` in addition to whatever interest the core set, and
//! the outcome is reported as `SockEvent::Connected`, not as readiness.
//!
//! Sockets of the guest namespace (pasta, `Netns::Guest`) are created by a
//! thread inside the namespace (`isolate::worker`): a socket stays in the
//! namespace it was created in, and entering a network namespace only
//! changes the calling thread.

use nix::errno::Errno as NixErrno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};
use passt_core::{
    Action, BindOpts, Errno, Family, Interest, SendSpace, SockEvent, SockId, SockKind, SockOpt,
    TcpInfo,
};
use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Tag of socket events in the epoll data word (see `event_loop::Token`).
pub(crate) const TAG_SOCK: u64 = 1;

/// `SO_PEEK_OFF` (Linux, all architectures but the few that renumber it).
const SO_PEEK_OFF: libc::c_int = 42;
/// Largest value Linux accepts for `TCP_MAXSEG` (`MAX_TCP_WINDOW`).
const MAX_TCP_MAXSEG: libc::c_int = 32767;
/// `SO_MEMINFO`: the socket's memory accounting (`SK_MEMINFO_*` words).
const SO_MEMINFO: libc::c_int = 55;
/// Words of `SO_MEMINFO` (`SK_MEMINFO_VARS`).
const SK_MEMINFO_VARS: usize = 9;
/// `SK_MEMINFO_SNDBUF`
const SK_MEMINFO_SNDBUF: usize = 3;
/// `SK_MEMINFO_WMEM_QUEUED`
const SK_MEMINFO_WMEM_QUEUED: usize = 5;
/// `SO_BINDTOIFINDEX` (Linux 5.0; the generic value, not that of the few
/// architectures that renumber socket options).
const SO_BINDTOIFINDEX: libc::c_int = 62;

/// System calls of the socket actions while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // `open`: TCP, UDP and ping sockets of both families, nothing else.
    SYS_socket[0: libc::AF_INET, libc::AF_INET6],
    // `bind`, `listen`, `connect`, `accept` and what they report.
    SYS_bind,
    SYS_listen,
    SYS_connect,
    SYS_accept4,
    SYS_getsockname,
    SYS_getpeername,
    // Socket options (`bind` options, TCP_INFO, SO_MEMINFO, SO_ERROR,
    // SO_PEEK_OFF, ...).
    SYS_setsockopt,
    SYS_getsockopt,
    // Stream data: `sendmsg`, peeks (`recvmsg`), consuming acknowledged
    // data (`recv` with MSG_TRUNC), datagrams out (`sendmmsg`).
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_recvfrom,
    SYS_sendmmsg,
    // Half-close.
    SYS_shutdown,
    // Whether the peer shut down its side (no wait).
    #[cfg(target_arch = "x86_64")]
    SYS_poll,
    #[cfg(not(target_arch = "x86_64"))]
    SYS_ppoll,
    SYS_close,
];

fn errno(e: NixErrno) -> Errno {
    Errno(e as i32)
}

fn last_errno() -> Errno {
    Errno(NixErrno::last_raw())
}

/// One socket the core asked for.
#[derive(Debug)]
pub(crate) struct SockEntry {
    pub(crate) fd: OwnedFd,
    /// The interest the core asked for (`None`: not registered by the core).
    interest: Option<Interest>,
    /// Whether the fd is in the epoll set.
    registered: bool,
    /// The mask it is registered with.
    mask: EpollFlags,
    /// A non-blocking connect is under way.
    connecting: bool,
    /// A UDP or ping socket: errors wait in its error queue (IP_RECVERR).
    dgram: bool,
}

/// The `SockId → fd` table.
#[derive(Debug, Default)]
pub(crate) struct SockTable {
    map: HashMap<u32, SockEntry>,
}

/// What carrying out an action produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing to report.
    Done,
    /// Report this to the core.
    Event(SockId, SockEvent),
}

impl SockTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        SockTable {
            map: HashMap::with_capacity(n),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, sock: SockId) -> Option<&SockEntry> {
        self.map.get(&sock.0)
    }

    /// The raw fd of `sock`, if it exists.
    #[cfg(test)]
    pub(crate) fn raw_fd(&self, sock: SockId) -> Option<std::os::fd::RawFd> {
        self.map.get(&sock.0).map(|e| e.fd.as_raw_fd())
    }

    /// Inserts a socket (an `Open` that succeeded, or an accepted one).
    pub(crate) fn insert(&mut self, sock: SockId, fd: OwnedFd) {
        // The core reuses ids only after `Close`; an open id is replaced (and
        // its old fd closed on drop).
        self.map.insert(
            sock.0,
            SockEntry {
                fd,
                interest: None,
                registered: false,
                mask: EpollFlags::empty(),
                connecting: false,
                dgram: false,
            },
        );
    }

    /// Registers `sock` in the epoll set with exactly `flags`, or takes it
    /// out if `flags` is empty (spliced pairs manage their own interest).
    pub(crate) fn set_mask(
        &mut self,
        epoll: &Epoll,
        sock: SockId,
        flags: EpollFlags,
    ) -> Result<(), Errno> {
        let Some(e) = self.map.get_mut(&sock.0) else {
            return Err(Errno::EBADF);
        };
        e.interest = None;
        e.connecting = false;
        if flags.is_empty() {
            if e.registered {
                e.registered = false;
                e.mask = flags;
                return epoll.delete(e.fd.as_fd()).map_err(errno);
            }
            return Ok(());
        }
        apply_mask(epoll, sock, e, flags, false)
    }

    /// Closes and forgets `sock`.
    pub(crate) fn remove(&mut self, epoll: &Epoll, sock: SockId) {
        if let Some(e) = self.map.remove(&sock.0) {
            if e.registered {
                let _ = epoll.delete(e.fd.as_fd());
            }
        }
    }

    /// Carries out one action. `Peek` is not handled here (the caller owns the
    /// transmit slots); `guest_ns` is the guest's network namespace (pasta).
    /// `spans` are the byte runs of a `Send`/`SendDatagrams` action, already
    /// resolved against the batch buffer.
    pub(crate) fn execute(
        &mut self,
        epoll: &Epoll,
        guest_ns: Option<&crate::isolate::worker::GuestNs>,
        action: Action,
        spans: &[IoSlice<'_>],
    ) -> Outcome {
        match action {
            Action::Open {
                sock,
                kind,
                family,
                netns,
            } => {
                let r = match (netns, guest_ns) {
                    (passt_core::Netns::Guest, Some(ns)) => open_in_ns(ns, kind, family),
                    (passt_core::Netns::Guest, None) => Err(Errno(libc::ENOSYS)),
                    _ => open(kind, family),
                };
                match r {
                    Ok(fd) => {
                        if matches!(kind, SockKind::Udp | SockKind::Ping) {
                            if let Err(e) = crate::dgram::enable_recverr(fd.as_fd(), family) {
                                log::debug!("{sock:?}: IP_RECVERR: {e:?}");
                            }
                        }
                        self.insert(sock, fd);
                        if let Some(e) = self.map.get_mut(&sock.0) {
                            e.dgram = matches!(kind, SockKind::Udp | SockKind::Ping);
                        }
                        Outcome::Done
                    }
                    Err(e) => Outcome::Event(sock, SockEvent::OpenFailed(e)),
                }
            }
            Action::Bind { sock, addr, opts } => {
                let Some(e) = self.map.get(&sock.0) else {
                    return Outcome::Event(sock, SockEvent::OpenFailed(Errno::EBADF));
                };
                match bind(e.fd.as_fd(), addr, opts) {
                    Ok(()) => Outcome::Done,
                    Err(err) => {
                        self.remove(epoll, sock);
                        Outcome::Event(sock, SockEvent::OpenFailed(err))
                    }
                }
            }
            Action::Listen { sock, backlog } => {
                let Some(e) = self.map.get(&sock.0) else {
                    return Outcome::Event(sock, SockEvent::OpenFailed(Errno::EBADF));
                };
                let bl = Backlog::new(i32::try_from(backlog).unwrap_or(i32::MAX))
                    .unwrap_or(Backlog::MAXCONN);
                match socket::listen(&e.fd, bl) {
                    Ok(()) => Outcome::Done,
                    Err(err) => {
                        self.remove(epoll, sock);
                        Outcome::Event(sock, SockEvent::OpenFailed(errno(err)))
                    }
                }
            }
            Action::Connect { sock, addr } => {
                let Some(e) = self.map.get_mut(&sock.0) else {
                    return Outcome::Event(sock, SockEvent::Connected(Err(Errno::EBADF)));
                };
                match connect(e.fd.as_fd(), addr) {
                    Ok(()) => Outcome::Event(sock, SockEvent::Connected(Ok(()))),
                    Err(err) if err == Errno::EINPROGRESS => {
                        e.connecting = true;
                        if let Err(err) = sync_epoll(epoll, sock, e, false) {
                            e.connecting = false;
                            return Outcome::Event(sock, SockEvent::Connected(Err(err)));
                        }
                        Outcome::Done
                    }
                    Err(err) => Outcome::Event(sock, SockEvent::Connected(Err(err))),
                }
            }
            Action::Accept { listener, sock } => {
                let Some(l) = self.map.get(&listener.0) else {
                    return Outcome::Event(sock, SockEvent::Accepted(Err(Errno::EBADF)));
                };
                match accept(l.fd.as_fd()) {
                    Ok((fd, peer, local)) => {
                        self.insert(sock, fd);
                        Outcome::Event(sock, SockEvent::Accepted(Ok((peer, local))))
                    }
                    Err(e) => Outcome::Event(sock, SockEvent::Accepted(Err(e))),
                }
            }
            Action::SetInterest { sock, interest } => {
                let Some(e) = self.map.get_mut(&sock.0) else {
                    log::debug!("{sock:?}: interest for unknown socket");
                    return Outcome::Done;
                };
                e.interest = Some(interest);
                if let Err(err) = sync_epoll(epoll, sock, e, true) {
                    log::debug!("{sock:?}: epoll_ctl: {err:?}");
                    return Outcome::Event(sock, SockEvent::Error(err));
                }
                Outcome::Done
            }
            Action::SetOption { sock, opt } => {
                if let Some(e) = self.map.get(&sock.0) {
                    if let Err(err) = set_option(e.fd.as_fd(), opt) {
                        log::debug!("{sock:?}: setsockopt {opt:?}: {err:?}");
                    }
                }
                Outcome::Done
            }
            Action::Send { sock, .. } => {
                let (sent, space) = match self.map.get(&sock.0) {
                    Some(e) => {
                        let r = send_stream(e.fd.as_fd(), spans);
                        // The window to the guest follows from the buffer
                        // right after the write: one getsockopt, here.
                        (r, send_space(e.fd.as_fd()).unwrap_or_default())
                    }
                    None => (Err(Errno::EBADF), SendSpace::default()),
                };
                Outcome::Event(sock, SockEvent::StreamSent { sent, space })
            }
            Action::SendDatagrams { sock, to, .. } => {
                let r = match self.map.get(&sock.0) {
                    Some(e) => send_datagrams(e.fd.as_fd(), spans, to),
                    None => Err(Errno::EBADF),
                };
                Outcome::Event(sock, SockEvent::Sent(r))
            }
            Action::Consume { sock, len } => {
                if let Some(e) = self.map.get(&sock.0) {
                    if let Err(err) = consume(e.fd.as_fd(), len) {
                        log::debug!("{sock:?}: discarding {len} bytes: {err:?}");
                    }
                }
                Outcome::Done
            }
            Action::QuerySendSpace { sock } => match self.map.get(&sock.0) {
                Some(e) => match send_space(e.fd.as_fd()) {
                    Ok(sp) => Outcome::Event(sock, SockEvent::SendSpace(sp)),
                    Err(err) => Outcome::Event(sock, SockEvent::Error(err)),
                },
                None => Outcome::Event(sock, SockEvent::Error(Errno::EBADF)),
            },
            Action::QueryTcpInfo { sock } => match self.map.get(&sock.0) {
                Some(e) => match tcp_info(e.fd.as_fd()) {
                    Ok(i) => Outcome::Event(sock, SockEvent::TcpInfo(i)),
                    Err(err) => Outcome::Event(sock, SockEvent::Error(err)),
                },
                None => Outcome::Event(sock, SockEvent::Error(Errno::EBADF)),
            },
            Action::ShutdownWrite { sock } => {
                if let Some(e) = self.map.get(&sock.0) {
                    let _ = socket::shutdown(e.fd.as_raw_fd(), socket::Shutdown::Write);
                }
                Outcome::Done
            }
            Action::Close { sock } => {
                self.remove(epoll, sock);
                Outcome::Done
            }
            Action::Peek { sock, .. } => {
                // Handled by the event loop; reaching here is a driver bug.
                log::error!("{sock:?}: peek routed to the socket table");
                Outcome::Done
            }
            other => {
                log::warn!("unsupported action {other:?}");
                Outcome::Done
            }
        }
    }

    /// Translates epoll flags on `sock` into core events, in the order error,
    /// hang-up, read hang-up, readable, writable. A pending connect is
    /// completed instead (`Connected`).
    pub(crate) fn events_for(
        &mut self,
        epoll: &Epoll,
        sock: SockId,
        flags: EpollFlags,
        out: &mut Vec<SockEvent>,
    ) {
        let Some(e) = self.map.get_mut(&sock.0) else {
            return;
        };
        if e.connecting {
            if flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                e.connecting = false;
                let err = so_error(e.fd.as_fd());
                let _ = sync_epoll(epoll, sock, e, false);
                out.push(SockEvent::Connected(match err {
                    None => Ok(()),
                    Some(err) => Err(err),
                }));
            }
            return;
        }
        if flags.contains(EpollFlags::EPOLLERR) && e.dgram {
            // Empty the error queue, or EPOLLERR stays up; SO_ERROR holds
            // the last of them again.
            let pending = so_error(e.fd.as_fd());
            let n = crate::dgram::drain_errors(e.fd.as_fd(), |err, from| {
                log::debug!("{sock:?}: error {err:?} reported by {from:?}");
                out.push(SockEvent::Error(err));
            });
            if let (0, Some(err)) = (n, pending) {
                out.push(SockEvent::Error(err));
            }
        } else if flags.contains(EpollFlags::EPOLLERR) {
            let err = so_error(e.fd.as_fd()).unwrap_or(Errno(libc::EIO));
            out.push(SockEvent::Error(err));
        }
        if flags.contains(EpollFlags::EPOLLHUP) {
            out.push(SockEvent::HangUp);
        }
        if flags.contains(EpollFlags::EPOLLRDHUP) {
            out.push(SockEvent::ReadHangUp);
        }
        if flags.contains(EpollFlags::EPOLLIN) {
            out.push(SockEvent::Readable);
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            out.push(SockEvent::Writable);
        }
    }
}

/// The epoll mask for an interest.
pub(crate) fn epoll_flags(i: Interest) -> EpollFlags {
    let mut f = EpollFlags::empty();
    if i.readable {
        f |= EpollFlags::EPOLLIN;
    }
    if i.writable {
        f |= EpollFlags::EPOLLOUT;
    }
    if i.read_hangup {
        f |= EpollFlags::EPOLLRDHUP;
    }
    if i.edge {
        f |= EpollFlags::EPOLLET;
    }
    f
}

/// Brings the epoll registration of `e` in line with its interest and state.
/// `rearm`: the core set the interest (again): an edge-triggered mask is set
/// even if unchanged, since `EPOLL_CTL_MOD` polls the socket, which the core
/// counts on (a socket found not writable arms the kernel's wake-up for
/// free send space). Otherwise a mask already in place needs no system call.
fn sync_epoll(epoll: &Epoll, sock: SockId, e: &mut SockEntry, rearm: bool) -> Result<(), Errno> {
    let mut flags = e.interest.map(epoll_flags).unwrap_or(EpollFlags::empty());
    if e.connecting {
        flags |= EpollFlags::EPOLLOUT;
    }
    let rearm = rearm && flags.contains(EpollFlags::EPOLLET);
    apply_mask(epoll, sock, e, flags, rearm)
}

/// Registers `e` with `flags` (or modifies its registration); a mask already
/// in place needs no system call unless `rearm`.
fn apply_mask(
    epoll: &Epoll,
    sock: SockId,
    e: &mut SockEntry,
    flags: EpollFlags,
    rearm: bool,
) -> Result<(), Errno> {
    if e.registered && e.mask == flags && !rearm {
        return Ok(());
    }
    let mut ev = EpollEvent::new(flags, crate::event_loop::token(TAG_SOCK, sock.0));
    let r = if e.registered {
        epoll.modify(e.fd.as_fd(), &mut ev)
    } else {
        epoll.add(e.fd.as_fd(), ev)
    };
    r.map_err(errno)?;
    e.registered = true;
    e.mask = flags;
    Ok(())
}

fn sock_type(kind: SockKind) -> (SockType, Option<SockProtocol>) {
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

fn to_storage(addr: SocketAddr) -> SockaddrStorage {
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
fn scoped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) if a.scope_id() == 0 && a.ip().is_unicast_link_local() => {
            let mut a = a;
            a.set_scope_id(LINK_LOCAL_SCOPE.load(std::sync::atomic::Ordering::Relaxed));
            SocketAddr::V6(a)
        }
        other => other,
    }
}

fn from_storage(s: &SockaddrStorage) -> Option<SocketAddr> {
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
    socket::connect(fd.as_raw_fd(), &to_storage(scoped(addr))).map_err(errno)
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

fn setsockopt_int(
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
fn getsockopt_int(
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

/// `sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL)` over all spans: one call per
/// `IOV_MAX` (1024) spans, until a call takes less than it was given. A short
/// count therefore always means the send buffer is full (and the kernel armed
/// its `EPOLLOUT` wake-up), never that there were too many spans for one
/// call: the core counts on that to close the window until `Writable`.
pub(crate) fn send_stream(fd: BorrowedFd<'_>, iov: &[IoSlice<'_>]) -> Result<usize, Errno> {
    let mut total = 0usize;
    for chunk in iov.chunks(1024) {
        let want: usize = chunk.iter().map(|s| s.len()).sum();
        let r = socket::sendmsg::<()>(
            fd.as_raw_fd(),
            chunk,
            &[],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match r {
            Ok(n) => {
                total += n;
                if n < want {
                    break;
                }
            }
            Err(e) if total > 0 && e == NixErrno::EAGAIN => break,
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(total)
}

/// One `sendmmsg` on a connected datagram socket: one datagram per span.
/// Returns the number of datagrams sent.
pub(crate) fn send_datagrams(
    fd: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    to: Option<SocketAddr>,
) -> Result<usize, Errno> {
    if iov.is_empty() {
        return Ok(0);
    }
    let iov = iov.get(..iov.len().min(1024)).unwrap_or(iov);
    let dest = to.map(|a| to_storage(scoped(a)));
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter()
        .map(|s| {
            // SAFETY: an all-zero msghdr is a valid, empty message header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // IoSlice is ABI-compatible with struct iovec.
            h.msg_hdr.msg_iov = (s as *const IoSlice<'_>).cast_mut().cast();
            h.msg_hdr.msg_iovlen = 1;
            if let Some(d) = &dest {
                // The kernel only reads the address.
                h.msg_hdr.msg_name = socket::SockaddrLike::as_ptr(d).cast_mut().cast();
                h.msg_hdr.msg_namelen = socket::SockaddrLike::len(d);
            }
            h
        })
        .collect();
    let n = libc::c_uint::try_from(hdrs.len()).unwrap_or(0);
    // SAFETY: every header points at one iovec of `iov`, which outlives the
    // call; the kernel only reads the payload and writes `msg_len`.
    let r = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

/// Largest skip of a peek: far beyond any socket receive buffer.
const MAX_PEEK_SKIP: usize = 64 << 20;

/// Peeks at the receive queue: skips `skip` bytes (into `discard`, grown as
/// needed), then fills `iov`. Returns the bytes peeked into `iov`; 0 means
/// end of stream with nothing beyond `skip`, and nothing beyond `skip` on an
/// open stream is `EAGAIN`.
pub(crate) fn peek(
    fd: BorrowedFd<'_>,
    skip: u32,
    discard: &mut Vec<u8>,
    iov: &mut [IoSliceMut<'_>],
) -> Result<usize, Errno> {
    let skip = skip as usize;
    if skip > MAX_PEEK_SKIP {
        return Err(Errno(libc::EINVAL));
    }
    let r = if skip > 0 {
        if discard.len() < skip {
            discard.resize(skip, 0);
        }
        let mut all: Vec<IoSliceMut<'_>> = Vec::with_capacity(iov.len() + 1);
        all.push(IoSliceMut::new(&mut discard[..skip]));
        for s in iov.iter_mut() {
            all.push(IoSliceMut::new(&mut s[..]));
        }
        match recv_peek(fd, &mut all)? {
            0 => 0,
            // Nothing beyond what the guest already has: more may come, or
            // the peer closed after it (end of stream, reported as 0).
            n if n <= skip => {
                if peer_shut_down(fd) {
                    0
                } else {
                    return Err(Errno::EAGAIN);
                }
            }
            n => n - skip,
        }
    } else {
        recv_peek(fd, iov)?
    };
    Ok(r)
}

/// Whether the peer shut down its sending side (POLLRDHUP), without waiting.
fn peer_shut_down(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

fn recv_peek(fd: BorrowedFd<'_>, iov: &mut [IoSliceMut<'_>]) -> Result<usize, Errno> {
    let len = iov.len().min(1024);
    let iov = &mut iov[..len];
    socket::recvmsg::<()>(
        fd.as_raw_fd(),
        iov,
        None,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .map(|m| m.bytes)
    .map_err(errno)
}

/// Drops `len` bytes from the front of a stream socket's receive queue.
pub(crate) fn consume(fd: BorrowedFd<'_>, len: u32) -> Result<usize, Errno> {
    // SAFETY: with MSG_TRUNC on a TCP socket the kernel discards the bytes
    // without copying them, so no buffer is needed; on other sockets a null
    // buffer makes the call fail with EFAULT, which is reported.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            len as usize,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

/// The kernel's `struct tcp_info` (uapi `linux/tcp.h`) up to `tcpi_snd_wnd`;
/// libc's copy for glibc stops earlier. Fields the kernel does not fill stay 0.
#[repr(C)]
#[derive(Default)]
struct KernelTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    /// snd_wscale (low 4 bits), rcv_wscale (high 4 bits).
    wscale: u8,
    rate_flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
}

/// Whether the kernel supports `SO_PEEK_OFF` on TCP sockets (Linux 6.9 and
/// later): set on a fresh, unconnected socket.
pub(crate) fn probe_peek_offset() -> bool {
    match open(SockKind::TcpStream, Family::V4).or_else(|_| open(SockKind::TcpStream, Family::V6)) {
        Ok(fd) => setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, SO_PEEK_OFF, 0).is_ok(),
        Err(_) => false,
    }
}

/// TCP_INFO and the send buffer's state (`SO_MEMINFO`) of a socket: two
/// system calls.
pub(crate) fn tcp_info(fd: BorrowedFd<'_>) -> Result<TcpInfo, Errno> {
    let mut ti = KernelTcpInfo::default();
    let mut len = std::mem::size_of::<KernelTcpInfo>() as libc::socklen_t;
    // SAFETY: `ti` is valid for `len` bytes of writes; the kernel writes at
    // most `len` bytes and every bit pattern is a valid KernelTcpInfo.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut ti as *mut KernelTcpInfo).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    let space = send_space(fd)?;
    Ok(TcpInfo {
        bytes_acked: ti.bytes_acked,
        snd_wnd: ti.snd_wnd,
        snd_wscale: ti.wscale & 0x0f,
        snd_mss: ti.snd_mss,
        min_rtt_us: ti.min_rtt,
        sndbuf: space.sndbuf,
        queued: space.queued,
    })
}

/// The send buffer's size and what its queue costs, in the kernel's own
/// accounting (`SO_MEMINFO`, one system call).
pub(crate) fn send_space(fd: BorrowedFd<'_>) -> Result<SendSpace, Errno> {
    let mut mem = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&mem) as libc::socklen_t;
    // SAFETY: `mem` is valid for `len` bytes of writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            mem.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(SendSpace {
        sndbuf: mem[SK_MEMINFO_SNDBUF],
        queued: mem[SK_MEMINFO_WMEM_QUEUED],
    })
}

#[cfg(test)]
mod tests {
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

    fn ev(o: Outcome) -> SockEvent {
        match o {
            Outcome::Event(_, e) => e,
            Outcome::Done => panic!("expected an event"),
        }
    }

    /// Listener, accept, connect, send, peek (with and without skip), consume,
    /// TCP_INFO, shutdown, close: the whole stream life cycle over loopback.
    #[test]
    fn tcp_lifecycle_on_loopback() {
        let epoll = ep();
        let mut t = SockTable::default();
        let (l, c) = (SockId(1), SockId(2));
        let open = |sock, kind| Action::Open {
            sock,
            kind,
            family: Family::V4,
            netns: passt_core::Netns::Host,
        };
        assert_eq!(
            t.execute(&epoll, None, open(l, SockKind::TcpListener), &[]),
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

        // Guest → socket: one sendmsg over several spans.
        let data = b"hello, world";
        let iov = [IoSlice::new(&data[..5]), IoSlice::new(&data[5..])];
        let send = Action::Send {
            sock: c,
            spans: passt_core::SpanList { start: 0, count: 2 },
        };
        match ev(t.execute(&epoll, None, send, &iov)) {
            SockEvent::StreamSent { sent, space } => {
                assert_eq!(sent, Ok(12));
                assert!(space.sndbuf > 0 && space.writable(), "{space:?}");
            }
            e => panic!("{e:?}"),
        }
        let mut buf = [0u8; 12];
        std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
        assert_eq!(&buf, data);

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
                assert_eq!(i.bytes_acked, 12, "the 12 bytes sent were acknowledged");
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
        let epoll = ep();
        let mut t = SockTable::default();
        let srv = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        let s = SockId(7);
        let open = Action::Open {
            sock: s,
            kind: SockKind::TcpStream,
            family: Family::V6,
            netns: passt_core::Netns::Host,
        };
        t.execute(&epoll, None, open, &[]);
        let conn = Action::Connect {
            sock: s,
            addr: srv.local_addr().unwrap(),
        };
        let r = t.execute(&epoll, None, conn, &[]);
        if r == Outcome::Done {
            let got = wait_for(&epoll);
            let mut evs = Vec::new();
            t.events_for(&epoll, s, got[0].1, &mut evs);
            assert_eq!(evs, vec![SockEvent::Connected(Ok(()))]);
        } else {
            assert_eq!(ev(r), SockEvent::Connected(Ok(())));
        }
        // Refused: a port nobody listens on.
        let port = srv.local_addr().unwrap().port();
        drop(srv);
        let s2 = SockId(8);
        let open = Action::Open {
            sock: s2,
            kind: SockKind::TcpStream,
            family: Family::V6,
            netns: passt_core::Netns::Host,
        };
        t.execute(&epoll, None, open, &[]);
        let conn = Action::Connect {
            sock: s2,
            addr: SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        };
        let r = t.execute(&epoll, None, conn, &[]);
        let e = if r == Outcome::Done {
            let got = wait_for(&epoll);
            let mut evs = Vec::new();
            t.events_for(&epoll, s2, got[0].1, &mut evs);
            evs[0]
        } else {
            ev(r)
        };
        assert_eq!(e, SockEvent::Connected(Err(Errno::ECONNREFUSED)));
    }

    #[test]
    fn udp_datagrams_and_errors() {
        let epoll = ep();
        let mut t = SockTable::default();
        let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let s = SockId(3);
        let open = Action::Open {
            sock: s,
            kind: SockKind::Udp,
            family: Family::V4,
            netns: passt_core::Netns::Host,
        };
        t.execute(&epoll, None, open, &[]);
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
        let open = Action::Open {
            sock: s2,
            kind: SockKind::Udp,
            family: Family::V4,
            netns: passt_core::Netns::Host,
        };
        t.execute(&epoll, None, open, &[]);
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
            let open = Action::Open {
                sock,
                kind: SockKind::TcpListener,
                family: Family::V4,
                netns: passt_core::Netns::Host,
            };
            t.execute(&epoll, None, open, &[]);
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
}
