//! Spliced UDP flows (pasta's loopback path): datagrams moved between two
//! connected sockets in batches, `recvmmsg` from one, `sendmmsg` on the
//! other, through buffers of this module; the core never sees them.
//!
//! * [`DgramSplicer::peek_peer`] carries out `Action::PeekPeer`: the source
//!   and destination of the next datagram on a listener (`MSG_PEEK`, with
//!   `IP_PKTINFO`/`IPV6_RECVPKTINFO` turned on the first time).
//! * [`DgramSplicer::forward`] carries out `Action::ForwardDatagrams`: the
//!   first datagrams of a flow, from the listener to the flow's socket.
//! * [`DgramSplicer::join`] takes a pair over (`Action::SpliceDatagrams`):
//!   both sockets watched for input, level-triggered; whatever one receives
//!   goes out on the other. A full send buffer or a refused port drops the
//!   datagram, as UDP allows; errors that ICMP reports are drained from the
//!   error queue and are not fatal; any other error ends the pair once
//!   (`SockEvent::SpliceEnded(Err)`), and it waits, out of the epoll set,
//!   for the core's `Close`.
//! * [`DgramSplicer::query`] answers `Action::QuerySpliced` with the
//!   datagrams moved each way, from which the core keeps flows alive.

use crate::sock::pairs::{Pair, Pairs, Report, SockCx};
use crate::sock::{last_errno, setsockopt_int, SockTable};
use nix::sys::epoll::{Epoll, EpollFlags};
use passt_core::{Errno, SockEvent, SockId, SpliceTotals};
use std::collections::HashSet;
use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

/// Datagrams moved per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 16;
/// Batches moved per wake-up before other sockets get their turn (the
/// sockets stay readable, level-triggered, if more is queued).
const ROUNDS: usize = 4;
/// Room for one datagram: the largest UDP payload fits.
const DGRAM_BUF: usize = 65536;

/// Datagrams moved out of each socket of a joined pair.
#[derive(Debug)]
struct Moved([u64; 2]);

/// The pairs (by the id of their first socket), the socket → pair map,
/// the buffers, and which listeners report destination addresses.
#[derive(Debug, Default)]
pub(crate) struct DgramSplicer {
    pairs: Pairs<Moved>,
    /// `BATCH` buffers of `DGRAM_BUF` bytes, made on first use.
    bufs: Vec<Vec<u8>>,
    pktinfo: HashSet<u32>,
    got: Vec<(usize, SocketAddr)>,
}

/// Errors of a datagram socket that do not end a pair: the core's rule for
/// its own datagram flows ([`passt_core::datagram_error_is_fatal`], where
/// the reasons are), so that a spliced flow and one through the guest link
/// end for the same errors.
fn transient(e: Errno) -> bool {
    !passt_core::datagram_error_is_fatal(e)
}

/// The destination address in the control messages of `msg`, if any.
fn pktinfo_addr(msg: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk its control
    // buffer within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                let pi = libc::CMSG_DATA(c)
                    .cast::<libc::in_pktinfo>()
                    .read_unaligned();
                return Some(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr)).into());
            }
            if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let pi = libc::CMSG_DATA(c)
                    .cast::<libc::in6_pktinfo>()
                    .read_unaligned();
                return Some(Ipv6Addr::from(pi.ipi6_addr.s6_addr).into());
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// Peeks at the next datagram on `fd`: its source and destination. `None`
/// if nothing is queued.
fn peek_addrs(fd: BorrowedFd<'_>) -> Result<Option<(SocketAddr, Option<IpAddr>)>, Errno> {
    // SAFETY: all-zero bytes are valid for these plain C structures.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut cbuf = [0u64; 16];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 0,
    };
    let (r, msg) =
        crate::sock::dgram::recv_msg(fd, &mut iov, &mut cbuf, Some(&mut name), libc::MSG_PEEK);
    if r < 0 {
        let e = last_errno();
        if e == Errno::EAGAIN {
            return Ok(None);
        }
        return Err(e);
    }
    let Some(peer) = crate::sock::dgram::from_storage(&name) else {
        return Err(Errno::EINVAL);
    };
    Ok(Some((peer, pktinfo_addr(&msg))))
}

impl DgramSplicer {
    /// Whether `sock` belongs to a joined pair.
    pub(crate) fn owns(&self, sock: SockId) -> bool {
        self.pairs.owns(sock)
    }

    /// Carries out `Action::PeekPeer`.
    pub(crate) fn peek_peer(&mut self, socks: &SockTable, sock: SockId) -> Option<SockEvent> {
        let Some(e) = socks.get(sock) else {
            return Some(SockEvent::Error(Errno::EBADF));
        };
        let fd = e.fd.as_fd();
        if self.pktinfo.insert(sock.0) {
            // Both: a dual-stack socket reports IPv4 destinations with the
            // IPv6 option, a plain IPv4 socket refuses the IPv6 one.
            let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
            let _ = setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1);
        }
        match peek_addrs(fd) {
            Ok(Some((peer, local))) => Some(SockEvent::DatagramPeer { peer, local }),
            Ok(None) => None,
            Err(e) => Some(SockEvent::Error(e)),
        }
    }

    fn buffers(&mut self) {
        if self.bufs.is_empty() {
            self.bufs = (0..BATCH).map(|_| vec![0u8; DGRAM_BUF]).collect();
        }
    }

    /// One batch from `from` to `to` (discarded if `to` is `None`): the
    /// datagrams received, or the receive error.
    fn batch(
        &mut self,
        from: BorrowedFd<'_>,
        to: Option<BorrowedFd<'_>>,
        max: usize,
    ) -> Result<usize, Errno> {
        self.buffers();
        let n = max.clamp(1, BATCH);
        let got = &mut self.got;
        crate::sock::dgram::recv_datagrams(from, &mut self.bufs[..n], 0, got)?;
        let Some(to) = to else {
            return Ok(got.len());
        };
        let k = got.len().min(BATCH);
        let (bufs, got) = (&self.bufs, &self.got);
        let iov: [IoSlice<'_>; BATCH] = std::array::from_fn(|i| match (bufs.get(i), got.get(i)) {
            (Some(b), Some(&(len, _))) => IoSlice::new(&b[..len.min(b.len())]),
            _ => IoSlice::new(&[]),
        });
        // Whatever does not go out is lost, as on any UDP path.
        let _ = crate::sock::send_datagrams(to, &iov[..k], None);
        Ok(k)
    }

    /// Carries out `Action::ForwardDatagrams`.
    pub(crate) fn forward(
        &mut self,
        socks: &SockTable,
        from: SockId,
        to: Option<SockId>,
        max: u16,
    ) -> Option<SockEvent> {
        let f = socks.get(from)?;
        let t = to.and_then(|t| socks.get(t));
        match self.batch(f.fd.as_fd(), t.map(|e| e.fd.as_fd()), usize::from(max)) {
            Err(e) if !transient(e) => Some(SockEvent::Error(e)),
            _ => None,
        }
    }

    /// Takes over `a` and `b` (both connected) and moves what is queued.
    /// Returns the event for the core if the pair ended at once.
    pub(crate) fn join(&mut self, cx: &mut SockCx<'_>, a: SockId, b: SockId) -> Report {
        if let Some(r) = cx.missing(a, b) {
            return Some(r);
        }
        for s in [a, b] {
            if let Err(e) = cx.socks.set_mask(cx.epoll, s, EpollFlags::EPOLLIN) {
                return Some((a, SockEvent::SpliceEnded(Err(e))));
            }
        }
        self.pairs.insert(Pair::new(a, b, Moved([0; 2])));
        for s in [a, b] {
            if let Some(r) = self.event(cx, s, EpollFlags::EPOLLIN) {
                return Some(r);
            }
        }
        None
    }

    /// Readiness of a socket of a pair.
    pub(crate) fn event(&mut self, cx: &mut SockCx<'_>, sock: SockId, flags: EpollFlags) -> Report {
        let SockCx { epoll, socks } = cx;
        let (key, side) = self.pairs.live(sock)?;
        let other = self.pairs.get(key)?.socks[1 - side];
        let (Some(s), Some(o)) = (socks.get(sock), socks.get(other)) else {
            return self.end(epoll, socks, key, Errno::EBADF);
        };
        if flags.contains(EpollFlags::EPOLLERR) {
            let mut fatal = None;
            crate::sock::dgram::drain_errors(s.fd.as_fd(), |ev| {
                let e = match ev {
                    SockEvent::Icmp(i) => i.errno,
                    SockEvent::Error(e) => e,
                    _ => return,
                };
                if !transient(e) {
                    fatal = Some(e);
                }
            });
            if let Some(e) =
                fatal.or_else(|| crate::sock::so_error(s.fd.as_fd()).filter(|&e| !transient(e)))
            {
                return self.end(epoll, socks, key, e);
            }
        }
        if !flags.contains(EpollFlags::EPOLLIN) {
            return None;
        }
        let (sfd, ofd) = (s.fd.as_fd(), o.fd.as_fd());
        let mut moved = 0u64;
        let mut err = None;
        for _ in 0..ROUNDS {
            match self.batch(sfd, Some(ofd), BATCH) {
                Ok(n) => {
                    moved += n as u64;
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    if !transient(e) {
                        err = Some(e);
                    }
                    break;
                }
            }
        }
        if let Some(p) = self.pairs.get_mut(key) {
            p.0[side] += moved;
        }
        match err {
            Some(e) => self.end(epoll, socks, key, e),
            None => None,
        }
    }

    /// Takes the pair out of the epoll set and reports `e` on its first
    /// socket.
    fn end(&mut self, epoll: &Epoll, socks: &mut SockTable, key: u32, e: Errno) -> Report {
        let pair = self.pairs.end(epoll, socks, key)?;
        log::debug!("udp splice {:?}/{:?}: {e:?}", pair.socks[0], pair.socks[1]);
        Some((pair.socks[0], SockEvent::SpliceEnded(Err(e))))
    }

    /// Carries out `Action::QuerySpliced`.
    pub(crate) fn query(&self, sock: SockId) -> Option<SockEvent> {
        let p = self.pairs.get(self.pairs.key_of(sock)?)?;
        Some(SockEvent::Spliced(SpliceTotals {
            to_peer: p.0[0],
            from_peer: p.0[1],
        }))
    }

    /// The core closes `sock`: its pair is forgotten (and a listener's
    /// `IP_PKTINFO` note).
    pub(crate) fn forget(&mut self, sock: SockId) {
        self.pktinfo.remove(&sock.0);
        self.pairs.remove(sock);
    }
}
