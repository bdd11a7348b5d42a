//! The event loop: epoll, the clock, frame batches in, frames out.
//!
//! One thread waits on one epoll set. The 64-bit epoll data word carries a tag
//! in its top byte and, for sockets, the core's [`SockId`] in its low 32 bits,
//! so an event needs no lookup to reach the core. Tags: core sockets, the guest
//! link (tap device or qemu client), the qemu listening socket, and a
//! signalfd (SIGTERM, SIGQUIT, SIGCHLD).
//!
//! The loop follows the core's call order: after every input (a batch of guest
//! frames, a socket event, a timeout, a link reset) it drains `poll_action`,
//! carrying out each action at once and feeding results back; then drains
//! `poll_frame` into the transmit arena; then flushes the arena to the guest
//! link and reports the count with `handle_tap_sent`. Only then is the batch
//! buffer reused and epoll waited on, at most until `poll_timeout`.

use crate::pcap::Pcap;
use crate::qemu::QemuLink;
use crate::sock::{Outcome, SockTable, TAG_SOCK};
use crate::tap::TapDevice;
use crate::txring::LinkTx;
use crate::vhost_user::{VuLink, TAG_KICK};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use passt_core::{Action, Core, FrameBatch, FrameMeta, Instant, SockEvent, SockId, TxRing};
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// Tag of the guest link's data fd (tap device or qemu client).
pub(crate) const TAG_LINK: u64 = 2;
/// Tag of the qemu listening socket.
pub(crate) const TAG_LISTEN: u64 = 3;
/// Tag of the signalfd.
pub(crate) const TAG_SIGNAL: u64 = 4;
/// Tag of the pidfd of a joined process (pasta).
pub(crate) const TAG_PIDFD: u64 = 5;
/// Tag of the inotify watch on the directory of a namespace file (pasta).
pub(crate) const TAG_INOTIFY: u64 = 6;

/// System calls of the loop while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // Waiting for events.
    #[cfg(target_arch = "x86_64")]
    SYS_epoll_wait,
    #[cfg(not(target_arch = "x86_64"))]
    SYS_epoll_pwait,
    // Sockets and the link in and out of the set.
    SYS_epoll_ctl,
    // The signalfd (and pasta's inotify watch).
    SYS_read,
    // Descriptors the core is done with.
    SYS_close,
];

/// System calls of pasta's loop while running, beyond [`SYSCALLS`].
pub(crate) const PASTA_SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // Reaping the spawned command.
    SYS_wait4,
    // The once-a-second check that the namespace file is still there.
    SYS_newfstatat,
];

/// The epoll data word for `tag` and `id`.
pub(crate) const fn token(tag: u64, id: u32) -> u64 {
    (tag << 56) | id as u64
}

/// Splits an epoll data word into tag and id.
pub(crate) const fn untoken(data: u64) -> (u64, u32) {
    (data >> 56, data as u32)
}

/// The driver's clock: `CLOCK_MONOTONIC` as a core [`Instant`].
pub(crate) fn now() -> Instant {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let ns = u64::try_from(ts.tv_sec())
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(ts.tv_nsec()).unwrap_or(0));
            Instant::from_nanos(ns)
        }
        Err(_) => Instant::ZERO,
    }
}

/// Bytes before each frame in a transmit slot: room for qemu's length prefix.
pub(crate) const TAP_HDR: usize = 4;
/// Largest Ethernet frame on the guest link (`ETH_MAX_MTU` + header).
pub(crate) const MAX_FRAME: usize = 65535 + 14;
/// Bytes before each frame in a transmit slot: room for qemu's length
/// prefix ([`TAP_HDR`]) or a tap's virtio-net header, written in place.
pub(crate) const FRAME_ROOM: usize = passt_core::VIRTIO_NET_HDR_V1_LEN;
/// Size of one transmit slot.
pub(crate) const SLOT_LEN: usize = FRAME_ROOM + MAX_FRAME + 1;
/// Bytes at the start of a transmit slot touched at start-up: room for the
/// largest control frame the core builds (a DHCP reply).
const CONTROL_FRAME_ROOM: usize = 2048;
/// Slots in the transmit arena (upstream passt uses 128 TCP frames per flush).
pub(crate) const TX_SLOTS: usize = 128;
/// Bytes of the receive batch buffer (passt: 8 MiB per read from qemu).
pub(crate) const RX_BYTES: usize = 8 << 20;

/// The transmit arena: fixed slots, each a full-size frame with room for the
/// qemu length prefix or a virtio-net header in front. Control frames from `poll_frame` and peeked
/// TCP payload share it, so frames leave in the order the core produced them.
#[derive(Debug)]
pub(crate) struct TxArena {
    buf: Vec<u8>,
    /// Next unused slot.
    next: usize,
    /// Finished frames in order: (slot, frame length).
    frames: Vec<(usize, usize)>,
    /// The offload metadata of each of `frames`.
    metas: Vec<FrameMeta>,
    /// Slots from `next` on lent for frames and not committed yet.
    reserved: usize,
}

impl TxArena {
    pub(crate) fn new(slots: usize) -> Self {
        let mut buf = vec![0; slots.max(1) * SLOT_LEN];
        // The first pages of every slot, where control frames (resets,
        // ARP, DHCP replies) go, are touched now: a burst of them (a SYN
        // flood refused with resets) then costs no memory it did not have
        // at start. The rest of a slot is touched by the first full-size
        // frame through it, as any bulk transfer does.
        for slot in buf.chunks_mut(SLOT_LEN) {
            let head = FRAME_ROOM + CONTROL_FRAME_ROOM;
            for i in (0..head.min(slot.len())).step_by(4096).chain([head - 1]) {
                if let Some(b) = slot.get_mut(i) {
                    // SAFETY: a valid, aligned pointer to a byte of `slot`;
                    // volatile so that the store of a zero to zeroed memory
                    // is kept.
                    unsafe { std::ptr::write_volatile(b, 0) };
                }
            }
        }
        TxArena {
            buf,
            next: 0,
            frames: Vec::with_capacity(slots.max(1)),
            metas: Vec::with_capacity(slots.max(1)),
            reserved: 0,
        }
    }

    pub(crate) fn slots(&self) -> usize {
        self.buf.len() / SLOT_LEN
    }

    pub(crate) fn free(&self) -> usize {
        self.slots().saturating_sub(self.next)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn clear(&mut self) {
        self.next = 0;
        self.frames.clear();
        self.metas.clear();
        self.reserved = 0;
    }

    /// Lends up to `n` more free slots; returns how many.
    pub(crate) fn reserve(&mut self, n: usize) -> usize {
        let k = n.min(self.free().saturating_sub(self.reserved));
        self.reserved += k;
        k
    }

    /// Slots lent and not committed yet.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// The frame areas of the lent slots, in order.
    pub(crate) fn reserved_areas(&mut self) -> Vec<&mut [u8]> {
        let (first, k) = (self.next, self.reserved);
        self.buf
            .chunks_mut(SLOT_LEN)
            .skip(first)
            .take(k)
            .map(|c| &mut c[FRAME_ROOM..])
            .collect()
    }

    /// Ends the loan: the lent slots hold frames of `lens` bytes (0: none).
    pub(crate) fn commit_reserved(&mut self, lens: &[usize]) {
        self.commit_reserved_meta(lens, &[]);
    }

    /// Ends the loan like [`Self::commit_reserved`], with each frame's
    /// offload metadata (missing ones: plain).
    pub(crate) fn commit_reserved_meta(&mut self, lens: &[usize], metas: &[FrameMeta]) {
        let n = lens.len().min(self.reserved);
        self.commit_slots(&lens[..n], metas);
        self.reserved = 0;
    }

    #[cfg(test)]
    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * SLOT_LEN;
        &mut self.buf[start..start + SLOT_LEN]
    }

    /// The frame area of the next free slot (`None` if full).
    #[cfg(test)]
    pub(crate) fn next_frame_buf(&mut self) -> Option<&mut [u8]> {
        if self.free() == 0 {
            return None;
        }
        let i = self.next;
        Some(&mut self.slot_mut(i)[FRAME_ROOM..])
    }

    /// Marks the next free slot as holding a frame of `len` bytes.
    #[cfg(test)]
    pub(crate) fn commit(&mut self, len: usize) {
        if self.free() > 0 && len > 0 && len <= MAX_FRAME {
            self.frames.push((self.next, len));
            self.metas.push(FrameMeta::PLAIN);
            self.next += 1;
        }
    }

    /// Frame `i` in send order.
    pub(crate) fn frame(&self, i: usize) -> Option<&[u8]> {
        let &(slot, len) = self.frames.get(i)?;
        let start = slot * SLOT_LEN + FRAME_ROOM;
        self.buf.get(start..start + len)
    }

    /// Frame `i` behind its offload metadata written as a virtio-net header
    /// of `hdr_len` bytes (at most [`FRAME_ROOM`]).
    pub(crate) fn vnet_frame(&mut self, i: usize, hdr_len: usize) -> Option<&[u8]> {
        let &(slot, len) = self.frames.get(i)?;
        let meta = self.metas.get(i).copied().unwrap_or_default();
        let start = (slot * SLOT_LEN + FRAME_ROOM).checked_sub(hdr_len)?;
        let s = self.buf.get_mut(start..start + hdr_len + len)?;
        meta.write_virtio(&mut s[..hdr_len])?;
        Some(s)
    }

    /// Frame `i` with its 4-byte big-endian length prefix written in front.
    pub(crate) fn prefixed_frame(&mut self, i: usize) -> Option<&[u8]> {
        let &(slot, len) = self.frames.get(i)?;
        let start = slot * SLOT_LEN + FRAME_ROOM - TAP_HDR;
        let s = self.buf.get_mut(start..start + TAP_HDR + len)?;
        s[..TAP_HDR].copy_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
        Some(s)
    }

    /// Every frame with its length prefix, for one `sendmsg`.
    pub(crate) fn prefixed_iovecs(&mut self) -> Vec<IoSlice<'_>> {
        for i in 0..self.frames.len() {
            let _ = self.prefixed_frame(i);
        }
        let buf = &self.buf;
        self.frames
            .iter()
            .map(|&(slot, len)| {
                let start = slot * SLOT_LEN + FRAME_ROOM - TAP_HDR;
                IoSlice::new(&buf[start..start + TAP_HDR + len])
            })
            .collect()
    }

    /// Records the frames the core finished in the next `lens.len()` slots.
    fn commit_slots(&mut self, lens: &[usize], metas: &[FrameMeta]) {
        let mut last_used = None;
        for (n, &len) in lens.iter().enumerate() {
            if len > 0 && len <= MAX_FRAME {
                self.frames.push((self.next + n, len));
                self.metas
                    .push(metas.get(n).copied().unwrap_or(FrameMeta::PLAIN));
                last_used = Some(n);
            }
        }
        if let Some(n) = last_used {
            self.next += n + 1;
        }
    }
}

pub(crate) use crate::framing::RxBuf;

/// The guest link.
#[derive(Debug)]
pub(crate) enum Link {
    /// pasta: a tap device in the guest namespace.
    Tap(TapDevice),
    /// passt: qemu's stream socket.
    Qemu(QemuLink),
    /// passt `--vhost-user`: virtqueues in the guest's memory.
    VhostUser(Box<VuLink>),
}

impl Link {
    /// Asks (or stops asking) to be told when the link can take frames
    /// again. The qemu socket watches for `EPOLLOUT`; vhost-user hears it
    /// from the receive queue's kicks, which it always watches; a tap
    /// device drops what it cannot take and never needs it.
    pub(crate) fn want_writable(&mut self, epoll: &Epoll, on: bool) {
        if let Link::Qemu(q) = self {
            q.want_writable(epoll, on);
        }
    }

    /// Part of a frame waits for room on the link (the qemu socket).
    pub(crate) fn tail_pending(&self) -> bool {
        matches!(self, Link::Qemu(q) if q.tail_pending())
    }

    /// Sends the arena's frames; returns how many the link accepted.
    pub(crate) fn send(&mut self, arena: &mut TxArena) -> usize {
        match self {
            Link::Tap(t) => t.send(arena),
            Link::Qemu(q) => q.send(arena),
            Link::VhostUser(v) => v.send(arena),
        }
    }
}

/// Exit when a namespace disappears (pasta, unless `--no-netns-quit`).
#[derive(Debug)]
pub(crate) struct NsWatch {
    /// A path that exists as long as the namespace does (`/proc/PID` or the
    /// bind-mounted namespace file), checked once a second.
    pub(crate) path: PathBuf,
    /// For a PID: a pidfd, readable as soon as the process exits.
    pub(crate) pid: Option<i32>,
    /// The path's directory, opened at start-up: once the sandbox has
    /// taken the file system away, the check looks the name up from here.
    dir: OwnedFd,
    /// The path's last component.
    name: std::ffi::CString,
}

impl NsWatch {
    /// Watches `path` (and the process `pid`, if given).
    pub(crate) fn new(path: PathBuf, pid: Option<i32>) -> std::io::Result<NsWatch> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let bad = || std::io::Error::other(format!("cannot watch {}", path.display()));
        let name = path.file_name().ok_or_else(bad)?;
        let name = std::ffi::CString::new(name.as_bytes()).map_err(|_| bad())?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        Ok(NsWatch {
            path,
            pid,
            dir: dir.into(),
            name,
        })
    }

    /// Whether the watched file is gone: any failed lookup but one for lack
    /// of permission (another user's `/proc/PID`), as upstream passt.
    fn gone(&self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: an all-zero stat is valid storage for fstatat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a directory descriptor we own, a valid C string, storage
        // for one stat.
        let r = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        r < 0 && nix::errno::Errno::last() != nix::errno::Errno::EACCES
    }
}

/// An inotify descriptor watching `dir` for deletions.
fn inotify_dir(dir: &std::path::Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by no one else.
    let fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: `c` is a valid C string for the duration of the call.
    let w = unsafe {
        libc::inotify_add_watch(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            c.as_ptr(),
            libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_DELETE_SELF,
        )
    };
    if w < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// `pidfd_open(2)`: a descriptor that turns readable when `pid` exits.
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by no one else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(r as i32) })
}

/// Everything the loop needs besides the core and the link.
#[derive(Debug, Default)]
pub(crate) struct LoopOptions {
    /// Frame capture.
    pub(crate) pcap: Option<Pcap>,
    /// The guest's network namespace (pasta), for `Netns::Guest` sockets.
    pub(crate) guest_ns: Option<crate::isolate::worker::GuestNs>,
    /// The command pasta spawned: exit with its status.
    pub(crate) child: Option<Pid>,
    /// Watched namespace.
    pub(crate) ns_watch: Option<NsWatch>,
    /// The guest namespace's TCP tables, for `-t auto` (pasta).
    pub(crate) port_scanner: Option<crate::portscan::PortScanner>,
    /// The host's TCP tables, for `-T auto` (pasta, splicing on).
    pub(crate) host_port_scanner: Option<crate::portscan::PortScanner>,
    /// `--stats`.
    pub(crate) stats: Option<crate::stats::Stats>,
    /// The forwarding tables: `auto` modes, and whether a listener that
    /// fails at start-up is fatal (explicit ports).
    pub(crate) fwd: crate::fwd::Forwarding,
}

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Exit with this status.
    Code(i32),
}

/// The state the drain step works on (everything but the receive buffer).
struct Io {
    core: Core,
    epoll: Epoll,
    socks: SockTable,
    arena: TxArena,
    link: Link,
    pcap: Option<Pcap>,
    guest_ns: Option<crate::isolate::worker::GuestNs>,
    discard: Vec<u8>,
    events: Vec<SockEvent>,
    /// Length and peer of each datagram of the last `Recv`.
    dgram_got: Vec<(usize, std::net::SocketAddr)>,
    /// Spliced pairs (pasta's loopback path).
    splicer: crate::sock::splice::Splicer,
    /// Spliced UDP flows (pasta's loopback path).
    dsplicer: crate::sock::udp_splice::DgramSplicer,
}

/// The event loop of one passt or pasta instance.
pub(crate) struct Runtime {
    io: Io,
    rx: RxBuf,
    signals: SignalFd,
    child: Option<Pid>,
    ns_watch: Option<NsWatch>,
    /// Kept open while registered.
    _pidfd: Option<OwnedFd>,
    /// inotify on the namespace file's directory, drained on each event.
    inotify: Option<OwnedFd>,
    /// `-t auto`: rescans of the guest's listening ports.
    auto_fwd: Option<crate::portscan::AutoForward>,
    /// `-t` or `-u` names ports explicitly: a listener that cannot be
    /// opened at start-up is fatal.
    explicit_ports: bool,
    /// Whether [`Runtime::start`] ran.
    started: bool,
    /// `--stats`.
    stats: Option<crate::stats::Stats>,
}

/// Sets up the signalfd: SIGTERM, SIGQUIT and SIGCHLD are blocked and read
/// from it; SIGPIPE is ignored.
fn signals() -> std::io::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGQUIT);
    set.add(Signal::SIGCHLD);
    set.thread_block()?;
    // SAFETY: SIG_IGN installs no handler code.
    unsafe {
        nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn)?;
    }
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

impl Runtime {
    /// Builds the loop: creates the epoll set and registers the link.
    pub(crate) fn new(core: Core, link: Link, opts: LoopOptions) -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let signals = signals()?;
        epoll.add(
            signals.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_SIGNAL, 0)),
        )?;
        let mut link = link;
        match &mut link {
            Link::Tap(t) => epoll.add(
                t.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_LINK, 0)),
            )?,
            Link::Qemu(q) => q.register(&epoll)?,
            Link::VhostUser(v) => v.register(&epoll)?,
        }
        let mut pidfd = None;
        if let Some(pid) = opts.ns_watch.as_ref().and_then(|w| w.pid) {
            // Without pidfds (old kernels), the once-a-second check remains.
            if let Ok(fd) = pidfd_open(pid) {
                epoll.add(
                    fd.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_PIDFD, 0)),
                )?;
                pidfd = Some(fd);
            }
        }
        let mut inotify = None;
        if let Some(w) = opts.ns_watch.as_ref().filter(|w| w.pid.is_none()) {
            // Without inotify on that file system, the once-a-second check
            // remains.
            if let Some(fd) = w.path.parent().and_then(|d| inotify_dir(d).ok()) {
                epoll.add(
                    fd.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_INOTIFY, 0)),
                )?;
                inotify = Some(fd);
            }
        }
        let flows = core.config().limits.flows;
        let splicer = if core.config().splice {
            crate::sock::splice::Splicer::new()
        } else {
            crate::sock::splice::Splicer::default()
        };
        let auto_fwd = crate::portscan::AutoForward::build(
            opts.port_scanner,
            opts.host_port_scanner,
            &opts.fwd,
            &core.config().forwards,
        );
        let spec = crate::fwd::FwdMode::Spec;
        let explicit_ports = opts.fwd.tcp_in.mode() == spec
            || opts.fwd.udp_in.mode() == spec
            || opts.fwd.tcp_out.mode() == spec
            || opts.fwd.udp_out.mode() == spec;
        Ok(Runtime {
            io: Io {
                core,
                epoll,
                socks: SockTable::with_capacity(flows),
                arena: TxArena::new(TX_SLOTS),
                link,
                pcap: opts.pcap,
                guest_ns: opts.guest_ns,
                discard: Vec::new(),
                events: Vec::with_capacity(8),
                dgram_got: Vec::with_capacity(crate::sock::dgram::MAX_BATCH),
                splicer,
                dsplicer: crate::sock::udp_splice::DgramSplicer::default(),
            },
            rx: RxBuf::new(RX_BYTES),
            signals,
            child: opts.child,
            ns_watch: opts.ns_watch,
            _pidfd: pidfd,
            inotify,
            auto_fwd,
            explicit_ports,
            started: false,
            stats: opts.stats,
        })
    }

    /// In the child of a fork: registers the signalfd again. epoll reports a
    /// signalfd ready for the signals of the process that added it, so the
    /// parent's registration would never wake the child.
    pub(crate) fn after_fork(&mut self) -> std::io::Result<()> {
        self.io.epoll.delete(self.signals.as_fd())?;
        self.io.epoll.add(
            self.signals.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_SIGNAL, 0)),
        )?;
        Ok(())
    }

    /// The guest's namespace (pasta).
    pub(crate) fn guest_ns(&self) -> Option<&crate::isolate::worker::GuestNs> {
        self.io.guest_ns.as_ref()
    }

    /// Runs until a signal, the spawned command's exit, the namespace's
    /// disappearance or (passt with `-1`) the client's disconnection.
    /// [`Self::start`] comes first (called here if it was not).
    pub(crate) fn run(&mut self) -> i32 {
        if !self.started {
            if let Err(code) = self.start() {
                return code;
            }
        }
        let mut events = vec![EpollEvent::empty(); 64];
        let mut last_ns_check = now();
        loop {
            if let Some(code) = self.turn(&mut events, None, &mut last_ns_check) {
                self.log_counters();
                return code;
            }
        }
    }

    /// With `-d`, on the way out: what the core counted, the frames it
    /// dropped by reason (the names of `DropReason`).
    fn log_counters(&self) {
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let c = self.io.core.counters();
        let drops: Vec<String> = c.drop_reasons().map(|(r, n)| format!("{r} {n}")).collect();
        log::debug!(
            "frames from the guest {}, to the guest {}; dropped: {}",
            c.frames_in,
            c.frames_out,
            if drops.is_empty() {
                "none".to_string()
            } else {
                drops.join(", ")
            }
        );
    }

    /// Start-up work, done before pasta or passt reports that it is ready
    /// (PID file, daemonising, the spawned command) and before privileges
    /// are dropped (so that ports below 1024 can be bound): anything the
    /// core queued at start-up goes out, the listeners of explicitly
    /// forwarded ports among it, each of which must bind. Returns the exit
    /// status on failure.
    pub(crate) fn start(&mut self) -> Result<(), i32> {
        self.started = true;
        let t = now();
        self.io.core.start(t);
        // A tap device, or a qemu socket handed over with --fd, is up now:
        // ask for the guest's MAC.
        if matches!(&self.io.link, Link::Tap(_))
            || matches!(&self.io.link, Link::Qemu(q) if q.connected())
        {
            self.io.core.handle_tap_connected(t);
        }
        self.io.drain(t, &[]);
        // The core reports the listeners it could not open; an address
        // family that is off is not an error here.
        let failed = self
            .io
            .core
            .failed_forwards()
            .find_map(|f| f.addr.zip(f.error));
        if let (true, Some((addr, e))) = (self.explicit_ports, failed) {
            log::error!(
                "Failed to bind port {} ({}): {}",
                addr.port(),
                addr.ip(),
                std::io::Error::from_raw_os_error(e.0)
            );
            return Err(1);
        }
        Ok(())
    }

    /// One wait and the work it brings; `cap` bounds the wait (tests).
    /// Returns an exit status when it is time to stop.
    fn turn(
        &mut self,
        events: &mut [EpollEvent],
        cap: Option<Duration>,
        last_ns_check: &mut Instant,
    ) -> Option<i32> {
        let t = now();
        let mut wait = self.io.core.poll_timeout().map(|d| d.since(t));
        if self.ns_watch.is_some() {
            let sec = Duration::from_secs(1);
            wait = Some(wait.map_or(sec, |w| w.min(sec)));
        }
        if let Some(a) = &self.auto_fwd {
            let w = a.deadline().map_or(Duration::ZERO, |d| d.since(t));
            wait = Some(wait.map_or(w, |v| v.min(w)));
        }
        if let Some(c) = cap {
            wait = Some(wait.map_or(c, |w| w.min(c)));
        }
        let timeout = match wait {
            None => nix::sys::epoll::EpollTimeout::NONE,
            // Rounded up, so that the deadline has passed on wake-up.
            Some(w) => nix::sys::epoll::EpollTimeout::from(
                u16::try_from(w.as_micros().div_ceil(1000)).unwrap_or(u16::MAX),
            ),
        };
        let n = match self.io.epoll.wait(events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                log::error!("epoll_wait: {e}");
                return Some(1);
            }
        };
        if let Some(st) = self.stats.as_mut() {
            for ev in events.iter().take(n) {
                st.event(untoken(ev.data()).0);
            }
            if n > 0 {
                st.tick(t);
            }
        }
        for ev in events.iter().take(n) {
            let (tag, id) = untoken(ev.data());
            let flags = ev.events();
            let r = match tag {
                TAG_SOCK => {
                    self.sock_event(SockId(id), flags);
                    None
                }
                TAG_LINK => self.link_event(flags),
                TAG_KICK => {
                    self.kick_event(id as usize);
                    None
                }
                TAG_LISTEN => self.listen_event(),
                TAG_SIGNAL => self.signal_event(),
                TAG_INOTIFY => self.inotify_event(),
                TAG_PIDFD => {
                    log::info!("target process exited, exiting");
                    Some(Exit::Code(0))
                }
                _ => None,
            };
            if let Some(Exit::Code(c)) = r {
                self.io.drain(now(), &[]);
                return Some(c);
            }
        }
        let t = now();
        if self.io.core.poll_timeout().is_some_and(|d| d <= t) {
            self.io.core.handle_timeout(t);
            self.io.drain(t, &[]);
        }
        if let Some(fwds) = self.auto_fwd.as_mut().and_then(|a| a.poll(t)) {
            self.io.core.set_forwards(t, &fwds);
            self.io.drain(t, &[]);
        }
        if let Some(w) = &self.ns_watch {
            if t.since(*last_ns_check) >= Duration::from_secs(1) {
                *last_ns_check = t;
                if w.gone() {
                    log::info!("namespace gone ({}), exiting", w.path.display());
                    return Some(0);
                }
            }
        }
        None
    }

    #[cfg(test)]
    fn guest_seen(&self) -> bool {
        self.io.core.guest().seen
    }

    fn sock_event(&mut self, sock: SockId, flags: EpollFlags) {
        if self.io.dsplicer.owns(sock) {
            let io = &mut self.io;
            if let Some((s, ev)) = io.dsplicer.event(&io.epoll, &mut io.socks, sock, flags) {
                let t = now();
                log::trace!("{s:?}: {ev:?}");
                io.core.handle_sock_event(t, s, ev);
                io.drain(t, &[]);
            }
            return;
        }
        if self.io.splicer.owns(sock) {
            let io = &mut self.io;
            if let Some((s, ev)) = io.splicer.event(&io.epoll, &mut io.socks, sock, flags) {
                let t = now();
                log::trace!("{s:?}: {ev:?}");
                io.core.handle_sock_event(t, s, ev);
                io.drain(t, &[]);
            }
            return;
        }
        let mut evs = std::mem::take(&mut self.io.events);
        evs.clear();
        self.io
            .socks
            .events_for(&self.io.epoll, sock, flags, &mut evs);
        for e in evs.iter() {
            let t = now();
            if log::log_enabled!(log::Level::Trace) {
                log::trace!("{sock:?}: {e:?}");
            }
            self.io.core.handle_sock_event(t, sock, *e);
            self.io.drain(t, &[]);
            if self.io.socks.get(sock).is_none() {
                break;
            }
        }
        self.io.events = evs;
    }

    fn link_event(&mut self, flags: EpollFlags) -> Option<Exit> {
        if flags.contains(EpollFlags::EPOLLOUT) {
            // The qemu socket has room again: first for the rest of a frame
            // it took part of, then for frames it refused.
            let done = match &mut self.io.link {
                Link::Qemu(q) => q.flush_tail(),
                _ => true,
            };
            if done {
                self.io.link.want_writable(&self.io.epoll, false);
                self.link_writable();
            }
        }
        let rx = &mut self.rx;
        let r = match &mut self.io.link {
            Link::Tap(t) => t.read_batch(rx),
            Link::Qemu(q) => q.read_batch(rx, flags),
            Link::VhostUser(v) => {
                if v.control(&self.io.epoll) == crate::vhost_user::Control::Reset {
                    return self.link_reset();
                }
                // A queue may have started: frames may wait on either side.
                self.vu_tx();
                self.link_writable();
                return None;
            }
        };
        match r {
            crate::tap::ReadOutcome::Frames => {
                // A read from qemu may hold more frames than one batch takes:
                // the rest is already in the buffer, where no epoll event
                // would report it, so it is handed over at once.
                let mut rounds = 0;
                while !rx.refs.is_empty() {
                    log::trace!("guest link: {} frames in", rx.refs.len());
                    let t = now();
                    let vnet = match &self.io.link {
                        Link::Tap(tap) => tap.vnet_hdr_len(),
                        _ => 0,
                    };
                    let batch = FrameBatch::new(&rx.buf, &rx.refs).with_virtio_hdr(vnet);
                    if let Some(p) = &mut self.io.pcap {
                        for i in 0..batch.len() {
                            if let Some(f) = batch.frame(i) {
                                p.write_frame(f);
                            }
                        }
                    }
                    self.io.core.handle_tap_batch(t, &batch);
                    self.io.drain(t, &rx.buf);
                    rx.refs.clear();
                    let Link::Qemu(q) = &mut self.io.link else {
                        break;
                    };
                    // The batch is done with: keep only what follows it.
                    q.keep_partial(rx);
                    rounds += 1;
                    if q.is_broken() || rounds > RX_BYTES / 14 {
                        break;
                    }
                    q.reparse(rx);
                }
                if let Link::Qemu(q) = &mut self.io.link {
                    if q.take_broken() {
                        return self.link_reset();
                    }
                    q.keep_partial(rx);
                }
                None
            }
            crate::tap::ReadOutcome::Reset => self.link_reset(),
        }
    }

    /// The guest link went away: tell the core, then wait for the next qemu
    /// client, or exit.
    fn link_reset(&mut self) -> Option<Exit> {
        self.rx.refs.clear();
        self.rx.fill = 0;
        let t = now();
        self.io.core.handle_tap_reset(t);
        self.io.drain(t, &[]);
        match &mut self.io.link {
            Link::Qemu(q) if !q.one_off() => {
                if let Err(e) = q.register(&self.io.epoll) {
                    log::error!("listening again: {e}");
                    return Some(Exit::Code(1));
                }
                None
            }
            Link::Qemu(_) => {
                log::info!("client closed the connection, exiting (one-off)");
                Some(Exit::Code(0))
            }
            Link::VhostUser(v) => {
                if v.reset(&self.io.epoll) {
                    None
                } else {
                    log::info!("vhost-user front-end gone, exiting (one-off)");
                    Some(Exit::Code(0))
                }
            }
            Link::Tap(_) => {
                log::error!("tap device closed or failed");
                Some(Exit::Code(1))
            }
        }
    }

    /// Something was deleted next to the namespace file: is it gone?
    fn inotify_event(&mut self) -> Option<Exit> {
        if let Some(fd) = &self.inotify {
            let mut buf = [0u8; 4096];
            while nix::unistd::read(fd, &mut buf).is_ok_and(|n| n > 0) {}
        }
        let w = self.ns_watch.as_ref()?;
        if w.gone() {
            log::info!("namespace gone ({}), exiting", w.path.display());
            return Some(Exit::Code(0));
        }
        None
    }

    fn listen_event(&mut self) -> Option<Exit> {
        match &mut self.io.link {
            Link::Qemu(q) => {
                let before = q.connected();
                q.accept(&self.io.epoll);
                if !before && q.connected() {
                    // A (new) client: ask for its guest's MAC.
                    let t = now();
                    self.io.core.handle_tap_connected(t);
                    self.io.drain(t, &[]);
                }
            }
            Link::VhostUser(v) => v.accept(&self.io.epoll),
            Link::Tap(_) => {}
        }
        None
    }

    /// A vhost-user queue was kicked: the guest sent frames (transmit
    /// queue) or added receive buffers.
    fn kick_event(&mut self, q: usize) {
        let Link::VhostUser(v) = &mut self.io.link else {
            return;
        };
        v.ack_kick(q);
        if q == crate::vhost_user::device::TX {
            self.vu_tx();
        } else {
            // New receive buffers.
            self.link_writable();
        }
    }

    /// The guest link has room again: if the core waits for it, it sends.
    fn link_writable(&mut self) {
        if self.io.core.tap_blocked() {
            let t = now();
            self.io.core.handle_tap_writable(t);
            self.io.drain(t, &[]);
        }
    }

    /// Hands the frames of the vhost-user transmit queue to the core, one
    /// batch at a time, straight from guest memory; each batch's chains go
    /// back to the guest once its actions are carried out.
    fn vu_tx(&mut self) {
        let Link::VhostUser(v) = &mut self.io.link else {
            return;
        };
        let Some(mem) = v.tx_memory() else { return };
        let mut batch = std::mem::replace(&mut v.tx, crate::vhost_user::virtq::TxBatch::new(0));
        let mut frames = 0usize;
        let mut returned = false;
        while let Link::VhostUser(v) = &mut self.io.link {
            let fill = v.fill_tx(&mem, &mut batch);
            if !batch.refs.is_empty() {
                let t = now();
                let buf = batch.buffer(&mem);
                if let Some(p) = &mut self.io.pcap {
                    let b = FrameBatch::new(buf, &batch.refs);
                    for i in 0..b.len() {
                        if let Some(f) = b.frame(i) {
                            p.write_frame(f);
                        }
                    }
                }
                log::trace!("vhost-user: {} frames in", batch.refs.len());
                self.io
                    .core
                    .handle_tap_batch(t, &FrameBatch::new(buf, &batch.refs));
                self.io.drain(t, buf);
                frames += batch.refs.len();
            }
            let Link::VhostUser(v) = &mut self.io.link else {
                break;
            };
            if batch.has_chains() {
                v.complete_tx(&mem, &mut batch);
                returned = true;
            }
            if fill == crate::vhost_user::virtq::Fill::Empty {
                break;
            }
            if frames >= crate::vhost_user::TX_PER_KICK {
                // Other events get their turn; a kick of our own brings
                // the loop back here.
                v.rekick_tx();
                break;
            }
        }
        if let Link::VhostUser(v) = &mut self.io.link {
            if returned {
                v.notify_tx(&mem);
            }
            v.tx = batch;
        }
    }

    fn signal_event(&mut self) -> Option<Exit> {
        loop {
            let info = match self.signals.read_signal() {
                Ok(Some(i)) => i,
                Ok(None) => return None,
                Err(e) => {
                    log::debug!("signalfd: {e}");
                    return None;
                }
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) | Ok(Signal::SIGQUIT) => {
                    log::info!("signal {}, exiting", info.ssi_signo);
                    return Some(Exit::Code(0));
                }
                Ok(Signal::SIGCHLD) => {
                    if let Some(code) = self.reap() {
                        return Some(Exit::Code(code));
                    }
                }
                _ => {}
            }
        }
    }

    /// Reaps the spawned command; returns its exit code if it ended. Only
    /// that child is waited for: other children belong to whoever started them
    /// (and wait for them themselves), so a wildcard wait would steal their
    /// exit status.
    fn reap(&mut self) -> Option<i32> {
        let child = self.child?;
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            _ => None,
        }
    }
}

impl Io {
    /// Drains the core after an input: actions (results fed back at once),
    /// queued frames into the guest link's ring, then the flush. `rx` is the
    /// buffer of the batch just handed over (send spans point into it);
    /// empty otherwise.
    fn drain(&mut self, now: Instant, rx: &[u8]) {
        // Each round either carries out actions or moves frames; the core's
        // queues are bounded, so this ends; the bound only guards against a
        // core that keeps producing work on its own feedback.
        for _ in 0..1024 {
            let mut busy = false;
            while let Some(a) = self.core.poll_action() {
                busy = true;
                self.carry_out(now, a, rx);
            }
            let mut ring = LinkTx {
                arena: &mut self.arena,
                link: &mut self.link,
                pcap: &mut self.pcap,
            };
            busy |= self.core.transmit_queued(now, &mut ring);
            if ring.pending() > 0 {
                busy = true;
                if self.core.flush_ring(now, &mut ring) == 0 {
                    // The link takes nothing now (no qemu client, or a full
                    // socket): the core sends again once it has room.
                    break;
                }
            }
            if !busy {
                break;
            }
        }
        if self.core.tap_blocked() || self.link.tail_pending() {
            // Frames were refused, flows wait for room, or the rest of a
            // frame does: be told when the link has some.
            self.link.want_writable(&self.epoll, true);
        }
    }

    fn carry_out(&mut self, now: Instant, action: Action, rx: &[u8]) {
        if log::log_enabled!(log::Level::Trace) {
            log::trace!("action {action:?}");
        }
        if let Action::Peek {
            sock,
            skip,
            len,
            mss,
            room,
        } = action
        {
            let p = passt_core::PeekRequest {
                skip,
                len,
                mss,
                room,
            };
            return self.peek(now, sock, p);
        }
        if let Action::Recv { sock, max, room } = action {
            return self.recv(now, sock, max, room);
        }
        if let Action::Splice { sock, peer } = action {
            if let Some((s, ev)) = self.splicer.join(&self.epoll, &mut self.socks, sock, peer) {
                self.core.handle_sock_event(now, s, ev);
            }
            return;
        }
        let dgram_event = match action {
            Action::PeekPeer { sock } => Some((sock, self.dsplicer.peek_peer(&self.socks, sock))),
            Action::ForwardDatagrams { from, to, max } => {
                Some((from, self.dsplicer.forward(&self.socks, from, to, max)))
            }
            Action::QuerySpliced { sock } => Some((sock, self.dsplicer.query(sock))),
            Action::SpliceDatagrams { sock, peer } => Some(
                match self.dsplicer.join(&self.epoll, &mut self.socks, sock, peer) {
                    Some((s, ev)) => (s, Some(ev)),
                    None => (sock, None),
                },
            ),
            _ => None,
        };
        if let Some((s, ev)) = dgram_event {
            if let Some(ev) = ev {
                if log::log_enabled!(log::Level::Trace) {
                    log::trace!("{s:?}: {ev:?}");
                }
                self.core.handle_sock_event(now, s, ev);
            }
            return;
        }
        if let Action::Close { sock } = action {
            self.splicer.forget(sock);
            self.dsplicer.forget(sock);
        }
        let spans: Vec<IoSlice<'_>> = match action {
            Action::Send { spans, .. } | Action::SendDatagrams { spans, .. } => self
                .core
                .spans(spans)
                .iter()
                .filter_map(|s| {
                    let start = s.offset as usize;
                    rx.get(start..start.checked_add(s.len as usize)?)
                })
                .map(IoSlice::new)
                .collect(),
            _ => Vec::new(),
        };
        let out = self
            .socks
            .execute(&self.epoll, self.guest_ns.as_ref(), action, &spans);
        drop(spans);
        if let Outcome::Event(sock, ev) = out {
            if log::log_enabled!(log::Level::Trace) {
                log::trace!("{sock:?}: {ev:?}");
            }
            self.core.handle_sock_event(now, sock, ev);
        }
    }

    /// Carries out `Action::Peek` through the guest link's ring (see
    /// `txring.rs`): the socket's data lands in the payload areas of the
    /// link's slots, the core writes the frames around it.
    fn peek(&mut self, now: Instant, sock: SockId, p: passt_core::PeekRequest) {
        let Io {
            core,
            arena,
            link,
            pcap,
            socks,
            discard,
            ..
        } = self;
        let mut ring = LinkTx { arena, link, pcap };
        core.peek_into(now, &mut ring, sock, p, |skip, iov| match socks.get(sock) {
            None => Err(passt_core::Errno::EBADF),
            Some(e) => crate::sock::peek(e.fd.as_fd(), skip, discard, iov),
        });
    }

    /// Carries out `Action::Recv`: one `recvmmsg` into the payload areas of
    /// the link's slots; the core writes the headers in front.
    fn recv(&mut self, now: Instant, sock: SockId, max: u16, room: u16) {
        let Io {
            core,
            arena,
            link,
            pcap,
            socks,
            dgram_got,
            ..
        } = self;
        let mut ring = LinkTx { arena, link, pcap };
        core.recv_into(
            now,
            &mut ring,
            sock,
            max,
            room,
            dgram_got,
            |bufs, room, got| match socks.get(sock) {
                None => Err(passt_core::Errno::EBADF),
                Some(e) => {
                    crate::sock::dgram::recv_datagrams(e.fd.as_fd(), bufs, room, got).map(|_| ())
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for (tag, id) in [(TAG_SOCK, 0), (TAG_LINK, 7), (TAG_SIGNAL, u32::MAX)] {
            assert_eq!(untoken(token(tag, id)), (tag, id));
        }
        assert_ne!(token(TAG_SOCK, 1), token(TAG_LINK, 1));
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now();
        let b = now();
        assert!(b >= a);
        assert!(a > Instant::ZERO);
    }

    #[test]
    fn arena_orders_and_prefixes_frames() {
        let mut a = TxArena::new(3);
        assert_eq!(a.free(), 3);
        for (i, len) in [60usize, 1514, 14].into_iter().enumerate() {
            let b = a.next_frame_buf().unwrap();
            b[..len].fill(i as u8 + 1);
            a.commit(len);
        }
        assert!(a.next_frame_buf().is_none());
        assert_eq!(a.len(), 3);
        assert_eq!(a.frame(1).unwrap().len(), 1514);
        assert!(a.frame(1).unwrap().iter().all(|&b| b == 2));
        let iov = a.prefixed_iovecs();
        assert_eq!(iov.len(), 3);
        assert_eq!(&iov[0][..4], &60u32.to_be_bytes());
        assert_eq!(iov[0].len(), 64);
        assert_eq!(&iov[1][..4], &1514u32.to_be_bytes());
        drop(iov);
        a.clear();
        assert!(a.is_empty());
        assert_eq!(a.free(), 3);
    }

    /// A passt link over a socket pair: frames split across writes reach the
    /// core whole and in order, incoming frames are captured, and a bad length
    /// ends a one-off instance with status 0.
    #[test]
    fn qemu_link_frames_reach_core_and_pcap() {
        use std::io::Write;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let link = Link::Qemu(QemuLink::from_fd(a.into()).unwrap());
        let p = std::env::temp_dir().join(format!("passt-rs-loop-{}.pcap", std::process::id()));
        let opts = LoopOptions {
            pcap: Some(Pcap::create(&p).unwrap()),
            ..LoopOptions::default()
        };
        let mut rt = Runtime::new(Core::new(passt_core::Config::default()), link, opts).unwrap();
        let mut frame = vec![0xffu8; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        frame.resize(60, 0xab);
        let mut stream = Vec::new();
        for _ in 0..3 {
            stream.extend_from_slice(&60u32.to_be_bytes());
            stream.extend_from_slice(&frame);
        }
        let mut events = vec![EpollEvent::empty(); 8];
        let mut t = now();
        let cap = Some(Duration::from_millis(50));
        for chunk in [&stream[..3], &stream[3..70], &stream[70..]] {
            b.write_all(chunk).unwrap();
            assert_eq!(rt.turn(&mut events, cap, &mut t), None);
        }
        for _ in 0..20 {
            if rt.io.core.counters().frames_in == 3 {
                break;
            }
            assert_eq!(rt.turn(&mut events, cap, &mut t), None);
        }
        assert_eq!(rt.io.core.counters().frames_in, 3);
        assert!(rt.guest_seen());
        b.write_all(&70000u32.to_be_bytes()).unwrap();
        let mut code = None;
        for _ in 0..20 {
            code = rt.turn(&mut events, cap, &mut t);
            if code.is_some() {
                break;
            }
        }
        assert_eq!(code, Some(0), "one-off: a reset ends passt");
        drop(rt);
        let pc = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(pc.len(), 24 + 3 * (16 + 60));
        assert_eq!(&pc[24 + 16..24 + 16 + 60], &frame[..]);
    }

    /// One read holding more frames than a batch takes: the rest is handed
    /// over at once, without waiting for more input; a bad length among them
    /// still resets the client.
    #[test]
    fn qemu_read_larger_than_one_batch() {
        use std::io::Write;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let link = Link::Qemu(QemuLink::from_fd(a.into()).unwrap());
        let mut rt = Runtime::new(
            Core::new(passt_core::Config::default()),
            link,
            LoopOptions::default(),
        )
        .unwrap();
        rt.rx = RxBuf::with_frames(1 << 16, 2);
        let mut frame = vec![0xffu8; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        frame.resize(60, 0);
        let mut stream = Vec::new();
        for _ in 0..7 {
            stream.extend_from_slice(&60u32.to_be_bytes());
            stream.extend_from_slice(&frame);
        }
        b.write_all(&stream).unwrap();
        let mut events = vec![EpollEvent::empty(); 8];
        let mut t = now();
        assert_eq!(
            rt.turn(&mut events, Some(Duration::from_millis(200)), &mut t),
            None
        );
        assert_eq!(rt.io.core.counters().frames_in, 7, "all in one wake-up");
        assert_eq!(rt.rx.fill, 0);
        // Three good frames, then a bad length: the good ones count, then the
        // one-off instance ends.
        let mut bad = stream[..3 * 64].to_vec();
        bad.extend_from_slice(&5u32.to_be_bytes());
        b.write_all(&bad).unwrap();
        let code = rt.turn(&mut events, Some(Duration::from_millis(200)), &mut t);
        assert_eq!(rt.io.core.counters().frames_in, 10);
        assert_eq!(code, Some(0));
    }

    /// A stream of frames of random sizes, written in random chunks while
    /// the loop reads: every frame reaches the core, none twice.
    #[test]
    fn qemu_stream_under_load_loses_nothing() {
        use std::io::Write;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let link = Link::Qemu(QemuLink::from_fd(a.into()).unwrap());
        let mut rt = Runtime::new(
            Core::new(passt_core::Config::default()),
            link,
            LoopOptions::default(),
        )
        .unwrap();
        // Small batches, so that reads often hold more than one.
        rt.rx = RxBuf::with_frames(1 << 20, 64);
        let mut seed = 0x2545_f491u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut stream = Vec::new();
        let frames = 20_000u64;
        for _ in 0..frames {
            let len = 14 + (rnd() % 1600) as usize;
            stream.extend_from_slice(&(len as u32).to_be_bytes());
            let mut f = vec![0u8; len];
            f[12] = 0x88;
            f[13] = 0xb5;
            stream.extend_from_slice(&f);
        }
        let cuts: Vec<usize> = (0..4096).map(|_| 1 + (rnd() % 9000) as usize).collect();
        let writer = std::thread::spawn(move || {
            let mut b = b;
            let mut pos = 0;
            let mut i = 0;
            while pos < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - pos);
                b.write_all(&stream[pos..pos + n]).unwrap();
                pos += n;
                i += 1;
            }
            b
        });
        let mut events = vec![EpollEvent::empty(); 8];
        let mut t = now();
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while rt.io.core.counters().frames_in < frames && std::time::Instant::now() < end {
            assert_eq!(
                rt.turn(&mut events, Some(Duration::from_millis(100)), &mut t),
                None
            );
        }
        let _b = writer.join().unwrap();
        assert_eq!(rt.io.core.counters().frames_in, frames);
        assert_eq!(rt.rx.fill, 0, "nothing left over");
    }

    /// `Peek` lands the socket's bytes in the payload areas of consecutive
    /// slots (after the header room), without consuming them.
    #[test]
    fn peek_fills_slot_payloads() {
        use std::io::Write;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let link = Link::Qemu(QemuLink::from_fd(a.into()).unwrap());
        let mut rt = Runtime::new(
            Core::new(passt_core::Config::default()),
            link,
            LoopOptions::default(),
        )
        .unwrap();
        let srv = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(srv.local_addr().unwrap()).unwrap();
        let (ours, _) = srv.accept().unwrap();
        let sock = SockId(5);
        rt.io.socks.insert(sock, ours.into());
        peer.write_all(b"abcdefghij").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let room = 54;
        let p = passt_core::PeekRequest {
            skip: 2,
            len: 8,
            mss: 3,
            room: room as u16,
        };
        rt.io.peek(now(), sock, p);
        let slot = |i: usize| &rt.io.arena.buf[i * SLOT_LEN + FRAME_ROOM + room..][..3];
        assert_eq!(slot(0), b"cde");
        assert_eq!(slot(1), b"fgh");
        assert_eq!(slot(2), b"ij\0");
        // The stub core finished no frames: nothing queued, data still there.
        assert!(rt.io.arena.is_empty());
        let fd = rt.io.socks.get(sock).unwrap().fd.try_clone().unwrap();
        let mut buf = [0u8; 16];
        let n = nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .unwrap();
        assert_eq!(&buf[..n], b"abcdefghij");
    }

    #[test]
    fn arena_peek_slots() {
        let mut a = TxArena::new(4);
        a.next_frame_buf().unwrap()[0] = 9;
        a.commit(60);
        assert_eq!(a.reserve(5), 3, "only the free slots");
        assert_eq!(a.reserve(1), 0);
        {
            let areas = a.reserved_areas();
            assert_eq!(areas.len(), 3);
            assert!(areas.iter().all(|s| s.len() == MAX_FRAME + 1));
        }
        a.commit_reserved(&[1054, 1054, 0]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.free(), 1, "the unused slot is free again");
        assert_eq!(a.reserved(), 0);
        assert_eq!(a.frame(0).unwrap()[0], 9);
        assert_eq!(a.frame(2).unwrap().len(), 1054);
    }

    /// vhost-user end to end, with the protocol crate's front-end in
    /// another thread: features, a memory table in a memfd, both rings set
    /// up (one enabled before the features were acknowledged would be
    /// refused by the crate: qemu does it), an ARP request on the transmit
    /// ring reaches the core, its reply arrives in a receive buffer with
    /// the guest signalled; stopping a ring reports its position; closing
    /// the socket ends a one-off instance.
    #[test]
    fn vhost_user_link_end_to_end() {
        use crate::vhost_user::tests::Ring;
        use std::os::fd::AsRawFd;
        use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
        use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
        use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
        use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let link = Link::VhostUser(Box::new(VuLink::from_fd(a.into()).unwrap()));
        let cfg = passt_core::Config {
            ip4: Some(passt_core::Ip4Config::new(
                std::net::Ipv4Addr::new(10, 77, 0, 2),
                24,
                Some(std::net::Ipv4Addr::new(10, 77, 0, 1)),
            )),
            ..passt_core::Config::default()
        };
        let mut rt = Runtime::new(Core::new(cfg), link, LoopOptions::default()).unwrap();

        let front = std::thread::spawn(move || -> Result<(), String> {
            const SIZE: u64 = 1 << 20;
            let file = crate::vhost_user::memory::tests::memfd(SIZE);
            let fd = file.as_raw_fd();
            let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
                GuestAddress(0),
                SIZE as usize,
                Some(FileOffset::new(file.try_clone().unwrap(), 0)),
            )])
            .unwrap();
            let va = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
            // qemu enables the rings as the guest's driver comes up, which
            // may be before it acknowledges the features (the protocol
            // crate's front-end refuses to: written by hand).
            let mut early = Vec::new();
            for w in [18u32, 1, 8, 0, 1] {
                early.extend_from_slice(&w.to_le_bytes());
            }
            std::io::Write::write_all(&mut &b, &early).unwrap();
            let mut fe = Frontend::from_stream(b, 2);
            fe.set_owner().map_err(|e| e.to_string())?;
            let features = fe.get_features().map_err(|e| e.to_string())?;
            if features != crate::vhost_user::device::FEATURES {
                return Err(format!("features {features:#x}"));
            }
            let rings = [Ring::new(0x1000, 16), Ring::new(0x2000, 16)];
            let kicks = [
                EventFd::new(EFD_NONBLOCK).unwrap(),
                EventFd::new(EFD_NONBLOCK).unwrap(),
            ];
            let calls = [
                EventFd::new(EFD_NONBLOCK).unwrap(),
                EventFd::new(EFD_NONBLOCK).unwrap(),
            ];
            fe.set_features(features).map_err(|e| e.to_string())?;
            let pf = fe.get_protocol_features().map_err(|e| e.to_string())?;
            fe.set_protocol_features(pf & VhostUserProtocolFeatures::REPLY_ACK)
                .map_err(|e| e.to_string())?;
            fe.set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: SIZE,
                userspace_addr: va,
                mmap_offset: 0,
                mmap_handle: fd,
            }])
            .map_err(|e| e.to_string())?;
            for (q, r) in rings.iter().enumerate() {
                fe.set_vring_num(q, 16).map_err(|e| e.to_string())?;
                let c = VringConfigData {
                    queue_max_size: 16,
                    queue_size: 16,
                    flags: 0,
                    desc_table_addr: va + r.desc,
                    used_ring_addr: va + r.used,
                    avail_ring_addr: va + r.avail,
                    log_addr: None,
                };
                fe.set_vring_addr(q, &c).map_err(|e| e.to_string())?;
                fe.set_vring_base(q, 0).map_err(|e| e.to_string())?;
                fe.set_vring_call(q, &calls[q]).map_err(|e| e.to_string())?;
                fe.set_vring_kick(q, &kicks[q]).map_err(|e| e.to_string())?;
            }
            fe.set_vring_enable(1, true).map_err(|e| e.to_string())?;
            let [mut rx, mut tx] = rings;
            for i in 0..4u64 {
                rx.add(&mem, &[(0x10000 + i * 0x1000, 2048, true)]);
            }
            // An ARP request for the gateway, behind a virtio-net header.
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0xff; 6]);
            f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x06]);
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 10, 77, 0, 2]);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&[10, 77, 0, 1]);
            f.resize(12 + 60, 0);
            mem.write_slice(&f, GuestAddress(0x20000)).unwrap();
            tx.add(&mem, &[(0x20000, f.len() as u32, false)]);
            kicks[1].write(1).unwrap();
            let end = std::time::Instant::now() + Duration::from_secs(20);
            while rx.used(&mem).0 == 0 {
                if std::time::Instant::now() > end {
                    return Err("no frame in the receive ring".into());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let (_, used) = rx.used(&mem);
            let (_, len) = used[0];
            let mut reply = vec![0u8; len as usize];
            mem.read_slice(&mut reply, GuestAddress(0x10000)).unwrap();
            let arp = &reply[12..];
            if arp[12..14] != [0x08, 0x06] || arp[20..22] != [0, 2] || arp[28..32] != [10, 77, 0, 1]
            {
                return Err(format!("not our ARP reply: {arp:02x?}"));
            }
            if u16::from_le_bytes([reply[10], reply[11]]) != 1 {
                return Err("num_buffers".into());
            }
            if calls[0].read().unwrap_or(0) == 0 {
                return Err("the guest was not signalled".into());
            }
            if tx.used(&mem).0 != 1 {
                return Err("the transmit chain did not come back".into());
            }
            // Stopping the rings (a reset): their positions come back.
            let base = fe.get_vring_base(1).map_err(|e| e.to_string())?;
            if base != 1 {
                return Err(format!("transmit ring stopped at {base}"));
            }
            fe.get_vring_base(0).map_err(|e| e.to_string())?;
            Ok(())
        });
        let mut events = vec![EpollEvent::empty(); 8];
        let mut t = now();
        let end = std::time::Instant::now() + Duration::from_secs(30);
        let mut code = None;
        while code.is_none() && std::time::Instant::now() < end {
            code = rt.turn(&mut events, Some(Duration::from_millis(50)), &mut t);
        }
        front.join().unwrap().unwrap();
        assert_eq!(
            code,
            Some(0),
            "one-off: the front-end going away ends passt"
        );
        assert!(rt.io.core.counters().frames_in >= 1);
    }
}
