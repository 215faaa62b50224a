//! iommufd uAPI records (`include/uapi/linux/iommufd.h`) and the VFIO cdev
//! structures that bind a device to an iommufd (`include/uapi/linux/vfio.h`).
//!
//! Every ioctl structure is `#[repr(C)]`, naturally aligned, without implicit
//! padding, and starts with its own size (`size` for iommufd, `argsz` for
//! VFIO). The layouts are those of Linux 6.17; the kernel accepts a larger
//! structure from user space as long as the bytes it does not know are zero
//! (`copy_struct_from_user`), so the newest layouts also work on the older
//! kernels that have the ioctl at all (vIOMMU and vEVENTQ: Linux 6.13/6.15).
//!
//! The vEVENTQ read format is parsed by [`parse_vevents`]; sequence gaps are
//! counted with [`lost_between`].

use std::iter::FusedIterator;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::wire::wire_struct;

// ---------------------------------------------------------------------------
// ioctl request numbers
// ---------------------------------------------------------------------------

/// `_IO(type, nr)` with the asm-generic encoding (direction `_IOC_NONE` = 0,
/// size 0): `type << 8 | nr`. This is the encoding of arm64, x86, riscv and
/// arm; powerpc, mips and sparc put a non-zero `_IOC_NONE` in bits 29..31 and
/// are not supported.
pub const fn io(ty: u8, nr: u8) -> u64 {
    ((ty as u64) << 8) | nr as u64
}

/// `IOMMUFD_TYPE`, the ioctl type of iommufd (and of VFIO).
pub const IOMMUFD_TYPE: u8 = b';';
/// `IOMMUFD_CMD_BASE`: iommufd command numbers start here.
pub const IOMMUFD_CMD_BASE: u8 = 0x80;

/// `IOMMU_DESTROY` = `_IO(';', 0x80)`.
pub const IOMMU_DESTROY: u64 = io(IOMMUFD_TYPE, 0x80);
/// `IOMMU_IOAS_ALLOC` = `_IO(';', 0x81)`.
pub const IOMMU_IOAS_ALLOC: u64 = io(IOMMUFD_TYPE, 0x81);
/// `IOMMU_IOAS_MAP` = `_IO(';', 0x85)`.
pub const IOMMU_IOAS_MAP: u64 = io(IOMMUFD_TYPE, 0x85);
/// `IOMMU_IOAS_UNMAP` = `_IO(';', 0x86)`.
pub const IOMMU_IOAS_UNMAP: u64 = io(IOMMUFD_TYPE, 0x86);
/// `IOMMU_HWPT_ALLOC` = `_IO(';', 0x89)`.
pub const IOMMU_HWPT_ALLOC: u64 = io(IOMMUFD_TYPE, 0x89);
/// `IOMMU_GET_HW_INFO` = `_IO(';', 0x8a)`.
pub const IOMMU_GET_HW_INFO: u64 = io(IOMMUFD_TYPE, 0x8a);
/// `IOMMU_HWPT_INVALIDATE` = `_IO(';', 0x8d)`.
pub const IOMMU_HWPT_INVALIDATE: u64 = io(IOMMUFD_TYPE, 0x8d);
/// `IOMMU_VIOMMU_ALLOC` = `_IO(';', 0x90)`.
pub const IOMMU_VIOMMU_ALLOC: u64 = io(IOMMUFD_TYPE, 0x90);
/// `IOMMU_VDEVICE_ALLOC` = `_IO(';', 0x91)`.
pub const IOMMU_VDEVICE_ALLOC: u64 = io(IOMMUFD_TYPE, 0x91);
/// `IOMMU_VEVENTQ_ALLOC` = `_IO(';', 0x93)`.
pub const IOMMU_VEVENTQ_ALLOC: u64 = io(IOMMUFD_TYPE, 0x93);

/// `VFIO_TYPE` (the same character as iommufd's).
pub const VFIO_TYPE: u8 = b';';
/// `VFIO_BASE`: VFIO command numbers start here.
pub const VFIO_BASE: u8 = 100;
/// `VFIO_DEVICE_BIND_IOMMUFD` = `_IO(VFIO_TYPE, VFIO_BASE + 18)`, on a VFIO
/// cdev fd (`/dev/vfio/devices/vfioN`).
pub const VFIO_DEVICE_BIND_IOMMUFD: u64 = io(VFIO_TYPE, VFIO_BASE + 18);
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` = `_IO(VFIO_TYPE, VFIO_BASE + 19)`.
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u64 = io(VFIO_TYPE, VFIO_BASE + 19);
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT` = `_IO(VFIO_TYPE, VFIO_BASE + 20)`.
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u64 = io(VFIO_TYPE, VFIO_BASE + 20);

// ---------------------------------------------------------------------------
// Type and flag constants
// ---------------------------------------------------------------------------

/// `IOMMU_IOAS_MAP_FIXED_IOVA`: map at the given IOVA.
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`: DMA may write the mapping.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_READABLE`: DMA may read the mapping.
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// `IOMMU_HWPT_ALLOC_NEST_PARENT`: the HWPT can be a nesting parent (stage 2).
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = 1 << 0;

/// `IOMMU_HWPT_DATA_NONE`: a kernel-managed (paging) HWPT.
pub const IOMMU_HWPT_DATA_NONE: u32 = 0;
/// `IOMMU_HWPT_DATA_ARM_SMMUV3`: a nested HWPT described by a vSTE
/// ([`IommuHwptArmSmmuv3`]).
pub const IOMMU_HWPT_DATA_ARM_SMMUV3: u32 = 2;

/// `IOMMU_HW_INFO_TYPE_ARM_SMMUV3`: [`IommuHwInfoArmSmmuv3`] data.
pub const IOMMU_HW_INFO_TYPE_ARM_SMMUV3: u32 = 2;

/// `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3` (the kernel's name): entries are
/// [`IommuViommuArmSmmuv3Invalidate`].
pub const IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: u32 = 1;
/// Alias of [`IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`] under the name of the
/// `IOMMU_HWPT_INVALIDATE` ioctl that carries it.
pub const IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3: u32 = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;

/// `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`.
pub const IOMMU_VIOMMU_TYPE_ARM_SMMUV3: u32 = 1;

/// `IOMMU_VEVENTQ_TYPE_ARM_SMMUV3`: records carry [`VeventArmSmmuv3`].
pub const IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: u32 = 1;

/// `IOMMU_VEVENTQ_FLAG_LOST_EVENTS`: a header-only record carrying the
/// sequence of the latest dropped event.
pub const IOMMU_VEVENTQ_FLAG_LOST_EVENTS: u32 = 1 << 0;

/// Sequence numbers wrap from `INT_MAX` to 0.
pub const VEVENT_SEQ_MASK: u32 = 0x7fff_ffff;

// ---------------------------------------------------------------------------
// ioctl structures
// ---------------------------------------------------------------------------

wire_struct!(
    /// `struct iommu_destroy` (`IOMMU_DESTROY`).
    IommuDestroy {
        /// `sizeof(struct iommu_destroy)`.
        size: u32,
        /// Any destroyable object id.
        id: u32,
    } = 8
);

impl IommuDestroy {
    /// Destroys object `id`.
    pub fn new(id: u32) -> Self {
        IommuDestroy {
            size: Self::SIZE,
            id,
        }
    }
}

wire_struct!(
    /// `struct iommu_ioas_alloc` (`IOMMU_IOAS_ALLOC`).
    IommuIoasAlloc {
        /// `sizeof(struct iommu_ioas_alloc)`.
        size: u32,
        /// Must be 0.
        flags: u32,
        /// Out: the new IOAS id.
        out_ioas_id: u32,
    } = 12
);

impl IommuIoasAlloc {
    /// An allocation request.
    pub fn new() -> Self {
        IommuIoasAlloc {
            size: Self::SIZE,
            ..Default::default()
        }
    }
}

wire_struct!(
    /// `struct iommu_ioas_map` (`IOMMU_IOAS_MAP`).
    IommuIoasMap {
        /// `sizeof(struct iommu_ioas_map)`.
        size: u32,
        /// `IOMMU_IOAS_MAP_*`.
        flags: u32,
        /// The IOAS to map into.
        ioas_id: u32,
        /// `__reserved`, must be 0.
        reserved: u32,
        /// User virtual address of the memory.
        user_va: u64,
        /// Bytes to map.
        length: u64,
        /// IOVA (in with `FIXED_IOVA`, else out).
        iova: u64,
    } = 40
);

impl IommuIoasMap {
    /// Maps `[user_va, user_va + length)` at `iova` with `flags`.
    pub fn new(ioas_id: u32, flags: u32, user_va: u64, length: u64, iova: u64) -> Self {
        IommuIoasMap {
            size: Self::SIZE,
            flags,
            ioas_id,
            reserved: 0,
            user_va,
            length,
            iova,
        }
    }
}

wire_struct!(
    /// `struct iommu_ioas_unmap` (`IOMMU_IOAS_UNMAP`).
    IommuIoasUnmap {
        /// `sizeof(struct iommu_ioas_unmap)`.
        size: u32,
        /// The IOAS to unmap from.
        ioas_id: u32,
        /// First IOVA.
        iova: u64,
        /// In: bytes to unmap; out: bytes unmapped.
        length: u64,
    } = 24
);

impl IommuIoasUnmap {
    /// Unmaps `[iova, iova + length)`.
    pub fn new(ioas_id: u32, iova: u64, length: u64) -> Self {
        IommuIoasUnmap {
            size: Self::SIZE,
            ioas_id,
            iova,
            length,
        }
    }
}

wire_struct!(
    /// `struct iommu_hwpt_alloc` (`IOMMU_HWPT_ALLOC`), with `fault_id` and
    /// `__reserved2` (Linux 6.11+; older kernels accept the zero tail).
    IommuHwptAlloc {
        /// `sizeof(struct iommu_hwpt_alloc)`.
        size: u32,
        /// `IOMMU_HWPT_ALLOC_*`.
        flags: u32,
        /// The device the HWPT is allocated for.
        dev_id: u32,
        /// IOAS (paging HWPT) or vIOMMU / parent HWPT (nested HWPT).
        pt_id: u32,
        /// Out: the new HWPT id.
        out_hwpt_id: u32,
        /// `__reserved`, must be 0.
        reserved: u32,
        /// `IOMMU_HWPT_DATA_*`.
        data_type: u32,
        /// Length of the data at `data_uptr`.
        data_len: u32,
        /// User pointer to the type-specific data.
        data_uptr: u64,
        /// Fault queue id, valid with `IOMMU_HWPT_FAULT_ID_VALID`.
        fault_id: u32,
        /// `__reserved2`, must be 0.
        reserved2: u32,
    } = 48
);

wire_struct!(
    /// `struct iommu_hwpt_arm_smmuv3`: the vSTE of a nested HWPT, the first
    /// two STE double words (little-endian).
    IommuHwptArmSmmuv3 {
        /// STE words 0 and 1.
        ste: [u64; 2],
    } = 16
);

wire_struct!(
    /// `struct iommu_hw_info` (`IOMMU_GET_HW_INFO`). `in_data_type` /
    /// `out_data_type` share one field, `data_type` here.
    IommuHwInfo {
        /// `sizeof(struct iommu_hw_info)`.
        size: u32,
        /// 0, or `IOMMU_HW_INFO_FLAG_INPUT_TYPE`.
        flags: u32,
        /// A device bound to the iommufd.
        dev_id: u32,
        /// In: buffer length; out: the length the kernel supports.
        data_len: u32,
        /// User pointer to the type-specific buffer.
        data_uptr: u64,
        /// Out: `IOMMU_HW_INFO_TYPE_*` (in with `FLAG_INPUT_TYPE`).
        data_type: u32,
        /// Out: PASID width, 0 without PASID support.
        out_max_pasid_log2: u8,
        /// `__reserved`, must be 0.
        reserved: [u8; 3],
        /// Out: `IOMMU_HW_CAP_*`.
        out_capabilities: u64,
    } = 40
);

wire_struct!(
    /// `struct iommu_hw_info_arm_smmuv3`: the physical SMMU's ID registers.
    IommuHwInfoArmSmmuv3 {
        /// Must be 0.
        flags: u32,
        /// `__reserved`, must be 0.
        reserved: u32,
        /// IDR0..IDR5.
        idr: [u32; 6],
        /// IIDR.
        iidr: u32,
        /// AIDR.
        aidr: u32,
    } = 40
);

wire_struct!(
    /// `struct iommu_hwpt_invalidate` (`IOMMU_HWPT_INVALIDATE`).
    IommuHwptInvalidate {
        /// `sizeof(struct iommu_hwpt_invalidate)`.
        size: u32,
        /// A nested HWPT or, for ARM SMMUv3, the vIOMMU.
        hwpt_id: u32,
        /// User pointer to the entry array.
        data_uptr: u64,
        /// `IOMMU_*_INVALIDATE_DATA_*`, the type of every entry.
        data_type: u32,
        /// Bytes per entry.
        entry_len: u32,
        /// In: entries in the array; out: entries the kernel handled.
        entry_num: u32,
        /// `__reserved`, must be 0.
        reserved: u32,
    } = 32
);

wire_struct!(
    /// `struct iommu_viommu_arm_smmuv3_invalidate`: one 16-byte SMMUv3
    /// command (little-endian).
    IommuViommuArmSmmuv3Invalidate {
        /// Command double words 0 and 1.
        cmd: [u64; 2],
    } = 16
);

wire_struct!(
    /// `struct iommu_viommu_alloc` (`IOMMU_VIOMMU_ALLOC`), with `data_len`
    /// and `data_uptr` (Linux 6.16+; older kernels take the first 24 bytes
    /// and accept the zero tail).
    IommuViommuAlloc {
        /// `sizeof(struct iommu_viommu_alloc)`.
        size: u32,
        /// Must be 0.
        flags: u32,
        /// `IOMMU_VIOMMU_TYPE_*`.
        viommu_type: u32,
        /// A device behind the physical IOMMU to virtualize.
        dev_id: u32,
        /// The nesting parent HWPT.
        hwpt_id: u32,
        /// Out: the new vIOMMU id.
        out_viommu_id: u32,
        /// Length of the type-specific data (0 for ARM SMMUv3).
        data_len: u32,
        /// `__reserved`, must be 0.
        reserved: u32,
        /// User pointer to the type-specific data.
        data_uptr: u64,
    } = 40
);

wire_struct!(
    /// `struct iommu_vdevice_alloc` (`IOMMU_VDEVICE_ALLOC`).
    IommuVdeviceAlloc {
        /// `sizeof(struct iommu_vdevice_alloc)`.
        size: u32,
        /// The vIOMMU.
        viommu_id: u32,
        /// The physical device.
        dev_id: u32,
        /// Out: the new vDEVICE id.
        out_vdevice_id: u32,
        /// The virtual id: the guest vSID for ARM SMMUv3.
        virt_id: u64,
    } = 24
);

wire_struct!(
    /// `struct iommu_veventq_alloc` (`IOMMU_VEVENTQ_ALLOC`).
    IommuVeventqAlloc {
        /// `sizeof(struct iommu_veventq_alloc)`.
        size: u32,
        /// Must be 0.
        flags: u32,
        /// The vIOMMU whose events are queued.
        viommu_id: u32,
        /// `IOMMU_VEVENTQ_TYPE_*`.
        veventq_type: u32,
        /// Maximum number of queued events (> 0).
        veventq_depth: u32,
        /// Out: the new vEVENTQ id.
        out_veventq_id: u32,
        /// Out: the vEVENTQ fd (the caller owns and must close it).
        out_veventq_fd: u32,
        /// `__reserved`, must be 0.
        reserved: u32,
    } = 32
);

wire_struct!(
    /// `struct vfio_device_bind_iommufd` (`VFIO_DEVICE_BIND_IOMMUFD`), with
    /// `token_uuid_ptr` (Linux 6.17+; older kernels read the first 16 bytes).
    VfioDeviceBindIommufd {
        /// `sizeof(struct vfio_device_bind_iommufd)`.
        argsz: u32,
        /// 0, or `VFIO_DEVICE_BIND_FLAG_TOKEN`.
        flags: u32,
        /// The iommufd to bind to.
        iommufd: i32,
        /// Out: the device id in that iommufd.
        out_devid: u32,
        /// User pointer to a 16-byte VF token, with `FLAG_TOKEN` only.
        token_uuid_ptr: u64,
    } = 24
);

wire_struct!(
    /// `struct vfio_device_attach_iommufd_pt`
    /// (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`), with `pasid` (Linux 6.13+).
    VfioDeviceAttachIommufdPt {
        /// `sizeof(struct vfio_device_attach_iommufd_pt)`.
        argsz: u32,
        /// 0, or `VFIO_DEVICE_ATTACH_PASID`.
        flags: u32,
        /// In: IOAS or HWPT id; out: the attached HWPT id.
        pt_id: u32,
        /// The PASID, with `VFIO_DEVICE_ATTACH_PASID` only.
        pasid: u32,
    } = 16
);

wire_struct!(
    /// `struct vfio_device_detach_iommufd_pt`
    /// (`VFIO_DEVICE_DETACH_IOMMUFD_PT`), with `pasid` (Linux 6.13+).
    VfioDeviceDetachIommufdPt {
        /// `sizeof(struct vfio_device_detach_iommufd_pt)`.
        argsz: u32,
        /// 0, or `VFIO_DEVICE_DETACH_PASID`.
        flags: u32,
        /// The PASID, with `VFIO_DEVICE_DETACH_PASID` only.
        pasid: u32,
    } = 12
);

// ---------------------------------------------------------------------------
// vEVENTQ records
// ---------------------------------------------------------------------------

/// `struct iommufd_vevent_header`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VeventHeader {
    /// `IOMMU_VEVENTQ_FLAG_*`.
    pub flags: u32,
    /// Sequence number, 0..=INT_MAX.
    pub sequence: u32,
}

/// `struct iommu_vevent_arm_smmuv3`: the event record, vSID already in
/// `evt[0]` bits 63:32.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VeventArmSmmuv3 {
    /// The 32-byte SMMUv3 event record as four little-endian u64.
    pub evt: [u64; 4],
}

const _: () = assert!(std::mem::size_of::<VeventHeader>() == 8);
const _: () = assert!(std::mem::size_of::<VeventArmSmmuv3>() == 32);

/// Bytes of a vEVENTQ record header (and of a whole LOST_EVENTS record).
pub const VEVENT_HEADER_SIZE: usize = 8;
/// Bytes of an ARM SMMUv3 event record: header + 32-byte event.
pub const VEVENT_ARM_SMMUV3_RECORD_SIZE: usize = 40;

/// One record read from an ARM SMMUv3 vEVENTQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vevent {
    /// A delivered event (40-byte record).
    Event {
        /// Its sequence number.
        seq: u32,
        /// The SMMUv3 event record, vSID in `evt[0]` bits 63:32.
        evt: [u64; 4],
    },
    /// The header-only `IOMMU_VEVENTQ_FLAG_LOST_EVENTS` record (8 bytes):
    /// events were dropped, `seq` being the sequence of the latest dropped
    /// one.
    Lost {
        /// Sequence of the latest dropped event.
        seq: u32,
    },
}

impl Vevent {
    /// The record's sequence number.
    pub fn seq(&self) -> u32 {
        match *self {
            Vevent::Event { seq, .. } | Vevent::Lost { seq } => seq,
        }
    }
}

/// A vEVENTQ buffer that is not a sequence of whole, well-formed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VeventParseError {
    /// The buffer ends inside a record.
    #[error("vEVENTQ record at byte {offset} truncated: {available} of {needed} bytes")]
    Truncated {
        /// Offset of the record in the buffer.
        offset: usize,
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// The header has flags other than 0 or `LOST_EVENTS`.
    #[error("vEVENTQ record at byte {offset} has unknown flags {flags:#x}")]
    UnknownFlags {
        /// Offset of the record in the buffer.
        offset: usize,
        /// The header's flags.
        flags: u32,
    },
    /// The sequence number is above `INT_MAX`, which the kernel never uses.
    #[error("vEVENTQ record at byte {offset} has sequence {seq:#x} above INT_MAX")]
    BadSequence {
        /// Offset of the record in the buffer.
        offset: usize,
        /// The header's sequence.
        seq: u32,
    },
}

/// Walks the records of one or more `read(2)`s of an ARM SMMUv3 vEVENTQ.
///
/// Yields each record in order; the first malformed record yields an error
/// and ends the walk (the rest of the buffer cannot be framed). Never panics.
pub fn parse_vevents(buf: &[u8]) -> VeventIter<'_> {
    VeventIter {
        buf,
        pos: 0,
        done: false,
    }
}

/// Iterator returned by [`parse_vevents`].
#[derive(Debug, Clone)]
pub struct VeventIter<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl VeventIter<'_> {
    /// Bytes consumed so far (whole records only).
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn fail(&mut self, err: VeventParseError) -> Option<Result<Vevent, VeventParseError>> {
        self.done = true;
        Some(Err(err))
    }
}

impl Iterator for VeventIter<'_> {
    type Item = Result<Vevent, VeventParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let offset = self.pos;
        let rest = self.buf.get(offset..).unwrap_or_default();
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        let Ok((hdr, after_hdr)) = VeventHeader::read_from_prefix(rest) else {
            return self.fail(VeventParseError::Truncated {
                offset,
                needed: VEVENT_HEADER_SIZE,
                available: rest.len(),
            });
        };
        if hdr.sequence > VEVENT_SEQ_MASK {
            return self.fail(VeventParseError::BadSequence {
                offset,
                seq: hdr.sequence,
            });
        }
        match hdr.flags {
            0 => {
                let Ok((evt, _)) = VeventArmSmmuv3::read_from_prefix(after_hdr) else {
                    return self.fail(VeventParseError::Truncated {
                        offset,
                        needed: VEVENT_ARM_SMMUV3_RECORD_SIZE,
                        available: rest.len(),
                    });
                };
                self.pos = offset + VEVENT_ARM_SMMUV3_RECORD_SIZE;
                Some(Ok(Vevent::Event {
                    seq: hdr.sequence,
                    evt: evt.evt,
                }))
            }
            IOMMU_VEVENTQ_FLAG_LOST_EVENTS => {
                self.pos = offset + VEVENT_HEADER_SIZE;
                Some(Ok(Vevent::Lost { seq: hdr.sequence }))
            }
            flags => self.fail(VeventParseError::UnknownFlags { offset, flags }),
        }
    }
}

impl FusedIterator for VeventIter<'_> {}

/// Number of events lost between two consecutive records with sequences
/// `last` then `seq`: `(seq - last - 1) mod 2^31`.
///
/// Every event, delivered or dropped, consumes one sequence number, and the
/// sequence wraps from `INT_MAX` (0x7fff_ffff) to 0, so consecutive records
/// `last`, `seq` with nothing lost give 0, including across the wrap
/// (`0x7fff_ffff` then `0`). Plain `seq - last - 1` in u32 would report
/// about 2^31 lost events there.
///
/// How a reader uses it:
/// - before an event record with sequence `seq`, `lost_between(last, seq)`
///   events were dropped (0 for the first record ever read, which has no
///   `last`); then `last = seq`;
/// - a LOST_EVENTS record with sequence `seq` carries the latest dropped
///   event itself, so it accounts for `lost_between(last, seq) + 1` events;
///   then `last = seq`, and the next event (`seq + 1`) adds no further loss.
pub fn lost_between(last: u32, seq: u32) -> u32 {
    seq.wrapping_sub(last).wrapping_sub(1) & VEVENT_SEQ_MASK
}

#[cfg(test)]
mod tests;
