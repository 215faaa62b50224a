//! Model unit tests over a memfd-backed guest RAM and the sim host.

use vsmmu_protocol::smmu::command::{Command, TlbiRange};
use vsmmu_protocol::smmu::regs::*;
use vsmmu_testutil::memfd;

use super::*;
use crate::host::sim::{SimConfig, SimHost};
use crate::notify::Notifier;

const RAM: u64 = 0x4000_0000;
const CMDQ: u64 = RAM + 0x1000;

struct Rig {
    smmu: Smmu,
    host: SimHost,
    mem: GuestRam,
    irqs: Irqs,
    stats: Stats,
    notify: Notifier,
}

impl Rig {
    fn new(cfg: SimConfig, batch: bool) -> Rig {
        let host = SimHost::new(cfg);
        let smmu = Smmu::new(
            SmmuConfig {
                batch,
                ..SmmuConfig::default()
            },
            host.hw_info(),
        );
        let mut mem = GuestRam::new(4);
        mem.map(memfd(0x10_0000), 0, RAM, 0x10_0000, true).unwrap();
        Rig {
            smmu,
            host,
            mem,
            irqs: Irqs::default(),
            stats: Stats::default(),
            notify: Notifier::default(),
        }
    }

    /// Runs `f` on the model with a context over the rig's parts.
    fn with<R>(&mut self, f: impl FnOnce(&mut Smmu, &mut Ctx<'_>) -> R) -> R {
        let mut ctx = Ctx {
            mem: &self.mem,
            host: &mut self.host,
            irqs: &mut self.irqs,
            stats: &mut self.stats,
            notify: &mut self.notify,
        };
        f(&mut self.smmu, &mut ctx)
    }

    fn w(&mut self, off: u64, size: usize, v: u64) {
        self.with(|smmu, ctx| smmu.write(off, size, v, ctx));
    }

    fn r(&mut self, off: u64) -> u32 {
        self.with(|smmu, ctx| smmu.read(off, 4, ctx)) as u32
    }

    /// Enables a 256-entry CMDQ at CMDQ.
    fn cmdq_on(&mut self) {
        self.w(CMDQ_BASE, 8, CMDQ | 8);
        self.w(CR0, 4, CR0_CMDQEN.mask());
    }

    /// Writes `cmds` at the queue's PROD and rings the doorbell.
    fn issue(&mut self, cmds: &[[u64; 2]]) {
        let mut prod = self.r(CMDQ_PROD);
        for c in cmds {
            self.mem
                .write_u64s(CMDQ + u64::from(prod & 0xff) * 16, c)
                .unwrap();
            prod = (prod + 1) & 0x1ff;
        }
        self.w(CMDQ_PROD, 4, prod.into());
    }

    /// One vEVENTQ read handed to the model, as the event loop does;
    /// returns the bytes read.
    fn deliver_host(&mut self) -> usize {
        let mut buf = vec![0u8; 4096];
        let n = self.host.read_veventq(&mut buf).unwrap();
        self.with(|smmu, ctx| smmu.host_records(&buf[..n], ctx));
        n
    }
}

pub(super) fn tlbi_va(i: u64) -> [u64; 2] {
    Command::TlbiNhVa {
        vmid: 0,
        asid: 1,
        range: TlbiRange::va(i << 12, true),
    }
    .encode()
}

#[test]
fn batches_are_ordered_and_flushed_before_sync() {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.cmdq_on();
    let mut cmds: Vec<[u64; 2]> = (0..5).map(tlbi_va).collect();
    cmds.push(Command::sync_sev().encode());
    cmds.extend((5..8).map(tlbi_va));
    cmds.push(Command::sync_sev().encode());
    rig.issue(&cmds);
    assert_eq!(rig.r(CMDQ_CONS), 10);
    // Two calls (one per run before each CMD_SYNC), entries in order.
    assert_eq!(rig.host.invalidate_calls(), 2);
    let log: Vec<[u64; 2]> = rig.host.invalidation_log().copied().collect();
    assert_eq!(log, (0..8).map(tlbi_va).collect::<Vec<_>>());
    assert_eq!(rig.stats.host_invalidate_calls, 2);
    assert_eq!(rig.stats.cmd_syncs, 2);
}

#[test]
fn unbatched_is_one_call_per_command() {
    let mut rig = Rig::new(SimConfig::default(), false);
    rig.cmdq_on();
    rig.issue(&(0..8).map(tlbi_va).collect::<Vec<_>>());
    assert_eq!(rig.host.invalidate_calls(), 8);
}

#[test]
fn host_failure_points_cons_at_the_failing_command() {
    let cfg = SimConfig {
        reject_opcode: Some(0x13),
        ..SimConfig::default()
    };
    let mut rig = Rig::new(cfg, true);
    rig.cmdq_on();
    let mut cmds: Vec<[u64; 2]> = (0..4).map(tlbi_va).collect();
    cmds.push(
        Command::TlbiNhVaa {
            vmid: 0,
            range: TlbiRange::va(0, true),
        }
        .encode(),
    );
    cmds.extend((4..6).map(tlbi_va));
    rig.issue(&cmds);
    assert_eq!(rig.r(CMDQ_CONS), 1 << 24 | 4);
    assert_eq!(rig.r(GERROR), GERROR_CMDQ_ERR);
    // The four before it were handled, in order.
    let log: Vec<[u64; 2]> = rig.host.invalidation_log().copied().collect();
    assert_eq!(log, (0..4).map(tlbi_va).collect::<Vec<_>>());
    // Stalled until acknowledged.
    rig.w(CMDQ_PROD, 4, 7);
    assert_eq!(rig.r(CMDQ_CONS) & 0xff, 4);
    // Fix the entry (a CMD_SYNC) and acknowledge: the rest runs.
    rig.mem
        .write_u64s(CMDQ + 4 * 16, &Command::sync_sev().encode())
        .unwrap();
    rig.w(GERRORN, 4, GERROR_CMDQ_ERR.into());
    assert_eq!(rig.r(CMDQ_CONS), 1 << 24 | 7);
}

#[test]
fn illegal_command_after_a_batch_flushes_the_batch_first() {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.cmdq_on();
    rig.issue(&[tlbi_va(1), tlbi_va(2), [0x7f, 0]]);
    assert_eq!(rig.r(CMDQ_CONS), 1 << 24 | 2);
    assert_eq!(rig.host.invalidation_log().count(), 2);
}

#[test]
fn gerror_toggles_once_until_acknowledged() {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.cmdq_on();
    rig.issue(&[[0x7f, 0]]);
    assert_eq!((rig.r(GERROR), rig.r(GERRORN)), (1, 0));
    // More doorbells while the error is active change nothing.
    rig.issue(&[]);
    assert_eq!((rig.r(GERROR), rig.r(GERRORN)), (1, 0));
    // Acknowledging without fixing the entry resumes at CONS: the same
    // illegal command raises the error again at once.
    rig.w(GERRORN, 4, 1);
    assert_eq!((rig.r(GERROR), rig.r(GERRORN)), (0, 1));
    assert_eq!(rig.stats.cmd_errors, 2);
}

/// A guest EVENTQ_CONS inconsistent with PROD must not hang delivery
/// (found by the request_handler fuzz target).
#[test]
fn inconsistent_eventq_cons_does_not_hang() {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.host.attach_device(1, None).unwrap();
    rig.w(EVENTQ_BASE, 8, (RAM + 0x8000) | 3);
    rig.w(EVENTQ_CONS, 4, 1);
    rig.w(CR0, 4, CR0_EVTQEN.mask());
    rig.host.inject(&[[1 << 32 | 0x10, 0, 0, 0]]).unwrap();
    assert_eq!(rig.deliver_host(), 40);
    assert_eq!(rig.stats.guest_events_written, 0);
    assert_eq!(rig.stats.host_events_read, 1);
}

/// EVENTQEN set before any device exists: the host has no vIOMMU yet, so
/// no vEVENTQ; the first attach allocates it, sized for the guest queue,
/// and host events then reach the guest.
#[test]
fn eventqen_before_first_attach_gets_a_veventq_at_attach() {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.w(EVENTQ_BASE, 8, (RAM + 0x8000) | 3);
    rig.w(CR0, 4, CR0_EVTQEN.mask());
    assert!(rig.host.veventq_fd().is_none());
    assert_eq!(rig.smmu.veventq_generation(), 0);
    rig.host.attach_device(8, None).unwrap();
    rig.with(|smmu, ctx| smmu.device_attached(8, ctx));
    assert!(rig.host.veventq_fd().is_some());
    assert_eq!(rig.smmu.veventq_generation(), 1);
    rig.host.inject(&[[8 << 32 | 0x10, 0, 0x1000, 0]]).unwrap();
    assert_eq!(rig.deliver_host(), 40);
    assert_eq!(rig.stats.guest_events_written, 1);
    assert_eq!(rig.r(EVENTQ_PROD), 1);
}

/// A guest EVENTQ resize replaces the vEVENTQ: what the old one still
/// held is read and counted (EVENTQEN was 0), not dropped unread.
#[test]
fn resize_reads_the_old_veventq_first() {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.host.attach_device(8, None).unwrap();
    rig.w(EVENTQ_BASE, 8, (RAM + 0x8000) | 3);
    rig.w(CR0, 4, CR0_EVTQEN.mask());
    rig.w(CR0, 4, 0);
    rig.host
        .inject(&[
            [8 << 32 | 0x10, 0, 0x1000, 0],
            [8 << 32 | 0x10, 0, 0x2000, 0],
        ])
        .unwrap();
    rig.w(EVENTQ_BASE, 8, (RAM + 0x8000) | 4);
    rig.w(CR0, 4, CR0_EVTQEN.mask());
    assert_eq!(rig.stats.host_events_read, 2);
    assert_eq!(rig.stats.events_dropped_disabled, 2);
    assert_eq!(rig.stats.guest_events_written, 0);
    assert_eq!(rig.smmu.veventq_generation(), 3);
}

/// The vIOMMU ends with its last device: what the vEVENTQ still holds
/// are faults the guest's devices raised, and its queue is on, so they
/// reach it rather than being counted as dropped.
#[test]
fn viommu_end_delivers_what_the_veventq_holds() {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.host.attach_device(8, None).unwrap();
    rig.w(EVENTQ_BASE, 8, (RAM + 0x8000) | 3);
    rig.w(CR0, 4, CR0_EVTQEN.mask());
    rig.host
        .inject(&[
            [8 << 32 | 0x10, 0, 0x1000, 0],
            [8 << 32 | 0x10, 0, 0x2000, 0],
        ])
        .unwrap();
    rig.with(|smmu, ctx| smmu.viommu_ending(ctx));
    assert_eq!(rig.stats.host_events_read, 2);
    assert_eq!(rig.stats.guest_events_written, 2);
    assert_eq!(rig.stats.events_dropped_disabled, 0);
    assert_eq!(rig.r(EVENTQ_PROD), 2);
    assert_eq!(
        rig.mem.read_u64s::<4>(RAM + 0x8000 + 32).unwrap()[2],
        0x2000
    );
    assert!(rig.host.veventq_fd().is_none());
}

/// The guest's StreamID size is known before any device: a fresh model
/// accepts vSID 8 (iommufd profile: SIDSIZE 16) and refuses 1 << 16.
#[test]
fn sid_checked_against_the_profile_from_the_start() {
    let smmu = Smmu::new(SmmuConfig::default(), crate::host::iommufd::GUEST_PROFILE);
    assert_eq!(smmu.check_sid(8), Ok(()));
    assert_eq!(smmu.check_sid(0xffff), Ok(()));
    assert_eq!(
        smmu.check_sid(0x1_0000),
        Err("vSID 0x10000 exceeds SIDSIZE 16".into())
    );
}

/// A transaction of an emulated device checks the guest's stream table as
/// an emulated SMMUv3 does: a table outside RAM is F_STE_FETCH with the
/// fetch address, a StreamID beyond a linear table is C_BAD_STREAMID; each
/// is queued to the guest, once per transaction.
#[test]
fn transaction_checks_of_the_stream_table() {
    use crate::smmu::strtab::TxnCheck;
    use vsmmu_protocol::smmu::event::Event;
    let mut rig = Rig::new(SimConfig::default(), true);
    // Linear, 2^4 STEs, outside guest RAM.
    rig.w(STRTAB_BASE, 8, 0x10_0000_0000);
    rig.w(STRTAB_BASE_CFG, 4, 4);
    rig.w(CR0, 4, CR0_SMMUEN.mask());
    assert_eq!(
        rig.with(|smmu, ctx| smmu.check_transaction(3, None, ctx)),
        TxnCheck::Event(Event::f_ste_fetch(3, None, 0x10_0000_0000 + 3 * 64).encode())
    );
    assert_eq!(
        rig.with(|smmu, ctx| smmu.check_transaction(16, Some(2), ctx)),
        TxnCheck::Event(Event::c_bad_streamid(16, Some(2)).encode())
    );
    assert_eq!(rig.stats.model_events, 2);
}

/// Every writable register set to a value of its own, SMMUEN and EVTQEN
/// on, a device attached, one host and one model event buffered (the
/// model stopped for migration): the state a save has to carry.
fn programmed() -> Rig {
    let mut rig = Rig::new(SimConfig::default(), true);
    rig.w(CR1, 4, 0x5a5);
    rig.w(CR2, 4, 0x5);
    rig.w(GBPA, 4, (GBPA_UPDATE.mask32() | 0x1_3a15).into());
    rig.w(IRQ_CTRL, 4, 0x5);
    rig.w(GERRORN, 4, GERROR_EVTQ_ABT_ERR.into());
    rig.w(GERROR_IRQ_CFG0, 8, 0xdead_bee0);
    rig.w(GERROR_IRQ_CFG1, 4, 0x1234_5678);
    rig.w(GERROR_IRQ_CFG2, 4, 0x13);
    rig.w(STRTAB_BASE, 8, 0x10_0000_0000);
    rig.w(STRTAB_BASE_CFG, 4, 4);
    rig.w(CMDQ_BASE, 8, CMDQ | 8);
    rig.w(CMDQ_PROD, 4, 3);
    rig.w(CMDQ_CONS, 4, 1);
    rig.w(EVENTQ_BASE, 8, (RAM + 0x8000) | 3);
    rig.w(EVENTQ_PROD, 4, 2);
    rig.w(EVENTQ_CONS, 4, 1);
    rig.w(EVENTQ_IRQ_CFG0, 8, 0xcafe_f00c);
    rig.w(EVENTQ_IRQ_CFG1, 4, 0x8765_4321);
    rig.w(EVENTQ_IRQ_CFG2, 4, 0x2a);
    rig.host.attach_device(5, None).unwrap();
    rig.with(|smmu, ctx| smmu.device_attached(5, ctx));
    // STE 5 lies outside RAM: F_STE_FETCH, written to the guest queue.
    rig.w(CR0, 4, (CR0_SMMUEN.mask32() | CR0_EVTQEN.mask32()).into());
    rig.with(|smmu, ctx| smmu.set_running(false, ctx));
    rig.with(|smmu, ctx| smmu.check_transaction(16, Some(2), ctx));
    rig.host.inject(&[[5 << 32 | 0x10, 0, 0x1000, 0]]).unwrap();
    rig.deliver_host();
    rig
}

/// The state stream's layout is version 1's: a change to it must come with
/// a new `migration::VERSION`.
#[test]
fn state_stream_layout_is_version_1() {
    let rig = programmed();
    let stream = crate::migration::encode(&rig.smmu.save());
    let hex: String = stream.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        concat!(
            "56534d5501000000", // magic, version 1
            "9aa0a06a908acc13008028007505a50b0595f404050004e0fdb6f50df8acd191",
            "01138080808080020488a08080040301838082800403018ce0fbd70ca18695bb",
            "082a0282d0808080020000000090808080500080200001000105",
        )
    );
}

/// A saved state loaded into a fresh model reads back register for
/// register, and saves again as the same state.
#[test]
fn restore_gives_back_every_register() {
    let mut src = programmed();
    let saved = src.smmu.save();
    let mut dst = Rig::new(SimConfig::default(), true);
    assert_eq!(dst.smmu.check_state(&saved), Ok(()));
    dst.with(|smmu, ctx| smmu.restore(saved.clone(), ctx));
    assert_eq!(dst.smmu.save(), saved);
    for off in (0..super::REGION_SIZE).step_by(4) {
        assert_eq!(dst.r(off), src.r(off), "register at {off:#x}");
    }
    // The device came back on the sim host, with a vEVENTQ for EVTQEN.
    assert!(dst.host.is_attached(5));
    assert!(dst.host.veventq_fd().is_some());
}

/// What `check_state` refuses, with nothing changed.
#[test]
fn check_state_refuses_other_ids_and_bad_stream_ids() {
    let rig = programmed();
    let good = rig.smmu.save();
    let mut other_idr = good.clone();
    other_idr.idr[0] ^= IDR0_S1P.mask32();
    assert!(rig
        .smmu
        .check_state(&other_idr)
        .is_err_and(|e| e.contains("incompatible hosts")));
    let mut unsorted = good.clone();
    unsorted.attached = vec![5, 5];
    assert_eq!(
        rig.smmu.check_state(&unsorted),
        Err("attached StreamIDs not sorted and unique".into())
    );
    let mut too_wide = good;
    too_wide.attached = vec![1 << 20];
    assert!(rig
        .smmu
        .check_state(&too_wide)
        .is_err_and(|e| e.contains("exceeds SIDSIZE")));
}
