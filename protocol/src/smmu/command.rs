//! Command queue entries (IHI 0070 chapter 4; Linux `CMDQ_*`).
//!
//! [`Command::decode`] turns the two little-endian dwords of a command into a
//! [`Command`], or a [`CommandError::Illegal`] for a reserved opcode, a
//! reserved field value or a non-zero RES0 field (the architecture lets an
//! implementation detect those as malformed: CERROR_ILL). Every bit that
//! decoding accepts is kept, so `encode(decode(x)) == x` for every accepted
//! `x`. [`Command::check`] adds the rules that depend on the advertised
//! features (EL2 commands without IDR0.Hyp, ...).
//!
//! Where this module accepts bits that older specifications call RES0 it
//! says so: SCALE bit 25 (IDR5.DS), TTL128 (dword1 bit 7), and physical
//! addresses up to bit 55 (SMMUv3.4's 56-bit PA).

use super::bits::{genmask, Field};
use super::regs::{
    IDR0_ATS, IDR0_HYP, IDR0_PRI, IDR0_S1P, IDR0_S2P, IDR0_STALL_MODEL, IDR0_STALL_MODEL_NO_STALL,
    IDR3_MPAM,
};

/// Bytes of a command.
pub const CMD_SIZE: usize = 16;

/// CMD_PREFETCH_CONFIG.
pub const CMD_PREFETCH_CONFIG: u8 = 0x01;
/// CMD_PREFETCH_ADDR.
pub const CMD_PREFETCH_ADDR: u8 = 0x02;
/// CMD_CFGI_STE.
pub const CMD_CFGI_STE: u8 = 0x03;
/// CMD_CFGI_STE_RANGE (CMD_CFGI_ALL is RANGE = 31).
pub const CMD_CFGI_STE_RANGE: u8 = 0x04;
/// CMD_CFGI_CD.
pub const CMD_CFGI_CD: u8 = 0x05;
/// CMD_CFGI_CD_ALL.
pub const CMD_CFGI_CD_ALL: u8 = 0x06;
/// CMD_CFGI_VMS_PIDM (needs IDR3.MPAM).
pub const CMD_CFGI_VMS_PIDM: u8 = 0x07;
/// CMD_TLBI_NH_ALL.
pub const CMD_TLBI_NH_ALL: u8 = 0x10;
/// CMD_TLBI_NH_ASID.
pub const CMD_TLBI_NH_ASID: u8 = 0x11;
/// CMD_TLBI_NH_VA.
pub const CMD_TLBI_NH_VA: u8 = 0x12;
/// CMD_TLBI_NH_VAA.
pub const CMD_TLBI_NH_VAA: u8 = 0x13;
/// CMD_TLBI_EL3_ALL (Secure command queue only).
pub const CMD_TLBI_EL3_ALL: u8 = 0x18;
/// CMD_TLBI_EL3_VA (Secure command queue only).
pub const CMD_TLBI_EL3_VA: u8 = 0x1a;
/// CMD_TLBI_EL2_ALL (needs IDR0.Hyp).
pub const CMD_TLBI_EL2_ALL: u8 = 0x20;
/// CMD_TLBI_EL2_ASID (needs IDR0.Hyp).
pub const CMD_TLBI_EL2_ASID: u8 = 0x21;
/// CMD_TLBI_EL2_VA (needs IDR0.Hyp).
pub const CMD_TLBI_EL2_VA: u8 = 0x22;
/// CMD_TLBI_EL2_VAA (needs IDR0.Hyp).
pub const CMD_TLBI_EL2_VAA: u8 = 0x23;
/// CMD_TLBI_S12_VMALL (needs IDR0.S2P).
pub const CMD_TLBI_S12_VMALL: u8 = 0x28;
/// CMD_TLBI_S2_IPA (needs IDR0.S2P).
pub const CMD_TLBI_S2_IPA: u8 = 0x2a;
/// CMD_TLBI_NSNH_ALL.
pub const CMD_TLBI_NSNH_ALL: u8 = 0x30;
/// CMD_ATC_INV (needs IDR0.ATS).
pub const CMD_ATC_INV: u8 = 0x40;
/// CMD_PRI_RESP (needs IDR0.PRI).
pub const CMD_PRI_RESP: u8 = 0x41;
/// CMD_RESUME (needs a stall model).
pub const CMD_RESUME: u8 = 0x44;
/// CMD_STALL_TERM (needs a stall model).
pub const CMD_STALL_TERM: u8 = 0x45;
/// CMD_SYNC.
pub const CMD_SYNC: u8 = 0x46;

/// CFGI_STE_RANGE.Range value of CMD_CFGI_ALL.
pub const CFGI_ALL_RANGE: u8 = 31;
/// ATC_INV.Size value that invalidates everything (Linux `ATC_INV_SIZE_ALL`).
pub const ATC_INV_SIZE_ALL: u8 = 52;

// dword0 fields.
const OP: Field = Field::new(0, 8);
const GLOBAL: Field = Field::bit(9);
const SSEC: Field = Field::bit(10);
const SSV: Field = Field::bit(11);
const SSID: Field = Field::new(12, 20);
const SID: Field = Field::new(32, 32);
const NUM: Field = Field::new(12, 5);
/// SCALE\[25:20\]; bit 25 only with IDR5.DS (RES0 before, accepted here).
const SCALE: Field = Field::new(20, 6);
const VMID: Field = Field::new(32, 16);
const ASID: Field = Field::new(48, 16);
/// RESUME Action (retry) and Abort, Linux `CMDQ_RESUME_0_RESP[13:12]`.
const RESUME_AC: Field = Field::bit(12);
const RESUME_AB: Field = Field::bit(13);
const SYNC_CS: Field = Field::new(12, 2);
const SYNC_MSH: Field = Field::new(22, 2);
const SYNC_MSIATTR: Field = Field::new(24, 4);
const SYNC_MSIDATA: Field = Field::new(32, 32);

// dword1 fields.
const LEAF: Field = Field::bit(0);
const RANGE: Field = Field::new(0, 5);
/// TTL128 (bit 71 of the command): only meaningful with 128-bit
/// descriptors; accepted and kept.
const TTL128: Field = Field::bit(7);
const TTL: Field = Field::new(8, 2);
const TG: Field = Field::new(10, 2);
const PREFETCH_SIZE: Field = Field::new(0, 5);
/// PREFETCH_ADDR Stride\[9:5\] (RES0 in SMMUv3.0, accepted and kept).
const PREFETCH_STRIDE: Field = Field::new(5, 5);
const ATC_SIZE: Field = Field::new(0, 6);
const PRI_GRPID: Field = Field::new(0, 9);
const PRI_RESP: Field = Field::new(12, 2);
const RESUME_STAG: Field = Field::new(0, 16);
/// VA\[63:12\].
const VA_MASK: u64 = genmask(63, 12);
/// IPA / PA \[55:12\].
const IPA_MASK: u64 = genmask(55, 12);
/// MSIAddress\[55:2\].
const MSIADDR_MASK: u64 = genmask(55, 2);

const TLBI_RANGE_D0: u64 = NUM.mask() | SCALE.mask();
const TLBI_VA_D1: u64 = LEAF.mask() | TTL128.mask() | TTL.mask() | TG.mask() | VA_MASK;
const TLBI_IPA_D1: u64 = LEAF.mask() | TTL128.mask() | TTL.mask() | TG.mask() | IPA_MASK;

/// Bits other than the opcode that each opcode defines, per dword; `None`
/// for a reserved opcode. Every other bit is RES0.
const fn defined_bits(opcode: u8) -> Option<(u64, u64)> {
    let sid = SID.mask();
    let sub = SSV.mask() | SSID.mask();
    Some(match opcode {
        CMD_PREFETCH_CONFIG => (sid | sub, 0),
        CMD_PREFETCH_ADDR => (
            sid | sub,
            PREFETCH_SIZE.mask() | PREFETCH_STRIDE.mask() | VA_MASK,
        ),
        CMD_CFGI_STE => (sid, LEAF.mask()),
        CMD_CFGI_STE_RANGE => (sid, RANGE.mask()),
        CMD_CFGI_CD => (sid | SSID.mask(), LEAF.mask()),
        CMD_CFGI_CD_ALL => (sid, 0),
        CMD_CFGI_VMS_PIDM => (VMID.mask(), 0),
        CMD_TLBI_NH_ALL => (VMID.mask(), 0),
        CMD_TLBI_NH_ASID => (VMID.mask() | ASID.mask(), 0),
        CMD_TLBI_NH_VA => (TLBI_RANGE_D0 | VMID.mask() | ASID.mask(), TLBI_VA_D1),
        CMD_TLBI_NH_VAA => (TLBI_RANGE_D0 | VMID.mask(), TLBI_VA_D1),
        CMD_TLBI_EL3_ALL => (0, 0),
        CMD_TLBI_EL3_VA => (TLBI_RANGE_D0, TLBI_VA_D1),
        CMD_TLBI_EL2_ALL => (0, 0),
        CMD_TLBI_EL2_ASID => (ASID.mask(), 0),
        CMD_TLBI_EL2_VA => (TLBI_RANGE_D0 | ASID.mask(), TLBI_VA_D1),
        CMD_TLBI_EL2_VAA => (TLBI_RANGE_D0, TLBI_VA_D1),
        CMD_TLBI_S12_VMALL => (VMID.mask(), 0),
        CMD_TLBI_S2_IPA => (TLBI_RANGE_D0 | VMID.mask(), TLBI_IPA_D1),
        CMD_TLBI_NSNH_ALL => (0, 0),
        CMD_ATC_INV => (sid | sub | GLOBAL.mask(), ATC_SIZE.mask() | VA_MASK),
        CMD_PRI_RESP => (sid | sub, PRI_GRPID.mask() | PRI_RESP.mask()),
        CMD_RESUME => (
            sid | RESUME_AC.mask() | RESUME_AB.mask(),
            RESUME_STAG.mask(),
        ),
        CMD_STALL_TERM => (sid, 0),
        CMD_SYNC => (
            SYNC_CS.mask() | SYNC_MSH.mask() | SYNC_MSIATTR.mask() | SYNC_MSIDATA.mask(),
            MSIADDR_MASK,
        ),
        _ => return None,
    })
}

/// The opcode of a raw command (dword0 bits \[7:0\]).
pub const fn opcode(cmd: &[u64; 2]) -> u8 {
    cmd[0] as u8
}

/// The architectural name of an opcode (`"CMD_SYNC"`), `None` when the
/// opcode is reserved.
pub const fn opcode_name(opcode: u8) -> Option<&'static str> {
    Some(match opcode {
        CMD_PREFETCH_CONFIG => "CMD_PREFETCH_CONFIG",
        CMD_PREFETCH_ADDR => "CMD_PREFETCH_ADDR",
        CMD_CFGI_STE => "CMD_CFGI_STE",
        CMD_CFGI_STE_RANGE => "CMD_CFGI_STE_RANGE",
        CMD_CFGI_CD => "CMD_CFGI_CD",
        CMD_CFGI_CD_ALL => "CMD_CFGI_CD_ALL",
        CMD_CFGI_VMS_PIDM => "CMD_CFGI_VMS_PIDM",
        CMD_TLBI_NH_ALL => "CMD_TLBI_NH_ALL",
        CMD_TLBI_NH_ASID => "CMD_TLBI_NH_ASID",
        CMD_TLBI_NH_VA => "CMD_TLBI_NH_VA",
        CMD_TLBI_NH_VAA => "CMD_TLBI_NH_VAA",
        CMD_TLBI_EL3_ALL => "CMD_TLBI_EL3_ALL",
        CMD_TLBI_EL3_VA => "CMD_TLBI_EL3_VA",
        CMD_TLBI_EL2_ALL => "CMD_TLBI_EL2_ALL",
        CMD_TLBI_EL2_ASID => "CMD_TLBI_EL2_ASID",
        CMD_TLBI_EL2_VA => "CMD_TLBI_EL2_VA",
        CMD_TLBI_EL2_VAA => "CMD_TLBI_EL2_VAA",
        CMD_TLBI_S12_VMALL => "CMD_TLBI_S12_VMALL",
        CMD_TLBI_S2_IPA => "CMD_TLBI_S2_IPA",
        CMD_TLBI_NSNH_ALL => "CMD_TLBI_NSNH_ALL",
        CMD_ATC_INV => "CMD_ATC_INV",
        CMD_PRI_RESP => "CMD_PRI_RESP",
        CMD_RESUME => "CMD_RESUME",
        CMD_STALL_TERM => "CMD_STALL_TERM",
        CMD_SYNC => "CMD_SYNC",
        _ => return None,
    })
}

/// Why a command is refused. The model reports it as CMDQ_CONS.ERR =
/// CERROR_ILL ([`CommandError::cerror`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Reserved opcode, reserved field value, RES0 bits set, or a command
    /// this SMMU does not support.
    #[error("illegal command (opcode {opcode:#04x}): {reason}")]
    Illegal {
        /// The command's opcode.
        opcode: u8,
        /// What is wrong, for the log.
        reason: &'static str,
    },
}

impl CommandError {
    /// The CMDQ_CONS.ERR code to report ([`super::regs::CERROR_ILL`]).
    pub const fn cerror(&self) -> u32 {
        super::regs::CERROR_ILL
    }

    /// The opcode of the refused command.
    pub const fn opcode(&self) -> u8 {
        match self {
            CommandError::Illegal { opcode, .. } => *opcode,
        }
    }
}

const fn illegal(opcode: u8, reason: &'static str) -> CommandError {
    CommandError::Illegal { opcode, reason }
}

/// CMD_SYNC completion signal (CS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncCs {
    /// SIG_NONE (0).
    None,
    /// SIG_IRQ (1): raise the CMD_SYNC interrupt / write the MSI.
    Irq,
    /// SIG_SEV (2): send a WFE wake-up event.
    Sev,
}

impl SyncCs {
    /// The CS field value.
    pub const fn bits(self) -> u64 {
        match self {
            SyncCs::None => 0,
            SyncCs::Irq => 1,
            SyncCs::Sev => 2,
        }
    }
}

/// Range and level hints of a TLBI by address (`NUM`, `SCALE`, `Leaf`,
/// `TTL`, `TG`, `Addr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlbiRange {
    /// NUM\[16:12\]: range multiplier (range = (NUM + 1) × 2^SCALE granules).
    pub num: u8,
    /// SCALE\[25:20\].
    pub scale: u8,
    /// Leaf: only last-level entries need invalidating.
    pub leaf: bool,
    /// TTL128 (dword1 bit 7).
    pub ttl128: bool,
    /// TTL\[9:8\]: level hint.
    pub ttl: u8,
    /// TG\[11:10\]: granule (0 = no range/TTL, 1 = 4K, 2 = 16K, 3 = 64K).
    pub tg: u8,
    /// Address: VA\[63:12\], or IPA\[55:12\] for TLBI_S2_IPA.
    pub addr: u64,
}

impl TlbiRange {
    /// A single-address invalidation without range or level hints.
    pub const fn va(addr: u64, leaf: bool) -> TlbiRange {
        TlbiRange {
            num: 0,
            scale: 0,
            leaf,
            ttl128: false,
            ttl: 0,
            tg: 0,
            addr,
        }
    }

    /// Number of granules covered when TG != 0: `(NUM + 1) << SCALE`
    /// (saturating); 1 when TG == 0.
    pub const fn granules(&self) -> u64 {
        if self.tg == 0 {
            return 1;
        }
        let n = self.num as u64 + 1;
        if self.scale >= 58 {
            u64::MAX
        } else {
            n << self.scale
        }
    }

    const fn decode(cmd: &[u64; 2], addr_mask: u64) -> TlbiRange {
        TlbiRange {
            num: NUM.get(cmd[0]) as u8,
            scale: SCALE.get(cmd[0]) as u8,
            leaf: LEAF.is_set(cmd[1]),
            ttl128: TTL128.is_set(cmd[1]),
            ttl: TTL.get(cmd[1]) as u8,
            tg: TG.get(cmd[1]) as u8,
            addr: cmd[1] & addr_mask,
        }
    }

    const fn encode(&self, addr_mask: u64) -> (u64, u64) {
        let d0 = NUM.prep(self.num as u64) | SCALE.prep(self.scale as u64);
        let d1 = LEAF.prep(self.leaf as u64)
            | TTL128.prep(self.ttl128 as u64)
            | TTL.prep(self.ttl as u64)
            | TG.prep(self.tg as u64)
            | (self.addr & addr_mask);
        (d0, d1)
    }
}

/// A decoded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// CMD_PREFETCH_CONFIG(StreamID, SubstreamID, SSV).
    PrefetchConfig {
        /// StreamID.
        sid: u32,
        /// SSV: `ssid` is valid.
        ssv: bool,
        /// SubstreamID\[19:0\].
        ssid: u32,
    },
    /// CMD_PREFETCH_ADDR(StreamID, SubstreamID, SSV, Addr, Size, Stride).
    PrefetchAddr {
        /// StreamID.
        sid: u32,
        /// SSV.
        ssv: bool,
        /// SubstreamID\[19:0\].
        ssid: u32,
        /// Size\[4:0\].
        size: u8,
        /// Stride\[9:5\].
        stride: u8,
        /// Addr\[63:12\].
        addr: u64,
    },
    /// CMD_CFGI_STE(StreamID, Leaf).
    CfgiSte {
        /// StreamID.
        sid: u32,
        /// Leaf: L1STD need not be invalidated.
        leaf: bool,
    },
    /// CMD_CFGI_STE_RANGE(StreamID, Range): StreamIDs
    /// `sid & !(2^(range+1) - 1)` ..= that `+ 2^(range+1) - 1`; Range 31 is
    /// CMD_CFGI_ALL.
    CfgiSteRange {
        /// StreamID (its low Range + 1 bits are ignored).
        sid: u32,
        /// Range\[4:0\].
        range: u8,
    },
    /// CMD_CFGI_CD(StreamID, SubstreamID, Leaf).
    CfgiCd {
        /// StreamID.
        sid: u32,
        /// SubstreamID\[19:0\] (the CD table index).
        ssid: u32,
        /// Leaf: L1CD need not be invalidated.
        leaf: bool,
    },
    /// CMD_CFGI_CD_ALL(StreamID).
    CfgiCdAll {
        /// StreamID.
        sid: u32,
    },
    /// CMD_CFGI_VMS_PIDM(VMID).
    CfgiVmsPidm {
        /// VMID.
        vmid: u16,
    },
    /// CMD_TLBI_NH_ALL(VMID).
    TlbiNhAll {
        /// VMID.
        vmid: u16,
    },
    /// CMD_TLBI_NH_ASID(VMID, ASID).
    TlbiNhAsid {
        /// VMID.
        vmid: u16,
        /// ASID.
        asid: u16,
    },
    /// CMD_TLBI_NH_VA(VMID, ASID, Addr, Leaf).
    TlbiNhVa {
        /// VMID.
        vmid: u16,
        /// ASID.
        asid: u16,
        /// Address and range.
        range: TlbiRange,
    },
    /// CMD_TLBI_NH_VAA(VMID, Addr, Leaf).
    TlbiNhVaa {
        /// VMID.
        vmid: u16,
        /// Address and range.
        range: TlbiRange,
    },
    /// CMD_TLBI_EL3_ALL.
    TlbiEl3All,
    /// CMD_TLBI_EL3_VA(Addr, Leaf).
    TlbiEl3Va {
        /// Address and range.
        range: TlbiRange,
    },
    /// CMD_TLBI_EL2_ALL.
    TlbiEl2All,
    /// CMD_TLBI_EL2_ASID(ASID).
    TlbiEl2Asid {
        /// ASID.
        asid: u16,
    },
    /// CMD_TLBI_EL2_VA(ASID, Addr, Leaf).
    TlbiEl2Va {
        /// ASID.
        asid: u16,
        /// Address and range.
        range: TlbiRange,
    },
    /// CMD_TLBI_EL2_VAA(Addr, Leaf).
    TlbiEl2Vaa {
        /// Address and range.
        range: TlbiRange,
    },
    /// CMD_TLBI_S12_VMALL(VMID).
    TlbiS12Vmall {
        /// VMID.
        vmid: u16,
    },
    /// CMD_TLBI_S2_IPA(VMID, Addr, Leaf).
    TlbiS2Ipa {
        /// VMID.
        vmid: u16,
        /// IPA (addr is IPA\[55:12\]) and range.
        range: TlbiRange,
    },
    /// CMD_TLBI_NSNH_ALL.
    TlbiNsnhAll,
    /// CMD_ATC_INV(StreamID, SubstreamID, SSV, Global, Addr, Size).
    AtcInv {
        /// StreamID.
        sid: u32,
        /// SSV.
        ssv: bool,
        /// SubstreamID\[19:0\].
        ssid: u32,
        /// Global (with SSV).
        global: bool,
        /// Size\[5:0\]: span of 4 KiB × 2^Size (52 = everything).
        size: u8,
        /// Address\[63:12\].
        addr: u64,
    },
    /// CMD_PRI_RESP(StreamID, SubstreamID, SSV, PRGIndex, Resp).
    PriResp {
        /// StreamID.
        sid: u32,
        /// SSV.
        ssv: bool,
        /// SubstreamID\[19:0\].
        ssid: u32,
        /// PRGIndex\[8:0\].
        grpid: u16,
        /// Resp: 0 failure, 1 invalid request, 2 success (3 is illegal).
        resp: u8,
    },
    /// CMD_RESUME(StreamID, STAG, Action, Abort).
    Resume {
        /// StreamID.
        sid: u32,
        /// Action (bit 12): 1 retry, 0 terminate.
        retry: bool,
        /// Abort (bit 13): terminate with abort rather than RAZ/WI.
        abort: bool,
        /// STAG from the stall event.
        stag: u16,
    },
    /// CMD_STALL_TERM(StreamID).
    StallTerm {
        /// StreamID.
        sid: u32,
    },
    /// CMD_SYNC(ComplSignal, MSIAddress, MSIData, MSIWriteAttributes).
    Sync {
        /// CS: completion signal.
        cs: SyncCs,
        /// MSH\[23:22\]: MSI shareability.
        msh: u8,
        /// MSIAttr\[27:24\]: MSI memory attributes.
        msiattr: u8,
        /// MSIData\[63:32\].
        msidata: u32,
        /// MSIAddress\[55:2\] (0: no MSI write).
        msiaddr: u64,
    },
}

impl Command {
    /// CMD_CFGI_ALL: CMD_CFGI_STE_RANGE with Range 31 (`[0x4, 0x1f]`).
    pub const fn cfgi_all() -> Command {
        Command::CfgiSteRange {
            sid: 0,
            range: CFGI_ALL_RANGE,
        }
    }

    /// The CMD_SYNC Linux sends without MSIs: CS = SEV, MSH = Inner
    /// Shareable, MSIAttr = Inner/Outer write-back (dword0 0x0fc02046).
    pub const fn sync_sev() -> Command {
        Command::Sync {
            cs: SyncCs::Sev,
            msh: 3,
            msiattr: 0xf,
            msidata: 0,
            msiaddr: 0,
        }
    }

    /// The CMD_SYNC Linux sends with MSIs and coherent access: CS = IRQ,
    /// MSI data 0 written to `msiaddr` (the command's own queue slot).
    pub const fn sync_msi(msiaddr: u64) -> Command {
        Command::Sync {
            cs: SyncCs::Irq,
            msh: 3,
            msiattr: 0xf,
            msidata: 0,
            msiaddr,
        }
    }

    /// Decodes a command. Reserved opcodes, reserved field values
    /// (CMD_SYNC CS = 3, PRI_RESP Resp = 3) and non-zero RES0 bits
    /// (including SSec, bit 10, on this Non-secure queue) are
    /// [`CommandError::Illegal`]. Never panics.
    pub fn decode(cmd: [u64; 2]) -> Result<Command, CommandError> {
        let op = opcode(&cmd);
        let Some((ok0, ok1)) = defined_bits(op) else {
            return Err(illegal(op, "reserved opcode"));
        };
        let res0_d0 = cmd[0] & !(ok0 | OP.mask());
        if res0_d0 & SSEC.mask() != 0 {
            return Err(illegal(op, "SSec set on the Non-secure command queue"));
        }
        if res0_d0 != 0 {
            return Err(illegal(op, "RES0 bits set in dword 0"));
        }
        if cmd[1] & !ok1 != 0 {
            return Err(illegal(op, "RES0 bits set in dword 1"));
        }
        let (d0, d1) = (cmd[0], cmd[1]);
        let sid = SID.get(d0) as u32;
        let ssv = SSV.is_set(d0);
        let ssid = SSID.get(d0) as u32;
        let vmid = VMID.get(d0) as u16;
        let asid = ASID.get(d0) as u16;
        let va = TlbiRange::decode(&cmd, VA_MASK);
        Ok(match op {
            CMD_PREFETCH_CONFIG => Command::PrefetchConfig { sid, ssv, ssid },
            CMD_PREFETCH_ADDR => Command::PrefetchAddr {
                sid,
                ssv,
                ssid,
                size: PREFETCH_SIZE.get(d1) as u8,
                stride: PREFETCH_STRIDE.get(d1) as u8,
                addr: d1 & VA_MASK,
            },
            CMD_CFGI_STE => Command::CfgiSte {
                sid,
                leaf: LEAF.is_set(d1),
            },
            CMD_CFGI_STE_RANGE => Command::CfgiSteRange {
                sid,
                range: RANGE.get(d1) as u8,
            },
            CMD_CFGI_CD => Command::CfgiCd {
                sid,
                ssid,
                leaf: LEAF.is_set(d1),
            },
            CMD_CFGI_CD_ALL => Command::CfgiCdAll { sid },
            CMD_CFGI_VMS_PIDM => Command::CfgiVmsPidm { vmid },
            CMD_TLBI_NH_ALL => Command::TlbiNhAll { vmid },
            CMD_TLBI_NH_ASID => Command::TlbiNhAsid { vmid, asid },
            CMD_TLBI_NH_VA => Command::TlbiNhVa {
                vmid,
                asid,
                range: va,
            },
            CMD_TLBI_NH_VAA => Command::TlbiNhVaa { vmid, range: va },
            CMD_TLBI_EL3_ALL => Command::TlbiEl3All,
            CMD_TLBI_EL3_VA => Command::TlbiEl3Va { range: va },
            CMD_TLBI_EL2_ALL => Command::TlbiEl2All,
            CMD_TLBI_EL2_ASID => Command::TlbiEl2Asid { asid },
            CMD_TLBI_EL2_VA => Command::TlbiEl2Va { asid, range: va },
            CMD_TLBI_EL2_VAA => Command::TlbiEl2Vaa { range: va },
            CMD_TLBI_S12_VMALL => Command::TlbiS12Vmall { vmid },
            CMD_TLBI_S2_IPA => Command::TlbiS2Ipa {
                vmid,
                range: TlbiRange::decode(&cmd, IPA_MASK),
            },
            CMD_TLBI_NSNH_ALL => Command::TlbiNsnhAll,
            CMD_ATC_INV => Command::AtcInv {
                sid,
                ssv,
                ssid,
                global: GLOBAL.is_set(d0),
                size: ATC_SIZE.get(d1) as u8,
                addr: d1 & VA_MASK,
            },
            CMD_PRI_RESP => {
                let resp = PRI_RESP.get(d1) as u8;
                if resp == 3 {
                    return Err(illegal(op, "reserved PRI response 0b11"));
                }
                Command::PriResp {
                    sid,
                    ssv,
                    ssid,
                    grpid: PRI_GRPID.get(d1) as u16,
                    resp,
                }
            }
            CMD_RESUME => Command::Resume {
                sid,
                retry: RESUME_AC.is_set(d0),
                abort: RESUME_AB.is_set(d0),
                stag: RESUME_STAG.get(d1) as u16,
            },
            CMD_STALL_TERM => Command::StallTerm { sid },
            CMD_SYNC => {
                let cs = match SYNC_CS.get(d0) {
                    0 => SyncCs::None,
                    1 => SyncCs::Irq,
                    2 => SyncCs::Sev,
                    _ => return Err(illegal(op, "reserved CMD_SYNC completion signal 0b11")),
                };
                Command::Sync {
                    cs,
                    msh: SYNC_MSH.get(d0) as u8,
                    msiattr: SYNC_MSIATTR.get(d0) as u8,
                    msidata: SYNC_MSIDATA.get(d0) as u32,
                    msiaddr: d1 & MSIADDR_MASK,
                }
            }
            _ => return Err(illegal(op, "reserved opcode")),
        })
    }

    /// Encodes the command. Field values wider than their field are
    /// truncated; `encode(decode(x)) == x` for every `x` that decodes.
    pub const fn encode(&self) -> [u64; 2] {
        let op = self.opcode() as u64;
        let (d0, d1) = match *self {
            Command::PrefetchConfig { sid, ssv, ssid } => (sub_sid(sid, ssv, ssid), 0),
            Command::PrefetchAddr {
                sid,
                ssv,
                ssid,
                size,
                stride,
                addr,
            } => (
                sub_sid(sid, ssv, ssid),
                PREFETCH_SIZE.prep(size as u64)
                    | PREFETCH_STRIDE.prep(stride as u64)
                    | (addr & VA_MASK),
            ),
            Command::CfgiSte { sid, leaf } => (SID.prep(sid as u64), LEAF.prep(leaf as u64)),
            Command::CfgiSteRange { sid, range } => {
                (SID.prep(sid as u64), RANGE.prep(range as u64))
            }
            Command::CfgiCd { sid, ssid, leaf } => (
                SID.prep(sid as u64) | SSID.prep(ssid as u64),
                LEAF.prep(leaf as u64),
            ),
            Command::CfgiCdAll { sid } => (SID.prep(sid as u64), 0),
            Command::CfgiVmsPidm { vmid } | Command::TlbiNhAll { vmid } => {
                (VMID.prep(vmid as u64), 0)
            }
            Command::TlbiNhAsid { vmid, asid } => {
                (VMID.prep(vmid as u64) | ASID.prep(asid as u64), 0)
            }
            Command::TlbiNhVa { vmid, asid, range } => {
                let (d0, d1) = range.encode(VA_MASK);
                (d0 | VMID.prep(vmid as u64) | ASID.prep(asid as u64), d1)
            }
            Command::TlbiNhVaa { vmid, range } => {
                let (d0, d1) = range.encode(VA_MASK);
                (d0 | VMID.prep(vmid as u64), d1)
            }
            Command::TlbiEl3All | Command::TlbiEl2All | Command::TlbiNsnhAll => (0, 0),
            Command::TlbiEl3Va { range } | Command::TlbiEl2Vaa { range } => range.encode(VA_MASK),
            Command::TlbiEl2Asid { asid } => (ASID.prep(asid as u64), 0),
            Command::TlbiEl2Va { asid, range } => {
                let (d0, d1) = range.encode(VA_MASK);
                (d0 | ASID.prep(asid as u64), d1)
            }
            Command::TlbiS12Vmall { vmid } => (VMID.prep(vmid as u64), 0),
            Command::TlbiS2Ipa { vmid, range } => {
                let (d0, d1) = range.encode(IPA_MASK);
                (d0 | VMID.prep(vmid as u64), d1)
            }
            Command::AtcInv {
                sid,
                ssv,
                ssid,
                global,
                size,
                addr,
            } => (
                sub_sid(sid, ssv, ssid) | GLOBAL.prep(global as u64),
                ATC_SIZE.prep(size as u64) | (addr & VA_MASK),
            ),
            Command::PriResp {
                sid,
                ssv,
                ssid,
                grpid,
                resp,
            } => (
                sub_sid(sid, ssv, ssid),
                PRI_GRPID.prep(grpid as u64) | PRI_RESP.prep(resp as u64),
            ),
            Command::Resume {
                sid,
                retry,
                abort,
                stag,
            } => (
                SID.prep(sid as u64) | RESUME_AC.prep(retry as u64) | RESUME_AB.prep(abort as u64),
                RESUME_STAG.prep(stag as u64),
            ),
            Command::StallTerm { sid } => (SID.prep(sid as u64), 0),
            Command::Sync {
                cs,
                msh,
                msiattr,
                msidata,
                msiaddr,
            } => (
                SYNC_CS.prep(cs.bits())
                    | SYNC_MSH.prep(msh as u64)
                    | SYNC_MSIATTR.prep(msiattr as u64)
                    | SYNC_MSIDATA.prep(msidata as u64),
                msiaddr & MSIADDR_MASK,
            ),
        };
        [op | d0, d1]
    }

    /// The opcode.
    pub const fn opcode(&self) -> u8 {
        match self {
            Command::PrefetchConfig { .. } => CMD_PREFETCH_CONFIG,
            Command::PrefetchAddr { .. } => CMD_PREFETCH_ADDR,
            Command::CfgiSte { .. } => CMD_CFGI_STE,
            Command::CfgiSteRange { .. } => CMD_CFGI_STE_RANGE,
            Command::CfgiCd { .. } => CMD_CFGI_CD,
            Command::CfgiCdAll { .. } => CMD_CFGI_CD_ALL,
            Command::CfgiVmsPidm { .. } => CMD_CFGI_VMS_PIDM,
            Command::TlbiNhAll { .. } => CMD_TLBI_NH_ALL,
            Command::TlbiNhAsid { .. } => CMD_TLBI_NH_ASID,
            Command::TlbiNhVa { .. } => CMD_TLBI_NH_VA,
            Command::TlbiNhVaa { .. } => CMD_TLBI_NH_VAA,
            Command::TlbiEl3All => CMD_TLBI_EL3_ALL,
            Command::TlbiEl3Va { .. } => CMD_TLBI_EL3_VA,
            Command::TlbiEl2All => CMD_TLBI_EL2_ALL,
            Command::TlbiEl2Asid { .. } => CMD_TLBI_EL2_ASID,
            Command::TlbiEl2Va { .. } => CMD_TLBI_EL2_VA,
            Command::TlbiEl2Vaa { .. } => CMD_TLBI_EL2_VAA,
            Command::TlbiS12Vmall { .. } => CMD_TLBI_S12_VMALL,
            Command::TlbiS2Ipa { .. } => CMD_TLBI_S2_IPA,
            Command::TlbiNsnhAll => CMD_TLBI_NSNH_ALL,
            Command::AtcInv { .. } => CMD_ATC_INV,
            Command::PriResp { .. } => CMD_PRI_RESP,
            Command::Resume { .. } => CMD_RESUME,
            Command::StallTerm { .. } => CMD_STALL_TERM,
            Command::Sync { .. } => CMD_SYNC,
        }
    }

    /// The architectural name (`"CMD_SYNC"`).
    pub const fn name(&self) -> &'static str {
        match opcode_name(self.opcode()) {
            Some(name) => name,
            None => "CMD_RESERVED",
        }
    }

    /// True exactly for the commands the kernel's nested invalidation
    /// (`IOMMU_HWPT_INVALIDATE` on a vIOMMU, `arm_vsmmu_convert_user_cmd`)
    /// accepts: TLBI_NSNH_ALL, TLBI_NH_VA, TLBI_NH_VAA, TLBI_NH_ALL,
    /// TLBI_NH_ASID, ATC_INV, CFGI_CD, CFGI_CD_ALL.
    pub const fn is_host_invalidation(&self) -> bool {
        matches!(
            self,
            Command::TlbiNsnhAll
                | Command::TlbiNhVa { .. }
                | Command::TlbiNhVaa { .. }
                | Command::TlbiNhAll { .. }
                | Command::TlbiNhAsid { .. }
                | Command::AtcInv { .. }
                | Command::CfgiCd { .. }
                | Command::CfgiCdAll { .. }
        )
    }

    /// The StreamID the command names, if any.
    pub const fn sid(&self) -> Option<u32> {
        match *self {
            Command::PrefetchConfig { sid, .. }
            | Command::PrefetchAddr { sid, .. }
            | Command::CfgiSte { sid, .. }
            | Command::CfgiSteRange { sid, .. }
            | Command::CfgiCd { sid, .. }
            | Command::CfgiCdAll { sid }
            | Command::AtcInv { sid, .. }
            | Command::PriResp { sid, .. }
            | Command::Resume { sid, .. }
            | Command::StallTerm { sid } => Some(sid),
            _ => None,
        }
    }

    /// The feature-dependent CERROR_ILL rules for a Non-secure command
    /// queue: EL3 TLBIs are always illegal; EL2 TLBIs need IDR0.Hyp; stage-2
    /// TLBIs need IDR0.S2P; stage-1 TLBIs and CFGI_CD* need IDR0.S1P;
    /// CFGI_VMS_PIDM needs IDR3.MPAM; ATC_INV needs IDR0.ATS; PRI_RESP needs
    /// IDR0.PRI; RESUME and STALL_TERM need a stall model.
    ///
    /// Not enforced (accepted): the reserved TLBI combination TG != 0 with
    /// NUM = SCALE = TTL = 0, which older Linux guests send and QEMU
    /// accepts.
    pub const fn check(&self, caps: &CommandCaps) -> Result<(), CommandError> {
        let op = self.opcode();
        let reason = match self {
            Command::TlbiEl3All | Command::TlbiEl3Va { .. } => {
                Some("EL3 TLB invalidation on the Non-secure command queue")
            }
            Command::TlbiEl2All
            | Command::TlbiEl2Asid { .. }
            | Command::TlbiEl2Va { .. }
            | Command::TlbiEl2Vaa { .. }
                if !caps.hyp =>
            {
                Some("EL2 TLB invalidation without IDR0.Hyp")
            }
            Command::TlbiS12Vmall { .. } | Command::TlbiS2Ipa { .. } if !caps.s2p => {
                Some("stage-2 TLB invalidation without stage 2")
            }
            Command::TlbiNhAll { .. }
            | Command::TlbiNhAsid { .. }
            | Command::TlbiNhVa { .. }
            | Command::TlbiNhVaa { .. }
            | Command::CfgiCd { .. }
            | Command::CfgiCdAll { .. }
                if !caps.s1p =>
            {
                Some("stage-1 command without stage 1")
            }
            Command::CfgiVmsPidm { .. } if !caps.mpam => Some("CFGI_VMS_PIDM without MPAM"),
            Command::AtcInv { .. } if !caps.ats => Some("ATC_INV without ATS"),
            Command::PriResp { .. } if !caps.pri => Some("PRI_RESP without PRI"),
            Command::Resume { .. } | Command::StallTerm { .. } if !caps.stalls => {
                Some("stall command without a stall model")
            }
            _ => None,
        };
        match reason {
            Some(reason) => Err(illegal(op, reason)),
            None => Ok(()),
        }
    }
}

const fn sub_sid(sid: u32, ssv: bool, ssid: u32) -> u64 {
    SID.prep(sid as u64) | SSV.prep(ssv as u64) | SSID.prep(ssid as u64)
}

/// The features [`Command::check`] depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CommandCaps {
    /// IDR0.S1P.
    pub s1p: bool,
    /// IDR0.S2P.
    pub s2p: bool,
    /// IDR0.Hyp.
    pub hyp: bool,
    /// IDR0.ATS.
    pub ats: bool,
    /// IDR0.PRI.
    pub pri: bool,
    /// IDR0.STALL_MODEL != 0b01 (stalls possible).
    pub stalls: bool,
    /// IDR3.MPAM.
    pub mpam: bool,
}

impl CommandCaps {
    /// The features an SMMU with these ID registers advertises.
    pub const fn from_idr(idr0: u32, idr3: u32) -> CommandCaps {
        CommandCaps {
            s1p: IDR0_S1P.is_set32(idr0),
            s2p: IDR0_S2P.is_set32(idr0),
            hyp: IDR0_HYP.is_set32(idr0),
            ats: IDR0_ATS.is_set32(idr0),
            pri: IDR0_PRI.is_set32(idr0),
            stalls: IDR0_STALL_MODEL.get32(idr0) != IDR0_STALL_MODEL_NO_STALL,
            mpam: IDR3_MPAM.is_set32(idr3),
        }
    }
}

#[cfg(test)]
mod tests;
