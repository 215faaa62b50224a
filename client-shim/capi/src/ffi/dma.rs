//! DMA_MAP and DMA_UNMAP of guest RAM.

use std::ffi::c_int;

use vsmmu_client::client::Client;

use super::error::{guard_int, Failure};
use super::{borrow_fd, client};

/// DMA_MAP: makes `size` bytes of the file `fd` (a memfd of guest RAM),
/// starting at file offset `offset`, guest RAM at guest physical address
/// `iova`, readable and writable by the SMMU model. `fd` is borrowed: the
/// server keeps its own reference, the caller keeps `fd`.
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `fd` is -1 or an
/// open descriptor.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_dma_map(
    c: *mut Client,
    fd: c_int,
    offset: u64,
    iova: u64,
    size: u64,
) -> c_int {
    const WHAT: &str = "vsmmu_dma_map";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        // SAFETY: `fd` is open for this call per the contract.
        let fd = unsafe { borrow_fd(fd, WHAT, "fd") }?;
        c.dma_map(fd, offset, iova, size)
            .map_err(|e| Failure::client(&format!("{WHAT}: [{iova:#x}, +{size:#x})"), &e))?;
        Ok(0)
    })
}

/// DMA_UNMAP of an exact earlier `vsmmu_dma_map` (same `iova` and `size`).
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_dma_unmap(c: *mut Client, iova: u64, size: u64) -> c_int {
    const WHAT: &str = "vsmmu_dma_unmap";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.dma_unmap(iova, size)
            .map_err(|e| Failure::client(&format!("{WHAT}: [{iova:#x}, +{size:#x})"), &e))?;
        Ok(0)
    })
}
