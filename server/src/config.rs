//! Validated configuration, built from [`Args`].
//!
//! Descriptor numbers from the command line (`--fd`, `--iommufd-fd`) or
//! from socket activation are held as [`InheritedFd`]s: validating a
//! command line takes nothing (the benchmark checks the command lines of
//! the `vsmmud`s it spawns with [`Config::try_from`], where the numbers
//! are the child's), and [`InheritedFd::adopt`] is the one place a number
//! becomes an [`OwnedFd`], moved from there to its user.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::args::{Args, HostKind, ReadMode, SeccompMode};
use crate::device::Limits;

/// A descriptor this process inherited from the one that started it, not
/// taken yet: dropping it closes nothing. Not `Clone`, and
/// [`Config::try_from`] refuses two of the same number, so each number has
/// one owner once adopted.
#[derive(Debug, PartialEq, Eq)]
pub struct InheritedFd(RawFd);

impl InheritedFd {
    /// The descriptor number.
    pub fn number(&self) -> RawFd {
        self.0
    }

    /// Takes ownership: fails (`EBADF`) when the number is not open.
    pub fn adopt(self) -> io::Result<OwnedFd> {
        // SAFETY: F_GETFD reads the flags of a descriptor number, open or
        // not, and touches no memory of this process.
        if unsafe { libc::fcntl(self.0, libc::F_GETFD) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the number is open (just checked) and was handed to this
        // process to own: inherited across exec from the parent that
        // started it, or from systemd, and nothing else in this process
        // refers to it: this is its only `InheritedFd` (`Config::try_from`
        // refuses two of one number, and the type is not `Clone`), and
        // adopting consumes it.
        Ok(unsafe { OwnedFd::from_raw_fd(self.0) })
    }
}

/// Where clients come from.
#[derive(Debug, PartialEq, Eq)]
pub enum Listen {
    /// Bind and listen on this path; remove it on exit.
    Path(PathBuf),
    /// An inherited socket: listening (accept clients) or connected (serve one).
    Fd(InheritedFd),
}

/// Everything `run` needs. Not `Clone`: it holds the inherited descriptors.
#[derive(Debug)]
pub struct Config {
    /// Where clients come from.
    pub listen: Listen,
    /// Host backend.
    pub host: HostKind,
    /// iommufd descriptor for the iommufd host.
    pub iommufd_fd: Option<InheritedFd>,
    /// sim: vEVENTQ depth override.
    pub sim_veventq_depth: Option<u32>,
    /// sim: first sequence number.
    pub sim_first_seq: u32,
    /// sim: invalidation opcode to reject.
    pub sim_reject_opcode: Option<u8>,
    /// Advertise MSI.
    pub msi: bool,
    /// Batch host invalidations.
    pub batch: bool,
    /// vEVENTQ read mode.
    pub read_mode: ReadMode,
    /// Bounded host-event buffer size (None: derived from the guest queue).
    pub event_buffer: Option<usize>,
    /// Client limits.
    pub limits: Limits,
    /// seccomp mode.
    pub seccomp: SeccompMode,
    /// Cap of the adaptive polling window after a client message.
    pub poll_max: std::time::Duration,
    /// `--jail`.
    pub jail: crate::jail::JailMode,
    /// `--user`.
    pub user: Option<(u32, u32)>,
    /// `--jail-selftest` (test hook).
    pub jail_selftest: Option<PathBuf>,
    /// `--run-queue-file` (test hook; default `/proc/loadavg`).
    pub run_queue_file: Option<PathBuf>,
}

/// Invalid command line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither a socket nor activation.
    #[error(
        "no socket: give --socket-path PATH or --fd N, or start under systemd socket activation"
    )]
    NoSocket,
    /// LISTEN_FDS present but unusable.
    #[error("socket activation: {0}")]
    Activation(String),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

/// First fd systemd passes (SD_LISTEN_FDS_START).
const SD_LISTEN_FDS_START: RawFd = 3;

fn activation_fd() -> Result<Option<InheritedFd>, ConfigError> {
    let Ok(fds) = std::env::var("LISTEN_FDS") else {
        return Ok(None);
    };
    let pid = std::env::var("LISTEN_PID").unwrap_or_default();
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Err(ConfigError::Activation(format!(
            "LISTEN_PID {pid:?} is not this process ({})",
            std::process::id()
        )));
    }
    match fds.parse::<u32>() {
        Ok(1) => Ok(Some(InheritedFd(SD_LISTEN_FDS_START))),
        _ => Err(ConfigError::Activation(format!(
            "LISTEN_FDS={fds:?}: exactly one socket expected"
        ))),
    }
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(a: Args) -> Result<Self, ConfigError> {
        let listen = match (a.socket_path, a.fd) {
            (Some(p), None) => Listen::Path(p),
            (None, Some(fd)) if fd >= 0 => Listen::Fd(InheritedFd(fd)),
            (None, Some(fd)) => return Err(ConfigError::Invalid(format!("--fd {fd}: negative"))),
            (None, None) => Listen::Fd(activation_fd()?.ok_or(ConfigError::NoSocket)?),
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--socket-path and --fd are exclusive".into(),
                ))
            }
        };
        if a.sim_first_seq > 0x7fff_ffff {
            return Err(ConfigError::Invalid(format!(
                "--sim-first-seq {}: sequences run from 0 to 0x7fffffff",
                a.sim_first_seq
            )));
        }
        if a.sim_veventq_depth == Some(0) {
            return Err(ConfigError::Invalid(
                "--sim-veventq-depth must be at least 1".into(),
            ));
        }
        if a.host == HostKind::Iommufd && (a.sim_veventq_depth.is_some() || a.sim_first_seq != 0) {
            return Err(ConfigError::Invalid(
                "--sim-* options need --host sim".into(),
            ));
        }
        if a.iommufd_fd.is_some() && a.host != HostKind::Iommufd {
            return Err(ConfigError::Invalid(
                "--iommufd-fd needs --host iommufd".into(),
            ));
        }
        let iommufd_fd = match (a.iommufd_fd, &listen) {
            (Some(n), Listen::Fd(s)) if n == s.number() => {
                return Err(ConfigError::Invalid(format!(
                    "--iommufd-fd {n} is the socket's descriptor"
                )))
            }
            (Some(n), _) if n < 0 => {
                return Err(ConfigError::Invalid(format!("--iommufd-fd {n}: negative")))
            }
            (n, _) => n.map(InheritedFd),
        };
        if a.max_data_xfer_size < 4096 || a.max_data_xfer_size > (64 << 20) {
            return Err(ConfigError::Invalid(
                "--max-data-xfer-size must be within 4 KiB..=64 MiB".into(),
            ));
        }
        if a.max_msg_fds == 0 || a.max_msg_fds > 253 {
            return Err(ConfigError::Invalid(
                "--max-msg-fds must be within 1..=253".into(),
            ));
        }
        if a.max_dma_maps == 0 {
            return Err(ConfigError::Invalid(
                "--max-dma-maps must be at least 1".into(),
            ));
        }
        if a.user.is_some() && a.jail == crate::jail::JailMode::Off {
            return Err(ConfigError::Invalid(
                "--user needs the jail (not --jail off)".into(),
            ));
        }
        if a.event_buffer == Some(0) {
            return Err(ConfigError::Invalid(
                "--event-buffer must be at least 1".into(),
            ));
        }
        Ok(Config {
            listen,
            host: a.host,
            iommufd_fd,
            sim_veventq_depth: a.sim_veventq_depth,
            sim_first_seq: a.sim_first_seq,
            sim_reject_opcode: a.sim_reject_opcode,
            msi: !a.no_msi,
            batch: !a.no_batch,
            read_mode: a.veventq_read,
            event_buffer: a.event_buffer,
            limits: Limits {
                max_data_xfer_size: a.max_data_xfer_size,
                max_dma_maps: a.max_dma_maps,
                max_msg_fds: a.max_msg_fds,
            },
            seccomp: a.seccomp,
            poll_max: std::time::Duration::from_micros(a.poll_us.min(10_000).into()),
            jail: a.jail,
            user: a.user,
            jail_selftest: a.jail_selftest,
            run_queue_file: a.run_queue_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(v: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["vsmmud"];
        all.extend_from_slice(v);
        Config::try_from(
            Args::try_parse_from(all).map_err(|e| ConfigError::Invalid(e.to_string()))?,
        )
    }

    #[test]
    fn socket_choice() {
        assert_eq!(
            parse(&["--socket-path", "/tmp/x"]).unwrap().listen,
            Listen::Path("/tmp/x".into())
        );
        // Validating takes no descriptor: 5 need not be open here.
        assert_eq!(
            parse(&["--fd", "5"]).unwrap().listen,
            Listen::Fd(InheritedFd(5))
        );
        assert!(parse(&["--fd", "5", "--socket-path", "/x"]).is_err());
        // One number, one owner.
        let both = ["--fd", "5", "--host", "iommufd", "--iommufd-fd"];
        assert!(parse(&[&both[..], &["5"]].concat()).is_err());
        assert_eq!(
            parse(&[&both[..], &["6"]].concat()).unwrap().iommufd_fd,
            Some(InheritedFd(6))
        );
    }

    #[test]
    fn adopting_takes_an_open_descriptor_only() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let n = a.into_raw_fd();
        let owned = InheritedFd(n).adopt().unwrap();
        assert_eq!(owned.as_raw_fd(), n);
        // Above any RLIMIT_NOFILE: never open.
        let e = InheritedFd(1 << 30).adopt().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&["--fd", "5", "--sim-first-seq", "2147483648"]).is_err());
        assert!(parse(&["--fd", "5", "--sim-veventq-depth", "0"]).is_err());
        assert!(parse(&["--fd", "5", "--host", "iommufd", "--sim-first-seq", "1"]).is_err());
        assert!(parse(&["--fd", "5", "--iommufd-fd", "4"]).is_err());
        assert!(parse(&["--fd", "5", "--max-msg-fds", "0"]).is_err());
        let c = parse(&["--fd", "5", "--no-batch", "--msi"]).unwrap();
        assert!(!c.batch && c.msi);
        assert_eq!(c.seccomp, SeccompMode::Kill);
        // MSI is the default; --no-msi turns it off; both at once is an error.
        assert!(parse(&["--fd", "5"]).unwrap().msi);
        assert!(!parse(&["--fd", "5", "--no-msi"]).unwrap().msi);
        assert!(parse(&["--fd", "5", "--no-msi", "--msi"]).is_err());
    }
}
