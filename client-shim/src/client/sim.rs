//! The sim backend's test commands: VSMMU_SIM_INJECT and VSMMU_SIM_DMA.

use vsmmu_protocol::vfio_user::{
    self as vu, Command, SimDma, SimDmaReply, SimInjectHeader, SimInjectReply,
};
use zerocopy::IntoBytes;

use super::{parse, Client, Result};

impl Client {
    /// VSMMU_SIM_INJECT: returns (queued, dropped).
    pub fn sim_inject(&mut self, records: &[[u64; 4]]) -> Result<(u32, u32)> {
        let h = SimInjectHeader {
            argsz: (SimInjectHeader::SIZE as usize + 32 * records.len()) as u32,
            count: records.len() as u32,
        };
        let mut payload = h.as_bytes().to_vec();
        for r in records {
            payload.extend_from_slice(r.as_bytes());
        }
        let r = self.request(Command::VsmmuSimInject, &payload, &[])?;
        let rep: SimInjectReply = parse(&r)?;
        Ok((rep.queued, rep.dropped))
    }

    /// VSMMU_SIM_DMA: returns (status, data read).
    pub fn sim_dma(
        &mut self,
        vsid: u32,
        ssid: Option<u32>,
        iova: u64,
        write: Option<&[u8]>,
        len: u64,
    ) -> Result<(u32, Vec<u8>)> {
        let data = write.unwrap_or(&[]);
        let req = SimDma {
            argsz: (SimDma::SIZE as usize + data.len()) as u32,
            flags: if write.is_some() {
                vu::SIM_DMA_WRITE
            } else {
                0
            },
            vsid,
            ssid: ssid.unwrap_or(vu::SIM_DMA_NO_SSID),
            iova,
            len,
        };
        let mut payload = req.as_bytes().to_vec();
        payload.extend_from_slice(data);
        let r = self.request(Command::VsmmuSimDma, &payload, &[])?;
        let rep: SimDmaReply = parse(&r)?;
        Ok((rep.status, r.get(16..).unwrap_or(&[]).to_vec()))
    }
}
