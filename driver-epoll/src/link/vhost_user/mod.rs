//! passt's vhost-user link (`--vhost-user`): qemu's virtio-net queues in
//! shared guest memory, driven from the event loop.
//!
//! * **Control**: the `-s` socket (or `--fd`) speaks the vhost-user
//!   protocol. `vhost`'s `BackendReqHandler` parses each message and calls
//!   [`device::Device`]; the loop calls it when the socket is readable and a
//!   whole message has arrived. One front-end at a time, like the stream
//!   link; when it goes away the core is reset and the next one accepted
//!   (unless one-off).
//! * **Queues**: each queue's kick eventfd is in the loop's epoll set
//!   (`TAG_KICK`, the queue index as id). A kick of the transmit queue reads
//!   its chains into batches for the core ([`virtq::fill_tx`]); frames for
//!   the guest go into the receive queue's buffers ([`virtq::RxFill`]).
//! * **Why `vhost` and not `vhost-user-backend`**: the latter runs the
//!   protocol on a thread of its own and each queue set on a worker thread
//!   with its own epoll loop; passt has one thread, one epoll set and a core
//!   that only that thread touches, so it uses the protocol crate (`vhost`,
//!   back-end side), `virtio-queue` for the rings and `vm-memory` for the
//!   mapped guest memory, and calls them from its own loop.

pub(crate) mod device;
pub(crate) mod memory;
pub(crate) mod rxslots;
#[cfg(test)]
pub(crate) mod tests;
pub(crate) mod virtq;

use crate::event_loop::{token, TxArena, TAG_LINK};
use crate::pcap::Pcap;
use device::{Device, QUEUES, RX, TX};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{self, MsgFlags, SockFlag};
use passt_core::SlotUse;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use vhost::vhost_user::{BackendReqHandler, Error as VuError};
use vm_memory::GuestMemoryMmap;

/// Protection of mapped guest memory: read and write, never execute.
const PROT_READ_WRITE: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// System calls of the vhost-user link while running (see
/// `isolate/seccomp.rs`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // A front-end connecting: accepted, its PID read for the log.
    SYS_accept4,
    SYS_getsockopt,
    // Messages: peeked whole first (`recv`, waiting for the rest with
    // `poll`), then read with the descriptors they carry (`recvmsg`);
    // replies (`sendmsg`).
    SYS_recvfrom,
    #[cfg(target_arch = "x86_64")]
    SYS_poll,
    #[cfg(not(target_arch = "x86_64"))]
    SYS_ppoll,
    SYS_recvmsg,
    SYS_sendmsg,
    // The socket and the queues' kick eventfds in the epoll set.
    SYS_epoll_ctl,
    // Kicks read, the guest signalled on the call eventfds.
    SYS_read,
    SYS_write,
    // Guest memory mapped from the memory table's descriptors (read-write
    // only), unmapped when replaced; replaced eventfds closed.
    SYS_mmap[2: PROT_READ_WRITE],
    SYS_munmap,
    SYS_close,
];

/// Tag of a queue's kick eventfd (the id is the queue index).
pub(crate) const TAG_KICK: u64 = 7;
/// Frames per batch handed to the core from the transmit queue.
pub(crate) const TX_BATCH: usize = 1024;
/// Transmit chains read per kick before the loop looks at other events.
pub(crate) const TX_PER_KICK: usize = 4096;
/// Longest vhost-user message body (`MAX_MSG_SIZE` of the protocol crate).
const MAX_MSG: usize = 0x1000;

/// What a control message left to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Carry on.
    Ok,
    /// The front-end went away or broke the protocol.
    Reset,
}

struct Conn {
    handler: BackendReqHandler<Mutex<Device>>,
    /// The handler's socket, for epoll and peeks: open as long as the
    /// handler is (no duplicate: `dup` is not among the calls allowed while
    /// running).
    fd: RawFd,
}

impl Conn {
    fn sock(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: `fd` belongs to `handler`, which lives as long as `self`
        // and closes it only when dropped.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) }
    }
}

/// The vhost-user side of passt.
pub(crate) struct VuLink {
    listener: Option<OwnedFd>,
    listener_registered: bool,
    path: Option<PathBuf>,
    one_off: bool,
    /// `--fd`: the connected socket, until the loop registers it.
    pending: Option<UnixStream>,
    conn: Option<Conn>,
    dev: Arc<Mutex<Device>>,
    /// The kick eventfd registered for each queue.
    kicks: [Option<RawFd>; QUEUES],
    pub(crate) tx: virtq::TxBatch,
    rx: virtq::RxFill,
    /// Guest receive buffers lent to the core.
    rx_res: Option<rxslots::Reserved>,
    /// Used elements of frames written into guest buffers, for the flush.
    rx_used: Vec<(u16, u32)>,
    /// Those frames: guest address and length.
    rx_frames: Vec<(u64, usize)>,
}

impl std::fmt::Debug for VuLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VuLink")
            .field("path", &self.path)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl VuLink {
    fn new(listener: Option<OwnedFd>, path: Option<PathBuf>, one_off: bool) -> VuLink {
        VuLink {
            listener,
            listener_registered: false,
            path,
            one_off,
            pending: None,
            conn: None,
            dev: Arc::new(Mutex::new(Device::default())),
            kicks: [None; QUEUES],
            tx: virtq::TxBatch::new(TX_BATCH),
            rx: virtq::RxFill::default(),
            rx_res: None,
            rx_used: Vec::new(),
            rx_frames: Vec::new(),
        }
    }

    /// Listens on `path`, or the first free `dir/passt_N.socket`.
    pub(crate) fn listen(path: Option<&Path>, dir: &Path, one_off: bool) -> io::Result<VuLink> {
        let (fd, p) = crate::link::qemu::listen_socket(path, dir)?;
        Ok(VuLink::new(Some(fd), Some(p), one_off))
    }

    /// A connected control socket handed over with `--fd` (one-off).
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<VuLink> {
        let s = UnixStream::from(fd);
        s.set_nonblocking(false)?;
        let mut l = VuLink::new(None, None, true);
        l.pending = Some(s);
        Ok(l)
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The device, locked (one thread: never contended).
    pub(crate) fn dev(&self) -> MutexGuard<'_, Device> {
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the listener (once) and a socket handed over with `--fd`.
    pub(crate) fn register(&mut self, epoll: &Epoll) -> io::Result<()> {
        crate::link::qemu::register_listener(
            epoll,
            self.listener.as_ref(),
            &mut self.listener_registered,
        )?;
        if let Some(s) = self.pending.take() {
            self.connect(epoll, s)?;
        }
        Ok(())
    }

    fn connect(&mut self, epoll: &Epoll, s: UnixStream) -> io::Result<()> {
        let fd = s.as_raw_fd();
        epoll.add(
            s.as_fd(),
            EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
                token(TAG_LINK, 0),
            ),
        )?;
        self.dev().reset();
        let handler = BackendReqHandler::from_stream(s, Arc::clone(&self.dev));
        self.conn = Some(Conn { handler, fd });
        Ok(())
    }

    /// Accepts a front-end: the first one, others are closed at once.
    pub(crate) fn accept(&mut self, epoll: &Epoll) {
        // Blocking: a message is read whole once it has arrived.
        let Some((fd, pid)) =
            crate::link::qemu::accept_peer(self.listener.as_ref(), SockFlag::SOCK_CLOEXEC)
        else {
            return;
        };
        if self.conn.is_some() {
            log::info!("another vhost-user front-end connected (PID {pid}), refusing it");
            return;
        }
        log::info!("vhost-user front-end connected (PID {pid})");
        if let Err(e) = self.connect(epoll, UnixStream::from(fd)) {
            log::error!("registering the vhost-user socket: {e}");
            self.conn = None;
        }
    }

    /// Handles the control message that arrived (the socket is readable).
    pub(crate) fn control(&mut self, epoll: &Epoll) -> Control {
        let Some(c) = self.conn.as_mut() else {
            return Control::Ok;
        };
        match message_ready(c.sock()) {
            Ok(Waiting::Message) => {}
            Ok(Waiting::Nothing) => return Control::Ok,
            Ok(Waiting::Partial) => {
                log::info!("vhost-user: incomplete message, resetting");
                return Control::Reset;
            }
            Err(e) => {
                log::info!("vhost-user socket: {e}");
                return Control::Reset;
            }
        }
        if early_enable(c.sock(), &self.dev) {
            return Control::Ok;
        }
        let r = c.handler.handle_request();
        self.sync_kicks(epoll);
        match r {
            Ok(()) => Control::Ok,
            Err(VuError::Disconnected | VuError::PartialMessage) => {
                log::info!("vhost-user front-end disconnected");
                Control::Reset
            }
            Err(e) => {
                log::info!("vhost-user: {e}, resetting");
                Control::Reset
            }
        }
    }

    /// Brings the epoll set in line with the device's kick eventfds.
    fn sync_kicks(&mut self, epoll: &Epoll) {
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        for f in dev.retired.drain(..) {
            let _ = epoll.delete(f.as_fd());
            for k in &mut self.kicks {
                if *k == Some(f.as_raw_fd()) {
                    *k = None;
                }
            }
        }
        let changed = dev.take_kick_changes();
        for (q, &c) in changed.iter().enumerate() {
            if !c {
                continue;
            }
            if let Some(old) = self.kicks[q].take() {
                // SAFETY: `old` is still open: a kick eventfd leaves the
                // device only through `retired`, handled above, or stays.
                let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(old) };
                let _ = epoll.delete(b);
            }
            if let Some(k) = &dev.vrings[q].kick {
                let ev = EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_KICK, q as u32));
                match epoll.add(k.as_fd(), ev) {
                    Ok(()) => self.kicks[q] = Some(k.as_raw_fd()),
                    Err(e) => log::error!("vhost-user: kick eventfd of queue {q}: {e}"),
                }
            }
        }
    }

    /// Closes the connection and forgets the device; listens again unless
    /// one-off. Returns false if the instance should exit.
    pub(crate) fn reset(&mut self, epoll: &Epoll) -> bool {
        if let Some(c) = self.conn.take() {
            let _ = epoll.delete(c.sock());
        }
        self.dev().reset();
        self.sync_kicks(epoll);
        if self.dropped() > 0 {
            log::debug!("vhost-user: {} frames dropped by the link", self.dropped());
        }
        self.tx = virtq::TxBatch::new(TX_BATCH);
        self.rx = virtq::RxFill::default();
        self.rx_res = None;
        self.rx_used.clear();
        self.rx_frames.clear();
        !self.one_off
    }

    /// Reads a kick eventfd empty.
    pub(crate) fn ack_kick(&mut self, q: usize) {
        let dev = self.dev();
        if let Some(k) = dev.vrings.get(q).and_then(|v| v.kick.as_ref()) {
            let mut b = [0u8; 8];
            let _ = nix::unistd::read(k, &mut b);
        }
    }

    /// The guest memory, if the transmit queue can be used.
    pub(crate) fn tx_memory(&self) -> Option<Arc<GuestMemoryMmap>> {
        let dev = self.dev();
        if !dev.ready(TX) {
            return None;
        }
        dev.mem.as_ref().map(|m| Arc::clone(&m.mem))
    }

    /// Fills `b` from the transmit queue (see [`virtq::fill_tx`]).
    pub(crate) fn fill_tx(&self, mem: &GuestMemoryMmap, b: &mut virtq::TxBatch) -> virtq::Fill {
        let mut dev = self.dev();
        let hdr = dev.hdr_len();
        virtq::fill_tx(&mut dev.vrings[TX].queue, mem, hdr, b, TX_BATCH)
    }

    /// Returns the chains of a finished batch to the guest.
    pub(crate) fn complete_tx(&self, mem: &GuestMemoryMmap, b: &mut virtq::TxBatch) {
        let mut dev = self.dev();
        b.complete(&mut dev.vrings[TX].queue, mem);
    }

    /// Signals the guest that transmit chains came back.
    pub(crate) fn notify_tx(&self, mem: &GuestMemoryMmap) {
        let dev = self.dev();
        let v = &dev.vrings[TX];
        virtq::notify(&v.queue, mem, v.call.as_ref());
    }

    /// Wakes the loop again for the transmit queue (work left after a
    /// bounded round): a kick of our own.
    pub(crate) fn rekick_tx(&self) {
        let dev = self.dev();
        if let Some(k) = dev.vrings[TX].kick.as_ref() {
            let _ = nix::unistd::write(k, &1u64.to_ne_bytes());
        }
    }

    /// Writes the arena's frames into the receive queue; returns how many
    /// the guest got (0 while the queue is not ready: the core sends again).
    pub(crate) fn send(&mut self, arena: &TxArena) -> usize {
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if !dev.ready(RX) {
            return 0;
        }
        let Some(mem) = dev.mem.as_ref().map(|m| Arc::clone(&m.mem)) else {
            return 0;
        };
        let o = virtq::RxOpts {
            hdr_len: dev.hdr_len(),
            mergeable: dev.mergeable(),
            csum_valid: dev.guest_csum(),
        };
        let q = &mut dev.vrings[RX].queue;
        let mut sent = 0;
        for i in 0..arena.len() {
            let Some(f) = arena.frame(i) else { break };
            if !self.rx.push(q, &mem, o, f) {
                break;
            }
            sent += 1;
        }
        if !self.rx.is_empty() {
            self.rx.publish(q, &mem);
            let v = &dev.vrings[RX];
            virtq::notify(&v.queue, &mem, v.call.as_ref());
        }
        sent
    }

    /// Lends slots for frames to the guest (the core's `TxRing::reserve`,
    /// see `link/txring.rs`): runs of the guest's receive buffers for frames of
    /// known length when the buffers are mergeable, slots of the arena to
    /// copy from otherwise (datagrams, a queue not ready, buffers too small).
    /// Frames of one kind are flushed before the other kind is lent, so
    /// they reach the guest in order.
    pub(crate) fn reserve(
        &mut self,
        arena: &mut TxArena,
        n: usize,
        len: usize,
        how: SlotUse,
    ) -> usize {
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        let guest = how != SlotUse::Datagrams && dev.ready(RX) && dev.mergeable();
        if guest && !arena.is_empty() {
            return 0;
        }
        if guest && arena.reserved() == 0 {
            let Some(mem) = dev.mem.as_ref().map(|m| Arc::clone(&m.mem)) else {
                return 0;
            };
            let opts = virtq::RxOpts {
                hdr_len: dev.hdr_len(),
                mergeable: true,
                csum_valid: dev.guest_csum(),
            };
            let q = &mut dev.vrings[RX].queue;
            let mut res = self
                .rx_res
                .take()
                .unwrap_or_else(|| rxslots::Reserved::new(q, mem, opts));
            let before = res.len();
            match res.grow(q, n, len) {
                rxslots::Grow::Added(k) => {
                    let short = how == SlotUse::Exact
                        && res.slices().get(before).is_none_or(|s| s.len() < len);
                    if !short {
                        self.rx_res = Some(res);
                        return k;
                    }
                    if before > 0 {
                        // Keep what was lent; the core flushes and asks again.
                        self.rx_res = Some(res);
                        return 0;
                    }
                    // One frame that no run holds whole: copied instead.
                    res.commit(q, &[], &mut self.rx_used, &mut self.rx_frames);
                }
                rxslots::Grow::Empty => {
                    if before > 0 {
                        self.rx_res = Some(res);
                    }
                    return 0;
                }
                rxslots::Grow::Unusable => {
                    if before > 0 {
                        self.rx_res = Some(res);
                        return 0;
                    }
                }
            }
        }
        if self.rx_res.is_some() || !self.rx_frames.is_empty() {
            return 0;
        }
        arena.reserve(n)
    }

    /// Whether the lent slots are guest buffers.
    pub(crate) fn guest_reserved(&self) -> bool {
        self.rx_res.is_some()
    }

    /// The lent guest buffers.
    pub(crate) fn reserved_slices(&mut self) -> Vec<&mut [u8]> {
        self.rx_res.as_mut().map_or_else(Vec::new, |r| r.slices())
    }

    /// Ends the loan of guest buffers: headers written, used elements kept
    /// for the flush, the rest given back.
    pub(crate) fn commit_guest(&mut self, lens: &[usize]) {
        let Some(res) = self.rx_res.take() else {
            return;
        };
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        res.commit(
            &mut dev.vrings[RX].queue,
            lens,
            &mut self.rx_used,
            &mut self.rx_frames,
        );
    }

    /// Frames written into guest buffers and not published yet.
    pub(crate) fn guest_pending(&self) -> usize {
        self.rx_frames.len()
    }

    /// Hands the frames to the guest: those in its buffers by publishing
    /// them, those in the arena by copying them in. Returns how many it got.
    pub(crate) fn flush_rx(&mut self, arena: &mut TxArena, pcap: &mut Option<Pcap>) -> usize {
        if !self.rx_frames.is_empty() {
            let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
            let Some(mem) = dev.mem.as_ref().map(|m| Arc::clone(&m.mem)) else {
                self.rx_used.clear();
                self.rx_frames.clear();
                return 0;
            };
            let v = &mut dev.vrings[RX];
            virtq::push_used(&mut v.queue, &mem, self.rx_used.drain(..));
            virtq::notify(&v.queue, &mem, v.call.as_ref());
            if let Some(p) = pcap.as_mut() {
                for &(gpa, len) in &self.rx_frames {
                    let mut f = vec![0u8; len];
                    if vm_memory::Bytes::read_slice(&*mem, &mut f, vm_memory::GuestAddress(gpa))
                        .is_ok()
                    {
                        p.write_frame(&f);
                    }
                }
            }
            let n = self.rx_frames.len();
            self.rx_frames.clear();
            return n;
        }
        if arena.is_empty() {
            return 0;
        }
        let sent = self.send(arena).min(arena.len());
        if let Some(p) = pcap.as_mut() {
            for i in 0..sent {
                if let Some(f) = arena.frame(i) {
                    p.write_frame(f);
                }
            }
        }
        arena.clear();
        sent
    }

    /// Frames dropped by the link itself (not frames, or too large for the
    /// guest's buffers).
    pub(crate) fn dropped(&self) -> u64 {
        self.tx.dropped + self.rx.dropped
    }
}

/// `SET_VRING_ENABLE`.
const SET_VRING_ENABLE: u32 = 18;

/// qemu enables rings as the guest's driver sets the device up, which may
/// be before it acknowledges the features; the protocol crate refuses the
/// message then (the protocol feature is not acknowledged yet). Such a
/// message is read and applied here. Returns whether it was.
fn early_enable(s: std::os::fd::BorrowedFd<'_>, dev: &Mutex<Device>) -> bool {
    let mut d = dev.lock().unwrap_or_else(|e| e.into_inner());
    if d.protocol_negotiated() {
        return false;
    }
    let mut m = [0u8; 20];
    let peek = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    let fd = s.as_raw_fd();
    let word = |b: &[u8; 20], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if socket::recv(fd, &mut m, peek) != Ok(20)
        || word(&m, 0) != SET_VRING_ENABLE
        || word(&m, 8) != 8
    {
        return false;
    }
    if socket::recv(fd, &mut m, MsgFlags::MSG_DONTWAIT) != Ok(20) {
        return false;
    }
    let (index, num) = (word(&m, 12), word(&m, 16));
    use vhost::vhost_user::VhostUserBackendReqHandlerMut;
    if d.set_vring_enable(index, num == 1).is_err() {
        log::debug!("vhost-user: SET_VRING_ENABLE for queue {index}");
    }
    true
}

/// What the control socket holds.
#[derive(Debug, PartialEq, Eq)]
enum Waiting {
    /// A whole message, or the end of the stream.
    Message,
    /// Nothing (a spurious wake-up).
    Nothing,
    /// Part of a message, still after a second.
    Partial,
}

/// Whether a whole message is waiting on the control socket. A message still
/// arriving gets a second, for a slow front-end.
fn message_ready(s: std::os::fd::BorrowedFd<'_>) -> io::Result<Waiting> {
    let fd = s.as_raw_fd();
    let mut buf = vec![0u8; 12 + MAX_MSG];
    let peek = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    let mut seen = false;
    for attempt in 0..2 {
        match socket::recv(fd, &mut buf[..12], peek) {
            // Closed: handle_request reports it.
            Ok(0) => return Ok(Waiting::Message),
            Ok(12) => {
                seen = true;
                let size = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
                if size > MAX_MSG {
                    // Refused by the protocol crate, whole or not.
                    return Ok(Waiting::Message);
                }
                let m = socket::recv(fd, &mut buf[..12 + size], peek).unwrap_or(0);
                if m == 12 + size {
                    return Ok(Waiting::Message);
                }
            }
            Ok(_) => seen = true,
            Err(Errno::EAGAIN | Errno::EINTR) => {
                if !seen {
                    return Ok(Waiting::Nothing);
                }
            }
            Err(e) => return Err(e.into()),
        }
        if attempt == 0 {
            let mut p = [nix::poll::PollFd::new(
                s.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(1000u16));
        }
    }
    Ok(Waiting::Partial)
}
