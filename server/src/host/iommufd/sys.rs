//! The ioctls, one function each, on borrowed fds.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use vsmmu_protocol::iommufd::*;
use zerocopy::{FromBytes, IntoBytes};

use super::{HostError, HwInfo};

/// Issues `request` with `arg`.
///
/// # Safety
///
/// `arg` must be the structure the kernel takes for `request`, its
/// leading size field equal to its size (so the kernel reads and writes
/// only within `*arg`), and every user pointer it carries must point to
/// memory valid for the kernel's reads and writes of the length the
/// structure states, for the duration of the call.
unsafe fn ioctl<T: IntoBytes + FromBytes>(
    fd: BorrowedFd<'_>,
    request: u64,
    arg: &mut T,
) -> Result<(), Errno> {
    // SAFETY: `fd` is open for the borrow; `arg` is a live, exclusive,
    // writable `T` and the kernel accesses at most `size_of::<T>()`
    // bytes of it (its size field); the pointers inside are the
    // caller's contract.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            request as libc::Ioctl,
            std::ptr::from_mut(arg),
        )
    };
    Errno::result(ret).map(drop)
}

fn err(op: &'static str, errno: Errno, ctx: impl std::fmt::Display) -> HostError {
    HostError::new(op, errno as i32, format!("{ctx}: {}", errno.desc()))
}

fn addr_of<T>(r: &T) -> u64 {
    std::ptr::from_ref(r).expose_provenance() as u64
}

pub(super) fn destroy(fd: BorrowedFd<'_>, id: u32) -> Result<(), HostError> {
    let mut arg = IommuDestroy::new(id);
    // SAFETY: `IommuDestroy` for IOMMU_DESTROY, no user pointers.
    unsafe { ioctl(fd, IOMMU_DESTROY, &mut arg) }
        .map_err(|e| err("IOMMU_DESTROY", e, format!("object {id}")))
}

pub(super) fn ioas_alloc(fd: BorrowedFd<'_>) -> Result<u32, HostError> {
    let mut arg = IommuIoasAlloc::new();
    // SAFETY: `IommuIoasAlloc` for IOMMU_IOAS_ALLOC, no user pointers.
    unsafe { ioctl(fd, IOMMU_IOAS_ALLOC, &mut arg) }
        .map_err(|e| err("IOMMU_IOAS_ALLOC", e, "IOAS"))?;
    Ok(arg.out_ioas_id)
}

pub(super) fn ioas_map(
    fd: BorrowedFd<'_>,
    ioas_id: u32,
    iova: u64,
    length: u64,
    user_va: usize,
) -> Result<(), HostError> {
    let flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
    let mut arg = IommuIoasMap::new(ioas_id, flags, user_va as u64, length, iova);
    // SAFETY: `IommuIoasMap` for IOMMU_IOAS_MAP. `user_va` is not
    // dereferenced by the ioctl as Rust memory: the kernel pins the pages
    // of that range of our address space (EFAULT if unmapped) for device
    // DMA; the caller maps guest RAM there, which this process only
    // accesses as shared guest memory.
    unsafe { ioctl(fd, IOMMU_IOAS_MAP, &mut arg) }.map_err(|e| {
        err(
            "IOMMU_IOAS_MAP",
            e,
            format!("guest RAM [{iova:#x}, +{length:#x}) at {user_va:#x}"),
        )
    })
}

pub(super) fn ioas_unmap(
    fd: BorrowedFd<'_>,
    ioas_id: u32,
    iova: u64,
    length: u64,
) -> Result<(), HostError> {
    let mut arg = IommuIoasUnmap::new(ioas_id, iova, length);
    // SAFETY: `IommuIoasUnmap` for IOMMU_IOAS_UNMAP, no user pointers.
    unsafe { ioctl(fd, IOMMU_IOAS_UNMAP, &mut arg) }.map_err(|e| {
        err(
            "IOMMU_IOAS_UNMAP",
            e,
            format!("guest RAM [{iova:#x}, +{length:#x})"),
        )
    })
}

pub(super) fn bind(cdev: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> Result<u32, HostError> {
    let mut arg = VfioDeviceBindIommufd {
        argsz: VfioDeviceBindIommufd::SIZE,
        flags: 0,
        iommufd: iommufd.as_raw_fd(),
        out_devid: 0,
        token_uuid_ptr: 0,
    };
    // SAFETY: `VfioDeviceBindIommufd` for VFIO_DEVICE_BIND_IOMMUFD; no
    // token flag, so `token_uuid_ptr` is ignored.
    unsafe { ioctl(cdev, VFIO_DEVICE_BIND_IOMMUFD, &mut arg) }.map_err(|e| {
        err(
            "VFIO_DEVICE_BIND_IOMMUFD",
            e,
            "bind the VFIO cdev to the iommufd",
        )
    })?;
    Ok(arg.out_devid)
}

pub(super) fn attach_pt(cdev: BorrowedFd<'_>, pt_id: u32) -> Result<(), HostError> {
    let mut arg = VfioDeviceAttachIommufdPt {
        argsz: VfioDeviceAttachIommufdPt::SIZE,
        flags: 0,
        pt_id,
        pasid: 0,
    };
    // SAFETY: `VfioDeviceAttachIommufdPt` for
    // VFIO_DEVICE_ATTACH_IOMMUFD_PT, no user pointers.
    unsafe { ioctl(cdev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut arg) }.map_err(|e| {
        err(
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            e,
            format!("attach to HWPT {pt_id}"),
        )
    })
}

pub(super) fn detach_pt(cdev: BorrowedFd<'_>) -> Result<(), HostError> {
    let mut arg = VfioDeviceDetachIommufdPt {
        argsz: VfioDeviceDetachIommufdPt::SIZE,
        flags: 0,
        pasid: 0,
    };
    // SAFETY: `VfioDeviceDetachIommufdPt` for
    // VFIO_DEVICE_DETACH_IOMMUFD_PT, no user pointers.
    unsafe { ioctl(cdev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &mut arg) }
        .map_err(|e| err("VFIO_DEVICE_DETACH_IOMMUFD_PT", e, "detach"))
}

pub(super) fn get_hw_info(fd: BorrowedFd<'_>, dev_id: u32) -> Result<HwInfo, HostError> {
    let mut info = IommuHwInfoArmSmmuv3::default();
    let mut arg = IommuHwInfo {
        size: IommuHwInfo::SIZE,
        dev_id,
        data_len: IommuHwInfoArmSmmuv3::SIZE,
        data_uptr: std::ptr::from_mut(&mut info).expose_provenance() as u64,
        ..Default::default()
    };
    // SAFETY: `IommuHwInfo` for IOMMU_GET_HW_INFO; `data_uptr` points to
    // `info`, live and writable for `data_len` = its size, the most the
    // kernel writes.
    unsafe { ioctl(fd, IOMMU_GET_HW_INFO, &mut arg) }
        .map_err(|e| err("IOMMU_GET_HW_INFO", e, format!("device {dev_id}")))?;
    if arg.data_type != IOMMU_HW_INFO_TYPE_ARM_SMMUV3 {
        return Err(HostError::new(
            "IOMMU_GET_HW_INFO",
            Errno::EOPNOTSUPP as i32,
            format!(
                "device {dev_id}: its IOMMU reports hw info type {}, not ARM SMMUv3 ({})",
                arg.data_type, IOMMU_HW_INFO_TYPE_ARM_SMMUV3
            ),
        ));
    }
    Ok(HwInfo {
        idr: info.idr,
        iidr: info.iidr,
        aidr: info.aidr,
    })
}

pub(super) fn hwpt_alloc_parent(
    fd: BorrowedFd<'_>,
    dev_id: u32,
    ioas_id: u32,
) -> Result<u32, HostError> {
    let mut arg = IommuHwptAlloc {
        size: IommuHwptAlloc::SIZE,
        flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
        dev_id,
        pt_id: ioas_id,
        data_type: IOMMU_HWPT_DATA_NONE,
        ..Default::default()
    };
    // SAFETY: `IommuHwptAlloc` for IOMMU_HWPT_ALLOC, no data pointer.
    unsafe { ioctl(fd, IOMMU_HWPT_ALLOC, &mut arg) }.map_err(|e| {
        err(
            "IOMMU_HWPT_ALLOC",
            e,
            format!("nesting parent for device {dev_id}"),
        )
    })?;
    Ok(arg.out_hwpt_id)
}

pub(super) fn hwpt_alloc_nested(
    fd: BorrowedFd<'_>,
    dev_id: u32,
    viommu_id: u32,
    ste: [u64; 2],
) -> Result<u32, HostError> {
    let data = IommuHwptArmSmmuv3 { ste };
    let mut arg = IommuHwptAlloc {
        size: IommuHwptAlloc::SIZE,
        flags: 0,
        dev_id,
        pt_id: viommu_id,
        data_type: IOMMU_HWPT_DATA_ARM_SMMUV3,
        data_len: IommuHwptArmSmmuv3::SIZE,
        data_uptr: addr_of(&data),
        ..Default::default()
    };
    // SAFETY: `IommuHwptAlloc` for IOMMU_HWPT_ALLOC; `data_uptr` points to
    // `data`, live for `data_len` = its size; the kernel only reads it.
    unsafe { ioctl(fd, IOMMU_HWPT_ALLOC, &mut arg) }.map_err(|e| {
        err(
            "IOMMU_HWPT_ALLOC",
            e,
            format!("nested vSTE [{:#018x}, {:#018x}]", ste[0], ste[1]),
        )
    })?;
    Ok(arg.out_hwpt_id)
}

pub(super) fn viommu_alloc(
    fd: BorrowedFd<'_>,
    dev_id: u32,
    parent_hwpt_id: u32,
) -> Result<u32, HostError> {
    let mut arg = IommuViommuAlloc {
        size: IommuViommuAlloc::SIZE,
        viommu_type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
        dev_id,
        hwpt_id: parent_hwpt_id,
        ..Default::default()
    };
    // SAFETY: `IommuViommuAlloc` for IOMMU_VIOMMU_ALLOC; data_len 0, no
    // data pointer.
    unsafe { ioctl(fd, IOMMU_VIOMMU_ALLOC, &mut arg) }.map_err(|e| {
        err(
            "IOMMU_VIOMMU_ALLOC",
            e,
            format!("ARM SMMUv3 vIOMMU for device {dev_id}"),
        )
    })?;
    Ok(arg.out_viommu_id)
}

pub(super) fn vdevice_alloc(
    fd: BorrowedFd<'_>,
    viommu_id: u32,
    dev_id: u32,
    vsid: u32,
) -> Result<u32, HostError> {
    let mut arg = IommuVdeviceAlloc {
        size: IommuVdeviceAlloc::SIZE,
        viommu_id,
        dev_id,
        out_vdevice_id: 0,
        virt_id: u64::from(vsid),
    };
    // SAFETY: `IommuVdeviceAlloc` for IOMMU_VDEVICE_ALLOC, no user
    // pointers.
    unsafe { ioctl(fd, IOMMU_VDEVICE_ALLOC, &mut arg) }.map_err(|e| {
        err(
            "IOMMU_VDEVICE_ALLOC",
            e,
            format!("vSID {vsid:#x}, device {dev_id}"),
        )
    })?;
    Ok(arg.out_vdevice_id)
}

/// `IOMMU_HWPT_INVALIDATE` of `cmds` on the vIOMMU; on failure, how
/// many entries the kernel handled (its `entry_num` out) and the error.
pub(super) fn hwpt_invalidate(
    fd: BorrowedFd<'_>,
    viommu_id: u32,
    cmds: &[[u64; 2]],
) -> Result<(), (usize, HostError)> {
    let entry_num = u32::try_from(cmds.len()).map_err(|_| {
        (
            0,
            HostError::new(
                "IOMMU_HWPT_INVALIDATE",
                Errno::EINVAL as i32,
                "too many entries",
            ),
        )
    })?;
    let mut arg = IommuHwptInvalidate {
        size: IommuHwptInvalidate::SIZE,
        hwpt_id: viommu_id,
        data_uptr: cmds.as_ptr().expose_provenance() as u64,
        data_type: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
        entry_len: IommuViommuArmSmmuv3Invalidate::SIZE,
        entry_num,
        reserved: 0,
    };
    // SAFETY: `IommuHwptInvalidate` for IOMMU_HWPT_INVALIDATE;
    // `data_uptr` points to `cmds`, `entry_num` entries of `entry_len` =
    // 16 bytes (`[u64; 2]` has the layout of
    // `iommu_viommu_arm_smmuv3_invalidate` on this little-endian host),
    // live for the call; the kernel only reads them.
    match unsafe { ioctl(fd, IOMMU_HWPT_INVALIDATE, &mut arg) } {
        Ok(()) => Ok(()),
        Err(e) => {
            // The handler writes `entry_num` back on every error it
            // returns, always below the input (the failing entry is not
            // handled); an error from before the handler (ENOTTY, bad
            // size) leaves the input there: nothing was handled.
            let handled = if arg.entry_num < entry_num {
                arg.entry_num as usize
            } else {
                0
            };
            Err((
                handled,
                err("IOMMU_HWPT_INVALIDATE", e, format!("{entry_num} commands")),
            ))
        }
    }
}

pub(super) fn veventq_alloc(
    fd: BorrowedFd<'_>,
    viommu_id: u32,
    depth: u32,
) -> Result<(u32, OwnedFd), HostError> {
    let mut arg = IommuVeventqAlloc {
        size: IommuVeventqAlloc::SIZE,
        viommu_id,
        veventq_type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
        veventq_depth: depth,
        ..Default::default()
    };
    // SAFETY: `IommuVeventqAlloc` for IOMMU_VEVENTQ_ALLOC, no user
    // pointers.
    unsafe { ioctl(fd, IOMMU_VEVENTQ_ALLOC, &mut arg) }
        .map_err(|e| err("IOMMU_VEVENTQ_ALLOC", e, format!("depth {depth}")))?;
    let Ok(raw) = i32::try_from(arg.out_veventq_fd) else {
        destroy_quiet(fd, arg.out_veventq_id);
        return Err(HostError::new(
            "IOMMU_VEVENTQ_ALLOC",
            Errno::EBADF as i32,
            format!("kernel returned fd {}", arg.out_veventq_fd),
        ));
    };
    // SAFETY: on success the kernel installed a new fd for the vEVENTQ in
    // this process's table and hands it over to the caller ("user space
    // must close the successfully returned fd"); nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok((arg.out_veventq_id, owned))
}

fn destroy_quiet(fd: BorrowedFd<'_>, id: u32) {
    let _ = destroy(fd, id);
}
