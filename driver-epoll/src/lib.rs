//! The epoll driver of passt-rs: runs [`passt_core::Core`] over real sockets.
//!
//! `main()` reads the command line, opens the guest link (passt: qemu's UNIX
//! stream socket; pasta: a tap device in the target namespace), opens every
//! file it will need, drops privileges, daemonises unless told not to, and
//! hands everything to the event loop (`event_loop.rs`).

pub mod cli;
pub mod conf;
mod daemon;
mod dgram;
mod event_loop;
mod log;
pub mod netlink;
mod netns;
mod pcap;
mod portscan;
mod qemu;
pub mod resolv;
mod socks;
mod tap;
mod vhost_user;

use event_loop::{Link, LoopOptions, NsWatch, Runtime};
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
    /// pasta `--ns-mac-addr`.
    pub(crate) ns_mac: Option<[u8; 6]>,
    /// pasta: the namespace.
    pub(crate) target: Target,
    /// pasta `--userns`.
    pub(crate) userns: Option<PathBuf>,
    /// pasta `--netns-only`.
    pub(crate) netns_only: bool,
    /// pasta `--no-netns-quit`.
    pub(crate) no_netns_quit: bool,
    /// pasta `--config-net`.
    pub(crate) configure: Option<NsConfigure>,
    /// `-f` (forced for pasta running a command).
    pub(crate) foreground: bool,
    /// `-P`.
    pub(crate) pid_file: Option<PathBuf>,
    /// `-p`.
    pub(crate) pcap: Option<PathBuf>,
    /// `--runas`, resolved.
    pub(crate) runas: Option<(u32, u32)>,
    /// Logging options.
    pub(crate) log: log::LogSettings,
    /// The start-up summary (printed unless quiet).
    pub(crate) summary: String,
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
    let opts = match cli::parse_args(mode, &rest) {
        Ok(o) => o,
        Err(e) => return e.report(mode),
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
    match run(settings) {
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
    Settings {
        mode: rc.mode,
        ns_mac: match rc.mode {
            Mode::Pasta => rc.core.guest_mac.map(|m| m.0),
            Mode::Passt => None,
        },
        core: rc.core,
        socket: rc.socket_path,
        fd: rc.fd,
        one_off: rc.one_off,
        vhost_user: rc.vhost_user,
        ns_ifname: rc.ns_ifname,
        target,
        userns: rc.userns,
        netns_only: rc.netns_only,
        no_netns_quit: rc.no_netns_quit,
        configure,
        foreground: rc.foreground || spawn,
        pid_file: rc.pid_file,
        pcap: rc.pcap,
        runas: rc.runas,
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

/// Sets everything up and runs the event loop; returns the exit status.
pub(crate) fn run(s: Settings) -> io::Result<i32> {
    let mut s = s;
    s.log.stderr = s.foreground;
    log::configure(&s.log)?;
    let pcap = match &s.pcap {
        Some(p) => Some(pcap::Pcap::create(p).map_err(|e| ctx(e, p))?),
        None => None,
    };
    let pid_file = match &s.pid_file {
        Some(p) => Some(daemon::PidFile::create(p).map_err(|e| ctx(e, p))?),
        None => None,
    };
    let mut guest = None;
    let mut port_scanner = None;
    let link = match s.mode {
        Mode::Passt if s.vhost_user => {
            let v = match s.fd {
                Some(fd) => vhost_user::VuLink::from_fd(inherited(fd)?)?,
                None => vhost_user::VuLink::listen(
                    s.socket.as_deref(),
                    std::path::Path::new("/tmp"),
                    s.one_off,
                )?,
            };
            Link::VhostUser(v)
        }
        Mode::Passt => {
            let q = match s.fd {
                Some(fd) => qemu::QemuLink::from_fd(inherited(fd)?)?,
                None => qemu::QemuLink::listen(
                    s.socket.as_deref(),
                    std::path::Path::new("/tmp"),
                    s.one_off,
                )?,
            };
            Link::Qemu(q)
        }
        Mode::Pasta => {
            let (link, g, sc) = pasta_link(&mut s)?;
            guest = g;
            port_scanner = sc;
            link
        }
    };
    if !s.summary.is_empty() {
        for l in s.summary.lines() {
            ::log::info!("{l}");
        }
    }
    let (sock_path, vhost) = match &link {
        Link::Qemu(q) => (q.path(), false),
        Link::VhostUser(v) => (v.path(), true),
        Link::Tap(_) => (None, false),
    };
    if let Some(p) = sock_path {
        for l in conf::socket_hints(p, vhost).lines() {
            ::log::info!("{l}");
        }
    }
    if let Some(ids) = daemon::target_ids(s.runas) {
        daemon::switch_user(ids.0, ids.1, s.mode == Mode::Pasta)?;
    }
    if s.foreground {
        if let Some(p) = pid_file {
            p.write(std::process::id() as i32)?;
        }
    } else {
        daemon::daemonise(pid_file)?;
    }
    let (guest_ns, child, watch) = match guest.as_mut() {
        Some(g) => (
            Some(g.netns.try_clone()?),
            g.child,
            if s.no_netns_quit {
                None
            } else {
                g.watch.clone()
            },
        ),
        None => (None, None, None),
    };
    s.core.peek_offset = socks::probe_peek_offset();
    let core = Core::new(s.core);
    let mut rt = Runtime::new(
        core,
        link,
        LoopOptions {
            pcap,
            guest_ns,
            child,
            ns_watch: watch.map(|path| NsWatch {
                path,
                pid: match s.target {
                    Target::Pid(p) => Some(p),
                    _ => None,
                },
            }),
            port_scanner,
        },
    )?;
    if let Some(g) = guest.as_mut() {
        g.release()?;
    }
    Ok(rt.run())
}

fn ctx(e: io::Error, p: &std::path::Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
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
        return Err(io::Error::new(e.kind(), format!("--fd {fd}: {e}")));
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
        let dev = tap::TapDevice::from_fd(inherited(fd)?, s.ns_ifname.clone())?;
        return Ok((Link::Tap(dev), None, None));
    }
    let auto_mode = passt_core::fwd::FwdMode::Auto;
    let udp_auto = s.core.features.udp && s.core.fwd.udp_in.mode() == auto_mode;
    let auto = s.core.fwd.tcp_in.mode() == auto_mode || udp_auto;
    let guest = match &s.target {
        Target::Spawn(argv) => netns::spawn(argv)?,
        Target::Pid(pid) => netns::join_pid(*pid, s.netns_only, s.userns.as_deref())?,
        Target::Path(p) => netns::join_path(p, s.userns.as_deref())?,
    };
    let name = s.ns_ifname.clone();
    let mac = s.ns_mac;
    let configure = s.configure.take();
    let (dev, guest_mac, scanner) =
        netns::in_netns(guest.netns.as_fd(), move || -> io::Result<_> {
            tap::link_up("lo").map_err(|e| io::Error::new(e.kind(), format!("lo up: {e}")))?;
            let dev = tap::TapDevice::open(&name)
                .map_err(|e| io::Error::new(e.kind(), format!("tap device {name}: {e}")))?;
            if let Some(m) = mac {
                tap::set_mac(dev.name(), m)?;
            }
            let guest_mac = tap::get_mac(dev.name())?;
            if let Some(c) = configure {
                c(dev.name())?;
            }
            let scanner = match auto.then(|| portscan::PortScanner::open_here(udp_auto)) {
                Some(Ok(sc)) => Some(sc),
                Some(Err(e)) => {
                    ::log::warn!("automatic port forwarding disabled: /proc/net: {e}");
                    None
                }
                None => None,
            };
            Ok((dev, guest_mac, scanner))
        })??;
    s.core.guest_mac = Some(Mac(guest_mac));
    Ok((Link::Tap(dev), Some(guest), scanner))
}
