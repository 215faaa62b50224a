//! The sim host SMMU's caches: a TLB of successful stage-1 translations and
//! a configuration cache of decoded CDs, with the invalidation commands the
//! kernel forwards for a nested domain (`IOMMU_HWPT_INVALIDATE`).
//!
//! Like real hardware, nothing here re-reads guest memory: a guest that
//! changes a descriptor or a CD without the matching TLBI or CFGI keeps
//! getting the cached result. What each command drops (IHI 0070 §4.3,
//! §4.4):
//!
//! - TLBI_NH_ALL, TLBI_NSNH_ALL: every translation (one VMID per vIOMMU);
//! - TLBI_NH_ASID: non-global translations of the ASID;
//! - TLBI_NH_VA: translations of the ASID, and global ones, overlapping the
//!   address or range; TLBI_NH_VAA: all overlapping translations;
//! - range forms (TG != 0): `(NUM + 1) << SCALE` granules from the address,
//!   never wrapping; TTL and Leaf are hints that narrow the required scope,
//!   so ignoring them over-invalidates, which is permitted;
//! - CFGI_CD(SID, SSID): that CD and, over-invalidating as permitted, the
//!   translations made through it; CFGI_CD_ALL(SID): every CD and
//!   translation of the StreamID;
//! - ATC_INV: nothing (the sim's devices have no ATC).
//!
//! A command that does not decode (RES0 bits set) flushes everything. STE
//! changes ([`Tlb::flush_sid`]) come from `install_ste`/`detach_device`.
//!
//! Translations are keyed by vSID, CD index, ASID and 4 KiB VA page and
//! remember the size of the leaf they came from, so an invalidation by
//! address anywhere inside a block drops every page cached from it.

use std::collections::BTreeMap;

use vsmmu_protocol::smmu::cd::Granule;
use vsmmu_protocol::smmu::command::{Command, TlbiRange};

use super::walk::{Perms, Stage1, Translation};

/// Most translations the TLB holds; inserting beyond evicts one.
pub(crate) const TLB_CAPACITY: usize = 4096;
/// Most CDs the configuration cache holds.
pub(crate) const CD_CACHE_CAPACITY: usize = 1024;

/// The smallest granule: the TLB's indexing unit.
const PAGE_SHIFT: u32 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    vsid: u32,
    cd: u32,
    asid: u16,
    page: u64,
}

/// A cached stage-1 translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbEntry {
    /// Effective VA of the leaf's first byte.
    pub va_base: u64,
    /// log2 of the leaf's size.
    pub size_log2: u32,
    /// Output address (IPA) of the leaf's first byte.
    pub oa_base: u64,
    /// Permissions.
    pub perms: Perms,
    /// A global (nG = 0) translation.
    pub global: bool,
    /// Level of the leaf.
    pub level: u8,
}

impl TlbEntry {
    /// The entry for a walk's result.
    pub fn from_translation(t: &Translation) -> TlbEntry {
        TlbEntry {
            va_base: t.va_base,
            size_log2: t.size_log2,
            oa_base: t.oa_base,
            perms: t.perms,
            global: t.global,
            level: t.level,
        }
    }

    /// The output address of effective VA `va` (inside the leaf).
    pub fn output(&self, va: u64) -> u64 {
        self.oa_base | (va & low(self.size_log2))
    }

    /// True when the leaf overlaps `[start, end)` (`end` may be 2^64).
    fn overlaps(&self, start: u128, end: u128) -> bool {
        let base = u128::from(self.va_base);
        let last = base + (1u128 << self.size_log2.min(64));
        base < end && start < last
    }
}

fn low(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// A decoded CD as the SMMU caches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CachedCd {
    /// The walk context.
    pub s1: Stage1,
    /// CD.ASID.
    pub asid: u16,
    /// CD.R: stage-1 translation-related faults are recorded.
    pub record_faults: bool,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbStats {
    /// Translations found in the TLB.
    pub hits: u64,
    /// Lookups that needed a walk.
    pub misses: u64,
    /// Translations evicted because the TLB was full.
    pub evictions: u64,
    /// CDs found in the configuration cache.
    pub cd_hits: u64,
    /// CDs fetched from memory.
    pub cd_misses: u64,
    /// Translations dropped by invalidations.
    pub invalidated: u64,
}

/// The TLB and configuration cache of the sim host SMMU.
#[derive(Debug, Default)]
pub struct Tlb {
    entries: BTreeMap<Key, TlbEntry>,
    cds: BTreeMap<(u32, u32), CachedCd>,
    stats: TlbStats,
}

/// The byte span `[start, end)` of a TLBI by address.
fn span(r: &TlbiRange) -> (u128, u128) {
    let start = u128::from(r.addr);
    if r.tg == 0 {
        return (start, start + 1);
    }
    let granule = match r.tg {
        1 => Granule::K4,
        2 => Granule::K16,
        _ => Granule::K64,
    };
    // (NUM + 1) << SCALE granules; SCALE is at most 63, NUM + 1 at most 32.
    let granules = u128::from(r.num) + 1;
    let bytes = granules << (u32::from(r.scale.min(63)) + granule.shift());
    // "The Address is not considered to wrap": clamp at 2^64.
    (start, (start + bytes).min(1u128 << 64))
}

impl Tlb {
    /// An empty TLB.
    pub fn new() -> Tlb {
        Tlb::default()
    }

    /// The translation of effective VA `va` for `(vsid, cd, asid)`, if
    /// cached.
    pub fn lookup(&mut self, vsid: u32, cd: u32, asid: u16, va: u64) -> Option<TlbEntry> {
        let key = Key {
            vsid,
            cd,
            asid,
            page: va >> PAGE_SHIFT,
        };
        match self.entries.get(&key) {
            Some(e) => {
                self.stats.hits = self.stats.hits.saturating_add(1);
                Some(*e)
            }
            None => {
                self.stats.misses = self.stats.misses.saturating_add(1);
                None
            }
        }
    }

    /// Caches a translation for the 4 KiB page of `va`.
    pub fn insert(&mut self, vsid: u32, cd: u32, asid: u16, va: u64, entry: TlbEntry) {
        let key = Key {
            vsid,
            cd,
            asid,
            page: va >> PAGE_SHIFT,
        };
        if self.entries.len() >= TLB_CAPACITY && !self.entries.contains_key(&key) {
            self.entries.pop_first();
            self.stats.evictions = self.stats.evictions.saturating_add(1);
        }
        self.entries.insert(key, entry);
    }

    /// The cached CD of `(vsid, index)`.
    pub fn cd(&mut self, vsid: u32, index: u32) -> Option<CachedCd> {
        let cd = self.cds.get(&(vsid, index)).copied();
        if cd.is_some() {
            self.stats.cd_hits = self.stats.cd_hits.saturating_add(1);
        } else {
            self.stats.cd_misses = self.stats.cd_misses.saturating_add(1);
        }
        cd
    }

    /// Caches the CD of `(vsid, index)`.
    pub fn insert_cd(&mut self, vsid: u32, index: u32, cd: CachedCd) {
        if self.cds.len() >= CD_CACHE_CAPACITY && !self.cds.contains_key(&(vsid, index)) {
            self.cds.pop_first();
        }
        self.cds.insert((vsid, index), cd);
    }

    /// Drops everything cached for `vsid` (its STE changed or it left).
    pub fn flush_sid(&mut self, vsid: u32) {
        self.cds.retain(|&(s, _), _| s != vsid);
        self.drop_entries(|k, _| k.vsid == vsid);
    }

    /// Drops everything.
    pub fn flush_all(&mut self) {
        self.cds.clear();
        self.drop_entries(|_, _| true);
    }

    /// Applies one invalidation command (as forwarded to the host).
    pub fn invalidate(&mut self, cmd: &[u64; 2]) {
        let Ok(c) = Command::decode(*cmd) else {
            log::debug!("sim TLB: undecodable command {cmd:#x?}: flushing everything");
            self.flush_all();
            return;
        };
        match c {
            Command::TlbiNhAll { .. } | Command::TlbiNsnhAll => self.drop_entries(|_, _| true),
            Command::TlbiNhAsid { asid, .. } => {
                self.drop_entries(|k, e| !e.global && k.asid == asid)
            }
            Command::TlbiNhVa { asid, range, .. } => {
                let (start, end) = span(&range);
                self.drop_entries(|k, e| (e.global || k.asid == asid) && e.overlaps(start, end));
            }
            Command::TlbiNhVaa { range, .. } => {
                let (start, end) = span(&range);
                self.drop_entries(|_, e| e.overlaps(start, end));
            }
            Command::CfgiCd { sid, ssid, .. } => {
                self.cds.remove(&(sid, ssid));
                self.drop_entries(|k, _| k.vsid == sid && k.cd == ssid);
            }
            Command::CfgiCdAll { sid } => self.flush_sid(sid),
            _ => {}
        }
    }

    fn drop_entries(&mut self, mut f: impl FnMut(&Key, &TlbEntry) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|k, e| !f(k, e));
        let gone = before.saturating_sub(self.entries.len()) as u64;
        self.stats.invalidated = self.stats.invalidated.saturating_add(gone);
    }

    /// Cached translations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no translation is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Cached CDs.
    pub fn cd_len(&self) -> usize {
        self.cds.len()
    }

    /// Counters.
    pub fn stats(&self) -> TlbStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(va_base: u64, size_log2: u32, global: bool) -> TlbEntry {
        TlbEntry {
            va_base,
            size_log2,
            oa_base: 0x8000_0000,
            perms: Perms {
                read: true,
                write: true,
                dirty_on_write: false,
            },
            global,
            level: 3,
        }
    }

    fn tlbi(c: Command) -> [u64; 2] {
        c.encode()
    }

    fn va(addr: u64) -> TlbiRange {
        TlbiRange::va(addr, false)
    }

    /// vSID 1 CD 0: ASID 5 pages 0x1000, 0x2000; a 2 MiB block at
    /// 0x20_0000 (pages 0x20_0000 and 0x3f_f000 cached); a global page at
    /// 0x9000; vSID 2 CD 3: ASID 6 page 0x1000.
    fn filled() -> Tlb {
        let mut t = Tlb::new();
        t.insert(1, 0, 5, 0x1000, entry(0x1000, 12, false));
        t.insert(1, 0, 5, 0x2000, entry(0x2000, 12, false));
        t.insert(1, 0, 5, 0x20_0000, entry(0x20_0000, 21, false));
        t.insert(1, 0, 5, 0x3f_f000, entry(0x20_0000, 21, false));
        t.insert(1, 0, 5, 0x9000, entry(0x9000, 12, true));
        t.insert(2, 3, 6, 0x1000, entry(0x1000, 12, false));
        assert_eq!(t.len(), 6);
        t
    }

    fn has(t: &mut Tlb, vsid: u32, cd: u32, asid: u16, va: u64) -> bool {
        t.lookup(vsid, cd, asid, va).is_some()
    }

    #[test]
    fn lookup_is_exact_per_page() {
        let mut t = filled();
        assert_eq!(
            t.lookup(1, 0, 5, 0x1fff).unwrap().output(0x1fff),
            0x8000_0fff
        );
        assert!(!has(&mut t, 1, 0, 5, 0x3000));
        assert!(!has(&mut t, 1, 0, 6, 0x1000));
        assert!(!has(&mut t, 1, 1, 5, 0x1000));
        assert_eq!(
            t.lookup(1, 0, 5, 0x3f_f123).unwrap().output(0x3f_f123),
            0x801f_f123
        );
        let s = t.stats();
        assert_eq!((s.hits, s.misses), (2, 3));
    }

    #[test]
    fn tlbi_all_and_asid() {
        let mut t = filled();
        t.invalidate(&tlbi(Command::TlbiNhAsid { vmid: 0, asid: 5 }));
        // Only the global entry of ASID 5 survives, and ASID 6.
        assert_eq!(t.len(), 2);
        assert!(has(&mut t, 1, 0, 5, 0x9000) && has(&mut t, 2, 3, 6, 0x1000));
        t.invalidate(&tlbi(Command::TlbiNhAll { vmid: 0 }));
        assert!(t.is_empty());
        let mut t = filled();
        t.invalidate(&tlbi(Command::TlbiNsnhAll));
        assert!(t.is_empty());
        assert_eq!(t.stats().invalidated, 6);
    }

    #[test]
    fn tlbi_va_matches_asid_or_global_and_whole_blocks() {
        let mut t = filled();
        // Inside the block: both cached pages of the block go.
        t.invalidate(&tlbi(Command::TlbiNhVa {
            vmid: 0,
            asid: 5,
            range: va(0x2a_5000),
        }));
        assert_eq!(t.len(), 4);
        assert!(!has(&mut t, 1, 0, 5, 0x20_0000) && !has(&mut t, 1, 0, 5, 0x3f_f000));
        // Another ASID: only global entries match.
        t.invalidate(&tlbi(Command::TlbiNhVa {
            vmid: 0,
            asid: 9,
            range: va(0x1000),
        }));
        assert_eq!(t.len(), 4);
        t.invalidate(&tlbi(Command::TlbiNhVa {
            vmid: 0,
            asid: 9,
            range: va(0x9000),
        }));
        assert_eq!(t.len(), 3);
        // VAA: every ASID.
        t.invalidate(&tlbi(Command::TlbiNhVaa {
            vmid: 0,
            range: va(0x1000),
        }));
        assert_eq!(t.len(), 1);
        assert!(has(&mut t, 1, 0, 5, 0x2000));
    }

    #[test]
    fn range_tlbi() {
        // TG 4K, NUM 1, SCALE 0: two pages from 0x1000.
        let mut t = filled();
        let r = TlbiRange {
            num: 1,
            tg: 1,
            ttl: 3,
            ..va(0x1000)
        };
        t.invalidate(&tlbi(Command::TlbiNhVa {
            vmid: 0,
            asid: 5,
            range: r,
        }));
        assert!(!has(&mut t, 1, 0, 5, 0x1000) && !has(&mut t, 1, 0, 5, 0x2000));
        assert!(has(&mut t, 1, 0, 5, 0x20_0000));
        // Leaf and TTL are hints only.
        let mut t = filled();
        let r = TlbiRange {
            num: 0,
            scale: 9,
            tg: 1,
            leaf: true,
            ttl: 2,
            ..va(0x20_0000)
        };
        t.invalidate(&tlbi(Command::TlbiNhVaa { vmid: 0, range: r }));
        assert_eq!(t.len(), 4);
        // 64K granule, NUM 31, SCALE 20: 2^41 bytes, wider than the 4K entries.
        let mut t = filled();
        let r = TlbiRange {
            num: 31,
            scale: 20,
            tg: 3,
            ..va(0)
        };
        t.invalidate(&tlbi(Command::TlbiNhVaa { vmid: 0, range: r }));
        assert!(t.is_empty());
        // Near the top: never wraps to low addresses.
        let mut t = filled();
        let r = TlbiRange {
            num: 31,
            scale: 63,
            tg: 3,
            ..va(0xffff_ffff_ffff_f000)
        };
        t.invalidate(&tlbi(Command::TlbiNhVaa { vmid: 0, range: r }));
        assert_eq!(t.len(), 6);
        assert_eq!(span(&r), (0xffff_ffff_ffff_f000, 1 << 64));
    }

    #[test]
    fn cfgi_and_flushes() {
        let mut t = filled();
        let s1 = Stage1 {
            tt0: None,
            tt1: None,
            tbi0: false,
            tbi1: false,
            ips_bits: 48,
            ha: false,
            hd: false,
            affd: false,
            lpa52: false,
        };
        let cd = CachedCd {
            s1,
            asid: 5,
            record_faults: true,
        };
        t.insert_cd(1, 0, cd);
        t.insert_cd(1, 7, cd);
        t.insert_cd(2, 3, cd);
        assert_eq!(t.cd(1, 7), Some(cd));
        assert_eq!(t.cd(1, 8), None);
        t.invalidate(&tlbi(Command::CfgiCd {
            sid: 1,
            ssid: 7,
            leaf: true,
        }));
        assert_eq!((t.cd_len(), t.len()), (2, 6));
        t.invalidate(&tlbi(Command::CfgiCd {
            sid: 1,
            ssid: 0,
            leaf: false,
        }));
        assert_eq!((t.cd_len(), t.len()), (1, 1));
        t.invalidate(&tlbi(Command::CfgiCdAll { sid: 2 }));
        assert_eq!((t.cd_len(), t.len()), (0, 0));

        let mut t = filled();
        t.insert_cd(2, 3, cd);
        t.flush_sid(1);
        assert_eq!((t.cd_len(), t.len()), (1, 1));
        t.invalidate(&[0x40 | (2 << 32), 0]); // ATC_INV: nothing
        assert_eq!(t.len(), 1);
        // RES0 bits set: flush everything.
        t.invalidate(&[0x10 | (1 << 8), 0]);
        assert_eq!((t.cd_len(), t.len()), (0, 0));
    }

    #[test]
    fn capacity_is_bounded() {
        let mut t = Tlb::new();
        for i in 0..(TLB_CAPACITY as u64 + 10) {
            t.insert(1, 0, 1, i << 12, entry(i << 12, 12, false));
        }
        assert_eq!(t.len(), TLB_CAPACITY);
        assert_eq!(t.stats().evictions, 10);
        // Re-inserting an existing key evicts nothing.
        t.insert(1, 0, 1, 20 << 12, entry(20 << 12, 12, false));
        assert_eq!(t.stats().evictions, 10);
    }
}
