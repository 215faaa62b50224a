//! The guest side of vsmmu, for tests, the benchmark and the demo.
//!
//! - [`GuestRam`]: guest RAM as a memfd the VMM shares with the server.
//! - [`driver`]: a model SMMUv3 guest driver that follows Linux's
//!   arm-smmu-v3 probe and event handling, over a [`vsmmu_client::Client`].
//! - [`pgtable`]: a stage-1 page-table builder and the invalidation
//!   commands a guest issues for it.

pub mod driver;
pub mod guest_ram;
pub mod pgtable;

pub use guest_ram::GuestRam;
