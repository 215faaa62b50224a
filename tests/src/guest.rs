//! A booted guest: `vsmmud` + the model guest driver over fresh guest RAM.

use vsmmu_client::driver::{DriverOptions, SmmuDriver};
use vsmmu_client::GuestRam;

use crate::TestServer;

/// Guest RAM base used by the tests (QEMU virt's RAM starts at 1 GiB).
pub const RAM_BASE: u64 = 0x4000_0000;

/// Starts `vsmmud` with `args` and boots the SMMU with the model driver
/// over `ram_size` bytes of guest RAM (tables from `RAM_BASE + 1 MiB`).
pub fn boot(args: &[&str], ram_size: usize, opts: DriverOptions) -> (TestServer, SmmuDriver) {
    let srv = TestServer::start(args);
    let drv = boot_on(&srv, ram_size, opts);
    (srv, drv)
}

/// Boots the model driver on an already running server.
pub fn boot_on(srv: &TestServer, ram_size: usize, opts: DriverOptions) -> SmmuDriver {
    let client = srv.client();
    let ram = GuestRam::new(RAM_BASE, ram_size).expect("guest RAM");
    SmmuDriver::probe(client, ram, RAM_BASE + 0x10_0000, opts).expect("probe")
}

/// Small queues so tests can fill them: CMDQ 2^8, EVTQ 2^`evtq_shift`.
pub fn small(evtq_shift: u8) -> DriverOptions {
    DriverOptions {
        cmdq_max_shift: 8,
        evtq_max_shift: evtq_shift,
        ..DriverOptions::default()
    }
}
