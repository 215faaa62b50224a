//! A VMM killed with SIGKILL in the middle of an event storm: the server
//! releases its mappings and eventfds, keeps the device and buffers host
//! events, and a new client mapping the same guest RAM continues with
//! nothing lost unaccounted.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_guest::GuestRam;
use vsmmu_tests::guest::RAM_BASE;
use vsmmu_tests::TestServer;

#[test]
fn sigkill_mid_storm_then_a_new_client_continues() {
    let srv = TestServer::start(&["--event-buffer", "100000", "--sim-veventq-depth", "4096"]);
    let size = 8 << 20;
    let ram = GuestRam::new(RAM_BASE, size).unwrap();
    let ram_path = format!("/proc/{}/fd/{}", std::process::id(), ram.fd().as_raw_fd());
    let mut child = Command::new(env!("CARGO_BIN_EXE_storm-client"))
        .args([
            srv.socket().to_str().unwrap(),
            &ram_path,
            &RAM_BASE.to_string(),
            &size.to_string(),
            "50000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Kill it in the middle of the storm.
    loop {
        let l = lines.next().expect("storm-client exited").unwrap();
        let n: u64 = l.trim_start_matches("injected ").parse().unwrap();
        if n >= 20_000 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    srv.wait_clients_gone();

    // A new VMM connects; before it maps RAM, more host events arrive:
    // they are buffered, not lost.
    let mut c = srv.client();
    let before = c.stats().unwrap();
    let injected_before = before.host_events_read + before.host_events_lost;
    let extra: Vec<[u64; 4]> = (0..500u64)
        .map(|i| [1 << 32 | 0x10, 0, (1 << 40) + (i << 12), 0])
        .collect();
    assert_eq!(c.sim_inject(&extra).unwrap(), (500, 0));
    let t0 = std::time::Instant::now();
    loop {
        let s = c.stats().unwrap();
        if s.host_events_read + s.host_events_lost >= injected_before + 500 {
            break;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    }
    assert!(c.stats().unwrap().events_buffered >= 500);

    // The guest driver resumes on the same RAM and drains everything.
    let opts = DriverOptions {
        cmdq_max_shift: 8,
        evtq_max_shift: 8,
        ..DriverOptions::default()
    };
    let mut d = SmmuDriver::resume(c, ram, RAM_BASE + (4 << 20), opts).unwrap();
    let mut iovas = Vec::new();
    loop {
        let pass = d.evtq_pass().unwrap();
        iovas.extend(pass.events.iter().map(|e| e.raw[2]));
        let s = d.client.stats().unwrap();
        if pass.events.is_empty() && s.events_buffered == 0 {
            break;
        }
    }
    let s = d.client.stats().unwrap();
    // Nothing dropped: the buffer was large enough, the sim vEVENTQ was
    // drained promptly.
    assert_eq!(s.guest_events_dropped, 0);
    assert_eq!(s.host_events_lost, 0);
    assert_eq!(
        s.host_events_read,
        s.guest_events_written + s.events_dropped_disabled
    );
    // What the new driver saw continues exactly where the dead one stopped:
    // consecutive storm records, then the 500 injected while no RAM was mapped.
    let (storm, tail): (Vec<u64>, Vec<u64>) = iovas.iter().partition(|&&a| a < 1 << 40);
    assert!(!storm.is_empty());
    let first = storm[0] >> 12;
    let expect: Vec<u64> = (first..first + storm.len() as u64)
        .map(|i| i << 12)
        .collect();
    assert_eq!(storm, expect, "storm records contiguous and in order");
    assert_eq!(tail, extra.iter().map(|r| r[2]).collect::<Vec<_>>());
    // And together with what the dead driver consumed they are all of them.
    let injected_total = s.host_events_read;
    assert_eq!(
        storm.last().map(|l| (l >> 12) + 1),
        Some(injected_total - 500)
    );
}
