//! VSMMU_TRANSLATE: addresses of devices the VMM emulates (QEMU's IOMMU
//! memory regions) translated through the guest's stage-1 tables by the
//! real `vsmmud`; faults reach the guest's event queue.

use std::time::{Duration, Instant};

use vsmmu_client::driver::LoggedEvent;
use vsmmu_client::pgtable::{PageTable, Prot};
use vsmmu_protocol::smmu::cd::Granule;
use vsmmu_protocol::smmu::regs::IDR5_OAS;
use vsmmu_protocol::smmu::ste::Ste;
use vsmmu_protocol::vfio_user::{SIM_DMA_ABORTED, TRANSLATE_NO_EVENT, TRANSLATE_WRITE};
use vsmmu_tests::guest::{boot, small, RAM_BASE};

#[test]
fn emulated_device_translations_and_faults() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    let sid = 0x08; // 00:01.0
    d.client.attach_device(sid, None).unwrap();
    // Before the guest configures the StreamID (a device with no driver):
    // its level-1 descriptor is unused (Span 0), so the transaction is
    // C_BAD_STREAMID, reported to the guest as an emulated SMMUv3 does.
    let r = d.client.translate(sid, None, 0x1000, 0).unwrap();
    assert_eq!((r.status, r.perm), (0x02, 0));
    let early = drain(&mut d, 1);
    assert_eq!(early.len(), 1);
    assert_eq!((early[0].event.event_type, early[0].event.sid), (0x02, sid));

    let tables = d.alloc(1 << 20, 4096).unwrap();
    let buf = RAM_BASE + (5 << 20);
    let ips = IDR5_OAS.get32(d.features.idr[5]) as u8;
    let cd = {
        let mut pt = PageTable::new(&d.ram, Granule::K4, 25, tables, tables + (1 << 20)).unwrap();
        pt.map(0x20_0000, buf, 0x2000, Prot::RW).unwrap();
        pt.map(0x30_0000, buf + 0x2000, 0x1000, Prot::RO).unwrap();
        // An MSI doorbell outside RAM (the GICv2m frame of QEMU's virt).
        pt.map(0x800_0000, 0x0802_0000, 0x1000, Prot::RW).unwrap();
        pt.cd(ips, 9)
    };
    d.attach_s1(sid, cd).unwrap();

    let r = d
        .client
        .translate(sid, None, 0x20_1234, TRANSLATE_WRITE)
        .unwrap();
    assert_eq!(
        (r.status, r.addr, r.mask, r.perm),
        (0, buf + 0x1234, 0xfff, 2)
    );
    let r = d.client.translate(sid, None, 0x30_0010, 0).unwrap();
    assert_eq!((r.status, r.addr, r.perm), (0, buf + 0x2010, 1));
    // Stage 2 is the identity beyond RAM too: MSIs of emulated devices.
    let r = d
        .client
        .translate(sid, None, 0x800_0040, TRANSLATE_WRITE)
        .unwrap();
    assert_eq!((r.status, r.addr), (0, 0x0802_0040));

    // A write to a read-only page: F_PERMISSION, in the guest's queue.
    let r = d
        .client
        .translate(sid, None, 0x30_0010, TRANSLATE_WRITE)
        .unwrap();
    assert_eq!((r.status, r.perm), (0x13, 0));
    // Unmapped, without an event.
    let r = d
        .client
        .translate(sid, None, 0x40_0000, TRANSLATE_NO_EVENT)
        .unwrap();
    assert_eq!(r.status, 0x10);
    let seen = drain(&mut d, 1);
    assert_eq!(seen.len(), 1);
    let e = seen[0].event;
    assert_eq!(
        (e.event_type, e.sid, e.input_addr, e.rnw),
        (0x13, sid, 0x30_0010, false)
    );
    let s = d.client.stats().unwrap();
    assert_eq!(
        (s["translations"].as_u64(), s["translation_faults"].as_u64()),
        (Some(6), Some(3))
    );

    // Another StreamID of the same level-2 table: the driver's abort STE
    // terminates silently; an STE with V = 0 is C_BAD_STE, every time.
    let other = sid + 1;
    d.client.attach_device(other, None).unwrap();
    let r = d.client.translate(other, None, 0x1000, 0).unwrap();
    assert_eq!((r.status, r.perm), (SIM_DMA_ABORTED, 0));
    d.write_ste(other, Ste::default()).unwrap();
    for _ in 0..2 {
        let r = d.client.translate(other, None, 0x1000, 0).unwrap();
        assert_eq!((r.status, r.perm), (0x04, 0));
    }
    let bad = drain(&mut d, 2);
    assert_eq!(bad.len(), 2);
    assert!(bad
        .iter()
        .all(|e| (e.event.event_type, e.event.sid) == (0x04, other)));
    // A StreamID whose level-1 descriptor is unused.
    assert_eq!(d.client.translate(0x999, None, 0, 0).unwrap().status, 0x02);
}

/// Events in the guest's queue: waits until `want` arrived (or 5 s), then
/// takes what else is there.
fn drain(d: &mut vsmmu_client::driver::SmmuDriver, want: usize) -> Vec<LoggedEvent> {
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while seen.len() < want && t0.elapsed() < Duration::from_secs(5) {
        d.wait_evtq_irq(Duration::from_millis(20));
        seen.extend(d.evtq_pass().unwrap().events);
    }
    seen.extend(d.evtq_pass().unwrap().events);
    seen
}
