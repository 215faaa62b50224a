//! A blocking vfio-user client for `vsmmud`, as a VMM uses it.
//!
//! This file holds the [`Client`] itself: the connection, request and
//! reply plumbing with its adaptive reply polling, VERSION negotiation and
//! the device-wide commands. Each group of commands has its own file:
//! `spawn.rs` (starting `vsmmud`), `dma.rs`, `mmio.rs`, `irq.rs`,
//! `devices.rs` (attach and detach), `sim.rs` (the sim backend's test
//! commands), `translate.rs`, `notify.rs` (the invalidation ring and IOMMU
//! notifiers) and `migration.rs`.

mod devices;
mod dma;
mod irq;
mod migration;
mod mmio;
mod notify;
mod sim;
mod spawn;
mod translate;

pub use notify::NotifyHandler;
pub use spawn::SpawnOptions;

use std::io::{IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use vsmmu_protocol::poll_window::PollWindow;
use vsmmu_protocol::run_queue::RunQueue;
use vsmmu_protocol::stats::Stats;
use vsmmu_protocol::vfio_user::{
    self as vu, Capabilities, Command, DeviceInfo, Header, Message, StatsRequest, VersionData,
    VersionHeader, VsmmuCap, HEADER_SIZE,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::iotlb::Iotlb;
use notify::Handler;
use translate::Fetched;

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket or process error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error reply.
    #[error("{command:?} failed with errno {errno} ({})", std::io::Error::from_raw_os_error(*errno))]
    Remote {
        /// The command.
        command: Command,
        /// errno from the reply.
        errno: i32,
    },
    /// The server closed the connection (it exited or dropped us).
    #[error("the server closed the connection")]
    ServerGone,
    /// A reply that does not follow the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The errno of a remote error, or of the local failure.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Remote { errno, .. } => *errno,
            ClientError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            ClientError::ServerGone => libc::EPIPE,
            ClientError::Protocol(_) => libc::EPROTO,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// A vfio-user connection to `vsmmud`.
#[derive(Debug)]
pub struct Client {
    sock: UnixStream,
    next_id: u16,
    child: Option<Child>,
    caps: Capabilities,
    /// Bytes read but not yet consumed: a small reply costs one read.
    rbuf: Vec<u8>,
    /// Reused read buffer (zeroed once, not per reply).
    chunk: Box<[u8]>,
    /// Cached translations, once [`Client::enable_iotlb`] shared the ring.
    iotlb: Option<Iotlb>,
    /// Called with every invalidation record applied (IOMMU notifiers).
    notify_handler: Option<Handler>,
    /// What the last cache miss brought: a miss just past either end of
    /// it is a sequential transfer.
    fetched: Option<Fetched>,
    /// How long the next reply is awaited by polling before sleeping.
    reply_poll: PollWindow,
    /// Whether the CPUs are overcommitted (then no reply is polled for).
    run_queue: RunQueue,
}

/// The longest a reply is awaited by polling before sleeping: vsmmud's
/// default cap, KVM's x86 `halt_poll_ns`. A reply from a vsmmud that was
/// asleep takes its wakeup (30-40 µs on a virtual machine) and more; with
/// a 50 µs cap this side often slept too, and paid a second wakeup
/// (docs/design.md, "Adaptive polling").
const REPLY_POLL_MAX: Duration = Duration::from_micros(200);

impl Client {
    /// Connects to a server listening at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Client::from_stream(UnixStream::connect(path)?))
    }

    /// Wraps a connected stream.
    pub fn from_stream(sock: UnixStream) -> Self {
        Client {
            sock,
            next_id: 1,
            child: None,
            caps: Capabilities::default(),
            rbuf: Vec::new(),
            chunk: vec![0u8; 8192].into_boxed_slice(),
            iotlb: None,
            notify_handler: None,
            fetched: None,
            reply_poll: PollWindow::new(REPLY_POLL_MAX),
            run_queue: RunQueue::open(),
        }
    }

    /// The spawned server process, if this client started it.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Process id of the spawned server.
    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The socket.
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Capabilities the server replied with.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// True when the server closed its end (it died or dropped us).
    pub fn server_gone(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.sock.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) => {
                let rev = fds[0].revents().unwrap_or(nix::poll::PollFlags::empty());
                if rev.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR) {
                    return true;
                }
                // Readable with no request in flight: EOF if a peek reads 0.
                let mut b = [0u8; 1];
                matches!(
                    nix::sys::socket::recv(
                        self.sock.as_raw_fd(),
                        &mut b,
                        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
                    ),
                    Ok(0)
                )
            }
            Err(_) => true,
        }
    }

    fn id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends raw message bytes with fds.
    pub fn send_raw(&mut self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut off = 0;
        while off < bytes.len() {
            let iov = [IoSlice::new(&bytes[off..])];
            let rights = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage] = if off == 0 && !raw.is_empty() {
                &rights
            } else {
                &[]
            };
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => off += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EPIPE) | Err(nix::errno::Errno::ECONNRESET) => {
                    return Err(ClientError::ServerGone)
                }
                Err(e) => return Err(ClientError::Io(e.into())),
            }
        }
        Ok(())
    }

    /// Reads one whole message (header and payload).
    pub fn recv_raw(&mut self) -> Result<(Header, Vec<u8>)> {
        self.fill_to(HEADER_SIZE)?;
        let hdr = Header::decode(&self.rbuf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let size = hdr.msg_size as usize;
        if !(HEADER_SIZE..=64 << 20).contains(&size) {
            return Err(ClientError::Protocol(format!("reply size {size}")));
        }
        self.fill_to(size)?;
        let payload = self.rbuf[HEADER_SIZE..size].to_vec();
        self.rbuf.drain(..size);
        Ok((hdr, payload))
    }

    /// Reads until at least `n` bytes are buffered. The reply to an MMIO
    /// access usually arrives within microseconds, and waking a sleeping
    /// (virtual) CPU costs tens of them: the reply is awaited by polling
    /// the socket for a window, then by sleeping. The window adapts to how
    /// long replies take (docs/design.md, "Adaptive polling"), down to 0
    /// when polling does not pay: slow replies, or a server that needs the
    /// CPU this side would spin on.
    fn fill_to(&mut self, n: usize) -> Result<()> {
        if self.rbuf.len() >= n {
            return Ok(());
        }
        let t0 = Instant::now();
        let mut window = self.reply_poll.window();
        // KVM polls only while its CPU has nothing else to run: with the
        // CPUs overcommitted this wait sleeps at once and teaches the
        // window nothing.
        let overcommitted = !window.is_zero() && self.run_queue.overcommitted();
        if overcommitted {
            window = Duration::ZERO;
        }
        while self.rbuf.len() < n && !window.is_zero() && t0.elapsed() < window {
            match nix::sys::socket::recv(
                self.sock.as_raw_fd(),
                &mut self.chunk,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Err(ClientError::ServerGone),
                Ok(k) => self.rbuf.extend_from_slice(&self.chunk[..k]),
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                    std::hint::spin_loop()
                }
                Err(nix::errno::Errno::ECONNRESET) => return Err(ClientError::ServerGone),
                Err(e) => return Err(ClientError::Io(e.into())),
            }
        }
        while self.rbuf.len() < n {
            match self.sock.read(&mut self.chunk) {
                Ok(0) => return Err(ClientError::ServerGone),
                Ok(k) => self.rbuf.extend_from_slice(&self.chunk[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return Err(ClientError::ServerGone)
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !overcommitted {
            self.reply_poll.record(t0.elapsed());
        }
        Ok(())
    }

    /// The reply polling window now (it adapts; 0 = sleeping at once).
    pub fn reply_poll_window(&self) -> Duration {
        self.reply_poll.window()
    }

    /// Sends a command and returns the reply payload, or the error reply's errno.
    pub fn request(
        &mut self,
        command: Command,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<Vec<u8>> {
        let id = self.id();
        let msg = Message::command(id, command).bytes(payload).finish();
        self.send_raw(&msg, fds)?;
        let (hdr, reply) = self.recv_raw()?;
        check_reply(&hdr, id, command)?;
        Ok(reply)
    }

    /// Sends `payloads` as back-to-back `command` messages without waiting,
    /// then collects the replies in order (errors become `Err` entries are
    /// not separated: an error reply fails the whole call).
    pub fn pipeline(&mut self, command: Command, payloads: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        let first = self.next_id;
        let mut batch = Vec::new();
        for p in payloads {
            let id = self.id();
            batch.extend(Message::command(id, command).bytes(p).finish());
        }
        self.send_raw(&batch, &[])?;
        let mut out = Vec::with_capacity(payloads.len());
        for k in 0..payloads.len() {
            let (hdr, reply) = self.recv_raw()?;
            check_reply(&hdr, first.wrapping_add(k as u16), command)?;
            out.push(reply);
        }
        Ok(out)
    }

    /// Sends a command without asking for a reply.
    pub fn post(&mut self, command: Command, payload: &[u8]) -> Result<()> {
        let id = self.id();
        let msg = Message::command(id, command)
            .bytes(payload)
            .no_reply()
            .finish();
        self.send_raw(&msg, &[])
    }

    /// VERSION: proposes 0.2 and our capabilities; `vsmmu` asks for the
    /// extension commands.
    pub fn negotiate(&mut self, vsmmu: bool) -> Result<Capabilities> {
        let data = VersionData {
            capabilities: Capabilities {
                max_msg_fds: Some(8),
                vsmmu: vsmmu.then_some(VsmmuCap {
                    version: vu::VSMMU_EXT_VERSION,
                }),
                ..Default::default()
            },
        };
        let mut payload = VersionHeader {
            major: 0,
            minor: vu::VERSION_MINOR,
        }
        .as_bytes()
        .to_vec();
        payload.extend_from_slice(&data.encode());
        let reply = self.request(Command::Version, &payload, &[])?;
        let (v, json) = VersionHeader::read_from_prefix(&reply)
            .map_err(|_| ClientError::Protocol("short VERSION reply".into()))?;
        if v.major != 0 || v.minor > vu::VERSION_MINOR {
            return Err(ClientError::Protocol(format!(
                "server version {}.{}",
                v.major, v.minor
            )));
        }
        let data = VersionData::decode(json).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.caps = data.capabilities.clone();
        Ok(data.capabilities)
    }

    /// DEVICE_GET_INFO.
    pub fn device_info(&mut self) -> Result<DeviceInfo> {
        let r = self.request(
            Command::DeviceGetInfo,
            DeviceInfo {
                argsz: DeviceInfo::SIZE,
                ..Default::default()
            }
            .as_bytes(),
            &[],
        )?;
        parse(&r)
    }

    /// DEVICE_RESET.
    pub fn reset(&mut self) -> Result<()> {
        self.request(Command::DeviceReset, &[], &[])?;
        Ok(())
    }

    /// VSMMU_GET_STATS: the server's counters.
    pub fn stats(&mut self) -> Result<Stats> {
        self.stats_reply().map(|(_, stats)| stats)
    }

    /// VSMMU_GET_STATS as the server sent it: its JSON object, with any
    /// counter a newer server has that [`Stats`] does not (the C ABI
    /// passes it on as is). Checked to be a JSON object of counters
    /// ([`Stats::check_json`]).
    pub fn stats_json(&mut self) -> Result<Vec<u8>> {
        self.stats_reply().map(|(json, _)| json)
    }

    /// VSMMU_GET_STATS: the reply's JSON, and the counters read from it.
    fn stats_reply(&mut self) -> Result<(Vec<u8>, Stats)> {
        let req = StatsRequest {
            argsz: 1 << 16,
            flags: 0,
        };
        let mut r = self.request(Command::VsmmuGetStats, req.as_bytes(), &[])?;
        let json = r.split_off(8.min(r.len()));
        let stats = Stats::check_json(&json).map_err(ClientError::Protocol)?;
        Ok((json, stats))
    }

    /// Closes the connection; waits for a spawned server to exit.
    pub fn close(mut self) -> Result<Option<std::process::ExitStatus>> {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        match self.child.take() {
            Some(mut c) => Ok(Some(c.wait()?)),
            None => Ok(None),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self.sock.shutdown(std::net::Shutdown::Both);
            // A spawned server exits when its only connection closes.
            let _ = c.wait();
        }
    }
}

fn parse<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(bytes: &[u8]) -> Result<T> {
    T::read_from_prefix(bytes)
        .map(|(v, _)| v)
        .map_err(|_| ClientError::Protocol(format!("reply of {} bytes too short", bytes.len())))
}

/// A reply must answer request `id` of `command`, be a reply, and not be
/// an error reply (whose errno becomes [`ClientError::Remote`]).
fn check_reply(hdr: &Header, id: u16, command: Command) -> Result<()> {
    if hdr.msg_id != id || hdr.command != command as u16 {
        return Err(ClientError::Protocol(format!(
            "reply {}/{:#x} to request {id}/{:#x}",
            hdr.msg_id, hdr.command, command as u16
        )));
    }
    if hdr.flags & vu::FLAG_TYPE_MASK != vu::FLAG_TYPE_REPLY {
        return Err(ClientError::Protocol(format!(
            "reply flags {:#x}",
            hdr.flags
        )));
    }
    if hdr.is_error() {
        return Err(ClientError::Remote {
            command,
            errno: hdr.error_no as i32,
        });
    }
    Ok(())
}

/// Takes ownership of a raw fd number (for the C ABI).
///
/// # Safety
/// `fd` must be an open descriptor the caller gives up.
pub unsafe fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees `fd` is open and transferred to us.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
