//! The C ABI a VMM written in C links (a QEMU sysbus device): a thin layer
//! over [`Client`].
//!
//! Conventions, for every function:
//! - The handle is an opaque `struct vsmmu_client *` (a `Box<Client>`),
//!   made by [`vsmmu_connect`] or [`vsmmu_spawn`] and freed by
//!   [`vsmmu_close`]. One handle must not be used by two threads at once
//!   (QEMU serializes with the BQL); different handles are independent.
//! - `int` results are `0` (or a documented non-negative value) on success
//!   and a negative errno on failure: `-EINVAL` for a NULL pointer or a bad
//!   argument, the server's errno for an error reply, `-EPIPE` when the
//!   server is gone, `-EIO` if the shim itself failed unexpectedly.
//! - Every call records its outcome for the calling thread:
//!   [`vsmmu_last_error`] and [`vsmmu_last_errno`] describe the most recent
//!   failure (an empty string and 0 after a success).
//! - File descriptors passed in are borrowed: the VMM keeps and closes them.
//! - No Rust panic crosses the boundary: one is reported as `-EIO` (or
//!   NULL) with a message.
//!
//! One file per group of functions: `open.rs` (making a handle),
//! `error.rs` (the outcome of a call, `vsmmu_last_error`), `dma.rs`,
//! `mmio.rs`, `irq.rs`, `reset.rs`, `devices.rs`, `translate.rs`,
//! `notify.rs` (the IOTLB and IOMMU notifiers), `stats.rs`, `migration.rs`
//! and `connection.rs` (liveness, the socket, closing). This file borrows
//! the handle and the arguments.

// Declared in the header's order, one a group so that rustfmt keeps it:
// cbindgen emits the functions in the order it parses them, this file's
// items first, then each module's.
mod open;

mod error;

mod dma;

mod mmio;

mod irq;

mod reset;

mod devices;

mod translate;

mod notify;

mod stats;

mod migration;

mod connection;

pub use connection::{vsmmu_close, vsmmu_server_alive, vsmmu_server_pid, vsmmu_socket_fd};
pub use devices::{vsmmu_attach_device, vsmmu_attach_vmm_device, vsmmu_detach_device};
pub use dma::{vsmmu_dma_map, vsmmu_dma_unmap};
pub use error::{vsmmu_last_errno, vsmmu_last_error};
pub use irq::vsmmu_set_irq;
pub use migration::{vsmmu_free_state, vsmmu_load_state, vsmmu_resume, vsmmu_save_state};
pub use mmio::{vsmmu_mmio_read, vsmmu_mmio_write};
pub use notify::{
    vsmmu_invalidation, vsmmu_iotlb_enable, vsmmu_iotlb_stats, vsmmu_notify_drain, vsmmu_notify_fd,
    vsmmu_notify_fn, vsmmu_notify_set_handler, VSMMU_INVALIDATE_ADDRESSES, VSMMU_INVALIDATE_ALL,
    VSMMU_INVALIDATE_STREAMS,
};
pub use open::{vsmmu_connect, vsmmu_spawn};
pub use reset::vsmmu_reset;
pub use stats::vsmmu_get_stats;
pub use translate::{vsmmu_translate, VSMMU_TRANSLATE_NO_EVENT, VSMMU_TRANSLATE_WRITE};

use std::ffi::{c_char, c_int, CStr};
use std::os::fd::BorrowedFd;

use vsmmu_client::client::Client;

use error::{Failure, FfiResult};

/// Borrows the client behind a handle.
///
/// # Safety
/// `c` is NULL or a live handle from [`vsmmu_connect`] / [`vsmmu_spawn`]
/// that no other thread uses during the returned borrow.
unsafe fn client<'a>(c: *mut Client, what: &str) -> FfiResult<&'a mut Client> {
    // SAFETY: the caller guarantees `c` is NULL or a live, unshared handle;
    // `as_mut` maps NULL to None.
    unsafe { c.as_mut() }.ok_or_else(|| Failure::invalid(format!("{what}: NULL handle")))
}

/// Reads a C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
unsafe fn c_str<'a>(p: *const c_char, what: &str, name: &str) -> FfiResult<&'a CStr> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what}: {name} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's guarantee.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// Borrows a descriptor number for the duration of one call.
///
/// # Safety
/// `fd`, if non-negative, is open for the duration of the borrow.
unsafe fn borrow_fd<'a>(fd: c_int, what: &str, name: &str) -> FfiResult<BorrowedFd<'a>> {
    if fd < 0 {
        return Err(Failure::invalid(format!(
            "{what}: {name} {fd} is not a descriptor"
        )));
    }
    // SAFETY: non-negative, and the caller keeps it open during the call.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

#[cfg(test)]
mod tests;
