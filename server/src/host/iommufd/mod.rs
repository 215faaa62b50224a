//! The iommufd host backend: real ioctls on `/dev/iommu` and VFIO cdevs.
//!
//! One [`IommufdHost`] is one vSMMU on the host side:
//!
//! - an IOAS, allocated at open, holding the guest RAM mappings
//!   (IOVA = guest physical address, [`HostIommu::map_guest_ram`]);
//! - when the first device is attached (its VFIO cdev fd bound to the
//!   iommufd): a nesting-parent HWPT over the IOAS (stage 2), the vIOMMU on
//!   it, and two shared nested HWPTs, one abort vSTE and one bypass vSTE,
//!   that every device of the vIOMMU reuses (as QEMU's `smmuv3-accel.c`);
//! - per device: a vDEVICE (virt_id = the guest vSID) and, while the guest
//!   STE asks for stage-1 translation, a nested HWPT made from its vSTE;
//! - the vEVENTQ of the vIOMMU, whose fd the event loop polls.
//!
//! Teardown follows the kernel's object dependencies: vEVENTQ fd closed then
//! vEVENTQ destroyed; each device detached, its nested HWPT and vDEVICE
//! destroyed, its cdev closed; the shared HWPTs, the vIOMMU, the parent HWPT
//! and the IOAS destroyed; the iommufd closed last.
//!
//! Layouts and request numbers are in [`vsmmu_protocol::iommufd`].
//!
//! ## Who owns a device's binding (the fd contract)
//!
//! A VFIO cdev is bound to one iommufd per *open file* and stays bound until
//! the last descriptor of that open file is closed (`vfio_df_ioctl_bind_iommufd`
//! refuses a second bind with EINVAL; a second open file of a bound device
//! cannot bind either). vsmmud binds the cdev it receives with
//! `VSMMU_ATTACH_DEVICE` to its own iommufd. The VMM may keep its copy of the
//! fd — region access (BARs, config space, interrupts) on it works because the
//! binding belongs to the open file — but must not bind that open file to
//! another iommufd. On detach vsmmud closes its copy; while the VMM still
//! holds one the device stays bound (and attached to nothing, so its DMA is
//! blocked). A re-attach may send the same open file again: vsmmud then
//! reuses the device id it was bound with, remembered by the cdev's device
//! number. A VMM that closed every copy sends a freshly opened cdev.
//!
//! ## What the guest is promised
//!
//! The guest's ID registers come from [`GUEST_PROFILE`], not from whichever
//! device is bound first: the host's registers are only known once a device
//! is bound, and a hot-plugged first device must not change what the guest
//! already probed. Each device's SMMU is checked against the profile at
//! attach ([`super::check_nesting_host`]), and every device of one vsmmud
//! must sit behind the same physical SMMU (one vIOMMU).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use vsmmu_protocol::smmu::ste::{check_vste, VsteConfig};

use super::{
    DeviceChange, HostError, HostIommu, HwInfo, InvalidateError, SteAction, VmmDevice,
    MAX_INVALIDATION_ENTRIES,
};

mod sys;

/// Where the iommufd character device lives.
pub const IOMMUFD_PATH: &str = "/dev/iommu";

/// The host profile the guest's ID registers derive from: what any
/// nesting-capable SMMUv3 offers, in the fields the uAPI lets a VMM use.
/// IDR0 = S2P | S1P | TTF AArch64 | COHACC | ASID16 | TTENDIAN LE
/// (0x0040_101b); IDR1 = SIDSIZE 16 | EVTQS 19 | CMDQS 19 (0x0273_0010,
/// QEMU's; no SubstreamIDs); IDR3 = 0 (no range invalidation, BBML 0);
/// IDR5 = OAS 44 bits | GRAN4K | GRAN64K (0x54); AIDR = SMMUv3.1.
pub const GUEST_PROFILE: HwInfo = HwInfo {
    idr: [0x0040_101b, 0x0273_0010, 0, 0, 0, 0x54],
    iidr: 0,
    aidr: 1,
};

/// What a device is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    /// The shared abort HWPT.
    Abort,
    /// The shared bypass HWPT.
    Bypass,
    /// Its own nested HWPT (stage-1 translate vSTE), by id.
    Nested(u32),
}

/// One attached device.
#[derive(Debug)]
struct Device {
    /// The VFIO cdev fd; closing it unbinds the device from the iommufd.
    cdev: OwnedFd,
    /// Its id in the iommufd (`VFIO_DEVICE_BIND_IOMMUFD`).
    dev_id: u32,
    /// The cdev's device number: the key under which a detach remembers
    /// `dev_id` (see [`IommufdHost::bind_or_reuse`]).
    rdev: u64,
    /// Its vDEVICE (virt_id = vSID).
    vdevice_id: u32,
    /// The HWPT it is attached to.
    config: Config,
    /// Bound by the VMM in its iommufd ([`VmmContext`]); vsmmud neither
    /// bound it nor unbinds it.
    vmm_bound: bool,
}

/// The VMM's iommufd context, while devices the VMM bound are attached
/// (see the module documentation).
#[derive(Debug)]
struct VmmContext {
    /// vsmmud's copy of the VMM's iommufd.
    iommufd: OwnedFd,
    /// The VMM's nesting parent over its IOAS of guest RAM.
    parent_hwpt_id: u32,
}

/// Where the vIOMMU's nesting parent comes from.
#[derive(Debug, Clone, Copy)]
enum Parent {
    /// Allocated by vsmmud over its IOAS (by id).
    Own(u32),
    /// The VMM's HWPT (by id).
    Vmm(u32),
}

/// The vIOMMU and the objects allocated with it.
#[derive(Debug, Clone, Copy)]
struct Viommu {
    /// The nesting parent (stage 2 over the IOAS).
    parent_hwpt_id: u32,
    /// True when vsmmud allocated the parent (its own IOAS), false when it
    /// is the VMM's.
    own_parent: bool,
    /// The vIOMMU.
    viommu_id: u32,
    /// Shared nested HWPT with vSTE `{V=1, Config=abort}`.
    abort_hwpt_id: u32,
    /// Shared nested HWPT with vSTE `{V=1, Config=bypass}`.
    bypass_hwpt_id: u32,
}

/// The vEVENTQ.
#[derive(Debug)]
struct Veventq {
    fd: OwnedFd,
    id: u32,
}

/// The real host backend over iommufd (see the module documentation).
#[derive(Debug)]
pub struct IommufdHost {
    iommufd: OwnedFd,
    ioas_id: u32,
    /// The VMM's context, which the vIOMMU and its objects live in while
    /// devices the VMM bound are attached; `None`: vsmmud's own.
    vmm: Option<VmmContext>,
    /// What GET_HW_INFO reported for the vIOMMU's SMMU.
    hw_info: Option<HwInfo>,
    viommu: Option<Viommu>,
    devices: BTreeMap<u32, Device>,
    veventq: Option<Veventq>,
    /// Device ids of cdevs this process closed at detach, by the cdev's
    /// device number: the open file may still be bound (the VMM kept a
    /// copy), and a re-attach of it cannot bind again.
    released: BTreeMap<u64, u32>,
    /// Guest RAM mapped into the IOAS, in bytes.
    mapped: u64,
    /// Bytes the kernel lets this process pin now: [`memlock_limit`]
    /// (replaced in tests).
    memlock_limit: fn() -> Option<u64>,
}

impl IommufdHost {
    /// Opens the backend on `iommufd` (`--iommufd-fd`) or, when `None`, on
    /// `/dev/iommu` (`O_RDWR | O_CLOEXEC`), and allocates the IOAS.
    ///
    /// A host without `/dev/iommu` gets one clear error (ENOENT) saying that
    /// it has no iommufd.
    pub fn open(iommufd: Option<OwnedFd>) -> Result<Self, HostError> {
        match iommufd {
            Some(fd) => Self::from_fd(fd),
            None => Self::open_path(Path::new(IOMMUFD_PATH)),
        }
    }

    /// [`IommufdHost::open`] on the iommufd character device at `path`.
    fn open_path(path: &Path) -> Result<Self, HostError> {
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| open_error(path, &e))?;
        Self::from_fd(file.into())
    }

    /// Allocates the IOAS on an open iommufd.
    fn from_fd(iommufd: OwnedFd) -> Result<Self, HostError> {
        let ioas_id = sys::ioas_alloc(iommufd.as_fd()).map_err(|e| {
            if e.errno == Errno::ENOTTY as i32 {
                HostError::new(
                    e.op,
                    e.errno,
                    "the given fd is not an iommufd (the ioctl is unknown to it)",
                )
            } else {
                e
            }
        })?;
        Ok(IommufdHost {
            iommufd,
            ioas_id,
            vmm: None,
            hw_info: None,
            viommu: None,
            devices: BTreeMap::new(),
            veventq: None,
            released: BTreeMap::new(),
            mapped: 0,
            memlock_limit,
        })
    }

    /// Binds `cdev` to the iommufd, or — when its open file is still bound
    /// from an earlier attach (EINVAL) — takes the device id it had.
    fn bind_or_reuse(
        &mut self,
        vsid: u32,
        cdev: BorrowedFd<'_>,
        rdev: u64,
    ) -> Result<(u32, bool), HostError> {
        match sys::bind(cdev, self.iommufd.as_fd()) {
            Ok(dev_id) => {
                // The kernel reuses freed ids: a remembered one is stale now.
                self.released.retain(|_, id| *id != dev_id);
                self.released.remove(&rdev);
                Ok((dev_id, false))
            }
            Err(e) if e.errno == Errno::EINVAL as i32 => {
                let reusable = self.released.get(&rdev).copied().filter(|id| {
                    !self.devices.values().any(|d| d.dev_id == *id)
                        && sys::get_hw_info(self.iommufd.as_fd(), *id).is_ok()
                });
                match reusable {
                    Some(dev_id) => {
                        self.released.remove(&rdev);
                        log::info!(
                            "vSID {vsid:#x}: the device is still bound from its last attach \
                             (device id {dev_id}): reused"
                        );
                        Ok((dev_id, true))
                    }
                    None => Err(HostError::new(
                        e.op,
                        Errno::EBUSY as i32,
                        format!(
                            "vSID {vsid:#x}: the VFIO cdev is already bound to an iommufd \
                             (another open file of this device, or another iommufd, holds it): \
                             vsmmud binds the cdev itself; the VMM must not bind it"
                        ),
                    )),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The iommufd the vIOMMU and its objects live in.
    fn ctx(&self) -> BorrowedFd<'_> {
        match &self.vmm {
            Some(vmm) => vmm.iommufd.as_fd(),
            None => self.iommufd.as_fd(),
        }
    }

    /// Forgets a device whose cdev this process is closing: its open file
    /// may stay bound while the VMM holds a copy.
    fn release(&mut self, rdev: u64, dev_id: u32) {
        self.released.insert(rdev, dev_id);
    }

    /// GET_HW_INFO for a newly bound device: the profile must fit, and a
    /// second device must be behind the vIOMMU's SMMU.
    fn check_device(&self, vsid: u32, dev_id: u32) -> Result<HwInfo, HostError> {
        let hw = sys::get_hw_info(self.ctx(), dev_id)
            .map_err(|e| HostError::new(e.op, e.errno, format!("vSID {vsid:#x}: {}", e.msg)))?;
        log::info!(
            "vSID {vsid:#x}: host SMMU IDR0 {:#010x} IDR1 {:#010x} IDR3 {:#010x} IDR5 {:#010x} \
             IIDR {:#x} AIDR {:#x}",
            hw.idr[0],
            hw.idr[1],
            hw.idr[3],
            hw.idr[5],
            hw.iidr,
            hw.aidr
        );
        super::check_nesting_host(&hw, &GUEST_PROFILE).map_err(|why| {
            HostError::new(
                "IOMMU_GET_HW_INFO",
                Errno::EOPNOTSUPP as i32,
                format!("vSID {vsid:#x}: cannot back this vSMMU: {why}"),
            )
        })?;
        if self.viommu.is_some() {
            same_smmu(vsid, self.hw_info, &hw)?;
        }
        Ok(hw)
    }

    /// Allocates the nesting parent, the vIOMMU and the shared abort and
    /// bypass HWPTs for the device `dev_id`, after checking that its IOMMU
    /// is an ARM SMMUv3. Everything allocated is destroyed on failure.
    fn create_viommu(&self, dev_id: u32) -> Result<Viommu, HostError> {
        let fd = self.ctx();
        let mut created = Vec::with_capacity(4);
        let parent = match &self.vmm {
            Some(vmm) => Parent::Vmm(vmm.parent_hwpt_id),
            None => Parent::Own(self.ioas_id),
        };
        let result = create_viommu_objects(fd, parent, dev_id, &mut created);
        if result.is_err() {
            for id in created.iter().rev() {
                destroy_logged(fd, *id, "vIOMMU setup rollback");
            }
        }
        result.map_err(|e| memlock_hint(e, self.mapped, (self.memlock_limit)()))
    }

    /// The rest of an attach once `dev_id` is bound: checks, the vIOMMU for
    /// the first device, the vDEVICE, the abort HWPT.
    fn attach_bound(
        &mut self,
        vsid: u32,
        dev_id: u32,
        rdev: u64,
        cdev: OwnedFd,
    ) -> Result<u32, HostError> {
        let hw = self.check_device(vsid, dev_id)?;
        let created = match self.viommu {
            Some(_) => false,
            None => {
                let v = self.create_viommu(dev_id)?;
                self.viommu = Some(v);
                self.hw_info = Some(hw);
                true
            }
        };
        match self.setup_vdevice(vsid, dev_id, cdev.as_fd()) {
            Ok(vdevice_id) => {
                self.devices.insert(
                    vsid,
                    Device {
                        cdev,
                        dev_id,
                        rdev,
                        vdevice_id,
                        config: Config::Abort,
                        vmm_bound: self.vmm.is_some(),
                    },
                );
                Ok(dev_id)
            }
            Err(e) => {
                if created {
                    self.destroy_viommu();
                }
                Err(e)
            }
        }
    }

    /// Destroys the vIOMMU and its HWPTs (no device or vEVENTQ may use them).
    fn destroy_viommu(&mut self) {
        if let Some(v) = self.viommu.take() {
            let fd = self.ctx();
            destroy_logged(fd, v.bypass_hwpt_id, "bypass HWPT");
            destroy_logged(fd, v.abort_hwpt_id, "abort HWPT");
            destroy_logged(fd, v.viommu_id, "vIOMMU");
            // The VMM's nesting parent is the VMM's to free.
            if v.own_parent {
                destroy_logged(fd, v.parent_hwpt_id, "nesting parent HWPT");
            }
        }
    }

    /// Allocates the vDEVICE of `vsid` and attaches the device to the abort
    /// HWPT; undoes the vDEVICE if the attach fails.
    fn setup_vdevice(
        &self,
        vsid: u32,
        dev_id: u32,
        cdev: BorrowedFd<'_>,
    ) -> Result<u32, HostError> {
        let v = self.viommu_ref()?;
        let fd = self.ctx();
        let vdevice_id = sys::vdevice_alloc(fd, v.viommu_id, dev_id, vsid).map_err(|e| {
            if e.errno == Errno::EINVAL as i32 {
                // arm_vsmmu_vdevice_init / iommufd_vdevice_alloc_ioctl: the
                // device's SMMU is not the vIOMMU's.
                other_smmu(vsid, &e.to_string())
            } else {
                e
            }
        })?;
        if let Err(e) = sys::attach_pt(cdev, v.abort_hwpt_id) {
            destroy_logged(fd, vdevice_id, "vDEVICE rollback");
            return Err(e);
        }
        Ok(vdevice_id)
    }

    fn viommu_ref(&self) -> Result<Viommu, HostError> {
        self.viommu.ok_or_else(|| {
            HostError::new(
                "IOMMU_VIOMMU_ALLOC",
                Errno::ENODEV as i32,
                "no vIOMMU yet: it is allocated when the first device is attached",
            )
        })
    }

    /// Attaches the device of `vsid` to `hwpt_id` (now `config`), then
    /// destroys the nested HWPT it leaves. Attaching to the shared HWPT it
    /// already uses is a no-op. On failure the device keeps its old HWPT.
    fn switch(&mut self, vsid: u32, config: Config, hwpt_id: u32) -> Result<(), HostError> {
        let fd = match &self.vmm {
            Some(vmm) => vmm.iommufd.as_fd(),
            None => self.iommufd.as_fd(),
        };
        let dev = self.devices.get_mut(&vsid).ok_or_else(|| no_device(vsid))?;
        if dev.config == config {
            return Ok(());
        }
        sys::attach_pt(dev.cdev.as_fd(), hwpt_id)
            .map_err(|e| HostError::new(e.op, e.errno, format!("vSID {vsid:#x}: {}", e.msg)))?;
        let old = std::mem::replace(&mut dev.config, config);
        if let Config::Nested(old_id) = old {
            destroy_logged(fd, old_id, "previous nested HWPT");
        }
        Ok(())
    }

    /// Leaves the device of `vsid` aborting after a refused configuration.
    fn fall_back_to_abort(&mut self, vsid: u32, abort_hwpt_id: u32) {
        if let Err(e) = self.switch(vsid, Config::Abort, abort_hwpt_id) {
            log::warn!("vSID {vsid:#x}: cannot fall back to the abort HWPT: {e}");
        }
    }

    /// Detaches a device and frees what it owns, in the kernel's order:
    /// detach, destroy its nested HWPT, destroy its vDEVICE, close its cdev.
    /// Every step runs; the first error is returned.
    fn teardown_device(&self, vsid: u32, dev: Device) -> Result<(), HostError> {
        let fd = self.ctx();
        let mut first: Option<HostError> = None;
        let mut note = |r: Result<(), HostError>, what: &str| {
            if let Err(e) = r {
                log::warn!("vSID {vsid:#x}: {what}: {e}");
                first.get_or_insert(e);
            }
        };
        match (&self.vmm, dev.vmm_bound) {
            // Back where the VMM had it: on its nesting parent (stage 2
            // only), which the VMM detaches and frees itself.
            (Some(vmm), true) => note(
                sys::attach_pt(dev.cdev.as_fd(), vmm.parent_hwpt_id),
                "re-attach to the VMM's nesting parent",
            ),
            _ => note(sys::detach_pt(dev.cdev.as_fd()), "detach"),
        }
        if let Config::Nested(id) = dev.config {
            note(sys::destroy(fd, id), "destroy nested HWPT");
        }
        note(sys::destroy(fd, dev.vdevice_id), "destroy vDEVICE");
        drop(dev.cdev);
        first.map_or(Ok(()), Err)
    }
}

/// The objects of [`IommufdHost::create_viommu`], each id pushed to
/// `created` as soon as it exists.
fn create_viommu_objects(
    fd: BorrowedFd<'_>,
    parent: Parent,
    dev_id: u32,
    created: &mut Vec<u32>,
) -> Result<Viommu, HostError> {
    let (parent_hwpt_id, own_parent) = match parent {
        Parent::Own(ioas_id) => {
            let id = sys::hwpt_alloc_parent(fd, dev_id, ioas_id)?;
            created.push(id);
            (id, true)
        }
        Parent::Vmm(id) => (id, false),
    };
    let viommu_id = sys::viommu_alloc(fd, dev_id, parent_hwpt_id)?;
    created.push(viommu_id);
    let abort_hwpt_id = sys::hwpt_alloc_nested(fd, dev_id, viommu_id, ABORT_VSTE)?;
    created.push(abort_hwpt_id);
    let bypass_hwpt_id = sys::hwpt_alloc_nested(fd, dev_id, viommu_id, BYPASS_VSTE)?;
    created.push(bypass_hwpt_id);
    Ok(Viommu {
        parent_hwpt_id,
        own_parent,
        viommu_id,
        abort_hwpt_id,
        bypass_hwpt_id,
    })
}

/// The shared abort vSTE: V = 1, Config = abort (0b000).
const ABORT_VSTE: [u64; 2] = [1, 0];
/// The shared bypass vSTE: V = 1, Config = bypass (0b100).
const BYPASS_VSTE: [u64; 2] = [1 | (0b100 << 1), 0];

/// Where a requested configuration goes.
enum Target {
    Abort,
    Bypass,
    Nested([u64; 2]),
}

/// Maps an [`SteAction`] to a target, refusing (before any ioctl) the vSTEs
/// the kernel would refuse. Non-valid, abort and bypass vSTEs use the shared
/// HWPTs: the kernel builds the same physical STE for them whatever their
/// other fields.
fn resolve(vsid: u32, action: SteAction) -> Result<Target, HostError> {
    match action {
        SteAction::Abort => Ok(Target::Abort),
        SteAction::Bypass => Ok(Target::Bypass),
        SteAction::Nested { ste } => match check_vste(&ste) {
            Ok(VsteConfig::NotValid | VsteConfig::Abort) => Ok(Target::Abort),
            Ok(VsteConfig::Bypass) => Ok(Target::Bypass),
            Ok(VsteConfig::S1Translate) => Ok(Target::Nested(ste)),
            Err(e) => Err(HostError::new(
                "IOMMU_HWPT_ALLOC",
                Errno::EINVAL as i32,
                format!(
                    "vSID {vsid:#x}: vSTE [{:#018x}, {:#018x}] refused: {e}",
                    ste[0], ste[1]
                ),
            )),
        },
    }
}

/// Sends `cmds` in calls of at most `max` entries. `call` returns, on
/// failure, how many entries of its chunk the kernel handled (its
/// `entry_num` out) with the error; the result's `handled` is that plus
/// every entry of the chunks before.
fn invalidate_in_chunks<F>(
    cmds: &[[u64; 2]],
    max: usize,
    mut call: F,
) -> Result<(), InvalidateError>
where
    F: FnMut(&[[u64; 2]]) -> Result<(), (usize, HostError)>,
{
    let mut handled = 0usize;
    for chunk in cmds.chunks(max.max(1)) {
        if let Err((n, error)) = call(chunk) {
            return Err(InvalidateError {
                handled: handled + n.min(chunk.len()),
                error,
            });
        }
        handled += chunk.len();
    }
    Ok(())
}

fn open_error(path: &Path, e: &io::Error) -> HostError {
    let errno = e.raw_os_error().unwrap_or(Errno::EIO as i32);
    if e.kind() == io::ErrorKind::NotFound {
        HostError::new(
            "open /dev/iommu",
            errno,
            format!(
                "{} does not exist: this host has no iommufd (kernel built without \
                 CONFIG_IOMMUFD, or no IOMMU); use --host sim",
                path.display()
            ),
        )
    } else {
        HostError::new(
            "open /dev/iommu",
            errno,
            format!("cannot open {}: {e}", path.display()),
        )
    }
}

/// A device for an existing vIOMMU must report the registers of the SMMU
/// the vIOMMU was made on (two identical SMMUs still differ at
/// `IOMMU_VDEVICE_ALLOC`, which [`other_smmu`] explains too).
fn same_smmu(vsid: u32, viommu_hw: Option<HwInfo>, hw: &HwInfo) -> Result<(), HostError> {
    match viommu_hw {
        Some(first) if first != *hw => Err(other_smmu(
            vsid,
            &format!(
                "its SMMU reports IDR0 {:#010x} IDR1 {:#010x} IDR3 {:#010x} IDR5 {:#010x}, \
                 the vIOMMU's IDR0 {:#010x} IDR1 {:#010x} IDR3 {:#010x} IDR5 {:#010x}",
                hw.idr[0],
                hw.idr[1],
                hw.idr[3],
                hw.idr[5],
                first.idr[0],
                first.idr[1],
                first.idr[3],
                first.idr[5]
            ),
        )),
        _ => Ok(()),
    }
}

fn other_smmu(vsid: u32, why: &str) -> HostError {
    HostError::new(
        "IOMMU_VDEVICE_ALLOC",
        Errno::EINVAL as i32,
        format!(
            "vSID {vsid:#x}: the device is behind another physical SMMU than the vIOMMU's \
             ({why}); one vsmmud serves the devices of one host SMMU: start one per SMMU"
        ),
    )
}

/// RLIMIT_MEMLOCK as iommufd applies it when it pins: `None` when the
/// kernel does not account (CAP_IPC_LOCK, `iopt_alloc_pages`) or the limit
/// is infinite. Read at each mapping (capget, prlimit64): the jail drops
/// CAP_IPC_LOCK after the backend opened.
fn memlock_limit() -> Option<u64> {
    if caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_IPC_LOCK,
    )
    .unwrap_or(false)
    {
        return None;
    }
    memlock_rlimit().ok().flatten()
}

/// The soft RLIMIT_MEMLOCK, `None` when infinite.
fn memlock_rlimit() -> Result<Option<u64>, nix::Error> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    getrlimit(Resource::RLIMIT_MEMLOCK).map(|(soft, _)| (soft != RLIM_INFINITY).then_some(soft))
}

/// The up-front check of a guest RAM mapping against RLIMIT_MEMLOCK.
fn check_memlock(mapped: u64, size: u64, limit: Option<u64>) -> Result<(), HostError> {
    match limit {
        Some(limit) if mapped.saturating_add(size) > limit => Err(HostError::new(
            "IOMMU_IOAS_MAP",
            Errno::ENOMEM as i32,
            format!(
                "mapping {} KiB more guest RAM ({} KiB mapped) exceeds RLIMIT_MEMLOCK ({} KiB): \
                 iommufd pins guest RAM for device DMA against it; raise it (systemd \
                 LimitMEMLOCK=, prlimit --memlock) or give vsmmud CAP_IPC_LOCK",
                size >> 10,
                mapped >> 10,
                limit >> 10
            ),
        )),
        _ => Ok(()),
    }
}

/// RLIMIT_MEMLOCK as it stands, even where the up-front check trusted a
/// capability the kernel does not count (one held only in a user
/// namespace); `fallback` if it cannot be read.
fn memlock_text(fallback: Option<u64>) -> String {
    match memlock_rlimit() {
        Ok(Some(soft)) => format!("{} KiB", soft >> 10),
        Ok(None) => "unlimited".to_string(),
        Err(_) => fallback.map_or("unknown".to_string(), |l| format!("{} KiB", l >> 10)),
    }
}

/// ENOMEM from a pinning ioctl, explained.
fn memlock_hint(e: HostError, mapped: u64, limit: Option<u64>) -> HostError {
    if e.errno != Errno::ENOMEM as i32 {
        return e;
    }
    let limit = memlock_text(limit);
    HostError::new(
        e.op,
        e.errno,
        format!(
            "{}: pinning {} KiB of guest RAM failed; RLIMIT_MEMLOCK: {limit} (counted per user, \
             across processes)",
            e.msg,
            mapped >> 10
        ),
    )
}

fn no_device(vsid: u32) -> HostError {
    HostError::new(
        "vsid",
        Errno::ENOENT as i32,
        format!("no device attached with vSID {vsid:#x}"),
    )
}

fn destroy_logged(fd: BorrowedFd<'_>, id: u32, what: &str) {
    if let Err(e) = sys::destroy(fd, id) {
        log::warn!("{what} (id {id}): {e}");
    }
}

impl HostIommu for IommufdHost {
    fn name(&self) -> &'static str {
        "iommufd"
    }

    /// [`GUEST_PROFILE`]: fixed, whatever is attached.
    fn hw_info(&self) -> HwInfo {
        GUEST_PROFILE
    }

    fn host_hw_info(&self) -> Option<HwInfo> {
        self.hw_info
    }

    fn needs_device_fd(&self) -> bool {
        true
    }

    /// Checks RLIMIT_MEMLOCK first: the kernel pins the pages (now, or
    /// when the nesting parent is created) and would only say ENOMEM.
    fn map_guest_ram(&mut self, gpa: u64, size: u64, host_addr: usize) -> Result<(), HostError> {
        let limit = (self.memlock_limit)();
        check_memlock(self.mapped, size, limit)?;
        sys::ioas_map(self.iommufd.as_fd(), self.ioas_id, gpa, size, host_addr)
            .map_err(|e| memlock_hint(e, self.mapped.saturating_add(size), limit))?;
        self.mapped = self.mapped.saturating_add(size);
        Ok(())
    }

    fn unmap_guest_ram(&mut self, gpa: u64, size: u64) -> Result<(), HostError> {
        sys::ioas_unmap(self.iommufd.as_fd(), self.ioas_id, gpa, size)?;
        self.mapped = self.mapped.saturating_sub(size);
        Ok(())
    }

    fn attach_device(&mut self, vsid: u32, device_fd: Option<OwnedFd>) -> Result<u32, HostError> {
        if self.devices.contains_key(&vsid) {
            return Err(HostError::new(
                "IOMMU_VDEVICE_ALLOC",
                Errno::EEXIST as i32,
                format!("vSID {vsid:#x} already has a device"),
            ));
        }
        if self.vmm.is_some() {
            return Err(HostError::new(
                "VFIO_DEVICE_BIND_IOMMUFD",
                Errno::EBUSY as i32,
                format!(
                    "vSID {vsid:#x}: the vIOMMU lives in the VMM's iommufd while devices the \
                     VMM bound are attached; a device vsmmud binds itself can join once they \
                     are detached"
                ),
            ));
        }
        let Some(cdev) = device_fd else {
            return Err(HostError::new(
                "VFIO_DEVICE_BIND_IOMMUFD",
                Errno::EINVAL as i32,
                format!("vSID {vsid:#x}: the iommufd backend needs the device's VFIO cdev fd"),
            ));
        };
        let rdev = nix::sys::stat::fstat(cdev.as_fd())
            .map(|st| st.st_rdev)
            .map_err(|e| {
                HostError::new(
                    "VFIO_DEVICE_BIND_IOMMUFD",
                    e as i32,
                    format!("vSID {vsid:#x}: fstat of the device fd: {}", e.desc()),
                )
            })?;
        let (dev_id, reused) = self.bind_or_reuse(vsid, cdev.as_fd(), rdev)?;
        // From here on an error drops (closes) `cdev`: remember its id.
        let result = self.attach_bound(vsid, dev_id, rdev, cdev);
        match result {
            Ok(id) => Ok(id),
            // The id is bound, but not through this open file (a fresh open
            // while an older copy still holds the binding): attach refuses.
            Err(e) if reused && e.errno == Errno::EINVAL as i32 => {
                self.release(rdev, dev_id);
                Err(HostError::new(
                    e.op,
                    Errno::EBUSY as i32,
                    format!(
                        "vSID {vsid:#x}: the device is still bound through another open file \
                         of its cdev (close every copy, or send the one attached before): {}",
                        e.msg
                    ),
                ))
            }
            Err(e) => {
                self.release(rdev, dev_id);
                Err(e)
            }
        }
    }

    /// A device the VMM bound in its own iommufd: the vIOMMU is allocated
    /// there, on the VMM's nesting parent, and lives until the last such
    /// device is detached (the VMM frees its parent after that).
    fn attach_vmm_device(&mut self, vsid: u32, dev: VmmDevice) -> Result<u32, HostError> {
        const OP: &str = "IOMMU_VIOMMU_ALLOC";
        if self.devices.contains_key(&vsid) {
            return Err(HostError::new(
                "IOMMU_VDEVICE_ALLOC",
                Errno::EEXIST as i32,
                format!("vSID {vsid:#x} already has a device"),
            ));
        }
        match &self.vmm {
            None if !self.devices.is_empty() => {
                return Err(HostError::new(
                    OP,
                    Errno::EBUSY as i32,
                    format!(
                        "vSID {vsid:#x}: devices vsmmud bound are attached and the vIOMMU lives \
                         in vsmmud's iommufd; a device the VMM bound can join once they are \
                         detached"
                    ),
                ))
            }
            None => {
                // A vIOMMU left from vsmmud's own devices cannot serve the
                // VMM's context (the model drained its vEVENTQ already).
                self.free_veventq();
                self.destroy_viommu();
                self.vmm = Some(VmmContext {
                    iommufd: dev.iommufd,
                    parent_hwpt_id: dev.parent_hwpt_id,
                });
            }
            Some(vmm) if vmm.parent_hwpt_id != dev.parent_hwpt_id => {
                return Err(HostError::new(
                    OP,
                    Errno::EINVAL as i32,
                    format!(
                        "vSID {vsid:#x}: nesting parent HWPT {} differs from the vIOMMU's ({}): \
                         every device of one vSMMU shares the VMM's parent",
                        dev.parent_hwpt_id, vmm.parent_hwpt_id
                    ),
                ))
            }
            // The first device's copy of the iommufd serves them all.
            Some(_) => drop(dev.iommufd),
        }
        let result = self.attach_bound(vsid, dev.dev_id, 0, dev.cdev);
        if result.is_err() && self.devices.is_empty() {
            self.destroy_viommu();
            self.vmm = None;
        }
        result
    }

    fn detach_device(&mut self, vsid: u32) -> Result<(), HostError> {
        let dev = self.devices.remove(&vsid).ok_or_else(|| no_device(vsid))?;
        let (rdev, dev_id, vmm_bound) = (dev.rdev, dev.dev_id, dev.vmm_bound);
        let result = self.teardown_device(vsid, dev);
        if !vmm_bound {
            self.release(rdev, dev_id);
        } else if self.devices.is_empty() {
            // The VMM frees its nesting parent next: nothing of ours may
            // hold it.
            self.free_veventq();
            self.destroy_viommu();
            self.vmm = None;
        }
        result
    }

    fn viommu_ends(&self, change: DeviceChange) -> bool {
        match change {
            DeviceChange::Detach(vsid) => {
                self.vmm.is_some() && self.devices.len() == 1 && self.devices.contains_key(&vsid)
            }
            DeviceChange::AttachVmmBound => {
                self.vmm.is_none() && self.devices.is_empty() && self.viommu.is_some()
            }
        }
    }

    fn is_attached(&self, vsid: u32) -> bool {
        self.devices.contains_key(&vsid)
    }

    fn install_ste(&mut self, vsid: u32, action: SteAction) -> Result<(), HostError> {
        let Some(dev) = self.devices.get(&vsid) else {
            return Err(no_device(vsid));
        };
        let dev_id = dev.dev_id;
        let v = self.viommu_ref()?;
        match resolve(vsid, action) {
            Ok(Target::Abort) => self.switch(vsid, Config::Abort, v.abort_hwpt_id),
            Ok(Target::Bypass) => self.switch(vsid, Config::Bypass, v.bypass_hwpt_id),
            Ok(Target::Nested(ste)) => {
                let hwpt_id = match sys::hwpt_alloc_nested(self.ctx(), dev_id, v.viommu_id, ste) {
                    Ok(id) => id,
                    Err(e) => {
                        self.fall_back_to_abort(vsid, v.abort_hwpt_id);
                        return Err(HostError::new(
                            e.op,
                            e.errno,
                            format!("vSID {vsid:#x}: {}", e.msg),
                        ));
                    }
                };
                if let Err(e) = self.switch(vsid, Config::Nested(hwpt_id), hwpt_id) {
                    destroy_logged(self.ctx(), hwpt_id, "unused nested HWPT");
                    self.fall_back_to_abort(vsid, v.abort_hwpt_id);
                    return Err(e);
                }
                Ok(())
            }
            Err(e) => {
                self.fall_back_to_abort(vsid, v.abort_hwpt_id);
                Err(e)
            }
        }
    }

    /// Without a vIOMMU (no device attached) nothing on the host caches
    /// translations for this vSMMU, and the call succeeds without an ioctl.
    fn invalidate(&mut self, cmds: &[[u64; 2]]) -> Result<(), InvalidateError> {
        let Some(v) = self.viommu else {
            return Ok(());
        };
        let fd = self.ctx();
        invalidate_in_chunks(cmds, MAX_INVALIDATION_ENTRIES, |chunk| {
            sys::hwpt_invalidate(fd, v.viommu_id, chunk)
        })
    }

    fn alloc_veventq(&mut self, depth: u32) -> Result<(), HostError> {
        if depth == 0 {
            return Err(HostError::new(
                "IOMMU_VEVENTQ_ALLOC",
                Errno::EINVAL as i32,
                "vEVENTQ depth 0",
            ));
        }
        let v = self.viommu_ref()?;
        self.free_veventq();
        let (id, fd) = sys::veventq_alloc(self.ctx(), v.viommu_id, depth)?;
        self.veventq = Some(Veventq { fd, id });
        Ok(())
    }

    fn free_veventq(&mut self) {
        if let Some(q) = self.veventq.take() {
            // The fd holds a reference on the object: close it first.
            drop(q.fd);
            destroy_logged(self.ctx(), q.id, "vEVENTQ");
        }
    }

    fn veventq_fd(&self) -> Option<RawFd> {
        self.veventq.as_ref().map(|q| q.fd.as_raw_fd())
    }

    /// One `read(2)`; the vEVENTQ never blocks (eventq.c has no wait in its
    /// read), so the fd needs no `O_NONBLOCK`. EINTR is retried.
    fn read_veventq(&mut self, buf: &mut [u8]) -> Result<usize, HostError> {
        let Some(q) = &self.veventq else {
            return Err(HostError::new(
                "read vEVENTQ",
                Errno::ENODEV as i32,
                "no vEVENTQ allocated",
            ));
        };
        loop {
            match nix::unistd::read(&q.fd, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(HostError::new("read vEVENTQ", e as i32, e.desc())),
            }
        }
    }
}

impl Drop for IommufdHost {
    fn drop(&mut self) {
        self.free_veventq();
        let devices = std::mem::take(&mut self.devices);
        for (vsid, dev) in devices {
            // Errors are already logged.
            let _ = self.teardown_device(vsid, dev);
        }
        self.destroy_viommu();
        self.vmm = None;
        destroy_logged(self.iommufd.as_fd(), self.ioas_id, "IOAS");
        // `iommufd` closes when the field drops.
    }
}

#[cfg(test)]
mod tests;
