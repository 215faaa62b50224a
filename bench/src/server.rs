//! Starting the `vsmmud` under test the way a VMM does: on a socketpair
//! through `client-shim`, seccomp `kill` (its default), quiet logs.

use std::path::Path;

use anyhow::Context;
use clap::Parser;
use vsmmu_client::{Client, SpawnOptions};
use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_guest::GuestRam;
use vsmmu_server::Args;
use vsmmu_server::Config;

/// Guest RAM base (QEMU virt's RAM starts at 1 GiB).
pub const RAM_BASE: u64 = 0x4000_0000;
/// Where the driver's tables start in guest RAM.
pub const TABLE_BASE: u64 = RAM_BASE + 0x10_0000;

/// Spawn options: `bin` with `extra` arguments, logs at `warn`.
pub fn options(bin: &Path, extra: &[&str]) -> SpawnOptions {
    let mut o = SpawnOptions::new(bin);
    o.seccomp = "kill".into();
    o.args = ["--log-level", "warn"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    o
}

/// Checks a command line with `vsmmud`'s own parser and validation, as
/// `Client::spawn` will give it (`--fd 3 --seccomp kill` first).
pub fn check_args(extra: &[&str]) -> anyhow::Result<()> {
    let o = options(Path::new("vsmmud"), extra);
    let argv = ["vsmmud", "--fd", "3", "--seccomp", &o.seccomp]
        .into_iter()
        .map(String::from)
        .chain(o.args);
    let args = Args::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    Config::try_from(args).with_context(|| format!("vsmmud arguments {extra:?}"))?;
    Ok(())
}

/// Spawns `vsmmud` and negotiates with the vsmmu extension.
pub fn client(bin: &Path, extra: &[&str]) -> anyhow::Result<Client> {
    check_args(extra)?;
    let mut c = Client::spawn(&options(bin, extra)).context("spawning vsmmud")?;
    c.negotiate(true).context("VERSION negotiation")?;
    Ok(c)
}

/// Spawns `vsmmud` and boots the SMMU with the model guest driver over
/// `ram_size` bytes of fresh guest RAM.
pub fn boot(
    bin: &Path,
    extra: &[&str],
    ram_size: usize,
    opts: DriverOptions,
) -> anyhow::Result<SmmuDriver> {
    let c = client(bin, extra)?;
    let ram = GuestRam::new(RAM_BASE, ram_size).context("guest RAM")?;
    SmmuDriver::probe(c, ram, TABLE_BASE, opts).context("driver probe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_checked() {
        check_args(&[]).unwrap();
        check_args(&["--veventq-read", "single", "--sim-veventq-depth", "32768"]).unwrap();
        check_args(&["--no-batch"]).unwrap();
        assert!(check_args(&["--sim-veventq-depth", "0"]).is_err());
        assert!(check_args(&["--no-such-option"]).is_err());
    }
}
