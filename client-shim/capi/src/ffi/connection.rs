//! The connection behind an open handle: whether the server is still
//! there, its pid, the socket to watch, and closing the handle.

use std::ffi::c_int;
use std::os::fd::{AsRawFd, RawFd};

use vsmmu_client::client::Client;

use super::client;
use super::error::{guard, guard_int, Failure};

/// Whether the server is still there: 1 if it is, 0 if it closed the
/// connection (it exited, was killed, or dropped this client), negative
/// errno for a NULL handle. Does not block; call it when the socket (see
/// `vsmmu_socket_fd()`) reports POLLHUP or on any `-EPIPE`.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_server_alive(c: *mut Client) -> c_int {
    const WHAT: &str = "vsmmu_server_alive";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        Ok(c_int::from(!c.server_gone()))
    })
}

/// Process id of a server started by `vsmmu_spawn`, or -1 (a connected
/// server, or a NULL handle).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_server_pid(c: *mut Client) -> c_int {
    const WHAT: &str = "vsmmu_server_pid";
    guard(
        WHAT,
        |pid| pid,
        |_| -1,
        || {
            // SAFETY: forwarded from this function's contract.
            let c = unsafe { client(c, WHAT) }?;
            Ok(c.server_pid()
                .and_then(|p| c_int::try_from(p).ok())
                .unwrap_or(-1))
        },
    )
}

/// The connection's socket descriptor, to watch for POLLHUP (e.g. a
/// `G_IO_HUP` watch in QEMU). It stays owned by the library: do not read,
/// write or close it. Returns -1 for a NULL handle.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_socket_fd(c: *mut Client) -> c_int {
    const WHAT: &str = "vsmmu_socket_fd";
    guard(
        WHAT,
        |fd: RawFd| fd,
        |_| -1,
        || {
            // SAFETY: forwarded from this function's contract.
            let c = unsafe { client(c, WHAT) }?;
            Ok(c.socket().as_raw_fd())
        },
    )
}

/// Closes the connection and frees the handle; for a spawned server, waits
/// until it has exited. NULL is ignored. The handle must not be used
/// afterwards.
///
/// # Safety
/// `c` is NULL or a live handle from `vsmmu_connect` / `vsmmu_spawn` not
/// used by any other thread, and not closed before.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_close(c: *mut Client) {
    const WHAT: &str = "vsmmu_close";
    guard(
        WHAT,
        |()| (),
        |_| (),
        || {
            if c.is_null() {
                return Ok(());
            }
            // SAFETY: a live handle made by `Box::into_raw` in this module,
            // given back exactly once per the contract.
            let client = unsafe { Box::from_raw(c) };
            client.close().map_err(|e| Failure::client(WHAT, &e))?;
            Ok(())
        },
    );
}
