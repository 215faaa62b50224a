//! Device state save/restore through vfio-user's migration protocol:
//! `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` moves the device between
//! RUNNING, STOP, STOP_COPY and RESUMING ([`Migration::set_state`]);
//! `MIG_DATA_READ` streams the saved state out ([`Migration::read`]),
//! `MIG_DATA_WRITE` streams it in ([`Migration::write`]). The device takes
//! part only through [`Migratable`]: stop, restart, save, check, restore.
//!
//! The stream is `"VSMU"`, a little-endian u32 format version, then the
//! model state ([`SmmuState`]) encoded with postcard. A stream of another
//! version or that does not decode is refused before anything changes.

use vsmmu_protocol::vfio_user::mig_state;

use crate::smmu::SmmuState;

/// Stream magic.
pub(crate) const MAGIC: [u8; 4] = *b"VSMU";
/// Stream format version. Any change to the layout of [`SmmuState`] (the
/// register block's fields included) needs a new one; the smmu unit test
/// `state_stream_layout_is_version_1` holds the current layout.
pub(crate) const VERSION: u32 = 1;
/// Largest state stream accepted (the event buffer dominates).
pub(crate) const MAX_STREAM: usize = 64 << 20;

/// A state stream that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Not a vsmmu state stream.
    #[error("not a vsmmu state stream (bad magic)")]
    Magic,
    /// A format this build does not read.
    #[error("state stream version {0}, this vsmmud reads version {VERSION}")]
    Version(u32),
    /// Truncated or corrupt.
    #[error("corrupt state stream: {0}")]
    Corrupt(String),
}

/// Encodes a state stream.
pub(crate) fn encode(state: &SmmuState) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Serializing plain structs of numbers into a Vec cannot fail.
    out.extend(postcard::to_allocvec(state).unwrap_or_default());
    out
}

/// Decodes a state stream.
pub(crate) fn decode(bytes: &[u8]) -> Result<SmmuState, StreamError> {
    let (magic, rest) = bytes.split_at_checked(4).ok_or(StreamError::Magic)?;
    if magic != MAGIC {
        return Err(StreamError::Magic);
    }
    let (ver, body) = rest
        .split_at_checked(4)
        .ok_or_else(|| StreamError::Corrupt("no version".into()))?;
    let ver = u32::from_le_bytes([ver[0], ver[1], ver[2], ver[3]]);
    if ver != VERSION {
        return Err(StreamError::Version(ver));
    }
    let (state, rest) = postcard::take_from_bytes::<SmmuState>(body)
        .map_err(|e| StreamError::Corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(StreamError::Corrupt(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(state)
}

/// A `vfio_device_mig_state`, as the wire numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigState {
    /// The device failed and must be reset.
    Error,
    /// Stopped.
    Stop,
    /// Running.
    Running,
    /// Stopped, the saved state being read out.
    StopCopy,
    /// Stopped, a new state being written in.
    Resuming,
    /// Running, peer-to-peer DMA quiesced (not used by vfio-user).
    RunningP2p,
    /// Running, tracking changes.
    PreCopy,
    /// PRE_COPY with peer-to-peer DMA quiesced (not used by vfio-user).
    PreCopyP2p,
}

impl MigState {
    /// The `vfio_device_mig_state` number.
    pub const fn number(self) -> u32 {
        match self {
            MigState::Error => mig_state::ERROR,
            MigState::Stop => mig_state::STOP,
            MigState::Running => mig_state::RUNNING,
            MigState::StopCopy => mig_state::STOP_COPY,
            MigState::Resuming => mig_state::RESUMING,
            MigState::RunningP2p => mig_state::RUNNING_P2P,
            MigState::PreCopy => mig_state::PRE_COPY,
            MigState::PreCopyP2p => mig_state::PRE_COPY_P2P,
        }
    }

    /// The name the VFIO uAPI gives it (`VFIO_DEVICE_STATE_<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            MigState::Error => "ERROR",
            MigState::Stop => "STOP",
            MigState::Running => "RUNNING",
            MigState::StopCopy => "STOP_COPY",
            MigState::Resuming => "RESUMING",
            MigState::RunningP2p => "RUNNING_P2P",
            MigState::PreCopy => "PRE_COPY",
            MigState::PreCopyP2p => "PRE_COPY_P2P",
        }
    }

    /// The states this device offers: no PRE_COPY, no P2P, and ERROR is
    /// never entered (a failed arc leaves the state where it was).
    pub const fn is_supported(self) -> bool {
        matches!(
            self,
            MigState::Running | MigState::Stop | MigState::StopCopy | MigState::Resuming
        )
    }
}

impl std::fmt::Display for MigState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.number(), self.name())
    }
}

impl TryFrom<u32> for MigState {
    type Error = MigError;

    fn try_from(n: u32) -> Result<Self, MigError> {
        Ok(match n {
            mig_state::ERROR => MigState::Error,
            mig_state::STOP => MigState::Stop,
            mig_state::RUNNING => MigState::Running,
            mig_state::STOP_COPY => MigState::StopCopy,
            mig_state::RESUMING => MigState::Resuming,
            mig_state::RUNNING_P2P => MigState::RunningP2p,
            mig_state::PRE_COPY => MigState::PreCopy,
            mig_state::PRE_COPY_P2P => MigState::PreCopyP2p,
            _ => return Err(MigError::Unknown(n)),
        })
    }
}

impl From<MigState> for u32 {
    fn from(s: MigState) -> u32 {
        s.number()
    }
}

/// What the state machine refuses. Every refusal leaves the state as it
/// was before the refused arc.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigError {
    /// A number that is no `vfio_device_mig_state`.
    #[error("migration state {0} not supported (no such vfio_device_mig_state)")]
    Unknown(u32),
    /// A state this device does not offer (PRE_COPY, P2P, ERROR).
    #[error("migration state {0} not supported")]
    Unsupported(MigState),
    /// No direct arc between two supported states.
    #[error("no arc from state {from} to {to}")]
    NoArc {
        /// Where the machine is.
        from: MigState,
        /// Where it was asked to go.
        to: MigState,
    },
    /// The stream written in RESUMING does not load.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream loads but describes an SMMU this one cannot become.
    #[error("{0}")]
    Incompatible(String),
    /// `MIG_DATA_READ` in a state other than STOP_COPY.
    #[error("MIG_DATA_READ outside STOP_COPY")]
    ReadOutsideStopCopy,
    /// `MIG_DATA_WRITE` in a state other than RESUMING.
    #[error("MIG_DATA_WRITE outside RESUMING")]
    WriteOutsideResuming,
    /// `MIG_DATA_WRITE` beyond [`MAX_STREAM`].
    #[error("state stream too large (at most {MAX_STREAM} bytes)")]
    StreamTooLarge,
}

/// The arcs from `from` to `to`, shortest path through STOP as the spec's
/// rules give when PRE_COPY is not supported.
pub(crate) fn path(from: MigState, to: MigState) -> Result<Vec<MigState>, MigError> {
    for s in [to, from] {
        if !s.is_supported() {
            return Err(MigError::Unsupported(s));
        }
    }
    Ok(if from == to {
        vec![]
    } else if from == MigState::Stop || to == MigState::Stop {
        vec![to]
    } else {
        vec![MigState::Stop, to]
    })
}

/// What the state machine asks of the device on its arcs.
pub trait Migratable {
    /// RUNNING → STOP (`false`) and STOP → RUNNING (`true`).
    fn set_running(&mut self, running: bool);
    /// STOP → STOP_COPY: the whole device state, what the host still
    /// holds included.
    fn save(&mut self) -> SmmuState;
    /// RESUMING → STOP, before anything changes: whether this device can
    /// take `state` (why not, for the log and the error).
    fn check(&self, state: &SmmuState) -> Result<(), String>;
    /// RESUMING → STOP, once checked: becomes `state`.
    fn restore(&mut self, state: SmmuState);
}

/// Where the machine is, with the data its state carries.
#[derive(Debug, Default)]
enum Phase {
    /// Running normally.
    #[default]
    Running,
    /// Stopped.
    Stop,
    /// Stopped, the saved stream being read out from `pos`.
    StopCopy {
        /// The stream.
        data: Vec<u8>,
        /// Bytes already read.
        pos: usize,
    },
    /// Stopped, a stream being written in.
    Resuming {
        /// Bytes received so far.
        data: Vec<u8>,
    },
}

/// The migration state machine of one device.
#[derive(Debug, Default)]
pub struct Migration {
    phase: Phase,
}

impl Migration {
    /// The current state.
    pub fn state(&self) -> MigState {
        match self.phase {
            Phase::Running => MigState::Running,
            Phase::Stop => MigState::Stop,
            Phase::StopCopy { .. } => MigState::StopCopy,
            Phase::Resuming { .. } => MigState::Resuming,
        }
    }

    /// Back to RUNNING without arcs (DEVICE_RESET, the spec's way out of
    /// ERROR); a saved or partly loaded stream is dropped.
    pub fn reset(&mut self) {
        self.phase = Phase::Running;
    }

    /// Moves to `to` along [`path`], arc by arc. An arc that fails leaves
    /// the machine in the state before it.
    pub fn set_state(&mut self, to: MigState, dev: &mut impl Migratable) -> Result<(), MigError> {
        for arc in path(self.state(), to)? {
            self.arc(arc, dev)?;
        }
        Ok(())
    }

    fn arc(&mut self, to: MigState, dev: &mut impl Migratable) -> Result<(), MigError> {
        let next = match (std::mem::take(&mut self.phase), to) {
            (Phase::Running, MigState::Stop) => {
                dev.set_running(false);
                Phase::Stop
            }
            (Phase::Stop, MigState::Running) => {
                dev.set_running(true);
                Phase::Running
            }
            (Phase::Stop, MigState::StopCopy) => {
                let data = encode(&dev.save());
                log::info!("device state saved: {} bytes", data.len());
                Phase::StopCopy { data, pos: 0 }
            }
            (Phase::StopCopy { .. }, MigState::Stop) => Phase::Stop,
            (Phase::Stop, MigState::Resuming) => Phase::Resuming { data: Vec::new() },
            (Phase::Resuming { data }, MigState::Stop) => {
                let loaded = decode(&data).map_err(MigError::from).and_then(|st| {
                    dev.check(&st).map_err(MigError::Incompatible)?;
                    Ok(st)
                });
                match loaded {
                    Ok(st) => {
                        dev.restore(st);
                        log::info!("device state loaded: {} bytes", data.len());
                        Phase::Stop
                    }
                    Err(e) => {
                        log::warn!("refusing the device state: {e}");
                        self.phase = Phase::Resuming { data };
                        return Err(e);
                    }
                }
            }
            (cur, _) => {
                self.phase = cur;
                return Err(MigError::NoArc {
                    from: self.state(),
                    to,
                });
            }
        };
        self.phase = next;
        Ok(())
    }

    /// `MIG_DATA_READ`: the next at most `max` bytes of the saved stream
    /// (empty at its end).
    pub fn read(&mut self, max: usize) -> Result<&[u8], MigError> {
        let Phase::StopCopy { data, pos } = &mut self.phase else {
            return Err(MigError::ReadOutsideStopCopy);
        };
        let start = *pos;
        let n = max.min(data.len() - start);
        *pos += n;
        Ok(&data[start..start + n])
    }

    /// `MIG_DATA_WRITE`: appends to the stream being loaded.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), MigError> {
        let Phase::Resuming { data } = &mut self.phase else {
            return Err(MigError::WriteOutsideResuming);
        };
        if data.len() + bytes.len() > MAX_STREAM {
            return Err(MigError::StreamTooLarge);
        }
        data.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigState::*;

    #[test]
    fn paths() {
        assert_eq!(path(Running, StopCopy), Ok(vec![Stop, StopCopy]));
        assert_eq!(path(Resuming, Running), Ok(vec![Stop, Running]));
        assert_eq!(path(Stop, Resuming), Ok(vec![Resuming]));
        assert_eq!(path(StopCopy, Stop), Ok(vec![Stop]));
        assert_eq!(path(Running, Running), Ok(vec![]));
        assert_eq!(path(Running, PreCopy), Err(MigError::Unsupported(PreCopy)));
        assert_eq!(path(Running, Error), Err(MigError::Unsupported(Error)));
    }

    #[test]
    fn states_convert_from_and_to_the_wire() {
        for n in 0..8 {
            assert_eq!(u32::from(MigState::try_from(n).unwrap()), n);
        }
        assert_eq!(MigState::try_from(8), Err(MigError::Unknown(8)));
        assert_eq!(
            MigState::try_from(mig_state::STOP_COPY),
            Ok(MigState::StopCopy)
        );
        assert_eq!(
            MigError::Unsupported(PreCopy).to_string(),
            "migration state 6 (PRE_COPY) not supported"
        );
    }

    /// A device that only records whether it runs.
    #[derive(Default)]
    struct Fake {
        running: Vec<bool>,
    }

    impl Migratable for Fake {
        fn set_running(&mut self, running: bool) {
            self.running.push(running);
        }
        fn save(&mut self) -> SmmuState {
            unreachable!("not saved in these tests")
        }
        fn check(&self, _: &SmmuState) -> Result<(), String> {
            Ok(())
        }
        fn restore(&mut self, _: SmmuState) {}
    }

    #[test]
    fn refused_arcs_leave_the_state() {
        let mut dev = Fake::default();
        let mut m = Migration::default();
        assert_eq!(m.read(8), Err(MigError::ReadOutsideStopCopy));
        assert_eq!(m.write(b"x"), Err(MigError::WriteOutsideResuming));
        m.set_state(Resuming, &mut dev).unwrap();
        assert_eq!((m.state(), &dev.running[..]), (Resuming, &[false][..]));
        m.write(b"NOPE\x01\0\0\0").unwrap();
        assert_eq!(
            m.set_state(Running, &mut dev),
            Err(MigError::Stream(StreamError::Magic))
        );
        assert_eq!(m.state(), Resuming);
        assert_eq!(
            m.set_state(PreCopy, &mut dev),
            Err(MigError::Unsupported(PreCopy))
        );
        m.reset();
        assert_eq!(m.state(), Running);
        assert_eq!(dev.running, [false]);
    }

    #[test]
    fn bad_streams_are_refused() {
        assert_eq!(decode(b"XXXX\x01\0\0\0"), Err(StreamError::Magic));
        assert_eq!(decode(b"VSMU\x02\0\0\0"), Err(StreamError::Version(2)));
        assert!(matches!(
            decode(b"VSMU\x01\0\0\0\x05"),
            Err(StreamError::Corrupt(_))
        ));
        assert_eq!(decode(b"VS"), Err(StreamError::Magic));
    }
}
