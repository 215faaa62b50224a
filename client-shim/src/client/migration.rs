//! Migration: the device's state machine (DEVICE_FEATURE) and its saved
//! state (MIG_DATA_READ / MIG_DATA_WRITE).

use vsmmu_protocol::vfio_user::{self as vu, Command};
use zerocopy::IntoBytes;

use super::{parse, Client, Result};

impl Client {
    /// Moves the device's migration state machine (`vfio_device_mig_state`).
    pub fn mig_set_state(&mut self, state: u32) -> Result<()> {
        let f = vu::DeviceFeature {
            argsz: vu::DeviceFeature::SIZE + vu::MigDeviceState::SIZE,
            flags: vu::DEVICE_FEATURE_SET | vu::DEVICE_FEATURE_MIG_DEVICE_STATE,
        };
        let mut payload = f.as_bytes().to_vec();
        payload.extend_from_slice(
            vu::MigDeviceState {
                device_state: state,
                data_fd: -1,
            }
            .as_bytes(),
        );
        self.request(Command::DeviceFeature, &payload, &[])?;
        Ok(())
    }

    /// The device's migration state.
    pub fn mig_state(&mut self) -> Result<u32> {
        let f = vu::DeviceFeature {
            argsz: vu::DeviceFeature::SIZE + vu::MigDeviceState::SIZE,
            flags: vu::DEVICE_FEATURE_GET | vu::DEVICE_FEATURE_MIG_DEVICE_STATE,
        };
        let r = self.request(Command::DeviceFeature, f.as_bytes(), &[])?;
        Ok(parse::<vu::MigDeviceState>(r.get(8..).unwrap_or(&[]))?.device_state)
    }

    /// Reads the whole saved state (in STOP_COPY), `chunk` bytes at a time.
    pub fn mig_read_all(&mut self, chunk: u32) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let req = vu::MigData {
                argsz: vu::MigData::SIZE + chunk,
                size: chunk,
            };
            let r = self.request(Command::MigDataRead, req.as_bytes(), &[])?;
            let h: vu::MigData = parse(&r)?;
            out.extend_from_slice(r.get(8..8 + h.size as usize).unwrap_or(&[]));
            if h.size < chunk {
                return Ok(out);
            }
        }
    }

    /// Writes a saved state (in RESUMING), `chunk` bytes per message.
    pub fn mig_write_all(&mut self, data: &[u8], chunk: usize) -> Result<()> {
        for part in data.chunks(chunk.max(1)) {
            let mut payload = vu::MigData {
                argsz: vu::MigData::SIZE,
                size: part.len() as u32,
            }
            .as_bytes()
            .to_vec();
            payload.extend_from_slice(part);
            self.request(Command::MigDataWrite, &payload, &[])?;
        }
        Ok(())
    }
}
