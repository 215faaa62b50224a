//! Guest RAM as the client shares it: DMA_MAP'd file descriptors, mapped
//! with `vm-memory`. The SMMU model reads its queues and tables and writes
//! events only through [`GuestRam`].

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

/// DMA_MAP page size: mappings must be aligned to it.
pub(crate) const PAGE_SIZE: u64 = 4096;

/// Why a DMA mapping or a guest access failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// Zero size, unaligned, or wrapping range.
    #[error("invalid range {gpa:#x}+{size:#x}: {why}")]
    InvalidRange {
        /// Guest address.
        gpa: u64,
        /// Size.
        size: u64,
        /// Reason.
        why: &'static str,
    },
    /// Overlaps an existing mapping.
    #[error("{gpa:#x}+{size:#x} overlaps an existing mapping")]
    Overlap {
        /// Guest address.
        gpa: u64,
        /// Size.
        size: u64,
    },
    /// No mapping matches exactly.
    #[error("no mapping at {gpa:#x}+{size:#x}")]
    NoMapping {
        /// Guest address.
        gpa: u64,
        /// Size.
        size: u64,
    },
    /// Too many mappings.
    #[error("mapping limit of {0} reached")]
    TooMany(usize),
    /// The fd cannot back the mapping.
    #[error("cannot map fd: {0}")]
    Map(String),
    /// A guest access outside mapped RAM or against its permissions.
    #[error("guest access at {gpa:#x}+{len:#x} faults")]
    Fault {
        /// Guest address.
        gpa: u64,
        /// Length.
        len: usize,
    },
}

#[derive(Debug)]
struct Mapping {
    gpa: u64,
    size: u64,
    writable: bool,
    region: Arc<GuestRegionMmap>,
}

/// The DMA-mapped guest RAM of the current client.
#[derive(Debug)]
pub struct GuestRam {
    maps: Vec<Mapping>,
    mem: Option<GuestMemoryMmap>,
    max_maps: usize,
}

impl GuestRam {
    /// An empty guest RAM that accepts at most `max_maps` mappings.
    pub fn new(max_maps: usize) -> Self {
        GuestRam {
            maps: Vec::new(),
            mem: None,
            max_maps,
        }
    }

    /// Maps `size` bytes of `fd` from `offset` at guest address `gpa`.
    /// Returns the host address of the mapping.
    pub fn map(
        &mut self,
        fd: OwnedFd,
        offset: u64,
        gpa: u64,
        size: u64,
        writable: bool,
    ) -> Result<usize, MemError> {
        let bad = |why| MemError::InvalidRange { gpa, size, why };
        if size == 0 {
            return Err(bad("zero size"));
        }
        if gpa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 || offset % PAGE_SIZE != 0 {
            return Err(bad("not 4 KiB aligned"));
        }
        let end = gpa.checked_add(size).ok_or(bad("wraps"))?;
        offset.checked_add(size).ok_or(bad("file offset wraps"))?;
        if self
            .maps
            .iter()
            .any(|m| gpa < m.gpa + m.size && m.gpa < end)
        {
            return Err(MemError::Overlap { gpa, size });
        }
        if self.maps.len() >= self.max_maps {
            return Err(MemError::TooMany(self.max_maps));
        }
        let file = File::from(fd);
        // A mapping past the end of the file would SIGBUS on access.
        let meta = file.metadata().map_err(|e| MemError::Map(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(MemError::Map("fd is not a regular file or memfd".into()));
        }
        if offset + size > meta.len() {
            return Err(MemError::Map(format!(
                "offset {offset:#x} + size {size:#x} exceeds the file size {:#x}",
                meta.len()
            )));
        }
        let len = usize::try_from(size).map_err(|_| bad("too large"))?;
        let mmap = MmapRegion::from_file(FileOffset::new(file, offset), len)
            .map_err(|e| MemError::Map(e.to_string()))?;
        let region = GuestRegionMmap::new(mmap, GuestAddress(gpa))
            .ok_or_else(|| MemError::Map("region does not fit the address space".into()))?;
        let host_addr = region.as_ptr() as usize;
        let region = Arc::new(region);
        let mem = match &self.mem {
            Some(m) => m.insert_region(region.clone()),
            None => GuestMemoryMmap::from_arc_regions(vec![region.clone()]),
        }
        .map_err(|e| MemError::Map(e.to_string()))?;
        self.mem = Some(mem);
        self.maps.push(Mapping {
            gpa,
            size,
            writable,
            region,
        });
        Ok(host_addr)
    }

    /// Removes the mapping that matches `[gpa, gpa + size)` exactly.
    pub fn unmap(&mut self, gpa: u64, size: u64) -> Result<(), MemError> {
        let i = self
            .maps
            .iter()
            .position(|m| m.gpa == gpa && m.size == size)
            .ok_or(MemError::NoMapping { gpa, size })?;
        self.maps.remove(i);
        self.rebuild();
        Ok(())
    }

    /// Drops every mapping (the client left).
    pub fn clear(&mut self) -> Vec<(u64, u64)> {
        let gone = self.maps.iter().map(|m| (m.gpa, m.size)).collect();
        self.maps.clear();
        self.mem = None;
        gone
    }

    /// Current mappings as (gpa, size).
    pub fn mappings(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.maps.iter().map(|m| (m.gpa, m.size))
    }

    fn rebuild(&mut self) {
        let regions: Vec<_> = self.maps.iter().map(|m| m.region.clone()).collect();
        let mut sorted = regions;
        sorted.sort_by_key(|r| r.start_addr());
        self.mem = GuestMemoryMmap::from_arc_regions(sorted).ok();
    }

    /// True when `[gpa, gpa + len)` lies in mapped RAM (and is writable if asked).
    pub fn check(&self, gpa: u64, len: usize, write: bool) -> bool {
        let Some(end) = gpa.checked_add(len as u64) else {
            return false;
        };
        let mut at = gpa;
        while at < end {
            let Some(m) = self
                .maps
                .iter()
                .find(|m| m.gpa <= at && at < m.gpa + m.size)
            else {
                return false;
            };
            if write && !m.writable {
                return false;
            }
            at = m.gpa + m.size;
        }
        true
    }

    /// Reads guest memory.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let fault = MemError::Fault {
            gpa,
            len: buf.len(),
        };
        if !self.check(gpa, buf.len(), false) {
            return Err(fault);
        }
        let mem = self.mem.as_ref().ok_or(fault.clone())?;
        mem.read_slice(buf, GuestAddress(gpa)).map_err(|_| fault)
    }

    /// Writes guest memory.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), MemError> {
        let fault = MemError::Fault {
            gpa,
            len: buf.len(),
        };
        if !self.check(gpa, buf.len(), true) {
            return Err(fault);
        }
        let mem = self.mem.as_ref().ok_or(fault.clone())?;
        mem.write_slice(buf, GuestAddress(gpa)).map_err(|_| fault)
    }

    /// Reads `N` little-endian u64 words.
    pub fn read_u64s<const N: usize>(&self, gpa: u64) -> Result<[u64; N], MemError> {
        let mut stack = [0u8; 64];
        let mut heap = Vec::new();
        let bytes: &mut [u8] = if N <= 8 {
            &mut stack[..N * 8]
        } else {
            heap.resize(N * 8, 0);
            &mut heap
        };
        self.read(gpa, bytes)?;
        let mut out = [0u64; N];
        for (w, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            *w = u64::from_le_bytes(b);
        }
        Ok(out)
    }

    /// Writes little-endian u64 words.
    pub fn write_u64s(&self, gpa: u64, words: &[u64]) -> Result<(), MemError> {
        // Event records and STEs: no allocation on the event path.
        let mut stack = [0u8; 64];
        let mut heap = Vec::new();
        let bytes: &mut [u8] = if words.len() <= 8 {
            &mut stack[..words.len() * 8]
        } else {
            heap.resize(words.len() * 8, 0);
            &mut heap
        };
        for (c, w) in bytes.chunks_exact_mut(8).zip(words) {
            c.copy_from_slice(&w.to_le_bytes());
        }
        self.write(gpa, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsmmu_testutil::memfd;

    #[test]
    fn map_read_write_unmap() {
        let mut ram = GuestRam::new(4);
        ram.map(memfd(0x2000), 0, 0x4000_0000, 0x2000, true)
            .unwrap();
        ram.write_u64s(0x4000_0ff8, &[1, 2]).unwrap();
        assert_eq!(ram.read_u64s::<2>(0x4000_0ff8).unwrap(), [1, 2]);
        assert!(ram.read_u64s::<1>(0x4000_2000).is_err());
        assert_eq!(
            ram.map(memfd(0x1000), 0, 0x4000_1000, 0x1000, true),
            Err(MemError::Overlap {
                gpa: 0x4000_1000,
                size: 0x1000
            })
        );
        assert!(ram.unmap(0x4000_0000, 0x1000).is_err());
        ram.unmap(0x4000_0000, 0x2000).unwrap();
        assert!(ram.read_u64s::<1>(0x4000_0000).is_err());
    }

    #[test]
    fn rejects_bad_maps() {
        let mut ram = GuestRam::new(1);
        assert!(matches!(
            ram.map(memfd(0x1000), 0, 0, 0, true),
            Err(MemError::InvalidRange { .. })
        ));
        assert!(matches!(
            ram.map(memfd(0x1000), 0, 0x10, 0x1000, true),
            Err(MemError::InvalidRange { .. })
        ));
        assert!(matches!(
            ram.map(memfd(0x1000), 0, 0, 0x2000, true),
            Err(MemError::Map(_))
        ));
        assert!(matches!(
            ram.map(memfd(0x1000), 0, u64::MAX - 0xfff, 0x1000, true),
            Err(MemError::InvalidRange { .. })
        ));
        ram.map(memfd(0x1000), 0, 0, 0x1000, false).unwrap();
        assert!(ram.write_u64s(0, &[1]).is_err());
        assert_eq!(
            ram.map(memfd(0x1000), 0, 0x1000, 0x1000, true),
            Err(MemError::TooMany(1))
        );
    }
}
