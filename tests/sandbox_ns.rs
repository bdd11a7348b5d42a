//! The sandbox of the `passt` and `pasta` binaries, seen from outside (run
//! as root; translators as root or as the unprivileged test user).
//!
//! What a running translator holds is read from `/proc/PID`: the seccomp
//! mode, no new privileges, the capability sets, the user, its root
//! directory (an empty read-only tmpfs), its descriptors. Output files that
//! are symbolic links are refused; `--runas 0` is refused; pasta daemonised
//! on a namespace file (as Podman runs it) quits when the namespace goes.
//!
//! The last test runs the namespace suites (`ns`, `*_ns`) again with the
//! filter in log mode (`--seccomp-log`, see `ns_support::SECCOMP_LOG_ENV`) and fails if
//! the kernel logged any system call of passt or pasta outside the
//! allowlist.

mod ns_support;
mod relay_support;
#[path = "sandbox_ns/seccomp_log.rs"]
mod seccomp_log;

use ns_support::*;
use relay_support::*;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The fields of `/proc/PID/status` (or of a thread's).
fn status_of(path: &str) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn status(pid: i32) -> HashMap<String, String> {
    status_of(&format!("/proc/{pid}/status"))
}

/// Waits until the process runs under its filter (the PID file of a
/// foreground process may come before), then returns its status.
fn sandboxed_status(pid: i32) -> HashMap<String, String> {
    eventually(10, || {
        let st = status(pid);
        (st.get("Seccomp").map(String::as_str) == Some("2")).then_some(st)
    })
    .unwrap_or_else(|| panic!("PID {pid} never got its filter: {:?}", status(pid)))
}

/// A daemon we started (through a parent that exited): killed by its PID
/// on drop.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        if !gone(self.0 as u32) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

/// Runs `args` in `h` (a translator that goes to the background, perhaps
/// behind a shell or `runuser`) and takes the daemon whose PID it wrote to
/// `pidf`.
fn daemon<S: AsRef<std::ffi::OsStr>>(h: &Netns, args: &[S], pidf: &Path) -> Daemon {
    let out = h.run(args, 30);
    assert!(out.status.success(), "{out:?}");
    Daemon(read_pid(pidf) as i32)
}

/// `BIN ARGS...` as the test user.
fn as_user(bin_name: &str, args: &[&str]) -> Vec<String> {
    let mut v = as_test_user();
    v.push(s(&bin(bin_name)));
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// pasta running `sleep 60` in a namespace it configures, behind `prefix`,
/// its PID file `pidf`, its output `pasta.log` in `dir`.
fn pasta_sleeping(h: &Netns, prefix: Vec<String>, dir: &Scratch, pidf: &Path) -> Proc {
    let mut args = prefix;
    args.push(s(&bin("pasta")));
    let opts = ["--config-net", "-P", &s(pidf), "--", "sleep", "60"];
    args.extend(opts.map(String::from));
    Proc::spawn(h.cmd(&args), "pasta", dir.join("pasta.log"))
}

/// pasta with no port forwarded and `opts`, gone to the background: the
/// daemon.
fn pasta_daemon(h: &Netns, opts: &[&str], pidf: &Path) -> Daemon {
    let mut args = vec![s(&bin("pasta"))];
    args.extend(["-t", "none", "-u", "none"].map(String::from));
    args.extend(opts.iter().map(|o| o.to_string()));
    args.extend(["-P".into(), s(pidf)]);
    daemon(h, &args, pidf)
}

/// A passt serving on `sock` answers the guest's ARP request for the
/// gateway.
fn assert_answers_arp(sock: &Path) {
    let mut c = StreamClient::connect(sock);
    c.send_raw(&StreamClient::encode(&[arp_request([10, 77, 0, 1], 60)]));
    let got = c.collect(5, 1, |f| is_arp_reply_for(f, [10, 77, 0, 1]));
    assert!(got.iter().any(|f| is_arp_reply_for(f, [10, 77, 0, 1])));
}

/// The root directory of `pid` is an empty, read-only tmpfs.
fn assert_empty_root(pid: i32) {
    let root = format!("/proc/{pid}/root");
    let entries: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{root}: {e}"))
        .collect();
    assert!(entries.is_empty(), "{root}: {entries:?}");
    let out = Command::new("stat")
        .args(["-f", "-c", "%T", &root])
        .output()
        .expect("stat");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tmpfs");
    let e = std::fs::write(format!("{root}/x"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
}

/// The descriptors of `pid`, as link targets.
fn fds(pid: i32) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd directory")
        .filter_map(|e| {
            let e = e.ok()?;
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            let t = std::fs::read_link(e.path()).ok()?;
            Some((n, t.display().to_string()))
        })
        .collect();
    v.sort();
    v
}

fn user_ns(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/user")).expect("user namespace")
}

/// A scratch directory the test user may write.
fn scratch_for_test_user(tag: &str) -> Scratch {
    let (uid, gid) = test_user();
    let dir = Scratch::new(tag);
    std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid)).expect("chown");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// passt started as root (daemon): filter on, no new privileges, no
/// capability in any set, `nobody`, an empty root, and an inherited
/// descriptor closed; SIGTERM still ends it.
#[test]
fn passt_as_root_is_sandboxed() {
    let (h, dir, sock, pidf) = passt_host("sbpr");
    // Descriptor 7 is left open by the shell that starts passt.
    let marker = dir.join("inherited");
    std::fs::write(&marker, b"").unwrap();
    let script = format!(
        "exec 7<'{}'; exec '{}' -q -s '{}' -P '{}'",
        s(&marker),
        s(&bin("passt")),
        s(&sock),
        s(&pidf)
    );
    let d = daemon(&h, &["sh", "-c", &script], &pidf);
    let st = sandboxed_status(d.0);
    for (k, v) in [
        ("NoNewPrivs", "1"),
        ("CapEff", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapInh", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
    ] {
        assert_eq!(st.get(k).map(String::as_str), Some(v), "{k}: {st:?}");
    }
    let uid: Vec<&str> = st["Uid"].split_whitespace().collect();
    assert_eq!(uid, ["65534"; 4]);
    // PID 1 of its own PID namespace.
    assert_eq!(st["NSpid"].split_whitespace().last(), Some("1"), "{st:?}");
    assert_empty_root(d.0);
    // Files show relative to the process's own root: only /dev/null (as
    // "/null", its standard streams) is open.
    let f = fds(d.0);
    assert!(
        f.iter().all(|(_, t)| !t.contains("inherited")),
        "inherited descriptor left open: {f:?}"
    );
    assert!(
        f.iter()
            .all(|(_, t)| !t.starts_with('/') || t.ends_with("null")),
        "no file but /dev/null open: {f:?}"
    );
    // Still a working passt.
    assert_answers_arp(&sock);
    sigterm(d.0 as u32);
    assert_ends(d.0 as u32, 10, "SIGTERM");
}

/// passt started by an unprivileged user: in a user namespace of its own,
/// with no capability there either.
#[test]
fn passt_unprivileged_is_sandboxed() {
    let h = Netns::host("sbpu");
    let dir = scratch_for_test_user("sbpu");
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let args = as_user("passt", &["-q", "-s", &s(&sock), "-P", &s(&pidf)]);
    let d = daemon(&h, &args, &pidf);
    let st = sandboxed_status(d.0);
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["CapEff"], "0000000000000000");
    assert_eq!(st["CapPrm"], "0000000000000000");
    assert_eq!(st["CapBnd"], "0000000000000000");
    let (uid, _) = test_user();
    assert!(st["Uid"].starts_with(&uid.to_string()), "{st:?}");
    assert_ne!(user_ns(d.0), user_ns(std::process::id() as i32));
    assert_empty_root(d.0);
    assert_answers_arp(&sock);
}

/// The status of a running pasta: its main thread keeps only
/// CAP_NET_BIND_SERVICE, its namespace worker nothing; both filtered.
fn assert_pasta_sandboxed(pid: i32) {
    let st = sandboxed_status(pid);
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["CapEff"], "0000000000000400", "{st:?}");
    assert_eq!(st["CapPrm"], "0000000000000400", "{st:?}");
    assert_eq!(st["CapInh"], "0000000000000000");
    assert_eq!(st["CapBnd"], "0000000000000000");
    assert_eq!(st["CapAmb"], "0000000000000000");
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
        .filter(|t| t != &pid.to_string())
        .collect();
    assert_eq!(tasks.len(), 1, "one namespace worker: {tasks:?}");
    let w = status_of(&format!("/proc/{pid}/task/{}/status", tasks[0]));
    assert_eq!(w["Seccomp"], "2", "{w:?}");
    assert_eq!(w["NoNewPrivs"], "1");
    assert_eq!(w["CapEff"], "0000000000000000", "{w:?}");
    assert_eq!(w["CapPrm"], "0000000000000000");
    assert_eq!(w["CapBnd"], "0000000000000000");
    // The worker is in the guest's network namespace, the main thread not.
    let main_net = std::fs::read_link(format!("/proc/{pid}/task/{pid}/ns/net")).unwrap();
    let w_net = std::fs::read_link(format!("/proc/{pid}/task/{}/ns/net", tasks[0])).unwrap();
    assert_ne!(main_net, w_net);
    assert_empty_root(pid);
}

/// pasta running a command, started as root.
#[test]
fn pasta_as_root_is_sandboxed() {
    let h = Netns::host("sbta");
    let dir = Scratch::new("sbta");
    let pidf = dir.join("pasta.pid");
    let mut p = pasta_sleeping(&h, vec![], &dir, &pidf);
    wait_file(&pidf, 20, &mut p);
    let pid = p.pid() as i32;
    assert_pasta_sandboxed(pid);
    assert_eq!(
        status(pid)["Uid"].split_whitespace().next(),
        Some("65534"),
        "root switches to nobody"
    );
    p.assert_running();
}

/// pasta running a command, started by an unprivileged user.
#[test]
fn pasta_unprivileged_is_sandboxed() {
    let h = Netns::host("sbtu");
    let dir = scratch_for_test_user("sbtu");
    let pidf = dir.join("pasta.pid");
    let mut p = pasta_sleeping(&h, as_test_user(), &dir, &pidf);
    wait_file(&pidf, 20, &mut p);
    let pid = read_pid(&pidf) as i32;
    assert_pasta_sandboxed(pid);
    p.assert_running();
}

/// `-P`, `--pcap` and `-l` pointing at a symbolic link (started as root, in
/// a directory anybody may write, as /tmp): refused with a message naming
/// the option, the link's target untouched, nothing left running.
#[test]
fn output_files_refuse_symbolic_links() {
    let h = Netns::host("sblink");
    let dir = Scratch::new("sblink");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let target = dir.join("precious");
    std::fs::write(&target, b"do not truncate me\n").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for (prog, opt) in [
        ("passt", "-P"),
        ("passt", "--pcap"),
        ("passt", "-l"),
        ("pasta", "-P"),
        ("pasta", "--pcap"),
        ("pasta", "-l"),
    ] {
        let mut args = vec![s(&bin(prog)), "-f".into(), opt.into(), s(&link)];
        if prog == "passt" {
            args.extend(["-s".into(), s(&dir.join("passt.socket"))]);
        } else {
            args.extend(["--config-net".into(), "--".into(), "true".into()]);
        }
        let out = h.run(&args, 20);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{prog} {opt}: {out:?}");
        assert!(
            err.contains(&format!("{} ({opt}): is a symbolic link", s(&link))),
            "{prog} {opt}: {err}"
        );
        assert!(!err.contains("os error"), "bare error number: {err}");
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"do not truncate me\n",
            "{prog} {opt}"
        );
    }
}

/// `--runas` never means UID 0, by number or by name.
#[test]
fn runas_root_is_refused() {
    let h = Netns::host("sbrun");
    let dir = Scratch::new("sbrun");
    for v in ["0", "0:0", "root", "root:root", "00"] {
        let out = h.run(
            &[
                s(&bin("passt")),
                "-f".into(),
                "--runas".into(),
                v.into(),
                "-s".into(),
                s(&dir.join("passt.socket")),
            ],
            20,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--runas {v}: {out:?}");
        assert!(err.contains("--runas"), "--runas {v}: {err}");
        assert!(!dir.join("passt.socket").exists(), "--runas {v}");
    }
}

/// As Podman runs it: `pasta --config-net --netns PATH` in the background,
/// PATH a bind mount of the namespace outside /run/netns. It configures the
/// namespace, runs sandboxed, and exits as soon as the namespace file goes
/// (unmounted and removed, as Podman does).
#[test]
fn podman_style_daemon_quits_with_its_namespace() {
    let h = Netns::host("sbpod");
    let g = Netns::new("sbpodg");
    let dir = Scratch::new("sbpod");
    let nsdir = dir.join("netns");
    std::fs::create_dir(&nsdir).unwrap();
    let nsfile = nsdir.join("netns-test");
    std::fs::write(&nsfile, b"").unwrap();
    ok_text(&run_timeout(
        Command::new("mount")
            .arg("--bind")
            .arg(g.path())
            .arg(&nsfile),
        10,
    ));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let mount = Unmount(nsfile.clone());
    let pidf = dir.join("pasta.pid");
    let d = pasta_daemon(&h, &["--config-net", "--netns", &s(&nsfile)], &pidf);
    assert_pasta_sandboxed(d.0);
    let addrs = g.sh("ip -o -4 addr show dummy0");
    assert!(addrs.contains(HOST_IP4), "{addrs}");
    // The namespace goes away as Podman removes it.
    drop(mount);
    std::fs::remove_file(&nsfile).unwrap();
    let t = Instant::now();
    assert_ends(
        d.0 as u32,
        5,
        "pasta still running after its namespace went",
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// `--netns /proc/PID/ns/net` (procfs: no inotify events) in the
/// background: the once-a-second check, made from the directory opened
/// before the sandbox, notices the process's end.
#[test]
fn daemon_on_proc_namespace_quits_with_the_process() {
    let h = Netns::host("sbproc");
    let g = Netns::new("sbprocg");
    let dir = Scratch::new("sbproc");
    let mut holder = Proc::spawn(g.cmd(&["sleep", "120"]), "holder", dir.join("holder.log"));
    let hp = holder.pid();
    let nsfile = format!("/proc/{hp}/ns/net");
    let ino = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    let want = ino(&g.path());
    assert!(
        eventually(5, || (ino(Path::new(&nsfile)) == want).then_some(())).is_some(),
        "holder in its namespace"
    );
    let pidf = dir.join("pasta.pid");
    let d = pasta_daemon(&h, &["--netns", &nsfile], &pidf);
    assert_pasta_sandboxed(d.0);
    let _ = holder.child.kill();
    let _ = holder.child.wait();
    assert_ends(
        d.0 as u32,
        5,
        "pasta still running after the namespace's process ended",
    );
}

/// The log file rotates under the filter, and passt serves one client after
/// another: each client's arrival and departure is logged; after enough of
/// them the file has been cut (it says so in its first line) and never
/// outgrew `--log-size`. The capture holds every request and reply.
#[test]
fn log_rotation_under_the_filter() {
    let (h, dir, sock, pidf) = passt_host("sbrot");
    let logf = dir.join("passt.log");
    let pcapf = dir.join("passt.pcap");
    let size = 40960u64;
    let (log_s, size_s) = (s(&logf), size.to_string());
    let (pcap_s, sock_s) = (s(&pcapf), s(&sock));
    let args = [
        "-f",
        "-d",
        "-l",
        &log_s,
        "--log-size",
        &size_s,
        "--pcap",
        &pcap_s,
        "-s",
        &sock_s,
    ];
    let mut p = h.start_ready(vec![], &passt(), &pidf, dir.join("passt.stderr"), &args);
    sandboxed_status(p.pid() as i32);
    let gw = [10, 77, 0, 1];
    let mut clients = 0;
    let rotated = |t: &str| {
        t.lines()
            .next()
            .unwrap_or_default()
            .contains("log truncated at")
    };
    while clients < 2000 {
        // A client that comes before passt saw the previous one leave is
        // refused (one client at a time): it tries again.
        let served = (0..20).any(|_| {
            let mut c = StreamClient::connect(&sock);
            c.send_raw(&StreamClient::encode(&[arp_request(gw, 60)]));
            c.collect(2, 1, |f| is_arp_reply_for(f, gw))
                .iter()
                .any(|f| is_arp_reply_for(f, gw))
        });
        assert!(served, "client {clients}: no reply; {}", p.output());
        clients += 1;
        let len = std::fs::metadata(&logf).map(|m| m.len()).unwrap_or(0);
        assert!(len <= size, "log file {len} bytes > {size}");
        if clients % 50 == 0 && rotated(&std::fs::read_to_string(&logf).unwrap()) {
            break;
        }
    }
    p.assert_running();
    let text = std::fs::read_to_string(&logf).unwrap();
    assert!(rotated(&text), "not cut after {clients} clients");
    // Every line after the header is whole.
    for l in text.lines().skip(1) {
        assert!(l.contains(": "), "{l}");
    }
    // 24-byte header, then per exchange 16 + 60 and 16 + 42 bytes (a reply
    // is recorded once it went out: the last one may come a moment later).
    let want = 24 + clients * (16 + 60 + 16 + 42);
    let pcap = || std::fs::metadata(&pcapf).map_or(0, |m| m.len());
    assert!(
        eventually(5, || (pcap() >= want).then_some(())).is_some(),
        "{} < {want}",
        pcap()
    );
}

/// `--fd`: the descriptor given survives the closing of inherited ones
/// (another inherited descriptor does not), and frames flow over it under
/// the filter; passt exits when the other end closes.
#[test]
fn inherited_fd_kept_others_closed() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let h = Netns::host("sbfd");
    let dir = Scratch::new("sbfd");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let other = std::fs::File::open("/dev/zero").unwrap();
    let (t, o) = (theirs.as_raw_fd(), other.as_raw_fd());
    let mut cmd = h.cmd(&[s(&bin("passt")), "-f".into(), "--fd".into(), "5".into()]);
    // SAFETY: descriptor calls in the child before exec; no allocation.
    // Both are first moved above 5 and 6, whatever numbers they had.
    unsafe {
        cmd.pre_exec(move || {
            let t = libc::fcntl(t, libc::F_DUPFD_CLOEXEC, 100);
            let o = libc::fcntl(o, libc::F_DUPFD_CLOEXEC, 100);
            if t < 0 || o < 0 || libc::dup2(t, 5) < 0 || libc::dup2(o, 6) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Proc::spawn(cmd, "passt", dir.join("passt.log"));
    drop(theirs);
    drop(other);
    let pid = p.pid() as i32;
    sandboxed_status(pid);
    let f = fds(pid);
    assert!(
        f.iter().any(|(n, t)| *n == 5 && t.starts_with("socket:")),
        "{f:?}"
    );
    assert!(!f.iter().any(|(_, t)| t.contains("zero")), "{f:?}");
    let mut c = StreamClient::from_stream(ours);
    let gw = [10, 77, 0, 1];
    c.send_raw(&StreamClient::encode(&[arp_request(gw, 60)]));
    let got = c.collect(5, 1, |f| is_arp_reply_for(f, gw));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, gw)),
        "{}",
        p.output()
    );
    drop(c);
    assert_eq!(p.wait_exit(10).code(), Some(0), "{}", p.output());
}

/// Started as root, passt forwards a port below 1024 although it runs as
/// nobody with no capability: its listeners are bound before privileges go.
#[test]
fn low_port_bound_before_privileges_go() {
    let (h, _dir, sock, pidf) = passt_host("sblow");
    let (passt, sock_s, pid_s) = (s(&bin("passt")), s(&sock), s(&pidf));
    let args = [&*passt, "-q", "-t", "81", "-s", &sock_s, "-P", &pid_s];
    let d = daemon(&h, &args, &pidf);
    let st = sandboxed_status(d.0);
    assert_eq!(st["CapEff"], "0000000000000000");
    let listening = h.sh("ss -Hltn 'sport = :81'");
    assert!(listening.contains(":81"), "{listening}");
}
