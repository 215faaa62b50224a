//! Writes the seed corpus, `corpus/<target>/seed-*`: a few valid inputs per
//! target, built with the protocol crate's own constructors.
//!
//! `cargo run --example make_seeds` (from `fuzz/`).

use std::fs;
use std::path::Path;

use vsmmu_protocol::iommufd::{VeventArmSmmuv3, VeventHeader, IOMMU_VEVENTQ_FLAG_LOST_EVENTS};
use vsmmu_protocol::smmu::cd::{Cd, Granule};
use vsmmu_protocol::smmu::command::Command as SmmuCmd;
use vsmmu_protocol::smmu::ste::{S1Fmt, Ste};
use vsmmu_protocol::vfio_user::{
    Command, DmaMap, Message, RegionAccess, SimInjectHeader, VsmmuDevice, WriteMultiEntry,
    WriteMultiHeader, DMA_MAP_READ, DMA_MAP_WRITE,
};
use vsmmu_testutil::msg::irq_eventfds;
use zerocopy::IntoBytes;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn fault(vsid: u32, iova: u64) -> [u64; 4] {
    [u64::from(vsid) << 32 | 0x10, 1 << 35, iova, iova & !0xfff]
}

fn vfio_user() {
    let mut v = vec![0u8, 0, 2, 0];
    v.extend_from_slice(br#"{"capabilities":{"vsmmu":{"version":1},"max_msg_fds":8}}"#);
    v.push(0);
    let t = "vfio_user_decode";
    write(
        t,
        "version",
        &Message::command(1, Command::Version).bytes(&v).finish(),
    );
    let map = DmaMap {
        argsz: DmaMap::SIZE,
        flags: DMA_MAP_READ | DMA_MAP_WRITE,
        offset: 0,
        addr: 0x4000_0000,
        size: 0x10_0000,
    };
    write(
        t,
        "dma-map",
        &Message::command(2, Command::DmaMap).push(&map).finish(),
    );
    let a = RegionAccess {
        offset: 0x98,
        region: 0,
        count: 4,
    };
    write(
        t,
        "region-write-posted",
        &Message::command(3, Command::RegionWrite)
            .push(&a)
            .bytes(&3u32.to_le_bytes())
            .no_reply()
            .finish(),
    );
    let e = WriteMultiEntry {
        offset: 0x20,
        region: 0,
        count: 4,
        data: [0xd, 0, 0, 0, 0, 0, 0, 0],
    };
    write(
        t,
        "write-multi",
        &Message::command(4, Command::RegionWriteMulti)
            .push(&WriteMultiHeader { wr_cnt: 1 })
            .push(&e)
            .finish(),
    );
    let s = irq_eventfds(0, 1);
    write(
        t,
        "set-irqs",
        &Message::command(5, Command::DeviceSetIrqs)
            .push(&s)
            .finish(),
    );
    let d = VsmmuDevice {
        argsz: VsmmuDevice::SIZE,
        flags: 0,
        vsid: 0x42,
        reserved: 0,
    };
    write(
        t,
        "attach",
        &Message::command(6, Command::VsmmuAttachDevice)
            .push(&d)
            .finish(),
    );
    let rec = fault(0x42, 0x1000);
    write(
        t,
        "sim-inject",
        &Message::command(7, Command::VsmmuSimInject)
            .push(&SimInjectHeader {
                argsz: SimInjectHeader::SIZE + 32,
                count: 1,
            })
            .push(&rec)
            .finish(),
    );
}

fn cmdq() {
    let t = "cmdq_decode";
    let mut linux = vec![0u8];
    for c in [
        SmmuCmd::CfgiSte {
            sid: 0x12,
            leaf: true,
        },
        SmmuCmd::cfgi_all(),
        SmmuCmd::TlbiNhAsid { vmid: 0, asid: 1 },
        SmmuCmd::sync_sev(),
        SmmuCmd::sync_msi(0x4_0001_0230),
    ] {
        linux.extend_from_slice(c.encode().as_bytes());
    }
    write(t, "linux", &linux);
    // Fuzzed caps: QEMU's IDR0/IDR3, then a CFGI_CD.
    let mut caps = vec![1u8];
    caps.extend_from_slice(&0x0d40_101au32.to_le_bytes());
    caps.extend_from_slice(&0x0000_1404u32.to_le_bytes());
    caps.extend_from_slice(
        SmmuCmd::CfgiCd {
            sid: 3,
            ssid: 1,
            leaf: true,
        }
        .encode()
        .as_bytes(),
    );
    write(t, "caps", &caps);
}

fn ste_cd() {
    let t = "ste_cd_validate";
    let seed = |sel: u8, cfg: u32, sid: u32, ste: Ste, cd: Cd| {
        let mut b = vec![sel];
        b.extend_from_slice(&[0u8; 12]);
        b.extend_from_slice(&0x4010_0000u64.to_le_bytes());
        b.extend_from_slice(&cfg.to_le_bytes());
        b.extend_from_slice(&sid.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(0x4020_0000u64 | 9).to_le_bytes());
        b.extend_from_slice(&(0x4030_0000u64 | 1).to_le_bytes());
        b.extend_from_slice(&ste.to_bytes());
        b.extend_from_slice(&cd.to_bytes());
        b
    };
    let cd = Cd::s1(0x4040_0000, 16, Granule::K4, 4, 1).with_mair(0x0044_ff04);
    write(
        t,
        "linear-s1",
        &seed(0, 8, 3, Ste::s1(0x4050_0000, 0, S1Fmt::Linear), cd),
    );
    // 2-level stream table (SPLIT 8), 2-level CD table, with a SubstreamID.
    write(
        t,
        "2lvl-ssid",
        &seed(
            2,
            1 << 16 | 8 << 6 | 16,
            0x123,
            Ste::s1(0x4050_0000, 8, S1Fmt::TwoLevel4K),
            cd,
        ),
    );
    write(t, "bypass", &seed(0, 8, 1, Ste::bypass(), Cd::default()));
}

fn vevent() {
    let t = "vevent_parse";
    let ev = |seq: u32, evt: [u64; 4]| {
        let mut b = VeventHeader {
            flags: 0,
            sequence: seq,
        }
        .as_bytes()
        .to_vec();
        b.extend_from_slice(VeventArmSmmuv3 { evt }.as_bytes());
        b
    };
    let lost = |seq: u32| {
        VeventHeader {
            flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
            sequence: seq,
        }
        .as_bytes()
        .to_vec()
    };
    // The kernel selftest: seq 1, 2, LOST(3).
    let mut b = ev(1, fault(1, 0x1000));
    b.extend(ev(2, fault(1, 0x2000)));
    b.extend(lost(3));
    write(t, "selftest", &b);
    let mut w = ev(0x7fff_ffff, fault(7, 0));
    w.extend(ev(0, fault(7, 0x1000)));
    write(t, "wrap", &w);
}

/// Programs for `request_handler`, in the byte format its `Input` reads.
fn request_handler() {
    let t = "request_handler";
    // cfg, blob_len = 0.
    let mut p = vec![0u8, 0];
    // Boot: op 19 → sub-op 2; sel (linear, SMMUEN), CMDQ 2^8, EVTQ 2^7.
    p.extend_from_slice(&[19, 2, 0, 8, 7]);
    // IRQ eventfd for EVENTQ: op 17, flags kind 3, 1 fd, index 0.
    p.extend_from_slice(&[17, 3, 1, 0]);
    // Attach sid 1: op 14, attach, sid 1.
    p.extend_from_slice(&[14, 1, 1]);
    // STE for sid 1: op 10, sid 1, l2 addr (u16), ste kind 3 (S1, linear
    // one CD) at RAM + 0x8000.
    p.extend_from_slice(&[10, 1, 0, 0, 3]);
    p.extend_from_slice(&(0x8000u16 / 64).to_le_bytes());
    // CD for sid 1: op 12, sid 1, no ssid, l2, template: granule 4K,
    // ttb0 RAM + 0xc000, T0SZ 16, IPS 4, ASID 1.
    p.extend_from_slice(&[12, 1, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&(0xc000u16 / 64).to_le_bytes());
    p.extend_from_slice(&[16, 4, 1, 0]);
    // Commands: op 8, n = 2: CFGI_STE sid 1 leaf, CMD_SYNC SEV; not posted.
    p.extend_from_slice(&[8, 1, 1, 1, 1, 13, 0, 0]);
    // Inject 2 events for sid 1: op 13, n 2, (sid, id, 3 × u64) each.
    p.extend_from_slice(&[13, 2]);
    for i in 0..2u64 {
        p.extend_from_slice(&[1, 0x10]);
        for w in [1u64 << 35, 0x1000 * (i + 1), 0x1000 * (i + 1)] {
            p.extend_from_slice(&w.to_le_bytes());
        }
    }
    // The guest consumes: op 15.
    p.extend_from_slice(&[15, 0, 0]);
    write(t, "boot-linear", &p);

    // 2-level stream table, MSI, 4-record buffer; STE with 2-level CDs.
    let mut q = vec![5u8, 0];
    q.extend_from_slice(&[19, 2, 1, 5, 3]);
    q.extend_from_slice(&[14, 1, 0x42 % 8]);
    q.extend_from_slice(&[10, 2]);
    q.extend_from_slice(&(0x6000u16 / 64).to_le_bytes());
    q.extend_from_slice(&[4, 1]);
    q.extend_from_slice(&(0x8000u16 / 64).to_le_bytes());
    q.extend_from_slice(&[4, 0]);
    // CD for sid 2, SubstreamID 3, leaf table at RAM + 0xa000.
    q.extend_from_slice(&[12, 2, 1, 3]);
    q.extend_from_slice(&(0xa000u16 / 64).to_le_bytes());
    q.extend_from_slice(&[0, 0]);
    q.extend_from_slice(&(0xc000u16 / 64).to_le_bytes());
    q.extend_from_slice(&[16, 4, 2, 0]);
    // CFGI_CD_ALL sid 2, CMD_SYNC with MSI to RAM + 0x4400.
    q.extend_from_slice(&[8, 1, 6, 2, 13, 1, 0x10, 0x01, 0]);
    q.extend_from_slice(&[13, 8]);
    for i in 0..8u64 {
        q.extend_from_slice(&[2, 0x10]);
        for w in [0u64, i << 12, i << 12] {
            q.extend_from_slice(&w.to_le_bytes());
        }
    }
    q.extend_from_slice(&[15, 1, 1, 19, 0, 19, 1]);
    write(t, "boot-2lvl", &q);

    // A device DMA walking a 4-level table: L0..L2 at RAM pages 12..14,
    // L3 at page 15 mapping IOVA 0 to page 10.
    let mut w = vec![0u8, 0];
    w.extend_from_slice(&[19, 2, 0, 8, 7]);
    w.extend_from_slice(&[14, 1, 1]);
    w.extend_from_slice(&[10, 1, 0, 0, 3]);
    w.extend_from_slice(&(0x8000u16 / 64).to_le_bytes());
    w.extend_from_slice(&[12, 1, 0, 0, 0, 0, 0]);
    w.extend_from_slice(&(0xc000u16 / 64).to_le_bytes());
    w.extend_from_slice(&[16, 4, 1, 0]);
    w.extend_from_slice(&[8, 1, 1, 1, 1, 13, 0, 0]);
    // Op 21: table page, index, kind 1 (table) → next page.
    for (page, next) in [(12, 13), (13, 14), (14, 15)] {
        w.extend_from_slice(&[21, page, 0, 0, 1, next]);
    }
    // Kind 2 (leaf): page 10, page descriptor, AP = EL0 RW, AF, no DBM.
    w.extend_from_slice(&[21, 15, 0, 0, 2, 10, 1, 1, 0, 0]);
    // Op 20: read 16 bytes at IOVA 0x10, structured IOVA.
    w.extend_from_slice(&[20, 0, 1, 15, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]);
    // Write 8 bytes at 0x20.
    w.extend_from_slice(&[20, 1, 1, 7, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0]);
    w.extend_from_slice(b"vsmmu!!\n");
    // Read the unmapped page at 0x1000: F_TRANSLATION, an event.
    w.extend_from_slice(&[20, 0, 1, 3, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
    w.extend_from_slice(&[15, 0, 0]);
    write(t, "dma-walk", &w);

    // A raw message of each kind the fuzzer should mutate.
    let mut r = vec![0u8, 1];
    r.extend_from_slice(SmmuCmd::sync_sev().encode().as_bytes());
    let a = RegionAccess {
        offset: 0x20,
        region: 0,
        count: 4,
    };
    let mut raw = |cmd: u8, flags: u8, payload: &[u8]| {
        r.extend_from_slice(&[0, cmd, flags, payload.len() as u8]);
        r.extend_from_slice(payload);
        r.push(0);
    };
    raw(Command::RegionRead as u8 - 1, 0, a.as_bytes());
    raw(
        Command::DeviceGetInfo as u8 - 1,
        0,
        &[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let mut w = a.as_bytes().to_vec();
    w.extend_from_slice(&0xcu32.to_le_bytes());
    raw(Command::RegionWrite as u8 - 1, 0xc0, &w);
    raw(Command::DeviceReset as u8 - 1, 0, &[]);
    write(t, "raw", &r);
}

fn main() {
    vfio_user();
    cmdq();
    ste_cd();
    vevent();
    request_handler();
}
