//! The vEVENTQ → guest EVENTQ path against the real `vsmmud` and the sim
//! host, with the model guest driver consuming: exact records, sequence
//! accounting, loss signalled through OVFLG, and the stats identities.

use std::time::{Duration, Instant};

use vsmmu_guest::driver::SmmuDriver;
use vsmmu_protocol::smmu::regs::*;
use vsmmu_protocol::stats::Stats;
use vsmmu_tests::guest::{boot, small};

/// An F_TRANSLATION record for `vsid` at `iova`, as the kernel delivers it.
fn fault(vsid: u32, iova: u64) -> [u64; 4] {
    [u64::from(vsid) << 32 | 0x10, 1 << 35, iova, iova & !0xfff]
}

fn stats(d: &mut SmmuDriver) -> Stats {
    d.client.stats().unwrap()
}

/// Every host record is accounted exactly once.
fn assert_identity(s: &Stats) {
    assert_eq!(
        s.host_events_read,
        s.host_events_accounted(),
        "accounting identity broken: {s}"
    );
}

/// Consumes until `want` records were seen or 10 s passed.
fn drain(d: &mut SmmuDriver, want: usize) -> (Vec<[u64; 4]>, u64) {
    let mut got = Vec::new();
    let mut overflows = 0;
    let t0 = Instant::now();
    while got.len() < want && t0.elapsed() < Duration::from_secs(10) {
        d.wait_evtq_irq(Duration::from_millis(20));
        let pass = d.evtq_pass().unwrap();
        overflows += u64::from(pass.overflow);
        got.extend(pass.events.iter().map(|e| e.raw));
    }
    (got, overflows)
}

/// Waits until the server has read `k` host records.
fn wait_read(d: &mut SmmuDriver, k: u64) -> Stats {
    let t0 = Instant::now();
    loop {
        let s = stats(d);
        if s.host_events_read + s.host_events_lost >= k || t0.elapsed() > Duration::from_secs(10) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn records_reach_the_guest_byte_for_byte() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    d.client.attach_device(0x42, None).unwrap();
    let recs = [
        fault(0x42, 0x1000),
        fault(0x42, 0x2000),
        [0x42 << 32 | 0x4, 0, 0, 0],
    ];
    assert_eq!(d.client.sim_inject(&recs).unwrap(), (3, 0));
    let (got, ovf) = drain(&mut d, 3);
    assert_eq!(got, recs);
    assert_eq!(ovf, 0);
    assert_eq!(d.client.read32(EVENTQ_PROD_PAGE1).unwrap(), 3);
    // The page-0 alias reads the same register.
    assert_eq!(d.client.read32(EVENTQ_PROD).unwrap(), 3);
    let s = stats(&mut d);
    assert_eq!(s.host_events_read, 3);
    assert_eq!(s.guest_events_written, 3);
    assert_eq!(s.host_events_lost, 0);
    assert!(s.irqs[vsmmu_protocol::vfio_user::irq::EVENTQ] >= 1);
    assert_identity(&s);
}

/// The kernel selftest: depth 2, one event read, then 3 events → seq 1,
/// seq 2, LOST(3); one more → only seq 4. The guest gets 1, 2, 4 and one
/// overflow; the lost one is counted.
#[test]
fn kernel_selftest_scenario_seen_by_the_guest() {
    let (_srv, mut d) = boot(&["--sim-veventq-depth", "2"], 8 << 20, small(6));
    d.client.attach_device(1, None).unwrap();
    assert_eq!(d.client.sim_inject(&[fault(1, 0)]).unwrap(), (1, 0));
    assert_eq!(drain(&mut d, 1).0, [fault(1, 0)]);
    // The server drains the vEVENTQ as soon as it is readable, so to fill
    // the depth-2 queue all three go in one injection.
    assert_eq!(
        d.client
            .sim_inject(&[fault(1, 1), fault(1, 2), fault(1, 3)])
            .unwrap(),
        (2, 1)
    );
    let (got, ovf) = drain(&mut d, 2);
    assert_eq!(got, [fault(1, 1), fault(1, 2)]);
    assert_eq!(ovf, 1, "the LOST record reached the guest as OVFLG");
    assert_eq!(d.client.sim_inject(&[fault(1, 4)]).unwrap(), (1, 0));
    assert_eq!(drain(&mut d, 1).0, [fault(1, 4)]);
    let s = stats(&mut d);
    assert_eq!(s.host_events_read, 4);
    assert_eq!(s.host_events_lost, 1);
    assert_eq!(s.evtq_overflows, 1);
    assert_identity(&s);
}

/// Sequence numbers wrap from INT_MAX to 0 without phantom loss.
#[test]
fn int_max_wrap_has_no_phantom_loss() {
    let (_srv, mut d) = boot(&["--sim-first-seq", "2147483645"], 8 << 20, small(6));
    d.client.attach_device(7, None).unwrap();
    let recs: Vec<_> = (0..6).map(|i| fault(7, i << 12)).collect();
    assert_eq!(d.client.sim_inject(&recs).unwrap(), (6, 0));
    let (got, ovf) = drain(&mut d, 6);
    assert_eq!(got, recs);
    assert_eq!(ovf, 0);
    let s = stats(&mut d);
    assert_eq!(s.host_events_lost, 0);
    assert_eq!(s.evtq_overflows, 0);
}

/// A loss across the wrap is counted exactly: depth 2, first sequence
/// INT_MAX - 1: events INT_MAX-1 and INT_MAX queue, 0 and 1 are lost
/// (LOST record with seq 1), then seq 2 arrives.
#[test]
fn loss_across_the_wrap_is_counted_exactly() {
    let (_srv, mut d) = boot(
        &["--sim-veventq-depth", "2", "--sim-first-seq", "2147483646"],
        8 << 20,
        small(6),
    );
    d.client.attach_device(7, None).unwrap();
    let recs: Vec<_> = (0..4).map(|i| fault(7, i << 12)).collect();
    assert_eq!(d.client.sim_inject(&recs).unwrap(), (2, 2));
    let (got, ovf) = drain(&mut d, 2);
    assert_eq!(got, recs[..2]);
    assert_eq!(ovf, 1);
    assert_eq!(d.client.sim_inject(&[fault(7, 0x9000)]).unwrap(), (1, 0));
    assert_eq!(drain(&mut d, 1).0, [fault(7, 0x9000)]);
    let s = stats(&mut d);
    assert_eq!(s.host_events_lost, 2);
    assert_eq!(s.host_events_read, 3);
}

/// A guest queue of 2 entries receives 1,000 events while the guest
/// consumes slowly: delivered + dropped equals injected, every drop is
/// signalled, nothing unaccounted.
#[test]
fn tiny_guest_queue_accounts_for_every_event() {
    let (_srv, mut d) = boot(&["--event-buffer", "16"], 8 << 20, small(1));
    assert_eq!(d.evtq_layout().1, 1);
    d.client.attach_device(3, None).unwrap();
    let mut injected = 0u64;
    let mut delivered = Vec::new();
    let mut overflows = 0;
    for burst in 0..50u64 {
        let recs: Vec<_> = (0..20).map(|i| fault(3, (burst * 20 + i) << 12)).collect();
        let (q, dropped) = d.client.sim_inject(&recs).unwrap();
        injected += u64::from(q + dropped);
        // A slow guest: one pass per burst.
        std::thread::sleep(Duration::from_millis(1));
        let pass = d.evtq_pass().unwrap();
        overflows += u64::from(pass.overflow);
        delivered.extend(pass.events.iter().map(|e| e.raw));
    }
    let s = wait_read(&mut d, injected);
    // Drain what is still buffered in the server.
    let s2 = loop {
        let pass = d.evtq_pass().unwrap();
        delivered.extend(pass.events.iter().map(|e| e.raw));
        let st = stats(&mut d);
        if pass.events.is_empty() && st.events_buffered == 0 {
            break st;
        }
    };
    assert_eq!(injected, 1000);
    assert_eq!(s2.host_events_read + s2.host_events_lost, injected, "{s}");
    assert_eq!(s2.guest_events_written as usize, delivered.len());
    assert_eq!(
        s2.guest_events_written + s2.guest_events_dropped + s2.host_events_lost,
        injected
    );
    assert_identity(&s2);
    assert_eq!(s2.events_buffered, 0);
    // Order is preserved among what was delivered.
    let iovas: Vec<u64> = delivered.iter().map(|r| r[2]).collect();
    assert!(iovas.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(overflows >= 1 && d.overflows_seen >= 1);
    assert!(s2.evtq_overflows >= 1);
}

/// Events arriving while EVENTQEN = 0 are counted and dropped, no GERROR;
/// the vEVENTQ survives EVENTQEN = 0 and delivery resumes after.
#[test]
fn eventqen_zero_drops_without_gerror() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    d.client.attach_device(9, None).unwrap();
    let cr0 = d.client.read32(CR0).unwrap();
    d.client.write32(CR0, cr0 & !CR0_EVTQEN.mask32()).unwrap();
    assert_eq!(
        d.client
            .sim_inject(&[fault(9, 0), fault(9, 0x1000)])
            .unwrap(),
        (2, 0)
    );
    let s = wait_read(&mut d, 2);
    assert_eq!(s.events_dropped_disabled, 2);
    assert_eq!(d.client.read32(GERROR).unwrap(), 0);
    assert_eq!(d.client.read32(EVENTQ_PROD_PAGE1).unwrap(), 0);
    d.client.write32(CR0, cr0).unwrap();
    assert_eq!(d.client.sim_inject(&[fault(9, 0x2000)]).unwrap(), (1, 0));
    assert_eq!(drain(&mut d, 1).0, [fault(9, 0x2000)]);
    assert_identity(&stats(&mut d));
}

/// A storm: 200,000 events drained with the guest consuming; read
/// syscalls far fewer than events, order preserved, nothing lost.
#[test]
fn storm_is_drained_in_few_reads() {
    let (_srv, mut d) = boot(&[], 64 << 20, small(15));
    d.client.attach_device(5, None).unwrap();
    let total = 200_000u64;
    let mut next = 0u64;
    let mut seen = 0u64;
    let mut overflows = 0;
    while seen < total {
        if next < total {
            let k = (total - next).min(8192);
            let recs: Vec<_> = (next..next + k).map(|i| fault(5, i << 12)).collect();
            let (q, dropped) = d.client.sim_inject(&recs).unwrap();
            assert_eq!((q, dropped), (k as u32, 0));
            next += k;
        }
        let pass = d.evtq_pass().unwrap();
        overflows += u64::from(pass.overflow);
        for e in &pass.events {
            assert_eq!(e.raw[2], seen << 12, "order");
            seen += 1;
        }
    }
    let s = stats(&mut d);
    assert_eq!(s.guest_events_written, total);
    assert_eq!(s.host_events_lost, 0);
    assert_eq!(overflows, 0);
    let reads = s.veventq_read_calls;
    assert!(reads * 100 < total, "{reads} read calls for {total} events");
    assert_identity(&s);
}
