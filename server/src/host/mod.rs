//! Host IOMMU backends: what the SMMUv3 model asks of the host.
//!
//! The model never talks to iommufd directly: it calls [`HostIommu`], which
//! the real [`iommufd`] backend implements with ioctls on `/dev/iommu`, and
//! the [`sim`] backend implements in software with the kernel's exact
//! semantics (REFERENCE.md §vEVENTQ).

pub mod iommufd;
pub mod sim;
pub mod sim_dma;
pub mod tlb;
pub mod walk;

use std::os::fd::{OwnedFd, RawFd};

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

/// A batched invalidation that failed part-way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalidation failed after {handled} entries: {error}")]
pub struct InvalidateError {
    /// Entries handled before the failing one (the kernel's `entry_num` out).
    pub handled: usize,
    /// The failure.
    pub error: HostError,
}

/// Most entries one `IOMMU_HWPT_INVALIDATE` call carries. The kernel takes
/// any count but copies the array in one allocation; one page of entries
/// keeps that small.
pub const MAX_INVALIDATION_ENTRIES: usize = 256;

/// Size of one ARM SMMUv3 vEVENTQ record: 8-byte header + 32-byte event.
pub const VEVENT_RECORD_SIZE: usize = 40;

/// The host side of a vSMMU: one vIOMMU, its devices, their nested
/// configurations, invalidations and the vEVENTQ.
pub trait HostIommu {
    /// Short name for logs and stats (`sim`, `iommufd`).
    fn name(&self) -> &'static str;

    /// The physical SMMU's ID registers.
    fn hw_info(&self) -> HwInfo;

    /// True when `VSMMU_ATTACH_DEVICE` must carry a VFIO cdev fd.
    fn needs_device_fd(&self) -> bool;

    /// Makes guest RAM at `[gpa, gpa + size)`, mapped in this process at
    /// `host_addr`, reachable by device DMA (the stage-2 / IOAS mapping).
    fn map_guest_ram(&mut self, gpa: u64, size: u64, host_addr: usize) -> Result<(), HostError>;

    /// Removes a mapping made by [`HostIommu::map_guest_ram`].
    fn unmap_guest_ram(&mut self, gpa: u64, size: u64) -> Result<(), HostError>;

    /// Allocates the vIOMMU if it does not exist yet (the iommufd backend
    /// needs a bound device for the nesting parent, so it fails with ENODEV
    /// before the first attach).
    fn alloc_viommu(&mut self) -> Result<(), HostError>;

    /// Binds a host device to guest StreamID `vsid` (vDEVICE); returns the
    /// host's device id. The device starts in [`SteAction::Abort`].
    fn attach_device(&mut self, vsid: u32, device_fd: Option<OwnedFd>) -> Result<u32, HostError>;

    /// Unbinds the device of `vsid`.
    fn detach_device(&mut self, vsid: u32) -> Result<(), HostError>;

    /// True when a device is attached with this vSID.
    fn is_attached(&self, vsid: u32) -> bool;

    /// Installs the configuration of `vsid`. A rejected nested STE returns
    /// an error and leaves the device aborting.
    fn install_ste(&mut self, vsid: u32, action: SteAction) -> Result<(), HostError>;

    /// Sends invalidation commands (`IOMMU_HWPT_INVALIDATE`, 16-byte
    /// entries), at most [`MAX_INVALIDATION_ENTRIES`] per call.
    fn invalidate(&mut self, cmds: &[[u64; 2]]) -> Result<(), InvalidateError>;

    /// Allocates the vEVENTQ with `depth` entries, replacing any existing one.
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

    /// The sim backend's extra controls, `None` on a real host.
    fn as_sim(&mut self) -> Option<&mut sim::SimHost> {
        None
    }
}
