//! Process life cycle: PID file, privilege drop, daemonising.
//!
//! The PID file is opened (created, truncated, mode 0600) at start-up, before
//! privileges are dropped, and written once initialisation is complete: by the
//! parent with the child's PID when daemonising, or with our own PID in the
//! foreground, so its appearance means "ready".
//!
//! Privileges: `--runas` switches to the given user and group. Without it, root
//! in the initial user namespace switches to `nobody`, as upstream passt does, with a
//! warning. pasta keeps CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_BIND_SERVICE
//! across the switch (it enters the guest namespace later on); everything
//! privileged it needs (the tap device, the pcap and log files) is opened
//! before.

use nix::unistd::{Gid, Uid};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The user and group `nobody` of static builds.
pub(crate) const NOBODY: (u32, u32) = (65534, 65534);

/// An opened PID file, written once ready.
#[derive(Debug)]
pub(crate) struct PidFile(File);

impl PidFile {
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(PidFile(f))
    }

    pub(crate) fn write(mut self, pid: i32) -> io::Result<()> {
        self.0.write_all(format!("{pid}\n").as_bytes())
    }
}

/// Whether we are root in the initial user namespace.
pub(crate) fn root_in_init_userns() -> bool {
    if !Uid::effective().is_root() {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f == ["0", "0", "4294967295"]
        }
        Err(_) => true,
    }
}

/// The identity to switch to, if any: `--runas`, or nobody for root in the
/// initial user namespace.
pub(crate) fn target_ids(runas: Option<(u32, u32)>) -> Option<(u32, u32)> {
    match runas {
        Some(ids) => Some(ids),
        None if root_in_init_userns() => {
            log::warn!("don't run as root: changing to nobody");
            Some(NOBODY)
        }
        None => None,
    }
}

const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets effective and permitted capabilities to `caps` (numbers below 32).
fn set_caps(caps: &[u32]) -> io::Result<()> {
    let mut mask = 0u32;
    for &c in caps {
        mask |= 1 << c;
    }
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask,
            permitted: mask,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: capset reads one header and two data structs (version 3).
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Effective and permitted capabilities (the lower 32).
#[cfg(test)]
fn get_caps() -> io::Result<(u32, u32)> {
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data structs (version 3).
    let r = unsafe { libc::syscall(libc::SYS_capget, &hdr, data.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((data[0].effective, data[0].permitted))
}

/// Switches to `uid`/`gid`, dropping supplementary groups; with `keep_ns_caps`
/// keeps what pasta needs to enter namespaces and bind low ports.
pub(crate) fn switch_user(uid: u32, gid: u32, keep_ns_caps: bool) -> io::Result<()> {
    if Uid::effective().as_raw() == uid && Gid::effective().as_raw() == gid {
        return Ok(());
    }
    if keep_ns_caps {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    nix::unistd::setgroups(&[])?;
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g)?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u)?;
    if keep_ns_caps {
        set_caps(&[CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE])?;
    }
    Ok(())
}

/// Forks into the background. The parent writes the child's PID into the PID
/// file and exits 0; the child starts a new session with standard streams on
/// `/dev/null`. Returns in the child only.
pub(crate) fn daemonise(pidfile: Option<PidFile>) -> io::Result<()> {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: called while the process has a single thread (namespace
    // threads are joined before), so the child may run arbitrary code.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            if let Some(p) = pidfile {
                let _ = p.write(child.as_raw());
            }
            // SAFETY: _exit skips destructors that belong to the child now.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {
            nix::unistd::setsid()?;
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            for fd in 0..3 {
                // SAFETY: dup2 onto the standard streams, which we own.
                if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            crate::log::stderr_off();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_written() {
        let p = std::env::temp_dir().join(format!("passt-rs-pid-{}", std::process::id()));
        PidFile::create(&p).unwrap().write(4242).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "4242\n");
        let _ = std::fs::remove_file(&p);
    }

    /// A forked child switches to nobody keeping the namespace capabilities.
    #[test]
    fn switch_keeps_caps_in_child() {
        assert!(Uid::effective().is_root(), "tests run as root");
        // SAFETY: the child only makes syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // No allocation in the forked child: capget straight into a struct.
                let ok = switch_user(65534, 65534, true).is_ok()
                    && Uid::effective().as_raw() == 65534
                    && get_caps().is_ok_and(|(eff, _)| {
                        eff == (1 << CAP_SYS_ADMIN)
                            | (1 << CAP_NET_ADMIN)
                            | (1 << CAP_NET_BIND_SERVICE)
                    });
                // SAFETY: leaving the forked child without running the test harness's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
