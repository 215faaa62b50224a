//! RLIMIT_MEMLOCK for the iommufd backend: the kernel pins guest RAM for
//! device DMA against it (when mapped into the IOAS, or when the nesting
//! parent is created) and would only say ENOMEM, so the limit is checked
//! up front and a refusal is explained.
//!
//! Apart from the IOAS code because it asks the process (capabilities,
//! rlimits), not the iommufd.

use nix::errno::Errno;

use crate::host::HostError;

/// RLIMIT_MEMLOCK as iommufd applies it when it pins: `None` when the
/// kernel does not account (CAP_IPC_LOCK, `iopt_alloc_pages`) or the limit
/// is infinite. Read at each mapping (capget, prlimit64): the jail drops
/// CAP_IPC_LOCK after the backend opened.
pub(super) fn memlock_limit() -> Option<u64> {
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
pub(super) fn check_memlock(mapped: u64, size: u64, limit: Option<u64>) -> Result<(), HostError> {
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
pub(super) fn memlock_text(fallback: Option<u64>) -> String {
    match memlock_rlimit() {
        Ok(Some(soft)) => format!("{} KiB", soft >> 10),
        Ok(None) => "unlimited".to_string(),
        Err(_) => fallback.map_or("unknown".to_string(), |l| format!("{} KiB", l >> 10)),
    }
}

/// ENOMEM from a pinning ioctl, explained.
pub(super) fn memlock_hint(e: HostError, mapped: u64, limit: Option<u64>) -> HostError {
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
