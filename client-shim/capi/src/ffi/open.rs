//! Making a handle: connect to a listening `vsmmud` or spawn one, then
//! negotiate VERSION with the vsmmu extension.

use std::ffi::{c_char, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use vsmmu_client::client::{Client, SpawnOptions};

use super::c_str;
use super::error::{guard_handle, Failure, FfiResult};

pub(super) fn negotiated(mut c: Client, what: &str) -> FfiResult<Client> {
    c.negotiate(true).map_err(|e| Failure::client(what, &e))?;
    Ok(c)
}

/// Connects to a `vsmmud` listening on the Unix socket `socket_path` and
/// negotiates VERSION with the vsmmu extension.
///
/// Returns a handle, or NULL on failure (see `vsmmu_last_error()`).
///
/// # Safety
/// `socket_path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_connect(socket_path: *const c_char) -> *mut Client {
    const WHAT: &str = "vsmmu_connect";
    guard_handle(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { c_str(socket_path, WHAT, "socket_path") }?;
        let path = Path::new(OsStr::from_bytes(path.to_bytes()));
        let c = Client::connect(path)
            .map_err(|e| Failure::client(&format!("{WHAT}: {}", path.display()), &e))?;
        negotiated(c, WHAT)
    })
}

/// Starts `vsmmud_path --fd 3 --seccomp <seccomp_mode> <extra_args...>` on
/// one end of a socketpair, connects through the other end and negotiates
/// VERSION with the vsmmu extension. The server exits when the handle is
/// closed.
///
/// `seccomp_mode`: `"kill"`, `"trap"`, `"log"` or `"off"`; NULL means
/// `"kill"`. `extra_args`: a NULL-terminated array of strings, or NULL.
///
/// Returns a handle, or NULL on failure (see `vsmmu_last_error()`).
///
/// # Safety
/// `vsmmud_path` and `seccomp_mode` are NULL or NUL-terminated strings;
/// `extra_args` is NULL or a NULL-terminated array of NUL-terminated
/// strings.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_spawn(
    vsmmud_path: *const c_char,
    seccomp_mode: *const c_char,
    extra_args: *const *const c_char,
) -> *mut Client {
    const WHAT: &str = "vsmmu_spawn";
    guard_handle(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let bin = unsafe { c_str(vsmmud_path, WHAT, "vsmmud_path") }?;
        let mut opts = SpawnOptions::new(Path::new(OsStr::from_bytes(bin.to_bytes())));
        if !seccomp_mode.is_null() {
            // SAFETY: non-NULL, NUL-terminated per the contract.
            let mode = unsafe { c_str(seccomp_mode, WHAT, "seccomp_mode") }?;
            opts.seccomp = mode
                .to_str()
                .map_err(|_| Failure::invalid(format!("{WHAT}: seccomp_mode is not UTF-8")))?
                .to_owned();
        }
        if !extra_args.is_null() {
            for i in 0.. {
                // SAFETY: `extra_args` is a NULL-terminated array and every
                // index up to its terminator is inside it.
                let p = unsafe { *extra_args.add(i) };
                if p.is_null() {
                    break;
                }
                // SAFETY: a non-NULL array element is a NUL-terminated string.
                let arg = unsafe { c_str(p, WHAT, "extra_args[i]") }?;
                let arg = arg.to_str().map_err(|_| {
                    Failure::invalid(format!("{WHAT}: extra_args[{i}] is not UTF-8"))
                })?;
                opts.args.push(arg.to_owned());
            }
        }
        let c = Client::spawn(&opts)
            .map_err(|e| Failure::client(&format!("{WHAT}: {}", opts.binary.display()), &e))?;
        negotiated(c, WHAT)
    })
}
