//! Migration: saving, loading and resuming the device's state.

use std::ffi::c_int;

use vsmmu_client::client::{Client, ClientError};
use vsmmu_protocol::vfio_user::mig_state;

use super::client;
use super::error::{guard_int, Failure};

/// MIG_DATA_READ / MIG_DATA_WRITE chunk size for migration through the C ABI.
const MIG_CHUNK: u32 = 64 * 1024;

/// Migration, source side: stops the device (it writes no more guest
/// memory and delivers no events; they wait in vsmmud) and reads its whole
/// state (vfio-user migration: RUNNING → STOP_COPY, MIG_DATA_READ until
/// empty, → STOP). On success `*data` and `*len` hold the state, to be
/// freed with `vsmmu_free_state()`; `*data` is NULL when `*len` is 0.
/// Returns 0 or a negative errno (the device state is then unspecified:
/// `vsmmu_resume()` or `vsmmu_reset()`).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `data` and `len`
/// point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_save_state(
    c: *mut Client,
    data: *mut *mut u8,
    len: *mut usize,
) -> c_int {
    const WHAT: &str = "vsmmu_save_state";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        if data.is_null() || len.is_null() {
            return Err(Failure::invalid(format!("{WHAT}: data or len is NULL")));
        }
        let fail = |e: ClientError| Failure::client(WHAT, &e);
        c.mig_set_state(mig_state::STOP_COPY).map_err(fail)?;
        let blob = c.mig_read_all(MIG_CHUNK).map_err(fail)?;
        c.mig_set_state(mig_state::STOP).map_err(fail)?;
        let blob = blob.into_boxed_slice();
        let n = blob.len();
        let ptr = if n == 0 {
            std::ptr::null_mut()
        } else {
            Box::into_raw(blob).cast::<u8>()
        };
        // SAFETY: `data` and `len` are writable per the contract.
        unsafe {
            data.write(ptr);
            len.write(n);
        }
        Ok(0)
    })
}

/// Frees a state returned by `vsmmu_save_state()` (NULL is ignored).
///
/// # Safety
/// `data` is NULL or came from `vsmmu_save_state()` with this `len`, and
/// is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_free_state(data: *mut u8, len: usize) {
    if data.is_null() {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(data, len);
    // SAFETY: per the contract `data`/`len` are a boxed slice leaked by
    // vsmmu_save_state(), freed exactly once here.
    drop(unsafe { Box::from_raw(slice) });
}

/// Migration, destination side: loads a state saved by `vsmmu_save_state()`
/// into a fresh device whose guest RAM is already DMA-mapped, and runs it
/// (→ RESUMING, MIG_DATA_WRITE, → RUNNING). A state vsmmud refuses (another
/// version, other ID registers) leaves the device as it was and returns a
/// negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `data` points to
/// `len` readable bytes (NULL only with `len` 0).
#[no_mangle]
pub unsafe extern "C" fn vsmmu_load_state(c: *mut Client, data: *const u8, len: usize) -> c_int {
    const WHAT: &str = "vsmmu_load_state";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        if data.is_null() && len != 0 {
            return Err(Failure::invalid(format!(
                "{WHAT}: data is NULL with len {len}"
            )));
        }
        let blob: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: `data` points to `len` readable bytes per the contract.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        let fail = |e: ClientError| Failure::client(WHAT, &e);
        c.mig_set_state(mig_state::RESUMING).map_err(fail)?;
        c.mig_write_all(blob, MIG_CHUNK as usize).map_err(fail)?;
        c.mig_set_state(mig_state::RUNNING).map_err(fail)?;
        Ok(0)
    })
}

/// Runs a device that `vsmmu_save_state()` stopped again (the source of a
/// migration that failed or was cancelled): → RUNNING; what waited is
/// delivered. Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_resume(c: *mut Client) -> c_int {
    const WHAT: &str = "vsmmu_resume";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.mig_set_state(mig_state::RUNNING)
            .map_err(|e| Failure::client(WHAT, &e))?;
        Ok(0)
    })
}
