//! The ID registers the guest sees: what this model implements, further
//! limited by what the host SMMU reports (GET_HW_INFO, or the sim's defaults).

use vsmmu_protocol::smmu::regs::*;

use crate::host::HwInfo;

/// Advertised identification registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// IDR0..IDR5.
    pub idr: [u32; 6],
    /// IIDR.
    pub iidr: u32,
    /// AIDR.
    pub aidr: u32,
}

/// Largest StreamID width advertised: 16 bits, as QEMU's SMMUv3.
const MAX_SIDSIZE: u32 = 16;
/// Largest SubstreamID width advertised.
const MAX_SSIDSIZE: u32 = 20;
/// Largest queue LOG2SIZE advertised (QEMU's 19).
const MAX_QS: u32 = 19;

/// Computes the advertised ID registers.
///
/// IDR0: stage 1 only (the host owns stage 2: S2P, HYP, VMID16 clear),
/// AArch64 tables, 2-level stream tables, no stall (STALL_MODEL = 1,
/// TERM_MODEL = 1), no PRI, no ATS (the model does not track ATS), MSI
/// only when asked; COHACC, ASID16, CD2L and HTTU as the host; TTENDIAN
/// little-endian.
/// IDR1: SIDSIZE ≤ 16, SSIDSIZE ≤ 20, queues ≤ 2^19, no PRIQ, nothing
/// preset. IDR3: HAD, RIL and BBML as the host. IDR5: OAS and granules as
/// the host, VAX 0 (48-bit VA). AIDR ≤ SMMUv3.1.
pub fn advertised(hw: &HwInfo, msi: bool) -> Ids {
    let h0 = hw.idr[0];
    let mut idr0 = 0u32;
    idr0 = IDR0_S1P.set32(idr0, 1);
    idr0 = IDR0_TTF.set32(idr0, IDR0_TTF_AARCH64);
    for f in [IDR0_COHACC, IDR0_ASID16, IDR0_CD2L] {
        idr0 = f.set32(idr0, f.get32(h0));
    }
    idr0 = IDR0_HTTU.set32(idr0, IDR0_HTTU.get32(h0));
    // Little-endian table walks only (the sim walker's, and what QEMU
    // advertises), unless the host can only walk big-endian ones.
    let endian = match IDR0_TTENDIAN.get32(h0) {
        IDR0_TTENDIAN_BE => IDR0_TTENDIAN_BE,
        _ => IDR0_TTENDIAN_LE,
    };
    idr0 = IDR0_TTENDIAN.set32(idr0, endian);
    idr0 = IDR0_STALL_MODEL.set32(idr0, IDR0_STALL_MODEL_NO_STALL);
    idr0 = IDR0_TERM_MODEL.set32(idr0, 1);
    idr0 = IDR0_ST_LVL.set32(idr0, IDR0_ST_LVL_2LVL);
    idr0 = IDR0_MSI.set32(idr0, u32::from(msi));

    let h1 = hw.idr[1];
    let mut idr1 = 0u32;
    idr1 = IDR1_SIDSIZE.set32(idr1, IDR1_SIDSIZE.get32(h1).min(MAX_SIDSIZE));
    idr1 = IDR1_SSIDSIZE.set32(idr1, IDR1_SSIDSIZE.get32(h1).min(MAX_SSIDSIZE));
    idr1 = IDR1_EVTQS.set32(idr1, IDR1_EVTQS.get32(h1).min(MAX_QS));
    idr1 = IDR1_CMDQS.set32(idr1, IDR1_CMDQS.get32(h1).min(MAX_QS));

    let idr3 = hw.idr[3] & (IDR3_HAD.mask32() | IDR3_RIL.mask32() | IDR3_BBML.mask32());
    let h5 = hw.idr[5];
    let mut idr5 = 0u32;
    idr5 = IDR5_OAS.set32(idr5, IDR5_OAS.get32(h5).min(IDR5_OAS_48));
    for f in [IDR5_GRAN4K, IDR5_GRAN16K, IDR5_GRAN64K] {
        idr5 = f.set32(idr5, f.get32(h5));
    }
    Ids {
        idr: [idr0, idr1, 0, idr3, 0, idr5],
        iidr: hw.iidr,
        aidr: hw.aidr.min(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's registers as the host: the guest sees QEMU's values.
    #[test]
    fn qemu_host_gives_qemu_values() {
        let hw = HwInfo {
            idr: [IDR0_RESET, IDR1_RESET, 0, IDR3_RESET, 0, IDR5_RESET],
            iidr: 0,
            aidr: 1,
        };
        let ids = advertised(&hw, false);
        assert_eq!(ids.idr, [0x0d40_101a, 0x0273_0010, 0, 0x1404, 0, 0x74]);
        assert_eq!(advertised(&hw, true).idr[0], 0x0d40_301a);
    }

    /// The sim's host registers: stage 2, HYP, VMID16 and FWB do not leak.
    #[test]
    fn sim_host_is_masked() {
        let hw = crate::host::sim::SimConfig::default().hw_info;
        let ids = advertised(&hw, false);
        assert_eq!(
            ids.idr[0] & (IDR0_S2P.mask32() | IDR0_HYP.mask32() | IDR0_VMID16.mask32()),
            0
        );
        assert_eq!(ids.idr[3] & (1 << 8), 0);
        assert_eq!(IDR1_SIDSIZE.get32(ids.idr[1]), 16);
        assert_eq!(ids.aidr, 1);
    }
}
