//! The seccomp sandbox of the real `vsmmud`: the filter is on while serving
//! (`/proc/<pid>/status` says `Seccomp: 2`, as firecracker's
//! `test_seccomp.py` checks), and it is complete: a whole client session
//! under the default `kill` mode leaves the process alive.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use vsmmu_client::Client;
use vsmmu_guest::GuestRam;
use vsmmu_protocol::smmu::regs::{
    CMDQ_BASE, CMDQ_CONS, CMDQ_PROD, CR0, CR0ACK, EVENTQ_BASE, EVENTQ_CONS, EVENTQ_PROD, GERROR,
    IDR0, IDR1, IRQ_CTRL, IRQ_CTRLACK,
};
use vsmmu_protocol::vfio_user::irq;
use vsmmu_tests::*;

/// Guest RAM: CMDQ at +0, EVENTQ at +0x1000.
const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE: usize = 0x10_0000;
const CMDQ: u64 = RAM_BASE;
const EVTQ: u64 = RAM_BASE + 0x1000;
/// log2 of the number of entries of both queues.
const Q_LOG2: u64 = 4;

/// CR0.EVTQEN | CR0.CMDQEN.
const CR0_QUEUES: u32 = (1 << 2) | (1 << 3);
/// IRQ_CTRL.GERROR_IRQEN | IRQ_CTRL.EVTQ_IRQEN.
const IRQ_EN: u32 = (1 << 0) | (1 << 2);
/// CMD_SYNC (opcode 0x46) with CS = SIG_IRQ.
const CMD_SYNC_SIG_IRQ: u64 = 0x46 | (1 << 12);

const IRQ_EVENTQ: u32 = irq::EVENTQ as u32;
const IRQ_CMD_SYNC: u32 = irq::CMD_SYNC as u32;
const IRQ_GERROR: u32 = irq::GERROR as u32;

/// The `Seccomp:` line of `/proc/<pid>/status`.
fn seccomp_status(pid: u32) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find(|l| l.starts_with("Seccomp:"))
        .expect("a Seccomp: line (kernel built with CONFIG_SECCOMP)")
        .to_owned()
}

/// Waits up to 5 s for an eventfd to be signalled; returns its count.
fn wait_eventfd(fd: &nix::sys::eventfd::EventFd) -> u64 {
    let t0 = Instant::now();
    loop {
        let n = eventfd_count(fd);
        if n != 0 || t0.elapsed() > Duration::from_secs(5) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One client session touching every serving path: negotiation, DMA_MAP
/// (fstat + mmap of a received memfd), register reads and writes, SET_IRQS
/// (eventfds received and written), the command queue, the vEVENTQ
/// (allocated on EVTQEN: an eventfd created after the filter is on, then
/// read), device attach, stats, DMA_UNMAP (munmap), reset, disconnect.
fn full_session(srv: &TestServer) {
    let mut c: Client = srv.client();
    assert_ne!(c.read32(IDR0).unwrap(), 0, "IDR0");
    c.read32(IDR1).unwrap();

    let ram = GuestRam::new(RAM_BASE, RAM_SIZE).expect("guest RAM");
    c.dma_map(ram.fd(), 0, RAM_BASE, RAM_SIZE as u64)
        .expect("DMA_MAP");

    let evtq_irq = eventfd();
    let sync_irq = eventfd();
    let gerror_irq = eventfd();
    c.set_irq_eventfd(IRQ_EVENTQ, Some(evtq_irq.as_fd()))
        .unwrap();
    c.set_irq_eventfd(IRQ_CMD_SYNC, Some(sync_irq.as_fd()))
        .unwrap();
    c.set_irq_eventfd(IRQ_GERROR, Some(gerror_irq.as_fd()))
        .unwrap();

    // Queues on: EVTQEN allocates the vEVENTQ.
    c.write64(CMDQ_BASE, CMDQ | Q_LOG2).unwrap();
    c.write64(EVENTQ_BASE, EVTQ | Q_LOG2).unwrap();
    c.write32(IRQ_CTRL, IRQ_EN).unwrap();
    assert_eq!(c.read32(IRQ_CTRLACK).unwrap(), IRQ_EN);
    c.write32(CR0, CR0_QUEUES).unwrap();
    assert_eq!(c.read32(CR0ACK).unwrap(), CR0_QUEUES);

    // A CMD_SYNC that signals the CMD_SYNC interrupt (posted doorbell).
    ram.write_u64s(CMDQ, &[CMD_SYNC_SIG_IRQ, 0]);
    c.mmio_write(CMDQ_PROD, 4, 1, true).unwrap();
    assert_eq!(c.read32(CMDQ_CONS).unwrap(), 1);
    assert_eq!(wait_eventfd(&sync_irq), 1, "CMD_SYNC interrupt");
    assert_eq!(c.read32(GERROR).unwrap(), 0);

    // A host event: the server reads the vEVENTQ, writes the guest EVENTQ
    // and signals the EVENTQ interrupt.
    let vsid = 0x10u64;
    c.attach_device(vsid as u32, None).unwrap();
    let read_before = c.stats().unwrap().host_events_read;
    let event = [0x10 | (vsid << 32), 0, 0x1234_5000, 0];
    assert_eq!(c.sim_inject(&[event]).unwrap(), (1, 0));
    let t0 = Instant::now();
    while c.read32(EVENTQ_PROD).unwrap() & 0xf_ffff == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the event never reached the guest EVENTQ"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(ram.read_u64(EVTQ) & 0xff, 0x10, "event record in guest RAM");
    assert!(wait_eventfd(&evtq_irq) >= 1, "EVENTQ interrupt");
    c.write32(EVENTQ_CONS, 1).unwrap();
    assert_eq!(c.stats().unwrap().host_events_read, read_before + 1);
    c.detach_device(vsid as u32).unwrap();

    c.dma_unmap(RAM_BASE, RAM_SIZE as u64).expect("DMA_UNMAP");
    c.reset().unwrap();
    assert_eq!(c.read32(CR0).unwrap(), 0);
    assert_eq!(eventfd_count(&gerror_irq), 0);
    c.close().unwrap();
}

#[test]
fn seccomp_is_on_while_serving() {
    let srv = TestServer::start(&[]);
    assert_eq!(seccomp_status(srv.pid()), "Seccomp:\t2");
}

#[test]
fn a_full_session_survives_the_kill_filter() {
    let mut srv = TestServer::start(&[]);
    assert_eq!(seccomp_status(srv.pid()), "Seccomp:\t2");
    full_session(&srv);
    srv.wait_clients_gone();
    // Reconnect: accept4 and a second session under the same filter.
    full_session(&srv);
    let mut c = srv.client();
    assert_eq!(c.read32(CR0).unwrap(), 0);
    drop(c);
    assert!(srv.alive(), "vsmmud died: {}", srv.log_text());
    assert_eq!(seccomp_status(srv.pid()), "Seccomp:\t2");
    // SIGTERM: the signalfd read and the clean exit path are allowed too.
    let st = srv.terminate();
    assert!(st.success(), "exit status {st}");
}

#[test]
fn seccomp_off_runs_without_a_filter() {
    let mut srv = TestServer::start(&["--seccomp", "off"]);
    assert_eq!(seccomp_status(srv.pid()), "Seccomp:\t0");
    // The operator is warned that nothing filters the server; logged before
    // serving, so present once `start` returned.
    assert_eq!(srv.log_count("running without seccomp"), 1);
    assert!(srv.alive());
}

#[test]
fn trap_and_log_modes_serve_a_full_session() {
    for mode in ["trap", "log"] {
        let mut srv = TestServer::start(&["--seccomp", mode]);
        assert_eq!(seccomp_status(srv.pid()), "Seccomp:\t2", "{mode}");
        full_session(&srv);
        // The disconnect is served too before the log is read.
        srv.wait_clients_gone();
        assert!(srv.alive(), "{mode}: {}", srv.log_text());
        // These modes let a forbidden syscall through and report it only in
        // the log: that report is what must be absent.
        assert!(
            !srv.log_text().contains("forbidden syscall"),
            "{mode}: {}",
            srv.log_text()
        );
        let st = srv.terminate();
        assert!(st.success(), "{mode}: exit status {st}");
    }
}

/// A vsmmud whose stderr is a terminal logs under seccomp `kill` and keeps
/// serving. (Found by the iommufd rig: env_logger's stderr target probed
/// the terminal with ioctl(TCGETS) on every line, after the filter, and the
/// first log line killed the process.)
#[test]
fn logging_to_a_terminal_under_kill() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};

    // SAFETY: posix_openpt has no memory preconditions; the result is
    // checked before use.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(master >= 0, "posix_openpt");
    // SAFETY: `master` is a new descriptor this test owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `master` is a pty master; `name` is writable for its length.
    let ok = unsafe {
        libc::grantpt(master.as_raw_fd()) == 0
            && libc::unlockpt(master.as_raw_fd()) == 0
            && libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) == 0
    };
    assert!(ok, "pty setup");
    // SAFETY: ptsname_r wrote a NUL-terminated path into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .expect("pty path")
        .to_owned();
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the pty");

    let dir = TempDir::new("tty");
    let socket = dir.path().join("s.sock");
    let mut child = Command::new(vsmmud_bin())
        .arg("--socket-path")
        .arg(&socket)
        .args(["--log-level", "debug", "--seccomp", "kill"])
        // A terminal that supports colour: what makes env_logger probe.
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(tty)
        .spawn()
        .expect("spawn vsmmud");
    // The first connection that succeeds is the session (one client at a
    // time: a probe connection would make the next one wait its turn).
    let t0 = Instant::now();
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&socket) {
            break s;
        }
        assert!(child.try_wait().unwrap().is_none(), "vsmmud died at start");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "vsmmud not listening"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // What it writes to the terminal, read as it comes (a full pty would
    // block the writer).
    nix::fcntl::fcntl(
        master.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .expect("nonblocking");
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut drain = |out: &mut Vec<u8>| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(out).into_owned()
    };
    // A client session: every message is logged at debug level.
    let mut c = Client::from_stream(stream);
    if let Err(e) = c.negotiate(true) {
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "negotiate: {e}; {:?}: {}",
            child.try_wait(),
            drain(&mut out)
        );
    }
    assert_eq!(c.read32(IDR1).expect("IDR1") & 0x3f, 16);
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "vsmmud died while logging to a terminal: {}",
        drain(&mut out)
    );
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
    let text = drain(&mut out);
    assert!(text.contains("client connected"), "{text}");
    assert!(text.contains("seccomp: kill filter applied"), "{text}");
}
