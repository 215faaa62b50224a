//! The VMM side of vsmmu.
//!
//! - [`Client`]: connect to (or spawn) `vsmmud`, negotiate, map guest RAM,
//!   forward MMIO, wire interrupts, attach devices.
//! - [`iotlb`]: the VMM's IOTLB of `VSMMU_TRANSLATE` answers, kept current
//!   by the server's invalidation ring.
//!
//! The C ABI over [`Client`] is the `vsmmu-capi` crate (`client-shim/capi`);
//! a model guest driver and guest RAM for tests and the demo are
//! `vsmmu-guest` (`client-shim/guest`).

pub mod client;
pub mod iotlb;

pub use client::{Client, ClientError, SpawnOptions};
