//! VSMMU_GET_STATS: the server's counters as JSON.

use std::ffi::{c_char, c_int};

use vsmmu_client::client::Client;

use super::client;
use super::error::{guard_int, Failure};

/// VSMMU_GET_STATS: writes the server's counters as a JSON object into
/// `buf` (as the server sent it, counters this library does not know
/// included), like `snprintf`: at most `len - 1` bytes and a terminating NUL
/// (nothing if `len` is 0, when `buf` may be NULL).
///
/// Returns the length of the whole JSON text (without the NUL), so a result
/// `>= len` means it was truncated; or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `buf` is NULL (only
/// with `len` 0) or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_get_stats(c: *mut Client, buf: *mut c_char, len: usize) -> c_int {
    const WHAT: &str = "vsmmu_get_stats";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        if buf.is_null() && len != 0 {
            return Err(Failure::invalid(format!(
                "{WHAT}: buf is NULL with len {len}"
            )));
        }
        let text = c.stats_json().map_err(|e| Failure::client(WHAT, &e))?;
        let needed = c_int::try_from(text.len())
            .map_err(|_| Failure::new(libc::EOVERFLOW, format!("{WHAT}: {} bytes", text.len())))?;
        if len > 0 {
            let n = text.len().min(len - 1);
            // SAFETY: `buf` points to `len` writable bytes per the contract,
            // `n < len`, and `text` is a separate Rust allocation.
            unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n) };
            // SAFETY: `n < len`, inside the caller's buffer.
            unsafe { buf.add(n).write(0) };
        }
        Ok(needed)
    })
}
