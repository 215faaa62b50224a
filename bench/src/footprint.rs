//! Idle footprint and startup: VmRSS of a serving `vsmmud` after VERSION
//! negotiation and the guest driver's probe, and the time from spawn to
//! the first successful VERSION reply.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use vsmmu_client::Client;
use vsmmu_guest::driver::DriverOptions;

use crate::report::Report;
use crate::sample::Samples;
use crate::server::{boot, options};
use crate::{proc, Plan};

/// Runs the footprint measurements and fills the report.
pub fn run(bin: &Path, plan: &Plan, r: &mut Report) -> anyhow::Result<()> {
    let mut startup = Samples::with_capacity(plan.startup_samples);
    for _ in 0..plan.startup_samples {
        let t0 = Instant::now();
        let mut c = Client::spawn(&options(bin, &[])).context("spawning vsmmud")?;
        c.negotiate(true).context("VERSION negotiation")?;
        startup.push(t0.elapsed());
        c.close().context("stopping vsmmud")?;
    }
    r.set("startup_ms", startup.median_us() / 1000.0);

    // A Linux-sized guest: CMDQ 2^16, EVTQ 2^15, 2-level stream table.
    let d = boot(bin, &[], 16 << 20, DriverOptions::default())?;
    let pid = d.client.server_pid().context("no server pid")?;
    // Let the server go idle in its poll.
    std::thread::sleep(Duration::from_millis(50));
    let m = proc::memory(pid)?;
    r.set("idle_rss_kib", m.rss as f64);
    r.set("idle_rss_anon_kib", m.anon as f64);
    r.set("idle_rss_file_kib", m.file as f64);
    r.set("idle_rss_shmem_kib", m.shmem as f64);
    r.set("idle_hwm_kib", m.hwm as f64);
    Ok(())
}
