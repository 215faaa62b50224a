//! `VSMMU_SIM_DMA` against the real `vsmmud` (sim host): a device DMA is
//! translated through stage-1 tables the guest built in its RAM, faults
//! arrive in the guest EVENTQ as exact records, and the sim TLB keeps stale
//! translations until the guest's TLBI reaches the host.
//!
//! The SMMU is configured by raw register writes and hand-written queue
//! entries (no model driver), with tables from `vsmmu_guest::pgtable`.

use std::time::{Duration, Instant};

use vsmmu_client::Client;
use vsmmu_guest::pgtable::{cfgi_cd, cmd_sync, tlbi_range, PageTable, Prot};
use vsmmu_guest::GuestRam;
use vsmmu_protocol::smmu::cd::{Cd, Granule};
use vsmmu_protocol::smmu::command::Command;
use vsmmu_protocol::smmu::regs::*;
use vsmmu_protocol::smmu::ste::{S1Fmt, Ste};
use vsmmu_protocol::stats::Stats;
use vsmmu_tests::TestServer;

const BASE: u64 = 0x4000_0000;
const SIZE: usize = 16 << 20;
/// Linear stream table, 2^6 STEs.
const STRTAB: u64 = BASE;
const STRTAB_LOG2: u32 = 6;
/// Command queue, 2^8 entries.
const CMDQ: u64 = BASE + 0x1_0000;
const CMDQ_LOG2: u32 = 8;
/// Event queue, 2^6 entries.
const EVTQ: u64 = BASE + 0x2_0000;
const EVTQ_LOG2: u32 = 6;
/// The device's CD (S1CDMax 0).
const CD: u64 = BASE + 0x3_0000;
const POOL: u64 = BASE + 0x10_0000;
const POOL_END: u64 = BASE + 0x80_0000;
const DATA: u64 = BASE + 0x80_0000;
const VSID: u32 = 0x21;
const ASID: u16 = 3;
/// The CD.IPS encoding of 48 bits.
const IPS_48: u8 = 5;
/// Status of a transaction terminated without an event.
const ABORTED: u32 = vsmmu_protocol::vfio_user::SIM_DMA_ABORTED;

/// dword0 of a record for [`VSID`] without SubstreamID.
const fn d0(event_type: u64) -> u64 {
    (VSID as u64) << 32 | event_type
}
/// dword1 of a stage-1 fault: CLASS = IN, RnW for a read.
const RD_IN: u64 = 0x0000_0208_0000_0000;
const WR_IN: u64 = 0x0000_0200_0000_0000;

/// A guest that programs the SMMU by hand.
struct Guest {
    _srv: TestServer,
    c: Client,
    ram: GuestRam,
    cmdq_prod: u32,
    evtq_cons: u32,
}

impl Guest {
    /// Server up, RAM mapped, [`VSID`] attached, queues and the stream
    /// table programmed, CMDQ and EVENTQ enabled; SMMUEN still 0.
    fn new() -> Guest {
        let srv = TestServer::start(&[]);
        let mut c = srv.client();
        let ram = GuestRam::new(BASE, SIZE).expect("guest RAM");
        c.dma_map(ram.fd(), 0, BASE, SIZE as u64).expect("DMA_MAP");
        c.attach_device(VSID, None).expect("attach");
        c.write64(STRTAB_BASE, STRTAB_BASE_RA | STRTAB).unwrap();
        c.write32(STRTAB_BASE_CFG, STRTAB_LOG2).unwrap();
        c.write64(CMDQ_BASE, Q_BASE_RA | CMDQ | u64::from(CMDQ_LOG2))
            .unwrap();
        c.write32(CMDQ_PROD, 0).unwrap();
        c.write32(CMDQ_CONS, 0).unwrap();
        c.write64(EVENTQ_BASE, Q_BASE_RA | EVTQ | u64::from(EVTQ_LOG2))
            .unwrap();
        c.write32(EVENTQ_PROD_PAGE1, 0).unwrap();
        c.write32(EVENTQ_CONS_PAGE1, 0).unwrap();
        let en = CR0_CMDQEN.mask32() | CR0_EVTQEN.mask32();
        c.write32(CR0, en).unwrap();
        assert_eq!(c.read32(CR0ACK).unwrap(), en);
        Guest {
            _srv: srv,
            c,
            ram,
            cmdq_prod: 0,
            evtq_cons: 0,
        }
    }

    /// [`Guest::new`], a stage-1 STE and CD for [`VSID`] over a 4K, 48-bit
    /// table, SMMUEN set.
    fn with_s1() -> (Guest, PageTableSpec) {
        let mut g = Guest::new();
        let spec = PageTableSpec::new(&g.ram);
        g.write_ste(Ste::s1(CD, 0, S1Fmt::Linear));
        g.ram.write(CD, &spec.cd.to_bytes());
        g.enable();
        (g, spec)
    }

    fn enable(&mut self) {
        let en = CR0_CMDQEN.mask32() | CR0_EVTQEN.mask32() | CR0_SMMUEN.mask32();
        self.c.write32(CR0, en).unwrap();
        assert_eq!(self.c.read32(CR0ACK).unwrap(), en);
    }

    fn write_ste(&self, ste: Ste) {
        self.ram
            .write(STRTAB + u64::from(VSID) * 64, &ste.to_bytes());
    }

    /// Queues `cmds` and a CMD_SYNC, and waits until CONS passes them.
    fn issue(&mut self, cmds: &[[u64; 2]]) {
        let mask = (1u32 << CMDQ_LOG2) - 1;
        let wrap = 1u32 << CMDQ_LOG2;
        for cmd in cmds.iter().chain(std::iter::once(&cmd_sync())) {
            let slot = CMDQ + u64::from(self.cmdq_prod & mask) * 16;
            self.ram.write_u64s(slot, cmd);
            self.cmdq_prod = (self.cmdq_prod + 1) & (mask | wrap);
        }
        self.c.write32(CMDQ_PROD, self.cmdq_prod).unwrap();
        let t0 = Instant::now();
        loop {
            let cons = self.c.read32(CMDQ_CONS).unwrap();
            assert_eq!(cons >> 24 & 0x7f, 0, "command error: CONS {cons:#x}");
            if cons & (mask | wrap) == self.cmdq_prod {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "CMDQ stuck at {cons:#x}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The next record of the guest EVENTQ, waiting up to 10 s.
    fn next_event(&mut self) -> [u64; 4] {
        let mask = (1u32 << EVTQ_LOG2) - 1;
        let wrap = 1u32 << EVTQ_LOG2;
        let t0 = Instant::now();
        loop {
            let prod = self.c.read32(EVENTQ_PROD_PAGE1).unwrap();
            if prod & (mask | wrap) != self.evtq_cons {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no event arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        let slot = EVTQ + u64::from(self.evtq_cons & mask) * 32;
        let rec = std::array::from_fn(|i| self.ram.read_u64(slot + 8 * i as u64));
        self.evtq_cons = (self.evtq_cons + 1) & (mask | wrap);
        self.c.write32(EVENTQ_CONS_PAGE1, self.evtq_cons).unwrap();
        rec
    }

    fn read(&mut self, iova: u64, len: u64) -> (u32, Vec<u8>) {
        self.c
            .sim_dma(VSID, None, iova, None, len)
            .expect("SIM_DMA")
    }

    fn write(&mut self, iova: u64, data: &[u8]) -> u32 {
        let (status, back) = self
            .c
            .sim_dma(VSID, None, iova, Some(data), data.len() as u64)
            .expect("SIM_DMA");
        assert!(back.is_empty());
        status
    }

    fn stats(&mut self) -> Stats {
        self.c.stats().unwrap()
    }
}

/// Where the device's page table lives, and its CD.
struct PageTableSpec {
    root: u64,
    next: u64,
    cd: Cd,
}

impl PageTableSpec {
    fn new(ram: &GuestRam) -> PageTableSpec {
        let pt = PageTable::new(ram, Granule::K4, 16, POOL, POOL_END).unwrap();
        PageTableSpec {
            root: pt.root(),
            next: pt.alloc_next(),
            cd: pt.cd(IPS_48, ASID),
        }
    }

    /// Edits the table with a builder reopened on the existing root (the
    /// builder borrows the RAM only while editing).
    fn edit<T>(&mut self, ram: &GuestRam, f: impl FnOnce(&mut PageTable<'_, GuestRam>) -> T) -> T {
        let mut pt =
            PageTable::from_root(ram, Granule::K4, 16, self.root, self.next, POOL_END).unwrap();
        let out = f(&mut pt);
        self.next = pt.alloc_next();
        out
    }
}

#[test]
fn bypass_before_smmuen() {
    let mut g = Guest::new();
    // SMMUEN = 0, GBPA.ABORT = 0: IOVA = guest physical address.
    assert_eq!(g.write(DATA + 0xffc, b"abcdefgh"), 0);
    let mut back = [0u8; 8];
    g.ram.read(DATA + 0xffc, &mut back);
    assert_eq!(&back, b"abcdefgh");
    assert_eq!(g.read(DATA + 0xffe, 4), (0, b"cdef".to_vec()));
    // Outside DMA-mapped RAM: a stage-2 fault the host keeps.
    assert_eq!(g.read(0x9000_0000, 4).0, 0x10);
    // A SubstreamID without stage 1: C_BAD_SUBSTREAMID reaches the guest.
    let (status, _) = g.c.sim_dma(VSID, Some(5), DATA, None, 4).unwrap();
    assert_eq!(status, 0x08);
    assert_eq!(g.next_event(), [d0(0x5008), 0, 0, 0]);
}

#[test]
fn dma_through_guest_page_tables() {
    let (mut g, mut spec) = Guest::with_s1();
    spec.edit(&g.ram, |pt| {
        pt.map(0x1000_0000, DATA + 0x3000, 0x1000, Prot::RW)
            .unwrap();
        pt.map(0x1000_1000, DATA, 0x1000, Prot::RW).unwrap();
    });
    let data: Vec<u8> = (0..0x100u32).map(|i| i as u8).collect();
    assert_eq!(g.write(0x1000_0f80, &data), 0);
    let mut back = vec![0u8; 0x80];
    g.ram.read(DATA + 0x3f80, &mut back);
    assert_eq!(back, data[..0x80]);
    g.ram.read(DATA, &mut back);
    assert_eq!(back, data[0x80..]);
    assert_eq!(g.read(0x1000_0f80, 0x100), (0, data));
    // A whole 4 KiB transfer.
    g.ram.write(DATA + 0x3000, &[0x5a; 4096]);
    let (status, got) = g.read(0x1000_0000, 4096);
    assert_eq!((status, got.len()), (0, 4096));
    assert!(got.iter().all(|&b| b == 0x5a));
}

#[test]
fn faults_reach_the_guest_eventq_exactly() {
    let (mut g, mut spec) = Guest::with_s1();
    spec.edit(&g.ram, |pt| {
        pt.map(0x2000, DATA, 0x1000, Prot::RO).unwrap();
        pt.map(
            0x3000,
            DATA,
            0x1000,
            Prot {
                af: false,
                ..Prot::RW
            },
        )
        .unwrap();
        pt.map(
            0x4000,
            DATA,
            0x1000,
            Prot {
                privileged: true,
                ..Prot::RW
            },
        )
        .unwrap();
    });
    // Unmapped IOVA: F_TRANSLATION, CLASS = IN, RnW = 1.
    assert_eq!(g.read(0x1234, 4).0, 0x10);
    assert_eq!(g.next_event(), [d0(0x10), RD_IN, 0x1234, 0]);
    // Read-only page, write: F_PERMISSION, RnW = 0.
    assert_eq!(g.read(0x2000, 4).0, 0);
    assert_eq!(g.write(0x2008, &[1]), 0x13);
    assert_eq!(g.next_event(), [d0(0x13), WR_IN, 0x2008, 0]);
    // AF = 0 without HA: F_ACCESS.
    assert_eq!(g.read(0x3010, 4).0, 0x12);
    assert_eq!(g.next_event(), [d0(0x12), RD_IN, 0x3010, 0]);
    // Privileged-only page: the device's access is unprivileged.
    assert_eq!(g.read(0x4000, 4).0, 0x13);
    assert_eq!(g.next_event(), [d0(0x13), RD_IN, 0x4000, 0]);
    // The page is mapped but its output is not DMA-mapped: a stage-2
    // fault, which the host keeps; then an unattached vSID, also the
    // host's business. Neither reaches the guest: the next record is the
    // following stage-1 fault.
    spec.edit(&g.ram, |pt| {
        pt.map(0x5000, 0x9000_0000, 0x1000, Prot::RW).unwrap();
    });
    assert_eq!(g.read(0x5000, 4).0, 0x10);
    let (status, _) = g.c.sim_dma(0x30, None, DATA, None, 4).unwrap();
    assert_eq!(status, 0x02);
    assert_eq!(g.read(0x6000, 4).0, 0x10);
    assert_eq!(g.next_event(), [d0(0x10), RD_IN, 0x6000, 0]);
    assert_eq!(g.stats().host_events_read, 5);
}

#[test]
fn configuration_errors() {
    let (mut g, _spec) = Guest::with_s1();
    // An invalid CD, noticed after CFGI_CD: C_BAD_CD.
    g.ram.zero(CD, 64);
    g.issue(&[cfgi_cd(VSID, 0, true)]);
    assert_eq!(g.read(0x1000, 4).0, 0x0a);
    assert_eq!(g.next_event(), [d0(0x0a), 0, 0, 0]);
    // The guest's abort STE: terminated, no event.
    g.write_ste(Ste::abort());
    g.issue(&[Command::CfgiSte {
        sid: VSID,
        leaf: true,
    }
    .encode()]);
    assert_eq!(g.read(0x1000, 4).0, ABORTED);
    // An invalid STE (V = 0): the StreamID is aborted by the host too.
    g.write_ste(Ste::s1(CD, 0, S1Fmt::Linear).invalidated());
    g.issue(&[Command::CfgiSte {
        sid: VSID,
        leaf: true,
    }
    .encode()]);
    assert_eq!(g.read(0x1000, 4).0, ABORTED);
    // Back to stage 1 with a valid CD, a SubstreamID the STE has no room
    // for: C_BAD_SUBSTREAMID.
    let spec = PageTableSpec::new(&g.ram);
    g.ram.write(CD, &spec.cd.to_bytes());
    g.write_ste(Ste::s1(CD, 0, S1Fmt::Linear));
    g.issue(&[Command::CfgiSte {
        sid: VSID,
        leaf: true,
    }
    .encode()]);
    let (status, _) = g.c.sim_dma(VSID, Some(1), 0x1000, None, 4).unwrap();
    assert_eq!(status, 0x08);
    assert_eq!(g.next_event(), [d0(0x1008), 0, 0, 0]);
    assert_eq!(g.read(0x1000, 4).0, 0x10);
    assert_eq!(g.next_event(), [d0(0x10), RD_IN, 0x1000, 0]);
}

#[test]
fn stale_translation_until_the_guest_invalidates() {
    let (mut g, mut spec) = Guest::with_s1();
    g.ram.write(DATA, b"old!");
    g.ram.write(DATA + 0x1000, b"new!");
    spec.edit(&g.ram, |pt| pt.map(0x7000, DATA, 0x1000, Prot::RW).unwrap());
    assert_eq!(g.read(0x7000, 4), (0, b"old!".to_vec()));
    // Remapped without a TLBI: the cached translation stays.
    spec.edit(&g.ram, |pt| {
        assert_eq!(pt.unmap(0x7000, 0x1000), Ok(0x1000));
        pt.map(0x7000, DATA + 0x1000, 0x1000, Prot::RW).unwrap();
    });
    assert_eq!(g.read(0x7000, 4), (0, b"old!".to_vec()));
    // The driver's TLBI (range form, as with IDR3.RIL) reaches the host.
    let before = g.stats().host_invalidate_entries;
    g.issue(&tlbi_range(ASID, 0x7000, 0x1000, Granule::K4, true, true));
    assert!(g.stats().host_invalidate_entries > before);
    assert_eq!(g.read(0x7000, 4), (0, b"new!".to_vec()));
    // Unmapped without a TLBI: still translates; TLBI_NH_ASID ends it.
    spec.edit(&g.ram, |pt| pt.unmap(0x7000, 0x1000).unwrap());
    assert_eq!(g.read(0x7000, 4).0, 0);
    g.issue(&[Command::TlbiNhAsid {
        vmid: 0,
        asid: ASID,
    }
    .encode()]);
    assert_eq!(g.read(0x7000, 4).0, 0x10);
    assert_eq!(g.next_event(), [d0(0x10), RD_IN, 0x7000, 0]);
}
