//! Wire formats of vsmmu.
//!
//! Pure data, no I/O policy:
//! - [`vfio_user`]: the vfio-user header, every command of the spec with its
//!   payload, the VERSION capabilities JSON, and the vsmmu extension commands;
//! - [`smmu`]: SMMUv3 architectural formats (registers, queues, commands,
//!   events, stream table and context descriptors);
//! - [`iommufd`]: iommufd uAPI records (ioctl structs, vEVENTQ records);
//! - [`notify`]: the invalidation ring vsmmud shares with a VMM that caches
//!   translations;
//! - [`stats`]: the counters `VSMMU_GET_STATS` reports.
//!
//! and what both ends of the socket share to decide how to wait:
//! - [`poll_window`]: how long to poll for the peer's next message before
//!   sleeping (adaptive, as KVM's halt polling), pure logic;
//! - [`run_queue`]: whether the CPUs are overcommitted, so that neither
//!   end polls (the one module here that reads a file: `/proc/loadavg`).
//!
//! Decoding never panics on any byte string: it returns typed errors.

#[cfg(not(target_endian = "little"))]
compile_error!("vsmmu's wire formats are little-endian and decoded in place");

pub mod iommufd;
pub mod notify;
pub mod poll_window;
pub mod run_queue;
pub mod smmu;
pub mod stats;
pub mod vfio_user;
mod wire;
