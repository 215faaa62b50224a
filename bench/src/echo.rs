//! The raw-socket baseline: this binary, re-executed in its hidden
//! `echo-server` mode, answers every 32-byte request with a 36-byte reply
//! over blocking `read`/`write` on a socketpair. Same message sizes as a
//! REGION_READ of a 32-bit register, no framing, no dispatch.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// Request size: a vfio-user header (16) + REGION_READ payload (16).
pub const REQUEST: usize = 32;
/// Reply size: header (16) + payload (16) + 4 data bytes.
pub const REPLY: usize = 36;

/// Serves the ping-pong on standard input (a connected Unix socket) until
/// the peer closes it.
pub fn serve_stdin() -> anyhow::Result<()> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("stdin")?;
    let mut s = UnixStream::from(fd);
    let mut req = [0u8; REQUEST];
    let mut reply = [0u8; REPLY];
    loop {
        match s.read_exact(&mut req) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e).context("echo read"),
        }
        // Echo the header as a reply would, so the bytes are not constant.
        reply[..REQUEST].copy_from_slice(&req);
        s.write_all(&reply).context("echo write")?;
    }
}

/// A running echo child and our end of its socket.
#[derive(Debug)]
pub struct EchoPeer {
    /// Our end.
    pub sock: UnixStream,
    child: Child,
}

impl EchoPeer {
    /// Re-executes this binary as `echo-server` on one end of a socketpair.
    pub fn spawn() -> anyhow::Result<Self> {
        let (ours, theirs) = UnixStream::pair().context("socketpair")?;
        let exe = std::env::current_exe().context("current_exe")?;
        let child = Command::new(exe)
            .arg("echo-server")
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
