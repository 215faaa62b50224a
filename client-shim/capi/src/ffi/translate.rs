//! VSMMU_TRANSLATE for the VMM's emulated devices, and its flags.

use std::ffi::{c_int, c_uint};

use vsmmu_client::client::Client;

use super::client;
use super::error::{guard_int, Failure};

/// VSMMU_TRANSLATE flag: translate for a write (else a read).
pub const VSMMU_TRANSLATE_WRITE: u32 = 1;
/// VSMMU_TRANSLATE flag: report a fault in the return value only, queue no event.
pub const VSMMU_TRANSLATE_NO_EVENT: u32 = 2;

/// VSMMU_TRANSLATE: translates `iova` for an access by a device the VMM
/// emulates behind the SMMU (StreamID `sid`, SubstreamID `ssid` or
/// `0xffffffff` for none), through the guest's stage-1 tables; stage 2 is
/// the identity. `flags`: `VSMMU_TRANSLATE_WRITE`, `VSMMU_TRANSLATE_NO_EVENT`.
///
/// Returns 0 with `*out_addr` (the translated address of `iova`),
/// `*out_mask` (granule size - 1) and `*out_perm` (bit 0 read, bit 1 write);
/// a positive SMMU event code (or 0x100 for a silent abort) when the access
/// faulted, the event being queued for the guest unless NO_EVENT; or a
/// negative errno. The sim host serves it; the iommufd host answers -ENOTSUP.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; each `out_*` is NULL
/// or points to writable storage of its type.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_translate(
    c: *mut Client,
    sid: u32,
    ssid: u32,
    iova: u64,
    flags: c_uint,
    out_addr: *mut u64,
    out_mask: *mut u64,
    out_perm: *mut c_uint,
) -> c_int {
    const WHAT: &str = "vsmmu_translate";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let ssid = (ssid != u32::MAX).then_some(ssid);
        let r = c
            .translate(sid, ssid, iova, flags)
            .map_err(|e| Failure::client(&format!("{WHAT}: sid {sid:#x} iova {iova:#x}"), &e))?;
        if r.status != 0 {
            return Ok(r.status as c_int);
        }
        // SAFETY: each pointer is NULL or valid for a write, per the contract.
        unsafe {
            if let Some(p) = out_addr.as_mut() {
                *p = r.addr;
            }
            if let Some(p) = out_mask.as_mut() {
                *p = r.mask;
            }
            if let Some(p) = out_perm.as_mut() {
                *p = r.perm;
            }
        }
        Ok(0)
    })
}
