//! The VMM of the iommufd rig (`tests/e2e/iommufd-nested.sh`): runs inside
//! an L1 Linux guest whose SMMUv3 (QEMU's, nested) is real to it, with
//! QEMU's `edu` device bound to vfio-pci.
//!
//! `vsmmu-rig-vmm VSMMUD CDEV`: opens `/dev/iommu` and the VFIO cdev,
//! spawns `vsmmud --host iommufd --iommufd-fd 4` (seccomp kill) on a
//! socketpair, shares a sealed memfd as guest RAM, probes the SMMU with the
//! model guest driver (EVENTQEN is set before any device exists), attaches
//! edu with vSID 8 and drives edu's DMA engine through its VFIO region. Every
//! check prints `ok`/`not ok` with exact values; the last line is
//! `N passed, N failed` and the exit status is 0 only when none failed.
//!
//! Check h then plays QEMU's part for a `vfio-pci,iommufd=…` device behind
//! `arm-smmuv3-remote` (contrib/qemu patch 0005): the VMM binds edu to its
//! own iommufd, maps guest RAM into its IOAS, attaches edu to a nesting
//! parent there, and hands the device to a new vsmmud with
//! `VSMMU_ATTACH_DEVICE` + `VSMMU_DEVICE_VMM_BOUND`; unplug and hot-plug
//! follow QEMU's order.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use vsmmu_client::{Client, SpawnOptions};
use vsmmu_guest::driver::{DriverOptions, LoggedEvent, SmmuDriver};
use vsmmu_guest::pgtable::{tlbi_va, PageTable, Prot};
use vsmmu_guest::GuestRam;
use vsmmu_protocol::smmu::cd::Granule;
use vsmmu_protocol::smmu::event::{C_BAD_STE, F_TRANSLATION};
use vsmmu_protocol::smmu::regs::IDR5_OAS;
use vsmmu_protocol::smmu::ste::Ste;
use vsmmu_protocol::stats::Stats;
use vsmmu_protocol::vfio_user::RegionInfo;

/// Guest RAM: below edu's 28-bit DMA mask, so bypass DMA reaches it too.
const RAM_BASE: u64 = 0x0400_0000;
const RAM_SIZE: usize = 16 << 20;
/// The driver's queues and stream table (to the end of RAM).
const TABLES: u64 = RAM_BASE + (12 << 20);
/// Stage-1 page tables: three 1 MiB allocation ranges.
const PGTABLES: u64 = RAM_BASE + (8 << 20);
/// Data pages (GPAs) and the IOVAs that map them.
const GPA_SRC: u64 = RAM_BASE + 0x30_0000;
const GPA_DST: u64 = RAM_BASE + 0x40_0000;
const GPA_BYPASS: u64 = RAM_BASE + 0x50_0000;
const IOVA_SRC: u64 = 0x0010_0000;
const IOVA_DST: u64 = 0x0020_0000;
const IOVA_UNMAPPED: u64 = 0x0030_0000;
const VSID: u32 = 8;
const ASID: u16 = 1;
/// Guest EVTQ of 2^3 entries: the vEVENTQ gets the same depth.
const EVTQ_SHIFT: u8 = 3;

/// edu (QEMU hw/misc/edu.c): BAR0 registers and its DMA buffer.
const EDU_ID: u64 = 0x00;
const EDU_DMA_SRC: u64 = 0x80;
const EDU_DMA_DST: u64 = 0x88;
const EDU_DMA_CNT: u64 = 0x90;
const EDU_DMA_CMD: u64 = 0x98;
const EDU_DMA_RUN: u64 = 1;
const EDU_DMA_TO_RAM: u64 = 2;
const EDU_BUF: u64 = 0x40000;

/// VFIO_DEVICE_GET_REGION_INFO: `_IO(';', 100 + 8)`.
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = 0x3b6c;
const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

/// QEMU's side of a VFIO device on its own iommufd: the ioctls QEMU's
/// iommufd backend issues (hw/vfio/iommufd.c, backends/iommufd.c).
mod vmm_iommufd {
    use std::os::fd::{AsRawFd, BorrowedFd};

    use vsmmu_protocol::iommufd::*;
    use zerocopy::{FromBytes, IntoBytes};

    fn ioctl<T: IntoBytes + FromBytes>(
        fd: BorrowedFd<'_>,
        request: u64,
        arg: &mut T,
        what: &str,
    ) -> Result<(), String> {
        // SAFETY: every caller passes the uAPI structure of `request`, its
        // size field equal to its size and no user pointers other than the
        // ones documented at the call (valid for the call), so the kernel
        // stays within `*arg` and those buffers.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, std::ptr::from_mut(arg)) };
        if r < 0 {
            return Err(format!("{what}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn bind(cdev: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> Result<u32, String> {
        let mut b = VfioDeviceBindIommufd {
            argsz: VfioDeviceBindIommufd::SIZE,
            iommufd: iommufd.as_raw_fd(),
            ..Default::default()
        };
        ioctl(
            cdev,
            VFIO_DEVICE_BIND_IOMMUFD,
            &mut b,
            "VFIO_DEVICE_BIND_IOMMUFD",
        )?;
        Ok(b.out_devid)
    }

    pub fn ioas_alloc(iommufd: BorrowedFd<'_>) -> Result<u32, String> {
        let mut a = IommuIoasAlloc::new();
        ioctl(iommufd, IOMMU_IOAS_ALLOC, &mut a, "IOMMU_IOAS_ALLOC")?;
        Ok(a.out_ioas_id)
    }

    /// Maps `len` bytes at `user_va` (this process's mapping of guest RAM,
    /// alive while mapped) at IOVA = `gpa`.
    pub fn ioas_map(
        iommufd: BorrowedFd<'_>,
        ioas: u32,
        gpa: u64,
        user_va: u64,
        len: u64,
    ) -> Result<(), String> {
        let flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
        let mut m = IommuIoasMap::new(ioas, flags, user_va, len, gpa);
        ioctl(iommufd, IOMMU_IOAS_MAP, &mut m, "IOMMU_IOAS_MAP")
    }

    /// A nesting parent over `ioas`, as patch 0005 makes QEMU allocate it
    /// for a device behind arm-smmuv3-remote.
    pub fn hwpt_alloc_parent(
        iommufd: BorrowedFd<'_>,
        dev_id: u32,
        ioas: u32,
    ) -> Result<u32, String> {
        let mut h = IommuHwptAlloc {
            size: IommuHwptAlloc::SIZE,
            flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
            dev_id,
            pt_id: ioas,
            data_type: IOMMU_HWPT_DATA_NONE,
            ..Default::default()
        };
        ioctl(
            iommufd,
            IOMMU_HWPT_ALLOC,
            &mut h,
            "IOMMU_HWPT_ALLOC (NEST_PARENT)",
        )?;
        Ok(h.out_hwpt_id)
    }

    pub fn attach(cdev: BorrowedFd<'_>, pt_id: u32) -> Result<(), String> {
        let mut a = VfioDeviceAttachIommufdPt {
            argsz: VfioDeviceAttachIommufdPt::SIZE,
            pt_id,
            ..Default::default()
        };
        ioctl(
            cdev,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            &mut a,
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
        )
    }

    pub fn detach(cdev: BorrowedFd<'_>) -> Result<(), String> {
        let mut d = VfioDeviceDetachIommufdPt {
            argsz: VfioDeviceDetachIommufdPt::SIZE,
            ..Default::default()
        };
        ioctl(
            cdev,
            VFIO_DEVICE_DETACH_IOMMUFD_PT,
            &mut d,
            "VFIO_DEVICE_DETACH_IOMMUFD_PT",
        )
    }

    pub fn destroy(iommufd: BorrowedFd<'_>, id: u32) -> Result<(), String> {
        let mut d = IommuDestroy::new(id);
        ioctl(iommufd, IOMMU_DESTROY, &mut d, "IOMMU_DESTROY")
    }
}

/// The edu device through its VFIO cdev.
struct Edu {
    cdev: File,
    bar0: u64,
}

impl Edu {
    fn open(cdev: File) -> Result<Self, String> {
        let bar0 = region_offset(&cdev, VFIO_PCI_BAR0_REGION_INDEX)?;
        let config = region_offset(&cdev, VFIO_PCI_CONFIG_REGION_INDEX)?;
        // Memory space and bus master, as a guest driver's pci_set_master.
        let mut cmd = [0u8; 2];
        cdev.read_exact_at(&mut cmd, config + 4)
            .map_err(|e| format!("config read: {e}"))?;
        let cmd = u16::from_le_bytes(cmd) | 0x6;
        cdev.write_all_at(&cmd.to_le_bytes(), config + 4)
            .map_err(|e| format!("config write: {e}"))?;
        Ok(Edu { cdev, bar0 })
    }

    fn read32(&self, reg: u64) -> u32 {
        let mut b = [0u8; 4];
        match self.cdev.read_exact_at(&mut b, self.bar0 + reg) {
            Ok(()) => u32::from_le_bytes(b),
            Err(_) => u32::MAX,
        }
    }

    fn write64(&self, reg: u64, v: u64) -> Result<(), String> {
        self.cdev
            .write_all_at(&v.to_le_bytes(), self.bar0 + reg)
            .map_err(|e| format!("edu write {reg:#x}: {e}"))
    }

    /// One DMA of `len` bytes between `addr` (an IOVA) and edu's buffer;
    /// waits for the engine (edu completes after 100 ms of virtual time).
    fn dma(&self, to_ram: bool, addr: u64, len: u64) -> Result<(), String> {
        let (src, dst) = if to_ram {
            (EDU_BUF, addr)
        } else {
            (addr, EDU_BUF)
        };
        self.write64(EDU_DMA_SRC, src)?;
        self.write64(EDU_DMA_DST, dst)?;
        self.write64(EDU_DMA_CNT, len)?;
        let dir = if to_ram { EDU_DMA_TO_RAM } else { 0 };
        self.write64(EDU_DMA_CMD, EDU_DMA_RUN | dir)?;
        let t0 = Instant::now();
        while u64::from(self.read32(EDU_DMA_CMD)) & EDU_DMA_RUN != 0 {
            if t0.elapsed() > Duration::from_secs(20) {
                return Err("edu DMA did not complete in 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

fn region_offset(cdev: &File, index: u32) -> Result<u64, String> {
    // vfio-user's REGION_INFO payload is the kernel's vfio_region_info.
    let mut info = RegionInfo {
        argsz: RegionInfo::SIZE,
        index,
        ..Default::default()
    };
    // SAFETY: VFIO_DEVICE_GET_REGION_INFO reads and writes at most `argsz`
    // bytes of `info`, a live, exclusive `#[repr(C)]` vfio_region_info.
    let r = unsafe {
        libc::ioctl(
            cdev.as_raw_fd(),
            VFIO_DEVICE_GET_REGION_INFO as _,
            std::ptr::from_mut(&mut info),
        )
    };
    if r < 0 {
        return Err(format!(
            "VFIO_DEVICE_GET_REGION_INFO {index}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(info.offset)
}

/// The TAP-like report.
#[derive(Default)]
struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("ok - {name}: {detail}");
        } else {
            self.failed += 1;
            println!("not ok - {name}: {detail}");
        }
    }
}

/// The value of `key:` in `/proc/<pid>/status`.
fn proc_status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "?".into())
}

fn netns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Spawns vsmmud with this process's RLIMIT_MEMLOCK lowered to `limit`
/// (the child inherits it), restored afterwards.
fn spawn_with_memlock(opts: &SpawnOptions, limit: u64) -> Result<Client, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(|e| e.to_string())?;
    setrlimit(Resource::RLIMIT_MEMLOCK, limit.min(hard), hard).map_err(|e| e.to_string())?;
    let client = Client::spawn(opts).map_err(|e| format!("spawn vsmmud: {e}"));
    setrlimit(Resource::RLIMIT_MEMLOCK, soft, hard).map_err(|e| e.to_string())?;
    client
}

/// Drains the guest EVTQ until `want` records arrived or 10 s passed.
fn collect_events(d: &mut SmmuDriver, want: usize) -> (Vec<LoggedEvent>, bool) {
    let mut events = Vec::new();
    let mut overflow = false;
    let t0 = Instant::now();
    while events.len() < want && t0.elapsed() < Duration::from_secs(10) {
        d.wait_evtq_irq(Duration::from_millis(200));
        if let Ok(pass) = d.evtq_pass() {
            overflow |= pass.overflow;
            events.extend(pass.events);
        }
    }
    // Anything late (more than asked for) is collected too.
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(pass) = d.evtq_pass() {
        overflow |= pass.overflow;
        events.extend(pass.events);
    }
    (events, overflow)
}

fn describe(events: &[LoggedEvent]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "[type {:#x} sid {} addr {:#x} rnw {}]",
                e.event.event_type, e.event.sid, e.event.input_addr, e.event.rnw
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One counter of vsmmud's (`u64::MAX` when the stats cannot be read).
fn stat(d: &mut SmmuDriver, counter: fn(&Stats) -> u64) -> u64 {
    d.client.stats().map(|s| counter(&s)).unwrap_or(u64::MAX)
}

/// EVTQ interrupts vsmmud has signalled.
fn evtq_irqs(d: &mut SmmuDriver) -> u64 {
    d.client.stats().map(|s| s.irqs[0]).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, vsmmud, cdev_path] = &args[..] else {
        eprintln!("usage: vsmmu-rig-vmm VSMMUD CDEV");
        std::process::exit(2);
    };
    match run(vsmmud, cdev_path) {
        Ok(r) => {
            println!("{} passed, {} failed", r.passed, r.failed);
            std::process::exit(i32::from(r.failed != 0));
        }
        Err(e) => {
            println!("not ok - rig aborted: {e}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    }
}

fn run(vsmmud: &str, cdev_path: &str) -> Result<Report, String> {
    let mut r = Report::default();
    // `trap` in VSMMU_RIG_SECCOMP names a forbidden syscall instead of
    // dying silently.
    let (opts, iommufd) = vsmmud_opts(vsmmud)?;
    let open_cdev = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(cdev_path)
            .map_err(|e| format!("{cdev_path}: {e}"))
    };
    let cdev = open_cdev()?;
    // Item 6 first: jailed, vsmmud has no CAP_IPC_LOCK, so the kernel
    // counts pinned guest RAM against RLIMIT_MEMLOCK; 16 MiB of guest RAM
    // under an 8 MiB limit is refused up front with ENOMEM.
    {
        let mut small = spawn_with_memlock(&opts, 8 << 20)?;
        small
            .negotiate(true)
            .map_err(|e| format!("negotiate: {e}"))?;
        let ram = GuestRam::new(RAM_BASE, RAM_SIZE).map_err(|e| format!("guest RAM: {e}"))?;
        let mapped = small.dma_map(ram.fd(), 0, RAM_BASE, RAM_SIZE as u64);
        r.check(
            "6. DMA_MAP beyond RLIMIT_MEMLOCK (jailed: no CAP_IPC_LOCK) refused up front",
            mapped.as_ref().err().map(|e| e.errno()) == Some(libc::ENOMEM),
            format!("16 MiB under an 8 MiB limit: {mapped:?}"),
        );
        let _ = small.close();
    }
    let mut client = Client::spawn(&opts).map_err(|e| format!("spawn vsmmud: {e}"))?;
    drop(iommufd);
    let pid = client.server_pid().unwrap_or(0);
    if let Err(e) = client.negotiate(true) {
        std::thread::sleep(Duration::from_millis(200));
        let status = client.child().map(|c| c.try_wait());
        return Err(format!("negotiate: {e}; vsmmud: {status:?}"));
    }

    // Guest RAM and the SMMU booted as Linux boots it: EVENTQEN is set here,
    // before any device (and so any vIOMMU) exists.
    let ram = GuestRam::new(RAM_BASE, RAM_SIZE).map_err(|e| format!("guest RAM: {e}"))?;
    let dopts = DriverOptions {
        evtq_max_shift: EVTQ_SHIFT,
        cons_per_entry: false,
        ..DriverOptions::default()
    };
    let mut d = SmmuDriver::probe(client, ram, TABLES, dopts).map_err(|e| format!("probe: {e}"))?;
    let idr = d.features.idr;
    // a. The guest's registers are the fixed iommufd profile, known before
    //    any device: SIDSIZE 16, so vSID 8 is accepted on a fresh vsmmud;
    //    IDR0.MSI (bit 13) is vsmmud's default.
    r.check(
        "a. advertised ID registers before any device",
        idr == [0x0d40_301a, 0x0273_0010, 0, 0, 0, 0x54],
        format!("IDR0..5 {idr:#010x?}"),
    );

    // f (EVENTQEN before the first attach) and the fix for vSID != 0.
    let dev_id = d
        .client
        .attach_device(VSID, Some(cdev.as_fd()))
        .map_err(|e| format!("attach vSID {VSID}: {e}"))?;
    r.check(
        "attach edu as vSID 8",
        true,
        format!("host device id {dev_id}"),
    );
    let stats = d.client.stats().map_err(|e| e.to_string())?;
    let host_idr = stats.host_idr;
    println!("# GET_HW_INFO (host SMMU, L0 QEMU): IDR0..5 {host_idr:#010x?}");
    r.check(
        "a. host IDRs reported (nested: S1P and S2P), guest IDRs unchanged by the attach",
        host_idr[0] & 3 == 3 && (0..6).all(|i| d.client.read32(4 * i as u64).ok() == Some(idr[i])),
        format!("host IDR0 {:#x}", host_idr[0]),
    );

    let cdev_dup = cdev.try_clone().map_err(|e| e.to_string())?;
    let edu = Edu::open(cdev_dup)?;
    r.check(
        "edu through its VFIO region",
        edu.read32(EDU_ID) & 0xffff == 0x00ed,
        format!("ident {:#010x}", edu.read32(EDU_ID)),
    );

    let (root, cd) = stage1(&d)?;
    let next_table = PGTABLES + (1 << 20);
    let cdtab = d
        .attach_s1(VSID, cd)
        .map_err(|e| format!("stage-1 STE: {e}"))?;

    // b. Real nested stage 1 + stage 2: RAM -> edu -> RAM.
    let pattern: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();
    d.ram.write(GPA_SRC, &pattern);
    d.ram.zero(GPA_DST, 4096);
    edu.dma(false, IOVA_SRC, 64)?;
    edu.dma(true, IOVA_DST, 64)?;
    let mut got = vec![0u8; 64];
    d.ram.read(GPA_DST, &mut got);
    r.check(
        "b. DMA through stage 1 + stage 2 lands at the mapped GPA",
        got == pattern,
        format!(
            "IOVA {IOVA_SRC:#x} -> GPA {GPA_SRC:#x} read, IOVA {IOVA_DST:#x} -> GPA {GPA_DST:#x} written, first bytes {:02x?}",
            &got[..8]
        ),
    );
    let (early, _) = collect_events(&mut d, 0);
    r.check(
        "b. no event for translated DMA",
        early.is_empty(),
        describe(&early),
    );

    // c. A write to an unmapped IOVA: F_TRANSLATION through the real vEVENTQ.
    let read0 = stat(&mut d, |s| s.host_events_read);
    let evtq_irqs0 = evtq_irqs(&mut d);
    edu.dma(true, IOVA_UNMAPPED, 4)?;
    let (ev, _) = collect_events(&mut d, 1);
    let read1 = stat(&mut d, |s| s.host_events_read);
    let evtq_irqs1 = evtq_irqs(&mut d);
    r.check(
        "c. F_TRANSLATION, vSID 8, the IOVA, a write, through the vEVENTQ",
        ev.len() == 1
            && ev[0].event.event_type == F_TRANSLATION
            && ev[0].event.sid == VSID
            && ev[0].event.input_addr == IOVA_UNMAPPED
            && !ev[0].event.rnw
            && read1 - read0 == 1,
        format!(
            "{} (host_events_read +{}) raw {:#018x?}",
            describe(&ev),
            read1.wrapping_sub(read0),
            ev.first().map(|e| e.raw).unwrap_or_default()
        ),
    );
    r.check(
        "c. EVTQ interrupt raised",
        evtq_irqs1 > evtq_irqs0,
        format!("EVTQ irqs {evtq_irqs0} -> {evtq_irqs1}"),
    );
    let per_word_events = ev.len() as u64;

    // d. Unmap IOVA_DST in the guest tables, TLBI_NH_VA + CMD_SYNC: the
    //    next DMA there faults (the invalidation reached the host SMMU).
    let inv0 = stat(&mut d, |s| s.host_invalidate_calls);
    {
        let mut pt = PageTable::from_root(
            &d.ram,
            Granule::K4,
            25,
            root,
            next_table,
            next_table + (1 << 20),
        )
        .map_err(|e| e.to_string())?;
        pt.unmap(IOVA_DST, 4096).map_err(|e| e.to_string())?;
    }
    d.issue_raw(&[tlbi_va(ASID, IOVA_DST, true)], true)
        .map_err(|e| format!("TLBI: {e}"))?;
    let inv1 = stat(&mut d, |s| s.host_invalidate_calls);
    d.ram.zero(GPA_DST, 4096);
    edu.dma(true, IOVA_DST, 4)?;
    let (ev, _) = collect_events(&mut d, 1);
    let mut after = vec![0u8; 4];
    d.ram.read(GPA_DST, &mut after);
    r.check(
        "d. after unmap + TLBI_NH_VA + CMD_SYNC the DMA faults",
        ev.len() == 1
            && ev[0].event.event_type == F_TRANSLATION
            && ev[0].event.input_addr == IOVA_DST
            && after == [0; 4]
            && inv1 == inv0 + 1,
        format!(
            "{}; host_invalidate_calls {inv0} -> {inv1}; GPA bytes {after:02x?}",
            describe(&ev)
        ),
    );

    // e. More faults at once than the vEVENTQ holds (depth 8): the kernel's
    //    LOST record becomes the guest's EVENTQ_PROD.OVFLG.
    let lost0 = stat(&mut d, |s| s.host_events_lost);
    let read0 = stat(&mut d, |s| s.host_events_read);
    let faults = 64 / 4 * per_word_events.max(1);
    edu.dma(true, IOVA_UNMAPPED, 64)?;
    let (ev, overflow) = collect_events(&mut d, 8);
    let lost = stat(&mut d, |s| s.host_events_lost) - lost0;
    let read = stat(&mut d, |s| s.host_events_read) - read0;
    let s = d.client.stats().map_err(|e| e.to_string())?;
    let balanced = s.host_events_read
        == s.guest_events_written
            + s.guest_events_dropped
            + s.events_dropped_disabled
            + s.events_buffered;
    r.check(
        "e. the kernel dropped events past depth 8: LOST counted, OVFLG seen by the guest",
        lost > 0 && read + lost == faults && overflow && s.evtq_overflows >= 1,
        format!(
            "{faults} faults: read {read}, lost {lost}, guest saw {} records, overflow {overflow}, evtq_overflows {}",
            ev.len(),
            s.evtq_overflows
        ),
    );
    r.check(
        "e. counters balance",
        balanced,
        format!(
            "host_events_read {} = written {} + dropped {} + disabled {} + buffered {}",
            s.host_events_read,
            s.guest_events_written,
            s.guest_events_dropped,
            s.events_dropped_disabled,
            s.events_buffered
        ),
    );

    // f. Detach and re-attach with the same open file (the VMM kept its copy).
    d.client
        .detach_device(VSID)
        .map_err(|e| format!("detach: {e}"))?;
    d.ram.zero(GPA_DST, 4096);
    let reattach = d.client.attach_device(VSID, Some(cdev.as_fd()));
    let mut remapped = false;
    if reattach.is_ok() {
        let mut pt = PageTable::from_root(
            &d.ram,
            Granule::K4,
            25,
            root,
            next_table + (1 << 20),
            next_table + (2 << 20),
        )
        .map_err(|e| e.to_string())?;
        remapped = pt.map(IOVA_DST, GPA_DST, 4096, Prot::RW).is_ok();
        edu.dma(true, IOVA_DST, 64)?;
    }
    d.ram.read(GPA_DST, &mut got);
    r.check(
        "f. detach + re-attach of the same cdev, DMA translated again",
        reattach.is_ok() && remapped && got == pattern,
        format!("re-attach {reattach:?}, first bytes {:02x?}", &got[..8]),
    );

    // f. A bypass STE: IOVA = GPA (stage 2 only).
    let (_, _) = collect_events(&mut d, 0);
    d.ram.zero(GPA_BYPASS, 4096);
    d.write_ste(VSID, Ste::bypass())
        .map_err(|e| format!("bypass STE: {e}"))?;
    edu.dma(true, GPA_BYPASS, 64)?;
    d.ram.read(GPA_BYPASS, &mut got);
    r.check(
        "f. bypass STE: DMA to the GPA itself",
        got == pattern,
        format!("first bytes at GPA {GPA_BYPASS:#x}: {:02x?}", &got[..8]),
    );

    // f. An abort STE: nothing lands, nothing reported.
    d.ram.zero(GPA_BYPASS, 4096);
    d.write_ste(VSID, Ste::abort())
        .map_err(|e| format!("abort STE: {e}"))?;
    edu.dma(true, GPA_BYPASS, 64)?;
    d.ram.read(GPA_BYPASS, &mut got);
    let (ev, _) = collect_events(&mut d, 0);
    r.check(
        "f. abort STE: the DMA is aborted without an event",
        got == [0u8; 64] && ev.is_empty(),
        format!("first bytes {:02x?}, events {}", &got[..8], describe(&ev)),
    );

    // f. An STE no host can take (stage 2 only, Config 0b110): one C_BAD_STE.
    let mut words = Ste::s1(cdtab, 0, vsmmu_protocol::smmu::ste::S1Fmt::Linear).to_words();
    words[0] = (words[0] & !0xe) | (0b110 << 1);
    d.write_ste(VSID, Ste::from_words(words))
        .map_err(|e| format!("refused STE: {e}"))?;
    let (ev, _) = collect_events(&mut d, 1);
    r.check(
        "f. refused STE: exactly one C_BAD_STE for vSID 8",
        ev.len() == 1 && ev[0].event.event_type == C_BAD_STE && ev[0].event.sid == VSID,
        describe(&ev),
    );

    // g. Still alive under seccomp kill, jailed; clean exit.
    let mode = proc_status(pid, "Seccomp");
    r.check(
        "g. vsmmud under seccomp filter",
        mode == "2",
        format!("Seccomp: {mode}"),
    );
    let (nnp, eff, bnd) = (
        proc_status(pid, "NoNewPrivs"),
        proc_status(pid, "CapEff"),
        proc_status(pid, "CapBnd"),
    );
    let (theirs, ours) = (netns(&pid.to_string()), netns("self"));
    r.check(
        "g. vsmmud jailed: no new privileges, no capabilities, its own network namespace",
        nnp == "1" && eff == "0000000000000000" && bnd == "0000000000000000" && theirs != ours,
        format!("NoNewPrivs {nnp}, CapEff {eff}, CapBnd {bnd}, netns {theirs} (ours {ours})"),
    );
    let _ = d.client.detach_device(VSID);
    drop(edu);
    let status = d.client.close().map_err(|e| format!("close: {e}"))?;
    r.check(
        "g. vsmmud exits cleanly",
        status.is_some_and(|s| s.success()),
        format!("{status:?}"),
    );
    drop(cdev);
    vmm_bound(&mut r, vsmmud_opts(vsmmud)?, &open_cdev)?;
    Ok(r)
}

/// Stage-1 tables at PGTABLES (IOVA_SRC -> GPA_SRC, IOVA_DST -> GPA_DST,
/// 4 KiB pages): their root and the CD for ASID.
fn stage1(d: &SmmuDriver) -> Result<(u64, vsmmu_protocol::smmu::cd::Cd), String> {
    let ips = IDR5_OAS.get32(d.features.idr[5]) as u8;
    let mut pt = PageTable::new(&d.ram, Granule::K4, 25, PGTABLES, PGTABLES + (1 << 20))
        .map_err(|e| e.to_string())?;
    pt.map(IOVA_SRC, GPA_SRC, 4096, Prot::RW)
        .map_err(|e| e.to_string())?;
    pt.map(IOVA_DST, GPA_DST, 4096, Prot::RW)
        .map_err(|e| e.to_string())?;
    Ok((pt.root(), pt.cd(ips, ASID)))
}

/// vsmmud's spawn options: `--host iommufd` on its own `/dev/iommu` (the
/// returned file must live until the spawn).
fn vsmmud_opts(vsmmud: &str) -> Result<(SpawnOptions, File), String> {
    let iommufd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/iommu")
        .map_err(|e| format!("/dev/iommu: {e}"))?;
    let mut opts = SpawnOptions::new(vsmmud);
    opts.args = vec![
        "--host".into(),
        "iommufd".into(),
        "--iommufd-fd".into(),
        "4".into(),
    ];
    opts.inherit = vec![(4, iommufd.as_raw_fd())];
    if let Some(mode) = std::env::var("VSMMU_RIG_SECCOMP")
        .ok()
        .filter(|m| !m.is_empty())
    {
        opts.seccomp = mode;
    }
    Ok((opts, iommufd))
}

/// The VMM's nesting parent for `dev_id` over `ioas`, with the device
/// attached to it: what QEMU's vfio-pci realize does under patch 0005.
fn plug(iommufd: &File, cdev: &File, dev_id: u32, ioas: u32) -> Result<u32, String> {
    let parent = vmm_iommufd::hwpt_alloc_parent(iommufd.as_fd(), dev_id, ioas)?;
    vmm_iommufd::attach(cdev.as_fd(), parent)?;
    Ok(parent)
}

/// h. QEMU's sequence for `vfio-pci,iommufd=…` behind arm-smmuv3-remote:
/// the VMM binds the device into its own iommufd and hands vsmmud that
/// context (see the module documentation).
fn vmm_bound(
    r: &mut Report,
    (opts, own_iommufd): (SpawnOptions, File),
    open_cdev: &dyn Fn() -> Result<File, String>,
) -> Result<(), String> {
    // QEMU: -object iommufd, the cdev bound to it, guest RAM in its IOAS.
    let iommufd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/iommu")
        .map_err(|e| format!("/dev/iommu: {e}"))?;
    let cdev = open_cdev()?;
    let dev_id = vmm_iommufd::bind(cdev.as_fd(), iommufd.as_fd())?;
    let ioas = vmm_iommufd::ioas_alloc(iommufd.as_fd())?;
    let ram = GuestRam::new(RAM_BASE, RAM_SIZE).map_err(|e| format!("guest RAM: {e}"))?;
    vmm_iommufd::ioas_map(
        iommufd.as_fd(),
        ioas,
        RAM_BASE,
        ram.host_addr(),
        RAM_SIZE as u64,
    )?;
    let parent = plug(&iommufd, &cdev, dev_id, ioas)?;

    let client = Client::spawn(&opts).map_err(|e| format!("spawn vsmmud: {e}"))?;
    drop(own_iommufd);
    let pid = client.server_pid().unwrap_or(0);
    let mut client = client;
    client
        .negotiate(true)
        .map_err(|e| format!("negotiate: {e}"))?;
    let dopts = DriverOptions {
        evtq_max_shift: EVTQ_SHIFT,
        cons_per_entry: false,
        ..DriverOptions::default()
    };
    let mut d = SmmuDriver::probe(client, ram, TABLES, dopts).map_err(|e| format!("probe: {e}"))?;

    let handed = d
        .client
        .attach_vmm_device(VSID, cdev.as_fd(), iommufd.as_fd(), dev_id, parent);
    r.check(
        "h. VMM-bound edu handed to vsmmud (VSMMU_DEVICE_VMM_BOUND)",
        handed.as_ref().ok() == Some(&dev_id),
        format!("device id {dev_id}, parent HWPT {parent}: {handed:?}"),
    );
    handed.map_err(|e| format!("attach VMM-bound: {e}"))?;
    let edu = Edu::open(cdev.try_clone().map_err(|e| e.to_string())?)?;
    let (_, cd) = stage1(&d)?;
    d.attach_s1(VSID, cd)
        .map_err(|e| format!("stage-1 STE: {e}"))?;
    let pattern: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(13) ^ 0xa5).collect();
    let mut got = vec![0u8; 64];
    let copy = |d: &mut SmmuDriver, got: &mut Vec<u8>| -> Result<(), String> {
        d.ram.write(GPA_SRC, &pattern);
        d.ram.zero(GPA_DST, 4096);
        edu.dma(false, IOVA_SRC, 64)?;
        edu.dma(true, IOVA_DST, 64)?;
        d.ram.read(GPA_DST, got);
        Ok(())
    };
    copy(&mut d, &mut got)?;
    r.check(
        "h. DMA through the guest's stage 1 and the VMM's stage 2 (its IOAS)",
        got == pattern,
        format!("first bytes at GPA {GPA_DST:#x}: {:02x?}", &got[..8]),
    );

    // The vEVENTQ lives in the VMM's iommufd too.
    let read0 = stat(&mut d, |s| s.host_events_read);
    edu.dma(true, IOVA_UNMAPPED, 4)?;
    let (ev, _) = collect_events(&mut d, 1);
    let read1 = stat(&mut d, |s| s.host_events_read);
    r.check(
        "h. F_TRANSLATION through the vEVENTQ allocated in the VMM's iommufd",
        ev.len() == 1
            && ev[0].event.event_type == F_TRANSLATION
            && ev[0].event.sid == VSID
            && ev[0].event.input_addr == IOVA_UNMAPPED
            && read1 - read0 == 1,
        format!(
            "{} (host_events_read +{})",
            describe(&ev),
            read1.wrapping_sub(read0)
        ),
    );

    // A device vsmmud would bind itself cannot join this vIOMMU.
    let other = open_cdev()?;
    let mixed = d.client.attach_device(VSID + 1, Some(other.as_fd()));
    r.check(
        "h. a vsmmud-bound device beside VMM-bound ones: EBUSY",
        mixed.as_ref().err().map(|e| e.errno()) == Some(libc::EBUSY),
        format!("{mixed:?}"),
    );
    drop(other);

    // Unplug in QEMU's order: unset_iommu_device (DETACH), then vfio
    // detaches the device and frees its parent. While vsmmud's vIOMMU
    // stands on the parent, the kernel refuses to free it.
    let busy = vmm_iommufd::destroy(iommufd.as_fd(), parent);
    let detached = d.client.detach_device(VSID);
    let freed = vmm_iommufd::detach(cdev.as_fd())
        .and_then(|()| vmm_iommufd::destroy(iommufd.as_fd(), parent));
    r.check(
        "h. unplug: DETACH, then the VMM detaches edu and frees its parent",
        busy.as_ref()
            .is_err_and(|e| e.contains("Device or resource busy"))
            && detached.is_ok()
            && freed.is_ok(),
        format!("destroy before DETACH: {busy:?}; DETACH {detached:?}; detach + destroy {freed:?}"),
    );

    // Hot-plug: a new parent, handed again; the guest's STE still says
    // stage 1, and the DMA is translated again.
    let parent = plug(&iommufd, &cdev, dev_id, ioas)?;
    let again = d
        .client
        .attach_vmm_device(VSID, cdev.as_fd(), iommufd.as_fd(), dev_id, parent);
    if again.is_ok() {
        copy(&mut d, &mut got)?;
    }
    r.check(
        "h. hot-plug: handed again on a new parent, DMA translated",
        again.is_ok() && got == pattern,
        format!("{again:?}, first bytes {:02x?}", &got[..8]),
    );

    let mode = proc_status(pid, "Seccomp");
    let detached = d.client.detach_device(VSID);
    let freed = vmm_iommufd::detach(cdev.as_fd())
        .and_then(|()| vmm_iommufd::destroy(iommufd.as_fd(), parent));
    drop(edu);
    let status = d.client.close().map_err(|e| format!("close: {e}"))?;
    r.check(
        "h. vsmmud under seccomp, unplugged, exits cleanly",
        mode == "2" && detached.is_ok() && freed.is_ok() && status.is_some_and(|s| s.success()),
        format!("Seccomp: {mode}; DETACH {detached:?}; free {freed:?}; exit {status:?}"),
    );
    Ok(())
}
