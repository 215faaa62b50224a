//! Host-event propagation: sim vEVENTQ → guest EVENTQ with the model guest
//! driver consuming, for the batched drain (default `vsmmud`) and the
//! seed-style one-40-byte-record-per-wakeup read (`--veventq-read single`,
//! as QEMU does).
//!
//! The storm is the same for both modes: `storm_events` F_TRANSLATION
//! records injected in batches of 1024 while at most eight batches are
//! in flight (so nothing is lost in either mode: the vEVENTQ and the guest
//! queue are 2^15 deep), the guest draining whatever has arrived between
//! injections with one CONS write per drained batch (`cons_per_entry:
//! false`) so that it is not the bottleneck.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_protocol::stats::Stats;

use crate::report::Report;
use crate::sample::{median, Samples};
use crate::server::boot;
use crate::{proc, Plan};

/// Records per `VSMMU_SIM_INJECT`.
const BATCH: usize = 1024;
/// Batches injected ahead of what the guest has seen.
const WINDOW_BATCHES: u64 = 8;
/// Guest EVENTQ and sim vEVENTQ LOG2SIZE.
const QUEUE_SHIFT: u8 = 15;
/// The guest StreamID the events are for.
const VSID: u32 = 5;
/// Events of the unmeasured warm-up storm.
const WARMUP_EVENTS: u64 = 8 * BATCH as u64;
/// A storm that makes no progress for this long failed.
const STALL: Duration = Duration::from_secs(10);

/// An F_TRANSLATION record for `vsid` at `iova`, as the kernel delivers it.
fn fault(vsid: u32, iova: u64) -> [u64; 4] {
    [u64::from(vsid) << 32 | 0x10, 1 << 35, iova, iova & !0xfff]
}

/// One read mode of the server.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Key suffix in the report.
    key: &'static str,
    /// `vsmmud` arguments selecting it.
    args: &'static [&'static str],
}

const BATCHED: Mode = Mode {
    key: "batched",
    args: &["--veventq-read", "batched"],
};
const SEED_STYLE: Mode = Mode {
    key: "seed_style",
    args: &["--veventq-read", "single"],
};

/// What one measured storm gave.
#[derive(Debug, Clone, Copy)]
struct Storm {
    events_per_s: f64,
    read_calls: u64,
    server_cpu_ns: Option<u64>,
    guest_cpu_ns: Option<u64>,
    lost: u64,
}

/// Runs the propagation benchmark for both modes and fills the report.
pub fn run(bin: &Path, plan: &Plan, r: &mut Report) -> anyhow::Result<()> {
    let mut rates = [Vec::new(), Vec::new()];
    let mut reads = [0u64; 2];
    let mut cpu = [Vec::new(), Vec::new()];
    let mut lost = 0u64;
    let mut latency = [
        Latency::new(plan.latency_samples),
        Latency::new(plan.latency_samples),
    ];
    let mut guest_cpu = [Vec::new(), Vec::new()];
    // One server per mode and repetition, the modes alternating so that
    // drift of a shared machine hits both alike.
    for rep in 0..plan.storm_reps {
        for (i, mode) in [BATCHED, SEED_STYLE].into_iter().enumerate() {
            let mut d = boot_guest(bin, mode)?;
            storm(&mut d, WARMUP_EVENTS).context("warm-up storm")?;
            let s =
                storm(&mut d, plan.storm_events).with_context(|| format!("{} storm", mode.key))?;
            rates[i].push(s.events_per_s);
            reads[i] += s.read_calls;
            if let Some(ns) = s.server_cpu_ns {
                cpu[i].push(ns as f64 / plan.storm_events as f64);
            }
            if let Some(ns) = s.guest_cpu_ns {
                guest_cpu[i].push(ns as f64 / plan.storm_events as f64);
            }
            lost += s.lost;
            if rep == 0 {
                latencies(&mut d, plan.latency_samples, &mut latency[i])
                    .with_context(|| format!("{} latency", mode.key))?;
            }
        }
    }
    let total = plan.storm_events * plan.storm_reps as u64;
    let rate = [median(&rates[0]), median(&rates[1])];
    let per_1000 = |k: usize| reads[k] as f64 * 1000.0 / total as f64;
    r.set("propagation_events", plan.storm_events as f64);
    r.set("propagation_batch", BATCH as f64);
    r.set("propagation_events_per_s_batched", rate[0]);
    r.set("propagation_events_per_s_seed_style", rate[1]);
    r.set("propagation_ratio", rate[0] / rate[1]);
    r.set("veventq_reads_per_1000_events", per_1000(0));
    r.set("veventq_reads_per_1000_events_seed_style", per_1000(1));
    r.set("server_cpu_ns_per_event_batched", median(&cpu[0]));
    r.set("server_cpu_ns_per_event_seed_style", median(&cpu[1]));
    r.set("server_cpu_ratio", median(&cpu[1]) / median(&cpu[0]));
    r.set("propagation_events_lost", lost as f64);
    // The sim's read is an in-process copy; a kernel vEVENTQ read is a
    // syscall. Estimate the server CPU ratio with that cost added per read.
    let syscall = proc::read_syscall_ns(100_000)?;
    r.set("read_syscall_ns", syscall);
    let with_reads = |k: usize| median(&cpu[k]) + syscall * per_1000(k) / 1000.0;
    r.set(
        "server_cpu_ratio_kernel_read_est",
        with_reads(1) / with_reads(0),
    );
    r.set("guest_cpu_ns_per_event_batched", median(&guest_cpu[0]));
    r.set("guest_cpu_ns_per_event_seed_style", median(&guest_cpu[1]));
    for (k, l) in ["", "_seed_style"].into_iter().zip(latency.iter_mut()) {
        r.set(
            &format!("propagation_latency{k}_p50_us"),
            l.seen.median_us(),
        );
        r.set(
            &format!("propagation_latency{k}_p99_us"),
            l.seen.percentile_us(99.0),
        );
        r.set(
            &format!("propagation_irq_latency{k}_p50_us"),
            l.irq.median_us(),
        );
        r.set(
            &format!("propagation_irq_latency{k}_p99_us"),
            l.irq.percentile_us(99.0),
        );
    }
    r.set("propagation_latency_samples", plan.latency_samples as f64);
    r.set(
        "propagation_irq_missing",
        (latency[0].irq_missing + latency[1].irq_missing) as f64,
    );
    Ok(())
}

fn boot_guest(bin: &Path, mode: Mode) -> anyhow::Result<SmmuDriver> {
    let depth = (1u32 << QUEUE_SHIFT).to_string();
    let mut args = vec!["--sim-veventq-depth", depth.as_str()];
    args.extend_from_slice(mode.args);
    let opts = DriverOptions {
        evtq_max_shift: QUEUE_SHIFT,
        cons_per_entry: false,
        ..DriverOptions::default()
    };
    let mut d = boot(bin, &args, 16 << 20, opts)?;
    if d.evtq_layout().1 != QUEUE_SHIFT {
        bail!(
            "guest EVENTQ is 2^{}, wanted 2^{QUEUE_SHIFT}",
            d.evtq_layout().1
        );
    }
    d.client.attach_device(VSID, None).context("attach")?;
    Ok(d)
}

/// Injects `total` events in batches and consumes them as the guest;
/// returns the rate and the server-side costs of this storm alone.
fn storm(d: &mut SmmuDriver, total: u64) -> anyhow::Result<Storm> {
    let recs: Vec<[u64; 4]> = (0..BATCH as u64).map(|i| fault(VSID, i << 12)).collect();
    let pid = d.client.server_pid().context("no server pid")?;
    let s0 = d.client.stats()?;
    let c0 = proc::cpu_ns(pid);
    let g0 = proc::cpu_ns(std::process::id());
    let t0 = Instant::now();
    let (mut next, mut seen) = (0u64, 0u64);
    let mut progress = Instant::now();
    while seen < total {
        // The host produces as long as the window allows, then the guest
        // drains what has arrived.
        while next < total && next - seen < WINDOW_BATCHES * BATCH as u64 {
            let k = (total - next).min(BATCH as u64) as usize;
            let (queued, dropped) = d.client.sim_inject(&recs[..k])?;
            if dropped != 0 || queued as usize != k {
                bail!("the sim vEVENTQ dropped {dropped} of {k} events");
            }
            next += k as u64;
        }
        let n = d.evtq_pass()?.events.len() as u64;
        if n > 0 {
            seen += n;
            progress = Instant::now();
        } else if progress.elapsed() > STALL {
            bail!("stalled: {seen} of {total} events reached the guest");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let c1 = proc::cpu_ns(pid);
    let g1 = proc::cpu_ns(std::process::id());
    let s1 = d.client.stats()?;
    let delta = |counter: fn(&Stats) -> u64| counter(&s1).saturating_sub(counter(&s0));
    if delta(|s| s.guest_events_written) != total {
        bail!(
            "the guest saw {seen} events but the server wrote {}",
            delta(|s| s.guest_events_written)
        );
    }
    Ok(Storm {
        events_per_s: total as f64 / secs,
        read_calls: delta(|s| s.veventq_read_calls),
        server_cpu_ns: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        guest_cpu_ns: g0.zip(g1).map(|(a, b)| b.saturating_sub(a)),
        lost: delta(|s| s.host_events_lost) + delta(|s| s.guest_events_dropped),
    })
}

/// Latency samples of one read mode.
#[derive(Debug)]
struct Latency {
    /// Injection until the guest's event-queue pass returned the record.
    seen: Samples,
    /// Injection until the EVTQ interrupt eventfd was signalled.
    irq: Samples,
    /// Events whose interrupt did not come within the wait.
    irq_missing: u64,
}

impl Latency {
    fn new(n: usize) -> Self {
        Latency {
            seen: Samples::with_capacity(n),
            irq: Samples::with_capacity(n),
            irq_missing: 0,
        }
    }
}

/// Injects one event at a time and waits as Linux's interrupt-driven
/// event thread does, but spinning: on the EVTQ interrupt eventfd, then on
/// event-queue passes (each reads EVENTQ_PROD) until the record shows up.
/// Without an interrupt within 2 ms the passes start anyway.
fn latencies(d: &mut SmmuDriver, n: usize, out: &mut Latency) -> anyhow::Result<()> {
    const IRQ_WAIT: Duration = Duration::from_millis(2);
    for i in 0..n {
        let rec = [fault(VSID, (i as u64) << 12)];
        d.irq_count(0);
        let t0 = Instant::now();
        d.client.sim_inject(&rec)?;
        let mut irq = None;
        loop {
            if irq.is_none() {
                if d.irq_count(0) > 0 {
                    irq = Some(t0.elapsed());
                } else if t0.elapsed() < IRQ_WAIT {
                    std::hint::spin_loop();
                    continue;
                }
            }
            let pass = d.evtq_pass()?;
            if !pass.events.is_empty() {
                if pass.events.len() != 1 || pass.events[0].raw != rec[0] {
                    bail!("expected exactly the injected record, got {pass:?}");
                }
                break;
            }
            if t0.elapsed() > STALL {
                bail!("event {i} never reached the guest");
            }
        }
        out.seen.push(t0.elapsed());
        match irq {
            Some(t) => out.irq.push(t),
            None => out.irq_missing += 1,
        }
    }
    Ok(())
}
