//! The SMMUv3 register file: offsets, fields, writable masks and the reset
//! values of QEMU 7.2's `-machine virt,iommu=smmuv3`.
//!
//! Offsets are byte offsets into the 0x20000-byte region (page 0 at 0x0,
//! page 1 at 0x10000). Field positions follow the architecture
//! (IHI 0070) as Linux `arm-smmu-v3.h` and QEMU `smmuv3-internal.h` name
//! them. A `*_WRITABLE` mask holds the bits software can change; every other
//! bit of the register is RES0 (or read-only) and a write leaves it alone.

use super::bits::{genmask, Field};

// ---------------------------------------------------------------------------
// Region geometry
// ---------------------------------------------------------------------------

/// Offset of register page 0.
pub const PAGE0: u64 = 0x0;
/// Offset of register page 1.
pub const PAGE1: u64 = 0x1_0000;
/// Size of the whole register region (two 64 KiB pages).
pub const REGION_SIZE: u64 = 0x2_0000;

// ---------------------------------------------------------------------------
// Offsets
// ---------------------------------------------------------------------------

/// `SMMU_IDR0`: features.
pub const IDR0: u64 = 0x00;
/// `SMMU_IDR1`: table and queue sizes.
pub const IDR1: u64 = 0x04;
/// `SMMU_IDR2`: VATOS (0 here).
pub const IDR2: u64 = 0x08;
/// `SMMU_IDR3`: more features.
pub const IDR3: u64 = 0x0c;
/// `SMMU_IDR4`: IMPLEMENTATION DEFINED (0 here).
pub const IDR4: u64 = 0x10;
/// `SMMU_IDR5`: address sizes and granules.
pub const IDR5: u64 = 0x14;
/// `SMMU_IIDR`: implementation identification.
pub const IIDR: u64 = 0x18;
/// `SMMU_AIDR`: architecture revision.
pub const AIDR: u64 = 0x1c;
/// `SMMU_CR0`: enables.
pub const CR0: u64 = 0x20;
/// `SMMU_CR0ACK`: enables, as they took effect.
pub const CR0ACK: u64 = 0x24;
/// `SMMU_CR1`: table and queue memory attributes.
pub const CR1: u64 = 0x28;
/// `SMMU_CR2`: E2H, RECINVSID, PTM.
pub const CR2: u64 = 0x2c;
/// `SMMU_STATUSR`.
pub const STATUSR: u64 = 0x40;
/// `SMMU_GBPA`: global bypass attributes.
pub const GBPA: u64 = 0x44;
/// `SMMU_AGBPA`: IMPLEMENTATION DEFINED alternative bypass attributes.
pub const AGBPA: u64 = 0x48;
/// `SMMU_IRQ_CTRL`: interrupt enables.
pub const IRQ_CTRL: u64 = 0x50;
/// `SMMU_IRQ_CTRLACK`.
pub const IRQ_CTRLACK: u64 = 0x54;
/// `SMMU_GERROR`: active global errors (toggle bits).
pub const GERROR: u64 = 0x60;
/// `SMMU_GERRORN`: acknowledged global errors.
pub const GERRORN: u64 = 0x64;
/// `SMMU_GERROR_IRQ_CFG0` (64-bit): GERROR MSI address.
pub const GERROR_IRQ_CFG0: u64 = 0x68;
/// `SMMU_GERROR_IRQ_CFG1`: GERROR MSI data.
pub const GERROR_IRQ_CFG1: u64 = 0x70;
/// `SMMU_GERROR_IRQ_CFG2`: GERROR MSI attributes.
pub const GERROR_IRQ_CFG2: u64 = 0x74;
/// `SMMU_STRTAB_BASE` (64-bit).
pub const STRTAB_BASE: u64 = 0x80;
/// `SMMU_STRTAB_BASE_CFG`.
pub const STRTAB_BASE_CFG: u64 = 0x88;
/// `SMMU_CMDQ_BASE` (64-bit).
pub const CMDQ_BASE: u64 = 0x90;
/// `SMMU_CMDQ_PROD`.
pub const CMDQ_PROD: u64 = 0x98;
/// `SMMU_CMDQ_CONS`.
pub const CMDQ_CONS: u64 = 0x9c;
/// `SMMU_EVENTQ_BASE` (64-bit).
pub const EVENTQ_BASE: u64 = 0xa0;
/// `SMMU_EVENTQ_PROD` as aliased in page 0 (QEMU; Linux with
/// `PAGE0_REGS_ONLY`). Architecturally at [`EVENTQ_PROD_PAGE1`].
pub const EVENTQ_PROD: u64 = 0xa8;
/// `SMMU_EVENTQ_CONS` as aliased in page 0. Architecturally at
/// [`EVENTQ_CONS_PAGE1`].
pub const EVENTQ_CONS: u64 = 0xac;
/// `SMMU_EVENTQ_IRQ_CFG0` (64-bit).
pub const EVENTQ_IRQ_CFG0: u64 = 0xb0;
/// `SMMU_EVENTQ_IRQ_CFG1`.
pub const EVENTQ_IRQ_CFG1: u64 = 0xb8;
/// `SMMU_EVENTQ_IRQ_CFG2`.
pub const EVENTQ_IRQ_CFG2: u64 = 0xbc;
/// `SMMU_PRIQ_BASE` (64-bit).
pub const PRIQ_BASE: u64 = 0xc0;
/// `SMMU_PRIQ_PROD` as aliased in page 0. Architecturally at
/// [`PRIQ_PROD_PAGE1`].
pub const PRIQ_PROD: u64 = 0xc8;
/// `SMMU_PRIQ_CONS` as aliased in page 0. Architecturally at
/// [`PRIQ_CONS_PAGE1`].
pub const PRIQ_CONS: u64 = 0xcc;
/// `SMMU_PRIQ_IRQ_CFG0` (64-bit).
pub const PRIQ_IRQ_CFG0: u64 = 0xd0;
/// `SMMU_PRIQ_IRQ_CFG1`.
pub const PRIQ_IRQ_CFG1: u64 = 0xd8;
/// `SMMU_PRIQ_IRQ_CFG2`.
pub const PRIQ_IRQ_CFG2: u64 = 0xdc;
/// `SMMU_GATOS_CTRL` (only with IDR0.ATOS; not advertised here).
pub const GATOS_CTRL: u64 = 0x100;
/// `SMMU_GATOS_SID` (64-bit).
pub const GATOS_SID: u64 = 0x108;
/// `SMMU_GATOS_ADDR` (64-bit).
pub const GATOS_ADDR: u64 = 0x110;
/// `SMMU_GATOS_PAR` (64-bit).
pub const GATOS_PAR: u64 = 0x118;
/// `SMMU_EVENTQ_PROD` in page 1 (where Linux accesses it).
pub const EVENTQ_PROD_PAGE1: u64 = PAGE1 + EVENTQ_PROD;
/// `SMMU_EVENTQ_CONS` in page 1.
pub const EVENTQ_CONS_PAGE1: u64 = PAGE1 + EVENTQ_CONS;
/// `SMMU_PRIQ_PROD` in page 1.
pub const PRIQ_PROD_PAGE1: u64 = PAGE1 + PRIQ_PROD;
/// `SMMU_PRIQ_CONS` in page 1.
pub const PRIQ_CONS_PAGE1: u64 = PAGE1 + PRIQ_CONS;

/// First of the twelve CoreSight-style ID registers (PIDR4..PIDR7,
/// PIDR0..PIDR3, CIDR0..CIDR3), each 32 bits, up to 0xffc.
pub const IDREGS_BASE: u64 = 0xfd0;
/// The ID register values QEMU returns (an Arm MMU-600 r0p1), in offset
/// order from [`IDREGS_BASE`].
pub const IDREGS: [u32; 12] = [
    0x04, 0, 0, 0, 0x84, 0xb4, 0xf0, 0x10, 0x0d, 0xf0, 0x05, 0xb1,
];

/// Maps a page-1 alias of a queue pointer register to its page-0 offset
/// (0x100a8 → [`EVENTQ_PROD`] and so on); any other offset is returned
/// unchanged. The model then handles one offset per register.
pub const fn canonical_offset(offset: u64) -> u64 {
    match offset {
        EVENTQ_PROD_PAGE1 | EVENTQ_CONS_PAGE1 | PRIQ_PROD_PAGE1 | PRIQ_CONS_PAGE1 => offset - PAGE1,
        other => other,
    }
}

/// True for the 64-bit registers (which also accept two 32-bit halves).
pub const fn is_64bit(offset: u64) -> bool {
    matches!(
        offset,
        GERROR_IRQ_CFG0
            | STRTAB_BASE
            | CMDQ_BASE
            | EVENTQ_BASE
            | EVENTQ_IRQ_CFG0
            | PRIQ_BASE
            | PRIQ_IRQ_CFG0
            | GATOS_SID
            | GATOS_ADDR
            | GATOS_PAR
    )
}

// ---------------------------------------------------------------------------
// IDR0
// ---------------------------------------------------------------------------

/// IDR0.S2P: stage 2 translation supported.
pub const IDR0_S2P: Field = Field::bit(0);
/// IDR0.S1P: stage 1 translation supported.
pub const IDR0_S1P: Field = Field::bit(1);
/// IDR0.TTF\[3:2\]: translation table formats.
pub const IDR0_TTF: Field = Field::new(2, 2);
/// IDR0.TTF value: AArch64 (VMSAv8-64) only.
pub const IDR0_TTF_AARCH64: u32 = 2;
/// IDR0.TTF value: AArch32 LPAE and AArch64.
pub const IDR0_TTF_AARCH32_64: u32 = 3;
/// IDR0.COHACC: coherent access to tables and queues.
pub const IDR0_COHACC: Field = Field::bit(4);
/// IDR0.HTTU\[7:6\]: hardware translation table updates.
pub const IDR0_HTTU: Field = Field::new(6, 2);
/// IDR0.HTTU value: no HTTU.
pub const IDR0_HTTU_NONE: u32 = 0;
/// IDR0.HTTU value: access flag updates.
pub const IDR0_HTTU_ACCESS: u32 = 1;
/// IDR0.HTTU value: access flag and dirty state updates.
pub const IDR0_HTTU_ACCESS_DIRTY: u32 = 2;
/// IDR0.Hyp: EL2 StreamWorld supported.
pub const IDR0_HYP: Field = Field::bit(9);
/// IDR0.ATS: PCIe ATS supported.
pub const IDR0_ATS: Field = Field::bit(10);
/// IDR0.ASID16: 16-bit ASIDs.
pub const IDR0_ASID16: Field = Field::bit(12);
/// IDR0.MSI: MSIs supported.
pub const IDR0_MSI: Field = Field::bit(13);
/// IDR0.SEV: WFE wake-up events supported.
pub const IDR0_SEV: Field = Field::bit(14);
/// IDR0.PRI: page request interface supported.
pub const IDR0_PRI: Field = Field::bit(16);
/// IDR0.VMID16: 16-bit VMIDs.
pub const IDR0_VMID16: Field = Field::bit(18);
/// IDR0.CD2L: 2-level CD tables supported.
pub const IDR0_CD2L: Field = Field::bit(19);
/// IDR0.TTENDIAN\[22:21\]: translation table endianness.
pub const IDR0_TTENDIAN: Field = Field::new(21, 2);
/// IDR0.TTENDIAN value: mixed endian.
pub const IDR0_TTENDIAN_MIXED: u32 = 0;
/// IDR0.TTENDIAN value: little endian only.
pub const IDR0_TTENDIAN_LE: u32 = 2;
/// IDR0.TTENDIAN value: big endian only.
pub const IDR0_TTENDIAN_BE: u32 = 3;
/// IDR0.STALL_MODEL\[25:24\].
pub const IDR0_STALL_MODEL: Field = Field::new(24, 2);
/// IDR0.STALL_MODEL value: stall and terminate supported.
pub const IDR0_STALL_MODEL_STALL: u32 = 0;
/// IDR0.STALL_MODEL value: terminate only (no stalls).
pub const IDR0_STALL_MODEL_NO_STALL: u32 = 1;
/// IDR0.STALL_MODEL value: stall forced.
pub const IDR0_STALL_MODEL_FORCE: u32 = 2;
/// IDR0.TERM_MODEL: terminated transactions always abort (CD.A must be 1).
pub const IDR0_TERM_MODEL: Field = Field::bit(26);
/// IDR0.ST_LEVEL\[28:27\]: multi-level stream table support.
pub const IDR0_ST_LVL: Field = Field::new(27, 2);
/// IDR0.ST_LEVEL value: linear stream table only.
pub const IDR0_ST_LVL_LINEAR: u32 = 0;
/// IDR0.ST_LEVEL value: 2-level stream tables supported.
pub const IDR0_ST_LVL_2LVL: u32 = 1;

// ---------------------------------------------------------------------------
// IDR1
// ---------------------------------------------------------------------------

/// IDR1.SIDSIZE\[5:0\]: StreamID bits.
pub const IDR1_SIDSIZE: Field = Field::new(0, 6);
/// IDR1.SSIDSIZE\[10:6\]: SubstreamID bits.
pub const IDR1_SSIDSIZE: Field = Field::new(6, 5);
/// IDR1.PRIQS\[15:11\]: log2 of the maximum PRI queue entries.
pub const IDR1_PRIQS: Field = Field::new(11, 5);
/// IDR1.EVENTQS\[20:16\]: log2 of the maximum event queue entries.
pub const IDR1_EVTQS: Field = Field::new(16, 5);
/// IDR1.CMDQS\[25:21\]: log2 of the maximum command queue entries.
pub const IDR1_CMDQS: Field = Field::new(21, 5);
/// IDR1.ATTR_TYPES_OVR: incoming attribute overrides supported.
pub const IDR1_ATTR_TYPES_OVR: Field = Field::bit(27);
/// IDR1.REL: base addresses are relative (Linux refuses).
pub const IDR1_REL: Field = Field::bit(28);
/// IDR1.QUEUES_PRESET: queue bases are fixed (Linux refuses).
pub const IDR1_QUEUES_PRESET: Field = Field::bit(29);
/// IDR1.TABLES_PRESET: stream table base is fixed (Linux refuses).
pub const IDR1_TABLES_PRESET: Field = Field::bit(30);

// ---------------------------------------------------------------------------
// IDR3, IDR5, AIDR
// ---------------------------------------------------------------------------

/// IDR3.HAD: hierarchical attribute disable supported.
pub const IDR3_HAD: Field = Field::bit(2);
/// IDR3.MPAM: MPAM supported (CMD_CFGI_VMS_PIDM).
pub const IDR3_MPAM: Field = Field::bit(7);
/// IDR3.STT: small translation tables (T0SZ up to 48).
pub const IDR3_STT: Field = Field::bit(9);
/// IDR3.RIL: range invalidation supported.
pub const IDR3_RIL: Field = Field::bit(10);
/// IDR3.BBML\[12:11\]: break-before-make level.
pub const IDR3_BBML: Field = Field::new(11, 2);

/// IDR5.OAS\[2:0\]: output address size.
pub const IDR5_OAS: Field = Field::new(0, 3);
/// IDR5.OAS value: 32 bits.
pub const IDR5_OAS_32: u32 = 0;
/// IDR5.OAS value: 36 bits.
pub const IDR5_OAS_36: u32 = 1;
/// IDR5.OAS value: 40 bits.
pub const IDR5_OAS_40: u32 = 2;
/// IDR5.OAS value: 42 bits.
pub const IDR5_OAS_42: u32 = 3;
/// IDR5.OAS value: 44 bits.
pub const IDR5_OAS_44: u32 = 4;
/// IDR5.OAS value: 48 bits.
pub const IDR5_OAS_48: u32 = 5;
/// IDR5.OAS value: 52 bits.
pub const IDR5_OAS_52: u32 = 6;
/// IDR5.GRAN4K: 4 KiB granule supported.
pub const IDR5_GRAN4K: Field = Field::bit(4);
/// IDR5.GRAN16K: 16 KiB granule supported.
pub const IDR5_GRAN16K: Field = Field::bit(5);
/// IDR5.GRAN64K: 64 KiB granule supported.
pub const IDR5_GRAN64K: Field = Field::bit(6);
/// IDR5.VAX\[11:10\]: virtual address extension.
pub const IDR5_VAX: Field = Field::new(10, 2);
/// IDR5.VAX value: 52-bit VAs with the 64 KiB granule.
pub const IDR5_VAX_52: u32 = 1;
/// IDR5.STALL_MAX\[31:16\].
pub const IDR5_STALL_MAX: Field = Field::new(16, 16);

/// Number of address bits of an IDR5.OAS (or CD.IPS, STE.S2PS) encoding:
/// 0..=5 → 32, 36, 40, 42, 44, 48; 6 → 52; 7 → 56 (SMMUv3.4; earlier
/// revisions treat it as reserved).
pub const fn oas_bits(encoding: u32) -> u8 {
    match encoding & 7 {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        6 => 52,
        _ => 56,
    }
}

/// AIDR.ArchMinorRev\[3:0\].
pub const AIDR_ARCH_MINOR: Field = Field::new(0, 4);
/// AIDR.ArchMajorRev\[7:4\] (0 = SMMUv3).
pub const AIDR_ARCH_MAJOR: Field = Field::new(4, 4);

// ---------------------------------------------------------------------------
// CR0 / CR0ACK, CR1, CR2, STATUSR
// ---------------------------------------------------------------------------

/// CR0.SMMUEN.
pub const CR0_SMMUEN: Field = Field::bit(0);
/// CR0.PRIQEN.
pub const CR0_PRIQEN: Field = Field::bit(1);
/// CR0.EVENTQEN.
pub const CR0_EVTQEN: Field = Field::bit(2);
/// CR0.CMDQEN.
pub const CR0_CMDQEN: Field = Field::bit(3);
/// CR0.ATSCHK.
pub const CR0_ATSCHK: Field = Field::bit(4);
/// CR0.VMW\[8:6\]: VMID wildcard (only with IDR0.VMW).
pub const CR0_VMW: Field = Field::new(6, 3);
/// Writable CR0 bits: SMMUEN, PRIQEN, EVENTQEN, CMDQEN, ATSCHK, VMW.
/// Bits 5 and 9..31 are RES0 (DPT_WALK_EN, bit 10, needs IDR3.DPT).
pub const CR0_WRITABLE: u32 = 0x1df;

/// CR1.QUEUE_IC\[1:0\].
pub const CR1_QUEUE_IC: Field = Field::new(0, 2);
/// CR1.QUEUE_OC\[3:2\].
pub const CR1_QUEUE_OC: Field = Field::new(2, 2);
/// CR1.QUEUE_SH\[5:4\].
pub const CR1_QUEUE_SH: Field = Field::new(4, 2);
/// CR1.TABLE_IC\[7:6\].
pub const CR1_TABLE_IC: Field = Field::new(6, 2);
/// CR1.TABLE_OC\[9:8\].
pub const CR1_TABLE_OC: Field = Field::new(8, 2);
/// CR1.TABLE_SH\[11:10\].
pub const CR1_TABLE_SH: Field = Field::new(10, 2);
/// Writable CR1 bits \[11:0\].
pub const CR1_WRITABLE: u32 = 0xfff;

/// CR2.E2H.
pub const CR2_E2H: Field = Field::bit(0);
/// CR2.RECINVSID: record C_BAD_STREAMID.
pub const CR2_RECINVSID: Field = Field::bit(1);
/// CR2.PTM: private TLB maintenance.
pub const CR2_PTM: Field = Field::bit(2);
/// Writable CR2 bits \[2:0\].
pub const CR2_WRITABLE: u32 = 0x7;

/// STATUSR.DORMANT (read-only).
pub const STATUSR_DORMANT: Field = Field::bit(0);

// ---------------------------------------------------------------------------
// GBPA
// ---------------------------------------------------------------------------

/// GBPA.MEMATTR\[3:0\].
pub const GBPA_MEMATTR: Field = Field::new(0, 4);
/// GBPA.MTCFG.
pub const GBPA_MTCFG: Field = Field::bit(4);
/// GBPA.ALLOCCFG\[11:8\].
pub const GBPA_ALLOCCFG: Field = Field::new(8, 4);
/// GBPA.SHCFG\[13:12\].
pub const GBPA_SHCFG: Field = Field::new(12, 2);
/// GBPA.PRIVCFG\[17:16\].
pub const GBPA_PRIVCFG: Field = Field::new(16, 2);
/// GBPA.INSTCFG\[19:18\].
pub const GBPA_INSTCFG: Field = Field::new(18, 2);
/// GBPA.ABORT: abort all incoming transactions while SMMUEN = 0.
pub const GBPA_ABORT: Field = Field::bit(20);
/// GBPA.Update: written 1 with the new value; the SMMU clears it when the
/// update has taken effect.
pub const GBPA_UPDATE: Field = Field::bit(31);
/// Writable GBPA bits: every field above plus UPDATE.
pub const GBPA_WRITABLE: u32 = 0x801f_3f1f;

// ---------------------------------------------------------------------------
// IRQ_CTRL, GERROR, IRQ_CFGn
// ---------------------------------------------------------------------------

/// IRQ_CTRL.GERROR_IRQEN.
pub const IRQ_CTRL_GERROR_IRQEN: Field = Field::bit(0);
/// IRQ_CTRL.PRI_IRQEN.
pub const IRQ_CTRL_PRIQ_IRQEN: Field = Field::bit(1);
/// IRQ_CTRL.EVENTQ_IRQEN.
pub const IRQ_CTRL_EVTQ_IRQEN: Field = Field::bit(2);
/// Writable IRQ_CTRL bits \[2:0\].
pub const IRQ_CTRL_WRITABLE: u32 = 0x7;

/// GERROR.CMDQ_ERR.
pub const GERROR_CMDQ_ERR: u32 = 1 << 0;
/// GERROR.EVENTQ_ABT_ERR.
pub const GERROR_EVTQ_ABT_ERR: u32 = 1 << 2;
/// GERROR.PRIQ_ABT_ERR.
pub const GERROR_PRIQ_ABT_ERR: u32 = 1 << 3;
/// GERROR.MSI_CMDQ_ABT_ERR.
pub const GERROR_MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
/// GERROR.MSI_EVENTQ_ABT_ERR.
pub const GERROR_MSI_EVTQ_ABT_ERR: u32 = 1 << 5;
/// GERROR.MSI_PRIQ_ABT_ERR.
pub const GERROR_MSI_PRIQ_ABT_ERR: u32 = 1 << 6;
/// GERROR.MSI_GERROR_ABT_ERR.
pub const GERROR_MSI_GERROR_ABT_ERR: u32 = 1 << 7;
/// GERROR.SFM_ERR: service failure mode.
pub const GERROR_SFM_ERR: u32 = 1 << 8;
/// Every GERROR error bit (Linux `GERROR_ERR_MASK`).
pub const GERROR_ERR_MASK: u32 = 0x1fd;
/// Writable GERRORN bits: the error bits.
pub const GERRORN_WRITABLE: u32 = GERROR_ERR_MASK;

/// IRQ_CFG0.ADDR\[51:2\]: MSI target address.
pub const IRQ_CFG0_ADDR_MASK: u64 = genmask(51, 2);
/// Writable *_IRQ_CFG0 bits.
pub const IRQ_CFG0_WRITABLE: u64 = IRQ_CFG0_ADDR_MASK;
/// Writable *_IRQ_CFG1 bits: the 32-bit MSI data.
pub const IRQ_CFG1_WRITABLE: u32 = u32::MAX;
/// IRQ_CFG2.MEMATTR\[3:0\].
pub const IRQ_CFG2_MEMATTR: Field = Field::new(0, 4);
/// IRQ_CFG2.SH\[5:4\].
pub const IRQ_CFG2_SH: Field = Field::new(4, 2);
/// Writable *_IRQ_CFG2 bits \[5:0\].
pub const IRQ_CFG2_WRITABLE: u32 = 0x3f;

// ---------------------------------------------------------------------------
// Stream table base
// ---------------------------------------------------------------------------

/// STRTAB_BASE.RA: read-allocate hint.
pub const STRTAB_BASE_RA: u64 = 1 << 62;
/// STRTAB_BASE.ADDR\[51:6\].
pub const STRTAB_BASE_ADDR_MASK: u64 = genmask(51, 6);
/// Writable STRTAB_BASE bits: RA | ADDR.
pub const STRTAB_BASE_WRITABLE: u64 = STRTAB_BASE_RA | STRTAB_BASE_ADDR_MASK;

/// STRTAB_BASE_CFG.LOG2SIZE\[5:0\].
pub const STRTAB_BASE_CFG_LOG2SIZE: Field = Field::new(0, 6);
/// STRTAB_BASE_CFG.SPLIT\[10:6\].
pub const STRTAB_BASE_CFG_SPLIT: Field = Field::new(6, 5);
/// STRTAB_BASE_CFG.FMT\[17:16\].
pub const STRTAB_BASE_CFG_FMT: Field = Field::new(16, 2);
/// STRTAB_BASE_CFG.FMT value: linear.
pub const STRTAB_BASE_CFG_FMT_LINEAR: u32 = 0;
/// STRTAB_BASE_CFG.FMT value: 2-level.
pub const STRTAB_BASE_CFG_FMT_2LVL: u32 = 1;
/// Writable STRTAB_BASE_CFG bits: LOG2SIZE | SPLIT | FMT.
pub const STRTAB_BASE_CFG_WRITABLE: u32 = 0x3_07ff;

// ---------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------

/// Q_BASE.RA (CMDQ) / WA (EVENTQ, PRIQ): allocation hint, bit 62.
pub const Q_BASE_RA: u64 = 1 << 62;
/// Q_BASE.ADDR\[51:5\].
pub const Q_BASE_ADDR_MASK: u64 = genmask(51, 5);
/// Q_BASE.LOG2SIZE\[4:0\].
pub const Q_BASE_LOG2SIZE: Field = Field::new(0, 5);
/// Writable *Q_BASE bits: RA | ADDR | LOG2SIZE.
pub const Q_BASE_WRITABLE: u64 = Q_BASE_RA | Q_BASE_ADDR_MASK | 0x1f;

/// PROD.WR / CONS.RD: wrap flag and index, bits \[19:0\] at most (the wrap
/// flag is bit LOG2SIZE).
pub const Q_PTR_MASK: u32 = 0xf_ffff;
/// EVENTQ_PROD.OVFLG / PRIQ_PROD.OVFLG (bit 31).
pub const Q_PROD_OVFLG: u32 = 1 << 31;
/// EVENTQ_CONS.OVACKFLG / PRIQ_CONS.OVACKFLG (bit 31).
pub const Q_CONS_OVACKFLG: u32 = 1 << 31;
/// Writable CMDQ_PROD bits (WR).
pub const CMDQ_PROD_WRITABLE: u32 = Q_PTR_MASK;
/// Writable CMDQ_CONS bits (RD; only while CMDQEN = 0 — the architecture
/// lets the ERR field ignore writes, which this mask does).
pub const CMDQ_CONS_WRITABLE: u32 = Q_PTR_MASK;
/// Writable EVENTQ_PROD bits (WR and OVFLG; only while EVENTQEN = 0).
pub const EVENTQ_PROD_WRITABLE: u32 = Q_PROD_OVFLG | Q_PTR_MASK;
/// Writable EVENTQ_CONS bits (RD and OVACKFLG).
pub const EVENTQ_CONS_WRITABLE: u32 = Q_CONS_OVACKFLG | Q_PTR_MASK;

/// CMDQ_CONS.ERR\[30:24\]: command error code.
pub const CMDQ_CONS_ERR: Field = Field::new(24, 7);
/// CERROR_NONE: no error.
pub const CERROR_NONE: u32 = 0;
/// CERROR_ILL: illegal command.
pub const CERROR_ILL: u32 = 1;
/// CERROR_ABT: abort on command fetch.
pub const CERROR_ABT: u32 = 2;
/// CERROR_ATC_INV_SYNC: ATC invalidation timeout at a CMD_SYNC.
pub const CERROR_ATC_INV_SYNC: u32 = 3;

// ---------------------------------------------------------------------------
// QEMU 7.2 reset values
// ---------------------------------------------------------------------------

/// IDR0 reset: S1P, TTF = AArch64, COHACC, ASID16, TTENDIAN = LE,
/// STALL_MODEL = 1 (no stall), TERM_MODEL, ST_LEVEL = 2-level. No MSI, no
/// HYP, no ATS, no PRI, no S2P.
pub const IDR0_RESET: u32 = 0x0d40_101a;
/// IDR1 reset: SIDSIZE 16, SSIDSIZE 0, EVENTQS 19, CMDQS 19, PRIQS 0.
pub const IDR1_RESET: u32 = 0x0273_0010;
/// IDR2 reset.
pub const IDR2_RESET: u32 = 0;
/// IDR3 reset: HAD, RIL, BBML = 2.
pub const IDR3_RESET: u32 = 0x0000_1404;
/// IDR4 reset.
pub const IDR4_RESET: u32 = 0;
/// IDR5 reset: OAS = 44 bits, GRAN4K, GRAN16K, GRAN64K.
pub const IDR5_RESET: u32 = 0x0000_0074;
/// IIDR reset.
pub const IIDR_RESET: u32 = 0;
/// AIDR reset: SMMUv3.1.
pub const AIDR_RESET: u32 = 0x1;
/// CMDQ_BASE reset: LOG2SIZE preset to 19 (0x13).
pub const CMDQ_BASE_RESET: u64 = 0x13;
/// EVENTQ_BASE reset: LOG2SIZE preset to 19 (0x13).
pub const EVENTQ_BASE_RESET: u64 = 0x13;
/// GBPA reset as QEMU 7.2 reads it (0: bypass, no abort). Later QEMU
/// resets it to SHCFG = 0b01 (0x1000).
pub const GBPA_RESET: u32 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_idr0_fields() {
        let v = IDR0_RESET;
        assert!(IDR0_S1P.is_set32(v));
        assert!(!IDR0_S2P.is_set32(v));
        assert_eq!(IDR0_TTF.get32(v), IDR0_TTF_AARCH64);
        assert!(IDR0_COHACC.is_set32(v));
        assert!(IDR0_ASID16.is_set32(v));
        assert!(!IDR0_MSI.is_set32(v));
        assert!(!IDR0_HYP.is_set32(v));
        assert!(!IDR0_ATS.is_set32(v));
        assert_eq!(IDR0_TTENDIAN.get32(v), IDR0_TTENDIAN_LE);
        assert_eq!(IDR0_STALL_MODEL.get32(v), IDR0_STALL_MODEL_NO_STALL);
        assert!(IDR0_TERM_MODEL.is_set32(v));
        assert_eq!(IDR0_ST_LVL.get32(v), IDR0_ST_LVL_2LVL);
        // Nothing else is set.
        let known = IDR0_S1P.mask32()
            | IDR0_TTF.mask32()
            | IDR0_COHACC.mask32()
            | IDR0_ASID16.mask32()
            | IDR0_TTENDIAN.mask32()
            | IDR0_STALL_MODEL.mask32()
            | IDR0_TERM_MODEL.mask32()
            | IDR0_ST_LVL.mask32();
        assert_eq!(v & !known, 0);
    }

    #[test]
    fn reset_idr1_3_5_fields() {
        assert_eq!(IDR1_SIDSIZE.get32(IDR1_RESET), 16);
        assert_eq!(IDR1_SSIDSIZE.get32(IDR1_RESET), 0);
        assert_eq!(IDR1_EVTQS.get32(IDR1_RESET), 19);
        assert_eq!(IDR1_CMDQS.get32(IDR1_RESET), 19);
        assert_eq!(IDR1_PRIQS.get32(IDR1_RESET), 0);
        assert!(IDR3_HAD.is_set32(IDR3_RESET));
        assert!(IDR3_RIL.is_set32(IDR3_RESET));
        assert_eq!(IDR3_BBML.get32(IDR3_RESET), 2);
        assert_eq!(IDR5_OAS.get32(IDR5_RESET), IDR5_OAS_44);
        assert_eq!(oas_bits(IDR5_OAS.get32(IDR5_RESET)), 44);
        assert!(IDR5_GRAN4K.is_set32(IDR5_RESET));
        assert!(IDR5_GRAN16K.is_set32(IDR5_RESET));
        assert!(IDR5_GRAN64K.is_set32(IDR5_RESET));
        assert_eq!(Q_BASE_LOG2SIZE.get(CMDQ_BASE_RESET), 19);
        assert_eq!(Q_BASE_LOG2SIZE.get(EVENTQ_BASE_RESET), 19);
    }

    #[test]
    fn writable_masks() {
        assert_eq!(
            CR0_WRITABLE,
            CR0_SMMUEN.mask32()
                | CR0_PRIQEN.mask32()
                | CR0_EVTQEN.mask32()
                | CR0_CMDQEN.mask32()
                | CR0_ATSCHK.mask32()
                | CR0_VMW.mask32()
        );
        assert_eq!(
            GBPA_WRITABLE,
            GBPA_MEMATTR.mask32()
                | GBPA_MTCFG.mask32()
                | GBPA_ALLOCCFG.mask32()
                | GBPA_SHCFG.mask32()
                | GBPA_PRIVCFG.mask32()
                | GBPA_INSTCFG.mask32()
                | GBPA_ABORT.mask32()
                | GBPA_UPDATE.mask32()
        );
        assert_eq!(
            STRTAB_BASE_CFG_WRITABLE,
            STRTAB_BASE_CFG_LOG2SIZE.mask32()
                | STRTAB_BASE_CFG_SPLIT.mask32()
                | STRTAB_BASE_CFG_FMT.mask32()
        );
        assert_eq!(GERRORN_WRITABLE, 0x1fd);
        assert_eq!(STRTAB_BASE_WRITABLE, 0x400f_ffff_ffff_ffc0);
        assert_eq!(Q_BASE_WRITABLE, 0x400f_ffff_ffff_ffff);
        assert_eq!(IRQ_CFG0_WRITABLE, 0x000f_ffff_ffff_fffc);
        assert_eq!(
            IRQ_CFG2_WRITABLE,
            IRQ_CFG2_SH.mask32() | IRQ_CFG2_MEMATTR.mask32()
        );
        assert_eq!(CMDQ_CONS_ERR.mask32(), 0x7f00_0000);
    }

    #[test]
    fn offsets() {
        assert_eq!(EVENTQ_PROD_PAGE1, 0x100a8);
        assert_eq!(EVENTQ_CONS_PAGE1, 0x100ac);
        assert_eq!(PRIQ_PROD_PAGE1, 0x100c8);
        assert_eq!(PRIQ_CONS_PAGE1, 0x100cc);
        assert_eq!(canonical_offset(0x100a8), EVENTQ_PROD);
        assert_eq!(canonical_offset(0x100cc), PRIQ_CONS);
        assert_eq!(canonical_offset(0x10020), 0x10020);
        assert_eq!(canonical_offset(CR0), CR0);
        assert!(is_64bit(STRTAB_BASE));
        assert!(is_64bit(EVENTQ_IRQ_CFG0));
        assert!(!is_64bit(STRTAB_BASE_CFG));
        assert!(!is_64bit(GERROR_IRQ_CFG1));
    }
}
