//! The device's shape and its one region, the SMMUv3 register file:
//! GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS, and the MMIO accesses
//! (REGION_READ, REGION_WRITE, REGION_WRITE_MULTI).

use vsmmu_protocol::vfio_user::{
    self as vu, DeviceInfo, Message, RegionAccess, RegionInfo, RegionIoFds, WriteMultiEntry,
    WriteMultiHeader,
};

use super::{Device, RequestError};
use crate::irq::NUM_IRQS;
use crate::smmu::REGION_SIZE;

impl Device {
    /// DEVICE_GET_INFO: a platform device with one region and an irq
    /// index per line.
    pub(super) fn device_info(&self, reply: Message) -> Vec<u8> {
        reply
            .push(&DeviceInfo {
                argsz: DeviceInfo::SIZE,
                flags: vu::VFIO_DEVICE_FLAGS_PLATFORM | vu::VFIO_DEVICE_FLAGS_RESET,
                num_regions: 1,
                num_irqs: NUM_IRQS as u32,
            })
            .finish()
    }

    /// DEVICE_GET_REGION_INFO: region 0, readable and writable, not
    /// mappable.
    pub(super) fn region_info(
        &self,
        reply: Message,
        r: &RegionInfo,
    ) -> Result<Vec<u8>, RequestError> {
        if r.index != 0 {
            return Err(RequestError::NoRegion(r.index));
        }
        Ok(reply
            .push(&RegionInfo {
                argsz: RegionInfo::SIZE,
                flags: vu::VFIO_REGION_INFO_FLAG_READ | vu::VFIO_REGION_INFO_FLAG_WRITE,
                index: 0,
                cap_offset: 0,
                size: REGION_SIZE,
                offset: 0,
            })
            .finish())
    }

    /// DEVICE_GET_REGION_IO_FDS: none.
    pub(super) fn region_io_fds(
        &self,
        reply: Message,
        r: &RegionIoFds,
    ) -> Result<Vec<u8>, RequestError> {
        if r.index != 0 {
            return Err(RequestError::NoRegion(r.index));
        }
        // No sub-region is served through ioeventfds.
        Ok(reply
            .push(&RegionIoFds {
                argsz: RegionIoFds::SIZE,
                flags: 0,
                index: 0,
                count: 0,
            })
            .finish())
    }

    /// REGION_READ: one register.
    pub(super) fn region_read(
        &mut self,
        reply: Message,
        a: &RegionAccess,
    ) -> Result<Vec<u8>, RequestError> {
        check_access(a)?;
        let (smmu, mut ctx) = self.model();
        let v = smmu.read(a.offset, a.count as usize, &mut ctx);
        let bytes = v.to_le_bytes();
        Ok(reply.push(a).bytes(&bytes[..a.count as usize]).finish())
    }

    /// REGION_WRITE: one register.
    pub(super) fn region_write(
        &mut self,
        reply: Message,
        access: &RegionAccess,
        data: &[u8],
    ) -> Result<Vec<u8>, RequestError> {
        check_access(access)?;
        self.write_register(access.offset, data);
        Ok(reply.push(access).finish())
    }

    /// REGION_WRITE_MULTI: all the writes or none.
    pub(super) fn region_write_multi(
        &mut self,
        reply: Message,
        entries: &[WriteMultiEntry],
    ) -> Result<Vec<u8>, RequestError> {
        // Validate all before applying any: a batch is all or nothing.
        for e in entries {
            check_access(&RegionAccess {
                offset: e.offset,
                region: e.region,
                count: e.count,
            })?;
        }
        for e in entries {
            self.write_register(e.offset, &e.data[..e.count as usize]);
        }
        Ok(reply
            .push(&WriteMultiHeader {
                wr_cnt: entries.len() as u64,
            })
            .finish())
    }

    /// Hands a checked write (4 or 8 bytes) to the model.
    fn write_register(&mut self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        let (smmu, mut ctx) = self.model();
        smmu.write(offset, data.len(), u64::from_le_bytes(b), &mut ctx);
    }
}

/// An access the register file serves: region 0, 4 or 8 bytes, aligned,
/// inside the region.
fn check_access(a: &RegionAccess) -> Result<(), RequestError> {
    if a.region != 0 {
        return Err(RequestError::NoRegion(a.region));
    }
    if a.count != 4 && a.count != 8 {
        return Err(RequestError::AccessSize {
            count: a.count,
            offset: a.offset,
        });
    }
    if a.offset % u64::from(a.count) != 0 {
        return Err(RequestError::Unaligned {
            count: a.count,
            offset: a.offset,
        });
    }
    if a.offset
        .checked_add(a.count.into())
        .is_none_or(|end| end > REGION_SIZE)
    {
        return Err(RequestError::OutsideRegion(a.offset));
    }
    Ok(())
}
