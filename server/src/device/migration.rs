//! The migration requests: DEVICE_FEATURE (the migration feature and
//! MIG_DEVICE_STATE), MIG_DATA_READ and MIG_DATA_WRITE. The state machine
//! and the stream are `crate::migration`'s; the device takes part in its
//! arcs through [`Migratable`].

use vsmmu_protocol::vfio_user::{self as vu, DeviceFeature, Message, MigData, MigDeviceState};
use zerocopy::FromBytes;

use super::{Device, RequestError};
use crate::migration::{MigState, Migratable};
use crate::smmu::SmmuState;

/// Bytes read from the vEVENTQ per `read(2)` when saving.
const SAVE_DRAIN_BUF: usize = 64 * 1024;

impl Device {
    /// DEVICE_FEATURE: PROBE, GET or SET of the migration feature
    /// (read-only: STOP_COPY) and of MIG_DEVICE_STATE.
    pub(super) fn device_feature(
        &mut self,
        reply: Message,
        feature: &DeviceFeature,
        data: &[u8],
    ) -> Result<Vec<u8>, RequestError> {
        let index = feature.flags & vu::DEVICE_FEATURE_MASK;
        let get = feature.flags & vu::DEVICE_FEATURE_GET != 0;
        let set = feature.flags & vu::DEVICE_FEATURE_SET != 0;
        let probe = feature.flags & vu::DEVICE_FEATURE_PROBE != 0;
        let known = vu::DEVICE_FEATURE_MASK
            | vu::DEVICE_FEATURE_GET
            | vu::DEVICE_FEATURE_SET
            | vu::DEVICE_FEATURE_PROBE;
        if feature.flags & !known != 0 || (get && set && !probe) || (!get && !set && !probe) {
            return Err(RequestError::FeatureFlags(feature.flags));
        }
        let echo = |data: &[u8]| reply.clone().push(feature).bytes(data).finish();
        match index {
            vu::DEVICE_FEATURE_MIGRATION => {
                if set {
                    return Err(RequestError::MigrationFeatureSet);
                }
                if probe {
                    return Ok(echo(&[]));
                }
                let flags = vu::MIGRATION_STOP_COPY.to_le_bytes();
                Ok(reply
                    .push(&DeviceFeature {
                        argsz: DeviceFeature::SIZE + flags.len() as u32,
                        flags: feature.flags,
                    })
                    .bytes(&flags)
                    .finish())
            }
            vu::DEVICE_FEATURE_MIG_DEVICE_STATE => {
                if probe {
                    return Ok(echo(&[]));
                }
                if get {
                    let st = MigDeviceState {
                        device_state: self.mig.state().into(),
                        data_fd: -1,
                    };
                    return Ok(reply
                        .push(&DeviceFeature {
                            argsz: DeviceFeature::SIZE + MigDeviceState::SIZE,
                            flags: feature.flags,
                        })
                        .push(&st)
                        .finish());
                }
                let st = MigDeviceState::read_from_prefix(data)
                    .map(|(s, _)| s)
                    .map_err(|_| RequestError::MigDeviceStateData)?;
                self.set_mig_state(MigState::try_from(st.device_state)?)?;
                Ok(echo(data))
            }
            _ => Err(RequestError::FeatureUnsupported(index)),
        }
    }

    /// MIG_DATA_READ: the next chunk of the saved state (STOP_COPY).
    pub(super) fn mig_data_read(
        &mut self,
        reply: Message,
        r: &MigData,
    ) -> Result<Vec<u8>, RequestError> {
        let max = (r.size as usize).min(self.limits.max_data_xfer_size as usize);
        let chunk = self.mig.read(max)?;
        Ok(reply
            .push(&MigData {
                argsz: (MigData::SIZE as usize + chunk.len()) as u32,
                size: chunk.len() as u32,
            })
            .bytes(chunk)
            .finish())
    }

    /// MIG_DATA_WRITE: the next chunk of a state to load (RESUMING).
    pub(super) fn mig_data_write(
        &mut self,
        reply: Message,
        data: &[u8],
    ) -> Result<Vec<u8>, RequestError> {
        self.mig.write(data)?;
        Ok(reply.finish())
    }

    /// Moves the state machine to `to`; the machine is taken out of the
    /// device for the move so that the device can serve its arcs.
    fn set_mig_state(&mut self, to: MigState) -> Result<(), RequestError> {
        let mut mig = std::mem::take(&mut self.mig);
        let moved = mig.set_state(to, self);
        self.mig = mig;
        Ok(moved?)
    }
}

impl Migratable for Device {
    fn set_running(&mut self, running: bool) {
        let (smmu, mut ctx) = self.model();
        smmu.set_running(running, &mut ctx);
    }

    fn save(&mut self) -> SmmuState {
        // What the host still holds joins the saved buffer.
        let mut buf = vec![0u8; SAVE_DRAIN_BUF];
        self.drain_veventq(&mut buf, false);
        self.smmu.save()
    }

    fn check(&self, state: &SmmuState) -> Result<(), String> {
        self.smmu.check_state(state)
    }

    fn restore(&mut self, state: SmmuState) {
        let (smmu, mut ctx) = self.model();
        smmu.restore(state, &mut ctx);
    }
}
