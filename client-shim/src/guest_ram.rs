//! Guest RAM as the VMM owns it: a sealed memfd mapped into this process,
//! shared with `vsmmud` through DMA_MAP.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A memfd-backed guest RAM region at guest address `base`.
#[derive(Debug)]
pub struct GuestRam {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    base: u64,
    size: usize,
}

// SAFETY: the mapping is plain shared memory; accesses go through volatile
// copies and the struct owns it for its whole lifetime.
unsafe impl Send for GuestRam {}

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

    fn from_fd(fd: OwnedFd, base: u64, size: usize) -> std::io::Result<Self> {
        let len = std::num::NonZeroUsize::new(size)
            .ok_or(std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh shared mapping of the file, `size` bytes long, not
        // aliased by any Rust reference.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(GuestRam {
            fd,
            ptr: ptr.cast(),
            base,
            size,
        })
    }

    /// Where guest RAM is mapped in this process: the `user_va` of a VMM's
    /// own `IOMMU_IOAS_MAP`, valid while `self` lives.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The memfd, for DMA_MAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Guest address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    fn offset(&self, gpa: u64, len: usize) -> Option<usize> {
        let off = gpa.checked_sub(self.base)? as usize;
        (off.checked_add(len)? <= self.size).then_some(off)
    }

    /// Copies guest memory out. Panics on an address outside the region
    /// (a bug in the caller, which owns the layout).
    pub fn read(&self, gpa: u64, buf: &mut [u8]) {
        let off = self
            .offset(gpa, buf.len())
            .unwrap_or_else(|| panic!("guest read {gpa:#x}+{} outside RAM", buf.len()));
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `off + i` is inside the mapping (checked above); the
            // server may write concurrently, hence volatile.
            *b = unsafe { self.ptr.as_ptr().add(off + i).read_volatile() };
        }
    }

    /// Copies into guest memory.
    pub fn write(&self, gpa: u64, buf: &[u8]) {
        let off = self
            .offset(gpa, buf.len())
            .unwrap_or_else(|| panic!("guest write {gpa:#x}+{} outside RAM", buf.len()));
        for (i, b) in buf.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { self.ptr.as_ptr().add(off + i).write_volatile(*b) };
        }
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

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this struct created and owns.
        let _ = unsafe { munmap(self.ptr.cast(), self.size) };
    }
}
