//! Register reads and writes of the SMMUv3 region.

use std::ffi::{c_int, c_uint};

use vsmmu_client::client::Client;

use super::client;
use super::error::{guard_int, Failure, FfiResult};

/// Register accesses the SMMUv3 region accepts: 32 and 64 bits.
fn check_access_size(size: c_uint, what: &str) -> FfiResult<u32> {
    match size {
        4 | 8 => Ok(size),
        _ => Err(Failure::invalid(format!(
            "{what}: access size {size} (must be 4 or 8)"
        ))),
    }
}

/// Reads a `size`-byte (4 or 8) register at `offset` in the SMMUv3 register
/// region (page 0 at 0x0, page 1 at 0x10000) into `*value`.
///
/// Returns 0 or a negative errno (`-EINVAL` for a NULL `value` or another
/// size).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `value` is NULL or
/// points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_mmio_read(
    c: *mut Client,
    offset: u64,
    size: c_uint,
    value: *mut u64,
) -> c_int {
    const WHAT: &str = "vsmmu_mmio_read";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let size = check_access_size(size, WHAT)?;
        if value.is_null() {
            return Err(Failure::invalid(format!("{WHAT}: value is NULL")));
        }
        let v = c
            .mmio_read(offset, size)
            .map_err(|e| Failure::client(&format!("{WHAT}: {offset:#x}/{size}"), &e))?;
        // SAFETY: non-NULL and writable per the contract.
        unsafe { value.write(v) };
        Ok(0)
    })
}

/// Writes the low `size` bytes (4 or 8) of `value` to the register at
/// `offset`. With `posted`, the write is sent without waiting for the
/// server (use it for the CMDQ_PROD and EVENTQ_CONS doorbells); a later
/// non-posted call is ordered after it.
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_mmio_write(
    c: *mut Client,
    offset: u64,
    size: c_uint,
    value: u64,
    posted: bool,
) -> c_int {
    const WHAT: &str = "vsmmu_mmio_write";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let size = check_access_size(size, WHAT)?;
        c.mmio_write(offset, size, value, posted)
            .map_err(|e| Failure::client(&format!("{WHAT}: {offset:#x}/{size}"), &e))?;
        Ok(0)
    })
}
