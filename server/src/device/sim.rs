//! The commands only the sim host serves: `VSMMU_SIM_INJECT`,
//! `VSMMU_SIM_DMA`, and `VSMMU_TRANSLATE` (a VMM-emulated device's access
//! through the guest's stage-1 tables, with the granules ahead).

use vsmmu_protocol::smmu::event::raw_event_type;
use vsmmu_protocol::vfio_user::{self as vu, Message, SimDma, SimInjectReply, Translate};

use super::{Device, RequestError};
use crate::host::sim::dma::VmmTranslation;
use crate::smmu::strtab::TxnCheck;

impl Device {
    /// SIM_INJECT: records into the sim's vEVENTQ, which the event loop
    /// then drains.
    pub(super) fn sim_inject(
        &mut self,
        reply: Message,
        records: &[[u64; 4]],
    ) -> Result<Vec<u8>, RequestError> {
        let sim = self
            .host
            .sim_controls()
            .ok_or(RequestError::NeedsSim("SIM_INJECT"))?;
        let (queued, dropped) = sim.inject(records)?;
        Ok(reply
            .push(&SimInjectReply {
                argsz: SimInjectReply::SIZE,
                flags: 0,
                queued,
                dropped,
            })
            .finish())
    }

    /// SIM_DMA: one device DMA through the sim's host SMMU.
    pub(super) fn sim_dma(
        &mut self,
        reply: Message,
        req: &SimDma,
        data: &[u8],
    ) -> Result<Vec<u8>, RequestError> {
        let sim = self
            .host
            .sim_controls()
            .ok_or(RequestError::NeedsSim("SIM_DMA"))?;
        let r = sim.dma(&self.mem, req, data);
        Ok(reply
            .push(&vu::SimDmaReply {
                argsz: (vu::SimDmaReply::SIZE as usize + r.data.len()) as u32,
                flags: req.flags,
                status: r.status,
                reserved: 0,
            })
            .bytes(&r.data)
            .finish())
    }

    /// TRANSLATE: the guest's stream table first, as an emulated SMMUv3
    /// decides, then the sim's stage-1 walk.
    pub(super) fn translate(
        &mut self,
        reply: Message,
        t: &Translate,
    ) -> Result<Vec<u8>, RequestError> {
        if self.host.sim_controls().is_none() {
            return Err(RequestError::NeedsSim("TRANSLATE (VMM-emulated devices)"));
        }
        let write = t.flags & vu::TRANSLATE_WRITE != 0;
        let ssid = (t.ssid != vu::SIM_DMA_NO_SSID).then_some(t.ssid);
        let events = t.flags & vu::TRANSLATE_NO_EVENT == 0;
        // The guest's own stream table first, as an emulated SMMUv3
        // decides: a configuration error is the guest's event.
        let verdict = if events {
            let (smmu, mut ctx) = self.model();
            smmu.check_transaction(t.sid, ssid, &mut ctx)
        } else {
            TxnCheck::Proceed
        };
        let refused = |status| VmmTranslation {
            status,
            addr: 0,
            mask: 0,
            perm: 0,
        };
        let r = match (verdict, self.host.sim_controls()) {
            (TxnCheck::Proceed, Some(sim)) => {
                sim.translate_for_vmm(&self.mem, t.sid, ssid, t.iova, write, events)
            }
            (TxnCheck::Proceed, None) => refused(vu::SIM_DMA_ABORTED),
            (TxnCheck::Abort, _) => refused(vu::SIM_DMA_ABORTED),
            (TxnCheck::Event(rec), _) => refused(raw_event_type(&rec).into()),
        };
        self.stats.translations += 1;
        if r.status != 0 {
            self.stats.translation_faults += 1;
        }
        let ahead = self.translate_ahead(t, ssid, &r);
        log::trace!(
            "TRANSLATE sid {:#x} iova {:#x} flags {:#x}: status {:#x}, {} granules along",
            t.sid,
            t.iova,
            t.flags,
            r.status,
            ahead.len()
        );
        let head = vu::TranslateReply::SIZE as usize;
        let reply = reply.push(&vu::TranslateReply {
            argsz: (head + ahead.len() * vu::TranslateAhead::SIZE as usize) as u32,
            flags: t.flags,
            status: r.status,
            perm: r.perm,
            addr: r.addr,
            mask: r.mask,
        });
        Ok(ahead.iter().fold(reply, |m, a| m.push(a)).finish())
    }

    /// [`vu::TRANSLATE_AHEAD`]: the granules after a translated access;
    /// [`vu::TRANSLATE_BEHIND`]: those before it; both: the two sides
    /// alternately. Nearest first, walked as reads (a speculative walk must
    /// not mark a page dirty), without events, each side up to its first
    /// fault; each record with what its granule allows.
    fn translate_ahead(
        &mut self,
        t: &Translate,
        ssid: Option<u32>,
        first: &VmmTranslation,
    ) -> Vec<vu::TranslateAhead> {
        let room = (t.argsz as usize).saturating_sub(vu::TranslateReply::SIZE as usize)
            / vu::TranslateAhead::SIZE as usize;
        let n = room.min(vu::TRANSLATE_AHEAD_MAX);
        let mut out = Vec::new();
        if first.status != 0 {
            return out;
        }
        let Some(sim) = self.host.sim_controls() else {
            return out;
        };
        let base = t.iova & !first.mask;
        // The next granule up starts at `high`; the next one down ends
        // just below `low`. `None`: that side is done.
        let mut high = base
            .checked_add(first.mask.wrapping_add(1))
            .filter(|_| t.flags & vu::TRANSLATE_AHEAD != 0);
        let mut low = (base > 0 && t.flags & vu::TRANSLATE_BEHIND != 0).then_some(base);
        while out.len() < n && (high.is_some() || low.is_some()) {
            for up in [true, false] {
                if out.len() == n {
                    break;
                }
                let side = if up { &mut high } else { &mut low };
                let Some(edge) = *side else {
                    continue;
                };
                let iova = if up { edge } else { edge - 1 };
                let r = sim.translate_for_vmm(&self.mem, t.sid, ssid, iova, false, false);
                if r.status != 0 {
                    *side = None;
                    continue;
                }
                let start = iova & !r.mask;
                *side = if up {
                    start.checked_add(r.mask.wrapping_add(1))
                } else {
                    (start > 0).then_some(start)
                };
                out.push(vu::TranslateAhead {
                    iova: start,
                    addr: r.addr & !r.mask,
                    mask: r.mask,
                    perm: r.perm,
                    reserved: 0,
                });
            }
        }
        self.stats.translations_ahead += out.len() as u64;
        out
    }
}
