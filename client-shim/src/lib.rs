//! The VMM side of vsmmu.
//!
//! - [`Client`]: connect to (or spawn) `vsmmud`, negotiate, map guest RAM,
//!   forward MMIO, wire interrupts, attach devices.
//! - [`GuestRam`]: guest RAM as a memfd the VMM shares with the server.
//! - [`driver`]: a model SMMUv3 guest driver that follows Linux's
//!   arm-smmu-v3 probe and event handling, for tests and the demo.

pub mod client;
pub mod driver;
pub mod ffi;
pub mod guest_ram;
pub mod iotlb;
pub mod pgtable;

pub use client::{Client, ClientError, SpawnOptions};
pub use guest_ram::GuestRam;
