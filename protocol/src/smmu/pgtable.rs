//! VMSAv8-64 stage-1 translation table descriptors (Arm ARM D8.3; Linux
//! `io-pgtable-arm.c` `ARM_LPAE_*`; QEMU `smmu-internal.h`).
//!
//! Pure data: the walk geometry of each granule ([`Geometry`]), descriptor
//! decoding ([`Desc::decode`], [`PteAttrs::decode`]) and encoding
//! ([`table_desc`], [`page_desc`], [`block_desc`], [`PteAttrs::bits`]).
//! The SMMU's walker (server) and the guest-side table builder (client-shim)
//! both use these, so the two agree on every bit.
//!
//! Only the 64-bit descriptor format without FEAT_LPA2 (CD.DS = 0) is
//! modelled: output addresses are 48 bits, or 52 bits with the 64 KiB
//! granule when the SMMU has a 52-bit OAS (FEAT_LPA: OA\[51:48\] in
//! descriptor bits \[15:12\]). Every function is total.

use super::bits::{genmask, low_mask, Field};
use super::cd::Granule;

/// Bytes of a descriptor.
pub const DESC_SIZE: u64 = 8;
/// The last level of a walk.
pub const LAST_LEVEL: u8 = 3;

/// Descriptor bit 0: valid.
pub const DESC_VALID: u64 = 1 << 0;
/// Descriptor bit 1: table (levels 0..=2) or page (level 3); clear for a
/// block.
pub const DESC_TABLE_OR_PAGE: u64 = 1 << 1;
/// Leaf AttrIndx\[2:0\] (bits \[4:2\]): the MAIR byte.
pub const PTE_ATTRINDX: Field = Field::new(2, 3);
/// Leaf NS (bit 5), ignored by a Non-secure stream.
pub const PTE_NS: u64 = 1 << 5;
/// Leaf AP\[1\] (bit 6): EL0 (unprivileged) access allowed.
pub const PTE_AP_UNPRIV: u64 = 1 << 6;
/// Leaf AP\[2\] (bit 7): read-only.
pub const PTE_AP_RDONLY: u64 = 1 << 7;
/// Leaf SH\[1:0\] (bits \[9:8\]).
pub const PTE_SH: Field = Field::new(8, 2);
/// SH value: inner shareable (Linux `ARM_LPAE_PTE_SH_IS`).
pub const PTE_SH_IS: u8 = 3;
/// Leaf AF (bit 10): access flag.
pub const PTE_AF: u64 = 1 << 10;
/// Leaf nG (bit 11): not global (the TLB entry is tagged by ASID).
pub const PTE_NG: u64 = 1 << 11;
/// Leaf DBM (bit 51): dirty bit modifier (writable-clean when AP\[2\] = 1).
pub const PTE_DBM: u64 = 1 << 51;
/// Leaf Contiguous hint (bit 52).
pub const PTE_CONT: u64 = 1 << 52;
/// Leaf PXN (bit 53).
pub const PTE_PXN: u64 = 1 << 53;
/// Leaf UXN / XN (bit 54).
pub const PTE_UXN: u64 = 1 << 54;
/// Table PXNTable (bit 59).
pub const TABLE_PXN: u64 = 1 << 59;
/// Table UXNTable (bit 60).
pub const TABLE_UXN: u64 = 1 << 60;
/// Table APTable\[0\] (bit 61): no EL0 access at the next levels.
pub const TABLE_AP_NO_EL0: u64 = 1 << 61;
/// Table APTable\[1\] (bit 62): no write access at the next levels.
pub const TABLE_AP_RDONLY: u64 = 1 << 62;
/// Table NSTable (bit 63).
pub const TABLE_NS: u64 = 1 << 63;

/// Output address bits \[47:12\] of a descriptor (before the granule or
/// block size masks the low bits).
pub const DESC_OA_MASK: u64 = genmask(47, 12);
/// 64 KiB granule with a 52-bit output size: OA\[51:48\] in descriptor bits
/// \[15:12\].
pub const DESC_OA_HI_64K: Field = Field::new(12, 4);

/// MAIR index Linux uses for normal cacheable memory
/// (`ARM_LPAE_MAIR_ATTR_IDX_CACHE`).
pub const ATTR_IDX_CACHE: u8 = 1;

/// The walk geometry of one translation table (granule and input size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    granule: Granule,
    va_bits: u32,
}

impl Geometry {
    /// The geometry of a `granule` table translating `va_bits` bits of
    /// input (`64 - TxSZ`). `None` unless `va_bits` is in
    /// `granule shift + 1 ..= 48` (`..= 52` for 64 KiB, FEAT_LPA VAs).
    pub const fn new(granule: Granule, va_bits: u32) -> Option<Geometry> {
        let max = match granule {
            Granule::K64 => 52,
            _ => 48,
        };
        if va_bits <= granule.shift() || va_bits > max {
            return None;
        }
        Some(Geometry { granule, va_bits })
    }

    /// The geometry of a CD's TxSZ.
    pub const fn from_tsz(granule: Granule, tsz: u8) -> Option<Geometry> {
        if tsz > 64 {
            return None;
        }
        Geometry::new(granule, 64 - tsz as u32)
    }

    /// The granule.
    pub const fn granule(&self) -> Granule {
        self.granule
    }

    /// Input address bits.
    pub const fn va_bits(&self) -> u32 {
        self.va_bits
    }

    /// TxSZ (`64 - va_bits`).
    pub const fn tsz(&self) -> u8 {
        (64 - self.va_bits) as u8
    }

    /// Index bits resolved per full level (`granule shift - 3`: 9, 11, 13).
    pub const fn stride(&self) -> u32 {
        self.granule.shift() - 3
    }

    /// The level the walk starts at (Arm ARM: `4 - ceil((va_bits -
    /// granule shift) / stride)`).
    pub const fn start_level(&self) -> u8 {
        (4 - (self.va_bits - 4) / self.stride()) as u8
    }

    /// log2 of the bytes one descriptor at `level` maps (the block size at
    /// that level, the page size at level 3). Levels above 3 are treated as
    /// 3.
    pub const fn level_shift(&self, level: u8) -> u32 {
        let l = if level > LAST_LEVEL {
            LAST_LEVEL
        } else {
            level
        };
        self.granule.shift() + self.stride() * (LAST_LEVEL - l) as u32
    }

    /// Index bits resolved at `level` (fewer at the start level).
    pub const fn index_bits(&self, level: u8) -> u32 {
        let shift = self.level_shift(level);
        if shift >= self.va_bits {
            return 0;
        }
        let bits = self.va_bits - shift;
        if bits > self.stride() {
            self.stride()
        } else {
            bits
        }
    }

    /// Descriptors in a table at `level`.
    pub const fn entries(&self, level: u8) -> u64 {
        1 << self.index_bits(level)
    }

    /// Bytes of a table at `level` (8 × entries).
    pub const fn table_bytes(&self, level: u8) -> u64 {
        self.entries(level) * DESC_SIZE
    }

    /// The descriptor index of `va` in the table at `level`.
    pub const fn index(&self, level: u8, va: u64) -> u64 {
        (va >> self.level_shift(level)) & low_mask(self.index_bits(level))
    }

    /// True when `va` fits in the input range (bits \[63:va_bits\] zero):
    /// the TTB0 range without TBI.
    pub const fn covers(&self, va: u64) -> bool {
        va >> self.va_bits == 0
    }

    /// True when a block descriptor is allowed at `level` (4 KiB: levels 1
    /// and 2; 16 KiB: level 2; 64 KiB: level 2, and level 1 with a 52-bit
    /// OA (`lpa52`)). Level 0 blocks need FEAT_LPA2, not modelled.
    pub const fn block_allowed(&self, level: u8, lpa52: bool) -> bool {
        match self.granule {
            Granule::K4 => level == 1 || level == 2,
            Granule::K16 => level == 2,
            Granule::K64 => level == 2 || (level == 1 && lpa52),
        }
    }
}

/// A decoded descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Desc {
    /// Bit 0 clear: a Translation fault.
    Invalid,
    /// A table descriptor (levels 0..=2): the next-level table's address.
    Table {
        /// Address of the next-level table (granule aligned).
        addr: u64,
    },
    /// A block descriptor: the output address of the block (block aligned).
    Block {
        /// Output address of the block's first byte.
        oa: u64,
    },
    /// A page descriptor (level 3): the output address of the page.
    Page {
        /// Output address of the page's first byte.
        oa: u64,
    },
    /// A block where blocks are not allowed, or `0b01` at level 3: a
    /// Translation fault.
    Reserved,
}

/// The output address bits of `desc` aligned to `2^align_bits`, with
/// OA\[51:48\] from bits \[15:12\] for 64 KiB granules when `lpa52`.
const fn desc_addr(desc: u64, granule: Granule, align_bits: u32, lpa52: bool) -> u64 {
    let mut addr = desc & DESC_OA_MASK & !low_mask(align_bits);
    if lpa52 && matches!(granule, Granule::K64) {
        addr |= DESC_OA_HI_64K.get(desc) << 48;
    }
    addr
}

impl Desc {
    /// Decodes the descriptor `desc` found at `level` of a walk with `geo`.
    /// `lpa52`: the SMMU's OAS is 52 bits (64 KiB level-1 blocks and
    /// OA\[51:48\] in bits \[15:12\]).
    pub const fn decode(desc: u64, geo: &Geometry, level: u8, lpa52: bool) -> Desc {
        if desc & DESC_VALID == 0 {
            return Desc::Invalid;
        }
        let g = geo.granule();
        let table = desc & DESC_TABLE_OR_PAGE != 0;
        if level >= LAST_LEVEL {
            return if table {
                Desc::Page {
                    oa: desc_addr(desc, g, g.shift(), lpa52),
                }
            } else {
                Desc::Reserved
            };
        }
        if table {
            return Desc::Table {
                addr: desc_addr(desc, g, g.shift(), lpa52),
            };
        }
        if !geo.block_allowed(level, lpa52) {
            return Desc::Reserved;
        }
        Desc::Block {
            oa: desc_addr(desc, g, geo.level_shift(level), lpa52),
        }
    }
}

/// The attributes of a block or page descriptor that a DMA walk uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PteAttrs {
    /// AP\[2\] = 0: writable.
    pub writable: bool,
    /// AP\[1\] = 1: unprivileged (EL0) access allowed.
    pub unpriv: bool,
    /// AF: the access flag.
    pub af: bool,
    /// nG = 0: a global entry.
    pub global: bool,
    /// DBM: writable-clean when not `writable`.
    pub dbm: bool,
    /// UXN/XN.
    pub xn: bool,
    /// AttrIndx.
    pub attr_index: u8,
    /// SH.
    pub sh: u8,
}

impl PteAttrs {
    /// What Linux `arm_lpae_prot_to_pte` builds for a stage-1 mapping with
    /// `IOMMU_READ | IOMMU_CACHE` (plus `IOMMU_WRITE` when `writable`):
    /// nG, AP\[1\] (unprivileged), AF, inner shareable, the cacheable MAIR
    /// index; read-only pages have AP\[2\].
    pub const fn linux(writable: bool) -> PteAttrs {
        PteAttrs {
            writable,
            unpriv: true,
            af: true,
            global: false,
            dbm: false,
            xn: false,
            attr_index: ATTR_IDX_CACHE,
            sh: PTE_SH_IS,
        }
    }

    /// The attribute bits (no type, no address).
    pub const fn bits(&self) -> u64 {
        let mut d = PTE_ATTRINDX.prep(self.attr_index as u64) | PTE_SH.prep(self.sh as u64);
        if !self.writable {
            d |= PTE_AP_RDONLY;
        }
        if self.unpriv {
            d |= PTE_AP_UNPRIV;
        }
        if self.af {
            d |= PTE_AF;
        }
        if !self.global {
            d |= PTE_NG;
        }
        if self.dbm {
            d |= PTE_DBM;
        }
        if self.xn {
            d |= PTE_UXN;
        }
        d
    }

    /// The attributes of a block or page descriptor.
    pub const fn decode(desc: u64) -> PteAttrs {
        PteAttrs {
            writable: desc & PTE_AP_RDONLY == 0,
            unpriv: desc & PTE_AP_UNPRIV != 0,
            af: desc & PTE_AF != 0,
            global: desc & PTE_NG == 0,
            dbm: desc & PTE_DBM != 0,
            xn: desc & PTE_UXN != 0,
            attr_index: PTE_ATTRINDX.get(desc) as u8,
            sh: PTE_SH.get(desc) as u8,
        }
    }
}

/// The OA field of a descriptor: `addr` bits \[47:align\], plus OA\[51:48\]
/// in bits \[15:12\] for a 64 KiB granule.
const fn oa_field(addr: u64, granule: Granule, align_bits: u32) -> u64 {
    let mut d = addr & DESC_OA_MASK & !low_mask(align_bits);
    if matches!(granule, Granule::K64) {
        d |= DESC_OA_HI_64K.prep(addr >> 48);
    }
    d
}

/// A table descriptor pointing at the next-level table `addr` (granule
/// aligned); no APTable/XNTable restrictions.
pub const fn table_desc(addr: u64, granule: Granule) -> u64 {
    oa_field(addr, granule, granule.shift()) | DESC_TABLE_OR_PAGE | DESC_VALID
}

/// A level-3 page descriptor mapping the page at `oa`.
pub const fn page_desc(oa: u64, granule: Granule, attrs: &PteAttrs) -> u64 {
    oa_field(oa, granule, granule.shift()) | attrs.bits() | DESC_TABLE_OR_PAGE | DESC_VALID
}

/// A block descriptor at `level` of `geo` mapping the block at `oa`.
pub const fn block_desc(oa: u64, geo: &Geometry, level: u8, attrs: &PteAttrs) -> u64 {
    oa_field(oa, geo.granule(), geo.level_shift(level)) | attrs.bits() | DESC_VALID
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(g: Granule, bits: u32) -> Geometry {
        Geometry::new(g, bits).unwrap()
    }

    #[test]
    fn geometry_per_granule() {
        // (granule, va bits) → start level, index bits at the start level.
        let cases = [
            (Granule::K4, 48, 0, 9),
            (Granule::K4, 39, 1, 9),
            (Granule::K4, 40, 0, 1),
            (Granule::K4, 32, 1, 2),
            (Granule::K4, 25, 2, 4),
            (Granule::K16, 48, 0, 1),
            (Granule::K16, 47, 1, 11),
            (Granule::K16, 36, 2, 11),
            (Granule::K64, 48, 1, 6),
            (Granule::K64, 42, 2, 13),
            (Granule::K64, 52, 1, 10),
            (Granule::K64, 25, 3, 9),
        ];
        for (g, bits, start, idx) in cases {
            let geo = geo(g, bits);
            assert_eq!(
                (geo.start_level(), geo.index_bits(start)),
                (start, idx),
                "{g:?} {bits}"
            );
            // Every level below the start resolves a full stride.
            for l in start + 1..=3 {
                assert_eq!(geo.index_bits(l), geo.stride());
            }
        }
        let g = geo(Granule::K4, 48);
        assert_eq!(
            (0..=3).map(|l| g.level_shift(l)).collect::<Vec<_>>(),
            vec![39, 30, 21, 12]
        );
        assert_eq!(g.index(0, 0x0000_ff80_0000_0000), 0x1ff);
        assert_eq!(g.index(3, 0x1234_5000), 0x145);
        assert_eq!(g.table_bytes(0), 4096);
        let g = geo(Granule::K16, 48);
        assert_eq!(g.table_bytes(0), 16);
        assert_eq!(
            (0..=3).map(|l| g.level_shift(l)).collect::<Vec<_>>(),
            vec![47, 36, 25, 14]
        );
        let g = geo(Granule::K64, 48);
        assert_eq!(
            (1..=3).map(|l| g.level_shift(l)).collect::<Vec<_>>(),
            vec![42, 29, 16]
        );
        assert_eq!(g.table_bytes(1), 512);
        assert!(g.covers(0xffff_ffff_ffff) && !g.covers(1 << 48));
        assert_eq!(
            Geometry::from_tsz(Granule::K4, 16),
            Some(geo(Granule::K4, 48))
        );
        assert_eq!(Geometry::new(Granule::K4, 49), None);
        assert_eq!(Geometry::new(Granule::K4, 12), None);
        assert_eq!(Geometry::new(Granule::K64, 53), None);
        assert_eq!(Geometry::from_tsz(Granule::K4, 200), None);
        assert_eq!(geo(Granule::K4, 48).tsz(), 16);
    }

    #[test]
    fn block_levels() {
        let g4 = geo(Granule::K4, 48);
        let g16 = geo(Granule::K16, 48);
        let g64 = geo(Granule::K64, 48);
        assert_eq!(
            (0..=3)
                .map(|l| g4.block_allowed(l, false))
                .collect::<Vec<_>>(),
            vec![false, true, true, false]
        );
        assert_eq!(
            (0..=3)
                .map(|l| g16.block_allowed(l, true))
                .collect::<Vec<_>>(),
            vec![false, false, true, false]
        );
        assert!(!g64.block_allowed(1, false) && g64.block_allowed(1, true));
        assert!(g64.block_allowed(2, false));
    }

    #[test]
    fn decode_descriptors() {
        let g = geo(Granule::K4, 48);
        assert_eq!(Desc::decode(0, &g, 0, false), Desc::Invalid);
        assert_eq!(Desc::decode(0xffff_fffe, &g, 1, false), Desc::Invalid);
        assert_eq!(
            Desc::decode(0xffff_0000_1234_5fff, &g, 0, false),
            Desc::Table { addr: 0x1234_5000 }
        );
        // Bits above 47 of a 4K descriptor are not address bits.
        assert_eq!(
            Desc::decode(0x000f_8000_4000_0003, &g, 1, true),
            Desc::Table {
                addr: 0x8000_4000_0000
            }
        );
        assert_eq!(Desc::decode(0x4000_0001, &g, 0, false), Desc::Reserved);
        assert_eq!(
            Desc::decode(0x4012_3401, &g, 1, false),
            Desc::Block { oa: 0x4000_0000 }
        );
        assert_eq!(
            Desc::decode(0x4032_3401, &g, 2, false),
            Desc::Block { oa: 0x4020_0000 }
        );
        assert_eq!(Desc::decode(0x4000_0001, &g, 3, false), Desc::Reserved);
        assert_eq!(
            Desc::decode(0x4000_1fff, &g, 3, false),
            Desc::Page { oa: 0x4000_1000 }
        );
        // 64K: OA[51:48] in bits [15:12] only with a 52-bit OAS.
        let g = geo(Granule::K64, 52);
        let d = 0x0000_1234_5678_f003;
        assert_eq!(
            Desc::decode(d, &g, 3, true),
            Desc::Page {
                oa: 0x000f_1234_5678_0000
            }
        );
        assert_eq!(
            Desc::decode(d, &g, 3, false),
            Desc::Page {
                oa: 0x0000_1234_5678_0000
            }
        );
        assert_eq!(
            Desc::decode(0x0000_2000_0000_0001, &g, 1, true),
            Desc::Block {
                oa: 0x0000_2000_0000_0000
            }
        );
        assert_eq!(
            Desc::decode(0x0000_2000_0000_0001, &g, 1, false),
            Desc::Reserved
        );
    }

    #[test]
    fn encode_roundtrip() {
        let g = geo(Granule::K4, 48);
        let a = PteAttrs::linux(true);
        // Linux: nG | AF | SH_IS | AP_UNPRIV | AttrIndx 1 | page | valid.
        assert_eq!(a.bits(), 0xf44);
        assert_eq!(page_desc(0x8000_1000, Granule::K4, &a), 0x8000_1f47);
        assert_eq!(
            page_desc(0x8000_1000, Granule::K4, &PteAttrs::linux(false)),
            0x8000_1fc7
        );
        assert_eq!(PteAttrs::decode(0x8000_1fc7), PteAttrs::linux(false));
        assert_eq!(table_desc(0x8000_2000, Granule::K4), 0x8000_2003);
        assert_eq!(block_desc(0x4020_0000, &g, 2, &a), 0x4020_0f45);
        let all = PteAttrs {
            writable: false,
            unpriv: false,
            af: false,
            global: true,
            dbm: true,
            xn: true,
            attr_index: 7,
            sh: 2,
        };
        assert_eq!(PteAttrs::decode(all.bits()), all);
        for (d, level) in [
            (page_desc(0x1234_5000, Granule::K4, &a), 3),
            (block_desc(0x4000_0000, &g, 1, &a), 1),
            (table_desc(0xabc_d000, Granule::K4), 2),
        ] {
            let want = match level {
                3 => Desc::Page { oa: 0x1234_5000 },
                1 => Desc::Block { oa: 0x4000_0000 },
                _ => Desc::Table { addr: 0xabc_d000 },
            };
            assert_eq!(Desc::decode(d, &g, level, false), want);
        }
        let g = geo(Granule::K64, 52);
        let d = page_desc(0x000f_0000_0001_0000, Granule::K64, &a);
        assert_eq!(
            Desc::decode(d, &g, 3, true),
            Desc::Page {
                oa: 0x000f_0000_0001_0000
            }
        );
        assert_eq!(
            table_desc(0x0001_0000_0002_0000, Granule::K64),
            0x0000_0000_0002_1003
        );
    }

    #[test]
    fn never_panics() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let g = match x % 3 {
                0 => Granule::K4,
                1 => Granule::K16,
                _ => Granule::K64,
            };
            if let Some(geo) = Geometry::new(g, (x >> 8) as u32 % 70) {
                let level = (x >> 16) as u8 % 6;
                let _ = Desc::decode(x.rotate_left(5), &geo, level, x & 1 != 0);
                let _ = geo.index(level, x.rotate_left(9));
                let _ = geo.table_bytes(level);
            }
            let _ = PteAttrs::decode(x);
        }
    }
}
