//! Tests of simulated DMA.

use super::*;
use crate::host::HostIommu;
use vsmmu_protocol::iommufd::{parse_vevents, Vevent};
use vsmmu_protocol::smmu::cd::{Granule, CD_0_EPD0, CD_0_R, CD_0_TG0, CD_0_V};
use vsmmu_protocol::smmu::command::{Command, TlbiRange};
use vsmmu_protocol::smmu::event::{C_BAD_CD, C_BAD_STE, F_ACCESS, F_STREAM_DISABLED};
use vsmmu_protocol::smmu::pgtable::{
    block_desc, page_desc, table_desc, Geometry, PteAttrs, PTE_AF, PTE_AP_RDONLY,
};
use vsmmu_protocol::smmu::ste::{S1Dss, S1Fmt};
use vsmmu_testutil::memfd;

const VSID: u32 = 0x10;
const RAM: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 32 << 20;
/// A read-only DMA mapping of the last page of RAM's memfd ...
const ROM: u64 = 0x6000_0000;
/// ... which is writable here.
const ROM_ALIAS: u64 = RAM + RAM_SIZE - 0x1000;
const CD_TABLE: u64 = RAM;
const L1CD_TABLE: u64 = RAM + 0x1_0000;
const TABLES: u64 = RAM + 0x10_0000;
const DATA: u64 = RAM + 0x100_0000;

struct Env {
    sim: SimHost,
    mem: GuestRam,
}

/// RAM at [`RAM`], a read-only page at [`ROM`], vSID [`VSID`] attached,
/// a vEVENTQ of depth 16.
fn env() -> Env {
    let mut mem = GuestRam::new(8);
    let fd = memfd(RAM_SIZE);
    let alias = fd.try_clone().unwrap();
    mem.map(fd, 0, RAM, RAM_SIZE, true).unwrap();
    mem.map(alias, ROM_ALIAS - RAM, ROM, 0x1000, false).unwrap();
    let mut sim = SimHost::default();
    sim.attach_device(VSID, None).unwrap();
    sim.alloc_veventq(16).unwrap();
    Env { sim, mem }
}

/// A stage-1 page table built in guest RAM.
struct Pt {
    geo: Geometry,
    root: u64,
    next: u64,
}

impl Pt {
    fn new(mem: &GuestRam, g: Granule, tsz: u8, at: u64) -> Pt {
        let geo = Geometry::from_tsz(g, tsz).unwrap();
        mem.write(at, &[0u8; 0x1_0000]).unwrap();
        Pt {
            geo,
            root: at,
            next: at + 0x1_0000,
        }
    }

    /// The address of the descriptor for `va` at `level`, making
    /// tables on the way.
    fn slot(&mut self, mem: &GuestRam, va: u64, level: u8) -> u64 {
        let mut table = self.root;
        let mut l = self.geo.start_level();
        loop {
            let addr = table + self.geo.index(l, va) * 8;
            if l == level {
                return addr;
            }
            let [d] = mem.read_u64s::<1>(addr).unwrap();
            if d & 3 == 3 {
                table = d & 0x0000_ffff_ffff_f000 & !((1 << self.geo.granule().shift()) - 1);
            } else {
                let t = self.next;
                self.next += 0x1_0000;
                mem.write(t, &[0u8; 0x1_0000]).unwrap();
                mem.write_u64s(addr, &[table_desc(t, self.geo.granule())])
                    .unwrap();
                table = t;
            }
            l += 1;
        }
    }

    fn page(&mut self, mem: &GuestRam, va: u64, pa: u64, a: &PteAttrs) -> u64 {
        let slot = self.slot(mem, va, 3);
        mem.write_u64s(slot, &[page_desc(pa, self.geo.granule(), a)])
            .unwrap();
        slot
    }

    fn block(&mut self, mem: &GuestRam, va: u64, pa: u64, level: u8, a: &PteAttrs) {
        let slot = self.slot(mem, va, level);
        mem.write_u64s(slot, &[block_desc(pa, &self.geo, level, a)])
            .unwrap();
    }
}

fn rw() -> PteAttrs {
    PteAttrs::linux(true)
}

/// Installs a single-CD stage-1 vSTE (S1CDMax 0) with a Linux CD at
/// [`CD_TABLE`] for a 4K, 48-bit table; returns the table.
fn linux_s1(e: &mut Env) -> Pt {
    let pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
    write_cd(e, 0, Cd::s1(pt.root, 16, Granule::K4, 5, 7));
    install(e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
    pt
}

fn write_cd(e: &Env, index: u64, cd: Cd) {
    e.mem.write(CD_TABLE + index * 64, &cd.to_bytes()).unwrap();
}

fn install(e: &mut Env, ste: Ste) {
    let w = ste.to_words();
    e.sim
        .install_ste(VSID, SteAction::Nested { ste: [w[0], w[1]] })
        .unwrap();
}

fn dma(e: &mut Env, ssid: Option<u32>, iova: u64, write: Option<&[u8]>, len: u64) -> SimDmaResult {
    let req = SimDma {
        argsz: SimDma::SIZE + write.map_or(0, |d| d.len() as u32),
        flags: if write.is_some() { SIM_DMA_WRITE } else { 0 },
        vsid: VSID,
        ssid: ssid.unwrap_or(SIM_DMA_NO_SSID),
        iova,
        len,
    };
    e.sim.dma(&e.mem, &req, write.unwrap_or(&[]))
}

fn read(e: &mut Env, iova: u64, len: u64) -> SimDmaResult {
    dma(e, None, iova, None, len)
}

fn write(e: &mut Env, iova: u64, data: &[u8]) -> SimDmaResult {
    dma(e, None, iova, Some(data), data.len() as u64)
}

/// Events in the vEVENTQ, drained.
fn events(e: &mut Env) -> Vec<[u64; 4]> {
    let mut buf = vec![0u8; 40 * 64];
    let n = e.sim.read_veventq(&mut buf).unwrap();
    parse_vevents(&buf[..n])
        .map(|r| match r.unwrap() {
            Vevent::Event { evt, .. } => evt,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn ok(r: &SimDmaResult) {
    assert_eq!((r.status, r.record), (0, None), "{r:x?}");
}

/// Expects a forwarded fault with exactly `record`, and that record
/// alone in the vEVENTQ.
fn fault(e: &mut Env, r: SimDmaResult, record: [u64; 4]) {
    assert_eq!(r.status, record[0] as u32 & 0xff, "{r:x?}");
    assert_eq!(r.record, Some(record), "{r:x?}");
    assert!(r.forwarded && r.data.is_empty());
    assert_eq!(events(e), vec![record]);
}

/// Expects a fault the kernel keeps: `record` written by the host SMMU,
/// nothing in the vEVENTQ.
fn host_fault(e: &mut Env, r: SimDmaResult, status: u32, record: Option<[u64; 4]>) {
    assert_eq!(
        (r.status, r.record, r.forwarded),
        (status, record, false),
        "{r:x?}"
    );
    assert!(events(e).is_empty());
}

const D0: u64 = (VSID as u64) << 32;
/// dword1 of a stage-1 fault: RnW, CLASS = IN.
const RD_IN: u64 = 0x0000_0208_0000_0000;
const WR_IN: u64 = 0x0000_0200_0000_0000;

#[test]
fn unattached_streamid() {
    let mut e = env();
    let req = SimDma {
        argsz: SimDma::SIZE,
        flags: 0,
        vsid: 0x77,
        ssid: 3,
        iova: 0x1000,
        len: 4,
    };
    let r = e.sim.dma(&e.mem, &req, &[]);
    host_fault(
        &mut e,
        r,
        u32::from(C_BAD_STREAMID),
        Some([0x0000_0077_0000_3802, 0, 0, 0]),
    );
}

#[test]
fn abort_terminates_without_event() {
    let mut e = env();
    // Attached, nothing installed yet: the host's abort STE.
    let r = read(&mut e, DATA, 4);
    host_fault(&mut e, r, SIM_DMA_ABORTED, None);
    // The guest's own abort STE (V = 1, Config = 0b000).
    install(&mut e, Ste::abort());
    let r = write(&mut e, DATA, &[1, 2]);
    host_fault(&mut e, r, SIM_DMA_ABORTED, None);
    assert_eq!(e.mem.read_u64s::<1>(DATA).unwrap(), [0]);
}

#[test]
fn invalid_vste_is_c_bad_ste() {
    let mut e = env();
    e.sim
        .install_ste(VSID, SteAction::Nested { ste: [0, 0] })
        .unwrap();
    let r = read(&mut e, DATA, 4);
    fault(&mut e, r, [D0 | u64::from(C_BAD_STE), 0, 0, 0]);
    let r = dma(&mut e, Some(3), DATA, None, 4);
    fault(&mut e, r, [D0 | 0x3804, 0, 0, 0]);
    // ILLEGAL for this SMMU: S1STALLD without a stall model.
    install(
        &mut e,
        Ste::from_words({
            let mut w = Ste::s1(CD_TABLE, 0, S1Fmt::Linear).to_words();
            w[1] |= 1 << 27;
            w
        }),
    );
    let r = read(&mut e, DATA, 4);
    fault(&mut e, r, [D0 | 0x04, 0, 0, 0]);
}

#[test]
fn bypass_is_identity_with_ias_check() {
    let mut e = env();
    e.sim.install_ste(VSID, SteAction::Bypass).unwrap();
    ok(&write(&mut e, DATA + 0xffe, &[1, 2, 3, 4]));
    assert_eq!(read(&mut e, DATA + 0xffd, 6).data, vec![0, 1, 2, 3, 4, 0]);
    // A SubstreamID without stage 1: C_BAD_SUBSTREAMID (no SSV bit).
    let r = dma(&mut e, Some(9), DATA, None, 4);
    fault(&mut e, r, [D0 | 0x9008, 0, 0, 0]);
    // Beyond the 48-bit IAS: stage-1 address size fault.
    let r = read(&mut e, 1 << 48, 4);
    fault(&mut e, r, [D0 | 0x11, RD_IN, 1 << 48, 0]);
    // Inside the IAS but not DMA-mapped: stage-2 translation fault,
    // kept by the host (S2 = 1, CLASS = IN, IPA).
    let r = write(&mut e, 0x9000_0010, &[0]);
    host_fault(
        &mut e,
        r,
        0x10,
        Some([D0 | 0x10, 0x0000_0280_0000_0000, 0x9000_0010, 0x9000_0000]),
    );
    // Read-only DMA mapping: stage-2 permission fault on write only.
    ok(&read(&mut e, ROM, 8));
    let r = write(&mut e, ROM + 8, &[1]);
    host_fault(
        &mut e,
        r,
        0x13,
        Some([D0 | 0x13, 0x0000_0280_0000_0000, ROM + 8, ROM]),
    );
    // The guest's bypass vSTE (as the model builds it) behaves the same.
    e.sim
        .install_ste(
            VSID,
            SteAction::Nested {
                ste: SteConfig::Bypass.to_vste(),
            },
        )
        .unwrap();
    ok(&read(&mut e, DATA + 0xfff, 2));
}

#[test]
fn page_walk_moves_data_across_pages() {
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    // Two adjacent IOVA pages on non-adjacent PAs.
    pt.page(&e.mem, 0x1234_5000, DATA + 0x5000, &rw());
    pt.page(&e.mem, 0x1234_6000, DATA + 0x1000, &rw());
    let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    ok(&write(&mut e, 0x1234_5800, &data));
    let mut back = vec![0u8; 0x800];
    e.mem.read(DATA + 0x5800, &mut back).unwrap();
    assert_eq!(back, data[..0x800]);
    e.mem.read(DATA + 0x1000, &mut back).unwrap();
    assert_eq!(back, data[0x800..]);
    let r = read(&mut e, 0x1234_5800, 4096);
    ok(&r);
    assert_eq!(r.data, data);
    assert!(events(&mut e).is_empty());
}

#[test]
fn translation_fault_record_and_no_partial_transfer() {
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    pt.page(&e.mem, 0x1234_5000, DATA, &rw());
    let r = read(&mut e, 0x1234_6010, 16);
    fault(&mut e, r, [D0 | 0x10, RD_IN, 0x1234_6010, 0]);
    // The second page faults: InputAddr is its first byte, and the
    // first page is not written.
    let r = write(&mut e, 0x1234_5ffe, &[9, 9, 9, 9]);
    fault(&mut e, r, [D0 | 0x10, WR_IN, 0x1234_6000, 0]);
    assert_eq!(e.mem.read_u64s::<1>(DATA + 0xff8).unwrap(), [0]);
    // Outside the 48-bit input range.
    let r = read(&mut e, 0xffff_0000_0000_0000, 1);
    fault(&mut e, r, [D0 | 0x10, RD_IN, 0xffff_0000_0000_0000, 0]);
}

#[test]
fn permission_faults() {
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    pt.page(&e.mem, 0x1000, DATA, &PteAttrs::linux(false));
    pt.page(
        &e.mem,
        0x2000,
        DATA,
        &PteAttrs {
            unpriv: false,
            ..rw()
        },
    );
    ok(&read(&mut e, 0x1000, 8));
    let r = write(&mut e, 0x1008, &[1]);
    fault(&mut e, r, [D0 | 0x13, WR_IN, 0x1008, 0]);
    // The cached read-only translation faults the same way.
    let r = write(&mut e, 0x1010, &[1]);
    fault(&mut e, r, [D0 | 0x13, WR_IN, 0x1010, 0]);
    // Privileged-only: the device's unprivileged read faults.
    let r = read(&mut e, 0x2000, 1);
    fault(&mut e, r, [D0 | 0x13, RD_IN, 0x2000, 0]);
}

#[test]
fn access_flag_and_httu() {
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    let no_af = PteAttrs { af: false, ..rw() };
    let slot = pt.page(&e.mem, 0x1000, DATA, &no_af);
    let r = read(&mut e, 0x1000, 4);
    fault(&mut e, r, [D0 | u64::from(F_ACCESS), RD_IN, 0x1000, 0]);
    // HA: the SMMU sets AF in memory and the access succeeds.
    write_cd(
        &e,
        0,
        Cd::s1(pt.root, 16, Granule::K4, 5, 7).with_httu(true, false),
    );
    e.sim
        .invalidate(&[Command::CfgiCd {
            sid: VSID,
            ssid: 0,
            leaf: true,
        }
        .encode()])
        .unwrap();
    ok(&read(&mut e, 0x1000, 4));
    let [d] = e.mem.read_u64s::<1>(slot).unwrap();
    assert_eq!(d, page_desc(DATA, Granule::K4, &no_af) | PTE_AF);
    // HD: a writable-clean page becomes dirty on the first write.
    write_cd(
        &e,
        0,
        Cd::s1(pt.root, 16, Granule::K4, 5, 7).with_httu(true, true),
    );
    e.sim
        .invalidate(&[Command::CfgiCdAll { sid: VSID }.encode()])
        .unwrap();
    let clean = PteAttrs {
        dbm: true,
        ..PteAttrs::linux(false)
    };
    let slot = pt.page(&e.mem, 0x2000, DATA + 0x1000, &clean);
    ok(&read(&mut e, 0x2000, 4));
    assert_eq!(
        e.mem.read_u64s::<1>(slot).unwrap()[0] & PTE_AP_RDONLY,
        PTE_AP_RDONLY
    );
    // The cached clean entry is walked again for the write.
    ok(&write(&mut e, 0x2000, &[5]));
    assert_eq!(
        e.mem.read_u64s::<1>(slot).unwrap(),
        [page_desc(DATA + 0x1000, Granule::K4, &clean) & !PTE_AP_RDONLY]
    );
    assert_eq!(e.mem.read_u64s::<1>(DATA + 0x1000).unwrap()[0] & 0xff, 5);
    // What a VMM may cache (VSMMU_TRANSLATE's perm): a writable-clean page
    // is readable only, until a write has walked and marked it dirty.
    pt.page(&e.mem, 0x4000, DATA + 0x2000, &clean);
    let perm = |e: &mut Env, write| {
        let r = e
            .sim
            .translate_for_vmm(&e.mem, VSID, None, 0x4000, write, true);
        (r.status, r.perm)
    };
    assert_eq!(perm(&mut e, false), (0, TRANSLATE_PERM_READ));
    assert_eq!(
        perm(&mut e, true),
        (0, TRANSLATE_PERM_READ | TRANSLATE_PERM_WRITE)
    );
    assert_eq!(
        perm(&mut e, false),
        (0, TRANSLATE_PERM_READ | TRANSLATE_PERM_WRITE)
    );
    // A read-only page (no DBM) still faults with HD.
    pt.page(&e.mem, 0x3000, DATA, &PteAttrs::linux(false));
    let r = write(&mut e, 0x3000, &[5]);
    fault(&mut e, r, [D0 | 0x13, WR_IN, 0x3000, 0]);
    // An HTTU update of a descriptor in read-only RAM: a stage-2
    // permission fault on the descriptor (CLASS = TT), kept by the
    // host. The level-3 table is the read-only page.
    let l2 = pt.slot(&e.mem, 0x20_7000, 2);
    e.mem
        .write_u64s(l2, &[table_desc(ROM, Granule::K4)])
        .unwrap();
    e.mem
        .write_u64s(ROM_ALIAS + 7 * 8, &[page_desc(DATA, Granule::K4, &no_af)])
        .unwrap();
    let r = read(&mut e, 0x20_7000, 4);
    host_fault(
        &mut e,
        r,
        0x13,
        Some([D0 | 0x13, 0x0000_0188_0000_0000, 0x20_7000, ROM]),
    );
}

#[test]
fn address_size_faults() {
    let mut e = env();
    let mut pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
    // IPS 0 = 32 bits.
    write_cd(&e, 0, Cd::s1(pt.root, 16, Granule::K4, 0, 7));
    install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
    pt.page(&e.mem, 0x1000, 0x1_0000_0000, &rw());
    let r = read(&mut e, 0x1004, 4);
    fault(&mut e, r, [D0 | 0x11, RD_IN, 0x1004, 0]);
    // A table address beyond 32 bits.
    let slot = pt.slot(&e.mem, 0x40_0000_0000, 1);
    e.mem
        .write_u64s(slot, &[table_desc(0x2_0000_0000, Granule::K4)])
        .unwrap();
    let r = write(&mut e, 0x40_0000_0000, &[1]);
    fault(&mut e, r, [D0 | 0x11, WR_IN, 0x40_0000_0000, 0]);
}

#[test]
fn unrecorded_faults_with_cd_r_clear() {
    let mut e = env();
    let pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
    let mut cd = Cd::s1(pt.root, 16, Granule::K4, 5, 7);
    cd.0[0] &= !CD_0_R.mask();
    write_cd(&e, 0, cd);
    install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
    let r = read(&mut e, 0x1000, 4);
    host_fault(&mut e, r, 0x10, None);
}

#[test]
fn stage2_faults_are_kept_by_the_host() {
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    // Output outside DMA-mapped RAM.
    pt.page(&e.mem, 0x1000, 0x9000_0000, &rw());
    let r = read(&mut e, 0x1010, 4);
    host_fault(
        &mut e,
        r,
        0x10,
        Some([D0 | 0x10, 0x0000_0288_0000_0000, 0x1010, 0x9000_0000]),
    );
    // A table outside RAM: CLASS = TT, IPA = the descriptor address.
    let slot = pt.slot(&e.mem, 0x40_0000_0000, 1);
    e.mem
        .write_u64s(slot, &[table_desc(0x9000_0000, Granule::K4)])
        .unwrap();
    let r = write(&mut e, 0x40_0000_0000, &[1]);
    host_fault(
        &mut e,
        r,
        0x10,
        Some([
            D0 | 0x10,
            0x0000_0180_0000_0000,
            0x40_0000_0000,
            0x9000_0000,
        ]),
    );
    // A CD outside RAM: CLASS = CD, IPA = the CD address.
    install(&mut e, Ste::s1(0x9000_0040, 0, S1Fmt::Linear));
    let r = read(&mut e, 0x1000, 4);
    host_fault(
        &mut e,
        r,
        0x10,
        Some([D0 | 0x10, 0x0000_0088_0000_0000, 0x1000, 0x9000_0000]),
    );
    // Writing through a read-only DMA mapping.
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    pt.page(&e.mem, 0x1000, ROM, &rw());
    ok(&read(&mut e, 0x1000, 4));
    let r = write(&mut e, 0x1000, &[1]);
    host_fault(
        &mut e,
        r,
        0x13,
        Some([D0 | 0x13, 0x0000_0280_0000_0000, 0x1000, ROM]),
    );
}

#[test]
fn substreams_and_cds() {
    let mut e = env();
    let mut pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
    pt.page(&e.mem, 0x1000, DATA, &rw());
    // 16 CDs, S1DSS = terminate: CD 5 valid, CD 6 not.
    write_cd(&e, 5, Cd::s1(pt.root, 16, Granule::K4, 5, 9));
    install(&mut e, Ste::s1(CD_TABLE, 4, S1Fmt::Linear));
    ok(&dma(&mut e, Some(5), 0x1000, None, 4));
    let r = dma(&mut e, Some(5), 0x2000, None, 4);
    fault(&mut e, r, [D0 | 0x5810, RD_IN, 0x2000, 0]);
    let r = dma(&mut e, Some(6), 0x1000, None, 4);
    fault(&mut e, r, [D0 | 0x680a, 0, 0, 0]);
    let r = dma(&mut e, Some(16), 0x1000, None, 4);
    fault(&mut e, r, [D0 | 0x1_0008, 0, 0, 0]);
    let r = read(&mut e, 0x1000, 4);
    fault(&mut e, r, [D0 | u64::from(F_STREAM_DISABLED), 0, 0, 0]);
    // S1DSS = bypass: no SubstreamID bypasses stage 1.
    install(
        &mut e,
        Ste::s1(CD_TABLE, 4, S1Fmt::Linear).with_s1dss(S1Dss::Bypass),
    );
    ok(&read(&mut e, DATA, 4));
    // S1DSS = substream 0: no SubstreamID uses CD 0, SubstreamID 0 is
    // disabled.
    write_cd(&e, 0, Cd::s1(pt.root, 16, Granule::K4, 5, 9));
    install(
        &mut e,
        Ste::s1(CD_TABLE, 4, S1Fmt::Linear).with_s1dss(S1Dss::Substream0),
    );
    ok(&read(&mut e, 0x1000, 4));
    let r = dma(&mut e, Some(0), 0x1000, None, 4);
    fault(&mut e, r, [D0 | u64::from(F_STREAM_DISABLED), 0, 0, 0]);
    // Substreams with S1CDMax = 0.
    install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
    let r = dma(&mut e, Some(1), 0x1000, None, 4);
    fault(&mut e, r, [D0 | 0x1008, 0, 0, 0]);
    // ILLEGAL CD: reserved TG0.
    let mut bad = Cd::s1(pt.root, 16, Granule::K4, 5, 9);
    bad.0[0] = CD_0_TG0.set(bad.0[0], 3);
    write_cd(&e, 0, bad);
    let r = read(&mut e, 0x1000, 4);
    fault(&mut e, r, [D0 | u64::from(C_BAD_CD), 0, 0, 0]);
    // V = 0.
    bad.0[0] &= !CD_0_V.mask();
    write_cd(&e, 0, bad);
    let r = read(&mut e, 0x1000, 4);
    fault(&mut e, r, [D0 | 0x0a, 0, 0, 0]);
    // EPD0: the TTB0 half is disabled.
    let mut epd = Cd::s1(pt.root, 16, Granule::K4, 5, 9);
    epd.0[0] |= CD_0_EPD0.mask();
    write_cd(&e, 0, epd);
    let r = read(&mut e, 0x1000, 4);
    fault(&mut e, r, [D0 | 0x10, RD_IN, 0x1000, 0]);
}

#[test]
fn two_level_cd_tables() {
    let mut e = env();
    let mut pt = Pt::new(&e.mem, Granule::K4, 16, TABLES);
    pt.page(&e.mem, 0x1000, DATA, &rw());
    // 2^8 SubstreamIDs in 4K leaves of 64 CDs: L1 entries 0..4.
    install(&mut e, Ste::s1(L1CD_TABLE, 8, S1Fmt::TwoLevel4K));
    let leaf = RAM + 0x2_0000;
    e.mem
        .write_u64s(L1CD_TABLE + 8, &[L1Cd::new(leaf).encode()])
        .unwrap();
    e.mem
        .write(
            leaf + 6 * 64,
            &Cd::s1(pt.root, 16, Granule::K4, 5, 3).to_bytes(),
        )
        .unwrap();
    ok(&dma(&mut e, Some(64 + 6), 0x1000, None, 4));
    // L1CD V = 0.
    let r = dma(&mut e, Some(3 * 64), 0x1000, None, 4);
    fault(&mut e, r, [D0 | (0xc0 << 12) | 0x08, 0, 0, 0]);
    // L2Ptr beyond the 48-bit IAS.
    e.mem
        .write_u64s(L1CD_TABLE + 16, &[L1Cd::new(1 << 50).encode()])
        .unwrap();
    let r = dma(&mut e, Some(128), 0x1000, None, 4);
    fault(&mut e, r, [D0 | (0x80 << 12) | 0x08, 0, 0, 0]);
    // L2Ptr inside the IAS but not mapped: stage-2 fault on the CD.
    e.mem
        .write_u64s(L1CD_TABLE + 24, &[L1Cd::new(0x9000_0000).encode()])
        .unwrap();
    let r = dma(&mut e, Some(192 + 1), 0x1000, None, 4);
    host_fault(
        &mut e,
        r,
        0x10,
        Some([
            D0 | (0xc1 << 12) | 0x810,
            0x0000_0088_0000_0000,
            0x1000,
            0x9000_0000,
        ]),
    );
}

#[test]
fn granule_and_va_size_matrix() {
    for (g, tsz) in [
        (Granule::K4, 16),
        (Granule::K4, 25),
        (Granule::K4, 34),
        (Granule::K4, 39),
        (Granule::K16, 16),
        (Granule::K16, 17),
        (Granule::K16, 28),
        (Granule::K16, 39),
        (Granule::K64, 16),
        (Granule::K64, 22),
        (Granule::K64, 35),
        (Granule::K64, 39),
    ] {
        let mut e = env();
        let mut pt = Pt::new(&e.mem, g, tsz, TABLES);
        write_cd(&e, 0, Cd::s1(pt.root, tsz, g, 5, 1));
        install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
        let page = 1u64 << g.shift();
        let top = (1u64 << (64 - tsz)) - page;
        pt.page(&e.mem, top, DATA + page, &rw());
        pt.page(&e.mem, 0, DATA + 4 * page, &rw());
        ok(&write(&mut e, top + page - 2, &[0xaa, 0xbb]));
        assert_eq!(
            e.mem.read_u64s::<1>(DATA + 2 * page - 8).unwrap(),
            [0xbbaa << 48],
            "{g:?} {tsz}"
        );
        let r = read(&mut e, 0x10, 2);
        ok(&r);
        // One page beyond the top wraps out of the range.
        let r = read(&mut e, top + page, 1);
        fault(&mut e, r, [D0 | 0x10, RD_IN, top + page, 0]);
    }
}

#[test]
fn block_descriptors() {
    // (granule, level, block size)
    for (g, level, size) in [
        (Granule::K4, 2u8, 2u64 << 20),
        (Granule::K4, 1, 1 << 30),
        (Granule::K16, 2, 32 << 20),
        (Granule::K64, 2, 512 << 20),
    ] {
        let mut e = env();
        let mut pt = Pt::new(&e.mem, g, 16, TABLES);
        write_cd(&e, 0, Cd::s1(pt.root, 16, g, 5, 1));
        install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
        // The block at IOVA 4 × size maps DATA (2 MiB) or RAM onwards.
        let pa = if size == 2 << 20 { DATA } else { RAM };
        pt.block(&e.mem, 4 * size, pa, level, &rw());
        let off = DATA + 0x1_2340 - pa;
        ok(&write(&mut e, 4 * size + off, &[7; 8]));
        assert_eq!(
            e.mem.read_u64s::<1>(DATA + 0x1_2340).unwrap(),
            [0x0707_0707_0707_0707],
            "{g:?} level {level}"
        );
        let r = read(&mut e, 4 * size + off + 4, 8);
        ok(&r);
        assert_eq!(r.data, [7, 7, 7, 7, 0, 0, 0, 0]);
        // The end of the block: outside RAM for the large blocks, a
        // stage-2 fault kept by the host.
        let r = read(&mut e, 5 * size - 8, 8);
        let inside = pa + size <= RAM + RAM_SIZE;
        assert_eq!(
            r.status,
            if inside { 0 } else { 0x10 },
            "{g:?} level {level}"
        );
        assert!(events(&mut e).is_empty());
    }
}

#[test]
fn tlb_is_stale_until_invalidated() {
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    e.mem.write(DATA, b"old!").unwrap();
    e.mem.write(DATA + 0x1000, b"new!").unwrap();
    let slot = pt.page(&e.mem, 0x5000, DATA, &rw());
    assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
    // The guest remaps the page without a TLBI: still the old page.
    e.mem
        .write_u64s(slot, &[page_desc(DATA + 0x1000, Granule::K4, &rw())])
        .unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
    // A TLBI for another page or another ASID changes nothing.
    let va = |asid, addr| {
        Command::TlbiNhVa {
            vmid: 0,
            asid,
            range: TlbiRange::va(addr, true),
        }
        .encode()
    };
    e.sim.invalidate(&[va(7, 0x6000), va(8, 0x5000)]).unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
    e.sim.invalidate(&[va(7, 0x5000)]).unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");

    // Unmapped without a TLBI: still translates; TLBI_NH_ASID ends it.
    e.mem.write_u64s(slot, &[0]).unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");
    e.sim
        .invalidate(&[Command::TlbiNhAsid { vmid: 0, asid: 7 }.encode()])
        .unwrap();
    let r = read(&mut e, 0x5000, 4);
    fault(&mut e, r, [D0 | 0x10, RD_IN, 0x5000, 0]);

    // Range TLBI: 4 pages from 0x4000 (TG 4K, NUM 3).
    e.mem
        .write_u64s(slot, &[page_desc(DATA, Granule::K4, &rw())])
        .unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).data, b"old!");
    e.mem
        .write_u64s(slot, &[page_desc(DATA + 0x1000, Granule::K4, &rw())])
        .unwrap();
    let range = TlbiRange {
        num: 3,
        tg: 1,
        ..TlbiRange::va(0x4000, true)
    };
    e.sim
        .invalidate(&[Command::TlbiNhVaa { vmid: 0, range }.encode()])
        .unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");

    // A CD change is stale until CFGI_CD; TLBI_NH_ALL and
    // TLBI_NSNH_ALL drop translations but not the CD.
    let other = Pt::new(&e.mem, Granule::K4, 16, TABLES + 0x80_0000);
    write_cd(&e, 0, Cd::s1(other.root, 16, Granule::K4, 5, 7));
    e.sim
        .invalidate(&[
            Command::TlbiNhAll { vmid: 0 }.encode(),
            Command::TlbiNsnhAll.encode(),
        ])
        .unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");
    e.sim
        .invalidate(&[Command::CfgiCd {
            sid: VSID,
            ssid: 0,
            leaf: true,
        }
        .encode()])
        .unwrap();
    let r = read(&mut e, 0x5000, 4);
    fault(&mut e, r, [D0 | 0x10, RD_IN, 0x5000, 0]);

    // Re-installing the STE drops everything cached for the vSID.
    write_cd(&e, 0, Cd::s1(pt.root, 16, Granule::K4, 5, 7));
    assert_eq!(read(&mut e, 0x5000, 4).status, 0x10);
    let _ = events(&mut e);
    install(&mut e, Ste::s1(CD_TABLE, 0, S1Fmt::Linear));
    assert_eq!(read(&mut e, 0x5000, 4).data, b"new!");
    assert!(!e.sim.tlb().is_empty());
    e.sim.detach_device(VSID).unwrap();
    assert!(e.sim.tlb().is_empty() && e.sim.tlb().cd_len() == 0);
    let s = e.sim.tlb().stats();
    assert!(s.hits > 0 && s.misses > 0 && s.invalidated > 0);
}

#[test]
fn global_entries_survive_tlbi_asid() {
    let mut e = env();
    let mut pt = linux_s1(&mut e);
    let global = PteAttrs {
        global: true,
        ..rw()
    };
    let slot = pt.page(&e.mem, 0x5000, DATA, &global);
    ok(&read(&mut e, 0x5000, 4));
    e.mem.write_u64s(slot, &[0]).unwrap();
    e.sim
        .invalidate(&[Command::TlbiNhAsid { vmid: 0, asid: 7 }.encode()])
        .unwrap();
    ok(&read(&mut e, 0x5000, 4));
    // TLBI_NH_VA with any ASID matches a global entry.
    e.sim
        .invalidate(&[Command::TlbiNhVa {
            vmid: 0,
            asid: 99,
            range: TlbiRange::va(0x5000, false),
        }
        .encode()])
        .unwrap();
    assert_eq!(read(&mut e, 0x5000, 4).status, 0x10);
}

#[test]
fn veventq_depth_and_lost_record() {
    let mut e = env();
    e.sim.alloc_veventq(2).unwrap();
    linux_s1(&mut e);
    for i in 0..3u64 {
        let r = read(&mut e, i << 12, 4);
        assert_eq!((r.status, r.forwarded), (0x10, true));
    }
    let mut buf = vec![0u8; 4096];
    let n = e.sim.read_veventq(&mut buf).unwrap();
    let got: Vec<_> = parse_vevents(&buf[..n]).map(|r| r.unwrap()).collect();
    assert_eq!(
        got,
        vec![
            Vevent::Event {
                seq: 0,
                evt: [D0 | 0x10, RD_IN, 0, 0]
            },
            Vevent::Event {
                seq: 1,
                evt: [D0 | 0x10, RD_IN, 0x1000, 0]
            },
            Vevent::Lost { seq: 2 },
        ]
    );
    // Without a vEVENTQ the status stands and nothing is queued.
    e.sim.free_veventq();
    let r = read(&mut e, 0x3000, 4);
    assert_eq!((r.status, r.forwarded), (0x10, false));
    assert!(r.record.is_some());
}

#[test]
fn never_panics_on_garbage() {
    let mut e = env();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Random CDs and tables everywhere in the first MiB.
    for i in 0..(0x10_0000 / 8) {
        e.mem.write_u64s(RAM + i * 8, &[next()]).unwrap();
    }
    for round in 0..3000 {
        if round % 50 == 0 {
            // V, Config = S1 translate, random S1Fmt and S1CDMax, a
            // context pointer in the first MiB of RAM.
            let r = next();
            let w0 = 1 | (0b101 << 1) | (r & 0x30) | (RAM + (r & 0xf_ffc0)) | (r & (0x1f << 59));
            let w1 = next() & 0x3800_00ff;
            let _ = e.sim.install_ste(VSID, SteAction::Nested { ste: [w0, w1] });
            e.mem
                .write_u64s(RAM + (next() & 0xf_fff8), &[next() | 1])
                .unwrap();
        }
        let r = next();
        let req = SimDma {
            argsz: 0,
            flags: (r & 1) as u32,
            vsid: if r & 2 != 0 { VSID } else { r as u32 },
            ssid: if r & 4 != 0 {
                SIM_DMA_NO_SSID
            } else {
                (r >> 8) as u32 & 0xff
            },
            iova: if r & 8 != 0 {
                next()
            } else {
                next() & 0xffff_ffff
            },
            len: next() % 9000,
        };
        let data = vec![0x5a; (next() % 5000) as usize];
        let _ = e.sim.dma(&e.mem, &req, &data);
        let _ = events(&mut e);
    }
}
