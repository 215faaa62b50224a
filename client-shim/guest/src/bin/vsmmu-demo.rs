//! vsmmu-demo: the whole system in one run.
//!
//! Spawns `vsmmud` (sim host, seccomp on) on a socketpair, shares guest RAM
//! as a memfd, boots the SMMU with the model guest driver as Linux does,
//! gives each device a stage-1 page table, then lets the devices DMA in
//! bursts. Every fault comes from a real page-table walk in the sim host;
//! bursts larger than the queues make the host vEVENTQ and the guest queue
//! overflow. Prints the guest's event log, a progress bar (on a terminal
//! only) and a summary; exits 0 only when every event is accounted for.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vsmmu_client::{Client, SpawnOptions};
use vsmmu_guest::driver::{DriverOptions, SmmuDriver};
use vsmmu_guest::pgtable::{PageTable, Prot};
use vsmmu_guest::GuestRam;
use vsmmu_protocol::smmu::cd::Granule;
use vsmmu_protocol::smmu::event::{event_name, host_forwarded, Event};
use vsmmu_protocol::smmu::regs::IDR5_OAS;
use vsmmu_protocol::vfio_user::{self as vu, Command as VuCommand, SimDma};
use zerocopy::IntoBytes;

/// Knobs of the demo.
#[derive(Debug, Parser)]
#[command(about = "Boot a vSMMUv3 served by vsmmud and drive a device fault storm through it")]
struct Args {
    /// Devices behind the SMMU (vSIDs 0x10, 0x18, ...).
    #[arg(long, default_value_t = 4)]
    devices: u32,
    /// Device DMAs in the storm.
    #[arg(long, default_value_t = 40_000)]
    dmas: u32,
    /// Largest number of DMAs a device fires back to back (bursts are 1/8
    /// to all of it; bursts larger than the queues overflow them).
    #[arg(long, default_value_t = 1024)]
    burst: u32,
    /// Guest EVENTQ size, log2 (Linux would take 15).
    #[arg(long, default_value_t = 7)]
    evtq_shift: u8,
    /// Host vEVENTQ depth (sim).
    #[arg(long, default_value_t = 256)]
    host_depth: u32,
    /// Host records vsmmud keeps while the guest queue is full.
    #[arg(long, default_value_t = 128)]
    event_buffer: u32,
    /// Seed of the DMA pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Event records to print in the log.
    #[arg(long, default_value_t = 20)]
    log: usize,
    /// The vsmmud binary (default: next to this program).
    #[arg(long)]
    vsmmud: Option<PathBuf>,
    /// seccomp mode of vsmmud.
    #[arg(long, default_value = "kill")]
    seccomp: String,
}

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: usize = 64 << 20;
/// Per device: 64 pages RW, 32 RO, 32 with the access flag clear, a hole.
const PAGES_RW: u64 = 64;
const PAGES_RO: u64 = 32;
const PAGES_NOAF: u64 = 32;
const IOVA_BASE: u64 = 0x10_0000_0000;

/// What a DMA is meant to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    WriteRo,
    Unmapped,
    NoAccessFlag,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Tally {
    dmas: u64,
    ok: u64,
    faults: [u64; 256],
    generated: u64,
    seen: u64,
    seen_by_type: [u64; 256],
    overflows: u64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("vsmmu-demo: {e}");
            std::process::exit(2);
        }
    }
}

fn vsmmud_path(args: &Args) -> PathBuf {
    args.vsmmud.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("vsmmud")))
            .unwrap_or_else(|| PathBuf::from("vsmmud"))
    })
}

/// Under `cargo run`, builds `vsmmud` with the same profile first (it is
/// another package of the workspace, so cargo did not build it for us).
fn build_vsmmud(bin: &std::path::Path) {
    let Ok(cargo) = std::env::var("CARGO") else {
        return;
    };
    let release = bin
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "vsmmu-server", "--bin", "vsmmud"]);
    if release {
        cmd.arg("--release");
    }
    match cmd.status() {
        Ok(st) if st.success() => {}
        other => eprintln!("vsmmu-demo: building vsmmud failed ({other:?}); using what exists"),
    }
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let bin = vsmmud_path(args);
    if args.vsmmud.is_none() {
        build_vsmmud(&bin);
    }
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p vsmmu-server`",
            bin.display()
        )
        .into());
    }
    let mut opts = SpawnOptions::new(&bin);
    opts.seccomp = args.seccomp.clone();
    opts.args = vec![
        "--sim-veventq-depth".into(),
        args.host_depth.to_string(),
        "--event-buffer".into(),
        args.event_buffer.to_string(),
        "--log-level".into(),
        "error".into(),
    ];
    let mut client = Client::spawn(&opts)?;
    let pid = client.server_pid().unwrap_or(0);
    client.negotiate(true)?;
    let seccomp = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Seccomp:"))
                .map(|l| l.split_whitespace().last().unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "vsmmud pid {pid} spawned on a socketpair (seccomp mode {seccomp}: {})",
        match seccomp.as_str() {
            "2" => "filter on",
            "0" => "off",
            _ => "unknown",
        }
    );

    let ram = GuestRam::new(RAM_BASE, RAM_SIZE)?;
    let dopts = DriverOptions {
        evtq_max_shift: args.evtq_shift,
        cons_per_entry: false,
        ..DriverOptions::default()
    };
    let mut d = SmmuDriver::probe(client, ram, RAM_BASE + (16 << 20), dopts)?;
    let (_, eshift) = d.evtq_layout();
    let (_, cshift) = d.cmdq_layout();
    println!(
        "guest: SMMUv3 probed like Linux: IDR0 {:#010x}, {} StreamID bits, {}-level stream table, cmdq {} entries, evtq {} entries",
        d.features.idr[0],
        d.features.sid_bits,
        if d.features.two_level { 2 } else { 1 },
        1u32 << cshift,
        1u32 << eshift
    );

    // Devices with stage-1 contexts over guest RAM buffers.
    let ips = IDR5_OAS.get32(d.features.idr[5]) as u8;
    let mut devs = Vec::new();
    for i in 0..args.devices {
        let vsid = 0x10 + i * 8;
        d.client.attach_device(vsid, None)?;
        let tables = d.alloc(1 << 20, 1 << 12)?;
        let data = d.alloc((PAGES_RW + PAGES_RO + PAGES_NOAF) * 4096, 4096)?;
        let cd = {
            let mut pt = PageTable::new(&d.ram, Granule::K4, 25, tables, tables + (1 << 20))?;
            pt.map(IOVA_BASE, data, PAGES_RW * 4096, Prot::RW)?;
            pt.map(
                IOVA_BASE + PAGES_RW * 4096,
                data + PAGES_RW * 4096,
                PAGES_RO * 4096,
                Prot::RO,
            )?;
            let noaf = Prot {
                af: false,
                ..Prot::RW
            };
            let off = (PAGES_RW + PAGES_RO) * 4096;
            pt.map(IOVA_BASE + off, data + off, PAGES_NOAF * 4096, noaf)?;
            pt.cd(ips, (i + 1) as u16)
        };
        d.attach_s1(vsid, cd)?;
        devs.push((vsid, data));
    }
    println!(
        "guest: {} devices attached with stage-1 page tables (4 KiB granule, 39-bit VA)",
        devs.len()
    );
    println!();
    println!("event log (as the guest driver sees it):");

    let mut shadow = vec![vec![0u8; (PAGES_RW * 4096) as usize]; devs.len()];
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut t = Tally {
        dmas: 0,
        ok: 0,
        faults: [0; 256],
        generated: 0,
        seen: 0,
        seen_by_type: [0; 256],
        overflows: 0,
    };
    let t0 = Instant::now();
    let mut printed = 0usize;
    let mut overflow_lines = 0u32;
    let bar = progress_bar(u64::from(args.dmas));
    while t.dmas < u64::from(args.dmas) {
        let dev = (rng.next() % devs.len() as u64) as usize;
        let (vsid, _) = devs[dev];
        let mut touched = Vec::new();
        let max = u64::from(args.burst.max(1));
        let n = (max / 8 + rng.next() % (max - max / 8 + 1))
            .max(1)
            .min(u64::from(args.dmas) - t.dmas);
        let mut msgs = Vec::new();
        let mut kinds = Vec::new();
        for _ in 0..n {
            let r = rng.next();
            let kind = match r % 10 {
                0..=2 => Kind::Read,
                3..=4 => Kind::Write,
                5 => Kind::WriteRo,
                6..=7 => Kind::Unmapped,
                _ => Kind::NoAccessFlag,
            };
            let page = match kind {
                Kind::Read => (r >> 8) % PAGES_RW,
                Kind::Write => (r >> 8) % PAGES_RW,
                Kind::WriteRo => PAGES_RW + (r >> 8) % PAGES_RO,
                Kind::Unmapped => PAGES_RW + PAGES_RO + PAGES_NOAF + (r >> 8) % 1024,
                Kind::NoAccessFlag => PAGES_RW + PAGES_RO + (r >> 8) % PAGES_NOAF,
            };
            let write = matches!(kind, Kind::Write | Kind::WriteRo);
            let iova = IOVA_BASE + page * 4096 + (r >> 40) % 4032;
            let len = 64u64;
            let payload: Vec<u8> = if write {
                (0..len).map(|b| (b as u8) ^ (r as u8)).collect()
            } else {
                Vec::new()
            };
            let req = SimDma {
                argsz: (32 + payload.len()) as u32,
                flags: if write { vu::SIM_DMA_WRITE } else { 0 },
                vsid,
                ssid: vu::SIM_DMA_NO_SSID,
                iova,
                len,
            };
            let mut p = req.as_bytes().to_vec();
            p.extend_from_slice(&payload);
            msgs.push(p);
            kinds.push((kind, iova, payload));
        }
        // A device fires its DMAs back to back: pipelined, no waiting.
        let replies = d.client.pipeline(VuCommand::VsmmuSimDma, &msgs)?;
        for (reply, (kind, iova, payload)) in replies.iter().zip(&kinds) {
            t.dmas += 1;
            let status = reply
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(u32::MAX);
            if status == 0 {
                t.ok += 1;
                if matches!(kind, Kind::Write) {
                    let off = (iova - IOVA_BASE) as usize;
                    shadow[dev][off..off + payload.len()].copy_from_slice(payload);
                    touched.push((dev, off, payload.len()));
                }
            } else {
                t.faults[(status & 0xff) as usize] += 1;
                if host_forwarded(status as u8) {
                    t.generated += 1;
                }
            }
        }
        // Successful writes really landed in guest RAM (the device wrote in
        // order, so memory equals the shadow copy).
        for (dev, off, len) in touched {
            let mut got = vec![0u8; len];
            d.ram.read(devs[dev].1 + off as u64, &mut got);
            if got != shadow[dev][off..off + len] {
                return Err(format!(
                    "DMA write to {:#x} (vSID {:#x}) did not land in guest RAM",
                    IOVA_BASE + off as u64,
                    devs[dev].0
                )
                .into());
            }
        }
        // A slow guest: one pass of the event thread per burst.
        let pass = d.evtq_pass()?;
        t.overflows += u64::from(pass.overflow);
        for e in &pass.events {
            t.seen += 1;
            t.seen_by_type[usize::from(e.event.event_type)] += 1;
            if printed < args.log {
                bar.suspend(|| println!("  {}", describe(&e.event)));
                printed += 1;
            }
        }
        if pass.overflow {
            let line = match overflow_lines {
                0..=2 => Some("  arm-smmu-v3: EVTQ overflow detected -- events lost"),
                3 => Some("  (further overflow lines not shown)"),
                _ => None,
            };
            if let Some(line) = line {
                bar.suspend(|| println!("{line}"));
            }
            overflow_lines += 1;
        }
        bar.set_position(t.dmas);
        bar.set_message(format!("{} events seen", t.seen));
    }
    bar.finish();
    // Drain what the server still buffers.
    loop {
        let pass = d.evtq_pass()?;
        t.overflows += u64::from(pass.overflow);
        for e in &pass.events {
            t.seen += 1;
            t.seen_by_type[usize::from(e.event.event_type)] += 1;
        }
        let s = d.client.stats()?;
        if pass.events.is_empty() && s.events_buffered == 0 {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = d.client.stats()?;
    println!();
    println!("summary");
    println!(
        "  device DMAs            {:>10}  ({} ok, {} faulted)",
        t.dmas,
        t.ok,
        t.dmas - t.ok
    );
    for ty in [0x10u8, 0x12, 0x13] {
        if t.faults[usize::from(ty)] > 0 {
            println!(
                "    {:<20} {:>10}  (guest saw {})",
                event_name(ty),
                t.faults[usize::from(ty)],
                t.seen_by_type[usize::from(ty)]
            );
        }
    }
    println!("  events raised by walks {:>10}", t.generated);
    println!("  delivered to the guest {:>10}", s.guest_events_written);
    println!(
        "  lost in the host queue {:>10}  (LOST records and sequence gaps)",
        s.host_events_lost
    );
    println!("  dropped, guest full    {:>10}", s.guest_events_dropped);
    println!(
        "  overflows signalled    {:>10}  (EVENTQ_PROD.OVFLG toggles; the guest noticed {})",
        s.evtq_overflows, t.overflows
    );
    println!(
        "  events/s               {:>10.0}",
        t.generated as f64 / secs
    );
    println!("  EVTQ interrupts        {:>10}", s.irqs[0]);
    println!("  vEVENTQ read syscalls  {:>10}", s.veventq_read_calls);

    let lost = s.host_events_lost + s.guest_events_dropped;
    let balanced = t.generated == s.host_events_read + s.host_events_lost
        && s.host_events_read
            == s.guest_events_written
                + s.guest_events_dropped
                + s.events_dropped_disabled
                + s.events_buffered
        && t.seen == s.guest_events_written
        && (lost == 0 || t.overflows > 0);
    if balanced {
        println!("accounting balances: every event was delivered, or counted as lost and signalled to the guest");
    } else {
        println!("ACCOUNTING DOES NOT BALANCE: {s}");
    }
    let _ = d.client.close();
    Ok(balanced)
}

fn describe(e: &Event) -> String {
    let ssid = e
        .ssid
        .map(|s| format!("{s:#x}"))
        .unwrap_or_else(|| "-".into());
    format!(
        "{:<16} vSID {:#06x}  SSID {:<5} addr {:#014x}  {}",
        event_name(e.event_type),
        e.sid,
        ssid,
        e.input_addr,
        if e.rnw { "read" } else { "write" }
    )
}

/// The storm's progress on stderr: `[#####...] done/total DMAs, N events
/// seen`, drawn at most 10 times a second and only when stderr is a
/// terminal (a log gets none of it).
fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("  [{bar:40}] {pos}/{len} DMAs, {msg}")
        .expect("a valid template")
        .progress_chars("##.");
    bar.set_style(style);
    bar.set_message("0 events seen");
    bar
}
