//! Host IOMMU backends: what the SMMUv3 model asks of the host.
//!
//! The model never talks to iommufd directly: it calls [`HostIommu`], which
//! the real [`iommufd`] backend implements with ioctls on `/dev/iommu`, and
//! the [`sim`] backend implements in software with the kernel's exact
//! semantics (docs/design.md, "vEVENTQ semantics").

pub(crate) mod iommufd;
pub(crate) mod sim;

use std::os::fd::{OwnedFd, RawFd};

use vsmmu_protocol::smmu::regs::*;
use vsmmu_protocol::vfio_user::SimDma;

use crate::memory::GuestRam;

/// Hardware information the host reports (`IOMMU_GET_HW_INFO`,
/// `iommu_hw_info_arm_smmuv3`): the physical SMMU's ID registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HwInfo {
    /// IDR0..IDR5.
    pub idr: [u32; 6],
    /// IIDR.
    pub iidr: u32,
    /// AIDR.
    pub aidr: u32,
}

/// Checks that a host SMMU (`hw`, from `IOMMU_GET_HW_INFO` for one device)
/// can back a guest whose ID registers were derived from `profile`: stage 1
/// and stage 2 (nesting), AArch64 little-endian table walks, and at least
/// the profile's COHACC, ASID16, CD2L, SSIDSIZE, RIL, BBML, granules and
/// OAS — the fields the host walks or executes for the guest. StreamID
/// size and queue sizes are the vSMMU's own and are not compared. Returns
/// every mismatch, comma-separated.
pub(crate) fn check_nesting_host(hw: &HwInfo, profile: &HwInfo) -> Result<(), String> {
    let mut missing: Vec<String> = Vec::new();
    let (h0, p0) = (hw.idr[0], profile.idr[0]);
    if !(IDR0_S1P.is_set32(h0) && IDR0_S2P.is_set32(h0)) {
        missing.push("stage 1 and stage 2 (IDR0.S1P, S2P)".into());
    }
    if !matches!(IDR0_TTF.get32(h0), IDR0_TTF_AARCH64 | IDR0_TTF_AARCH32_64) {
        missing.push("AArch64 tables (IDR0.TTF)".into());
    }
    if IDR0_TTENDIAN.get32(h0) == IDR0_TTENDIAN_BE {
        missing.push("little-endian walks (IDR0.TTENDIAN)".into());
    }
    for (f, name) in [
        (IDR0_COHACC, "IDR0.COHACC"),
        (IDR0_ASID16, "IDR0.ASID16"),
        (IDR0_CD2L, "IDR0.CD2L"),
    ] {
        if f.is_set32(p0) && !f.is_set32(h0) {
            missing.push(name.into());
        }
    }
    for (f, reg, name) in [
        (IDR1_SSIDSIZE, 1, "IDR1.SSIDSIZE"),
        (IDR3_RIL, 3, "IDR3.RIL"),
        (IDR3_BBML, 3, "IDR3.BBML"),
        (IDR5_OAS, 5, "IDR5.OAS"),
    ] {
        let (h, p) = (f.get32(hw.idr[reg]), f.get32(profile.idr[reg]));
        if h < p {
            missing.push(format!("{name} {h} < {p}"));
        }
    }
    for (f, name) in [
        (IDR5_GRAN4K, "IDR5.GRAN4K"),
        (IDR5_GRAN16K, "IDR5.GRAN16K"),
        (IDR5_GRAN64K, "IDR5.GRAN64K"),
    ] {
        if f.is_set32(profile.idr[5]) && !f.is_set32(hw.idr[5]) {
            missing.push(name.into());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("the host SMMU lacks {}", missing.join(", ")))
    }
}

/// What the host does with a guest StreamID's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteAction {
    /// Abort every transaction (STE.V = 0, Config = abort, or a refused STE).
    Abort,
    /// Stage-1 bypass: IOVA = guest physical address (stage 2 still applies).
    Bypass,
    /// A nested HWPT built from the guest's STE: the first two STE words as
    /// the kernel accepts them (`iommu_hwpt_arm_smmuv3`).
    Nested {
        /// STE dwords 0 and 1, unmasked (the backend checks the masks).
        ste: [u64; 2],
    },
}

/// An error from the host backend, with the errno the kernel returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {msg} (errno {errno})")]
pub struct HostError {
    /// The operation, e.g. `IOMMU_HWPT_ALLOC`.
    pub op: &'static str,
    /// errno.
    pub errno: i32,
    /// Context for the log.
    pub msg: String,
}

impl HostError {
    /// Builds an error.
    pub fn new(op: &'static str, errno: i32, msg: impl Into<String>) -> Self {
        HostError {
            op,
            errno,
            msg: msg.into(),
        }
    }
}

/// A batched invalidation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalidation failed after {handled} entries: {error}")]
pub struct InvalidateError {
    /// Entries the kernel converted before the failing one (its
    /// `entry_num` out). Not how many were executed:
    /// `arm_vsmmu_cache_invalidate` issues converted entries in blocks of
    /// 63, so those of the failing entry's block never ran.
    pub handled: usize,
    /// The failure.
    pub error: HostError,
}

/// Most entries one `IOMMU_HWPT_INVALIDATE` call carries. The kernel takes
/// any count but copies the array in one allocation; one page of entries
/// keeps that small.
pub(crate) const MAX_INVALIDATION_ENTRIES: usize = 256;

/// Size of one ARM SMMUv3 vEVENTQ record: 8-byte header + 32-byte event.
pub(crate) const VEVENT_RECORD_SIZE: usize = 40;

/// A device the VMM bound to its own iommufd (`VSMMU_ATTACH_DEVICE` with
/// `VSMMU_DEVICE_VMM_BOUND`).
#[derive(Debug)]
pub struct VmmDevice {
    /// vsmmud's copy of the VMM's open file of the VFIO cdev.
    pub cdev: OwnedFd,
    /// vsmmud's copy of the VMM's iommufd.
    pub iommufd: OwnedFd,
    /// The device's id in that iommufd.
    pub dev_id: u32,
    /// The VMM's nesting-parent HWPT the device is attached to.
    pub parent_hwpt_id: u32,
}

/// A change of the attached devices that may end the vIOMMU
/// ([`HostIommu::viommu_ends`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    /// `VSMMU_DETACH_DEVICE` of this vSID.
    Detach(u32),
    /// A `VSMMU_ATTACH_DEVICE` with `VSMMU_DEVICE_VMM_BOUND`.
    AttachVmmBound,
}

/// The host side of a vSMMU: one vIOMMU, its devices, their nested
/// configurations, invalidations and the vEVENTQ.
pub trait HostIommu {
    /// Short name for logs and stats (`sim`, `iommufd`).
    fn name(&self) -> &'static str;

    /// The ID registers the guest's are derived from ([`crate::smmu::ids`]):
    /// the sim's own, or for iommufd the fixed profile that every attached
    /// device's SMMU must support. Known at start, never changes.
    fn hw_info(&self) -> HwInfo;

    /// What the real host reported (`IOMMU_GET_HW_INFO` of the first bound
    /// device), `None` before; the sim reports its own.
    fn host_hw_info(&self) -> Option<HwInfo> {
        Some(self.hw_info())
    }

    /// True when `VSMMU_ATTACH_DEVICE` must carry a VFIO cdev fd.
    fn needs_device_fd(&self) -> bool;

    /// Makes guest RAM at `[gpa, gpa + size)`, mapped in this process at
    /// `host_addr`, reachable by device DMA (the stage-2 / IOAS mapping).
    fn map_guest_ram(&mut self, gpa: u64, size: u64, host_addr: usize) -> Result<(), HostError>;

    /// Removes a mapping made by [`HostIommu::map_guest_ram`].
    fn unmap_guest_ram(&mut self, gpa: u64, size: u64) -> Result<(), HostError>;

    /// Binds a host device to guest StreamID `vsid` (vDEVICE); returns the
    /// host's device id. The device starts in [`SteAction::Abort`].
    fn attach_device(&mut self, vsid: u32, device_fd: Option<OwnedFd>) -> Result<u32, HostError>;

    /// Attaches a device the VMM bound to its own iommufd: the vIOMMU and
    /// its objects are then allocated in the VMM's context (see
    /// `host::iommufd`). Returns `dev.dev_id`. Only a host with an iommufd
    /// can; the others refuse with EOPNOTSUPP.
    fn attach_vmm_device(&mut self, vsid: u32, dev: VmmDevice) -> Result<u32, HostError> {
        Err(HostError::new(
            "VSMMU_ATTACH_DEVICE",
            libc::EOPNOTSUPP,
            format!(
                "vSID {vsid:#x}: device id {} was bound by the VMM to its iommufd; the {} host \
                 has none to work in (run vsmmud with --host iommufd)",
                dev.dev_id,
                self.name()
            ),
        ))
    }

    /// Unbinds the device of `vsid`.
    fn detach_device(&mut self, vsid: u32) -> Result<(), HostError>;

    /// True when `change` will free the vIOMMU, and with it the vEVENTQ:
    /// the model must read the vEVENTQ out and free it first.
    fn viommu_ends(&self, change: DeviceChange) -> bool {
        let _ = change;
        false
    }

    /// True when a device is attached with this vSID.
    fn is_attached(&self, vsid: u32) -> bool;

    /// Installs the configuration of `vsid`. A rejected nested STE returns
    /// an error and leaves the device aborting.
    fn install_ste(&mut self, vsid: u32, action: SteAction) -> Result<(), HostError>;

    /// Sends invalidation commands (`IOMMU_HWPT_INVALIDATE`, 16-byte
    /// entries), at most [`MAX_INVALIDATION_ENTRIES`] per call.
    fn invalidate(&mut self, cmds: &[[u64; 2]]) -> Result<(), InvalidateError>;

    /// Allocates the vEVENTQ with `depth` entries, replacing any existing
    /// one. The vEVENTQ belongs to the vIOMMU, which exists only once a
    /// device is attached (the kernel needs a bound device to allocate the
    /// nesting parent): ENODEV before.
    fn alloc_veventq(&mut self, depth: u32) -> Result<(), HostError>;

    /// Sequence number of the first event of a new vEVENTQ (the kernel
    /// starts every vEVENTQ at 0).
    fn veventq_first_seq(&self) -> u32 {
        0
    }

    /// Frees the vEVENTQ (close fd, destroy, in the kernel's order).
    fn free_veventq(&mut self);

    /// The pollable vEVENTQ fd, if allocated.
    fn veventq_fd(&self) -> Option<RawFd>;

    /// One `read(2)` of the vEVENTQ: whole records only, 0 when empty or the
    /// next record does not fit.
    fn read_veventq(&mut self, buf: &mut [u8]) -> Result<usize, HostError>;

    /// The controls of a simulated host ([`SimControls`]), `None` on a
    /// real host.
    fn sim_controls(&mut self) -> Option<&mut dyn SimControls> {
        None
    }
}

/// What the sim-only commands (`VSMMU_SIM_INJECT`, `VSMMU_SIM_DMA`,
/// `VSMMU_TRANSLATE`) ask of a host that simulates its devices' DMA.
///
/// A narrow trait rather than a downcast (`as_any` to the sim's type): the
/// device asks for these three operations, not for a particular backend, so
/// [`HostIommu`] names no backend, and a host that wraps the sim (as the
/// command-queue tests' fault-injecting host does) hands them on.
pub trait SimControls {
    /// Reports event records to the vEVENTQ as the kernel would; returns
    /// how many were queued and how many dropped (`VSMMU_SIM_INJECT`).
    fn inject(&mut self, records: &[[u64; 4]]) -> Result<(u32, u32), HostError>;

    /// One device DMA through the host SMMU (`VSMMU_SIM_DMA`).
    fn dma(&mut self, mem: &GuestRam, req: &SimDma, data: &[u8]) -> sim::dma::SimDmaResult;

    /// Translates one access of a device the VMM emulates
    /// (`VSMMU_TRANSLATE`); a fault is queued as an event unless `events`
    /// is false.
    fn translate_for_vmm(
        &mut self,
        mem: &GuestRam,
        vsid: u32,
        ssid: Option<u32>,
        iova: u64,
        write: bool,
        events: bool,
    ) -> sim::dma::VmmTranslation;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10.2's nested SMMUv3 as the rig's L1 kernel reports it, against
    /// the iommufd profile: compatible.
    #[test]
    fn qemu_nested_host_backs_the_iommufd_profile() {
        let hw = HwInfo {
            idr: [0x0d44_101b, 0x0273_0010, 0, 0x1514, 0, 0x74],
            iidr: 0,
            aidr: 1,
        };
        assert_eq!(check_nesting_host(&hw, &iommufd::GUEST_PROFILE), Ok(()));
    }

    /// Every mismatch is named.
    #[test]
    fn mismatches_are_listed() {
        let hw = HwInfo {
            // S1P only, TTF AArch32, big-endian; no ASID16.
            idr: [0x0060_0006, 0, 0, 0, 0, 0x0000_0012],
            iidr: 0,
            aidr: 0,
        };
        let err = check_nesting_host(&hw, &iommufd::GUEST_PROFILE).unwrap_err();
        assert_eq!(
            err,
            "the host SMMU lacks stage 1 and stage 2 (IDR0.S1P, S2P), AArch64 tables (IDR0.TTF), \
             little-endian walks (IDR0.TTENDIAN), IDR0.COHACC, IDR0.ASID16, IDR5.OAS 2 < 4, IDR5.GRAN64K"
        );
        let mut sim = sim::SIM_HW_INFO;
        assert_eq!(check_nesting_host(&sim, &sim), Ok(()));
        sim.idr[1] = IDR1_SSIDSIZE.set32(sim.idr[1], 4);
        assert_eq!(
            check_nesting_host(&sim, &sim::SIM_HW_INFO),
            Err("the host SMMU lacks IDR1.SSIDSIZE 4 < 20".into())
        );
    }
}
