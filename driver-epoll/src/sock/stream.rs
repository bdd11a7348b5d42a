//! Stream data on real sockets: sends over spans, peeks past what is already
//! in flight, and consuming what the guest acknowledged.

use super::*;

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

/// Writes of at most this many bytes that the kernel takes whole are
/// reported without the send buffer's state: the core estimates it from the
/// last report (see `SockEvent::StreamSent`), which saves a `getsockopt`
/// per request of a request-response exchange. Larger writes size the
/// window to the guest, which must then be exact.
const SMALL_WRITE: usize = 4096;

/// `Action::Send`: the write and, unless it was small and taken whole, the
/// send buffer's state right after it (`SO_MEMINFO`, one `getsockopt`;
/// zeros when left out or unreadable).
pub(crate) fn send_with_space(
    fd: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
) -> (Result<usize, Errno>, SendSpace) {
    let want: usize = iov.iter().map(|s| s.len()).sum();
    let r = send_stream(fd, iov);
    if want <= SMALL_WRITE && r == Ok(want) {
        return (r, SendSpace::default());
    }
    (r, send_space(fd).unwrap_or_default())
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
pub(super) fn peer_shut_down(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

pub(super) fn recv_peek(fd: BorrowedFd<'_>, iov: &mut [IoSliceMut<'_>]) -> Result<usize, Errno> {
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
