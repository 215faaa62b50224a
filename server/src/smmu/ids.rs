//! The ID registers the guest sees: what this model implements, further
//! limited by the host profile ([`HostIommu::hw_info`]): the sim's own
//! registers, or for iommufd the fixed profile every attached device's SMMU
//! must support. They never depend on which device was attached when, so a
//! hot-plugged first device and a migration destination see the same SMMU.
//!
//! [`HostIommu::hw_info`]: crate::host::HostIommu::hw_info

use vsmmu_protocol::smmu::regs::*;

use crate::host::HwInfo;

/// Advertised identification registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
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
/// Only fields the kernel's `struct iommu_hw_info_arm_smmuv3` comment lets
/// a VMM base its guest registers on come from the host.
/// IDR0: stage 1 only (the host owns stage 2: S2P, HYP, VMID16 clear),
/// AArch64 tables, 2-level stream tables, no stall (STALL_MODEL = 1,
/// TERM_MODEL = 1), no PRI, no ATS (the model does not track ATS), MSI
/// only when asked; COHACC, ASID16 and CD2L as the host; no HTTU (not
/// supported for nesting); TTENDIAN little-endian.
/// IDR1: SIDSIZE ≤ 16, SSIDSIZE ≤ 20, queues ≤ 2^19, no PRIQ, nothing
/// preset. IDR3: RIL and BBML as the host (no HAD: not in the uAPI's
/// list). IDR5: OAS (a compatibility bound) and granules as the host,
/// VAX 0 (48-bit VA). AIDR ≤ SMMUv3.1.
pub(crate) fn advertised(hw: &HwInfo, msi: bool) -> Ids {
    let h0 = hw.idr[0];
    let mut idr0 = 0u32;
    idr0 = IDR0_S1P.set32(idr0, 1);
    idr0 = IDR0_TTF.set32(idr0, IDR0_TTF_AARCH64);
    for f in [IDR0_COHACC, IDR0_ASID16, IDR0_CD2L] {
        idr0 = f.set32(idr0, f.get32(h0));
    }
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

    let idr3 = hw.idr[3] & (IDR3_RIL.mask32() | IDR3_BBML.mask32());
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
        // QEMU's IDR3 0x1404 less HAD (bit 2).
        assert_eq!(ids.idr, [0x0d40_101a, 0x0273_0010, 0, 0x1400, 0, 0x74]);
        assert_eq!(advertised(&hw, true).idr[0], 0x0d40_301a);
    }

    /// The iommufd profile gives QEMU's registers less HAD, RIL, BBML and
    /// GRAN16K: what any nesting-capable SMMUv3 offers.
    #[test]
    fn iommufd_profile() {
        let ids = advertised(&crate::host::iommufd::GUEST_PROFILE, false);
        assert_eq!(ids.idr, [0x0d40_101a, 0x0273_0010, 0, 0, 0, 0x54]);
        assert_eq!((ids.iidr, ids.aidr), (0, 1));
    }

    /// A host with HTTU (access and dirty) and HAD: neither reaches the guest.
    #[test]
    fn httu_and_had_never_advertised() {
        let mut hw = crate::host::sim::SIM_HW_INFO;
        hw.idr[0] = IDR0_HTTU.set32(hw.idr[0], IDR0_HTTU_ACCESS_DIRTY);
        hw.idr[3] |= IDR3_HAD.mask32();
        let ids = advertised(&hw, false);
        assert_eq!(IDR0_HTTU.get32(ids.idr[0]), 0);
        assert_eq!(
            ids.idr[3],
            hw.idr[3] & (IDR3_RIL.mask32() | IDR3_BBML.mask32())
        );
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
        // HTTU and HAD are not for nesting guests.
        assert_eq!(IDR0_HTTU.get32(ids.idr[0]), 0);
        assert!(!IDR3_HAD.is_set32(ids.idr[3]));
        assert_eq!(IDR1_SIDSIZE.get32(ids.idr[1]), 16);
        assert_eq!(ids.aidr, 1);
    }
}
