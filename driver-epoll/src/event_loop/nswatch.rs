//! Watching the namespace pasta serves: its file (or /proc/PID) and, for a
//! PID, a pidfd, so that pasta exits with it.

use super::*;

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
    pub(super) fn gone(&self) -> bool {
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
pub(super) fn inotify_dir(dir: &std::path::Path) -> std::io::Result<OwnedFd> {
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
pub(super) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by no one else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(r as i32) })
}
