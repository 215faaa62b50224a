//! The vfio-user device: decoded requests in, replies out.
//!
//! [`Device`] owns the SMMUv3 model, the host backend, guest RAM and the
//! interrupt lines; [`Session`] is what one client negotiated. Nothing here
//! touches a socket: the event loop hands in whole messages and sends the
//! bytes returned.
//!
//! [`Device::handle`] turns a failure into its error reply;
//! `Device::dispatch` admits a request and routes it, one line per
//! command, to the method that serves it. The methods live beside what
//! they serve: `version.rs`, `dma.rs` (guest RAM), `regions.rs` (device
//! and region info, MMIO), `irqs.rs`, `migration.rs` (DEVICE_FEATURE and
//! the state stream), `attach.rs` (the devices behind the SMMU), `sim.rs`
//! (the sim-only commands, `VSMMU_TRANSLATE`), `notify.rs` (the
//! invalidation ring), `stats.rs` and `veventq.rs` (the host's events).

mod attach;
mod dma;
mod error;
mod irqs;
mod migration;
mod notify;
mod regions;
mod sim;
mod stats;
mod version;
mod veventq;

use std::os::fd::OwnedFd;

use vsmmu_protocol::vfio_user::{self as vu, Command, Header, Message, Request};

use crate::conn::Incoming;
use crate::host::HostIommu;
use crate::irq::Irqs;
use crate::memory::GuestRam;
use crate::migration::Migration;
use crate::notify::Notifier;
use crate::smmu::{Ctx, Smmu};
use crate::stats::Stats;

pub(crate) use error::RequestError;

/// Limits a client cannot exceed (all configurable on the command line).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest REGION/DMA data transfer (`max_data_xfer_size`).
    pub max_data_xfer_size: u32,
    /// Largest number of DMA mappings (`max_dma_maps`).
    pub max_dma_maps: u32,
    /// Largest number of fds in one message (`max_msg_fds`).
    pub max_msg_fds: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_data_xfer_size: 1 << 20,
            max_dma_maps: 1024,
            max_msg_fds: 8,
        }
    }
}

impl Limits {
    /// Largest message the server accepts: a full data transfer plus headers.
    pub fn max_msg_size(&self) -> usize {
        self.max_data_xfer_size as usize + 64
    }
}

/// What one client negotiated.
#[derive(Debug, Default, Clone)]
pub struct Session {
    /// VERSION completed.
    pub negotiated: bool,
    /// Negotiated minor version.
    pub minor: u16,
    /// Both sides advertised the vsmmu extension.
    pub vsmmu: bool,
}

/// What the event loop does after a message.
#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes.
    Reply(Vec<u8>),
    /// Nothing to send (a posted command).
    Silent,
    /// Send these bytes (may be empty), then close the connection.
    Close(Vec<u8>, String),
}

/// The SMMUv3 device and everything it owns.
#[derive(Debug)]
pub struct Device {
    /// The model.
    pub smmu: Smmu,
    /// The host backend.
    pub host: Box<dyn HostIommu>,
    /// Guest RAM shared by the current client.
    pub mem: GuestRam,
    /// Interrupt lines of the current client.
    pub irqs: Irqs,
    /// Counters.
    pub stats: Stats,
    /// Limits.
    pub limits: Limits,
    /// Migration state machine.
    pub mig: Migration,
    /// The VMM's invalidation ring.
    pub notify: Notifier,
    /// Changes whenever the ring is set up or dropped.
    notify_generation: u64,
}

impl Device {
    /// A device over `host`.
    pub fn new(smmu: Smmu, host: Box<dyn HostIommu>, limits: Limits) -> Self {
        Device {
            smmu,
            host,
            mem: GuestRam::new(limits.max_dma_maps as usize),
            irqs: Irqs::default(),
            stats: Stats::default(),
            limits,
            mig: Migration::default(),
            notify: Notifier::default(),
            notify_generation: 0,
        }
    }

    /// The model and the context it runs in (guest RAM, the host, the
    /// interrupts, the counters, the ring), borrowed apart: the one place
    /// a [`Ctx`] is built.
    fn model(&mut self) -> (&mut Smmu, Ctx<'_>) {
        (
            &mut self.smmu,
            Ctx {
                mem: &self.mem,
                host: &mut *self.host,
                irqs: &mut self.irqs,
                stats: &mut self.stats,
                notify: &mut self.notify,
            },
        )
    }

    /// The client left: release its mappings and eventfds, keep the device.
    pub fn client_gone(&mut self) {
        for (gpa, size) in self.mem.clear() {
            if let Err(e) = self.host.unmap_guest_ram(gpa, size) {
                log::warn!("releasing guest RAM {gpa:#x}+{size:#x}: {e}");
            }
        }
        self.irqs.clear();
        if self.notify.ack_fd().is_some() {
            // A CMD_SYNC waiting for this client's acknowledgement completes
            // at the next CMDQ_PROD write (guest RAM is gone until then).
            self.notify.clear();
            self.notify_generation += 1;
        }
    }

    /// Handles one complete message.
    pub fn handle(&mut self, session: &mut Session, msg: Incoming) -> Outcome {
        self.stats.messages += 1;
        let hdr = msg.header;
        let payload = msg.bytes.get(vu::HEADER_SIZE..).unwrap_or(&[]);
        let result = match Request::decode(&hdr, payload) {
            Ok(req) => self.dispatch(session, &hdr, req, msg.fds),
            Err(e) => Err(RequestError::from(e)),
        };
        let e = match result {
            Ok(reply) if !hdr.no_reply() => return Outcome::Reply(reply),
            Ok(_) => return Outcome::Silent,
            Err(e) => e,
        };
        let cmd = Command::try_from(hdr.command)
            .map(|c| format!("{c:?}"))
            .unwrap_or_else(|_| format!("command {:#x}", hdr.command));
        let errno = e.errno();
        if hdr.no_reply() {
            self.stats.posted_errors += 1;
            // Counted always; logged for the first ones and then at
            // powers of two, so a flood cannot flood the log.
            let n = self.stats.posted_errors;
            if n <= 8 || n.is_power_of_two() {
                log::warn!(
                    "posted {cmd} (msg {}) failed: {e} (errno {errno}); {n} posted errors so far",
                    hdr.msg_id
                );
            }
            return Outcome::Silent;
        }
        self.stats.error_replies += 1;
        log::debug!("{cmd} (msg {}) failed: {e} (errno {errno})", hdr.msg_id);
        let reply = Message::error_reply(&hdr, errno);
        if hdr.command == Command::Version as u16 && !session.negotiated {
            Outcome::Close(reply, format!("version negotiation failed: {e}"))
        } else {
            Outcome::Reply(reply)
        }
    }

    /// Whether `cmd` with `fds` descriptors may be served in `session`.
    fn admit(&self, session: &Session, cmd: Command, fds: usize) -> Result<(), RequestError> {
        if !session.negotiated && cmd != Command::Version {
            return Err(RequestError::NotNegotiated);
        }
        if cmd.is_extension() && !session.vsmmu {
            return Err(RequestError::ExtensionNotNegotiated);
        }
        let max = match cmd {
            Command::DmaMap => 1,
            // The ring's memfd, the kick and the ack eventfds.
            Command::VsmmuNotifySetup => 3,
            // The cdev, and the VMM's iommufd with VSMMU_DEVICE_VMM_BOUND.
            Command::VsmmuAttachDevice => 2,
            Command::DeviceSetIrqs => self.limits.max_msg_fds as usize,
            _ => 0,
        };
        if fds > max {
            return Err(RequestError::TooManyFds { cmd, got: fds, max });
        }
        Ok(())
    }

    /// Admits `req` and hands it to the method that serves it.
    fn dispatch(
        &mut self,
        session: &mut Session,
        hdr: &Header,
        req: Request<'_>,
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, RequestError> {
        self.admit(session, req.command(), fds.len())?;
        let reply = Message::reply(hdr);
        match req {
            Request::Version { major, minor, data } => {
                self.version(session, reply, major, minor, &data)
            }
            Request::DmaMap(m) => self.dma_map(reply, &m, fds),
            Request::DmaUnmap(u) => self.dma_unmap(reply, &u),
            Request::DeviceGetInfo(_) => Ok(self.device_info(reply)),
            Request::DeviceGetRegionInfo(r) => self.region_info(reply, &r),
            Request::DeviceGetRegionIoFds(r) => self.region_io_fds(reply, &r),
            Request::DeviceGetIrqInfo(q) => self.irq_info(reply, &q),
            Request::DeviceSetIrqs { set, data } => self.set_irqs(reply, &set, data, fds),
            Request::RegionRead(a) => self.region_read(reply, &a),
            Request::RegionWrite { access, data } => self.region_write(reply, &access, data),
            Request::RegionWriteMulti(entries) => self.region_write_multi(reply, &entries),
            Request::DeviceReset => Ok(self.reset(reply)),
            Request::DeviceFeature { feature, data } => self.device_feature(reply, &feature, data),
            Request::MigDataRead(r) => self.mig_data_read(reply, &r),
            Request::MigDataWrite { data, .. } => self.mig_data_write(reply, data),
            Request::VsmmuAttachDevice(d) => self.attach_device(reply, &d, fds),
            Request::VsmmuAttachBoundDevice(d) => self.attach_vmm_device(reply, &d, fds),
            Request::VsmmuDetachDevice(d) => self.detach_device(reply, &d),
            Request::VsmmuSimInject(records) => self.sim_inject(reply, &records),
            Request::VsmmuSimDma { req, data } => self.sim_dma(reply, &req, data),
            Request::VsmmuGetStats(r) => Ok(self.get_stats(reply, &r)),
            Request::VsmmuTranslate(t) => self.translate(reply, &t),
            Request::VsmmuNotifySetup(n) => self.notify_setup(reply, &n, fds),
        }
    }

    /// DEVICE_RESET: the model resets, and any migration state is left
    /// (the spec's way out of ERROR).
    fn reset(&mut self, reply: Message) -> Vec<u8> {
        let (smmu, mut ctx) = self.model();
        smmu.reset(&mut ctx);
        self.mig.reset();
        let (smmu, mut ctx) = self.model();
        smmu.set_running(true, &mut ctx);
        reply.finish()
    }
}
