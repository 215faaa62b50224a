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
//!
//! ## Where the code is
//!
//! This file holds [`IommufdHost`], its [`HostIommu`] implementation and
//! its teardown; the steps they take are split by concern:
//!
//! - `device.rs`: binding a device (or reusing its binding), its vDEVICE,
//!   its teardown, and the VMM's iommufd context for devices the VMM bound;
//! - `viommu.rs`: the vIOMMU, its nesting parent and shared HWPTs, and the
//!   vEVENTQ record;
//! - `vste.rs`: a guest vSTE to the HWPT that carries it, and invalidation
//!   in batches the kernel accepts;
//! - `hw_info.rs`: what `IOMMU_GET_HW_INFO` must report for a device to
//!   join;
//! - `memlock.rs`: RLIMIT_MEMLOCK, checked before the kernel pins guest RAM;
//! - `sys.rs`: the ioctls.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

use super::{
    DeviceChange, HostError, HostIommu, HwInfo, InvalidateError, SteAction, VmmDevice,
    MAX_INVALIDATION_ENTRIES,
};
use device::{Config, Device, VmmContext};
use memlock::{check_memlock, memlock_hint, memlock_limit};
use viommu::{Veventq, Viommu};
use vste::{invalidate_in_chunks, resolve, Target};

mod device;
mod hw_info;
mod memlock;
mod sys;
mod viommu;
mod vste;

/// Where the iommufd character device lives.
pub(crate) const IOMMUFD_PATH: &str = "/dev/iommu";

/// The host profile the guest's ID registers derive from: what any
/// nesting-capable SMMUv3 offers, in the fields the uAPI lets a VMM use.
/// IDR0 = S2P | S1P | TTF AArch64 | COHACC | ASID16 | TTENDIAN LE
/// (0x0040_101b); IDR1 = SIDSIZE 16 | EVTQS 19 | CMDQS 19 (0x0273_0010,
/// QEMU's; no SubstreamIDs); IDR3 = 0 (no range invalidation, BBML 0);
/// IDR5 = OAS 44 bits | GRAN4K | GRAN64K (0x54); AIDR = SMMUv3.1.
pub(crate) const GUEST_PROFILE: HwInfo = HwInfo {
    idr: [0x0040_101b, 0x0273_0010, 0, 0, 0, 0x54],
    iidr: 0,
    aidr: 1,
};

/// The real host backend over iommufd (see the module documentation).
#[derive(Debug)]
pub(crate) struct IommufdHost {
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
    pub(crate) fn open(iommufd: Option<OwnedFd>) -> Result<Self, HostError> {
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

    /// The iommufd the vIOMMU and its objects live in.
    fn ctx(&self) -> BorrowedFd<'_> {
        match &self.vmm {
            Some(vmm) => vmm.iommufd.as_fd(),
            None => self.iommufd.as_fd(),
        }
    }
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
