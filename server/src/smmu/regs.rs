//! The register file: [`Registers`], every programmable register of page 0
//! and page 1 in one serialisable block, and the MMIO reads and writes
//! that reach it. The live model holds the block and a saved state
//! carries it as is ([`super::SmmuState`]), so a new register is one
//! field here and one arm in [`Smmu::read`] / [`Smmu::write`].
//!
//! The ID registers are not in the block: they are fixed when the model is
//! built ([`super::ids`]), and a restore checks them instead of loading
//! them.

use vsmmu_protocol::smmu::queue::{Queue, QueueBase, MAX_LOG2SIZE};
use vsmmu_protocol::smmu::regs::*;

use super::{Ctx, Smmu, StreamTable};
use crate::irq::IRQ_GERROR;

/// The programmable registers.
///
/// The field order is the migration stream's layout (postcard writes
/// fields in order, with no names): reordering, adding or removing a field
/// needs a new `migration::VERSION`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Registers {
    /// SMMU_CR0 (and CR0ACK, which follows it at once).
    pub cr0: u32,
    /// SMMU_CR1.
    pub cr1: u32,
    /// SMMU_CR2.
    pub cr2: u32,
    /// SMMU_GBPA (UPDATE reads as 0: updates complete at once).
    pub gbpa: u32,
    /// SMMU_IRQ_CTRL (and IRQ_CTRLACK).
    pub irq_ctrl: u32,
    /// GERROR, GERRORN and the GERROR interrupt's configuration.
    pub gerr: GlobalErrors,
    /// STRTAB_BASE, STRTAB_BASE_CFG.
    pub strtab: StreamTable,
    /// The command queue's registers.
    pub cmdq: CmdqRegs,
    /// The event queue's registers.
    pub evtq: EvtqRegs,
}

impl Default for Registers {
    /// The reset values.
    fn default() -> Self {
        Registers {
            cr0: 0,
            cr1: 0,
            cr2: 0,
            gbpa: GBPA_RESET,
            irq_ctrl: 0,
            gerr: GlobalErrors::default(),
            strtab: StreamTable::default(),
            cmdq: CmdqRegs::default(),
            evtq: EvtqRegs::default(),
        }
    }
}

/// Global error state: GERROR / GERRORN and the GERROR interrupt.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GlobalErrors {
    /// SMMU_GERROR.
    pub gerror: u32,
    /// SMMU_GERRORN.
    pub gerrorn: u32,
    /// GERROR_IRQ_CFG0.
    pub irq_cfg0: u64,
    /// GERROR_IRQ_CFG1.
    pub irq_cfg1: u32,
    /// GERROR_IRQ_CFG2.
    pub irq_cfg2: u32,
}

impl GlobalErrors {
    /// True while error `bit` is active (GERROR and GERRORN differ).
    pub(crate) fn active(&self, bit: u32) -> bool {
        (self.gerror ^ self.gerrorn) & bit != 0
    }

    /// Raises error `bit` unless it is already active; signals the GERROR
    /// interrupt when enabled.
    pub(crate) fn raise(&mut self, bit: u32, irq_ctrl: u32, ctx: &mut Ctx<'_>) {
        if self.active(bit) {
            return;
        }
        self.gerror ^= bit;
        if IRQ_CTRL_GERROR_IRQEN.is_set32(irq_ctrl) && ctx.irqs.trigger(IRQ_GERROR) {
            ctx.stats.irqs[IRQ_GERROR] += 1;
        }
    }
}

/// The command queue's registers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CmdqRegs {
    /// SMMU_CMDQ_BASE.
    pub base: u64,
    /// SMMU_CMDQ_PROD.
    pub prod: u32,
    /// SMMU_CMDQ_CONS (pointer and ERR).
    pub cons: u32,
}

impl Default for CmdqRegs {
    /// The reset values.
    fn default() -> Self {
        CmdqRegs {
            base: CMDQ_BASE_RESET,
            prod: 0,
            cons: 0,
        }
    }
}

impl CmdqRegs {
    /// The queue BASE describes.
    pub(crate) fn queue(&self) -> Queue {
        QueueBase::decode(self.base).queue(MAX_LOG2SIZE)
    }

    /// Mask of the pointer bits (index and wrap) of PROD/CONS.
    pub(crate) fn ptr_mask(&self) -> u32 {
        self.queue().ptr_mask()
    }
}

/// The event queue's registers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EvtqRegs {
    /// SMMU_EVENTQ_BASE.
    pub base: u64,
    /// SMMU_EVENTQ_PROD (index, wrap, OVFLG).
    pub prod: u32,
    /// SMMU_EVENTQ_CONS (index, wrap, OVACKFLG).
    pub cons: u32,
    /// SMMU_EVENTQ_IRQ_CFG0.
    pub irq_cfg0: u64,
    /// SMMU_EVENTQ_IRQ_CFG1.
    pub irq_cfg1: u32,
    /// SMMU_EVENTQ_IRQ_CFG2.
    pub irq_cfg2: u32,
}

impl Default for EvtqRegs {
    /// The reset values.
    fn default() -> Self {
        EvtqRegs {
            base: EVENTQ_BASE_RESET,
            prod: 0,
            cons: 0,
            irq_cfg0: 0,
            irq_cfg1: 0,
            irq_cfg2: 0,
        }
    }
}

impl EvtqRegs {
    /// The queue BASE describes.
    pub(crate) fn queue(&self) -> Queue {
        QueueBase::decode(self.base).queue(MAX_LOG2SIZE)
    }

    /// Mask of the pointer bits (index and wrap) of PROD/CONS.
    pub(crate) fn ptr_mask(&self) -> u32 {
        self.queue().ptr_mask()
    }
}

impl Smmu {
    /// A 4- or 8-byte read at an aligned offset inside the region.
    pub fn read(&mut self, offset: u64, size: usize, ctx: &mut Ctx<'_>) -> u64 {
        if size == 8 {
            if is_64bit(offset) {
                return self.read64(offset);
            }
            // Two adjacent 32-bit registers.
            let lo = u64::from(self.read32(offset, ctx));
            let hi = u64::from(self.read32(offset + 4, ctx));
            return hi << 32 | lo;
        }
        // The upper half of a 64-bit register.
        if offset % 8 == 4 && is_64bit(offset - 4) {
            return self.read64(offset - 4) >> 32;
        }
        if is_64bit(offset) {
            return self.read64(offset) & 0xffff_ffff;
        }
        self.read32(offset, ctx).into()
    }

    fn read64(&self, offset: u64) -> u64 {
        let r = &self.regs;
        match offset {
            GERROR_IRQ_CFG0 => r.gerr.irq_cfg0,
            STRTAB_BASE => r.strtab.base,
            CMDQ_BASE => r.cmdq.base,
            EVENTQ_BASE => r.evtq.base,
            EVENTQ_IRQ_CFG0 => r.evtq.irq_cfg0,
            _ => 0,
        }
    }

    fn read32(&mut self, offset: u64, _ctx: &mut Ctx<'_>) -> u32 {
        let r = &self.regs;
        match canonical_offset(offset) {
            IDR0..=IDR5 => self.ids.idr[((offset - IDR0) / 4) as usize],
            IIDR => self.ids.iidr,
            AIDR => self.ids.aidr,
            CR0 | CR0ACK => r.cr0,
            CR1 => r.cr1,
            CR2 => r.cr2,
            STATUSR => 0,
            GBPA => r.gbpa,
            IRQ_CTRL | IRQ_CTRLACK => r.irq_ctrl,
            GERROR => r.gerr.gerror,
            GERRORN => r.gerr.gerrorn,
            GERROR_IRQ_CFG1 => r.gerr.irq_cfg1,
            GERROR_IRQ_CFG2 => r.gerr.irq_cfg2,
            STRTAB_BASE_CFG => r.strtab.base_cfg,
            CMDQ_PROD => r.cmdq.prod,
            CMDQ_CONS => r.cmdq.cons,
            EVENTQ_PROD => r.evtq.prod,
            EVENTQ_CONS => r.evtq.cons,
            EVENTQ_IRQ_CFG1 => r.evtq.irq_cfg1,
            EVENTQ_IRQ_CFG2 => r.evtq.irq_cfg2,
            o if (IDREGS_BASE..IDREGS_BASE + 48).contains(&o) => {
                IDREGS[((o - IDREGS_BASE) / 4) as usize]
            }
            _ => 0,
        }
    }

    /// A 4- or 8-byte write at an aligned offset inside the region.
    pub fn write(&mut self, offset: u64, size: usize, value: u64, ctx: &mut Ctx<'_>) {
        if size == 8 {
            if is_64bit(offset) {
                self.write64(offset, value, ctx);
            } else {
                self.write32(offset, value as u32, ctx);
                self.write32(offset + 4, (value >> 32) as u32, ctx);
            }
            return;
        }
        let value = value as u32;
        if offset % 8 == 4 && is_64bit(offset - 4) {
            let old = self.read64(offset - 4);
            self.write64(
                offset - 4,
                (old & 0xffff_ffff) | u64::from(value) << 32,
                ctx,
            );
        } else if is_64bit(offset) {
            let old = self.read64(offset);
            self.write64(offset, (old & !0xffff_ffff) | u64::from(value), ctx);
        } else {
            self.write32(offset, value, ctx);
        }
    }

    fn write64(&mut self, offset: u64, value: u64, _ctx: &mut Ctx<'_>) {
        match offset {
            GERROR_IRQ_CFG0 => self.regs.gerr.irq_cfg0 = value & IRQ_CFG0_WRITABLE,
            STRTAB_BASE => {
                // Guarded by SMMUEN: the architecture ignores changes while on.
                if !self.smmu_enabled() {
                    self.regs.strtab.base = value & STRTAB_BASE_WRITABLE;
                } else {
                    log::debug!("STRTAB_BASE write ignored: SMMUEN=1");
                }
            }
            CMDQ_BASE => {
                if !CR0_CMDQEN.is_set32(self.regs.cr0) {
                    self.regs.cmdq.base =
                        clamp_log2size(value & Q_BASE_WRITABLE, self.cmdq_max_log2());
                } else {
                    log::debug!("CMDQ_BASE write ignored: CMDQEN=1");
                }
            }
            EVENTQ_BASE => {
                if !CR0_EVTQEN.is_set32(self.regs.cr0) {
                    self.regs.evtq.base =
                        clamp_log2size(value & Q_BASE_WRITABLE, self.evtq_max_log2());
                } else {
                    log::debug!("EVENTQ_BASE write ignored: EVTQEN=1");
                }
            }
            EVENTQ_IRQ_CFG0 => self.regs.evtq.irq_cfg0 = value & IRQ_CFG0_WRITABLE,
            _ => {}
        }
    }

    fn cmdq_max_log2(&self) -> u32 {
        IDR1_CMDQS.get32(self.ids.idr[1])
    }

    fn write32(&mut self, offset: u64, value: u32, ctx: &mut Ctx<'_>) {
        match canonical_offset(offset) {
            CR0 => self.write_cr0(value & self.cr0_writable(), ctx),
            CR1 => {
                if !self.queues_or_smmu_enabled() {
                    self.regs.cr1 = value & CR1_WRITABLE;
                }
            }
            CR2 => {
                if !self.smmu_enabled() {
                    self.regs.cr2 = value & CR2_WRITABLE;
                }
            }
            GBPA => {
                // Only a write with UPDATE set changes GBPA; the update is
                // immediate, so UPDATE reads back as 0.
                if GBPA_UPDATE.is_set32(value) {
                    let old_abort = GBPA_ABORT.is_set32(self.regs.gbpa);
                    self.regs.gbpa = value & GBPA_WRITABLE & !GBPA_UPDATE.mask32();
                    if old_abort != GBPA_ABORT.is_set32(self.regs.gbpa) && !self.smmu_enabled() {
                        self.reinstall_all(ctx);
                    }
                }
            }
            IRQ_CTRL => {
                self.regs.irq_ctrl = value & IRQ_CTRL_WRITABLE & !IRQ_CTRL_PRIQ_IRQEN.mask32()
            }
            GERRORN => {
                let was_cmdq_err = self.regs.gerr.active(GERROR_CMDQ_ERR);
                self.regs.gerr.gerrorn = value & GERRORN_WRITABLE;
                if was_cmdq_err && !self.regs.gerr.active(GERROR_CMDQ_ERR) {
                    // Acknowledged: the command queue resumes at CONS.
                    self.consume_commands(ctx);
                }
            }
            GERROR_IRQ_CFG1 => self.regs.gerr.irq_cfg1 = value & IRQ_CFG1_WRITABLE,
            GERROR_IRQ_CFG2 => self.regs.gerr.irq_cfg2 = value & IRQ_CFG2_WRITABLE,
            STRTAB_BASE_CFG => {
                if !self.smmu_enabled() {
                    self.regs.strtab.base_cfg = value & STRTAB_BASE_CFG_WRITABLE;
                }
            }
            CMDQ_PROD => {
                self.regs.cmdq.prod = value & self.regs.cmdq.ptr_mask();
                self.consume_commands(ctx);
            }
            CMDQ_CONS => {
                if !CR0_CMDQEN.is_set32(self.regs.cr0) {
                    self.regs.cmdq.cons =
                        value & (self.regs.cmdq.ptr_mask() | CMDQ_CONS_ERR.mask32());
                }
            }
            EVENTQ_PROD => {
                if !CR0_EVTQEN.is_set32(self.regs.cr0) {
                    self.regs.evtq.prod = value & (self.regs.evtq.ptr_mask() | Q_PROD_OVFLG);
                }
            }
            EVENTQ_CONS => {
                self.regs.evtq.cons = value & (self.regs.evtq.ptr_mask() | Q_CONS_OVACKFLG);
                // Room may have appeared: buffered records go in now.
                self.evtq.deliver(&mut self.regs, ctx);
            }
            EVENTQ_IRQ_CFG1 => self.regs.evtq.irq_cfg1 = value & IRQ_CFG1_WRITABLE,
            EVENTQ_IRQ_CFG2 => self.regs.evtq.irq_cfg2 = value & IRQ_CFG2_WRITABLE,
            _ => {}
        }
    }

    fn cr0_writable(&self) -> u32 {
        // PRIQEN and ATSCHK are RES0 without PRI and ATS.
        let mut m =
            CR0_SMMUEN.mask32() | CR0_EVTQEN.mask32() | CR0_CMDQEN.mask32() | CR0_VMW.mask32();
        if IDR0_ATS.is_set32(self.ids.idr[0]) {
            m |= CR0_ATSCHK.mask32();
        }
        m
    }

    fn queues_or_smmu_enabled(&self) -> bool {
        self.regs.cr0 & (CR0_SMMUEN.mask32() | CR0_EVTQEN.mask32() | CR0_CMDQEN.mask32()) != 0
    }

    fn write_cr0(&mut self, value: u32, ctx: &mut Ctx<'_>) {
        let old = self.regs.cr0;
        // CR0ACK follows at once: every change completes synchronously.
        self.regs.cr0 = value;
        let rose = |f: vsmmu_protocol::smmu::bits::Field| !f.is_set32(old) && f.is_set32(value);
        let changed = |f: vsmmu_protocol::smmu::bits::Field| f.is_set32(old) != f.is_set32(value);
        if rose(CR0_EVTQEN) {
            self.evtq.enable(&self.regs.evtq, self.evtq_max_log2(), ctx);
        }
        if changed(CR0_EVTQEN) {
            self.evtq.deliver(&mut self.regs, ctx);
        }
        if changed(CR0_SMMUEN) {
            self.reinstall_all(ctx);
        }
        if rose(CR0_CMDQEN) {
            self.consume_commands(ctx);
        }
    }
}

/// Caps a queue base's LOG2SIZE at the advertised maximum (the
/// architecture treats larger values as the maximum).
fn clamp_log2size(base: u64, max: u32) -> u64 {
    let l = Q_BASE_LOG2SIZE.get(base) as u32;
    if l > max {
        Q_BASE_LOG2SIZE.set(base, max.into())
    } else {
        base
    }
}
