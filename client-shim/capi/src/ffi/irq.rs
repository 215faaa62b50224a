//! SET_IRQS: the eventfds vsmmud signals.

use std::ffi::{c_int, c_uint};

use vsmmu_client::client::Client;

use super::error::{guard_int, Failure};
use super::{borrow_fd, client};

/// SET_IRQS: the server signals `eventfd` when interrupt `index` fires
/// (0 EVENTQ, 1 PRIQ, 2 CMD_SYNC, 3 GERROR). `eventfd` = -1 removes it.
/// The descriptor is borrowed: the server keeps its own reference.
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `eventfd` is -1 or
/// an open descriptor.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_set_irq(c: *mut Client, index: c_uint, eventfd: c_int) -> c_int {
    const WHAT: &str = "vsmmu_set_irq";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let fd = if eventfd == -1 {
            None
        } else {
            // SAFETY: `eventfd` is open for this call per the contract.
            Some(unsafe { borrow_fd(eventfd, WHAT, "eventfd") }?)
        };
        c.set_irq_eventfd(index, fd)
            .map_err(|e| Failure::client(&format!("{WHAT}: index {index}"), &e))?;
        Ok(0)
    })
}
