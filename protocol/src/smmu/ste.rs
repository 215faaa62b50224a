//! Stream table entries (IHI 0070 §5.2; Linux `STRTAB_STE_*`).
//!
//! [`Ste::validate`] applies the architecture's ILLEGAL rules for the
//! stage-1-only SMMU this project presents to the guest and yields the
//! effective configuration ([`SteConfig`]); any error is reported to the
//! guest as C_BAD_STE when a transaction uses the stream. Where the
//! architecture says a reserved value "behaves as" another, the effective
//! value is used rather than an error:
//! - Config 0b001..0b011 behave as abort (0b000);
//! - S1Fmt 0b11 behaves as linear, S1DSS 0b11 as terminate;
//! - EATS is IGNORED without IDR0.ATS, and 0b11 (DPT) behaves as 0b00.
//!
//! Stage 2 (Config 0b110 and 0b111) belongs to the host: the guest sees an
//! SMMU without stage 2, so those values are ILLEGAL.

use super::bits::{genmask, Field};
use super::event::C_BAD_STE;
use super::regs::{
    oas_bits, IDR0_ATS, IDR0_CD2L, IDR0_HYP, IDR0_S1P, IDR0_S2P, IDR0_STALL_MODEL,
    IDR0_STALL_MODEL_STALL, IDR1_SSIDSIZE, IDR5_OAS,
};

/// Bytes of an STE.
pub const STE_SIZE: u64 = 64;
/// Dwords of an STE.
pub const STE_DWORDS: usize = 8;

/// STE.V (dword0 bit 0).
pub const STE_0_V: Field = Field::bit(0);
/// STE.Config\[3:1\].
pub const STE_0_CONFIG: Field = Field::new(1, 3);
/// STE.S1Fmt\[5:4\].
pub const STE_0_S1FMT: Field = Field::new(4, 2);
/// STE.S1ContextPtr\[55:6\] (Linux masks \[51:6\]).
pub const STE_0_S1CTXPTR_MASK: u64 = genmask(55, 6);
/// STE.S1CDMax\[63:59\].
pub const STE_0_S1CDMAX: Field = Field::new(59, 5);
/// STE.S1DSS (dword1 \[1:0\]).
pub const STE_1_S1DSS: Field = Field::new(0, 2);
/// STE.S1CIR (dword1 \[3:2\]).
pub const STE_1_S1CIR: Field = Field::new(2, 2);
/// STE.S1COR (dword1 \[5:4\]).
pub const STE_1_S1COR: Field = Field::new(4, 2);
/// STE.S1CSH (dword1 \[7:6\]).
pub const STE_1_S1CSH: Field = Field::new(6, 2);
/// STE.MEV (dword1 bit 19): merge events.
pub const STE_1_MEV: Field = Field::bit(19);
/// STE.S1STALLD (dword1 bit 27).
pub const STE_1_S1STALLD: Field = Field::bit(27);
/// STE.EATS (dword1 \[29:28\]).
pub const STE_1_EATS: Field = Field::new(28, 2);
/// STE.STRW (dword1 \[31:30\]).
pub const STE_1_STRW: Field = Field::new(30, 2);
/// STE.SHCFG (dword1 \[45:44\]).
pub const STE_1_SHCFG: Field = Field::new(44, 2);
/// STE.S2VMID (dword2 \[15:0\]).
pub const STE_2_S2VMID: Field = Field::new(0, 16);

/// Config: abort, no event.
pub const CONFIG_ABORT: u8 = 0b000;
/// Config: bypass both stages.
pub const CONFIG_BYPASS: u8 = 0b100;
/// Config: stage 1 translate, stage 2 bypass.
pub const CONFIG_S1_TRANS: u8 = 0b101;
/// Config: stage 1 bypass, stage 2 translate.
pub const CONFIG_S2_TRANS: u8 = 0b110;
/// Config: both stages translate.
pub const CONFIG_NESTED: u8 = 0b111;

/// S1CIR/S1COR value: write-back, read-allocate (what Linux uses).
pub const S1C_CACHE_WBRA: u8 = 1;
/// S1CSH value: inner shareable.
pub const S1C_SH_ISH: u8 = 3;

/// STE dword0 bits the kernel lets userspace control in a nested vSTE
/// (`STRTAB_STE_0_NESTING_ALLOWED`: V, Config, S1Fmt, S1ContextPtr\[51:6\],
/// S1CDMax).
pub const VSTE_WORD0_MASK: u64 = 0xf80f_ffff_ffff_ffff;
/// STE dword1 bits the kernel lets userspace control
/// (`STRTAB_STE_1_NESTING_ALLOWED`: S1DSS, S1CIR, S1COR, S1CSH, S1STALLD,
/// EATS).
pub const VSTE_WORD1_MASK: u64 = 0x3800_00ff;

/// True when the kernel's `arm_smmu_validate_vste` accepts this vSTE for
/// `IOMMU_HWPT_ALLOC`: V = 0 is always accepted (the kernel installs an
/// abort STE); with V = 1 no bit may be outside [`VSTE_WORD0_MASK`] /
/// [`VSTE_WORD1_MASK`], Config must be abort, bypass or stage-1 translate,
/// and EATS 0 or 1.
pub fn kernel_accepts_vste(vste: [u64; 2]) -> bool {
    check_vste(&vste).is_ok()
}

/// What a vSTE the kernel accepts asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VsteConfig {
    /// STE.V = 0: the kernel zeroes the vSTE and installs an abort STE.
    NotValid,
    /// STE.Config = abort (0b000).
    Abort,
    /// STE.Config = bypass (0b100): stage 2 only.
    Bypass,
    /// STE.Config = stage-1 translate (0b101): the guest CD table over the
    /// nesting parent.
    S1Translate,
}

/// Why the kernel would refuse a vSTE (`arm_smmu_validate_vste`, `-EIO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VsteError {
    /// Bits outside `STRTAB_STE_{0,1}_NESTING_ALLOWED` are set.
    #[error("vSTE word {word} sets bits {bits:#x} outside the nesting-allowed mask")]
    DisallowedBits {
        /// 0 or 1.
        word: usize,
        /// The offending bits.
        bits: u64,
    },
    /// STE.Config is not abort, bypass or stage-1 translate.
    #[error("vSTE Config {0:#05b} is not abort, bypass or stage-1 translate")]
    Config(u8),
    /// STE.EATS is neither 0 (abort) nor 1 (full ATS).
    #[error("vSTE EATS {0} is not supported")]
    Eats(u8),
}

/// Checks a vSTE exactly as the kernel's `arm_smmu_validate_vste` does
/// before allocating a nested HWPT: a non-valid STE is always accepted (the
/// kernel turns it into an abort STE); a valid one must keep to the masks
/// [`VSTE_WORD0_MASK`] / [`VSTE_WORD1_MASK`], use Config abort, bypass
/// or stage-1 translate, and EATS 0 or 1.
pub fn check_vste(ste: &[u64; 2]) -> Result<VsteConfig, VsteError> {
    if !STE_0_V.is_set(ste[0]) {
        return Ok(VsteConfig::NotValid);
    }
    let bad0 = ste[0] & !VSTE_WORD0_MASK;
    if bad0 != 0 {
        return Err(VsteError::DisallowedBits {
            word: 0,
            bits: bad0,
        });
    }
    let bad1 = ste[1] & !VSTE_WORD1_MASK;
    if bad1 != 0 {
        return Err(VsteError::DisallowedBits {
            word: 1,
            bits: bad1,
        });
    }
    let config = STE_0_CONFIG.get(ste[0]) as u8;
    let kind = match config {
        CONFIG_ABORT => VsteConfig::Abort,
        CONFIG_BYPASS => VsteConfig::Bypass,
        CONFIG_S1_TRANS => VsteConfig::S1Translate,
        other => return Err(VsteError::Config(other)),
    };
    let eats = STE_1_EATS.get(ste[1]) as u8;
    if eats > 1 {
        return Err(VsteError::Eats(eats));
    }
    Ok(kind)
}

/// Stage-1 context descriptor table format (STE.S1Fmt), effective value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum S1Fmt {
    /// 0b00: linear CD table (or one CD when S1CDMax = 0).
    #[default]
    Linear,
    /// 0b01: 2-level, 4 KiB leaf tables of 64 CDs.
    TwoLevel4K,
    /// 0b10: 2-level, 64 KiB leaf tables of 1024 CDs.
    TwoLevel64K,
}

impl S1Fmt {
    /// The S1Fmt field value.
    pub const fn bits(self) -> u8 {
        match self {
            S1Fmt::Linear => 0,
            S1Fmt::TwoLevel4K => 1,
            S1Fmt::TwoLevel64K => 2,
        }
    }

    /// The effective format of a field value (0b11 behaves as linear).
    pub const fn from_bits(bits: u8) -> S1Fmt {
        match bits & 3 {
            1 => S1Fmt::TwoLevel4K,
            2 => S1Fmt::TwoLevel64K,
            _ => S1Fmt::Linear,
        }
    }

    /// log2 of the CDs in one leaf table (6 or 10); 0 for linear.
    pub const fn leaf_bits(self) -> u32 {
        match self {
            S1Fmt::Linear => 0,
            S1Fmt::TwoLevel4K => 6,
            S1Fmt::TwoLevel64K => 10,
        }
    }
}

/// Default substream behaviour (STE.S1DSS), effective value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum S1Dss {
    /// 0b00: transactions without a SubstreamID are terminated
    /// (F_STREAM_DISABLED).
    #[default]
    Terminate,
    /// 0b01: transactions without a SubstreamID bypass stage 1.
    Bypass,
    /// 0b10: transactions without a SubstreamID use CD 0; SubstreamID 0 is
    /// terminated (F_STREAM_DISABLED).
    Substream0,
}

impl S1Dss {
    /// The S1DSS field value.
    pub const fn bits(self) -> u8 {
        match self {
            S1Dss::Terminate => 0,
            S1Dss::Bypass => 1,
            S1Dss::Substream0 => 2,
        }
    }

    /// The effective behaviour of a field value (0b11 behaves as
    /// terminate).
    pub const fn from_bits(bits: u8) -> S1Dss {
        match bits & 3 {
            1 => S1Dss::Bypass,
            2 => S1Dss::Substream0,
            _ => S1Dss::Terminate,
        }
    }
}

/// The SMMU features STE validation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SteCaps {
    /// IDR0.S1P.
    pub s1p: bool,
    /// IDR0.S2P (stage 2 is still refused for the guest, but the error
    /// differs).
    pub s2p: bool,
    /// IDR1.SSIDSIZE: SubstreamID bits (0: no substreams).
    pub ssid_bits: u8,
    /// Output address size in bits (IDR5.OAS).
    pub oas_bits: u8,
    /// IDR0.ATS.
    pub ats: bool,
    /// IDR0.CD2L: 2-level CD tables.
    pub cd2l: bool,
    /// IDR0.STALL_MODEL == 0b00 (S1STALLD may be set).
    pub stall_configurable: bool,
    /// IDR0.Hyp (STRW may select EL2).
    pub hyp: bool,
}

impl SteCaps {
    /// The features of an SMMU with these ID registers.
    pub const fn from_idr(idr0: u32, idr1: u32, idr5: u32) -> SteCaps {
        SteCaps {
            s1p: IDR0_S1P.is_set32(idr0),
            s2p: IDR0_S2P.is_set32(idr0),
            ssid_bits: IDR1_SSIDSIZE.get32(idr1) as u8,
            oas_bits: oas_bits(IDR5_OAS.get32(idr5)),
            ats: IDR0_ATS.is_set32(idr0),
            cd2l: IDR0_CD2L.is_set32(idr0),
            stall_configurable: IDR0_STALL_MODEL.get32(idr0) == IDR0_STALL_MODEL_STALL,
            hyp: IDR0_HYP.is_set32(idr0),
        }
    }
}

/// Why an STE with V = 1 is ILLEGAL (or V = 0). Every variant is reported as
/// C_BAD_STE ([`SteError::event_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SteError {
    /// STE.V = 0.
    #[error("STE not valid (V = 0)")]
    NotValid,
    /// Config 0b1x1 on an SMMU without stage 1.
    #[error("STE Config {0:#05b} needs stage 1, which is not implemented")]
    NoStage1(u8),
    /// Config 0b11x: stage 2 is not offered to the guest.
    #[error("STE Config {0:#05b} needs stage 2, which this SMMU does not offer")]
    Stage2(u8),
    /// S1CDMax above IDR1.SSIDSIZE.
    #[error("STE S1CDMax {cdmax} above SSIDSIZE {ssid_bits}")]
    CdMaxTooLarge {
        /// STE.S1CDMax.
        cdmax: u8,
        /// IDR1.SSIDSIZE.
        ssid_bits: u8,
    },
    /// S1Fmt selects a 2-level CD table without IDR0.CD2L.
    #[error("STE S1Fmt {0} selects 2-level CD tables, which are not supported")]
    TwoLevelCdUnsupported(u8),
    /// S1ContextPtr beyond the output address size.
    #[error("STE S1ContextPtr {ptr:#x} beyond the {oas_bits}-bit output address size")]
    ContextPtrOutOfRange {
        /// STE.S1ContextPtr.
        ptr: u64,
        /// Output address size.
        oas_bits: u8,
    },
    /// S1STALLD = 1 while the stall model is not configurable.
    #[error("STE S1STALLD set but IDR0.STALL_MODEL is not 0b00")]
    StallDisableNotAllowed,
    /// EATS = 0b10 (split-stage ATS) without stage 2.
    #[error("STE EATS 0b10 (split-stage ATS) needs Config 0b111")]
    SplitStageAts,
    /// STRW reserved value (0bx1) with IDR0.Hyp.
    #[error("STE STRW {0:#04b} is reserved")]
    ReservedStrw(u8),
}

impl SteError {
    /// The event the SMMU records when a transaction uses this STE.
    pub const fn event_type(&self) -> u8 {
        C_BAD_STE
    }
}

/// Effective stage-1 configuration of an STE with Config 0b101.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct S1Config {
    /// S1ContextPtr: address of the CD, the CD table or the L1 CD table.
    pub ctx_ptr: u64,
    /// Effective S1Fmt (linear when substreams are disabled).
    pub fmt: S1Fmt,
    /// Effective S1CDMax: log2 of the CDs (0: one CD, no substreams; also
    /// 0 when IDR1.SSIDSIZE = 0, which makes the field IGNORED).
    pub cdmax: u8,
    /// Effective S1DSS (terminate when substreams are disabled).
    pub dss: S1Dss,
    /// S1CIR.
    pub cir: u8,
    /// S1COR.
    pub cor: u8,
    /// S1CSH.
    pub csh: u8,
    /// S1STALLD.
    pub stalld: bool,
    /// Effective EATS: 0 or 1.
    pub eats: u8,
    /// Effective STRW: 0 (EL1) or 0b10 (EL2, only with IDR0.Hyp).
    pub strw: u8,
}

/// What a valid STE asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SteConfig {
    /// Abort all traffic without recording events (Config 0b0xx).
    Abort,
    /// Bypass (Config 0b100).
    Bypass,
    /// Stage-1 translation through the guest's CDs (Config 0b101).
    S1Translate(S1Config),
}

impl SteConfig {
    /// The nested vSTE (`struct iommu_hwpt_arm_smmuv3 { ste[2] }`) that
    /// installs this configuration on the host, built from the effective
    /// values so that [`kernel_accepts_vste`] always holds.
    pub const fn to_vste(&self) -> [u64; 2] {
        let v = STE_0_V.mask();
        match self {
            SteConfig::Abort => [v | STE_0_CONFIG.prep(CONFIG_ABORT as u64), 0],
            SteConfig::Bypass => [v | STE_0_CONFIG.prep(CONFIG_BYPASS as u64), 0],
            SteConfig::S1Translate(s1) => {
                let w0 = v
                    | STE_0_CONFIG.prep(CONFIG_S1_TRANS as u64)
                    | STE_0_S1FMT.prep(s1.fmt.bits() as u64)
                    | (s1.ctx_ptr & STE_0_S1CTXPTR_MASK & VSTE_WORD0_MASK)
                    | STE_0_S1CDMAX.prep(s1.cdmax as u64);
                let eats = if s1.eats > 1 { 0 } else { s1.eats };
                let w1 = STE_1_S1DSS.prep(s1.dss.bits() as u64)
                    | STE_1_S1CIR.prep(s1.cir as u64)
                    | STE_1_S1COR.prep(s1.cor as u64)
                    | STE_1_S1CSH.prep(s1.csh as u64)
                    | STE_1_S1STALLD.prep(s1.stalld as u64)
                    | STE_1_EATS.prep(eats as u64);
                [w0, w1]
            }
        }
    }
}

/// A stream table entry: eight little-endian dwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ste(pub [u64; STE_DWORDS]);

impl Ste {
    /// An STE from its dwords.
    pub const fn from_words(words: [u64; STE_DWORDS]) -> Ste {
        Ste(words)
    }

    /// The dwords.
    pub const fn to_words(&self) -> [u64; STE_DWORDS] {
        self.0
    }

    /// An STE from its 64 bytes in memory.
    pub fn from_bytes(bytes: &[u8; 64]) -> Ste {
        let mut words = [0u64; STE_DWORDS];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        Ste(words)
    }

    /// The 64 bytes as stored in memory.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.0.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// An abort STE (V = 1, Config = 0b000), as Linux builds it.
    pub const fn abort() -> Ste {
        let mut w = [0u64; STE_DWORDS];
        w[0] = STE_0_V.mask() | STE_0_CONFIG.prep(CONFIG_ABORT as u64);
        Ste(w)
    }

    /// A bypass STE (V = 1, Config = 0b100, SHCFG = incoming), as Linux
    /// builds it.
    pub const fn bypass() -> Ste {
        let mut w = [0u64; STE_DWORDS];
        w[0] = STE_0_V.mask() | STE_0_CONFIG.prep(CONFIG_BYPASS as u64);
        w[1] = STE_1_SHCFG.prep(1);
        Ste(w)
    }

    /// A stage-1 STE pointing at `ctx_ptr` with `2^cdmax` CDs in `fmt`
    /// layout; S1DSS = terminate, CD fetches write-back read-allocate inner
    /// shareable (Linux `arm_smmu_make_cdtable_ste`).
    pub const fn s1(ctx_ptr: u64, cdmax: u8, fmt: S1Fmt) -> Ste {
        let mut w = [0u64; STE_DWORDS];
        w[0] = STE_0_V.mask()
            | STE_0_CONFIG.prep(CONFIG_S1_TRANS as u64)
            | STE_0_S1FMT.prep(fmt.bits() as u64)
            | (ctx_ptr & STE_0_S1CTXPTR_MASK)
            | STE_0_S1CDMAX.prep(cdmax as u64);
        w[1] = STE_1_S1CIR.prep(S1C_CACHE_WBRA as u64)
            | STE_1_S1COR.prep(S1C_CACHE_WBRA as u64)
            | STE_1_S1CSH.prep(S1C_SH_ISH as u64);
        Ste(w)
    }

    /// The same STE with S1DSS set.
    pub const fn with_s1dss(self, dss: S1Dss) -> Ste {
        let mut w = self.0;
        w[1] = STE_1_S1DSS.set(w[1], dss.bits() as u64);
        Ste(w)
    }

    /// The same STE with EATS set.
    pub const fn with_eats(self, eats: u8) -> Ste {
        let mut w = self.0;
        w[1] = STE_1_EATS.set(w[1], eats as u64);
        Ste(w)
    }

    /// The same STE with V cleared.
    pub const fn invalidated(self) -> Ste {
        let mut w = self.0;
        w[0] &= !STE_0_V.mask();
        Ste(w)
    }

    /// STE.V.
    pub const fn valid(&self) -> bool {
        STE_0_V.is_set(self.0[0])
    }

    /// STE.Config.
    pub const fn config(&self) -> u8 {
        STE_0_CONFIG.get(self.0[0]) as u8
    }

    /// STE.S1Fmt (raw).
    pub const fn s1fmt(&self) -> u8 {
        STE_0_S1FMT.get(self.0[0]) as u8
    }

    /// STE.S1ContextPtr.
    pub const fn s1_context_ptr(&self) -> u64 {
        self.0[0] & STE_0_S1CTXPTR_MASK
    }

    /// STE.S1CDMax (raw).
    pub const fn s1cdmax(&self) -> u8 {
        STE_0_S1CDMAX.get(self.0[0]) as u8
    }

    /// STE.S1DSS (raw).
    pub const fn s1dss(&self) -> u8 {
        STE_1_S1DSS.get(self.0[1]) as u8
    }

    /// STE.S1CIR.
    pub const fn s1cir(&self) -> u8 {
        STE_1_S1CIR.get(self.0[1]) as u8
    }

    /// STE.S1COR.
    pub const fn s1cor(&self) -> u8 {
        STE_1_S1COR.get(self.0[1]) as u8
    }

    /// STE.S1CSH.
    pub const fn s1csh(&self) -> u8 {
        STE_1_S1CSH.get(self.0[1]) as u8
    }

    /// STE.S1STALLD.
    pub const fn s1stalld(&self) -> bool {
        STE_1_S1STALLD.is_set(self.0[1])
    }

    /// STE.EATS (raw).
    pub const fn eats(&self) -> u8 {
        STE_1_EATS.get(self.0[1]) as u8
    }

    /// STE.STRW (raw).
    pub const fn strw(&self) -> u8 {
        STE_1_STRW.get(self.0[1]) as u8
    }

    /// STE.SHCFG.
    pub const fn shcfg(&self) -> u8 {
        STE_1_SHCFG.get(self.0[1]) as u8
    }

    /// STE.MEV.
    pub const fn mev(&self) -> bool {
        STE_1_MEV.is_set(self.0[1])
    }

    /// STE.S2VMID.
    pub const fn s2vmid(&self) -> u16 {
        STE_2_S2VMID.get(self.0[2]) as u16
    }

    /// True when any stage-2 field (dwords 2 and 3) is non-zero.
    pub const fn has_s2_fields(&self) -> bool {
        self.0[2] != 0 || self.0[3] != 0
    }

    /// The effective configuration, or why the STE is ILLEGAL (reported as
    /// C_BAD_STE).
    ///
    /// Checks, in order: V; Config (0b0xx abort, 0b100 bypass, 0b101 needs
    /// S1P, 0b11x refused); for stage 1: S1CDMax <= SSIDSIZE (IGNORED when
    /// SSIDSIZE = 0), S1Fmt 2-level needs CD2L, S1ContextPtr within the
    /// OAS, S1STALLD only with STALL_MODEL 0b00, EATS (IGNORED without ATS;
    /// 0b10 ILLEGAL), STRW (IGNORED without Hyp; 0bx1 ILLEGAL).
    pub const fn validate(&self, caps: &SteCaps) -> Result<SteConfig, SteError> {
        if !self.valid() {
            return Err(SteError::NotValid);
        }
        let config = self.config();
        if config & 0b100 == 0 {
            return Ok(SteConfig::Abort);
        }
        if config & 0b010 != 0 {
            return Err(SteError::Stage2(config));
        }
        if config & 0b001 == 0 {
            return Ok(SteConfig::Bypass);
        }
        if !caps.s1p {
            return Err(SteError::NoStage1(config));
        }

        let cdmax = if caps.ssid_bits == 0 {
            0
        } else {
            self.s1cdmax()
        };
        if cdmax > caps.ssid_bits {
            return Err(SteError::CdMaxTooLarge {
                cdmax,
                ssid_bits: caps.ssid_bits,
            });
        }
        let (fmt, dss) = if cdmax == 0 {
            (S1Fmt::Linear, S1Dss::Terminate)
        } else {
            let fmt = S1Fmt::from_bits(self.s1fmt());
            if !matches!(fmt, S1Fmt::Linear) && !caps.cd2l {
                return Err(SteError::TwoLevelCdUnsupported(self.s1fmt()));
            }
            (fmt, S1Dss::from_bits(self.s1dss()))
        };

        let ptr = self.s1_context_ptr();
        if caps.oas_bits < 64 && ptr >> caps.oas_bits != 0 {
            return Err(SteError::ContextPtrOutOfRange {
                ptr,
                oas_bits: caps.oas_bits,
            });
        }
        let stalld = self.s1stalld();
        if stalld && !caps.stall_configurable {
            return Err(SteError::StallDisableNotAllowed);
        }
        let eats = if caps.ats {
            match self.eats() {
                0b01 => 1,
                0b10 => return Err(SteError::SplitStageAts),
                _ => 0,
            }
        } else {
            0
        };
        let strw = if caps.hyp {
            let strw = self.strw();
            if strw & 1 != 0 {
                return Err(SteError::ReservedStrw(strw));
            }
            strw
        } else {
            0
        };
        Ok(SteConfig::S1Translate(S1Config {
            ctx_ptr: ptr,
            fmt,
            cdmax,
            dss,
            cir: self.s1cir(),
            cor: self.s1cor(),
            csh: self.s1csh(),
            stalld,
            eats,
            strw,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::regs::{IDR0_RESET, IDR1_RESET, IDR5_RESET};
    use super::*;

    fn qemu() -> SteCaps {
        SteCaps::from_idr(IDR0_RESET, IDR1_RESET, IDR5_RESET)
    }

    fn rich() -> SteCaps {
        SteCaps {
            s1p: true,
            s2p: false,
            ssid_bits: 20,
            oas_bits: 48,
            ats: true,
            cd2l: true,
            stall_configurable: true,
            hyp: true,
        }
    }

    #[test]
    fn qemu_caps() {
        let c = qemu();
        assert!(c.s1p && !c.s2p && !c.ats && !c.cd2l && !c.stall_configurable && !c.hyp);
        assert_eq!(c.ssid_bits, 0);
        assert_eq!(c.oas_bits, 44);
    }

    #[test]
    fn builders_exact() {
        assert_eq!(Ste::abort().to_words(), [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Ste::bypass().to_words(),
            [0x9, 0x0000_1000_0000_0000, 0, 0, 0, 0, 0, 0]
        );
        let s = Ste::s1(0x8_1234_5000, 0, S1Fmt::Linear);
        assert_eq!(s.0[0], 0x0000_0008_1234_500b);
        assert_eq!(s.0[1], 0xd4);
        let s = Ste::s1(0x4000_0000, 10, S1Fmt::TwoLevel64K).with_s1dss(S1Dss::Substream0);
        assert_eq!(s.0[0], 0x5000_0000_4000_002b);
        assert_eq!(s.0[1], 0xd6);
        assert_eq!(Ste::from_bytes(&s.to_bytes()), s);
        assert_eq!(s.to_bytes()[0], 0x2b);
    }

    #[test]
    fn validate_basic() {
        let c = qemu();
        assert_eq!(Ste::default().validate(&c), Err(SteError::NotValid));
        assert_eq!(Ste::abort().validate(&c), Ok(SteConfig::Abort));
        assert_eq!(Ste::bypass().validate(&c), Ok(SteConfig::Bypass));
        assert_eq!(
            Ste::abort().invalidated().validate(&c),
            Err(SteError::NotValid)
        );
        // Reserved Config 0b0xx behaves as abort.
        for cfg in 1..=3u64 {
            let s = Ste::from_words([1 | cfg << 1, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(s.validate(&c), Ok(SteConfig::Abort));
        }
        // Stage 2 and nested are refused.
        for cfg in [CONFIG_S2_TRANS, CONFIG_NESTED] {
            let s = Ste::from_words([1 | u64::from(cfg) << 1, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(s.validate(&c), Err(SteError::Stage2(cfg)));
            assert_eq!(s.validate(&c).unwrap_err().event_type(), C_BAD_STE);
        }
        let s1 = Ste::s1(0x8000_0000, 0, S1Fmt::Linear);
        assert_eq!(
            s1.validate(&c),
            Ok(SteConfig::S1Translate(S1Config {
                ctx_ptr: 0x8000_0000,
                fmt: S1Fmt::Linear,
                cdmax: 0,
                dss: S1Dss::Terminate,
                cir: 1,
                cor: 1,
                csh: 3,
                stalld: false,
                eats: 0,
                strw: 0,
            }))
        );
        let no_s1 = SteCaps { s1p: false, ..c };
        assert_eq!(s1.validate(&no_s1), Err(SteError::NoStage1(0b101)));
    }

    #[test]
    fn validate_substreams() {
        // SSIDSIZE = 0: S1CDMax, S1Fmt and S1DSS are IGNORED.
        let s = Ste::s1(0x8000_0000, 31, S1Fmt::TwoLevel4K).with_s1dss(S1Dss::Bypass);
        let SteConfig::S1Translate(cfg) = s.validate(&qemu()).unwrap() else {
            panic!()
        };
        assert_eq!(
            (cfg.cdmax, cfg.fmt, cfg.dss),
            (0, S1Fmt::Linear, S1Dss::Terminate)
        );

        let caps = SteCaps {
            ssid_bits: 8,
            cd2l: false,
            ..rich()
        };
        assert_eq!(
            Ste::s1(0x8000_0000, 9, S1Fmt::Linear).validate(&caps),
            Err(SteError::CdMaxTooLarge {
                cdmax: 9,
                ssid_bits: 8
            })
        );
        assert_eq!(
            Ste::s1(0x8000_0000, 8, S1Fmt::TwoLevel4K).validate(&caps),
            Err(SteError::TwoLevelCdUnsupported(1))
        );
        // S1Fmt 0b11 behaves as linear; S1DSS 0b11 as terminate.
        let mut w = Ste::s1(0x8000_0000, 8, S1Fmt::Linear).to_words();
        w[0] |= 3 << 4;
        w[1] |= 3;
        let SteConfig::S1Translate(cfg) = Ste(w).validate(&caps).unwrap() else {
            panic!()
        };
        assert_eq!(
            (cfg.cdmax, cfg.fmt, cfg.dss),
            (8, S1Fmt::Linear, S1Dss::Terminate)
        );
        let s = Ste::s1(0x8000_0000, 12, S1Fmt::TwoLevel64K).with_s1dss(S1Dss::Substream0);
        let SteConfig::S1Translate(cfg) = s.validate(&rich()).unwrap() else {
            panic!()
        };
        assert_eq!(
            (cfg.cdmax, cfg.fmt, cfg.dss),
            (12, S1Fmt::TwoLevel64K, S1Dss::Substream0)
        );
    }

    #[test]
    fn validate_ptr_stall_eats_strw() {
        let c = qemu();
        assert_eq!(
            Ste::s1(1 << 44, 0, S1Fmt::Linear).validate(&c),
            Err(SteError::ContextPtrOutOfRange {
                ptr: 1 << 44,
                oas_bits: 44
            })
        );
        assert!(Ste::s1((1 << 44) - 64, 0, S1Fmt::Linear)
            .validate(&c)
            .is_ok());
        // Bits 55:52 are decoded (and refused beyond the OAS).
        assert!(Ste::s1(1 << 55, 0, S1Fmt::Linear)
            .validate(&rich())
            .is_err());

        let mut w = Ste::s1(0x1000, 0, S1Fmt::Linear).to_words();
        w[1] |= STE_1_S1STALLD.mask();
        assert_eq!(Ste(w).validate(&c), Err(SteError::StallDisableNotAllowed));
        assert!(Ste(w).validate(&rich()).is_ok());

        // EATS is IGNORED without ATS.
        let s = Ste::s1(0x1000, 0, S1Fmt::Linear).with_eats(2);
        assert!(s.validate(&c).is_ok());
        assert_eq!(s.validate(&rich()), Err(SteError::SplitStageAts));
        let eats = |e: u8| match Ste::s1(0x1000, 0, S1Fmt::Linear)
            .with_eats(e)
            .validate(&rich())
        {
            Ok(SteConfig::S1Translate(cfg)) => cfg.eats,
            other => panic!("{other:?}"),
        };
        assert_eq!(eats(0), 0);
        assert_eq!(eats(1), 1);
        assert_eq!(eats(3), 0);

        let mut w = Ste::s1(0x1000, 0, S1Fmt::Linear).to_words();
        w[1] |= 1 << 30;
        assert!(Ste(w).validate(&c).is_ok());
        assert_eq!(Ste(w).validate(&rich()), Err(SteError::ReservedStrw(1)));
        w[1] ^= 3 << 30;
        let Ok(SteConfig::S1Translate(cfg)) = Ste(w).validate(&rich()) else {
            panic!()
        };
        assert_eq!(cfg.strw, 2);
    }

    #[test]
    fn kernel_vste_rules() {
        assert!(kernel_accepts_vste([0, 0]));
        assert!(kernel_accepts_vste([!1, u64::MAX]));
        assert!(kernel_accepts_vste([1, 0]));
        assert!(kernel_accepts_vste([0x9, 0]));
        assert!(kernel_accepts_vste([
            0xb | 0x000f_ffff_ffff_ffc0 | 0xf8 << 56,
            0x1800_00ff
        ]));
        assert!(!kernel_accepts_vste([0xd, 0]));
        assert!(!kernel_accepts_vste([0xf, 0]));
        assert!(!kernel_accepts_vste([0xb | 1 << 52, 0]));
        assert!(!kernel_accepts_vste([0xb, 1 << 30]));
        assert!(!kernel_accepts_vste([0xb, 1 << 44]));
        assert!(!kernel_accepts_vste([0xb, 2 << 28]));
        assert!(kernel_accepts_vste([0xb, 1 << 28]));
        assert_eq!(VSTE_WORD0_MASK, 0xf80f_ffff_ffff_ffff);
        assert_eq!(VSTE_WORD1_MASK, 0x3800_00ff);
        assert_eq!(
            VSTE_WORD0_MASK,
            STE_0_V.mask()
                | STE_0_CONFIG.mask()
                | STE_0_S1FMT.mask()
                | genmask(51, 6)
                | STE_0_S1CDMAX.mask()
        );
        assert_eq!(
            VSTE_WORD1_MASK,
            STE_1_S1DSS.mask()
                | STE_1_S1CIR.mask()
                | STE_1_S1COR.mask()
                | STE_1_S1CSH.mask()
                | STE_1_S1STALLD.mask()
                | STE_1_EATS.mask()
        );
        // The masks are the OR of the kernel's field masks.
        let w0 = 1 | 0b111 << 1 | 0b11 << 4 | (((1u64 << 52) - 1) & !0x3f) | 0x1f << 59;
        assert_eq!(VSTE_WORD0_MASK, w0);
        let w1 = 0b11 | 0b11 << 2 | 0b11 << 4 | 0b11 << 6 | 1 << 27 | 0b11 << 28;
        assert_eq!(VSTE_WORD1_MASK, w1);
    }

    #[test]
    fn vste_check() {
        // QEMU's shared abort and bypass vSTEs.
        assert_eq!(check_vste(&[0x1, 0]), Ok(VsteConfig::Abort));
        assert_eq!(check_vste(&[0x9, 0]), Ok(VsteConfig::Bypass));
        // S1 translate, linear CD table at 0x8000_0000, EATS = 1.
        let s1 = 1 | 0b101 << 1 | 0x8000_0000;
        assert_eq!(check_vste(&[s1, 1 << 28]), Ok(VsteConfig::S1Translate));
        // Non-valid: anything goes, the kernel zeroes it.
        assert_eq!(check_vste(&[!1, u64::MAX]), Ok(VsteConfig::NotValid));
        // Stage-2 fields (word 2/3 would carry them) and word-0 bits 52..58.
        assert_eq!(
            check_vste(&[s1 | 1 << 52, 0]),
            Err(VsteError::DisallowedBits {
                word: 0,
                bits: 1 << 52
            })
        );
        assert_eq!(
            check_vste(&[s1, 1 << 31]),
            Err(VsteError::DisallowedBits {
                word: 1,
                bits: 1 << 31
            })
        );
        // Config S2 (0b110) and nested (0b111) are refused.
        assert_eq!(
            check_vste(&[1 | 0b110 << 1, 0]),
            Err(VsteError::Config(0b110))
        );
        assert_eq!(
            check_vste(&[1 | 0b111 << 1, 0]),
            Err(VsteError::Config(0b111))
        );
        // EATS = 2 (split-stage ATS) is refused.
        assert_eq!(check_vste(&[s1, 2 << 28]), Err(VsteError::Eats(2)));
    }

    #[test]
    fn to_vste_is_always_accepted() {
        assert_eq!(SteConfig::Abort.to_vste(), [1, 0]);
        assert_eq!(SteConfig::Bypass.to_vste(), [9, 0]);
        let linux = Ste::s1(0x8_1234_5000, 0, S1Fmt::Linear);
        let cfg = linux.validate(&qemu()).unwrap();
        assert_eq!(cfg.to_vste(), [0x0000_0008_1234_500b, 0xd4]);
        // STRW, SHCFG, MEV and friends never reach the host.
        let mut w = linux.to_words();
        w[1] |= STE_1_SHCFG.prep(1) | STE_1_MEV.mask() | STE_1_STRW.prep(2);
        let cfg = Ste(w).validate(&rich()).unwrap();
        assert_eq!(cfg.to_vste(), [0x0000_0008_1234_500b, 0xd4]);
        let mut x = 0x243f_6a88_85a3_08d3u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut w = [0u64; 8];
            for (i, word) in w.iter_mut().enumerate() {
                *word = x.rotate_left(i as u32 * 8);
            }
            for caps in [qemu(), rich()] {
                if let Ok(cfg) = Ste(w).validate(&caps) {
                    assert!(kernel_accepts_vste(cfg.to_vste()), "{w:x?}");
                }
            }
        }
    }
}
