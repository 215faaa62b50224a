//! SMMUv3 command decoding: every 16-byte CMDQ entry a guest can write.
//!
//! The input is a run of commands as they sit in guest memory, optionally
//! preceded by ID register values for [`Command::check`]. A decoded command
//! re-encodes to exactly the words it came from (decoding refuses every
//! RES0 bit, so nothing is lost), and `check` never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vsmmu_protocol::smmu::command::{Command, CommandCaps};
use vsmmu_protocol::smmu::regs::{CERROR_ILL, IDR0_RESET, IDR3_RESET};

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

fuzz_target!(|data: &[u8]| {
    // First byte odd: 8 bytes of IDR0/IDR3 follow; else QEMU's reset values.
    let (caps, cmds) = match data.split_first() {
        Some((&sel, rest)) if sel & 1 == 1 && rest.len() >= 8 => {
            let idr0 = word(&rest[..4]) as u32;
            let idr3 = word(&rest[4..8]) as u32;
            (CommandCaps::from_idr(idr0, idr3), &rest[8..])
        }
        Some((_, rest)) => (CommandCaps::from_idr(IDR0_RESET, IDR3_RESET), rest),
        None => return,
    };
    let all = CommandCaps {
        s1p: true,
        s2p: true,
        hyp: true,
        ats: true,
        pri: true,
        stalls: true,
        mpam: true,
    };
    for entry in cmds.chunks(16) {
        let raw = [
            word(&entry[..entry.len().min(8)]),
            word(entry.get(8..).unwrap_or(&[])),
        ];
        match Command::decode(raw) {
            Ok(cmd) => {
                assert_eq!(cmd.encode(), raw, "{cmd:?} does not round-trip");
                assert_eq!(Command::decode(cmd.encode()), Ok(cmd));
                assert!(!cmd.name().is_empty());
                if let Err(e) = cmd.check(&caps) {
                    assert_eq!(e.opcode(), raw[0] as u8);
                    assert_eq!(e.cerror(), CERROR_ILL);
                }
                // A command no feature rules out is refused by none.
                let _ = cmd.check(&all);
            }
            Err(e) => {
                assert_eq!(e.opcode(), raw[0] as u8, "{e}");
                assert_eq!(e.cerror(), CERROR_ILL);
                let _ = e.to_string();
            }
        }
    }
});
