//! The devices behind the SMMU: `VSMMU_ATTACH_DEVICE` (a device vsmmud
//! binds, or one the VMM bound to its own iommufd) and
//! `VSMMU_DETACH_DEVICE`.

use std::os::fd::OwnedFd;

use vsmmu_protocol::vfio_user::{Message, VsmmuBoundDevice, VsmmuDevice};

use super::{Device, RequestError};
use crate::host::{DeviceChange, VmmDevice};

impl Device {
    /// ATTACH_DEVICE: the host binds the device (the sim host takes no fd,
    /// iommufd the VFIO cdev), then the model installs its configuration.
    pub(super) fn attach_device(
        &mut self,
        reply: Message,
        d: &VsmmuDevice,
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, RequestError> {
        if self.host.needs_device_fd() != (fds.len() == 1) {
            return Err(RequestError::AttachFds {
                host: self.host.name(),
                wanted: u8::from(self.host.needs_device_fd()),
                got: fds.len(),
            });
        }
        self.check_attach(d.vsid)?;
        let dev_id = self.host.attach_device(d.vsid, fds.into_iter().next())?;
        Ok(self.attached(reply, d.vsid, dev_id))
    }

    /// ATTACH_DEVICE with `VMM_BOUND`: the cdev and the VMM's iommufd; the
    /// vIOMMU moves to the VMM's iommufd when this device starts it.
    pub(super) fn attach_vmm_device(
        &mut self,
        reply: Message,
        d: &VsmmuBoundDevice,
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, RequestError> {
        let mut fds = fds.into_iter();
        let (Some(cdev), Some(iommufd)) = (fds.next(), fds.next()) else {
            return Err(RequestError::AttachBoundFds);
        };
        self.check_attach(d.vsid)?;
        if self.host.viommu_ends(DeviceChange::AttachVmmBound) {
            let (smmu, mut ctx) = self.model();
            smmu.viommu_ending(&mut ctx);
        }
        let dev = VmmDevice {
            cdev,
            iommufd,
            dev_id: d.dev_id,
            parent_hwpt_id: d.parent_hwpt_id,
        };
        let dev_id = self.host.attach_vmm_device(d.vsid, dev)?;
        Ok(self.attached(reply, d.vsid, dev_id))
    }

    /// DETACH_DEVICE: when the vIOMMU goes with the device, the model
    /// reads out and frees the vEVENTQ first.
    pub(super) fn detach_device(
        &mut self,
        reply: Message,
        d: &VsmmuDevice,
    ) -> Result<Vec<u8>, RequestError> {
        if !self.host.is_attached(d.vsid) {
            return Err(RequestError::NotAttached(d.vsid));
        }
        if self.host.viommu_ends(DeviceChange::Detach(d.vsid)) {
            let (smmu, mut ctx) = self.model();
            smmu.viommu_ending(&mut ctx);
        }
        self.host.detach_device(d.vsid)?;
        self.smmu.device_detached(d.vsid);
        Ok(reply.push(d).finish())
    }

    /// What both forms of ATTACH_DEVICE check before the host is asked.
    fn check_attach(&self, vsid: u32) -> Result<(), RequestError> {
        if self.host.is_attached(vsid) {
            return Err(RequestError::AlreadyAttached(vsid));
        }
        self.smmu.check_sid(vsid).map_err(RequestError::BadVsid)
    }

    /// The host attached `vsid` as `dev_id`: the model installs its
    /// configuration; the reply carries the id.
    fn attached(&mut self, reply: Message, vsid: u32, dev_id: u32) -> Vec<u8> {
        let (smmu, mut ctx) = self.model();
        smmu.device_attached(vsid, &mut ctx);
        reply
            .push(&VsmmuDevice {
                argsz: VsmmuDevice::SIZE,
                flags: 0,
                vsid,
                reserved: dev_id,
            })
            .finish()
    }
}
