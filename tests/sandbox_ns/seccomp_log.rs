//! The namespace suites again with `--seccomp-log`: every system call
//! the filter would have refused shows in the kernel log, which must
//! name none of passt's or pasta's.

use super::*;

// --- the log-mode run -------------------------------------------------------

/// New records of the kernel log (`/dev/kmsg`, from the moment of opening).
struct Kmsg(std::fs::File);

impl Kmsg {
    fn open() -> Kmsg {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("the kernel log (/dev/kmsg) must be readable to check the seccomp log");
        f.seek(SeekFrom::End(0)).expect("seek /dev/kmsg");
        Kmsg(f)
    }

    /// The records that came since the last call.
    fn read_new(&mut self) -> Vec<String> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                // Overwritten before we read it: go on with the next.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(_) => break,
            }
        }
        out
    }
}

/// One seccomp record (audit type 1326): (pid, exe, syscall, signal).
fn seccomp_record(r: &str) -> Option<(i32, String, i64, i32)> {
    if !r.contains("type=1326") {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        let i = r.find(&format!(" {k}="))? + k.len() + 2;
        let rest = &r[i..];
        let v = if let Some(q) = rest.strip_prefix('"') {
            q.split('"').next()?
        } else {
            rest.split_whitespace().next()?
        };
        Some(v.to_string())
    };
    Some((
        field("pid")?.parse().ok()?,
        field("exe")?,
        field("syscall")?.parse().ok()?,
        field("sig")?.parse().ok()?,
    ))
}

/// A forked child logs `getppid` through a one-rule filter: proves that
/// seccomp records reach the kernel log here and are parsed.
fn probe_log_reaches_kmsg(k: &mut Kmsg) {
    // nr == getppid → SECCOMP_RET_LOG, else allow.
    let filter = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_getppid as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_LOG,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: the child makes raw calls only and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: prctl with a filter that lives until _exit.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let ok = libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) == 0;
            libc::syscall(libc::SYS_getppid);
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut st = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "probe child"
    );
    let seen = eventually(5, || {
        k.read_new()
            .iter()
            .filter_map(|r| seccomp_record(r))
            .any(|(p, _, nr, sig)| p == pid && nr == libc::SYS_getppid && sig == 0)
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "a logged system call did not show up in /dev/kmsg: this kernel does not \
         log seccomp actions there (audit daemon running?)"
    );
}

/// The one test left out of the log-mode rerun: this one (it would start
/// itself again).
const LOG_MODE_SKIPS: &[&str] = &["seccomp_log_mode"];

/// The namespace suites again, every translator with `--seccomp-log`: the
/// kernel logs each system call outside the allowlist instead of killing
/// the process. Fails if it logged one of passt's or pasta's, naming them.
#[test]
fn seccomp_log_mode_over_the_namespace_suites() {
    if std::env::var_os(SECCOMP_LOG_ENV).is_some() {
        // The nested run itself: nothing to do here.
        return;
    }
    let ours = [built("passt"), built("pasta")];
    let mut k = Kmsg::open();
    probe_log_reaches_kmsg(&mut k);
    let exe = std::env::current_exe().expect("test executable");
    let release = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    // Every namespace suite: the tests named `ns` or `*_ns`.
    let toml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("tests/Cargo.toml");
    let suites: Vec<&str> = toml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n == "ns" || n.ends_with("_ns"))
        .collect();
    assert!(
        suites.contains(&"sandbox_ns") && suites.len() >= 4,
        "{suites:?}"
    );
    let mut c = Command::new(cargo);
    c.args([
        "test",
        "-q",
        "-p",
        "passt-tests",
        "--no-fail-fast",
        "--manifest-path",
    ])
    .arg(&manifest);
    for t in &suites {
        c.args(["--test", t]);
    }
    if release {
        c.arg("--release");
    }
    // Every test, the bulk and load ones included: back-pressure, descriptor
    // exhaustion and long transfers take paths of their own.
    c.arg("--");
    for skip in LOG_MODE_SKIPS {
        c.args(["--skip", skip]);
    }
    c.env(SECCOMP_LOG_ENV, "1");
    let start = Instant::now();
    let out = run_timeout(&mut c, 40 * 60);
    let mut bad: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in k.read_new() {
        let Some((pid, exe, nr, sig)) = seccomp_record(&r) else {
            continue;
        };
        if ours.iter().any(|o| Path::new(&exe) == o) && seen.insert((exe.clone(), nr, sig)) {
            bad.push(format!("{exe} (PID {pid}): system call {nr}, signal {sig}"));
        }
    }
    // The nested run's own failures are not this test's business (they are
    // the suites' own, in their normal run), but say so for the record.
    if !out.status.success() {
        eprintln!(
            "note: the log-mode run had failures ({:?}, {:?}):\n{}",
            out.status,
            start.elapsed(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("FAILED") || l.contains("panicked"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        bad.is_empty(),
        "system calls outside the allowlist (numbers for {}; add them to the list \
         of the module that makes them, see docs/security.md):\n{}",
        std::env::consts::ARCH,
        bad.join("\n")
    );
}
