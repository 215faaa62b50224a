//! MMIO round trip: REGION_READ of IDR0 through `client-shim` against a
//! raw Unix-socket ping-pong of the same sizes (32-byte request, 36-byte
//! reply) between the same two processes (this one and a child on a
//! socketpair): blocking read/write, the baseline of the target, and the
//! same from an epoll loop, the floor of any event-loop server; and
//! `client-shim` against the blocking echo, which splits our overhead into
//! the client's part and the server's. Rounds of each alternate, so all see
//! the same machine.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use vsmmu_client::Client;
use vsmmu_protocol::smmu::regs::IDR0;
use vsmmu_protocol::vfio_user::{Command, Message, RegionAccess};

use crate::echo::{EchoPeer, ECHO_DATA, REPLY, REQUEST};
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
    let mut echo = EchoPeer::spawn(false)?;
    let mut echo_ep = EchoPeer::spawn(true)?;
    // client-shim over a blocking echo that answers REGION_READ replies.
    let shim_echo = EchoPeer::spawn(false)?;
    let mut shim = Client::from_stream(shim_echo.sock.try_clone()?);
    let req = region_read_request()?;
    let mut reply = [0u8; REPLY];
    let idr0 = c.read32(IDR0)?;
    for _ in 0..WARMUP {
        if c.read32(IDR0)? != idr0 {
            bail!("IDR0 changed");
        }
        echo.round_trip(&req, &mut reply)?;
        echo_ep.round_trip(&req, &mut reply)?;
        if shim.read32(IDR0)? != ECHO_DATA {
            bail!("the echo server's reply did not parse");
        }
    }
    let sleeps0 = c.stats()?.loop_sleeps;
    let mut mmio = Samples::with_capacity(plan.rtt_samples);
    let mut raw = Samples::with_capacity(plan.rtt_samples);
    let mut raw_ep = Samples::with_capacity(plan.rtt_samples);
    let mut shim_raw = Samples::with_capacity(plan.rtt_samples);
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
        for (peer, out) in [(&mut echo, &mut raw), (&mut echo_ep, &mut raw_ep)] {
            for _ in 0..k {
                let t0 = Instant::now();
                peer.round_trip(&req, &mut reply)?;
                out.push(t0.elapsed());
            }
        }
        for _ in 0..k {
            let t0 = Instant::now();
            shim.read32(IDR0)?;
            shim_raw.push(t0.elapsed());
        }
    }
    // Times the server went to sleep, per round trip (the rounds of the
    // other kinds in between add one each, a few dozen in all).
    let sleeps = c.stats()?.loop_sleeps.saturating_sub(sleeps0);
    r.set(
        "mmio_server_sleeps_per_rtt",
        sleeps as f64 / mmio.len() as f64,
    );
    let (m, s) = (mmio.median_us(), raw.median_us());
    r.set("mmio_rtt_us", m);
    r.set("mmio_rtt_p99_us", mmio.percentile_us(99.0));
    r.set("raw_socket_rtt_us", s);
    r.set("raw_socket_rtt_p99_us", raw.percentile_us(99.0));
    r.set("raw_socket_epoll_rtt_us", raw_ep.median_us());
    r.set("raw_socket_epoll_rtt_p99_us", raw_ep.percentile_us(99.0));
    r.set("client_shim_echo_rtt_us", shim_raw.median_us());
    r.set("mmio_rtt_ratio", m / s);
    r.set("mmio_rtt_ratio_vs_epoll", m / raw_ep.median_us());
    r.set("mmio_rtt_samples", mmio.len() as f64);
    Ok(())
}
