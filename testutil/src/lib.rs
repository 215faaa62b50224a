//! What vsmmu's tests share, so that each piece is written once: the unit
//! tests of `protocol` and `server`, the conformance tests in `tests/` and
//! the fuzz targets in `fuzz/` use it.
//!
//! - [`memfd`]: guest RAM backing, a memfd of a given size;
//! - [`Rng`]: a seeded xorshift64* generator, the same sequence every run;
//! - [`msg`]: raw vfio-user payloads built from `vsmmu_protocol`'s structs;
//! - [`regs`]: the SMMUv3 register words the tests and the fuzzer walk;
//! - [`FuzzInput`]: values read off a fuzzer's byte string.
//!
//! Test code: a failure to create a descriptor panics.

mod fuzz_input;
pub mod msg;
pub mod regs;

pub use fuzz_input::FuzzInput;

use std::os::fd::OwnedFd;

use nix::sys::memfd::{memfd_create, MFdFlags};

/// A close-on-exec memfd of `size` bytes (zeros), to map as guest RAM.
///
/// # Panics
/// When the kernel refuses the memfd or its size.
pub fn memfd(size: u64) -> OwnedFd {
    let fd = memfd_create("vsmmu-test", MFdFlags::MFD_CLOEXEC).expect("memfd_create");
    let len = i64::try_from(size).expect("memfd size");
    nix::unistd::ftruncate(&fd, len).expect("ftruncate memfd");
    fd
}

/// xorshift64* (Vigna): deterministic pseudo-random words, so that a
/// failing seed fails again.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed` (not 0: xorshift would stay at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next word.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_fixed_by_the_seed() {
        // xorshift64* computed by hand for this seed: a changed generator
        // would change every test's data, so it fails here first.
        let mut a = Rng::new(0x9e37_79b9_7f4a_7c15);
        let words: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(
            words,
            [
                0x0d83_b3e2_9a21_487a,
                0x54c4_4c79_f1fe_9d67,
                0xa845_f342_007a_0e78,
                0x7d6e_0b87_8a79_4779
            ]
        );
        assert_eq!(a.below(10), 7);
        assert_eq!(a.bytes(7).len(), 7);
    }

    #[test]
    fn memfd_has_the_size() {
        let f = std::fs::File::from(memfd(0x3000));
        assert_eq!(f.metadata().unwrap().len(), 0x3000);
    }
}
