//! Regenerates `client-shim/capi/include/vsmmu.h`, the C header of the
//! shim's C ABI (`src/ffi/`), with cbindgen and `cbindgen.toml`:
//!
//! ```text
//! cargo run -p vsmmu-capi --example gen-header
//! ```
//!
//! `tests/header.rs` fails when the checked-in header differs from what
//! this produces.

use std::path::{Path, PathBuf};

/// The crate directory (`client-shim/capi/`).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The checked-in header.
pub fn header_path() -> PathBuf {
    crate_dir().join("include").join("vsmmu.h")
}

/// Generates the header text from the crate's sources.
pub fn generate(crate_dir: &Path) -> String {
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    // Parse the crate from lib.rs (following its `mod`s) without running
    // `cargo metadata`; the one type of another crate the C ABI names is
    // vsmmu-client's `Client` (the opaque handle), so parse that crate too.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src").join("lib.rs"))
        .with_src(crate_dir.join("../src/lib.rs"))
        .generate()
        .expect("cbindgen failed");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[allow(dead_code)] // tests/header.rs includes this file for `generate`.
fn main() {
    let path = header_path();
    std::fs::write(&path, generate(&crate_dir())).expect("write header");
    println!("wrote {}", path.display());
}
