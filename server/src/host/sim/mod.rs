//! The sim host backend: a software host SMMU with the kernel's semantics.
//!
//! [`SimHost`] stands in for `/dev/iommu` + a physical SMMUv3 so that the
//! SMMUv3 model and the event path are exercised for real without hardware.
//! What it reproduces, and where each rule comes from in Linux:
//!
//! - **vEVENTQ** (`drivers/iommu/iommufd/eventq.c`, `driver.c`,
//!   `iommufd_private.h`):
//!   - `iommufd_viommu_report_event`: when `num_events == depth` the event is
//!     dropped and the LOST record (`lost_events_header`) is queued instead;
//!     otherwise the event is queued and `num_events` grows. Only real events
//!     count toward the depth; the LOST record never does.
//!   - `iommufd_vevent_handler`: if the LOST record is the last entry it is
//!     unlinked first, then the new entry (which may be the LOST record
//!     itself) is appended and stamped with `veventq->sequence`, which then
//!     advances `(sequence + 1) & INT_MAX`. So there is at most one LOST
//!     record, always at the tail, carrying the sequence of the latest drop;
//!     a new real event removes it and the loss shows only as a gap; every
//!     event, delivered or dropped, consumes a sequence number. The sequence
//!     starts at 0 (the object is zero-allocated) in every new vEVENTQ.
//!   - `iommufd_veventq_fops_read`: copies whole records from the head while
//!     they fit: at least the 8-byte header must fit, and for a normal event
//!     the header plus its 32-byte payload; the first one that does not fit
//!     is put back and the call returns what was copied (0 if nothing). A
//!     LOST record is header-only (8 bytes). Reading a real event decrements
//!     `num_events` (frees room); reading the LOST record does not. `read()`
//!     never blocks and never returns `EAGAIN`. (Kernels carrying the 2026
//!     fix "Reject invalid read count in iommufd_veventq_fops_read()" return
//!     `EINVAL` instead of 0 when the buffer is under 8 bytes or the first
//!     record does not fit; the sim keeps the 0 of the released kernels that
//!     [`HostIommu::read_veventq`] documents. A reader with room for whole
//!     records sees no difference.)
//!   - `iommufd_eventq_fops_poll`: `EPOLLIN` exactly while the deliver list
//!     is non-empty (events or the LOST record).
//!   - `iommufd_veventq_alloc`: depth 0 → `EINVAL`; depth above
//!     `VEVENTQ_MAX_DEPTH` (`1 << 19`) → `EINVAL` on kernels with the
//!     "Set veventq_depth upper bound" fix.
//! - **vSTE** (`arm-smmu-v3-iommufd.c`, `arm_smmu_validate_vste`): V = 0 →
//!   accepted and zeroed; bits outside `STRTAB_STE_0/1_NESTING_ALLOWED` →
//!   `EIO`; Config other than abort/bypass/S1-translate → `EIO`; EATS other
//!   than 0 (abort) or 1 (full ATS) → `EIO`; the stored STE has EATS cleared.
//! - **Invalidation** (`arm_vsmmu_convert_user_cmd`,
//!   `arm_vsmmu_cache_invalidate`): entries are converted in order; only
//!   TLBI_NSNH_ALL, TLBI_NH_{VA,VAA,ALL,ASID}, ATC_INV, CFGI_CD and
//!   CFGI_CD_ALL pass; the SID-carrying ones need a vDEVICE for the vSID in
//!   dword0\[63:32\]; any failure is `EIO`, and `entry_num` comes back as the
//!   index of the failing entry. Converted entries are issued to the
//!   hardware only in blocks of `CMDQ_BATCH_ENTRIES - 1` (63) or at the end
//!   of the array, so on a failure the entries of the current block before
//!   the failing one were converted but never executed: `entry_num` counts
//!   converted entries, not executed ones.
//!
//! The vEVENTQ is a real pollable fd: an `eventfd` whose counter is non-zero
//! exactly while the queue has something to read, so mio can poll it
//! edge-triggered like the kernel's anon-inode fd (every injection writes
//! the eventfd, which is a new wakeup edge, as the kernel's
//! `wake_up_interruptible` is for every reported event).

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use vsmmu_protocol::iommufd::{
    VeventArmSmmuv3, VeventHeader, IOMMU_VEVENTQ_FLAG_LOST_EVENTS, VEVENT_HEADER_SIZE,
    VEVENT_SEQ_MASK,
};
use vsmmu_protocol::smmu::command::{
    opcode, CMD_ATC_INV, CMD_CFGI_CD, CMD_CFGI_CD_ALL, CMD_TLBI_NH_ALL, CMD_TLBI_NH_ASID,
    CMD_TLBI_NH_VA, CMD_TLBI_NH_VAA, CMD_TLBI_NSNH_ALL,
};
use vsmmu_protocol::smmu::ste::{check_vste, VsteConfig, STE_1_EATS};
use zerocopy::IntoBytes;

use self::tlb::Tlb;
use self::veventq::{check_depth, Veventq};
use crate::host::{
    HostError, HostIommu, HwInfo, InvalidateError, SimControls, SteAction,
    MAX_INVALIDATION_ENTRIES, VEVENT_RECORD_SIZE,
};

pub(crate) mod dma;
pub(crate) mod tlb;
mod veventq;
pub(crate) mod walk;

/// How many accepted invalidation commands [`SimHost::invalidation_log`]
/// keeps (the most recent ones).
pub(crate) const INVALIDATION_LOG_LEN: usize = 4096;

/// Entries `arm_vsmmu_cache_invalidate` (arm-smmu-v3-iommufd.c) converts
/// before issuing them to the hardware in one
/// `__arm_smmu_cmdq_issue_cmdlist`: `CMDQ_BATCH_ENTRIES - 1`, with
/// `CMDQ_BATCH_ENTRIES` = 64 (`BITS_PER_LONG`) in arm-smmu-v3.h. The rest
/// of the array is issued at its end.
pub(crate) const INVALIDATION_BLOCK_ENTRIES: usize = 63;

/// Sim IDR0 = 0x090c_729b, a stage-1 + stage-2 SMMU of the Arm SMMU-700
/// kind: S2P (0) | S1P (1) | TTF = AArch64 (\[3:2\] = 2) | COHACC (4) |
/// HTTU = access + dirty (\[7:6\] = 2) | HYP (9) | ASID16 (12) | MSI (13) |
/// SEV (14) | VMID16 (18) | CD2L (19) | TTENDIAN = mixed (\[22:21\] = 0) |
/// STALL_MODEL = no stall (\[25:24\] = 1) | TERM_MODEL = 0 |
/// ST_LVL = 2-level (\[28:27\] = 1). ATS, PRI and stalls are left out: the
/// sim's devices are platform devices without them, as QEMU's model.
pub(crate) const SIM_IDR0: u32 = 0x090c_729b;

/// Sim IDR1 = 0x0273_0510: SIDSIZE 16, SSIDSIZE 20, PRIQS 0 (no PRI),
/// EVTQS 19, CMDQS 19, no REL / QUEUES_PRESET / TABLES_PRESET.
pub(crate) const SIM_IDR1: u32 = 0x0273_0510;

/// Sim IDR3 = 0x0000_1504: HAD (2) | FWB (8, stage-2 forced write-back,
/// which `arm_vsmmu_alloc` needs for nesting) | RIL (10) | BBML = 2
/// (\[12:11\]); QEMU 7.2's IDR3 (0x1404) plus FWB.
pub(crate) const SIM_IDR3: u32 = 0x0000_1504;

/// Sim IDR5 = 0x0000_0075: OAS = 48 bits (\[2:0\] = 5) | GRAN4K | GRAN16K |
/// GRAN64K, VAX = 0, STALL_MAX = 0.
pub(crate) const SIM_IDR5: u32 = 0x0000_0075;

/// The sim's ID registers (`iommu_hw_info_arm_smmuv3`): [`SIM_IDR0`],
/// [`SIM_IDR1`], IDR2 = 0, [`SIM_IDR3`], IDR4 = 0, [`SIM_IDR5`], IIDR = 0,
/// AIDR = 1 (SMMUv3.1).
pub(crate) const SIM_HW_INFO: HwInfo = HwInfo {
    idr: [SIM_IDR0, SIM_IDR1, 0, SIM_IDR3, 0, SIM_IDR5],
    iidr: 0,
    aidr: 1,
};

/// Configuration of the sim backend (`--sim-*` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Sequence number of the first event after each vEVENTQ allocation
    /// (`--sim-first-seq`, default 0 as in the kernel); must be at most
    /// `0x7fffffff` (see [`SimConfig::validate`]).
    pub first_seq: u32,
    /// When set, the vEVENTQ depth used instead of the one the model asks
    /// for (`--sim-veventq-depth`).
    pub veventq_depth: Option<u32>,
    /// The ID registers reported by [`HostIommu::hw_info`].
    pub hw_info: HwInfo,
    /// Fault injection (`--sim-reject-opcode`): invalidation entries with
    /// this opcode fail with EIO, as on a kernel that does not forward it.
    pub reject_opcode: Option<u8>,
}

impl Default for SimConfig {
    /// `first_seq` 0 (the kernel's), no depth override, [`SIM_HW_INFO`].
    fn default() -> Self {
        SimConfig {
            first_seq: 0,
            veventq_depth: None,
            hw_info: SIM_HW_INFO,
            reject_opcode: None,
        }
    }
}

impl SimConfig {
    /// Checks the values the kernel could never produce: `first_seq` above
    /// `INT_MAX`, a depth override of 0 or above [`veventq::VEVENTQ_MAX_DEPTH`].
    pub fn validate(&self) -> Result<(), HostError> {
        if self.first_seq > VEVENT_SEQ_MASK {
            return Err(HostError::new(
                "sim config",
                libc::EINVAL,
                format!(
                    "first sequence {:#x} is above {VEVENT_SEQ_MASK:#x}",
                    self.first_seq
                ),
            ));
        }
        if let Some(depth) = self.veventq_depth {
            check_depth(depth)?;
        }
        Ok(())
    }
}

/// Counters of the sim backend, for tests and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Event records passed to [`SimHost::inject`] while a vEVENTQ existed.
    pub injected: u64,
    /// Of those, queued in the vEVENTQ.
    pub queued: u64,
    /// Of those, dropped because the vEVENTQ was full (LOST record set).
    pub dropped: u64,
    /// Event records returned by [`HostIommu::read_veventq`].
    pub events_read: u64,
    /// LOST records returned by [`HostIommu::read_veventq`].
    pub lost_records_read: u64,
    /// Calls of [`HostIommu::read_veventq`].
    pub read_calls: u64,
    /// vEVENTQ allocations.
    pub veventq_allocs: u64,
}

/// A device bound to a guest StreamID.
#[derive(Debug, Clone, Copy)]
struct Device {
    ste: SteAction,
}

/// A guest RAM range made reachable by device DMA (the sim reads guest
/// RAM through the device's own mappings, so only the extent is kept).
#[derive(Debug, Clone, Copy)]
struct RamRange {
    size: u64,
}

/// The software host SMMU: vIOMMU, vDEVICEs, nested STEs, invalidations
/// and a vEVENTQ behind a pollable fd, with the kernel's exact semantics
/// (see the module documentation).
#[derive(Debug)]
pub struct SimHost {
    cfg: SimConfig,
    viommu: bool,
    devices: BTreeMap<u32, Device>,
    next_dev_id: u32,
    /// Guest RAM ranges keyed by guest physical address.
    ram: BTreeMap<u64, RamRange>,
    veventq: Option<Veventq>,
    invalidate_calls: u64,
    invalidate_entries: u64,
    invalidation_log: VecDeque<[u64; 2]>,
    stats: SimStats,
    /// TLB and CD cache of simulated DMA ([`dma`]).
    tlb: Tlb,
}

impl Default for SimHost {
    /// A sim with [`SimConfig::default`].
    fn default() -> Self {
        SimHost::new(SimConfig::default())
    }
}

/// Validates a nested vSTE as `arm_smmu_validate_vste` does (through
/// [`check_vste`]) and returns the STE the kernel keeps for the nested
/// domain: all zeroes when V = 0, otherwise the two dwords with EATS
/// cleared. Errors are `EIO` ("invalid STE data"), as the kernel's.
pub(crate) fn validate_vste(ste: [u64; 2]) -> Result<[u64; 2], HostError> {
    match check_vste(&ste) {
        Ok(VsteConfig::NotValid) => Ok([0, 0]),
        Ok(VsteConfig::Abort | VsteConfig::Bypass | VsteConfig::S1Translate) => {
            Ok([ste[0], ste[1] & !STE_1_EATS.mask()])
        }
        Err(e) => Err(HostError::new(
            "IOMMU_HWPT_ALLOC",
            libc::EIO,
            format!("vSTE {:#018x} {:#018x}: {e}", ste[0], ste[1]),
        )),
    }
}

impl SimHost {
    /// Creates the sim. A `first_seq` above `0x7fffffff` is masked to 31
    /// bits (call [`SimConfig::validate`] to reject it instead).
    pub fn new(cfg: SimConfig) -> Self {
        if cfg.first_seq > VEVENT_SEQ_MASK {
            log::warn!(
                "sim: first sequence {:#x} is above {VEVENT_SEQ_MASK:#x}; using {:#x}",
                cfg.first_seq,
                cfg.first_seq & VEVENT_SEQ_MASK
            );
        }
        let cfg = SimConfig {
            first_seq: cfg.first_seq & VEVENT_SEQ_MASK,
            ..cfg
        };
        SimHost {
            cfg,
            viommu: false,
            devices: BTreeMap::new(),
            next_dev_id: 1,
            ram: BTreeMap::new(),
            veventq: None,
            invalidate_calls: 0,
            invalidate_entries: 0,
            invalidation_log: VecDeque::new(),
            stats: SimStats::default(),
            tlb: Tlb::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Reports event records as the kernel does after
    /// `iommufd_viommu_report_event` (the vSID is already in `evt[0]`
    /// bits 63:32 and is not rewritten). Returns how many were queued and
    /// how many dropped because the vEVENTQ was full; signals the vEVENTQ
    /// fd when anything was reported. `ENODEV` when no vEVENTQ exists.
    pub fn inject(&mut self, records: &[[u64; 4]]) -> Result<(u32, u32), HostError> {
        let Some(q) = self.veventq.as_mut() else {
            return Err(HostError::new(
                "VSMMU_SIM_INJECT",
                libc::ENODEV,
                "no vEVENTQ allocated",
            ));
        };
        let (mut queued, mut dropped) = (0u32, 0u32);
        for evt in records {
            if q.report(*evt) {
                queued = queued.saturating_add(1);
            } else {
                dropped = dropped.saturating_add(1);
            }
        }
        if !records.is_empty() {
            q.signal();
        }
        self.stats.injected = self.stats.injected.saturating_add(records.len() as u64);
        self.stats.queued = self.stats.queued.saturating_add(u64::from(queued));
        self.stats.dropped = self.stats.dropped.saturating_add(u64::from(dropped));
        Ok((queued, dropped))
    }

    /// Real events waiting in the vEVENTQ (the kernel's `num_events`; the
    /// LOST record is not counted). 0 without a vEVENTQ.
    pub fn pending(&self) -> usize {
        self.veventq.as_ref().map_or(0, |q| q.events.len())
    }

    /// The sequence carried by the LOST record at the tail of the vEVENTQ,
    /// if there is one.
    #[cfg(test)]
    pub fn lost_pending(&self) -> Option<u32> {
        self.veventq.as_ref().and_then(|q| q.lost)
    }

    /// The depth of the current vEVENTQ (after any override).
    pub fn veventq_depth(&self) -> Option<u32> {
        self.veventq.as_ref().map(|q| q.depth)
    }

    /// The sequence number the next reported event will get.
    #[cfg(test)]
    pub fn next_sequence(&self) -> Option<u32> {
        self.veventq.as_ref().map(|q| q.next_seq)
    }

    /// The vEVENTQ fd, borrowed (for `poll` and mio registration).
    #[cfg(test)]
    pub fn veventq_borrowed_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.veventq.as_ref().map(|q| q.fd.as_fd())
    }

    /// The sim's counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// True once the first device was attached: the vIOMMU exists (as the
    /// iommufd backend, it needs a bound device and lives until the end).
    #[cfg(test)]
    pub fn viommu_allocated(&self) -> bool {
        self.viommu
    }

    /// The configuration installed for `vsid`: as given for abort and
    /// bypass; for a nested STE, the two dwords as the kernel keeps them
    /// (see [`validate_vste`]). `None` when `vsid` is not attached.
    pub fn ste_of(&self, vsid: u32) -> Option<SteAction> {
        self.devices.get(&vsid).map(|d| d.ste)
    }

    /// Guest RAM mappings as `(gpa, size)`, by address.
    #[cfg(test)]
    pub fn guest_ram(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ram.iter().map(|(&gpa, r)| (gpa, r.size))
    }

    /// Calls of [`HostIommu::invalidate`] (one per `IOMMU_HWPT_INVALIDATE`).
    pub fn invalidate_calls(&self) -> u64 {
        self.invalidate_calls
    }

    /// Invalidation entries executed over all calls (converted entries of
    /// a block that a failure cut short are not counted).
    pub fn invalidate_entries(&self) -> u64 {
        self.invalidate_entries
    }

    /// The last [`INVALIDATION_LOG_LEN`] executed invalidation commands, in
    /// the order they were executed, as given by the caller.
    pub fn invalidation_log(&self) -> impl Iterator<Item = &[u64; 2]> {
        self.invalidation_log.iter()
    }

    /// The TLB and CD cache of simulated DMA.
    pub fn tlb(&self) -> &Tlb {
        &self.tlb
    }

    pub(crate) fn tlb_mut(&mut self) -> &mut Tlb {
        &mut self.tlb
    }

    /// `arm_vsmmu_convert_user_cmd`'s check of one command.
    fn check_invalidation(&self, index: usize, cmd: &[u64; 2]) -> Result<(), HostError> {
        let op = opcode(cmd);
        if self.cfg.reject_opcode == Some(op) {
            return Err(HostError::new(
                "IOMMU_HWPT_INVALIDATE",
                libc::EIO,
                format!("entry {index}: opcode {op:#04x} rejected (--sim-reject-opcode)"),
            ));
        }
        match op {
            CMD_TLBI_NSNH_ALL | CMD_TLBI_NH_VA | CMD_TLBI_NH_VAA | CMD_TLBI_NH_ALL
            | CMD_TLBI_NH_ASID => Ok(()),
            CMD_ATC_INV | CMD_CFGI_CD | CMD_CFGI_CD_ALL => {
                let vsid = (cmd[0] >> 32) as u32;
                if self.devices.contains_key(&vsid) {
                    Ok(())
                } else {
                    Err(HostError::new(
                        "IOMMU_HWPT_INVALIDATE",
                        libc::EIO,
                        format!("entry {index}: opcode {op:#04x} for unattached vSID {vsid:#x}"),
                    ))
                }
            }
            _ => Err(HostError::new(
                "IOMMU_HWPT_INVALIDATE",
                libc::EIO,
                format!("entry {index}: opcode {op:#04x} is not forwarded by the kernel"),
            )),
        }
    }

    /// Executes one converted invalidation command: the TLB, the counter
    /// and the log.
    fn execute_invalidation(&mut self, cmd: &[u64; 2]) {
        self.invalidate_entries = self.invalidate_entries.saturating_add(1);
        self.tlb.invalidate(cmd);
        if self.invalidation_log.len() >= INVALIDATION_LOG_LEN {
            self.invalidation_log.pop_front();
        }
        self.invalidation_log.push_back(*cmd);
    }

    fn no_veventq(op: &'static str) -> HostError {
        HostError::new(op, libc::EBADF, "no vEVENTQ allocated")
    }
}

impl HostIommu for SimHost {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn veventq_first_seq(&self) -> u32 {
        self.cfg.first_seq & VEVENT_SEQ_MASK
    }

    fn hw_info(&self) -> HwInfo {
        self.cfg.hw_info
    }

    fn needs_device_fd(&self) -> bool {
        false
    }

    /// Records the range. `EINVAL` for size 0, `EOVERFLOW` when it wraps
    /// the address space, `EEXIST` when it overlaps a mapped range.
    fn map_guest_ram(&mut self, gpa: u64, size: u64, _host_addr: usize) -> Result<(), HostError> {
        const OP: &str = "IOMMU_IOAS_MAP";
        if size == 0 {
            return Err(HostError::new(OP, libc::EINVAL, "zero-length mapping"));
        }
        let Some(last) = gpa.checked_add(size - 1) else {
            return Err(HostError::new(
                OP,
                libc::EOVERFLOW,
                format!("{gpa:#x} + {size:#x} overflows"),
            ));
        };
        if let Some((&start, r)) = self.ram.range(..=last).next_back() {
            // Ranges never overlap, so only the last one starting at or
            // before `last` can reach into [gpa, last].
            if start.saturating_add(r.size - 1) >= gpa {
                return Err(HostError::new(
                    OP,
                    libc::EEXIST,
                    format!(
                        "[{gpa:#x}, {last:#x}] overlaps [{start:#x}, {:#x}]",
                        start.saturating_add(r.size - 1)
                    ),
                ));
            }
        }
        self.ram.insert(gpa, RamRange { size });
        Ok(())
    }

    /// Removes every range inside `[gpa, gpa + size)`, as `IOMMU_IOAS_UNMAP`
    /// (all or nothing here): `ENOENT` when none is inside or one is only
    /// partly covered, `EINVAL` for size 0, `EOVERFLOW` when it wraps.
    fn unmap_guest_ram(&mut self, gpa: u64, size: u64) -> Result<(), HostError> {
        const OP: &str = "IOMMU_IOAS_UNMAP";
        if size == 0 {
            return Err(HostError::new(OP, libc::EINVAL, "zero-length unmap"));
        }
        let Some(last) = gpa.checked_add(size - 1) else {
            return Err(HostError::new(
                OP,
                libc::EOVERFLOW,
                format!("{gpa:#x} + {size:#x} overflows"),
            ));
        };
        let mut inside = Vec::new();
        for (&start, r) in self.ram.range(..=last) {
            let end = start.saturating_add(r.size - 1);
            if end < gpa {
                continue;
            }
            if start < gpa || end > last {
                return Err(HostError::new(
                    OP,
                    libc::ENOENT,
                    format!("[{gpa:#x}, {last:#x}] covers [{start:#x}, {end:#x}] only partly"),
                ));
            }
            inside.push(start);
        }
        if inside.is_empty() {
            return Err(HostError::new(
                OP,
                libc::ENOENT,
                format!("nothing mapped in [{gpa:#x}, {last:#x}]"),
            ));
        }
        for start in inside {
            self.ram.remove(&start);
        }
        Ok(())
    }

    /// Host device ids are allocated sequentially from 1. The sim takes no
    /// device fd: `Some(fd)` is closed and refused with `EINVAL`.
    fn attach_device(&mut self, vsid: u32, device_fd: Option<OwnedFd>) -> Result<u32, HostError> {
        if device_fd.is_some() {
            return Err(HostError::new(
                "IOMMU_VDEVICE_ALLOC",
                libc::EINVAL,
                format!("vSID {vsid:#x}: the sim backend takes no device fd"),
            ));
        }
        if self.devices.contains_key(&vsid) {
            return Err(HostError::new(
                "IOMMU_VDEVICE_ALLOC",
                libc::EEXIST,
                format!("vSID {vsid:#x} is already attached"),
            ));
        }
        let host_id = self.next_dev_id;
        self.next_dev_id = self.next_dev_id.checked_add(1).unwrap_or(1);
        self.devices.insert(
            vsid,
            Device {
                ste: SteAction::Abort,
            },
        );
        self.viommu = true;
        Ok(host_id)
    }

    fn detach_device(&mut self, vsid: u32) -> Result<(), HostError> {
        self.tlb.flush_sid(vsid);
        match self.devices.remove(&vsid) {
            Some(_) => Ok(()),
            None => Err(HostError::new(
                "IOMMU_DESTROY",
                libc::ENOENT,
                format!("vSID {vsid:#x} is not attached"),
            )),
        }
    }

    fn is_attached(&self, vsid: u32) -> bool {
        self.devices.contains_key(&vsid)
    }

    /// `ENOENT` for an unattached vSID; a nested STE goes through
    /// [`validate_vste`], and a rejected one leaves the device aborting.
    fn install_ste(&mut self, vsid: u32, action: SteAction) -> Result<(), HostError> {
        let Some(dev) = self.devices.get_mut(&vsid) else {
            return Err(HostError::new(
                "IOMMU_HWPT_ALLOC",
                libc::ENOENT,
                format!("vSID {vsid:#x} is not attached"),
            ));
        };
        // A new STE: nothing cached through the old one may be used.
        self.tlb.flush_sid(vsid);
        match action {
            SteAction::Abort | SteAction::Bypass => {
                dev.ste = action;
                Ok(())
            }
            SteAction::Nested { ste } => match validate_vste(ste) {
                Ok(ste) => {
                    dev.ste = SteAction::Nested { ste };
                    Ok(())
                }
                Err(mut e) => {
                    dev.ste = SteAction::Abort;
                    e.msg = format!("vSID {vsid:#x}: {}", e.msg);
                    Err(e)
                }
            },
        }
    }

    /// `arm_vsmmu_cache_invalidate`: converts the entries in order and
    /// executes them in blocks of [`INVALIDATION_BLOCK_ENTRIES`] (and the
    /// rest at the end). The first refused entry (`EIO`) stops the call
    /// with `handled` = its index (the kernel's `entry_num`), having
    /// executed only the blocks completed before it: the entries of its
    /// own block before it are converted but not executed. More than
    /// [`MAX_INVALIDATION_ENTRIES`] → `EINVAL` with nothing handled.
    fn invalidate(&mut self, cmds: &[[u64; 2]]) -> Result<(), InvalidateError> {
        self.invalidate_calls = self.invalidate_calls.saturating_add(1);
        if cmds.len() > MAX_INVALIDATION_ENTRIES {
            return Err(InvalidateError {
                handled: 0,
                error: HostError::new(
                    "IOMMU_HWPT_INVALIDATE",
                    libc::EINVAL,
                    format!(
                        "{} entries, at most {MAX_INVALIDATION_ENTRIES} per call",
                        cmds.len()
                    ),
                ),
            });
        }
        // The kernel's loop: `last` is the first converted entry not yet
        // issued; a block is issued when it holds CMDQ_BATCH_ENTRIES - 1
        // entries or the array ends.
        let mut last = 0;
        for (index, cmd) in cmds.iter().enumerate() {
            if let Err(error) = self.check_invalidation(index, cmd) {
                return Err(InvalidateError {
                    handled: index,
                    error,
                });
            }
            let cur = index + 1;
            if cur != cmds.len() && cur - last != INVALIDATION_BLOCK_ENTRIES {
                continue;
            }
            for cmd in &cmds[last..cur] {
                self.execute_invalidation(cmd);
            }
            last = cur;
        }
        Ok(())
    }

    /// Replaces any existing vEVENTQ with a new, empty one whose first event
    /// gets [`SimConfig::first_seq`]. The depth is
    /// [`SimConfig::veventq_depth`] when set, else `depth`; 0 or above
    /// [`veventq::VEVENTQ_MAX_DEPTH`] → `EINVAL`.
    fn alloc_veventq(&mut self, depth: u32) -> Result<(), HostError> {
        if !self.viommu {
            // As the iommufd backend: no vIOMMU before the first device.
            return Err(HostError::new(
                "IOMMU_VEVENTQ_ALLOC",
                libc::ENODEV,
                "no vIOMMU yet: it is allocated when the first device is attached",
            ));
        }
        let depth = self.cfg.veventq_depth.unwrap_or(depth);
        check_depth(depth)?;
        // Free the old queue (and close its fd) before making the new one.
        self.veventq = None;
        self.veventq = Some(Veventq::new(depth, self.cfg.first_seq)?);
        self.stats.veventq_allocs = self.stats.veventq_allocs.saturating_add(1);
        Ok(())
    }

    fn free_veventq(&mut self) {
        self.veventq = None;
    }

    fn veventq_fd(&self) -> Option<RawFd> {
        self.veventq.as_ref().map(|q| q.fd.as_raw_fd())
    }

    /// `iommufd_veventq_fops_read`: whole records from the head while they
    /// fit (header 8 bytes; an event 40, a LOST record 8); 0 when empty or
    /// the next record does not fit. When the queue becomes empty the fd
    /// stops being readable. `EBADF` without a vEVENTQ.
    fn read_veventq(&mut self, buf: &mut [u8]) -> Result<usize, HostError> {
        let Some(q) = self.veventq.as_mut() else {
            return Err(Self::no_veventq("read(vEVENTQ)"));
        };
        self.stats.read_calls = self.stats.read_calls.saturating_add(1);
        let count = buf.len();
        let mut done = 0usize;
        loop {
            let room = count.saturating_sub(done);
            if let Some(ev) = q.events.front().copied() {
                if room < VEVENT_RECORD_SIZE {
                    break;
                }
                let Some(out) = buf.get_mut(done..done + VEVENT_RECORD_SIZE) else {
                    break;
                };
                let header = VeventHeader {
                    flags: 0,
                    sequence: ev.sequence,
                };
                let (h, payload) = out.split_at_mut(VEVENT_HEADER_SIZE);
                h.copy_from_slice(header.as_bytes());
                payload.copy_from_slice(VeventArmSmmuv3 { evt: ev.evt }.as_bytes());
                q.events.pop_front();
                done += VEVENT_RECORD_SIZE;
                self.stats.events_read = self.stats.events_read.saturating_add(1);
            } else if let Some(sequence) = q.lost {
                if room < VEVENT_HEADER_SIZE {
                    break;
                }
                let Some(out) = buf.get_mut(done..done + VEVENT_HEADER_SIZE) else {
                    break;
                };
                let header = VeventHeader {
                    flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
                    sequence,
                };
                out.copy_from_slice(header.as_bytes());
                q.lost = None;
                done += VEVENT_HEADER_SIZE;
                self.stats.lost_records_read = self.stats.lost_records_read.saturating_add(1);
            } else {
                break;
            }
        }
        if q.is_empty() {
            q.drain();
        }
        Ok(done)
    }

    fn sim_controls(&mut self) -> Option<&mut dyn SimControls> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;
