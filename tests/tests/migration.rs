//! Device state save/restore through vfio-user migration: save in one
//! `vsmmud`, load into a fresh one, and the guest driver continues with
//! identical registers and queue positions; bad streams are refused and
//! leave the device as it was.

use vsmmu_client::ClientError;
use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_protocol::smmu::command::Command;
use vsmmu_protocol::smmu::regs::*;
use vsmmu_protocol::vfio_user::mig_state::*;
use vsmmu_tests::guest::{boot, small, snapshot, RAM_BASE};
use vsmmu_tests::TestServer;

fn fault(i: u64) -> [u64; 4] {
    [3 << 32 | 0x10, 0, i << 12, 0]
}

#[test]
fn save_in_one_server_load_in_another() {
    // Source: boot, attach, leave 5 events pending in the guest queue and
    // 3 in the server's buffer (guest queue of 8 entries, 3 overflow).
    let (src, mut d) = boot(&["--sim-veventq-depth", "64"], 8 << 20, small(3));
    d.client.attach_device(3, None).unwrap();
    d.client
        .sim_inject(&(0..4).map(fault).collect::<Vec<_>>())
        .unwrap();
    let first = d.evtq_pass().unwrap();
    assert_eq!(first.events.len(), 4);
    d.client
        .sim_inject(&(4..15).map(fault).collect::<Vec<_>>())
        .unwrap();
    let t0 = std::time::Instant::now();
    while d.client.stats().unwrap().host_events_read < 15 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    }
    assert_eq!(d.client.stats().unwrap().events_buffered, 3);
    let before = snapshot(&mut d.client);

    d.client.mig_set_state(STOP_COPY).unwrap();
    assert_eq!(d.client.mig_state().unwrap(), STOP_COPY);
    let blob = d.client.mig_read_all(100).unwrap();
    assert_eq!(&blob[..8], b"VSMU\x01\0\0\0");
    d.client.mig_set_state(STOP).unwrap();

    // Destination: a fresh server, the same guest RAM, mapped before the
    // state loads (as QEMU's memory listener does at realize).
    let dst = TestServer::start(&["--sim-veventq-depth", "64"]);
    let mut c = dst.client();
    let size = d.ram.size() as u64;
    c.dma_map(d.ram.fd(), 0, RAM_BASE, size).unwrap();
    c.mig_set_state(RESUMING).unwrap();
    c.mig_write_all(&blob, 64).unwrap();
    c.mig_set_state(RUNNING).unwrap();
    assert_eq!(snapshot(&mut c), before);
    assert_eq!(c.stats().unwrap().model_events, 0);
    c.dma_unmap(RAM_BASE, size).unwrap();
    drop(src);

    // The guest driver continues on the destination.
    let ram = std::mem::replace(&mut d.ram, vsmmu_guest::GuestRam::new(0, 4096).unwrap());
    let mut d2 = SmmuDriver::resume(
        c,
        ram,
        RAM_BASE + (6 << 20),
        DriverOptions {
            use_msi: false,
            ..small(3)
        },
    )
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(
            d2.evtq_pass()
                .unwrap()
                .events
                .iter()
                .map(|e| e.raw[2] >> 12),
        );
    }
    assert_eq!(seen, (4..15).collect::<Vec<_>>());
    // Commands still work, and the attached vSID came along.
    d2.issue(&[Command::TlbiNsnhAll], true).unwrap();
    assert_eq!(d2.client.attach_device(3, None).unwrap_err().errno(), 17);
    // Counters are per process: the destination wrote the 3 it loaded.
    assert_eq!(d2.client.stats().unwrap().guest_events_written, 3);
}

#[test]
fn bad_streams_are_refused_and_change_nothing() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    c.write32(CR1, 0xd75).unwrap();
    let before = snapshot(&mut c);
    for (blob, why) in [
        (b"VSMU\x02\0\0\0rest".to_vec(), "version"),
        (b"NOPE\x01\0\0\0".to_vec(), "magic"),
        (b"VSMU\x01\0\0\0\x07\x07".to_vec(), "corrupt"),
        (Vec::new(), "empty"),
    ] {
        c.mig_set_state(RESUMING).unwrap();
        c.mig_write_all(&blob, 64).unwrap();
        let e = c.mig_set_state(STOP).unwrap_err();
        assert!(
            matches!(e, ClientError::Remote { errno: 22, .. }),
            "{why}: {e}"
        );
        assert_eq!(c.mig_state().unwrap(), RESUMING, "{why}");
        assert_eq!(snapshot(&mut c), before, "{why}");
        // Reset leaves the migration states.
        c.reset().unwrap();
        assert_eq!(c.mig_state().unwrap(), RUNNING);
        c.write32(CR1, 0xd75).unwrap();
    }
    // The client sees EINVAL for each; the log tells an operator why.
    assert!(srv
        .log_text()
        .contains("state stream version 2, this vsmmud reads version 1"));
    // MIG_DATA outside the saving/resuming states.
    assert_eq!(c.mig_read_all(64).unwrap_err().errno(), 22);
    assert_eq!(c.mig_write_all(b"x", 64).unwrap_err().errno(), 22);
    // PRE_COPY is not offered.
    assert_eq!(c.mig_set_state(PRE_COPY).unwrap_err().errno(), 22);
}
