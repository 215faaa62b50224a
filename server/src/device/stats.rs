//! `VSMMU_GET_STATS`: the counters as JSON.

use vsmmu_protocol::vfio_user::{Message, StatsRequest};

use super::Device;

impl Device {
    /// GET_STATS: the counters, or only the size they need when the
    /// client's `argsz` is too small.
    pub(super) fn get_stats(&mut self, reply: Message, r: &StatsRequest) -> Vec<u8> {
        self.smmu.refresh_stats(&mut self.stats);
        if let Some(hw) = self.host.host_hw_info() {
            self.stats.host_idr = hw.idr;
        }
        let json = self.stats.to_json();
        let argsz = (8 + json.len()) as u32;
        let reply = reply.push(&StatsRequest { argsz, flags: 0 });
        if r.argsz < argsz {
            // Too small: say how much is needed, as the spec's argsz rule says.
            return reply.finish();
        }
        reply.bytes(&json).finish()
    }
}
