//! vsmmud: an SMMUv3 served over vfio-user, backed by the host IOMMU.
//!
//! Data flows one way: socket (`event_loop`, `conn`) → decode
//! (`vsmmu_protocol`) → [`Device`] → SMMUv3 model ([`Smmu`]) → host
//! backend ([`HostIommu`]). `docs/architecture.md` walks through the
//! modules; the crate's interface is what starts a server ([`run`]) and
//! what drives a [`Device`] without a socket (the fuzzer).

// vsmmud is an application with a small library interface: its doc
// comments describe the internals and link to them (`cargo doc
// --document-private-items` renders those links).
#![allow(rustdoc::private_intra_doc_links)]

mod args;
mod config;
mod conn;
mod device;
mod event_loop;
mod host;
mod smmu;

mod irq;
mod jail;
mod memory;
mod migration;
mod notify;
mod sandbox;
mod stats;

// The crate's interface: what `main.rs` and the benchmark need to start a
// server, and what the fuzzer needs to drive a device without a socket.
pub use args::Args;
pub use config::Config;
pub use conn::Incoming;
pub use device::{Device, Limits, Outcome, Session};
pub use host::sim::{SimConfig, SimHost};
pub use host::HostIommu;
pub use smmu::{Smmu, SmmuConfig};

use anyhow::Context;

use args::HostKind;

/// The jail's view of the configuration: the socket's directory (its path
/// is removed at exit) and the descriptors the limits can need: one per
/// DMA mapping (the memfd stays open), a message's worth in flight, four
/// irq eventfds, the vEVENTQ, up to 256 VFIO cdevs, and spare.
fn jail_config(config: &Config) -> jail::JailConfig {
    let l = &config.limits;
    jail::JailConfig {
        mode: config.jail,
        user: config.user,
        socket_dir: match &config.listen {
            config::Listen::Path(p) => p.parent().map(|d| {
                if d.as_os_str().is_empty() {
                    ".".into()
                } else {
                    d.to_path_buf()
                }
            }),
            config::Listen::Fd(_) => None,
        },
        fds_needed: u64::from(l.max_dma_maps) + u64::from(l.max_msg_fds) + 4 + 1 + 256 + 16,
        pins_guest_ram: config.host == HostKind::Iommufd,
    }
}

/// Builds the device and serves until a signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Before the descriptors move out of the configuration.
    let jail = jail_config(&config);
    let signals = event_loop::block_signals()?;
    let host: Box<dyn HostIommu> = match config.host {
        HostKind::Sim => Box::new(host::sim::SimHost::new(host::sim::SimConfig {
            first_seq: config.sim_first_seq,
            veventq_depth: config.sim_veventq_depth,
            reject_opcode: config.sim_reject_opcode,
            ..Default::default()
        })),
        HostKind::Iommufd => {
            let fd = match config.iommufd_fd {
                Some(fd) => {
                    let what = format!("--iommufd-fd {}", fd.number());
                    Some(fd.adopt().context(what)?)
                }
                None => None,
            };
            Box::new(host::iommufd::IommufdHost::open(fd)?)
        }
    };
    let smmu = Smmu::new(
        SmmuConfig {
            msi: config.msi,
            batch: config.batch,
            event_buffer: config.event_buffer,
        },
        host.hw_info(),
    );
    // Before the socket is bound: a refused file leaves nothing behind.
    let run_queue = match &config.run_queue_file {
        Some(path) => {
            let q = vsmmu_protocol::run_queue::RunQueue::open_file(path);
            if !q.is_open() {
                anyhow::bail!(
                    "--run-queue-file {}: cannot open it, or no run queue in it",
                    path.display()
                );
            }
            Some(q)
        }
        None => None,
    };
    let device = Device::new(smmu, host, config.limits);
    let mut server = event_loop::Server::new(config.listen, signals, device, config.read_mode)?;
    server.set_poll_max(config.poll_max);
    if let Some(q) = run_queue {
        server.set_run_queue(q);
    }
    jail::enter(&jail)?;
    if let Some(path) = &config.jail_selftest {
        match std::fs::File::open(path) {
            Ok(_) => log::warn!("jail selftest: open {} succeeded", path.display()),
            Err(e) => log::info!(
                "jail selftest: open {}: errno {}",
                path.display(),
                e.raw_os_error().unwrap_or(0)
            ),
        }
    }
    sandbox::apply_for(config.seccomp, config.host, server.run_queue_fd())?;
    server.run()?;
    Ok(())
}
