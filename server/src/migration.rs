//! Device state save/restore through vfio-user's migration protocol:
//! `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` moves the device between
//! RUNNING, STOP, STOP_COPY and RESUMING; `MIG_DATA_READ` streams the
//! saved state out, `MIG_DATA_WRITE` streams it in.
//!
//! The stream is `"VSMU"`, a little-endian u32 format version, then the
//! model state ([`SmmuState`]) encoded with postcard. A stream of another
//! version or that does not decode is refused before anything changes.

use vsmmu_protocol::vfio_user::mig_state;

use crate::smmu::SmmuState;

/// Stream magic.
pub const MAGIC: [u8; 4] = *b"VSMU";
/// Stream format version. Any change to the layout of [`SmmuState`] (the
/// register block's fields included) needs a new one; the smmu unit test
/// `state_stream_layout_is_version_1` holds the current layout.
pub const VERSION: u32 = 1;
/// Largest state stream accepted (the event buffer dominates).
pub const MAX_STREAM: usize = 64 << 20;

/// A state stream that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigError {
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
pub fn encode(state: &SmmuState) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    // Serializing plain structs of numbers into a Vec cannot fail.
    out.extend(postcard::to_allocvec(state).unwrap_or_default());
    out
}

/// Decodes a state stream.
pub fn decode(bytes: &[u8]) -> Result<SmmuState, MigError> {
    let (magic, rest) = bytes.split_at_checked(4).ok_or(MigError::Magic)?;
    if magic != MAGIC {
        return Err(MigError::Magic);
    }
    let (ver, body) = rest
        .split_at_checked(4)
        .ok_or_else(|| MigError::Corrupt("no version".into()))?;
    let ver = u32::from_le_bytes([ver[0], ver[1], ver[2], ver[3]]);
    if ver != VERSION {
        return Err(MigError::Version(ver));
    }
    let (state, rest) = postcard::take_from_bytes::<SmmuState>(body)
        .map_err(|e| MigError::Corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MigError::Corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(state)
}

/// Where the migration state machine is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MigState {
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

impl MigState {
    /// The `vfio_device_mig_state` number.
    pub fn number(&self) -> u32 {
        match self {
            MigState::Running => mig_state::RUNNING,
            MigState::Stop => mig_state::STOP,
            MigState::StopCopy { .. } => mig_state::STOP_COPY,
            MigState::Resuming { .. } => mig_state::RESUMING,
        }
    }
}

/// The arcs from `from` to `to` (numbers), shortest path through STOP as
/// the spec's rules give when PRE_COPY is not supported; `None` for a
/// state this device does not support (PRE_COPY, P2P, ERROR).
pub fn path(from: u32, to: u32) -> Option<Vec<u32>> {
    use mig_state::*;
    let supported = |s| matches!(s, RUNNING | STOP | STOP_COPY | RESUMING);
    if !supported(to) || !supported(from) {
        return None;
    }
    Some(if from == to {
        vec![]
    } else if from == STOP || to == STOP {
        vec![to]
    } else {
        vec![STOP, to]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mig_state::*;

    #[test]
    fn paths() {
        assert_eq!(path(RUNNING, STOP_COPY), Some(vec![STOP, STOP_COPY]));
        assert_eq!(path(RESUMING, RUNNING), Some(vec![STOP, RUNNING]));
        assert_eq!(path(STOP, RESUMING), Some(vec![RESUMING]));
        assert_eq!(path(STOP_COPY, STOP), Some(vec![STOP]));
        assert_eq!(path(RUNNING, RUNNING), Some(vec![]));
        assert_eq!(path(RUNNING, PRE_COPY), None);
        assert_eq!(path(RUNNING, ERROR), None);
    }

    #[test]
    fn bad_streams_are_refused() {
        assert_eq!(decode(b"XXXX\x01\0\0\0"), Err(MigError::Magic));
        assert_eq!(decode(b"VSMU\x02\0\0\0"), Err(MigError::Version(2)));
        assert!(matches!(
            decode(b"VSMU\x01\0\0\0\x05"),
            Err(MigError::Corrupt(_))
        ));
        assert_eq!(decode(b"VS"), Err(MigError::Magic));
    }
}
