//! What `IOMMU_GET_HW_INFO` must report for a device to join the vSMMU:
//! an SMMU able to back [`GUEST_PROFILE`], and for every device after the
//! first, the vIOMMU's SMMU.
//!
//! Apart from attach (`device.rs`) because these are checks of the host's
//! capabilities, with errors that say what the host lacks.

use nix::errno::Errno;

use super::{sys, IommufdHost, GUEST_PROFILE};
use crate::host::{HostError, HwInfo};

impl IommufdHost {
    /// GET_HW_INFO for a newly bound device: the profile must fit, and a
    /// second device must be behind the vIOMMU's SMMU.
    pub(super) fn check_device(&self, vsid: u32, dev_id: u32) -> Result<HwInfo, HostError> {
        let hw = sys::get_hw_info(self.ctx(), dev_id)
            .map_err(|e| HostError::new(e.op, e.errno, format!("vSID {vsid:#x}: {}", e.msg)))?;
        log::info!(
            "vSID {vsid:#x}: host SMMU IDR0 {:#010x} IDR1 {:#010x} IDR3 {:#010x} IDR5 {:#010x} \
             IIDR {:#x} AIDR {:#x}",
            hw.idr[0],
            hw.idr[1],
            hw.idr[3],
            hw.idr[5],
            hw.iidr,
            hw.aidr
        );
        crate::host::check_nesting_host(&hw, &GUEST_PROFILE).map_err(|why| {
            HostError::new(
                "IOMMU_GET_HW_INFO",
                Errno::EOPNOTSUPP as i32,
                format!("vSID {vsid:#x}: cannot back this vSMMU: {why}"),
            )
        })?;
        if self.viommu.is_some() {
            same_smmu(vsid, self.hw_info, &hw)?;
        }
        Ok(hw)
    }
}

/// A device for an existing vIOMMU must report the registers of the SMMU
/// the vIOMMU was made on (two identical SMMUs still differ at
/// `IOMMU_VDEVICE_ALLOC`, which [`other_smmu`] explains too).
pub(super) fn same_smmu(
    vsid: u32,
    viommu_hw: Option<HwInfo>,
    hw: &HwInfo,
) -> Result<(), HostError> {
    match viommu_hw {
        Some(first) if first != *hw => Err(other_smmu(
            vsid,
            &format!(
                "its SMMU reports IDR0 {:#010x} IDR1 {:#010x} IDR3 {:#010x} IDR5 {:#010x}, \
                 the vIOMMU's IDR0 {:#010x} IDR1 {:#010x} IDR3 {:#010x} IDR5 {:#010x}",
                hw.idr[0],
                hw.idr[1],
                hw.idr[3],
                hw.idr[5],
                first.idr[0],
                first.idr[1],
                first.idr[3],
                first.idr[5]
            ),
        )),
        _ => Ok(()),
    }
}

pub(super) fn other_smmu(vsid: u32, why: &str) -> HostError {
    HostError::new(
        "IOMMU_VDEVICE_ALLOC",
        Errno::EINVAL as i32,
        format!(
            "vSID {vsid:#x}: the device is behind another physical SMMU than the vIOMMU's \
             ({why}); one vsmmud serves the devices of one host SMMU: start one per SMMU"
        ),
    )
}
