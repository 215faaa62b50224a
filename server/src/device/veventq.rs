//! The host's events: the vEVENTQ the event loop polls, drained into the
//! model (and from there into the guest's EVENTQ).

use std::os::fd::RawFd;

use super::Device;
use crate::host::VEVENT_RECORD_SIZE;

impl Device {
    /// The vEVENTQ fd to poll, with a generation that changes whenever the
    /// model allocates a new vEVENTQ.
    pub fn veventq_source(&self) -> Option<(RawFd, u64)> {
        self.host
            .veventq_fd()
            .map(|fd| (fd, self.smmu.veventq_generation()))
    }

    /// Reads the vEVENTQ until it is empty (or one record, in seed-style
    /// mode) and hands the records to the model. Returns true when more may
    /// remain (seed-style mode only).
    pub fn drain_veventq(&mut self, buf: &mut [u8], one_record: bool) -> bool {
        loop {
            let want = if one_record {
                buf.len().min(VEVENT_RECORD_SIZE)
            } else {
                buf.len()
            };
            let n = match self.host.read_veventq(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    log::error!("vEVENTQ read: {e}");
                    return false;
                }
            };
            self.stats.veventq_read_calls += 1;
            if n == 0 {
                return false;
            }
            let (smmu, mut ctx) = self.model();
            smmu.host_records(&buf[..n], &mut ctx);
            if one_record {
                return true;
            }
            // Room for another record left over: the queue was empty at that
            // moment, and every later event raises a new edge (the kernel
            // wakes the poll per event), so no trailing read returning 0.
            if buf.len() - n >= VEVENT_RECORD_SIZE {
                return false;
            }
        }
    }
}
