//! `VSMMU_SIM_DMA`: a simulated device with a vSID reads or writes guest
//! memory through the sim host SMMU, translated as the physical SMMU would
//! translate it under nesting (the guest's stage 1 from its vSTE and CDs,
//! the host's stage 2 as the identity over the DMA-mapped guest RAM).
//!
//! Outcome, per transaction (IHI 0070 §3.4, §5, §7.3; Linux
//! `arm_smmu_handle_event`, `arm_vmaster_report_event`):
//!
//! | configuration | result | event to the vEVENTQ |
//! |---|---|---|
//! | vSID not attached | status C_BAD_STREAMID | none: the StreamID is unknown to the vIOMMU, the host handles it |
//! | host abort STE (not installed yet, a refused STE, or the guest's STE.Config = abort) | status [`SIM_DMA_ABORTED`] | none: "If STE.V == 1 and STE.Config == 0b000, incoming traffic is terminated without recording an event" (§7.3.7) |
//! | vSTE with V = 0 | C_BAD_STE | yes (the kernel installs an abort STE "with the intention that C_BAD_STE for this SID can be generated to userspace", `arm_smmu_make_nested_domain_ste`) |
//! | ILLEGAL vSTE for this SMMU | C_BAD_STE | yes |
//! | stage 1 bypass (STE bypass, S1DSS bypass) | IOVA = IPA; a SubstreamID is C_BAD_SUBSTREAMID; IOVA beyond the IAS is a stage-1 F_ADDR_SIZE (§3.4) | yes |
//! | S1DSS terminate / SubstreamID 0 with S1DSS = 0b10 | F_STREAM_DISABLED | yes |
//! | SubstreamID out of range, L1CD.V = 0, L1CD.L2Ptr beyond the IAS | C_BAD_SUBSTREAMID | yes |
//! | CD V = 0 or ILLEGAL | C_BAD_CD | yes |
//! | stage-1 Translation / Address size / Access flag / Permission fault | that code, CLASS = IN, S2 = 0, IPA 0 (UNKNOWN, as QEMU leaves it) | yes when CD.R = 1; with CD.R = 0 the status only |
//! | stage-2 fault (IPA of a CD, L1CD, descriptor or output not in DMA-mapped RAM: F_TRANSLATION; a write or HTTU update to read-only RAM: F_PERMISSION) | that code, S2 = 1, CLASS = CD / TT / IN, IPA given | none: the kernel forwards only stage-1 events (`master->vmaster && !event->s2`) |
//! | external abort reading a CD / descriptor | F_CD_FETCH / F_WALK_EABT | none (not in the forwarded list) |
//!
//! The status is the event code the host SMMU raised even when nothing is
//! recorded (CD.R = 0) or forwarded; [`SIM_DMA_ABORTED`] (0x100, outside
//! the 8-bit event codes) marks a termination that raises no event. Device
//! accesses are unprivileged data accesses (PnU = 0, InD = 0; see
//! [`super::walk`]); RnW is 1 for a read. CD.A (RAZ/WI termination) only
//! changes what a real device would read back: the sim device always sees
//! the fault and moves no data.
//!
//! A transfer is split at 4 KiB boundaries and every page is translated
//! (through the TLB, [`super::tlb`]) before any data moves: a DMA that
//! faults on any page moves no data, and the fault reported is the first
//! page's (InputAddr = the first faulting byte's IOVA). HTTU descriptor
//! updates (CD.HA / CD.HD) are written as each page is walked; they are
//! plain 64-bit writes, not atomic against a guest CPU writing the same
//! descriptor at the same time.
//!
//! Forwarded events go through [`SimHost::inject`], so they obey the
//! vEVENTQ's depth, LOST record and sequence numbers exactly as injected
//! ones; without a vEVENTQ the kernel drops them (`-EOPNOTSUPP`), and so
//! does the sim.

use vsmmu_protocol::smmu::cd::{
    cd_lookup, l2_cd_addr, Cd, CdCaps, CdLocation, CdLookup, CdLookupError, L1Cd, CD_0_AFFD,
};
use vsmmu_protocol::smmu::event::{
    host_forwarded, Event, CLASS_CD, CLASS_IN, CLASS_TT, C_BAD_STREAMID, F_PERMISSION,
    F_TRANSLATION, F_WALK_EABT,
};
use vsmmu_protocol::smmu::regs::{oas_bits, IDR0_TTF, IDR5_OAS};
use vsmmu_protocol::smmu::ste::{S1Config, Ste, SteCaps, SteConfig, STE_DWORDS};
use vsmmu_protocol::vfio_user::{
    SimDma, SIM_DMA_MAX_LEN, SIM_DMA_NO_SSID, SIM_DMA_WRITE, TRANSLATE_PERM_READ,
    TRANSLATE_PERM_WRITE,
};

use super::tlb::{CachedCd, TlbEntry};
use super::walk::{self, Access, FaultKind, FetchError, Perms, Stage1, WalkError};
use super::SimHost;
use crate::host::{HostError, HwInfo, SimControls, SteAction};
use crate::memory::GuestRam;

pub(crate) use vsmmu_protocol::vfio_user::SIM_DMA_ABORTED;

/// The unit a transfer is split into: the smallest translation granule.
pub(crate) const SIM_DMA_PAGE: u64 = 4096;

/// The outcome of one `VSMMU_SIM_DMA`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimDmaResult {
    /// 0 on success, else the event code raised (or [`SIM_DMA_ABORTED`]).
    pub status: u32,
    /// The bytes read, for a successful read; empty otherwise.
    pub data: Vec<u8>,
    /// The event record the host SMMU wrote (StreamID = vSID), if any.
    pub record: Option<[u64; 4]>,
    /// The record was reported to the vEVENTQ (queued, or dropped there
    /// with a LOST record).
    pub forwarded: bool,
}

/// A terminated transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fault {
    status: u32,
    /// The record the host SMMU writes.
    record: Option<Event>,
}

impl Fault {
    /// A recorded event.
    fn event(ev: Event) -> Fault {
        Fault {
            status: u32::from(ev.event_type),
            record: Some(ev),
        }
    }

    /// A fault that is not recorded (CD.R = 0).
    fn silent(event_type: u8) -> Fault {
        Fault {
            status: u32::from(event_type),
            record: None,
        }
    }

    /// Terminated without an event.
    fn abort() -> Fault {
        Fault {
            status: SIM_DMA_ABORTED,
            record: None,
        }
    }

    /// The kernel forwards the record to the vEVENTQ.
    fn forwarded(&self) -> bool {
        self.record
            .is_some_and(|e| !e.s2 && host_forwarded(e.event_type))
    }
}

/// The answer to [`SimControls::translate_for_vmm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmmTranslation {
    /// 0, the event code raised, or `SIM_DMA_ABORTED`.
    pub status: u32,
    /// The translated address of the IOVA.
    pub addr: u64,
    /// The translation granule minus one (4 KiB pages: the TLB's unit).
    pub mask: u64,
    /// `TRANSLATE_PERM_*`: what the translation allows without another
    /// walk, for any access (not only the one asked for), so the VMM's
    /// cache can serve both. Write is left out of a writable-clean
    /// descriptor (CD.HD): the first write must walk to mark it dirty.
    pub perm: u32,
}

/// One transaction's identity.
#[derive(Clone, Copy, Debug)]
struct Txn {
    vsid: u32,
    ssid: Option<u32>,
    access: Access,
    /// Stage 2 is the identity over the whole address space (a device the
    /// VMM emulates: its own memory map resolves the output), not only over
    /// DMA-mapped RAM.
    s2_all: bool,
}

impl Txn {
    /// A stage-1 fault on `va` (CLASS = IN), recorded when `record`.
    fn s1_fault(&self, kind: FaultKind, va: u64, record: bool) -> Fault {
        let ty = kind.event_type();
        if record {
            Fault::event(Event::s1_fault(
                ty,
                self.vsid,
                self.ssid,
                va,
                self.access.rnw(),
            ))
        } else {
            Fault::silent(ty)
        }
    }

    /// A stage-2 fault on `ipa` while handling `va` for `class`.
    fn s2_fault(&self, event_type: u8, class: u8, va: u64, ipa: u64) -> Fault {
        Fault::event(Event {
            ssid: self.ssid,
            rnw: self.access.rnw(),
            s2: true,
            class,
            input_addr: va,
            addr2: ipa,
            ..Event::new(event_type, self.vsid)
        })
    }

    /// C_BAD_SUBSTREAMID, F_STREAM_DISABLED or C_BAD_CD from the CD lookup.
    fn cd_lookup_fault(&self, e: CdLookupError) -> Fault {
        Fault::event(match e {
            CdLookupError::StreamDisabled => Event::f_stream_disabled(self.vsid),
            CdLookupError::BadSubstream(index) => Event::c_bad_substreamid(self.vsid, index),
            CdLookupError::AddressOverflow => Event::c_bad_cd(self.vsid, self.ssid),
        })
    }
}

/// The host SMMU's features the translation depends on.
#[derive(Clone, Copy, Debug)]
struct Caps {
    ste: SteCaps,
    cd: CdCaps,
    oas: u8,
    /// Intermediate address size: the OAS, at least 40 bits with AArch32
    /// tables (IHI 0070 §3.4).
    ias: u8,
}

impl Caps {
    fn new(hw: &HwInfo) -> Caps {
        let [idr0, idr1, _, _, _, idr5] = hw.idr;
        let oas = oas_bits(IDR5_OAS.get32(idr5));
        let ias = if IDR0_TTF.get32(idr0) & 1 != 0 {
            oas.max(40)
        } else {
            oas
        };
        Caps {
            ste: SteCaps::from_idr(idr0, idr1, idr5),
            cd: CdCaps::from_idr(idr0, idr5),
            oas,
            ias,
        }
    }

    fn beyond_ias(&self, addr: u64) -> bool {
        self.ias < 64 && addr >> self.ias != 0
    }
}

/// Reads a descriptor through stage 2.
fn fetch_desc(mem: &GuestRam, ipa: u64) -> Result<u64, FetchError> {
    if !mem.check(ipa, 8, false) {
        return Err(FetchError::S2Translation);
    }
    mem.read_u64s::<1>(ipa)
        .map(|[d]| d)
        .map_err(|_| FetchError::External)
}

/// [`VmmTranslation::perm`] of a translation's permissions.
fn translate_perm(p: Perms) -> u32 {
    let mut perm = 0;
    if p.read {
        perm |= TRANSLATE_PERM_READ;
        if p.write {
            perm |= TRANSLATE_PERM_WRITE;
        }
    }
    perm
}

/// Stage 2 on the output of stage 1: the identity over DMA-mapped RAM.
fn stage2(mem: &GuestRam, t: &Txn, va: u64, ipa: u64, len: usize) -> Result<u64, Fault> {
    if t.s2_all {
        return Ok(ipa);
    }
    if !mem.check(ipa, len, false) {
        return Err(t.s2_fault(F_TRANSLATION, CLASS_IN, va, ipa));
    }
    if t.access == Access::Write && !mem.check(ipa, len, true) {
        return Err(t.s2_fault(F_PERMISSION, CLASS_IN, va, ipa));
    }
    Ok(ipa)
}

/// Stage 1 bypassed: the IOVA is the IPA (checked against the IAS).
fn bypass(mem: &GuestRam, caps: &Caps, t: &Txn, va: u64, len: usize) -> Result<u64, Fault> {
    if let Some(ssid) = t.ssid {
        // "supply of a SubstreamID without stage 1 translation" (§7.3.9).
        return Err(Fault::event(Event::c_bad_substreamid(t.vsid, ssid)));
    }
    if caps.beyond_ias(va) {
        return Err(t.s1_fault(FaultKind::AddrSize, va, true));
    }
    stage2(mem, t, va, va, len)
}

/// Reads `N` bytes of configuration (an L1CD or a CD) at `ipa`.
fn fetch_cfg<const N: usize>(mem: &GuestRam, t: &Txn, va: u64, ipa: u64) -> Result<[u8; N], Fault> {
    if !mem.check(ipa, N, false) {
        return Err(t.s2_fault(F_TRANSLATION, CLASS_CD, va, ipa));
    }
    let mut buf = [0u8; N];
    mem.read(ipa, &mut buf)
        .map_err(|_| Fault::event(Event::f_cd_fetch(t.vsid, t.ssid, ipa)))?;
    Ok(buf)
}

/// Fetches and validates the CD at `location`.
fn fetch_cd(
    mem: &GuestRam,
    caps: &Caps,
    t: &Txn,
    s1: &S1Config,
    location: CdLocation,
    index: u32,
    va: u64,
) -> Result<CachedCd, Fault> {
    let cd_addr = match location {
        CdLocation::Direct { cd_addr } => cd_addr,
        CdLocation::TwoLevel {
            l1_desc_addr,
            l2_index,
        } => {
            let raw = fetch_cfg::<8>(mem, t, va, l1_desc_addr)?;
            let desc = L1Cd::decode(u64::from_le_bytes(raw));
            if desc.valid && caps.beyond_ias(desc.l2ptr) {
                // SMMUv3.1: an out-of-range L2Ptr is C_BAD_SUBSTREAMID
                // (§3.4.3, note 4 a).
                return Err(Fault::event(Event::c_bad_substreamid(t.vsid, index)));
            }
            l2_cd_addr(desc, s1.fmt, l2_index, index).map_err(|e| t.cd_lookup_fault(e))?
        }
    };
    let bytes = fetch_cfg::<64>(mem, t, va, cd_addr)?;
    let cd = Cd::from_bytes(&bytes);
    let cfg = cd
        .validate(&caps.cd.with_s1stalld(s1.stalld))
        .map_err(|e| {
            log::debug!(
                "sim DMA: vSID {:#x} CD {index} at {cd_addr:#x}: {e}",
                t.vsid
            );
            Fault::event(Event::c_bad_cd(t.vsid, t.ssid))
        })?;
    Ok(CachedCd {
        s1: Stage1::from_cd(&cfg, CD_0_AFFD.is_set(cd.0[0]), caps.oas),
        asid: cfg.asid,
        record_faults: cfg.record_faults,
    })
}

/// The fault a failed walk reports.
fn walk_fault(e: WalkError, cd: &CachedCd, t: &Txn, va: u64) -> Fault {
    match e {
        WalkError::Stage1 { kind, .. } => t.s1_fault(kind, va, cd.record_faults),
        WalkError::Fetch {
            ipa,
            error: FetchError::S2Translation,
            ..
        } => t.s2_fault(F_TRANSLATION, CLASS_TT, va, ipa),
        WalkError::Fetch {
            ipa,
            error: FetchError::External,
            ..
        } => Fault::event(Event {
            ssid: t.ssid,
            rnw: t.access.rnw(),
            class: CLASS_TT,
            input_addr: va,
            addr2: ipa,
            ..Event::new(F_WALK_EABT, t.vsid)
        }),
    }
}

impl SimControls for SimHost {
    fn inject(&mut self, records: &[[u64; 4]]) -> Result<(u32, u32), HostError> {
        SimHost::inject(self, records)
    }

    /// Performs a simulated device DMA (`VSMMU_SIM_DMA`): translates every
    /// page of `[req.iova, req.iova + req.len)` for `req.vsid` /
    /// `req.ssid`, then reads guest memory or writes `data` into it. On a
    /// fault nothing is transferred, the event the host SMMU raises is
    /// reported to the vEVENTQ when the kernel would forward it, and the
    /// status is its code. See the module documentation.
    ///
    /// The length is `req.len` capped at 4096 bytes and, for a write, at
    /// `data.len()` (the decoder guarantees they agree).
    fn dma(&mut self, mem: &GuestRam, req: &SimDma, data: &[u8]) -> SimDmaResult {
        let write = req.flags & SIM_DMA_WRITE != 0;
        let mut len = req.len.min(SIM_DMA_MAX_LEN) as usize;
        if write {
            len = len.min(data.len());
        }
        let t = Txn {
            vsid: req.vsid,
            ssid: (req.ssid != SIM_DMA_NO_SSID).then_some(req.ssid),
            access: if write { Access::Write } else { Access::Read },
            s2_all: false,
        };
        let caps = Caps::new(&self.config().hw_info);

        let mut chunks = Vec::new();
        let mut off = 0usize;
        while off < len {
            let va = req.iova.wrapping_add(off as u64);
            let in_page = (SIM_DMA_PAGE - (va & (SIM_DMA_PAGE - 1))) as usize;
            let n = in_page.min(len - off);
            match self.translate(mem, &caps, &t, va, n) {
                Ok((ipa, _)) => chunks.push((ipa, off, n)),
                Err(f) => return self.report(f, &t, va),
            }
            off += n;
        }

        let mut out = if write { Vec::new() } else { vec![0u8; len] };
        for (ipa, off, n) in chunks {
            let end = off + n;
            let moved = if write {
                data.get(off..end).map(|src| mem.write(ipa, src).is_ok())
            } else {
                out.get_mut(off..end).map(|dst| mem.read(ipa, dst).is_ok())
            };
            if moved != Some(true) {
                // Translated and checked, yet the memory access failed: an
                // external abort, which the SMMU does not record.
                log::warn!(
                    "sim DMA: vSID {:#x}: access to IPA {ipa:#x} aborted",
                    t.vsid
                );
                return self.report(Fault::abort(), &t, req.iova.wrapping_add(off as u64));
            }
        }
        SimDmaResult {
            status: 0,
            data: out,
            record: None,
            forwarded: false,
        }
    }

    /// `VSMMU_TRANSLATE`: translates one access of a device the VMM
    /// emulates (QEMU's IOMMU memory region), with the same STE, CD, walk and
    /// TLB as [`SimControls::dma`]; stage 2 is the identity over the whole
    /// address space. A fault is queued like a DMA's unless `events` is false.
    fn translate_for_vmm(
        &mut self,
        mem: &GuestRam,
        vsid: u32,
        ssid: Option<u32>,
        iova: u64,
        write: bool,
        events: bool,
    ) -> VmmTranslation {
        let t = Txn {
            vsid,
            ssid,
            access: if write { Access::Write } else { Access::Read },
            s2_all: true,
        };
        let caps = Caps::new(&self.config().hw_info);
        match self.translate(mem, &caps, &t, iova, 1) {
            Ok((addr, perms)) => VmmTranslation {
                status: 0,
                addr,
                perm: translate_perm(perms),
                mask: SIM_DMA_PAGE - 1,
            },
            Err(f) => {
                let status = if events {
                    self.report(f, &t, iova).status
                } else {
                    f.status
                };
                VmmTranslation {
                    status,
                    addr: 0,
                    mask: 0,
                    perm: 0,
                }
            }
        }
    }
}

impl SimHost {
    /// Reports a fault: queues the record when the kernel forwards it.
    fn report(&mut self, f: Fault, t: &Txn, va: u64) -> SimDmaResult {
        let record = f.record.map(|e| e.encode());
        let mut forwarded = false;
        if let (true, Some(rec)) = (f.forwarded(), record) {
            match self.inject(&[rec]) {
                Ok(_) => forwarded = true,
                Err(e) => log::debug!("sim DMA: event dropped: {e}"),
            }
        }
        log::debug!(
            "sim DMA: vSID {:#x} ssid {:?} {:?} at {va:#x}: status {:#x}, record {record:x?}, forwarded {forwarded}",
            t.vsid,
            t.ssid,
            t.access,
            f.status
        );
        SimDmaResult {
            status: f.status,
            data: Vec::new(),
            record,
            forwarded,
        }
    }

    /// Translates the page of `va` (`len` bytes from `va` in one page) to
    /// an IPA in DMA-mapped RAM.
    fn translate(
        &mut self,
        mem: &GuestRam,
        caps: &Caps,
        t: &Txn,
        va: u64,
        len: usize,
    ) -> Result<(u64, Perms), Fault> {
        let Some(action) = self.ste_of(t.vsid) else {
            return Err(Fault {
                status: u32::from(C_BAD_STREAMID),
                record: Some(Event::c_bad_streamid(t.vsid, t.ssid)),
            });
        };
        let s1 = match action {
            SteAction::Abort => return Err(Fault::abort()),
            SteAction::Bypass => return bypass(mem, caps, t, va, len).map(|a| (a, Perms::ALL)),
            SteAction::Nested { ste } => {
                let mut words = [0u64; STE_DWORDS];
                words[0] = ste[0];
                words[1] = ste[1];
                match Ste::from_words(words).validate(&caps.ste) {
                    Err(e) => {
                        log::debug!("sim DMA: vSID {:#x}: {e}", t.vsid);
                        return Err(Fault::event(Event::c_bad_ste(t.vsid, t.ssid)));
                    }
                    Ok(SteConfig::Abort) => return Err(Fault::abort()),
                    Ok(SteConfig::Bypass) => {
                        return bypass(mem, caps, t, va, len).map(|a| (a, Perms::ALL))
                    }
                    Ok(SteConfig::S1Translate(s1)) => s1,
                }
            }
        };
        let (location, index) = match cd_lookup(&s1, t.ssid) {
            Err(e) => return Err(t.cd_lookup_fault(e)),
            Ok(CdLookup::Bypass) => return bypass(mem, caps, t, va, len).map(|a| (a, Perms::ALL)),
            Ok(CdLookup::Cd { location, index }) => (location, index),
        };
        let cd = match self.tlb_mut().cd(t.vsid, index) {
            Some(cd) => cd,
            None => {
                let cd = fetch_cd(mem, caps, t, &s1, location, index, va)?;
                self.tlb_mut().insert_cd(t.vsid, index, cd);
                cd
            }
        };

        let (_, eff) = walk::select(&cd.s1, va).map_err(|k| t.s1_fault(k, va, cd.record_faults))?;
        if let Some(e) = self.tlb_mut().lookup(t.vsid, index, cd.asid, eff) {
            match e.perms.check(t.access) {
                Ok(false) => return stage2(mem, t, va, e.output(eff), len).map(|a| (a, e.perms)),
                Err(kind) => return Err(t.s1_fault(kind, va, cd.record_faults)),
                // A write to a writable-clean entry: walk again to update
                // the descriptor's dirty state.
                Ok(true) => {}
            }
        }
        let tr = walk::walk(&cd.s1, va, t.access, |ipa| fetch_desc(mem, ipa))
            .map_err(|e| walk_fault(e, &cd, t, va))?;
        if let Some(new) = tr.update {
            // HTTU writes the descriptor through stage 2 as well.
            if !mem.check(tr.desc_addr, 8, true) {
                return Err(t.s2_fault(F_PERMISSION, CLASS_TT, va, tr.desc_addr));
            }
            if mem.write_u64s(tr.desc_addr, &[new]).is_err() {
                return Err(walk_fault(
                    WalkError::Fetch {
                        ipa: tr.desc_addr,
                        error: FetchError::External,
                        level: tr.level,
                    },
                    &cd,
                    t,
                    va,
                ));
            }
        }
        self.tlb_mut()
            .insert(t.vsid, index, cd.asid, eff, TlbEntry::from_translation(&tr));
        stage2(mem, t, va, tr.output(eff), len).map(|a| (a, tr.perms))
    }
}

#[cfg(test)]
mod tests;
