//! The CommandQueue: consumes commands from guest RAM between CONS and PROD.
//!
//! Host-bound commands (TLBI_NH_*, TLBI_NSNH_ALL, ATC_INV, CFGI_CD*) are
//! batched into one `IOMMU_HWPT_INVALIDATE` per run of consecutive commands
//! (at most `MAX_INVALIDATION_ENTRIES` per call); a batch is flushed before
//! any command that depends on it (CFGI_STE*, CMD_SYNC) and at the end of a
//! consumption run, so CMDQ_CONS never passes an unsent command. A host
//! failure part-way makes CMDQ_CONS point at exactly the failing command.

use vsmmu_protocol::smmu::command::{Command, CommandCaps, CommandError, SyncCs};
use vsmmu_protocol::smmu::queue::{Queue, QueueBase, CMD_ENTRY_SIZE, MAX_LOG2SIZE};
use vsmmu_protocol::smmu::regs::*;

use super::strtab::{InstallEnv, StreamTable};
use super::Ctx;
use crate::host::MAX_INVALIDATION_ENTRIES;
use crate::irq::IRQ_CMD_SYNC;

/// The result of a consumption run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events the run raised (C_BAD_STE for refused STEs, ...).
    pub events: Vec<[u64; 4]>,
    /// A command error stopped the run (CONS.ERR set): raise GERROR.CMDQ_ERR.
    pub error: bool,
}

/// CMDQ registers and the pending host batch.
#[derive(Debug)]
pub struct CommandQueue {
    /// SMMU_CMDQ_BASE.
    pub base: u64,
    /// SMMU_CMDQ_PROD.
    pub prod: u32,
    /// SMMU_CMDQ_CONS (pointer and ERR).
    pub cons: u32,
    batch: bool,
    /// Host-bound commands not yet sent, with the queue pointer of each.
    pending: Vec<([u64; 2], u32)>,
}

/// A command failed: where, and the CERROR code.
struct Stop {
    ptr: u32,
    cerror: u32,
}

impl CommandQueue {
    /// A queue at reset; `batch` selects batched host invalidation.
    pub fn new(batch: bool) -> Self {
        CommandQueue {
            base: CMDQ_BASE_RESET,
            prod: 0,
            cons: 0,
            batch,
            pending: Vec::new(),
        }
    }

    /// Registers to reset values.
    pub fn reset(&mut self) {
        *self = CommandQueue::new(self.batch);
    }

    fn queue(&self) -> Queue {
        QueueBase::decode(self.base).queue(MAX_LOG2SIZE)
    }

    /// Mask of the pointer bits (index and wrap) of PROD/CONS.
    pub fn ptr_mask(&self) -> u32 {
        self.queue().ptr_mask()
    }

    /// Consumes commands from CONS up to PROD, or up to the first error.
    pub fn consume(
        &mut self,
        env: &InstallEnv,
        strtab: &StreamTable,
        attached: &[u32],
        ctx: &mut Ctx<'_>,
    ) -> Outcome {
        let q = self.queue();
        let base = QueueBase::decode(self.base);
        let mut out = Outcome::default();
        let mut cons = self.cons & q.ptr_mask();
        let mut stop = None;
        while !q.is_empty(self.prod, cons) {
            match self.execute_at(cons, &q, &base, env, strtab, attached, ctx, &mut out) {
                Ok(()) => {
                    ctx.stats.cmds_consumed += 1;
                    cons = q.incr(cons);
                }
                Err(s) => {
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
                self.cons = CMDQ_CONS_ERR.set32(s.ptr & q.ptr_mask(), s.cerror);
                ctx.stats.cmd_errors += 1;
                out.error = true;
            }
            None => self.cons = (self.cons & CMDQ_CONS_ERR.mask32()) | cons,
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
    ) -> Result<(), Stop> {
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
                return Err(abort);
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
    fn flush(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Stop> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let cmds: Vec<[u64; 2]> = self.pending.iter().map(|(c, _)| *c).collect();
        ctx.stats.host_invalidate_calls += 1;
        ctx.stats.host_invalidate_entries += cmds.len() as u64;
        let result = ctx.host.invalidate(&cmds);
        let pending = std::mem::take(&mut self.pending);
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let failed = pending.get(e.handled).or(pending.last());
                let ptr = failed.map(|(_, p)| *p).unwrap_or(0);
                log::warn!(
                    "host invalidation failed at command {} of {}: {}: CERROR_ILL",
                    e.handled,
                    cmds.len(),
                    e.error
                );
                Err(Stop {
                    ptr,
                    cerror: CERROR_ILL,
                })
            }
        }
    }
}
