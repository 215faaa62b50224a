//! The IOTLB and IOMMU notifiers: VSMMU_NOTIFY_SETUP, the invalidation
//! records handed to a notify handler, draining them, the cache's counters.

use std::ffi::{c_int, c_uint, c_void};

use vsmmu_client::client::Client;
use vsmmu_protocol::notify::Record;

use super::client;
use super::error::{guard_int, Failure};
// Named only by the doc comments.
#[cfg(doc)]
use super::translate::vsmmu_translate;

/// `vsmmu_invalidation::kind`: every translation.
pub const VSMMU_INVALIDATE_ALL: u32 = 1;
/// `vsmmu_invalidation::kind`: StreamIDs `[sid, sid + count)`.
pub const VSMMU_INVALIDATE_STREAMS: u32 = 2;
/// `vsmmu_invalidation::kind`: addresses `[addr, addr + size)` of every
/// StreamID.
pub const VSMMU_INVALIDATE_ADDRESSES: u32 = 3;

/// One invalidation handed to a notify handler ([`vsmmu_notify_set_handler`]).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct vsmmu_invalidation {
    /// `VSMMU_INVALIDATE_*` (an unknown kind means everything).
    pub kind: u32,
    /// First StreamID (STREAMS).
    pub sid: u32,
    /// Number of StreamIDs (STREAMS).
    pub count: u32,
    /// Zero.
    pub reserved: u32,
    /// First address (ADDRESSES).
    pub addr: u64,
    /// Bytes, at least 1 (ADDRESSES).
    pub size: u64,
}

/// A notify handler: called with the handler's `opaque` and one record.
#[allow(non_camel_case_types)]
pub type vsmmu_notify_fn =
    Option<unsafe extern "C" fn(opaque: *mut c_void, rec: *const vsmmu_invalidation)>;

/// VSMMU_NOTIFY_SETUP: shares an invalidation ring of `2^log2_entries`
/// records (4 to 16) with vsmmud; from now on [`vsmmu_translate`] answers
/// from a cache of translations when it can, and never with one the guest
/// has invalidated and synced.
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_iotlb_enable(c: *mut Client, log2_entries: c_uint) -> c_int {
    const WHAT: &str = "vsmmu_iotlb_enable";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.enable_iotlb(log2_entries)
            .map_err(|e| Failure::client(WHAT, &e))?;
        Ok(0)
    })
}

/// Calls `handler(opaque, rec)` with every invalidation applied from now on
/// (NULL: none). With a handler, vsmmud completes each CMD_SYNC only after
/// the records before it went through it: watch [`vsmmu_notify_fd`] and call
/// [`vsmmu_notify_drain`] when it is readable. The handler runs only inside
/// `vsmmu_notify_drain` (so in the thread the VMM drains from) and must not
/// call the library.
///
/// Returns 0, or -EINVAL before [`vsmmu_iotlb_enable`].
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `handler` is NULL
/// or callable with `opaque` from any thread that uses `c`, until replaced
/// or the handle is closed.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_notify_set_handler(
    c: *mut Client,
    handler: vsmmu_notify_fn,
    opaque: *mut c_void,
) -> c_int {
    const WHAT: &str = "vsmmu_notify_set_handler";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        if c.notify_fd().is_none() {
            return Err(Failure::invalid(format!(
                "{WHAT}: call vsmmu_iotlb_enable first"
            )));
        }
        let cb = handler.map(|f| {
            let opaque = Opaque(opaque);
            Box::new(move |r: &Record| {
                let rec = vsmmu_invalidation {
                    kind: r.kind,
                    sid: r.sid,
                    count: r.count,
                    reserved: 0,
                    addr: r.addr,
                    size: r.size,
                };
                // SAFETY: the caller promised `f` is callable with `opaque`
                // while installed; `rec` lives across the call.
                unsafe { f(opaque.get(), &rec) }
            }) as vsmmu_client::client::NotifyHandler
        });
        c.set_notify_handler(cb);
        Ok(0)
    })
}

/// The handler's `opaque` pointer, moved into the handler closure.
struct Opaque(*mut c_void);

impl Opaque {
    /// Taking the pointer through `&self` makes the closure capture the
    /// whole `Opaque` (and so its `Send`), not the raw field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

// SAFETY: the pointer is only handed back to the C handler, whose caller
// promised (vsmmu_notify_set_handler's contract) it may be used from any
// thread that uses the client.
unsafe impl Send for Opaque {}

/// The eventfd vsmmud signals when a CMD_SYNC waits for
/// [`vsmmu_notify_drain`]. Owned by the library: poll it, do not read or
/// close it. Returns -EINVAL before [`vsmmu_iotlb_enable`].
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_notify_fd(c: *mut Client) -> c_int {
    const WHAT: &str = "vsmmu_notify_fd";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.notify_fd()
            .ok_or_else(|| Failure::invalid(format!("{WHAT}: call vsmmu_iotlb_enable first")))
    })
}

/// Applies the invalidations vsmmud published (the cache, then the
/// handler) and acknowledges them, so that a waiting CMD_SYNC completes.
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_notify_drain(c: *mut Client) -> c_int {
    const WHAT: &str = "vsmmu_notify_drain";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.notify_drain();
        Ok(0)
    })
}

/// The IOTLB's hit and miss counts (each pointer NULL or written).
///
/// Returns 0, or -EINVAL before [`vsmmu_iotlb_enable`].
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `hits` and `misses`
/// are NULL or point to writable `uint64_t`s.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_iotlb_stats(
    c: *mut Client,
    hits: *mut u64,
    misses: *mut u64,
) -> c_int {
    const WHAT: &str = "vsmmu_iotlb_stats";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let s = c
            .iotlb_stats()
            .ok_or_else(|| Failure::invalid(format!("{WHAT}: call vsmmu_iotlb_enable first")))?;
        // SAFETY: each pointer is NULL or valid for a write, per the contract.
        unsafe {
            if let Some(p) = hits.as_mut() {
                *p = s.hits;
            }
            if let Some(p) = misses.as_mut() {
                *p = s.misses;
            }
        }
        Ok(0)
    })
}
