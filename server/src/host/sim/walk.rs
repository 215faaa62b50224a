//! The stage-1 translation table walk of the sim host SMMU: VMSAv8-64,
//! 4 KiB / 16 KiB / 64 KiB granules, TTB0 and TTB1, block and page
//! descriptors, hierarchical and leaf permissions, the access flag and
//! hardware updates of the access flag and dirty state (HTTU).
//!
//! [`walk`] is pure: it reads descriptors through a closure (which applies
//! stage 2 and reports why a fetch failed) and returns the leaf translation,
//! its permissions and the descriptor update HTTU wants, or the fault. The
//! caller ([`super::dma`]) applies the update, caches the translation
//! ([`super::tlb`]) and builds the event record.
//!
//! # Differences from QEMU's walker (`hw/arm/smmu-common.c`, `smmu_ptw_64_s1`)
//!
//! Each one follows the architecture (Arm ARM D8 "The AArch64 Virtual Memory
//! System Architecture", SMMUv3 IHI 0070 §3.4 and §3.13):
//!
//! - **Fault priority.** QEMU checks the access flag, then AP, then the
//!   output address size. The architecture (and QEMU's own CPU walker,
//!   `target/arm/ptw.c`) orders them Translation > Address size > Access
//!   flag > Permission (SMMUv3 §3.13.1: "An Access fault takes priority
//!   over a Permission fault"). This walker uses the architectural order.
//! - **Address size of table descriptors.** QEMU checks only the leaf's
//!   output address against the effective IPS. The architecture checks the
//!   next-level table address of every table descriptor too (IHI 0070
//!   §3.4.3: "Last-stage translation table walk ... Stage 1/2 Address Size
//!   fault"); here a table address beyond the IPS is F_ADDR_SIZE.
//! - **Unprivileged accesses.** QEMU ignores AP\[1\] and APTable\[0\]. A
//!   device transaction here is an unprivileged data access (the records
//!   carry PnU = 0, InD = 0, as QEMU writes them), so a leaf with
//!   AP\[1\] = 0 or a table with APTable\[0\] = 1 on the way gives
//!   F_PERMISSION, for reads and writes alike. Linux
//!   (`arm_lpae_prot_to_pte`) sets AP\[1\] on every mapping without
//!   `IOMMU_PRIV`, so its tables are unaffected.
//! - **HTTU.** QEMU implements none (IDR0.HTTU = 0). The sim advertises
//!   HTTU = access + dirty, so with CD.HA an AF = 0 descriptor is updated to
//!   AF = 1 instead of faulting (§3.13.2), and with CD.HD a write to a
//!   writable-clean descriptor (DBM = 1, AP\[2\] = 1) clears AP\[2\]
//!   (§3.13.3). The update is returned for the caller to write, only when
//!   the access does not fault ("If access to a descriptor causes a
//!   permission fault, it is UNKNOWN whether the AF flag ... is updated").
//! - **TTB selection.** QEMU's `select_tt` picks a table from which TxSZ
//!   is non-zero. Here VA\[55\] selects TTB0/TTB1 and the input is in range
//!   only when VA\[AddrTop:N\] all equal VA\[55\] (AddrTop = 55 with TBIx,
//!   else 63; N = 64 - TxSZ) (§3.4.1); a disabled table (EPDx) or an
//!   out-of-range VA is F_TRANSLATION.
//! - **Start table alignment.** QEMU aligns TTBx to the start table's size;
//!   the architecture requires at least 64-byte alignment for tables of
//!   fewer than 8 descriptors, so the low 6 bits are always ignored.
//! - **Output addresses.** QEMU takes descriptor bits \[47:granule\]. With
//!   a 64 KiB granule and a 52-bit OAS (FEAT_LPA), OA\[51:48\] come from
//!   descriptor bits \[15:12\] and level-1 blocks are allowed; without it,
//!   a level-1 64 KiB block is reserved (Translation fault).
//! - **Caching.** QEMU caches successful walks in an IOTLB keyed by ASID
//!   and IOVA. The sim's TLB ([`super::tlb`]) keys by vSID, CD index, ASID
//!   and 4 KiB VA page, keeps the leaf size for invalidation by address,
//!   honours nG for TLBI_NH_ASID, and never caches a walk that faulted with
//!   a Translation, Address size or Access flag fault (Arm ARM: such
//!   entries are never held in a TLB). There is no walk cache, so Leaf = 1
//!   invalidations behave as Leaf = 0 (over-invalidation is permitted).

use vsmmu_protocol::smmu::bits::low_mask;
use vsmmu_protocol::smmu::cd::{CdConfig, Granule, TtConfig};
use vsmmu_protocol::smmu::event::{F_ACCESS, F_ADDR_SIZE, F_PERMISSION, F_TRANSLATION};
use vsmmu_protocol::smmu::pgtable::{
    Desc, Geometry, PteAttrs, DESC_SIZE, LAST_LEVEL, PTE_AF, PTE_AP_RDONLY, TABLE_AP_NO_EL0,
    TABLE_AP_RDONLY,
};

/// What a transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
}

impl Access {
    /// The event record's RnW bit.
    pub const fn rnw(self) -> bool {
        matches!(self, Access::Read)
    }
}

/// The stage-1 context of a walk: the effective CD as the SMMU uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stage1 {
    /// TTB0 walks (`None`: EPD0 = 1).
    pub tt0: Option<TtConfig>,
    /// TTB1 walks (`None`: EPD1 = 1).
    pub tt1: Option<TtConfig>,
    /// TBI0: VA\[63:56\] ignored in the TTB0 half.
    pub tbi0: bool,
    /// TBI1: VA\[63:56\] ignored in the TTB1 half.
    pub tbi1: bool,
    /// Effective IPS in bits (`min(CD.IPS, OAS)`).
    pub ips_bits: u8,
    /// CD.HA: hardware access flag updates.
    pub ha: bool,
    /// CD.HD: hardware dirty state updates (only with HA).
    pub hd: bool,
    /// CD.AFFD: AF = 0 behaves as AF = 1 (ignored with HA).
    pub affd: bool,
    /// The SMMU's OAS is 52 bits (64 KiB granule OA\[51:48\], level-1
    /// blocks).
    pub lpa52: bool,
}

impl Stage1 {
    /// The walk context of a validated CD. `affd` is CD.AFFD (not part of
    /// [`CdConfig`]); `oas_bits` the SMMU's OAS.
    pub fn from_cd(cfg: &CdConfig, affd: bool, oas_bits: u8) -> Stage1 {
        Stage1 {
            tt0: cfg.tt0,
            tt1: cfg.tt1,
            tbi0: cfg.tbi0,
            tbi1: cfg.tbi1,
            ips_bits: cfg.ips_bits,
            ha: cfg.ha,
            hd: cfg.hd && cfg.ha,
            affd,
            lpa52: oas_bits >= 52,
        }
    }

    /// Output address bits a table of this granule can produce: the
    /// effective IPS, at most 48 bits below the 64 KiB granule (no LPA2).
    pub fn oa_bits(&self, granule: Granule) -> u32 {
        let ips = u32::from(self.ips_bits);
        match granule {
            Granule::K64 => ips,
            _ => ips.min(48),
        }
    }
}

/// Effective permissions of a translation for an unprivileged data access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Reads allowed: AP\[1\] = 1 and no APTable\[0\] on the way.
    pub read: bool,
    /// Writes allowed: `read`, AP\[2\] = 0 and no APTable\[1\] on the way.
    pub write: bool,
    /// A write would make the descriptor writable (CD.HD, DBM = 1,
    /// AP\[2\] = 1, no APTable\[1\]): the walk must be redone to update it.
    pub dirty_on_write: bool,
}

impl Perms {
    /// Reads and writes (bypass).
    pub const ALL: Perms = Perms {
        read: true,
        write: true,
        dirty_on_write: false,
    };

    /// Checks `access`: `Ok(false)` allowed, `Ok(true)` allowed after a
    /// dirty-state update (re-walk), `Err` a Permission fault.
    pub const fn check(&self, access: Access) -> Result<bool, FaultKind> {
        if !self.read {
            return Err(FaultKind::Permission);
        }
        match access {
            Access::Read => Ok(false),
            Access::Write if self.write => Ok(false),
            Access::Write if self.dirty_on_write => Ok(true),
            Access::Write => Err(FaultKind::Permission),
        }
    }
}

/// A stage-1 translation fault on the input address (CLASS = IN, S2 = 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// F_TRANSLATION: VA out of range, table disabled, invalid or reserved
    /// descriptor.
    Translation,
    /// F_ADDR_SIZE: a table or output address beyond the effective IPS.
    AddrSize,
    /// F_ACCESS: AF = 0 without HA or AFFD.
    Access,
    /// F_PERMISSION.
    Permission,
}

impl FaultKind {
    /// The event type.
    pub const fn event_type(self) -> u8 {
        match self {
            FaultKind::Translation => F_TRANSLATION,
            FaultKind::AddrSize => F_ADDR_SIZE,
            FaultKind::Access => F_ACCESS,
            FaultKind::Permission => F_PERMISSION,
        }
    }
}

/// Why a descriptor fetch failed (reported by the fetch closure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FetchError {
    /// The descriptor's IPA has no stage-2 mapping: a stage-2 Translation
    /// fault with CLASS = TT.
    S2Translation,
    /// The memory system aborted the fetch: F_WALK_EABT.
    External,
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum WalkError {
    /// A stage-1 fault at `level` (0..=3; the start level for range
    /// faults).
    Stage1 {
        /// The fault.
        kind: FaultKind,
        /// The walk level that faulted.
        level: u8,
    },
    /// Fetching the descriptor at `ipa` (level `level`) failed.
    Fetch {
        /// The descriptor's address (an IPA).
        ipa: u64,
        /// Why.
        error: FetchError,
        /// The walk level.
        level: u8,
    },
}

/// A successful stage-1 translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The effective VA (after TBI) of the leaf's first byte.
    pub va_base: u64,
    /// log2 of the leaf's size (page or block).
    pub size_log2: u32,
    /// The output address (IPA) of the leaf's first byte.
    pub oa_base: u64,
    /// The level of the leaf.
    pub level: u8,
    /// Permissions, as the descriptor stands after `update`.
    pub perms: Perms,
    /// nG = 0.
    pub global: bool,
    /// Where the leaf descriptor is (an IPA).
    pub desc_addr: u64,
    /// The leaf descriptor as read.
    pub desc: u64,
    /// The descriptor HTTU writes back at `desc_addr` (AF set, AP\[2\]
    /// cleared), if it changes.
    pub update: Option<u64>,
}

impl Translation {
    /// The output address of effective VA `va` (inside the leaf).
    pub const fn output(&self, va: u64) -> u64 {
        self.oa_base | (va & low_mask(self.size_log2))
    }
}

/// Selects the translation table for `va` (VA\[55\]) and checks the input
/// range; returns the table and the effective VA (VA\[63:56\] replaced by
/// the sign extension of VA\[55\] when TBI applies).
pub(crate) fn select(s1: &Stage1, va: u64) -> Result<(TtConfig, u64), FaultKind> {
    let upper = (va >> 55) & 1 == 1;
    let (tt, tbi) = if upper {
        (s1.tt1, s1.tbi1)
    } else {
        (s1.tt0, s1.tbi0)
    };
    let eff = match (tbi, upper) {
        (false, _) => va,
        (true, false) => va & low_mask(56),
        (true, true) => va | !low_mask(56),
    };
    let tt = tt.ok_or(FaultKind::Translation)?;
    let n = tt.va_bits();
    if n == 0 || n >= 64 {
        return Err(FaultKind::Translation);
    }
    let top = eff >> n;
    let want = if upper { low_mask(64 - n) } else { 0 };
    if top != want {
        return Err(FaultKind::Translation);
    }
    Ok((tt, eff))
}

/// Walks the stage-1 tables of `s1` for `va` and checks `access`.
///
/// `fetch(ipa)` reads the 8-byte descriptor at `ipa` through stage 2.
/// Descriptor updates (HTTU) are returned in [`Translation::update`], not
/// written.
pub(crate) fn walk<F>(
    s1: &Stage1,
    va: u64,
    access: Access,
    mut fetch: F,
) -> Result<Translation, WalkError>
where
    F: FnMut(u64) -> Result<u64, FetchError>,
{
    let fault = |kind, level| WalkError::Stage1 { kind, level };
    let (tt, eff) = select(s1, va).map_err(|k| fault(k, 0))?;
    let geo = Geometry::from_tsz(tt.granule, tt.tsz).ok_or(fault(FaultKind::Translation, 0))?;
    let oa_bits = s1.oa_bits(tt.granule);
    let beyond = |addr: u64| oa_bits < 64 && addr >> oa_bits != 0;

    let mut level = geo.start_level();
    let align = geo.table_bytes(level).trailing_zeros().max(6);
    let mut table = tt.ttb & !low_mask(align);
    // Hierarchical restrictions from APTable (ignored with HADx).
    let mut no_el0 = false;
    let mut no_write = false;

    loop {
        let desc_addr = table.wrapping_add(geo.index(level, eff).wrapping_mul(DESC_SIZE));
        let desc = fetch(desc_addr).map_err(|error| WalkError::Fetch {
            ipa: desc_addr,
            error,
            level,
        })?;
        let oa = match Desc::decode(desc, &geo, level, s1.lpa52) {
            Desc::Invalid | Desc::Reserved => return Err(fault(FaultKind::Translation, level)),
            Desc::Table { addr } => {
                if beyond(addr) {
                    return Err(fault(FaultKind::AddrSize, level));
                }
                if !tt.had {
                    no_el0 |= desc & TABLE_AP_NO_EL0 != 0;
                    no_write |= desc & TABLE_AP_RDONLY != 0;
                }
                if level >= LAST_LEVEL {
                    // Unreachable: level 3 never decodes as a table.
                    return Err(fault(FaultKind::Translation, level));
                }
                table = addr;
                level += 1;
                continue;
            }
            Desc::Block { oa } | Desc::Page { oa } => oa,
        };
        if beyond(oa) {
            return Err(fault(FaultKind::AddrSize, level));
        }
        let attrs = PteAttrs::decode(desc);
        let mut new = desc;
        if !attrs.af {
            if s1.ha {
                new |= PTE_AF;
            } else if !s1.affd {
                return Err(fault(FaultKind::Access, level));
            }
        }
        let read = attrs.unpriv && !no_el0;
        let mut perms = Perms {
            read,
            write: read && attrs.writable && !no_write,
            dirty_on_write: read && s1.hd && attrs.dbm && !attrs.writable && !no_write,
        };
        match perms.check(access) {
            Err(kind) => return Err(fault(kind, level)),
            Ok(false) => {}
            Ok(true) => {
                new &= !PTE_AP_RDONLY;
                new |= PTE_AF;
                perms.write = true;
                perms.dirty_on_write = false;
            }
        }
        let size_log2 = geo.level_shift(level);
        return Ok(Translation {
            va_base: eff & !low_mask(size_log2),
            size_log2,
            oa_base: oa,
            level,
            perms,
            global: attrs.global,
            desc_addr,
            desc,
            update: (new != desc).then_some(new),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use vsmmu_protocol::smmu::pgtable::{
        block_desc, page_desc, table_desc, PTE_AP_UNPRIV, PTE_DBM,
    };

    /// A sparse memory of descriptors.
    #[derive(Default)]
    struct Mem(HashMap<u64, u64>);

    impl Mem {
        fn fetch(&self, ipa: u64) -> Result<u64, FetchError> {
            if ipa >= 0x1_0000_0000 {
                return Err(FetchError::S2Translation);
            }
            Ok(self.0.get(&ipa).copied().unwrap_or(0))
        }
    }

    fn tt(ttb: u64, tsz: u8, granule: Granule) -> TtConfig {
        TtConfig {
            ttb,
            tsz,
            granule,
            irgn: 1,
            orgn: 1,
            sh: 3,
            had: false,
        }
    }

    fn s1(tt0: TtConfig) -> Stage1 {
        Stage1 {
            tt0: Some(tt0),
            tt1: None,
            tbi0: false,
            tbi1: false,
            ips_bits: 48,
            ha: false,
            hd: false,
            affd: false,
            lpa52: false,
        }
    }

    /// Builds a 4K, 48-bit table with one page: VA 0x1234_5000 → 0x8000_0000.
    fn four_k(attrs: &PteAttrs) -> (Mem, Stage1) {
        let mut m = Mem::default();
        let g = Granule::K4;
        m.0.insert(0x1000, table_desc(0x2000, g)); // L0[0]
        m.0.insert(0x2000, table_desc(0x3000, g)); // L1[0]
        m.0.insert(0x3000 + 0x91 * 8, table_desc(0x4000, g)); // L2[0x91]
        m.0.insert(0x4000 + 0x145 * 8, page_desc(0x8000_0000, g, attrs)); // L3
        (m, s1(tt(0x1000, 16, g)))
    }

    fn run(m: &Mem, s: &Stage1, va: u64, a: Access) -> Result<Translation, WalkError> {
        walk(s, va, a, |ipa| m.fetch(ipa))
    }

    fn s1f(kind: FaultKind, level: u8) -> WalkError {
        WalkError::Stage1 { kind, level }
    }

    #[test]
    fn page_walk() {
        let (m, s) = four_k(&PteAttrs::linux(true));
        let t = run(&m, &s, 0x1234_5678, Access::Write).unwrap();
        assert_eq!(
            t,
            Translation {
                va_base: 0x1234_5000,
                size_log2: 12,
                oa_base: 0x8000_0000,
                level: 3,
                perms: Perms {
                    read: true,
                    write: true,
                    dirty_on_write: false
                },
                global: false,
                desc_addr: 0x4000 + 0x145 * 8,
                desc: 0x8000_0f47,
                update: None,
            }
        );
        assert_eq!(t.output(0x1234_5678), 0x8000_0678);
        // Neighbouring page: invalid L3 descriptor.
        assert_eq!(
            run(&m, &s, 0x1234_6000, Access::Read),
            Err(s1f(FaultKind::Translation, 3))
        );
        // Invalid L2 / L0 entries.
        assert_eq!(
            run(&m, &s, 0x1240_0000, Access::Read),
            Err(s1f(FaultKind::Translation, 2))
        );
        assert_eq!(
            run(&m, &s, 0x80_0000_0000, Access::Read),
            Err(s1f(FaultKind::Translation, 0))
        );
        // Beyond the 48-bit range: translation fault before any fetch.
        assert_eq!(
            walk(&s, 1 << 48, Access::Read, |_| panic!("no fetch")),
            Err(s1f(FaultKind::Translation, 0))
        );
    }

    #[test]
    fn fetch_failures_carry_the_descriptor_address() {
        let (mut m, s) = four_k(&PteAttrs::linux(true));
        m.0.insert(0x3000 + 0x91 * 8, table_desc(0x2_0000_0000, Granule::K4));
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Read),
            Err(WalkError::Fetch {
                ipa: 0x2_0000_0000 + 0x145 * 8,
                error: FetchError::S2Translation,
                level: 3
            })
        );
        let s = Stage1 {
            tt0: Some(tt(0x3_0000_0000, 16, Granule::K4)),
            ..s
        };
        assert_eq!(
            run(&m, &s, 0, Access::Read),
            Err(WalkError::Fetch {
                ipa: 0x3_0000_0000,
                error: FetchError::S2Translation,
                level: 0
            })
        );
    }

    #[test]
    fn permissions() {
        let ro = PteAttrs::linux(false);
        let (m, s) = four_k(&ro);
        let t = run(&m, &s, 0x1234_5000, Access::Read).unwrap();
        assert!(t.perms.read && !t.perms.write);
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Write),
            Err(s1f(FaultKind::Permission, 3))
        );
        // Privileged-only page: unprivileged reads fault too.
        let priv_only = PteAttrs {
            unpriv: false,
            ..PteAttrs::linux(true)
        };
        let (m, s) = four_k(&priv_only);
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Read),
            Err(s1f(FaultKind::Permission, 3))
        );
        // APTable[1] at level 1 makes the page read-only; APTable[0] takes
        // EL0 access away; HAD ignores both.
        let (mut m, s) = four_k(&PteAttrs::linux(true));
        m.0.insert(0x2000, table_desc(0x3000, Granule::K4) | TABLE_AP_RDONLY);
        assert!(run(&m, &s, 0x1234_5000, Access::Read).is_ok());
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Write),
            Err(s1f(FaultKind::Permission, 3))
        );
        m.0.insert(0x2000, table_desc(0x3000, Granule::K4) | TABLE_AP_NO_EL0);
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Read),
            Err(s1f(FaultKind::Permission, 3))
        );
        let had = Stage1 {
            tt0: Some(TtConfig {
                had: true,
                ..s.tt0.unwrap()
            }),
            ..s
        };
        assert!(run(&m, &had, 0x1234_5000, Access::Write).is_ok());
    }

    #[test]
    fn access_flag_and_httu() {
        let no_af = PteAttrs {
            af: false,
            ..PteAttrs::linux(true)
        };
        let (m, s) = four_k(&no_af);
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Read),
            Err(s1f(FaultKind::Access, 3))
        );
        // AFFD: used as though AF = 1, nothing written.
        let affd = Stage1 { affd: true, ..s };
        assert_eq!(
            run(&m, &affd, 0x1234_5000, Access::Read).unwrap().update,
            None
        );
        // HA: AF set by the walk.
        let ha = Stage1 { ha: true, ..s };
        let t = run(&m, &ha, 0x1234_5000, Access::Read).unwrap();
        assert_eq!(t.update, Some(t.desc | PTE_AF));
        // Access flag before permission: a write to a read-only AF = 0 page.
        let ro_no_af = PteAttrs {
            af: false,
            ..PteAttrs::linux(false)
        };
        let (m, s) = four_k(&ro_no_af);
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Write),
            Err(s1f(FaultKind::Access, 3))
        );
        // With HA the permission fault wins and nothing is updated.
        let ha = Stage1 { ha: true, ..s };
        assert_eq!(
            run(&m, &ha, 0x1234_5000, Access::Write),
            Err(s1f(FaultKind::Permission, 3))
        );
        // Writable-clean (DBM) page: HD makes it dirty on write only.
        let clean = PteAttrs {
            dbm: true,
            af: false,
            ..PteAttrs::linux(false)
        };
        let (m, s) = four_k(&clean);
        let hd = Stage1 {
            ha: true,
            hd: true,
            ..s
        };
        let t = run(&m, &hd, 0x1234_5000, Access::Read).unwrap();
        assert_eq!(t.update, Some(t.desc | PTE_AF));
        assert_eq!(
            t.perms,
            Perms {
                read: true,
                write: false,
                dirty_on_write: true
            }
        );
        assert_eq!(t.perms.check(Access::Write), Ok(true));
        let t = run(&m, &hd, 0x1234_5000, Access::Write).unwrap();
        assert_eq!(t.update, Some((t.desc | PTE_AF) & !PTE_AP_RDONLY));
        assert!(t.perms.write && !t.perms.dirty_on_write);
        assert_eq!(t.desc & PTE_DBM, PTE_DBM);
        // Without HD the DBM page is read-only.
        let ha = Stage1 { ha: true, ..s };
        assert_eq!(
            run(&m, &ha, 0x1234_5000, Access::Write),
            Err(s1f(FaultKind::Permission, 3))
        );
        // DBM does not override APTable[1].
        let (mut m, _) = four_k(&clean);
        m.0.insert(0x2000, table_desc(0x3000, Granule::K4) | TABLE_AP_RDONLY);
        assert_eq!(
            run(&m, &hd, 0x1234_5000, Access::Write),
            Err(s1f(FaultKind::Permission, 3))
        );
    }

    #[test]
    fn address_size() {
        let g = Granule::K4;
        let (mut m, s) = four_k(&PteAttrs::linux(true));
        let s40 = Stage1 { ips_bits: 40, ..s };
        // Output address beyond 40 bits.
        m.0.insert(
            0x4000 + 0x145 * 8,
            page_desc(0x100_0000_0000, g, &PteAttrs::linux(true)),
        );
        assert_eq!(
            run(&m, &s40, 0x1234_5000, Access::Read),
            Err(s1f(FaultKind::AddrSize, 3))
        );
        assert!(run(&m, &s, 0x1234_5000, Access::Read).is_ok());
        // Address size before access flag.
        m.0.insert(
            0x4000 + 0x145 * 8,
            page_desc(
                0x100_0000_0000,
                g,
                &PteAttrs {
                    af: false,
                    ..PteAttrs::linux(true)
                },
            ),
        );
        assert_eq!(
            run(&m, &s40, 0x1234_5000, Access::Read),
            Err(s1f(FaultKind::AddrSize, 3))
        );
        // A table address beyond the IPS faults at the table's level.
        m.0.insert(0x2000, table_desc(0x100_0000_0000, g));
        assert_eq!(
            run(&m, &s40, 0x1234_5000, Access::Read),
            Err(s1f(FaultKind::AddrSize, 1))
        );
        // Below 64K the OA is at most 48 bits whatever the IPS says.
        let s52 = Stage1 { ips_bits: 52, ..s };
        assert_eq!(s52.oa_bits(Granule::K4), 48);
        assert_eq!(s52.oa_bits(Granule::K64), 52);
    }

    #[test]
    fn blocks() {
        let g = Granule::K4;
        let geo = Geometry::new(g, 39).unwrap();
        let a = PteAttrs::linux(true);
        let mut m = Mem::default();
        // T0SZ 25: start at level 1. L1[1] = 1 GiB block at 0x4000_0000;
        // L1[2] → L2 with a 2 MiB block.
        m.0.insert(0x1000 + 8, block_desc(0x4000_0000, &geo, 1, &a));
        m.0.insert(0x1000 + 16, table_desc(0x2000, g));
        m.0.insert(0x2000 + 3 * 8, block_desc(0x8060_0000, &geo, 2, &a));
        let s = s1(tt(0x1000, 25, g));
        let t = run(&m, &s, 0x4123_4567, Access::Write).unwrap();
        assert_eq!(
            (t.va_base, t.size_log2, t.oa_base, t.level),
            (0x4000_0000, 30, 0x4000_0000, 1)
        );
        assert_eq!(t.output(0x4123_4567), 0x4123_4567);
        let t = run(&m, &s, 0x8076_5432, Access::Read).unwrap();
        assert_eq!(
            (t.va_base, t.size_log2, t.oa_base, t.level),
            (0x8060_0000, 21, 0x8060_0000, 2)
        );
        assert_eq!(t.output(0x8076_5432), 0x8076_5432);
        // A block at level 0 (4K) is reserved.
        let geo48 = Geometry::new(g, 48).unwrap();
        let mut m = Mem::default();
        m.0.insert(0x1000, block_desc(0, &geo48, 1, &a));
        let s = s1(tt(0x1000, 16, g));
        assert_eq!(
            run(&m, &s, 0x1000, Access::Read),
            Err(s1f(FaultKind::Translation, 0))
        );
        // 0b01 at level 3 is reserved.
        let (mut m, s) = four_k(&a);
        m.0.insert(0x4000 + 0x145 * 8, page_desc(0x8000_0000, g, &a) & !2);
        assert_eq!(
            run(&m, &s, 0x1234_5000, Access::Read),
            Err(s1f(FaultKind::Translation, 3))
        );
    }

    #[test]
    fn granule_and_va_size_matrix() {
        let a = PteAttrs::linux(true);
        for (g, tsz) in [
            (Granule::K4, 16),
            (Granule::K4, 25),
            (Granule::K4, 33),
            (Granule::K4, 39),
            (Granule::K16, 16),
            (Granule::K16, 17),
            (Granule::K16, 28),
            (Granule::K16, 39),
            (Granule::K64, 16),
            (Granule::K64, 22),
            (Granule::K64, 30),
            (Granule::K64, 39),
        ] {
            let geo = Geometry::from_tsz(g, tsz).unwrap();
            let page = 1u64 << g.shift();
            // The highest page of the input range, so every level's index
            // is at its maximum.
            let va = low_mask(geo.va_bits()) & !(page - 1);
            let mut m = Mem::default();
            let mut table = 0x10_0000u64;
            for level in geo.start_level()..3 {
                let next = table + 0x10_0000;
                m.0.insert(table + geo.index(level, va) * 8, table_desc(next, g));
                table = next;
            }
            let oa = 0x4000_0000 + 7 * page;
            m.0.insert(table + geo.index(3, va) * 8, page_desc(oa, g, &a));
            let s = s1(tt(0x10_0000, tsz, g));
            let t = run(&m, &s, va + 0x123, Access::Write)
                .unwrap_or_else(|e| panic!("{g:?} T0SZ {tsz}: {e:?}"));
            assert_eq!(t.output(va + 0x123), oa + 0x123, "{g:?} {tsz}");
            assert_eq!(t.size_log2, g.shift());
            // One bit beyond the range faults.
            assert_eq!(
                run(&m, &s, 1 << geo.va_bits(), Access::Read),
                Err(s1f(FaultKind::Translation, 0)),
                "{g:?} {tsz}"
            );
        }
    }

    #[test]
    fn sixty_four_k_with_52_bit_oa() {
        let g = Granule::K64;
        let geo = Geometry::new(g, 52).unwrap();
        let a = PteAttrs::linux(true);
        let mut m = Mem::default();
        // Level 1 block (4 TiB) only with LPA.
        m.0.insert(0x1_0000, block_desc(0x000f_0000_0000_0000, &geo, 1, &a));
        let s = Stage1 {
            ips_bits: 52,
            lpa52: true,
            ..s1(tt(0x1_0000, 12, g))
        };
        let t = run(&m, &s, 0x123, Access::Read).unwrap();
        assert_eq!((t.oa_base, t.size_log2), (0x000f_0000_0000_0000, 42));
        let no_lpa = Stage1 {
            lpa52: false,
            ips_bits: 48,
            ..s
        };
        assert_eq!(
            run(&m, &no_lpa, 0x123, Access::Read),
            Err(s1f(FaultKind::Translation, 1))
        );
    }

    #[test]
    fn ttb1_and_tbi() {
        let g = Granule::K4;
        let a = PteAttrs::linux(true);
        let mut m = Mem::default();
        // TTB1, T1SZ 25 (39 bits): VA 0xffff_ff80_0000_0000.. ; start L1.
        m.0.insert(0x9000 + 511 * 8, table_desc(0xa000, g));
        m.0.insert(0xa000 + 511 * 8, table_desc(0xb000, g));
        m.0.insert(0xb000 + 511 * 8, page_desc(0x5000_0000, g, &a));
        let (m0, s0) = four_k(&a);
        m.0.extend(m0.0);
        let s = Stage1 {
            tt1: Some(tt(0x9000, 25, g)),
            ..s0
        };
        let t = run(&m, &s, 0xffff_ffff_ffff_f010, Access::Read).unwrap();
        assert_eq!(t.output(0xffff_ffff_ffff_f010), 0x5000_0010);
        // Not sign-extended: out of range.
        assert_eq!(
            run(&m, &s, 0x00ff_ffff_ffff_f010, Access::Read),
            Err(s1f(FaultKind::Translation, 0))
        );
        assert_eq!(
            run(&m, &s, 0xfff0_ffff_ffff_f010, Access::Read),
            Err(s1f(FaultKind::Translation, 0))
        );
        // TTB1 disabled (EPD1).
        assert_eq!(
            run(&m, &s0, 0xffff_ffff_ffff_f010, Access::Read),
            Err(s1f(FaultKind::Translation, 0))
        );
        // A tagged TTB0 address faults without TBI0 and translates with it.
        assert_eq!(
            run(&m, &s, 0x5a00_0000_1234_5000, Access::Read),
            Err(s1f(FaultKind::Translation, 0))
        );
        let tbi = Stage1 { tbi0: true, ..s };
        let t = run(&m, &tbi, 0x5a00_0000_1234_5000, Access::Read).unwrap();
        assert_eq!((t.va_base, t.oa_base), (0x1234_5000, 0x8000_0000));
        let (sel, eff) = select(&tbi, 0x5a00_0000_1234_5000).unwrap();
        assert_eq!((sel.ttb, eff), (0x1000, 0x1234_5000));
        let tbi1 = Stage1 { tbi1: true, ..s };
        let (_, eff) = select(&tbi1, 0x00ff_ffff_ffff_f010).unwrap();
        assert_eq!(eff, 0xffff_ffff_ffff_f010);
    }

    #[test]
    fn start_table_alignment() {
        // 16K, 48 bits: a 16-byte level-0 table; TTB bits [5:0] ignored.
        let g = Granule::K16;
        let a = PteAttrs::linux(true);
        let geo = Geometry::new(g, 48).unwrap();
        let mut m = Mem::default();
        m.0.insert(0x4_0008, table_desc(0x8_0000, g)); // L0[1]
        let va = 1u64 << 47;
        m.0.insert(0x8_0000 + geo.index(1, va) * 8, table_desc(0xc_0000, g));
        m.0.insert(0xc_0000 + geo.index(2, va) * 8, table_desc(0x10_0000, g));
        m.0.insert(
            0x10_0000 + geo.index(3, va) * 8,
            page_desc(0x200_0000, g, &a),
        );
        let s = s1(tt(0x4_0030, 16, g));
        assert_eq!(
            run(&m, &s, va + 5, Access::Read).unwrap().output(va + 5),
            0x200_0005
        );
    }

    #[test]
    fn never_panics_on_garbage_tables() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            let r = next();
            let g = match r % 3 {
                0 => Granule::K4,
                1 => Granule::K16,
                _ => Granule::K64,
            };
            let s = Stage1 {
                tt0: Some(tt(next(), (r >> 8) as u8 % 70, g)),
                tt1: Some(tt(next(), (r >> 16) as u8 % 70, g)),
                tbi0: r & (1 << 30) != 0,
                tbi1: r & (1 << 31) != 0,
                ips_bits: (r >> 32) as u8,
                ha: r & (1 << 40) != 0,
                hd: r & (1 << 41) != 0,
                affd: r & (1 << 42) != 0,
                lpa52: r & (1 << 43) != 0,
            };
            let a = if r & (1 << 44) != 0 {
                Access::Read
            } else {
                Access::Write
            };
            let mut left = 6;
            let _ = walk(&s, next(), a, |_| {
                left -= 1;
                if left == 0 {
                    Err(FetchError::External)
                } else {
                    Ok(next() | 1 | PTE_AP_UNPRIV)
                }
            });
        }
    }
}
