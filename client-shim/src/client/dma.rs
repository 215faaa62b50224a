//! DMA_MAP and DMA_UNMAP of guest RAM.

use std::os::fd::BorrowedFd;

use vsmmu_protocol::vfio_user::{self as vu, Command, DmaMap, DmaUnmap};
use zerocopy::IntoBytes;

use super::{Client, Result};

impl Client {
    /// DMA_MAP of `size` bytes of `fd` (from `offset`) at guest address `iova`.
    pub fn dma_map(&mut self, fd: BorrowedFd<'_>, offset: u64, iova: u64, size: u64) -> Result<()> {
        let m = DmaMap {
            argsz: DmaMap::SIZE,
            flags: vu::DMA_MAP_READ | vu::DMA_MAP_WRITE,
            offset,
            addr: iova,
            size,
        };
        self.request(Command::DmaMap, m.as_bytes(), &[fd])?;
        Ok(())
    }

    /// DMA_UNMAP of an exact earlier mapping.
    pub fn dma_unmap(&mut self, iova: u64, size: u64) -> Result<()> {
        let u = DmaUnmap {
            argsz: DmaUnmap::SIZE,
            flags: 0,
            addr: iova,
            size,
        };
        self.request(Command::DmaUnmap, u.as_bytes(), &[])?;
        Ok(())
    }
}
