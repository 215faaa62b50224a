//! The `vsmmud` command line: usage errors exit 2 with one clear line.

use std::process::Command;

fn vsmmud() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vsmmud"))
}

#[test]
fn help_names_the_options() {
    let out = vsmmud().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--socket-path",
        "--fd",
        "--host",
        "--iommufd-fd",
        "--sim-veventq-depth",
        "--sim-first-seq",
        "--seccomp",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn no_socket_is_a_usage_error() {
    let out = vsmmud().env_remove("LISTEN_FDS").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vsmmud: no socket: give --socket-path PATH or --fd N, or start under systemd socket activation\n"
    );
}

#[test]
fn socket_path_and_fd_are_exclusive() {
    let out = vsmmud()
        .args(["--socket-path", "/nonexistent/x", "--fd", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_fd_is_reported() {
    let out = vsmmud()
        .args(["--fd", "999", "--seccomp", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fd 999"));
}

#[test]
fn iommufd_without_dev_iommu_fails_with_one_clear_line() {
    if std::path::Path::new("/dev/iommu").exists() {
        return; // a real host: nothing to check here
    }
    let out = vsmmud()
        .args(["--host", "iommufd", "--fd", "1", "--seccomp", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/dev/iommu does not exist: this host has no iommufd"),
        "{err}"
    );
}
