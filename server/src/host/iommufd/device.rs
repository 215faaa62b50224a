//! The devices of the iommufd backend: binding a VFIO cdev to the iommufd
//! (or reusing the binding an earlier attach left, see "Who owns a
//! device's binding" in [`super`]), its vDEVICE and the abort HWPT it
//! starts on, and its teardown in the kernel's order; and the VMM's
//! iommufd context that devices the VMM bound bring along.
//!
//! Apart from the vIOMMU (`viommu.rs`) because a device's objects live and
//! die with the device, inside the vIOMMU's lifetime.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::hw_info::other_smmu;
use super::{destroy_logged, sys, IommufdHost};
use crate::host::HostError;

/// What a device is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Config {
    /// The shared abort HWPT.
    Abort,
    /// The shared bypass HWPT.
    Bypass,
    /// Its own nested HWPT (stage-1 translate vSTE), by id.
    Nested(u32),
}

/// One attached device.
#[derive(Debug)]
pub(super) struct Device {
    /// The VFIO cdev fd; closing it unbinds the device from the iommufd.
    pub(super) cdev: OwnedFd,
    /// Its id in the iommufd (`VFIO_DEVICE_BIND_IOMMUFD`).
    pub(super) dev_id: u32,
    /// The cdev's device number: the key under which a detach remembers
    /// `dev_id` (see [`IommufdHost::bind_or_reuse`]).
    pub(super) rdev: u64,
    /// Its vDEVICE (virt_id = vSID).
    pub(super) vdevice_id: u32,
    /// The HWPT it is attached to.
    pub(super) config: Config,
    /// Bound by the VMM in its iommufd ([`VmmContext`]); vsmmud neither
    /// bound it nor unbinds it.
    pub(super) vmm_bound: bool,
}

/// The VMM's iommufd context, while devices the VMM bound are attached
/// (see the module documentation).
#[derive(Debug)]
pub(super) struct VmmContext {
    /// vsmmud's copy of the VMM's iommufd.
    pub(super) iommufd: OwnedFd,
    /// The VMM's nesting parent over its IOAS of guest RAM.
    pub(super) parent_hwpt_id: u32,
}

impl IommufdHost {
    /// Binds `cdev` to the iommufd, or — when its open file is still bound
    /// from an earlier attach (EINVAL) — takes the device id it had.
    pub(super) fn bind_or_reuse(
        &mut self,
        vsid: u32,
        cdev: BorrowedFd<'_>,
        rdev: u64,
    ) -> Result<(u32, bool), HostError> {
        match sys::bind(cdev, self.iommufd.as_fd()) {
            Ok(dev_id) => {
                // The kernel reuses freed ids: a remembered one is stale now.
                self.released.retain(|_, id| *id != dev_id);
                self.released.remove(&rdev);
                Ok((dev_id, false))
            }
            Err(e) if e.errno == Errno::EINVAL as i32 => {
                let reusable = self.released.get(&rdev).copied().filter(|id| {
                    !self.devices.values().any(|d| d.dev_id == *id)
                        && sys::get_hw_info(self.iommufd.as_fd(), *id).is_ok()
                });
                match reusable {
                    Some(dev_id) => {
                        self.released.remove(&rdev);
                        log::info!(
                            "vSID {vsid:#x}: the device is still bound from its last attach \
                             (device id {dev_id}): reused"
                        );
                        Ok((dev_id, true))
                    }
                    None => Err(HostError::new(
                        e.op,
                        Errno::EBUSY as i32,
                        format!(
                            "vSID {vsid:#x}: the VFIO cdev is already bound to an iommufd \
                             (another open file of this device, or another iommufd, holds it): \
                             vsmmud binds the cdev itself; the VMM must not bind it"
                        ),
                    )),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets a device whose cdev this process is closing: its open file
    /// may stay bound while the VMM holds a copy.
    pub(super) fn release(&mut self, rdev: u64, dev_id: u32) {
        self.released.insert(rdev, dev_id);
    }

    /// The rest of an attach once `dev_id` is bound: checks, the vIOMMU for
    /// the first device, the vDEVICE, the abort HWPT.
    pub(super) fn attach_bound(
        &mut self,
        vsid: u32,
        dev_id: u32,
        rdev: u64,
        cdev: OwnedFd,
    ) -> Result<u32, HostError> {
        let hw = self.check_device(vsid, dev_id)?;
        let created = match self.viommu {
            Some(_) => false,
            None => {
                let v = self.create_viommu(dev_id)?;
                self.viommu = Some(v);
                self.hw_info = Some(hw);
                true
            }
        };
        match self.setup_vdevice(vsid, dev_id, cdev.as_fd()) {
            Ok(vdevice_id) => {
                self.devices.insert(
                    vsid,
                    Device {
                        cdev,
                        dev_id,
                        rdev,
                        vdevice_id,
                        config: Config::Abort,
                        vmm_bound: self.vmm.is_some(),
                    },
                );
                Ok(dev_id)
            }
            Err(e) => {
                if created {
                    self.destroy_viommu();
                }
                Err(e)
            }
        }
    }

    /// Allocates the vDEVICE of `vsid` and attaches the device to the abort
    /// HWPT; undoes the vDEVICE if the attach fails.
    fn setup_vdevice(
        &self,
        vsid: u32,
        dev_id: u32,
        cdev: BorrowedFd<'_>,
    ) -> Result<u32, HostError> {
        let v = self.viommu_ref()?;
        let fd = self.ctx();
        let vdevice_id = sys::vdevice_alloc(fd, v.viommu_id, dev_id, vsid).map_err(|e| {
            if e.errno == Errno::EINVAL as i32 {
                // arm_vsmmu_vdevice_init / iommufd_vdevice_alloc_ioctl: the
                // device's SMMU is not the vIOMMU's.
                other_smmu(vsid, &e.to_string())
            } else {
                e
            }
        })?;
        if let Err(e) = sys::attach_pt(cdev, v.abort_hwpt_id) {
            destroy_logged(fd, vdevice_id, "vDEVICE rollback");
            return Err(e);
        }
        Ok(vdevice_id)
    }

    /// Detaches a device and frees what it owns, in the kernel's order:
    /// detach, destroy its nested HWPT, destroy its vDEVICE, close its cdev.
    /// Every step runs; the first error is returned.
    pub(super) fn teardown_device(&self, vsid: u32, dev: Device) -> Result<(), HostError> {
        let fd = self.ctx();
        let mut first: Option<HostError> = None;
        let mut note = |r: Result<(), HostError>, what: &str| {
            if let Err(e) = r {
                log::warn!("vSID {vsid:#x}: {what}: {e}");
                first.get_or_insert(e);
            }
        };
        match (&self.vmm, dev.vmm_bound) {
            // Back where the VMM had it: on its nesting parent (stage 2
            // only), which the VMM detaches and frees itself.
            (Some(vmm), true) => note(
                sys::attach_pt(dev.cdev.as_fd(), vmm.parent_hwpt_id),
                "re-attach to the VMM's nesting parent",
            ),
            _ => note(sys::detach_pt(dev.cdev.as_fd()), "detach"),
        }
        if let Config::Nested(id) = dev.config {
            note(sys::destroy(fd, id), "destroy nested HWPT");
        }
        note(sys::destroy(fd, dev.vdevice_id), "destroy vDEVICE");
        drop(dev.cdev);
        first.map_or(Ok(()), Err)
    }
}
