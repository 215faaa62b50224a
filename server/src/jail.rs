//! The jail: what vsmmud gives up once setup is done (socket bound or
//! inherited, signalfd and host backend open), just before the seccomp
//! filter goes on. A process that only filters syscalls still runs with
//! its launcher's user, capabilities, mounts and files; this takes them
//! away, in an order where each step still has what it needs:
//!
//! | step | needs | stops |
//! |---|---|---|
//! | 1. rlimits: `RLIMIT_NOFILE` = what the limits need, `NPROC` 0, `CORE` 0, `FSIZE` 0 (unless stderr is a regular file) | nothing (only lowered) | fd exhaustion past the limits, forks, core dumps of guest memory, file writes |
//! | 2. network namespace (`unshare(CLONE_NEWNET)`; unprivileged: with `CLONE_NEWUSER`) | CAP_SYS_ADMIN, or a user namespace | any network (vsmmud needs none: its Unix socket is already open) |
//! | 3. capability bounding set emptied | CAP_SETPCAP (root, or the new user namespace) | regaining capabilities by exec |
//! | 4. `--user UID:GID`: setgroups([]), setgid, setuid | CAP_SETUID/SETGID | running as root |
//! | 5. landlock ruleset handling every filesystem and network access, scoped signals and abstract sockets; one rule: remove files in the socket's directory (its own socket at exit) | `PR_SET_NO_NEW_PRIVS` (set by it) | opening, creating, executing any path; TCP bind/connect |
//! | 6. effective, permitted, inheritable, ambient capabilities cleared; `PR_SET_NO_NEW_PRIVS` | nothing | every privileged operation |
//! | 7. seccomp ([`crate::sandbox`]) | `PR_SET_NO_NEW_PRIVS` | every syscall outside its table |
//!
//! `--jail on` (default) does every step the kernel allows and warns once
//! about each one it cannot do; `--jail require` fails instead; `--jail off`
//! does nothing. The iommufd host needs nothing by path after setup: its
//! `/dev/iommu` and the VFIO cdevs are descriptors. Without CAP_IPC_LOCK the
//! kernel counts the guest RAM it pins against RLIMIT_MEMLOCK (checked up
//! front by the backend).

use std::os::fd::RawFd;
use std::path::PathBuf;

use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// `--jail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum JailMode {
    /// Every step the kernel allows; a warning for each it does not.
    #[default]
    On,
    /// Every step, or exit with an error.
    Require,
    /// No jail.
    Off,
}

/// What the jail needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JailConfig {
    /// `--jail`.
    pub mode: JailMode,
    /// `--user UID:GID`.
    pub user: Option<(u32, u32)>,
    /// Directory of the listening socket's path (removed at exit), if any.
    pub socket_dir: Option<PathBuf>,
    /// Descriptors the configured limits can need beyond those open now.
    pub fds_needed: u64,
    /// The host pins guest RAM (iommufd): say what dropping CAP_IPC_LOCK
    /// means for RLIMIT_MEMLOCK.
    pub pins_guest_ram: bool,
}

/// What the jail did (logged, and read by tests through the process's
/// /proc entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JailReport {
    /// RLIMIT_NOFILE set.
    pub nofile: u64,
    /// RLIMIT_FSIZE set to 0.
    pub fsize_zero: bool,
    /// In a new network namespace.
    pub netns: bool,
    /// In a new user namespace (unprivileged start).
    pub userns: bool,
    /// Landlock enforced: `Some(true)` fully, `Some(false)` partially.
    pub landlock: Option<bool>,
    /// Capabilities all cleared.
    pub caps_cleared: bool,
}

/// A step the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("jail: {step}: {why}")]
pub(crate) struct JailError {
    /// Which step.
    pub step: &'static str,
    /// What failed.
    pub why: String,
}

fn fail(step: &'static str, why: impl std::fmt::Display) -> JailError {
    JailError {
        step,
        why: why.to_string(),
    }
}

/// Descriptors open now (before the jail), from /proc/self/fd.
pub(crate) fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64)
}

/// Runs every step (see the module documentation). With [`JailMode::On`]
/// a step the kernel does not allow is logged and skipped; with
/// [`JailMode::Require`] it is an error.
pub(crate) fn enter(cfg: &JailConfig) -> Result<JailReport, JailError> {
    let mut report = JailReport::default();
    if cfg.mode == JailMode::Off {
        log::warn!("jail: off (--jail off): vsmmud keeps its user, capabilities and file access");
        return Ok(report);
    }
    let soft = |r: Result<(), JailError>| -> Result<(), JailError> {
        match r {
            Err(e) if cfg.mode == JailMode::On => {
                log::warn!("{e} (skipped; --jail require would fail)");
                Ok(())
            }
            other => other,
        }
    };

    // Opened while the launcher's user still can: after --user the
    // socket's directory may not be searchable.
    let socket_dir = match cfg.socket_dir.as_deref().map(landlock::PathFd::new) {
        Some(Ok(fd)) => Some(fd),
        Some(Err(e)) => {
            log::warn!("jail: the socket's directory cannot be opened ({e}): its path will not be removed at exit");
            None
        }
        None => None,
    };
    if cfg.pins_guest_ram {
        memlock_note();
    }

    // 1. rlimits.
    let nofile = open_fds() + cfg.fds_needed;
    lower(Resource::RLIMIT_NOFILE, nofile)?;
    report.nofile = nofile;
    lower(Resource::RLIMIT_NPROC, 0)?;
    lower(Resource::RLIMIT_CORE, 0)?;
    if stderr_is_regular_file() {
        // A log file: every line extends it, and past RLIMIT_FSIZE the
        // kernel sends SIGXFSZ.
        log::info!("jail: RLIMIT_FSIZE left as is: stderr is a regular file (the log)");
    } else {
        lower(Resource::RLIMIT_FSIZE, 0)?;
        report.fsize_zero = true;
    }

    // 2. network namespace (and, unprivileged, a user namespace for it).
    soft(new_netns(&mut report, cfg.user.is_none()).map_err(|e| fail("network namespace", e)))?;

    // 3. bounding set.
    soft(drop_bounding().map_err(|e| fail("capability bounding set", e)))?;

    // 4. user switch.
    if let Some((uid, gid)) = cfg.user {
        switch_user(uid, gid).map_err(|e| fail("--user", e))?;
    }

    // 5. landlock.
    match landlock(socket_dir) {
        Ok(full) => report.landlock = Some(full),
        Err(e) => soft(Err(fail("landlock", e)))?,
    }

    // 6. capabilities, no new privileges.
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail("PR_SET_NO_NEW_PRIVS", e))?;
    soft(clear_caps().map_err(|e| fail("capabilities", e)))?;
    report.caps_cleared = caps::read(None, caps::CapSet::Effective)
        .map(|s| s.is_empty())
        .unwrap_or(false)
        && caps::read(None, caps::CapSet::Permitted)
            .map(|s| s.is_empty())
            .unwrap_or(false);

    log::info!(
        "jail: RLIMIT_NOFILE {}, NPROC 0, CORE 0{}; network namespace {}; landlock {}; capabilities {}",
        report.nofile,
        if report.fsize_zero { ", FSIZE 0" } else { "" },
        match (report.netns, report.userns) {
            (true, true) => "new (in a new user namespace)",
            (true, false) => "new",
            _ => "not entered",
        },
        match report.landlock {
            Some(true) => "enforced",
            Some(false) => "partially enforced (older ABI)",
            None => "not available",
        },
        if report.caps_cleared { "none" } else { "some left" }
    );
    Ok(report)
}

/// Lowers both limits of `res` to `value` (never raises them).
fn lower(res: Resource, value: u64) -> Result<(), JailError> {
    let (soft, hard) = getrlimit(res).map_err(|e| fail("getrlimit", e))?;
    let hard = hard.min(value);
    let soft = soft.min(hard);
    setrlimit(res, soft, hard).map_err(|e| fail("setrlimit", format!("{res:?}: {e}")))
}

fn stderr_is_regular_file() -> bool {
    // SAFETY: fd 2 is borrowed only for the fstat call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(2 as RawFd) };
    nix::sys::stat::fstat(fd)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .unwrap_or(false)
}

fn new_netns(report: &mut JailReport, userns_ok: bool) -> Result<(), nix::Error> {
    match unshare(CloneFlags::CLONE_NEWNET) {
        Ok(()) => {
            report.netns = true;
            return Ok(());
        }
        // In a user namespace without id maps --user could not switch.
        Err(e) if !userns_ok => return Err(e),
        Err(_) => {}
    }
    // Unprivileged: a user namespace gives the capabilities for it (and
    // for emptying the bounding set below).
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)?;
    report.netns = true;
    report.userns = true;
    Ok(())
}

fn drop_bounding() -> Result<(), caps::errors::CapsError> {
    for cap in caps::read(None, caps::CapSet::Bounding)? {
        caps::drop(None, caps::CapSet::Bounding, cap)?;
    }
    Ok(())
}

fn switch_user(uid: u32, gid: u32) -> Result<(), nix::Error> {
    nix::unistd::setgroups(&[])?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))
}

/// A ruleset handling every access this kernel's landlock knows, with one
/// rule: files may be removed below the socket's directory. Returns
/// whether it is fully enforced; an error when not enforced at all.
fn landlock(socket_dir: Option<landlock::PathFd>) -> Result<bool, String> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    let ruleset = || {
        Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))
            .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
            .and_then(|r| r.scope(Scope::from_all(abi)))
            .and_then(|r| r.create())
            .map_err(|e| e.to_string())
    };
    let mut created = ruleset()?;
    if let Some(fd) = socket_dir {
        // A rule the kernel refuses costs the socket's removal at exit,
        // not the whole ruleset.
        match created.add_rule(PathBeneath::new(fd, AccessFs::RemoveFile)) {
            Ok(with_rule) => created = with_rule,
            Err(e) => {
                log::warn!("jail: landlock rule for the socket's directory refused ({e}): its path will not be removed at exit");
                created = ruleset()?;
            }
        }
    }
    let status = created.restrict_self().map_err(|e| e.to_string())?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(true),
        RulesetStatus::PartiallyEnforced => Ok(false),
        RulesetStatus::NotEnforced => Err(
            "not enforced: this kernel has no landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock)"
                .into(),
        ),
    }
}

/// With CAP_IPC_LOCK the kernel does not count the guest RAM an iommufd
/// pins; the jail drops it, so RLIMIT_MEMLOCK applies from then on. Said
/// once at start, where an operator looks, rather than only at the first
/// DMA_MAP the limit refuses.
fn memlock_note() {
    let had = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_IPC_LOCK,
    )
    .unwrap_or(false);
    match getrlimit(Resource::RLIMIT_MEMLOCK).map(|(soft, _)| soft) {
        Ok(l) if l != nix::sys::resource::RLIM_INFINITY && had => log::warn!(
            "jail: CAP_IPC_LOCK is dropped: guest RAM pinned for device DMA now counts \
             against RLIMIT_MEMLOCK ({} KiB); give vsmmud a limit of at least the guest's \
             RAM (LimitMEMLOCK=, prlimit --memlock) or DMA_MAP will be refused",
            l >> 10
        ),
        Ok(l) if l != nix::sys::resource::RLIM_INFINITY => log::info!(
            "jail: guest RAM pinned for device DMA counts against RLIMIT_MEMLOCK ({} KiB)",
            l >> 10
        ),
        _ => {}
    }
}

fn clear_caps() -> Result<(), caps::errors::CapsError> {
    caps::clear(None, caps::CapSet::Ambient)?;
    caps::clear(None, caps::CapSet::Inheritable)?;
    caps::clear(None, caps::CapSet::Effective)?;
    caps::clear(None, caps::CapSet::Permitted)
}

/// Parses `--user UID:GID`.
pub(crate) fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected UID:GID"))?;
    let n = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| format!("{s:?}: expected numeric UID:GID"))
    };
    Ok((n(u)?, n(g)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parsing() {
        assert_eq!(parse_user("1000:100"), Ok((1000, 100)));
        assert!(parse_user("1000").is_err());
        assert!(parse_user("a:b").is_err());
    }

    #[test]
    fn off_does_nothing() {
        let cfg = JailConfig {
            mode: JailMode::Off,
            user: None,
            socket_dir: None,
            fds_needed: 0,
            pins_guest_ram: false,
        };
        assert_eq!(enter(&cfg).unwrap(), JailReport::default());
    }
}
