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
        } => {
            let sc = Scenario::load(&scenario)?;
            let profiles: Vec<&str> = faults.split(',').map(str::trim).collect();
            let rows = table(&sc, parse_seeds(&seeds)?, &profiles)?;
            print!("{}", render_table(&rows));
            Ok(rows.iter().all(|r| r.failing == 0))
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
