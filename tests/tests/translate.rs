//! VSMMU_TRANSLATE: addresses of devices the VMM emulates (QEMU's IOMMU
//! memory regions) translated through the guest's stage-1 tables by the
//! real `vsmmud`; faults reach the guest's event queue.

use std::time::{Duration, Instant};

use vsmmu_guest::driver::LoggedEvent;
use vsmmu_guest::driver::SmmuDriver;
use vsmmu_guest::pgtable::{tlbi_va, PageTable, Prot};
use vsmmu_guest::GuestRam;
use vsmmu_protocol::notify::Record;
use vsmmu_protocol::smmu::cd::Granule;
use vsmmu_protocol::smmu::command::Command;
use vsmmu_protocol::smmu::regs::{CMDQ_CONS, IDR5_OAS};
use vsmmu_protocol::smmu::ste::Ste;
use vsmmu_protocol::vfio_user::{SIM_DMA_ABORTED, TRANSLATE_NO_EVENT, TRANSLATE_WRITE};
use vsmmu_tests::guest::{boot, small, RAM_BASE};
use vsmmu_tests::TestServer;

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
        (0, buf + 0x1234, 0xfff, 3)
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
    assert_eq!((s.translations, s.translation_faults), (6, 3));

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
fn drain(d: &mut SmmuDriver, want: usize) -> Vec<LoggedEvent> {
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while seen.len() < want && t0.elapsed() < Duration::from_secs(5) {
        d.wait_evtq_irq(Duration::from_millis(20));
        seen.extend(d.evtq_pass().unwrap().events);
    }
    seen.extend(d.evtq_pass().unwrap().events);
    seen
}

/// The client's IOTLB: a repeated translation makes no round trip, and after
/// the guest unmaps, invalidates (TLBI_NH_VA) and syncs, the next access
/// faults instead of using the cached translation.
/// A device at StreamID 0x08 with the client's IOTLB enabled, its stage-1
/// tables in the first 512 KiB of a 1 MiB allocation (`tables`) holding
/// what `map` maps; output addresses from `buf`. Returns `(server,
/// driver, buf, tables, root)`.
fn iotlb_device(
    map: impl FnOnce(&mut PageTable<'_, GuestRam>, u64),
) -> (TestServer, SmmuDriver, u64, u64, u64) {
    let (srv, mut d) = boot(&[], 8 << 20, small(6));
    d.client.attach_device(0x08, None).unwrap();
    d.client.enable_iotlb(6).unwrap();
    let tables = d.alloc(1 << 20, 4096).unwrap();
    let buf = RAM_BASE + (5 << 20);
    let ips = IDR5_OAS.get32(d.features.idr[5]) as u8;
    let (root, cd) = {
        let mut pt = PageTable::new(&d.ram, Granule::K4, 25, tables, tables + (512 << 10)).unwrap();
        map(&mut pt, buf);
        (pt.root(), pt.cd(ips, 9))
    };
    d.attach_s1(0x08, cd).unwrap();
    (srv, d, buf, tables, root)
}

#[test]
fn iotlb_never_serves_what_the_guest_invalidated() {
    let (_srv, mut d, buf, tables, root) = iotlb_device(|pt, buf| {
        pt.map(0x20_0000, buf, 0x2000, Prot::RW).unwrap();
    });
    let sid = 0x08;
    let translations = |d: &mut SmmuDriver| d.client.stats().unwrap().translations;

    let n0 = translations(&mut d);
    // perm is what the page allows (read and write), not the access.
    let r = d.client.translate(sid, None, 0x20_0010, 0).unwrap();
    assert_eq!(
        (r.status, r.addr, r.mask, r.perm),
        (0, buf + 0x10, 0xfff, 3)
    );
    let r = d.client.translate(sid, None, 0x20_0ff0, 0).unwrap();
    assert_eq!(
        (r.status, r.addr, r.mask, r.perm),
        (0, buf + 0xff0, 0xfff, 3)
    );
    // The miss brought the mapping's next page along (TRANSLATE_AHEAD),
    // and stopped at the unmapped one after it, without an event.
    assert_eq!(d.client.stats().unwrap().translations_ahead, 1);
    let r = d.client.translate(sid, None, 0x20_1008, 0).unwrap();
    assert_eq!((r.status, r.addr, r.perm), (0, buf + 0x1008, 3));
    // The page is writable: a write is served from the cache as well.
    let r = d
        .client
        .translate(sid, None, 0x20_0020, TRANSLATE_WRITE)
        .unwrap();
    assert_eq!((r.status, r.addr, r.perm), (0, buf + 0x20, 3));
    assert_eq!(translations(&mut d), n0 + 1);
    let s = d.client.iotlb_stats().unwrap();
    assert_eq!((s.hits, s.misses), (3, 1));

    // Unmapped in the guest's tables but not invalidated: like the SMMU's
    // own TLB, the IOTLB may still answer (the architecture allows it).
    {
        let mut pt = PageTable::from_root(
            &d.ram,
            Granule::K4,
            25,
            root,
            tables + (512 << 10),
            tables + (1 << 20),
        )
        .unwrap();
        pt.unmap(0x20_0000, 0x1000).unwrap();
    }
    let r = d.client.translate(sid, None, 0x20_0030, 0).unwrap();
    assert_eq!((r.status, r.addr), (0, buf + 0x30));
    // TLBI_NH_VA + CMD_SYNC: the next access goes to vsmmud and faults.
    d.issue_raw(&[tlbi_va(9, 0x20_0000, true)], true).unwrap();
    let r = d.client.translate(sid, None, 0x20_0030, 0).unwrap();
    assert_eq!((r.status, r.perm), (0x10, 0));
    // The other page of the mapping was cached too and survives.
    let r = d.client.translate(sid, None, 0x20_1000, 0).unwrap();
    assert_eq!((r.status, r.addr), (0, buf + 0x1000));
    let seen = drain(&mut d, 1);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (
            seen[0].event.event_type,
            seen[0].event.sid,
            seen[0].event.input_addr
        ),
        (0x10, sid, 0x20_0030)
    );
    let s = d.client.stats().unwrap();
    // CFGI_STE of the attach, then the TLBI_NH_VA; no kick without a handler.
    assert_eq!(s.notify_records, 2);
    assert_eq!(s.notify_kicks, 0);
}

/// What a cache miss brings along: the neighbours on both sides of a
/// random miss (one I/O's buffers, mapped top down), then 63 granules in
/// the direction a transfer walks once a miss lands just past the last.
#[test]
fn iotlb_fetches_around_a_miss_then_in_the_transfer_direction() {
    // One request: a read-only header page, two data pages, a status page;
    // and a 768 KiB transfer of 192 pages.
    let (_srv, mut d, buf, _, _) = iotlb_device(|pt, buf| {
        pt.map(0x40_0000, buf, 0x1000, Prot::RO).unwrap();
        pt.map(0x40_1000, buf + 0x1000, 0x3000, Prot::RW).unwrap();
        pt.map(0x60_0000, buf, 0xc_0000, Prot::RW).unwrap();
    });
    let sid = 0x08;
    let stats = |d: &mut SmmuDriver| d.client.stats().unwrap();

    // A random miss in the middle: the page after, the one before, the
    // next after; both sides stop at their first unmapped page.
    let r = d.client.translate(sid, None, 0x40_1800, 0).unwrap();
    assert_eq!((r.status, r.addr, r.perm), (0, buf + 0x1800, 3));
    assert_eq!(stats(&mut d).translations_ahead, 3);
    for (iova, flags, addr, perm) in [
        (0x40_0010, 0, buf + 0x10, 1),
        (0x40_2000, TRANSLATE_WRITE, buf + 0x2000, 3),
        (0x40_3ff0, TRANSLATE_WRITE, buf + 0x3ff0, 3),
    ] {
        let r = d.client.translate(sid, None, iova, flags).unwrap();
        assert_eq!((r.status, r.addr, r.perm), (0, addr, perm), "{iova:#x}");
    }
    // The read-only page was cached as such: a write misses and faults.
    let r = d
        .client
        .translate(sid, None, 0x40_0020, TRANSLATE_WRITE | TRANSLATE_NO_EVENT)
        .unwrap();
    assert_eq!((r.status, r.perm), (0x13, 0));
    assert_eq!(stats(&mut d).translations, 2);

    // A transfer walked top down: its top page brings the 63 below it (none
    // above: unmapped); a miss just below those brings the 63 below it
    // (behind only), and so does the next.
    let (t0, a0) = (stats(&mut d).translations, stats(&mut d).translations_ahead);
    for page in (0..192u64).rev() {
        let iova = 0x60_0000 + page * 0x1000;
        let r = d
            .client
            .translate(sid, None, iova, TRANSLATE_WRITE)
            .unwrap();
        assert_eq!((r.status, r.addr), (0, buf + page * 0x1000), "{iova:#x}");
    }
    assert_eq!(stats(&mut d).translations - t0, 3);
    assert_eq!(stats(&mut d).translations_ahead - a0, 3 * 63);
    let s = d.client.iotlb_stats().unwrap();
    assert_eq!((s.hits, s.misses), (3 + 189, 2 + 3));
}

/// With a notify handler (IOMMU notifiers), a CMD_SYNC after an
/// invalidation completes only once the VMM drained the ring: vsmmud kicks
/// the eventfd and holds CMDQ_CONS at the sync until the acknowledgement.
#[test]
fn cmd_sync_waits_for_the_vmm_to_drain_invalidations() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    d.client.enable_iotlb(4).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    d.client
        .set_notify_handler(Some(Box::new(move |r| tx.send(*r).unwrap())));
    let kick = d.client.notify_fd().unwrap();

    // TLBI_NH_VA then CMD_SYNC (SEV), without waiting for the sync.
    d.issue_raw(&[tlbi_va(3, 0x40_0000, true)], false).unwrap();
    let sync_ptr = d.client.read32(CMDQ_CONS).unwrap();
    d.issue_raw(&[Command::sync_sev().encode()], false).unwrap();
    // CONS stays at the sync; vsmmud kicked the eventfd.
    assert!(wait_readable(kick, Duration::from_secs(5)));
    assert_eq!(d.client.read32(CMDQ_CONS).unwrap(), sync_ptr);
    assert!(rx.try_recv().is_err());
    let s = d.client.stats().unwrap();
    assert_eq!(s.notify_kicks, 1);

    d.client.notify_drain();
    assert_eq!(rx.try_recv().unwrap(), Record::addresses(0x40_0000, 1));
    let t0 = Instant::now();
    while d.client.read32(CMDQ_CONS).unwrap() == sync_ptr {
        assert!(t0.elapsed() < Duration::from_secs(5), "CMD_SYNC still held");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(d.client.read32(CMDQ_CONS).unwrap(), sync_ptr + 1);
    assert_eq!(d.client.stats().unwrap().cmd_errors, 0);
}

fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: `fd` is the client's kick eventfd, open while `d` lives.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut p = [PollFd::new(b, PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::NONE);
    poll(&mut p, ms).unwrap_or(0) == 1
}
