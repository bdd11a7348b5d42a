//! Process life cycle: the PID file and daemonising.
//!
//! The PID file is opened at start-up, before privileges are dropped
//! (`isolate::files`: no symbolic links, regular files only, mode 0600), and
//! written once the process is ready — the sandbox complete, the filter on —
//! so its appearance means "running". In the foreground the process writes
//! its own PID. In the background the parent forks, hands the child its PID
//! (the child may be PID 1 of a new PID namespace, where `getpid()` says 1),
//! waits until the child reports ready, writes the child's PID and exits 0 —
//! or exits 1 if the child failed before that. The child starts a new
//! session; its standard streams keep pointing at the terminal until just
//! before the filter goes on, so that start-up errors are seen, then go to
//! `/dev/null`.

use crate::isolate::files::create_output;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// An opened PID file, written once ready.
#[derive(Debug)]
pub(crate) struct PidFile(File);

impl PidFile {
    /// Creates or truncates the file of `-P` (see `isolate::files`).
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        Ok(PidFile(create_output(
            "creating the PID file",
            "-P",
            path,
            false,
        )?))
    }

    pub(crate) fn write(mut self, pid: i32) -> io::Result<()> {
        self.0.write_all(format!("{pid}\n").as_bytes())
    }
}

/// The child side of daemonising, until it reports ready.
#[derive(Debug)]
pub(crate) struct Detached {
    ready: OwnedFd,
}

impl Detached {
    /// Points the standard streams at `devnull` and stops logging to
    /// standard error.
    pub(crate) fn stdio_off(&self, devnull: &OwnedFd) -> io::Result<()> {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard streams, which we own.
            if unsafe { libc::dup2(devnull.as_raw_fd(), fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        crate::log::stderr_off();
        Ok(())
    }

    /// Tells the parent we are running: it writes the PID file and exits.
    pub(crate) fn ready(self) {
        let _ = nix::unistd::write(&self.ready, b"r");
    }
}

/// Forks into the background. The parent waits for the child to be ready
/// (see [`Detached::ready`]), writes its PID into the PID file and exits 0,
/// or exits 1 if the child ended first. Returns in the child only, in a new
/// session.
pub(crate) fn daemonise(pidfile: Option<PidFile>, name: &str) -> io::Result<Detached> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use nix::unistd::{fork, ForkResult};
    let (parent, child) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: called while the process has a single thread (namespace
    // threads are joined before), so the child may run arbitrary code.
    match unsafe { fork() }? {
        ForkResult::Parent { child: pid } => {
            drop(child);
            let _ = nix::unistd::write(&parent, &pid.as_raw().to_ne_bytes());
            let mut b = [0u8; 1];
            let ok = loop {
                match nix::unistd::read(&parent, &mut b) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r == Ok(1),
                }
            };
            let code = if ok {
                match pidfile.map(|p| p.write(pid.as_raw())) {
                    Some(Err(e)) => {
                        eprintln!("{name}: writing the PID file: {e}");
                        1
                    }
                    _ => 0,
                }
            } else {
                eprintln!("{name}: the daemon failed to start");
                1
            };
            // SAFETY: _exit skips destructors that belong to the child now.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Child => {
            drop(parent);
            drop(pidfile);
            let mut b = [0u8; 4];
            if nix::unistd::read(&child, &mut b) == Ok(4) {
                crate::log::set_pid(u32::from_ne_bytes(b));
            }
            nix::unistd::setsid()?;
            Ok(Detached { ready: child })
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
}
