//! DMA_MAP and DMA_UNMAP: guest RAM the client shares, mapped for the
//! model and for device DMA through the host.

use std::os::fd::OwnedFd;

use vsmmu_protocol::vfio_user::{self as vu, DmaMap, DmaUnmap, Message};

use super::{Device, RequestError};

impl Device {
    /// DMA_MAP: maps the memfd, then the host maps the range for device
    /// DMA; if the host refuses, the mapping is undone.
    pub(super) fn dma_map(
        &mut self,
        reply: Message,
        m: &DmaMap,
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, RequestError> {
        let fd = fds.into_iter().next().ok_or(RequestError::DmaMapNoFd)?;
        if m.flags & !(vu::DMA_MAP_READ | vu::DMA_MAP_WRITE) != 0 {
            return Err(RequestError::DmaMapFlags(m.flags));
        }
        let writable = m.flags & vu::DMA_MAP_WRITE != 0;
        let host_addr = self.mem.map(fd, m.offset, m.addr, m.size, writable)?;
        if let Err(e) = self.host.map_guest_ram(m.addr, m.size, host_addr) {
            let _ = self.mem.unmap(m.addr, m.size);
            return Err(e.into());
        }
        let (smmu, mut ctx) = self.model();
        smmu.memory_changed(&mut ctx);
        Ok(reply.finish())
    }

    /// DMA_UNMAP: the range must be one mapping; a host that fails to
    /// unmap is logged (the guest RAM is gone either way).
    pub(super) fn dma_unmap(
        &mut self,
        reply: Message,
        u: &DmaUnmap,
    ) -> Result<Vec<u8>, RequestError> {
        if u.flags != 0 {
            return Err(RequestError::DmaUnmapFlags(u.flags));
        }
        self.mem.unmap(u.addr, u.size)?;
        if let Err(e) = self.host.unmap_guest_ram(u.addr, u.size) {
            log::warn!("host unmap of {:#x}+{:#x}: {e}", u.addr, u.size);
        }
        Ok(reply.push(u).finish())
    }
}
