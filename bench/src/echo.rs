//! The raw-socket baseline: this binary, re-executed in its hidden
//! `echo-server` mode, answers every 32-byte request with a 36-byte reply
//! over blocking `read`/`write` on a socketpair. Same message sizes as a
//! REGION_READ of a 32-bit register, no framing, no dispatch.
//!
//! With `--epoll` it serves the way an event loop does (and `vsmmud`
//! does): edge-triggered `epoll_wait`, a non-blocking read of what is
//! there, the replies written; that isolates what the event-loop shape
//! costs from what `vsmmud` itself does per message.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use vsmmu_protocol::vfio_user::FLAG_TYPE_REPLY;

/// Request size: a vfio-user header (16) + REGION_READ payload (16).
pub const REQUEST: usize = 32;
/// Reply size: header (16) + payload (16) + 4 data bytes.
pub const REPLY: usize = 36;

/// What the echo server reads back: 0x5a5a5a5a.
pub const ECHO_DATA: u32 = 0x5a5a_5a5a;

/// Turns a REGION_READ request into a well-formed reply with 4 data bytes
/// (so that `client-shim` itself can talk to the echo server): the
/// request's header and payload, `msg_size` 36, the reply flag, the data.
fn make_reply(req: &[u8], reply: &mut [u8; REPLY]) {
    reply[..REQUEST].copy_from_slice(&req[..REQUEST]);
    reply[4..8].copy_from_slice(&(REPLY as u32).to_le_bytes());
    reply[8..12].copy_from_slice(&FLAG_TYPE_REPLY.to_le_bytes());
    reply[REQUEST..].copy_from_slice(&ECHO_DATA.to_le_bytes());
}

/// Serves the ping-pong on standard input (a connected Unix socket) until
/// the peer closes it; `epoll` selects the event-loop shape.
pub fn serve_stdin(epoll: bool) -> anyhow::Result<()> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("stdin")?;
    let s = UnixStream::from(fd);
    if epoll {
        serve_epoll(s)
    } else {
        serve_blocking(s)
    }
}

fn serve_blocking(mut s: UnixStream) -> anyhow::Result<()> {
    let mut req = [0u8; REQUEST];
    let mut reply = [0u8; REPLY];
    loop {
        match s.read_exact(&mut req) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).context("echo read"),
        }
        make_reply(&req, &mut reply);
        s.write_all(&reply).context("echo write")?;
    }
}

fn serve_epoll(mut s: UnixStream) -> anyhow::Result<()> {
    s.set_nonblocking(true).context("O_NONBLOCK")?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    ep.add(
        &s,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
    )
    .context("epoll_ctl")?;
    let mut events = [EpollEvent::empty(); 4];
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let mut reply = [0u8; REPLY];
    loop {
        match ep.wait(&mut events, EpollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        }
        // Read what is there; a short read drained the socket.
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("echo read"),
            }
        }
        let whole = pending.len() / REQUEST * REQUEST;
        for req in pending[..whole].chunks_exact(REQUEST) {
            make_reply(req, &mut reply);
            write_all_nonblocking(&mut s, &reply)?;
        }
        pending.drain(..whole);
    }
}

/// `write_all` on a non-blocking socket (the peer reads every reply before
/// its next request, so this never spins in practice).
fn write_all_nonblocking(s: &mut UnixStream, mut b: &[u8]) -> anyhow::Result<()> {
    while !b.is_empty() {
        match s.write(b) {
            Ok(n) => b = &b[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                std::thread::yield_now()
            }
            Err(e) => return Err(e).context("echo write"),
        }
    }
    Ok(())
}

/// A running echo child and our end of its socket.
#[derive(Debug)]
pub struct EchoPeer {
    /// Our end.
    pub sock: UnixStream,
    child: Child,
}

impl EchoPeer {
    /// Re-executes this binary as `echo-server` (`--epoll` when `epoll`)
    /// on one end of a socketpair.
    pub fn spawn(epoll: bool) -> anyhow::Result<Self> {
        let (ours, theirs) = UnixStream::pair().context("socketpair")?;
        let exe = std::env::current_exe().context("current_exe")?;
        let child = Command::new(exe)
            .arg("echo-server")
            .args(epoll.then_some("--epoll"))
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()
            .context("spawning the echo server")?;
        Ok(EchoPeer { sock: ours, child })
    }

    /// One round trip: write `req`, read a whole reply into `reply`.
    pub fn round_trip(
        &mut self,
        req: &[u8; REQUEST],
        reply: &mut [u8; REPLY],
    ) -> std::io::Result<()> {
        self.sock.write_all(req)?;
        self.sock.read_exact(reply)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}
