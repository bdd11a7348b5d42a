//! `passt-sim`: runs scenario files in the simulator, and sweeps seeds.

use clap::{Parser, Subcommand};
use passt_driver_sim::scenario::{run, RunOptions, Scenario};
use passt_driver_sim::sim::write_pcap;
use passt_driver_sim::sweep::{parse_seeds, render_table, sweep, table};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "passt-sim",
    about = "Deterministic simulator for passt-rs scenarios"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a scenario once and prints its timeline.
    Run {
        /// Scenario folder or `.pkt` file.
        scenario: PathBuf,
        /// Seed of the run (overrides the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Fault profile: none, lossy, dup, reorder, chaos, host, backpressure, swarm.
        #[arg(long)]
        faults: Option<String>,
        /// Writes the frames at the core's end of the guest link as a pcap.
        #[arg(long)]
        pcap_out: Option<PathBuf>,
        /// Checks invariants only, not `>` expectations (as sweeps do).
        #[arg(long)]
        lenient: bool,
        /// Plant a driver bug (builds with the `planted-bug` feature only):
        /// `truncate` or `ack`.
        #[arg(long)]
        plant: Option<String>,
    },
    /// Runs a scenario under several fault profiles and prints a table of
    /// figures (completion time, retransmissions, frames) per profile.
    Table {
        /// Scenario folder or `.pkt` file.
        scenario: PathBuf,
        /// Seeds, `A..B` (B excluded) or one seed.
        #[arg(long, default_value = "0..50")]
        seeds: String,
        /// Fault profiles, comma-separated.
        #[arg(long, default_value = "none,lossy,dup,reorder,chaos,host,swarm")]
        faults: String,
        /// TCP policies of the core, comma-separated (shipped, reopen-half,
        /// window-whole, ack-at-once, rto-fixed, dupack-3): a table of
        /// throughput, stalls and retransmissions per policy and profile.
        #[arg(long)]
        policies: Option<String>,
        /// With --policies: writes the time-sequence graphs of one run per
        /// policy (the first seed and profile) side by side as SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The connection to plot: a port or ADDR:PORT of either end.
        #[arg(long)]
        flow: Option<String>,
    },
    /// Derives a closed-loop replay scenario from a capture of the guest
    /// side: each connection as the application steps of both ends.
    Derive {
        /// A pcap or pcapng file.
        capture: PathBuf,
        /// The guest's MAC (else guessed from the capture).
        #[arg(long)]
        guest_mac: Option<String>,
        /// Stall threshold, ms.
        #[arg(long, default_value_t = 200.0)]
        stall_ms: f64,
        /// Writes `<out>/scenario.pkt` (naming the capture relative to it)
        /// instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replays a capture closed-loop (derived on the fly) or runs a replay
    /// scenario, and prints the report: with a capture, the original next
    /// to the replay.
    Replay {
        /// A pcap or pcapng file, or a replay scenario.
        input: PathBuf,
        /// The guest's MAC (captures).
        #[arg(long)]
        guest_mac: Option<String>,
        /// Stall threshold, ms (captures).
        #[arg(long, default_value_t = 200.0)]
        stall_ms: f64,
        /// Seed of the run.
        #[arg(long)]
        seed: Option<u64>,
        /// Fault profile: none, lossy, dup, reorder, chaos, host, swarm.
        #[arg(long)]
        faults: Option<String>,
        /// TCP policy of the core (shipped, reopen-half, window-whole,
        /// ack-at-once, rto-fixed, dupack-3).
        #[arg(long)]
        policy: Option<String>,
        /// Prints the timeline too.
        #[arg(long)]
        timeline: bool,
        /// Writes the frames at the core's end of the guest link as a pcap.
        #[arg(long)]
        pcap_out: Option<PathBuf>,
    },
    /// Draws the time-sequence graph of a TCP connection as SVG: data sent,
    /// ACKed, the window's right edge, retransmissions and zero-window
    /// periods.
    Plot {
        /// A pcap or pcapng file (a capture, or `run --pcap-out`), or a
        /// scenario (run for the plot).
        input: PathBuf,
        /// A second input drawn beside the first (a capture and its replay).
        #[arg(long)]
        vs: Option<PathBuf>,
        /// The connection: a port or ADDR:PORT of either end (default: the
        /// one that carried the most data).
        #[arg(long)]
        flow: Option<String>,
        /// Whose data: guest or host (default: the direction with more).
        #[arg(long)]
        sender: Option<String>,
        /// The SVG file to write.
        #[arg(long, default_value = "plot.svg")]
        out: PathBuf,
        /// Prints the data points too.
        #[arg(long)]
        data: bool,
        /// Seed of scenario runs.
        #[arg(long)]
        seed: Option<u64>,
        /// Fault profile of scenario runs.
        #[arg(long)]
        faults: Option<String>,
    },
    /// Runs a scenario with many seeds and shrinks the smallest failure.
    Sweep {
        /// Scenario folder or `.pkt` file.
        scenario: PathBuf,
        /// Seeds, `A..B` (B excluded) or one seed.
        #[arg(long, default_value = "0..100")]
        seeds: String,
        /// Fault profile: none, lossy, dup, reorder, chaos, host, backpressure, swarm.
        #[arg(long, default_value = "chaos")]
        faults: String,
        /// Folder to write the shrunk failing case into, as `<name>/scenario.pkt`.
        #[arg(long, default_value = "tests/scenarios")]
        out: PathBuf,
        /// Plant a driver bug (builds with the `planted-bug` feature only):
        /// `truncate` or `ack`.
        #[arg(long)]
        plant: Option<String>,
    },
}

fn planted(name: Option<&str>) -> Result<Option<passt_driver_sim::sim::PlantedBug>, String> {
    use passt_driver_sim::sim::PlantedBug;
    match name {
        None => Ok(None),
        Some(n) if cfg!(feature = "planted-bug") => match n {
            "truncate" => Ok(Some(PlantedBug::TruncateSecondOfBatch)),
            "ack" => Ok(Some(PlantedBug::AckOneMore)),
            _ => Err(format!("unknown planted bug `{n}` (truncate, ack)")),
        },
        Some(_) => Err("--plant needs a build with `--features planted-bug`".into()),
    }
}

fn parse_mac(s: Option<&str>) -> Result<Option<[u8; 6]>, String> {
    s.map(|m| {
        passt_core::Mac::parse(m)
            .map(|m| m.0)
            .ok_or_else(|| format!("bad MAC `{m}`"))
    })
    .transpose()
}

fn is_capture(p: &std::path::Path) -> bool {
    p.is_file()
        && std::fs::read(p)
            .ok()
            .and_then(|d| d.get(..4).map(<[u8]>::to_vec))
            .is_some_and(|m| {
                matches!(
                    m.as_slice(),
                    [0xd4, 0xc3, 0xb2, 0xa1]
                        | [0xa1, 0xb2, 0xc3, 0xd4]
                        | [0x4d, 0x3c, 0xb2, 0xa1]
                        | [0xa1, 0xb2, 0x3c, 0x4d]
                        | [0x0a, 0x0d, 0x0d, 0x0a]
                )
            })
}

/// Derives the replay of a capture.
fn derive(
    capture: &std::path::Path,
    guest_mac: Option<&str>,
    stall_ms: f64,
) -> Result<passt_driver_sim::replay::capture::Derived, String> {
    use passt_driver_sim::replay::capture::{derive, Capture};
    let ips =
        passt_driver_sim::replay::capture::guest_ips(&passt_driver_sim::scenario::capture_config());
    let cap = Capture::load(capture, parse_mac(guest_mac)?, &ips)?;
    if !(0.0..1e9).contains(&stall_ms) {
        return Err("--stall-ms out of range".into());
    }
    Ok(derive(&cap, (stall_ms * 1e6) as u64))
}

/// A path from `from` (a folder) to `to`, through `..` where needed.
fn relative(to: &std::path::Path, from: &std::path::Path) -> String {
    let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (to, from) = (abs(to), abs(from));
    let a: Vec<_> = to.components().collect();
    let b: Vec<_> = from.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut p = std::path::PathBuf::new();
    for _ in common..b.len() {
        p.push("..");
    }
    for c in &a[common..] {
        p.push(c);
    }
    p.display().to_string()
}

/// The time-sequence graph of a capture or of a scenario's run.
fn time_seq(
    input: &std::path::Path,
    flow: Option<&str>,
    sender: Option<passt_driver_sim::replay::plan::Side>,
    seed: Option<u64>,
    faults: Option<&str>,
) -> Result<passt_driver_sim::plot::TimeSeq, String> {
    use passt_driver_sim::plot::{capture_of_run, TimeSeq};
    use passt_driver_sim::replay::capture::Capture;
    let name = input.file_name().map_or_else(
        || input.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let cap = if is_capture(input) {
        let ips = passt_driver_sim::replay::capture::guest_ips(
            &passt_driver_sim::scenario::capture_config(),
        );
        Capture::load(input, None, &ips)?
    } else {
        let sc = Scenario::load(input)?;
        let r = run(
            &sc,
            &RunOptions {
                seed,
                faults: faults.map(str::to_string),
                lenient: true,
                planted: None,
                policy: None,
            },
        )?;
        capture_of_run(&sc.name, &r)?
    };
    TimeSeq::from_capture(&cap, flow, sender, &name)
}

/// Draws `panels` into the SVG file `out`.
fn write_svg(
    out: &std::path::Path,
    panels: &[passt_driver_sim::plot::TimeSeq],
) -> Result<(), String> {
    let svg = passt_driver_sim::plot::svg(panels)?;
    std::fs::write(out, svg).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("passt-sim: {e}");
            ExitCode::from(2)
        }
    }
}

// Long by design: one arm per subcommand, each a few lines of argument handling and
// printing; splitting it would only move the arms apart.
fn real_main() -> Result<bool, String> {
    match Cli::parse().cmd {
        Cmd::Run {
            scenario,
            seed,
            faults,
            pcap_out,
            lenient,
            plant,
        } => {
            let sc = Scenario::load(&scenario)?;
            let planted = planted(plant.as_deref())?;
            let r = run(
                &sc,
                &RunOptions {
                    seed,
                    faults,
                    lenient,
                    planted,
                    policy: None,
                },
            )?;
            print!("{}", r.timeline);
            for f in &r.failures {
                println!("FAILED: {f}");
            }
            for v in &r.violations {
                println!("VIOLATION: {v}");
            }
            if let Some(p) = pcap_out {
                write_pcap(&p, &r.wire)?;
                eprintln!("wrote {} frames to {}", r.wire.len(), p.display());
            }
            Ok(r.ok())
        }
        Cmd::Table {
            scenario,
            seeds,
            faults,
            policies: Some(policies),
            plot,
            flow,
        } => {
            use passt_driver_sim::sweep::{policy_table, render_policy_table};
            let sc = Scenario::load(&scenario)?;
            let profiles: Vec<&str> = faults.split(',').map(str::trim).collect();
            let policies: Vec<&str> = policies.split(',').map(str::trim).collect();
            let seeds = parse_seeds(&seeds)?;
            let rows = policy_table(&sc, seeds.clone(), &policies, &profiles)?;
            print!("{}", render_policy_table(&rows));
            if let Some(out) = plot {
                let panels = passt_driver_sim::sweep::policy_plot(
                    &sc,
                    seeds.start,
                    profiles.first().copied().unwrap_or("none"),
                    &policies,
                    flow.as_deref(),
                )?;
                write_svg(&out, &panels)?;
            }
            Ok(true)
        }
        Cmd::Table {
            scenario,
            seeds,
            faults,
            ..
        } => {
            let sc = Scenario::load(&scenario)?;
            let profiles: Vec<&str> = faults.split(',').map(str::trim).collect();
            let rows = table(&sc, parse_seeds(&seeds)?, &profiles)?;
            print!("{}", render_table(&rows));
            Ok(rows.iter().all(|r| r.failing == 0))
        }
        Cmd::Derive {
            capture,
            guest_mac,
            stall_ms,
            out,
        } => {
            let d = derive(&capture, guest_mac.as_deref(), stall_ms)?;
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    let text = d.scenario_text(&relative(&capture, &dir));
                    let file = dir.join("scenario.pkt");
                    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
                    eprintln!(
                        "wrote {} ({} TCP connections, {} datagram exchanges)",
                        file.display(),
                        d.plan.tcp.len(),
                        d.plan.dgram.len()
                    );
                }
                None => print!("{}", d.scenario_text(&capture.display().to_string())),
            }
            Ok(!d.is_empty())
        }
        Cmd::Replay {
            input,
            guest_mac,
            stall_ms,
            seed,
            faults,
            policy,
            timeline,
            pcap_out,
        } => {
            let (sc, derived) = if is_capture(&input) {
                let d = derive(&input, guest_mac.as_deref(), stall_ms)?;
                let dir = input.parent().unwrap_or(std::path::Path::new("."));
                let name = input
                    .file_name()
                    .map_or("capture".into(), |n| n.to_string_lossy().into_owned());
                let text = d.scenario_text(&name);
                (Scenario::parse(&name, dir, &text)?, Some(d))
            } else {
                (Scenario::load(&input)?, None)
            };
            let r = run(
                &sc,
                &RunOptions {
                    seed,
                    faults,
                    lenient: true,
                    planted: None,
                    policy,
                },
            )?;
            if timeline {
                print!("{}", r.timeline);
            }
            let rep = r.replay.clone().unwrap_or_default();
            match &derived {
                Some(d) => print!("{}", passt_driver_sim::replay::compare(d, &rep)),
                None => print!("{}", rep.render()),
            }
            for v in &r.violations {
                println!("VIOLATION: {v}");
            }
            if let Some(p) = pcap_out {
                write_pcap(&p, &r.wire)?;
                eprintln!("wrote {} frames to {}", r.wire.len(), p.display());
            }
            Ok(r.violations.is_empty() && rep.complete())
        }
        Cmd::Plot {
            input,
            vs,
            flow,
            sender,
            out,
            data,
            seed,
            faults,
        } => {
            use passt_driver_sim::replay::plan::Side;
            let sender = match sender.as_deref() {
                None => None,
                Some("guest") => Some(Side::Guest),
                Some("host") => Some(Side::Host),
                Some(s) => return Err(format!("--sender `{s}`: say guest or host")),
            };
            let mut panels = vec![time_seq(
                &input,
                flow.as_deref(),
                sender,
                seed,
                faults.as_deref(),
            )?];
            if let Some(v) = vs {
                panels.push(time_seq(
                    &v,
                    flow.as_deref(),
                    sender,
                    seed,
                    faults.as_deref(),
                )?);
            }
            if data {
                for p in &panels {
                    print!("{}", p.data());
                }
            }
            write_svg(&out, &panels)?;
            Ok(true)
        }
        Cmd::Sweep {
            scenario,
            seeds,
            faults,
            out,
            plant,
        } => {
            let sc = Scenario::load(&scenario)?;
            let seeds = parse_seeds(&seeds)?;
            let rep = sweep(&sc, seeds, &faults, planted(plant.as_deref())?)?;
            println!("{} runs, {} failing", rep.runs, rep.failures.len());
            for f in &rep.failures {
                println!(
                    "seed {}: {}",
                    f.seed,
                    f.problems.first().map_or("", String::as_str)
                );
                println!(
                    "  reproduce: passt-sim run {} --seed {} --faults {faults} --lenient",
                    scenario.display(),
                    f.seed
                );
            }
            if let Some((seed, small, why)) = &rep.shrunk {
                let dir = out.join(&small.name);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let file = dir.join("scenario.pkt");
                std::fs::write(&file, small.to_text())
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                println!(
                    "shrunk seed {seed} to {} lines ({why}): {}",
                    small.len(),
                    file.display()
                );
            }
            Ok(rep.failures.is_empty())
        }
    }
}
