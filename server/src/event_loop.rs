//! The event loop: one mio `Poll` for the listener, the client connection,
//! the vEVENTQ fd and the signal fd. Single-threaded; no handler blocks.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use vsmmu_protocol::poll_window::PollWindow;
use vsmmu_protocol::run_queue::RunQueue;

use crate::args::ReadMode;
use crate::config::Listen;
use crate::conn::{ConnError, Connection};
use crate::device::{Device, Outcome, Session};

const LISTENER: Token = Token(0);
const CLIENT: Token = Token(1);
const SIGNAL: Token = Token(2);
const VEVENTQ: Token = Token(3);
const NOTIFY_ACK: Token = Token(4);

/// Bytes read from the vEVENTQ per `read(2)`: 1638 records of 40 bytes.
const VEVENTQ_BUF: usize = 64 * 1024;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoopError {
    /// Socket setup.
    #[error("socket {what}: {err}")]
    Socket {
        /// What was being done.
        what: String,
        /// The error.
        err: io::Error,
    },
    /// Poll failure.
    #[error("poll: {0}")]
    Poll(io::Error),
    /// Signal setup.
    #[error("signals: {0}")]
    Signal(nix::Error),
}

fn sock_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LoopError {
    let what = what.into();
    move |err| LoopError::Socket { what, err }
}

struct Client {
    conn: Connection<UnixStream>,
    session: Session,
    /// Registered for writable edges too (replies wait for the socket).
    want_write: bool,
}

/// Listening socket, client, device.
pub(crate) struct Server {
    poll: Poll,
    listener: Option<UnixListener>,
    socket_path: Option<PathBuf>,
    client: Option<Client>,
    /// Serving an inherited connected socket: exit when it closes.
    single_client: bool,
    signals: SignalFd,
    device: Device,
    veventq: Option<(RawFd, u64)>,
    notify_ack: Option<(RawFd, u64)>,
    read_mode: ReadMode,
    vbuf: Vec<u8>,
    /// Cap of the adaptive polling window (`--poll-us`; 0 never polls).
    poll_max: Duration,
    /// Whether the CPUs are overcommitted (then the loop never polls).
    /// Opened here, before the jail hides `/proc`.
    run_queue: RunQueue,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("socket_path", &self.socket_path)
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Blocks SIGTERM and SIGINT and returns a signalfd for them. Call before
/// any other thread exists so that every thread inherits the mask.
pub(crate) fn block_signals() -> Result<SignalFd, LoopError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().map_err(LoopError::Signal)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(LoopError::Signal)
}

/// How long a wait for the client polls: the main window, or after a
/// message that completed a CMD_SYNC the longer of it and the burst
/// window.
fn poll_window(window: &PollWindow, burst: Option<&PollWindow>) -> Duration {
    burst.map_or(window.window(), |b| window.window().max(b.window()))
}

/// Moves the registration `current` (fd, generation) under `token` to
/// `now`: a new fd or a new generation of the same number re-registers.
fn follow(
    poll: &Poll,
    current: &mut Option<(RawFd, u64)>,
    now: Option<(RawFd, u64)>,
    token: Token,
    what: &str,
) {
    if now == *current {
        return;
    }
    if let Some((old, _)) = current.take() {
        // The fd may already be closed, which removed it from the poll.
        let _ = poll.registry().deregister(&mut SourceFd(&old));
    }
    if let Some((fd, gen)) = now {
        match poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            Ok(()) => *current = Some((fd, gen)),
            Err(e) => log::error!("cannot poll {what} (fd {fd}): {e}"),
        }
    }
}

fn is_listening(fd: BorrowedFd<'_>) -> bool {
    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false)
}

impl Server {
    /// Sets up the socket and registers everything with the poll.
    pub(crate) fn new(
        listen: Listen,
        signals: SignalFd,
        device: Device,
        read_mode: ReadMode,
    ) -> Result<Self, LoopError> {
        let poll = Poll::new().map_err(LoopError::Poll)?;
        let mut server = Server {
            poll,
            listener: None,
            socket_path: None,
            client: None,
            single_client: false,
            signals,
            device,
            veventq: None,
            notify_ack: None,
            read_mode,
            vbuf: vec![0; VEVENTQ_BUF],
            poll_max: Duration::ZERO,
            run_queue: RunQueue::open(),
        };
        match listen {
            Listen::Path(p) => {
                if let Ok(meta) = std::fs::symlink_metadata(&p) {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        // A stale socket of a previous run.
                        std::fs::remove_file(&p)
                            .map_err(sock_err(format!("remove stale {}", p.display())))?;
                    } else {
                        return Err(LoopError::Socket {
                            what: format!("bind {}", p.display()),
                            err: io::Error::new(
                                io::ErrorKind::AlreadyExists,
                                "path exists and is not a socket",
                            ),
                        });
                    }
                }
                let l =
                    UnixListener::bind(&p).map_err(sock_err(format!("bind {}", p.display())))?;
                server.listener = Some(l);
                server.socket_path = Some(p);
            }
            Listen::Fd(fd) => {
                let what = format!("--fd {}", fd.number());
                let fd = fd.adopt().map_err(sock_err(what.clone()))?;
                let flags = nix::fcntl::OFlag::O_NONBLOCK;
                nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
                    .map_err(|e| sock_err(what)(e.into()))?;
                let _ = nix::fcntl::fcntl(
                    fd.as_fd(),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                );
                if is_listening(fd.as_fd()) {
                    server.listener = Some(UnixListener::from_std(StdListener::from(fd)));
                } else {
                    server.single_client = true;
                    server.add_client(UnixStream::from_std(StdStream::from(fd)))?;
                }
            }
        }
        if let Some(l) = server.listener.as_mut() {
            server
                .poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .map_err(LoopError::Poll)?;
        }
        let sfd = server.signals.as_raw_fd();
        server
            .poll
            .registry()
            .register(&mut SourceFd(&sfd), SIGNAL, Interest::READABLE)
            .map_err(LoopError::Poll)?;
        Ok(server)
    }

    fn add_client(&mut self, mut stream: UnixStream) -> Result<(), LoopError> {
        // Readable only: a Unix socket signals a writable edge each time the
        // peer reads, that is after every reply, and each would wake a
        // sleeping loop for nothing. Writable edges are asked for only while
        // replies wait for room.
        self.poll
            .registry()
            .register(&mut stream, CLIENT, Interest::READABLE)
            .map_err(LoopError::Poll)?;
        self.client = Some(Client {
            conn: Connection::new(stream, self.device.limits.max_msg_size()),
            session: Session::default(),
            want_write: false,
        });
        Ok(())
    }

    /// Polls without sleeping for at most `max` after each client message
    /// (the window adapts below it; 0 never polls).
    pub(crate) fn set_poll_max(&mut self, max: Duration) {
        self.poll_max = max;
    }

    /// The run queue probe's descriptor (the seccomp filter allows `pread`
    /// on it).
    pub(crate) fn run_queue_fd(&self) -> Option<std::os::fd::RawFd> {
        self.run_queue.fd()
    }

    /// Replaces the run queue probe (`--run-queue-file`).
    pub(crate) fn set_run_queue(&mut self, q: RunQueue) {
        self.run_queue = q;
    }

    /// Serves until SIGTERM/SIGINT (or the inherited connection closes).
    pub(crate) fn run(&mut self) -> Result<(), LoopError> {
        let mut events = Events::with_capacity(16);
        log::info!(
            "serving{}",
            self.socket_path
                .as_ref()
                .map(|p| format!(" on {}", p.display()))
                .unwrap_or_default()
        );
        let mut more_events = false;
        // Adaptive polling (docs/design.md, "Adaptive polling"): after a
        // client message the loop polls without sleeping for a window,
        // because the next MMIO access usually follows within microseconds
        // and waking a sleeping (virtual) CPU costs tens of them; the
        // window follows how long the waits are, down to 0 when polling
        // does not pay (the client is slow, or needs the CPU we spin on).
        let mut window = PollWindow::new(self.poll_max);
        // After a message that completed a CMD_SYNC the guest's next
        // command usually follows within microseconds: Linux waits for each
        // sync before the next TLBI (strict mode: four per virtio-blk
        // request), while the pause before the next burst would drop the
        // window above to 0 every time. Those waits have a window of their
        // own, which pauses leave alone (docs/design.md).
        let mut burst = PollWindow::for_bursts(self.poll_max);
        let mut after_sync = false;
        // When the loop began waiting for the client's next message, moved
        // on by the time spent on other work since: the window is about
        // idle time, and a message that came while the vEVENTQ was being
        // drained was not waited for.
        let mut waiting_since: Option<Instant> = None;
        // Whether the current wait began with the CPUs overcommitted: then
        // it does not poll (KVM polls only while its CPU has nothing else
        // to run), and it teaches the windows nothing.
        let mut overcommitted = false;
        loop {
            let poll_for = if overcommitted {
                Duration::ZERO
            } else {
                poll_window(&window, after_sync.then_some(&burst))
            };
            let polling = waiting_since.is_some_and(|t| t.elapsed() < poll_for);
            let timeout = (more_events || polling).then_some(Duration::ZERO);
            if timeout.is_none() {
                self.device.stats.loop_sleeps += 1;
            }
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LoopError::Poll(e));
            }
            let woke = Instant::now();
            let mut drained = false;
            let mut served = false;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    CLIENT => {
                        let syncs = self.device.stats.cmd_syncs;
                        let messages = self.client_ready(ev.is_read_closed() || ev.is_error());
                        if messages > 0 {
                            if let Some(t) = waiting_since.filter(|_| !overcommitted) {
                                let waited = woke.saturating_duration_since(t);
                                let burst = after_sync.then_some(&mut burst);
                                self.learn(&mut window, burst, waited);
                            }
                            served = true;
                            after_sync = self.device.stats.cmd_syncs != syncs;
                        }
                    }
                    SIGNAL => {
                        if let Ok(Some(si)) = self.signals.read_signal() {
                            log::info!("signal {}: shutting down", si.ssi_signo);
                            return Ok(());
                        }
                    }
                    VEVENTQ => {
                        more_events = self.drain();
                        drained = true;
                    }
                    NOTIFY_ACK => self.device.notify_acked(),
                    _ => {}
                }
            }
            // Single-record mode: one more record per loop iteration, as
            // a level-triggered handler reading one record per wakeup would.
            if more_events && !drained {
                more_events = self.drain();
                drained = true;
            }
            if self.client.is_none() {
                waiting_since = None;
                overcommitted = false;
            } else if served {
                overcommitted =
                    self.overcommitted(poll_window(&window, after_sync.then_some(&burst)));
                waiting_since = Some(Instant::now());
            } else if drained {
                if let Some(t) = waiting_since.as_mut() {
                    *t += woke.elapsed();
                }
            }
            if self.single_client && self.client.is_none() {
                log::info!("the inherited connection closed: exiting");
                return Ok(());
            }
            self.sync_veventq();
            self.sync_notify_ack();
        }
    }

    /// Keeps the poll registration in step with the invalidation ring's
    /// ack eventfd.
    fn sync_notify_ack(&mut self) {
        let now = self.device.notify_ack_fd();
        let mut slot = self.notify_ack;
        follow(
            &self.poll,
            &mut slot,
            now,
            NOTIFY_ACK,
            "the ring's ack eventfd",
        );
        self.notify_ack = slot;
    }

    /// Whether the wait that begins now, which would poll for `poll_for`,
    /// skips polling because the CPUs are overcommitted; asked only when it
    /// would poll (a sample costs a read of `/proc/loadavg`).
    fn overcommitted(&mut self, poll_for: Duration) -> bool {
        if poll_for.is_zero() || !self.run_queue.overcommitted() {
            return false;
        }
        self.device.stats.polls_skipped_busy += 1;
        true
    }

    /// Adapts the windows to a wait for the client that took `waited`:
    /// `window` always, `burst` when the wait followed a CMD_SYNC (and
    /// the loop polled for the longer of the two).
    fn learn(&mut self, window: &mut PollWindow, burst: Option<&mut PollWindow>, waited: Duration) {
        let polled = poll_window(window, burst.as_deref());
        // A message the burst window's poll caught says nothing about the
        // main window (the loop did not sleep after it ran out).
        if burst.is_none() || waited > polled {
            window.record(waited);
        }
        if let Some(b) = burst {
            b.record(waited);
        }
        let st = &mut self.device.stats;
        if waited <= polled && !polled.is_zero() {
            st.poll_hits += 1;
        } else if !polled.is_zero() {
            st.poll_misses += 1;
        }
        st.poll_window_ns = window.window().as_nanos() as u64;
    }

    fn drain(&mut self) -> bool {
        let one = self.read_mode == ReadMode::Single;
        self.device.drain_veventq(&mut self.vbuf, one)
    }

    /// Keeps the poll registration in step with the vEVENTQ the model owns.
    fn sync_veventq(&mut self) {
        let now = self.device.veventq_source();
        let mut slot = self.veventq;
        follow(&self.poll, &mut slot, now, VEVENTQ, "the vEVENTQ fd");
        self.veventq = slot;
    }

    fn accept(&mut self) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((stream, _)) => {
                    if self.client.is_some() {
                        log::warn!("refusing a second client: one client at a time");
                        drop(stream);
                        continue;
                    }
                    log::info!("client connected");
                    if let Err(e) = self.add_client(stream) {
                        log::error!("{e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// Serves the client; returns how many of its messages were handled.
    fn client_ready(&mut self, hup: bool) -> usize {
        let Some(client) = self.client.as_mut() else {
            return 0;
        };
        let mut messages = 0;
        let result = Self::serve(client, &mut self.device, hup, &mut messages);
        if let Err(why) = result {
            if !matches!(why, ConnError::Closed) {
                log::warn!("closing the client connection: {why}");
            }
            self.drop_client();
            return messages;
        }
        let want_write = client.conn.has_pending_output();
        if want_write != client.want_write {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match self
                .poll
                .registry()
                .reregister(client.conn.stream_mut(), CLIENT, interest)
            {
                Ok(()) => client.want_write = want_write,
                Err(e) => {
                    log::warn!("closing the client connection: poll: {e}");
                    self.drop_client();
                }
            }
        }
        messages
    }

    fn serve(
        client: &mut Client,
        device: &mut Device,
        hup: bool,
        messages: &mut usize,
    ) -> Result<(), ConnError> {
        client.conn.flush()?;
        let read = client.conn.fill(hup);
        loop {
            let msg = match client.conn.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    client.conn.flush().ok();
                    return Err(e);
                }
            };
            *messages += 1;
            match device.handle(&mut client.session, msg) {
                Outcome::Reply(bytes) => client.conn.send(&bytes)?,
                Outcome::Silent => {}
                Outcome::Close(bytes, why) => {
                    client.conn.send(&bytes).ok();
                    log::warn!("{why}");
                    return Err(ConnError::Closed);
                }
            }
            // New limits apply from the next message.
            client.conn.set_max_msg_size(device.limits.max_msg_size());
        }
        read
    }

    fn drop_client(&mut self) {
        if let Some(mut c) = self.client.take() {
            let _ = self.poll.registry().deregister(c.conn.stream_mut());
            log::info!("client disconnected");
        }
        self.device.client_gone();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}
