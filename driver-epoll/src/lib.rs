//! The epoll driver of passt-rs: runs [`passt_core::Core`] over real sockets.
//!
//! `main()` reads the command line, opens the guest link (passt: qemu's UNIX
//! stream socket; pasta: a tap device in the target namespace), opens every
//! file it will need, drops privileges, daemonises unless told not to, and
//! hands everything to the event loop (`event_loop.rs`).

mod daemon;
mod event_loop;
mod log;
mod netns;
mod pcap;
mod qemu;
mod socks;
mod tap;

use event_loop::{Link, LoopOptions, NsWatch, Runtime};
use passt_core::{Config, Core, Mac};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Which program this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// qemu's stream socket.
    Passt,
    /// A tap device in a network namespace.
    Pasta,
}

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

pub mod cli;
pub mod conf;
pub mod netlink;
pub mod resolv;

/// Entry point shared by the `passt` and `pasta` binaries. The mode is chosen
/// from the program name, as upstream does: a name containing "pasta" runs
/// pasta, one containing "passt" runs passt.
pub fn main() -> i32 {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = if name.contains("pasta") {
        Mode::Pasta
    } else if name.contains("passt") {
        Mode::Passt
    } else {
        eprintln!("{name}: run me as passt or pasta");
        return 1;
    };
    log::init(ident(mode));
    let rest: Vec<OsString> = args.collect();
    let settings = match settings_from_args(mode, &rest) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match run(settings) {
        Ok(code) => code,
        Err(e) => {
            ::log::error!("{e}");
            1
        }
    }
}

fn ident(mode: Mode) -> &'static str {
    match mode {
        Mode::Passt => "passt",
        Mode::Pasta => "pasta",
    }
}

/// A minimal reading of the command line: the options the runtime itself
/// needs. The full option set, host discovery and `--config-net` come from
/// the configuration modules.
fn settings_from_args(mode: Mode, args: &[OsString]) -> Result<Settings, i32> {
    let mut s = Settings {
        mode,
        core: Config::default(),
        socket: None,
        fd: None,
        one_off: false,
        ns_ifname: "tap0".into(),
        ns_mac: None,
        target: Target::Spawn(Vec::new()),
        userns: None,
        netns_only: false,
        no_netns_quit: false,
        configure: None,
        foreground: false,
        pid_file: None,
        pcap: None,
        runas: None,
        log: log::LogSettings {
            ident: ident(mode),
            ..log::LogSettings::default()
        },
        summary: String::new(),
    };
    let mut it = args.iter();
    let mut positional = Vec::new();
    let usage = |m: &str| {
        eprintln!("{}: {m}", ident(mode));
        1
    };
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| usage(&format!("{a} needs an argument")))
        };
        match a.as_str() {
            "-f" | "--foreground" => s.foreground = true,
            "-d" | "--debug" => s.log.debug = true,
            "--trace" => {
                s.log.debug = true;
                s.log.trace = true
            }
            "-q" | "--quiet" => s.log.quiet = true,
            "-1" | "--one-off" => s.one_off = true,
            "-s" | "--socket" => s.socket = Some(val()?.into()),
            "-F" | "--fd" => {
                let v = val()?;
                s.fd = Some(v.to_string_lossy().parse().map_err(|_| usage("bad --fd"))?);
                s.one_off = true;
            }
            "-p" | "--pcap" => s.pcap = Some(val()?.into()),
            "-P" | "--pid" => s.pid_file = Some(val()?.into()),
            "-l" | "--log-file" => s.log.file = Some(val()?.into()),
            "-I" | "--ns-ifname" => s.ns_ifname = val()?.to_string_lossy().into_owned(),
            "--netns" => s.target = Target::Path(netns::netns_path(std::path::Path::new(&val()?))),
            "--userns" => s.userns = Some(val()?.into()),
            "--netns-only" => s.netns_only = true,
            "--no-netns-quit" => s.no_netns_quit = true,
            "--runas" => {
                let v = val()?;
                s.runas = Some(daemon::resolve_runas(&v.to_string_lossy()).map_err(|e| usage(&e))?)
            }
            "--" => {
                positional.extend(it.by_ref().cloned());
            }
            x if x.starts_with('-') => return Err(usage(&format!("unknown option {x}"))),
            _ => {
                positional.push(OsString::from(a));
                positional.extend(it.by_ref().cloned());
            }
        }
    }
    if mode == Mode::Pasta {
        if let Target::Spawn(_) = s.target {
            s.target = match positional
                .first()
                .map(|p| p.to_string_lossy().parse::<i32>())
            {
                Some(Ok(pid)) if positional.len() == 1 => Target::Pid(pid),
                Some(_) => Target::Spawn(positional),
                None => Target::Spawn(netns::default_command()),
            };
        }
        if let Target::Spawn(_) = s.target {
            s.foreground = true;
            if !s.log.debug {
                s.log.quiet = true;
            }
        }
    }
    Ok(s)
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
    let link = match s.mode {
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
            let (link, g) = pasta_link(&mut s)?;
            guest = g;
            link
        }
    };
    if !s.summary.is_empty() {
        for l in s.summary.lines() {
            ::log::info!("{l}");
        }
    }
    if let Link::Qemu(q) = &link {
        if let Some(p) = q.path() {
            ::log::info!("UNIX domain socket bound at {}", p.display());
            ::log::info!("You can now start qemu (>= 7.2, with commit 13c6be96618c):");
            ::log::info!(
                "    kvm ... -device virtio-net-pci,netdev=s -netdev stream,id=s,server=off,addr.type=unix,addr.path={}",
                p.display()
            );
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
    let core = Core::new(s.core);
    let mut rt = Runtime::new(
        core,
        link,
        LoopOptions {
            pcap,
            guest_ns,
            child,
            ns_watch: watch.map(|path| NsWatch { path }),
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
/// configuration.
fn pasta_link(s: &mut Settings) -> io::Result<(Link, Option<netns::Guest>)> {
    if let Some(fd) = s.fd {
        let dev = tap::TapDevice::from_fd(inherited(fd)?, s.ns_ifname.clone())?;
        return Ok((Link::Tap(dev), None));
    }
    let guest = match &s.target {
        Target::Spawn(argv) => netns::spawn(argv)?,
        Target::Pid(pid) => netns::join_pid(*pid, s.netns_only, s.userns.as_deref())?,
        Target::Path(p) => netns::join_path(p, s.userns.as_deref())?,
    };
    let name = s.ns_ifname.clone();
    let mac = s.ns_mac;
    let configure = s.configure.take();
    let (dev, guest_mac) = netns::in_netns(guest.netns.as_fd(), move || -> io::Result<_> {
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
        Ok((dev, guest_mac))
    })??;
    s.core.guest_mac = Some(Mac(guest_mac));
    Ok((Link::Tap(dev), Some(guest)))
}
