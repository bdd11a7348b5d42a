//! passt's guest link: qemu's `-netdev stream` socket.
//!
//! The protocol is a UNIX stream socket carrying frames, each preceded by its
//! length as a 32-bit big-endian number. One client is served at a time;
//! further connections are accepted and closed at once. A wake-up reads up to
//! the whole batch buffer in one `recv`; frames may be split across reads, so a
//! trailing partial frame is kept at the front of the buffer for the next read.
//! A length below 14 or above 65535 resets the client. Output is one `sendmsg`
//! of length prefixes and frames; a frame the kernel took only in part is
//! completed before returning, so the stream never loses framing.

use crate::event_loop::{token, TxArena, TAG_LINK, TAG_LISTEN};
use crate::framing::{RxBuf, StreamRx};
use crate::link::tap::ReadOutcome;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Highest N probed for `/tmp/passt_N.socket` (`UNIX_SOCK_MAX` - 1).
pub(crate) const SOCK_PROBE_MAX: u32 = 99;

/// System calls of the qemu link while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // A new client: accepted, its PID read, its buffers enlarged.
    SYS_accept4,
    SYS_getsockopt,
    SYS_setsockopt,
    // Frames in (`recv`) and out (`sendmsg`, then `send` for the rest of a
    // frame the kernel took in part, once the socket has room).
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_sendto,
    // The listener and the client in the epoll set.
    SYS_epoll_ctl,
];

/// The qemu side of passt.
#[derive(Debug)]
pub(crate) struct QemuLink {
    listener: Option<OwnedFd>,
    listener_registered: bool,
    client: Option<OwnedFd>,
    path: Option<PathBuf>,
    one_off: bool,
    /// Reassembly of the frame stream (see [`crate::framing`]).
    stream: StreamRx,
    /// `EPOLLOUT` is watched on the client (frames were refused).
    out_armed: bool,
    /// The rest of a frame the socket took only part of: it goes out before
    /// anything else, from the event loop (`EPOLLOUT`), never by waiting,
    /// so that the stream stays framed. Capacity for one frame, reserved
    /// once; cleared with the client.
    tail: Vec<u8>,
    /// Bytes of `tail` already sent.
    tail_sent: usize,
}

fn unix_stream() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// What is at a socket path.
#[derive(Debug, PartialEq, Eq)]
enum PathState {
    /// Nothing.
    Free,
    /// A socket of ours (same owner) nobody listens on: a previous instance
    /// that is gone. It may be replaced.
    Stale,
    /// A socket something listens on.
    InUse,
    /// Something else, left alone: why.
    Foreign(&'static str),
}

/// Looks at `path` without following a symbolic link, and, for a socket of
/// our own user, connects to it (upstream passt's probe): refused means
/// stale, anything but "no such file" or "refused" means in use.
fn probe(path: &Path) -> io::Result<PathState> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PathState::Free),
        Err(e) => return Err(e),
    };
    if !md.file_type().is_socket() {
        return Ok(PathState::Foreign("not a socket"));
    }
    if md.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(PathState::Foreign("a socket of another user"));
    }
    let s = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    Ok(match socket::connect(s.as_raw_fd(), &addr) {
        Ok(()) => PathState::InUse,
        Err(Errno::ECONNREFUSED) => PathState::Stale,
        Err(Errno::ENOENT) => PathState::Free,
        Err(Errno::EACCES) => PathState::Foreign("a socket we may not connect to"),
        Err(_) => PathState::InUse,
    })
}

/// Listens on `path`, first removing a stale socket of ours found there
/// (see [`probe`]); anything else at `path` is an error.
fn bind_listen(path: &Path) -> io::Result<OwnedFd> {
    // The caller names the path.
    let taken = |why: String| io::Error::new(io::ErrorKind::AddrInUse, why);
    match probe(path)? {
        PathState::Free => {}
        PathState::Stale => {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(taken(format!(
                        "removing the stale socket: {}",
                        crate::isolate::describe(&e)
                    )));
                }
            }
        }
        PathState::InUse => return Err(taken("already in use".into())),
        PathState::Foreign(why) => {
            return Err(taken(format!("exists and is {why}: not removing it")))
        }
    }
    let s = unix_stream()?;
    let addr = UnixAddr::new(path)?;
    socket::bind(s.as_raw_fd(), &addr)?;
    socket::listen(
        &s,
        socket::Backlog::new(128).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(s)
}

/// Listens on `path`, or on the first free `dir/passt_N.socket` (N from 1
/// to 99) if no path was given (see [`bind_listen`]). Shared by the stream
/// and the vhost-user link.
pub(crate) fn listen_socket(path: Option<&Path>, dir: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    match path {
        Some(p) => Ok((bind_listen(p)?, p.to_path_buf())),
        None => {
            for n in 1..=SOCK_PROBE_MAX {
                let p = dir.join(format!("passt_{n}.socket"));
                if let Ok(fd) = bind_listen(&p) {
                    return Ok((fd, p));
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "no free UNIX domain socket path",
            ))
        }
    }
}

/// Puts the listening socket (if any) into the epoll set, once. Shared by
/// the stream and the vhost-user link.
pub(crate) fn register_listener(
    epoll: &Epoll,
    listener: Option<&OwnedFd>,
    registered: &mut bool,
) -> io::Result<()> {
    if let (Some(l), false) = (listener, *registered) {
        epoll.add(
            l.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_LISTEN, 0)),
        )?;
        *registered = true;
    }
    Ok(())
}

/// The next connection on the listening socket (if any), with `flags`, and
/// the PID of its peer (0 if unknown). Shared by the stream and the
/// vhost-user link.
pub(crate) fn accept_peer(listener: Option<&OwnedFd>, flags: SockFlag) -> Option<(OwnedFd, i32)> {
    let fd = match socket::accept4(listener?.as_fd(), flags) {
        Ok(fd) => fd,
        Err(e) => {
            log::debug!("accept: {e}");
            return None;
        }
    };
    let pid = socket::getsockopt(&fd, sockopt::PeerCredentials)
        .map(|c| c.pid())
        .unwrap_or(0);
    Some((fd, pid))
}

impl QemuLink {
    /// Listens on `path`, or on the first free `dir/passt_N.socket` (N from 1
    /// to 99) if no path was given. A stale socket of ours is replaced; a
    /// path that holds anything else is refused (`path`) or skipped.
    pub(crate) fn listen(path: Option<&Path>, dir: &Path, one_off: bool) -> io::Result<Self> {
        let (fd, p) = listen_socket(path, dir)?;
        Ok(QemuLink {
            listener: Some(fd),
            listener_registered: false,
            client: None,
            path: Some(p),
            one_off,
            stream: StreamRx::default(),
            out_armed: false,
            tail: Vec::with_capacity(TAIL_CAP),
            tail_sent: 0,
        })
    }

    /// A connected socket handed over with `--fd` (implies one-off).
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        crate::link::tap::set_nonblocking(fd.as_fd())?;
        tune(&fd);
        Ok(QemuLink {
            listener: None,
            listener_registered: false,
            client: Some(fd),
            path: None,
            one_off: true,
            stream: StreamRx::default(),
            out_armed: false,
            tail: Vec::with_capacity(TAIL_CAP),
            tail_sent: 0,
        })
    }

    /// The listening socket's path.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(crate) fn one_off(&self) -> bool {
        self.one_off
    }

    /// Whether a client is connected.
    pub(crate) fn connected(&self) -> bool {
        self.client.is_some()
    }

    /// Registers the listener (once) and the client, if any.
    pub(crate) fn register(&mut self, epoll: &Epoll) -> io::Result<()> {
        register_listener(epoll, self.listener.as_ref(), &mut self.listener_registered)?;
        if let Some(c) = &self.client {
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            match epoll.add(c.as_fd(), EpollEvent::new(flags, token(TAG_LINK, 0))) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Watches the client for `EPOLLOUT` (or stops): the core waits for
    /// room to send frames the socket refused.
    pub(crate) fn want_writable(&mut self, epoll: &Epoll, on: bool) {
        let Some(c) = &self.client else {
            self.out_armed = false;
            return;
        };
        if self.out_armed == on {
            return;
        }
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if on {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut ev = EpollEvent::new(flags, token(TAG_LINK, 0));
        if epoll.modify(c.as_fd(), &mut ev).is_ok() {
            self.out_armed = on;
        }
    }

    /// Accepts a connection: the client if there is none, else closed at once.
    pub(crate) fn accept(&mut self, epoll: &Epoll) {
        let Some((fd, pid)) = accept_peer(
            self.listener.as_ref(),
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        ) else {
            return;
        };
        if self.client.is_some() {
            log::info!("another client connected (PID {pid}), refusing it");
            return;
        }
        log::info!("client connected (PID {pid})");
        tune(&fd);
        self.client = Some(fd);
        self.clear_tail();
        if let Err(e) = self.register(epoll) {
            log::error!("registering client: {e}");
            self.client = None;
        }
    }

    /// Reads what is ready into `rx` after the kept partial frame and finds the
    /// complete frames. A closed or misbehaving client is a reset.
    pub(crate) fn read_batch(&mut self, rx: &mut RxBuf, flags: EpollFlags) -> ReadOutcome {
        self.stream.begin(rx);
        let Some(c) = &self.client else {
            return ReadOutcome::Frames;
        };
        let Some(dst) = rx.buf.get_mut(rx.fill..) else {
            return self.reset("receive buffer overrun");
        };
        match socket::recv(c.as_raw_fd(), dst, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return self.reset("client closed the connection"),
            Ok(n) => rx.fill += n,
            Err(Errno::EAGAIN | Errno::EINTR) => {
                if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                    return self.reset("client hung up");
                }
                return ReadOutcome::Frames;
            }
            Err(e) => return self.reset(&format!("receive error: {e}")),
        }
        self.reparse(rx);
        ReadOutcome::Frames
    }

    /// Finds complete frames in what `keep_partial` left at the front of the
    /// buffer (frames beyond the last batch's capacity).
    /// A bad length marks the client broken: the frames before it are still
    /// handed over, then [`Self::take_broken`] tells the loop to reset.
    pub(crate) fn reparse(&mut self, rx: &mut RxBuf) {
        self.stream.reparse(rx);
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.stream.is_broken()
    }

    /// Whether a bad length was seen; closes the client if so.
    pub(crate) fn take_broken(&mut self) -> bool {
        if !self.stream.take_broken() {
            return false;
        }
        let _ = self.reset("framing error");
        true
    }

    /// Moves a trailing partial frame to the front of the buffer.
    pub(crate) fn keep_partial(&mut self, rx: &mut RxBuf) {
        self.stream.keep_partial(rx);
    }

    fn reset(&mut self, why: &str) -> ReadOutcome {
        log::info!("{why}, resetting the guest link");
        // Closing the fd removes it from the epoll set.
        self.client = None;
        self.out_armed = false;
        self.clear_tail();
        ReadOutcome::Reset
    }

    /// Sends the arena's frames with one `sendmsg`; returns the count of
    /// frames that went out whole or whose rest waits in [`Self::tail`]. A
    /// pending tail goes first; while it is not out, nothing else is sent.
    pub(crate) fn send(&mut self, arena: &mut TxArena) -> usize {
        if !self.flush_tail() {
            return 0;
        }
        let Some(c) = &self.client else { return 0 };
        let fd = c.as_raw_fd();
        let iov = arena.prefixed_iovecs();
        let total = iov.len();
        let n = match socket::sendmsg::<()>(
            fd,
            iov.get(..total.min(1024)).unwrap_or(&iov),
            &[],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return 0,
            Err(e) => {
                log::debug!("sendmsg to client: {e}");
                return 0;
            }
        };
        let mut left = n;
        let mut whole = 0;
        for s in iov.iter() {
            if left >= s.len() {
                left -= s.len();
                whole += 1;
                continue;
            }
            if left > 0 {
                // Part of this frame is out: the rest must follow before
                // anything else, or the stream's framing is lost. It is
                // kept and sent once the socket has room.
                self.tail.clear();
                self.tail.extend_from_slice(&s[left..]);
                self.tail_sent = 0;
                whole += 1;
                self.flush_tail();
            }
            break;
        }
        whole
    }

    /// Sends what is left of a partly sent frame; true once nothing is left.
    pub(crate) fn flush_tail(&mut self) -> bool {
        while self.tail_sent < self.tail.len() {
            let Some(c) = &self.client else {
                self.clear_tail();
                return true;
            };
            match socket::send(
                c.as_raw_fd(),
                &self.tail[self.tail_sent..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => self.tail_sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return false,
                Err(e) => {
                    // The client is going away: the read side resets it.
                    log::debug!("completing a frame to the client: {e}");
                    return false;
                }
            }
        }
        self.clear_tail();
        true
    }

    /// The rest of a frame waits for room on the socket.
    pub(crate) fn tail_pending(&self) -> bool {
        self.tail_sent < self.tail.len()
    }

    fn clear_tail(&mut self) {
        self.tail.clear();
        self.tail_sent = 0;
    }
}

/// Room for the rest of one frame: the largest frame and its length prefix.
const TAIL_CAP: usize = 65535 + 14 + 4;

/// Large socket buffers on the qemu socket, as upstream passt does.
fn tune(fd: &OwnedFd) {
    let big = (i32::MAX / 2) as usize;
    let _ = socket::setsockopt(fd, sockopt::SndBuf, &big);
    let _ = socket::setsockopt(fd, sockopt::RcvBuf, &big);
}

impl Drop for QemuLink {
    fn drop(&mut self) {
        if let (Some(p), Some(_)) = (&self.path, &self.listener) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::split_frames;

    #[test]
    fn probes_free_socket_paths() {
        let dir = std::env::temp_dir().join(format!("passt-rs-qemu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = QemuLink::listen(None, &dir, false).unwrap();
        assert_eq!(a.path().unwrap(), dir.join("passt_1.socket"));
        let b = QemuLink::listen(None, &dir, false).unwrap();
        assert_eq!(b.path().unwrap(), dir.join("passt_2.socket"));
        // An explicit path that is in use is refused.
        let e = QemuLink::listen(Some(&dir.join("passt_1.socket")), &dir, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("already in use"), "{e}");
        // A stale socket of ours (nobody listening) is replaced.
        let stale = dir.join("passt_1.socket");
        drop(a);
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let c = QemuLink::listen(None, &dir, false).unwrap();
        assert_eq!(c.path().unwrap(), stale);
        drop((b, c));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Anything but a stale socket of ours is left in place: a regular
    /// file, a symbolic link, a directory, another user's socket.
    #[test]
    fn never_removes_other_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("passt-rs-qemu2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("passt_1.socket");
        std::fs::write(&file, b"precious").unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"also precious").unwrap();
        let link = dir.join("passt_2.socket");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::create_dir(dir.join("passt_3.socket")).unwrap();
        for p in [&file, &link, &dir.join("passt_3.socket")] {
            let e = QemuLink::listen(Some(p), &dir, false).unwrap_err();
            assert!(e.to_string().contains("not removing it"), "{e}");
        }
        // Probing skips them.
        let q = QemuLink::listen(None, &dir, false).unwrap();
        assert_eq!(q.path().unwrap(), dir.join("passt_4.socket"));
        drop(q);
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        assert_eq!(std::fs::read(&link).unwrap(), b"also precious");
        // A stale socket of another user.
        let other = dir.join("other.socket");
        drop(std::os::unix::net::UnixListener::bind(&other).unwrap());
        let c = std::ffi::CString::new(other.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 12345, 12345) }, 0);
        let e = QemuLink::listen(Some(&other), &dir, false).unwrap_err();
        assert!(e.to_string().contains("another user"), "{e}");
        assert!(other.exists());
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn send_completes_partial_frames() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a: OwnedFd = a.into();
        let mut link = QemuLink::from_fd(a).unwrap();
        // A small send buffer, and nobody reading yet: the socket takes
        // part of the frames, one of them cut.
        let _ = socket::setsockopt(link.client.as_ref().unwrap(), sockopt::SndBuf, &4096usize);
        let mut arena = TxArena::new(8);
        for i in 0..8u8 {
            let f = arena.next_frame_buf().unwrap();
            f[..30000].fill(i);
            arena.commit(30000);
        }
        let sent = link.send(&mut arena);
        assert!(sent >= 1);
        let reader = std::thread::spawn(move || {
            let mut b = b;
            let mut all = Vec::new();
            let mut buf = vec![0u8; 65536];
            b.set_read_timeout(Some(std::time::Duration::from_millis(500)))
                .unwrap();
            while let Ok(n) = std::io::Read::read(&mut b, &mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        // The rest of a frame the socket took part of waits in the link,
        // and nothing else goes out before it.
        let mut more = TxArena::new(1);
        more.next_frame_buf().unwrap()[..100].fill(0xee);
        more.commit(100);
        assert!(
            link.tail_pending(),
            "the socket took all {sent} frames whole: nothing partial to test"
        );
        let mut rounds = 0;
        let mut extra = 0;
        while extra == 0 {
            // A send finishes the pending rest first; only then does the
            // new frame go.
            extra = link.send(&mut more);
            assert!(extra == 0 || !link.tail_pending());
            std::thread::sleep(std::time::Duration::from_millis(1));
            rounds += 1;
            assert!(rounds < 5000, "the rest of the frame never went out");
        }
        drop(link);
        let all = reader.join().unwrap();
        assert_eq!(
            all.len(),
            sent * (30000 + 4) + 104,
            "only whole frames went out"
        );
        let mut refs = Vec::with_capacity(16);
        assert_eq!(split_frames(&all, &mut refs), Ok(all.len()));
        assert_eq!(refs.len(), sent + 1);
        assert!(
            all[all.len() - 100..].iter().all(|&x| x == 0xee),
            "the new frame last"
        );
        assert!(all[4..30004].iter().all(|&x| x == 0));
    }
}
