//! The jail of the real `vsmmud` (on by default): no capabilities, no new
//! privileges, its own network namespace, rlimits, and no path it can open
//! (landlock), read from `/proc/<pid>` of a serving process.

use vsmmu_tests::*;

/// The value of `key:` in `/proc/<pid>/status`.
fn status(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Soft and hard values of a `/proc/<pid>/limits` row.
fn limit(pid: u32, name: &str) -> (String, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let row = s
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} limit"));
    let mut cols = row[name.len()..].split_whitespace();
    (
        cols.next().unwrap_or_default().to_owned(),
        cols.next().unwrap_or_default().to_owned(),
    )
}

fn netns(pid: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns/net")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A serving vsmmud has dropped every capability and cannot gain any,
/// sits in its own network namespace, and has its rlimits lowered; its
/// log says so. Root only (CI runs as root): an unprivileged start gets
/// the same through a user namespace where the kernel allows one.
#[test]
fn jailed_by_default() {
    if !is_root() {
        eprintln!("skipped: needs root to compare capability sets");
        return;
    }
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    assert_eq!(c.read32(0x04).expect("IDR1") & 0x3f, 16);
    let pid = srv.pid();
    assert_eq!(status(pid, "NoNewPrivs"), "1");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(status(pid, "Seccomp"), "2");
    assert_ne!(netns(&pid.to_string()), netns("self"));
    assert_eq!(limit(pid, "Max processes"), ("0".into(), "0".into()));
    assert_eq!(limit(pid, "Max core file size"), ("0".into(), "0".into()));
    // Open now + 1024 DMA maps + 8 fds in flight + 4 irqs + vEVENTQ + 256
    // cdevs + 16 spare: above 1309, below 1400.
    let (soft, hard) = limit(pid, "Max open files");
    let n: u64 = soft.parse().expect("number");
    assert_eq!(soft, hard);
    assert!((1309..1400).contains(&n), "{n}");
    // stderr is the test's log file: FSIZE stays (SIGXFSZ otherwise).
    assert!(srv.log_text().contains("RLIMIT_FSIZE left as is"));
    assert!(
        srv.log_text()
            .contains("network namespace new; landlock enforced; capabilities none"),
        "{}",
        srv.log_text()
    );
}

/// Landlock: once jailed, no path opens (seccomp off, so that the open is
/// refused by landlock and not killed by seccomp), and the socket path is
/// still removed at exit.
#[test]
fn no_path_opens_once_jailed() {
    let srv_dir = TempDir::new("jail");
    let probe = srv_dir.path().join("readable");
    std::fs::write(&probe, b"x").expect("probe file");
    let mut srv = TestServer::start(&[
        "--seccomp",
        "off",
        "--jail-selftest",
        probe.to_str().expect("utf-8"),
    ]);
    // The selftest runs once, after the jail and before serving, and
    // reports only in the log: its line is what this test checks.
    let log = srv.log_text();
    assert!(
        log.contains(&format!(
            "jail selftest: open {}: errno 13",
            probe.display()
        )),
        "{log}"
    );
    let socket = srv.socket().to_owned();
    assert!(socket.exists());
    assert_eq!(srv.terminate().code(), Some(0));
    assert!(!socket.exists(), "the socket path stays removable");
}

/// `--jail off`: nothing is dropped, and the log says so.
#[test]
fn jail_off_keeps_privileges() {
    let srv = TestServer::start(&[
        "--jail",
        "off",
        "--seccomp",
        "off",
        "--jail-selftest",
        "/proc/self/status",
    ]);
    let pid = srv.pid();
    assert_eq!(status(pid, "NoNewPrivs"), "0");
    assert_eq!(netns(&pid.to_string()), netns("self"));
    // Logged before serving, so present once `start` returned.
    let log = srv.log_text();
    assert!(log.contains("jail: off (--jail off)"), "{log}");
    assert!(
        log.contains("jail selftest: open /proc/self/status succeeded"),
        "{log}"
    );
}
