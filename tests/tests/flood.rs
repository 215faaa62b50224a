//! Bounded resources against the real `vsmmud`: floods of malformed
//! messages, DMA mappings and events leave it answering, within its
//! limits, and with a bounded resident set; each `--max-*` /
//! `--event-buffer` option is enforced when set to a non-default value.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use vsmmu_guest::driver::SmmuDriver;
use vsmmu_guest::GuestRam;
use vsmmu_protocol::stats::Stats;
use vsmmu_protocol::vfio_user::{self as vu, Command, DmaMap, DmaUnmap, Message, RegionAccess};
use vsmmu_tests::guest::{boot_on, small};
use vsmmu_tests::*;
use vsmmu_testutil::msg::irq_eventfds;
use vsmmu_testutil::Rng;
use zerocopy::IntoBytes;

/// Resident set the server must stay under after the floods. Measured
/// on x86_64, debug build: 6.9 MiB at start, 7.0 after 5,000 malformed
/// messages, 7.5 after 3 × 1,025 DMA_MAPs, 8.7 after 500,000 events with a
/// 4,096-record buffer (release build: 3.3 → 5.2 MiB). Over 3× that leaves
/// room for allocator slack.
const RSS_BOUND_KIB: u64 = 32 * 1024;
/// Growth allowed over the floods: a leak of 32 bytes per event (a record
/// kept past its drop) would exceed it.
const RSS_GROWTH_KIB: u64 = 16 * 1024;

const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const ENOSPC: i32 = 28;

/// Fixed payload size and where `argsz` sits, per command with a fixed
/// part: (command, size, exact size required, argsz: Some(minimum)).
const FIXED: &[(Command, usize, bool, Option<u32>)] = &[
    (Command::DmaMap, 32, true, Some(32)),
    (Command::DmaUnmap, 24, true, Some(24)),
    (Command::DeviceGetInfo, 16, true, Some(16)),
    (Command::DeviceGetRegionInfo, 32, true, Some(32)),
    (Command::DeviceGetRegionIoFds, 16, true, Some(16)),
    (Command::DeviceGetIrqInfo, 16, true, Some(16)),
    (Command::DeviceSetIrqs, 20, false, None),
    (Command::RegionRead, 16, true, None),
    (Command::RegionWrite, 16, false, None),
    (Command::RegionWriteMulti, 8, false, None),
    (Command::DeviceFeature, 8, false, None),
    (Command::MigDataRead, 8, true, None),
    (Command::MigDataWrite, 8, false, None),
    (Command::VsmmuAttachDevice, 16, true, None),
    (Command::VsmmuDetachDevice, 16, true, None),
    (Command::VsmmuSimInject, 8, false, None),
    (Command::VsmmuSimDma, 32, false, None),
    (Command::VsmmuGetStats, 8, true, Some(8)),
    (Command::Version, 4, false, None),
];

/// A message that must fail to decode: (command, payload, errno).
fn malformed(rng: &mut Rng) -> (u16, Vec<u8>, i32) {
    let pick = rng.below(100);
    if pick < 5 {
        // A number nobody defined, or one only servers send.
        let cmd = match rng.below(3) {
            0 => 11,
            1 => 12,
            _ => 0x20 + rng.below(0xf00) as u16,
        };
        let len = rng.below(64) as usize;
        return (cmd, rng.bytes(len), ENOSYS);
    }
    if pick < 8 {
        // DEVICE_RESET takes no payload.
        let len = 1 + rng.below(32) as usize;
        return (Command::DeviceReset as u16, rng.bytes(len), EINVAL);
    }
    let (cmd, size, exact, argsz) = FIXED[rng.below(FIXED.len() as u64) as usize];
    let cmd = cmd as u16;
    match (rng.below(3), argsz) {
        // Truncated: shorter than the fixed part.
        (0, _) | (1, None) if size > 0 => {
            let len = rng.below(size as u64) as usize;
            (cmd, rng.bytes(len), EINVAL)
        }
        // argsz below what the reply needs.
        (1, Some(min)) => {
            let mut p = rng.bytes(size);
            let bad = rng.below(u64::from(min)) as u32;
            p[..4].copy_from_slice(&bad.to_le_bytes());
            (cmd, p, EINVAL)
        }
        // Trailing bytes after an exact structure, or a size field that
        // disagrees with the payload.
        _ if exact => {
            let extra = 1 + rng.below(64) as usize;
            (cmd, rng.bytes(size + extra), EINVAL)
        }
        _ => {
            let extra = rng.below(64) as usize;
            let mut p = rng.bytes(size + extra);
            let len = p.len() as u64;
            match cmd {
                // argsz must equal the payload size.
                c if c == Command::DeviceSetIrqs as u16 => {
                    let v = (len + 1 + rng.below(1000)) as u32;
                    p[..4].copy_from_slice(&v.to_le_bytes());
                }
                // count must equal the data size.
                c if c == Command::RegionWrite as u16 => {
                    let v = (len - 16 + 1 + rng.below(1000)) as u32;
                    p[12..16].copy_from_slice(&v.to_le_bytes());
                }
                // wr_cnt × 24 must equal the entries' size.
                c if c == Command::RegionWriteMulti as u16 => {
                    let v = (len - 8) / 24 + 1 + rng.below(1000);
                    p[..8].copy_from_slice(&v.to_le_bytes());
                }
                // size must equal the data size.
                c if c == Command::MigDataWrite as u16 => {
                    let v = (len - 8 + 1 + rng.below(1000)) as u32;
                    p[4..8].copy_from_slice(&v.to_le_bytes());
                }
                // count × 32 must equal the records' size.
                c if c == Command::VsmmuSimInject as u16 => {
                    p[..4].copy_from_slice(&(len as u32).to_le_bytes());
                    let v = ((len - 8) / 32 + 1 + rng.below(1000)) as u32;
                    p[4..8].copy_from_slice(&v.to_le_bytes());
                }
                // len 0 is never valid.
                c if c == Command::VsmmuSimDma as u16 => {
                    p[..4].copy_from_slice(&(len as u32).to_le_bytes());
                    p[4..8].copy_from_slice(&0u32.to_le_bytes());
                    p[24..32].copy_from_slice(&0u64.to_le_bytes());
                }
                // VERSION JSON without its NUL, or not JSON.
                c if c == Command::Version as u16 => {
                    p.truncate(4);
                    p.extend_from_slice(b"{\"capabilities\":{}}");
                }
                // DEVICE_FEATURE: an unsupported feature index is ENOTSUP,
                // not a decode error: make it truncated instead.
                _ => {
                    let len = rng.below(size as u64) as usize;
                    return (cmd, rng.bytes(len), EINVAL);
                }
            }
            (cmd, p, EINVAL)
        }
    }
}

/// A header the stream cannot recover from: the server closes.
fn bad_header(rng: &mut Rng, id: u16) -> Vec<u8> {
    let mut m = Message::command(id, Command::DeviceReset).finish();
    match rng.below(4) {
        0 => m[4..8].copy_from_slice(&(rng.below(16) as u32).to_le_bytes()),
        1 => m[4..8].copy_from_slice(&((2u32 << 20) + rng.below(1 << 30) as u32).to_le_bytes()),
        2 => m[8..12].copy_from_slice(&vu::FLAG_TYPE_REPLY.to_le_bytes()),
        _ => m[8..12].copy_from_slice(&(1u32 << (6 + rng.below(26))).to_le_bytes()),
    }
    m
}

fn negotiated(srv: &TestServer) -> Raw {
    let mut r = srv.raw();
    r.negotiate();
    r
}

/// (a) 5,000 malformed messages: each gets its error reply; every bad
/// header closes the connection and a new one is served.
fn malformed_flood(srv: &TestServer) {
    let mut rng = Rng::new(0x5eed_f100d);
    let mut r = negotiated(srv);
    // 9 fds with SET_IRQS over the default --max-msg-fds 8.
    let efds: Vec<_> = (0..9).map(|_| eventfd()).collect();
    let fds: Vec<BorrowedFd<'_>> = efds.iter().map(|e| e.as_fd()).collect();
    let set = irq_eventfds(0, 1);
    let c = Command::DeviceSetIrqs as u16;
    assert_error(&r.call(1, c, set.as_bytes(), &fds), c, EINVAL);
    let mut closes = 0;
    for i in 0..5000u32 {
        let id = i as u16;
        if i % 100 == 99 {
            r.send(&bad_header(&mut rng, id));
            assert!(r.closed_by_server(), "bad header {i} did not close");
            closes += 1;
            r = negotiated(srv);
            continue;
        }
        let (cmd, payload, errno) = malformed(&mut rng);
        let reply = r.call(id, cmd, &payload, &[]);
        assert_eq!(reply.0.msg_id, id);
        assert_error(&reply, cmd, errno);
    }
    assert_eq!(closes, 50);
    // Still in sync and serving.
    let p = assert_ok(&r.call(7, Command::DeviceReset as u16, &[], &[]), 13);
    assert!(p.is_empty());
}

/// (b) DMA_MAP storm: `max` mappings of one memfd page, the next is
/// ENOSPC, unmap all; `rounds` times.
fn dma_storm(srv: &TestServer, max: u64, rounds: usize) {
    let ram = GuestRam::new(0x4000_0000, 4096).expect("memfd");
    let mut r = negotiated(srv);
    let map = |r: &mut Raw, i: u64| {
        let m = DmaMap {
            argsz: DmaMap::SIZE,
            flags: vu::DMA_MAP_READ | vu::DMA_MAP_WRITE,
            offset: 0,
            addr: 0x1_0000_0000 + i * 0x2000,
            size: 4096,
        };
        r.call(i as u16, Command::DmaMap as u16, m.as_bytes(), &[ram.fd()])
    };
    for _ in 0..rounds {
        for i in 0..max {
            assert_ok(&map(&mut r, i), Command::DmaMap as u16);
        }
        assert_error(&map(&mut r, max), Command::DmaMap as u16, ENOSPC);
        for i in 0..max {
            let u = DmaUnmap {
                argsz: DmaUnmap::SIZE,
                flags: 0,
                addr: 0x1_0000_0000 + i * 0x2000,
                size: 4096,
            };
            let c = Command::DmaUnmap as u16;
            assert_ok(&r.call(i as u16, c, u.as_bytes(), &[]), c);
        }
    }
}

/// (c) 500,000 events at a guest that never consumes: the server keeps at
/// most `buffer` of them and drops the rest, accounting for each.
fn event_storm(d: &mut SmmuDriver, buffer: u64) -> Stats {
    d.client.attach_device(5, None).unwrap();
    let total = 500_000u64;
    let chunk = 16_384u64;
    let mut injected = 0;
    let mut host_dropped = 0;
    let mut i = 0;
    while i < total {
        let k = chunk.min(total - i);
        let recs: Vec<_> = (i..i + k)
            .map(|j| [5 << 32 | 0x10, 1 << 35, j << 12, j << 12])
            .collect();
        let (q, dropped) = d.client.sim_inject(&recs).unwrap();
        injected += u64::from(q + dropped);
        host_dropped += u64::from(dropped);
        i += k;
    }
    assert_eq!(injected, total);
    // Wait until the server has read everything the host kept.
    let t0 = Instant::now();
    let s = loop {
        let s = d.client.stats().unwrap();
        if s.host_events_read + s.host_events_lost >= total {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not drained: {s}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(s.host_events_read + s.host_events_lost, total);
    assert_eq!(s.host_events_lost, host_dropped, "{s}");
    assert_eq!(
        s.host_events_read,
        s.host_events_accounted(),
        "accounting identity broken: {s}"
    );
    // The guest queue filled once, the buffer is full, the rest dropped.
    let entries = 1u64 << d.evtq_layout().1;
    assert_eq!(s.guest_events_written, entries, "{s}");
    assert_eq!(s.events_buffered, buffer, "{s}");
    assert_eq!(s.events_dropped_disabled, 0, "{s}");
    assert_eq!(
        s.guest_events_dropped + s.host_events_lost,
        total - entries - buffer,
        "{s}"
    );
    assert!(s.evtq_overflows >= 1, "{s}");
    s
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// (a) + (b) + (c) on one server, then (d) its resident set is bounded.
/// Runs with `--event-buffer 4096` (default: the guest queue size, at
/// least 1024) and a host vEVENTQ deep enough to hold a whole injection.
#[test]
fn floods_leave_the_server_answering_and_bounded() {
    let t0 = Instant::now();
    let srv = TestServer::start(&["--event-buffer", "4096", "--sim-veventq-depth", "16384"]);
    let rss0 = vm_rss_kib(srv.pid());
    malformed_flood(&srv);
    let rss_a = vm_rss_kib(srv.pid());
    dma_storm(&srv, 1024, 3);
    let rss_b = vm_rss_kib(srv.pid());
    let mut d = boot_on(&srv, 8 << 20, small(6));
    let s = event_storm(&mut d, 4096);
    // Still answering, and the guest gets what was buffered once it
    // consumes.
    let pass = d.evtq_pass().unwrap();
    assert!(!pass.events.is_empty());
    assert!(pass.overflow);
    let rss = vm_rss_kib(srv.pid());
    eprintln!(
        "vsmmud VmRSS: start {rss0} KiB, after malformed flood {rss_a} KiB, after DMA storm \
         {rss_b} KiB, after event storm {rss} KiB; {:.1} s; {s}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        rss < RSS_BOUND_KIB,
        "vsmmud VmRSS {rss} KiB over the {RSS_BOUND_KIB} KiB bound"
    );
    assert!(
        rss.saturating_sub(rss0) < RSS_GROWTH_KIB,
        "vsmmud VmRSS grew from {rss0} KiB to {rss} KiB"
    );
}

/// `--max-data-xfer-size`: advertised; a message of exactly the maximum
/// is served, one byte more closes the connection with one log line.
#[test]
fn max_data_xfer_size_is_enforced() {
    let srv = TestServer::start(&["--max-data-xfer-size", "4096"]);
    let c = srv.client();
    assert_eq!(c.capabilities().max_data_xfer_size, Some(4096));
    drop(c);
    let max = 4096 + 64;
    let mut r = negotiated(&srv);
    // A REGION_WRITE of max - 32 data bytes: decoded, refused (EINVAL).
    let write = |len: usize| {
        let a = RegionAccess {
            offset: 0,
            region: 0,
            count: len as u32,
        };
        let mut p = a.as_bytes().to_vec();
        p.resize(16 + len, 0);
        p
    };
    let c = Command::RegionWrite as u16;
    assert_error(&r.call(1, c, &write(max - 32), &[]), c, EINVAL);
    let msg = Message::new(2, c, 0, 0).bytes(&write(max - 31)).finish();
    assert_eq!(msg.len(), max + 1);
    r.client.send_raw(&msg, &[]).ok();
    assert!(r.closed_by_server());
    // The client gets no reply, only the close: the log is where the
    // reason shows, once (written before the connection closed).
    let line = format!(
        "message size {} exceeds the maximum of {max} bytes",
        max + 1
    );
    assert_eq!(srv.log_count(&line), 1, "{}", srv.log_text());
    // The next client is served.
    let mut c = srv.client();
    assert_eq!(c.read32(0x1c).unwrap(), 1);
}

/// `--max-msg-fds`: advertised; one fd more than the limit is EINVAL
/// before anything else is looked at.
#[test]
fn max_msg_fds_is_enforced() {
    let srv = TestServer::start(&["--max-msg-fds", "4"]);
    let c = srv.client();
    assert_eq!(c.capabilities().max_msg_fds, Some(4));
    drop(c);
    let mut r = negotiated(&srv);
    let efds: Vec<_> = (0..5).map(|_| eventfd()).collect();
    let fds: Vec<BorrowedFd<'_>> = efds.iter().map(|e| e.as_fd()).collect();
    let set = irq_eventfds(0, 1);
    let c = Command::DeviceSetIrqs as u16;
    // Each refusal is EINVAL on the wire; only the log, written before the
    // error reply, says which check refused.
    assert_error(&r.call(1, c, set.as_bytes(), &fds), c, EINVAL);
    assert_eq!(srv.log_count("5 fds with DeviceSetIrqs, at most 4"), 1);
    // Within the limit the request is judged on its own: one vector takes
    // one eventfd.
    assert_error(&r.call(2, c, set.as_bytes(), &fds[..4]), c, EINVAL);
    assert_ok(&r.call(3, c, set.as_bytes(), &fds[..1]), c);
    assert_eq!(srv.log_count("at most 4"), 1);
}

/// `--max-dma-maps`: advertised; the mapping after the last is ENOSPC,
/// and an unmap makes room again.
#[test]
fn max_dma_maps_is_enforced() {
    let srv = TestServer::start(&["--max-dma-maps", "16"]);
    let c = srv.client();
    assert_eq!(c.capabilities().max_dma_maps, Some(16));
    drop(c);
    dma_storm(&srv, 16, 2);
    let ram = GuestRam::new(0x4000_0000, 4096).expect("memfd");
    let mut c = srv.client();
    for i in 0..16 {
        c.dma_map(ram.fd(), 0, i * 0x1000, 0x1000).unwrap();
    }
    let e = c.dma_map(ram.fd(), 0, 16 * 0x1000, 0x1000).unwrap_err();
    assert_eq!(e.errno(), ENOSPC);
    c.dma_unmap(0, 0x1000).unwrap();
    c.dma_map(ram.fd(), 0, 16 * 0x1000, 0x1000).unwrap();
}
