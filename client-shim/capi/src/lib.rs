//! The C ABI of the vsmmu client: `libvsmmu.a` / `libvsmmu.so` with the
//! header `include/vsmmu.h` (generated from [`ffi`] by cbindgen), the
//! library QEMU's `arm-smmuv3-remote` links. It holds the Rust client
//! (`vsmmu-client`) and this ABI, nothing else.

pub mod ffi;

#[cfg(test)]
mod tests;
