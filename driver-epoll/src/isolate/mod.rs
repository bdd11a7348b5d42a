//! Least privilege: the stages in which passt and pasta give up what they no
//! longer need.
//!
//! passt and pasta parse every byte an untrusted guest sends, so the process
//! doing it must hold nothing worth taking over. Everything the running phase
//! needs — sockets, the tap device, the capture and log files, the
//! namespace's port tables, the descriptors that watch the namespace — is
//! opened during set-up; then, in order (see docs/security.md for the threat
//! model):
//!
//! 1. [`initial`], first thing in `main`: closes every inherited descriptor
//!    but the standard streams and `--fd`, fills missing standard streams with
//!    `/dev/null`, tunes the allocator so that it never maps memory, and keeps
//!    only the capabilities set-up may use ([`SETUP_CAPS`]). *Gives up:*
//!    leaked descriptors of the parent, every other capability.
//! 2. [`user`], once every file, socket and device is open: switches to the
//!    `--runas` user (`nobody` when started as root; never UID 0), keeping
//!    only `CAP_SYS_ADMIN` and `CAP_SETPCAP` for the next stage (pasta:
//!    also `CAP_NET_BIND_SERVICE`); a process left without them (an
//!    unprivileged passt) creates a user namespace, where it has them.
//!    *Gives up:* the starting identity and its groups, `CAP_NET_ADMIN`,
//!    `CAP_SETUID`/`SETGID`, `CAP_DAC_OVERRIDE`, `CAP_SYS_PTRACE`.
//! 3. [`prefork`]: new mount, IPC and UTS namespaces (and PID, unless pasta
//!    stays in the foreground, where it could not fork into it); an empty,
//!    read-only tmpfs (two inodes, no blocks) becomes the root with
//!    `pivot_root`, the old root is detached; the bounding, inheritable and
//!    ambient sets are emptied. Keeps pasta's `CAP_SYS_ADMIN` (its namespace
//!    worker enters the guest namespace in the next stage) and
//!    `CAP_NET_BIND_SERVICE`. *Gives up:* every path of the file system,
//!    System V IPC, the host name, the PID space (after the fork), any way to
//!    regain a capability through `execve`.
//! 4. [`postfork`], after daemonising: pasta's namespace worker enters the
//!    guest namespace and drops every capability; the main thread drops all
//!    but pasta's `CAP_NET_BIND_SERVICE` (ports below 1024 forwarded at run
//!    time: `-t auto`); the process turns non-dumpable (no core dumps, no
//!    `ptrace` by the same user), sets `PR_SET_NO_NEW_PRIVS`, and installs the
//!    seccomp filter ([`seccomp`]), whose default action kills the process.
//!    *Gives up:* `CAP_SYS_ADMIN`, `setns`, and every system call the running
//!    phase does not make.
//!
//! Files are created through [`files::create_output`] (`O_NOFOLLOW`, regular
//! files only, mode 0600).

pub(crate) mod caps;
pub(crate) mod files;
pub(crate) mod seccomp;
pub(crate) mod worker;

pub(crate) use seccomp::{syscalls, Syscall};

use caps::{cap, set_of, CapSet};
use seccomp::Profile;
use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Capabilities set-up may use: binding low ports and configuring the
/// namespace (`NET_BIND_SERVICE`, `NET_ADMIN`), namespaces and mounts
/// (`SYS_ADMIN`), the switch of user (`SETUID`, `SETGID`), clearing the
/// bounding set (`SETPCAP`), files of other users when started as root
/// (`DAC_OVERRIDE`), the namespaces of another user's process
/// (`SYS_PTRACE`), and a UID 0 mapping in a new user namespace (`SETFCAP`).
pub(crate) const SETUP_CAPS: CapSet = set_of(&[
    cap::NET_BIND_SERVICE,
    cap::NET_ADMIN,
    cap::SYS_ADMIN,
    cap::SETUID,
    cap::SETGID,
    cap::SETPCAP,
    cap::DAC_OVERRIDE,
    cap::SYS_PTRACE,
    cap::SETFCAP,
]);

/// The mode's capabilities after [`user`].
pub(crate) fn user_caps(p: Profile) -> CapSet {
    match p {
        Profile::Passt | Profile::VhostUser => set_of(&[cap::SYS_ADMIN, cap::SETPCAP]),
        Profile::Pasta => set_of(&[cap::SYS_ADMIN, cap::SETPCAP, cap::NET_BIND_SERVICE]),
    }
}

/// The mode's capabilities after [`prefork`].
pub(crate) fn prefork_caps(p: Profile) -> CapSet {
    match p {
        Profile::Passt | Profile::VhostUser => 0,
        Profile::Pasta => set_of(&[cap::SYS_ADMIN, cap::NET_BIND_SERVICE]),
    }
}

/// The mode's capabilities while running: passt none; pasta
/// `CAP_NET_BIND_SERVICE`, to bind ports below 1024 that `-t auto` finds.
pub(crate) fn running_caps(p: Profile) -> CapSet {
    match p {
        Profile::Passt | Profile::VhostUser => 0,
        Profile::Pasta => set_of(&[cap::NET_BIND_SERVICE]),
    }
}

/// System calls of the Rust runtime and the allocator while running.
const RUNTIME_SYSCALLS: &[Syscall] = syscalls![
    // The allocator growing its heap: the socket table, flow tables and log
    // lines may grow at run time. mmap is never used (see `tune_allocator`).
    SYS_brk,
    // The clock, when the vDSO falls back to the kernel.
    SYS_clock_gettime,
    // The end: `exit` below.
    SYS_exit_group,
    // Debug builds (the tests) check that a descriptor is open before
    // closing it; F_GETFD only reads the close-on-exec flag.
    SYS_fcntl[1: libc::F_GETFD],
    // A call interrupted by a stop signal and resumed (poll with a timeout).
    SYS_restart_syscall,
];

/// The lists each profile is made of: (module, list).
pub(crate) fn sources(p: Profile) -> Vec<(&'static str, &'static [Syscall])> {
    let mut v: Vec<(&'static str, &'static [Syscall])> = vec![
        ("runtime", RUNTIME_SYSCALLS),
        ("event_loop", crate::event_loop::SYSCALLS),
        ("socks", crate::sock::SYSCALLS),
        ("dgram", crate::sock::dgram::SYSCALLS),
        ("log", crate::log::SYSCALLS),
        ("pcap", crate::pcap::SYSCALLS),
        ("neigh", crate::netlink::neigh::SYSCALLS),
    ];
    match p {
        Profile::Passt => v.push(("qemu", crate::link::qemu::SYSCALLS)),
        Profile::VhostUser => v.push(("vhost_user", crate::link::vhost_user::SYSCALLS)),
        Profile::Pasta => {
            v.push(("tap", crate::link::tap::SYSCALLS));
            v.push(("event_loop (pasta)", crate::event_loop::PASTA_SYSCALLS));
            v.push(("portscan", crate::portscan::SYSCALLS));
            v.push(("isolate::worker", worker::SYSCALLS));
            v.push(("splice", crate::sock::splice::SYSCALLS));
        }
    }
    v
}

/// An error as a user reads it: the description of a system error (without
/// the bare number), else its message.
pub(crate) use crate::netns::describe;

/// `what: error`, as start-up failures read.
pub(crate) fn step(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {}", describe(&e)))
}

fn os_err(what: &str) -> io::Error {
    step(what, io::Error::last_os_error())
}

/// `--fd 0`: moves standard input (the client's socket) to a descriptor
/// above 2 and puts `/dev/null` in its place. Returns the new descriptor.
pub(crate) fn stdin_to_fd() -> io::Result<i32> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or fails.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(step("using --fd 0", io::Error::last_os_error()));
    }
    let path = c"/dev/null";
    // SAFETY: a valid C string; the result is checked.
    let null = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    // SAFETY: dup2 onto standard input, which we own; closing our copy.
    if null < 0 || unsafe { libc::dup2(null, 0) } < 0 {
        return Err(os_err("/dev/null"));
    }
    if null > 2 {
        // SAFETY: our own descriptor, unused now.
        unsafe { libc::close(null) };
    }
    Ok(fd)
}

/// Stage 1: see the module documentation. `keep_fd` is `--fd`. Returns a
/// descriptor of `/dev/null` (above 2), for the standard streams of a daemon.
pub(crate) fn initial(keep_fd: Option<i32>) -> io::Result<OwnedFd> {
    close_inherited(keep_fd)?;
    let path = c"/dev/null";
    // SAFETY: a valid C string; the result is checked.
    let null = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    if null < 0 {
        return Err(os_err("/dev/null"));
    }
    for fd in 0..=2 {
        // SAFETY: F_GETFD only checks whether `fd` is open; dup2 fills it.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 && unsafe { libc::dup2(null, fd) } < 0 {
            return Err(os_err("standard streams"));
        }
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor, which we own.
    let kept = unsafe { libc::fcntl(null, libc::F_DUPFD_CLOEXEC, 3) };
    if kept < 0 {
        return Err(os_err("/dev/null"));
    }
    if null > 2 {
        // SAFETY: the first descriptor of /dev/null is ours and unused now.
        unsafe { libc::close(null) };
    }
    tune_allocator();
    caps::keep_only(SETUP_CAPS).map_err(|e| step("capabilities", e))?;
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(kept) })
}

/// Closes every descriptor above 2 but `keep`.
fn close_inherited(keep: Option<i32>) -> io::Result<()> {
    let ranges: &[(u32, u32)] = match keep {
        Some(k) if k > 3 => &[(3, k as u32 - 1), (k as u32 + 1, u32::MAX)],
        Some(3) => &[(4, u32::MAX)],
        _ => &[(3, u32::MAX)],
    };
    for &(lo, hi) in ranges {
        // SAFETY: close_range takes integers; nothing of ours is open yet
        // but the standard streams and `keep`.
        if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOSYS) {
                return Err(step("closing inherited files", e));
            }
            log::warn!("close_range() not available: inherited files stay open");
        }
    }
    Ok(())
}

/// Makes the allocator take memory from the heap only (`brk`), never from
/// `mmap`, and never give it back: after start-up the heap grows at most,
/// and the filter needs neither `mmap` nor `munmap`. One arena for all
/// threads (a thread's own arena would be mapped).
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes integers; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Whether we are root in the initial user namespace.
pub(crate) fn root_in_init_userns() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => true,
    }
}

/// The user to switch to: `--runas`, else `nobody` for root in the initial
/// user namespace (with a warning, as upstream passt), else none.
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

/// The user and group `nobody` (the usual numbers; not looked up, as the
/// name service may not be there).
pub(crate) const NOBODY: (u32, u32) = (65534, 65534);

/// Stage 2: see the module documentation.
pub(crate) fn user(p: Profile, ids: Option<(u32, u32)>) -> io::Result<()> {
    let keep = user_caps(p);
    if let Some((uid, gid)) = ids {
        switch_user(uid, gid, keep)?;
    }
    caps::keep_only(keep).map_err(|e| step("capabilities", e))?;
    if !caps::has(cap::SYS_ADMIN) {
        // Unprivileged: a user namespace of our own gives what the next
        // stage needs, in that namespace only.
        // SAFETY: unshare takes flags; the process has a single thread.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } < 0 {
            return Err(os_err("creating a user namespace for the sandbox"));
        }
        caps::keep_only(keep).map_err(|e| step("capabilities", e))?;
    }
    Ok(())
}

/// Switches to `uid`/`gid` with no supplementary groups, keeping `keep`.
fn switch_user(uid: u32, gid: u32, keep: CapSet) -> io::Result<()> {
    if uid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "refusing to run as UID 0",
        ));
    }
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid == uid && egid == gid {
        return Ok(());
    }
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
        return Err(os_err("PR_SET_KEEPCAPS"));
    }
    // SAFETY: setgroups with no list; the others take integers.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(step("dropping supplementary groups", e));
            }
        }
        if libc::setresgid(gid, gid, gid) < 0 {
            return Err(os_err(&format!("switching to GID {gid}")));
        }
        if libc::setresuid(uid, uid, uid) < 0 {
            return Err(os_err(&format!("switching to UID {uid}")));
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    caps::raise_kept(keep).map_err(|e| step("capabilities", e))
}

/// Where the empty file system is mounted before it becomes the root.
const EMPTY_DIR: &CStr = c"/tmp";

fn mount(
    src: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    // SAFETY: valid C strings or null pointers, as mount(2) accepts.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), CStr::as_ptr),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Stage 3: see the module documentation. `foreground`: whether the process
/// stays in the foreground (no fork follows).
pub(crate) fn prefork(p: Profile, foreground: bool) -> io::Result<()> {
    let ctx = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| step(&format!("sandbox: {what}"), e)
    };
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // pasta in the foreground has no fork ahead to enter a PID namespace,
    // and its namespace worker, a thread, could not be created once one was
    // made for children (a thread must share its creator's PID namespace).
    if !(p == Profile::Pasta && foreground) {
        flags |= libc::CLONE_NEWPID;
    }
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(flags) } < 0 {
        return Err(ctx("new namespaces")(io::Error::last_os_error()));
    }
    mount(c"", c"/", None, libc::MS_UNBINDABLE | libc::MS_REC, None)
        .map_err(ctx("making / unbindable"))?;
    mount(
        c"",
        EMPTY_DIR,
        Some(c"tmpfs"),
        libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOSUID | libc::MS_RDONLY,
        Some(c"nr_inodes=2,nr_blocks=0"),
    )
    .map_err(ctx("mounting an empty tmpfs"))?;
    // SAFETY: valid C strings.
    unsafe {
        if libc::chdir(EMPTY_DIR.as_ptr()) < 0 {
            return Err(ctx("entering the empty tmpfs")(io::Error::last_os_error()));
        }
        let dot = c".";
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) < 0 {
            return Err(ctx("pivot_root")(io::Error::last_os_error()));
        }
        if libc::umount2(dot.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) < 0 {
            return Err(ctx("detaching the old root")(io::Error::last_os_error()));
        }
    }
    caps::clamp().map_err(ctx("capabilities"))?;
    caps::keep_only(prefork_caps(p)).map_err(ctx("capabilities"))?;
    Ok(())
}

/// The sandbox's last stage, prepared: install it with [`Seal::install`].
pub(crate) struct Seal {
    prog: seccompiler::BpfProgram,
}

/// Stage 4 up to the filter: see the module documentation. `guest_ns`:
/// pasta's guest namespace, for the worker. The filter itself is installed
/// by [`Seal::install`], the last thing before running (a daemon first
/// points its standard streams at `/dev/null`).
pub(crate) fn postfork(
    p: Profile,
    mismatch: seccomp::Mismatch,
    guest_ns: Option<&worker::GuestNs>,
) -> io::Result<Seal> {
    let ctx = |what: &'static str| move |e: io::Error| step(&format!("sandbox: {what}"), e);
    if let Some(g) = guest_ns {
        g.start_worker().map_err(ctx("namespace worker"))?;
    }
    caps::keep_only(running_caps(p)).map_err(ctx("capabilities"))?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 {
            return Err(ctx("PR_SET_DUMPABLE")(io::Error::last_os_error()));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(ctx("PR_SET_NO_NEW_PRIVS")(io::Error::last_os_error()));
        }
    }
    let prog = seccomp::compile(p, mismatch)?;
    Ok(Seal { prog })
}

impl Seal {
    /// Installs the seccomp filter on every thread.
    pub(crate) fn install(self) -> io::Result<()> {
        seccomp::install(&self.prog)
    }
}

/// Leaves the process with `code`, at once: the standard library's exit path
/// would unmap the signal stack, which the filter does not allow.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process; nothing needs to run before (log lines
    // and captures are written as they happen).
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child and returns its exit status (`f`'s value,
    /// or 101 if it panicked).
    fn in_child(f: impl FnOnce() -> i32) -> nix::sys::wait::WaitStatus {
        // SAFETY: the child runs `f` and leaves with _exit; glibc keeps the
        // allocator usable in the child of a multi-threaded parent.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // No signal handler may run in between: the filter tests
                // expect the call they make to be the one that kills.
                // SAFETY: a full set, blocked for the only thread.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigfillset(&mut set);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                }
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
                exit(code)
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap()
            }
        }
    }

    fn exited(code: i32) -> impl Fn(nix::sys::wait::WaitStatus) -> bool {
        move |st| matches!(st, nix::sys::wait::WaitStatus::Exited(_, c) if c == code)
    }

    /// Root switching to nobody keeps exactly the stage's capabilities.
    #[test]
    fn user_stage_keeps_listed_caps() {
        // SAFETY: geteuid cannot fail.
        assert_eq!(unsafe { libc::geteuid() }, 0, "tests run as root");
        let st = in_child(|| {
            if user(Profile::Pasta, Some(NOBODY)).is_err() {
                return 2;
            }
            // SAFETY: getresuid-like reads.
            let (u, g) = unsafe { (libc::geteuid(), libc::getegid()) };
            let c = caps::get().unwrap();
            if (u, g) != NOBODY {
                return 3;
            }
            if c.effective != user_caps(Profile::Pasta) || c.permitted != c.effective {
                return 4;
            }
            0
        });
        assert!(exited(0)(st), "{st:?}");
        // UID 0 is refused.
        let st = in_child(|| i32::from(user(Profile::Passt, Some((0, 0))).is_ok()));
        assert!(exited(0)(st), "{st:?}");
    }

    /// The stages in order, in a child: an empty read-only root, no
    /// capabilities in any set, not dumpable, no new privileges, the filter.
    #[test]
    fn stages_leave_nothing() {
        let st = in_child(|| {
            if user(Profile::Passt, Some(NOBODY)).is_err() {
                return 2;
            }
            if prefork(Profile::Passt, true).is_err() {
                return 3;
            }
            let entries = std::fs::read_dir("/").map(|d| d.count()).unwrap_or(99);
            if entries != 0 {
                return 4;
            }
            if std::fs::write("/x", b"x").is_ok() {
                return 5;
            }
            if caps::bounding() != 0 || caps::get().unwrap() != caps::Caps::default() {
                return 6;
            }
            let Ok(seal) = postfork(Profile::Passt, seccomp::Mismatch::Kill, None) else {
                return 7;
            };
            // SAFETY: prctl reads.
            let (dumpable, nnp) = unsafe {
                (
                    libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0),
                    libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
                )
            };
            if dumpable != 0 || nnp != 1 {
                return 8;
            }
            if seal.install().is_err() {
                return 9;
            }
            // SAFETY: prctl is not in the list: this must not return.
            unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
            10
        });
        assert_eq!(
            st,
            nix::sys::wait::WaitStatus::Signaled(
                st.pid().unwrap(),
                nix::sys::signal::SIGSYS,
                false
            )
        );
    }

    /// Unprivileged (no capabilities at all): the user stage creates a user
    /// namespace, in which the rest works.
    #[test]
    fn unprivileged_gets_a_user_namespace() {
        let st = in_child(|| {
            // SAFETY: plain id switches, dropping every capability.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setresgid(65534, 65534, 65534) < 0
                    || libc::setresuid(65534, 65534, 65534) < 0
                {
                    return 2;
                }
            }
            if caps::get().unwrap().effective != 0 {
                return 3;
            }
            if let Err(e) = user(Profile::Passt, None) {
                eprintln!("{e}");
                return 4;
            }
            if let Err(e) = prefork(Profile::Passt, true) {
                eprintln!("{e}");
                return 5;
            }
            i32::from(std::fs::read_dir("/").map(|d| d.count()).unwrap_or(99) != 0) * 6
        });
        assert!(exited(0)(st), "{st:?}");
    }
}
