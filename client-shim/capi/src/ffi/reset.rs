//! DEVICE_RESET.

use std::ffi::c_int;

use vsmmu_client::client::Client;

use super::client;
use super::error::{guard_int, Failure};

/// DEVICE_RESET: the SMMU returns to its reset state (as on a system reset).
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_reset(c: *mut Client) -> c_int {
    const WHAT: &str = "vsmmu_reset";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.reset().map_err(|e| Failure::client(WHAT, &e))?;
        Ok(0)
    })
}
