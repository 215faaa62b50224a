//! iommufd uAPI records (`include/uapi/linux/iommufd.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `IOMMU_VEVENTQ_FLAG_LOST_EVENTS`: a header-only record carrying the
/// sequence of the latest dropped event.
pub const IOMMU_VEVENTQ_FLAG_LOST_EVENTS: u32 = 1 << 0;

/// Sequence numbers wrap from `INT_MAX` to 0.
pub const VEVENT_SEQ_MASK: u32 = 0x7fff_ffff;

/// `struct iommufd_vevent_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VeventHeader {
    /// `IOMMU_VEVENTQ_FLAG_*`.
    pub flags: u32,
    /// Sequence number, 0..=INT_MAX.
    pub sequence: u32,
}

/// `struct iommu_vevent_arm_smmuv3`: the event record, vSID already in
/// `evt[0]` bits 63:32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VeventArmSmmuv3 {
    /// The 32-byte SMMUv3 event record as four little-endian u64.
    pub evt: [u64; 4],
}

const _: () = assert!(std::mem::size_of::<VeventHeader>() == 8);
const _: () = assert!(std::mem::size_of::<VeventArmSmmuv3>() == 32);
