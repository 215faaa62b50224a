//! A booted guest: `vsmmud` + the model guest driver over fresh guest RAM.

use vsmmu_client::Client;
use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_guest::GuestRam;
use vsmmu_protocol::smmu::regs::*;

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

/// The 32-bit registers [`snapshot`] reads (then the three 64-bit bases).
const MIGRATED_REGS: [u64; 16] = [
    CR0,
    CR1,
    CR2,
    GBPA,
    IRQ_CTRL,
    GERROR,
    GERRORN,
    STRTAB_BASE_CFG,
    CMDQ_PROD,
    CMDQ_CONS,
    EVENTQ_PROD_PAGE1,
    EVENTQ_CONS_PAGE1,
    EVENTQ_IRQ_CFG1,
    GERROR_IRQ_CFG1,
    CR0ACK,
    IRQ_CTRLACK,
];

/// The registers a migration carries, as the guest reads them: equal before
/// the save and after the load when the state moved whole.
pub fn snapshot(c: &mut Client) -> Vec<u64> {
    let mut v: Vec<u64> = MIGRATED_REGS
        .iter()
        .map(|&r| c.read32(r).unwrap().into())
        .collect();
    for r in [STRTAB_BASE, CMDQ_BASE, EVENTQ_BASE] {
        v.push(c.read64(r).unwrap());
    }
    v
}
