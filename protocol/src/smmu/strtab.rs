//! The stream table: `SMMU_STRTAB_BASE` / `SMMU_STRTAB_BASE_CFG`, level-1
//! stream table descriptors (IHI 0070 §5.1), and the StreamID → STE address
//! walk (QEMU `smmu_find_ste`, corrected to the architecture where QEMU
//! differs, see [`StrtabConfig::l2_ste_addr`]).
//!
//! Decoding the registers never fails: reserved values behave as the
//! architecture says (FMT 0b1x as linear, SPLIT other than 6/8/10 as 6,
//! LOG2SIZE capped at IDR1.SIDSIZE).

use super::bits::{align_down, genmask, low_mask, Field};
use super::event::C_BAD_STREAMID;
use super::regs::{
    IDR0_ST_LVL, IDR0_ST_LVL_2LVL, IDR1_SIDSIZE, STRTAB_BASE_ADDR_MASK, STRTAB_BASE_CFG_FMT,
    STRTAB_BASE_CFG_FMT_2LVL, STRTAB_BASE_CFG_LOG2SIZE, STRTAB_BASE_CFG_SPLIT, STRTAB_BASE_RA,
};
use super::ste::STE_SIZE;

/// Bytes of an L1STD.
pub const L1STD_SIZE: u64 = 8;
/// L1STD.Span\[4:0\].
pub const L1STD_SPAN: Field = Field::new(0, 5);
/// L1STD.L2Ptr\[55:6\] (Linux masks \[51:6\]).
pub const L1STD_L2PTR_MASK: u64 = genmask(55, 6);
/// Largest valid Span (12..=31 are reserved and behave as 0).
pub const L1STD_SPAN_MAX: u8 = 11;
/// The SPLIT Linux uses (256 STEs per leaf table, L1STD.Span 9).
pub const LINUX_SPLIT: u8 = 8;

/// Stream table format, effective value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StrtabFmt {
    /// An array of STEs.
    #[default]
    Linear,
    /// An array of L1STDs pointing at leaf STE arrays.
    TwoLevel,
}

/// The SMMU features the stream table depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StrtabCaps {
    /// IDR1.SIDSIZE: StreamID bits (caps LOG2SIZE; at most 32 is used).
    pub sid_bits: u8,
    /// IDR0.ST_LEVEL = 2-level.
    pub two_level: bool,
}

impl StrtabCaps {
    /// The features of an SMMU with these ID registers.
    pub const fn from_idr(idr0: u32, idr1: u32) -> StrtabCaps {
        StrtabCaps {
            sid_bits: IDR1_SIDSIZE.get32(idr1) as u8,
            two_level: IDR0_ST_LVL.get32(idr0) == IDR0_ST_LVL_2LVL,
        }
    }
}

/// Why a StreamID has no STE. Every variant is C_BAD_STREAMID
/// ([`StrtabError::event_type`]), recorded when CR2.RECINVSID = 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StrtabError {
    /// StreamID at or above `2^LOG2SIZE`.
    #[error("StreamID {sid:#x} out of range of a {log2size}-bit stream table")]
    SidOutOfRange {
        /// The StreamID.
        sid: u32,
        /// Effective LOG2SIZE.
        log2size: u8,
    },
    /// The L1STD has Span 0 or a reserved Span (12..=31).
    #[error("L1STD Span {span} marks its StreamIDs invalid")]
    L1Invalid {
        /// L1STD.Span.
        span: u8,
    },
    /// The L1STD Span exceeds SPLIT + 1.
    #[error("L1STD Span {span} above SPLIT {split} + 1")]
    SpanTooLarge {
        /// L1STD.Span.
        span: u8,
        /// Effective SPLIT.
        split: u8,
    },
    /// StreamID\[SPLIT-1:0\] beyond the `2^(Span-1)` STEs of the leaf table.
    #[error("leaf index {index:#x} outside the 2^({span}-1) STEs of the L2 table")]
    OutsideSpan {
        /// StreamID\[SPLIT-1:0\].
        index: u32,
        /// L1STD.Span.
        span: u8,
    },
    /// The STE address overflows 64 bits.
    #[error("STE address overflows")]
    AddressOverflow,
}

impl StrtabError {
    /// The event to record: C_BAD_STREAMID.
    pub const fn event_type(&self) -> u8 {
        C_BAD_STREAMID
    }
}

/// A level-1 stream table descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L1Std {
    /// Span\[4:0\]: the leaf table holds `2^(Span-1)` STEs; 0 is invalid.
    pub span: u8,
    /// L2Ptr\[55:6\]: the leaf STE array.
    pub l2ptr: u64,
}

impl L1Std {
    /// Decodes an L1STD.
    pub const fn decode(desc: u64) -> L1Std {
        L1Std {
            span: L1STD_SPAN.get(desc) as u8,
            l2ptr: desc & L1STD_L2PTR_MASK,
        }
    }

    /// The descriptor value (what the guest driver writes).
    pub const fn encode(&self) -> u64 {
        L1STD_SPAN.prep(self.span as u64) | (self.l2ptr & L1STD_L2PTR_MASK)
    }

    /// A descriptor for a leaf table of `2^split` STEs at `l2ptr` (Span =
    /// split + 1, as Linux writes it).
    pub const fn new(l2ptr: u64, split: u8) -> L1Std {
        L1Std {
            span: split.saturating_add(1),
            l2ptr,
        }
    }
}

/// Where the STE of a StreamID is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SteLocation {
    /// Linear table: the STE is at this address.
    Linear {
        /// Address of the 64-byte STE.
        ste_addr: u64,
    },
    /// 2-level table: read the L1STD at `l1_desc_addr`, then call
    /// [`StrtabConfig::l2_ste_addr`] with it and `l2_index`.
    TwoLevel {
        /// Address of the 8-byte L1STD.
        l1_desc_addr: u64,
        /// StreamID\[SPLIT-1:0\].
        l2_index: u32,
    },
}

/// The effective stream table configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StrtabConfig {
    /// Table base, aligned as the SMMU treats it (linear: to the table
    /// size; 2-level: to the larger of 64 bytes and the L1 table size; the
    /// raw LOG2SIZE decides, not the capped one).
    pub base: u64,
    /// STRTAB_BASE.RA.
    pub ra: bool,
    /// Effective format.
    pub fmt: StrtabFmt,
    /// Effective LOG2SIZE: `min(LOG2SIZE, SIDSIZE, 32)`.
    pub log2size: u8,
    /// Effective SPLIT (6, 8 or 10; meaningful for 2-level only).
    pub split: u8,
}

impl StrtabConfig {
    /// The configuration the registers describe (never fails; reserved
    /// values take their architected behaviour).
    pub const fn decode(strtab_base: u64, strtab_base_cfg: u32, caps: &StrtabCaps) -> StrtabConfig {
        let raw_log2size = STRTAB_BASE_CFG_LOG2SIZE.get32(strtab_base_cfg) as u8;
        let fmt = if caps.two_level
            && STRTAB_BASE_CFG_FMT.get32(strtab_base_cfg) == STRTAB_BASE_CFG_FMT_2LVL
        {
            StrtabFmt::TwoLevel
        } else {
            StrtabFmt::Linear
        };
        let split = match STRTAB_BASE_CFG_SPLIT.get32(strtab_base_cfg) {
            8 => 8,
            10 => 10,
            _ => 6,
        };
        let mut log2size = raw_log2size;
        if log2size > caps.sid_bits {
            log2size = caps.sid_bits;
        }
        if log2size > 32 {
            log2size = 32;
        }
        let addr = strtab_base & STRTAB_BASE_ADDR_MASK;
        let align_bits = match fmt {
            // ADDR[LOG2SIZE + 5:0] = 0.
            StrtabFmt::Linear => raw_log2size as u32 + 6,
            // ADDR[MAX(5, LOG2SIZE - SPLIT - 1 + 3):0] = 0.
            StrtabFmt::TwoLevel => {
                let l1 = raw_log2size as i32 - split as i32 + 3;
                if l1 > 6 {
                    l1 as u32
                } else {
                    6
                }
            }
        };
        StrtabConfig {
            base: align_down(addr, align_bits),
            ra: strtab_base & STRTAB_BASE_RA != 0,
            fmt,
            log2size,
            split,
        }
    }

    /// Number of StreamIDs the table covers (`2^log2size`).
    pub const fn num_sids(&self) -> u64 {
        1u64 << if self.log2size > 32 {
            32
        } else {
            self.log2size
        }
    }

    /// Where the STE of `sid` is (step 1 of the walk). A StreamID at or
    /// above `2^LOG2SIZE` is C_BAD_STREAMID.
    pub const fn ste_location(&self, sid: u32) -> Result<SteLocation, StrtabError> {
        if sid as u64 >= self.num_sids() {
            return Err(StrtabError::SidOutOfRange {
                sid,
                log2size: self.log2size,
            });
        }
        match self.fmt {
            StrtabFmt::Linear => match self.base.checked_add(sid as u64 * STE_SIZE) {
                Some(ste_addr) => Ok(SteLocation::Linear { ste_addr }),
                None => Err(StrtabError::AddressOverflow),
            },
            StrtabFmt::TwoLevel => {
                let split = self.split as u32;
                let l1_index = (sid as u64) >> split;
                match self.base.checked_add(l1_index * L1STD_SIZE) {
                    Some(l1_desc_addr) => Ok(SteLocation::TwoLevel {
                        l1_desc_addr,
                        l2_index: sid & (low_mask(split) as u32),
                    }),
                    None => Err(StrtabError::AddressOverflow),
                }
            }
        }
    }

    /// Step 2 of a 2-level walk: the STE address given the L1STD read from
    /// `l1_desc_addr`. Span 0 or reserved (12..=31), Span > SPLIT + 1, and a
    /// leaf index at or above `2^(Span-1)` are all C_BAD_STREAMID (QEMU
    /// reports the last as C_BAD_STE and allows indexes up to `2^Span - 1`;
    /// the architecture does not). L2Ptr is aligned to the leaf table size.
    pub const fn l2_ste_addr(&self, desc: L1Std, l2_index: u32) -> Result<u64, StrtabError> {
        let span = desc.span;
        if span == 0 || span > L1STD_SPAN_MAX {
            return Err(StrtabError::L1Invalid { span });
        }
        if span > self.split + 1 {
            return Err(StrtabError::SpanTooLarge {
                span,
                split: self.split,
            });
        }
        if (l2_index as u64) >> (span as u32 - 1) != 0 {
            return Err(StrtabError::OutsideSpan {
                index: l2_index,
                span,
            });
        }
        // L2Ptr[5 + (Span - 1):0] are treated as zero.
        let base = align_down(desc.l2ptr, span as u32 + 5);
        match base.checked_add(l2_index as u64 * STE_SIZE) {
            Some(addr) => Ok(addr),
            None => Err(StrtabError::AddressOverflow),
        }
    }
}

/// Where the STE of `sid` is under `cfg` ([`StrtabConfig::ste_location`]).
pub const fn ste_location(cfg: &StrtabConfig, sid: u32) -> Result<SteLocation, StrtabError> {
    cfg.ste_location(sid)
}

/// The `SMMU_STRTAB_BASE` value for a table at `addr` (the guest driver's
/// `STRTAB_BASE_RA | addr`).
pub const fn strtab_base_reg(addr: u64, ra: bool) -> u64 {
    (addr & STRTAB_BASE_ADDR_MASK) | if ra { STRTAB_BASE_RA } else { 0 }
}

/// The `SMMU_STRTAB_BASE_CFG` value for a table of `2^log2size` StreamIDs.
pub const fn strtab_base_cfg_reg(fmt: StrtabFmt, log2size: u8, split: u8) -> u32 {
    let fmt = match fmt {
        StrtabFmt::Linear => 0,
        StrtabFmt::TwoLevel => STRTAB_BASE_CFG_FMT_2LVL,
    };
    STRTAB_BASE_CFG_FMT.prep(fmt as u64) as u32
        | STRTAB_BASE_CFG_SPLIT.prep(split as u64) as u32
        | STRTAB_BASE_CFG_LOG2SIZE.prep(log2size as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::super::regs::{IDR0_RESET, IDR1_RESET};
    use super::*;

    fn qemu() -> StrtabCaps {
        StrtabCaps::from_idr(IDR0_RESET, IDR1_RESET)
    }

    #[test]
    fn caps_and_registers() {
        assert_eq!(
            qemu(),
            StrtabCaps {
                sid_bits: 16,
                two_level: true
            }
        );
        assert_eq!(strtab_base_cfg_reg(StrtabFmt::TwoLevel, 16, 8), 0x1_0210);
        assert_eq!(strtab_base_cfg_reg(StrtabFmt::Linear, 8, 0), 0x8);
        assert_eq!(strtab_base_reg(0x8000_0000, true), 0x4000_0000_8000_0000);
        assert_eq!(
            strtab_base_reg(0xffff_ffff_ffff_ffff, false),
            STRTAB_BASE_ADDR_MASK
        );
    }

    #[test]
    fn linear() {
        let cfg = StrtabConfig::decode(0x4000_0000_8000_0000, 0x8, &qemu());
        assert_eq!(
            cfg,
            StrtabConfig {
                base: 0x8000_0000,
                ra: true,
                fmt: StrtabFmt::Linear,
                log2size: 8,
                split: 6,
            }
        );
        assert_eq!(
            cfg.ste_location(0),
            Ok(SteLocation::Linear {
                ste_addr: 0x8000_0000
            })
        );
        assert_eq!(
            ste_location(&cfg, 255),
            Ok(SteLocation::Linear {
                ste_addr: 0x8000_3fc0
            })
        );
        let e = cfg.ste_location(256).unwrap_err();
        assert_eq!(
            e,
            StrtabError::SidOutOfRange {
                sid: 256,
                log2size: 8
            }
        );
        assert_eq!(e.event_type(), C_BAD_STREAMID);
        // The base is aligned to the table size (256 × 64 = 16 KiB).
        let cfg = StrtabConfig::decode(0x8000_2040, 0x8, &qemu());
        assert_eq!(cfg.base, 0x8000_0000);
    }

    #[test]
    fn log2size_capped_by_sidsize() {
        let cfg = StrtabConfig::decode(0, 40, &qemu());
        assert_eq!(cfg.log2size, 16);
        assert!(cfg.ste_location(0xffff).is_ok());
        assert!(cfg.ste_location(0x1_0000).is_err());
        let big = StrtabCaps {
            sid_bits: 63,
            two_level: true,
        };
        let cfg = StrtabConfig::decode(0, 63, &big);
        assert_eq!(cfg.log2size, 32);
        assert_eq!(
            cfg.ste_location(u32::MAX),
            Ok(SteLocation::Linear {
                ste_addr: u64::from(u32::MAX) * 64
            })
        );
        // Aligning to a 2^69-byte table clears the whole base.
        assert_eq!(
            StrtabConfig::decode(STRTAB_BASE_ADDR_MASK, 63, &big).base,
            0
        );
    }

    #[test]
    fn reserved_fmt_and_split() {
        // FMT 0b10/0b11 behave as linear.
        let cfg = StrtabConfig::decode(0, 0x2_0008, &qemu());
        assert_eq!(cfg.fmt, StrtabFmt::Linear);
        // Without ST_LEVEL, FMT is RES0.
        let lin = StrtabCaps {
            sid_bits: 16,
            two_level: false,
        };
        assert_eq!(
            StrtabConfig::decode(0, 0x1_0210, &lin).fmt,
            StrtabFmt::Linear
        );
        // SPLIT other than 6, 8, 10 behaves as 6.
        for (split, eff) in [(6, 6), (7, 6), (8, 8), (10, 10), (11, 6), (31, 6), (0, 6)] {
            let cfg = StrtabConfig::decode(
                0,
                strtab_base_cfg_reg(StrtabFmt::TwoLevel, 16, split),
                &qemu(),
            );
            assert_eq!(cfg.split, eff, "{split}");
        }
    }

    #[test]
    fn two_level_linux_layout() {
        // Linux: SIDSIZE 16, SPLIT 8, L1 table of 256 descriptors, Span 9.
        let cfg = StrtabConfig::decode(
            0x4000_0000_9000_0000,
            strtab_base_cfg_reg(StrtabFmt::TwoLevel, 16, 8),
            &qemu(),
        );
        assert_eq!(cfg.fmt, StrtabFmt::TwoLevel);
        assert_eq!((cfg.log2size, cfg.split, cfg.base), (16, 8, 0x9000_0000));
        let loc = cfg.ste_location(0x1234).unwrap();
        assert_eq!(
            loc,
            SteLocation::TwoLevel {
                l1_desc_addr: 0x9000_0000 + 0x12 * 8,
                l2_index: 0x34
            }
        );
        let desc = L1Std::decode(L1Std::new(0xa000_0000, 8).encode());
        assert_eq!(
            desc,
            L1Std {
                span: 9,
                l2ptr: 0xa000_0000
            }
        );
        assert_eq!(L1Std::new(0xa000_0000, 8).encode(), 0xa000_0009);
        assert_eq!(cfg.l2_ste_addr(desc, 0x34), Ok(0xa000_0000 + 0x34 * 64));
        assert_eq!(cfg.l2_ste_addr(desc, 0xff), Ok(0xa000_3fc0));
        // L2Ptr aligned to the leaf table (256 × 64 = 16 KiB).
        let mis = L1Std {
            span: 9,
            l2ptr: 0xa000_2000,
        };
        assert_eq!(cfg.l2_ste_addr(mis, 1), Ok(0xa000_0040));
        // The L1 table base aligns to its size (256 × 8 = 2 KiB).
        let cfg2 = StrtabConfig::decode(0x9000_07c0, 0x1_0210, &qemu());
        assert_eq!(cfg2.base, 0x9000_0000);
    }

    #[test]
    fn two_level_span_rules() {
        let cfg = StrtabConfig::decode(
            0x9000_0000,
            strtab_base_cfg_reg(StrtabFmt::TwoLevel, 16, 8),
            &qemu(),
        );
        let at = |span: u8, idx: u32| {
            cfg.l2_ste_addr(
                L1Std {
                    span,
                    l2ptr: 0xa000_0000,
                },
                idx,
            )
        };
        assert_eq!(at(0, 0), Err(StrtabError::L1Invalid { span: 0 }));
        assert_eq!(at(12, 0), Err(StrtabError::L1Invalid { span: 12 }));
        assert_eq!(at(31, 0), Err(StrtabError::L1Invalid { span: 31 }));
        assert_eq!(
            at(10, 0),
            Err(StrtabError::SpanTooLarge { span: 10, split: 8 })
        );
        assert_eq!(at(1, 0), Ok(0xa000_0000));
        assert_eq!(
            at(1, 1),
            Err(StrtabError::OutsideSpan { index: 1, span: 1 })
        );
        assert_eq!(at(5, 15), Ok(0xa000_0000 + 15 * 64));
        assert_eq!(
            at(5, 16),
            Err(StrtabError::OutsideSpan { index: 16, span: 5 })
        );
        for e in [
            StrtabError::L1Invalid { span: 0 },
            StrtabError::SpanTooLarge { span: 10, split: 8 },
            StrtabError::OutsideSpan { index: 1, span: 1 },
        ] {
            assert_eq!(e.event_type(), C_BAD_STREAMID);
        }
    }

    #[test]
    fn split_at_or_above_log2size() {
        // SPLIT 10 >= LOG2SIZE 8: one L1STD covers everything.
        let cfg = StrtabConfig::decode(
            0x9000_0000,
            strtab_base_cfg_reg(StrtabFmt::TwoLevel, 8, 10),
            &qemu(),
        );
        assert_eq!(
            cfg.ste_location(0xff),
            Ok(SteLocation::TwoLevel {
                l1_desc_addr: 0x9000_0000,
                l2_index: 0xff
            })
        );
        assert_eq!(cfg.base, 0x9000_0000);
    }

    #[test]
    fn never_panics() {
        let mut x = 0xdead_beef_cafe_f00du64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let caps = StrtabCaps {
                sid_bits: (x >> 3) as u8,
                two_level: x & 1 != 0,
            };
            let cfg = StrtabConfig::decode(x.rotate_left(11), (x >> 32) as u32, &caps);
            if let Ok(SteLocation::TwoLevel { l2_index, .. }) = cfg.ste_location(x as u32) {
                let _ = cfg.l2_ste_addr(L1Std::decode(x.rotate_left(29)), l2_index);
            }
        }
    }
}
