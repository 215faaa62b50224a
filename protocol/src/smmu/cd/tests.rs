//! Tests of context descriptors.

use super::super::regs::{IDR0_RESET, IDR0_TTENDIAN_LE, IDR5_RESET};
use super::*;

fn qemu() -> CdCaps {
    CdCaps::from_idr(IDR0_RESET, IDR5_RESET)
}

fn linux_cd() -> Cd {
    // 48-bit VA, 4K granule, IPS 44 bits (4), ASID 1.
    Cd::s1(0x8_4000_0000, 16, Granule::K4, 4, 1).with_mair(0x0044_ff04)
}

#[test]
fn qemu_caps() {
    let c = qemu();
    assert_eq!(c.oas_bits, 44);
    assert!(c.gran4k && c.gran16k && c.gran64k && !c.vax52 && c.aa64);
    assert_eq!(c.ttendian as u32, IDR0_TTENDIAN_LE);
    assert_eq!(c.httu, 0);
    assert_eq!(c.stall_model, 1);
    assert!(c.term_model && c.asid16 && !c.s1stalld);
}

#[test]
fn builder_exact() {
    let cd = linux_cd();
    // T0SZ 16, TG0 0, IR0 1, OR0 1, SH0 3, EPD1, V, IPS 4, AA64, R, A,
    // ASET, ASID 1.
    assert_eq!(cd.0[0], 0x0001_e204_c000_3510);
    assert_eq!(cd.0[1], 0x8_4000_0000);
    assert_eq!(cd.0[3], 0x0044_ff04);
    assert_eq!(Cd::from_bytes(&cd.to_bytes()), cd);
    assert_eq!(
        (cd.t0sz(), cd.tg0(), cd.ips(), cd.asid(), cd.ttb0()),
        (16, 0, 4, 1, 0x8_4000_0000)
    );
    assert!(cd.valid() && cd.aa64() && cd.epd1() && !cd.epd0());
}

#[test]
fn validate_linux_cd() {
    let cfg = linux_cd().validate(&qemu()).unwrap();
    assert_eq!(
        cfg,
        CdConfig {
            asid: 1,
            tt0: Some(TtConfig {
                ttb: 0x8_4000_0000,
                tsz: 16,
                granule: Granule::K4,
                irgn: 1,
                orgn: 1,
                sh: 3,
                had: false,
            }),
            tt1: None,
            ips_bits: 44,
            tbi0: false,
            tbi1: false,
            ha: false,
            hd: false,
            record_faults: true,
            stall: false,
            abort: true,
            aset: true,
            mair: 0x0044_ff04,
        }
    );
    assert_eq!(cfg.tt0.unwrap().va_bits(), 48);
}

#[test]
fn validate_errors() {
    let c = qemu();
    let cd = linux_cd();
    let with0 = |f: &dyn Fn(u64) -> u64| {
        Cd({
            let mut w = cd.0;
            w[0] = f(w[0]);
            w
        })
    };
    assert_eq!(Cd::default().validate(&c), Err(CdError::NotValid));
    assert_eq!(
        with0(&|d| d & !CD_0_V.mask()).validate(&c),
        Err(CdError::NotValid)
    );
    assert_eq!(
        with0(&|d| d & !CD_0_AA64.mask()).validate(&c),
        Err(CdError::NotAArch64)
    );
    assert_eq!(
        with0(&|d| d | CD_0_ENDI.mask()).validate(&c),
        Err(CdError::Endianness(true))
    );
    // ENDI is IGNORED when both tables are disabled.
    assert!(with0(&|d| d | CD_0_ENDI.mask() | CD_0_EPD0.mask())
        .validate(&c)
        .is_ok());
    assert_eq!(
        with0(&|d| d | CD_0_HA.mask()).validate(&c),
        Err(CdError::Httu)
    );
    assert_eq!(
        with0(&|d| d & !CD_0_A.mask()).validate(&c),
        Err(CdError::AbortRequired)
    );
    assert_eq!(
        with0(&|d| d | CD_0_S.mask()).validate(&c),
        Err(CdError::StallNotAllowed)
    );
    let stall_ok = CdCaps {
        stall_model: 0,
        ..c
    };
    assert!(with0(&|d| d | CD_0_S.mask()).validate(&stall_ok).is_ok());
    assert_eq!(
        with0(&|d| d | CD_0_S.mask()).validate(&stall_ok.with_s1stalld(true)),
        Err(CdError::StallNotAllowed)
    );
    let forced = CdCaps {
        stall_model: 2,
        ..c
    };
    assert_eq!(cd.validate(&forced), Err(CdError::StallRequired));
    let asid8 = CdCaps { asid16: false, ..c };
    assert_eq!(
        Cd::s1(0x1000, 16, Granule::K4, 4, 0x100).validate(&asid8),
        Err(CdError::AsidTooLarge(0x100))
    );
    assert!(Cd::s1(0x1000, 16, Granule::K4, 4, 0xff)
        .validate(&asid8)
        .is_ok());
    // TG0 reserved / unsupported.
    assert_eq!(
        with0(&|d| CD_0_TG0.set(d, 3)).validate(&c),
        Err(CdError::Granule { ttb: 0, tg: 3 })
    );
    let no16k = CdCaps {
        gran16k: false,
        ..c
    };
    assert_eq!(
        Cd::s1(0x1000, 16, Granule::K16, 4, 1).validate(&no16k),
        Err(CdError::Granule { ttb: 0, tg: 2 })
    );
    // TG0 is IGNORED with EPD0.
    assert!(with0(&|d| CD_0_TG0.set(d, 3) | CD_0_EPD0.mask())
        .validate(&c)
        .is_ok());
    // T0SZ range.
    for (tsz, ok) in [
        (15, false),
        (16, true),
        (39, true),
        (40, false),
        (63, false),
    ] {
        let r = Cd::s1(0x1000, tsz, Granule::K4, 4, 1).validate(&c);
        assert_eq!(r.is_ok(), ok, "{tsz}");
        if !ok {
            assert_eq!(r, Err(CdError::TszOutOfRange { ttb: 0, tsz }));
        }
    }
    let vax = CdCaps { vax52: true, ..c };
    assert!(Cd::s1(0x1000, 12, Granule::K64, 4, 1)
        .validate(&vax)
        .is_ok());
    assert!(Cd::s1(0x1000, 12, Granule::K4, 4, 1)
        .validate(&vax)
        .is_err());
    // TTB0 beyond the effective IPS (44 bits: OAS caps IPS 48).
    assert_eq!(
        Cd::s1(1 << 44, 16, Granule::K4, 5, 1).validate(&c),
        Err(CdError::TtbOutOfRange {
            ttb: 0,
            addr: 1 << 44,
            bits: 44
        })
    );
    assert_eq!(
        Cd::s1(1 << 40, 16, Granule::K4, 2, 1).validate(&c),
        Err(CdError::TtbOutOfRange {
            ttb: 0,
            addr: 1 << 40,
            bits: 40
        })
    );
    // IPS above OAS is capped, not ILLEGAL; 0b111 too.
    assert_eq!(
        Cd::s1(0x1000, 16, Granule::K4, 7, 1)
            .validate(&c)
            .unwrap()
            .ips_bits,
        44
    );
    for e in [
        CdError::NotValid,
        CdError::Httu,
        CdError::TszOutOfRange { ttb: 1, tsz: 0 },
    ] {
        assert_eq!(e.event_type(), C_BAD_CD);
    }
}

#[test]
fn validate_ttb1() {
    let c = qemu();
    let mut w = linux_cd().0;
    // Enable TTB1: T1SZ 25, TG1 = 4K (2), walks WBWA ISH.
    w[0] &= !CD_0_EPD1.mask();
    w[0] |= CD_0_T1SZ.prep(25) | CD_0_TG1.prep(2) | CD_0_IRGN1.prep(1) | CD_0_SH1.prep(3);
    w[2] = 0x9000_0000 | CD_2_HAD1.mask();
    let cfg = Cd(w).validate(&c).unwrap();
    assert_eq!(
        cfg.tt1,
        Some(TtConfig {
            ttb: 0x9000_0000,
            tsz: 25,
            granule: Granule::K4,
            irgn: 1,
            orgn: 0,
            sh: 3,
            had: true,
        })
    );
    w[0] = CD_0_TG1.set(w[0], 0);
    assert_eq!(Cd(w).validate(&c), Err(CdError::Granule { ttb: 1, tg: 0 }));
}

#[test]
fn httu_rules() {
    let c = CdCaps { httu: 1, ..qemu() };
    let cd = linux_cd();
    let cfg = cd.with_httu(true, false).validate(&c).unwrap();
    assert!(cfg.ha && !cfg.hd);
    assert_eq!(cd.with_httu(true, true).validate(&c), Err(CdError::Httu));
    let c2 = CdCaps { httu: 2, ..c };
    // {HD, HA} = 0b10 behaves as 0b00.
    let cfg = cd.with_httu(false, true).validate(&c2).unwrap();
    assert!(!cfg.ha && !cfg.hd);
}

#[test]
fn l1cd() {
    let d = L1Cd::decode(0xffff_ffff_ffff_ffff);
    assert!(d.valid);
    assert_eq!(d.l2ptr, 0x00ff_ffff_ffff_f000);
    assert_eq!(L1Cd::new(0x8000_1000).encode(), 0x8000_1001);
    assert_eq!(
        L1Cd::decode(0x8000_1000),
        L1Cd {
            valid: false,
            l2ptr: 0x8000_1000
        }
    );
}

fn s1(ctx_ptr: u64, cdmax: u8, fmt: S1Fmt, dss: S1Dss) -> S1Config {
    S1Config {
        ctx_ptr,
        fmt,
        cdmax,
        dss,
        ..S1Config::default()
    }
}

#[test]
fn lookup_single_cd() {
    let cfg = s1(0x8000_0040, 0, S1Fmt::Linear, S1Dss::Terminate);
    assert_eq!(
        cd_lookup(&cfg, None),
        Ok(CdLookup::Cd {
            location: CdLocation::Direct {
                cd_addr: 0x8000_0040
            },
            index: 0
        })
    );
    let e = cd_lookup(&cfg, Some(0)).unwrap_err();
    assert_eq!(e, CdLookupError::BadSubstream(0));
    assert_eq!(e.event_type(), C_BAD_SUBSTREAMID);
}

#[test]
fn lookup_linear_table() {
    let cfg = s1(0x8000_0000, 4, S1Fmt::Linear, S1Dss::Substream0);
    assert_eq!(
        cd_lookup(&cfg, Some(15)),
        Ok(CdLookup::Cd {
            location: CdLocation::Direct {
                cd_addr: 0x8000_03c0
            },
            index: 15
        })
    );
    assert_eq!(
        cd_lookup(&cfg, Some(16)),
        Err(CdLookupError::BadSubstream(16))
    );
    let e = cd_lookup(&cfg, Some(0)).unwrap_err();
    assert_eq!(e, CdLookupError::StreamDisabled);
    assert_eq!(e.event_type(), F_STREAM_DISABLED);
    assert_eq!(
        cd_lookup(&cfg, None),
        Ok(CdLookup::Cd {
            location: CdLocation::Direct {
                cd_addr: 0x8000_0000
            },
            index: 0
        })
    );
    let term = S1Config {
        dss: S1Dss::Terminate,
        ..cfg
    };
    assert_eq!(cd_lookup(&term, None), Err(CdLookupError::StreamDisabled));
    let byp = S1Config {
        dss: S1Dss::Bypass,
        ..cfg
    };
    assert_eq!(cd_lookup(&byp, None), Ok(CdLookup::Bypass));
    // Misaligned table base: bits [cdmax+5:6] are treated as zero.
    let mis = S1Config {
        ctx_ptr: 0x8000_0340,
        ..cfg
    };
    assert_eq!(
        cd_lookup(&mis, Some(1)),
        Ok(CdLookup::Cd {
            location: CdLocation::Direct {
                cd_addr: 0x8000_0040
            },
            index: 1
        })
    );
}

#[test]
fn lookup_two_level() {
    // 4K leaves: SSID 0x1234 with cdmax 16 → L1 index 0x48, L2 index 0x34.
    let cfg = s1(0x9000_0000, 16, S1Fmt::TwoLevel4K, S1Dss::Bypass);
    let CdLookup::Cd { location, index } = cd_lookup(&cfg, Some(0x1234)).unwrap() else {
        panic!()
    };
    assert_eq!(index, 0x1234);
    assert_eq!(
        location,
        CdLocation::TwoLevel {
            l1_desc_addr: 0x9000_0000 + 0x48 * 8,
            l2_index: 0x34
        }
    );
    let desc = L1Cd::new(0xa000_0000);
    assert_eq!(
        l2_cd_addr(desc, S1Fmt::TwoLevel4K, 0x34, index),
        Ok(0xa000_0000 + 0x34 * 64)
    );
    assert_eq!(
        l2_cd_addr(L1Cd::default(), S1Fmt::TwoLevel4K, 0x34, index),
        Err(CdLookupError::BadSubstream(0x1234))
    );
    // 64K leaves: L2Ptr[15:12] treated as zero.
    let cfg = s1(0x9000_0000, 20, S1Fmt::TwoLevel64K, S1Dss::Bypass);
    let CdLookup::Cd { location, .. } = cd_lookup(&cfg, Some(0xf_ffff)).unwrap() else {
        panic!()
    };
    assert_eq!(
        location,
        CdLocation::TwoLevel {
            l1_desc_addr: 0x9000_0000 + 0x3ff * 8,
            l2_index: 0x3ff
        }
    );
    assert_eq!(
        l2_cd_addr(L1Cd::new(0xa000_f000), S1Fmt::TwoLevel64K, 0x3ff, 0xf_ffff),
        Ok(0xa000_0000 + 0x3ff * 64)
    );
    // L1 tables align to at least 64 bytes.
    let cfg = s1(0x9000_0038, 7, S1Fmt::TwoLevel4K, S1Dss::Bypass);
    let CdLookup::Cd { location, .. } = cd_lookup(&cfg, Some(0x7f)).unwrap() else {
        panic!()
    };
    assert_eq!(
        location,
        CdLocation::TwoLevel {
            l1_desc_addr: 0x9000_0008,
            l2_index: 0x3f
        }
    );
}

#[test]
fn lookup_never_panics() {
    let mut x = 0x1357_9bdf_2468_ace0u64;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let cfg = S1Config {
            ctx_ptr: x,
            fmt: S1Fmt::from_bits(x as u8),
            cdmax: (x >> 8) as u8,
            dss: S1Dss::from_bits((x >> 16) as u8),
            ..S1Config::default()
        };
        let ssid = if x & (1 << 40) != 0 {
            Some((x >> 20) as u32)
        } else {
            None
        };
        if let Ok(CdLookup::Cd {
            location: CdLocation::TwoLevel { l2_index, .. },
            index,
        }) = cd_lookup(&cfg, ssid)
        {
            let _ = l2_cd_addr(L1Cd::decode(x.rotate_left(7)), cfg.fmt, l2_index, index);
        }
        let mut w = [0u64; 8];
        for (i, word) in w.iter_mut().enumerate() {
            *word = x.rotate_left(i as u32 * 9);
        }
        let _ = Cd(w).validate(&qemu());
    }
}
