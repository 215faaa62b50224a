//! Guest RAM as the VMM owns it: a sealed memfd mapped into this process
//! through `vm-memory` (as `vsmmud` maps it, `server/src/memory.rs`),
//! shared with `vsmmud` through DMA_MAP.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use vm_memory::mmap::MmapRegionError;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

/// A memfd-backed guest RAM region at guest address `base`.
#[derive(Debug)]
pub struct GuestRam {
    /// One region, the shared mapping of the file at `base`.
    mem: GuestMemoryMmap,
    base: u64,
    size: usize,
}

impl GuestRam {
    /// Creates `size` bytes (a multiple of 4 KiB) of zeroed RAM at `base`.
    pub fn new(base: u64, size: usize) -> std::io::Result<Self> {
        if size == 0 || size % 4096 != 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let fd = memfd_create(
            "vsmmu-guest-ram",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&fd, size as i64)?;
        // The server maps this file: it must never shrink under it.
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Self::from_fd(fd, base, size)
    }

    /// Maps an existing RAM file (e.g. `/proc/<pid>/fd/<n>` of another
    /// process's memfd) of `size` bytes at guest address `base`.
    pub fn open(path: &std::path::Path, base: u64, size: usize) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Self::from_fd(OwnedFd::from(file), base, size)
    }

    /// Maps `size` bytes of `fd` shared, read-write, at guest address `base`.
    fn from_fd(fd: OwnedFd, base: u64, size: usize) -> std::io::Result<Self> {
        let invalid = || std::io::Error::from_raw_os_error(libc::EINVAL);
        if size == 0 {
            return Err(invalid());
        }
        let map =
            MmapRegion::from_file(FileOffset::new(File::from(fd), 0), size).map_err(
                |e| match e {
                    MmapRegionError::Mmap(e) => e,
                    other => std::io::Error::other(other.to_string()),
                },
            )?;
        let region = GuestRegionMmap::new(map, GuestAddress(base)).ok_or_else(invalid)?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(GuestRam { mem, base, size })
    }

    /// The one region of `mem`.
    fn region(&self) -> &GuestRegionMmap {
        self.mem
            .iter()
            .next()
            .expect("GuestRam maps exactly one region")
    }

    /// Where guest RAM is mapped in this process: the `user_va` of a VMM's
    /// own `IOMMU_IOAS_MAP`, valid while `self` lives.
    pub fn host_addr(&self) -> u64 {
        self.region().as_ptr() as u64
    }

    /// The memfd, for DMA_MAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.region()
            .file_offset()
            .expect("GuestRam maps a file")
            .file()
            .as_fd()
    }

    /// Guest address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether `gpa..gpa + len` lies inside the region.
    fn contains(&self, gpa: u64, len: usize) -> bool {
        gpa.checked_sub(self.base)
            .and_then(|off| (off as usize).checked_add(len))
            .is_some_and(|end| end <= self.size)
    }

    /// Copies guest memory out (volatile: the server may write
    /// concurrently). Panics on an address outside the region (a bug in the
    /// caller, which owns the layout).
    pub fn read(&self, gpa: u64, buf: &mut [u8]) {
        if !self.contains(gpa, buf.len()) {
            panic!("guest read {gpa:#x}+{} outside RAM", buf.len());
        }
        self.mem
            .read_slice(buf, GuestAddress(gpa))
            .expect("a read inside the region");
    }

    /// Copies into guest memory (volatile). Panics as [`GuestRam::read`].
    pub fn write(&self, gpa: u64, buf: &[u8]) {
        if !self.contains(gpa, buf.len()) {
            panic!("guest write {gpa:#x}+{} outside RAM", buf.len());
        }
        self.mem
            .write_slice(buf, GuestAddress(gpa))
            .expect("a write inside the region");
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, gpa: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b);
        u64::from_le_bytes(b)
    }

    /// Reads a little-endian u32.
    pub fn read_u32(&self, gpa: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b);
        u32::from_le_bytes(b)
    }

    /// Writes little-endian u64 words.
    pub fn write_u64s(&self, gpa: u64, words: &[u64]) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(gpa, &bytes);
    }

    /// Zeroes a range.
    pub fn zero(&self, gpa: u64, len: usize) {
        self.write(gpa, &vec![0; len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_wrote_and_shares_the_file() {
        let ram = GuestRam::new(0x4000_0000, 2 * 4096).unwrap();
        assert_eq!((ram.base(), ram.size()), (0x4000_0000, 8192));
        assert_eq!(ram.read_u64(0x4000_1ff8), 0);
        ram.write_u64s(0x4000_0ff8, &[0x1122_3344_5566_7788, 0x99aa_bbcc_ddee_ff00]);
        assert_eq!(ram.read_u64(0x4000_0ff8), 0x1122_3344_5566_7788);
        assert_eq!(ram.read_u32(0x4000_1000), 0xddee_ff00);
        // The memfd holds the same bytes (what vsmmud maps).
        let mut b = [0u8; 4];
        nix::sys::uio::pread(ram.fd(), &mut b, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xddee_ff00);
        // SAFETY: host_addr is the live mapping of the 8 KiB region.
        let mapped = unsafe {
            (ram.host_addr() as *const u32)
                .add(0x1000 / 4)
                .read_volatile()
        };
        assert_eq!(mapped, 0xddee_ff00);
        ram.zero(0x4000_0ff8, 16);
        assert_eq!(ram.read_u64(0x4000_1000), 0);
        assert!(GuestRam::new(0, 100).is_err());
        assert!(GuestRam::new(0, 0).is_err());
    }

    #[test]
    #[should_panic(expected = "guest read 0x40002000+4 outside RAM")]
    fn a_read_past_the_end_panics() {
        let ram = GuestRam::new(0x4000_0000, 2 * 4096).unwrap();
        ram.read_u32(0x4000_2000);
    }
}
