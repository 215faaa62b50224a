//! A VMM that boots the SMMU and runs an event storm until it is killed:
//! the reconnect test SIGKILLs it in the middle.
//!
//! `storm-client SOCKET RAM_FILE RAM_BASE RAM_SIZE TOTAL`: maps the RAM file
//! (another process's memfd through /proc), probes with the model driver,
//! attaches vSID 1, then injects TOTAL F_TRANSLATION records (IOVA = index
//! << 12) in bursts of 256, consuming slowly; prints `injected N` after
//! each burst.

use std::io::Write;

use vsmmu_client::Client;
use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_guest::GuestRam;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, socket, ram, base, size, total] = &a[..] else {
        eprintln!("usage: storm-client SOCKET RAM_FILE RAM_BASE RAM_SIZE TOTAL");
        std::process::exit(2);
    };
    let base: u64 = base.parse().expect("base");
    let size: usize = size.parse().expect("size");
    let total: u64 = total.parse().expect("total");
    let ram = GuestRam::open(ram.as_ref(), base, size).expect("guest RAM");
    let mut client = Client::connect(socket).expect("connect");
    client.negotiate(true).expect("negotiate");
    let opts = DriverOptions {
        cmdq_max_shift: 8,
        evtq_max_shift: 8,
        ..DriverOptions::default()
    };
    let mut d = SmmuDriver::probe(client, ram, base + 0x10_0000, opts).expect("probe");
    d.client.attach_device(1, None).expect("attach");
    let mut out = std::io::stdout();
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(256);
        let recs: Vec<[u64; 4]> = (sent..sent + k)
            .map(|i| [1 << 32 | 0x10, 0, i << 12, 0])
            .collect();
        d.client.sim_inject(&recs).expect("inject");
        sent += k;
        // A slow guest: consume one pass now and then.
        if sent % 1024 == 0 {
            d.evtq_pass().expect("evtq");
        }
        writeln!(out, "injected {sent}").ok();
        out.flush().ok();
    }
    // Stay alive until killed.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
