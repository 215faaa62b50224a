//! A guest-side stage-1 page table builder (VMSAv8-64, as Linux
//! `io-pgtable-arm.c` builds them for an SMMUv3 stage-1 domain), and the
//! TLB invalidation commands a driver issues after changing one.
//!
//! [`PageTable`] writes real descriptors into guest memory through
//! [`PtMemory`] (implemented for [`GuestRam`]), allocating tables from a
//! caller-given range with a bump allocator. It maps with the largest block
//! the alignment allows (unless [`PageTable::set_blocks`] turns blocks
//! off), splits blocks when a partial unmap or protect needs it, and never
//! frees tables. Descriptors come from `vsmmu_protocol::smmu::pgtable`, the
//! same encoding the sim host's walker decodes.
//!
//! After `map` no invalidation is needed (invalid entries are never
//! cached); after `unmap` or `protect` the driver sends
//! [`tlbi_range`] (or [`tlbi_asid`]) and a CMD_SYNC ([`cmd_sync`]) before
//! relying on the change, exactly as Linux's `arm_smmu_tlb_inv_range_asid`
//! does.

use vsmmu_protocol::smmu::cd::{Cd, Granule};
use vsmmu_protocol::smmu::command::{Command, TlbiRange};
use vsmmu_protocol::smmu::pgtable::{
    block_desc, page_desc, table_desc, Desc, Geometry, PteAttrs, ATTR_IDX_CACHE, LAST_LEVEL,
    PTE_SH_IS,
};

use crate::guest_ram::GuestRam;

/// Guest memory the builder reads and writes descriptors in.
pub trait PtMemory {
    /// Reads the little-endian u64 at `gpa`.
    fn read_u64(&self, gpa: u64) -> u64;
    /// Writes a little-endian u64 at `gpa`.
    fn write_u64(&self, gpa: u64, value: u64);
    /// Zeroes `len` bytes at `gpa`.
    fn zero(&self, gpa: u64, len: usize);
}

impl PtMemory for GuestRam {
    fn read_u64(&self, gpa: u64) -> u64 {
        GuestRam::read_u64(self, gpa)
    }

    fn write_u64(&self, gpa: u64, value: u64) {
        self.write_u64s(gpa, &[value]);
    }

    fn zero(&self, gpa: u64, len: usize) {
        GuestRam::zero(self, gpa, len);
    }
}

/// Why a page table operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtError {
    /// The granule / T0SZ pair is not a valid stage-1 geometry.
    #[error("no stage-1 table with a {granule:?} granule and T0SZ {t0sz}")]
    Geometry {
        /// Granule.
        granule: Granule,
        /// T0SZ.
        t0sz: u8,
    },
    /// An address or size is not a multiple of the granule.
    #[error("{what} {value:#x} is not aligned to the {granule:?} granule")]
    Unaligned {
        /// Which argument.
        what: &'static str,
        /// Its value.
        value: u64,
        /// Granule.
        granule: Granule,
    },
    /// The IOVA range is empty or leaves the table's input range.
    #[error("IOVA range {iova:#x}+{size:#x} is empty or outside the {bits}-bit input range")]
    OutOfRange {
        /// IOVA.
        iova: u64,
        /// Size.
        size: u64,
        /// Input address bits.
        bits: u32,
    },
    /// The output range wraps or exceeds 48 bits.
    #[error("output range {pa:#x}+{size:#x} exceeds 48 bits")]
    OutputRange {
        /// Output address.
        pa: u64,
        /// Size.
        size: u64,
    },
    /// Something is already mapped there.
    #[error("IOVA {0:#x} is already mapped")]
    Exists(u64),
    /// Nothing is mapped there (`protect`).
    #[error("IOVA {0:#x} is not mapped")]
    NotMapped(u64),
    /// The allocator range is exhausted.
    #[error("page table memory exhausted at {next:#x} (end {end:#x})")]
    OutOfMemory {
        /// Next free address.
        next: u64,
        /// End of the range.
        end: u64,
    },
}

/// Access rights of a mapping, as Linux's `IOMMU_*` prot flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prot {
    /// `IOMMU_READ`.
    pub read: bool,
    /// `IOMMU_WRITE`.
    pub write: bool,
    /// `IOMMU_PRIV`: AP\[1\] = 0, no unprivileged (device) access.
    pub privileged: bool,
    /// `IOMMU_NOEXEC`: XN.
    pub noexec: bool,
    /// AF set (Linux always sets it; clear it to see F_ACCESS or HTTU).
    pub af: bool,
    /// nG clear: a global entry (Linux always sets nG for stage 1).
    pub global: bool,
    /// DBM (writable-clean when `write` is false; Linux sets it on writable
    /// pages with `IO_PGTABLE_QUIRK_ARM_HD`).
    pub dbm: bool,
}

impl Prot {
    /// `IOMMU_READ`.
    pub const RO: Prot = Prot {
        read: true,
        write: false,
        privileged: false,
        noexec: false,
        af: true,
        global: false,
        dbm: false,
    };

    /// `IOMMU_READ | IOMMU_WRITE`.
    pub const RW: Prot = Prot {
        write: true,
        ..Prot::RO
    };

    /// The descriptor attributes (cacheable, inner shareable).
    pub const fn attrs(&self) -> PteAttrs {
        PteAttrs {
            writable: self.write,
            unpriv: !self.privileged,
            af: self.af,
            global: self.global,
            dbm: self.dbm,
            xn: self.noexec,
            attr_index: ATTR_IDX_CACHE,
            sh: PTE_SH_IS,
        }
    }

    /// Neither read nor write: Linux maps nothing for such a request.
    pub const fn is_none(&self) -> bool {
        !self.read && !self.write
    }
}

/// A mapping found by [`PageTable::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// Output address of the IOVA.
    pub pa: u64,
    /// The leaf's attributes.
    pub attrs: PteAttrs,
    /// The leaf's level.
    pub level: u8,
    /// log2 of the leaf's size.
    pub size_log2: u32,
    /// Where the leaf descriptor is.
    pub desc_addr: u64,
    /// The descriptor.
    pub desc: u64,
}

/// A stage-1 page table in guest memory.
#[derive(Debug)]
pub struct PageTable<'m, M: PtMemory + ?Sized> {
    mem: &'m M,
    geo: Geometry,
    root: u64,
    next: u64,
    end: u64,
    blocks: bool,
}

/// What to do with one leaf in a range operation.
#[derive(Clone, Copy)]
enum Op {
    Unmap,
    Protect(PteAttrs),
}

impl<'m, M: PtMemory + ?Sized> PageTable<'m, M> {
    /// An empty table for `granule` and `t0sz` (input range `64 - t0sz`
    /// bits, 16..=39), its tables allocated from `[alloc_start, alloc_end)`
    /// (rounded up to the granule). The root is allocated and zeroed now.
    pub fn new(
        mem: &'m M,
        granule: Granule,
        t0sz: u8,
        alloc_start: u64,
        alloc_end: u64,
    ) -> Result<Self, PtError> {
        let mut pt = Self::with_root(mem, granule, t0sz, 0, alloc_start, alloc_end)?;
        pt.root = pt.alloc()?;
        Ok(pt)
    }

    /// A table that already exists at `root` (built earlier, by this
    /// builder or another); new tables come from `[alloc_start,
    /// alloc_end)`, which must not overlap the existing ones.
    pub fn from_root(
        mem: &'m M,
        granule: Granule,
        t0sz: u8,
        root: u64,
        alloc_start: u64,
        alloc_end: u64,
    ) -> Result<Self, PtError> {
        let pt = Self::with_root(mem, granule, t0sz, root, alloc_start, alloc_end)?;
        if root & (pt.gran() - 1) != 0 {
            return Err(PtError::Unaligned {
                what: "root",
                value: root,
                granule,
            });
        }
        Ok(pt)
    }

    fn with_root(
        mem: &'m M,
        granule: Granule,
        t0sz: u8,
        root: u64,
        alloc_start: u64,
        alloc_end: u64,
    ) -> Result<Self, PtError> {
        let geo = Geometry::from_tsz(granule, t0sz)
            .filter(|_| {
                (16..=39).contains(&t0sz) || (granule == Granule::K64 && (12..16).contains(&t0sz))
            })
            .ok_or(PtError::Geometry { granule, t0sz })?;
        let gran = 1u64 << granule.shift();
        let next = alloc_start
            .checked_add(gran - 1)
            .map(|a| a & !(gran - 1))
            .ok_or(PtError::OutOfMemory {
                next: alloc_start,
                end: alloc_end,
            })?;
        Ok(PageTable {
            mem,
            geo,
            root,
            next,
            end: alloc_end,
            blocks: true,
        })
    }

    /// Guest address of the root table (CD.TTB0).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The walk geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The granule.
    pub fn granule(&self) -> Granule {
        self.geo.granule()
    }

    /// T0SZ.
    pub fn t0sz(&self) -> u8 {
        self.geo.tsz()
    }

    /// The next free byte of the allocator range.
    pub fn alloc_next(&self) -> u64 {
        self.next
    }

    /// Allows (default) or forbids block descriptors in [`PageTable::map`].
    pub fn set_blocks(&mut self, on: bool) {
        self.blocks = on;
    }

    /// The CD Linux builds for this table (`arm_smmu_make_s1_cd`):
    /// TTB0 = root, this T0SZ and granule, EPD1, `ips` (CD.IPS encoding),
    /// `asid`, MAIR with the cacheable attribute at index 1.
    pub fn cd(&self, ips: u8, asid: u16) -> Cd {
        Cd::s1(self.root, self.geo.tsz(), self.geo.granule(), ips, asid)
            .with_mair(0x0000_0000_0000_ff04)
    }

    fn gran(&self) -> u64 {
        1 << self.geo.granule().shift()
    }

    fn alloc(&mut self) -> Result<u64, PtError> {
        let gran = self.gran();
        let oom = PtError::OutOfMemory {
            next: self.next,
            end: self.end,
        };
        let end = self.next.checked_add(gran).ok_or(oom.clone())?;
        if end > self.end {
            return Err(oom);
        }
        let t = self.next;
        self.next = end;
        self.mem.zero(t, gran as usize);
        Ok(t)
    }

    fn check_range(&self, iova: u64, size: u64) -> Result<(), PtError> {
        let g = self.geo.granule();
        let mask = self.gran() - 1;
        if iova & mask != 0 {
            return Err(PtError::Unaligned {
                what: "IOVA",
                value: iova,
                granule: g,
            });
        }
        if size & mask != 0 {
            return Err(PtError::Unaligned {
                what: "size",
                value: size,
                granule: g,
            });
        }
        let bits = self.geo.va_bits();
        let fits = size != 0
            && iova
                .checked_add(size)
                .is_some_and(|end| end <= 1u64 << bits);
        if !fits {
            return Err(PtError::OutOfRange { iova, size, bits });
        }
        Ok(())
    }

    fn leaf_desc(&self, oa: u64, level: u8, attrs: &PteAttrs) -> u64 {
        if level >= LAST_LEVEL {
            page_desc(oa, self.geo.granule(), attrs)
        } else {
            block_desc(oa, &self.geo, level, attrs)
        }
    }

    fn decode(&self, desc: u64, level: u8) -> Desc {
        Desc::decode(desc, &self.geo, level, true)
    }

    /// The slot for `iova` at `level`, creating tables on the way; `None`
    /// when a leaf at a higher level is in the way.
    fn slot_alloc(&mut self, iova: u64, level: u8) -> Result<Option<u64>, PtError> {
        let mut table = self.root;
        let mut l = self.geo.start_level();
        loop {
            let slot = table + self.geo.index(l, iova) * 8;
            if l >= level {
                return Ok(Some(slot));
            }
            let d = self.mem.read_u64(slot);
            table = match self.decode(d, l) {
                Desc::Table { addr } => addr,
                Desc::Invalid => {
                    let t = self.alloc()?;
                    self.mem.write_u64(slot, table_desc(t, self.geo.granule()));
                    t
                }
                _ => return Ok(None),
            };
            l += 1;
        }
    }

    /// Maps `[iova, iova + size)` to `[pa, pa + size)` with `prot`, using
    /// blocks where iova, pa and the remaining size allow. All three must
    /// be granule aligned; nothing in the range may be mapped already (on
    /// an error the part mapped by this call is unmapped again).
    pub fn map(&mut self, iova: u64, pa: u64, size: u64, prot: Prot) -> Result<(), PtError> {
        self.check_range(iova, size)?;
        if pa & (self.gran() - 1) != 0 {
            return Err(PtError::Unaligned {
                what: "PA",
                value: pa,
                granule: self.geo.granule(),
            });
        }
        if pa.checked_add(size).is_none_or(|end| end > 1 << 48) {
            return Err(PtError::OutputRange { pa, size });
        }
        if prot.is_none() {
            return Ok(());
        }
        let attrs = prot.attrs();
        let mut done = 0u64;
        while done < size {
            let (va, oa, left) = (iova + done, pa + done, size - done);
            match self.map_one(va, oa, left, &attrs) {
                Ok(n) => done += n,
                Err(e) => {
                    if done > 0 {
                        let _ = self.unmap(iova, done);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Maps one leaf at `va` (the largest that fits); returns its size.
    fn map_one(&mut self, va: u64, oa: u64, left: u64, attrs: &PteAttrs) -> Result<u64, PtError> {
        let start = self.geo.start_level();
        for level in start..=LAST_LEVEL {
            let bytes = 1u64 << self.geo.level_shift(level);
            let block_ok = level == LAST_LEVEL
                || (self.blocks
                    && self.geo.block_allowed(level, false)
                    && va & (bytes - 1) == 0
                    && oa & (bytes - 1) == 0
                    && left >= bytes);
            if !block_ok {
                continue;
            }
            let Some(slot) = self.slot_alloc(va, level)? else {
                return Err(PtError::Exists(va));
            };
            let d = self.mem.read_u64(slot);
            match self.decode(d, level) {
                Desc::Invalid => {
                    self.mem.write_u64(slot, self.leaf_desc(oa, level, attrs));
                    return Ok(bytes);
                }
                // A table where a block would go: map smaller leaves in it.
                Desc::Table { .. } => continue,
                _ => return Err(PtError::Exists(va)),
            }
        }
        Err(PtError::Exists(va))
    }

    /// Unmaps `[iova, iova + size)` (granule aligned), splitting blocks
    /// that are only partly inside. Returns the bytes that were mapped.
    pub fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, PtError> {
        self.check_range(iova, size)?;
        self.for_leaves(iova, size, Op::Unmap)
    }

    /// Changes the rights of every page in `[iova, iova + size)` (granule
    /// aligned), splitting blocks that are only partly inside. Stops with
    /// [`PtError::NotMapped`] at the first hole.
    pub fn protect(&mut self, iova: u64, size: u64, prot: Prot) -> Result<(), PtError> {
        self.check_range(iova, size)?;
        let mapped = self.for_leaves(iova, size, Op::Protect(prot.attrs()))?;
        debug_assert!(mapped <= size);
        Ok(())
    }

    fn for_leaves(&mut self, iova: u64, size: u64, op: Op) -> Result<u64, PtError> {
        let end = iova + size;
        let mut va = iova;
        let mut mapped = 0u64;
        while va < end {
            let mut table = self.root;
            let mut level = self.geo.start_level();
            loop {
                let slot = table + self.geo.index(level, va) * 8;
                let bytes = 1u64 << self.geo.level_shift(level);
                let base = va & !(bytes - 1);
                let leaf_end = base.saturating_add(bytes).min(end);
                let d = self.mem.read_u64(slot);
                match self.decode(d, level) {
                    Desc::Table { addr } => {
                        table = addr;
                        level += 1;
                        continue;
                    }
                    Desc::Invalid | Desc::Reserved => {
                        if let Op::Protect(_) = op {
                            return Err(PtError::NotMapped(va));
                        }
                        va = leaf_end;
                    }
                    Desc::Block { oa } | Desc::Page { oa } => {
                        if base < va || base + bytes > end {
                            // Partly inside: split, then walk into the new table.
                            self.split(slot, d, oa, level)?;
                            continue;
                        }
                        match op {
                            Op::Unmap => self.mem.write_u64(slot, 0),
                            Op::Protect(attrs) => {
                                self.mem.write_u64(slot, self.leaf_desc(oa, level, &attrs))
                            }
                        }
                        mapped += bytes;
                        va = leaf_end;
                    }
                }
                break;
            }
        }
        Ok(mapped)
    }

    /// Replaces the block `desc` at `slot` (level `level`) by a table of
    /// next-level leaves with the same output and attributes.
    fn split(&mut self, slot: u64, desc: u64, oa: u64, level: u8) -> Result<(), PtError> {
        let t = self.alloc()?;
        let next = level + 1;
        let attrs = PteAttrs::decode(desc);
        let step = 1u64 << self.geo.level_shift(next);
        for i in 0..self.geo.entries(next) {
            self.mem
                .write_u64(t + i * 8, self.leaf_desc(oa + i * step, next, &attrs));
        }
        self.mem.write_u64(slot, table_desc(t, self.geo.granule()));
        Ok(())
    }

    /// The mapping of `iova`, by a software walk.
    pub fn translate(&self, iova: u64) -> Option<Mapping> {
        if !self.geo.covers(iova) {
            return None;
        }
        let mut table = self.root;
        let mut level = self.geo.start_level();
        loop {
            let desc_addr = table + self.geo.index(level, iova) * 8;
            let desc = self.mem.read_u64(desc_addr);
            let oa = match self.decode(desc, level) {
                Desc::Table { addr } => {
                    table = addr;
                    level += 1;
                    continue;
                }
                Desc::Block { oa } | Desc::Page { oa } => oa,
                Desc::Invalid | Desc::Reserved => return None,
            };
            let size_log2 = self.geo.level_shift(level);
            return Some(Mapping {
                pa: oa | (iova & ((1u64 << size_log2) - 1)),
                attrs: PteAttrs::decode(desc),
                level,
                size_log2,
                desc_addr,
                desc,
            });
        }
    }
}

/// CMD_TLBI_NH_ASID(`asid`).
pub fn tlbi_asid(asid: u16) -> [u64; 2] {
    Command::TlbiNhAsid { vmid: 0, asid }.encode()
}

/// CMD_TLBI_NH_VA(`asid`, `iova`, `leaf`) without range.
pub fn tlbi_va(asid: u16, iova: u64, leaf: bool) -> [u64; 2] {
    Command::TlbiNhVa {
        vmid: 0,
        asid,
        range: TlbiRange::va(iova, leaf),
    }
    .encode()
}

/// CMD_CFGI_CD(`sid`, `ssid`, `leaf`).
pub fn cfgi_cd(sid: u32, ssid: u32, leaf: bool) -> [u64; 2] {
    Command::CfgiCd { sid, ssid, leaf }.encode()
}

/// CMD_SYNC with SEV completion, as Linux issues it without MSIs.
pub fn cmd_sync() -> [u64; 2] {
    Command::sync_sev().encode()
}

/// Most commands [`tlbi_range`] emits without range invalidation before
/// falling back to one TLBI_NH_ASID (Linux `arm_smmu_inv_range_too_big`
/// spirit).
pub const TLBI_MAX_PAGES: u64 = 256;

/// The TLBI_NH_VA commands Linux (`__arm_smmu_tlb_inv_range`) issues for
/// `[iova, iova + size)` of `asid` in a `granule` table: with range
/// invalidation (`ril`, IDR3.RIL), as few NUM/SCALE commands as the size
/// needs, TTL 0 (no level hint: valid whatever leaf sizes are there), and
/// one extra page where a single-page NUM 0 / SCALE 0 / TTL 0 command
/// would be Reserved; without, one command per granule page, or a single
/// TLBI_NH_ASID beyond [`TLBI_MAX_PAGES`] pages. `leaf` = only leaf
/// entries changed (unmap, protect); use `false` after a block split.
pub fn tlbi_range(
    asid: u16,
    iova: u64,
    size: u64,
    granule: Granule,
    leaf: bool,
    ril: bool,
) -> Vec<[u64; 2]> {
    let tg = granule.shift();
    let mut pages = size.div_ceil(1 << tg);
    if pages == 0 {
        return Vec::new();
    }
    if !ril {
        if pages > TLBI_MAX_PAGES {
            return vec![tlbi_asid(asid)];
        }
        return (0..pages)
            .map(|i| tlbi_va(asid, iova.wrapping_add(i << tg), leaf))
            .collect();
    }
    if pages & 0x1f == 1 {
        pages += 1;
    }
    let mut out = Vec::new();
    let mut addr = iova;
    while pages > 0 {
        let scale = pages.trailing_zeros();
        let num = (pages >> scale) & 0x1f;
        let range = TlbiRange {
            num: (num - 1) as u8,
            scale: scale as u8,
            leaf,
            ttl128: false,
            ttl: 0,
            tg: granule.tlbi_tg(),
            addr,
        };
        out.push(
            Command::TlbiNhVa {
                vmid: 0,
                asid,
                range,
            }
            .encode(),
        );
        pages -= num << scale;
        addr = addr.wrapping_add(num << (scale + tg));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use vsmmu_protocol::smmu::pgtable::{PTE_AF, PTE_AP_RDONLY};

    /// Sparse memory.
    #[derive(Debug, Default)]
    struct Mem(RefCell<HashMap<u64, u64>>);

    impl PtMemory for Mem {
        fn read_u64(&self, gpa: u64) -> u64 {
            self.0.borrow().get(&gpa).copied().unwrap_or(0)
        }
        fn write_u64(&self, gpa: u64, value: u64) {
            self.0.borrow_mut().insert(gpa, value);
        }
        fn zero(&self, gpa: u64, len: usize) {
            let mut m = self.0.borrow_mut();
            for a in (gpa..gpa + len as u64).step_by(8) {
                m.remove(&a);
            }
        }
    }

    const POOL: u64 = 0x100_0000;
    const POOL_END: u64 = 0x200_0000;

    #[test]
    fn pages_and_exact_descriptors() {
        let m = Mem::default();
        let mut pt = PageTable::new(&m, Granule::K4, 16, POOL, POOL_END).unwrap();
        assert_eq!(pt.root(), POOL);
        pt.map(0x1234_5000, 0x8000_0000, 0x2000, Prot::RW).unwrap();
        // L0 → POOL+0x1000 → L1 → POOL+0x2000 → L2 → POOL+0x3000.
        assert_eq!(m.read_u64(POOL), (POOL + 0x1000) | 3);
        assert_eq!(m.read_u64(POOL + 0x1000), (POOL + 0x2000) | 3);
        assert_eq!(m.read_u64(POOL + 0x2000 + 0x91 * 8), (POOL + 0x3000) | 3);
        assert_eq!(m.read_u64(POOL + 0x3000 + 0x145 * 8), 0x8000_0f47);
        assert_eq!(m.read_u64(POOL + 0x3000 + 0x146 * 8), 0x8000_1f47);
        let t = pt.translate(0x1234_6abc).unwrap();
        assert_eq!((t.pa, t.level, t.size_log2), (0x8000_1abc, 3, 12));
        assert!(t.attrs.writable && t.attrs.unpriv && t.attrs.af && !t.attrs.global);
        assert_eq!(pt.translate(0x1234_7000), None);
        assert_eq!(
            pt.map(0x1234_6000, 0, 0x1000, Prot::RO),
            Err(PtError::Exists(0x1234_6000))
        );
        // Read-only and privileged.
        pt.map(
            0x1000,
            0x9000_0000,
            0x1000,
            Prot {
                privileged: true,
                ..Prot::RO
            },
        )
        .unwrap();
        let t = pt.translate(0x1000).unwrap();
        assert_eq!(t.desc & PTE_AP_RDONLY, PTE_AP_RDONLY);
        assert!(!t.attrs.unpriv);
        // No rights: nothing mapped (Linux).
        pt.map(
            0x5000,
            0,
            0x1000,
            Prot {
                read: false,
                write: false,
                ..Prot::RO
            },
        )
        .unwrap();
        assert_eq!(pt.translate(0x5000), None);
        let cd = pt.cd(5, 3);
        assert_eq!((cd.ttb0(), cd.t0sz(), cd.asid()), (POOL, 16, 3));
        // Reopened later: same mappings, new tables from a new range.
        let next = pt.alloc_next();
        let mut again = PageTable::from_root(&m, Granule::K4, 16, POOL, next, POOL_END).unwrap();
        assert_eq!(again.translate(0x1234_6abc).unwrap().pa, 0x8000_1abc);
        again.map(0x40_0000_0000, 0x1000, 0x1000, Prot::RW).unwrap();
        assert_eq!(again.alloc_next(), next + 0x2000);
        assert!(matches!(
            PageTable::from_root(&m, Granule::K4, 16, POOL + 8, next, POOL_END),
            Err(PtError::Unaligned { what: "root", .. })
        ));
    }

    #[test]
    fn blocks_when_aligned() {
        let m = Mem::default();
        let mut pt = PageTable::new(&m, Granule::K4, 16, POOL, POOL_END).unwrap();
        // 1 GiB + 2 MiB + 4 KiB, aligned: one L1 block, one L2 block, one page.
        pt.map(
            0x4000_0000,
            0x8000_0000,
            (1 << 30) + (2 << 20) + 0x1000,
            Prot::RW,
        )
        .unwrap();
        let levels: Vec<_> = [0x4000_0000u64, 0x8000_0000, 0x8020_0000]
            .iter()
            .map(|&va| pt.translate(va).unwrap().level)
            .collect();
        assert_eq!(levels, vec![1, 2, 3]);
        assert_eq!(pt.translate(0x8020_0fff).unwrap().pa, 0xc020_0fff);
        // Misaligned PA: pages only.
        pt.map(0x1_0000_0000, 0x8000_1000, 2 << 20, Prot::RW)
            .unwrap();
        assert_eq!(pt.translate(0x1_0000_0000).unwrap().level, 3);
        // Blocks off.
        let m = Mem::default();
        let mut pt = PageTable::new(&m, Granule::K64, 16, POOL, POOL_END).unwrap();
        pt.set_blocks(false);
        pt.map(0x2000_0000, 0x2000_0000, 512 << 20, Prot::RO)
            .unwrap();
        assert_eq!(pt.translate(0x2000_0000).unwrap().level, 3);
        // 64K blocks are 512 MiB at level 2.
        let mut pt = PageTable::new(&m, Granule::K64, 16, POOL_END, POOL_END + 0x100_0000).unwrap();
        pt.map(0x2000_0000, 0x4000_0000, 512 << 20, Prot::RO)
            .unwrap();
        let t = pt.translate(0x2abc_0000).unwrap();
        assert_eq!((t.level, t.size_log2, t.pa), (2, 29, 0x4abc_0000));
    }

    #[test]
    fn unmap_splits_blocks() {
        let m = Mem::default();
        let mut pt = PageTable::new(&m, Granule::K4, 16, POOL, POOL_END).unwrap();
        pt.map(0x20_0000, 0x4020_0000, 2 << 20, Prot::RW).unwrap();
        assert_eq!(pt.translate(0x20_0000).unwrap().level, 2);
        assert_eq!(pt.unmap(0x20_1000, 0x1000), Ok(0x1000));
        assert_eq!(pt.translate(0x20_1000), None);
        let t = pt.translate(0x20_2000).unwrap();
        assert_eq!((t.level, t.pa), (3, 0x4020_2000));
        assert_eq!(pt.translate(0x20_0000).unwrap().pa, 0x4020_0000);
        // Holes count for nothing.
        assert_eq!(pt.unmap(0, 0x40_0000), Ok((2 << 20) - 0x1000));
        assert_eq!(pt.translate(0x20_2000), None);
        assert_eq!(
            pt.unmap(0x1001, 0x1000),
            Err(PtError::Unaligned {
                what: "IOVA",
                value: 0x1001,
                granule: Granule::K4
            })
        );
        assert!(matches!(
            pt.unmap(0xffff_ffff_f000, 0x2000),
            Err(PtError::OutOfRange { .. })
        ));
    }

    #[test]
    fn protect_changes_rights_and_keeps_outputs() {
        let m = Mem::default();
        let mut pt = PageTable::new(&m, Granule::K16, 17, POOL, POOL_END).unwrap();
        pt.map(0x200_0000, 0x600_0000, 32 << 20, Prot::RW).unwrap();
        assert_eq!(pt.translate(0x200_0000).unwrap().level, 2);
        pt.protect(0x200_4000, 0x4000, Prot::RO).unwrap();
        let t = pt.translate(0x200_4000).unwrap();
        assert_eq!((t.level, t.pa, t.attrs.writable), (3, 0x600_4000, false));
        assert!(pt.translate(0x200_8000).unwrap().attrs.writable);
        pt.protect(
            0x200_8000,
            0x4000,
            Prot {
                af: false,
                ..Prot::RW
            },
        )
        .unwrap();
        assert_eq!(pt.translate(0x200_8000).unwrap().desc & PTE_AF, 0);
        assert_eq!(
            pt.protect(0x100_0000, 0x4000, Prot::RO),
            Err(PtError::NotMapped(0x100_0000))
        );
    }

    #[test]
    fn errors() {
        let m = Mem::default();
        assert_eq!(
            PageTable::new(&m, Granule::K4, 12, POOL, POOL_END).unwrap_err(),
            PtError::Geometry {
                granule: Granule::K4,
                t0sz: 12
            }
        );
        assert!(matches!(
            PageTable::new(&m, Granule::K4, 16, POOL, POOL + 0x800),
            Err(PtError::OutOfMemory { .. })
        ));
        let mut pt = PageTable::new(&m, Granule::K4, 16, POOL, POOL + 0x3000).unwrap();
        // Needs three more tables; two fit: the partial mapping is undone.
        assert!(matches!(
            pt.map(0x1000, 0x1000, 0x1000, Prot::RW),
            Err(PtError::OutOfMemory { .. })
        ));
        assert_eq!(pt.translate(0x1000), None);
        assert!(matches!(
            pt.map(0, 0xffff_ffff_f000, 0x2000, Prot::RW),
            Err(PtError::OutputRange { .. })
        ));
        assert!(matches!(
            pt.map(0, 0x1000, 0, Prot::RW),
            Err(PtError::OutOfRange { .. })
        ));
        // Mapping over a block fails, and rolls back what this call mapped.
        let m = Mem::default();
        let mut pt = PageTable::new(&m, Granule::K4, 16, POOL, POOL_END).unwrap();
        pt.map(0x20_0000, 0, 2 << 20, Prot::RW).unwrap();
        assert_eq!(
            pt.map(0x1f_f000, 0, 0x2000, Prot::RW),
            Err(PtError::Exists(0x20_0000))
        );
        assert_eq!(pt.translate(0x1f_f000), None);
    }

    #[test]
    fn tlbi_commands() {
        assert_eq!(tlbi_asid(5), [0x0005_0000_0000_0011, 0]);
        assert_eq!(
            tlbi_va(5, 0x1234_5000, true),
            [0x0005_0000_0000_0012, 0x1234_5001]
        );
        assert_eq!(cfgi_cd(0x10, 3, true), [0x0000_0010_0000_3005, 1]);
        assert_eq!(cmd_sync(), Command::sync_sev().encode());
        // Without RIL: one per page; many pages: one ASID invalidation.
        assert_eq!(
            tlbi_range(5, 0x1000, 0x3000, Granule::K4, true, false),
            vec![
                tlbi_va(5, 0x1000, true),
                tlbi_va(5, 0x2000, true),
                tlbi_va(5, 0x3000, true)
            ]
        );
        assert_eq!(
            tlbi_range(5, 0, 257 << 12, Granule::K4, true, false),
            vec![tlbi_asid(5)]
        );
        // With RIL: 35 pages = 3 pages (NUM 2, SCALE 0) + 32 pages (NUM 0,
        // SCALE 5), TG 4K.
        let cmds = tlbi_range(5, 0x10_0000, 35 << 12, Granule::K4, true, true);
        let decoded: Vec<_> = cmds.iter().map(|c| Command::decode(*c).unwrap()).collect();
        let want = |num, scale, addr| Command::TlbiNhVa {
            vmid: 0,
            asid: 5,
            range: TlbiRange {
                num,
                scale,
                leaf: true,
                ttl128: false,
                ttl: 0,
                tg: 1,
                addr,
            },
        };
        assert_eq!(decoded, vec![want(2, 0, 0x10_0000), want(0, 5, 0x10_3000)]);
        // One page: widened to two so NUM = SCALE = TTL = 0 is avoided.
        let cmds = tlbi_range(5, 0x4000, 0x4000, Granule::K16, false, true);
        assert_eq!(
            cmds.iter()
                .map(|c| Command::decode(*c).unwrap())
                .collect::<Vec<_>>(),
            vec![Command::TlbiNhVa {
                vmid: 0,
                asid: 5,
                range: TlbiRange {
                    num: 0,
                    scale: 1,
                    leaf: false,
                    ttl128: false,
                    ttl: 0,
                    tg: 2,
                    addr: 0x4000
                }
            }]
        );
        assert!(tlbi_range(5, 0, 0, Granule::K4, true, true).is_empty());
    }
}
