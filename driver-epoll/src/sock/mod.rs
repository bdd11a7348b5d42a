//! Socket actions of the core carried out on real file descriptors.
//!
//! [`SockTable`] maps the core's [`SockId`]s to owned file descriptors and
//! carries out every [`Action`] variant except `Peek`, which needs the transmit
//! slots of the event loop (see `event_loop/io.rs`; the `recvmsg(MSG_PEEK)` itself
//! is [`peek`] here). Results go back to the core as [`SockEvent`]s.
//!
//! Connect: a non-blocking `connect()` that returns `EINPROGRESS` is finished
//! at once if a `poll()` right after finds it done (loopback: the handshake
//! happened within the call), else when epoll reports the socket writable
//! (or in error); until then the socket is watched for `EPOLLOUT` in
//! addition to whatever interest the core set, and the outcome is reported
//! as `SockEvent::Connected`, not as readiness.
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

pub(crate) mod dgram;
mod ops;
pub(crate) mod pairs;
pub(crate) mod splice;
mod stream;
mod tcp_info;
pub(crate) mod udp_splice;

pub(crate) use dgram::send_datagrams;
pub(crate) use ops::*;
pub(crate) use stream::*;
pub(crate) use tcp_info::*;

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

/// The core's view of a nix error.
pub(crate) fn errno(e: NixErrno) -> Errno {
    Errno(e as i32)
}

/// The error of the last failed system call of this thread.
pub(crate) fn last_errno() -> Errno {
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
    /// `TCP_NODELAY` is set: setting it again makes no system call.
    no_delay: bool,
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
                no_delay: false,
            },
        );
    }

    /// Inserts a TCP socket that has `TCP_NODELAY` set already (opened
    /// ahead in the guest's namespace).
    pub(crate) fn insert_no_delay(&mut self, sock: SockId, fd: OwnedFd) {
        self.insert(sock, fd);
        if let Some(e) = self.map.get_mut(&sock.0) {
            e.no_delay = true;
        }
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

    /// `sock` stays in the epoll set until it is closed: since no other
    /// descriptor refers to its socket, the close takes it out, and
    /// [`Self::remove`] makes no `epoll_ctl` for it. Nothing may set its
    /// interest again.
    pub(crate) fn unregister_on_close(&mut self, sock: SockId) {
        if let Some(e) = self.map.get_mut(&sock.0) {
            e.registered = false;
            e.mask = EpollFlags::empty();
        }
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
            } => self.open_sock(guest_ns, sock, kind, family, netns),
            Action::Bind { sock, addr, opts } => self.bind_sock(epoll, sock, addr, opts),
            Action::Listen { sock, backlog } => self.listen_sock(epoll, sock, backlog),
            Action::Connect { sock, addr } => self.connect_sock(epoll, sock, addr),
            Action::Accept { listener, sock } => self.accept_sock(listener, sock),
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
                if let Some(e) = self.map.get_mut(&sock.0) {
                    let no_delay = opt == SockOpt::NoDelay;
                    if no_delay && e.no_delay {
                        return Outcome::Done;
                    }
                    match set_option(e.fd.as_fd(), opt) {
                        Ok(()) => e.no_delay |= no_delay,
                        Err(err) => log::debug!("{sock:?}: setsockopt {opt:?}: {err:?}"),
                    }
                }
                Outcome::Done
            }
            Action::Send { sock, .. } => {
                let (sent, space) = match self.map.get(&sock.0) {
                    Some(e) => send_with_space(e.fd.as_fd(), spans),
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

    /// `Action::Open`: a socket in the namespace the core asked for.
    fn open_sock(
        &mut self,
        guest_ns: Option<&crate::isolate::worker::GuestNs>,
        sock: SockId,
        kind: SockKind,
        family: Family,
        netns: passt_core::Netns,
    ) -> Outcome {
        let r = match (netns, guest_ns) {
            (passt_core::Netns::Guest, Some(ns)) => open_in_ns(ns, kind, family),
            (passt_core::Netns::Guest, None) => Err(Errno(libc::ENOSYS)),
            _ => open(kind, family),
        };
        match r {
            Ok(fd) => {
                if matches!(kind, SockKind::Udp | SockKind::Ping) {
                    if let Err(e) = crate::sock::dgram::enable_recverr(fd.as_fd(), family) {
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

    /// `Action::Bind`; a socket that cannot be bound is closed.
    fn bind_sock(
        &mut self,
        epoll: &Epoll,
        sock: SockId,
        addr: SocketAddr,
        opts: BindOpts,
    ) -> Outcome {
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

    /// `Action::Listen`; a socket that cannot listen is closed.
    fn listen_sock(&mut self, epoll: &Epoll, sock: SockId, backlog: u32) -> Outcome {
        let Some(e) = self.map.get(&sock.0) else {
            return Outcome::Event(sock, SockEvent::OpenFailed(Errno::EBADF));
        };
        let bl =
            Backlog::new(i32::try_from(backlog).unwrap_or(i32::MAX)).unwrap_or(Backlog::MAXCONN);
        match socket::listen(&e.fd, bl) {
            Ok(()) => Outcome::Done,
            Err(err) => {
                self.remove(epoll, sock);
                Outcome::Event(sock, SockEvent::OpenFailed(errno(err)))
            }
        }
    }

    /// `Action::Connect`: at once, or watched for `EPOLLOUT` while in
    /// progress.
    fn connect_sock(&mut self, epoll: &Epoll, sock: SockId, addr: SocketAddr) -> Outcome {
        let Some(e) = self.map.get_mut(&sock.0) else {
            return Outcome::Event(sock, SockEvent::Connected(Err(Errno::EBADF)));
        };
        match connect(e.fd.as_fd(), addr) {
            Ok(()) => Outcome::Event(sock, SockEvent::Connected(Ok(()))),
            Err(err) if err == Errno::EINPROGRESS => {
                if let Some(r) = connect_finished(e.fd.as_fd()) {
                    return Outcome::Event(sock, SockEvent::Connected(r));
                }
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

    /// `Action::Accept`: the next connection of `listener` as `sock`.
    fn accept_sock(&mut self, listener: SockId, sock: SockId) -> Outcome {
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
            let n = crate::sock::dgram::drain_errors(e.fd.as_fd(), |ev| {
                log::debug!("{sock:?}: queued error {ev:?}");
                out.push(ev);
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
    f.set(EpollFlags::EPOLLIN, i.readable);
    f.set(EpollFlags::EPOLLOUT, i.writable);
    f.set(EpollFlags::EPOLLRDHUP, i.read_hangup);
    f.set(EpollFlags::EPOLLET, i.edge);
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

#[cfg(test)]
mod tests;
