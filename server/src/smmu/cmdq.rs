//! The CommandQueue: consumes commands from guest RAM between CONS and PROD.
//!
//! Host-bound commands (TLBI_NH_*, TLBI_NSNH_ALL, ATC_INV, CFGI_CD*) are
//! batched into one `IOMMU_HWPT_INVALIDATE` per run of consecutive commands
//! (at most `MAX_INVALIDATION_ENTRIES` per call); a batch is flushed before
//! any command that depends on it (CFGI_STE*, CMD_SYNC) and at the end of a
//! consumption run, so CMDQ_CONS never passes an unsent command. A failed
//! call of several entries counts as not executed at all (the kernel's
//! `entry_num` counts converted entries, some never issued); its commands
//! are sent again one by one, so CMDQ_CONS points at exactly the failing
//! command.

use vsmmu_protocol::notify::Record;
use vsmmu_protocol::smmu::command::{Command, CommandCaps, CommandError, SyncCs};
use vsmmu_protocol::smmu::queue::{Queue, QueueBase, CMD_ENTRY_SIZE};
use vsmmu_protocol::smmu::regs::*;

use super::strtab::{InstallEnv, StreamTable};
use super::{CmdqRegs, Ctx};
use crate::host::{InvalidateError, MAX_INVALIDATION_ENTRIES};
use crate::irq::IRQ_CMD_SYNC;

/// The result of a consumption run.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Events the run raised (C_BAD_STE for refused STEs, ...).
    pub events: Vec<[u64; 4]>,
    /// A command error stopped the run (CONS.ERR set): raise GERROR.CMDQ_ERR.
    pub error: bool,
}

/// The consumer of the guest's CMDQ, whose registers ([`CmdqRegs`]) it
/// is handed, and the pending host batch.
#[derive(Debug)]
pub(crate) struct CommandQueue {
    batch: bool,
    /// Host-bound commands not yet sent, with the queue pointer of each.
    pending: Vec<([u64; 2], u32)>,
}

/// A command failed: where, and the CERROR code.
struct Stop {
    ptr: u32,
    cerror: u32,
}

/// Why consumption stopped before PROD.
enum Halt {
    /// A command error.
    Error(Stop),
    /// A CMD_SYNC waits for the VMM to acknowledge invalidations: CONS
    /// stays at it, without an error.
    Wait,
}

impl From<Stop> for Halt {
    fn from(s: Stop) -> Halt {
        Halt::Error(s)
    }
}

impl CommandQueue {
    /// A queue at reset; `batch` selects batched host invalidation.
    pub(crate) fn new(batch: bool) -> Self {
        CommandQueue {
            batch,
            pending: Vec::new(),
        }
    }

    /// Device reset: nothing pending (the registers are reset by the caller).
    pub(crate) fn reset(&mut self) {
        *self = CommandQueue::new(self.batch);
    }

    /// Consumes commands from CONS up to PROD, or up to the first error.
    pub(crate) fn consume(
        &mut self,
        regs: &mut CmdqRegs,
        env: &InstallEnv,
        strtab: &StreamTable,
        attached: &[u32],
        ctx: &mut Ctx<'_>,
    ) -> Outcome {
        let q = regs.queue();
        let base = QueueBase::decode(regs.base);
        let mut out = Outcome::default();
        let mut cons = regs.cons & q.ptr_mask();
        let mut stop = None;
        while !q.is_empty(regs.prod, cons) {
            match self.execute_at(cons, &q, &base, env, strtab, attached, ctx, &mut out) {
                Ok(()) => {
                    ctx.stats.cmds_consumed += 1;
                    cons = q.incr(cons);
                }
                Err(Halt::Wait) => break,
                Err(Halt::Error(s)) => {
                    // Commands before the failing one still reach the host;
                    // if they fail, that failure is the earlier one.
                    stop = Some(self.flush(ctx).err().unwrap_or(s));
                    break;
                }
            }
        }
        if stop.is_none() {
            if let Err(s) = self.flush(ctx) {
                stop = Some(s);
            }
        }
        match stop {
            Some(s) => {
                self.pending.clear();
                regs.cons = CMDQ_CONS_ERR.set32(s.ptr & q.ptr_mask(), s.cerror);
                ctx.stats.cmd_errors += 1;
                out.error = true;
            }
            None => regs.cons = (regs.cons & CMDQ_CONS_ERR.mask32()) | cons,
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_at(
        &mut self,
        ptr: u32,
        q: &Queue,
        base: &QueueBase,
        env: &InstallEnv,
        strtab: &StreamTable,
        attached: &[u32],
        ctx: &mut Ctx<'_>,
        out: &mut Outcome,
    ) -> Result<(), Halt> {
        let abort = Stop {
            ptr,
            cerror: CERROR_ABT,
        };
        let addr = base.entry_addr(q.index(ptr), CMD_ENTRY_SIZE).ok_or(Stop {
            ptr,
            cerror: CERROR_ABT,
        })?;
        let words = match ctx.mem.read_u64s::<2>(addr) {
            Ok(w) => w,
            Err(e) => {
                log::warn!("CMDQ entry at {addr:#x} unreadable: {e}: CERROR_ABT");
                return Err(abort.into());
            }
        };
        let illegal = |e: CommandError| {
            log::warn!("CMDQ entry {words:#018x?} at {addr:#x}: {e}: CERROR_ILL");
            Stop {
                ptr,
                cerror: e.cerror(),
            }
        };
        let cmd = Command::decode(words).map_err(illegal)?;
        cmd.check(&CommandCaps::from_idr(env.idr[0], env.idr[3]))
            .map_err(illegal)?;
        if let Some(rec) = Record::of_command(&cmd) {
            ctx.notify.invalidate(rec, ctx.stats);
        }
        match cmd {
            Command::TlbiNhAll { .. }
            | Command::TlbiNhAsid { .. }
            | Command::TlbiNhVa { .. }
            | Command::TlbiNhVaa { .. }
            | Command::TlbiNsnhAll => self.queue_host(words, ptr, ctx)?,
            Command::CfgiCd { sid, .. }
            | Command::CfgiCdAll { sid }
            | Command::AtcInv { sid, .. } => {
                // Nothing on the host caches a StreamID without a device.
                if attached.contains(&sid) {
                    self.queue_host(words, ptr, ctx)?;
                }
            }
            Command::CfgiSte { sid, .. } => {
                self.flush(ctx)?;
                if attached.contains(&sid) {
                    out.events.extend(strtab.install(sid, env, ctx));
                }
            }
            Command::CfgiSteRange { sid, range } => {
                self.flush(ctx)?;
                let span = 1u64 << (u32::from(range) + 1).min(32);
                let first = u64::from(sid) & !(span - 1);
                for &s in attached {
                    if (first..first + span).contains(&u64::from(s)) {
                        out.events.extend(strtab.install(s, env, ctx));
                    }
                }
            }
            Command::Sync {
                cs,
                msidata,
                msiaddr,
                ..
            } => {
                self.flush(ctx)?;
                if !ctx.notify.sync_may_complete(ctx.stats) {
                    return Err(Halt::Wait);
                }
                ctx.stats.cmd_syncs += 1;
                if cs == SyncCs::Irq {
                    self.sync_irq(env, msiaddr, msidata, ctx);
                }
            }
            // Nothing is cached by the model and nothing stalls.
            _ => {}
        }
        Ok(())
    }

    fn sync_irq(&self, env: &InstallEnv, msiaddr: u64, msidata: u32, ctx: &mut Ctx<'_>) {
        if IDR0_MSI.is_set32(env.idr[0]) && msiaddr != 0 && ctx.mem.check(msiaddr, 4, true) {
            // Linux points MSIADDR at the CMD_SYNC itself and polls its
            // first word: a 32-bit write into guest RAM.
            if ctx.mem.write(msiaddr, &msidata.to_le_bytes()).is_ok() {
                ctx.stats.msi_writes += 1;
            }
        } else if ctx.irqs.trigger(IRQ_CMD_SYNC) {
            // A doorbell outside RAM (the VMM's ITS) or the wired line.
            ctx.stats.irqs[IRQ_CMD_SYNC] += 1;
        }
    }

    fn queue_host(&mut self, words: [u64; 2], ptr: u32, ctx: &mut Ctx<'_>) -> Result<(), Stop> {
        self.pending.push((words, ptr));
        if !self.batch || self.pending.len() >= MAX_INVALIDATION_ENTRIES {
            self.flush(ctx)?;
        }
        Ok(())
    }

    /// Sends the pending batch in one host call.
    ///
    /// When a call of several entries fails, none of it counts as executed:
    /// the kernel's `entry_num` ([`InvalidateError::handled`]) is how many
    /// entries it converted, and those of its current block were never
    /// issued (`arm_vsmmu_cache_invalidate`). The commands are sent again
    /// one call each (invalidations are idempotent, so repeating those that
    /// ran is harmless); the first that fails is the failing command. If
    /// all succeed, the failure was transient and nothing stops.
    fn flush(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Stop> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let cmds: Vec<[u64; 2]> = pending.iter().map(|(c, _)| *c).collect();
        let batch_err = match host_invalidate(&cmds, ctx) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let [(cmd, ptr)] = pending[..] {
            let cerror = cerror_of(&batch_err, cmd);
            log::warn!(
                "host invalidation of {cmd:#018x?} at CMDQ pointer {ptr:#x} failed: {}: {}",
                batch_err.error,
                cerror_name(cerror)
            );
            return Err(Stop { ptr, cerror });
        }
        for &(cmd, ptr) in &pending {
            if let Err(e) = host_invalidate(&[cmd], ctx) {
                let cerror = cerror_of(&e, cmd);
                log::warn!(
                    "host invalidation of {} commands failed after {} converted: {}; \
                     sent again one by one: {cmd:#018x?} at CMDQ pointer {ptr:#x} failed: \
                     {}: {}",
                    cmds.len(),
                    batch_err.handled,
                    batch_err.error,
                    e.error,
                    cerror_name(cerror)
                );
                return Err(Stop { ptr, cerror });
            }
        }
        log::warn!(
            "host invalidation of {} commands failed after {} converted: {}; \
             sent again one by one: all succeeded",
            cmds.len(),
            batch_err.handled,
            batch_err.error
        );
        Ok(())
    }
}

/// One `IOMMU_HWPT_INVALIDATE` call, counted in the stats.
fn host_invalidate(cmds: &[[u64; 2]], ctx: &mut Ctx<'_>) -> Result<(), InvalidateError> {
    ctx.stats.host_invalidate_calls += 1;
    ctx.stats.host_invalidate_entries += cmds.len() as u64;
    ctx.host.invalidate(cmds)
}

/// The CERROR for a command the host failed: an ATC invalidation that
/// timed out (`ETIMEDOUT` from the kernel's CMD_SYNC) is
/// CERROR_ATC_INV_SYNC, anything else CERROR_ILL.
fn cerror_of(e: &InvalidateError, cmd: [u64; 2]) -> u32 {
    // Any other command that fails is illegal to the host (a TLBI timing
    // out is not an ATC sync failure: a guest retries on
    // CERROR_ATC_INV_SYNC and would loop).
    if e.error.errno == libc::ETIMEDOUT
        && cmd[0] & 0xff == u64::from(vsmmu_protocol::smmu::command::CMD_ATC_INV)
    {
        CERROR_ATC_INV_SYNC
    } else {
        CERROR_ILL
    }
}

fn cerror_name(cerror: u32) -> &'static str {
    match cerror {
        CERROR_ATC_INV_SYNC => "CERROR_ATC_INV_SYNC",
        CERROR_ABT => "CERROR_ABT",
        _ => "CERROR_ILL",
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{OwnedFd, RawFd};

    use vsmmu_protocol::smmu::command::{opcode, TlbiRange};
    use vsmmu_testutil::memfd;

    use super::*;
    use crate::host::sim::{SimConfig, SimHost};
    use crate::host::{HostError, HostIommu, HwInfo, SimControls, SteAction};
    use crate::irq::Irqs;
    use crate::memory::GuestRam;
    use crate::notify::Notifier;
    use crate::smmu::ids;
    use crate::smmu::tests::tlbi_va;
    use crate::stats::Stats;

    const RAM: u64 = 0x4000_0000;
    const CMDQ: u64 = RAM + 0x1000;
    const SID: u32 = 0x42;

    /// The sim with the invalidation failures it cannot produce itself.
    struct FaultyHost {
        sim: SimHost,
        /// A call holding this opcode fails with ETIMEDOUT and executes
        /// nothing, as an ATC_INV whose CMD_SYNC timed out; `entry_num`
        /// is then the last entry (`arm_vsmmu_cache_invalidate`'s `cur--`).
        timeout_opcode: Option<u8>,
        /// This many calls of several entries fail with EIO before the
        /// host works again.
        transient_failures: u32,
    }

    impl FaultyHost {
        fn new(sim: SimHost) -> Self {
            FaultyHost {
                sim,
                timeout_opcode: None,
                transient_failures: 0,
            }
        }
    }

    impl HostIommu for FaultyHost {
        fn name(&self) -> &'static str {
            "faulty"
        }
        fn hw_info(&self) -> HwInfo {
            self.sim.hw_info()
        }
        fn needs_device_fd(&self) -> bool {
            false
        }
        fn map_guest_ram(&mut self, gpa: u64, size: u64, addr: usize) -> Result<(), HostError> {
            self.sim.map_guest_ram(gpa, size, addr)
        }
        fn unmap_guest_ram(&mut self, gpa: u64, size: u64) -> Result<(), HostError> {
            self.sim.unmap_guest_ram(gpa, size)
        }
        fn attach_device(&mut self, vsid: u32, fd: Option<OwnedFd>) -> Result<u32, HostError> {
            self.sim.attach_device(vsid, fd)
        }
        fn detach_device(&mut self, vsid: u32) -> Result<(), HostError> {
            self.sim.detach_device(vsid)
        }
        fn is_attached(&self, vsid: u32) -> bool {
            self.sim.is_attached(vsid)
        }
        fn install_ste(&mut self, vsid: u32, action: SteAction) -> Result<(), HostError> {
            self.sim.install_ste(vsid, action)
        }
        fn invalidate(&mut self, cmds: &[[u64; 2]]) -> Result<(), InvalidateError> {
            let op = |c: &[u64; 2]| Some(opcode(c));
            if cmds.iter().any(|c| op(c) == self.timeout_opcode) {
                return Err(InvalidateError {
                    handled: cmds.len() - 1,
                    error: HostError::new("IOMMU_HWPT_INVALIDATE", libc::ETIMEDOUT, "sync"),
                });
            }
            if cmds.len() > 1 && self.transient_failures > 0 {
                self.transient_failures -= 1;
                return Err(InvalidateError {
                    handled: 0,
                    error: HostError::new("IOMMU_HWPT_INVALIDATE", libc::EIO, "transient"),
                });
            }
            self.sim.invalidate(cmds)
        }
        fn alloc_veventq(&mut self, depth: u32) -> Result<(), HostError> {
            self.sim.alloc_veventq(depth)
        }
        fn free_veventq(&mut self) {
            self.sim.free_veventq()
        }
        fn veventq_fd(&self) -> Option<RawFd> {
            self.sim.veventq_fd()
        }
        fn read_veventq(&mut self, buf: &mut [u8]) -> Result<usize, HostError> {
            self.sim.read_veventq(buf)
        }
        fn sim_controls(&mut self) -> Option<&mut dyn SimControls> {
            Some(&mut self.sim)
        }
    }

    /// A host under test and the sim behind it, whose counters and log the
    /// tests read.
    trait TestHost: HostIommu {
        fn sim(&mut self) -> &mut SimHost;
        /// Itself as a `HostIommu` (trait upcasting needs Rust 1.86; the
        /// MSRV is 1.85).
        fn host(&mut self) -> &mut dyn HostIommu;
    }

    impl TestHost for SimHost {
        fn sim(&mut self) -> &mut SimHost {
            self
        }
        fn host(&mut self) -> &mut dyn HostIommu {
            self
        }
    }

    impl TestHost for FaultyHost {
        fn sim(&mut self) -> &mut SimHost {
            &mut self.sim
        }
        fn host(&mut self) -> &mut dyn HostIommu {
            self
        }
    }

    /// A 256-entry CMDQ at `CMDQ` in memfd-backed guest RAM, consumed with
    /// SMMUEN = 1 and `SID` attached.
    struct Rig {
        q: CommandQueue,
        regs: CmdqRegs,
        host: Box<dyn TestHost>,
        mem: GuestRam,
        irqs: Irqs,
        stats: Stats,
        notify: Notifier,
        env: InstallEnv,
    }

    impl Rig {
        fn new(mut host: Box<dyn TestHost>, batch: bool) -> Rig {
            host.attach_device(SID, None).unwrap();
            let env = InstallEnv {
                idr: ids::advertised(&host.hw_info(), false).idr,
                smmu_enabled: true,
                gbpa_abort: false,
            };
            let mut mem = GuestRam::new(4);
            mem.map(memfd(0x10_0000), 0, RAM, 0x10_0000, true).unwrap();
            let regs = CmdqRegs {
                base: CMDQ | 8,
                ..CmdqRegs::default()
            };
            Rig {
                q: CommandQueue::new(batch),
                regs,
                host,
                mem,
                irqs: Irqs::default(),
                stats: Stats::default(),
                notify: Notifier::default(),
                env,
            }
        }

        /// Writes `cmds` at PROD, moves PROD past them and consumes.
        fn issue(&mut self, cmds: &[[u64; 2]]) -> Outcome {
            let mask = self.regs.ptr_mask();
            let mut prod = self.regs.prod;
            for c in cmds {
                let addr = CMDQ + u64::from(prod & 0xff) * CMD_ENTRY_SIZE;
                self.mem.write_u64s(addr, c).unwrap();
                prod = (prod + 1) & mask;
            }
            self.regs.prod = prod;
            let mut ctx = Ctx {
                mem: &self.mem,
                host: self.host.host(),
                irqs: &mut self.irqs,
                stats: &mut self.stats,
                notify: &mut self.notify,
            };
            self.q.consume(
                &mut self.regs,
                &self.env,
                &StreamTable::default(),
                &[SID],
                &mut ctx,
            )
        }

        fn sim(&mut self) -> &mut SimHost {
            self.host.sim()
        }

        fn host_log(&mut self) -> Vec<[u64; 2]> {
            self.sim().invalidation_log().copied().collect()
        }

        fn host_calls(&self) -> (u64, u64) {
            (
                self.stats.host_invalidate_calls,
                self.stats.host_invalidate_entries,
            )
        }
    }

    fn tlbi_vaa() -> [u64; 2] {
        Command::TlbiNhVaa {
            vmid: 0,
            range: TlbiRange::va(0, true),
        }
        .encode()
    }

    fn atc_inv() -> [u64; 2] {
        Command::AtcInv {
            sid: SID,
            ssv: false,
            ssid: 0,
            global: false,
            size: 0,
            addr: 0,
        }
        .encode()
    }

    fn sync() -> [u64; 2] {
        Command::sync_sev().encode()
    }

    /// CMDQ_CONS with ERR = `cerror` at `ptr`.
    fn cons_err(ptr: u32, cerror: u32) -> u32 {
        CMDQ_CONS_ERR.set32(ptr, cerror)
    }

    /// The kernel converted the first two entries and refused the third,
    /// but executed none of them: the model sends the four again one by
    /// one, and CONS stops at the refused one.
    #[test]
    fn failed_batch_is_resent_one_by_one() {
        let cfg = SimConfig {
            reject_opcode: Some(0x13), // TLBI_NH_VAA
            ..SimConfig::default()
        };
        let mut rig = Rig::new(Box::new(SimHost::new(cfg)), true);
        let out = rig.issue(&[tlbi_va(0), tlbi_va(1), tlbi_vaa(), tlbi_va(2), sync()]);
        assert!(out.error);
        assert_eq!(rig.regs.cons, cons_err(2, CERROR_ILL));
        assert_eq!(rig.regs.cons, 1 << 24 | 2);
        // The two before the refused command ran (sent again), the one
        // after it did not.
        assert_eq!(rig.host_log(), vec![tlbi_va(0), tlbi_va(1)]);
        // One call of 4 entries, then 3 single calls up to the refused one.
        assert_eq!(rig.host_calls(), (4, 7));
        assert_eq!(rig.sim().invalidate_calls(), 4);
        assert_eq!(rig.sim().invalidate_entries(), 2);
        assert_eq!((rig.stats.cmd_errors, rig.stats.cmd_syncs), (1, 0));
    }

    /// A refused single-entry call (`--no-batch`) is the failing command:
    /// nothing is sent again.
    #[test]
    fn failed_single_call_is_not_resent() {
        let cfg = SimConfig {
            reject_opcode: Some(0x13),
            ..SimConfig::default()
        };
        let mut rig = Rig::new(Box::new(SimHost::new(cfg)), false);
        let out = rig.issue(&[tlbi_va(0), tlbi_va(1), tlbi_vaa(), tlbi_va(2), sync()]);
        assert!(out.error);
        assert_eq!(rig.regs.cons, cons_err(2, CERROR_ILL));
        assert_eq!(rig.host_log(), vec![tlbi_va(0), tlbi_va(1)]);
        assert_eq!(rig.host_calls(), (3, 3));
        assert_eq!(rig.sim().invalidate_calls(), 3);
    }

    /// ETIMEDOUT (an ATC invalidation whose sync timed out) is
    /// CERROR_ATC_INV_SYNC at the ATC_INV, batched or not.
    #[test]
    fn host_timeout_is_cerror_atc_inv_sync() {
        for batch in [true, false] {
            let mut host = FaultyHost::new(SimHost::default());
            host.timeout_opcode = Some(0x40); // ATC_INV
            let mut rig = Rig::new(Box::new(host), batch);
            // Test-only: the model does not advertise ATS, but ATC_INV
            // reaches the host only when it is.
            rig.env.idr[0] |= IDR0_ATS.mask32();
            let out = rig.issue(&[tlbi_va(0), atc_inv(), tlbi_va(1), sync()]);
            assert!(out.error, "batch {batch}");
            assert_eq!(
                rig.regs.cons,
                cons_err(1, CERROR_ATC_INV_SYNC),
                "batch {batch}"
            );
            assert_eq!(rig.regs.cons, 3 << 24 | 1, "batch {batch}");
            assert_eq!(rig.host_log(), vec![tlbi_va(0)], "batch {batch}");
            // Batched: one call of 3 (entry_num 2, the last), then 2 single
            // calls. Unbatched: one call per command up to the ATC_INV.
            let want = if batch { (3, 5) } else { (2, 2) };
            assert_eq!(rig.host_calls(), want, "batch {batch}");
            assert_eq!(rig.stats.cmd_errors, 1, "batch {batch}");
        }
    }

    /// A TLBI that times out on the host is CERROR_ILL, not an ATC sync
    /// failure (which a guest retries).
    #[test]
    fn host_timeout_of_a_tlbi_is_cerror_ill() {
        let mut host = FaultyHost::new(SimHost::default());
        host.timeout_opcode = Some(0x12); // TLBI_NH_VA
        let mut rig = Rig::new(Box::new(host), false);
        let out = rig.issue(&[tlbi_va(0), sync()]);
        assert!(out.error);
        assert_eq!(rig.regs.cons, cons_err(0, CERROR_ILL));
    }

    /// A batch that fails but whose commands all succeed when sent again
    /// one by one raises no error.
    #[test]
    fn transient_batch_failure_is_no_error() {
        let mut host = FaultyHost::new(SimHost::default());
        host.transient_failures = 1;
        let mut rig = Rig::new(Box::new(host), true);
        let out = rig.issue(&[tlbi_va(0), tlbi_va(1), tlbi_va(2), sync()]);
        assert!(!out.error);
        assert_eq!(rig.regs.cons, 4);
        assert_eq!(rig.host_log(), vec![tlbi_va(0), tlbi_va(1), tlbi_va(2)]);
        assert_eq!(rig.host_calls(), (4, 6));
        assert_eq!((rig.stats.cmd_errors, rig.stats.cmd_syncs), (0, 1));
    }
}
