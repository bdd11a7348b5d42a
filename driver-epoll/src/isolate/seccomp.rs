//! The seccomp filter: one allowlist per mode, merged from lists kept next
//! to the code that makes each call.
//!
//! Every module whose code runs after start-up declares the system calls it
//! makes there, as `pub(crate) const SYSCALLS: &[Syscall] = syscalls![...]`
//! with a comment saying which code needs each one. [`super::sources`] names
//! the lists each mode is made of; [`merged`] joins them (a call listed by
//! several modules appears once, with the union of what they allow);
//! [`compile`] turns the result into a BPF program with `seccompiler`:
//! listed calls pass, anything else kills the process — or, with
//! `--seccomp-log`, is let through and logged by the kernel (audit type
//! 1326, in the kernel log when no audit daemon runs).
//!
//! A list may restrict one argument to a set of values:
//! `SYS_ioctl[1: SIOCOUTQ]` allows `ioctl` with request `SIOCOUTQ` only. The
//! comparison is on the argument's low 32 bits (both restricted arguments,
//! a socket's family and an ioctl request, are 32-bit in the kernel).
//!
//! The published lists (docs/security.md) are rendered from the same data
//! by [`render_docs`] and checked by a test, so they cannot drift.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io;

/// One allowed system call, as a module lists it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Syscall {
    /// Its number on the build target.
    pub(crate) nr: libc::c_long,
    /// `SYS_name`, as written in the list.
    pub(crate) name: &'static str,
    /// `Some((index, values))`: only with argument `index` equal to one of
    /// `values` (value, name).
    pub(crate) only: Option<(u8, &'static [(u64, &'static str)])>,
}

impl Syscall {
    /// The call's name without the `SYS_` prefix.
    pub(crate) fn short_name(&self) -> &'static str {
        self.name.strip_prefix("SYS_").unwrap_or(self.name)
    }
}

/// A list of allowed system calls: `syscalls![SYS_read, SYS_ioctl[1: SIOCOUTQ]]`.
/// Argument values are paths to integer constants; an entry may carry
/// `#[cfg(...)]` (calls that differ between architectures).
macro_rules! syscalls {
    ($($(#[$m:meta])* $name:ident $([$arg:literal : $($v:path),+ $(,)?])?),* $(,)?) => {
        &[$($(#[$m])* $crate::isolate::seccomp::Syscall {
            nr: libc::$name,
            name: stringify!($name),
            only: $crate::isolate::seccomp::syscalls!(@only $([$arg : $($v),+])?),
        }),*]
    };
    (@only) => { None };
    (@only [$arg:literal : $($v:path),+]) => {
        Some(($arg, &[$(($v as u64, stringify!($v))),+]))
    };
}
pub(crate) use syscalls;

/// The filter's profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// passt: qemu's stream socket.
    Passt,
    /// passt `--vhost-user`: the vhost-user socket and guest memory, which
    /// is mapped while running (each memory table the front-end sends).
    VhostUser,
    /// pasta: a tap device in a namespace.
    Pasta,
}

impl Profile {
    #[cfg(test)]
    pub(crate) const ALL: [Profile; 3] = [Profile::Passt, Profile::VhostUser, Profile::Pasta];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Passt => "passt",
            Profile::VhostUser => "passt --vhost-user",
            Profile::Pasta => "pasta",
        }
    }

    #[cfg(test)]
    /// Upstream passt's count for the same mode (x86_64, seccomp.sh): ours
    /// stays at or below it.
    pub(crate) fn upstream_count(self) -> usize {
        match self {
            Profile::Passt => 31,
            Profile::VhostUser => 33,
            Profile::Pasta => 42,
        }
    }
}

/// What a merged entry allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// Any arguments.
    Any,
    /// Argument `index` equal to one of these values (value → name).
    Arg(u8, BTreeMap<u64, &'static str>),
}

/// One system call of a profile, with the modules that need it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) nr: libc::c_long,
    pub(crate) allowed: Allowed,
    pub(crate) modules: BTreeSet<&'static str>,
}

/// The profile's system calls, by name. A call one module allows with any
/// arguments is allowed with any; argument sets of the same index are
/// joined.
pub(crate) fn merged(p: Profile) -> io::Result<BTreeMap<&'static str, Entry>> {
    let mut out: BTreeMap<&'static str, Entry> = BTreeMap::new();
    for (module, list) in super::sources(p) {
        for s in list.iter() {
            let e = out.entry(s.short_name()).or_insert_with(|| Entry {
                nr: s.nr,
                allowed: match s.only {
                    None => Allowed::Any,
                    Some((i, _)) => Allowed::Arg(i, BTreeMap::new()),
                },
                modules: BTreeSet::new(),
            });
            e.modules.insert(module);
            match (&mut e.allowed, s.only) {
                (Allowed::Any, _) => {}
                (a @ Allowed::Arg(..), None) => *a = Allowed::Any,
                (Allowed::Arg(i, vals), Some((j, v))) if *i == j => {
                    for &(val, name) in v {
                        let name = name.rsplit("::").next().unwrap_or(name).trim();
                        vals.insert(val, name);
                    }
                }
                (Allowed::Arg(..), Some(_)) => {
                    return Err(io::Error::other(format!(
                        "seccomp: {} restricted on different arguments",
                        s.name
                    )))
                }
            }
        }
    }
    Ok(out)
}

/// What happens to a call that is not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// Kill the process (the default).
    Kill,
    /// Let it through and have the kernel log it (`--seccomp-log`).
    Log,
}

fn arch() -> io::Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("seccomp: no filter for {}", std::env::consts::ARCH),
        )
    })
}

/// The BPF program of a profile.
pub(crate) fn compile(p: Profile, mismatch: Mismatch) -> io::Result<BpfProgram> {
    let err =
        |e: seccompiler::BackendError| io::Error::other(format!("seccomp ({}): {e}", p.name()));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for e in merged(p)?.values() {
        let r = match &e.allowed {
            Allowed::Any => Vec::new(),
            Allowed::Arg(i, vals) => vals
                .keys()
                .map(|&v| {
                    let c =
                        SeccompCondition::new(*i, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?;
                    SeccompRule::new(vec![c])
                })
                .collect::<Result<_, _>>()
                .map_err(err)?,
        };
        rules.insert(e.nr, r);
    }
    let action = match mismatch {
        Mismatch::Kill => SeccompAction::KillProcess,
        Mismatch::Log => SeccompAction::Log,
    };
    let filter = SeccompFilter::new(rules, action, SeccompAction::Allow, arch()?).map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

/// Installs `prog` on every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`);
/// sets `PR_SET_NO_NEW_PRIVS` first, as the kernel requires.
pub(crate) fn install(prog: &BpfProgram) -> io::Result<()> {
    let what = "installing the seccomp filter";
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(super::step(what, io::Error::last_os_error()));
    }
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| io::Error::other("seccomp: filter too long"))?,
        // seccompiler's sock_filter has the kernel's layout, as libc's.
        filter: prog.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: the kernel copies the program, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog,
        )
    };
    match r {
        0 => Ok(()),
        r if r > 0 => Err(io::Error::other(format!(
            "{what}: thread {r} could not take it"
        ))),
        _ => Err(super::step(what, io::Error::last_os_error())),
    }
}

/// Markers around the generated part of docs/security.md.
#[cfg(test)]
pub(crate) const DOCS_BEGIN: &str = "<!-- syscall lists: generated, see isolate/seccomp.rs -->";
#[cfg(test)]
pub(crate) const DOCS_END: &str = "<!-- end of syscall lists -->";

/// The lists as published in docs/security.md (between the markers).
#[cfg(test)]
pub(crate) fn render_docs() -> io::Result<String> {
    let mut s = String::new();
    for p in Profile::ALL {
        let m = merged(p)?;
        s.push_str(&format!(
            "\n#### {} ({} system calls on {}; upstream passt: {})\n\n",
            p.name(),
            m.len(),
            std::env::consts::ARCH,
            p.upstream_count()
        ));
        s.push_str("| system call | arguments | listed by |\n|---|---|---|\n");
        for (name, e) in &m {
            let args = match &e.allowed {
                Allowed::Any => "any".to_string(),
                Allowed::Arg(i, vals) => format!(
                    "arg {i} one of {}",
                    vals.values().copied().collect::<Vec<_>>().join(", ")
                ),
            };
            let mods = e.modules.iter().copied().collect::<Vec<_>>().join(", ");
            s.push_str(&format!("| `{name}` | {args} | {mods} |\n"));
        }
    }
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child: no signal handler may run once the filter is on
    /// (the verdict must be on the call under test).
    fn block_signals() {
        // SAFETY: a full set, blocked for the only thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }

    /// Runs `body` in a forked child under `prog` (signals blocked first)
    /// and returns the child's id and how it ended: the exit code `body`
    /// returns, 3 if the filter did not install, or a signal.
    fn in_filtered_child(
        prog: &BpfProgram,
        body: impl FnOnce() -> i32,
    ) -> (nix::unistd::Pid, nix::sys::wait::WaitStatus) {
        // SAFETY: the child makes raw calls only and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                block_signals();
                if install(prog).is_err() {
                    // SAFETY: leaving the child.
                    unsafe { libc::_exit(3) };
                }
                let code = body();
                // SAFETY: leaving the child.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                (child, nix::sys::wait::waitpid(child, None).unwrap())
            }
        }
    }

    #[test]
    fn every_profile_compiles_within_upstream_count() {
        for p in Profile::ALL {
            let m = merged(p).unwrap();
            assert!(
                m.len() <= p.upstream_count(),
                "{}: {} system calls, upstream has {}",
                p.name(),
                m.len(),
                p.upstream_count()
            );
            for mode in [Mismatch::Kill, Mismatch::Log] {
                let prog = compile(p, mode).unwrap();
                assert!(!prog.is_empty() && prog.len() < 4096);
            }
        }
    }

    #[test]
    fn nothing_that_opens_files_or_runs_programs() {
        for p in Profile::ALL {
            let m = merged(p).unwrap();
            for banned in [
                "open",
                "openat",
                "execve",
                "execveat",
                "ptrace",
                "mount",
                "chdir",
                "unlink",
                "unlinkat",
                "mmap",
                "munmap",
                "mprotect",
                "clone",
                "clone3",
                "fork",
                "setns",
                "unshare",
                "prctl",
                "seccomp",
                "capset",
                "kill",
                "process_vm_writev",
            ] {
                // Guest memory is mapped read-write (never executable) as
                // the vhost-user front-end sends it.
                if p == Profile::VhostUser && banned == "munmap" {
                    continue;
                }
                if p == Profile::VhostUser && banned == "mmap" {
                    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
                    let Allowed::Arg(2, v) = &m["mmap"].allowed else {
                        panic!("mmap allowed with any protection");
                    };
                    assert_eq!(v.keys().copied().collect::<Vec<_>>(), vec![prot]);
                    continue;
                }
                assert!(!m.contains_key(banned), "{}: {banned}", p.name());
            }
        }
    }

    #[test]
    fn socket_is_limited_to_inet_families() {
        for p in Profile::ALL {
            let m = merged(p).unwrap();
            let e = &m["socket"];
            let Allowed::Arg(0, vals) = &e.allowed else {
                panic!("{}: socket allowed with any family", p.name());
            };
            let fams: Vec<u64> = vals.keys().copied().collect();
            assert_eq!(fams, vec![libc::AF_INET as u64, libc::AF_INET6 as u64]);
        }
    }

    /// A forked child with the filter on: a listed call works, an unlisted
    /// one (`getppid`) kills it with SIGSYS.
    #[test]
    fn unlisted_call_kills() {
        let prog = compile(Profile::Passt, Mismatch::Kill).unwrap();
        let (child, st) = in_filtered_child(&prog, || {
            // SAFETY: write(2) of a static buffer to /dev/null-like fd -1
            // fails with EBADF: allowed, returns.
            unsafe { libc::write(-1, b"x".as_ptr().cast(), 1) };
            // SAFETY: getppid takes no arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
            0 // not reached
        });
        assert_eq!(
            st,
            nix::sys::wait::WaitStatus::Signaled(child, nix::sys::signal::SIGSYS, false),
            "{st:?}"
        );
    }

    /// The same in log mode: the call goes through.
    #[test]
    fn log_mode_lets_unlisted_calls_through() {
        let prog = compile(Profile::Pasta, Mismatch::Log).unwrap();
        let (child, st) = in_filtered_child(&prog, || {
            // SAFETY: getppid takes no arguments.
            let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
            if ppid > 0 {
                0
            } else {
                4
            }
        });
        assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
    }

    /// An argument restriction holds: `socket(AF_INET)` works, `socket(AF_UNIX)`
    /// kills.
    #[test]
    fn argument_restriction_kills() {
        let prog = compile(Profile::Passt, Mismatch::Kill).unwrap();
        for (family, killed) in [(libc::AF_INET, false), (libc::AF_UNIX, true)] {
            let (child, st) = in_filtered_child(&prog, || {
                // SAFETY: socket takes integers.
                let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM, 0) };
                if fd >= 0 {
                    0
                } else {
                    5
                }
            });
            let want = if killed {
                nix::sys::wait::WaitStatus::Signaled(child, nix::sys::signal::SIGSYS, false)
            } else {
                nix::sys::wait::WaitStatus::Exited(child, 0)
            };
            assert_eq!(st, want, "family {family}");
        }
    }

    /// docs/security.md publishes exactly these lists. After changing a
    /// list, `PASST_RS_UPDATE_DOCS=1 cargo test -p passt-driver-epoll
    /// docs_publish` rewrites the section.
    #[test]
    fn docs_publish_the_lists() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md");
        let doc = std::fs::read_to_string(&path).expect("docs/security.md");
        let want = render_docs().unwrap();
        let (Some(b), Some(e)) = (doc.find(DOCS_BEGIN), doc.find(DOCS_END)) else {
            panic!("docs/security.md lacks the markers {DOCS_BEGIN} / {DOCS_END}");
        };
        let have = &doc[b + DOCS_BEGIN.len()..e];
        if have != want {
            if std::env::var_os("PASST_RS_UPDATE_DOCS").is_some() {
                let new = format!("{}{DOCS_BEGIN}{want}{}", &doc[..b], &doc[e..]);
                std::fs::write(&path, new).unwrap();
                return;
            }
            panic!(
                "docs/security.md is out of date; run with PASST_RS_UPDATE_DOCS=1 to rewrite it. \
                 Expected:\n{want}"
            );
        }
    }
}
