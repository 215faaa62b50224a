//! Stream table and context descriptor decoding on hostile tables and
//! hostile ID registers.
//!
//! Input layout (short inputs are zero-padded):
//! `sel:u8 idr0:u32 idr1:u32 idr5:u32 strtab_base:u64 strtab_base_cfg:u32
//! sid:u32 ssid:u32 l1std:u64 l1cd:u64 ste:[u8;64] cd:[u8;64]`.
//! `sel` bit 0 picks the fuzzed ID registers over the sim host's, bit 1
//! makes the transaction carry `ssid`, bit 2 sets the CD's STE.S1STALLD.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vsmmu_protocol::smmu::cd::{cd_lookup, l2_cd_addr, Cd, CdCaps, CdLocation, CdLookup, L1Cd};
use vsmmu_protocol::smmu::ste::{
    check_vste, kernel_accepts_vste, S1Config, S1Dss, S1Fmt, Ste, SteCaps, SteConfig,
};
use vsmmu_protocol::smmu::strtab::{L1Std, SteLocation, StrtabCaps, StrtabConfig, StrtabFmt};
use vsmmu_testutil::FuzzInput;

/// The sim host's IDR0 / IDR1 / IDR5 (server/src/host/sim/mod.rs).
const SIM_IDR: (u32, u32, u32) = (0x090c_729b, 0x0273_0510, 0x0000_0075);

fuzz_target!(|data: &[u8]| {
    let mut inp = FuzzInput::new(data);
    let [sel] = inp.take::<1>();
    let (f0, f1, f5) = (inp.u32(), inp.u32(), inp.u32());
    let (idr0, idr1, idr5) = if sel & 1 == 1 { (f0, f1, f5) } else { SIM_IDR };
    let strtab_base = inp.u64();
    let strtab_base_cfg = inp.u32();
    let sid = inp.u32();
    let ssid = inp.u32();
    let l1std = inp.u64();
    let l1cd = inp.u64();
    let ste_bytes = inp.take::<64>();
    let cd_bytes = inp.take::<64>();
    let ssid = (sel & 2 != 0).then_some(ssid);

    // Stream table walk.
    let caps = StrtabCaps::from_idr(idr0, idr1);
    let cfg = StrtabConfig::decode(strtab_base, strtab_base_cfg, &caps);
    assert!(cfg.log2size <= caps.sid_bits.min(32));
    assert!(cfg.num_sids() <= 1 << 32);
    if cfg.fmt == StrtabFmt::TwoLevel {
        assert!(caps.two_level && matches!(cfg.split, 6 | 8 | 10));
    }
    match cfg.ste_location(sid) {
        Ok(SteLocation::Linear { ste_addr }) => {
            assert_eq!(cfg.fmt, StrtabFmt::Linear);
            assert!(ste_addr >= cfg.base);
            assert_eq!((ste_addr - cfg.base) / 64, u64::from(sid));
        }
        Ok(SteLocation::TwoLevel {
            l1_desc_addr,
            l2_index,
        }) => {
            assert_eq!(cfg.fmt, StrtabFmt::TwoLevel);
            assert!(l1_desc_addr >= cfg.base);
            assert!(u64::from(l2_index) < 1 << cfg.split);
            let desc = L1Std::decode(l1std);
            assert_eq!(L1Std::decode(desc.encode()), desc);
            if let Ok(addr) = cfg.l2_ste_addr(desc, l2_index) {
                assert!(desc.span >= 1 && u64::from(l2_index) < 1 << (desc.span - 1));
                assert_eq!(addr % 64, 0);
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.event_type());
        }
    }

    // STE validation, the vSTE it installs, and the CD it leads to.
    let ste = Ste::from_bytes(&ste_bytes);
    assert_eq!(ste.to_bytes(), ste_bytes);
    let ste_caps = SteCaps::from_idr(idr0, idr1, idr5);
    match ste.validate(&ste_caps) {
        Ok(config) => {
            assert!(ste.valid());
            let vste = config.to_vste();
            assert!(kernel_accepts_vste(vste), "{config:?} → {vste:x?}");
            assert!(check_vste(&vste).is_ok(), "{config:?} → {vste:x?}");
            if let SteConfig::S1Translate(s1) = config {
                assert!(s1.cdmax <= ste_caps.ssid_bits);
                match cd_lookup(&s1, ssid) {
                    Ok(CdLookup::Bypass) => assert!(ssid.is_none()),
                    Ok(CdLookup::Cd { location, index }) => {
                        if let Some(s) = ssid {
                            assert_eq!(index, s);
                        }
                        if let CdLocation::TwoLevel { l2_index, .. } = location {
                            let _ = l2_cd_addr(L1Cd::decode(l1cd), s1.fmt, l2_index, index);
                        }
                    }
                    Err(e) => {
                        let _ = (e.to_string(), e.event_type());
                    }
                }
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.event_type());
        }
    }
    // The substream rules on any stage-1 configuration, valid or not.
    let s1 = S1Config {
        ctx_ptr: l1std,
        fmt: S1Fmt::from_bits(f0 as u8),
        cdmax: f1 as u8,
        dss: S1Dss::from_bits((f1 >> 8) as u8),
        ..S1Config::default()
    };
    match cd_lookup(&s1, ssid) {
        Ok(CdLookup::Cd {
            location: CdLocation::TwoLevel { l2_index, .. },
            index,
        }) => {
            let _ = l2_cd_addr(L1Cd::decode(l1cd), s1.fmt, l2_index, index);
        }
        Ok(_) => {}
        Err(e) => {
            let _ = (e.to_string(), e.event_type());
        }
    }
    // The two statements of the kernel's vSTE rule agree on any words.
    let raw = [ste.0[0], ste.0[1]];
    assert_eq!(
        kernel_accepts_vste(raw),
        check_vste(&raw).is_ok(),
        "{raw:x?}"
    );

    let cd = Cd::from_bytes(&cd_bytes);
    assert_eq!(cd.to_bytes(), cd_bytes);
    let cd_caps = CdCaps::from_idr(idr0, idr5).with_s1stalld(sel & 4 != 0);
    match cd.validate(&cd_caps) {
        Ok(c) => {
            assert!(cd.valid());
            let _ = format!("{c:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), e.event_type());
        }
    }
});
