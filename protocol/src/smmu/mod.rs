//! SMMUv3 architectural formats (Arm IHI 0070), pure data.
//!
//! - [`bits`]: bit-field helpers ([`bits::Field`], `field`, `set_field`);
//! - [`regs`]: register offsets, fields, writable masks, QEMU 7.2 reset
//!   values;
//! - [`queue`]: queue pointer arithmetic and `*Q_BASE` decoding;
//! - [`command`]: command queue entries ([`command::Command`]);
//! - [`event`]: event records ([`event::Event`]);
//! - [`ste`]: stream table entries and their validation, the kernel's vSTE
//!   rules;
//! - [`cd`]: context descriptors, L1CDs and the STE → CD walk;
//! - [`strtab`]: stream table configuration and the StreamID → STE walk.
//!
//! Nothing here performs I/O; every decoder is total (no panics, no
//! overflowing arithmetic on guest-controlled values).

#![deny(missing_docs)]

pub mod bits;
pub mod cd;
pub mod command;
pub mod event;
pub mod pgtable;
pub mod queue;
pub mod regs;
pub mod ste;
pub mod strtab;
