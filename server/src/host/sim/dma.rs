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
use vsmmu_protocol::vfio_user::{SimDma, SIM_DMA_MAX_LEN, SIM_DMA_NO_SSID, SIM_DMA_WRITE};

use super::tlb::{CachedCd, TlbEntry};
use super::walk::{self, Access, FaultKind, FetchError, Stage1, WalkError};
use super::SimHost;
use crate::host::{HwInfo, SteAction};
use crate::memory::GuestRam;

pub use vsmmu_protocol::vfio_user::SIM_DMA_ABORTED;

/// The unit a transfer is split into: the smallest translation granule.
pub const SIM_DMA_PAGE: u64 = 4096;

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

/// The answer to [`SimHost::translate_for_vmm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmmTranslation {
    /// 0, the event code raised, or `SIM_DMA_ABORTED`.
    pub status: u32,
    /// The translated address of the IOVA.
    pub addr: u64,
    /// The translation granule minus one (4 KiB pages: the TLB's unit).
    pub mask: u64,
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

impl SimHost {
    /// Performs a simulated device DMA (`VSMMU_SIM_DMA`): translates every
    /// page of `[req.iova, req.iova + req.len)` for `req.vsid` /
    /// `req.ssid`, then reads guest memory or writes `data` into it. On a
    /// fault nothing is transferred, the event the host SMMU raises is
    /// reported to the vEVENTQ when the kernel would forward it, and the
    /// status is its code. See the module documentation.
    ///
    /// The length is `req.len` capped at 4096 bytes and, for a write, at
    /// `data.len()` (the decoder guarantees they agree).
    pub fn dma(&mut self, mem: &GuestRam, req: &SimDma, data: &[u8]) -> SimDmaResult {
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
                Ok(ipa) => chunks.push((ipa, off, n)),
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
    /// TLB as [`SimHost::dma`]; stage 2 is the identity over the whole
    /// address space. A fault is queued like a DMA's unless `events` is false.
    pub fn translate_for_vmm(
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
            Ok(addr) => VmmTranslation {
                status: 0,
                addr,
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
                }
            }
        }
    }

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
    ) -> Result<u64, Fault> {
        let Some(action) = self.ste_of(t.vsid) else {
            return Err(Fault {
                status: u32::from(C_BAD_STREAMID),
                record: Some(Event::c_bad_streamid(t.vsid, t.ssid)),
            });
        };
        let s1 = match action {
            SteAction::Abort => return Err(Fault::abort()),
            SteAction::Bypass => return bypass(mem, caps, t, va, len),
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
                    Ok(SteConfig::Bypass) => return bypass(mem, caps, t, va, len),
                    Ok(SteConfig::S1Translate(s1)) => s1,
                }
            }
        };
        let (location, index) = match cd_lookup(&s1, t.ssid) {
            Err(e) => return Err(t.cd_lookup_fault(e)),
            Ok(CdLookup::Bypass) => return bypass(mem, caps, t, va, len),
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
                Ok(false) => return stage2(mem, t, va, e.output(eff), len),
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
        stage2(mem, t, va, tr.output(eff), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostIommu;
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::os::fd::OwnedFd;
    use vsmmu_protocol::iommufd::{parse_vevents, Vevent};
    use vsmmu_protocol::smmu::cd::{Granule, CD_0_EPD0, CD_0_R, CD_0_TG0, CD_0_V};
    use vsmmu_protocol::smmu::command::{Command, TlbiRange};
    use vsmmu_protocol::smmu::event::{C_BAD_CD, C_BAD_STE, F_ACCESS, F_STREAM_DISABLED};
    use vsmmu_protocol::smmu::pgtable::{
        block_desc, page_desc, table_desc, Geometry, PteAttrs, PTE_AF, PTE_AP_RDONLY,
    };
    use vsmmu_protocol::smmu::ste::{S1Dss, S1Fmt};

    const VSID: u32 = 0x10;
    const RAM: u64 = 0x4000_0000;
    const RAM_SIZE: u64 = 32 << 20;
    /// A read-only DMA mapping of the last page of RAM's memfd ...
    const ROM: u64 = 0x6000_0000;
    /// ... which is writable here.
    const ROM_ALIAS: u64 = RAM + RAM_SIZE - 0x1000;
    const CD_TABLE: u64 = RAM;
    const L1CD_TABLE: u64 = RAM + 0x1_0000;
    const TABLES: u64 = RAM + 0x10_0000;
    const DATA: u64 = RAM + 0x100_0000;

    fn memfd(size: u64) -> OwnedFd {
        let fd = memfd_create("t", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, size as i64).unwrap();
        fd
    }

    struct Env {
        sim: SimHost,
        mem: GuestRam,
    }

    /// RAM at [`RAM`], a read-only page at [`ROM`], vSID [`VSID`] attached,
    /// a vEVENTQ of depth 16.
    fn env() -> Env {
        let mut mem = GuestRam::new(8);
        let fd = memfd(RAM_SIZE);
        let alias = fd.try_clone().unwrap();
        mem.map(fd, 0, RAM, RAM_SIZE, true).unwrap();
        mem.map(alias, ROM_ALIAS - RAM, ROM, 0x1000, false).unwrap();
        let mut sim = SimHost::default();
        sim.attach_device(VSID, None).unwrap();
        sim.alloc_veventq(16).unwrap();
        Env { sim, mem }
    }

    /// A stage-1 page table built in guest RAM.
    struct Pt {
        geo: Geometry,
        root: u64,
        next: u64,
    }

    impl Pt {
        fn new(mem: &GuestRam, g: Granule, tsz: u8, at: u64) -> Pt {
            let geo = Geometry::from_tsz(g, tsz).unwrap();
            mem.write(at, &[0u8; 0x1_0000]).unwrap();
            Pt {
                geo,
                root: at,
                next: at + 0x1_0000,
            }
        }

        /// The address of the descriptor for `va` at `level`, making
        /// tables on the way.
        fn slot(&mut self, mem: &GuestRam, va: u64, level: u8) -> u64 {
            let mut table = self.root;
            let mut l = self.geo.start_level();
            loop {
                let addr = table + self.geo.index(l, va) * 8;
                if l == level {
                    return addr;
                }
                let [d] = mem.read_u64s::<1>(addr).unwrap();
                if d & 3 == 3 {
                    table = d & 0x0000_ffff_ffff_f000 & !((1 << self.geo.granule().shift()) - 1);
                } else {
                    let t = self.next;
                    self.next += 0x1_0000;
                    mem.write(t, &[0u8; 0x1_0000]).unwrap();
                    mem.write_u64s(addr, &[table_desc(t, self.geo.granule())])
                        .unwrap();
                    table = t;
                }
                l += 1;
            }
        }

        fn page(&mut self, mem: &GuestRam, va: u64, pa: u64, a: &PteAttrs) -> u64 {
            let slot = self.slot(mem, va, 3);
            mem.write_u64s(slot, &[page_desc(pa, self.geo.granule(), a)])
                .unwrap();
            slot
        }

        fn block(&mut self, mem: &GuestRam, va: u64, pa: u64, level: u8, a: &PteAttrs) {
            let slot = self.slot(mem, va, level);
            mem.write_u64s(slot, &[block_desc(pa, &self.geo, level, a)])
                .unwrap();
        }
    }

    fn rw() -> PteAttrs {
        PteAttrs::linux(true)
    }

    /// Installs a single-CD stage-1 vSTE (S1CDMax 0) with a Linux CD at
    /// [`CD_TABLE`] for a 4K, 48-bit table; returns the table.
    fn linux_s1(e: &mut Env) -> Pt {
        let pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
        write_cd(e, 0, Cd::s1(pt.root, 16, Granule::K4, 5, 7));
        install(e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
        pt
    }

    fn write_cd(e: &Env, index: u64, cd: Cd) {
        e.mem.write(CD_TABLE + index * 64, &cd.to_bytes()).unwrap();
    }

    fn install(e: &mut Env, ste: Ste) {
        let w = ste.to_words();
        e.sim
            .install_ste(VSID, SteAction::Nested { ste: [w[0], w[1]] })
            .unwrap();
    }

    fn dma(
        e: &mut Env,
        ssid: Option<u32>,
        iova: u64,
        write: Option<&[u8]>,
        len: u64,
    ) -> SimDmaResult {
        let req = SimDma {
            argsz: 32 + write.map_or(0, |d| d.len() as u32),
            flags: if write.is_some() { SIM_DMA_WRITE } else { 0 },
            vsid: VSID,
            ssid: ssid.unwrap_or(SIM_DMA_NO_SSID),
            iova,
            len,
        };
        e.sim.dma(&e.mem, &req, write.unwrap_or(&[]))
    }

    fn read(e: &mut Env, iova: u64, len: u64) -> SimDmaResult {
        dma(e, None, iova, None, len)
    }

    fn write(e: &mut Env, iova: u64, data: &[u8]) -> SimDmaResult {
        dma(e, None, iova, Some(data), data.len() as u64)
    }

    /// Events in the vEVENTQ, drained.
    fn events(e: &mut Env) -> Vec<[u64; 4]> {
        let mut buf = vec![0u8; 40 * 64];
        let n = e.sim.read_veventq(&mut buf).unwrap();
        parse_vevents(&buf[..n])
            .map(|r| match r.unwrap() {
                Vevent::Event { evt, .. } => evt,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn ok(r: &SimDmaResult) {
        assert_eq!((r.status, r.record), (0, None), "{r:x?}");
    }

    /// Expects a forwarded fault with exactly `record`, and that record
    /// alone in the vEVENTQ.
    fn fault(e: &mut Env, r: SimDmaResult, record: [u64; 4]) {
        assert_eq!(r.status, record[0] as u32 & 0xff, "{r:x?}");
        assert_eq!(r.record, Some(record), "{r:x?}");
        assert!(r.forwarded && r.data.is_empty());
        assert_eq!(events(e), vec![record]);
    }

    /// Expects a fault the kernel keeps: `record` written by the host SMMU,
    /// nothing in the vEVENTQ.
    fn host_fault(e: &mut Env, r: SimDmaResult, status: u32, record: Option<[u64; 4]>) {
        assert_eq!(
            (r.status, r.record, r.forwarded),
            (status, record, false),
            "{r:x?}"
        );
        assert!(events(e).is_empty());
    }

    const D0: u64 = (VSID as u64) << 32;
    /// dword1 of a stage-1 fault: RnW, CLASS = IN.
    const RD_IN: u64 = 0x0000_0208_0000_0000;
    const WR_IN: u64 = 0x0000_0200_0000_0000;

    #[test]
    fn unattached_streamid() {
        let mut e = env();
        let req = SimDma {
            argsz: 32,
            flags: 0,
            vsid: 0x77,
            ssid: 3,
            iova: 0x1000,
            len: 4,
        };
        let r = e.sim.dma(&e.mem, &req, &[]);
        host_fault(
            &mut e,
            r,
            u32::from(C_BAD_STREAMID),
            Some([0x0000_0077_0000_3802, 0, 0, 0]),
        );
    }

    #[test]
    fn abort_terminates_without_event() {
        let mut e = env();
        // Attached, nothing installed yet: the host's abort STE.
        let r = read(&mut e, DATA, 4);
        host_fault(&mut e, r, SIM_DMA_ABORTED, None);
        // The guest's own abort STE (V = 1, Config = 0b000).
        install(&mut e, Ste::abort());
        let r = write(&mut e, DATA, &[1, 2]);
        host_fault(&mut e, r, SIM_DMA_ABORTED, None);
        assert_eq!(e.mem.read_u64s::<1>(DATA).unwrap(), [0]);
    }

    #[test]
    fn invalid_vste_is_c_bad_ste() {
        let mut e = env();
        e.sim
            .install_ste(VSID, SteAction::Nested { ste: [0, 0] })
            .unwrap();
        let r = read(&mut e, DATA, 4);
        fault(&mut e, r, [D0 | u64::from(C_BAD_STE), 0, 0, 0]);
        let r = dma(&mut e, Some(3), DATA, None, 4);
        fault(&mut e, r, [D0 | 0x3804, 0, 0, 0]);
        // ILLEGAL for this SMMU: S1STALLD without a stall model.
        install(
            &mut e,
            Ste::from_words({
                let mut w = Ste::s1(CD_TABLE, 0, S1Fmt::Linear).to_words();
                w[1] |= 1 << 27;
                w
            }),
        );
        let r = read(&mut e, DATA, 4);
        fault(&mut e, r, [D0 | 0x04, 0, 0, 0]);
    }

    #[test]
    fn bypass_is_identity_with_ias_check() {
        let mut e = env();
        e.sim.install_ste(VSID, SteAction::Bypass).unwrap();
        ok(&write(&mut e, DATA + 0xffe, &[1, 2, 3, 4]));
        assert_eq!(read(&mut e, DATA + 0xffd, 6).data, vec![0, 1, 2, 3, 4, 0]);
        // A SubstreamID without stage 1: C_BAD_SUBSTREAMID (no SSV bit).
        let r = dma(&mut e, Some(9), DATA, None, 4);
        fault(&mut e, r, [D0 | 0x9008, 0, 0, 0]);
        // Beyond the 48-bit IAS: stage-1 address size fault.
        let r = read(&mut e, 1 << 48, 4);
        fault(&mut e, r, [D0 | 0x11, RD_IN, 1 << 48, 0]);
        // Inside the IAS but not DMA-mapped: stage-2 translation fault,
        // kept by the host (S2 = 1, CLASS = IN, IPA).
        let r = write(&mut e, 0x9000_0010, &[0]);
        host_fault(
            &mut e,
            r,
            0x10,
            Some([D0 | 0x10, 0x0000_0280_0000_0000, 0x9000_0010, 0x9000_0000]),
        );
        // Read-only DMA mapping: stage-2 permission fault on write only.
        ok(&read(&mut e, ROM, 8));
        let r = write(&mut e, ROM + 8, &[1]);
        host_fault(
            &mut e,
            r,
            0x13,
            Some([D0 | 0x13, 0x0000_0280_0000_0000, ROM + 8, ROM]),
        );
        // The guest's bypass vSTE (as the model builds it) behaves the same.
        e.sim
            .install_ste(
                VSID,
                SteAction::Nested {
                    ste: SteConfig::Bypass.to_vste(),
                },
            )
            .unwrap();
        ok(&read(&mut e, DATA + 0xfff, 2));
    }

    #[test]
    fn page_walk_moves_data_across_pages() {
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        // Two adjacent IOVA pages on non-adjacent PAs.
        pt.page(&e.mem, 0x1234_5000, DATA + 0x5000, &rw());
        pt.page(&e.mem, 0x1234_6000, DATA + 0x1000, &rw());
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        ok(&write(&mut e, 0x1234_5800, &data));
        let mut back = vec![0u8; 0x800];
        e.mem.read(DATA + 0x5800, &mut back).unwrap();
        assert_eq!(back, data[..0x800]);
        e.mem.read(DATA + 0x1000, &mut back).unwrap();
        assert_eq!(back, data[0x800..]);
        let r = read(&mut e, 0x1234_5800, 4096);
        ok(&r);
        assert_eq!(r.data, data);
        assert!(events(&mut e).is_empty());
    }

    #[test]
    fn translation_fault_record_and_no_partial_transfer() {
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        pt.page(&e.mem, 0x1234_5000, DATA, &rw());
        let r = read(&mut e, 0x1234_6010, 16);
        fault(&mut e, r, [D0 | 0x10, RD_IN, 0x1234_6010, 0]);
        // The second page faults: InputAddr is its first byte, and the
        // first page is not written.
        let r = write(&mut e, 0x1234_5ffe, &[9, 9, 9, 9]);
        fault(&mut e, r, [D0 | 0x10, WR_IN, 0x1234_6000, 0]);
        assert_eq!(e.mem.read_u64s::<1>(DATA + 0xff8).unwrap(), [0]);
        // Outside the 48-bit input range.
        let r = read(&mut e, 0xffff_0000_0000_0000, 1);
        fault(&mut e, r, [D0 | 0x10, RD_IN, 0xffff_0000_0000_0000, 0]);
    }

    #[test]
    fn permission_faults() {
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        pt.page(&e.mem, 0x1000, DATA, &PteAttrs::linux(false));
        pt.page(
            &e.mem,
            0x2000,
            DATA,
            &PteAttrs {
                unpriv: false,
                ..rw()
            },
        );
        ok(&read(&mut e, 0x1000, 8));
        let r = write(&mut e, 0x1008, &[1]);
        fault(&mut e, r, [D0 | 0x13, WR_IN, 0x1008, 0]);
        // The cached read-only translation faults the same way.
        let r = write(&mut e, 0x1010, &[1]);
        fault(&mut e, r, [D0 | 0x13, WR_IN, 0x1010, 0]);
        // Privileged-only: the device's unprivileged read faults.
        let r = read(&mut e, 0x2000, 1);
        fault(&mut e, r, [D0 | 0x13, RD_IN, 0x2000, 0]);
    }

    #[test]
    fn access_flag_and_httu() {
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        let no_af = PteAttrs { af: false, ..rw() };
        let slot = pt.page(&e.mem, 0x1000, DATA, &no_af);
        let r = read(&mut e, 0x1000, 4);
        fault(&mut e, r, [D0 | u64::from(F_ACCESS), RD_IN, 0x1000, 0]);
        // HA: the SMMU sets AF in memory and the access succeeds.
        write_cd(
            &e,
            0,
            Cd::s1(pt.root, 16, Granule::K4, 5, 7).with_httu(true, false),
        );
        e.sim
            .invalidate(&[Command::CfgiCd {
                sid: VSID,
                ssid: 0,
                leaf: true,
            }
            .encode()])
            .unwrap();
        ok(&read(&mut e, 0x1000, 4));
        let [d] = e.mem.read_u64s::<1>(slot).unwrap();
        assert_eq!(d, page_desc(DATA, Granule::K4, &no_af) | PTE_AF);
        // HD: a writable-clean page becomes dirty on the first write.
        write_cd(
            &e,
            0,
            Cd::s1(pt.root, 16, Granule::K4, 5, 7).with_httu(true, true),
        );
        e.sim
            .invalidate(&[Command::CfgiCdAll { sid: VSID }.encode()])
            .unwrap();
        let clean = PteAttrs {
            dbm: true,
            ..PteAttrs::linux(false)
        };
        let slot = pt.page(&e.mem, 0x2000, DATA + 0x1000, &clean);
        ok(&read(&mut e, 0x2000, 4));
        assert_eq!(
            e.mem.read_u64s::<1>(slot).unwrap()[0] & PTE_AP_RDONLY,
            PTE_AP_RDONLY
        );
        // The cached clean entry is walked again for the write.
        ok(&write(&mut e, 0x2000, &[5]));
        assert_eq!(
            e.mem.read_u64s::<1>(slot).unwrap(),
            [page_desc(DATA + 0x1000, Granule::K4, &clean) & !PTE_AP_RDONLY]
        );
        assert_eq!(e.mem.read_u64s::<1>(DATA + 0x1000).unwrap()[0] & 0xff, 5);
        // A read-only page (no DBM) still faults with HD.
        pt.page(&e.mem, 0x3000, DATA, &PteAttrs::linux(false));
        let r = write(&mut e, 0x3000, &[5]);
        fault(&mut e, r, [D0 | 0x13, WR_IN, 0x3000, 0]);
        // An HTTU update of a descriptor in read-only RAM: a stage-2
        // permission fault on the descriptor (CLASS = TT), kept by the
        // host. The level-3 table is the read-only page.
        let l2 = pt.slot(&e.mem, 0x20_7000, 2);
        e.mem
            .write_u64s(l2, &[table_desc(ROM, Granule::K4)])
            .unwrap();
        e.mem
            .write_u64s(ROM_ALIAS + 7 * 8, &[page_desc(DATA, Granule::K4, &no_af)])
            .unwrap();
        let r = read(&mut e, 0x20_7000, 4);
        host_fault(
            &mut e,
            r,
            0x13,
            Some([D0 | 0x13, 0x0000_0188_0000_0000, 0x20_7000, ROM]),
        );
    }

    #[test]
    fn address_size_faults() {
        let mut e = env();
        let mut pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
        // IPS 0 = 32 bits.
        write_cd(&e, 0, Cd::s1(pt.root, 16, Granule::K4, 0, 7));
        install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
        pt.page(&e.mem, 0x1000, 0x1_0000_0000, &rw());
        let r = read(&mut e, 0x1004, 4);
        fault(&mut e, r, [D0 | 0x11, RD_IN, 0x1004, 0]);
        // A table address beyond 32 bits.
        let slot = pt.slot(&e.mem, 0x40_0000_0000, 1);
        e.mem
            .write_u64s(slot, &[table_desc(0x2_0000_0000, Granule::K4)])
            .unwrap();
        let r = write(&mut e, 0x40_0000_0000, &[1]);
        fault(&mut e, r, [D0 | 0x11, WR_IN, 0x40_0000_0000, 0]);
    }

    #[test]
    fn unrecorded_faults_with_cd_r_clear() {
        let mut e = env();
        let pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
        let mut cd = Cd::s1(pt.root, 16, Granule::K4, 5, 7);
        cd.0[0] &= !CD_0_R.mask();
        write_cd(&e, 0, cd);
        install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
        let r = read(&mut e, 0x1000, 4);
        host_fault(&mut e, r, 0x10, None);
    }

    #[test]
    fn stage2_faults_are_kept_by_the_host() {
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        // Output outside DMA-mapped RAM.
        pt.page(&e.mem, 0x1000, 0x9000_0000, &rw());
        let r = read(&mut e, 0x1010, 4);
        host_fault(
            &mut e,
            r,
            0x10,
            Some([D0 | 0x10, 0x0000_0288_0000_0000, 0x1010, 0x9000_0000]),
        );
        // A table outside RAM: CLASS = TT, IPA = the descriptor address.
        let slot = pt.slot(&e.mem, 0x40_0000_0000, 1);
        e.mem
            .write_u64s(slot, &[table_desc(0x9000_0000, Granule::K4)])
            .unwrap();
        let r = write(&mut e, 0x40_0000_0000, &[1]);
        host_fault(
            &mut e,
            r,
            0x10,
            Some([
                D0 | 0x10,
                0x0000_0180_0000_0000,
                0x40_0000_0000,
                0x9000_0000,
            ]),
        );
        // A CD outside RAM: CLASS = CD, IPA = the CD address.
        install(&mut e, Ste::s1(0x9000_0040, 0, S1Fmt::Linear));
        let r = read(&mut e, 0x1000, 4);
        host_fault(
            &mut e,
            r,
            0x10,
            Some([D0 | 0x10, 0x0000_0088_0000_0000, 0x1000, 0x9000_0000]),
        );
        // Writing through a read-only DMA mapping.
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        pt.page(&e.mem, 0x1000, ROM, &rw());
        ok(&read(&mut e, 0x1000, 4));
        let r = write(&mut e, 0x1000, &[1]);
        host_fault(
            &mut e,
            r,
            0x13,
            Some([D0 | 0x13, 0x0000_0280_0000_0000, 0x1000, ROM]),
        );
    }

    #[test]
    fn substreams_and_cds() {
        let mut e = env();
        let mut pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
        pt.page(&e.mem, 0x1000, DATA, &rw());
        // 16 CDs, S1DSS = terminate: CD 5 valid, CD 6 not.
        write_cd(&e, 5, Cd::s1(pt.root, 16, Granule::K4, 5, 9));
        install(&mut e, Ste::s1(CD_TABLE, 4, S1Fmt::Linear));
        ok(&dma(&mut e, Some(5), 0x1000, None, 4));
        let r = dma(&mut e, Some(5), 0x2000, None, 4);
        fault(&mut e, r, [D0 | 0x5810, RD_IN, 0x2000, 0]);
        let r = dma(&mut e, Some(6), 0x1000, None, 4);
        fault(&mut e, r, [D0 | 0x680a, 0, 0, 0]);
        let r = dma(&mut e, Some(16), 0x1000, None, 4);
        fault(&mut e, r, [D0 | 0x1_0008, 0, 0, 0]);
        let r = read(&mut e, 0x1000, 4);
        fault(&mut e, r, [D0 | u64::from(F_STREAM_DISABLED), 0, 0, 0]);
        // S1DSS = bypass: no SubstreamID bypasses stage 1.
        install(
            &mut e,
            Ste::s1(CD_TABLE, 4, S1Fmt::Linear).with_s1dss(S1Dss::Bypass),
        );
        ok(&read(&mut e, DATA, 4));
        // S1DSS = substream 0: no SubstreamID uses CD 0, SubstreamID 0 is
        // disabled.
        write_cd(&e, 0, Cd::s1(pt.root, 16, Granule::K4, 5, 9));
        install(
            &mut e,
            Ste::s1(CD_TABLE, 4, S1Fmt::Linear).with_s1dss(S1Dss::Substream0),
        );
        ok(&read(&mut e, 0x1000, 4));
        let r = dma(&mut e, Some(0), 0x1000, None, 4);
        fault(&mut e, r, [D0 | u64::from(F_STREAM_DISABLED), 0, 0, 0]);
        // Substreams with S1CDMax = 0.
        install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
        let r = dma(&mut e, Some(1), 0x1000, None, 4);
        fault(&mut e, r, [D0 | 0x1008, 0, 0, 0]);
        // ILLEGAL CD: reserved TG0.
        let mut bad = Cd::s1(pt.root, 16, Granule::K4, 5, 9);
        bad.0[0] = CD_0_TG0.set(bad.0[0], 3);
        write_cd(&e, 0, bad);
        let r = read(&mut e, 0x1000, 4);
        fault(&mut e, r, [D0 | u64::from(C_BAD_CD), 0, 0, 0]);
        // V = 0.
        bad.0[0] &= !CD_0_V.mask();
        write_cd(&e, 0, bad);
        let r = read(&mut e, 0x1000, 4);
        fault(&mut e, r, [D0 | 0x0a, 0, 0, 0]);
        // EPD0: the TTB0 half is disabled.
        let mut epd = Cd::s1(pt.root, 16, Granule::K4, 5, 9);
        epd.0[0] |= CD_0_EPD0.mask();
        write_cd(&e, 0, epd);
        let r = read(&mut e, 0x1000, 4);
        fault(&mut e, r, [D0 | 0x10, RD_IN, 0x1000, 0]);
    }

    #[test]
    fn two_level_cd_tables() {
        let mut e = env();
        let mut pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
        pt.page(&e.mem, 0x1000, DATA, &rw());
        // 2^8 SubstreamIDs in 4K leaves of 64 CDs: L1 entries 0..4.
        install(&mut e, Ste::s1(L1CD_TABLE, 8, S1Fmt::TwoLevel4K));
        let leaf = RAM + 0x2_0000;
        e.mem
            .write_u64s(L1CD_TABLE + 8, &[L1Cd::new(leaf).encode()])
            .unwrap();
        e.mem
            .write(
                leaf + 6 * 64,
                &Cd::s1(pt.root, 16, Granule::K4, 5, 3).to_bytes(),
            )
            .unwrap();
        ok(&dma(&mut e, Some(64 + 6), 0x1000, None, 4));
        // L1CD V = 0.
        let r = dma(&mut e, Some(3 * 64), 0x1000, None, 4);
        fault(&mut e, r, [D0 | (0xc0 << 12) | 0x08, 0, 0, 0]);
        // L2Ptr beyond the 48-bit IAS.
        e.mem
            .write_u64s(L1CD_TABLE + 16, &[L1Cd::new(1 << 50).encode()])
            .unwrap();
        let r = dma(&mut e, Some(128), 0x1000, None, 4);
        fault(&mut e, r, [D0 | (0x80 << 12) | 0x08, 0, 0, 0]);
        // L2Ptr inside the IAS but not mapped: stage-2 fault on the CD.
        e.mem
            .write_u64s(L1CD_TABLE + 24, &[L1Cd::new(0x9000_0000).encode()])
            .unwrap();
        let r = dma(&mut e, Some(192 + 1), 0x1000, None, 4);
        host_fault(
            &mut e,
            r,
            0x10,
            Some([
                D0 | (0xc1 << 12) | 0x810,
                0x0000_0088_0000_0000,
                0x1000,
                0x9000_0000,
            ]),
        );
    }

    #[test]
    fn granule_and_va_size_matrix() {
        for (g, tsz) in [
            (Granule::K4, 16),
            (Granule::K4, 25),
            (Granule::K4, 34),
            (Granule::K4, 39),
            (Granule::K16, 16),
            (Granule::K16, 17),
            (Granule::K16, 28),
            (Granule::K16, 39),
            (Granule::K64, 16),
            (Granule::K64, 22),
            (Granule::K64, 35),
            (Granule::K64, 39),
        ] {
            let mut e = env();
            let mut pt = Pt::new(&e.mem, g, tsz, TABLES);
            write_cd(&e, 0, Cd::s1(pt.root, tsz, g, 5, 1));
            install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
            let page = 1u64 << g.shift();
            let top = (1u64 << (64 - tsz)) - page;
            pt.page(&e.mem, top, DATA + page, &rw());
            pt.page(&e.mem, 0, DATA + 4 * page, &rw());
            ok(&write(&mut e, top + page - 2, &[0xaa, 0xbb]));
            assert_eq!(
                e.mem.read_u64s::<1>(DATA + 2 * page - 8).unwrap(),
                [0xbbaa << 48],
                "{g:?} {tsz}"
            );
            let r = read(&mut e, 0x10, 2);
            ok(&r);
            // One page beyond the top wraps out of the range.
            let r = read(&mut e, top + page, 1);
            fault(&mut e, r, [D0 | 0x10, RD_IN, top + page, 0]);
        }
    }

    #[test]
    fn block_descriptors() {
        // (granule, level, block size)
        for (g, level, size) in [
            (Granule::K4, 2u8, 2u64 << 20),
            (Granule::K4, 1, 1 << 30),
            (Granule::K16, 2, 32 << 20),
            (Granule::K64, 2, 512 << 20),
        ] {
            let mut e = env();
            let mut pt = Pt::new(&e.mem, g, 16, TABLES);
            write_cd(&e, 0, Cd::s1(pt.root, 16, g, 5, 1));
            install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
            // The block at IOVA 4 × size maps DATA (2 MiB) or RAM onwards.
            let pa = if size == 2 << 20 { DATA } else { RAM };
            pt.block(&e.mem, 4 * size, pa, level, &rw());
            let off = DATA + 0x1_2340 - pa;
            ok(&write(&mut e, 4 * size + off, &[7; 8]));
            assert_eq!(
                e.mem.read_u64s::<1>(DATA + 0x1_2340).unwrap(),
                [0x0707_0707_0707_0707],
                "{g:?} level {level}"
            );
            let r = read(&mut e, 4 * size + off + 4, 8);
            ok(&r);
            assert_eq!(r.data, [7, 7, 7, 7, 0, 0, 0, 0]);
            // The end of the block: outside RAM for the large blocks, a
            // stage-2 fault kept by the host.
            let r = read(&mut e, 5 * size - 8, 8);
            let inside = pa + size <= RAM + RAM_SIZE;
            assert_eq!(
                r.status,
                if inside { 0 } else { 0x10 },
                "{g:?} level {level}"
            );
            assert!(events(&mut e).is_empty());
        }
    }

    #[test]
    fn tlb_is_stale_until_invalidated() {
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        e.mem.write(DATA, b"old!").unwrap();
        e.mem.write(DATA + 0x1000, b"new!").unwrap();
        let slot = pt.page(&e.mem, 0x5000, DATA, &rw());
        assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
        // The guest remaps the page without a TLBI: still the old page.
        e.mem
            .write_u64s(slot, &[page_desc(DATA + 0x1000, Granule::K4, &rw())])
            .unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
        // A TLBI for another page or another ASID changes nothing.
        let va = |asid, addr| {
            Command::TlbiNhVa {
                vmid: 0,
                asid,
                range: TlbiRange::va(addr, true),
            }
            .encode()
        };
        e.sim.invalidate(&[va(7, 0x6000), va(8, 0x5000)]).unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
        e.sim.invalidate(&[va(7, 0x5000)]).unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");

        // Unmapped without a TLBI: still translates; TLBI_NH_ASID ends it.
        e.mem.write_u64s(slot, &[0]).unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");
        e.sim
            .invalidate(&[Command::TlbiNhAsid { vmid: 0, asid: 7 }.encode()])
            .unwrap();
        let r = read(&mut e, 0x5000, 4);
        fault(&mut e, r, [D0 | 0x10, RD_IN, 0x5000, 0]);

        // Range TLBI: 4 pages from 0x4000 (TG 4K, NUM 3).
        e.mem
            .write_u64s(slot, &[page_desc(DATA, Granule::K4, &rw())])
            .unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
        e.mem
            .write_u64s(slot, &[page_desc(DATA + 0x1000, Granule::K4, &rw())])
            .unwrap();
        let range = TlbiRange {
            num: 3,
            tg: 1,
            ..TlbiRange::va(0x4000, true)
        };
        e.sim
            .invalidate(&[Command::TlbiNhVaa { vmid: 0, range }.encode()])
            .unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");

        // A CD change is stale until CFGI_CD; TLBI_NH_ALL and
        // TLBI_NSNH_ALL drop translations but not the CD.
        let other = Pt::new(&e.mem, Granule::K4, 16, TABLES + 0x80_0000);
        write_cd(&e, 0, Cd::s1(other.root, 16, Granule::K4, 5, 7));
        e.sim
            .invalidate(&[
                Command::TlbiNhAll { vmid: 0 }.encode(),
                Command::TlbiNsnhAll.encode(),
            ])
            .unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");
        e.sim
            .invalidate(&[Command::CfgiCd {
                sid: VSID,
                ssid: 0,
                leaf: true,
            }
            .encode()])
            .unwrap();
        let r = read(&mut e, 0x5000, 4);
        fault(&mut e, r, [D0 | 0x10, RD_IN, 0x5000, 0]);

        // Re-installing the STE drops everything cached for the vSID.
        write_cd(&e, 0, Cd::s1(pt.root, 16, Granule::K4, 5, 7));
        assert_eq!(read(&mut e, 0x5000, 4).status, 0x10);
        let _ = events(&mut e);
        install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
        assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");
        assert!(!e.sim.tlb().is_empty());
        e.sim.detach_device(VSID).unwrap();
        assert!(e.sim.tlb().is_empty() && e.sim.tlb().cd_len() == 0);
        let s = e.sim.tlb().stats();
        assert!(s.hits > 0 && s.misses > 0 && s.invalidated > 0);
    }

    #[test]
    fn global_entries_survive_tlbi_asid() {
        let mut e = env();
        let mut pt = linux_s1(&mut e);
        let global = PteAttrs {
            global: true,
            ..rw()
        };
        let slot = pt.page(&e.mem, 0x5000, DATA, &global);
        ok(&read(&mut e, 0x5000, 4));
        e.mem.write_u64s(slot, &[0]).unwrap();
        e.sim
            .invalidate(&[Command::TlbiNhAsid { vmid: 0, asid: 7 }.encode()])
            .unwrap();
        ok(&read(&mut e, 0x5000, 4));
        // TLBI_NH_VA with any ASID matches a global entry.
        e.sim
            .invalidate(&[Command::TlbiNhVa {
                vmid: 0,
                asid: 99,
                range: TlbiRange::va(0x5000, false),
            }
            .encode()])
            .unwrap();
        assert_eq!(read(&mut e, 0x5000, 4).status, 0x10);
    }

    #[test]
    fn veventq_depth_and_lost_record() {
        let mut e = env();
        e.sim.alloc_veventq(2).unwrap();
        linux_s1(&mut e);
        for i in 0..3u64 {
            let r = read(&mut e, i << 12, 4);
            assert_eq!((r.status, r.forwarded), (0x10, true));
        }
        let mut buf = vec![0u8; 4096];
        let n = e.sim.read_veventq(&mut buf).unwrap();
        let got: Vec<_> = parse_vevents(&buf[..n]).map(|r| r.unwrap()).collect();
        assert_eq!(
            got,
            vec![
                Vevent::Event {
                    seq: 0,
                    evt: [D0 | 0x10, RD_IN, 0, 0]
                },
                Vevent::Event {
                    seq: 1,
                    evt: [D0 | 0x10, RD_IN, 0x1000, 0]
                },
                Vevent::Lost { seq: 2 },
            ]
        );
        // Without a vEVENTQ the status stands and nothing is queued.
        e.sim.free_veventq();
        let r = read(&mut e, 0x3000, 4);
        assert_eq!((r.status, r.forwarded), (0x10, false));
        assert!(r.record.is_some());
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut e = env();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Random CDs and tables everywhere in the first MiB.
        for i in 0..(0x10_0000 / 8) {
            e.mem.write_u64s(RAM + i * 8, &[next()]).unwrap();
        }
        for round in 0..3000 {
            if round % 50 == 0 {
                // V, Config = S1 translate, random S1Fmt and S1CDMax, a
                // context pointer in the first MiB of RAM.
                let r = next();
                let w0 =
                    1 | (0b101 << 1) | (r & 0x30) | (RAM + (r & 0xf_ffc0)) | (r & (0x1f << 59));
                let w1 = next() & 0x3800_00ff;
                let _ = e.sim.install_ste(VSID, SteAction::Nested { ste: [w0, w1] });
                e.mem
                    .write_u64s(RAM + (next() & 0xf_fff8), &[next() | 1])
                    .unwrap();
            }
            let r = next();
            let req = SimDma {
                argsz: 0,
                flags: (r & 1) as u32,
                vsid: if r & 2 != 0 { VSID } else { r as u32 },
                ssid: if r & 4 != 0 {
                    SIM_DMA_NO_SSID
                } else {
                    (r >> 8) as u32 & 0xff
                },
                iova: if r & 8 != 0 {
                    next()
                } else {
                    next() & 0xffff_ffff
                },
                len: next() % 9000,
            };
            let data = vec![0x5a; (next() % 5000) as usize];
            let _ = e.sim.dma(&e.mem, &req, &data);
            let _ = events(&mut e);
        }
    }
}
