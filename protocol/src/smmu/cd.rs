//! Context descriptors (IHI 0070 §5.4; Linux `CTXDESC_CD_*`; QEMU
//! `decode_cd`), level-1 CD table descriptors (§5.3), and the walk from an
//! STE's stage-1 configuration to the CD a transaction uses.
//!
//! [`Cd::validate`] applies the ILLEGAL rules for the features the SMMU
//! advertises ([`CdCaps`]); any error is reported as C_BAD_CD. Only the
//! VMSAv8-64 format (CD.AA64 = 1) is modelled, as in QEMU.

use super::bits::{align_down, genmask, Field};
use super::event::{C_BAD_CD, C_BAD_SUBSTREAMID, F_STREAM_DISABLED};
use super::regs::{
    oas_bits, IDR0_ASID16, IDR0_HTTU, IDR0_STALL_MODEL, IDR0_TERM_MODEL, IDR0_TTENDIAN,
    IDR0_TTENDIAN_BE, IDR0_TTF, IDR5_GRAN16K, IDR5_GRAN4K, IDR5_GRAN64K, IDR5_OAS, IDR5_VAX,
    IDR5_VAX_52,
};
use super::ste::{S1Config, S1Dss, S1Fmt};

/// Bytes of a CD.
pub const CD_SIZE: u64 = 64;
/// Dwords of a CD.
pub const CD_DWORDS: usize = 8;
/// Bytes of an L1CD.
pub const L1CD_SIZE: u64 = 8;

/// CD.T0SZ\[5:0\].
pub const CD_0_T0SZ: Field = Field::new(0, 6);
/// CD.TG0\[7:6\].
pub const CD_0_TG0: Field = Field::new(6, 2);
/// CD.IR0\[9:8\] (IRGN0).
pub const CD_0_IRGN0: Field = Field::new(8, 2);
/// CD.OR0\[11:10\] (ORGN0).
pub const CD_0_ORGN0: Field = Field::new(10, 2);
/// CD.SH0\[13:12\].
pub const CD_0_SH0: Field = Field::new(12, 2);
/// CD.EPD0.
pub const CD_0_EPD0: Field = Field::bit(14);
/// CD.ENDI: big-endian tables.
pub const CD_0_ENDI: Field = Field::bit(15);
/// CD.T1SZ\[21:16\].
pub const CD_0_T1SZ: Field = Field::new(16, 6);
/// CD.TG1\[23:22\].
pub const CD_0_TG1: Field = Field::new(22, 2);
/// CD.IR1\[25:24\].
pub const CD_0_IRGN1: Field = Field::new(24, 2);
/// CD.OR1\[27:26\].
pub const CD_0_ORGN1: Field = Field::new(26, 2);
/// CD.SH1\[29:28\].
pub const CD_0_SH1: Field = Field::new(28, 2);
/// CD.EPD1.
pub const CD_0_EPD1: Field = Field::bit(30);
/// CD.V.
pub const CD_0_V: Field = Field::bit(31);
/// CD.IPS\[34:32\].
pub const CD_0_IPS: Field = Field::new(32, 3);
/// CD.AFFD.
pub const CD_0_AFFD: Field = Field::bit(35);
/// CD.WXN.
pub const CD_0_WXN: Field = Field::bit(36);
/// CD.UWXN.
pub const CD_0_UWXN: Field = Field::bit(37);
/// CD.TBI0.
pub const CD_0_TBI0: Field = Field::bit(38);
/// CD.TBI1.
pub const CD_0_TBI1: Field = Field::bit(39);
/// CD.PAN.
pub const CD_0_PAN: Field = Field::bit(40);
/// CD.AA64: VMSAv8-64 tables.
pub const CD_0_AA64: Field = Field::bit(41);
/// CD.HD: hardware dirty-state updates.
pub const CD_0_HD: Field = Field::bit(42);
/// CD.HA: hardware access-flag updates.
pub const CD_0_HA: Field = Field::bit(43);
/// CD.S: stall on fault.
pub const CD_0_S: Field = Field::bit(44);
/// CD.R: record faults.
pub const CD_0_R: Field = Field::bit(45);
/// CD.A: abort terminated transactions.
pub const CD_0_A: Field = Field::bit(46);
/// CD.ASET: ASID not shared with the PE.
pub const CD_0_ASET: Field = Field::bit(47);
/// CD.ASID\[63:48\].
pub const CD_0_ASID: Field = Field::new(48, 16);
/// CD.HAD0 (dword1 bit 1).
pub const CD_1_HAD0: Field = Field::bit(1);
/// CD.TTB0 (dword1 \[55:4\]; Linux masks \[51:4\]).
pub const CD_1_TTB0_MASK: u64 = genmask(55, 4);
/// CD.HAD1 (dword2 bit 1).
pub const CD_2_HAD1: Field = Field::bit(1);
/// CD.TTB1 (dword2 \[55:4\]).
pub const CD_2_TTB1_MASK: u64 = genmask(55, 4);
/// CD.MAIR0/MAIR1 (dword3).
pub const CD_3_MAIR: Field = Field::new(0, 64);

/// L1CD.V.
pub const L1CD_V: Field = Field::bit(0);
/// L1CD.L2Ptr\[55:12\] (Linux masks \[51:12\]).
pub const L1CD_L2PTR_MASK: u64 = genmask(55, 12);

/// IRGN/ORGN value: write-back read/write-allocate (Linux `ARM_LPAE_TCR_RGN_WBWA`).
pub const CD_RGN_WBWA: u8 = 1;
/// SH value: inner shareable.
pub const CD_SH_ISH: u8 = 3;

/// A translation granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB.
    K4,
    /// 16 KiB.
    K16,
    /// 64 KiB.
    K64,
}

impl Granule {
    /// log2 of the granule size (12, 14 or 16).
    pub const fn shift(self) -> u32 {
        match self {
            Granule::K4 => 12,
            Granule::K16 => 14,
            Granule::K64 => 16,
        }
    }

    /// The granule a CD.TG0 value selects (0 = 4K, 1 = 64K, 2 = 16K).
    pub const fn from_tg0(tg: u8) -> Option<Granule> {
        match tg {
            0 => Some(Granule::K4),
            1 => Some(Granule::K64),
            2 => Some(Granule::K16),
            _ => None,
        }
    }

    /// The granule a CD.TG1 value selects (1 = 16K, 2 = 4K, 3 = 64K).
    pub const fn from_tg1(tg: u8) -> Option<Granule> {
        match tg {
            1 => Some(Granule::K16),
            2 => Some(Granule::K4),
            3 => Some(Granule::K64),
            _ => None,
        }
    }

    /// The CD.TG0 encoding.
    pub const fn tg0(self) -> u8 {
        match self {
            Granule::K4 => 0,
            Granule::K64 => 1,
            Granule::K16 => 2,
        }
    }

    /// The CD.TG1 encoding.
    pub const fn tg1(self) -> u8 {
        match self {
            Granule::K16 => 1,
            Granule::K4 => 2,
            Granule::K64 => 3,
        }
    }

    /// The TLBI TG encoding (1 = 4K, 2 = 16K, 3 = 64K).
    pub const fn tlbi_tg(self) -> u8 {
        match self {
            Granule::K4 => 1,
            Granule::K16 => 2,
            Granule::K64 => 3,
        }
    }
}

/// The SMMU features CD validation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CdCaps {
    /// Output address size in bits (IDR5.OAS): caps CD.IPS.
    pub oas_bits: u8,
    /// IDR5.GRAN4K.
    pub gran4k: bool,
    /// IDR5.GRAN16K.
    pub gran16k: bool,
    /// IDR5.GRAN64K.
    pub gran64k: bool,
    /// IDR5.VAX = 52-bit VAs (T0SZ down to 12 with 64 KiB).
    pub vax52: bool,
    /// IDR0.TTF\[1\]: VMSAv8-64 tables.
    pub aa64: bool,
    /// IDR0.TTENDIAN.
    pub ttendian: u8,
    /// IDR0.HTTU.
    pub httu: u8,
    /// IDR0.STALL_MODEL.
    pub stall_model: u8,
    /// IDR0.TERM_MODEL (CD.A must be 1).
    pub term_model: bool,
    /// IDR0.ASID16.
    pub asid16: bool,
    /// STE.S1STALLD of the STE the CD is reached through (with
    /// STALL_MODEL 0b00 it forbids CD.S = 1).
    pub s1stalld: bool,
}

impl CdCaps {
    /// The features of an SMMU with these ID registers (with
    /// `s1stalld = false`).
    pub const fn from_idr(idr0: u32, idr5: u32) -> CdCaps {
        CdCaps {
            oas_bits: oas_bits(IDR5_OAS.get32(idr5)),
            gran4k: IDR5_GRAN4K.is_set32(idr5),
            gran16k: IDR5_GRAN16K.is_set32(idr5),
            gran64k: IDR5_GRAN64K.is_set32(idr5),
            vax52: IDR5_VAX.get32(idr5) == IDR5_VAX_52,
            aa64: IDR0_TTF.get32(idr0) & 2 != 0,
            ttendian: IDR0_TTENDIAN.get32(idr0) as u8,
            httu: IDR0_HTTU.get32(idr0) as u8,
            stall_model: IDR0_STALL_MODEL.get32(idr0) as u8,
            term_model: IDR0_TERM_MODEL.is_set32(idr0),
            asid16: IDR0_ASID16.is_set32(idr0),
            s1stalld: false,
        }
    }

    /// The same capabilities for a CD reached through an STE with this
    /// S1STALLD.
    pub const fn with_s1stalld(self, s1stalld: bool) -> CdCaps {
        CdCaps { s1stalld, ..self }
    }

    const fn granule_supported(&self, g: Granule) -> bool {
        match g {
            Granule::K4 => self.gran4k,
            Granule::K16 => self.gran16k,
            Granule::K64 => self.gran64k,
        }
    }
}

/// Why a CD is ILLEGAL (or V = 0). Every variant is reported as C_BAD_CD
/// ([`CdError::event_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CdError {
    /// CD.V = 0.
    #[error("CD not valid (V = 0)")]
    NotValid,
    /// CD.AA64 = 0 (VMSAv8-32 LPAE is not modelled) or AArch64 tables not
    /// supported.
    #[error("CD selects translation tables other than VMSAv8-64")]
    NotAArch64,
    /// CD.ENDI does not match IDR0.TTENDIAN, or big-endian tables
    /// (not modelled).
    #[error("CD ENDI {0} not supported")]
    Endianness(bool),
    /// CD.HA/HD set beyond IDR0.HTTU.
    #[error("CD HA/HD set without hardware table update support")]
    Httu,
    /// CD.A = 0 with IDR0.TERM_MODEL = 1.
    #[error("CD.A = 0 but terminated transactions always abort")]
    AbortRequired,
    /// CD.S = 1 without a stall model, or with STE.S1STALLD.
    #[error("CD.S = 1 but stalls are not possible")]
    StallNotAllowed,
    /// CD.S = 0 with STALL_MODEL = 0b10 (stall forced).
    #[error("CD.S = 0 but stalls are forced")]
    StallRequired,
    /// ASID\[15:8\] non-zero without IDR0.ASID16.
    #[error("CD ASID {0:#x} needs 16-bit ASIDs")]
    AsidTooLarge(u16),
    /// TGx reserved or granule not supported.
    #[error("CD TG{ttb} = {tg} selects a reserved or unsupported granule")]
    Granule {
        /// 0 for TTB0, 1 for TTB1.
        ttb: u8,
        /// The TGx field.
        tg: u8,
    },
    /// TxSZ outside the valid range for the granule.
    #[error("CD T{ttb}SZ = {tsz} out of range")]
    TszOutOfRange {
        /// 0 for TTB0, 1 for TTB1.
        ttb: u8,
        /// The TxSZ field.
        tsz: u8,
    },
    /// TTBx beyond the effective IPS (or 48 bits with granules below
    /// 64 KiB).
    #[error("CD TTB{ttb} {addr:#x} beyond {bits} bits")]
    TtbOutOfRange {
        /// 0 for TTB0, 1 for TTB1.
        ttb: u8,
        /// The table address.
        addr: u64,
        /// The limit in bits.
        bits: u8,
    },
}

impl CdError {
    /// The event the SMMU records when a transaction uses this CD.
    pub const fn event_type(&self) -> u8 {
        C_BAD_CD
    }
}

/// One translation table (TTB0 or TTB1) of a valid CD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TtConfig {
    /// Table base address (TTBx).
    pub ttb: u64,
    /// TxSZ: the input range is `64 - tsz` bits.
    pub tsz: u8,
    /// Granule.
    pub granule: Granule,
    /// Inner cacheability of walks (IRx).
    pub irgn: u8,
    /// Outer cacheability of walks (ORx).
    pub orgn: u8,
    /// Shareability of walks (SHx).
    pub sh: u8,
    /// HADx: hierarchical attributes disabled.
    pub had: bool,
}

impl TtConfig {
    /// Number of input address bits (`64 - TxSZ`).
    pub const fn va_bits(&self) -> u32 {
        64u32.saturating_sub(self.tsz as u32)
    }
}

/// The effective stage-1 configuration of a valid CD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CdConfig {
    /// ASID.
    pub asid: u16,
    /// TTB0 walks, `None` when EPD0 = 1.
    pub tt0: Option<TtConfig>,
    /// TTB1 walks, `None` when EPD1 = 1.
    pub tt1: Option<TtConfig>,
    /// Effective output size: `min(IPS, OAS)` bits.
    pub ips_bits: u8,
    /// TBI0.
    pub tbi0: bool,
    /// TBI1.
    pub tbi1: bool,
    /// HA (effective).
    pub ha: bool,
    /// HD (effective).
    pub hd: bool,
    /// R: record translation faults.
    pub record_faults: bool,
    /// S: stall on fault.
    pub stall: bool,
    /// A: abort (rather than RAZ/WI) terminated transactions.
    pub abort: bool,
    /// ASET.
    pub aset: bool,
    /// MAIR0/MAIR1.
    pub mair: u64,
}

/// A context descriptor: eight little-endian dwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cd(pub [u64; CD_DWORDS]);

impl Cd {
    /// A CD from its dwords.
    pub const fn from_words(words: [u64; CD_DWORDS]) -> Cd {
        Cd(words)
    }

    /// The dwords.
    pub const fn to_words(&self) -> [u64; CD_DWORDS] {
        self.0
    }

    /// A CD from its 64 bytes in memory.
    pub fn from_bytes(bytes: &[u8; 64]) -> Cd {
        let mut words = [0u64; CD_DWORDS];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        Cd(words)
    }

    /// The 64 bytes as stored in memory.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.0.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// A stage-1 CD as Linux `arm_smmu_make_s1_cd` builds it: TTB0 walks
    /// with `t0sz` and `granule`, write-back inner shareable walks, EPD1,
    /// V, `ips`, AA64, R, A, ASET, `asid`; MAIR 0 (see
    /// [`Cd::with_mair`]).
    pub const fn s1(ttb0: u64, t0sz: u8, granule: Granule, ips: u8, asid: u16) -> Cd {
        let mut w = [0u64; CD_DWORDS];
        w[0] = CD_0_T0SZ.prep(t0sz as u64)
            | CD_0_TG0.prep(granule.tg0() as u64)
            | CD_0_IRGN0.prep(CD_RGN_WBWA as u64)
            | CD_0_ORGN0.prep(CD_RGN_WBWA as u64)
            | CD_0_SH0.prep(CD_SH_ISH as u64)
            | CD_0_EPD1.mask()
            | CD_0_V.mask()
            | CD_0_IPS.prep(ips as u64)
            | CD_0_AA64.mask()
            | CD_0_R.mask()
            | CD_0_A.mask()
            | CD_0_ASET.mask()
            | CD_0_ASID.prep(asid as u64);
        w[1] = ttb0 & CD_1_TTB0_MASK;
        Cd(w)
    }

    /// The same CD with MAIR0/MAIR1 set.
    pub const fn with_mair(self, mair: u64) -> Cd {
        let mut w = self.0;
        w[3] = mair;
        Cd(w)
    }

    /// The same CD with HA/HD set.
    pub const fn with_httu(self, ha: bool, hd: bool) -> Cd {
        let mut w = self.0;
        w[0] = CD_0_HA.set(w[0], ha as u64);
        w[0] = CD_0_HD.set(w[0], hd as u64);
        Cd(w)
    }

    /// CD.V.
    pub const fn valid(&self) -> bool {
        CD_0_V.is_set(self.0[0])
    }

    /// CD.ASID.
    pub const fn asid(&self) -> u16 {
        CD_0_ASID.get(self.0[0]) as u16
    }

    /// CD.T0SZ.
    pub const fn t0sz(&self) -> u8 {
        CD_0_T0SZ.get(self.0[0]) as u8
    }

    /// CD.TG0.
    pub const fn tg0(&self) -> u8 {
        CD_0_TG0.get(self.0[0]) as u8
    }

    /// CD.EPD0.
    pub const fn epd0(&self) -> bool {
        CD_0_EPD0.is_set(self.0[0])
    }

    /// CD.EPD1.
    pub const fn epd1(&self) -> bool {
        CD_0_EPD1.is_set(self.0[0])
    }

    /// CD.IPS.
    pub const fn ips(&self) -> u8 {
        CD_0_IPS.get(self.0[0]) as u8
    }

    /// CD.AA64.
    pub const fn aa64(&self) -> bool {
        CD_0_AA64.is_set(self.0[0])
    }

    /// CD.TTB0.
    pub const fn ttb0(&self) -> u64 {
        self.0[1] & CD_1_TTB0_MASK
    }

    /// CD.TTB1.
    pub const fn ttb1(&self) -> u64 {
        self.0[2] & CD_2_TTB1_MASK
    }

    /// The effective configuration, or why the CD is ILLEGAL (reported as
    /// C_BAD_CD).
    ///
    /// Checks: V; AA64 (and IDR0.TTF); ENDI against TTENDIAN (big-endian
    /// is not modelled); HA/HD against HTTU; A with TERM_MODEL; S against
    /// the stall model and STE.S1STALLD; ASID width; for each of TTB0/TTB1
    /// not disabled by EPDx: granule reserved/unsupported, TxSZ in 16..=39
    /// (12..=39 for 64 KiB with 52-bit VAs), TTBx within the effective IPS
    /// and, below 64 KiB granules, within 48 bits. IPS itself is never
    /// ILLEGAL: the effective size is `min(IPS, OAS)` (0b111 behaves as
    /// 52 bits, SMMUv3.1).
    pub const fn validate(&self, caps: &CdCaps) -> Result<CdConfig, CdError> {
        let d0 = self.0[0];
        if !CD_0_V.is_set(d0) {
            return Err(CdError::NotValid);
        }
        if !CD_0_AA64.is_set(d0) || !caps.aa64 {
            return Err(CdError::NotAArch64);
        }
        let epd0 = CD_0_EPD0.is_set(d0);
        let epd1 = CD_0_EPD1.is_set(d0);
        let endi = CD_0_ENDI.is_set(d0);
        // ENDI = 1 is ILLEGAL with TTENDIAN = LE and not modelled otherwise;
        // ENDI = 0 is ILLEGAL with TTENDIAN = BE.
        if !(epd0 && epd1) && (endi || caps.ttendian as u32 == IDR0_TTENDIAN_BE) {
            return Err(CdError::Endianness(endi));
        }
        let mut ha = CD_0_HA.is_set(d0);
        let mut hd = CD_0_HD.is_set(d0);
        if (ha && caps.httu == 0) || (hd && caps.httu < 2) {
            return Err(CdError::Httu);
        }
        if hd && !ha {
            // {HD, HA} = 0b10 is reserved and behaves as 0b00.
            ha = false;
            hd = false;
        }
        let abort = CD_0_A.is_set(d0);
        if !abort && caps.term_model {
            return Err(CdError::AbortRequired);
        }
        let stall = CD_0_S.is_set(d0);
        match caps.stall_model {
            0 if stall && caps.s1stalld => return Err(CdError::StallNotAllowed),
            1 if stall => return Err(CdError::StallNotAllowed),
            2 if !stall => return Err(CdError::StallRequired),
            _ => {}
        }
        let asid = CD_0_ASID.get(d0) as u16;
        if !caps.asid16 && asid > 0xff {
            return Err(CdError::AsidTooLarge(asid));
        }
        let ips_field = CD_0_IPS.get(d0) as u32;
        let mut ips_bits = if ips_field == 7 {
            52
        } else {
            oas_bits(ips_field)
        };
        if ips_bits > caps.oas_bits {
            ips_bits = caps.oas_bits;
        }

        let tt0 = if epd0 {
            None
        } else {
            let tg = CD_0_TG0.get(d0) as u8;
            match tt_config(
                caps,
                0,
                tg,
                Granule::from_tg0(tg),
                CD_0_T0SZ.get(d0) as u8,
                self.0[1] & CD_1_TTB0_MASK,
                ips_bits,
                d0,
                CD_1_HAD0.is_set(self.0[1]),
            ) {
                Ok(tt) => Some(tt),
                Err(e) => return Err(e),
            }
        };
        let tt1 = if epd1 {
            None
        } else {
            let tg = CD_0_TG1.get(d0) as u8;
            match tt_config(
                caps,
                1,
                tg,
                Granule::from_tg1(tg),
                CD_0_T1SZ.get(d0) as u8,
                self.0[2] & CD_2_TTB1_MASK,
                ips_bits,
                d0 >> 16,
                CD_2_HAD1.is_set(self.0[2]),
            ) {
                Ok(tt) => Some(tt),
                Err(e) => return Err(e),
            }
        };

        Ok(CdConfig {
            asid,
            tt0,
            tt1,
            ips_bits,
            tbi0: CD_0_TBI0.is_set(d0),
            tbi1: CD_0_TBI1.is_set(d0),
            ha,
            hd,
            record_faults: CD_0_R.is_set(d0),
            stall,
            abort,
            aset: CD_0_ASET.is_set(d0),
            mair: self.0[3],
        })
    }
}

/// Validates one TTBx. `attrs` holds IRx/ORx/SHx at the TTB0 positions.
#[allow(clippy::too_many_arguments)]
const fn tt_config(
    caps: &CdCaps,
    ttb: u8,
    tg: u8,
    granule: Option<Granule>,
    tsz: u8,
    addr: u64,
    ips_bits: u8,
    attrs: u64,
    had: bool,
) -> Result<TtConfig, CdError> {
    let granule = match granule {
        Some(g) if caps.granule_supported(g) => g,
        _ => return Err(CdError::Granule { ttb, tg }),
    };
    let min_tsz = if caps.vax52 && matches!(granule, Granule::K64) {
        12
    } else {
        16
    };
    if tsz < min_tsz || tsz > 39 {
        return Err(CdError::TszOutOfRange { ttb, tsz });
    }
    let mut limit = ips_bits;
    if !matches!(granule, Granule::K64) && limit > 48 {
        limit = 48;
    }
    if limit < 64 && addr >> limit != 0 {
        return Err(CdError::TtbOutOfRange {
            ttb,
            addr,
            bits: limit,
        });
    }
    Ok(TtConfig {
        ttb: addr,
        tsz,
        granule,
        irgn: CD_0_IRGN0.get(attrs) as u8,
        orgn: CD_0_ORGN0.get(attrs) as u8,
        sh: CD_0_SH0.get(attrs) as u8,
        had,
    })
}

/// A level-1 CD table descriptor (S1Fmt 2-level).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L1Cd {
    /// V: L2Ptr is valid.
    pub valid: bool,
    /// L2Ptr\[55:12\]: the leaf CD table.
    pub l2ptr: u64,
}

impl L1Cd {
    /// Decodes an L1CD.
    pub const fn decode(desc: u64) -> L1Cd {
        L1Cd {
            valid: L1CD_V.is_set(desc),
            l2ptr: desc & L1CD_L2PTR_MASK,
        }
    }

    /// The descriptor value (what the guest driver writes).
    pub const fn encode(&self) -> u64 {
        L1CD_V.prep(self.valid as u64) | (self.l2ptr & L1CD_L2PTR_MASK)
    }

    /// A valid descriptor pointing at `l2ptr`.
    pub const fn new(l2ptr: u64) -> L1Cd {
        L1Cd { valid: true, l2ptr }
    }
}

/// Where the CD of a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CdLocation {
    /// The CD is at this address.
    Direct {
        /// Address of the 64-byte CD.
        cd_addr: u64,
    },
    /// Read the L1CD at `l1_desc_addr`, then call [`l2_cd_addr`] with it.
    TwoLevel {
        /// Address of the 8-byte L1CD.
        l1_desc_addr: u64,
        /// The CD's index in the leaf table.
        l2_index: u32,
    },
}

/// The outcome of the STE's substream rules for one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CdLookup {
    /// S1DSS = bypass for a transaction without a SubstreamID: no CD,
    /// stage 1 bypassed.
    Bypass,
    /// Translate with the CD at this location.
    Cd {
        /// Where the CD is.
        location: CdLocation,
        /// The CD table index (the SubstreamID, or 0).
        index: u32,
    },
}

/// Why a transaction cannot reach a CD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CdLookupError {
    /// S1DSS terminates the transaction: no SubstreamID with S1DSS =
    /// terminate, or SubstreamID 0 with S1DSS = substream 0.
    #[error("stream disabled for this transaction by S1DSS")]
    StreamDisabled,
    /// SubstreamID given while substreams are disabled, or at or above
    /// `2^S1CDMax`; or an L1CD with V = 0.
    #[error("bad SubstreamID {0:#x}")]
    BadSubstream(u32),
    /// The CD address overflows.
    #[error("CD address overflows")]
    AddressOverflow,
}

impl CdLookupError {
    /// The event to record: F_STREAM_DISABLED, C_BAD_SUBSTREAMID, or
    /// C_BAD_CD for an impossible address.
    pub const fn event_type(&self) -> u8 {
        match self {
            CdLookupError::StreamDisabled => F_STREAM_DISABLED,
            CdLookupError::BadSubstream(_) => C_BAD_SUBSTREAMID,
            CdLookupError::AddressOverflow => C_BAD_CD,
        }
    }
}

/// Which CD a transaction with SubstreamID `ssid` (`None`: no SubstreamID)
/// uses under the stage-1 configuration `s1`, and where it is.
///
/// Table bases are aligned as the architecture says the SMMU treats them:
/// a linear table to its size, an L1 table to the larger of its size and
/// 64 bytes.
pub fn cd_lookup(s1: &S1Config, ssid: Option<u32>) -> Result<CdLookup, CdLookupError> {
    let cdmax = u32::from(s1.cdmax.min(20));
    let index = match ssid {
        None if cdmax == 0 => 0,
        None => match s1.dss {
            S1Dss::Terminate => return Err(CdLookupError::StreamDisabled),
            S1Dss::Bypass => return Ok(CdLookup::Bypass),
            S1Dss::Substream0 => 0,
        },
        Some(ssid) => {
            if cdmax == 0 || ssid >> cdmax != 0 {
                return Err(CdLookupError::BadSubstream(ssid));
            }
            if ssid == 0 && matches!(s1.dss, S1Dss::Substream0) {
                return Err(CdLookupError::StreamDisabled);
            }
            ssid
        }
    };
    let location = match s1.fmt {
        _ if cdmax == 0 => CdLocation::Direct {
            cd_addr: s1.ctx_ptr,
        },
        S1Fmt::Linear => {
            let base = align_down(s1.ctx_ptr, cdmax + 6);
            match base.checked_add(u64::from(index) * CD_SIZE) {
                Some(cd_addr) => CdLocation::Direct { cd_addr },
                None => return Err(CdLookupError::AddressOverflow),
            }
        }
        fmt @ (S1Fmt::TwoLevel4K | S1Fmt::TwoLevel64K) => {
            let leaf = fmt.leaf_bits();
            let l1_bits = cdmax.saturating_sub(leaf) + 3;
            let base = align_down(s1.ctx_ptr, l1_bits.max(6));
            match base.checked_add(u64::from(index >> leaf) * L1CD_SIZE) {
                Some(l1_desc_addr) => CdLocation::TwoLevel {
                    l1_desc_addr,
                    l2_index: index & ((1 << leaf) - 1),
                },
                None => return Err(CdLookupError::AddressOverflow),
            }
        }
    };
    Ok(CdLookup::Cd { location, index })
}

/// The CD address in the leaf table an L1CD points at. An L1CD with V = 0
/// is C_BAD_SUBSTREAMID (`index` is the SubstreamID reported). The leaf
/// table is 4 KiB (S1Fmt 0b01) or 64 KiB (0b10) aligned.
pub fn l2_cd_addr(desc: L1Cd, fmt: S1Fmt, l2_index: u32, index: u32) -> Result<u64, CdLookupError> {
    if !desc.valid {
        return Err(CdLookupError::BadSubstream(index));
    }
    let leaf = fmt.leaf_bits().max(6);
    let base = align_down(desc.l2ptr, leaf + 6);
    let offset = u64::from(l2_index & ((1 << leaf) - 1)) * CD_SIZE;
    base.checked_add(offset)
        .ok_or(CdLookupError::AddressOverflow)
}

#[cfg(test)]
mod tests;
