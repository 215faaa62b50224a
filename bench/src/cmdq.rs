//! Command queue: TLBI_NH_VA floods with a CMD_SYNC every N commands
//! (N = 64, Linux's CMDQ_BATCH_ENTRIES, and N = 1), issued by the model
//! guest driver as Linux does (posted CMDQ_PROD write, CMDQ_CONS polled
//! for the sync); batched host invalidations against `vsmmud --no-batch`
//! (one host call per command, as QEMU does).

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_protocol::smmu::command::{Command, TlbiRange};
use vsmmu_protocol::stats::Stats;

use crate::report::Report;
use crate::sample::median;
use crate::server::boot;
use crate::Plan;

/// Unmeasured syncs first.
const WARMUP_SYNCS: u64 = 64;

/// What one flood gave.
#[derive(Debug, Clone, Copy)]
struct Flood {
    cmds_per_s: f64,
    host_calls_per_cmd: f64,
    host_entries_per_cmd: f64,
}

/// Runs the floods and fills the report: for each N, `plan.storm_reps`
/// rounds alternating batched and unbatched servers; medians reported.
pub fn run(bin: &Path, plan: &Plan, r: &mut Report) -> anyhow::Result<()> {
    for (n, total, suffix) in [
        (64usize, plan.flood_cmds, ""),
        (1, plan.flood_cmds_n1, "_n1"),
    ] {
        let mut floods: [Vec<Flood>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..plan.storm_reps {
            for (i, args) in [&[][..], &["--no-batch"][..]].into_iter().enumerate() {
                let mut d = boot(bin, args, 16 << 20, DriverOptions::default())?;
                floods[i].push(flood(&mut d, n, total)?);
            }
        }
        for (mode, f) in ["batched", "unbatched"].into_iter().zip(&floods) {
            let m = |g: fn(&Flood) -> f64| median(&f.iter().map(g).collect::<Vec<_>>());
            r.set(&format!("cmds_per_s_{mode}{suffix}"), m(|f| f.cmds_per_s));
            r.set(
                &format!("host_calls_per_cmd_{mode}{suffix}"),
                m(|f| f.host_calls_per_cmd),
            );
            r.set(
                &format!("host_entries_per_cmd_{mode}{suffix}"),
                m(|f| f.host_entries_per_cmd),
            );
        }
        r.set(&format!("flood_cmds{suffix}"), total as f64);
    }
    r.set(
        "cmds_ratio",
        r.get("cmds_per_s_batched") / r.get("cmds_per_s_unbatched"),
    );
    // CMD_SYNC completion: Linux polls CMDQ_CONS over MMIO (with
    // `vsmmud --no-msi`: IDR0.MSI = 0, as QEMU) or, by default, its own
    // memory for the MSI write.
    let mut lat: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..plan.storm_reps {
        for (i, args) in [&["--no-msi"][..], &[][..]].into_iter().enumerate() {
            let mut d = boot(bin, args, 16 << 20, DriverOptions::default())?;
            if d.features.msi != (i == 1) {
                bail!("the driver did not pick the expected CMD_SYNC completion");
            }
            lat[i].push(sync_us(&mut d, plan.flood_cmds_n1)?);
        }
    }
    r.set("cmd_sync_us_polled", median(&lat[0]));
    r.set("cmd_sync_us_msi", median(&lat[1]));
    Ok(())
}

/// Median microseconds of an empty CMD_SYNC (doorbell to completion seen).
fn sync_us(d: &mut SmmuDriver, n: u64) -> anyhow::Result<f64> {
    for _ in 0..WARMUP_SYNCS {
        d.issue(&[], true)?;
    }
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t0 = Instant::now();
        d.issue(&[], true)?;
        v.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&v))
}

/// `total` TLBI_NH_VA commands, a CMD_SYNC after every `n`.
fn flood(d: &mut SmmuDriver, n: usize, total: u64) -> anyhow::Result<Flood> {
    let cmds: Vec<Command> = (0..n as u64)
        .map(|i| Command::TlbiNhVa {
            vmid: 0,
            asid: 1,
            range: TlbiRange::va(i << 12, true),
        })
        .collect();
    for _ in 0..WARMUP_SYNCS {
        d.issue(&cmds, true)?;
    }
    let syncs = total.div_ceil(n as u64);
    let s0 = d.client.stats()?;
    let t0 = Instant::now();
    for _ in 0..syncs {
        d.issue(&cmds, true)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s1 = d.client.stats()?;
    let delta = |counter: fn(&Stats) -> u64| counter(&s1).saturating_sub(counter(&s0));
    let sent = syncs * n as u64;
    if delta(|s| s.host_invalidate_entries) != sent || delta(|s| s.cmd_errors) != 0 {
        bail!(
            "{sent} TLBIs issued, {} reached the host, {} command errors",
            delta(|s| s.host_invalidate_entries),
            delta(|s| s.cmd_errors)
        );
    }
    Ok(Flood {
        cmds_per_s: sent as f64 / secs,
        host_calls_per_cmd: delta(|s| s.host_invalidate_calls) as f64 / sent as f64,
        host_entries_per_cmd: delta(|s| s.host_invalidate_entries) as f64 / sent as f64,
    })
}
