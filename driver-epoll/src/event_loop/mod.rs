//! The event loop: epoll, the clock, frame batches in, frames out.
//!
//! One thread waits on one epoll set. The 64-bit epoll data word carries a tag
//! in its top byte and, for sockets, the core's [`SockId`] in its low 32 bits,
//! so an event needs no lookup to reach the core. Tags: core sockets, the guest
//! link (tap device or qemu client), the qemu listening socket, a
//! signalfd (SIGTERM, SIGQUIT, SIGCHLD), and the netlink socket that follows
//! the host's neighbour table (its events go to `Core::handle_neighbour`,
//! each followed by a drain, like any input).
//!
//! The loop follows the core's call order: after every input (a batch of guest
//! frames, a socket event, a timeout, a link reset) it drains `poll_action`,
//! carrying out each action at once and feeding results back; then drains
//! `poll_frame` into the transmit arena; then flushes the arena to the guest
//! link and reports the count with `handle_tap_sent`. Only then is the batch
//! buffer reused and epoll waited on, at most until `poll_timeout`.

use crate::link::txring::LinkTx;
use crate::link::vhost_user::TAG_KICK;
use crate::pcap::Pcap;
use crate::sock::pairs::SockCx;
use crate::sock::{Outcome, SockTable, TAG_SOCK};
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

mod arena;
mod io;
mod link;
mod nswatch;

pub(crate) use crate::link::Link;
pub(crate) use arena::*;
pub(crate) use link::*;
pub(crate) use nswatch::*;

/// Tag of the guest link's data fd (tap device or qemu client).
pub(crate) const TAG_LINK: u64 = 2;
/// Tag of the qemu listening socket.
pub(crate) const TAG_LISTEN: u64 = 3;
/// Tag of the signalfd.
const TAG_SIGNAL: u64 = 4;
/// Tag of the pidfd of a joined process (pasta).
const TAG_PIDFD: u64 = 5;
/// Tag of the inotify watch on the directory of a namespace file (pasta).
const TAG_INOTIFY: u64 = 6;
/// Tag of the netlink socket subscribed to the host's neighbour table
/// (7 is vhost-user's kick, `TAG_KICK`).
const TAG_NEIGH: u64 = 8;

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
    /// The host's neighbour table, followed (LAN hosts' real MACs).
    pub(crate) neigh: Option<crate::netlink::NeighWatch>,
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
    /// The host's neighbour table: loaded at start, then followed.
    neigh: Option<crate::netlink::NeighWatch>,
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
        if let Some(w) = &opts.neigh {
            epoll.add(
                w.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, token(TAG_NEIGH, 0)),
            )?;
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
            neigh: opts.neigh,
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
        if let Some(w) = &self.neigh {
            let n = self.io.core.neigh_stats();
            log::debug!(
                "neighbours: {} known, {} added, {} changed, {} removed, {} ignored, {} refused, {} announced; {} malformed messages, {} overruns",
                n.entries, n.added, n.changed, n.removed, n.ignored, n.refused, n.announced,
                w.malformed, w.overruns
            );
        }
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
        self.neigh_load();
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
                TAG_NEIGH => {
                    self.neigh_event();
                    None
                }
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
        let io = &mut self.io;
        let mut cx = SockCx {
            epoll: &io.epoll,
            socks: &mut io.socks,
        };
        if io.dsplicer.owns(sock) {
            let r = io.dsplicer.event(&mut cx, sock, flags);
            io.spliced(r);
            return;
        }
        if io.splicer.owns(sock) {
            let r = io.splicer.event(&mut cx, sock, flags);
            io.spliced(r);
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

    /// The host's neighbour table as it is at start, to the core.
    fn neigh_load(&mut self) {
        let Some(w) = self.neigh.as_mut() else { return };
        match w.dump() {
            Ok(evs) => {
                log::debug!("neighbour table: {} entries", evs.len());
                for e in evs {
                    let t = now();
                    self.io.core.handle_neighbour(t, e.addr, e.mac);
                    self.io.drain(t, &[]);
                }
            }
            Err(e) => log::warn!("netlink: reading the neighbour table: {e}"),
        }
    }

    /// The host's neighbour table changed: each change to the core.
    fn neigh_event(&mut self) {
        let Some(w) = self.neigh.as_mut() else { return };
        let io = &mut self.io;
        w.read(|e| {
            let t = now();
            if log::log_enabled!(log::Level::Trace) {
                match e.mac {
                    Some(m) => log::trace!("neighbour {} at {m}", e.addr),
                    None => log::trace!("neighbour {} gone", e.addr),
                }
            }
            io.core.handle_neighbour(t, e.addr, e.mac);
            io.drain(t, &[]);
        });
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

#[cfg(test)]
mod tests;
