//! VSMMU_ATTACH_DEVICE and VSMMU_DETACH_DEVICE: the devices behind the
//! virtual SMMU.

use std::os::fd::BorrowedFd;

use vsmmu_protocol::vfio_user::{Command, VsmmuBoundDevice, VsmmuDevice, VSMMU_DEVICE_VMM_BOUND};
use zerocopy::IntoBytes;

use super::{parse, Client, Result};

impl Client {
    /// VSMMU_ATTACH_DEVICE: returns the host device id.
    pub fn attach_device(&mut self, vsid: u32, device_fd: Option<BorrowedFd<'_>>) -> Result<u32> {
        let d = VsmmuDevice {
            argsz: VsmmuDevice::SIZE,
            flags: 0,
            vsid,
            reserved: 0,
        };
        let fds: Vec<BorrowedFd<'_>> = device_fd.into_iter().collect();
        let r = self.request(Command::VsmmuAttachDevice, d.as_bytes(), &fds)?;
        Ok(parse::<VsmmuDevice>(&r)?.reserved)
    }

    /// VSMMU_ATTACH_DEVICE of a device the VMM bound to its own iommufd
    /// (`VSMMU_DEVICE_VMM_BOUND`): vsmmud allocates the vIOMMU in that
    /// iommufd, on the VMM's nesting parent `parent_hwpt_id` (which the
    /// device must be attached to). `cdev` is the bound open file of the
    /// device's VFIO cdev, `iommufd` the VMM's iommufd, `dev_id` the id the
    /// bind returned. Returns `dev_id`.
    pub fn attach_vmm_device(
        &mut self,
        vsid: u32,
        cdev: BorrowedFd<'_>,
        iommufd: BorrowedFd<'_>,
        dev_id: u32,
        parent_hwpt_id: u32,
    ) -> Result<u32> {
        let d = VsmmuBoundDevice {
            argsz: VsmmuBoundDevice::SIZE,
            flags: VSMMU_DEVICE_VMM_BOUND,
            vsid,
            reserved: 0,
            dev_id,
            parent_hwpt_id,
        };
        let r = self.request(Command::VsmmuAttachDevice, d.as_bytes(), &[cdev, iommufd])?;
        Ok(parse::<VsmmuDevice>(&r)?.reserved)
    }

    /// VSMMU_DETACH_DEVICE.
    pub fn detach_device(&mut self, vsid: u32) -> Result<()> {
        let d = VsmmuDevice {
            argsz: VsmmuDevice::SIZE,
            flags: 0,
            vsid,
            reserved: 0,
        };
        self.request(Command::VsmmuDetachDevice, d.as_bytes(), &[])?;
        Ok(())
    }
}
