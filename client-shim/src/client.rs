//! A blocking vfio-user client for `vsmmud`, as a VMM uses it.

use std::io::{IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use vsmmu_protocol::notify::Record;
use vsmmu_protocol::poll_window::PollWindow;
use vsmmu_protocol::stats::Stats;
use vsmmu_protocol::vfio_user::{
    self as vu, Capabilities, Command, DeviceInfo, DmaMap, DmaUnmap, Header, IrqInfo, IrqSet,
    Message, RegionAccess, RegionInfo, SimDma, SimDmaReply, SimInjectHeader, SimInjectReply,
    StatsRequest, VersionData, VersionHeader, VsmmuBoundDevice, VsmmuCap, VsmmuDevice,
    WriteMultiEntry, WriteMultiHeader, HEADER_SIZE, VSMMU_DEVICE_VMM_BOUND,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::iotlb::{Iotlb, IotlbStats};

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

/// How to start `vsmmud`.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The `vsmmud` binary.
    pub binary: PathBuf,
    /// Extra arguments (e.g. `--sim-veventq-depth 2`).
    pub args: Vec<String>,
    /// `--seccomp` mode (`kill`, `trap`, `log`, `off`).
    pub seccomp: String,
    /// Descriptors the server inherits, as `(number in the child, open fd
    /// here)`: e.g. `(4, iommufd)` with `--iommufd-fd 4`. Child numbers
    /// must be above 3 (3 is the socket); the fds here must stay open until
    /// [`Client::spawn`] returns.
    pub inherit: Vec<(RawFd, RawFd)>,
}

impl SpawnOptions {
    /// Defaults: the given binary, seccomp `kill`.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        SpawnOptions {
            binary: binary.into(),
            args: Vec::new(),
            seccomp: "kill".into(),
            inherit: Vec::new(),
        }
    }
}

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
}

/// What [`Client::set_notify_handler`] takes.
pub type NotifyHandler = Box<dyn FnMut(&Record) + Send>;

/// A [`NotifyHandler`] that `Client`'s `Debug` can name.
struct Handler(NotifyHandler);

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotifyHandler")
    }
}

/// The pages `[low, high)` of one StreamID and SubstreamID that a cache
/// miss brought along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fetched {
    sid: u32,
    ssid: u32,
    low: u64,
    high: u64,
}

/// Granules a cache miss just past either end of what the last one brought
/// asks vsmmud to translate: as many as a reply carries (256 KiB of 4 KiB
/// pages with the one asked for; a 1 MiB transfer then misses 4 times).
const TRANSLATE_AHEAD_PAGES: usize = vu::TRANSLATE_AHEAD_MAX;
/// Granules any other cache miss asks for, around it: the other buffers
/// of one I/O request (Linux maps them one after another, top down, so
/// they are usually a few pages apart on either side).
const TRANSLATE_AROUND_START: usize = 7;

/// The longest a reply is awaited by polling before sleeping.
const REPLY_POLL_MAX: Duration = Duration::from_micros(50);

/// The fd number the spawned server finds its socket at.
const CHILD_FD: RawFd = 3;

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
        }
    }

    /// Starts `vsmmud` on one end of a socketpair (`--fd 3`) and connects
    /// through the other.
    pub fn spawn(opts: &SpawnOptions) -> Result<Self> {
        let mut numbers: Vec<RawFd> = opts.inherit.iter().map(|&(c, _)| c).collect();
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.len() != opts.inherit.len() || numbers.first().is_some_and(|&c| c <= CHILD_FD) {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "inherited fds must have distinct numbers above 3 in the child",
            )));
        }
        // Copies above every child number, so that no dup2 in the child
        // overwrites a descriptor another one still needs.
        let floor = opts.inherit.iter().map(|&(c, _)| c).max().unwrap_or(0) + 1;
        let copies = opts
            .inherit
            .iter()
            .map(|&(_, parent)| {
                nix::fcntl::fcntl(
                    // SAFETY: the caller keeps `parent` open during the call.
                    unsafe { BorrowedFd::borrow_raw(parent) },
                    nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor.max(CHILD_FD + 1)),
                )
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .map_err(|e| ClientError::Io(e.into()))
            })
            .collect::<Result<Vec<OwnedFd>>>()?;
        let inherit: Vec<(RawFd, RawFd)> = opts
            .inherit
            .iter()
            .zip(&copies)
            .map(|(&(child, _), copy)| (child, copy.as_raw_fd()))
            .collect();
        // Child numbers free here are held by placeholders until the spawn
        // returns: std creates its exec-status pipe at the lowest free
        // numbers, and the child's dup2 onto one of them would close it.
        let mut placeholders = Vec::new();
        for &child in &numbers {
            // SAFETY: F_GETFD only queries whether `child` is open.
            if unsafe { libc::fcntl(child, libc::F_GETFD) } >= 0 {
                continue;
            }
            let Some(copy) = copies.first() else { break };
            // SAFETY: F_DUPFD_CLOEXEC returns a new CLOEXEC descriptor at
            // the lowest free number >= `child` (that is `child`, free as
            // checked above, unless another thread just took it).
            let fd = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_DUPFD_CLOEXEC, child) };
            if fd >= 0 {
                // SAFETY: `fd` was just created and is owned here.
                placeholders.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        let (ours, theirs) = UnixStream::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let mut cmd = Process::new(&opts.binary);
        cmd.arg("--fd")
            .arg(CHILD_FD.to_string())
            .arg("--seccomp")
            .arg(&opts.seccomp)
            .args(&opts.args)
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls async-signal-safe functions (dup2, fcntl) on descriptors
        // that exist in the child.
        unsafe {
            cmd.pre_exec(move || {
                if theirs_fd == CHILD_FD {
                    let flags = libc::fcntl(CHILD_FD, libc::F_GETFD);
                    if flags < 0
                        || libc::fcntl(CHILD_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, CHILD_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for &(child, copy) in &inherit {
                    // `copy` is above every child number; dup2 clears
                    // FD_CLOEXEC on the new descriptor.
                    if libc::dup2(copy, child) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        drop(copies);
        drop(placeholders);
        let mut c = Client::from_stream(ours);
        c.child = Some(child);
        Ok(c)
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
        let window = self.reply_poll.window();
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
        self.reply_poll.record(t0.elapsed());
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
            let id = first.wrapping_add(k as u16);
            if hdr.msg_id != id || hdr.command != command as u16 {
                return Err(ClientError::Protocol(format!(
                    "reply {} to request {id}",
                    hdr.msg_id
                )));
            }
            if hdr.is_error() {
                return Err(ClientError::Remote {
                    command,
                    errno: hdr.error_no as i32,
                });
            }
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

    /// DEVICE_GET_REGION_INFO.
    pub fn region_info(&mut self, index: u32) -> Result<RegionInfo> {
        let req = RegionInfo {
            argsz: RegionInfo::SIZE,
            index,
            ..Default::default()
        };
        let r = self.request(Command::DeviceGetRegionInfo, req.as_bytes(), &[])?;
        parse(&r)
    }

    /// DEVICE_GET_IRQ_INFO.
    pub fn irq_info(&mut self, index: u32) -> Result<IrqInfo> {
        let req = IrqInfo {
            argsz: IrqInfo::SIZE,
            index,
            ..Default::default()
        };
        let r = self.request(Command::DeviceGetIrqInfo, req.as_bytes(), &[])?;
        parse(&r)
    }

    /// DMA_MAP of `size` bytes of `fd` (from `offset`) at guest address `iova`.
    pub fn dma_map(&mut self, fd: BorrowedFd<'_>, offset: u64, iova: u64, size: u64) -> Result<()> {
        let m = DmaMap {
            argsz: DmaMap::SIZE,
            flags: vu::DMA_MAP_READ | vu::DMA_MAP_WRITE,
            offset,
            addr: iova,
            size,
        };
        self.request(Command::DmaMap, m.as_bytes(), &[fd])?;
        Ok(())
    }

    /// DMA_UNMAP of an exact earlier mapping.
    pub fn dma_unmap(&mut self, iova: u64, size: u64) -> Result<()> {
        let u = DmaUnmap {
            argsz: DmaUnmap::SIZE,
            flags: 0,
            addr: iova,
            size,
        };
        self.request(Command::DmaUnmap, u.as_bytes(), &[])?;
        Ok(())
    }

    /// REGION_READ of 4 or 8 bytes of the register region.
    pub fn mmio_read(&mut self, offset: u64, size: u32) -> Result<u64> {
        let a = RegionAccess {
            offset,
            region: 0,
            count: size,
        };
        let r = self.request(Command::RegionRead, a.as_bytes(), &[])?;
        let data = r.get(16..).unwrap_or(&[]);
        if data.len() != size as usize {
            return Err(ClientError::Protocol(format!(
                "read returned {} bytes",
                data.len()
            )));
        }
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        Ok(u64::from_le_bytes(b))
    }

    /// 32-bit register read.
    pub fn read32(&mut self, offset: u64) -> Result<u32> {
        Ok(self.mmio_read(offset, 4)? as u32)
    }

    /// 64-bit register read.
    pub fn read64(&mut self, offset: u64) -> Result<u64> {
        self.mmio_read(offset, 8)
    }

    /// REGION_WRITE of 4 or 8 bytes; `posted` sends it without waiting for
    /// a reply (doorbells).
    pub fn mmio_write(&mut self, offset: u64, size: u32, value: u64, posted: bool) -> Result<()> {
        let a = RegionAccess {
            offset,
            region: 0,
            count: size,
        };
        let mut payload = a.as_bytes().to_vec();
        payload.extend_from_slice(&value.to_le_bytes()[..size as usize]);
        if posted {
            self.post(Command::RegionWrite, &payload)
        } else {
            self.request(Command::RegionWrite, &payload, &[])
                .map(|_| ())
        }
    }

    /// 32-bit register write, acknowledged.
    pub fn write32(&mut self, offset: u64, value: u32) -> Result<()> {
        self.mmio_write(offset, 4, value.into(), false)
    }

    /// 64-bit register write, acknowledged.
    pub fn write64(&mut self, offset: u64, value: u64) -> Result<()> {
        self.mmio_write(offset, 8, value, false)
    }

    /// REGION_WRITE_MULTI of (offset, size, value) writes, acknowledged.
    pub fn write_multi(&mut self, writes: &[(u64, u32, u64)]) -> Result<u64> {
        let mut payload = WriteMultiHeader {
            wr_cnt: writes.len() as u64,
        }
        .as_bytes()
        .to_vec();
        for &(offset, count, value) in writes {
            let e = WriteMultiEntry {
                offset,
                region: 0,
                count,
                data: value.to_le_bytes(),
            };
            payload.extend_from_slice(e.as_bytes());
        }
        let r = self.request(Command::RegionWriteMulti, &payload, &[])?;
        Ok(parse::<WriteMultiHeader>(&r)?.wr_cnt)
    }

    /// SET_IRQS: give (`Some`) or take back (`None`) the eventfd of an irq index.
    pub fn set_irq_eventfd(&mut self, index: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let s = IrqSet {
            argsz: IrqSet::SIZE,
            flags: vu::VFIO_IRQ_SET_DATA_EVENTFD | vu::VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: u32::from(fd.is_some()),
        };
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        self.request(Command::DeviceSetIrqs, s.as_bytes(), &fds)?;
        Ok(())
    }

    /// SET_IRQS with a raw header and fds.
    pub fn set_irqs(&mut self, set: &IrqSet, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        let mut payload = set.as_bytes().to_vec();
        payload.extend_from_slice(data);
        self.request(Command::DeviceSetIrqs, &payload, fds)?;
        Ok(())
    }

    /// DEVICE_RESET.
    pub fn reset(&mut self) -> Result<()> {
        self.request(Command::DeviceReset, &[], &[])?;
        Ok(())
    }

    /// VSMMU_ATTACH_DEVICE: returns the host device id.
    pub fn attach_device(&mut self, vsid: u32, device_fd: Option<BorrowedFd<'_>>) -> Result<u32> {
        let d = VsmmuDevice {
            argsz: VsmmuDevice::SIZE,
            flags: 0,
            vsid,
            reserved: 0,
        };
        let fds: Vec<BorrowedFd<'_>> = device_fd.into_iter().collect();
        let r = self.request(Command::VsmmuAttachDevice, d.as_bytes(), &fds)?;
        Ok(parse::<VsmmuDevice>(&r)?.reserved)
    }

    /// VSMMU_ATTACH_DEVICE of a device the VMM bound to its own iommufd
    /// (`VSMMU_DEVICE_VMM_BOUND`): vsmmud allocates the vIOMMU in that
    /// iommufd, on the VMM's nesting parent `parent_hwpt_id` (which the
    /// device must be attached to). `cdev` is the bound open file of the
    /// device's VFIO cdev, `iommufd` the VMM's iommufd, `dev_id` the id the
    /// bind returned. Returns `dev_id`.
    pub fn attach_vmm_device(
        &mut self,
        vsid: u32,
        cdev: BorrowedFd<'_>,
        iommufd: BorrowedFd<'_>,
        dev_id: u32,
        parent_hwpt_id: u32,
    ) -> Result<u32> {
        let d = VsmmuBoundDevice {
            argsz: VsmmuBoundDevice::SIZE,
            flags: VSMMU_DEVICE_VMM_BOUND,
            vsid,
            reserved: 0,
            dev_id,
            parent_hwpt_id,
        };
        let r = self.request(Command::VsmmuAttachDevice, d.as_bytes(), &[cdev, iommufd])?;
        Ok(parse::<VsmmuDevice>(&r)?.reserved)
    }

    /// VSMMU_DETACH_DEVICE.
    pub fn detach_device(&mut self, vsid: u32) -> Result<()> {
        let d = VsmmuDevice {
            argsz: VsmmuDevice::SIZE,
            flags: 0,
            vsid,
            reserved: 0,
        };
        self.request(Command::VsmmuDetachDevice, d.as_bytes(), &[])?;
        Ok(())
    }

    /// VSMMU_SIM_INJECT: returns (queued, dropped).
    pub fn sim_inject(&mut self, records: &[[u64; 4]]) -> Result<(u32, u32)> {
        let h = SimInjectHeader {
            argsz: (SimInjectHeader::SIZE as usize + 32 * records.len()) as u32,
            count: records.len() as u32,
        };
        let mut payload = h.as_bytes().to_vec();
        for r in records {
            payload.extend_from_slice(r.as_bytes());
        }
        let r = self.request(Command::VsmmuSimInject, &payload, &[])?;
        let rep: SimInjectReply = parse(&r)?;
        Ok((rep.queued, rep.dropped))
    }

    /// VSMMU_SIM_DMA: returns (status, data read).
    pub fn sim_dma(
        &mut self,
        vsid: u32,
        ssid: Option<u32>,
        iova: u64,
        write: Option<&[u8]>,
        len: u64,
    ) -> Result<(u32, Vec<u8>)> {
        let data = write.unwrap_or(&[]);
        let req = SimDma {
            argsz: (SimDma::SIZE as usize + data.len()) as u32,
            flags: if write.is_some() {
                vu::SIM_DMA_WRITE
            } else {
                0
            },
            vsid,
            ssid: ssid.unwrap_or(vu::SIM_DMA_NO_SSID),
            iova,
            len,
        };
        let mut payload = req.as_bytes().to_vec();
        payload.extend_from_slice(data);
        let r = self.request(Command::VsmmuSimDma, &payload, &[])?;
        let rep: SimDmaReply = parse(&r)?;
        Ok((rep.status, r.get(16..).unwrap_or(&[]).to_vec()))
    }

    /// VSMMU_TRANSLATE: translates `iova` for an access by the emulated
    /// device `sid`; returns the reply (status 0 when translated). With the
    /// IOTLB enabled ([`Client::enable_iotlb`]) a cached translation
    /// answers without a round trip.
    pub fn translate(
        &mut self,
        sid: u32,
        ssid: Option<u32>,
        iova: u64,
        flags: u32,
    ) -> Result<vu::TranslateReply> {
        let ssid = ssid.unwrap_or(vu::SIM_DMA_NO_SSID);
        let head = match self.iotlb.as_mut().map(Iotlb::sync) {
            Some(head) => {
                let write = flags & vu::TRANSLATE_WRITE != 0;
                if let Some(hit) = self
                    .iotlb
                    .as_mut()
                    .and_then(|t| t.lookup(sid, ssid, iova, write))
                {
                    return Ok(vu::TranslateReply { flags, ..hit });
                }
                Some(head)
            }
            None => None,
        };
        // With a cache, neighbouring granules come along: a few around any
        // miss; TRANSLATE_AHEAD_PAGES after a miss just past the top of
        // what the last one brought (a sequential transfer), or before a
        // miss just below it (one mapped top down), as a readahead window.
        // Walking more costs vsmmud time that a random access never uses.
        let page = iova >> 12;
        let (up, down) = match self.fetched {
            Some(f) if (f.sid, f.ssid) == (sid, ssid) => {
                (f.high == page, f.low.checked_sub(1) == Some(page))
            }
            _ => (false, false),
        };
        let (flags_sent, ahead) = match head {
            Some(_) if up => (flags | vu::TRANSLATE_AHEAD, TRANSLATE_AHEAD_PAGES),
            Some(_) if down => (flags | vu::TRANSLATE_BEHIND, TRANSLATE_AHEAD_PAGES),
            Some(_) => (
                flags | vu::TRANSLATE_AHEAD | vu::TRANSLATE_BEHIND,
                TRANSLATE_AROUND_START,
            ),
            None => (flags, 0),
        };
        let head_size = vu::TranslateReply::SIZE as usize;
        let rec_size = vu::TranslateAhead::SIZE as usize;
        let t = vu::Translate {
            argsz: (head_size + ahead * rec_size) as u32,
            flags: flags_sent,
            sid,
            ssid,
            iova,
        };
        let r = self.request(Command::VsmmuTranslate, t.as_bytes(), &[])?;
        let reply: vu::TranslateReply = parse(&r)?;
        // Cached only if nothing was invalidated while vsmmud answered.
        if let (Some(t), Some(head)) = (self.iotlb.as_mut(), head) {
            if t.head() == head {
                t.insert(sid, ssid, iova, &reply);
                let mut low = iova & !reply.mask;
                let mut high = low.wrapping_add(reply.mask.wrapping_add(1));
                let extra = r.get(head_size..).unwrap_or(&[]);
                for rec in extra.chunks_exact(rec_size) {
                    if let Ok(a) = vu::TranslateAhead::read_from_bytes(rec) {
                        let as_reply = vu::TranslateReply {
                            perm: a.perm,
                            addr: a.addr,
                            mask: a.mask,
                            ..reply
                        };
                        t.insert(sid, ssid, a.iova, &as_reply);
                        low = low.min(a.iova & !a.mask);
                        high = high.max((a.iova & !a.mask).wrapping_add(a.mask.wrapping_add(1)));
                    }
                }
                self.fetched = (reply.status == 0).then_some(Fetched {
                    sid,
                    ssid,
                    low: low >> 12,
                    high: high >> 12,
                });
            }
        }
        Ok(vu::TranslateReply {
            argsz: head_size as u32,
            flags,
            ..reply
        })
    }

    /// VSMMU_NOTIFY_SETUP: shares an invalidation ring of `2^log2` records
    /// with vsmmud and caches translations from now on
    /// ([`crate::iotlb`]).
    pub fn enable_iotlb(&mut self, log2: u32) -> Result<()> {
        let (iotlb, fds) = Iotlb::new(log2)?;
        let n = vu::NotifySetup {
            argsz: vu::NotifySetup::SIZE,
            flags: 0,
            log2_entries: log2,
            reserved: 0,
        };
        self.request(
            Command::VsmmuNotifySetup,
            n.as_bytes(),
            &[fds.ring.as_fd(), fds.kick.as_fd(), fds.ack.as_fd()],
        )?;
        iotlb.set_want_ack(self.notify_handler.is_some());
        self.iotlb = Some(iotlb);
        Ok(())
    }

    /// Calls `handler` with every invalidation record from now on (IOMMU
    /// notifiers), or none. With a handler, vsmmud completes each CMD_SYNC
    /// only once the records before it went through the handler: the VMM
    /// calls [`Client::notify_drain`] when [`Client::notify_fd`] is
    /// readable.
    pub fn set_notify_handler(&mut self, handler: Option<NotifyHandler>) {
        self.notify_handler = handler.map(Handler);
        if let Some(t) = &mut self.iotlb {
            t.set_want_ack(self.notify_handler.is_some());
            // A new handler starts from now; nothing may wait on an old one.
            t.skip_to_head();
        }
    }

    /// The eventfd vsmmud signals when it waits for [`Client::notify_drain`].
    pub fn notify_fd(&self) -> Option<RawFd> {
        self.iotlb.as_ref().map(|t| t.kick_fd())
    }

    /// Applies the published invalidations to the cache, hands them to the
    /// handler and acknowledges them. The handler runs only here (the
    /// VMM's chosen context, e.g. its main loop), never inside
    /// [`Client::translate`].
    pub fn notify_drain(&mut self) {
        let Some(t) = &mut self.iotlb else {
            return;
        };
        t.clear_kick();
        let handler = &mut self.notify_handler;
        t.drain(&mut |r| {
            if let Some(h) = handler.as_mut() {
                (h.0)(r)
            }
        });
    }

    /// The IOTLB's counters, if enabled.
    pub fn iotlb_stats(&self) -> Option<IotlbStats> {
        self.iotlb.as_ref().map(|t| t.stats)
    }

    /// VSMMU_GET_STATS: the server's counters.
    pub fn stats(&mut self) -> Result<Stats> {
        let req = StatsRequest {
            argsz: 1 << 16,
            flags: 0,
        };
        let r = self.request(Command::VsmmuGetStats, req.as_bytes(), &[])?;
        Stats::from_json(r.get(8..).unwrap_or(&[]))
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Moves the device's migration state machine (`vfio_device_mig_state`).
    pub fn mig_set_state(&mut self, state: u32) -> Result<()> {
        let f = vu::DeviceFeature {
            argsz: vu::DeviceFeature::SIZE + vu::MigDeviceState::SIZE,
            flags: vu::DEVICE_FEATURE_SET | vu::DEVICE_FEATURE_MIG_DEVICE_STATE,
        };
        let mut payload = f.as_bytes().to_vec();
        payload.extend_from_slice(
            vu::MigDeviceState {
                device_state: state,
                data_fd: -1,
            }
            .as_bytes(),
        );
        self.request(Command::DeviceFeature, &payload, &[])?;
        Ok(())
    }

    /// The device's migration state.
    pub fn mig_state(&mut self) -> Result<u32> {
        let f = vu::DeviceFeature {
            argsz: vu::DeviceFeature::SIZE + vu::MigDeviceState::SIZE,
            flags: vu::DEVICE_FEATURE_GET | vu::DEVICE_FEATURE_MIG_DEVICE_STATE,
        };
        let r = self.request(Command::DeviceFeature, f.as_bytes(), &[])?;
        Ok(parse::<vu::MigDeviceState>(r.get(8..).unwrap_or(&[]))?.device_state)
    }

    /// Reads the whole saved state (in STOP_COPY), `chunk` bytes at a time.
    pub fn mig_read_all(&mut self, chunk: u32) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let req = vu::MigData {
                argsz: vu::MigData::SIZE + chunk,
                size: chunk,
            };
            let r = self.request(Command::MigDataRead, req.as_bytes(), &[])?;
            let h: vu::MigData = parse(&r)?;
            out.extend_from_slice(r.get(8..8 + h.size as usize).unwrap_or(&[]));
            if h.size < chunk {
                return Ok(out);
            }
        }
    }

    /// Writes a saved state (in RESUMING), `chunk` bytes per message.
    pub fn mig_write_all(&mut self, data: &[u8], chunk: usize) -> Result<()> {
        for part in data.chunks(chunk.max(1)) {
            let mut payload = vu::MigData {
                argsz: vu::MigData::SIZE,
                size: part.len() as u32,
            }
            .as_bytes()
            .to_vec();
            payload.extend_from_slice(part);
            self.request(Command::MigDataWrite, &payload, &[])?;
        }
        Ok(())
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

/// Takes ownership of a raw fd number (for the C ABI).
///
/// # Safety
/// `fd` must be an open descriptor the caller gives up.
pub unsafe fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees `fd` is open and transferred to us.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
