//! The SMMUv3 model against the real `vsmmud`: register reset values and
//! access rules, command effects and errors, STE errors as event records,
//! queue wrap and overflow.

use std::time::Duration;

use vsmmu_client::Client;
use vsmmu_guest::driver::{DriverError, SmmuDriver};
use vsmmu_protocol::smmu::command::{Command, TlbiRange};
use vsmmu_protocol::smmu::regs::*;
use vsmmu_protocol::smmu::ste::{S1Fmt, Ste};
use vsmmu_tests::guest::{boot, boot_on, small};
use vsmmu_tests::TestServer;
use vsmmu_testutil::regs::REGISTER_WORDS;

/// What the sim host's defaults give the guest (see server/src/smmu/ids.rs).
const SIM_IDR: [u32; 6] = [0x0d48_101a, 0x0273_0510, 0, 0x1400, 0, 0x75];

fn all_regs(c: &mut Client) -> Vec<(u64, u32)> {
    REGISTER_WORDS
        .iter()
        .map(|&o| (o, c.read32(o).unwrap()))
        .collect()
}

/// Every register word at reset: 0 but for these.
fn reset_values() -> Vec<(u64, u32)> {
    let value = |o| match o {
        // IDR0.MSI is advertised by default.
        IDR0 => SIM_IDR[0] | 1 << 13,
        IDR1 => SIM_IDR[1],
        IDR3 => SIM_IDR[3],
        IDR5 => SIM_IDR[5],
        AIDR => 1,
        CMDQ_BASE | EVENTQ_BASE => 0x13,
        _ => 0,
    };
    REGISTER_WORDS.iter().map(|&o| (o, value(o))).collect()
}

#[test]
fn reset_values_and_device_reset() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    assert_eq!(all_regs(&mut c), reset_values());
    // Dirty everything writable, then DEVICE_RESET restores it all.
    for (o, v) in [
        (CR1, 0xd75),
        (CR2, 6),
        (IRQ_CTRL, 5),
        (GERRORN, 0x1fd),
        (STRTAB_BASE_CFG, 0x1_0108),
    ] {
        c.write32(o, v).unwrap();
    }
    c.write64(STRTAB_BASE, 0x4000_0000).unwrap();
    c.write64(GERROR_IRQ_CFG0, 0x0800_0040).unwrap();
    c.write32(GBPA, 1 << 31 | 1 << 20).unwrap();
    c.write32(CR0, 0xd).unwrap();
    c.reset().unwrap();
    assert_eq!(all_regs(&mut c), reset_values());
}

#[test]
fn idr0_msi_by_default_and_not_with_no_msi() {
    for (args, idr0) in [
        (&[][..], SIM_IDR[0] | 1 << 13),
        (&["--msi"][..], SIM_IDR[0] | 1 << 13),
        (&["--no-msi"][..], SIM_IDR[0]),
    ] {
        let srv = TestServer::start(args);
        let mut c = srv.client();
        assert_eq!(c.read32(IDR0).unwrap(), idr0, "{args:?}");
    }
}

#[test]
fn access_rules() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    // ID registers are read-only.
    for o in [IDR0, IDR1, IDR5, IIDR, AIDR] {
        let v = c.read32(o).unwrap();
        c.write32(o, !v).unwrap();
        assert_eq!(c.read32(o).unwrap(), v);
    }
    // CR0: PRIQEN and ATSCHK are RES0 without PRI/ATS; ACK follows.
    c.write32(CR0, 0xffff_ffff).unwrap();
    assert_eq!(c.read32(CR0).unwrap(), 0x1cd);
    assert_eq!(c.read32(CR0ACK).unwrap(), 0x1cd);
    // Guarded registers ignore writes while enabled.
    c.write32(CR1, 0xfff).unwrap();
    assert_eq!(c.read32(CR1).unwrap(), 0);
    c.write64(STRTAB_BASE, 0x1234_0000).unwrap();
    assert_eq!(c.read64(STRTAB_BASE).unwrap(), 0);
    c.write32(CR0, 0).unwrap();
    c.write32(CR1, 0xffff_ffff).unwrap();
    assert_eq!(c.read32(CR1).unwrap(), 0xfff);
    c.write32(CR2, 0xffff_ffff).unwrap();
    assert_eq!(c.read32(CR2).unwrap(), 0x7);
    // STRTAB_BASE: RA and ADDR[51:6] only; 32-bit halves.
    c.write64(STRTAB_BASE, u64::MAX).unwrap();
    assert_eq!(
        c.read64(STRTAB_BASE).unwrap(),
        1 << 62 | 0x000f_ffff_ffff_ffc0
    );
    c.write32(STRTAB_BASE, 0).unwrap();
    assert_eq!(
        c.read64(STRTAB_BASE).unwrap(),
        1 << 62 | 0x000f_ffff_0000_0000
    );
    c.write32(STRTAB_BASE + 4, 0).unwrap();
    assert_eq!(c.read64(STRTAB_BASE).unwrap(), 0);
    c.write32(STRTAB_BASE_CFG, u32::MAX).unwrap();
    assert_eq!(c.read32(STRTAB_BASE_CFG).unwrap(), 0x3_07ff);
    // Queue bases: LOG2SIZE capped at IDR1.CMDQS / EVTQS (19).
    c.write64(CMDQ_BASE, 0x4000_0000 | 0x1f).unwrap();
    assert_eq!(c.read64(CMDQ_BASE).unwrap(), 0x4000_0000 | 19);
    c.write64(EVENTQ_BASE, u64::MAX).unwrap();
    assert_eq!(
        c.read64(EVENTQ_BASE).unwrap(),
        1 << 62 | 0x000f_ffff_ffff_ffe0 | 19
    );
    // GBPA: ignored without UPDATE; applied with it, UPDATE reads 0.
    c.write32(GBPA, 1 << 20).unwrap();
    assert_eq!(c.read32(GBPA).unwrap(), 0);
    c.write32(GBPA, 1 << 31 | 1 << 20 | 0xf).unwrap();
    assert_eq!(c.read32(GBPA).unwrap(), 1 << 20 | 0xf);
    // IRQ_CTRL: PRIQ_IRQEN is RES0 without PRI.
    c.write32(IRQ_CTRL, 0xff).unwrap();
    assert_eq!(c.read32(IRQ_CTRL).unwrap(), 0x5);
    assert_eq!(c.read32(IRQ_CTRLACK).unwrap(), 0x5);
    // GERRORN keeps the error bits only; GERROR is read-only.
    c.write32(GERRORN, u32::MAX).unwrap();
    assert_eq!(c.read32(GERRORN).unwrap(), 0x1fd);
    c.write32(GERROR, u32::MAX).unwrap();
    assert_eq!(c.read32(GERROR).unwrap(), 0);
    // IRQ_CFG registers.
    c.write64(EVENTQ_IRQ_CFG0, u64::MAX).unwrap();
    assert_eq!(c.read64(EVENTQ_IRQ_CFG0).unwrap(), 0x000f_ffff_ffff_fffc);
    c.write32(EVENTQ_IRQ_CFG2, u32::MAX).unwrap();
    assert_eq!(c.read32(EVENTQ_IRQ_CFG2).unwrap(), 0x3f);
    // CMDQ_CONS is writable only while CMDQEN = 0; PROD keeps pointer bits.
    c.write32(CMDQ_PROD, u32::MAX).unwrap();
    assert_eq!(c.read32(CMDQ_PROD).unwrap(), (1 << 20) - 1);
    // Page-0 aliases of EVENTQ_PROD/CONS.
    c.write32(EVENTQ_CONS, 5).unwrap();
    assert_eq!(c.read32(EVENTQ_CONS_PAGE1).unwrap(), 5);
    // 64-bit access to two 32-bit registers.
    assert_eq!(
        c.read64(CR0).unwrap(),
        u64::from(c.read32(CR0ACK).unwrap()) << 32
    );
    // CoreSight ID registers (MMU-600 values, as QEMU).
    assert_eq!(c.read32(0xfe0).unwrap(), 0x84);
}

fn cons(d: &mut SmmuDriver) -> u32 {
    d.client.read32(CMDQ_CONS).unwrap()
}

/// Every architecturally illegal command on this SMMU stops the queue at
/// that command with CERROR_ILL, toggles GERROR.CMDQ_ERR and raises the
/// GERROR interrupt; the driver's recovery resumes it.
#[test]
fn illegal_commands_stop_the_queue_exactly() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    let illegal: Vec<[u64; 2]> = vec![
        Command::TlbiEl2All.encode(),
        Command::TlbiEl3All.encode(),
        Command::TlbiS12Vmall { vmid: 1 }.encode(),
        Command::AtcInv {
            sid: 1,
            ssv: false,
            ssid: 0,
            global: false,
            size: 0,
            addr: 0,
        }
        .encode(),
        Command::PriResp {
            sid: 1,
            ssv: false,
            ssid: 0,
            grpid: 0,
            resp: 0,
        }
        .encode(),
        Command::CfgiVmsPidm { vmid: 0 }.encode(),
        [0x7f, 0],           // unknown opcode
        [0x03 | 1 << 8, 0],  // CFGI_STE with a RES0 bit set
        [0x46 | 3 << 12, 0], // CMD_SYNC CS = 0b11
    ];
    for (k, bad) in illegal.iter().enumerate() {
        let before = cons(&mut d) & 0xfffff;
        let gerror = d.client.read32(GERROR).unwrap();
        d.irq_count(3);
        let r = d.issue_raw(
            &[
                Command::TlbiNsnhAll.encode(),
                *bad,
                Command::TlbiNsnhAll.encode(),
            ],
            true,
        );
        match r {
            Err(DriverError::Command { index, cerror }) => {
                assert_eq!(cerror, 1, "case {k}");
                assert_eq!(
                    index,
                    (before + 1) & 0xff,
                    "case {k}: CONS at the illegal command"
                );
            }
            other => panic!("case {k}: {other:?}"),
        }
        // GERROR toggled and its interrupt fired.
        assert_eq!(
            d.client.read32(GERROR).unwrap() ^ gerror,
            GERROR_CMDQ_ERR,
            "case {k}"
        );
        assert_eq!(d.irq_count(3), 1, "case {k}");
        // After the driver's fix-up (a CMD_SYNC in its place) and GERRORN,
        // the rest completes.
        let t0 = std::time::Instant::now();
        while cons(&mut d) & 0xff != d.client.read32(CMDQ_PROD).unwrap() & 0xff {
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
        assert_eq!(
            CMDQ_CONS_ERR.get32(cons(&mut d)),
            1,
            "ERR stays until the next error"
        );
    }
    assert_eq!(d.client.stats().unwrap().cmd_errors, illegal.len() as u64);
}

/// A command queue outside guest RAM: CERROR_ABT.
#[test]
fn command_outside_guest_ram_is_abort() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    let ram = vsmmu_guest::GuestRam::new(0x4000_0000, 0x10000).unwrap();
    c.dma_map(ram.fd(), 0, 0x4000_0000, 0x10000).unwrap();
    c.write64(CMDQ_BASE, 0x8000_0000 | 4).unwrap();
    c.write32(CR0, CR0_CMDQEN.mask32()).unwrap();
    c.write32(CMDQ_PROD, 1).unwrap();
    assert_eq!(c.read32(CMDQ_CONS).unwrap(), 2 << 24);
    assert_eq!(c.read32(GERROR).unwrap(), GERROR_CMDQ_ERR);
    // Move the queue into RAM (CMDQEN off), acknowledge, and it runs.
    c.write32(CR0, 0).unwrap();
    c.write64(CMDQ_BASE, 0x4000_0000 | 4).unwrap();
    ram.write_u64s(0x4000_0000, &Command::sync_sev().encode());
    c.write32(CR0, CR0_CMDQEN.mask32()).unwrap();
    c.write32(GERRORN, GERROR_CMDQ_ERR).unwrap();
    assert_eq!(c.read32(CMDQ_CONS).unwrap() & 0xff, 1);
    assert_eq!(c.stats().unwrap().cmd_syncs, 1);
}

/// CMD_SYNC with CS = IRQ signals the CMD_SYNC line; with --msi and an
/// MSIADDR in guest RAM it writes MSIDATA there instead.
#[test]
fn cmd_sync_completion_signals() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    d.irq_count(2);
    let irq_sync = Command::Sync {
        cs: vsmmu_protocol::smmu::command::SyncCs::Irq,
        msh: 3,
        msiattr: 0xf,
        msidata: 0,
        msiaddr: 0,
    };
    d.issue(&[irq_sync], false).unwrap();
    d.issue(&[], true).unwrap();
    assert_eq!(d.irq_count(2), 1);

    let (_srv2, mut m) = boot(&["--msi"], 8 << 20, small(6));
    assert!(m.features.msi);
    let before = m.client.stats().unwrap().msi_writes;
    m.issue(&[Command::TlbiNsnhAll], true).unwrap();
    assert_eq!(m.client.stats().unwrap().msi_writes, before + 1);
    assert_eq!(m.irq_count(2), 0);
}

/// Invalidations are batched: one host call per run, flushed before the
/// CMD_SYNC; `--no-batch` makes one call per command.
#[test]
fn invalidations_are_batched() {
    for (args, calls) in [(&[][..], 1u64), (&["--no-batch"][..], 64)] {
        let (_srv, mut d) = boot(args, 8 << 20, small(6));
        let s0 = d.client.stats().unwrap();
        let cmds: Vec<Command> = (0..64)
            .map(|i| Command::TlbiNhVa {
                vmid: 0,
                asid: 1,
                range: TlbiRange::va(i << 12, true),
            })
            .collect();
        d.issue(&cmds, true).unwrap();
        let s = d.client.stats().unwrap();
        assert_eq!(s.host_invalidate_calls - s0.host_invalidate_calls, calls);
        assert_eq!(s.host_invalidate_entries - s0.host_invalidate_entries, 64);
    }
}

/// The host rejects one command in the middle of a batch: CONS points at
/// exactly that command with CERROR_ILL; the ones before it were sent.
#[test]
fn host_rejection_mid_batch() {
    let (_srv, mut d) = boot(&["--sim-reject-opcode", "0x13"], 8 << 20, small(6));
    let e0 = d.client.stats().unwrap().host_invalidate_entries;
    let start = cons(&mut d) & 0xff;
    let mut cmds: Vec<Command> = (0..10)
        .map(|i| Command::TlbiNhVa {
            vmid: 0,
            asid: 1,
            range: TlbiRange::va(i << 12, true),
        })
        .collect();
    cmds.insert(
        6,
        Command::TlbiNhVaa {
            vmid: 0,
            range: TlbiRange::va(0x9000, true),
        },
    );
    match d.issue(&cmds, true) {
        Err(DriverError::Command { index, cerror }) => {
            assert_eq!((index, cerror), ((start + 6) & 0xff, 1));
        }
        other => panic!("{other:?}"),
    }
    // 11 in the failing call (which executed none of them: the kernel
    // converts a whole block before issuing it); the 7 up to the rejected
    // one sent again one by one; after the driver put a CMD_SYNC in place
    // of the rejected command and acknowledged, the 4 after it.
    assert_eq!(d.client.stats().unwrap().host_invalidate_entries - e0, 22);
}

/// An STE this SMMU refuses (stage 2 Config) raises C_BAD_STE for that
/// StreamID at CFGI_STE, byte for byte; CFGI_ALL over unused StreamIDs
/// raises nothing.
#[test]
fn refused_ste_raises_c_bad_ste() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    d.issue(&[Command::cfgi_all()], true).unwrap();
    assert!(d.evtq_pass().unwrap().events.is_empty());
    d.client.attach_device(0x21, None).unwrap();
    let mut ste = Ste::abort().to_words();
    ste[0] = 1 | 0b110 << 1; // V, Config = stage 2 only
    d.write_ste(0x21, Ste::from_words(ste)).unwrap();
    let got = d.evtq_pass().unwrap();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].raw, [0x21 << 32 | 0x04, 0, 0, 0]);
    // A valid S1 STE whose context pointer is beyond OAS: C_BAD_STE too.
    d.write_ste(0x21, Ste::s1(1 << 50, 0, S1Fmt::Linear))
        .unwrap();
    assert_eq!(
        d.evtq_pass().unwrap().events[0].raw,
        [0x21 << 32 | 0x04, 0, 0, 0]
    );
    // V = 0: nothing at CFGI.
    d.write_ste(0x21, Ste::abort().invalidated()).unwrap();
    assert!(d.evtq_pass().unwrap().events.is_empty());
    // A good S1 STE: nothing.
    let cd = d.linux_cd(1, 0x4000_0000);
    d.attach_s1(0x21, cd).unwrap();
    assert!(d.evtq_pass().unwrap().events.is_empty());
    assert_eq!(d.client.stats().unwrap().model_events, 2);
}

/// An STE that cannot be fetched (its L2 table outside guest RAM): F_STE_FETCH
/// with the fetch address.
#[test]
fn unreadable_ste_raises_f_ste_fetch() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    d.client.attach_device(0x105, None).unwrap();
    // Point the L1 descriptor of StreamIDs 0x100..0x1ff outside RAM.
    let l1 = d.client.read64(STRTAB_BASE).unwrap() & 0x000f_ffff_ffff_ffc0;
    d.ram.write_u64s(l1 + 8, &[0x10_0000_0000 | 9]);
    d.issue(
        &[Command::CfgiSte {
            sid: 0x105,
            leaf: true,
        }],
        true,
    )
    .unwrap();
    let ev = d.evtq_pass().unwrap().events;
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].raw,
        [0x105 << 32 | 0x03, 0, 0, 0x10_0000_0000 + 5 * 64]
    );
}

/// The event queue wraps correctly for every LOG2SIZE from 0 to 12 (and
/// the largest, 19, in the storm test): three laps of records, exact order.
#[test]
fn event_queue_wraps_for_every_size() {
    let srv = TestServer::start(&[]);
    for shift in 0..=12u8 {
        {
            let mut d = boot_on(&srv, 4 << 20, small(shift));
            assert_eq!(d.evtq_layout().1, shift);
            d.client.attach_device(1, None).unwrap();
            let n = 1u64 << shift;
            let mut seen = 0u64;
            let total = 3 * n + 1;
            let mut sent = 0u64;
            while seen < total {
                if sent == seen {
                    let k = n.min(total - sent);
                    let recs: Vec<[u64; 4]> = (sent..sent + k)
                        .map(|i| [1 << 32 | 0x10, 0, i, 0])
                        .collect();
                    d.client.sim_inject(&recs).unwrap();
                    sent += k;
                }
                for e in d.evtq_pass().unwrap().events {
                    assert_eq!(e.raw[2], seen, "shift {shift}");
                    seen += 1;
                }
            }
            let prod = d.client.read32(EVENTQ_PROD_PAGE1).unwrap();
            let mask = (2u32 << shift) - 1;
            assert_eq!(prod & mask, (total as u32) & mask, "shift {shift}");
            assert_eq!(d.client.stats().unwrap().guest_events_dropped, 0);
            d.client.detach_device(1).unwrap();
            d.client.reset().unwrap();
        }
    }
}

/// OVFLG toggles on a drop, stays while unacknowledged, and toggles again
/// only after CONS.OVACKFLG acknowledged it.
#[test]
fn overflow_flag_and_acknowledgement() {
    let (_srv, mut d) = boot(
        &["--event-buffer", "1", "--sim-veventq-depth", "64"],
        8 << 20,
        small(1),
    );
    d.client.attach_device(2, None).unwrap();
    let rec = |i: u64| [2 << 32 | 0x10, 0, i, 0];
    // Queue of 2 + buffer of 1: the 4th and 5th are dropped.
    d.client
        .sim_inject(&(0..5).map(rec).collect::<Vec<_>>())
        .unwrap();
    let t0 = std::time::Instant::now();
    while d.client.stats().unwrap().guest_events_dropped < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    let prod = d.client.read32(EVENTQ_PROD_PAGE1).unwrap();
    assert_eq!(prod, Q_PROD_OVFLG | 2, "full, wrapped once, OVFLG set");
    assert_eq!(d.client.stats().unwrap().evtq_overflows, 1);
    // More drops before the acknowledgement do not toggle again.
    d.client.sim_inject(&[rec(9)]).unwrap();
    while d.client.stats().unwrap().guest_events_dropped < 3 {
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(
        d.client.read32(EVENTQ_PROD_PAGE1).unwrap() & Q_PROD_OVFLG,
        Q_PROD_OVFLG
    );
    // The driver consumes and acknowledges.
    let pass = d.evtq_pass().unwrap();
    assert!(pass.overflow);
    assert_eq!(
        pass.events.iter().map(|e| e.raw[2]).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(
        d.client.read32(EVENTQ_CONS_PAGE1).unwrap() & Q_CONS_OVACKFLG,
        Q_CONS_OVACKFLG
    );
    // A new overflow toggles OVFLG back to 0.
    d.client
        .sim_inject(&(10..14).map(rec).collect::<Vec<_>>())
        .unwrap();
    while d.client.stats().unwrap().evtq_overflows < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(
        d.client.read32(EVENTQ_PROD_PAGE1).unwrap() & Q_PROD_OVFLG,
        0
    );
}
