//! The SMMUv3 model: the register file (page 0 and page 1), and the
//! machinery behind it: [`cmdq`] consumes the command queue, [`strtab`]
//! turns stream table entries into host configurations, [`evtq`] writes
//! event records into the guest's queue.
//!
//! The guest sees a stage-1 SMMU, as QEMU's accelerated SMMUv3 presents
//! it; the host supplies stage 2. The model touches guest RAM, the host
//! backend and the interrupt lines only through [`Ctx`].

pub mod cmdq;
pub mod evtq;
pub mod ids;
pub mod strtab;

#[cfg(test)]
mod tests;

use vsmmu_protocol::smmu::regs::*;

use crate::host::{HostIommu, HwInfo};
use crate::irq::{Irqs, IRQ_GERROR};
use crate::memory::GuestRam;
use crate::notify::Notifier;
use crate::stats::Stats;

pub use cmdq::CommandQueue;
pub use evtq::EventQueue;
pub use strtab::StreamTable;

/// Size of the register region: page 0 and page 1.
pub const REGION_SIZE: u64 = 0x20000;

/// What the model may touch while handling an access: guest RAM, the host
/// backend, the interrupt lines and the counters. Never a socket.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Guest RAM.
    pub mem: &'a GuestRam,
    /// Host backend.
    pub host: &'a mut dyn HostIommu,
    /// Interrupt lines.
    pub irqs: &'a mut Irqs,
    /// Counters.
    pub stats: &'a mut Stats,
    /// The VMM's invalidation ring.
    pub notify: &'a mut Notifier,
}

impl std::fmt::Debug for dyn HostIommu + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostIommu({})", self.name())
    }
}

/// Options of the model.
#[derive(Debug, Clone)]
pub struct SmmuConfig {
    /// Advertise IDR0.MSI.
    pub msi: bool,
    /// Batch host invalidations.
    pub batch: bool,
    /// Host records kept while the guest EVENTQ is full (None: one guest
    /// queue's worth, at least 1024).
    pub event_buffer: Option<usize>,
}

impl Default for SmmuConfig {
    fn default() -> Self {
        SmmuConfig {
            msi: false,
            batch: true,
            event_buffer: None,
        }
    }
}

/// Global error state: GERROR / GERRORN and the GERROR interrupt.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GlobalErrors {
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
    pub fn active(&self, bit: u32) -> bool {
        (self.gerror ^ self.gerrorn) & bit != 0
    }

    /// Raises error `bit` unless it is already active; signals the GERROR
    /// interrupt when enabled.
    pub fn raise(&mut self, bit: u32, irq_ctrl: u32, ctx: &mut Ctx<'_>) {
        if self.active(bit) {
            return;
        }
        self.gerror ^= bit;
        if IRQ_CTRL_GERROR_IRQEN.is_set32(irq_ctrl) && ctx.irqs.trigger(IRQ_GERROR) {
            ctx.stats.irqs[IRQ_GERROR] += 1;
        }
    }
}

/// The SMMUv3 device model.
#[derive(Debug)]
pub struct Smmu {
    idr: [u32; 6],
    iidr: u32,
    aidr: u32,
    cr0: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    gerr: GlobalErrors,
    strtab: StreamTable,
    cmdq: CommandQueue,
    evtq: EventQueue,
    /// StreamIDs with a host device behind them, sorted.
    attached: Vec<u32>,
}

impl Smmu {
    /// A model at reset, advertising what both this model and the host implement.
    pub fn new(cfg: SmmuConfig, hw: HwInfo) -> Self {
        let ids = ids::advertised(&hw, cfg.msi);
        let mut s = Smmu {
            idr: ids.idr,
            iidr: ids.iidr,
            aidr: ids.aidr,
            cr0: 0,
            cr1: 0,
            cr2: 0,
            gbpa: GBPA_RESET,
            irq_ctrl: 0,
            gerr: GlobalErrors::default(),
            strtab: StreamTable::default(),
            cmdq: CommandQueue::new(cfg.batch),
            evtq: EventQueue::new(cfg.event_buffer),
            attached: Vec::new(),
        };
        s.reset_regs();
        s
    }

    fn reset_regs(&mut self) {
        self.cr0 = 0;
        self.cr1 = 0;
        self.cr2 = 0;
        self.gbpa = GBPA_RESET;
        self.irq_ctrl = 0;
        self.gerr = GlobalErrors::default();
        self.strtab = StreamTable::default();
        self.cmdq.reset();
    }

    /// DEVICE_RESET: registers to their reset values, the vEVENTQ freed,
    /// every attached device back to the disabled SMMU's behaviour.
    pub fn reset(&mut self, ctx: &mut Ctx<'_>) {
        self.reset_regs();
        self.evtq.reset(ctx);
        self.reinstall_all(ctx);
    }

    fn install_env(&self) -> strtab::InstallEnv {
        strtab::InstallEnv {
            idr: self.idr,
            smmu_enabled: self.smmu_enabled(),
            gbpa_abort: GBPA_ABORT.is_set32(self.gbpa),
        }
    }

    fn regs(&self) -> evtq::Regs {
        evtq::Regs {
            cr0: self.cr0,
            irq_ctrl: self.irq_ctrl,
        }
    }

    fn smmu_enabled(&self) -> bool {
        CR0_SMMUEN.is_set32(self.cr0)
    }

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
        match offset {
            GERROR_IRQ_CFG0 => self.gerr.irq_cfg0,
            STRTAB_BASE => self.strtab.base,
            CMDQ_BASE => self.cmdq.base,
            EVENTQ_BASE => self.evtq.base,
            EVENTQ_IRQ_CFG0 => self.evtq.irq_cfg0,
            _ => 0,
        }
    }

    fn read32(&mut self, offset: u64, _ctx: &mut Ctx<'_>) -> u32 {
        match canonical_offset(offset) {
            IDR0..=IDR5 => self.idr[((offset - IDR0) / 4) as usize],
            IIDR => self.iidr,
            AIDR => self.aidr,
            CR0 | CR0ACK => self.cr0,
            CR1 => self.cr1,
            CR2 => self.cr2,
            STATUSR => 0,
            GBPA => self.gbpa,
            IRQ_CTRL | IRQ_CTRLACK => self.irq_ctrl,
            GERROR => self.gerr.gerror,
            GERRORN => self.gerr.gerrorn,
            GERROR_IRQ_CFG1 => self.gerr.irq_cfg1,
            GERROR_IRQ_CFG2 => self.gerr.irq_cfg2,
            STRTAB_BASE_CFG => self.strtab.base_cfg,
            CMDQ_PROD => self.cmdq.prod,
            CMDQ_CONS => self.cmdq.cons,
            EVENTQ_PROD => self.evtq.prod,
            EVENTQ_CONS => self.evtq.cons,
            EVENTQ_IRQ_CFG1 => self.evtq.irq_cfg1,
            EVENTQ_IRQ_CFG2 => self.evtq.irq_cfg2,
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
            GERROR_IRQ_CFG0 => self.gerr.irq_cfg0 = value & IRQ_CFG0_WRITABLE,
            STRTAB_BASE => {
                // Guarded by SMMUEN: the architecture ignores changes while on.
                if !self.smmu_enabled() {
                    self.strtab.base = value & STRTAB_BASE_WRITABLE;
                } else {
                    log::debug!("STRTAB_BASE write ignored: SMMUEN=1");
                }
            }
            CMDQ_BASE => {
                if !CR0_CMDQEN.is_set32(self.cr0) {
                    self.cmdq.base = clamp_log2size(value & Q_BASE_WRITABLE, self.cmdq_max_log2());
                } else {
                    log::debug!("CMDQ_BASE write ignored: CMDQEN=1");
                }
            }
            EVENTQ_BASE => {
                if !CR0_EVTQEN.is_set32(self.cr0) {
                    self.evtq.base = clamp_log2size(value & Q_BASE_WRITABLE, self.evtq_max_log2());
                } else {
                    log::debug!("EVENTQ_BASE write ignored: EVTQEN=1");
                }
            }
            EVENTQ_IRQ_CFG0 => self.evtq.irq_cfg0 = value & IRQ_CFG0_WRITABLE,
            _ => {}
        }
    }

    fn cmdq_max_log2(&self) -> u32 {
        IDR1_CMDQS.get32(self.idr[1])
    }

    fn evtq_max_log2(&self) -> u32 {
        IDR1_EVTQS.get32(self.idr[1])
    }

    fn write32(&mut self, offset: u64, value: u32, ctx: &mut Ctx<'_>) {
        match canonical_offset(offset) {
            CR0 => self.write_cr0(value & self.cr0_writable(), ctx),
            CR1 => {
                if !self.queues_or_smmu_enabled() {
                    self.cr1 = value & CR1_WRITABLE;
                }
            }
            CR2 => {
                if !self.smmu_enabled() {
                    self.cr2 = value & CR2_WRITABLE;
                }
            }
            GBPA => {
                // Only a write with UPDATE set changes GBPA; the update is
                // immediate, so UPDATE reads back as 0.
                if GBPA_UPDATE.is_set32(value) {
                    let old_abort = GBPA_ABORT.is_set32(self.gbpa);
                    self.gbpa = value & GBPA_WRITABLE & !GBPA_UPDATE.mask32();
                    if old_abort != GBPA_ABORT.is_set32(self.gbpa) && !self.smmu_enabled() {
                        self.reinstall_all(ctx);
                    }
                }
            }
            IRQ_CTRL => self.irq_ctrl = value & IRQ_CTRL_WRITABLE & !IRQ_CTRL_PRIQ_IRQEN.mask32(),
            GERRORN => {
                let was_cmdq_err = self.gerr.active(GERROR_CMDQ_ERR);
                self.gerr.gerrorn = value & GERRORN_WRITABLE;
                if was_cmdq_err && !self.gerr.active(GERROR_CMDQ_ERR) {
                    // Acknowledged: the command queue resumes at CONS.
                    self.consume_commands(ctx);
                }
            }
            GERROR_IRQ_CFG1 => self.gerr.irq_cfg1 = value & IRQ_CFG1_WRITABLE,
            GERROR_IRQ_CFG2 => self.gerr.irq_cfg2 = value & IRQ_CFG2_WRITABLE,
            STRTAB_BASE_CFG => {
                if !self.smmu_enabled() {
                    self.strtab.base_cfg = value & STRTAB_BASE_CFG_WRITABLE;
                }
            }
            CMDQ_PROD => {
                self.cmdq.prod = value & self.cmdq.ptr_mask();
                self.consume_commands(ctx);
            }
            CMDQ_CONS => {
                if !CR0_CMDQEN.is_set32(self.cr0) {
                    self.cmdq.cons = value & (self.cmdq.ptr_mask() | CMDQ_CONS_ERR.mask32());
                }
            }
            EVENTQ_PROD => {
                if !CR0_EVTQEN.is_set32(self.cr0) {
                    self.evtq.prod = value & (self.evtq.ptr_mask() | Q_PROD_OVFLG);
                }
            }
            EVENTQ_CONS => {
                self.evtq.cons = value & (self.evtq.ptr_mask() | Q_CONS_OVACKFLG);
                // Room may have appeared: buffered records go in now.
                let regs = self.regs();
                self.evtq.deliver(regs, &mut self.gerr, ctx);
            }
            EVENTQ_IRQ_CFG1 => self.evtq.irq_cfg1 = value & IRQ_CFG1_WRITABLE,
            EVENTQ_IRQ_CFG2 => self.evtq.irq_cfg2 = value & IRQ_CFG2_WRITABLE,
            _ => {}
        }
    }

    fn cr0_writable(&self) -> u32 {
        // PRIQEN and ATSCHK are RES0 without PRI and ATS.
        let mut m =
            CR0_SMMUEN.mask32() | CR0_EVTQEN.mask32() | CR0_CMDQEN.mask32() | CR0_VMW.mask32();
        if IDR0_ATS.is_set32(self.idr[0]) {
            m |= CR0_ATSCHK.mask32();
        }
        m
    }

    fn queues_or_smmu_enabled(&self) -> bool {
        self.cr0 & (CR0_SMMUEN.mask32() | CR0_EVTQEN.mask32() | CR0_CMDQEN.mask32()) != 0
    }

    fn write_cr0(&mut self, value: u32, ctx: &mut Ctx<'_>) {
        let old = self.cr0;
        // CR0ACK follows at once: every change completes synchronously.
        self.cr0 = value;
        let rose = |f: vsmmu_protocol::smmu::bits::Field| !f.is_set32(old) && f.is_set32(value);
        let changed = |f: vsmmu_protocol::smmu::bits::Field| f.is_set32(old) != f.is_set32(value);
        if rose(CR0_EVTQEN) {
            self.evtq.enable(self.evtq_max_log2(), ctx);
        }
        if changed(CR0_EVTQEN) {
            let regs = self.regs();
            self.evtq.deliver(regs, &mut self.gerr, ctx);
        }
        if changed(CR0_SMMUEN) {
            self.reinstall_all(ctx);
        }
        if rose(CR0_CMDQEN) {
            self.consume_commands(ctx);
        }
    }

    fn consume_commands(&mut self, ctx: &mut Ctx<'_>) {
        if !CR0_CMDQEN.is_set32(self.cr0) || self.gerr.active(GERROR_CMDQ_ERR) {
            return;
        }
        let env = self.install_env();
        let outcome = self.cmdq.consume(&env, &self.strtab, &self.attached, ctx);
        for rec in outcome.events {
            self.evtq.push_model_event(rec, ctx);
        }
        let regs = self.regs();
        self.evtq.deliver(regs, &mut self.gerr, ctx);
        if outcome.error {
            self.gerr.raise(GERROR_CMDQ_ERR, self.irq_ctrl, ctx);
        }
    }

    /// The VMM acknowledged invalidations: a CMD_SYNC that waited for them
    /// completes now (or a client left: nothing to wait for any more).
    pub fn resume_commands(&mut self, ctx: &mut Ctx<'_>) {
        self.consume_commands(ctx);
    }

    /// Re-derives the host configuration of every attached device (the
    /// SMMU was enabled or disabled, GBPA changed, or the device reset).
    fn reinstall_all(&mut self, ctx: &mut Ctx<'_>) {
        // Every translation the VMM may have cached can change.
        ctx.notify
            .invalidate(vsmmu_protocol::notify::Record::all(), ctx.stats);
        let env = self.install_env();
        let events = self.strtab.install_all(&self.attached, &env, ctx);
        for rec in events {
            self.evtq.push_model_event(rec, ctx);
        }
        let regs = self.regs();
        self.evtq.deliver(regs, &mut self.gerr, ctx);
    }

    /// Guest RAM changed (a client mapped memory): deliver what waited for it.
    pub fn memory_changed(&mut self, ctx: &mut Ctx<'_>) {
        let regs = self.regs();
        self.evtq.deliver(regs, &mut self.gerr, ctx);
    }

    /// Checks that `sid` fits the advertised StreamID size (fixed from the
    /// start: see [`ids`]).
    pub fn check_sid(&self, sid: u32) -> Result<(), String> {
        let bits = IDR1_SIDSIZE.get32(self.idr[1]);
        if bits < 32 && sid >> bits != 0 {
            return Err(format!("vSID {sid:#x} exceeds SIDSIZE {bits}"));
        }
        Ok(())
    }

    /// A host device now stands behind `sid`: install its current
    /// configuration. The first device brings the host's vIOMMU, and with
    /// it the vEVENTQ the guest asked for when it set EVENTQEN earlier.
    pub fn device_attached(&mut self, sid: u32, ctx: &mut Ctx<'_>) {
        if let Err(i) = self.attached.binary_search(&sid) {
            self.attached.insert(i, sid);
        }
        if CR0_EVTQEN.is_set32(self.cr0) {
            self.evtq.enable(self.evtq_max_log2(), ctx);
        }
        let env = self.install_env();
        if let Some(rec) = self.strtab.install(sid, &env, ctx) {
            self.evtq.push_model_event(rec, ctx);
            let regs = self.regs();
            self.evtq.deliver(regs, &mut self.gerr, ctx);
        }
    }

    /// The stream table's verdict on one transaction of a device the VMM
    /// emulates; a configuration error's event is queued to the guest's
    /// EVENTQ at once (see [`StreamTable::check_transaction`]).
    pub fn check_transaction(
        &mut self,
        sid: u32,
        ssid: Option<u32>,
        ctx: &mut Ctx<'_>,
    ) -> strtab::TxnCheck {
        let env = self.install_env();
        let verdict = self.strtab.check_transaction(sid, ssid, &env, ctx);
        if let strtab::TxnCheck::Event(rec) = verdict {
            self.evtq.push_model_event(rec, ctx);
            let regs = self.regs();
            self.evtq.deliver(regs, &mut self.gerr, ctx);
        }
        verdict
    }

    /// Migration: stop (no guest memory writes) or run again.
    pub fn set_running(&mut self, running: bool, ctx: &mut Ctx<'_>) {
        self.evtq.paused = !running;
        if running {
            let regs = self.regs();
            self.evtq.deliver(regs, &mut self.gerr, ctx);
        }
    }

    /// The host is about to free its vIOMMU (and the vEVENTQ with it): read
    /// the vEVENTQ out and free it; the next device's attach allocates a
    /// new one if EVENTQEN is still set.
    pub fn viommu_ending(&mut self, ctx: &mut Ctx<'_>) {
        self.evtq.free_veventq(ctx);
    }

    /// The host device behind `sid` is gone.
    pub fn device_detached(&mut self, sid: u32) {
        self.attached.retain(|&s| s != sid);
    }

    /// Copies gauges into `stats`.
    pub fn refresh_stats(&self, stats: &mut Stats) {
        stats.events_buffered = self.evtq.host_buffered() as u64;
    }

    /// Changes whenever the model allocates or frees the vEVENTQ.
    pub fn veventq_generation(&self) -> u64 {
        self.evtq.generation()
    }

    /// Records read from the vEVENTQ.
    pub fn host_records(&mut self, buf: &[u8], ctx: &mut Ctx<'_>) {
        let regs = self.regs();
        self.evtq.host_records(buf, regs, &mut self.gerr, ctx);
    }
}

/// The model state that migrates (vfio-user migration, MIG_DATA_*).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SmmuState {
    /// Advertised ID registers: the destination must advertise the same.
    pub idr: [u32; 6],
    cr0: u32,
    cr1: u32,
    cr2: u32,
    gbpa: u32,
    irq_ctrl: u32,
    gerr: GlobalErrors,
    strtab_base: u64,
    strtab_base_cfg: u32,
    cmdq_base: u64,
    cmdq_prod: u32,
    cmdq_cons: u32,
    evtq: evtq::EventQueueState,
    /// StreamIDs with a host device.
    pub attached: Vec<u32>,
}

impl Smmu {
    /// The migratable state (after the device drained what the
    /// host holds into the buffer).
    pub fn save(&self) -> SmmuState {
        SmmuState {
            idr: self.idr,
            cr0: self.cr0,
            cr1: self.cr1,
            cr2: self.cr2,
            gbpa: self.gbpa,
            irq_ctrl: self.irq_ctrl,
            gerr: self.gerr.clone(),
            strtab_base: self.strtab.base,
            strtab_base_cfg: self.strtab.base_cfg,
            cmdq_base: self.cmdq.base,
            cmdq_prod: self.cmdq.prod,
            cmdq_cons: self.cmdq.cons,
            evtq: self.evtq.save(),
            attached: self.attached.clone(),
        }
    }

    /// Checks that `st` can be loaded here, without changing anything.
    pub fn check_state(&self, st: &SmmuState) -> Result<(), String> {
        if st.idr != self.idr {
            return Err(format!(
                "the saved SMMU advertised IDR {:08x?}, this one {:08x?}: incompatible hosts",
                st.idr, self.idr
            ));
        }
        if st.attached.windows(2).any(|w| w[0] >= w[1]) {
            return Err("attached StreamIDs not sorted and unique".into());
        }
        for &sid in &st.attached {
            self.check_sid(sid)?;
        }
        Ok(())
    }

    /// Loads a checked state: registers, queues, buffered events; devices
    /// of the sim host are re-attached, every configuration re-installed
    /// and the vEVENTQ re-allocated when EVENTQEN is set.
    pub fn restore(&mut self, st: SmmuState, ctx: &mut Ctx<'_>) {
        self.cr0 = st.cr0;
        self.cr1 = st.cr1;
        self.cr2 = st.cr2;
        self.gbpa = st.gbpa;
        self.irq_ctrl = st.irq_ctrl;
        self.gerr = st.gerr;
        self.strtab.base = st.strtab_base;
        self.strtab.base_cfg = st.strtab_base_cfg;
        self.cmdq.base = st.cmdq_base;
        self.cmdq.prod = st.cmdq_prod;
        self.cmdq.cons = st.cmdq_cons;
        self.evtq.restore(st.evtq, ctx);
        for &sid in &st.attached {
            // A real host's devices come back through ATTACH_DEVICE with
            // their cdev fds; the sim host has nothing to hand over.
            if !ctx.host.needs_device_fd() && !ctx.host.is_attached(sid) {
                if let Err(e) = ctx.host.attach_device(sid, None) {
                    log::warn!("restoring vSID {sid:#x}: {e}");
                }
            }
        }
        self.attached = st.attached;
        if CR0_EVTQEN.is_set32(self.cr0) {
            self.evtq.enable(self.evtq_max_log2(), ctx);
        }
        // The source already reported any refused STE to the guest.
        let env = self.install_env();
        let _ = self.strtab.install_all(&self.attached, &env, ctx);
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
