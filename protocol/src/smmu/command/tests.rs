//! Tests of command queue entries.

use vsmmu_testutil::Rng;

use super::super::regs::{IDR0_RESET, IDR3_RESET};
use super::*;

const ALL_OPCODES: [u8; 25] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x18, 0x1a, 0x20, 0x21, 0x22,
    0x23, 0x28, 0x2a, 0x30, 0x40, 0x41, 0x44, 0x45, 0x46,
];

#[test]
fn linux_cmd_sync_sev() {
    let cmd = Command::decode([0x0fc0_2046, 0]).unwrap();
    assert_eq!(
        cmd,
        Command::Sync {
            cs: SyncCs::Sev,
            msh: 3,
            msiattr: 0xf,
            msidata: 0,
            msiaddr: 0
        }
    );
    assert_eq!(cmd, Command::sync_sev());
    assert_eq!(Command::sync_sev().encode(), [0x0fc0_2046, 0]);
    assert_eq!(cmd.name(), "CMD_SYNC");
}

#[test]
fn linux_cmd_sync_msi() {
    let cmd = Command::sync_msi(0x4_0001_0230);
    assert_eq!(cmd.encode(), [0x0fc0_1046, 0x4_0001_0230]);
    assert_eq!(Command::decode([0x0fc0_1046, 0x4_0001_0230]), Ok(cmd));
}

#[test]
fn cfgi_all() {
    assert_eq!(Command::cfgi_all().encode(), [0x4, 0x1f]);
    assert_eq!(Command::decode([0x4, 0x1f]), Ok(Command::cfgi_all()));
    assert_eq!(Command::cfgi_all().name(), "CMD_CFGI_STE_RANGE");
}

#[test]
fn exact_encodings() {
    assert_eq!(
        Command::CfgiSte {
            sid: 0x12,
            leaf: true
        }
        .encode(),
        [0x0000_0012_0000_0003, 1]
    );
    assert_eq!(
        Command::CfgiCd {
            sid: 8,
            ssid: 5,
            leaf: true
        }
        .encode(),
        [0x0000_0008_0000_5005, 1]
    );
    assert_eq!(
        Command::TlbiNhVa {
            vmid: 0,
            asid: 0x1234,
            range: TlbiRange {
                num: 3,
                scale: 2,
                leaf: true,
                ttl128: false,
                ttl: 3,
                tg: 1,
                addr: 0xffff_8000_1234_5000,
            },
        }
        .encode(),
        [0x1234_0000_0020_3012, 0xffff_8000_1234_5701]
    );
    assert_eq!(Command::TlbiNsnhAll.encode(), [0x30, 0]);
    assert_eq!(Command::TlbiEl2All.encode(), [0x20, 0]);
    assert_eq!(
        Command::AtcInv {
            sid: 0x100,
            ssv: true,
            ssid: 7,
            global: true,
            size: ATC_INV_SIZE_ALL,
            addr: 0
        }
        .encode(),
        [0x0000_0100_0000_7a40, 52]
    );
    assert_eq!(
        Command::Resume {
            sid: 9,
            retry: true,
            abort: false,
            stag: 0xbeef
        }
        .encode(),
        [0x0000_0009_0000_1044, 0xbeef]
    );
    assert_eq!(
        Command::PriResp {
            sid: 1,
            ssv: false,
            ssid: 0,
            grpid: 0x1ff,
            resp: 2
        }
        .encode(),
        [0x0000_0001_0000_0041, 0x21ff]
    );
    assert_eq!(
        Command::TlbiS2Ipa {
            vmid: 5,
            range: TlbiRange::va(0x00ff_ffff_ffff_f000, false)
        }
        .encode(),
        [0x0000_0005_0000_002a, 0x00ff_ffff_ffff_f000]
    );
}

fn sample(op: u8) -> Command {
    let r = TlbiRange {
        num: 31,
        scale: 63,
        leaf: true,
        ttl128: true,
        ttl: 2,
        tg: 3,
        addr: 0xfedc_ba98_7654_3000,
    };
    let ipa = TlbiRange {
        addr: 0x00ed_cba9_8765_4000,
        ..r
    };
    match op {
        CMD_PREFETCH_CONFIG => Command::PrefetchConfig {
            sid: 0xffff_ffff,
            ssv: true,
            ssid: 0xf_ffff,
        },
        CMD_PREFETCH_ADDR => Command::PrefetchAddr {
            sid: 7,
            ssv: true,
            ssid: 3,
            size: 31,
            stride: 31,
            addr: 0xffff_ffff_ffff_f000,
        },
        CMD_CFGI_STE => Command::CfgiSte {
            sid: 0xdead_beef,
            leaf: true,
        },
        CMD_CFGI_STE_RANGE => Command::CfgiSteRange {
            sid: 0x100,
            range: 7,
        },
        CMD_CFGI_CD => Command::CfgiCd {
            sid: 1,
            ssid: 0xf_ffff,
            leaf: false,
        },
        CMD_CFGI_CD_ALL => Command::CfgiCdAll { sid: 0x8000_0000 },
        CMD_CFGI_VMS_PIDM => Command::CfgiVmsPidm { vmid: 0xffff },
        CMD_TLBI_NH_ALL => Command::TlbiNhAll { vmid: 0xabcd },
        CMD_TLBI_NH_ASID => Command::TlbiNhAsid {
            vmid: 0x1,
            asid: 0xffff,
        },
        CMD_TLBI_NH_VA => Command::TlbiNhVa {
            vmid: 2,
            asid: 3,
            range: r,
        },
        CMD_TLBI_NH_VAA => Command::TlbiNhVaa { vmid: 4, range: r },
        CMD_TLBI_EL3_ALL => Command::TlbiEl3All,
        CMD_TLBI_EL3_VA => Command::TlbiEl3Va { range: r },
        CMD_TLBI_EL2_ALL => Command::TlbiEl2All,
        CMD_TLBI_EL2_ASID => Command::TlbiEl2Asid { asid: 0x77 },
        CMD_TLBI_EL2_VA => Command::TlbiEl2Va { asid: 9, range: r },
        CMD_TLBI_EL2_VAA => Command::TlbiEl2Vaa { range: r },
        CMD_TLBI_S12_VMALL => Command::TlbiS12Vmall { vmid: 0x55 },
        CMD_TLBI_S2_IPA => Command::TlbiS2Ipa {
            vmid: 0x66,
            range: ipa,
        },
        CMD_TLBI_NSNH_ALL => Command::TlbiNsnhAll,
        CMD_ATC_INV => Command::AtcInv {
            sid: 0x10,
            ssv: true,
            ssid: 0x12345,
            global: true,
            size: 63,
            addr: 0x8000_0000_0000_0000,
        },
        CMD_PRI_RESP => Command::PriResp {
            sid: 0x20,
            ssv: true,
            ssid: 0x54321,
            grpid: 0x155,
            resp: 1,
        },
        CMD_RESUME => Command::Resume {
            sid: 0x30,
            retry: false,
            abort: true,
            stag: 0xffff,
        },
        CMD_STALL_TERM => Command::StallTerm { sid: 0x40 },
        CMD_SYNC => Command::Sync {
            cs: SyncCs::Irq,
            msh: 2,
            msiattr: 1,
            msidata: 0xcafe_f00d,
            msiaddr: 0x00ff_ffff_ffff_fffc,
        },
        _ => unreachable!(),
    }
}

#[test]
fn round_trip_every_opcode() {
    for op in ALL_OPCODES {
        let cmd = sample(op);
        assert_eq!(cmd.opcode(), op);
        assert_eq!(opcode(&cmd.encode()), op);
        let raw = cmd.encode();
        assert_eq!(Command::decode(raw), Ok(cmd), "{}", cmd.name());
        assert_eq!(Command::decode(raw).unwrap().encode(), raw);
        assert_eq!(opcode_name(op), Some(cmd.name()));
        // And the all-defined-bits pattern round-trips too.
        let (ok0, ok1) = defined_bits(op).unwrap();
        let full = [ok0 | u64::from(op), ok1];
        if let Ok(c) = Command::decode(full) {
            assert_eq!(c.encode(), full, "{}", c.name());
        }
    }
}

#[test]
fn reserved_opcodes_are_illegal() {
    for op in 0..=255u8 {
        let known = ALL_OPCODES.contains(&op);
        assert_eq!(opcode_name(op).is_some(), known);
        if !known {
            assert_eq!(
                Command::decode([u64::from(op), 0]),
                Err(CommandError::Illegal {
                    opcode: op,
                    reason: "reserved opcode"
                })
            );
        }
    }
}

#[test]
fn every_res0_bit_is_illegal() {
    for op in ALL_OPCODES {
        let (ok0, ok1) = defined_bits(op).unwrap();
        let base = sample(op).encode();
        for bit in 8..64 {
            let b = 1u64 << bit;
            if ok0 & b == 0 {
                let err = Command::decode([base[0] | b, base[1]]).unwrap_err();
                assert_eq!(err.opcode(), op);
                assert_eq!(err.cerror(), super::super::regs::CERROR_ILL);
            }
        }
        for bit in 0..64 {
            let b = 1u64 << bit;
            if ok1 & b == 0 {
                assert!(
                    Command::decode([base[0], base[1] | b]).is_err(),
                    "{op:#x} dword1 bit {bit}"
                );
            }
        }
    }
}

#[test]
fn specific_res0_violations() {
    let ssec = |op: u8| Command::decode([u64::from(op) | 1 << 10, 0]);
    for op in [
        CMD_CFGI_STE,
        CMD_CFGI_STE_RANGE,
        CMD_CFGI_CD,
        CMD_CFGI_CD_ALL,
    ] {
        assert_eq!(
            ssec(op),
            Err(CommandError::Illegal {
                opcode: op,
                reason: "SSec set on the Non-secure command queue"
            })
        );
    }
    // CFGI_STE has no SSV.
    assert!(Command::decode([0x3 | 1 << 11, 0]).is_err());
    // CFGI_STE_RANGE: only RANGE in dword1.
    assert!(Command::decode([0x4, 0x20]).is_err());
    // TLBI_NH_VAA has no ASID.
    assert!(Command::decode([0x13 | 1 << 48, 0]).is_err());
    // TLBI_NH_ALL has no dword1.
    assert!(Command::decode([0x10, 1]).is_err());
    // TLBI_NSNH_ALL takes no VMID.
    assert!(Command::decode([0x30 | 1 << 32, 0]).is_err());
    // TLBI_S2_IPA: address above bit 55.
    assert!(Command::decode([0x2a, 1 << 56]).is_err());
    // CMD_SYNC: MSIAddress[1:0] and bits above 55.
    assert!(Command::decode([0x46, 1]).is_err());
    assert!(Command::decode([0x46, 1 << 60]).is_err());
    // CMD_SYNC: bits [21:14].
    assert!(Command::decode([0x46 | 1 << 14, 0]).is_err());
    // ATC_INV: dword1 bits [11:6].
    assert!(Command::decode([0x40, 1 << 6]).is_err());
    // Reserved values.
    assert_eq!(
        Command::decode([0x3046, 0]),
        Err(CommandError::Illegal {
            opcode: 0x46,
            reason: "reserved CMD_SYNC completion signal 0b11"
        })
    );
    assert!(Command::decode([0x41, 0x3000]).is_err());
}

#[test]
fn host_invalidation_set() {
    let host: Vec<u8> = ALL_OPCODES
        .iter()
        .copied()
        .filter(|&op| sample(op).is_host_invalidation())
        .collect();
    assert_eq!(host, vec![0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x30, 0x40]);
}

#[test]
fn check_against_qemu_caps() {
    let caps = CommandCaps::from_idr(IDR0_RESET, IDR3_RESET);
    assert!(caps.s1p && !caps.s2p && !caps.hyp && !caps.ats && !caps.pri);
    assert!(!caps.stalls && !caps.mpam);
    let ok = [
        CMD_PREFETCH_CONFIG,
        CMD_PREFETCH_ADDR,
        CMD_CFGI_STE,
        CMD_CFGI_STE_RANGE,
        CMD_CFGI_CD,
        CMD_CFGI_CD_ALL,
        CMD_TLBI_NH_ALL,
        CMD_TLBI_NH_ASID,
        CMD_TLBI_NH_VA,
        CMD_TLBI_NH_VAA,
        CMD_TLBI_NSNH_ALL,
        CMD_SYNC,
    ];
    for op in ALL_OPCODES {
        assert_eq!(sample(op).check(&caps).is_ok(), ok.contains(&op), "{op:#x}");
    }
    let all = CommandCaps {
        s1p: true,
        s2p: true,
        hyp: true,
        ats: true,
        pri: true,
        stalls: true,
        mpam: true,
    };
    for op in ALL_OPCODES {
        let el3 = op == CMD_TLBI_EL3_ALL || op == CMD_TLBI_EL3_VA;
        assert_eq!(sample(op).check(&all).is_ok(), !el3, "{op:#x}");
    }
}

#[test]
fn sid_accessor() {
    assert_eq!(sample(CMD_CFGI_STE).sid(), Some(0xdead_beef));
    assert_eq!(Command::TlbiNsnhAll.sid(), None);
    assert_eq!(Command::cfgi_all().sid(), Some(0));
}

#[test]
fn tlbi_granules() {
    assert_eq!(TlbiRange::va(0, true).granules(), 1);
    let r = TlbiRange {
        num: 3,
        scale: 2,
        tg: 1,
        ..TlbiRange::default()
    };
    assert_eq!(r.granules(), 16);
    let r = TlbiRange {
        num: 31,
        scale: 63,
        tg: 1,
        ..TlbiRange::default()
    };
    assert_eq!(r.granules(), u64::MAX);
}

#[test]
fn random_words_never_panic() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    for op in 0..=255u8 {
        for _ in 0..2000 {
            let mut d0 = rng.next_u64();
            let d1 = rng.next_u64();
            // Sparse variants reach the accepting paths more often.
            if rng.next_u64() & 1 == 0 {
                if let Some((ok0, _)) = defined_bits(op) {
                    d0 &= ok0;
                }
            }
            let raw = [(d0 & !0xff) | u64::from(op), d1];
            let raw_masked = match defined_bits(op) {
                Some((ok0, ok1)) => [raw[0] & (ok0 | 0xff), raw[1] & ok1],
                None => raw,
            };
            for x in [raw, raw_masked] {
                if let Ok(c) = Command::decode(x) {
                    assert_eq!(c.encode(), x);
                    assert_eq!(c.opcode(), op);
                    let _ = c.check(&CommandCaps::default());
                    let _ = c.name();
                }
            }
        }
    }
}
