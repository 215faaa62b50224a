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

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use vsmmu_client::client::{Client, ClientError, SpawnOptions};
use vsmmu_protocol::notify::Record;
use vsmmu_protocol::vfio_user::mig_state;

/// MIG_DATA_READ / MIG_DATA_WRITE chunk size for migration through the C ABI.
const MIG_CHUNK: u32 = 64 * 1024;

/// A failure as the C side sees it: a positive errno and a message.
#[derive(Debug)]
struct Failure {
    errno: i32,
    message: String,
}

impl Failure {
    fn new(errno: i32, message: impl Into<String>) -> Self {
        Failure {
            errno,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Failure::new(libc::EINVAL, message)
    }

    fn client(what: &str, e: &ClientError) -> Self {
        Failure::new(e.errno(), format!("{what}: {e}"))
    }
}

type FfiResult<T> = Result<T, Failure>;

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
fn guard<T, R>(
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
fn guard_int(what: &str, f: impl FnOnce() -> FfiResult<c_int>) -> c_int {
    guard(what, |v| v, |e| -e, f)
}

/// [`guard`] for functions returning a handle: NULL on failure.
fn guard_handle(what: &str, f: impl FnOnce() -> FfiResult<Client>) -> *mut Client {
    guard(
        what,
        |c| Box::into_raw(Box::new(c)),
        |_| std::ptr::null_mut(),
        f,
    )
}

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

/// Register accesses the SMMUv3 region accepts: 32 and 64 bits.
fn check_access_size(size: c_uint, what: &str) -> FfiResult<u32> {
    match size {
        4 | 8 => Ok(size),
        _ => Err(Failure::invalid(format!(
            "{what}: access size {size} (must be 4 or 8)"
        ))),
    }
}

fn negotiated(mut c: Client, what: &str) -> FfiResult<Client> {
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

/// DMA_MAP: makes `size` bytes of the file `fd` (a memfd of guest RAM),
/// starting at file offset `offset`, guest RAM at guest physical address
/// `iova`, readable and writable by the SMMU model. `fd` is borrowed: the
/// server keeps its own reference, the caller keeps `fd`.
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `fd` is -1 or an
/// open descriptor.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_dma_map(
    c: *mut Client,
    fd: c_int,
    offset: u64,
    iova: u64,
    size: u64,
) -> c_int {
    const WHAT: &str = "vsmmu_dma_map";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        // SAFETY: `fd` is open for this call per the contract.
        let fd = unsafe { borrow_fd(fd, WHAT, "fd") }?;
        c.dma_map(fd, offset, iova, size)
            .map_err(|e| Failure::client(&format!("{WHAT}: [{iova:#x}, +{size:#x})"), &e))?;
        Ok(0)
    })
}

/// DMA_UNMAP of an exact earlier `vsmmu_dma_map` (same `iova` and `size`).
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_dma_unmap(c: *mut Client, iova: u64, size: u64) -> c_int {
    const WHAT: &str = "vsmmu_dma_unmap";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.dma_unmap(iova, size)
            .map_err(|e| Failure::client(&format!("{WHAT}: [{iova:#x}, +{size:#x})"), &e))?;
        Ok(0)
    })
}

/// Reads a `size`-byte (4 or 8) register at `offset` in the SMMUv3 register
/// region (page 0 at 0x0, page 1 at 0x10000) into `*value`.
///
/// Returns 0 or a negative errno (`-EINVAL` for a NULL `value` or another
/// size).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `value` is NULL or
/// points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_mmio_read(
    c: *mut Client,
    offset: u64,
    size: c_uint,
    value: *mut u64,
) -> c_int {
    const WHAT: &str = "vsmmu_mmio_read";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let size = check_access_size(size, WHAT)?;
        if value.is_null() {
            return Err(Failure::invalid(format!("{WHAT}: value is NULL")));
        }
        let v = c
            .mmio_read(offset, size)
            .map_err(|e| Failure::client(&format!("{WHAT}: {offset:#x}/{size}"), &e))?;
        // SAFETY: non-NULL and writable per the contract.
        unsafe { value.write(v) };
        Ok(0)
    })
}

/// Writes the low `size` bytes (4 or 8) of `value` to the register at
/// `offset`. With `posted`, the write is sent without waiting for the
/// server (use it for the CMDQ_PROD and EVENTQ_CONS doorbells); a later
/// non-posted call is ordered after it.
///
/// Returns 0 or a negative errno.
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_mmio_write(
    c: *mut Client,
    offset: u64,
    size: c_uint,
    value: u64,
    posted: bool,
) -> c_int {
    const WHAT: &str = "vsmmu_mmio_write";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let size = check_access_size(size, WHAT)?;
        c.mmio_write(offset, size, value, posted)
            .map_err(|e| Failure::client(&format!("{WHAT}: {offset:#x}/{size}"), &e))?;
        Ok(0)
    })
}

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

/// VSMMU_ATTACH_DEVICE: puts the device with virtual StreamID `vsid` (the
/// PCI requester ID) behind the virtual SMMU. `device_fd` is the device's
/// VFIO cdev for the iommufd backend, or -1 for the sim backend; it is
/// borrowed. On success `*host_dev_id` (if not NULL) receives the host's
/// id for the device.
///
/// Returns 0 or a negative errno (`-EEXIST` if `vsid` is attached).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `device_fd` is -1
/// or an open descriptor; `host_dev_id` is NULL or points to a writable
/// `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_attach_device(
    c: *mut Client,
    vsid: u32,
    device_fd: c_int,
    host_dev_id: *mut u32,
) -> c_int {
    const WHAT: &str = "vsmmu_attach_device";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        let fd = if device_fd == -1 {
            None
        } else {
            // SAFETY: `device_fd` is open for this call per the contract.
            Some(unsafe { borrow_fd(device_fd, WHAT, "device_fd") }?)
        };
        let id = c
            .attach_device(vsid, fd)
            .map_err(|e| Failure::client(&format!("{WHAT}: vSID {vsid:#x}"), &e))?;
        if !host_dev_id.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { host_dev_id.write(id) };
        }
        Ok(0)
    })
}

/// VSMMU_ATTACH_DEVICE of a device the VMM bound to its own iommufd:
/// vsmmud then works in that iommufd (the VMM's context) and allocates the
/// vIOMMU on the VMM's nesting-parent HWPT `parent_hwpt_id`, which the
/// device must be attached to. `cdev_fd` is the device's bound VFIO cdev,
/// `iommufd_fd` the VMM's iommufd, `dev_id` the id VFIO_DEVICE_BIND_IOMMUFD
/// returned; both fds are borrowed (vsmmud keeps copies). Detach with
/// [`vsmmu_detach_device`] before the VMM frees its parent HWPT: the last
/// detach frees vsmmud's objects on it and puts the device back on it.
///
/// Returns 0 or a negative errno (`-EOPNOTSUPP` from a sim host, `-EBUSY`
/// while devices vsmmud bound itself are attached, `-EINVAL` for another
/// parent than the attached devices').
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently; `cdev_fd` and
/// `iommufd_fd` are open descriptors.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_attach_vmm_device(
    c: *mut Client,
    vsid: u32,
    cdev_fd: c_int,
    iommufd_fd: c_int,
    dev_id: u32,
    parent_hwpt_id: u32,
) -> c_int {
    const WHAT: &str = "vsmmu_attach_vmm_device";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        // SAFETY: both are open for this call per the contract.
        let cdev = unsafe { borrow_fd(cdev_fd, WHAT, "cdev_fd") }?;
        // SAFETY: as above.
        let iommufd = unsafe { borrow_fd(iommufd_fd, WHAT, "iommufd_fd") }?;
        c.attach_vmm_device(vsid, cdev, iommufd, dev_id, parent_hwpt_id)
            .map_err(|e| Failure::client(&format!("{WHAT}: vSID {vsid:#x}"), &e))?;
        Ok(0)
    })
}

/// VSMMU_DETACH_DEVICE of virtual StreamID `vsid`.
///
/// Returns 0 or a negative errno (`-ENOENT` if `vsid` is not attached).
///
/// # Safety
/// `c` is NULL or a live handle not used concurrently.
#[no_mangle]
pub unsafe extern "C" fn vsmmu_detach_device(c: *mut Client, vsid: u32) -> c_int {
    const WHAT: &str = "vsmmu_detach_device";
    guard_int(WHAT, || {
        // SAFETY: forwarded from this function's contract.
        let c = unsafe { client(c, WHAT) }?;
        c.detach_device(vsid)
            .map_err(|e| Failure::client(&format!("{WHAT}: vSID {vsid:#x}"), &e))?;
        Ok(0)
    })
}

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

/// VSMMU_GET_STATS: writes the server's counters as a JSON object into
/// `buf`, like `snprintf`: at most `len - 1` bytes and a terminating NUL
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
        let text = c.stats().map_err(|e| Failure::client(WHAT, &e))?.to_json();
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

#[cfg(test)]
mod tests;
