//! The C ABI against the real `vsmmud` (built by `cargo build -p
//! vsmmu-server`), through the handles a C VMM holds. Unit tests, because
//! this crate builds no rlib an integration test could call.

use std::os::unix::net::UnixStream;

use vsmmu_client::Client;
use vsmmu_protocol::vfio_user::mig_state::RUNNING;
use vsmmu_tests::guest::{boot, small, snapshot, RAM_BASE};
use vsmmu_tests::TestServer;

use crate::ffi::{vsmmu_free_state, vsmmu_load_state, vsmmu_resume, vsmmu_save_state};

/// The C ABI's migration calls (what QEMU's arm-smmuv3-remote uses):
/// save stops the source and returns its state, load runs it in a fresh
/// server, resume runs the source again; a foreign state is refused.
#[test]
fn c_abi_save_load_resume() {
    let (_src, mut d) = boot(&[], 8 << 20, small(3));
    d.client.attach_device(3, None).unwrap();
    let before = snapshot(&mut d.client);
    let src = Box::into_raw(Box::new(std::mem::replace(
        &mut d.client,
        Client::from_stream(UnixStream::pair().unwrap().0),
    )));
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: `src` is a live handle; `data` and `len` are writable.
    assert_eq!(unsafe { vsmmu_save_state(src, &mut data, &mut len) }, 0);
    assert!(len > 8 && !data.is_null());
    // SAFETY: vsmmu_save_state returned `len` bytes at `data`.
    let blob = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
    assert_eq!(&blob[..4], b"VSMU");

    let dst = TestServer::start(&[]);
    let mut c = dst.client();
    c.dma_map(d.ram.fd(), 0, RAM_BASE, d.ram.size() as u64)
        .unwrap();
    let dst_handle = Box::into_raw(Box::new(c));
    // SAFETY: a live handle and `len` readable bytes.
    assert_eq!(unsafe { vsmmu_load_state(dst_handle, data, len) }, 0);
    // SAFETY: `dst_handle` came from Box::into_raw above.
    let mut c = *unsafe { Box::from_raw(dst_handle) };
    assert_eq!(snapshot(&mut c), before);
    // A state from nowhere: refused with EINVAL.
    let garbage = [0u8; 16];
    let h = Box::into_raw(Box::new(c));
    // SAFETY: a live handle and 16 readable bytes.
    let rc = unsafe { vsmmu_load_state(h, garbage.as_ptr(), garbage.len()) };
    assert_eq!(rc, -libc::EINVAL);
    // SAFETY: `h` came from Box::into_raw above.
    drop(unsafe { Box::from_raw(h) });

    // The source runs again.
    // SAFETY: `src` is a live handle.
    assert_eq!(unsafe { vsmmu_resume(src) }, 0);
    // SAFETY: `src` came from Box::into_raw above.
    let mut back = *unsafe { Box::from_raw(src) };
    assert_eq!(back.mig_state().unwrap(), RUNNING);
    // SAFETY: `data`/`len` came from vsmmu_save_state.
    unsafe { vsmmu_free_state(data, len) };
}
