//! Why a request failed: one variant per kind of failure, its message for
//! the log (`Display`) and the errno of the error reply ([`RequestError::errno`]).

use vsmmu_protocol::vfio_user::{libc_errno as errno, Command, DecodeError, VERSION_MAJOR};

use crate::host::HostError;
use crate::memory::MemError;
use crate::migration::MigError;
use crate::smmu::REGION_SIZE;

/// A request the device refuses.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The message does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A command before VERSION.
    #[error("VERSION must come first")]
    NotNegotiated,
    /// An extension command without the extension.
    #[error("vsmmu extension not negotiated in VERSION")]
    ExtensionNotNegotiated,
    /// More descriptors than the command takes.
    #[error("{got} fds with {cmd:?}, at most {max}")]
    TooManyFds {
        /// The command.
        cmd: Command,
        /// Descriptors received.
        got: usize,
        /// Descriptors it takes.
        max: usize,
    },

    /// A second VERSION.
    #[error("VERSION already negotiated")]
    AlreadyNegotiated,
    /// A major version this server does not speak.
    #[error("major version {0} unsupported (we speak {VERSION_MAJOR})")]
    MajorVersion(u16),

    /// DMA_MAP without the memfd.
    #[error("DMA_MAP without a file descriptor")]
    DmaMapNoFd,
    /// DMA_MAP flags other than READ and WRITE.
    #[error("DMA_MAP flags {0:#x}")]
    DmaMapFlags(u32),
    /// DMA_UNMAP flags (none are supported).
    #[error("DMA_UNMAP flags {0:#x}")]
    DmaUnmapFlags(u32),
    /// Guest RAM refused a mapping or unmapping.
    #[error(transparent)]
    Memory(#[from] MemError),

    /// A region index other than 0.
    #[error("no region {0}")]
    NoRegion(u32),
    /// A region access of other than 4 or 8 bytes.
    #[error("{count}-byte access at {offset:#x}: only 4 and 8")]
    AccessSize {
        /// Bytes.
        count: u32,
        /// Offset into the region.
        offset: u64,
    },
    /// A region access not aligned to its size.
    #[error("unaligned {count}-byte access at {offset:#x}")]
    Unaligned {
        /// Bytes.
        count: u32,
        /// Offset into the region.
        offset: u64,
    },
    /// A region access beyond the register file.
    #[error("access at {0:#x} outside the {REGION_SIZE:#x}-byte region")]
    OutsideRegion(u64),

    /// An irq index beyond the four lines.
    #[error("no irq index {0}")]
    NoIrq(u32),
    /// SET_IRQS flags with other than one data type and one action.
    #[error("SET_IRQS flags {0:#x}")]
    IrqFlags(u32),
    /// SET_IRQS beyond the one vector of each index.
    #[error("irq {index}: start {start} count {count}: one vector only")]
    IrqVectors {
        /// Irq index.
        index: u32,
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
    },
    /// Descriptors with a data type other than DATA_EVENTFD.
    #[error("fds without DATA_EVENTFD")]
    IrqFdsWithoutEventfd,
    /// DATA_BOOL with other than one byte per vector.
    #[error("DATA_BOOL needs count bytes")]
    IrqBoolData,
    /// Data with DATA_NONE or DATA_EVENTFD.
    #[error("unexpected SET_IRQS data")]
    IrqUnexpectedData,
    /// More eventfds than vectors.
    #[error("more fds than vectors")]
    IrqTooManyFds,
    /// MASK or UNMASK with eventfds.
    #[error("mask/unmask notification eventfds are not supported")]
    IrqMaskEventfd,

    /// DEVICE_FEATURE flags outside the spec's combinations.
    #[error("DEVICE_FEATURE flags {0:#x}")]
    FeatureFlags(u32),
    /// SET of the read-only migration feature.
    #[error("the migration feature cannot be set")]
    MigrationFeatureSet,
    /// MIG_DEVICE_STATE SET without its data.
    #[error("MIG_DEVICE_STATE needs 8 bytes of data")]
    MigDeviceStateData,
    /// A device feature this device lacks.
    #[error("device feature {0} not supported")]
    FeatureUnsupported(u32),
    /// The migration state machine refused.
    #[error(transparent)]
    Migration(#[from] MigError),

    /// ATTACH_DEVICE with VMM_BOUND without the cdev and the iommufd.
    #[error("ATTACH_DEVICE of a VMM-bound device takes two fds: the cdev, the iommufd")]
    AttachBoundFds,
    /// ATTACH_DEVICE with a device fd the host does not take, or without
    /// one it needs.
    #[error("the {host} host takes {wanted} device fd with ATTACH_DEVICE, got {got}")]
    AttachFds {
        /// The host backend.
        host: &'static str,
        /// Descriptors it takes (0 or 1).
        wanted: u8,
        /// Descriptors received.
        got: usize,
    },
    /// ATTACH_DEVICE of an attached vSID.
    #[error("vSID {0:#x} already attached")]
    AlreadyAttached(u32),
    /// A vSID the model refuses (beyond SIDSIZE).
    #[error("{0}")]
    BadVsid(String),
    /// DETACH_DEVICE of a vSID that is not attached.
    #[error("vSID {0:#x} is not attached")]
    NotAttached(u32),

    /// A sim-only extension command on another host.
    #[error("{0} needs the sim host")]
    NeedsSim(&'static str),

    /// NOTIFY_SETUP without its three descriptors.
    #[error("NOTIFY_SETUP takes three fds: the ring memfd, the kick and the ack eventfds")]
    NotifyFds,
    /// The invalidation ring refused its memfd or size.
    #[error("{0}")]
    NotifySetup(String),

    /// The host backend failed, with the kernel's errno.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl RequestError {
    /// The errno of the error reply.
    pub(crate) fn errno(&self) -> i32 {
        use RequestError as E;
        match self {
            E::Decode(e) => e.errno(),
            E::Host(e) => e.errno,
            E::Memory(MemError::Overlap { .. }) => errno::EEXIST,
            E::Memory(MemError::TooMany(_)) => errno::ENOSPC,
            E::Migration(MigError::StreamTooLarge) => errno::ENOSPC,
            E::ExtensionNotNegotiated => errno::ENOSYS,
            E::MajorVersion(_) | E::IrqMaskEventfd | E::FeatureUnsupported(_) | E::NeedsSim(_) => {
                errno::ENOTSUP
            }
            E::AlreadyAttached(_) => errno::EEXIST,
            E::NotAttached(_) => errno::ENOENT,
            E::Memory(_)
            | E::Migration(_)
            | E::NotNegotiated
            | E::TooManyFds { .. }
            | E::AlreadyNegotiated
            | E::DmaMapNoFd
            | E::DmaMapFlags(_)
            | E::DmaUnmapFlags(_)
            | E::NoRegion(_)
            | E::AccessSize { .. }
            | E::Unaligned { .. }
            | E::OutsideRegion(_)
            | E::NoIrq(_)
            | E::IrqFlags(_)
            | E::IrqVectors { .. }
            | E::IrqFdsWithoutEventfd
            | E::IrqBoolData
            | E::IrqUnexpectedData
            | E::IrqTooManyFds
            | E::FeatureFlags(_)
            | E::MigrationFeatureSet
            | E::MigDeviceStateData
            | E::AttachBoundFds
            | E::AttachFds { .. }
            | E::BadVsid(_)
            | E::NotifyFds
            | E::NotifySetup(_) => errno::EINVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errnos replies carried before the errors were typed.
    #[test]
    fn errnos() {
        let host = HostError::new("IOMMU_HWPT_ALLOC", errno::EBUSY, "busy");
        let cases: [(RequestError, i32); 12] = [
            (RequestError::ExtensionNotNegotiated, errno::ENOSYS),
            (RequestError::MajorVersion(1), errno::ENOTSUP),
            (RequestError::NeedsSim("SIM_DMA"), errno::ENOTSUP),
            (RequestError::IrqMaskEventfd, errno::ENOTSUP),
            (RequestError::FeatureUnsupported(9), errno::ENOTSUP),
            (RequestError::AlreadyAttached(1), errno::EEXIST),
            (RequestError::NotAttached(1), errno::ENOENT),
            (MigError::StreamTooLarge.into(), errno::ENOSPC),
            (MigError::Unknown(9).into(), errno::EINVAL),
            (MemError::TooMany(4).into(), errno::ENOSPC),
            (host.into(), errno::EBUSY),
            (RequestError::OutsideRegion(0x20000), errno::EINVAL),
        ];
        for (e, want) in cases {
            assert_eq!(e.errno(), want, "{e}");
        }
        assert_eq!(
            RequestError::OutsideRegion(0x20000).to_string(),
            "access at 0x20000 outside the 0x20000-byte region"
        );
    }
}
