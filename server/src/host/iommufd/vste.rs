//! The guest's stream table entries on the iommufd backend: which HWPT a
//! vSTE puts its device on (a shared abort or bypass HWPT, or a nested
//! HWPT made from the vSTE), the switch between them, and the guest's
//! invalidation commands passed on in batches the kernel accepts.
//!
//! Apart from attach (`device.rs`) because this is what the guest drives
//! while a device stays attached.

use std::os::fd::AsFd;

use nix::errno::Errno;
use vsmmu_protocol::smmu::ste::{check_vste, VsteConfig};

use super::device::Config;
use super::{destroy_logged, no_device, sys, IommufdHost};
use crate::host::{HostError, InvalidateError, SteAction};

impl IommufdHost {
    /// Attaches the device of `vsid` to `hwpt_id` (now `config`), then
    /// destroys the nested HWPT it leaves. Attaching to the shared HWPT it
    /// already uses is a no-op. On failure the device keeps its old HWPT.
    pub(super) fn switch(
        &mut self,
        vsid: u32,
        config: Config,
        hwpt_id: u32,
    ) -> Result<(), HostError> {
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
    pub(super) fn fall_back_to_abort(&mut self, vsid: u32, abort_hwpt_id: u32) {
        if let Err(e) = self.switch(vsid, Config::Abort, abort_hwpt_id) {
            log::warn!("vSID {vsid:#x}: cannot fall back to the abort HWPT: {e}");
        }
    }
}

/// Where a requested configuration goes.
pub(super) enum Target {
    Abort,
    Bypass,
    Nested([u64; 2]),
}

/// Maps an [`SteAction`] to a target, refusing (before any ioctl) the vSTEs
/// the kernel would refuse. Non-valid, abort and bypass vSTEs use the shared
/// HWPTs: the kernel builds the same physical STE for them whatever their
/// other fields.
pub(super) fn resolve(vsid: u32, action: SteAction) -> Result<Target, HostError> {
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
pub(super) fn invalidate_in_chunks<F>(
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
