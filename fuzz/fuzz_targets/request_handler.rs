//! The whole request handler, as the event loop drives it, over guest RAM
//! whose content the fuzzer controls.
//!
//! Each input builds a fresh [`Device`] (sim host + SMMUv3 model), connects
//! a client the way `client-shim` does (VERSION with the vsmmu extension,
//! DMA_MAP of 64 KiB of a memfd at [`RAM_BASE`]), then runs a program of
//! operations decoded from the input: raw messages, register reads and
//! writes, guest memory writes (commands, STEs, CDs, anything), SIM_INJECT,
//! ATTACH/DETACH, DMA_MAP/UNMAP, SET_IRQS, device DMAs through the sim
//! host (SIM_DMA) over fuzzed page tables, reconnects. After every message
//! the vEVENTQ is drained into the model, as the event loop does when its
//! fd is readable. So CMDQ consumption, stream table, CD and translation
//! table walks and EVENTQ writes all run on hostile tables.
//!
//! Asserted: nothing panics, every message gets an answer of the right
//! shape (a reply to the same id and command, header-only when it is an
//! error; nothing for a posted command).
//!
//! Input: `cfg:u8 blob_len:u8` then `blob_len * 16` bytes written at the
//! start of guest RAM, then operations until the input ends (see
//! `Harness::op`).

#![no_main]

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix::sys::eventfd::{EfdFlags, EventFd};
use vsmmu_protocol::smmu::cd::{cd_lookup, l2_cd_addr, Cd, CdLocation, CdLookup, Granule, L1Cd};
use vsmmu_protocol::smmu::command::{Command as SmmuCmd, SyncCs, TlbiRange};
use vsmmu_protocol::smmu::regs::*;
use vsmmu_protocol::smmu::ste::{S1Dss, S1Fmt, Ste, SteCaps, SteConfig};
use vsmmu_protocol::smmu::strtab::{L1Std, SteLocation, StrtabCaps, StrtabConfig};
use vsmmu_protocol::vfio_user::{
    self as vu, Command, DmaMap, DmaUnmap, Header, IrqSet, Message, RegionAccess, SimDma,
    SimInjectHeader, VsmmuDevice, WriteMultiEntry, WriteMultiHeader, FLAG_NO_REPLY,
    FLAG_TYPE_REPLY, HEADER_SIZE,
};
use vsmmu_server::{
    Device, HostIommu, Incoming, Limits, Outcome, Session, SimConfig, SimHost, Smmu, SmmuConfig,
};
use vsmmu_testutil::msg::irq_eventfds;
use vsmmu_testutil::regs::REGISTER_WORDS;
use vsmmu_testutil::{memfd, FuzzInput};
use zerocopy::IntoBytes;

/// Guest RAM base (QEMU virt's).
const RAM_BASE: u64 = 0x4000_0000;
/// Guest RAM mapped at connect.
const RAM_SIZE: u64 = 0x1_0000;
/// The memfd: guest RAM, then pages for the program's own DMA_MAPs.
const FILE_SIZE: u64 = 2 * RAM_SIZE;
/// Operations per input.
const MAX_OPS: usize = 256;
/// Descriptors made once per process; each message gets duplicates.
struct Fds {
    mem: File,
    irq: EventFd,
}

fn fds() -> &'static Fds {
    static FDS: OnceLock<Fds> = OnceLock::new();
    FDS.get_or_init(|| {
        let mem = File::from(memfd(FILE_SIZE));
        let irq = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .unwrap();
        Fds { mem, irq }
    })
}

fn mem_fd() -> OwnedFd {
    fds().mem.try_clone().unwrap().into()
}

fn irq_fd() -> OwnedFd {
    use std::os::fd::AsFd;
    fds().irq.as_fd().try_clone_to_owned().unwrap()
}

/// The program: the fuzzer's bytes (zero once exhausted), with the picks
/// of this target on top.
struct Input<'a>(FuzzInput<'a>);

impl<'a> std::ops::Deref for Input<'a> {
    type Target = FuzzInput<'a>;
    fn deref(&self) -> &FuzzInput<'a> {
        &self.0
    }
}

impl std::ops::DerefMut for Input<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Input<'_> {
    /// A guest address inside RAM, 64-byte aligned.
    fn ram_addr(&mut self) -> u64 {
        RAM_BASE + (u64::from(self.u16()) * 64) % RAM_SIZE
    }
    /// A StreamID: mostly one of the few devices a program attaches.
    fn sid(&mut self) -> u32 {
        match self.u8() {
            b @ 0..=0xef => u32::from(b % 8),
            _ => self.u32(),
        }
    }
    /// A register value: raw, a table address with a size, or small.
    fn value(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            1 => self.ram_addr() | u64::from(self.u8() & 0x3f),
            2 => u64::from(self.u8()),
            _ => u64::from(self.u32()),
        }
    }
    fn reg(&mut self) -> u64 {
        match self.u8() {
            b @ 0..=0xef => REGISTER_WORDS[b as usize % REGISTER_WORDS.len()],
            _ => (u64::from(self.u32()) % REGION_SIZE) & !3,
        }
    }
}

/// Guest memory as the guest sees it: the memfd behind [`RAM_BASE`].
fn ram_write(gpa: u64, bytes: &[u8]) {
    let Some(off) = gpa.checked_sub(RAM_BASE) else {
        return;
    };
    if off.saturating_add(bytes.len() as u64) <= RAM_SIZE {
        fds().mem.write_all_at(bytes, off).unwrap();
    }
}

fn ram_read_u64(gpa: u64) -> Option<u64> {
    let off = gpa.checked_sub(RAM_BASE)?;
    if off.checked_add(8)? > RAM_SIZE {
        return None;
    }
    let mut b = [0u8; 8];
    fds().mem.read_exact_at(&mut b, off).ok()?;
    Some(u64::from_le_bytes(b))
}

fn ram_read_64(gpa: u64) -> Option<[u8; 64]> {
    let off = gpa.checked_sub(RAM_BASE)?;
    if off.checked_add(64)? > RAM_SIZE {
        return None;
    }
    let mut b = [0u8; 64];
    fds().mem.read_exact_at(&mut b, off).ok()?;
    Some(b)
}

/// A reply must answer the request it follows.
fn check_reply(req: &Header, bytes: &[u8]) {
    let h = Header::decode(bytes).expect("reply shorter than a header");
    assert_eq!(h.msg_size as usize, bytes.len(), "reply msg_size");
    assert_eq!((h.msg_id, h.command), (req.msg_id, req.command));
    assert_eq!(h.flags & vu::FLAG_TYPE_MASK, FLAG_TYPE_REPLY);
    if h.is_error() {
        assert_eq!(bytes.len(), HEADER_SIZE, "error replies are header-only");
        assert_ne!(h.error_no, 0, "error reply without errno");
    } else {
        assert_eq!(h.error_no, 0);
    }
}

struct Harness {
    dev: Device,
    session: Session,
    next_id: u16,
    vbuf: Vec<u8>,
    idr: [u32; 6],
}

impl Harness {
    fn new(cfg: u8) -> Self {
        let host = SimHost::new(SimConfig {
            veventq_depth: (cfg & 0x10 != 0).then_some(2),
            first_seq: if cfg & 0x20 != 0 { 0x7fff_fffe } else { 0 },
            ..SimConfig::default()
        });
        let smmu = Smmu::new(
            SmmuConfig {
                msi: cfg & 1 != 0,
                batch: cfg & 2 == 0,
                event_buffer: (cfg & 4 != 0).then_some(4),
            },
            host.hw_info(),
        );
        let limits = Limits {
            max_dma_maps: 16,
            ..Limits::default()
        };
        let mut h = Harness {
            dev: Device::new(smmu, Box::new(host), limits),
            session: Session::default(),
            next_id: 0,
            vbuf: vec![0; 4096],
            idr: [0; 6],
        };
        h.connect();
        h
    }

    /// Sends one message; returns the reply, if any.
    fn send(&mut self, cmd: u16, flags: u32, payload: &[u8], fds: Vec<OwnedFd>) -> Option<Vec<u8>> {
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = Message::new(self.next_id, cmd, flags, 0)
            .bytes(payload)
            .finish();
        let header = Header::decode(&bytes).unwrap();
        if header
            .validate_command(self.dev.limits.max_msg_size())
            .is_err()
        {
            // The event loop closes the connection before the handler.
            self.reconnect();
            return None;
        }
        let out = self
            .dev
            .handle(&mut self.session, Incoming { header, bytes, fds });
        let reply = match out {
            Outcome::Reply(b) => {
                assert!(!header.no_reply(), "a reply to a posted command");
                check_reply(&header, &b);
                Some(b)
            }
            Outcome::Silent => {
                assert!(header.no_reply(), "no reply to command {cmd:#x}");
                None
            }
            Outcome::Close(b, _) => {
                if !b.is_empty() {
                    check_reply(&header, &b);
                }
                self.reconnect();
                None
            }
        };
        // The event loop drains the vEVENTQ whenever it is readable.
        self.dev.drain_veventq(&mut self.vbuf, false);
        reply
    }

    fn call(&mut self, cmd: Command, payload: &[u8], fds: Vec<OwnedFd>) -> Option<Vec<u8>> {
        self.send(cmd as u16, 0, payload, fds)
    }

    fn connect(&mut self) {
        let mut v = vec![0u8, 0, 2, 0];
        v.extend_from_slice(br#"{"capabilities":{"vsmmu":{"version":1}}}"#);
        v.push(0);
        let r = self.call(Command::Version, &v, vec![]).unwrap();
        assert!(!Header::decode(&r).unwrap().is_error(), "VERSION refused");
        let map = DmaMap {
            argsz: DmaMap::SIZE,
            flags: vu::DMA_MAP_READ | vu::DMA_MAP_WRITE,
            offset: 0,
            addr: RAM_BASE,
            size: RAM_SIZE,
        };
        let r = self
            .call(Command::DmaMap, map.as_bytes(), vec![mem_fd()])
            .unwrap();
        assert!(!Header::decode(&r).unwrap().is_error(), "DMA_MAP refused");
        for (i, idr) in self.idr.iter_mut().enumerate() {
            *idr = 0;
            let a = RegionAccess {
                offset: IDR0 + 4 * i as u64,
                region: 0,
                count: 4,
            };
            let r = self.dev.handle(
                &mut self.session,
                Incoming {
                    header: Header {
                        msg_id: 0,
                        command: Command::RegionRead as u16,
                        msg_size: 32,
                        flags: 0,
                        error_no: 0,
                    },
                    bytes: Message::new(0, Command::RegionRead as u16, 0, 0)
                        .push(&a)
                        .finish(),
                    fds: vec![],
                },
            );
            if let Outcome::Reply(b) = r {
                if let Some(v) = b.get(32..36) {
                    *idr = u32::from_le_bytes(v.try_into().unwrap());
                }
            }
        }
    }

    fn reconnect(&mut self) {
        self.dev.client_gone();
        self.session = Session::default();
        self.connect();
    }

    fn read(&mut self, offset: u64, count: u32) -> u64 {
        let a = RegionAccess {
            offset,
            region: 0,
            count,
        };
        match self.call(Command::RegionRead, a.as_bytes(), vec![]) {
            Some(b) if b.len() == 32 + count as usize => {
                let mut v = [0u8; 8];
                v[..count as usize].copy_from_slice(&b[32..]);
                u64::from_le_bytes(v)
            }
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, count: u32, value: u64, posted: bool) {
        let a = RegionAccess {
            offset,
            region: 0,
            count,
        };
        let mut p = a.as_bytes().to_vec();
        p.extend_from_slice(&value.to_le_bytes()[..count as usize]);
        let flags = if posted { FLAG_NO_REPLY } else { 0 };
        self.send(Command::RegionWrite as u16, flags, &p, vec![]);
    }

    /// Where the STE of `sid` is, creating the L2 table of a 2-level
    /// stream table when its L1 descriptor is empty.
    fn ste_addr(&mut self, sid: u32, l2: u64) -> Option<u64> {
        let base = self.read(STRTAB_BASE, 8);
        let cfg = self.read(STRTAB_BASE_CFG, 4) as u32;
        let caps = StrtabCaps::from_idr(self.idr[0], self.idr[1]);
        let st = StrtabConfig::decode(base, cfg, &caps);
        match st.ste_location(sid).ok()? {
            SteLocation::Linear { ste_addr } => Some(ste_addr),
            SteLocation::TwoLevel {
                l1_desc_addr,
                l2_index,
            } => {
                let mut desc = L1Std::decode(ram_read_u64(l1_desc_addr)?);
                if desc.span == 0 {
                    desc = L1Std::new(l2, st.split);
                    ram_write(l1_desc_addr, &desc.encode().to_le_bytes());
                }
                st.l2_ste_addr(desc, l2_index).ok()
            }
        }
    }

    /// Where the CD of `sid`/`ssid` is under the STE in memory, creating
    /// the leaf CD table when its L1 descriptor is invalid.
    fn cd_addr(&mut self, sid: u32, ssid: Option<u32>, l2: u64) -> Option<u64> {
        let ste = Ste::from_bytes(&ram_read_64(self.ste_addr(sid, l2)?)?);
        let caps = SteCaps::from_idr(self.idr[0], self.idr[1], self.idr[5]);
        let SteConfig::S1Translate(s1) = ste.validate(&caps).ok()? else {
            return None;
        };
        let CdLookup::Cd { location, index } = cd_lookup(&s1, ssid).ok()? else {
            return None;
        };
        match location {
            CdLocation::Direct { cd_addr } => Some(cd_addr),
            CdLocation::TwoLevel {
                l1_desc_addr,
                l2_index,
            } => {
                let mut desc = L1Cd::decode(ram_read_u64(l1_desc_addr)?);
                if !desc.valid {
                    desc = L1Cd::new(l2);
                    ram_write(l1_desc_addr, &desc.encode().to_le_bytes());
                }
                l2_cd_addr(desc, s1.fmt, l2_index, index).ok()
            }
        }
    }

    fn run(&mut self, inp: &mut Input<'_>) {
        for _ in 0..MAX_OPS {
            if inp.remaining() == 0 {
                return;
            }
            self.op(inp);
        }
    }

    fn op(&mut self, inp: &mut Input<'_>) {
        match inp.u8() % 23 {
            // A raw message: any command number, flags and payload.
            0 => {
                let cmd = match inp.u8() {
                    b @ 0..=0xdf => Command::ALL[b as usize % Command::ALL.len()] as u16,
                    _ => inp.u16(),
                };
                let flags = match inp.u8() {
                    0..=0xbf => 0,
                    0xc0..=0xef => FLAG_NO_REPLY,
                    _ => inp.u32(),
                };
                let len = usize::from(inp.u8());
                let payload = inp.bytes(len).to_vec();
                let nfds = inp.u8();
                let mut fds = Vec::new();
                for i in 0..(nfds % 4) {
                    fds.push(if (nfds >> (2 + i)) & 1 == 0 {
                        mem_fd()
                    } else {
                        irq_fd()
                    });
                }
                self.send(cmd, flags, &payload, fds);
            }
            // Register write, 32 or 64 bits, posted or not.
            1..=4 => {
                let off = inp.reg();
                let sel = inp.u8();
                let count = if off.is_multiple_of(8) && sel & 1 == 1 {
                    8
                } else {
                    4
                };
                let value = inp.value();
                self.write(off, count, value, sel & 2 != 0);
            }
            5 => {
                let off = inp.reg();
                let count = if off.is_multiple_of(8) && inp.bool() {
                    8
                } else {
                    4
                };
                self.read(off, count);
            }
            // Guest memory write.
            6 | 7 => {
                let gpa = RAM_BASE + u64::from(inp.u16());
                let len = usize::from(inp.u8());
                ram_write(gpa, inp.bytes(len));
            }
            // Commands at CMDQ_PROD, then PROD moves past them.
            8 | 9 => {
                let base = self.read(CMDQ_BASE, 8);
                let log2 = (base & 0x1f) as u32;
                if log2 > 19 {
                    return;
                }
                let addr = base & Q_BASE_ADDR_MASK;
                let prod = self.read(CMDQ_PROD, 4) as u32;
                let n = inp.u8() % 8 + 1;
                let mut p = prod;
                for _ in 0..n {
                    let idx = u64::from(p & ((1 << log2) - 1));
                    let cmd = command(inp, self);
                    let mut b = [0u8; 16];
                    b[..8].copy_from_slice(&cmd[0].to_le_bytes());
                    b[8..].copy_from_slice(&cmd[1].to_le_bytes());
                    ram_write(addr.wrapping_add(idx * 16), &b);
                    p = p.wrapping_add(1) & ((2 << log2) - 1);
                }
                self.write(CMDQ_PROD, 4, u64::from(p), inp.bool());
            }
            // An STE where the stream table says.
            10 | 11 => {
                let sid = inp.sid();
                let l2 = inp.ram_addr();
                let ste = ste(inp);
                if let Some(a) = self.ste_addr(sid, l2) {
                    ram_write(a, &ste.to_bytes());
                }
            }
            // A CD where the STE says.
            12 => {
                let sid = inp.sid();
                let ssid = inp.bool().then(|| u32::from(inp.u8()));
                let l2 = inp.ram_addr();
                let cd = if inp.bool() {
                    Cd::from_bytes(&inp.take())
                } else {
                    let g = [Granule::K4, Granule::K16, Granule::K64][inp.u8() as usize % 3];
                    Cd::s1(
                        inp.ram_addr() & !0xfff,
                        inp.u8() % 64,
                        g,
                        inp.u8() % 8,
                        inp.u16(),
                    )
                };
                if let Some(a) = self.cd_addr(sid, ssid, l2) {
                    ram_write(a, &cd.to_bytes());
                }
            }
            // Events through the sim host's vEVENTQ.
            13 => {
                let n = u32::from(inp.u8() % 9);
                let mut p = SimInjectHeader {
                    argsz: SimInjectHeader::SIZE + 32 * n,
                    count: n,
                }
                .as_bytes()
                .to_vec();
                for _ in 0..n {
                    let w0 = u64::from(inp.sid()) << 32 | u64::from(inp.u8());
                    for w in [w0, inp.u64(), inp.u64(), inp.u64()] {
                        p.extend_from_slice(&w.to_le_bytes());
                    }
                }
                self.call(Command::VsmmuSimInject, &p, vec![]);
            }
            14 => {
                let cmd = if inp.bool() {
                    Command::VsmmuAttachDevice
                } else {
                    Command::VsmmuDetachDevice
                };
                let d = VsmmuDevice {
                    argsz: VsmmuDevice::SIZE,
                    flags: 0,
                    vsid: inp.sid(),
                    reserved: 0,
                };
                self.call(cmd, d.as_bytes(), vec![]);
            }
            // The guest consumes its event queue and acknowledges errors.
            15 => {
                let prod = self.read(EVENTQ_PROD_PAGE1, 4);
                self.write(EVENTQ_CONS_PAGE1, 4, prod & !(1 << 31), inp.bool());
                let gerror = self.read(GERROR, 4);
                self.write(GERRORN, 4, gerror, inp.bool());
            }
            16 => {
                let page = |inp: &mut Input<'_>| u64::from(inp.u8() % 16) * 4096;
                let (addr, size) = match inp.u8() % 4 {
                    0 => (inp.u64(), inp.u64()),
                    1 => (RAM_BASE, RAM_SIZE),
                    _ => (RAM_BASE + RAM_SIZE + page(inp), page(inp) + 4096),
                };
                if inp.bool() {
                    let m = DmaMap {
                        argsz: DmaMap::SIZE,
                        flags: u32::from(inp.u8() % 5),
                        offset: RAM_SIZE + page(inp),
                        addr,
                        size,
                    };
                    let fds = match inp.u8() % 8 {
                        0 => vec![],
                        1 => vec![irq_fd()],
                        _ => vec![mem_fd()],
                    };
                    self.call(Command::DmaMap, m.as_bytes(), fds);
                } else {
                    let u = DmaUnmap {
                        argsz: DmaUnmap::SIZE,
                        flags: u32::from(inp.u8().is_multiple_of(8)),
                        addr,
                        size,
                    };
                    self.call(Command::DmaUnmap, u.as_bytes(), vec![]);
                }
            }
            17 => {
                let flags = match inp.u8() % 4 {
                    0 => inp.u32(),
                    1 => vu::VFIO_IRQ_SET_ACTION_MASK | vu::VFIO_IRQ_SET_DATA_NONE,
                    2 => vu::VFIO_IRQ_SET_ACTION_UNMASK | vu::VFIO_IRQ_SET_DATA_NONE,
                    _ => vu::VFIO_IRQ_SET_ACTION_TRIGGER | vu::VFIO_IRQ_SET_DATA_EVENTFD,
                };
                let nfds = inp.u8() % 3;
                let s = IrqSet {
                    flags,
                    ..irq_eventfds(u32::from(inp.u8() % 5), u32::from(nfds.max(1)))
                };
                let fds = (0..nfds).map(|_| irq_fd()).collect();
                self.call(Command::DeviceSetIrqs, s.as_bytes(), fds);
            }
            18 => {
                let n = inp.u8() % 4 + 1;
                let mut p = WriteMultiHeader {
                    wr_cnt: u64::from(n),
                }
                .as_bytes()
                .to_vec();
                for _ in 0..n {
                    let offset = inp.reg();
                    let e = WriteMultiEntry {
                        offset,
                        region: 0,
                        count: if offset.is_multiple_of(8) && inp.bool() {
                            8
                        } else {
                            4
                        },
                        data: inp.value().to_le_bytes(),
                    };
                    p.extend_from_slice(e.as_bytes());
                }
                self.call(Command::RegionWriteMulti, &p, vec![]);
            }
            // A device DMA through the sim host: STE, CD and page table walk.
            20 => {
                let write = inp.bool();
                let len = if inp.bool() {
                    u64::from(inp.u8()) + 1
                } else {
                    u64::from(inp.u16() % 4096) + 1
                };
                let vsid = inp.sid();
                let ssid = if inp.bool() {
                    u32::from(inp.u8())
                } else {
                    vu::SIM_DMA_NO_SSID
                };
                let iova = match inp.u8() % 3 {
                    0 => inp.u64(),
                    // 4 KiB granule indexes, 48-bit VA.
                    1 => {
                        let mut va = 0u64;
                        for shift in [39, 30, 21, 12] {
                            va |= u64::from(inp.u16() % 512) << shift;
                        }
                        va | u64::from(inp.u16() % 4096)
                    }
                    _ => inp.ram_addr() + u64::from(inp.u8()),
                };
                let mut data = Vec::new();
                if write {
                    data = inp.bytes(len as usize).to_vec();
                    data.resize(len as usize, 0);
                }
                let req = SimDma {
                    argsz: SimDma::SIZE + data.len() as u32,
                    flags: u32::from(write),
                    vsid,
                    ssid,
                    iova,
                    len,
                };
                let mut p = req.as_bytes().to_vec();
                p.extend_from_slice(&data);
                let r = self.call(Command::VsmmuSimDma, &p, vec![]);
                if debug() {
                    let status = r.as_deref().and_then(|b| b.get(24..28));
                    eprintln!("SIM_DMA {iova:#x}+{len}: status {status:?}");
                }
            }
            // A translation table descriptor in one of RAM's 4 KiB pages.
            21 => {
                let page = |inp: &mut Input<'_>| RAM_BASE + u64::from(inp.u8() % 16) * 4096;
                let table = page(inp);
                let index = u64::from(inp.u16() % 512);
                let desc = match inp.u8() % 4 {
                    0 => inp.u64(),
                    // Next-level table, access flag set.
                    1 => page(inp) | 0b11 | 1 << 10,
                    // Page (or block) with AF, AP[2:1], DBM.
                    2 => {
                        let oa = page(inp);
                        let kind = if inp.bool() { 0b11 } else { 0b01 };
                        let ap = u64::from(inp.u8() & 3) << 6;
                        let af = if inp.bool() { 0 } else { 1 << 10 };
                        let dbm = if inp.bool() { 1 << 51 } else { 0 };
                        oa | kind | ap | af | dbm
                    }
                    _ => 0,
                };
                ram_write(table + index * 8, &desc.to_le_bytes());
            }
            _ => match inp.u8() % 4 {
                0 => {
                    self.call(Command::DeviceReset, &[], vec![]);
                }
                1 => self.reconnect(),
                2 => self.boot(inp),
                _ => {
                    self.call(Command::VsmmuGetStats, &[8, 0, 0, 0, 0, 0, 0, 0], vec![]);
                }
            },
        }
    }

    /// What a driver does at probe: queues and stream table in RAM, then
    /// CMDQEN, EVTQEN, SMMUEN.
    fn boot(&mut self, inp: &mut Input<'_>) {
        let sel = inp.u8();
        let cmdq_log2 = u64::from(inp.u8() % 9);
        let evtq_log2 = u64::from(inp.u8() % 8);
        self.write(CR0, 4, 0, false);
        self.write(CMDQ_BASE, 8, RAM_BASE | cmdq_log2, false);
        self.write(CMDQ_PROD, 4, 0, false);
        self.write(CMDQ_CONS, 4, 0, false);
        self.write(EVENTQ_BASE, 8, (RAM_BASE + 0x1000) | evtq_log2, false);
        self.write(EVENTQ_PROD_PAGE1, 4, 0, false);
        self.write(EVENTQ_CONS_PAGE1, 4, 0, false);
        // Linear 2^8 STEs at +8 KiB, or 2-level (SPLIT 8) with L1 at +8 KiB.
        let cfg = if sel & 1 == 0 {
            8
        } else {
            1 << 16 | 8 << 6 | 16
        };
        self.write(STRTAB_BASE, 8, RAM_BASE + 0x2000, false);
        self.write(STRTAB_BASE_CFG, 4, cfg, false);
        self.write(IRQ_CTRL, 4, u64::from(sel >> 1 & 7), false);
        let en = CR0_CMDQEN.mask32() | CR0_EVTQEN.mask32();
        self.write(CR0, 4, u64::from(en), false);
        if sel & 0x10 == 0 {
            self.write(CR0, 4, u64::from(en | CR0_SMMUEN.mask32()), false);
        }
    }
}

/// One CMDQ entry: a well-formed command of a kind the model acts on, or
/// raw words.
fn command(inp: &mut Input<'_>, h: &Harness) -> [u64; 2] {
    let range = |inp: &mut Input<'_>| TlbiRange {
        num: inp.u8() & 0x1f,
        scale: inp.u8() & 0x3f,
        leaf: inp.bool(),
        ttl128: false,
        ttl: inp.u8() & 3,
        tg: inp.u8() & 3,
        addr: inp.u64() & !0xfff,
    };
    let cmd = match inp.u8() % 14 {
        0 => return [inp.u64(), inp.u64()],
        1 | 2 => SmmuCmd::CfgiSte {
            sid: inp.sid(),
            leaf: inp.bool(),
        },
        3 => SmmuCmd::CfgiSteRange {
            sid: inp.sid(),
            range: inp.u8() % 32,
        },
        4 => SmmuCmd::cfgi_all(),
        5 => SmmuCmd::CfgiCd {
            sid: inp.sid(),
            ssid: u32::from(inp.u8()),
            leaf: inp.bool(),
        },
        6 => SmmuCmd::CfgiCdAll { sid: inp.sid() },
        7 => SmmuCmd::TlbiNhAsid {
            vmid: 0,
            asid: inp.u16(),
        },
        8 => SmmuCmd::TlbiNhVa {
            vmid: 0,
            asid: inp.u16(),
            range: range(inp),
        },
        9 => SmmuCmd::TlbiNhVaa {
            vmid: 0,
            range: range(inp),
        },
        10 => {
            if inp.bool() {
                SmmuCmd::TlbiNhAll { vmid: 0 }
            } else {
                SmmuCmd::TlbiNsnhAll
            }
        }
        11 => SmmuCmd::PrefetchConfig {
            sid: inp.sid(),
            ssv: false,
            ssid: 0,
        },
        12 => SmmuCmd::AtcInv {
            sid: inp.sid(),
            ssv: inp.bool(),
            ssid: u32::from(inp.u8()),
            global: false,
            size: inp.u8() & 0x3f,
            addr: inp.u64() & !0xfff,
        },
        _ => match inp.u8() % 3 {
            0 => SmmuCmd::sync_sev(),
            1 => SmmuCmd::sync_msi(inp.ram_addr()),
            _ => SmmuCmd::Sync {
                cs: if h.idr[0] & 1 << 13 != 0 {
                    SyncCs::Irq
                } else {
                    SyncCs::None
                },
                msh: 3,
                msiattr: 0xf,
                msidata: inp.u32(),
                msiaddr: inp.ram_addr(),
            },
        },
    };
    cmd.encode()
}

/// An STE: abort, bypass, stage 1 over a CD table in RAM, one of those
/// with a bit flipped, or raw bytes.
fn ste(inp: &mut Input<'_>) -> Ste {
    let s1 = |inp: &mut Input<'_>| {
        let fmt = S1Fmt::from_bits(inp.u8() % 3);
        Ste::s1(inp.ram_addr(), inp.u8() % 9, fmt).with_s1dss(S1Dss::from_bits(inp.u8() % 3))
    };
    match inp.u8() % 6 {
        0 => Ste::from_bytes(&inp.take()),
        1 => Ste::abort(),
        2 => Ste::bypass(),
        3 => Ste::s1(inp.ram_addr(), 0, S1Fmt::Linear),
        4 => s1(inp),
        _ => {
            let mut s = s1(inp);
            let bit = inp.u16() % 512;
            s.0[usize::from(bit / 64)] ^= 1 << (bit % 64);
            s
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(FuzzInput::new(data));
    let cfg = inp.u8();
    let blob = usize::from(inp.u8()) * 16;
    // Fresh guest RAM: zeroes, then the blob at its start.
    let f = &fds().mem;
    f.set_len(0).unwrap();
    f.set_len(FILE_SIZE).unwrap();
    f.write_all_at(inp.bytes(blob), 0).unwrap();
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(&fds().irq, &mut b);
    let mut h = Harness::new(cfg);
    h.run(&mut inp);
    if debug() {
        h.dev.smmu.refresh_stats(&mut h.dev.stats);
        eprintln!("{}", String::from_utf8_lossy(&h.dev.stats.to_json()));
    }
});

/// `VSMMU_FUZZ_DEBUG=1`: print the device counters after each input (to
/// check how deep a seed gets).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("VSMMU_FUZZ_DEBUG").is_some())
}
