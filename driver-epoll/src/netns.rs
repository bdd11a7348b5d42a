//! pasta's target namespace: create one for a command, or join an existing one.
//!
//! **Spawning a command.** pasta forks a child that unshares a network and a
//! UTS namespace (plus a user namespace mapping `0 UID 1` / `0 GID 1` when not
//! root; as root the user namespace is skipped, so the command runs as root of
//! the initial user namespace), sets the hostname to `pasta-<host name>`, opens
//! ICMP echo sockets to group 0 (`ping_group_range`), reports that it is ready
//! and waits. pasta then sets the namespace up (loopback, tap device, addresses)
//! and releases the child, which executes the command. pasta exits with the
//! command's status (128 + N for a signal).
//!
//! **Joining.** A PID joins `/proc/PID/ns/net` (and, unless `--netns-only` or
//! when running as root, `/proc/PID/ns/user`); `--netns` takes a path or a
//! name under `/run/netns`. pasta exits when the process or the namespace file
//! disappears unless `--no-netns-quit`: a pidfd in the epoll set reports the
//! process's exit, inotify on its directory the removal of a namespace file,
//! and a check once a second covers file systems without inotify.
//!
//! **Namespace-side work.** Everything done inside the guest namespace (opening
//! the tap, netlink configuration, sockets of the guest side) runs in a
//! short-lived thread that enters the namespace with `setns(CLONE_NEWNET)`:
//! entering a network namespace changes only the calling thread, and a file
//! descriptor keeps the namespace it was created in. The main thread never
//! leaves the host namespace.

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::Pid;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Runs `f` in a thread that entered the network namespace `ns`.
pub(crate) fn in_netns<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// A new, empty network namespace, held by the returned fd (for tests and
/// tools; pasta's own namespaces come from [`spawn`]).
#[cfg(test)]
pub(crate) fn new_netns_fd() -> io::Result<OwnedFd> {
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<OwnedFd> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            Ok(std::fs::File::open("/proc/thread-self/ns/net")?.into())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// `--netns NAME|PATH`: a name without '/' lives under `/run/netns`.
pub(crate) fn netns_path(arg: &Path) -> PathBuf {
    if arg.as_os_str().as_bytes().contains(&b'/') {
        arg.to_path_buf()
    } else {
        Path::new("/run/netns").join(arg)
    }
}

/// The guest namespace pasta serves.
#[derive(Debug)]
pub(crate) struct Guest {
    /// The network namespace.
    pub(crate) netns: OwnedFd,
    /// The spawned command, if pasta started one.
    pub(crate) child: Option<Pid>,
    /// A path whose disappearance means the namespace is gone.
    pub(crate) watch: Option<PathBuf>,
    /// Write end of the pipe the child waits on before it executes.
    go: Option<OwnedFd>,
}

impl Guest {
    /// Lets the spawned command run (pasta is ready).
    pub(crate) fn release(&mut self) -> io::Result<()> {
        if let Some(go) = self.go.take() {
            nix::unistd::write(&go, b"g")?;
        }
        Ok(())
    }
}

fn open_ns(path: &Path) -> io::Result<OwnedFd> {
    let f = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(f.into())
}

/// Joins a process's namespaces. The user namespace is joined (on the calling
/// thread, which must be the only one) unless `netns_only` or running as root.
pub(crate) fn join_pid(pid: i32, netns_only: bool, userns: Option<&Path>) -> io::Result<Guest> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if !proc.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no process with PID {pid}"),
        ));
    }
    let netns = open_ns(&proc.join("ns/net"))?;
    if !netns_only && !nix::unistd::geteuid().is_root() {
        let u = match userns {
            Some(p) => p.to_path_buf(),
            None => proc.join("ns/user"),
        };
        join_userns(&u)?;
    }
    Ok(Guest {
        netns,
        child: None,
        watch: Some(proc),
        go: None,
    })
}

/// Joins a network namespace by path (`--netns`), and `--userns` if given.
pub(crate) fn join_path(path: &Path, userns: Option<&Path>) -> io::Result<Guest> {
    let netns = open_ns(path)?;
    if let Some(u) = userns {
        if !nix::unistd::geteuid().is_root() {
            join_userns(u)?;
        }
    }
    Ok(Guest {
        netns,
        child: None,
        watch: Some(path.to_path_buf()),
        go: None,
    })
}

fn join_userns(path: &Path) -> io::Result<()> {
    let fd = open_ns(path)?;
    // Our own user namespace cannot be joined again (EINVAL): nothing to do.
    match setns(fd.as_fd(), CloneFlags::CLONE_NEWUSER) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("joining {}: {e}", path.display()),
        )),
    }
}

/// The command to run when none is given: `$SHELL`, else `/bin/sh`.
pub(crate) fn default_command() -> Vec<OsString> {
    vec![std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| OsString::from("/bin/sh"))]
}

/// Everything the child needs, prepared before `fork()` so that the child
/// allocates nothing.
struct ChildPlan {
    argv: Vec<CString>,
    userns: bool,
    uid_map: CString,
    gid_map: CString,
    hostname: Vec<u8>,
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Writes `data` to the file `path` with raw calls (no allocation).
fn write_file(path: &CString, data: &[u8]) -> bool {
    // SAFETY: `path` is a valid C string; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    n == data.len() as isize
}

fn child_fail(msg: &[u8]) -> ! {
    // SAFETY: writing a static message to stderr and leaving at once.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// Spawns `argv` in new namespaces; it runs once [`Guest::release`] is called.
pub(crate) fn spawn(argv: &[OsString]) -> io::Result<Guest> {
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    }
    let root = nix::unistd::geteuid().is_root();
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut hostname = format!("pasta-{host}").into_bytes();
    hostname.truncate(64);
    let plan = ChildPlan {
        argv: argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in command"))?,
        userns: !root,
        uid_map: CString::new(format!("0 {} 1", nix::unistd::geteuid())).unwrap_or_default(),
        gid_map: CString::new(format!("0 {} 1", nix::unistd::getegid())).unwrap_or_default(),
        hostname,
    };
    let paths = (
        cstr("/proc/self/setgroups"),
        cstr("/proc/self/uid_map"),
        cstr("/proc/self/gid_map"),
        cstr("/proc/sys/net/ipv4/ping_group_range"),
    );
    let mut argv_ptrs: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: pasta is single-threaded here (namespace threads are joined),
    // and the child below makes only raw system calls until it executes.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            // SAFETY: prctl with integer arguments: die with pasta.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            let mut flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
            if plan.userns {
                flags |= CloneFlags::CLONE_NEWUSER;
            }
            if unshare(flags).is_err() {
                child_fail(b"pasta: cannot create namespaces\n");
            }
            if plan.userns
                && !(write_file(&paths.0, b"deny")
                    && write_file(&paths.1, plan.uid_map.as_bytes())
                    && write_file(&paths.2, plan.gid_map.as_bytes()))
            {
                child_fail(b"pasta: cannot map user and group IDs\n");
            }
            // SAFETY: the hostname buffer is valid for its length.
            unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) };
            let _ = write_file(&paths.3, b"0 0");
            // Ready; wait for pasta to set the namespace up.
            let _ = nix::unistd::write(&ready_w, b"r");
            let mut b = [0u8; 1];
            match nix::unistd::read(&go_r, &mut b) {
                Ok(1) => {}
                _ => child_fail(b""),
            }
            // SAFETY: an empty set, then unblocking everything.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
            }
            child_fail(b"pasta: cannot run the command\n");
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut b = [0u8; 1];
            let n = loop {
                match nix::unistd::read(&ready_r, &mut b) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r,
                }
            };
            if n != Ok(1) {
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(io::Error::other("namespace set-up of the command failed"));
            }
            let netns = open_ns(Path::new(&format!("/proc/{child}/ns/net")))?;
            Ok(Guest {
                netns,
                child: Some(child),
                watch: None,
                go: Some(go_w),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn ns_inode(p: &str) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn netns_names_and_paths() {
        assert_eq!(netns_path(Path::new("foo")), Path::new("/run/netns/foo"));
        assert_eq!(netns_path(Path::new("/x/y")), Path::new("/x/y"));
        assert_eq!(netns_path(Path::new("./y")), Path::new("./y"));
    }

    #[test]
    fn thread_enters_namespace_main_does_not() {
        let ns = new_netns_fd().unwrap();
        let here = ns_inode("/proc/thread-self/ns/net");
        let there = in_netns(ns.as_fd(), || ns_inode("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(here, there);
        assert_eq!(there, std::fs::File::from(ns).metadata().unwrap().ino());
        assert_eq!(here, ns_inode("/proc/thread-self/ns/net"));
    }

    #[test]
    fn join_pid_of_missing_process_fails() {
        let e = join_pid(i32::MAX - 1, true, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
