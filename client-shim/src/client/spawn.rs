//! Starting `vsmmud` on a socketpair: [`SpawnOptions`] and [`Client::spawn`].

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use super::{Client, ClientError, Result};

/// How to start `vsmmud`.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The `vsmmud` binary.
    pub binary: PathBuf,
    /// Extra arguments (e.g. `--sim-veventq-depth 2`).
    pub args: Vec<String>,
    /// `--seccomp` mode (`kill`, `trap`, `log`, `off`).
    pub seccomp: String,
    /// Descriptors the server inherits, as `(number in the child, open fd
    /// here)`: e.g. `(4, iommufd)` with `--iommufd-fd 4`. Child numbers
    /// must be above 3 (3 is the socket); the fds here must stay open until
    /// [`Client::spawn`] returns.
    pub inherit: Vec<(RawFd, RawFd)>,
}

impl SpawnOptions {
    /// Defaults: the given binary, seccomp `kill`.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        SpawnOptions {
            binary: binary.into(),
            args: Vec::new(),
            seccomp: "kill".into(),
            inherit: Vec::new(),
        }
    }
}

/// The fd number the spawned server finds its socket at.
const CHILD_FD: RawFd = 3;

impl Client {
    /// Starts `vsmmud` on one end of a socketpair (`--fd 3`) and connects
    /// through the other.
    pub fn spawn(opts: &SpawnOptions) -> Result<Self> {
        let mut numbers: Vec<RawFd> = opts.inherit.iter().map(|&(c, _)| c).collect();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.len() != opts.inherit.len() || numbers.first().is_some_and(|&c| c <= CHILD_FD) {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "inherited fds must have distinct numbers above 3 in the child",
            )));
        }
        // Copies above every child number, so that no dup2 in the child
        // overwrites a descriptor another one still needs.
        let floor = opts.inherit.iter().map(|&(c, _)| c).max().unwrap_or(0) + 1;
        let copies = opts
            .inherit
            .iter()
            .map(|&(_, parent)| {
                nix::fcntl::fcntl(
                    // SAFETY: the caller keeps `parent` open during the call.
                    unsafe { BorrowedFd::borrow_raw(parent) },
                    nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor.max(CHILD_FD + 1)),
                )
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .map_err(|e| ClientError::Io(e.into()))
            })
            .collect::<Result<Vec<OwnedFd>>>()?;
        let inherit: Vec<(RawFd, RawFd)> = opts
            .inherit
            .iter()
            .zip(&copies)
            .map(|(&(child, _), copy)| (child, copy.as_raw_fd()))
            .collect();
        // Child numbers free here are held by placeholders until the spawn
        // returns: std creates its exec-status pipe at the lowest free
        // numbers, and the child's dup2 onto one of them would close it.
        let mut placeholders = Vec::new();
        for &child in &numbers {
            // SAFETY: F_GETFD only queries whether `child` is open.
            if unsafe { libc::fcntl(child, libc::F_GETFD) } >= 0 {
                continue;
            }
            let Some(copy) = copies.first() else { break };
            // SAFETY: F_DUPFD_CLOEXEC returns a new CLOEXEC descriptor at
            // the lowest free number >= `child` (that is `child`, free as
            // checked above, unless another thread just took it).
            let fd = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_DUPFD_CLOEXEC, child) };
            if fd >= 0 {
                // SAFETY: `fd` was just created and is owned here.
                placeholders.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        let (ours, theirs) = UnixStream::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let mut cmd = Process::new(&opts.binary);
        cmd.arg("--fd")
            .arg(CHILD_FD.to_string())
            .arg("--seccomp")
            .arg(&opts.seccomp)
            .args(&opts.args)
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls async-signal-safe functions (dup2, fcntl) on descriptors
        // that exist in the child.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_fd == CHILD_FD {
                    let flags = libc::fcntl(CHILD_FD, libc::F_GETFD);
                    if flags < 0
                        || libc::fcntl(CHILD_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, CHILD_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for &(child, copy) in &inherit {
                    // `copy` is above every child number; dup2 clears
                    // FD_CLOEXEC on the new descriptor.
                    if libc::dup2(copy, child) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        drop(copies);
        drop(placeholders);
        let mut c = Client::from_stream(ours);
        c.child = Some(child);
        Ok(c)
    }
}
