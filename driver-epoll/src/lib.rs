//! The epoll driver of passt-rs: runs [`passt_core::Core`] over real sockets.
//!
//! `main()` reads the command line, opens the guest link (passt: qemu's UNIX
//! stream socket; pasta: a tap device in the target namespace, joining the
//! user namespace that owns it first, and configuring it with
//! `--config-net`), opens every file it will need, binds the forwarded ports, drops
//! privileges in stages (`isolate`), and only then says it is ready: it writes the PID
//! file, daemonises unless told not to, and lets the spawned command run.
//! Then the event loop (`event_loop/`) takes over. A start-up failure
//! ends the process with status 1 and a message naming the step and the
//! object ("joining the network namespace of PID 1234: ...").

pub mod cli;
pub mod conf;
mod daemon;
mod event_loop;
pub mod framing;
pub mod fwd;
mod isolate;
mod link;
mod log;
pub mod netlink;
mod netns;
mod pcap;
mod portscan;
mod sock;
mod stats;

pub use conf::resolv;

use event_loop::{Link, LoopOptions, NsWatch, Runtime};
use link::{qemu, tap, vhost_user};
use passt_core::{Config, Core, Mac};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

pub(crate) use cli::Mode;

/// The namespace pasta serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Run this command in new namespaces.
    Spawn(Vec<OsString>),
    /// Join the namespaces of this process.
    Pid(i32),
    /// Join this network namespace file (`--netns`).
    Path(PathBuf),
}

/// Network configuration of pasta's tap device, run inside the namespace with
/// the device's name (`--config-net`).
pub(crate) type NsConfigure = Box<dyn FnOnce(&str) -> io::Result<()> + Send>;

/// Everything the runtime needs, taken from the command line and host
/// discovery.
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) core: Config,
    /// The forwarding tables (`auto` modes, start-up failures).
    pub(crate) fwd: fwd::Forwarding,
    /// passt `-s`.
    pub(crate) socket: Option<PathBuf>,
    /// `-F`: an inherited qemu socket (passt) or tap device (pasta).
    pub(crate) fd: Option<i32>,
    /// passt `-1` (implied by `--fd`).
    pub(crate) one_off: bool,
    /// passt `--vhost-user`.
    pub(crate) vhost_user: bool,
    /// pasta `-I` (or the template interface's name).
    pub(crate) ns_ifname: String,
    /// pasta `--userns`.
    pub(crate) userns: Option<PathBuf>,
    /// pasta: the namespace.
    pub(crate) target: Target,
    /// pasta `--ns-mac-addr`.
    pub(crate) ns_mac: Option<[u8; 6]>,
    /// pasta `--netns-only`.
    pub(crate) netns_only: bool,
    /// pasta `--no-netns-quit`.
    pub(crate) no_netns_quit: bool,
    /// pasta `--no-tap-offload`.
    pub(crate) no_tap_offload: bool,
    /// pasta `--splice-only`: no tap device.
    pub(crate) splice_only: bool,
    /// pasta `--config-net`.
    pub(crate) configure: Option<NsConfigure>,
    /// The template interfaces (IPv4, IPv6) whose neighbours the guest
    /// sees with their real MACs.
    pub(crate) neigh_ifindex: [Option<u32>; 2],
    /// `-P`.
    pub(crate) pid_file: Option<PathBuf>,
    /// `-p`.
    pub(crate) pcap: Option<PathBuf>,
    /// `--runas`, resolved.
    pub(crate) runas: Option<(u32, u32)>,
    /// `--seccomp-log`.
    pub(crate) seccomp_log: bool,
    /// `--stats`.
    pub(crate) stats: Option<u32>,
    /// Logging options.
    pub(crate) log: log::LogSettings,
    /// The start-up summary (printed unless quiet).
    pub(crate) summary: String,
    /// `-f` (forced for pasta running a command).
    pub(crate) foreground: bool,
}

/// The system calls the running phase needs.
fn profile(mode: Mode, vhost_user: bool) -> isolate::seccomp::Profile {
    match mode {
        Mode::Passt if vhost_user => isolate::seccomp::Profile::VhostUser,
        Mode::Passt => isolate::seccomp::Profile::Passt,
        Mode::Pasta => isolate::seccomp::Profile::Pasta,
    }
}

/// Entry point shared by the `passt` and `pasta` binaries. The mode is chosen
/// from the program name, as upstream passt does: a name containing "pasta" runs
/// pasta, one containing "passt" runs passt.
pub fn main() -> i32 {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let Some(mode) = cli::mode_from_argv0(&argv0) else {
        eprintln!(
            "{}: run me as passt or pasta",
            std::path::Path::new(&argv0).display()
        );
        return 1;
    };
    log::init(mode.name());
    let rest: Vec<OsString> = args.collect();
    let mut opts = match cli::parse_args(mode, &rest) {
        Ok(o) => o,
        Err(e) => return e.report(mode),
    };
    if opts.fd == Some(0) {
        // inetd style: the socket is standard input. It moves above the
        // standard streams, which stay for logging and /dev/null.
        match isolate::stdin_to_fd() {
            Ok(fd) => opts.fd = Some(fd),
            Err(e) => {
                ::log::error!("{e}");
                return 1;
            }
        }
    }
    let devnull = match isolate::initial(opts.fd) {
        Ok(d) => d,
        Err(e) => {
            ::log::error!("{e}");
            return 1;
        }
    };
    let host = match conf::discover_host(&opts) {
        Ok(h) => h,
        Err(e) => {
            ::log::error!("host interfaces: {e}");
            return 1;
        }
    };
    let resolv = resolv::read_resolv(std::path::Path::new("/etc/resolv.conf"));
    let rc = match conf::build(mode, &opts, &host, &resolv) {
        Ok(c) => c,
        Err(e) => {
            ::log::error!("{e}");
            return 1;
        }
    };
    let settings = settings_from_conf(rc);
    match run(settings, devnull) {
        Ok(code) => code,
        Err(e) => {
            ::log::error!("{e}");
            1
        }
    }
}

/// The runtime's settings from the run configuration.
fn settings_from_conf(rc: conf::RuntimeConfig) -> Settings {
    let summary = conf::summary(&rc);
    let target = match rc.target {
        Some(cli::PastaTarget::Spawn(v)) if !v.is_empty() => Target::Spawn(v),
        Some(cli::PastaTarget::Spawn(_)) | None => Target::Spawn(netns::default_command()),
        Some(cli::PastaTarget::Pid(p)) => Target::Pid(i32::try_from(p).unwrap_or(i32::MAX)),
        Some(cli::PastaTarget::Netns(p)) => Target::Path(netns::netns_path(&p)),
    };
    let spawn = rc.mode == Mode::Pasta && matches!(target, Target::Spawn(_)) && rc.fd.is_none();
    let configure = rc.ns_net.map(|n| -> NsConfigure {
        Box::new(move |name: &str| {
            let mut n = n;
            n.ifname = name.to_string();
            netlink::configure_ns_interface(&n)
        })
    });
    for w in &rc.warnings {
        ::log::warn!("{w}");
    }
    if let Some(i) = rc.ifindex6 {
        sock::set_link_local_scope(i);
    }
    let neigh_ifindex = [
        rc.template4
            .as_deref()
            .filter(|_| rc.core.ip4.is_some())
            .and_then(|n| netlink::link_index(n).ok()),
        rc.ifindex6.filter(|_| rc.core.ip6.is_some()),
    ];
    Settings {
        neigh_ifindex,
        mode: rc.mode,
        ns_mac: match rc.mode {
            Mode::Pasta => rc.core.guest_mac.map(|m| m.0),
            Mode::Passt => None,
        },
        core: rc.core,
        fwd: rc.fwd,
        socket: rc.socket_path,
        fd: rc.fd,
        one_off: rc.one_off,
        vhost_user: rc.vhost_user,
        ns_ifname: rc.ns_ifname,
        target,
        userns: rc.userns,
        netns_only: rc.netns_only,
        no_netns_quit: rc.no_netns_quit,
        no_tap_offload: rc.no_tap_offload,
        configure,
        splice_only: rc.splice_only,
        foreground: rc.foreground || spawn,
        pid_file: rc.pid_file,
        pcap: rc.pcap,
        runas: rc.runas,
        seccomp_log: rc.seccomp_log,
        stats: rc.stats,
        log: log::LogSettings {
            ident: rc.mode.name(),
            file: rc.log_file,
            file_size: Some(rc.log_size),
            quiet: rc.quiet,
            debug: rc.debug,
            trace: rc.trace,
            stderr: false,
        },
        summary,
    }
}

/// Raises the soft limit of open files to the hard limit, as upstream does:
/// every connection and every UDP flow holds a descriptor, and the usual soft
/// limit (1024) is soon reached by a busy guest. Before the seccomp filter,
/// which has no `setrlimit`; a command pasta starts inherits the limit, as
/// with upstream.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => ::log::debug!("open files limit raised from {soft} to {hard}"),
            Err(e) => ::log::warn!("could not raise the open files limit to {hard}: {e}"),
        },
        Ok((soft, _)) => ::log::debug!("open files limit: {soft}"),
        Err(e) => ::log::warn!("open files limit: {e}"),
    }
}

/// The start-up summary and, for passt, how to connect qemu to the socket.
fn log_start_up(s: &Settings, link: &Link) {
    if !s.summary.is_empty() {
        for l in s.summary.lines() {
            ::log::info!("{l}");
        }
    }
    let (sock_path, vhost) = match link {
        Link::Qemu(q) => (q.path(), false),
        Link::VhostUser(v) => (v.path(), true),
        Link::Tap(_) => (None, false),
    };
    if let Some(p) = sock_path {
        for l in conf::socket_hints(p, vhost).lines() {
            ::log::info!("{l}");
        }
    }
}

/// passt's guest link: vhost-user or the qemu stream socket, on the socket
/// given with `-s`, the first free one in /tmp, or the descriptor of `--fd`.
fn passt_link(s: &Settings) -> io::Result<Link> {
    Ok(if s.vhost_user {
        let v = match s.fd {
            Some(fd) => vhost_user::VuLink::from_fd(inherited(fd)?)?,
            None => vhost_user::VuLink::listen(
                s.socket.as_deref(),
                std::path::Path::new("/tmp"),
                s.one_off,
            )?,
        };
        Link::VhostUser(Box::new(v))
    } else {
        let q = match s.fd {
            Some(fd) => qemu::QemuLink::from_fd(inherited(fd)?)
                .map_err(|e| ctx(e, &format!("using --fd {fd}")))?,
            None => {
                qemu::QemuLink::listen(s.socket.as_deref(), std::path::Path::new("/tmp"), s.one_off)
                    .map_err(|e| match &s.socket {
                        Some(p) => ctx(e, &format!("listening on {}", p.display())),
                        None => ctx(e, "listening on a UNIX domain socket in /tmp"),
                    })?
            }
        };
        Link::Qemu(q)
    })
}

/// `-T auto`, `-U auto` (pasta, splicing on): the scanner of the host's
/// listening TCP ports and bound UDP ports, opened in this thread's (the
/// host's) namespace.
fn host_scanner(s: &Settings, have_guest: bool) -> Option<portscan::PortScanner> {
    let auto = fwd::FwdMode::Auto;
    let tcp_auto = s.core.features.tcp && s.fwd.tcp_out.mode() == auto;
    let udp_auto = s.core.features.udp && s.fwd.udp_out.mode() == auto;
    if s.core.splice && (tcp_auto || udp_auto) && have_guest {
        match portscan::PortScanner::open_here(udp_auto) {
            Ok(sc) => return Some(sc),
            Err(e) => {
                ::log::warn!("automatic -T/-U forwarding disabled: /proc/net: {e}")
            }
        }
    }
    None
}

/// The subscription to the host's neighbour table (LAN hosts appear to the
/// guest with their real MACs), opened in this thread's (the host's)
/// namespace before the sandbox goes up. Without it (no template interface,
/// no tap, or an error) every address keeps our MAC.
fn neigh_watch(s: &Settings) -> Option<netlink::NeighWatch> {
    let [i4, i6] = s.neigh_ifindex;
    if s.splice_only || (i4.is_none() && i6.is_none()) {
        return None;
    }
    match netlink::NeighWatch::open(i4, i6) {
        Ok(w) => Some(w),
        Err(e) => {
            ::log::warn!("netlink: the host's neighbour table is not followed: {e}");
            None
        }
    }
}

/// Sets everything up, isolates the process and runs the event loop.
/// Returns (an exit status) only if it fails before the seccomp filter is
/// on; from then on the process leaves through `isolate::exit`.
// Long by design: the start-up order (log, limits, namespaces, sockets, daemon, sandbox,
// loop) is the point of this function, and each step is a call; reading it top to
// bottom is reading that order.
pub(crate) fn run(s: Settings, devnull: OwnedFd) -> io::Result<i32> {
    let mut s = s;
    // Start-up messages go to standard error until pasta daemonises or
    // leaves the foreground to a command, as upstream does.
    s.log.stderr = true;
    // (Errors of the log file name it themselves.)
    log::configure(&s.log)?;
    raise_nofile();
    let pcap = match &s.pcap {
        Some(p) => Some(pcap::Pcap::create(p)?),
        None => None,
    };
    let mut pid_file = match &s.pid_file {
        Some(p) => Some(daemon::PidFile::create(p)?),
        None => None,
    };
    let mut guest = None;
    let mut port_scanner = None;
    let mut host_port_scanner = None;
    let link = match s.mode {
        Mode::Passt => passt_link(&s)?,
        Mode::Pasta => {
            let (link, g, sc) = pasta_link(&mut s)?;
            guest = g;
            port_scanner = sc;
            host_port_scanner = host_scanner(&s, guest.is_some());
            link
        }
    };
    log_start_up(&s, &link);
    let (guest_ns, child, watch) = match guest.as_mut() {
        Some(g) => (
            Some(isolate::worker::GuestNs::new(g.netns.try_clone()?)),
            g.child,
            if s.no_netns_quit {
                None
            } else {
                g.watch.clone()
            },
        ),
        None => (None, None, None),
    };
    let ns_watch = match watch {
        Some(path) => Some(NsWatch::new(
            path,
            match s.target {
                Target::Pid(p) => Some(p),
                _ => None,
            },
        )?),
        None => None,
    };
    s.core.peek_offset = sock::probe_peek_offset();
    let neigh = neigh_watch(&s);
    let core = Core::new(s.core);
    let mut rt = Runtime::new(
        core,
        link,
        LoopOptions {
            pcap,
            guest_ns,
            child,
            ns_watch,
            port_scanner,
            host_port_scanner,
            stats: s.stats.map(stats::Stats::new),
            fwd: s.fwd,
            neigh,
        },
    )
    .map_err(|e| ctx(e, "setting up the event loop"))?;
    // Forwarded ports are bound before anyone is told that we are ready
    // (the PID file, the parent returning, the command starting), and
    // before privileges go, so that ports below 1024 can be.
    if let Err(code) = rt.start() {
        return Ok(code);
    }

    // Everything the running phase needs is open: isolate.
    let profile = profile(s.mode, s.vhost_user);
    isolate::user(profile, isolate::target_ids(s.runas))?;
    isolate::prefork(profile, s.foreground)?;
    let detached = if s.foreground {
        None
    } else {
        let d = daemon::daemonise(pid_file.take(), s.mode.name())?;
        rt.after_fork()?;
        Some(d)
    };
    let mismatch = if s.seccomp_log {
        ::log::warn!("seccomp: system calls outside the allowlist are logged, not stopped");
        isolate::seccomp::Mismatch::Log
    } else {
        isolate::seccomp::Mismatch::Kill
    };
    let seal = isolate::postfork(profile, mismatch, rt.guest_ns())?;
    if let Some(d) = &detached {
        d.stdio_off(&devnull)?;
    }
    drop(devnull);
    let pid = std::process::id();
    seal.install()?;
    running(rt, detached, pid_file.map(|f| (f, pid)), guest)
}

/// The running phase, under the seccomp filter: reports ready, lets the
/// spawned command go, runs the loop and leaves.
fn running(
    mut rt: Runtime,
    detached: Option<daemon::Detached>,
    pid_file: Option<(daemon::PidFile, u32)>,
    mut guest: Option<netns::Guest>,
) -> ! {
    match detached {
        Some(d) => d.ready(),
        None => {
            if let Some((p, pid)) = pid_file {
                if let Err(e) = p.write(pid as i32) {
                    ::log::error!("writing the PID file: {e}");
                    isolate::exit(1);
                }
            }
        }
    }
    if let Some(g) = guest.as_mut() {
        if let Err(e) = g.release() {
            ::log::error!("starting the command: {e}");
            isolate::exit(1);
        }
    }
    let code = rt.run();
    isolate::exit(code)
}

/// `what: error`, as every start-up failure reads.
fn ctx(e: io::Error, what: &str) -> io::Error {
    netns::step_err(what, e)
}

fn inherited(fd: i32) -> io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid --fd {fd}"),
        ));
    }
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let e = io::Error::last_os_error();
        return Err(ctx(e, &format!("using --fd {fd}")));
    }
    // SAFETY: the descriptor was handed to us on the command line to own; it
    // is open (checked above) and nothing else in this process uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pasta: the target namespace, with loopback up and the tap device in it
/// (configured with `--config-net`); the guest's MAC goes into the core's
/// configuration. With `-t auto` or `-u auto`, the namespace's TCP (and UDP)
/// socket tables are opened from inside it too.
fn pasta_link(
    s: &mut Settings,
) -> io::Result<(Link, Option<netns::Guest>, Option<portscan::PortScanner>)> {
    if let Some(fd) = s.fd {
        let dev = tap::TapDevice::from_fd(inherited(fd)?, s.ns_ifname.clone())
            .map_err(|e| ctx(e, &format!("using --fd {fd}")))?;
        // Headers the creator asked for stay; with --no-tap-offload they
        // carry nothing.
        if !s.no_tap_offload {
            s.core.link_offload = dev.offload();
        }
        return Ok((Link::Tap(dev), None, None));
    }
    let auto_mode = fwd::FwdMode::Auto;
    let udp_auto = s.core.features.udp && s.fwd.udp_in.mode() == auto_mode;
    let auto = s.fwd.tcp_in.mode() == auto_mode || udp_auto;
    let guest = match &s.target {
        Target::Spawn(argv) => netns::spawn(
            argv,
            !s.netns_only && !nix::unistd::geteuid().is_root(),
            s.core.hostname.as_deref(),
        )?,
        Target::Pid(pid) => netns::join_pid(*pid, s.netns_only, s.userns.as_deref())?,
        Target::Path(p) => netns::join_path(p, s.userns.as_deref())?,
    };
    let name = s.ns_ifname.clone();
    let mac = s.ns_mac;
    let configure = s.configure.take();
    let offload = !s.no_tap_offload;
    let splice_only = s.splice_only;
    let step = netns::step_err;
    let (dev, guest_mac, scanner) =
        netns::in_netns(guest.netns.as_fd(), move || -> io::Result<_> {
            tap::link_up("lo")
                .map_err(|e| step("bringing up the loopback interface of the namespace", e))?;
            let (dev, guest_mac) = if splice_only {
                // No tap device: only the namespace's loopback is used.
                (tap::TapDevice::detached()?, [0u8; 6])
            } else {
                let dev = tap::TapDevice::open(&name, offload)?;
                if let Some(m) = mac {
                    tap::set_mac(dev.name(), m).map_err(|e| {
                        step(&format!("setting the MAC address of {}", dev.name()), e)
                    })?;
                }
                let guest_mac = tap::get_mac(dev.name())
                    .map_err(|e| step(&format!("reading the MAC address of {}", dev.name()), e))?;
                if let Some(c) = configure {
                    c(dev.name())?;
                }
                (dev, guest_mac)
            };
            let scanner = match auto.then(|| portscan::PortScanner::open_here(udp_auto)) {
                Some(Ok(sc)) => Some(sc),
                Some(Err(e)) => {
                    ::log::warn!("automatic port forwarding disabled: /proc/net: {e}");
                    None
                }
                None => None,
            };
            Ok((dev, guest_mac, scanner))
        })
        .map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (pasta must be in the user namespace that owns it: \
                 name that with --userns, or start pasta inside it)"
            } else {
                ""
            };
            let what = format!("joining the network namespace {}", guest.desc);
            io::Error::new(e.kind(), format!("{what}: {}{hint}", netns::describe(&e)))
        })??;
    if !splice_only {
        s.core.guest_mac = Some(Mac(guest_mac));
    }
    s.core.link_offload = dev.offload();
    Ok((Link::Tap(dev), Some(guest), scanner))
}
