//! Datagram sockets (UDP and ping) on real file descriptors.
//!
//! * [`recv_datagrams`] carries out the receiving part of `Action::Recv`:
//!   one `recvmmsg` straight into the payload areas of transmit slots (the
//!   event loop then hands them to `Core::handle_datagrams`, which writes
//!   the headers in front).
//! * [`enable_recverr`] sets `IP_RECVERR`/`IPV6_RECVERR` on a new datagram
//!   socket, and [`drain_errors`] empties its error queue when epoll reports
//!   `EPOLLERR`, each error becoming one `SockEvent::Icmp` (reported by an
//!   ICMP or ICMPv6 message: type, code, sender and the start of the
//!   datagram it was about, for the core to relay to the guest) or
//!   `SockEvent::Error` (anything else).
//! * [`set_hop_limit`] carries out `SockOpt::HopLimit`: the guest's TTL or
//!   hop limit on the flow's socket.

use super::{last_errno, scoped, to_storage};
use nix::sys::socket;
use passt_core::{Errno, Family, IcmpError, SockEvent, ICMP_QUOTE_MAX};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// System calls of datagram sockets while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // Batches of datagrams in.
    SYS_recvmmsg,
    // ICMP errors from the error queue (MSG_ERRQUEUE).
    SYS_recvmsg,
    // IP_RECVERR on new sockets.
    SYS_setsockopt,
];

/// Most datagrams received at once (the core asks for 32).
pub(crate) const MAX_BATCH: usize = 64;
/// Largest datagram payload.
const MAX_PAYLOAD: usize = 65535;
/// Errors read from one socket's error queue per wake-up, at most.
const MAX_ERRORS: usize = 64;

/// A socket address from a `sockaddr_storage` the kernel filled.
pub(crate) fn from_storage(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One `recvmmsg(MSG_DONTWAIT)` into `bufs[i][room..]`; `got` receives the
/// payload length (the whole datagram's, with `MSG_TRUNC` reported as a
/// length past the buffer) and the peer of each datagram.
pub(crate) fn recv_datagrams<B: AsMut<[u8]>>(
    fd: BorrowedFd<'_>,
    bufs: &mut [B],
    room: usize,
    got: &mut Vec<(usize, SocketAddr)>,
) -> Result<usize, Errno> {
    got.clear();
    let n = bufs.len().min(MAX_BATCH);
    // SAFETY: all-zero bytes are valid for these plain C structures.
    let mut iov: [libc::iovec; MAX_BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_storage; MAX_BATCH] =
        unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    for i in 0..n {
        let b = bufs[i].as_mut();
        let room = room.min(b.len());
        iov[i] = libc::iovec {
            iov_base: b[room..].as_mut_ptr().cast(),
            iov_len: b.len() - room,
        };
        hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        hdrs[i].msg_hdr.msg_iov = &mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point to live iovecs over `bufs` and to `names`,
    // all of which outlive the call; the kernel writes at most the lengths
    // given.
    let r = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    let r = r as usize;
    for (h, name) in hdrs.iter().zip(&names).take(r) {
        let mut len = h.msg_len as usize;
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            // Make the core see it did not fit.
            len = MAX_PAYLOAD + 1;
        }
        let peer = from_storage(name)
            .unwrap_or_else(|| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
        got.push((len, peer));
    }
    Ok(r)
}

/// Sets `IP_RECVERR` (and `IPV6_RECVERR` on IPv6 sockets) so that errors
/// reported by ICMP are queued on the socket instead of failing later calls.
pub(crate) fn enable_recverr(fd: BorrowedFd<'_>, family: Family) -> Result<(), Errno> {
    let (level, opt) = match family {
        Family::V4 => (libc::IPPROTO_IP, libc::IP_RECVERR),
        Family::V6 => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
    };
    set_int(fd, level, opt, 1)
}

fn set_int(fd: BorrowedFd<'_>, level: i32, opt: i32, v: i32) -> Result<(), Errno> {
    // SAFETY: the option value is a live c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// `IP_TTL` (IPv4) or `IPV6_UNICAST_HOPS` (IPv6) on a socket of `family`.
pub(crate) fn set_hop_limit(fd: BorrowedFd<'_>, family: Family, hops: u8) -> Result<(), Errno> {
    match family {
        Family::V4 => set_int(fd, libc::IPPROTO_IP, libc::IP_TTL, hops.into()),
        Family::V6 => set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, hops.into()),
    }
}

/// The core's event for one error read from the error queue: `Icmp` if an
/// ICMP or ICMPv6 message reported it (`data`: the start of the datagram
/// it was about), else `Error`.
fn error_event(
    ee: &libc::sock_extended_err,
    offender: Option<SocketAddr>,
    data: &[u8],
) -> SockEvent {
    let errno = Errno(ee.ee_errno as i32);
    let v6 = match ee.ee_origin {
        libc::SO_EE_ORIGIN_ICMP => false,
        libc::SO_EE_ORIGIN_ICMP6 => true,
        _ => return SockEvent::Error(errno),
    };
    SockEvent::Icmp(IcmpError::new(
        errno,
        v6,
        (ee.ee_type, ee.ee_code, ee.ee_info),
        offender,
        data,
    ))
}

/// One non-blocking `recvmsg` on `fd` with `flags`: the data into `iov`,
/// the control messages into `cbuf`, the source address into `name` if
/// given. Returns the result and the message header, which points into
/// `iov`, `cbuf` and `name` (for the CMSG macros).
pub(crate) fn recv_msg(
    fd: BorrowedFd<'_>,
    iov: &mut libc::iovec,
    cbuf: &mut [u64],
    name: Option<&mut libc::sockaddr_storage>,
    flags: libc::c_int,
) -> (isize, libc::msghdr) {
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    if let Some(name) = name {
        msg.msg_name = (name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    }
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(cbuf) as _;
    // SAFETY: `msg` points to live buffers of the sizes it states.
    let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags | libc::MSG_DONTWAIT) };
    (r, msg)
}

/// Empties the error queue of `fd` (`MSG_ERRQUEUE`), calling `report` with
/// the event of each queued error (see [`error_event`]). Returns the number
/// of errors read.
pub(crate) fn drain_errors(fd: BorrowedFd<'_>, mut report: impl FnMut(SockEvent)) -> usize {
    let mut count = 0;
    for _ in 0..MAX_ERRORS {
        // The start of the datagram is all the core quotes.
        let mut data = [0u8; ICMP_QUOTE_MAX];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // Room for one extended error plus the offender's address.
        let mut cbuf = [0u64; 32];
        let (r, msg) = recv_msg(fd, &mut iov, &mut cbuf, None, libc::MSG_ERRQUEUE);
        if r < 0 {
            break;
        }
        let mut found = false;
        // SAFETY: the kernel filled `msg_control` up to `msg_controllen`;
        // CMSG_FIRSTHDR/CMSG_NXTHDR stay inside it.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` is a header inside the control buffer (see above).
            let h = unsafe { &*c };
            let is_err = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_RECVERR)
                || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
            let need = std::mem::size_of::<libc::sock_extended_err>();
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let hdr_len = unsafe { libc::CMSG_LEN(0) } as usize;
            if is_err && h.cmsg_len >= hdr_len + need {
                // SAFETY: the data holds at least a sock_extended_err
                // (checked above); read it unaligned.
                let ee: libc::sock_extended_err = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::sock_extended_err>())
                };
                // SAFETY: SO_EE_OFFENDER points just past the structure,
                // inside the same control message.
                let off = unsafe { libc::SO_EE_OFFENDER(libc::CMSG_DATA(c).cast()) };
                let avail = (h.cmsg_len - hdr_len).saturating_sub(need);
                let origin = if avail >= std::mem::size_of::<libc::sockaddr_in>() {
                    // SAFETY: zeroed storage is valid; copy what is there.
                    let mut ss: libc::sockaddr_storage =
                        unsafe { MaybeUninit::zeroed().assume_init() };
                    let n = avail.min(std::mem::size_of::<libc::sockaddr_storage>());
                    // SAFETY: `n` bytes after the error lie in the message.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            off.cast::<u8>(),
                            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                            n,
                        );
                    }
                    from_storage(&ss)
                } else {
                    None
                };
                let got = (r as usize).min(data.len());
                report(error_event(&ee, origin, &data[..got]));
                count += 1;
                found = true;
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        if !found {
            break;
        }
    }
    count
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn recvmmsg_places_payloads_after_the_room_with_peers() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..40u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        let mut bufs: Vec<Vec<u8>> = (0..32).map(|_| vec![0u8; 100]).collect();
        let mut got = Vec::new();
        let n = recv_datagrams(rx.as_fd(), &mut bufs, 62, &mut got).unwrap();
        assert_eq!(n, 32);
        for (i, (b, (len, peer))) in bufs.iter().zip(&got).enumerate() {
            assert_eq!(*len, 10);
            assert_eq!(*peer, tx.local_addr().unwrap());
            assert_eq!(&b[62..72], &[i as u8; 10]);
            assert!(b[..62].iter().all(|&x| x == 0), "room untouched");
        }
        let n = recv_datagrams(rx.as_fd(), &mut bufs, 62, &mut got).unwrap();
        assert_eq!(n, 8);
        assert_eq!(
            recv_datagrams(rx.as_fd(), &mut bufs, 62, &mut got),
            Err(Errno::EAGAIN)
        );
        // A datagram larger than the buffer is reported as truncated.
        tx.send_to(&[1; 60], rx.local_addr().unwrap()).unwrap();
        let n = recv_datagrams(rx.as_fd(), &mut bufs[..1], 62, &mut got).unwrap();
        assert_eq!(n, 1);
        assert!(got[0].0 > 100 - 62);
    }

    #[test]
    fn refused_port_is_queued_and_drained() {
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_recverr(s.as_fd(), Family::V4).unwrap();
        s.connect(addr).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.send(b"0123456789abcdefXYZ");
        let mut errs = Vec::new();
        for _ in 0..100 {
            drain_errors(s.as_fd(), |e| errs.push(e));
            if !errs.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(errs.len(), 1);
        // Port unreachable, from the closed port's address, quoting the
        // start of what was sent.
        let SockEvent::Icmp(e) = errs[0] else {
            panic!("not an ICMP error: {:?}", errs[0]);
        };
        assert_eq!(e.errno, Errno::ECONNREFUSED);
        assert_eq!((e.v6, e.icmp_type, e.code), (false, 3, 3));
        assert_eq!(e.offender.map(|a| a.ip()), Some(addr.ip()));
        assert_eq!(e.quote(), b"0123456789abcdef");
        // Nothing left.
        assert_eq!(drain_errors(s.as_fd(), |_| {}), 0);
    }

    #[test]
    fn received_datagrams_become_frames_of_a_forwarded_port() {
        use passt_core::{Action, Config, Core, Forward, Instant, Ip4Config, Proto, RxDatagram};
        // -u 7000:53
        let cfg = Config {
            ip4: Some(Ip4Config::new(
                Ipv4Addr::new(10, 0, 2, 15),
                24,
                Some(Ipv4Addr::new(10, 0, 2, 2)),
            )),
            forwards: vec![Forward::new(Proto::Udp, 7000, 53)],
            ..Config::default()
        };
        let mut core = Core::new(cfg);
        core.start(Instant::ZERO);
        let mut listener = None;
        while let Some(a) = core.poll_action() {
            if let Action::Open { sock, .. } = a {
                listener = Some(sock);
            }
        }
        let listener = listener.expect("a UDP listener");
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            tx.send_to(&[i; 5], rx.local_addr().unwrap()).unwrap();
        }
        core.handle_sock_event(Instant::ZERO, listener, passt_core::SockEvent::Readable);
        let Some(Action::Recv { sock, max, room }) = core.poll_action() else {
            panic!("no Recv");
        };
        assert_eq!((sock, room), (listener, 42), "IPv4 listener: exact room");
        let mut bufs: Vec<Vec<u8>> = (0..usize::from(max)).map(|_| vec![0u8; 2048]).collect();
        let mut got = Vec::new();
        let n = recv_datagrams(rx.as_fd(), &mut bufs, usize::from(room), &mut got).unwrap();
        assert_eq!(n, 3);
        let mut dg: Vec<RxDatagram<'_>> = bufs
            .iter_mut()
            .zip(&got)
            .map(|(b, &(len, peer))| RxDatagram::new(b, len, peer))
            .collect();
        assert_eq!(core.handle_datagrams(Instant::ZERO, listener, &mut dg), 3);
        for (i, d) in dg.iter().enumerate() {
            let f = d.frame().expect("a frame");
            assert_eq!(d.frame_start, 0);
            // 47 bytes, padded with zeros to the 802.3 minimum.
            assert_eq!(f.len(), 60);
            assert!(f[47..].iter().all(|&b| b == 0));
            assert_eq!(&f[12..14], &[0x08, 0x00]);
            // From the gateway (host loopback), to the guest, port 53.
            assert_eq!(&f[26..30], &[10, 0, 2, 2]);
            assert_eq!(&f[30..34], &[10, 0, 2, 15]);
            assert_eq!(
                u16::from_be_bytes([f[34], f[35]]),
                tx.local_addr().unwrap().port()
            );
            assert_eq!(u16::from_be_bytes([f[36], f[37]]), 53);
            assert_eq!(&f[42..47], &[i as u8; 5]);
        }
        drop(dg);
        // Nothing more.
        assert_eq!(
            recv_datagrams(rx.as_fd(), &mut bufs, usize::from(room), &mut got),
            Err(Errno::EAGAIN)
        );
    }

    fn reuse_bound(addr: SocketAddr) -> UdpSocket {
        use nix::sys::socket::{
            bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
        let SocketAddr::V4(a) = addr else { panic!() };
        bind(fd.as_raw_fd(), &SockaddrIn::from(a)).unwrap();
        UdpSocket::from(fd)
    }

    /// The kernel behaviour forwarded UDP flows rely on: a second socket
    /// bound like the listener (SO_REUSEADDR) and connected to one peer gets
    /// that peer's datagrams, the listener keeps getting the others, and the
    /// flow's socket works on after the listener is closed.
    #[test]
    fn connected_reply_socket_takes_its_peer_from_the_listener() {
        let listener = reuse_bound("127.0.0.1:0".parse().unwrap());
        let port_addr = listener.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let flow = reuse_bound(port_addr);
        flow.connect(a.local_addr().unwrap()).unwrap();
        for s in [&listener, &flow, &a, &b] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
        }
        a.send_to(b"from a", port_addr).unwrap();
        b.send_to(b"from b", port_addr).unwrap();
        let mut buf = [0u8; 16];
        let n = flow.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from a");
        let (n, from) = listener.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"from b"[..], b.local_addr().unwrap()));
        drop(listener);
        a.send_to(b"again", port_addr).unwrap();
        let n = flow.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        flow.send(b"reply").unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"reply"[..], port_addr));
    }

    /// The socket table sets IP_RECVERR on datagram sockets and turns their
    /// queued errors into events on EPOLLERR, emptying the queue; group
    /// sends carry their destination.
    #[test]
    fn socket_table_drains_queued_errors_and_sends_to_groups() {
        use crate::sock::{Outcome, SockTable};
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollFlags};
        use passt_core::{Action, BindOpts, SockEvent, SockId, SockKind, SpanList};
        use std::io::IoSlice;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let mut t = SockTable::default();
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone = dead.local_addr().unwrap();
        drop(dead);
        let s = SockId(7);
        let acts = [
            Action::Open {
                sock: s,
                kind: SockKind::Udp,
                family: Family::V4,
                netns: passt_core::Netns::Host,
            },
            Action::Bind {
                sock: s,
                addr: "127.0.0.1:0".parse().unwrap(),
                opts: BindOpts {
                    reuse_addr: true,
                    ..BindOpts::default()
                },
            },
        ];
        for a in acts {
            assert_eq!(t.execute(&epoll, None, a, &[]), Outcome::Done);
        }
        // Unconnected: the destination comes with the datagrams.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let iov = [IoSlice::new(b"to you")];
        let send = |to| Action::SendDatagrams {
            sock: s,
            spans: SpanList { start: 0, count: 1 },
            to: Some(to),
        };
        assert_eq!(
            t.execute(&epoll, None, send(peer.local_addr().unwrap()), &iov),
            Outcome::Event(s, SockEvent::Sent(Ok(1)))
        );
        let mut b = [0u8; 16];
        let n = peer.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"to you");
        // To a closed port: the refusal is queued (IP_RECVERR).
        let _ = t.execute(&epoll, None, send(gone), &iov);
        let mut evs = Vec::new();
        for _ in 0..100 {
            t.events_for(&epoll, s, EpollFlags::EPOLLERR, &mut evs);
            if !evs.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            matches!(&evs[..], [SockEvent::Icmp(e)] if e.errno == Errno::ECONNREFUSED),
            "{evs:?}"
        );
        evs.clear();
        t.events_for(&epoll, s, EpollFlags::EPOLLERR, &mut evs);
        assert!(evs.is_empty(), "the queue was emptied: {evs:?}");
    }
}
