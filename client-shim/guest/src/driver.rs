//! A model SMMUv3 guest driver that does what Linux's arm-smmu-v3 does
//! (`arm_smmu_device_hw_probe`, `arm_smmu_init_queues`,
//! `arm_smmu_init_strtab`, `arm_smmu_device_reset`, `arm_smmu_cmdq_issue_cmdlist`,
//! `arm_smmu_evtq_thread`, `arm_smmu_gerror_handler`), over a [`Client`]
//! and the guest RAM it shares. Tests and the demo drive `vsmmud` with it.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use vsmmu_client::{Client, ClientError};
use vsmmu_protocol::smmu::cd::{Cd, Granule};
use vsmmu_protocol::smmu::command::Command;
use vsmmu_protocol::smmu::event::Event;
use vsmmu_protocol::smmu::queue::{Queue, CMD_ENTRY_SIZE, EVENT_ENTRY_SIZE};
use vsmmu_protocol::smmu::regs::*;
use vsmmu_protocol::smmu::ste::{S1Dss, S1Fmt, Ste};
use vsmmu_protocol::smmu::strtab::{strtab_base_cfg_reg, L1Std, StrtabFmt, LINUX_SPLIT};
use vsmmu_protocol::vfio_user::irq;

use crate::guest_ram::GuestRam;

/// Linux's cap on the command queue (65536 entries, as printed at boot).
pub const LINUX_CMDQ_MAX_SHIFT: u8 = 16;
/// Linux's cap on the event queue (32768 entries).
pub const LINUX_EVTQ_MAX_SHIFT: u8 = 15;
/// Linux refuses a command queue smaller than its batch (CMDQ_BATCH_ENTRIES = 64).
const CMDQ_MIN_SHIFT: u32 = 7;
/// Linux's largest level-1 stream table (STRTAB_L1_SZ_SHIFT 20, 8-byte descriptors).
const STRTAB_L1_MAX_SHIFT: u32 = 17;
/// Queue-base RA/WA hint Linux sets (Q_BASE_RWA).
const Q_BASE_RWA: u64 = 1 << 62;
/// How long a poll of the device may take before the driver gives up.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// A driver failure.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The transport failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The device is one Linux refuses to drive.
    #[error("probe refused: {0}")]
    Unsupported(String),
    /// A poll did not complete.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// A command was refused (CMDQ_CONS.ERR).
    #[error("command {index} failed with CERROR {cerror}")]
    Command {
        /// Queue index of the failing command.
        index: u32,
        /// CERROR code.
        cerror: u32,
    },
    /// Guest RAM is too small for the tables.
    #[error("guest RAM exhausted allocating {0} bytes")]
    NoMemory(u64),
}

type Result<T> = std::result::Result<T, DriverError>;

/// Driver options.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Largest command queue LOG2SIZE (Linux: 16).
    pub cmdq_max_shift: u8,
    /// Largest event queue LOG2SIZE (Linux: 15).
    pub evtq_max_shift: u8,
    /// Use MSIs when the SMMU offers them (IDR0.MSI and COHACC), as Linux does.
    pub use_msi: bool,
    /// Write EVENTQ_CONS after every record, as Linux's queue_remove_raw;
    /// false writes it once per drained batch.
    pub cons_per_entry: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            cmdq_max_shift: LINUX_CMDQ_MAX_SHIFT,
            evtq_max_shift: LINUX_EVTQ_MAX_SHIFT,
            use_msi: true,
            cons_per_entry: true,
        }
    }
}

/// Features found at probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// IDR0..IDR5 as read.
    pub idr: [u32; 6],
    /// StreamID bits.
    pub sid_bits: u32,
    /// SubstreamID bits.
    pub ssid_bits: u32,
    /// CMD_SYNC completes by MSI into the queue slot.
    pub msi: bool,
    /// 2-level stream table.
    pub two_level: bool,
    /// IDR0.HYP (TLBI_EL2_ALL at reset).
    pub hyp: bool,
}

/// A bump allocator over guest RAM (the driver's dma_alloc_coherent).
#[derive(Debug)]
struct Alloc {
    next: u64,
    end: u64,
}

impl Alloc {
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let start = self.next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            start
        })
    }
}

/// One event record as the driver logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The raw record.
    pub raw: [u64; 4],
    /// Decoded.
    pub event: Event,
}

/// What one pass of the event thread saw.
#[derive(Debug, Default, Clone)]
pub struct EvtqPass {
    /// Records consumed, in order.
    pub events: Vec<LoggedEvent>,
    /// "EVTQ overflow detected -- events lost" was seen this pass.
    pub overflow: bool,
}

struct QueueState {
    base: u64,
    q: Queue,
    /// Driver's copy of PROD (CMDQ) or CONS (EVENTQ), with wrap bit.
    ptr: u32,
    /// Driver's copy of CONS (CMDQ) or PROD with OVFLG (EVENTQ).
    other: u32,
}

/// The model guest driver.
pub struct SmmuDriver {
    /// The vfio-user connection.
    pub client: Client,
    /// Guest RAM, shared with the server.
    pub ram: GuestRam,
    /// What probe found.
    pub features: Features,
    opts: DriverOptions,
    alloc: Alloc,
    cmdq: QueueState,
    evtq: QueueState,
    /// Reused buffer the event queue's entries are copied out into.
    evtq_buf: Vec<u8>,
    strtab: u64,
    l1: Vec<Option<u64>>,
    /// Eventfds of the EVTQ, PRIQ, CMD_SYNC and GERROR lines.
    pub irqs: [EventFd; irq::COUNT],
    /// "EVTQ overflow detected -- events lost" lines printed so far.
    pub overflows_seen: u64,
}

impl std::fmt::Debug for SmmuDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmmuDriver")
            .field("features", &self.features)
            .finish()
    }
}

fn poll<T>(what: &'static str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let t0 = Instant::now();
    let mut spins = 0u32;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if t0.elapsed() > POLL_TIMEOUT {
            return Err(DriverError::Timeout(what));
        }
        spins += 1;
        if spins > 64 {
            std::thread::sleep(Duration::from_micros(50));
        } else {
            std::thread::yield_now();
        }
    }
}

impl SmmuDriver {
    /// Probes and resets the SMMU the way Linux does: maps `ram` (all of
    /// it, at its base), wires four eventfds, reads the ID registers,
    /// allocates the queues and the stream table from the RAM from
    /// `table_base` on, and runs `arm_smmu_device_reset`.
    pub fn probe(
        mut client: Client,
        ram: GuestRam,
        table_base: u64,
        opts: DriverOptions,
    ) -> Result<Self> {
        client.dma_map(ram.fd(), 0, ram.base(), ram.size() as u64)?;
        let mk =
            || EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC);
        let irqs = [mk(), mk(), mk(), mk()];
        let irqs = match irqs {
            [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
            _ => return Err(ClientError::Io(std::io::Error::last_os_error()).into()),
        };
        for (i, fd) in irqs.iter().enumerate() {
            client.set_irq_eventfd(i as u32, Some(fd.as_fd()))?;
        }

        // arm_smmu_device_hw_probe.
        let mut idr = [0u32; 6];
        for (i, r) in idr.iter_mut().enumerate() {
            *r = client.read32(IDR0 + 4 * i as u64)?;
        }
        let _iidr = client.read32(IIDR)?;
        let endian = IDR0_TTENDIAN.get32(idr[0]);
        if endian == IDR0_TTENDIAN_BE {
            return Err(DriverError::Unsupported(
                "big-endian table walks only".into(),
            ));
        }
        if !IDR0_S1P.is_set32(idr[0]) && !IDR0_S2P.is_set32(idr[0]) {
            return Err(DriverError::Unsupported("no translation support".into()));
        }
        let ttf = IDR0_TTF.get32(idr[0]);
        if ttf != IDR0_TTF_AARCH64 && ttf != IDR0_TTF_AARCH32_64 {
            return Err(DriverError::Unsupported(
                "AArch64 table format not supported".into(),
            ));
        }
        if idr[1] & (IDR1_TABLES_PRESET.mask32() | IDR1_QUEUES_PRESET.mask32() | IDR1_REL.mask32())
            != 0
        {
            return Err(DriverError::Unsupported(
                "embedded implementation not supported".into(),
            ));
        }
        let cmdqs = IDR1_CMDQS.get32(idr[1]);
        if cmdqs < CMDQ_MIN_SHIFT {
            return Err(DriverError::Unsupported(format!(
                "command queue size 2^{cmdqs} < 2^{CMDQ_MIN_SHIFT}"
            )));
        }
        let sid_bits = IDR1_SIDSIZE.get32(idr[1]);
        let ssid_bits = IDR1_SSIDSIZE.get32(idr[1]);
        let two_level =
            IDR0_ST_LVL.get32(idr[0]) == IDR0_ST_LVL_2LVL && sid_bits > u32::from(LINUX_SPLIT);
        let features = Features {
            idr,
            sid_bits,
            ssid_bits,
            msi: opts.use_msi && IDR0_MSI.is_set32(idr[0]) && IDR0_COHACC.is_set32(idr[0]),
            two_level,
            hyp: IDR0_HYP.is_set32(idr[0]),
        };

        // arm_smmu_init_queues: halve until the allocation succeeds.
        let mut alloc = Alloc {
            next: table_base,
            end: ram.base() + ram.size() as u64,
        };
        let cmdq = Self::alloc_queue(
            &mut alloc,
            cmdqs.min(opts.cmdq_max_shift.into()),
            CMD_ENTRY_SIZE,
        )?;
        let evtqs = IDR1_EVTQS.get32(idr[1]).min(opts.evtq_max_shift.into());
        let evtq = Self::alloc_queue(&mut alloc, evtqs, EVENT_ENTRY_SIZE)?;

        // arm_smmu_init_strtab.
        let (strtab, strtab_cfg, l1) = if two_level {
            let l1_shift = STRTAB_L1_MAX_SHIFT
                .saturating_sub(3)
                .min(sid_bits - u32::from(LINUX_SPLIT));
            let n = 1u64 << l1_shift;
            let base = alloc
                .alloc(n * 8, (n * 8).max(64))
                .ok_or(DriverError::NoMemory(n * 8))?;
            ram.zero(base, (n * 8) as usize);
            let cfg = strtab_base_cfg_reg(
                StrtabFmt::TwoLevel,
                (l1_shift + u32::from(LINUX_SPLIT)) as u8,
                LINUX_SPLIT,
            );
            (base, cfg, vec![None; n as usize])
        } else {
            let n = 1u64 << sid_bits;
            let base = alloc
                .alloc(n * 64, (n * 64).max(64))
                .ok_or(DriverError::NoMemory(n * 64))?;
            for i in 0..n {
                ram.write_u64s(base + i * 64, &Ste::abort().to_words());
            }
            (
                base,
                strtab_base_cfg_reg(StrtabFmt::Linear, sid_bits as u8, 0),
                Vec::new(),
            )
        };

        let mut d = SmmuDriver {
            client,
            ram,
            features,
            opts,
            alloc,
            cmdq,
            evtq,
            evtq_buf: Vec::new(),
            strtab,
            l1,
            irqs,
            overflows_seen: 0,
        };
        d.reset(strtab_cfg)?;
        Ok(d)
    }

    /// Takes over a running SMMU after the VMM reconnected (the previous
    /// client died; guest RAM and the guest's queues live on): maps `ram`,
    /// wires fresh eventfds, and rebuilds the driver's view of the queues
    /// from the registers. Tables are not re-allocated; [`SmmuDriver::alloc`]
    /// hands out memory from `free_from` on.
    pub fn resume(
        mut client: Client,
        ram: GuestRam,
        free_from: u64,
        opts: DriverOptions,
    ) -> Result<Self> {
        client.dma_map(ram.fd(), 0, ram.base(), ram.size() as u64)?;
        let irqs = Self::wire_irqs(&mut client)?;
        let mut idr = [0u32; 6];
        for (i, r) in idr.iter_mut().enumerate() {
            *r = client.read32(IDR0 + 4 * i as u64)?;
        }
        let sid_bits = IDR1_SIDSIZE.get32(idr[1]);
        let queue = |base: u64| {
            let b = vsmmu_protocol::smmu::queue::QueueBase::decode(base);
            (b.addr, Queue::capped(b.log2size, 19))
        };
        let (cbase, cq) = queue(client.read64(CMDQ_BASE)?);
        let (ebase, eq) = queue(client.read64(EVENTQ_BASE)?);
        let cmdq_prod = client.read32(CMDQ_PROD)?;
        let cmdq_cons = client.read32(CMDQ_CONS)?;
        let evtq_cons = client.read32(EVENTQ_CONS_PAGE1)?;
        let evtq_prod = client.read32(EVENTQ_PROD_PAGE1)?;
        let strtab = client.read64(STRTAB_BASE)? & STRTAB_BASE_ADDR_MASK;
        let cfg = client.read32(STRTAB_BASE_CFG)?;
        let two_level = STRTAB_BASE_CFG_FMT.get32(cfg) == STRTAB_BASE_CFG_FMT_2LVL;
        let mut l1 = Vec::new();
        if two_level {
            let n = 1usize << (STRTAB_BASE_CFG_LOG2SIZE.get32(cfg) - u32::from(LINUX_SPLIT));
            for i in 0..n {
                let desc = L1Std::decode(ram.read_u64(strtab + i as u64 * 8));
                l1.push((desc.span != 0).then_some(desc.l2ptr));
            }
        }
        let features = Features {
            idr,
            sid_bits,
            ssid_bits: IDR1_SSIDSIZE.get32(idr[1]),
            msi: opts.use_msi && IDR0_MSI.is_set32(idr[0]) && IDR0_COHACC.is_set32(idr[0]),
            two_level,
            hyp: IDR0_HYP.is_set32(idr[0]),
        };
        let end = ram.base() + ram.size() as u64;
        Ok(SmmuDriver {
            client,
            ram,
            features,
            opts,
            alloc: Alloc {
                next: free_from,
                end,
            },
            cmdq: QueueState {
                base: cbase,
                q: cq,
                ptr: cmdq_prod,
                other: cmdq_cons,
            },
            // The guest's progress is what it last wrote to EVENTQ_CONS; the
            // driver's cached PROD starts from the same OVFLG so that an
            // overflow that happened meanwhile is noticed.
            evtq: QueueState {
                base: ebase,
                q: eq,
                ptr: evtq_cons,
                other: (evtq_prod & !eq.ptr_mask()) | (evtq_cons & eq.ptr_mask()),
            },
            evtq_buf: Vec::new(),
            strtab,
            l1,
            irqs,
            overflows_seen: 0,
        })
    }

    fn wire_irqs(client: &mut Client) -> Result<[EventFd; irq::COUNT]> {
        let mk =
            || EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC);
        let irqs = match [mk(), mk(), mk(), mk()] {
            [Ok(a), Ok(b), Ok(c), Ok(d)] => [a, b, c, d],
            _ => return Err(ClientError::Io(std::io::Error::last_os_error()).into()),
        };
        for (i, fd) in irqs.iter().enumerate() {
            client.set_irq_eventfd(i as u32, Some(fd.as_fd()))?;
        }
        Ok(irqs)
    }

    fn alloc_queue(alloc: &mut Alloc, mut shift: u32, entry: u64) -> Result<QueueState> {
        loop {
            let size = entry << shift;
            if let Some(base) = alloc.alloc(size, size.max(32)) {
                return Ok(QueueState {
                    base,
                    q: Queue::capped(shift as u8, 19),
                    ptr: 0,
                    other: 0,
                });
            }
            if shift == 0 {
                return Err(DriverError::NoMemory(size));
            }
            shift -= 1;
        }
    }

    fn write_sync(&mut self, reg: u64, ack: u64, value: u32) -> Result<()> {
        self.client.write32(reg, value)?;
        let c = &mut self.client;
        poll("register ack", || {
            Ok((c.read32(ack)? == value).then_some(()))
        })
    }

    /// arm_smmu_device_reset.
    fn reset(&mut self, strtab_cfg: u32) -> Result<()> {
        // Step 3: an already enabled SMMU first aborts incoming transactions.
        if CR0_SMMUEN.is_set32(self.client.read32(CR0)?) {
            self.update_gbpa(GBPA_ABORT.mask32(), 0)?;
        }
        self.write_sync(CR0, CR0ACK, 0)?;
        self.client.write32(CR1, 0x0d75)?;
        let cr2 = CR2_PTM.mask32() | CR2_RECINVSID.mask32();
        self.client.write32(CR2, cr2)?;
        self.client.write64(STRTAB_BASE, Q_BASE_RWA | self.strtab)?;
        self.client.write32(STRTAB_BASE_CFG, strtab_cfg)?;
        let cmdq_base = Q_BASE_RWA | self.cmdq.base | u64::from(self.cmdq.q.log2size());
        self.client.write64(CMDQ_BASE, cmdq_base)?;
        self.client.write32(CMDQ_PROD, 0)?;
        self.client.write32(CMDQ_CONS, 0)?;
        let mut cr0 = CR0_CMDQEN.mask32();
        self.write_sync(CR0, CR0ACK, cr0)?;
        self.issue(&[Command::cfgi_all()], true)?;
        if self.features.hyp {
            self.issue(&[Command::TlbiEl2All], true)?;
        }
        self.issue(&[Command::TlbiNsnhAll], true)?;
        let evtq_base = Q_BASE_RWA | self.evtq.base | u64::from(self.evtq.q.log2size());
        self.client.write64(EVENTQ_BASE, evtq_base)?;
        self.client.write32(EVENTQ_PROD_PAGE1, 0)?;
        self.client.write32(EVENTQ_CONS_PAGE1, 0)?;
        cr0 |= CR0_EVTQEN.mask32();
        self.write_sync(CR0, CR0ACK, cr0)?;
        // arm_smmu_setup_irqs.
        self.write_sync(IRQ_CTRL, IRQ_CTRLACK, 0)?;
        self.client.write64(GERROR_IRQ_CFG0, 0)?;
        self.client.write64(EVENTQ_IRQ_CFG0, 0)?;
        let irqen = IRQ_CTRL_EVTQ_IRQEN.mask32() | IRQ_CTRL_GERROR_IRQEN.mask32();
        self.write_sync(IRQ_CTRL, IRQ_CTRLACK, irqen)?;
        cr0 |= CR0_SMMUEN.mask32();
        self.write_sync(CR0, CR0ACK, cr0)
    }

    /// arm_smmu_update_gbpa: set then clear bits through the UPDATE handshake.
    pub fn update_gbpa(&mut self, set: u32, clr: u32) -> Result<()> {
        let c = &mut self.client;
        let v = poll("GBPA.UPDATE", || {
            let v = c.read32(GBPA)?;
            Ok((!GBPA_UPDATE.is_set32(v)).then_some(v))
        })?;
        self.client
            .write32(GBPA, ((v & !clr) | set) | GBPA_UPDATE.mask32())?;
        let c = &mut self.client;
        poll("GBPA.UPDATE", || {
            Ok((!GBPA_UPDATE.is_set32(c.read32(GBPA)?)).then_some(()))
        })
    }

    /// Guest address of the command queue and its LOG2SIZE.
    pub fn cmdq_layout(&self) -> (u64, u8) {
        (self.cmdq.base, self.cmdq.q.log2size())
    }

    /// Guest address of the event queue and its LOG2SIZE.
    pub fn evtq_layout(&self) -> (u64, u8) {
        (self.evtq.base, self.evtq.q.log2size())
    }

    /// Allocates zeroed guest memory from the driver's pool.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64> {
        let a = self
            .alloc
            .alloc(size, align)
            .ok_or(DriverError::NoMemory(size))?;
        self.ram.zero(a, size as usize);
        Ok(a)
    }

    /// arm_smmu_cmdq_issue_cmdlist: writes `cmds` (and a CMD_SYNC when
    /// `sync`), rings CMDQ_PROD with a posted write, and waits for the
    /// sync (by MSI into the slot, or by polling CMDQ_CONS).
    pub fn issue(&mut self, cmds: &[Command], sync: bool) -> Result<()> {
        let words: Vec<[u64; 2]> = cmds.iter().map(Command::encode).collect();
        self.issue_raw(&words, sync)
    }

    /// [`SmmuDriver::issue`] with raw command words.
    pub fn issue_raw(&mut self, cmds: &[[u64; 2]], sync: bool) -> Result<()> {
        let n = cmds.len() as u32 + u32::from(sync);
        let q = self.cmdq.q;
        if n > q.entries() {
            return Err(DriverError::Unsupported(format!(
                "{n} commands exceed the queue"
            )));
        }
        // Wait for space, refreshing CONS from the device.
        while q.free(self.cmdq.ptr, self.cmdq.other) < n {
            self.cmdq.other = self.client.read32(CMDQ_CONS)?;
            self.check_cmdq_error()?;
            std::thread::yield_now();
        }
        for c in cmds {
            self.write_cmd(*c);
        }
        let mut sync_slot = None;
        if sync {
            let slot = self.cmdq.base + u64::from(q.index(self.cmdq.ptr)) * CMD_ENTRY_SIZE;
            let cmd = if self.features.msi {
                Command::sync_msi(slot)
            } else {
                Command::sync_sev()
            };
            sync_slot = Some((slot, self.cmdq.ptr));
            self.write_cmd(cmd.encode());
        }
        self.client
            .mmio_write(CMDQ_PROD, 4, self.cmdq.ptr.into(), true)?;
        if let Some((slot, sync_ptr)) = sync_slot {
            self.wait_sync(slot, sync_ptr)?;
        }
        Ok(())
    }

    fn write_cmd(&mut self, cmd: [u64; 2]) {
        let q = self.cmdq.q;
        let addr = self.cmdq.base + u64::from(q.index(self.cmdq.ptr)) * CMD_ENTRY_SIZE;
        self.ram.write_u64s(addr, &cmd);
        self.cmdq.ptr = q.incr(self.cmdq.ptr);
    }

    fn wait_sync(&mut self, slot: u64, sync_ptr: u32) -> Result<()> {
        let q = self.cmdq.q;
        if self.features.msi {
            // __arm_smmu_cmdq_poll_until_msi: the SMMU writes MSIDATA (0)
            // over the first word of the CMD_SYNC itself. A command error
            // stops the queue before it: check CONS while waiting.
            let t0 = Instant::now();
            let mut next_check = Duration::from_millis(1);
            let mut spins = 0u32;
            while self.ram.read_u32(slot) != 0 {
                // No MMIO while waiting (that is the point of MSI); only a
                // sync that takes long is checked for a command error.
                let waited = t0.elapsed();
                if waited > next_check {
                    next_check = waited + Duration::from_millis(1);
                    self.cmdq.other = self.client.read32(CMDQ_CONS)?;
                    self.check_cmdq_error()?;
                }
                if waited > POLL_TIMEOUT {
                    return Err(DriverError::Timeout("CMD_SYNC MSI"));
                }
                spins += 1;
                if spins > 1000 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            return Ok(());
        }
        // __arm_smmu_cmdq_poll_until_consumed: CONS past the sync.
        let t0 = Instant::now();
        loop {
            let cons = self.client.read32(CMDQ_CONS)?;
            self.cmdq.other = cons;
            // Consumed when CONS moved past the sync slot.
            if q.used(self.cmdq.ptr, cons) < q.used(self.cmdq.ptr, sync_ptr) {
                return Ok(());
            }
            // Not consumed: stopped by a command error, or not there yet.
            self.check_cmdq_error()?;
            if t0.elapsed() > POLL_TIMEOUT {
                return Err(DriverError::Timeout("CMD_SYNC"));
            }
        }
    }

    fn check_cmdq_error(&mut self) -> Result<()> {
        let gerror = self.client.read32(GERROR)?;
        let gerrorn = self.client.read32(GERRORN)?;
        if (gerror ^ gerrorn) & GERROR_CMDQ_ERR == 0 {
            return Ok(());
        }
        let (index, cerror) = self.handle_cmdq_error(gerror)?;
        Err(DriverError::Command { index, cerror })
    }

    /// arm_smmu_cmdq_skip_err + the GERROR acknowledgement: on CERROR_ILL
    /// the faulting entry is replaced in place by a CMD_SYNC, then GERRORN
    /// is written so that the SMMU resumes. Returns (index, CERROR).
    pub fn handle_cmdq_error(&mut self, gerror: u32) -> Result<(u32, u32)> {
        let cons = self.client.read32(CMDQ_CONS)?;
        let cerror = CMDQ_CONS_ERR.get32(cons);
        let q = self.cmdq.q;
        let idx = q.index(cons);
        let addr = self.cmdq.base + u64::from(idx) * CMD_ENTRY_SIZE;
        if cerror == CERROR_ILL || cerror == CERROR_ATC_INV_SYNC {
            // A CMD_SYNC that completes without MSI (CS = SEV) in its place.
            self.ram.write_u64s(addr, &Command::sync_sev().encode());
        }
        // CERROR_ABT: retry as is.
        self.client.write32(GERRORN, gerror)?;
        Ok((idx, cerror))
    }

    /// Installs STE `ste` for `sid` (allocating the level-2 table on first
    /// use), then CFGI_STE + CMD_SYNC.
    pub fn write_ste(&mut self, sid: u32, ste: Ste) -> Result<()> {
        let addr = self.ste_addr(sid)?;
        // Word 0 (with V) last, as Linux's arm_smmu_write_strtab_ent.
        let w = ste.to_words();
        self.ram.write_u64s(addr + 8, &w[1..]);
        self.ram.write_u64s(addr, &w[..1]);
        self.issue(&[Command::CfgiSte { sid, leaf: true }], true)
    }

    /// Guest address of the STE of `sid` (allocating its L2 table).
    pub fn ste_addr(&mut self, sid: u32) -> Result<u64> {
        if !self.features.two_level {
            return Ok(self.strtab + u64::from(sid) * 64);
        }
        let l1 = (sid >> LINUX_SPLIT) as usize;
        let Some(slot) = self.l1.get(l1).copied() else {
            return Err(DriverError::Unsupported(format!(
                "StreamID {sid:#x} beyond the stream table"
            )));
        };
        let l2 = match slot {
            Some(l2) => l2,
            None => {
                let n = 1u64 << LINUX_SPLIT;
                let l2 = self.alloc(n * 64, n * 64)?;
                for i in 0..n {
                    self.ram.write_u64s(l2 + i * 64, &Ste::abort().to_words());
                }
                let desc = L1Std::new(l2, LINUX_SPLIT).encode();
                self.ram.write_u64s(self.strtab + l1 as u64 * 8, &[desc]);
                self.l1[l1] = Some(l2);
                l2
            }
        };
        Ok(l2 + u64::from(sid & ((1 << LINUX_SPLIT) - 1)) * 64)
    }

    /// Gives `sid` a stage-1 context: a one-entry CD table with `cd`, an
    /// S1 STE pointing at it.
    pub fn attach_s1(&mut self, sid: u32, cd: Cd) -> Result<u64> {
        let cdtab = self.alloc(64, 64)?;
        self.ram.write_u64s(cdtab, &cd.to_words());
        self.write_ste(
            sid,
            Ste::s1(cdtab, 0, S1Fmt::Linear).with_s1dss(S1Dss::Terminate),
        )?;
        Ok(cdtab)
    }

    /// A Linux-like stage-1 CD: 4 KiB granule, 48-bit VA, the given ASID
    /// and table base.
    pub fn linux_cd(&self, asid: u16, ttb0: u64) -> Cd {
        let ips = IDR5_OAS.get32(self.features.idr[5]) as u8;
        Cd::s1(ttb0, 16, Granule::K4, ips, asid)
    }

    /// One pass of arm_smmu_evtq_thread: pop records (writing CONS), read
    /// PROD, notice overflow, and finally acknowledge it through OVACKFLG.
    pub fn evtq_pass(&mut self) -> Result<EvtqPass> {
        let mut pass = EvtqPass::default();
        let q = self.evtq.q;
        loop {
            let mut popped = false;
            while !q.is_empty(self.evtq.other, self.evtq.ptr) {
                // The entries up to PROD or the end of the ring, copied out
                // in one read (Linux copies one at a time; the ring holds
                // the same bytes either way until CONS moves).
                let index = q.index(self.evtq.ptr);
                let run = q
                    .used(self.evtq.other, self.evtq.ptr)
                    .min(q.entries() - index) as usize;
                let addr = self.evtq.base + u64::from(index) * EVENT_ENTRY_SIZE;
                let mut buf = std::mem::take(&mut self.evtq_buf);
                buf.resize(run * EVENT_ENTRY_SIZE as usize, 0);
                self.ram.read(addr, &mut buf);
                pass.events.reserve(run);
                for entry in buf.chunks_exact(EVENT_ENTRY_SIZE as usize) {
                    let mut raw = [0u64; 4];
                    for (w, b) in raw.iter_mut().zip(entry.chunks_exact(8)) {
                        *w = u64::from_le_bytes(b.try_into().unwrap_or_default());
                    }
                    pass.events.push(LoggedEvent {
                        raw,
                        event: Event::decode(raw),
                    });
                    self.evtq.ptr = q.incr(self.evtq.ptr);
                    popped = true;
                    if self.opts.cons_per_entry {
                        self.write_evtq_cons()?;
                    }
                }
                self.evtq_buf = buf;
            }
            if popped && !self.opts.cons_per_entry {
                self.write_evtq_cons()?;
            }
            // queue_sync_prod_in.
            let prod = self.client.read32(EVENTQ_PROD_PAGE1)?;
            if (prod ^ self.evtq.other) & Q_PROD_OVFLG != 0 {
                pass.overflow = true;
                self.overflows_seen += 1;
                log::warn!("EVTQ overflow detected -- events lost");
            }
            self.evtq.other = prod;
            if q.is_empty(self.evtq.other, self.evtq.ptr) {
                break;
            }
        }
        // queue_sync_cons_ovf: we believe we are up to speed.
        let ovf = self.evtq.other & Q_PROD_OVFLG;
        if self.evtq.ptr & Q_CONS_OVACKFLG != ovf {
            self.evtq.ptr = (self.evtq.ptr & !Q_CONS_OVACKFLG) | ovf;
            self.write_evtq_cons()?;
        }
        Ok(pass)
    }

    fn write_evtq_cons(&mut self) -> Result<()> {
        let ovack = self.evtq.ptr & Q_CONS_OVACKFLG;
        let cons = self.evtq.q.with_ptr(self.evtq.ptr, self.evtq.ptr) | ovack;
        self.client
            .mmio_write(EVENTQ_CONS_PAGE1, 4, cons.into(), true)?;
        Ok(())
    }

    /// Waits until the EVTQ interrupt fires (or `timeout` passes); returns
    /// the number of signals.
    pub fn wait_evtq_irq(&self, timeout: Duration) -> u64 {
        let mut fds = [nix::poll::PollFd::new(
            self.irqs[irq::EVENTQ].as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let _ = nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        );
        self.irqs[irq::EVENTQ].read().unwrap_or(0)
    }

    /// Reads and clears the signal count of irq `index`.
    pub fn irq_count(&self, index: usize) -> u64 {
        self.irqs
            .get(index)
            .and_then(|e| e.read().ok())
            .unwrap_or(0)
    }
}
