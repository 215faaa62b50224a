//! The SMMUv3 model: [`regs`] holds the register file (page 0 and page 1:
//! one serialisable block, and its MMIO reads and writes); the machinery
//! behind it: [`cmdq`] consumes the command queue, [`strtab`] turns stream
//! table entries into host configurations, [`evtq`] writes event records
//! into the guest's queue. This file ties them together: device attach
//! and reset, and the state that migrates ([`SmmuState`]).
//!
//! The guest sees a stage-1 SMMU, as QEMU's accelerated SMMUv3 presents
//! it; the host supplies stage 2. The model touches guest RAM, the host
//! backend and the interrupt lines only through [`Ctx`].

pub(crate) mod cmdq;
pub(crate) mod evtq;
pub(crate) mod ids;
pub(crate) mod regs;
pub(crate) mod strtab;

#[cfg(test)]
mod tests;

use vsmmu_protocol::smmu::regs::*;

use crate::host::{HostIommu, HwInfo};
use crate::irq::Irqs;
use crate::memory::GuestRam;
use crate::notify::Notifier;
use crate::stats::Stats;

pub(crate) use cmdq::CommandQueue;
pub(crate) use evtq::EventQueue;
pub(crate) use regs::{CmdqRegs, EvtqRegs, Registers};
pub(crate) use strtab::StreamTable;

/// Size of the register region: page 0 and page 1.
pub(crate) const REGION_SIZE: u64 = 0x20000;

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

/// The SMMUv3 device model.
#[derive(Debug)]
pub struct Smmu {
    /// The ID registers (fixed: see [`ids`]).
    ids: ids::Ids,
    regs: Registers,
    cmdq: CommandQueue,
    evtq: EventQueue,
    /// StreamIDs with a host device behind them, sorted.
    attached: Vec<u32>,
}

impl Smmu {
    /// A model at reset, advertising what both this model and the host implement.
    pub fn new(cfg: SmmuConfig, hw: HwInfo) -> Self {
        Smmu {
            ids: ids::advertised(&hw, cfg.msi),
            regs: Registers::default(),
            cmdq: CommandQueue::new(cfg.batch),
            evtq: EventQueue::new(cfg.event_buffer),
            attached: Vec::new(),
        }
    }

    /// DEVICE_RESET: registers to their reset values, the vEVENTQ freed,
    /// every attached device back to the disabled SMMU's behaviour.
    pub fn reset(&mut self, ctx: &mut Ctx<'_>) {
        self.regs = Registers::default();
        self.cmdq.reset();
        self.evtq.reset(ctx);
        self.reinstall_all(ctx);
    }

    fn install_env(&self) -> strtab::InstallEnv {
        strtab::InstallEnv {
            idr: self.ids.idr,
            smmu_enabled: self.smmu_enabled(),
            gbpa_abort: GBPA_ABORT.is_set32(self.regs.gbpa),
        }
    }

    fn smmu_enabled(&self) -> bool {
        CR0_SMMUEN.is_set32(self.regs.cr0)
    }

    fn evtq_max_log2(&self) -> u32 {
        IDR1_EVTQS.get32(self.ids.idr[1])
    }

    fn consume_commands(&mut self, ctx: &mut Ctx<'_>) {
        if !CR0_CMDQEN.is_set32(self.regs.cr0) || self.regs.gerr.active(GERROR_CMDQ_ERR) {
            return;
        }
        let env = self.install_env();
        let regs = &mut self.regs;
        let outcome = self
            .cmdq
            .consume(&mut regs.cmdq, &env, &regs.strtab, &self.attached, ctx);
        for rec in outcome.events {
            self.evtq.push_model_event(rec, &self.regs.evtq, ctx);
        }
        self.evtq.deliver(&mut self.regs, ctx);
        if outcome.error {
            self.regs
                .gerr
                .raise(GERROR_CMDQ_ERR, self.regs.irq_ctrl, ctx);
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
        let events = self.regs.strtab.install_all(&self.attached, &env, ctx);
        for rec in events {
            self.evtq.push_model_event(rec, &self.regs.evtq, ctx);
        }
        self.evtq.deliver(&mut self.regs, ctx);
    }

    /// Guest RAM changed (a client mapped memory): deliver what waited for it.
    pub fn memory_changed(&mut self, ctx: &mut Ctx<'_>) {
        self.evtq.deliver(&mut self.regs, ctx);
    }

    /// Checks that `sid` fits the advertised StreamID size (fixed from the
    /// start: see [`ids`]).
    pub fn check_sid(&self, sid: u32) -> Result<(), String> {
        let bits = IDR1_SIDSIZE.get32(self.ids.idr[1]);
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
        if CR0_EVTQEN.is_set32(self.regs.cr0) {
            self.evtq.enable(&self.regs.evtq, self.evtq_max_log2(), ctx);
        }
        let env = self.install_env();
        if let Some(rec) = self.regs.strtab.install(sid, &env, ctx) {
            self.evtq.push_model_event(rec, &self.regs.evtq, ctx);
            self.evtq.deliver(&mut self.regs, ctx);
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
        let verdict = self.regs.strtab.check_transaction(sid, ssid, &env, ctx);
        if let strtab::TxnCheck::Event(rec) = verdict {
            self.evtq.push_model_event(rec, &self.regs.evtq, ctx);
            self.evtq.deliver(&mut self.regs, ctx);
        }
        verdict
    }

    /// Migration: stop (no guest memory writes) or run again.
    pub fn set_running(&mut self, running: bool, ctx: &mut Ctx<'_>) {
        self.evtq.paused = !running;
        if running {
            self.evtq.deliver(&mut self.regs, ctx);
        }
    }

    /// The host is about to free its vIOMMU (and the vEVENTQ with it): read
    /// the vEVENTQ out into the guest's queue (or the buffer while it is
    /// full, or counted as disabled when EVENTQEN = 0) and free it; the
    /// next device's attach allocates a new one if EVENTQEN is still set.
    pub fn viommu_ending(&mut self, ctx: &mut Ctx<'_>) {
        self.evtq.deliver_and_free(&mut self.regs, ctx);
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
        self.evtq.host_records(buf, &mut self.regs, ctx);
    }
}

/// The model state that migrates (vfio-user migration, MIG_DATA_*): the
/// register block as the model holds it, plus what is not a register.
/// Field order is the stream's layout (see [`Registers`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SmmuState {
    /// Advertised ID registers: the destination must advertise the same.
    pub idr: [u32; 6],
    regs: Registers,
    /// Buffered event records.
    evtq: evtq::EventQueueState,
    /// StreamIDs with a host device.
    pub attached: Vec<u32>,
}

impl Smmu {
    /// The migratable state (after the device drained what the
    /// host holds into the buffer).
    pub fn save(&self) -> SmmuState {
        SmmuState {
            idr: self.ids.idr,
            regs: self.regs.clone(),
            evtq: self.evtq.save(),
            attached: self.attached.clone(),
        }
    }

    /// Checks that `st` can be loaded here, without changing anything.
    pub fn check_state(&self, st: &SmmuState) -> Result<(), String> {
        if st.idr != self.ids.idr {
            return Err(format!(
                "the saved SMMU advertised IDR {:08x?}, this one {:08x?}: incompatible hosts",
                st.idr, self.ids.idr
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

    /// Loads a checked state: registers, buffered events; devices of the
    /// sim host are re-attached, then what the model derives from the
    /// registers follows them: every configuration re-installed, the
    /// vEVENTQ re-allocated when EVENTQEN is set.
    pub fn restore(&mut self, st: SmmuState, ctx: &mut Ctx<'_>) {
        self.regs = st.regs;
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
        if CR0_EVTQEN.is_set32(self.regs.cr0) {
            self.evtq.enable(&self.regs.evtq, self.evtq_max_log2(), ctx);
        }
        // The source already reported any refused STE to the guest.
        let env = self.install_env();
        let _ = self.regs.strtab.install_all(&self.attached, &env, ctx);
    }
}
