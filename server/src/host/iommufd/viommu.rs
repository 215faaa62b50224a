//! The vIOMMU of the iommufd backend and the objects allocated with it:
//! the nesting parent (vsmmud's over its IOAS, or the VMM's), the shared
//! abort and bypass nested HWPTs, and the record of its vEVENTQ.
//!
//! Apart from the devices (`device.rs`) because these objects are made for
//! the first device and outlive each single one: they go when the last
//! device of their context does, or with the backend.

use std::os::fd::{BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::memlock::memlock_hint;
use super::{destroy_logged, sys, IommufdHost};
use crate::host::HostError;

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
pub(super) struct Viommu {
    /// The nesting parent (stage 2 over the IOAS).
    pub(super) parent_hwpt_id: u32,
    /// True when vsmmud allocated the parent (its own IOAS), false when it
    /// is the VMM's.
    pub(super) own_parent: bool,
    /// The vIOMMU.
    pub(super) viommu_id: u32,
    /// Shared nested HWPT with vSTE `{V=1, Config=abort}`.
    pub(super) abort_hwpt_id: u32,
    /// Shared nested HWPT with vSTE `{V=1, Config=bypass}`.
    pub(super) bypass_hwpt_id: u32,
}

/// The vEVENTQ.
#[derive(Debug)]
pub(super) struct Veventq {
    pub(super) fd: OwnedFd,
    pub(super) id: u32,
}

impl IommufdHost {
    /// Allocates the nesting parent, the vIOMMU and the shared abort and
    /// bypass HWPTs for the device `dev_id`, after checking that its IOMMU
    /// is an ARM SMMUv3. Everything allocated is destroyed on failure.
    pub(super) fn create_viommu(&self, dev_id: u32) -> Result<Viommu, HostError> {
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

    /// Destroys the vIOMMU and its HWPTs (no device or vEVENTQ may use them).
    pub(super) fn destroy_viommu(&mut self) {
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

    pub(super) fn viommu_ref(&self) -> Result<Viommu, HostError> {
        self.viommu.ok_or_else(|| {
            HostError::new(
                "IOMMU_VIOMMU_ALLOC",
                Errno::ENODEV as i32,
                "no vIOMMU yet: it is allocated when the first device is attached",
            )
        })
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
pub(super) const ABORT_VSTE: [u64; 2] = [1, 0];
/// The shared bypass vSTE: V = 1, Config = bypass (0b100).
pub(super) const BYPASS_VSTE: [u64; 2] = [1 | (0b100 << 1), 0];
