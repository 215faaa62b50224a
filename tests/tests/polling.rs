//! Adaptive polling against the real `vsmmud`: it polls for the guest's
//! next command after a CMD_SYNC while the CPUs are free, and never while
//! the run queue shows them overcommitted (`--run-queue-file`, the test
//! hook standing in for `/proc/loadavg`).

use std::time::Duration;

use vsmmu_protocol::stats::Stats;
use vsmmu_tests::guest::{boot, small};
use vsmmu_tests::TempDir;

/// CMD_SYNCs whose following waits are counted.
const SYNCS: u64 = 20;

/// Boots a guest on `vsmmud --run-queue-file <file with loadavg>
/// --poll-us 10000`, issues four warm-up syncs (the probe's verdict needs
/// three samples), then [`SYNCS`] more, each 1 ms after the last (longer
/// than the probe's sample interval, so that each wait takes a fresh
/// sample). Returns the counters before and after the measured syncs.
fn syncs_with_run_queue(loadavg: &str) -> (Stats, Stats) {
    let dir = TempDir::new("runq");
    let file = dir.path().join("loadavg");
    std::fs::write(&file, loadavg).expect("write the run queue file");
    let file = file.to_str().expect("utf-8 path");
    // The longest cap there is: every wait after a sync (1 ms) ends while
    // the burst window still polls, however loaded the machine running
    // the tests, so a poll is never shrunk away.
    let args = ["--run-queue-file", file, "--poll-us", "10000"];
    let (_srv, mut drv) = boot(&args, 4 << 20, small(6));
    for _ in 0..4 {
        drv.issue(&[], true).expect("warm-up CMD_SYNC");
        std::thread::sleep(Duration::from_millis(1));
    }
    let s0 = drv.client.stats().expect("stats");
    for _ in 0..SYNCS {
        drv.issue(&[], true).expect("CMD_SYNC");
        std::thread::sleep(Duration::from_millis(1));
    }
    let s1 = drv.client.stats().expect("stats");
    (s0, s1)
}

#[test]
fn polls_after_syncs_while_the_cpus_are_free() {
    // One task runnable: the reader.
    let (s0, s1) = syncs_with_run_queue("0.50 0.40 0.30 1/90 4321\n");
    assert_eq!(s1.cmd_syncs - s0.cmd_syncs, SYNCS);
    assert_eq!(s1.polls_skipped_busy, 0);
    // Every wait after a sync polled (the burst window starts at the cap):
    // caught while polling, or not.
    let polled = (s1.poll_hits + s1.poll_misses) - (s0.poll_hits + s0.poll_misses);
    let messages = s1.messages - s0.messages;
    assert!(
        (SYNCS..=messages).contains(&polled),
        "{polled} polled waits for {SYNCS} syncs in {messages} messages"
    );
}

#[test]
fn never_polls_while_the_cpus_are_overcommitted() {
    // More runnable tasks than any machine has CPUs.
    let (s0, s1) = syncs_with_run_queue("99.00 98.00 97.00 100000/100100 4321\n");
    assert_eq!(s1.cmd_syncs - s0.cmd_syncs, SYNCS);
    // Not one wait polled; each that would have is counted.
    assert_eq!(s1.poll_hits - s0.poll_hits, 0);
    assert_eq!(s1.poll_misses - s0.poll_misses, 0);
    let skipped = s1.polls_skipped_busy - s0.polls_skipped_busy;
    let messages = s1.messages - s0.messages;
    assert!(
        (SYNCS..=messages).contains(&skipped),
        "{skipped} skipped polls for {SYNCS} syncs in {messages} messages"
    );
    // Every wait slept.
    assert!(s1.loop_sleeps - s0.loop_sleeps >= messages - 1);
}

#[test]
fn a_run_queue_file_without_a_run_queue_is_refused() {
    let dir = TempDir::new("runq-bad");
    let file = dir.path().join("loadavg");
    std::fs::write(&file, "not a loadavg\n").expect("write");
    let out = std::process::Command::new(vsmmu_tests::vsmmud_bin())
        .arg("--socket-path")
        .arg(dir.path().join("s.sock"))
        .arg("--run-queue-file")
        .arg(&file)
        .output()
        .expect("run vsmmud");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--run-queue-file") && err.contains("no run queue in it"),
        "{err}"
    );
    // Refused before the socket was bound.
    assert!(!dir.path().join("s.sock").exists());
}
