//! Tests of the sim backend.

use super::veventq::VEVENTQ_MAX_DEPTH;
use super::*;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;
use vsmmu_protocol::iommufd::{lost_between, parse_vevents, Vevent};
use vsmmu_protocol::smmu::ste::{
    CONFIG_ABORT, CONFIG_BYPASS, CONFIG_NESTED, CONFIG_S1_TRANS, CONFIG_S2_TRANS, STE_0_CONFIG,
    STE_0_V,
};

/// STE dword 0 with V = 1 and Config `cfg`.
fn ste0(cfg: u8) -> u64 {
    STE_0_V.mask() | STE_0_CONFIG.prep(cfg.into())
}

/// A record as read back: flags, sequence, and the event for a normal
/// record.
#[derive(Debug, PartialEq, Eq)]
struct Rec {
    flags: u32,
    seq: u32,
    evt: Option<[u64; 4]>,
}

fn ev(seq: u32, evt: [u64; 4]) -> Rec {
    Rec {
        flags: 0,
        seq,
        evt: Some(evt),
    }
}

fn lost(seq: u32) -> Rec {
    Rec {
        flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
        seq,
        evt: None,
    }
}

fn parse(buf: &[u8]) -> Vec<Rec> {
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let flags = u32_at(off);
        let seq = u32_at(off + 4);
        if flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS != 0 {
            out.push(lost(seq));
            off += VEVENT_HEADER_SIZE;
        } else {
            let p = off + VEVENT_HEADER_SIZE;
            let evt = [u64_at(p), u64_at(p + 8), u64_at(p + 16), u64_at(p + 24)];
            out.push(ev(seq, evt));
            off += VEVENT_RECORD_SIZE;
        }
    }
    assert_eq!(off, buf.len(), "records must be whole");
    out
}

/// Reads once with a `size`-byte buffer and parses the result.
fn read(sim: &mut SimHost, size: usize) -> Vec<Rec> {
    let mut buf = vec![0u8; size];
    let n = sim.read_veventq(&mut buf).unwrap();
    parse(&buf[..n])
}

fn readable(sim: &SimHost) -> bool {
    let fd = sim.veventq_borrowed_fd().expect("vEVENTQ allocated");
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::ZERO).unwrap();
    n == 1 && fds[0].revents().unwrap().contains(PollFlags::POLLIN)
}

/// An F_TRANSLATION event for vSID `vsid`, tagged with `tag` in IPA.
fn evt(vsid: u32, tag: u64) -> [u64; 4] {
    [(u64::from(vsid) << 32) | 0x10, 0, 0x1000 * tag, tag]
}

fn sim_with_queue(cfg: SimConfig, depth: u32) -> SimHost {
    let mut sim = SimHost::new(cfg);
    sim.attach_device(0, None).unwrap();
    sim.alloc_veventq(depth).unwrap();
    sim
}

#[test]
fn kernel_selftest_scenario() {
    // tools/testing/selftests/iommu/iommufd.c, vdevice_alloc: depth 2,
    // one event (seq 0) read first, then three: 1, 2 and LOST(3); one
    // more: only seq 4.
    let mut sim = sim_with_queue(SimConfig::default(), 2);
    let e = |t| evt(0x99, t);
    assert_eq!(sim.inject(&[e(0)]).unwrap(), (1, 0));
    assert_eq!(read(&mut sim, 3 * VEVENT_RECORD_SIZE), vec![ev(0, e(0))]);

    assert_eq!(sim.inject(&[e(1), e(2), e(3)]).unwrap(), (2, 1));
    assert_eq!(sim.pending(), 2);
    assert_eq!(sim.lost_pending(), Some(3));
    let mut buf = [0u8; 3 * VEVENT_RECORD_SIZE];
    assert_eq!(sim.read_veventq(&mut buf).unwrap(), 88);
    assert_eq!(parse(&buf[..88]), vec![ev(1, e(1)), ev(2, e(2)), lost(3)]);

    // The protocol's parser frames the same records, and the reader's
    // loss accounting finds the one dropped event.
    let recs: Vec<Vevent> = parse_vevents(&buf[..88]).collect::<Result<_, _>>().unwrap();
    assert_eq!(recs.last(), Some(&Vevent::Lost { seq: 3 }));
    let (mut last, mut n_lost) = (0, 0);
    for r in &recs {
        n_lost += lost_between(last, r.seq());
        n_lost += u32::from(matches!(r, Vevent::Lost { .. }));
        last = r.seq();
    }
    assert_eq!(n_lost, 1);

    assert_eq!(sim.inject(&[e(4)]).unwrap(), (1, 0));
    assert_eq!(read(&mut sim, 3 * VEVENT_RECORD_SIZE), vec![ev(4, e(4))]);
    assert_eq!(lost_between(last, 4), 0);
    assert!(!readable(&sim));
    let st = sim.stats();
    assert_eq!((st.injected, st.queued, st.dropped), (5, 4, 1));
    assert_eq!((st.events_read, st.lost_records_read), (4, 1));
}

#[test]
fn lost_record_between_full_records() {
    let mut sim = sim_with_queue(SimConfig::default(), 2);
    let e = |t| evt(7, t);
    // seq 0, 1 queued; 2 and 3 dropped: one LOST record, latest seq.
    assert_eq!(sim.inject(&[e(0), e(1), e(2), e(3)]).unwrap(), (2, 2));
    assert_eq!(sim.lost_pending(), Some(3));
    // 40 + 40 + 7 bytes: the LOST record does not fit and stays.
    assert_eq!(
        read(&mut sim, 2 * VEVENT_RECORD_SIZE + 7),
        vec![ev(0, e(0)), ev(1, e(1))]
    );
    assert!(readable(&sim));
    // Reading the LOST record alone needs 8 bytes.
    assert_eq!(read(&mut sim, 8), vec![lost(3)]);
    assert!(!readable(&sim));
    // Records after the LOST record, in the next read.
    assert_eq!(sim.inject(&[e(4)]).unwrap(), (1, 0));
    assert_eq!(read(&mut sim, 4096), vec![ev(4, e(4))]);

    // The LOST record is removed by a new event once there is room:
    // the loss then shows only as a gap (5 → 8).
    assert_eq!(sim.inject(&[e(5), e(6), e(7)]).unwrap(), (2, 1));
    assert_eq!(read(&mut sim, VEVENT_RECORD_SIZE), vec![ev(5, e(5))]);
    assert_eq!(sim.lost_pending(), Some(7));
    assert_eq!(sim.inject(&[e(8)]).unwrap(), (1, 0));
    assert_eq!(sim.lost_pending(), None);
    assert_eq!(read(&mut sim, 4096), vec![ev(6, e(6)), ev(8, e(8))]);

    // Reading the LOST record frees no room: depth 1, full, LOST read,
    // the next event is still dropped.
    let mut sim = sim_with_queue(SimConfig::default(), 1);
    assert_eq!(sim.inject(&[e(0), e(1)]).unwrap(), (1, 1));
    assert_eq!(
        read(&mut sim, VEVENT_RECORD_SIZE + 8),
        vec![ev(0, e(0)), lost(1)]
    );
    assert_eq!(sim.inject(&[e(2), e(3)]).unwrap(), (1, 1));
    assert_eq!(
        read(&mut sim, VEVENT_RECORD_SIZE + 8),
        vec![ev(2, e(2)), lost(3)]
    );
}

#[test]
fn small_buffer_reads_nothing_and_stays_readable() {
    let mut sim = sim_with_queue(SimConfig::default(), 4);
    sim.inject(&[evt(1, 1)]).unwrap();
    for size in [0, 1, 8, VEVENT_RECORD_SIZE - 1] {
        let mut buf = vec![0u8; size];
        assert_eq!(sim.read_veventq(&mut buf).unwrap(), 0, "size {size}");
        assert!(readable(&sim), "size {size}");
    }
    assert_eq!(sim.pending(), 1);
    assert_eq!(read(&mut sim, VEVENT_RECORD_SIZE), vec![ev(0, evt(1, 1))]);
    assert!(!readable(&sim));

    // Only a LOST record left: 7 bytes read nothing, 8 read it.
    let mut sim = sim_with_queue(SimConfig::default(), 1);
    sim.inject(&[evt(1, 1), evt(1, 2)]).unwrap();
    assert_eq!(read(&mut sim, VEVENT_RECORD_SIZE), vec![ev(0, evt(1, 1))]);
    assert!(readable(&sim));
    let mut buf = [0u8; 7];
    assert_eq!(sim.read_veventq(&mut buf).unwrap(), 0);
    assert!(readable(&sim));
    assert_eq!(read(&mut sim, 8), vec![lost(1)]);
    assert!(!readable(&sim));
    // Empty: 0, never EAGAIN.
    assert_eq!(read(&mut sim, 4096), vec![]);
}

#[test]
fn hundred_records_drain_in_one_read() {
    let mut sim = sim_with_queue(SimConfig::default(), 128);
    let events: Vec<_> = (0..100).map(|t| evt(3, t)).collect();
    assert_eq!(sim.inject(&events).unwrap(), (100, 0));
    let mut buf = vec![0u8; 100 * VEVENT_RECORD_SIZE];
    assert_eq!(sim.read_veventq(&mut buf).unwrap(), 4000);
    let want: Vec<_> = (0..100u32).map(|t| ev(t, evt(3, u64::from(t)))).collect();
    assert_eq!(parse(&buf), want);
    assert!(!readable(&sim));
    assert_eq!(sim.stats().read_calls, 1);
}

#[test]
fn sequence_wraps_at_int_max() {
    let cfg = SimConfig {
        first_seq: 0x7fff_fffe,
        ..SimConfig::default()
    };
    assert!(cfg.validate().is_ok());
    let mut sim = sim_with_queue(cfg, 4);
    let e = |t| evt(2, t);
    sim.inject(&[e(0), e(1), e(2)]).unwrap();
    assert_eq!(
        read(&mut sim, 4096),
        vec![ev(0x7fff_fffe, e(0)), ev(0x7fff_ffff, e(1)), ev(0, e(2))]
    );
    assert_eq!(sim.next_sequence(), Some(1));

    // A dropped event wraps too: the LOST record carries 0.
    let cfg = SimConfig {
        first_seq: 0x7fff_ffff,
        ..SimConfig::default()
    };
    let mut sim = sim_with_queue(cfg, 1);
    assert_eq!(sim.inject(&[e(0), e(1)]).unwrap(), (1, 1));
    assert_eq!(read(&mut sim, 4096), vec![ev(0x7fff_ffff, e(0)), lost(0)]);

    // first_seq above INT_MAX is refused by validate() and masked by new().
    let cfg = SimConfig {
        first_seq: 0x8000_0005,
        ..SimConfig::default()
    };
    assert_eq!(cfg.validate().unwrap_err().errno, libc::EINVAL);
    let sim = sim_with_queue(cfg, 1);
    assert_eq!(sim.next_sequence(), Some(5));
}

#[test]
fn eventfd_readable_exactly_while_queue_not_empty() {
    let mut sim = sim_with_queue(SimConfig::default(), 2);
    assert!(!readable(&sim));
    sim.inject(&[]).unwrap();
    assert!(!readable(&sim));
    sim.inject(&[evt(1, 0), evt(1, 1)]).unwrap();
    assert!(readable(&sim));
    assert_eq!(read(&mut sim, VEVENT_RECORD_SIZE).len(), 1);
    assert!(readable(&sim));
    assert_eq!(read(&mut sim, VEVENT_RECORD_SIZE).len(), 1);
    assert!(!readable(&sim));
    // Fill, then only drops (LOST updates) while still unread.
    sim.inject(&[evt(1, 2), evt(1, 3), evt(1, 4)]).unwrap();
    assert!(readable(&sim));
    sim.inject(&[evt(1, 5)]).unwrap();
    assert_eq!(sim.lost_pending(), Some(5));
    assert_eq!(
        read(&mut sim, 4096),
        vec![ev(2, evt(1, 2)), ev(3, evt(1, 3)), lost(5)]
    );
    assert!(!readable(&sim));
    // A second empty read keeps it unreadable (the drain tolerates 0).
    assert_eq!(read(&mut sim, 4096), vec![]);
    assert!(!readable(&sim));
}

#[test]
fn veventq_allocation_rules() {
    let mut sim = SimHost::default();
    assert_eq!(sim.inject(&[evt(1, 1)]).unwrap_err().errno, libc::ENODEV);
    assert!(sim.veventq_fd().is_none());
    assert_eq!(
        sim.read_veventq(&mut [0u8; 64]).unwrap_err().errno,
        libc::EBADF
    );
    // No vIOMMU before the first device, as on the kernel.
    assert_eq!(sim.alloc_veventq(8).unwrap_err().errno, libc::ENODEV);
    assert!(!sim.viommu_allocated());
    sim.attach_device(1, None).unwrap();
    assert!(sim.viommu_allocated());
    assert_eq!(sim.alloc_veventq(0).unwrap_err().errno, libc::EINVAL);
    assert_eq!(
        sim.alloc_veventq(VEVENTQ_MAX_DEPTH + 1).unwrap_err().errno,
        libc::EINVAL
    );
    sim.alloc_veventq(VEVENTQ_MAX_DEPTH).unwrap();

    // Re-allocation: a new fd, an empty queue, the sequence restarts.
    sim.alloc_veventq(2).unwrap();
    sim.inject(&[evt(1, 0), evt(1, 1), evt(1, 2)]).unwrap();
    assert_eq!(sim.next_sequence(), Some(3));
    sim.alloc_veventq(2).unwrap();
    assert_eq!((sim.pending(), sim.lost_pending()), (0, None));
    assert!(!readable(&sim));
    sim.inject(&[evt(1, 9)]).unwrap();
    assert_eq!(read(&mut sim, 4096), vec![ev(0, evt(1, 9))]);
    sim.free_veventq();
    assert!(sim.veventq_fd().is_none());
    assert_eq!(sim.inject(&[evt(1, 1)]).unwrap_err().errno, libc::ENODEV);

    // The depth override replaces what the model asks for.
    let cfg = SimConfig {
        veventq_depth: Some(1),
        ..SimConfig::default()
    };
    let mut sim = sim_with_queue(cfg, 0);
    assert_eq!(sim.veventq_depth(), Some(1));
    assert_eq!(sim.inject(&[evt(1, 0), evt(1, 1)]).unwrap(), (1, 1));
    let bad = SimConfig {
        veventq_depth: Some(0),
        ..SimConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().errno, libc::EINVAL);
}

#[test]
fn devices() {
    let mut sim = SimHost::default();
    assert_eq!(sim.name(), "sim");
    assert!(!sim.needs_device_fd());
    assert_eq!(sim.hw_info(), SIM_HW_INFO);
    assert!(sim.sim_controls().is_some());
    assert_eq!(sim.attach_device(0x10, None).unwrap(), 1);
    assert_eq!(sim.attach_device(0x20, None).unwrap(), 2);
    assert_eq!(
        sim.attach_device(0x10, None).unwrap_err().errno,
        libc::EEXIST
    );
    let fd: OwnedFd = EventFd::new().unwrap().into();
    assert_eq!(
        sim.attach_device(0x30, Some(fd)).unwrap_err().errno,
        libc::EINVAL
    );
    assert!(sim.is_attached(0x10) && !sim.is_attached(0x30));
    assert_eq!(sim.ste_of(0x10), Some(SteAction::Abort));
    sim.detach_device(0x10).unwrap();
    assert_eq!(sim.detach_device(0x10).unwrap_err().errno, libc::ENOENT);
    assert!(!sim.is_attached(0x10));
    assert_eq!(sim.ste_of(0x10), None);
    assert_eq!(sim.attach_device(0x10, None).unwrap(), 3);
}

#[test]
fn guest_ram_ranges() {
    let mut sim = SimHost::default();
    sim.map_guest_ram(0x4000_0000, 0x1000_0000, 0x7f00_0000_0000)
        .unwrap();
    sim.map_guest_ram(0x8000_0000, 0x1000, 0x7f10_0000_0000)
        .unwrap();
    let err = |r: Result<(), HostError>| r.unwrap_err().errno;
    assert_eq!(err(sim.map_guest_ram(0x4fff_f000, 0x2000, 0)), libc::EEXIST);
    assert_eq!(err(sim.map_guest_ram(0x3fff_f000, 0x2000, 0)), libc::EEXIST);
    assert_eq!(err(sim.map_guest_ram(0x8000_0000, 0x1000, 0)), libc::EEXIST);
    assert_eq!(err(sim.map_guest_ram(0x1000, 0, 0)), libc::EINVAL);
    assert_eq!(err(sim.map_guest_ram(u64::MAX, 2, 0)), libc::EOVERFLOW);
    sim.map_guest_ram(0x5000_0000, 0x1000, 0x1000).unwrap();
    assert_eq!(sim.guest_ram().count(), 3);

    assert_eq!(err(sim.unmap_guest_ram(0x9000_0000, 0x1000)), libc::ENOENT);
    assert_eq!(err(sim.unmap_guest_ram(0x4000_0000, 0x1000)), libc::ENOENT);
    sim.unmap_guest_ram(0x8000_0000, 0x1000).unwrap();
    assert_eq!(err(sim.unmap_guest_ram(0x8000_0000, 0x1000)), libc::ENOENT);
    // One unmap covering two whole ranges.
    sim.unmap_guest_ram(0x4000_0000, 0x1000_1000).unwrap();
    assert_eq!(sim.guest_ram().count(), 0);
}

#[test]
fn vste_acceptance_and_rejection() {
    let mut sim = SimHost::default();
    sim.attach_device(5, None).unwrap();
    let cd = 0x0000_8000_1234_5000u64; // S1ContextPtr
    let s1 = ste0(CONFIG_S1_TRANS) | cd;
    let nested = |ste| SteAction::Nested { ste };

    // Accepted: S1 translate with every allowed bit, EATS cleared.
    let ste = [s1 | (0x1f << 59) | (0x3 << 4), 0x0800_00ff | (1 << 28)];
    sim.install_ste(5, nested(ste)).unwrap();
    assert_eq!(sim.ste_of(5), Some(nested([ste[0], 0x0800_00ff])));
    // Accepted: abort and bypass configs, EATS 0.
    for cfg in [CONFIG_ABORT, CONFIG_BYPASS] {
        let ste = [ste0(cfg), 0];
        sim.install_ste(5, nested(ste)).unwrap();
        assert_eq!(sim.ste_of(5), Some(nested(ste)));
    }
    // Accepted: V = 0, whatever else is set, is stored zeroed.
    sim.install_ste(5, nested([!STE_0_V.mask(), u64::MAX]))
        .unwrap();
    assert_eq!(sim.ste_of(5), Some(nested([0, 0])));
    sim.install_ste(5, SteAction::Bypass).unwrap();
    assert_eq!(sim.ste_of(5), Some(SteAction::Bypass));

    // Rejected with EIO, and the device is left aborting.
    let rejected = [
        [s1 | (1 << 52), 0],        // dword 0 bit outside the mask
        [s1 | (1 << 58), 0],        // S1CDMax is [63:59]
        [s1, 1 << 8],               // dword 1 bit outside the mask
        [s1, 1 << 30],              // STRW
        [ste0(CONFIG_S2_TRANS), 0], // stage 2 only
        [ste0(CONFIG_NESTED), 0],   // nested
        [ste0(0b001), 0],           // reserved
        [s1, 2 << 28],              // EATS = split-stage ATS
        [s1, 3 << 28],              // EATS reserved
    ];
    for ste in rejected {
        sim.install_ste(5, SteAction::Bypass).unwrap();
        let e = sim.install_ste(5, nested(ste)).unwrap_err();
        assert_eq!(e.errno, libc::EIO, "{ste:x?}");
        assert_eq!(sim.ste_of(5), Some(SteAction::Abort), "{ste:x?}");
    }
    assert_eq!(
        sim.install_ste(6, SteAction::Abort).unwrap_err().errno,
        libc::ENOENT
    );
    assert_eq!(validate_vste([s1, 1 << 28]).unwrap(), [s1, 0]);
}

#[test]
fn invalidation_order_and_partial_failure() {
    let mut sim = SimHost::default();
    sim.attach_device(0x42, None).unwrap();
    let sid = |op: u64, vsid: u64| [op | (vsid << 32), 0];
    let ok = [
        [0x30, 0],                  // TLBI_NSNH_ALL
        [0x12 | (5 << 48), 0x1000], // TLBI_NH_VA
        [0x13, 0x2000],             // TLBI_NH_VAA
        [0x10, 0],                  // TLBI_NH_ALL
        [0x11 | (5 << 48), 0],      // TLBI_NH_ASID
        sid(0x40, 0x42),            // ATC_INV
        sid(0x05, 0x42),            // CFGI_CD
        sid(0x06, 0x42),            // CFGI_CD_ALL
    ];
    sim.invalidate(&ok).unwrap();
    assert_eq!((sim.invalidate_calls(), sim.invalidate_entries()), (1, 8));
    assert!(sim.invalidation_log().eq(ok.iter()));

    // Stops at the first refused entry; `handled` counts those before,
    // which were converted but, in the same block, not executed.
    let cmds = [[0x10, 0], sid(0x05, 0x42), [0x46, 0], [0x12, 0]];
    let e = sim.invalidate(&cmds).unwrap_err();
    assert_eq!((e.handled, e.error.errno), (2, libc::EIO));
    assert_eq!((sim.invalidate_calls(), sim.invalidate_entries()), (2, 8));
    assert_eq!(sim.invalidation_log().count(), 8);

    // SID-carrying commands need an attached vSID; others always EIO.
    for (cmds, handled) in [
        (vec![[0x30, 0], sid(0x40, 0x43)], 1),
        (vec![sid(0x06, 7)], 0),
        (vec![[0x03, 0]], 0),                       // CFGI_STE
        (vec![[0x20, 0]], 0),                       // TLBI_EL2_ALL
        (vec![[0x28, 0]], 0),                       // TLBI_S12_VMALL
        (vec![[0x10, 0], [0x12, 0], [0x2a, 0]], 2), // TLBI_S2_IPA
    ] {
        let e = sim.invalidate(&cmds).unwrap_err();
        assert_eq!(
            (e.handled, e.error.errno),
            (handled, libc::EIO),
            "{cmds:x?}"
        );
    }

    // Above the per-call limit: EINVAL, nothing handled.
    let before = sim.invalidate_entries();
    let many = vec![[0x10u64, 0u64]; MAX_INVALIDATION_ENTRIES + 1];
    let e = sim.invalidate(&many).unwrap_err();
    assert_eq!((e.handled, e.error.errno), (0, libc::EINVAL));
    assert_eq!(sim.invalidate_entries(), before);
    sim.invalidate(&many[..MAX_INVALIDATION_ENTRIES]).unwrap();
    sim.invalidate(&[]).unwrap();

    // The log keeps the last INVALIDATION_LOG_LEN commands.
    for i in 0..20u64 {
        let cmds: Vec<_> = (0..256u64).map(|j| [0x12, (i * 256 + j) << 12]).collect();
        sim.invalidate(&cmds).unwrap();
    }
    assert_eq!(sim.invalidation_log().count(), INVALIDATION_LOG_LEN);
    assert_eq!(
        sim.invalidation_log().next(),
        Some(&[0x12, (20 * 256 - 4096) << 12])
    );
    assert_eq!(
        sim.invalidation_log().last(),
        Some(&[0x12, (20 * 256 - 1) << 12])
    );
}

/// `arm_vsmmu_cache_invalidate` converts the entries of a block before
/// issuing any: a refused entry leaves the ones before it in its block
/// converted (counted in `handled`) but never executed.
#[test]
fn failed_invalidation_executes_nothing_of_its_block() {
    use crate::host::sim::tlb::TlbEntry;
    use crate::host::sim::walk::Perms;

    let mut sim = SimHost::default();
    let entry = |va: u64| TlbEntry {
        va_base: va,
        size_log2: 12,
        oa_base: 0x8000_0000 + va,
        perms: Perms {
            read: true,
            write: true,
            dirty_on_write: false,
        },
        global: false,
        level: 3,
    };
    for va in [0x1000, 0x2000] {
        sim.tlb_mut().insert(1, 0, 5, va, entry(va));
    }
    let tlbi = |va: u64| [0x12 | (5 << 48), va]; // TLBI_NH_VA, ASID 5
    let cmds = [tlbi(0x1000), tlbi(0x2000), [0x46, 0]];
    let e = sim.invalidate(&cmds).unwrap_err();
    assert_eq!((e.handled, e.error.errno), (2, libc::EIO));
    assert_eq!((sim.invalidate_calls(), sim.invalidate_entries()), (1, 0));
    assert_eq!(sim.invalidation_log().count(), 0);
    assert_eq!(sim.tlb().len(), 2);
    assert_eq!(sim.tlb().stats().invalidated, 0);

    // Sent without the refused entry, the two run.
    sim.invalidate(&cmds[..2]).unwrap();
    assert_eq!((sim.invalidate_calls(), sim.invalidate_entries()), (2, 2));
    assert!(sim.invalidation_log().eq(cmds[..2].iter()));
    assert_eq!(sim.tlb().len(), 0);
    assert_eq!(sim.tlb().stats().invalidated, 2);
}

/// Blocks of CMDQ_BATCH_ENTRIES - 1 = 63: a failure executes exactly
/// the blocks completed before the failing entry's.
#[test]
fn failed_invalidation_executes_the_completed_blocks() {
    let cmds_with_bad = |bad: usize| -> Vec<[u64; 2]> {
        (0..70u64)
            .map(|i| {
                if i == bad as u64 {
                    [0x46, 0]
                } else {
                    [0x12, i << 12]
                }
            })
            .collect()
    };
    for (bad, executed) in [(65, 63), (0, 0), (62, 0), (63, 63), (69, 63)] {
        let mut sim = SimHost::default();
        let cmds = cmds_with_bad(bad);
        let e = sim.invalidate(&cmds).unwrap_err();
        assert_eq!((e.handled, e.error.errno), (bad, libc::EIO), "bad {bad}");
        assert_eq!(sim.invalidate_entries(), executed, "bad {bad}");
        assert!(
            sim.invalidation_log().eq(cmds[..executed as usize].iter()),
            "bad {bad}"
        );
    }
    // Without a failure every entry runs: two blocks of 63, then 4.
    let mut sim = SimHost::default();
    let cmds: Vec<[u64; 2]> = (0..130u64).map(|i| [0x12, i << 12]).collect();
    sim.invalidate(&cmds).unwrap();
    assert_eq!(sim.invalidate_entries(), 130);
    assert!(sim.invalidation_log().eq(cmds.iter()));
}
