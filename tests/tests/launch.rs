//! Launch by a VMM: spawned on a socketpair (`--fd`), systemd socket
//! activation (`LISTEN_FDS`), death noticed by the shim.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use vsmmu_client::{Client, ClientError, SpawnOptions};
use vsmmu_tests::{vsmmud_bin, TempDir};

#[test]
fn spawned_server_serves_and_its_death_is_noticed() {
    let mut c = Client::spawn(&SpawnOptions::new(vsmmud_bin())).unwrap();
    c.negotiate(true).unwrap();
    assert_eq!(c.read32(0x1c).unwrap(), 1);
    assert!(!c.server_gone());
    let pid = c.server_pid().unwrap();
    // The spawned server runs under the default seccomp filter.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2"), "{status}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    while !c.server_gone() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    }
    assert!(matches!(c.read32(0), Err(ClientError::ServerGone)));
}

#[test]
fn spawned_server_exits_when_the_vmm_closes() {
    let mut c = Client::spawn(&SpawnOptions::new(vsmmud_bin())).unwrap();
    c.negotiate(false).unwrap();
    let st = c.close().unwrap().unwrap();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn systemd_socket_activation() {
    let dir = TempDir::new("sd");
    let path = dir.path().join("act.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the pid of vsmmud itself: the shell execs it.
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec {} --seccomp kill",
            vsmmud_bin().display()
        ))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: runs in the forked child before exec; dup2/fcntl are
    // async-signal-safe and act on descriptors that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == 3 && libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut c = Client::from_stream(UnixStream::connect(&path).unwrap());
    c.negotiate(true).unwrap();
    assert_eq!(c.read32(0x1c).unwrap(), 1);
    drop(c);
    // A second client is served by the same activated listener, once
    // vsmmud has seen the first one leave (until then it refuses a second
    // client by closing it: retried, as a client of a one-client server
    // would).
    let t0 = std::time::Instant::now();
    loop {
        let mut c = Client::from_stream(UnixStream::connect(&path).unwrap());
        match c.negotiate(false) {
            Ok(_) => break,
            Err(e) if t0.elapsed() < std::time::Duration::from_secs(5) => {
                eprintln!("second client refused ({e}): retrying");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("second client: {e}"),
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn wrong_listen_pid_is_refused() {
    let out = Command::new(vsmmud_bin())
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LISTEN_PID \"1\" is not this process"));
}

/// `SpawnOptions::inherit`: the server finds the descriptor at the number
/// asked for (as `--iommufd-fd 4` needs), whatever number it has here;
/// duplicate numbers and numbers at or below the socket's are refused.
#[test]
fn inherited_descriptors_arrive_at_their_numbers() {
    let dir = TempDir::new("inherit");
    let path = dir.path().join("marker");
    let file = std::fs::File::create(&path).expect("marker file");
    let mut opts = SpawnOptions::new(vsmmud_bin());
    opts.inherit = vec![(5, file.as_raw_fd())];
    let mut c = Client::spawn(&opts).expect("spawn");
    c.negotiate(true).expect("negotiate");
    let pid = c.server_pid().expect("pid");
    let target = std::fs::read_link(format!("/proc/{pid}/fd/5")).expect("fd 5 in the server");
    assert_eq!(target, path);
    drop(c);

    for bad in [
        vec![(5, file.as_raw_fd()), (5, file.as_raw_fd())],
        vec![(3, file.as_raw_fd())],
    ] {
        opts.inherit = bad;
        match Client::spawn(&opts) {
            Err(ClientError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
            other => panic!("{other:?}"),
        }
    }
}
