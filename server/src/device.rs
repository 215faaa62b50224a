//! The vfio-user device: decoded requests in, replies out.
//!
//! [`Device`] owns the SMMUv3 model, the host backend, guest RAM and the
//! interrupt lines; [`Session`] is what one client negotiated. Nothing here
//! touches a socket: the event loop hands in whole messages and sends the
//! bytes returned.

use std::os::fd::{OwnedFd, RawFd};

use crate::conn::Incoming;
use crate::host::sim::dma::VmmTranslation;
use crate::host::{DeviceChange, HostError, HostIommu, VmmDevice};
use crate::irq::{Irqs, NUM_IRQS};
use crate::memory::{GuestRam, MemError, PAGE_SIZE};
use crate::migration::{self, MigState};
use crate::notify::Notifier;
use crate::smmu::strtab::TxnCheck;
use crate::smmu::{Ctx, Smmu, REGION_SIZE};
use crate::stats::Stats;
use vsmmu_protocol::smmu::event::raw_event_type;
use vsmmu_protocol::vfio_user::{
    self as vu, libc_errno as errno, Capabilities, Command, DecodeError, DeviceInfo, Header,
    IrqInfo, IrqSet, Message, MigrationCap, RegionAccess, RegionInfo, RegionIoFds, Request,
    SimInjectReply, StatsRequest, VersionData, VersionHeader, VsmmuCap, VsmmuDevice,
    WriteMultiHeader,
};
use zerocopy::FromBytes;

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

/// A request failed: the errno of the error reply, and why (for the log).
#[derive(Debug)]
struct Failure {
    errno: i32,
    why: String,
}

impl Failure {
    fn new(errno: i32, why: impl Into<String>) -> Self {
        Failure {
            errno,
            why: why.into(),
        }
    }
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Failure::new(e.errno(), e.to_string())
    }
}

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        Failure::new(e.errno, e.to_string())
    }
}

impl From<MemError> for Failure {
    fn from(e: MemError) -> Self {
        let errno = match e {
            MemError::Overlap { .. } => errno::EEXIST,
            MemError::TooMany(_) => errno::ENOSPC,
            _ => errno::EINVAL,
        };
        Failure::new(errno, e.to_string())
    }
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
    pub mig: MigState,
    /// The VMM's invalidation ring.
    pub notify: Notifier,
    /// Changes whenever the ring is set up or dropped.
    notify_generation: u64,
}

macro_rules! ctx {
    ($d:expr) => {
        Ctx {
            mem: &$d.mem,
            host: &mut *$d.host,
            irqs: &mut $d.irqs,
            stats: &mut $d.stats,
            notify: &mut $d.notify,
        }
    };
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
            mig: MigState::Running,
            notify: Notifier::default(),
            notify_generation: 0,
        }
    }

    /// The ring's ack eventfd to poll, with a generation that changes
    /// whenever the ring does.
    pub fn notify_ack_fd(&self) -> Option<(RawFd, u64)> {
        self.notify.ack_fd().map(|fd| (fd, self.notify_generation))
    }

    /// The vEVENTQ fd to poll, with a generation that changes whenever the
    /// model allocates a new vEVENTQ.
    pub fn veventq_source(&self) -> Option<(RawFd, u64)> {
        self.host
            .veventq_fd()
            .map(|fd| (fd, self.smmu.veventq_generation()))
    }

    /// The VMM acknowledged invalidations: a CMD_SYNC waiting for them
    /// completes.
    pub fn notify_acked(&mut self) {
        self.notify.acked();
        self.smmu.resume_commands(&mut ctx!(self));
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
            Err(e) => Err(Failure::from(e)),
        };
        match result {
            Ok(Some(reply)) if !hdr.no_reply() => Outcome::Reply(reply),
            Ok(_) => Outcome::Silent,
            Err(f) => {
                let cmd = Command::try_from(hdr.command)
                    .map(|c| format!("{c:?}"))
                    .unwrap_or_else(|_| format!("command {:#x}", hdr.command));
                if hdr.no_reply() {
                    self.stats.posted_errors += 1;
                    // Counted always; logged for the first ones and then at
                    // powers of two, so a flood cannot flood the log.
                    let n = self.stats.posted_errors;
                    if n <= 8 || n.is_power_of_two() {
                        log::warn!(
                            "posted {cmd} (msg {}) failed: {} (errno {}); {n} posted errors so far",
                            hdr.msg_id,
                            f.why,
                            f.errno
                        );
                    }
                    return Outcome::Silent;
                }
                self.stats.error_replies += 1;
                log::debug!(
                    "{cmd} (msg {}) failed: {} (errno {})",
                    hdr.msg_id,
                    f.why,
                    f.errno
                );
                let reply = Message::error_reply(&hdr, f.errno);
                if hdr.command == Command::Version as u16 && !session.negotiated {
                    Outcome::Close(reply, format!("version negotiation failed: {}", f.why))
                } else {
                    Outcome::Reply(reply)
                }
            }
        }
    }

    fn dispatch(
        &mut self,
        session: &mut Session,
        hdr: &Header,
        req: Request<'_>,
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let cmd = req.command();
        if !session.negotiated && cmd != Command::Version {
            return Err(Failure::new(errno::EINVAL, "VERSION must come first"));
        }
        if cmd.is_extension() && !session.vsmmu {
            return Err(Failure::new(
                errno::ENOSYS,
                "vsmmu extension not negotiated in VERSION",
            ));
        }
        let max_fds = match cmd {
            Command::DmaMap => 1,
            // The ring's memfd, the kick and the ack eventfds.
            Command::VsmmuNotifySetup => 3,
            // The cdev, and the VMM's iommufd with VSMMU_DEVICE_VMM_BOUND.
            Command::VsmmuAttachDevice => 2,
            Command::DeviceSetIrqs => self.limits.max_msg_fds as usize,
            _ => 0,
        };
        if fds.len() > max_fds {
            return Err(Failure::new(
                errno::EINVAL,
                format!("{} fds with {cmd:?}, at most {max_fds}", fds.len()),
            ));
        }
        let reply = Message::reply(hdr);
        let out = match req {
            Request::Version { major, minor, data } => {
                self.version(session, reply, major, minor, &data)?
            }
            Request::DmaMap(m) => {
                let fd = fds.into_iter().next().ok_or_else(|| {
                    Failure::new(errno::EINVAL, "DMA_MAP without a file descriptor")
                })?;
                if m.flags & !(vu::DMA_MAP_READ | vu::DMA_MAP_WRITE) != 0 {
                    return Err(Failure::new(
                        errno::EINVAL,
                        format!("DMA_MAP flags {:#x}", m.flags),
                    ));
                }
                let writable = m.flags & vu::DMA_MAP_WRITE != 0;
                let host_addr = self.mem.map(fd, m.offset, m.addr, m.size, writable)?;
                if let Err(e) = self.host.map_guest_ram(m.addr, m.size, host_addr) {
                    let _ = self.mem.unmap(m.addr, m.size);
                    return Err(e.into());
                }
                self.smmu.memory_changed(&mut ctx!(self));
                reply.finish()
            }
            Request::DmaUnmap(u) => {
                if u.flags != 0 {
                    return Err(Failure::new(
                        errno::EINVAL,
                        format!("DMA_UNMAP flags {:#x}", u.flags),
                    ));
                }
                self.mem.unmap(u.addr, u.size)?;
                if let Err(e) = self.host.unmap_guest_ram(u.addr, u.size) {
                    log::warn!("host unmap of {:#x}+{:#x}: {e}", u.addr, u.size);
                }
                reply.push(&u).finish()
            }
            Request::DeviceGetInfo(_) => reply
                .push(&DeviceInfo {
                    argsz: DeviceInfo::SIZE,
                    flags: vu::VFIO_DEVICE_FLAGS_PLATFORM | vu::VFIO_DEVICE_FLAGS_RESET,
                    num_regions: 1,
                    num_irqs: NUM_IRQS as u32,
                })
                .finish(),
            Request::DeviceGetRegionInfo(r) => {
                if r.index != 0 {
                    return Err(Failure::new(
                        errno::EINVAL,
                        format!("no region {}", r.index),
                    ));
                }
                reply
                    .push(&RegionInfo {
                        argsz: RegionInfo::SIZE,
                        flags: vu::VFIO_REGION_INFO_FLAG_READ | vu::VFIO_REGION_INFO_FLAG_WRITE,
                        index: 0,
                        cap_offset: 0,
                        size: REGION_SIZE,
                        offset: 0,
                    })
                    .finish()
            }
            Request::DeviceGetRegionIoFds(r) => {
                if r.index != 0 {
                    return Err(Failure::new(
                        errno::EINVAL,
                        format!("no region {}", r.index),
                    ));
                }
                // No sub-region is served through ioeventfds.
                reply
                    .push(&RegionIoFds {
                        argsz: RegionIoFds::SIZE,
                        flags: 0,
                        index: 0,
                        count: 0,
                    })
                    .finish()
            }
            Request::DeviceGetIrqInfo(q) => {
                if q.index as usize >= NUM_IRQS {
                    return Err(Failure::new(
                        errno::EINVAL,
                        format!("no irq index {}", q.index),
                    ));
                }
                reply
                    .push(&IrqInfo {
                        argsz: IrqInfo::SIZE,
                        flags: vu::VFIO_IRQ_INFO_EVENTFD | vu::VFIO_IRQ_INFO_MASKABLE,
                        index: q.index,
                        count: 1,
                    })
                    .finish()
            }
            Request::DeviceSetIrqs { set, data } => {
                self.set_irqs(&set, data, fds)?;
                reply.finish()
            }
            Request::RegionRead(a) => {
                self.check_access(&a)?;
                let v = self.smmu.read(a.offset, a.count as usize, &mut ctx!(self));
                let bytes = v.to_le_bytes();
                reply.push(&a).bytes(&bytes[..a.count as usize]).finish()
            }
            Request::RegionWrite { access, data } => {
                self.check_access(&access)?;
                self.region_write(access.offset, data);
                reply.push(&access).finish()
            }
            Request::RegionWriteMulti(entries) => {
                // Validate all before applying any: a batch is all or nothing.
                for e in &entries {
                    self.check_access(&RegionAccess {
                        offset: e.offset,
                        region: e.region,
                        count: e.count,
                    })?;
                }
                for e in &entries {
                    self.region_write(e.offset, &e.data[..e.count as usize]);
                }
                reply
                    .push(&WriteMultiHeader {
                        wr_cnt: entries.len() as u64,
                    })
                    .finish()
            }
            Request::DeviceReset => {
                self.smmu.reset(&mut ctx!(self));
                // Reset also leaves any migration state (the spec's way out of ERROR).
                self.mig = MigState::Running;
                self.smmu.set_running(true, &mut ctx!(self));
                reply.finish()
            }
            Request::DeviceFeature { feature, data } => {
                return self.device_feature(hdr, feature, data).map(Some);
            }
            Request::MigDataRead(r) => {
                let MigState::StopCopy { data, pos } = &mut self.mig else {
                    return Err(Failure::new(
                        errno::EINVAL,
                        "MIG_DATA_READ outside STOP_COPY",
                    ));
                };
                let n = (r.size as usize)
                    .min(data.len() - *pos)
                    .min(self.limits.max_data_xfer_size as usize);
                let chunk = &data[*pos..*pos + n];
                *pos += n;
                reply
                    .push(&vu::MigData {
                        argsz: (vu::MigData::SIZE as usize + n) as u32,
                        size: n as u32,
                    })
                    .bytes(chunk)
                    .finish()
            }
            Request::MigDataWrite { data, .. } => {
                let MigState::Resuming { data: buf } = &mut self.mig else {
                    return Err(Failure::new(
                        errno::EINVAL,
                        "MIG_DATA_WRITE outside RESUMING",
                    ));
                };
                if buf.len() + data.len() > migration::MAX_STREAM {
                    return Err(Failure::new(errno::ENOSPC, "state stream too large"));
                }
                buf.extend_from_slice(data);
                reply.finish()
            }
            Request::VsmmuAttachBoundDevice(d) => {
                let mut fds = fds.into_iter();
                let (Some(cdev), Some(iommufd)) = (fds.next(), fds.next()) else {
                    return Err(Failure::new(
                        errno::EINVAL,
                        "ATTACH_DEVICE of a VMM-bound device takes two fds: the cdev, the iommufd",
                    ));
                };
                self.check_attach(d.vsid)?;
                if self.host.viommu_ends(DeviceChange::AttachVmmBound) {
                    self.smmu.viommu_ending(&mut ctx!(self));
                }
                let dev = VmmDevice {
                    cdev,
                    iommufd,
                    dev_id: d.dev_id,
                    parent_hwpt_id: d.parent_hwpt_id,
                };
                let dev_id = self.host.attach_vmm_device(d.vsid, dev)?;
                self.attached(reply, d.vsid, dev_id)
            }
            Request::VsmmuAttachDevice(d) => {
                if self.host.needs_device_fd() != (fds.len() == 1) {
                    return Err(Failure::new(
                        errno::EINVAL,
                        format!(
                            "the {} host takes {} device fd with ATTACH_DEVICE, got {}",
                            self.host.name(),
                            u8::from(self.host.needs_device_fd()),
                            fds.len()
                        ),
                    ));
                }
                self.check_attach(d.vsid)?;
                let dev_id = self.host.attach_device(d.vsid, fds.into_iter().next())?;
                self.attached(reply, d.vsid, dev_id)
            }
            Request::VsmmuDetachDevice(d) => {
                if !self.host.is_attached(d.vsid) {
                    return Err(Failure::new(
                        errno::ENOENT,
                        format!("vSID {:#x} is not attached", d.vsid),
                    ));
                }
                if self.host.viommu_ends(DeviceChange::Detach(d.vsid)) {
                    self.smmu.viommu_ending(&mut ctx!(self));
                }
                self.host.detach_device(d.vsid)?;
                self.smmu.device_detached(d.vsid);
                reply.push(&d).finish()
            }
            Request::VsmmuSimInject(records) => {
                let Some(sim) = self.host.sim_controls() else {
                    return Err(Failure::new(
                        errno::ENOTSUP,
                        "SIM_INJECT needs the sim host",
                    ));
                };
                let (queued, dropped) = sim.inject(&records)?;
                reply
                    .push(&SimInjectReply {
                        argsz: SimInjectReply::SIZE,
                        flags: 0,
                        queued,
                        dropped,
                    })
                    .finish()
            }
            Request::VsmmuSimDma { req, data } => {
                let Some(sim) = self.host.sim_controls() else {
                    return Err(Failure::new(errno::ENOTSUP, "SIM_DMA needs the sim host"));
                };
                let r = sim.dma(&self.mem, &req, data);
                reply
                    .push(&vu::SimDmaReply {
                        argsz: (vu::SimDmaReply::SIZE as usize + r.data.len()) as u32,
                        flags: req.flags,
                        status: r.status,
                        reserved: 0,
                    })
                    .bytes(&r.data)
                    .finish()
            }
            Request::VsmmuGetStats(r) => self.get_stats(reply, &r),
            Request::VsmmuNotifySetup(n) => {
                let mut fds = fds.into_iter();
                let (Some(ring), Some(kick), Some(ack)) = (fds.next(), fds.next(), fds.next())
                else {
                    return Err(Failure::new(
                        errno::EINVAL,
                        "NOTIFY_SETUP takes three fds: the ring memfd, the kick and the ack \
                         eventfds",
                    ));
                };
                self.notify
                    .setup(ring, n.log2_entries, kick, ack)
                    .map_err(|w| Failure::new(errno::EINVAL, w))?;
                self.notify_generation += 1;
                log::info!(
                    "invalidation ring of {} records shared with the client",
                    1u32 << n.log2_entries
                );
                reply.push(&n).finish()
            }
            Request::VsmmuTranslate(t) => {
                if self.host.sim_controls().is_none() {
                    return Err(Failure::new(
                        errno::ENOTSUP,
                        "TRANSLATE (VMM-emulated devices) needs the sim host",
                    ));
                }
                let write = t.flags & vu::TRANSLATE_WRITE != 0;
                let ssid = (t.ssid != vu::SIM_DMA_NO_SSID).then_some(t.ssid);
                let events = t.flags & vu::TRANSLATE_NO_EVENT == 0;
                // The guest's own stream table first, as an emulated SMMUv3
                // decides: a configuration error is the guest's event.
                let verdict = if events {
                    self.smmu.check_transaction(t.sid, ssid, &mut ctx!(self))
                } else {
                    TxnCheck::Proceed
                };
                let refused = |status| VmmTranslation {
                    status,
                    addr: 0,
                    mask: 0,
                };
                let r = match (verdict, self.host.sim_controls()) {
                    (TxnCheck::Proceed, Some(sim)) => {
                        sim.translate_for_vmm(&self.mem, t.sid, ssid, t.iova, write, events)
                    }
                    (TxnCheck::Proceed, None) => refused(vu::SIM_DMA_ABORTED),
                    (TxnCheck::Abort, _) => refused(vu::SIM_DMA_ABORTED),
                    (TxnCheck::Event(rec), _) => refused(raw_event_type(&rec).into()),
                };
                self.stats.translations += 1;
                if r.status != 0 {
                    self.stats.translation_faults += 1;
                }
                let perm = match (r.status, write) {
                    (0, true) => vu::TRANSLATE_PERM_WRITE,
                    (0, false) => vu::TRANSLATE_PERM_READ,
                    _ => 0,
                };
                let ahead = self.translate_ahead(&t, ssid, write, perm, &r);
                let head = vu::TranslateReply::SIZE as usize;
                let reply = reply.push(&vu::TranslateReply {
                    argsz: (head + ahead.len() * vu::TranslateAhead::SIZE as usize) as u32,
                    flags: t.flags,
                    status: r.status,
                    perm,
                    addr: r.addr,
                    mask: r.mask,
                });
                ahead.iter().fold(reply, |m, a| m.push(a)).finish()
            }
        };
        Ok(Some(out))
    }

    /// What both forms of ATTACH_DEVICE check before the host is asked.
    fn check_attach(&self, vsid: u32) -> Result<(), Failure> {
        if self.host.is_attached(vsid) {
            return Err(Failure::new(
                errno::EEXIST,
                format!("vSID {vsid:#x} already attached"),
            ));
        }
        self.smmu
            .check_sid(vsid)
            .map_err(|w| Failure::new(errno::EINVAL, w))
    }

    /// The host attached `vsid` as `dev_id`: the model installs its
    /// configuration; the reply carries the id.
    fn attached(&mut self, reply: Message, vsid: u32, dev_id: u32) -> Vec<u8> {
        self.smmu.device_attached(vsid, &mut ctx!(self));
        reply
            .push(&VsmmuDevice {
                argsz: VsmmuDevice::SIZE,
                flags: 0,
                vsid,
                reserved: dev_id,
            })
            .finish()
    }

    /// [`vu::TRANSLATE_AHEAD`]: the granules after a translated access,
    /// for the same access, without events, up to the first that faults.
    fn translate_ahead(
        &mut self,
        t: &vu::Translate,
        ssid: Option<u32>,
        write: bool,
        perm: u32,
        first: &VmmTranslation,
    ) -> Vec<vu::TranslateAhead> {
        let room = (t.argsz as usize).saturating_sub(vu::TranslateReply::SIZE as usize)
            / vu::TranslateAhead::SIZE as usize;
        let n = room.min(vu::TRANSLATE_AHEAD_MAX);
        let mut out = Vec::new();
        if t.flags & vu::TRANSLATE_AHEAD == 0 || first.status != 0 || n == 0 {
            return out;
        }
        let Some(sim) = self.host.sim_controls() else {
            return out;
        };
        let mut next = t.iova & !first.mask;
        let mut granule = first.mask.wrapping_add(1);
        while out.len() < n {
            let Some(iova) = next.checked_add(granule) else {
                break;
            };
            let r = sim.translate_for_vmm(&self.mem, t.sid, ssid, iova, write, false);
            if r.status != 0 {
                break;
            }
            out.push(vu::TranslateAhead {
                iova,
                addr: r.addr,
                mask: r.mask,
                perm,
                reserved: 0,
            });
            next = iova;
            granule = r.mask.wrapping_add(1);
        }
        self.stats.translations_ahead += out.len() as u64;
        out
    }

    fn version(
        &mut self,
        session: &mut Session,
        reply: Message,
        major: u16,
        minor: u16,
        data: &VersionData,
    ) -> Result<Vec<u8>, Failure> {
        if session.negotiated {
            return Err(Failure::new(errno::EINVAL, "VERSION already negotiated"));
        }
        if major != vu::VERSION_MAJOR {
            return Err(Failure::new(
                errno::ENOTSUP,
                format!(
                    "major version {major} unsupported (we speak {})",
                    vu::VERSION_MAJOR
                ),
            ));
        }
        let theirs = &data.capabilities;
        let vsmmu = theirs
            .vsmmu
            .as_ref()
            .is_some_and(|v| v.version >= vu::VSMMU_EXT_VERSION);
        let caps = Capabilities {
            max_msg_fds: Some(self.limits.max_msg_fds),
            max_data_xfer_size: Some(self.limits.max_data_xfer_size.into()),
            pgsizes: Some(PAGE_SIZE),
            max_dma_maps: Some(self.limits.max_dma_maps),
            migration: Some(MigrationCap {
                pgsize: PAGE_SIZE,
                max_bitmap_size: 0,
            }),
            write_multiple: Some(true),
            vsmmu: vsmmu.then_some(VsmmuCap {
                version: vu::VSMMU_EXT_VERSION,
            }),
        };
        session.negotiated = true;
        session.minor = minor.min(vu::VERSION_MINOR);
        session.vsmmu = vsmmu;
        self.stats.clients += 1;
        Ok(reply
            .push(&VersionHeader {
                major,
                minor: session.minor,
            })
            .bytes(&VersionData { capabilities: caps }.encode())
            .finish())
    }

    fn check_access(&self, a: &RegionAccess) -> Result<(), Failure> {
        if a.region != 0 {
            return Err(Failure::new(
                errno::EINVAL,
                format!("no region {}", a.region),
            ));
        }
        if a.count != 4 && a.count != 8 {
            return Err(Failure::new(
                errno::EINVAL,
                format!("{}-byte access at {:#x}: only 4 and 8", a.count, a.offset),
            ));
        }
        if a.offset % u64::from(a.count) != 0 {
            return Err(Failure::new(
                errno::EINVAL,
                format!("unaligned {}-byte access at {:#x}", a.count, a.offset),
            ));
        }
        if a.offset
            .checked_add(a.count.into())
            .is_none_or(|end| end > REGION_SIZE)
        {
            return Err(Failure::new(
                errno::EINVAL,
                format!(
                    "access at {:#x} outside the {REGION_SIZE:#x}-byte region",
                    a.offset
                ),
            ));
        }
        Ok(())
    }

    fn region_write(&mut self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        self.smmu
            .write(offset, data.len(), u64::from_le_bytes(b), &mut ctx!(self));
    }

    fn set_irqs(&mut self, set: &IrqSet, data: &[u8], fds: Vec<OwnedFd>) -> Result<(), Failure> {
        let index = set.index as usize;
        if index >= NUM_IRQS {
            return Err(Failure::new(
                errno::EINVAL,
                format!("no irq index {}", set.index),
            ));
        }
        let dtype = set.flags & vu::VFIO_IRQ_SET_DATA_TYPE_MASK;
        let action = set.flags & vu::VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if set.flags & !(vu::VFIO_IRQ_SET_DATA_TYPE_MASK | vu::VFIO_IRQ_SET_ACTION_TYPE_MASK) != 0
            || dtype.count_ones() != 1
            || action.count_ones() != 1
        {
            return Err(Failure::new(
                errno::EINVAL,
                format!("SET_IRQS flags {:#x}", set.flags),
            ));
        }
        // Each index has one vector.
        if set.start != 0 || set.count > 1 {
            return Err(Failure::new(
                errno::EINVAL,
                format!(
                    "irq {index}: start {} count {}: one vector only",
                    set.start, set.count
                ),
            ));
        }
        if dtype != vu::VFIO_IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
            return Err(Failure::new(errno::EINVAL, "fds without DATA_EVENTFD"));
        }
        let wanted = match dtype {
            vu::VFIO_IRQ_SET_DATA_BOOL => {
                if data.len() != set.count as usize {
                    return Err(Failure::new(errno::EINVAL, "DATA_BOOL needs count bytes"));
                }
                data.first().is_some_and(|b| *b != 0)
            }
            _ => {
                if !data.is_empty() {
                    return Err(Failure::new(errno::EINVAL, "unexpected SET_IRQS data"));
                }
                true
            }
        };
        match (action, dtype) {
            (vu::VFIO_IRQ_SET_ACTION_TRIGGER, vu::VFIO_IRQ_SET_DATA_EVENTFD) => {
                if fds.len() > set.count as usize {
                    return Err(Failure::new(errno::EINVAL, "more fds than vectors"));
                }
                // No fd (or count 0) de-assigns.
                self.irqs.set_fd(index, fds.into_iter().next());
            }
            (vu::VFIO_IRQ_SET_ACTION_TRIGGER, _) => {
                if set.count == 0 && dtype == vu::VFIO_IRQ_SET_DATA_NONE {
                    self.irqs.set_fd(index, None);
                } else if wanted {
                    self.irqs.trigger(index);
                }
            }
            (
                vu::VFIO_IRQ_SET_ACTION_MASK | vu::VFIO_IRQ_SET_ACTION_UNMASK,
                vu::VFIO_IRQ_SET_DATA_EVENTFD,
            ) => {
                return Err(Failure::new(
                    errno::ENOTSUP,
                    "mask/unmask notification eventfds are not supported",
                ));
            }
            (vu::VFIO_IRQ_SET_ACTION_MASK, _) => {
                if wanted && set.count == 1 {
                    self.irqs.set_masked(index, true);
                }
            }
            _ => {
                if wanted && set.count == 1 {
                    self.irqs.set_masked(index, false);
                }
            }
        }
        Ok(())
    }

    fn device_feature(
        &mut self,
        hdr: &Header,
        feature: vu::DeviceFeature,
        data: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let index = feature.flags & vu::DEVICE_FEATURE_MASK;
        let get = feature.flags & vu::DEVICE_FEATURE_GET != 0;
        let set = feature.flags & vu::DEVICE_FEATURE_SET != 0;
        let probe = feature.flags & vu::DEVICE_FEATURE_PROBE != 0;
        let known = vu::DEVICE_FEATURE_MASK
            | vu::DEVICE_FEATURE_GET
            | vu::DEVICE_FEATURE_SET
            | vu::DEVICE_FEATURE_PROBE;
        if feature.flags & !known != 0 || (get && set && !probe) || (!get && !set && !probe) {
            return Err(Failure::new(
                errno::EINVAL,
                format!("DEVICE_FEATURE flags {:#x}", feature.flags),
            ));
        }
        let reply = Message::reply(hdr);
        let echo = |data: &[u8]| reply.clone().push(&feature).bytes(data).finish();
        match index {
            vu::DEVICE_FEATURE_MIGRATION => {
                if set {
                    return Err(Failure::new(
                        errno::EINVAL,
                        "the migration feature cannot be set",
                    ));
                }
                if probe {
                    return Ok(echo(&[]));
                }
                let flags = vu::MIGRATION_STOP_COPY.to_le_bytes();
                Ok(reply
                    .push(&vu::DeviceFeature {
                        argsz: vu::DeviceFeature::SIZE + flags.len() as u32,
                        flags: feature.flags,
                    })
                    .bytes(&flags)
                    .finish())
            }
            vu::DEVICE_FEATURE_MIG_DEVICE_STATE => {
                if probe {
                    return Ok(echo(&[]));
                }
                if get {
                    let st = vu::MigDeviceState {
                        device_state: self.mig.number(),
                        data_fd: -1,
                    };
                    return Ok(reply
                        .push(&vu::DeviceFeature {
                            argsz: vu::DeviceFeature::SIZE + vu::MigDeviceState::SIZE,
                            flags: feature.flags,
                        })
                        .push(&st)
                        .finish());
                }
                let st = vsmmu_protocol::vfio_user::MigDeviceState::read_from_prefix(data)
                    .map(|(s, _)| s)
                    .map_err(|_| {
                        Failure::new(errno::EINVAL, "MIG_DEVICE_STATE needs 8 bytes of data")
                    })?;
                self.set_mig_state(st.device_state)?;
                Ok(echo(data))
            }
            _ => Err(Failure::new(
                errno::ENOTSUP,
                format!("device feature {index} not supported"),
            )),
        }
    }

    /// Moves the migration state machine to `to` along the spec's path.
    fn set_mig_state(&mut self, to: u32) -> Result<(), Failure> {
        let arcs = migration::path(self.mig.number(), to).ok_or_else(|| {
            Failure::new(errno::EINVAL, format!("migration state {to} not supported"))
        })?;
        for arc in arcs {
            self.mig_arc(arc)?;
        }
        Ok(())
    }

    fn mig_arc(&mut self, to: u32) -> Result<(), Failure> {
        use vsmmu_protocol::vfio_user::mig_state::*;
        let next = match (std::mem::take(&mut self.mig), to) {
            (MigState::Running, STOP) => {
                self.smmu.set_running(false, &mut ctx!(self));
                MigState::Stop
            }
            (MigState::Stop, RUNNING) => {
                self.smmu.set_running(true, &mut ctx!(self));
                MigState::Running
            }
            (MigState::Stop, STOP_COPY) => {
                // What the host still holds joins the saved buffer.
                let mut buf = vec![0u8; 64 * 1024];
                self.drain_veventq(&mut buf, false);
                let data = migration::encode(&self.smmu.save());
                log::info!("device state saved: {} bytes", data.len());
                MigState::StopCopy { data, pos: 0 }
            }
            (MigState::StopCopy { .. }, STOP) => MigState::Stop,
            (MigState::Stop, RESUMING) => MigState::Resuming { data: Vec::new() },
            (MigState::Resuming { data }, STOP) => {
                let loaded = migration::decode(&data)
                    .map_err(|e| e.to_string())
                    .and_then(|st| self.smmu.check_state(&st).map(|()| st));
                match loaded {
                    Ok(st) => {
                        self.smmu.restore(st, &mut ctx!(self));
                        log::info!("device state loaded: {} bytes", data.len());
                        MigState::Stop
                    }
                    Err(why) => {
                        log::warn!("refusing the device state: {why}");
                        self.mig = MigState::Resuming { data };
                        return Err(Failure::new(errno::EINVAL, why));
                    }
                }
            }
            (cur, _) => {
                let n = cur.number();
                self.mig = cur;
                return Err(Failure::new(
                    errno::EINVAL,
                    format!("no arc from state {n} to {to}"),
                ));
            }
        };
        self.mig = next;
        Ok(())
    }

    fn get_stats(&mut self, reply: Message, r: &StatsRequest) -> Vec<u8> {
        self.smmu.refresh_stats(&mut self.stats);
        if let Some(hw) = self.host.host_hw_info() {
            self.stats.host_idr = hw.idr;
        }
        let json = self.stats.to_json();
        let argsz = (8 + json.len()) as u32;
        let reply = reply.push(&StatsRequest { argsz, flags: 0 });
        if r.argsz < argsz {
            // Too small: say how much is needed, as the spec's argsz rule says.
            return reply.finish();
        }
        reply.bytes(&json).finish()
    }

    /// Reads the vEVENTQ until it is empty (or one record, in seed-style
    /// mode) and hands the records to the model. Returns true when more may
    /// remain (seed-style mode only).
    pub fn drain_veventq(&mut self, buf: &mut [u8], one_record: bool) -> bool {
        loop {
            let want = if one_record {
                buf.len().min(crate::host::VEVENT_RECORD_SIZE)
            } else {
                buf.len()
            };
            let n = match self.host.read_veventq(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    log::error!("vEVENTQ read: {e}");
                    return false;
                }
            };
            self.stats.veventq_read_calls += 1;
            if n == 0 {
                return false;
            }
            self.smmu.host_records(&buf[..n], &mut ctx!(self));
            if one_record {
                return true;
            }
            // Room for another record left over: the queue was empty at that
            // moment, and every later event raises a new edge (the kernel
            // wakes the poll per event), so no trailing read returning 0.
            if buf.len() - n >= crate::host::VEVENT_RECORD_SIZE {
                return false;
            }
        }
    }
}
