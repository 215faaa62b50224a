//! MMIO round trip: REGION_READ of IDR0 through `client-shim` against a
//! raw Unix-socket ping-pong of the same sizes (32-byte request, 36-byte
//! reply) between the same two processes (this one and a child on a
//! socketpair). Rounds of each alternate, so both see the same machine.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use vsmmu_protocol::smmu::regs::IDR0;
use vsmmu_protocol::vfio_user::{Command, Message, RegionAccess};

use crate::echo::{EchoPeer, REPLY, REQUEST};
use crate::report::Report;
use crate::sample::Samples;
use crate::server::client;
use crate::Plan;

/// Round trips per alternating round.
const ROUND: usize = 500;
/// Unmeasured round trips of each kind first.
const WARMUP: usize = 2_000;

/// The bytes of a REGION_READ of 4 bytes at IDR0, as the client sends.
fn region_read_request() -> anyhow::Result<[u8; REQUEST]> {
    let a = RegionAccess {
        offset: IDR0,
        region: 0,
        count: 4,
    };
    let msg = Message::command(1, Command::RegionRead).push(&a).finish();
    match <[u8; REQUEST]>::try_from(msg.as_slice()) {
        Ok(req) => Ok(req),
        Err(_) => bail!(
            "a REGION_READ request is {} bytes, not {REQUEST}",
            msg.len()
        ),
    }
}

/// Runs the round-trip comparison and fills the report.
pub fn run(bin: &Path, plan: &Plan, r: &mut Report) -> anyhow::Result<()> {
    let mut c = client(bin, &[])?;
    let mut echo = EchoPeer::spawn()?;
    let req = region_read_request()?;
    let mut reply = [0u8; REPLY];
    let idr0 = c.read32(IDR0)?;
    for _ in 0..WARMUP {
        if c.read32(IDR0)? != idr0 {
            bail!("IDR0 changed");
        }
        echo.round_trip(&req, &mut reply)?;
    }
    let mut mmio = Samples::with_capacity(plan.rtt_samples);
    let mut raw = Samples::with_capacity(plan.rtt_samples);
    while mmio.len() < plan.rtt_samples {
        let k = ROUND.min(plan.rtt_samples - mmio.len());
        for _ in 0..k {
            let t0 = Instant::now();
            let v = c.read32(IDR0)?;
            mmio.push(t0.elapsed());
            if v != idr0 {
                bail!("IDR0 read {v:#x}, first {idr0:#x}");
            }
        }
        for _ in 0..k {
            let t0 = Instant::now();
            echo.round_trip(&req, &mut reply)?;
            raw.push(t0.elapsed());
        }
    }
    let (m, s) = (mmio.median_us(), raw.median_us());
    r.set("mmio_rtt_us", m);
    r.set("mmio_rtt_p99_us", mmio.percentile_us(99.0));
    r.set("raw_socket_rtt_us", s);
    r.set("raw_socket_rtt_p99_us", raw.percentile_us(99.0));
    r.set("mmio_rtt_ratio", m / s);
    r.set("mmio_rtt_samples", mmio.len() as f64);
    Ok(())
}
