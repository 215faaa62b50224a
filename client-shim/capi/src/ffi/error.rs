//! How a call's outcome reaches C: the [`guard`] every function runs in
//! (no panic crosses the boundary), and the last failure of the thread
//! (`vsmmu_last_error`, `vsmmu_last_errno`).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use vsmmu_client::client::{Client, ClientError};

/// A failure as the C side sees it: a positive errno and a message.
#[derive(Debug)]
pub(super) struct Failure {
    errno: i32,
    message: String,
}

impl Failure {
    pub(super) fn new(errno: i32, message: impl Into<String>) -> Self {
        Failure {
            errno,
            message: message.into(),
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(libc::EINVAL, message)
    }

    pub(super) fn client(what: &str, e: &ClientError) -> Self {
        Failure::new(e.errno(), format!("{what}: {e}"))
    }
}

pub(super) type FfiResult<T> = Result<T, Failure>;

/// The last outcome on this thread: errno 0 and an empty message after a
/// success.
struct LastError {
    errno: i32,
    message: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = RefCell::new(LastError {
        errno: 0,
        message: CString::default(),
    });
}

fn set_last(errno: i32, message: &str) {
    // A message with an interior NUL is cut there rather than lost.
    let bytes = message.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let message = CString::new(&bytes[..end]).unwrap_or_default();
    // `try_with`: nothing to record into while the thread is exiting.
    let _ = LAST_ERROR.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = LastError { errno, message };
        }
    });
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

/// Runs `f`, records its outcome, and turns it into a C result: `ok(v)` on
/// success, `err(errno)` on failure (`EIO` on a panic).
pub(super) fn guard<T, R>(
    what: &str,
    ok: impl FnOnce(T) -> R,
    err: impl FnOnce(i32) -> R,
    f: impl FnOnce() -> FfiResult<T>,
) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => {
            set_last(0, "");
            ok(v)
        }
        Ok(Err(e)) => {
            let errno = if e.errno > 0 { e.errno } else { libc::EIO };
            set_last(errno, &e.message);
            err(errno)
        }
        Err(p) => {
            set_last(
                libc::EIO,
                &format!("{what}: internal error: {}", panic_message(&*p)),
            );
            err(libc::EIO)
        }
    }
}

/// [`guard`] for functions returning `int`: `0` or the non-negative value on
/// success, `-errno` on failure.
pub(super) fn guard_int(what: &str, f: impl FnOnce() -> FfiResult<c_int>) -> c_int {
    guard(what, |v| v, |e| -e, f)
}

/// [`guard`] for functions returning a handle: NULL on failure.
pub(super) fn guard_handle(what: &str, f: impl FnOnce() -> FfiResult<Client>) -> *mut Client {
    guard(
        what,
        |c| Box::into_raw(Box::new(c)),
        |_| std::ptr::null_mut(),
        f,
    )
}

/// The message of the last failure of a `vsmmu_*` call on this thread; an
/// empty string if that call succeeded. Never NULL. The string is owned by
/// the library and valid until the next `vsmmu_*` call on this thread.
///
/// # Safety
/// Always safe to call; the result must not be freed or used after the
/// next `vsmmu_*` call on this thread.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_last_error() -> *const c_char {
    // The CString's heap buffer does not move when the RefCell is read, so
    // the pointer stays valid until the next call replaces it.
    let last = || {
        LAST_ERROR
            .try_with(|l| l.try_borrow().map(|l| l.message.as_ptr()).ok())
            .ok()
            .flatten()
    };
    catch_unwind(last).ok().flatten().unwrap_or(c"".as_ptr())
}

/// The (positive) errno of the last failure of a `vsmmu_*` call on this
/// thread; 0 if that call succeeded.
///
/// # Safety
/// Always safe to call.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_last_errno() -> c_int {
    let last = || {
        LAST_ERROR
            .try_with(|l| l.try_borrow().map(|l| l.errno).unwrap_or(libc::EIO))
            .unwrap_or(libc::EIO)
    };
    catch_unwind(last).unwrap_or(libc::EIO)
}
