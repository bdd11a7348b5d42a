//! pasta's target namespace: create one for a command, or join an existing one.
//!
//! **Spawning a command.** pasta forks a child that unshares a network and a
//! UTS namespace (plus a user namespace mapping `0 UID 1` / `0 GID 1` when not
//! root and not `--netns-only`; as root the user namespace is skipped, so the
//! command runs as root of the initial user namespace), sets the hostname to
//! `pasta-<host name>`, opens ICMP echo sockets to group 0
//! (`ping_group_range`), reports that it is ready (or which step failed, with
//! its error number) and waits. pasta joins the child's user namespace, which
//! owns the new network namespace (entering that from the initial user
//! namespace is not allowed to an unprivileged user), sets the namespace up
//! (loopback, tap device, addresses) and releases the child, which executes
//! the command. pasta exits with the command's status (128 + N for a signal;
//! 127 if the command was not found, 126 if it could not be run).
//!
//! **Joining.** A PID joins `/proc/PID/ns/user` (or `--userns`), unless
//! `--netns-only` or running as root, then `/proc/PID/ns/net`; `--netns`
//! takes a path or a name under `/run/netns`, with `--userns` if given
//! (without it, as Podman runs it, pasta is already in the owning user
//! namespace). The user namespace is always joined first, on the only thread. pasta exits when the process or the namespace file
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

/// Runs `f` in a thread that entered the network namespace `ns`. The error
/// is that of `setns()`: callers name the namespace.
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
    /// What the namespace is, for messages: "of PID 1234", "/run/netns/x".
    pub(crate) desc: String,
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
            nix::unistd::write(&go, b"g")
                .map_err(|e| step_err("starting the command", e.into()))?;
        }
        Ok(())
    }
}

fn open_ns(path: &Path) -> io::Result<OwnedFd> {
    Ok(std::fs::File::open(path)?.into())
}

/// Joins a process's namespaces. The user namespace (`userns`, else that of
/// the process) is joined on the calling thread, which must be the only one,
/// unless `netns_only` or running as root.
pub(crate) fn join_pid(pid: i32, netns_only: bool, userns: Option<&Path>) -> io::Result<Guest> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if !proc.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("joining the namespaces of PID {pid}: no such process"),
        ));
    }
    let net = proc.join("ns/net");
    let netns = open_ns(&net).map_err(|e| {
        step_err(
            &format!(
                "opening the network namespace of PID {pid} ({})",
                net.display()
            ),
            e,
        )
    })?;
    if !netns_only && !nix::unistd::geteuid().is_root() {
        let u = match userns {
            Some(p) => p.to_path_buf(),
            None => proc.join("ns/user"),
        };
        join_userns(&u, &format!("PID {pid}"))?;
    }
    Ok(Guest {
        netns,
        desc: format!("of PID {pid}"),
        child: None,
        watch: Some(proc),
        go: None,
    })
}

/// Joins a network namespace by path (`--netns`), and `--userns` if given.
pub(crate) fn join_path(path: &Path, userns: Option<&Path>) -> io::Result<Guest> {
    let netns = open_ns(path).map_err(|e| {
        step_err(
            &format!("opening the network namespace {}", path.display()),
            e,
        )
    })?;
    if let Some(u) = userns {
        if !nix::unistd::geteuid().is_root() {
            join_userns(u, &path.display().to_string())?;
        }
    }
    Ok(Guest {
        netns,
        desc: path.display().to_string(),
        child: None,
        watch: Some(path.to_path_buf()),
        go: None,
    })
}

/// Joins the user namespace at `path` (that of `owner`, for messages): it
/// owns the network namespace pasta is about to enter, and pasta gets its
/// capabilities there. The calling thread must be the process's only one.
fn join_userns(path: &Path, owner: &str) -> io::Result<()> {
    let what = || format!("joining the user namespace of {owner} ({})", path.display());
    let fd = open_ns(path).map_err(|e| step_err(&what(), e))?;
    // Our own user namespace cannot be joined again (EINVAL): nothing to do.
    // Compared by inode, so that other EINVAL causes (threads) still show.
    let same = match (
        std::fs::metadata("/proc/self/ns/user"),
        std::fs::File::from(fd.try_clone()?).metadata(),
    ) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.ino() == b.ino() && a.dev() == b.dev()
        }
        _ => false,
    };
    if same {
        return Ok(());
    }
    setns(fd.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(|e| step_err(&what(), e.into()))
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
    /// "pasta: running COMMAND: ", written before the reason if exec fails.
    exec_fail: Vec<u8>,
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Writes `data` to the file `path` with raw calls (no allocation); the
/// error number on failure.
fn write_file(path: &CString, data: &[u8]) -> Result<(), i32> {
    // SAFETY: `path` is a valid C string; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let e = nix::errno::Errno::last_raw();
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    match n {
        n if n == data.len() as isize => Ok(()),
        n if n < 0 => Err(e),
        _ => Err(libc::EIO),
    }
}

/// The steps of the spawned child before it is ready, as reported to pasta
/// through the ready pipe: one byte of step, four of error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum ChildStep {
    Ready = 0,
    Unshare = 1,
    Setgroups = 2,
    UidMap = 3,
    GidMap = 4,
}

impl ChildStep {
    fn from_u8(b: u8) -> Option<Self> {
        [
            Self::Ready,
            Self::Unshare,
            Self::Setgroups,
            Self::UidMap,
            Self::GidMap,
        ]
        .into_iter()
        .find(|s| *s as u8 == b)
    }

    fn describe(self, userns: bool) -> &'static str {
        match self {
            Self::Ready => "starting the command",
            Self::Unshare if userns => "creating the user and network namespaces of the command",
            Self::Unshare => "creating the network namespace of the command",
            Self::Setgroups => {
                "denying setgroups in the command's user namespace (/proc/self/setgroups)"
            }
            Self::UidMap => "writing the command's user ID map (/proc/self/uid_map)",
            Self::GidMap => "writing the command's group ID map (/proc/self/gid_map)",
        }
    }
}

/// Warnings the child reports with [`ChildStep::Ready`] (a bit mask in the
/// error-number field).
const WARN_HOSTNAME: i32 = 1;
const WARN_PING_GROUP: i32 = 2;

/// Tells pasta how the set-up went, with raw calls.
fn child_report(fd: &OwnedFd, step: ChildStep, err: i32) {
    let e = err.to_ne_bytes();
    let msg = [step as u8, e[0], e[1], e[2], e[3]];
    let _ = nix::unistd::write(fd, &msg);
}

fn child_exit(code: i32) -> ! {
    // SAFETY: leaving the forked child at once, running nothing of pasta's.
    unsafe { libc::_exit(code) }
}

/// Spawns `argv` in a new network and UTS namespace, and a new user
/// namespace if `userns`; it runs once [`Guest::release`] is called. With a
/// user namespace, pasta joins it (it owns the network namespace) before it
/// returns: the calling process must have a single thread.
// Over 100 lines on purpose: the child's side, from fork to exec, stays in
// one function where it can be checked to make raw system calls only (no
// allocation, no locks), next to the parent's side it answers.
pub(crate) fn spawn(argv: &[OsString], userns: bool, name: Option<&str>) -> io::Result<Guest> {
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    }
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut hostname = match name {
        Some(n) => n.as_bytes().to_vec(),
        None => format!("pasta-{host}").into_bytes(),
    };
    hostname.truncate(64);
    let plan = ChildPlan {
        argv: argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in command"))?,
        userns,
        uid_map: CString::new(format!("0 {} 1", nix::unistd::geteuid())).unwrap_or_default(),
        gid_map: CString::new(format!("0 {} 1", nix::unistd::getegid())).unwrap_or_default(),
        hostname,
        exec_fail: format!("pasta: running {}: ", argv[0].to_string_lossy()).into_bytes(),
    };
    let paths = (
        cstr("/proc/self/setgroups"),
        cstr("/proc/self/uid_map"),
        cstr("/proc/self/gid_map"),
        cstr("/proc/sys/net/ipv4/ping_group_range"),
    );
    let mut argv_ptrs: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| step_err("creating the start-up pipe of the command", e.into()))?;
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| step_err("creating the start-up pipe of the command", e.into()))?;

    // SAFETY: pasta is single-threaded here (namespace threads are joined),
    // and the child below makes only raw system calls until it executes.
    let fork = unsafe { nix::unistd::fork() }
        .map_err(|e| step_err("starting the command (fork)", e.into()))?;
    match fork {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            // SAFETY: prctl with integer arguments: die with pasta.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            let mut flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
            if plan.userns {
                flags |= CloneFlags::CLONE_NEWUSER;
            }
            if let Err(e) = unshare(flags) {
                child_report(&ready_w, ChildStep::Unshare, e as i32);
                child_exit(1);
            }
            if plan.userns {
                let steps = [
                    (ChildStep::Setgroups, &paths.0, &b"deny"[..]),
                    (ChildStep::UidMap, &paths.1, plan.uid_map.as_bytes()),
                    (ChildStep::GidMap, &paths.2, plan.gid_map.as_bytes()),
                ];
                for (step, path, data) in steps {
                    if let Err(e) = write_file(path, data) {
                        child_report(&ready_w, step, e);
                        child_exit(1);
                    }
                }
            }
            let mut warn = 0;
            // SAFETY: the hostname buffer is valid for its length.
            if unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) } < 0
            {
                warn |= WARN_HOSTNAME;
            }
            if write_file(&paths.3, b"0 0").is_err() {
                warn |= WARN_PING_GROUP;
            }
            // Ready; wait for pasta to set the namespace up.
            child_report(&ready_w, ChildStep::Ready, warn);
            drop(ready_w);
            let mut b = [0u8; 1];
            match nix::unistd::read(&go_r, &mut b) {
                Ok(1) => {}
                // pasta gave up: it says why.
                _ => child_exit(1),
            }
            // SAFETY: an empty set, then unblocking everything.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::execvp(argv_ptrs[0], argv_ptrs.as_ptr());
            }
            let e = nix::errno::Errno::last();
            let _ = nix::unistd::write(std::io::stderr(), &plan.exec_fail);
            let _ = nix::unistd::write(std::io::stderr(), e.desc().as_bytes());
            let _ = nix::unistd::write(std::io::stderr(), b"\n");
            // As a shell does: 127 if the command wasn't found, else 126.
            child_exit(if e == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            });
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut b = [0u8; 5];
            let mut got = 0;
            while got < b.len() {
                match nix::unistd::read(&ready_r, &mut b[got..]) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            let code = i32::from_ne_bytes([b[1], b[2], b[3], b[4]]);
            let step = ChildStep::from_u8(b[0]).filter(|_| got == b.len());
            if step != Some(ChildStep::Ready) {
                let _ = nix::sys::wait::waitpid(child, None);
                let what = step.unwrap_or(ChildStep::Ready).describe(userns);
                let e = match step {
                    Some(_) => io::Error::from_raw_os_error(code),
                    None => io::Error::other("the child process exited"),
                };
                return Err(step_err(what, e));
            }
            if code & WARN_HOSTNAME != 0 {
                ::log::warn!("could not set the host name of the command's namespace");
            }
            if code & WARN_PING_GROUP != 0 {
                ::log::warn!(
                    "could not set ping_group_range in the command's namespace: ICMP echo sockets may fail"
                );
            }
            let proc = PathBuf::from(format!("/proc/{child}"));
            let joined = if userns {
                join_userns(&proc.join("ns/user"), &format!("the command (PID {child})"))
            } else {
                Ok(())
            };
            let netns = joined.and_then(|()| {
                open_ns(&proc.join("ns/net")).map_err(|e| {
                    step_err(
                        &format!("opening the network namespace of the command (PID {child})"),
                        e,
                    )
                })
            });
            match netns {
                Ok(netns) => Ok(Guest {
                    netns,
                    desc: format!("of the command (PID {child})"),
                    child: Some(child),
                    watch: None,
                    go: Some(go_w),
                }),
                Err(e) => {
                    // Closing the pipe makes the child exit without running
                    // the command.
                    drop(go_w);
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(e)
                }
            }
        }
    }
}

/// `what: error`, keeping the error's kind; a system error reads as its
/// description alone ("Operation not permitted", no "(os error 1)").
pub(crate) fn step_err(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {}", describe(&e)))
}

/// An error as a user reads it: the description of a system error, else its
/// message.
pub(crate) fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The inode of the file at `p` (`/proc/.../ns/net`: the namespace).
    pub(crate) fn ns_inode(p: &str) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    /// A new network namespace, and its inode (what `ns_inode` reads of a
    /// thread inside it).
    pub(crate) fn new_netns_with_inode() -> (OwnedFd, u64) {
        let ns = new_netns_fd().unwrap();
        let ino = std::fs::File::from(ns.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino();
        (ns, ino)
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
        assert!(e.to_string().contains(&format!("PID {}", i32::MAX - 1)));
    }

    #[test]
    fn errors_name_the_step_without_errno_suffix() {
        let e = step_err(
            "joining the network namespace of PID 1234",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            e.to_string(),
            "joining the network namespace of PID 1234: Operation not permitted"
        );
        let e = join_path(Path::new("/nonexistent/ns"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "opening the network namespace /nonexistent/ns: No such file or directory"
        );
        for b in 0..=4u8 {
            assert_eq!(ChildStep::from_u8(b).map(|s| s as u8), Some(b));
        }
        assert_eq!(ChildStep::from_u8(5), None);
    }
}
