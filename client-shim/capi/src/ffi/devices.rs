//! VSMMU_ATTACH_DEVICE and VSMMU_DETACH_DEVICE: the devices behind the
//! virtual SMMU.

use std::ffi::c_int;

use vsmmu_client::client::Client;

use super::error::{guard_int, Failure};
use super::{borrow_fd, client};

/// VSMMU_ATTACH_DEVICE: puts the device with virtual StreamID `vsid` (the
/// PCI requester ID) behind the virtual SMMU. `device_fd` is the device's
/// VFIO cdev for the iommufd backend, or -1 for the sim backend; it is
/// borrowed. On success `*host_dev_id` (if not NULL) receives the host's
/// id for the device.
///
/// Returns 0 or a negative errno (`-EEXIST` if `vsid` is attached).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `device_fd` is -1
/// or an open descriptor; `host_dev_id` is NULL or points to a writable
/// `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_attach_device(
    c: *mut Client,
    vsid: u32,
    device_fd: c_int,
    host_dev_id: *mut u32,
) -> c_int {
    const WHAT: &str = "vsmmu_attach_device";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let fd = if device_fd == -1 {
            None
        } else {
            // SAFETY: `device_fd` is open for this call per the contract.
            Some(unsafe { borrow_fd(device_fd, WHAT, "device_fd") }?)
        };
        let id = c
            .attach_device(vsid, fd)
            .map_err(|e| Failure::client(&format!("{WHAT}: vSID {vsid:#x}"), &e))?;
        if !host_dev_id.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { host_dev_id.write(id) };
        }
        Ok(0)
    })
}

/// VSMMU_ATTACH_DEVICE of a device the VMM bound to its own iommufd:
/// vsmmud then works in that iommufd (the VMM's context) and allocates the
/// vIOMMU on the VMM's nesting-parent HWPT `parent_hwpt_id`, which the
/// device must be attached to. `cdev_fd` is the device's bound VFIO cdev,
/// `iommufd_fd` the VMM's iommufd, `dev_id` the id VFIO_DEVICE_BIND_IOMMUFD
/// returned; both fds are borrowed (vsmmud keeps copies). Detach with
/// [`vsmmu_detach_device`] before the VMM frees its parent HWPT: the last
/// detach frees vsmmud's objects on it and puts the device back on it.
///
/// Returns 0 or a negative errno (`-EOPNOTSUPP` from a sim host, `-EBUSY`
/// while devices vsmmud bound itself are attached, `-EINVAL` for another
/// parent than the attached devices').
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `cdev_fd` and
/// `iommufd_fd` are open descriptors.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_attach_vmm_device(
    c: *mut Client,
    vsid: u32,
    cdev_fd: c_int,
    iommufd_fd: c_int,
    dev_id: u32,
    parent_hwpt_id: u32,
) -> c_int {
    const WHAT: &str = "vsmmu_attach_vmm_device";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        // SAFETY: both are open for this call per the contract.
        let cdev = unsafe { borrow_fd(cdev_fd, WHAT, "cdev_fd") }?;
        // SAFETY: as above.
        let iommufd = unsafe { borrow_fd(iommufd_fd, WHAT, "iommufd_fd") }?;
        c.attach_vmm_device(vsid, cdev, iommufd, dev_id, parent_hwpt_id)
            .map_err(|e| Failure::client(&format!("{WHAT}: vSID {vsid:#x}"), &e))?;
        Ok(0)
    })
}

/// VSMMU_DETACH_DEVICE of virtual StreamID `vsid`.
///
/// Returns 0 or a negative errno (`-ENOENT` if `vsid` is not attached).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_detach_device(c: *mut Client, vsid: u32) -> c_int {
    const WHAT: &str = "vsmmu_detach_device";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.detach_device(vsid)
            .map_err(|e| Failure::client(&format!("{WHAT}: vSID {vsid:#x}"), &e))?;
        Ok(0)
    })
}
