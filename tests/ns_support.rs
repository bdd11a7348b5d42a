//! Helpers of the namespace tests: network namespaces made for one test and
//! removed after it, processes killed by the PID we started, the binaries
//! and the translators started from them.
//!
//! Every test gets a "host" namespace whose only uplink is a dummy interface
//! (or, on kernels without the dummy driver, a veth end named the same,
//! without ARP) (`dummy0`: 10.77.0.2/24 via 10.77.0.1, fd77::2/64 via fd77::1) and a fake
//! `resolv.conf` (`/etc/netns/NAME/resolv.conf`, which `ip netns exec` mounts
//! over `/etc/resolv.conf`). passt and pasta run inside it.
//!
//! The tests run as root (they make namespaces and links), the translators
//! as the unprivileged user `passt-test` ([`test_user`], [`Netns::user_cmd`])
//! unless a test is about root. Namespaces pasta joins belong to a user
//! namespace of that user ([`UserNetns`]), as a rootless container's do;
//! scratch directories belong to it too.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The host side of every test.
pub(crate) const HOST_IP4: &str = "10.77.0.2";
pub(crate) const GW_IP4: &str = "10.77.0.1";
pub(crate) const HOST_IP6: &str = "fd77::2";
pub(crate) const GW_IP6: &str = "fd77::1";
pub(crate) const DNS4: &str = "10.77.0.53";
pub(crate) const SEARCH: &str = "example.org";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Set in the environment of the log-mode run of the namespace suites
/// (tests/sandbox_ns.rs): [`bin`] then returns wrappers that add
/// `--seccomp-log`, so that system calls outside the allowlist are logged by
/// the kernel instead of killing the translator.
pub(crate) const SECCOMP_LOG_ENV: &str = "PASST_RS_SECCOMP_LOG";

/// A `passt` or `pasta` binary, built once per test run (or, with
/// [`SECCOMP_LOG_ENV`] set, a wrapper running it with `--seccomp-log`).
pub(crate) fn bin(name: &str) -> PathBuf {
    let real = built(name);
    if std::env::var_os(SECCOMP_LOG_ENV).is_none() {
        return real;
    }
    let dir = real.parent().expect("target directory").join("seccomp-log");
    std::fs::create_dir_all(&dir).expect("wrapper directory");
    let path = dir.join(name);
    // Written to a temporary name and renamed: tests and test binaries run
    // at once.
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}", std::process::id()));
    std::fs::write(
        &tmp,
        format!(
            "#!/bin/sh\nexec '{}' --seccomp-log \"$@\"\n",
            real.display()
        ),
    )
    .expect("wrapper");
    let _ = Command::new("chmod").arg("755").arg(&tmp).status();
    std::fs::rename(&tmp, &path).expect("wrapper");
    path
}

/// [`bin`] of pasta and of passt.
pub(crate) fn pasta() -> PathBuf {
    bin("pasta")
}

pub(crate) fn passt() -> PathBuf {
    bin("passt")
}

/// The options that turn every port forward off.
pub(crate) const NO_FORWARDS: [&str; 8] = ["-t", "none", "-u", "none", "-T", "none", "-U", "none"];

/// A path as a command-line argument.
pub(crate) fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The binary itself, built once per test run.
pub(crate) fn built(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/ns-HASH → target/<profile>
        let exe = std::env::current_exe().expect("test executable");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target directory")
            .to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut c = Command::new(cargo);
        c.args([
            "build",
            "-q",
            "-p",
            "passt-driver-epoll",
            "--bins",
            "--manifest-path",
        ])
        .arg(&manifest);
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("cargo build");
        assert!(st.success(), "building passt and pasta failed");
        reachable_by_test_user(&dir)
    });
    dir.join(name)
}

/// `dir` if the test user can run the binaries in it (every directory on
/// the way open to others, as in a checkout under /work or /home), else a
/// copy of them in a temporary directory of this test process (a checkout
/// under /root, say), removed when the process exits.
fn reachable_by_test_user(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let open = dir
        .ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if open {
        return dir.to_path_buf();
    }
    let copy = std::env::temp_dir().join(format!("prs-bin-{}", std::process::id()));
    std::fs::create_dir_all(&copy).expect("binary directory");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for b in ["passt", "pasta"] {
        std::fs::copy(dir.join(b), copy.join(b)).expect("copying the binaries");
    }
    let _ = BIN_COPY.set(copy.clone());
    extern "C" fn remove_copy() {
        if let Some(p) = BIN_COPY.get() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    // SAFETY: registering a function without arguments to run at exit.
    unsafe { libc::atexit(remove_copy) };
    copy
}

static BIN_COPY: OnceLock<PathBuf> = OnceLock::new();

/// Runs `cmd` to completion, killing it after `secs` seconds.
pub(crate) fn run_timeout(cmd: &mut Command, secs: u64) -> Output {
    let desc = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{desc}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // The PID is ours and not yet reaped (the waiting thread still
            // holds it), so it cannot have been reused.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv_timeout(Duration::from_secs(5));
            panic!("{desc}: timed out after {secs} s; output so far: {out:?}");
        }
    }
}

/// Output of a command that must succeed, as text.
pub(crate) fn ok_text(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed ({:?}): stdout {s}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

fn sh(cmd: &str) {
    let out = run_timeout(Command::new("sh").args(["-ec", cmd]), 20);
    ok_text(&out);
}

/// A network namespace made for one test; deleted on drop, along with its
/// `/etc/netns` directory.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn new(tag: &str) -> Netns {
        assert!(
            nix_is_root(),
            "the namespace tests need root (tests/run.sh runs them as root)"
        );
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("prs-{tag}-{}-{n}", std::process::id());
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns { name }
    }

    /// A name for the network namespace of process `pid` (`ip netns
    /// attach`), such as the one pasta made for its command, so that root's
    /// helpers reach it; dropping it removes the name only.
    pub(crate) fn attach(tag: &str, pid: u32) -> Netns {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("prs-{tag}-{}-{n}", std::process::id());
        sh(&format!("ip netns attach {name} {pid}"));
        Netns { name }
    }

    /// The test's host: a dummy uplink with addresses and default routes, and
    /// a resolv.conf.
    pub(crate) fn host(tag: &str) -> Netns {
        let ns = Netns::new(tag);
        let n = &ns.name;
        // A dummy interface where the kernel has the driver, else one end of
        // a veth pair whose other end stays, unaddressed, in the same
        // namespace. Like a dummy, that end resolves no neighbours (`arp
        // off`): what is routed out is gone without an answer, and no
        // neighbour resolution fails seconds later and ends the connections
        // waiting on it.
        sh(&format!(
            "ip -n {n} link add dummy0 type dummy 2>/dev/null ||
               {{ ip -n {n} link add dummy0 type veth peer name uplink0;
                  ip -n {n} link set dummy0 arp off;
                  ip -n {n} link set uplink0 up; }}
             ip -n {n} link set dummy0 up
             ip -n {n} addr add {HOST_IP4}/24 dev dummy0
             ip -n {n} addr add {HOST_IP6}/64 dev dummy0 nodad
             ip -n {n} route add default via {GW_IP4} dev dummy0
             ip -n {n} -6 route add default via {GW_IP6} dev dummy0"
        ));
        ns.resolv(&format!("nameserver {DNS4}\nsearch {SEARCH}\n"));
        ns
    }

    /// Writes this namespace's resolv.conf (mounted by `ip netns exec`).
    pub(crate) fn resolv(&self, text: &str) {
        let d = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&d).expect("/etc/netns");
        std::fs::write(d.join("resolv.conf"), text).expect("resolv.conf");
    }

    /// `ip netns exec NAME args...`
    pub(crate) fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs a command in the namespace, bounded in time.
    pub(crate) fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], secs: u64) -> Output {
        run_timeout(&mut self.cmd(args), secs)
    }

    /// `ip netns exec NAME setpriv ... args...`: `args` as the test user.
    pub(crate) fn user_cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = self.cmd(&as_test_user());
        c.args(args);
        c
    }

    /// Starts a translator in the namespace and returns once it is ready:
    /// `prefix BIN -P PIDF ARGS...` (`prefix`: [`as_test_user`], or a user
    /// namespace's `inside()`), its output to `log`. passt writes its PID
    /// file once its socket listens, pasta once the namespace is configured.
    pub(crate) fn start_ready(
        &self,
        prefix: Vec<String>,
        bin: &Path,
        pidf: &Path,
        log: PathBuf,
        args: &[&str],
    ) -> Proc {
        let mut v = prefix;
        v.extend([
            bin.display().to_string(),
            "-P".into(),
            pidf.display().to_string(),
        ]);
        v.extend(args.iter().map(|a| a.to_string()));
        let what = bin
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut p = Proc::spawn(self.cmd(&v), &what, log);
        wait_file(pidf, 20, &mut p);
        p
    }

    /// pasta with `args`, started with [`Netns::start_ready`] behind
    /// `prefix`: its PID file `pasta.pid` and its output `pasta.log` in
    /// `dir`.
    pub(crate) fn start_pasta(&self, prefix: Vec<String>, dir: &Scratch, args: &[&str]) -> Proc {
        let (pidf, log) = (dir.join("pasta.pid"), dir.join("pasta.log"));
        self.start_ready(prefix, &pasta(), &pidf, log, args)
    }

    /// pasta in the foreground, joining `g` by name from inside its user
    /// namespace (as Podman does), with [`Netns::start_pasta`].
    pub(crate) fn pasta_joining(&self, g: &UserNetns, dir: &Scratch) -> Proc {
        self.start_pasta(g.inside(), dir, &["-f", "--netns", &g.name])
    }

    /// passt as the test user, `passt -f -s SOCK -P PIDF EXTRA...`, started
    /// with [`Netns::start_ready`]: its socket listens when this returns.
    pub(crate) fn start_passt(
        &self,
        sock: &Path,
        pidf: &Path,
        log: PathBuf,
        extra: &[&str],
    ) -> Proc {
        let sock = sock.display().to_string();
        let mut args = vec!["-f", "-s", &sock];
        args.extend(extra);
        self.start_ready(as_test_user(), &bin("passt"), pidf, log, &args)
    }

    /// Runs a command in the namespace as the test user, bounded in time.
    pub(crate) fn user_run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], secs: u64) -> Output {
        run_timeout(&mut self.user_cmd(args), secs)
    }

    /// `pasta OPTS -- CMD...` in the namespace as the test user (see
    /// [`Self::user_run`]).
    pub(crate) fn user_pasta(&self, opts: &[&str], cmd: &[&str], secs: u64) -> Output {
        let mut args = vec![s(&pasta())];
        args.extend(opts.iter().map(|o| o.to_string()));
        args.push("--".into());
        args.extend(cmd.iter().map(|c| c.to_string()));
        self.user_run(&args, secs)
    }

    /// Runs a shell command in the namespace; it must succeed.
    pub(crate) fn sh(&self, script: &str) -> String {
        ok_text(&self.run(&["sh", "-ec", script], 30))
    }

    pub(crate) fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// A network namespace owned by a user namespace of the test user, as a
/// rootless container's is (rootlesskit, Podman): a holder process started
/// as the test user (`unshare --user --map-root-user --net sleep`) keeps
/// both, and `ip netns attach` gives the network namespace a name, so that
/// the tests' root-side helpers (`ip netns exec`, `setns()` on
/// [`Netns::path`]) reach it. Dereferences to that [`Netns`].
pub(crate) struct UserNetns {
    pub(crate) ns: Netns,
    holder: Child,
}

impl UserNetns {
    pub(crate) fn new(tag: &str) -> UserNetns {
        assert!(nix_is_root(), "the namespace tests need root");
        let (uid, _) = test_user();
        let mut c = Command::new("setpriv");
        c.args(&as_test_user()[1..])
            .args(["unshare", "--user", "--map-root-user", "--net", "--"])
            .args(["sleep", "3600"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut holder = c
            .spawn()
            .expect("holder of the user and network namespaces");
        let pid = holder.id();
        let ours = std::fs::read_link("/proc/self/ns/user").expect("user namespace");
        // Ready once unshare has written the ID map and executed sleep.
        let ready = eventually(10, || {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()?;
            let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (theirs != ours
                && map.split_whitespace().take(2).eq(["0", &uid.to_string()])
                && comm.trim() == "sleep")
                .then_some(())
        });
        if ready.is_none() {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("the namespace holder (PID {pid}) did not come up");
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("prs-{tag}-{}-{n}", std::process::id());
        sh(&format!("ip netns attach {name} {pid}"));
        let ns = Netns { name };
        sh(&format!("ip -n {} link set lo up", ns.name));
        UserNetns { ns, holder }
    }

    /// PID of the holder (pasta's `PID` argument, rootlesskit style).
    pub(crate) fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// The user namespace owning the network namespace (`--userns`).
    pub(crate) fn userns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/user", self.pid()))
    }

    /// The arguments that make the rest of a command line run as the test
    /// user inside the user namespace, as root there (as Podman runs pasta):
    /// `setpriv ... nsenter --user=... --preserve-credentials --`. The test
    /// user's ID maps to 0 there, so its credentials stay as they are.
    pub(crate) fn inside(&self) -> Vec<String> {
        let mut v = as_test_user();
        v.extend([
            "nsenter".into(),
            format!("--user={}", self.userns_path().display()),
            "--preserve-credentials".into(),
            "--".into(),
        ]);
        v
    }
}

impl std::ops::Deref for UserNetns {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

impl Drop for UserNetns {
    fn drop(&mut self) {
        // The PID is our child's and not reaped yet: it cannot be reused.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Name of the unprivileged user translators run as in the namespace tests.
pub(crate) const TEST_USER: &str = "passt-test";

/// The unprivileged test user's uid and gid, creating the user on first use
/// (`useradd --system`), and `/dev/net/tun` opened up to everybody (mode 0666)
/// as distributions ship it.
pub(crate) fn test_user() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let id = |flag: &str| {
            Command::new("id")
                .args([flag, TEST_USER])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse::<u32>()
                        .ok()
                })
        };
        if id("-u").is_none() {
            // Concurrent test binaries may race to create it: only the
            // outcome matters.
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(TEST_USER)
                .stderr(Stdio::null())
                .status();
        }
        let uid = id("-u").unwrap_or_else(|| panic!("could not create user {TEST_USER}"));
        let gid = id("-g").unwrap_or_else(|| panic!("no group for user {TEST_USER}"));
        sh("chmod 0666 /dev/net/tun");
        (uid, gid)
    })
}

/// The arguments that make the rest of a command line run as the test user
/// (after `ip netns exec NAME`, say): `setpriv` with its uid, gid and no
/// supplementary groups.
pub(crate) fn as_test_user() -> Vec<String> {
    let (uid, gid) = test_user();
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        "--".into(),
    ]
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A process we started; killed (by its PID) and reaped on drop. Its
/// standard output and error go to a log file.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) what: String,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, what: &str, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Proc {
            child,
            what: what.into(),
            log,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the process already exited.
    pub(crate) fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited early ({st}): {}", self.what, self.output());
        }
    }

    /// Waits for the process to exit (bounded), returning its status.
    pub(crate) fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "{} did not exit: {}",
                self.what,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Proc {
    /// Spawns `cmd` and returns once it wrote `ready` (a server listening).
    pub(crate) fn spawn_ready(cmd: Command, what: &str, log: PathBuf, ready: &Path) -> Proc {
        let mut p = Proc::spawn(cmd, what, log);
        wait_file(ready, 20, &mut p);
        p
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `path` exists and is not empty (a PID file: "ready").
pub(crate) fn wait_file(path: &Path, secs: u64, p: &mut Proc) {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return;
        }
        p.assert_running();
        assert!(
            Instant::now() < end,
            "{} not ready: {} missing",
            p.what,
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a passt test starts: a host namespace and a scratch directory,
/// both named after `tag`, and the paths of passt's socket and PID file in
/// that directory.
pub(crate) fn passt_host(tag: &str) -> (Netns, Scratch, PathBuf, PathBuf) {
    let h = Netns::host(tag);
    let dir = Scratch::new(tag);
    let (sock, pidf) = (dir.join("passt.socket"), dir.join("passt.pid"));
    (h, dir, sock, pidf)
}

/// The PID a translator wrote to its PID file.
pub(crate) fn read_pid(pidf: &Path) -> u32 {
    std::fs::read_to_string(pidf)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PID in {}", pidf.display()))
}

/// Whether process `pid` is gone, or a zombie nobody reaped yet.
pub(crate) fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
        st.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
    })
}

/// Sends SIGTERM to process `pid` (one we started); whether `kill` did.
pub(crate) fn sigterm(pid: u32) -> bool {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Asserts that process `pid` is gone within `secs` seconds; `what` says
/// what should have ended it.
pub(crate) fn assert_ends(pid: u32, secs: u64, what: &str) {
    assert!(
        eventually(secs, || gone(pid).then_some(())).is_some(),
        "{what}"
    );
}

/// Polls `f` until it returns `Some`, at most `secs` seconds.
pub(crate) fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scratch directory for one test, removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("prs-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("scratch dir");
        // Owned by the test user, who writes PID files, captures and logs
        // there; root writes there anyway.
        let (uid, gid) = test_user();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown scratch dir");
        Scratch(p)
    }

    pub(crate) fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    /// Writes the script `name` with `text` here, once; its path.
    pub(crate) fn script(&self, name: &str, text: &str) -> String {
        let p = self.join(name);
        if !p.exists() {
            std::fs::write(&p, text).expect("script");
        }
        s(&p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A udhcpc script that records the variables of the lease.
pub(crate) fn udhcpc_script(dir: &Scratch) -> (PathBuf, PathBuf) {
    let script = dir.join("udhcpc.sh");
    let out = dir.join("lease.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew) env > {}.tmp && mv {}.tmp {} ;; esac\nexit 0\n",
            out.display(),
            out.display(),
            out.display()
        ),
    )
    .expect("script");
    let _ = Command::new("chmod").arg("755").arg(&script).status();
    (script, out)
}

/// A udhcpc script that applies the lease (the address, the default route
/// and, with `mtu`, the MTU) and records its variables in `lease.env`,
/// removed first; the script's path and the record's.
pub(crate) fn udhcpc_apply_script(dir: &Scratch, mtu: bool) -> (PathBuf, PathBuf) {
    let script = dir.join("udhcpc-apply.sh");
    let lease = dir.join("lease.env");
    let _ = std::fs::remove_file(&lease);
    let set_mtu = if mtu {
        "  [ -n \"$mtu\" ] && ip link set \"$interface\" mtu \"$mtu\"\n"
    } else {
        ""
    };
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew)\n  env > {l}\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n{set_mtu}  ip route add default via \"$router\" dev \"$interface\" ;;\nesac\nexit 0\n",
            l = lease.display()
        ),
    )
    .expect("script");
    let _ = Command::new("chmod").arg("755").arg(&script).status();
    (script, lease)
}

/// busybox udhcpc, once, on `ifname` in `ns` (five tries a second apart),
/// asking for the options `opts` and running `script` on the lease.
pub(crate) fn run_udhcpc(ns: &Netns, ifname: &str, opts: &[&str], script: &Path) -> Output {
    let script = script.display().to_string();
    let mut args = vec![
        "busybox", "udhcpc", "-i", ifname, "-f", "-q", "-n", "-t", "5", "-T", "1",
    ];
    for o in opts {
        args.extend(["-O", o]);
    }
    args.extend(["-s", &script]);
    ns.run(&args, 30)
}

/// Parses `KEY=VALUE` lines.
pub(crate) fn env_value(env: &str, key: &str) -> Option<String> {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
}

/// Runs jq over `json` with `filter` (raw output).
pub(crate) fn jq(json: &str, filter: &str) -> String {
    let mut c = Command::new("jq")
        .args(["-r", filter])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jq (tests/run.sh installs it)");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(json.as_bytes())
        .expect("jq input");
    let out = c.wait_with_output().expect("jq");
    assert!(out.status.success(), "jq {filter} on {json}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
