//! VSMMU_TRANSLATE for the VMM's emulated devices, answered from the
//! IOTLB when it can, with neighbouring granules fetched around a miss.

use vsmmu_protocol::vfio_user::{self as vu, Command};
use zerocopy::{FromBytes, IntoBytes};

use super::{parse, Client, Result};
use crate::iotlb::Iotlb;

/// The pages `[low, high)` of one StreamID and SubstreamID that a cache
/// miss brought along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fetched {
    sid: u32,
    ssid: u32,
    low: u64,
    high: u64,
}

/// Granules a cache miss asks vsmmud to translate along with it: as many
/// as a reply carries (256 KiB of 4 KiB pages with the one asked for). Around
/// a random miss they are the other buffers of one I/O request (Linux maps
/// them one after another, top down, a few pages apart) or the rest of a
/// transfer's segment; each side stops at its first unmapped page, so
/// around a lone page the walk is short.
const TRANSLATE_ALONG: usize = vu::TRANSLATE_AHEAD_MAX;

impl Client {
    /// VSMMU_TRANSLATE: translates `iova` for an access by the emulated
    /// device `sid`; returns the reply (status 0 when translated). With the
    /// IOTLB enabled ([`Client::enable_iotlb`]) a cached translation
    /// answers without a round trip.
    pub fn translate(
        &mut self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        flags: u32,
    ) -> Result<vu::TranslateReply> {
        let ssid = ssid.unwrap_or(vu::SIM_DMA_NO_SSID);
        let head = match self.iotlb.as_mut().map(Iotlb::sync) {
            Some(head) => {
                let write = flags & vu::TRANSLATE_WRITE != 0;
                if let Some(hit) = self
                    .iotlb
                    .as_mut()
                    .and_then(|t| t.lookup(sid, ssid, iova, write))
                {
                    return Ok(vu::TranslateReply { flags, ..hit });
                }
                Some(head)
            }
            None => None,
        };
        // With a cache, neighbouring granules come along: those around any
        // miss (each side up to its first unmapped page); after a miss just
        // past the top of what the last one brought (a sequential
        // transfer) only those above, or after one just below it (a
        // transfer mapped top down) only those below, as a readahead
        // window.
        let page = iova >> 12;
        let (up, down) = match self.fetched {
            Some(f) if (f.sid, f.ssid) == (sid, ssid) => {
                (f.high == page, f.low.checked_sub(1) == Some(page))
            }
            _ => (false, false),
        };
        let along = match (up, down) {
            (true, _) => vu::TRANSLATE_AHEAD,
            (_, true) => vu::TRANSLATE_BEHIND,
            _ => vu::TRANSLATE_AHEAD | vu::TRANSLATE_BEHIND,
        };
        let (flags_sent, ahead) = match head {
            Some(_) => (flags | along, TRANSLATE_ALONG),
            None => (flags, 0),
        };
        let head_size = vu::TranslateReply::SIZE as usize;
        let rec_size = vu::TranslateAhead::SIZE as usize;
        let t = vu::Translate {
            argsz: (head_size + ahead * rec_size) as u32,
            flags: flags_sent,
            sid,
            ssid,
            iova,
        };
        let r = self.request(Command::VsmmuTranslate, t.as_bytes(), &[])?;
        let reply: vu::TranslateReply = parse(&r)?;
        // Cached only if nothing was invalidated while vsmmud answered.
        if let (Some(t), Some(head)) = (self.iotlb.as_mut(), head) {
            if t.head() == head {
                t.insert(sid, ssid, iova, &reply);
                let mut low = iova & !reply.mask;
                let mut high = low.wrapping_add(reply.mask.wrapping_add(1));
                let extra = r.get(head_size..).unwrap_or(&[]);
                for rec in extra.chunks_exact(rec_size) {
                    if let Ok(a) = vu::TranslateAhead::read_from_bytes(rec) {
                        let as_reply = vu::TranslateReply {
                            perm: a.perm,
                            addr: a.addr,
                            mask: a.mask,
                            ..reply
                        };
                        t.insert(sid, ssid, a.iova, &as_reply);
                        low = low.min(a.iova & !a.mask);
                        high = high.max((a.iova & !a.mask).wrapping_add(a.mask.wrapping_add(1)));
                    }
                }
                self.fetched = (reply.status == 0).then_some(Fetched {
                    sid,
                    ssid,
                    low: low >> 12,
                    high: high >> 12,
                });
            }
        }
        Ok(vu::TranslateReply {
            argsz: head_size as u32,
            flags,
            ..reply
        })
    }
}
