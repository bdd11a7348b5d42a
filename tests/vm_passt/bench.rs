//! The benchmark behind `--ignored vm_bench`: iperf3 through passt (stream
//! and vhost-user) and through a plain tap, side by side.

use super::*;

// --- benchmark -------------------------------------------------------------

/// Megabytes and Mbit/s from an iperf3 receiver line run with `-f m`
/// (`[  5] 0.00-3.00 sec 123 MBytes 344 Mbits/sec receiver`).
fn iperf_figures(line: &str) -> Option<(f64, f64)> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let num_before = |unit: &str| {
        let i = w.iter().position(|x| *x == unit)?;
        w.get(i.checked_sub(1)?)?.parse::<f64>().ok()
    };
    let mb = num_before("MBytes")
        .or_else(|| num_before("GBytes").map(|g| g * 1024.0))
        .or_else(|| num_before("KBytes").map(|k| k / 1024.0))?;
    Some((mb, num_before("Mbits/sec")?))
}

/// One iperf3 run of the benchmark.
#[derive(Clone, Copy, Default)]
struct Run {
    mbits: f64,
    /// TCP retransmissions of the sender.
    retr: Option<u64>,
    /// passt's CPU seconds per GB moved, and its CPU use in % of a core.
    passt_s_gb: Option<f64>,
    passt_pct: Option<f64>,
    /// qemu's CPU use (the emulated guest, its I/O thread) in % of a core.
    qemu_pct: f64,
}

/// One benchmark boot: both directions.
struct Row {
    setup: String,
    mtu: u32,
    runs: [Run; 2],
    load: String,
}

/// The retransmissions column of an iperf3 sender line (after Mbits/sec).
fn iperf_retr(line: &str) -> Option<u64> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "Mbits/sec")?;
    w.get(i + 1)?.parse().ok()
}

/// One boot: iperf3 guest → host and host → guest, reading passt's and
/// qemu's CPU time at the marks around each run.
fn bench_boot(h: &Netns, dir: &Scratch, spec: VmSpec, passt: Option<u32>, tag: &str) -> [Run; 2] {
    let mut vm = Vm::start(h, dir, &spec);
    vm.wait_mark("ready", 300);
    let qemu = vm.qemu.pid();
    let mut res = [Run::default(); 2];
    for (i, name) in ["out", "in"].iter().enumerate() {
        vm.wait_mark(&format!("iperf_{name}_begin"), 60);
        // PASST_VM_PERF=DIR: a profile of passt for each run.
        let perf = std::env::var_os("PASST_VM_PERF")
            .zip(passt)
            .map(|(d, pid)| {
                let out = PathBuf::from(d).join(format!("passt-{tag}-{name}.data"));
                let mut c = Command::new("perf");
                c.args([
                    "record",
                    "-q",
                    "-F",
                    "2000",
                    "-g",
                    "-p",
                    &pid.to_string(),
                    "-o",
                ])
                .arg(&out);
                Proc::spawn(c, "perf", dir.join(&format!("perf-{name}.log")))
            });
        let (p0, q0, t0) = (
            passt.map(vm::cpu_seconds),
            vm::cpu_seconds(qemu),
            Instant::now(),
        );
        let sender = vm.wait_mark(&format!("iperf_{name}_sender"), 300);
        let (p1, q1, wall) = (
            passt.map(vm::cpu_seconds),
            vm::cpu_seconds(qemu),
            t0.elapsed(),
        );
        if let Some(mut p) = perf {
            let _ = nix_kill(p.pid(), libc::SIGINT);
            p.wait_exit(30);
        }
        let line = vm.wait_mark(&format!("iperf_{name}"), 60);
        let (mb, mbits) = iperf_figures(&line).unwrap_or_else(|| panic!("iperf3: {line}"));
        let passt_cpu = p0.zip(p1).map(|(a, b)| b - a);
        res[i] = Run {
            mbits,
            retr: iperf_retr(&sender),
            passt_s_gb: passt_cpu.map(|c| c / (mb * 1_048_576.0 / 1e9)),
            passt_pct: passt_cpu.map(|c| 100.0 * c / wall.as_secs_f64()),
            qemu_pct: 100.0 * (q1 - q0) / wall.as_secs_f64(),
        };
    }
    vm.wait_exit();
    res
}

fn bench_passt(mtu: u32, secs: u32, backend: Backend) -> Row {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let h = Netns::host("vmb");
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
    let dir = Scratch::new("vmb");
    let iperf_args = ["iperf3", "-s", "-p", &IPERF_PORT.to_string()].map(String::from);
    let _iperf = peer(&h, &dir, "iperf3", &iperf_args);
    let m = mtu.to_string();
    let mut args = vec!["-m", &m];
    args.extend(backend.passt_args());
    let passt = Passt::start(&h, &dir, &args);
    let script = guest_script(
        "bench.sh",
        &[
            ("STATIC", String::new()),
            ("SERVER", String::new()),
            ("MTU", m.clone()),
            ("IPERF_PORT", IPERF_PORT.to_string()),
            ("SECS", secs.to_string()),
        ],
    );
    let spec = VmSpec::new(backend.nic(passt.sock.clone()), script);
    Row {
        setup: match backend {
            Backend::Stream => "passt, stream".into(),
            Backend::VhostUser => "passt, vhost-user".into(),
        },
        mtu,
        runs: bench_boot(
            &h,
            &dir,
            spec,
            Some(passt.pid),
            &format!("{backend:?}-{mtu}"),
        ),
        load: load.trim().into(),
    }
}

fn bench_tap(mtu: u32, secs: u32, vhost: bool) -> Row {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let h = Netns::host("vmt");
    let dir = Scratch::new("vmt");
    let iperf_args = ["iperf3", "-s", "-p", &IPERF_PORT.to_string()].map(String::from);
    let _iperf = peer(&h, &dir, "iperf3", &iperf_args);
    let tap = format!("vmtap{}", std::process::id() % 100_000);
    let script = guest_script(
        "bench.sh",
        &[
            ("STATIC", "10.88.0.2/24".into()),
            ("SERVER", "10.88.0.1".into()),
            ("MTU", mtu.to_string()),
            ("IPERF_PORT", IPERF_PORT.to_string()),
            ("SECS", secs.to_string()),
        ],
    );
    let spec = VmSpec::new(
        Nic::Tap {
            ifname: tap.clone(),
            vhost,
        },
        script,
    );
    // qemu creates the tap; its host side is configured once it exists,
    // while the guest waits for the server to answer.
    let h2 = h.name.clone();
    let tap2 = tap.clone();
    let conf = std::thread::spawn(move || {
        eventually(120, || {
            let ok = Command::new("ip")
                .args(["-n", &h2, "link", "show", &tap2])
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then_some(())
        })
        .expect("qemu's tap");
        let sh = format!(
            "ip -n {h2} link set {tap2} mtu {mtu} up && ip -n {h2} addr add 10.88.0.1/24 dev {tap2}"
        );
        ok_text(&run_timeout(Command::new("sh").args(["-ec", &sh]), 20));
    });
    let runs = bench_boot(&h, &dir, spec, None, "tap");
    conf.join().expect("tap configured");
    Row {
        setup: format!("kernel tap{}", if vhost { ", vhost-net" } else { "" }),
        mtu,
        runs,
        load: load.trim().into(),
    }
}

/// iperf3 throughput and passt's CPU seconds per GB, guest → host and host
/// → guest, MTU 65520 and 1500, for passt and for the same VM on a kernel
/// tap (the limit). `PASST_VM_BENCH_SECS` sets the length of each run
/// (default 10), `PASST_VM_BENCH_MTU` one MTU,
/// `PASST_VM_BENCH_ONLY=passt|stream|vhost|tap` some set-ups (passt: both of
/// its back-ends). Prints a Markdown table.
#[test]
#[ignore = "benchmark: cargo test --release -p passt-tests --test vm_passt -- --ignored --nocapture"]
fn vm_bench() {
    let secs: u32 = std::env::var("PASST_VM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("PASST_VM_BENCH_ONLY").unwrap_or_default();
    let mtus: Vec<u32> = std::env::var("PASST_VM_BENCH_MTU")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(vec![65520, 1500], |m| vec![m]);
    let mut rows = Vec::new();
    for mtu in mtus {
        if only.is_empty() || only == "passt" || only == "stream" {
            rows.push(bench_passt(mtu, secs, Backend::Stream));
        }
        if only.is_empty() || only == "passt" || only == "vhost" {
            rows.push(bench_passt(mtu, secs, Backend::VhostUser));
        }
        if only.is_empty() || only == "tap" {
            rows.push(bench_tap(mtu, secs, false));
            if Path::new("/dev/vhost-net").exists() {
                rows.push(bench_tap(mtu, secs, true));
            }
        }
    }
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".into(), |v| format!("{v:.prec$}"));
    println!(
        "\naccelerator {:?}, {secs} s per run\n\n\
         | setup | MTU | direction | Mbit/s | retransmits | passt CPU s/GB | passt CPU % | qemu CPU % | load average before |\n\
         |---|---|---|---|---|---|---|---|---|",
        vm::assets().accel
    );
    for r in rows {
        for (run, dir) in r.runs.iter().zip(["guest → host", "host → guest"]) {
            println!(
                "| {} | {} | {dir} | {:.0} | {} | {} | {} | {:.0} | {} |",
                r.setup,
                r.mtu,
                run.mbits,
                run.retr.map_or("-".into(), |n| n.to_string()),
                opt(run.passt_s_gb, 2),
                opt(run.passt_pct, 0),
                run.qemu_pct,
                r.load
            );
        }
    }
}

/// Sends `sig` to `pid`.
fn nix_kill(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill() takes plain integers.
    unsafe { libc::kill(pid as i32, sig) }
}

#[test]
fn iperf_receiver_line() {
    let l = "[  5]   0.00-3.08   sec   150 MBytes   409 Mbits/sec                  receiver";
    assert_eq!(iperf_figures(l), Some((150.0, 409.0)));
    let l = "[  5]   0.00-10.00  sec  1.20 GBytes  1031 Mbits/sec  receiver";
    assert_eq!(iperf_figures(l), Some((1.2 * 1024.0, 1031.0)));
    assert_eq!(iperf_figures("iperf3: error"), None);
    let l = "[  5]   0.00-10.00  sec   590 MBytes   495 Mbits/sec   12             sender";
    assert_eq!(iperf_retr(l), Some(12));
}
