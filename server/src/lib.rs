//! vsmmud: an SMMUv3 served over vfio-user, backed by the host IOMMU.
//!
//! Data flows one way: socket ([`event_loop`], [`conn`]) → decode
//! (`vsmmu_protocol`) → [`device`] → SMMUv3 model ([`smmu`]) → host
//! backend ([`host`]).

pub mod args;
pub mod config;
pub mod conn;
pub mod device;
pub mod event_loop;
pub mod host;
pub mod irq;
pub mod memory;
pub mod migration;
pub mod sandbox;
pub mod smmu;
pub mod stats;

use std::os::fd::{FromRawFd, OwnedFd};

use args::HostKind;
use config::Config;
use device::Device;
use host::HostIommu;
use smmu::{Smmu, SmmuConfig};

/// Builds the device and serves until a signal.
pub fn run(config: Config) -> anyhow::Result<()> {
    let signals = event_loop::block_signals()?;
    let host: Box<dyn HostIommu> = match config.host {
        HostKind::Sim => Box::new(host::sim::SimHost::new(host::sim::SimConfig {
            first_seq: config.sim_first_seq,
            veventq_depth: config.sim_veventq_depth,
            reject_opcode: config.sim_reject_opcode,
            ..Default::default()
        })),
        HostKind::Iommufd => {
            let fd = config.iommufd_fd.map(|fd| {
                // SAFETY: --iommufd-fd hands this process the descriptor to own.
                unsafe { OwnedFd::from_raw_fd(fd) }
            });
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
    let device = Device::new(smmu, host, config.limits.clone());
    let mut server = event_loop::Server::new(&config.listen, signals, device, config.read_mode)?;
    server.set_poll_window(config.poll_window);
    sandbox::apply_for(config.seccomp, config.host)?;
    server.run()?;
    Ok(())
}
