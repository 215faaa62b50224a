//! The SMMUv3 register region: its info, reads and writes (posted or
//! acknowledged, one or many).

use vsmmu_protocol::vfio_user::{
    Command, RegionAccess, RegionInfo, WriteMultiEntry, WriteMultiHeader,
};
use zerocopy::IntoBytes;

use super::{parse, Client, ClientError, Result};

impl Client {
    /// DEVICE_GET_REGION_INFO.
    pub fn region_info(&mut self, index: u32) -> Result<RegionInfo> {
        let req = RegionInfo {
            argsz: RegionInfo::SIZE,
            index,
            ..Default::default()
        };
        let r = self.request(Command::DeviceGetRegionInfo, req.as_bytes(), &[])?;
        parse(&r)
    }

    /// REGION_READ of 4 or 8 bytes of the register region.
    pub fn mmio_read(&mut self, offset: u64, size: u32) -> Result<u64> {
        let a = RegionAccess {
            offset,
            region: 0,
            count: size,
        };
        let r = self.request(Command::RegionRead, a.as_bytes(), &[])?;
        let data = r.get(16..).unwrap_or(&[]);
        if data.len() != size as usize {
            return Err(ClientError::Protocol(format!(
                "read returned {} bytes",
                data.len()
            )));
        }
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        Ok(u64::from_le_bytes(b))
    }

    /// 32-bit register read.
    pub fn read32(&mut self, offset: u64) -> Result<u32> {
        Ok(self.mmio_read(offset, 4)? as u32)
    }

    /// 64-bit register read.
    pub fn read64(&mut self, offset: u64) -> Result<u64> {
        self.mmio_read(offset, 8)
    }

    /// REGION_WRITE of 4 or 8 bytes; `posted` sends it without waiting for
    /// a reply (doorbells).
    pub fn mmio_write(&mut self, offset: u64, size: u32, value: u64, posted: bool) -> Result<()> {
        let a = RegionAccess {
            offset,
            region: 0,
            count: size,
        };
        let mut payload = a.as_bytes().to_vec();
        payload.extend_from_slice(&value.to_le_bytes()[..size as usize]);
        if posted {
            self.post(Command::RegionWrite, &payload)
        } else {
            self.request(Command::RegionWrite, &payload, &[])
                .map(|_| ())
        }
    }

    /// 32-bit register write, acknowledged.
    pub fn write32(&mut self, offset: u64, value: u32) -> Result<()> {
        self.mmio_write(offset, 4, value.into(), false)
    }

    /// 64-bit register write, acknowledged.
    pub fn write64(&mut self, offset: u64, value: u64) -> Result<()> {
        self.mmio_write(offset, 8, value, false)
    }

    /// REGION_WRITE_MULTI of (offset, size, value) writes, acknowledged.
    pub fn write_multi(&mut self, writes: &[(u64, u32, u64)]) -> Result<u64> {
        let mut payload = WriteMultiHeader {
            wr_cnt: writes.len() as u64,
        }
        .as_bytes()
        .to_vec();
        for &(offset, count, value) in writes {
            let e = WriteMultiEntry {
                offset,
                region: 0,
                count,
                data: value.to_le_bytes(),
            };
            payload.extend_from_slice(e.as_bytes());
        }
        let r = self.request(Command::RegionWriteMulti, &payload, &[])?;
        Ok(parse::<WriteMultiHeader>(&r)?.wr_cnt)
    }
}
