//! Helpers shared by the conformance tests: start the real `vsmmud` on a
//! socket in a private temp dir, talk to it raw or through `client-shim`,
//! and clean up the process and the directory afterwards.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vsmmu_client::Client;
use vsmmu_protocol::vfio_user::{Command, Header, Message, HEADER_SIZE};

pub mod guest;

pub use vsmmu_client;
pub use vsmmu_protocol;

/// Path of the `vsmmud` binary built by this workspace.
pub fn vsmmud_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VSMMUD_BIN") {
        return p.into();
    }
    // target/<profile>/deps/<test> → target/<profile>/vsmmud
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("vsmmud");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p vsmmu-server` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vsmmu-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `vsmmud` listening on a socket path.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl TestServer {
    /// Starts `vsmmud --socket-path <tmp>/s.sock` with extra `args`
    /// (seccomp at its default, kill) and waits until it listens.
    pub fn start(args: &[&str]) -> Self {
        let dir = TempDir::new("srv");
        let socket = dir.path().join("s.sock");
        let log = dir.path().join("log");
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Process::new(vsmmud_bin())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--log-level")
            .arg("debug")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn vsmmud");
        let mut s = TestServer {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        let t0 = Instant::now();
        while UnixStream::connect(&s.socket).is_err() {
            if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("vsmmud exited at start ({st}): {}", s.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "vsmmud did not start listening"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Listening comes before the jail and seccomp; a connection the
        // event loop served comes after them.
        s.wait_clients_gone();
        s
    }

    /// Socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Server pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Counts occurrences of `needle` in the log. For tests whose point is
    /// what the log says; to wait for the server, wait on its state.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// A raw connection, once every earlier client is gone.
    pub fn raw(&self) -> Raw {
        self.wait_clients_gone();
        self.raw_now()
    }

    /// A raw connection made at once (it is refused if a client is served).
    pub fn raw_now(&self) -> Raw {
        Raw::new(UnixStream::connect(&self.socket).expect("connect"))
    }

    /// Waits (up to 10 s) until the server serves no client, so that the
    /// next connection is accepted: every client so far has left (or was
    /// refused) and the server has noticed.
    ///
    /// It asks with probe connections that the server can only answer by
    /// closing them. A probe sends one byte, never a whole message (the
    /// server handles and counts nothing), and shuts down its sending side.
    /// A server busy with another client refuses the probe unread, and the
    /// kernel reports the byte's loss as ECONNRESET (or EPIPE, had the
    /// refusal come first): try again. A free server accepts it, reads the
    /// byte and the end of the stream, drops it as any client that left,
    /// and the probe reads its end.
    pub fn wait_clients_gone(&self) {
        let t0 = Instant::now();
        while !self.probe_accepted() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "vsmmud kept serving an earlier client: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// One probe of [`TestServer::wait_clients_gone`]: true when the server
    /// accepted it, read it to its end and closed it.
    fn probe_accepted(&self) -> bool {
        let mut probe = UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect: {e}: {}", self.log_text()));
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        if probe.write_all(&[0]).is_err() {
            return false;
        }
        probe.shutdown(Shutdown::Write).ok();
        let mut rest = [0u8; 1];
        match probe.read(&mut rest) {
            Ok(0) => true,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Ok(_) => panic!("vsmmud answered a probe that sent no message"),
            Err(e) => panic!("probe connection: {e}: {}", self.log_text()),
        }
    }

    /// A `client-shim` client, negotiated with the vsmmu extension.
    pub fn client(&self) -> Client {
        self.wait_clients_gone();
        let mut c = Client::connect(&self.socket).expect("connect");
        c.negotiate(true).expect("negotiate");
        c
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM and wait: returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM).expect("kill");
        c.wait().expect("wait")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw vfio-user connection: hand-built messages, exact reply bytes.
#[derive(Debug)]
pub struct Raw {
    /// The client used for framing (send_raw / recv_raw).
    pub client: Client,
}

impl Raw {
    /// Wraps a connected stream.
    pub fn new(s: UnixStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Raw {
            client: Client::from_stream(s),
        }
    }

    /// Sends a command with `payload` and fds; returns (header, payload) of the reply.
    pub fn call(
        &mut self,
        id: u16,
        cmd: u16,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> (Header, Vec<u8>) {
        let msg = Message::new(id, cmd, 0, 0).bytes(payload).finish();
        self.client.send_raw(&msg, fds).expect("send");
        self.client.recv_raw().expect("reply")
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.client.send_raw(bytes, &[]).expect("send");
    }

    /// Sends a VERSION `0.minor` with `json` (NUL added) and returns the reply.
    pub fn version(&mut self, minor: u16, json: &str) -> (Header, Vec<u8>) {
        let mut p = vec![0, 0];
        p.extend_from_slice(&minor.to_le_bytes());
        p.extend_from_slice(json.as_bytes());
        p.push(0);
        self.call(1, Command::Version as u16, &p, &[])
    }

    /// Negotiates with the vsmmu extension.
    pub fn negotiate(&mut self) {
        let (h, _) = self.version(2, r#"{"capabilities":{"vsmmu":{"version":1}}}"#);
        assert!(!h.is_error(), "negotiation failed");
    }

    /// True when the server closed the connection (reads EOF within 5 s).
    pub fn closed_by_server(&mut self) -> bool {
        matches!(
            self.client.recv_raw(),
            Err(vsmmu_client::ClientError::ServerGone)
        )
    }
}

/// Expects an error reply with `errno` and nothing else.
pub fn assert_error(reply: &(Header, Vec<u8>), cmd: u16, errno: i32) {
    let (h, p) = reply;
    assert_eq!(
        (
            h.command,
            h.msg_size as usize,
            h.flags,
            h.error_no as i32,
            p.len()
        ),
        (cmd, HEADER_SIZE, 0x21, errno, 0),
        "expected error reply errno {errno} to command {cmd:#x}"
    );
}

/// Expects a success reply and returns its payload.
pub fn assert_ok(reply: &(Header, Vec<u8>), cmd: u16) -> Vec<u8> {
    let (h, p) = reply;
    assert_eq!(
        (h.command, h.flags, h.error_no),
        (cmd, 1, 0),
        "expected success reply to {cmd:#x}"
    );
    assert_eq!(h.msg_size as usize, HEADER_SIZE + p.len());
    p.clone()
}

/// A fresh eventfd.
pub fn eventfd() -> nix::sys::eventfd::EventFd {
    nix::sys::eventfd::EventFd::from_value_and_flags(0, nix::sys::eventfd::EfdFlags::EFD_NONBLOCK)
        .expect("eventfd")
}

/// Reads and resets an eventfd counter (0 when not signalled).
pub fn eventfd_count(fd: &nix::sys::eventfd::EventFd) -> u64 {
    let mut b = [0u8; 8];
    match nix::unistd::read(fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}
