//! A tiny VM for tests: the distribution's kernel, a busybox initramfs and
//! qemu, with a real virtio-net NIC on the back-end under test.
//!
//! * [`assets`] prepares, once per test binary, the kernel and the base
//!   initramfs (`tests/vm/prepare.sh`, cached under `target/vm-cache/` or
//!   `$PASST_VM_CACHE`) and finds out whether KVM works: one short boot with
//!   `-accel kvm` and a timeout, answered once per kernel, qemu and host
//!   kernel and cached; TCG otherwise. `PASST_VM_ACCEL=tcg|kvm` overrides it.
//! * [`Vm::start`] boots it in a namespace with a NIC ([`Nic`]): the test's
//!   script becomes `/test.sh` in a small cpio archive appended to the base
//!   initramfs (the kernel unpacks both), which `/init` runs before it powers
//!   off. Scripts are too long for the kernel command line (2 KiB) and this
//!   needs no extra guest driver.
//! * The guest talks back on its serial console: lines `@@KEY VALUE`, read
//!   with [`Vm::wait_mark`]. Every run is bounded by a deadline, qemu is
//!   killed by its PID on drop, and a failing test prints the console.

#![allow(dead_code)]

use crate::ns_support::{ok_text, run_timeout, Netns, Proc, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How qemu runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accel {
    Kvm,
    Tcg,
}

/// The kernel and base initramfs, and the accelerator that works here.
pub(crate) struct Assets {
    pub(crate) kernel: PathBuf,
    pub(crate) initramfs: PathBuf,
    pub(crate) kver: String,
    pub(crate) accel: Accel,
}

/// Where the kernel, busybox and the KVM answer are kept between runs.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PASST_VM_CACHE") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/vm_passt-HASH → target/vm-cache
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .expect("target directory")
        .join("vm-cache")
}

/// Prepares the assets once per process (downloads the kernel on first use).
pub(crate) fn assets() -> &'static Assets {
    static A: OnceLock<Assets> = OnceLock::new();
    A.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/prepare.sh");
        let out = run_timeout(Command::new("bash").arg(&script).arg(cache_dir()), 900);
        let text = ok_text(&out);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("prepare.sh printed no {k}: {text}"))
                .to_string()
        };
        let mut a = Assets {
            kernel: get("kernel").into(),
            initramfs: get("initramfs").into(),
            kver: get("kver"),
            accel: Accel::Tcg,
        };
        a.accel = accel(&a);
        eprintln!("vm: kernel {}, accelerator {:?}", a.kver, a.accel);
        a
    })
}

/// KVM if a short boot with it powers off in time, TCG otherwise; the answer
/// is cached per guest kernel, qemu and host kernel.
fn accel(a: &Assets) -> Accel {
    match std::env::var("PASST_VM_ACCEL").as_deref() {
        Ok("tcg") => return Accel::Tcg,
        Ok("kvm") => return Accel::Kvm,
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let key = format!("{} | {} | {}", a.kver, qemu.trim(), host.trim());
    let file = cache_dir().join("accel");
    if let Ok(s) = std::fs::read_to_string(&file) {
        if let Some((k, v)) = s.trim().rsplit_once(" = ") {
            if k == key {
                return if v == "kvm" { Accel::Kvm } else { Accel::Tcg };
            }
        }
    }
    let dir = Scratch::new("kvmprobe");
    let console = dir.join("console.log");
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "kvm", "-cpu", "host", "-m", "256"])
        .args(base_args(a, &a.initramfs, &console, false));
    // A KVM boot to /init takes a second or two; a stock kernel that hangs
    // on this host's KVM flavour never gets there.
    let started = Instant::now();
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let ok = match child {
        Err(_) => false,
        Ok(mut ch) => {
            let st = loop {
                if let Ok(Some(st)) = ch.try_wait() {
                    break Some(st);
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = ch.kill();
                    let _ = ch.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            st.is_some_and(|s| s.success())
                && std::fs::read_to_string(&console).is_ok_and(|c| c.contains("@@boot"))
        }
    };
    let v = if ok { Accel::Kvm } else { Accel::Tcg };
    eprintln!(
        "vm: KVM probe {} after {:.1} s",
        if ok { "booted" } else { "failed" },
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::write(
        &file,
        format!("{key} = {}\n", if ok { "kvm" } else { "tcg" }),
    );
    v
}

/// Machine, kernel, console and (unless `reboot`) the no-reboot exit, common
/// to every run.
fn base_args(a: &Assets, initrd: &Path, console: &Path, reboot: bool) -> Vec<String> {
    [
        "-M",
        "pc",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
        "-no-reboot",
        "-kernel",
    ]
    .iter()
    .filter(|s| !(reboot && **s == "-no-reboot"))
    .map(|s| s.to_string())
    .chain([
        a.kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        // panic=-1: a guest whose /init dies resets, and qemu exits.
        "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off".into(),
        "-chardev".into(),
        format!("file,id=con,path={}", console.display()),
        "-serial".into(),
        "chardev:con".into(),
    ])
    .collect()
}

/// The guest's NIC and the back-end behind it.
#[derive(Clone, Debug)]
pub(crate) enum Nic {
    /// passt's qemu socket: `-netdev stream`, qemu connecting to the path.
    Stream(PathBuf),
    /// A vhost-user back-end on this socket: guest memory in a shared memfd,
    /// `-chardev socket` + `-netdev vhost-user`. Under TCG the NIC gets no
    /// MSI-X vectors (`vectors=0`): qemu 7.2 crashes in
    /// `virtio_pci_vector_unmask` otherwise.
    VhostUser(PathBuf),
    /// A kernel tap device that qemu creates with this name in its
    /// namespace (`vhost`: through vhost-net).
    Tap { ifname: String, vhost: bool },
}

/// What to boot.
#[derive(Clone, Debug)]
pub(crate) struct VmSpec {
    pub(crate) nic: Nic,
    pub(crate) mac: String,
    pub(crate) mem_mib: u32,
    smp: u32,
    /// The shell script the guest runs (`/test.sh`), with the helpers of
    /// `tests/vm/vm.sh`.
    pub(crate) script: String,
    /// Bound of the whole run, boot to power-off.
    pub(crate) timeout: Duration,
    /// A guest reset reboots the machine (no `-no-reboot`): the script runs
    /// again after it, and ends the run with `poweroff -f`.
    pub(crate) reboot: bool,
}

impl VmSpec {
    pub(crate) fn new(nic: Nic, script: String) -> VmSpec {
        VmSpec {
            nic,
            mac: "52:54:00:12:34:56".into(),
            mem_mib: 1024,
            smp: 1,
            script,
            timeout: Duration::from_secs(600),
            reboot: false,
        }
    }

    /// The qemu arguments of the NIC (and the memory it needs).
    pub(crate) fn nic_args(&self, accel: Accel) -> Vec<String> {
        let mac = &self.mac;
        match &self.nic {
            Nic::Stream(sock) => vec![
                "-m".into(),
                format!("{}M", self.mem_mib),
                "-device".into(),
                format!("virtio-net-pci,netdev=n,mac={mac}"),
                "-netdev".into(),
                format!(
                    "stream,id=n,server=off,addr.type=unix,addr.path={}",
                    sock.display()
                ),
            ],
            Nic::VhostUser(sock) => {
                let vectors = if accel == Accel::Tcg {
                    ",vectors=0"
                } else {
                    ""
                };
                vec![
                    "-m".into(),
                    format!("{}M", self.mem_mib),
                    "-object".into(),
                    format!(
                        "memory-backend-memfd,id=mem,size={}M,share=on",
                        self.mem_mib
                    ),
                    "-numa".into(),
                    "node,memdev=mem".into(),
                    "-chardev".into(),
                    format!("socket,id=c,path={}", sock.display()),
                    "-netdev".into(),
                    "vhost-user,id=n,chardev=c".into(),
                    "-device".into(),
                    format!("virtio-net-pci,netdev=n,mac={mac}{vectors}"),
                ]
            }
            Nic::Tap { ifname, vhost } => vec![
                "-m".into(),
                format!("{}M", self.mem_mib),
                "-netdev".into(),
                format!(
                    "tap,id=n,ifname={ifname},script=no,downscript=no,vhost={}",
                    if *vhost { "on" } else { "off" }
                ),
                "-device".into(),
                format!("virtio-net-pci,netdev=n,mac={mac}"),
            ],
        }
    }
}

/// A running VM. qemu is killed (by PID) on drop; if the test is failing
/// then, the console and qemu's output are printed.
pub(crate) struct Vm {
    pub(crate) qemu: Proc,
    pub(crate) console: PathBuf,
    pub(crate) accel: Accel,
    pub(crate) started: Instant,
    deadline: Instant,
    /// When each mark was first seen (seconds since the start), in order.
    pub(crate) timeline: Vec<(String, f64)>,
}

impl Vm {
    /// Boots `spec` with qemu inside `ns`; files go to `dir`.
    pub(crate) fn start(ns: &Netns, dir: &Scratch, spec: &VmSpec) -> Vm {
        let a = assets();
        let initrd = dir.join("initrd.cpio");
        let mut img = std::fs::read(&a.initramfs).expect("base initramfs");
        // The kernel unpacks concatenated archives; each starts 4-aligned.
        img.resize(img.len().next_multiple_of(4), 0);
        img.extend_from_slice(&newc(&[("test.sh", 0o100755, spec.script.as_bytes())]));
        std::fs::write(&initrd, img).expect("initrd");
        let console = dir.join("console.log");
        let _ = std::fs::remove_file(&console);
        let mut args: Vec<String> = vec!["qemu-system-x86_64".into()];
        match a.accel {
            Accel::Kvm => args.extend(["-accel", "kvm", "-cpu", "host"].map(String::from)),
            Accel::Tcg => args.extend(["-accel", "tcg"].map(String::from)),
        }
        args.extend(["-smp".into(), spec.smp.to_string()]);
        args.extend(base_args(a, &initrd, &console, spec.reboot));
        args.extend(spec.nic_args(a.accel));
        let qemu = Proc::spawn(ns.cmd(&args), "qemu", dir.join("qemu.log"));
        let now = Instant::now();
        Vm {
            qemu,
            console,
            accel: a.accel,
            started: now,
            deadline: now + spec.timeout,
            timeline: Vec::new(),
        }
    }

    /// The console so far.
    pub(crate) fn console(&self) -> String {
        let b = std::fs::read(&self.console).unwrap_or_default();
        String::from_utf8_lossy(&b).replace('\r', "")
    }

    /// Every complete `@@KEY VALUE` line so far, in order (a line the guest
    /// is still writing is left for the next look).
    pub(crate) fn marks(&self) -> Vec<(String, String)> {
        let c = self.console();
        let done = c.rfind('\n').map_or("", |i| &c[..=i]);
        parse_marks(done)
    }

    /// Waits for the guest to print `@@KEY ...` (at most `secs`, and never
    /// past the run's deadline), returning the value. Fails on `@@fail`, on
    /// qemu exiting first and on timeout, with the console.
    pub(crate) fn wait_mark(&mut self, key: &str, secs: u64) -> String {
        self.try_wait_mark(key, secs)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::wait_mark`], the failure as an error.
    pub(crate) fn try_wait_mark(&mut self, key: &str, secs: u64) -> Result<String, String> {
        self.try_wait_mark_from(key, 0, secs).map(|(_, v)| v)
    }

    /// Waits for `@@KEY` among the marks from the `from`-th on (a key the
    /// guest prints once per boot, when it boots again); returns its index
    /// and value.
    pub(crate) fn wait_mark_from(&mut self, key: &str, from: usize, secs: u64) -> (usize, String) {
        self.try_wait_mark_from(key, from, secs)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::wait_mark_from`], the failure as an error.
    pub(crate) fn try_wait_mark_from(
        &mut self,
        key: &str,
        from: usize,
        secs: u64,
    ) -> Result<(usize, String), String> {
        let end = (Instant::now() + Duration::from_secs(secs)).min(self.deadline);
        loop {
            let marks = self.marks();
            let t = self.started.elapsed().as_secs_f64();
            for (k, _) in &marks[self.timeline.len().min(marks.len())..] {
                self.timeline.push((k.clone(), t));
            }
            let found = marks
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, (k, _))| k == key);
            if let Some((i, (_, v))) = found {
                return Ok((i, v.clone()));
            }
            if let Some((_, v)) = marks.iter().find(|(k, _)| k == "fail") {
                return Err(format!("guest failed: {v}"));
            }
            if let Ok(Some(st)) = self.qemu.child.try_wait() {
                return Err(format!("qemu exited ({st}) before @@{key}"));
            }
            if Instant::now() >= end {
                return Err(format!(
                    "no @@{key} from the guest after {:.0} s",
                    self.started.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The timeline as text: `boot 14.2, dhcp4 16.0, ...`.
    pub(crate) fn timeline_text(&self) -> String {
        let v: Vec<String> = self
            .timeline
            .iter()
            .map(|(k, t)| format!("{k} {t:.1}"))
            .collect();
        v.join(", ")
    }

    /// Waits for the guest to power off; the script must have exited 0.
    pub(crate) fn wait_exit(&mut self) {
        let key = "exit";
        let v = self.wait_mark(
            key,
            self.deadline
                .saturating_duration_since(Instant::now())
                .as_secs(),
        );
        assert_eq!(v.trim(), "0", "the guest's script failed");
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(5);
        let st = self.qemu.wait_exit(left.min(60));
        assert!(st.success(), "qemu: {st}");
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- guest console ({:?}, {:.0} s) ----\n{}\n---- qemu ----\n{}",
                self.accel,
                self.started.elapsed().as_secs_f64(),
                self.console(),
                self.qemu.output()
            );
        }
        // Proc's own drop kills and reaps qemu by its PID.
    }
}

/// `@@KEY VALUE` lines of a console.
pub(crate) fn parse_marks(console: &str) -> Vec<(String, String)> {
    console
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("@@"))
        .map(|l| match l.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// `KEY=VALUE` out of a mark's value (`ip=10.0.0.2 mtu=1500`).
pub(crate) fn field(value: &str, key: &str) -> Option<String> {
    value
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(String::from)
}

/// A cpio archive in the "newc" format with these regular files.
pub(crate) fn newc(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    for (i, (name, mode, data)) in files.iter().enumerate() {
        entry(&mut out, i as u32 + 1, name, *mode, data);
    }
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

/// User plus system CPU seconds of a process, from `/proc/PID/stat`.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_fields() {
        let c = "[ 1.0] x\n@@boot 1.5\r\nnoise @@x\n@@dhcp4 ip=10.0.2.15 mtu=1500\n@@exit 0\n";
        let m = parse_marks(&c.replace('\r', ""));
        assert_eq!(m[0], ("boot".into(), "1.5".into()));
        assert_eq!(field(&m[1].1, "mtu").as_deref(), Some("1500"));
        assert_eq!(field(&m[1].1, "ip").as_deref(), Some("10.0.2.15"));
        assert_eq!(field(&m[1].1, "i"), None);
        assert_eq!(m.len(), 3);
    }

    /// A guest that never reports: the wait ends at the deadline with a
    /// failure, and dropping the VM kills its process.
    #[test]
    fn a_stuck_guest_fails_in_time_and_is_killed() {
        let dir = Scratch::new("vmstuck");
        let mut c = Command::new("sleep");
        c.arg("600");
        let now = Instant::now();
        let mut vm = Vm {
            qemu: Proc::spawn(c, "sleep", dir.join("sleep.log")),
            console: dir.join("console.log"),
            accel: Accel::Tcg,
            started: now,
            deadline: now + Duration::from_secs(1),
            timeline: Vec::new(),
        };
        let pid = vm.qemu.pid();
        let msg = vm
            .try_wait_mark("boot", 600)
            .expect_err("no mark: the wait fails");
        assert!(msg.contains("no @@boot"), "{msg}");
        assert!(now.elapsed() < Duration::from_secs(10));
        drop(vm);
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        assert!(!alive, "the process outlived the VM");

        // A line still being written is not read; a reported failure ends
        // the wait at once.
        std::fs::write(
            dir.join("console.log"),
            "@@boot 1\n@@fail no lease\n@@dhcp4 ip=1",
        )
        .unwrap();
        let mut c = Command::new("sleep");
        c.arg("600");
        let mut vm = Vm {
            qemu: Proc::spawn(c, "sleep", dir.join("sleep.log")),
            console: dir.join("console.log"),
            accel: Accel::Tcg,
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(30),
            timeline: Vec::new(),
        };
        let msg = vm
            .try_wait_mark("dhcp4", 30)
            .expect_err("@@fail ends the wait");
        assert!(msg.contains("guest failed: no lease"), "{msg}");
        assert_eq!(vm.timeline.len(), 2);
    }

    #[test]
    fn newc_layout() {
        let a = newc(&[("test.sh", 0o100755, b"echo hi\n")]);
        assert_eq!(&a[..6], b"070701");
        assert_eq!(a.len() % 4, 0);
        // name right after the 110-byte header, NUL-terminated
        assert_eq!(&a[110..118], b"test.sh\0");
        let s = String::from_utf8_lossy(&a);
        assert!(s.contains("echo hi\n"));
        assert!(s.contains("TRAILER!!!"));
    }
}
