//! `vsmmu-bench`: measures `vsmmud` against the baseline a user would
//! otherwise run, in one run on one machine, and prints a table and a JSON
//! file (`target/vsmmu-bench.json` at the workspace root).
//!
//! 1. Host-event propagation (sim vEVENTQ → guest EVENTQ, guest consuming):
//!    the batched drain against the seed-style one-record-per-wakeup read
//!    (`vsmmud --veventq-read single`), plus injection-to-guest latency.
//! 2. MMIO round trip (REGION_READ of IDR0 through `client-shim`) against a
//!    raw Unix-socket ping-pong of the same message sizes with a child
//!    process (this binary in its hidden `echo-server` mode).
//! 3. Command queue TLBI floods with a CMD_SYNC every N commands, batched
//!    host invalidations against `vsmmud --no-batch`.
//! 4. Idle RSS of a serving `vsmmud` and its startup time.
//! 5. What a Linux guest's disk does behind vsmmud against QEMU's built-in
//!    SMMUv3: read from the last `tests/e2e/linux-boot.sh` run
//!    (`vsmmu-guest-bench.json`, `--guest-bench`), with its date.
//!
//! Every figure is measured twice: idle (nothing added), then contended,
//! with busy threads oversubscribing the CPUs (one per online CPU unless
//! `--contend N`; `--contend 0` skips the pass); the second set of keys
//! ends in `_contended`. Targets are reported, never asserted. `--quick`
//! runs in seconds (CI).

mod cmdq;
mod contend;
mod echo;
mod footprint;
mod guest;
mod locate;
mod mmio;
mod proc;
mod propagation;
mod report;
mod sample;
mod server;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Command line of `vsmmu-bench`.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Small sizes: finishes in seconds (for CI); the figures are noisier.
    #[arg(long)]
    quick: bool,

    /// The `vsmmud` binary (default: `$VSMMUD_BIN`, else next to this
    /// executable, built with cargo when missing or when run under cargo).
    #[arg(long)]
    vsmmud: Option<PathBuf>,

    /// Never run cargo to build `vsmmud`.
    #[arg(long)]
    no_build: bool,

    /// Where to write the JSON report (default: `target/vsmmu-bench.json`
    /// at the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,

    /// The Linux e2e's guest benchmark figures to include (default:
    /// `vsmmu-guest-bench.json` in `$CARGO_TARGET_DIR`, else `target/`).
    #[arg(long)]
    guest_bench: Option<PathBuf>,

    /// Run only these benchmarks (repeatable; default: all). The report
    /// then lacks the others' keys, and their targets read as not met.
    #[arg(long, value_enum)]
    only: Vec<Part>,

    /// Busy threads of the contended pass (default: one per online CPU;
    /// 0 skips the pass).
    #[arg(long)]
    contend: Option<usize>,

    /// Hidden modes (this binary as its own baseline peer).
    #[command(subcommand)]
    mode: Option<Mode>,
}

/// One benchmark of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Propagation,
    Mmio,
    Cmdq,
    Footprint,
}

/// Hidden subcommands.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Blocking read/write ping-pong on the socket inherited as standard
    /// input: reads 32-byte requests, answers 36-byte replies.
    #[command(hide = true)]
    EchoServer {
        /// Serve from an edge-triggered epoll loop instead.
        #[arg(long)]
        epoll: bool,
    },
    /// Busy threads until standard input closes (the contended pass).
    #[command(hide = true)]
    Spin {
        /// How many.
        #[arg(long)]
        threads: usize,
    },
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// `--quick` was given.
    pub quick: bool,
    /// Events per propagation storm (whole injection batches).
    pub storm_events: u64,
    /// Storms per read mode, and floods per batching mode (medians are
    /// reported).
    pub storm_reps: usize,
    /// Single-event latency samples per read mode.
    pub latency_samples: usize,
    /// Round trips per MMIO/socket measurement.
    pub rtt_samples: usize,
    /// TLBI commands per flood with a sync every 64.
    pub flood_cmds: u64,
    /// TLBI commands per flood with a sync after each.
    pub flood_cmds_n1: u64,
    /// Spawns timed for the startup figure.
    pub startup_samples: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                storm_events: 20 * 1024,
                storm_reps: 1,
                latency_samples: 300,
                rtt_samples: 3_000,
                flood_cmds: 20_000,
                flood_cmds_n1: 2_000,
                startup_samples: 3,
            }
        } else {
            Plan {
                quick,
                storm_events: 200 * 1024,
                storm_reps: 5,
                latency_samples: 3_000,
                rtt_samples: 30_000,
                flood_cmds: 256_000,
                flood_cmds_n1: 10_000,
                startup_samples: 11,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::EchoServer { epoll }) => return echo::serve_stdin(epoll),
        Some(Mode::Spin { threads }) => return contend::serve_spin(threads),
        None => {}
    }
    let plan = Plan::new(args.quick);
    let bin = locate::vsmmud(args.vsmmud.clone(), !args.no_build)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.contend.unwrap_or(cpus);
    let t0 = Instant::now();
    eprintln!(
        "vsmmu-bench ({} run) against {}",
        if plan.quick { "quick" } else { "full" },
        bin.display()
    );

    let mut r = report::Report::new(&plan, &bin, threads);
    r.set_load("start");
    let all = [Part::Propagation, Part::Mmio, Part::Cmdq, Part::Footprint];
    // In their usual order, each once.
    let parts: Vec<Part> = all
        .into_iter()
        .filter(|p| args.only.is_empty() || args.only.contains(p))
        .collect();
    passes(&bin, &plan, &parts, &mut r, "idle")?;
    if threads > 0 {
        r.set_load("before_contended");
        let c = contend::Contention::start(threads)?;
        r.set_pass(true);
        passes(&bin, &plan, &parts, &mut r, "contended")?;
        r.set_pass(false);
        r.set("contend_cpus_used", c.cpus_used());
        r.set("contend_threads", c.threads() as f64);
    }
    r.set("bench_wall_s", t0.elapsed().as_secs_f64());
    let guest_path = args
        .guest_bench
        .unwrap_or_else(|| guest::default_path(&locate::workspace_root()));
    if let Some(g) = guest::read(&guest_path)? {
        r.set_guest(g);
    }

    print!("{}", r.table());
    let out = args.out.unwrap_or_else(locate::default_json_path);
    r.write_json(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// One pass of the chosen benchmarks.
fn passes(
    bin: &Path,
    plan: &Plan,
    parts: &[Part],
    r: &mut report::Report,
    pass: &str,
) -> anyhow::Result<()> {
    type Run = fn(&Path, &Plan, &mut report::Report) -> anyhow::Result<()>;
    let n = parts.len();
    for (i, part) in parts.iter().enumerate() {
        // What the progress line says, what an error names, the benchmark.
        let (doing, what, run): (&str, &str, Run) = match part {
            Part::Propagation => ("host-event propagation", "propagation", propagation::run),
            Part::Mmio => ("MMIO round trip", "MMIO round-trip", mmio::run),
            Part::Cmdq => ("command queue floods", "command queue", cmdq::run),
            Part::Footprint => ("idle footprint and startup", "footprint", footprint::run),
        };
        eprintln!("[{pass} {}/{n}] {doing}", i + 1);
        run(bin, plan, r).with_context(|| format!("{what} benchmark ({pass})"))?;
    }
    Ok(())
}
