//! One vfio-user connection: framing over a non-blocking Unix stream,
//! file descriptors received with SCM_RIGHTS, buffered replies.
//!
//! Reads are greedy (one `recvmsg` may carry several messages). The kernel
//! stops a stream `recvmsg` right after the segment that carries file
//! descriptors, and those descriptors travel with the first segment of the
//! `sendmsg` that sent them; so the fds of one `recvmsg` belong to the last
//! message that starts inside the bytes it returned.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessageOwned, MsgFlags};
use vsmmu_protocol::vfio_user::{Header, HeaderError, HEADER_SIZE};

/// Most fds the kernel passes in one message (SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;
/// Bytes read per `recvmsg`.
const READ_CHUNK: usize = 64 * 1024;

/// A complete message taken off the stream.
#[derive(Debug)]
pub struct Incoming {
    /// Its header.
    pub header: Header,
    /// Header and payload bytes.
    pub bytes: Vec<u8>,
    /// File descriptors that came with it.
    pub fds: Vec<OwnedFd>,
}

/// The stream failed or must be closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// A header that cannot be trusted.
    #[error("bad header: {0}")]
    Header(#[from] HeaderError),
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] Errno),
}

#[derive(Debug)]
struct FdBatch {
    /// Stream offsets of the bytes returned by the `recvmsg` that carried them.
    start: u64,
    end: u64,
    fds: Vec<OwnedFd>,
}

/// Framing state of one connection.
#[derive(Debug)]
pub(crate) struct Connection<S: AsRawFd> {
    stream: S,
    rbuf: Vec<u8>,
    /// Stream offset of `rbuf[0]`.
    rbase: u64,
    batches: VecDeque<FdBatch>,
    wbuf: VecDeque<u8>,
    max_msg_size: usize,
    eof: bool,
    /// Reused across reads: allocating and zeroing 64 KiB per wakeup
    /// dominated the cost of a small message.
    chunk: Box<[u8]>,
    cmsg: Vec<u8>,
}

impl<S: AsRawFd> Connection<S> {
    /// Wraps a connected, non-blocking stream.
    pub(crate) fn new(stream: S, max_msg_size: usize) -> Self {
        Connection {
            stream,
            rbuf: Vec::new(),
            rbase: 0,
            batches: VecDeque::new(),
            wbuf: VecDeque::new(),
            max_msg_size,
            eof: false,
            chunk: vec![0u8; READ_CHUNK].into_boxed_slice(),
            cmsg: nix::cmsg_space!([RawFd; SCM_MAX_FD]),
        }
    }

    /// Mutable access to the stream (for poll registration).
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sets the largest message accepted from now on.
    pub(crate) fn set_max_msg_size(&mut self, max: usize) {
        self.max_msg_size = max;
    }

    /// Reads what the socket has, until it would block or the peer closed.
    /// `hup` is the poller's read-closed hint: then reading goes on to the
    /// end of the stream even after a short read.
    pub(crate) fn fill(&mut self, hup: bool) -> Result<(), ConnError> {
        while !self.eof {
            let (n, fds, truncated) = {
                let mut iov = [IoSliceMut::new(&mut self.chunk)];
                match recvmsg::<()>(
                    self.stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut self.cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(msg) => {
                        let mut fds = Vec::new();
                        if let Ok(cmsgs) = msg.cmsgs() {
                            for c in cmsgs {
                                if let ControlMessageOwned::ScmRights(raw) = c {
                                    for fd in raw {
                                        // SAFETY: the kernel just installed `fd`
                                        // in our table for us; nothing else owns it.
                                        fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                                    }
                                }
                            }
                        }
                        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                        (msg.bytes, fds, truncated)
                    }
                    Err(Errno::EAGAIN) => return Ok(()),
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(ConnError::Io(e)),
                }
            };
            if truncated {
                log::warn!("control data truncated: more than {SCM_MAX_FD} fds in one message");
            }
            if n == 0 {
                self.eof = true;
                break;
            }
            let start = self.rbase + self.rbuf.len() as u64;
            self.rbuf.extend_from_slice(&self.chunk[..n]);
            if !fds.is_empty() {
                self.batches.push_back(FdBatch {
                    start,
                    end: start + n as u64,
                    fds,
                });
            } else if n < self.chunk.len() && !hup {
                // A short read without fds drained the socket: edge-triggered
                // polling reports new data with a new edge.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Takes the next complete message, if one is buffered.
    pub(crate) fn next_message(&mut self) -> Result<Option<Incoming>, ConnError> {
        if self.rbuf.len() < HEADER_SIZE {
            return self.eof_check();
        }
        let header = Header::decode(&self.rbuf).map_err(|_| ConnError::Closed)?;
        header.validate_command(self.max_msg_size)?;
        let size = header.msg_size as usize;
        if self.rbuf.len() < size {
            return self.eof_check();
        }
        let start = self.rbase;
        let end = start + size as u64;
        let mut fds = Vec::new();
        while let Some(b) = self.batches.front() {
            if b.end <= start {
                // Belonged to an earlier message that did not take them.
                self.batches.pop_front();
                continue;
            }
            // This message is the last to start in the batch's bytes when it
            // reaches the batch's end.
            if b.start <= start && end >= b.end {
                if let Some(b) = self.batches.pop_front() {
                    fds.extend(b.fds);
                }
                continue;
            }
            break;
        }
        let bytes: Vec<u8> = self.rbuf.drain(..size).collect();
        self.rbase = end;
        if self.rbuf.capacity() > 4 * READ_CHUNK && self.rbuf.len() < READ_CHUNK {
            self.rbuf.shrink_to(READ_CHUNK);
        }
        Ok(Some(Incoming { header, bytes, fds }))
    }

    fn eof_check(&self) -> Result<Option<Incoming>, ConnError> {
        if self.eof {
            Err(ConnError::Closed)
        } else {
            Ok(None)
        }
    }

    /// Queues a reply and tries to send everything queued.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            let sent = self.write_some(bytes)?;
            self.wbuf.extend(&bytes[sent..]);
        } else {
            self.wbuf.extend(bytes);
            self.flush()?;
        }
        Ok(())
    }

    /// Sends queued bytes until done or the socket is full.
    pub(crate) fn flush(&mut self) -> Result<(), ConnError> {
        while !self.wbuf.is_empty() {
            let (a, _) = self.wbuf.as_slices();
            let n = self.write_some(a)?;
            if n == 0 {
                break;
            }
            self.wbuf.drain(..n);
        }
        Ok(())
    }

    /// True when replies are waiting for the socket to drain.
    pub(crate) fn has_pending_output(&self) -> bool {
        !self.wbuf.is_empty()
    }

    fn write_some(&self, bytes: &[u8]) -> Result<usize, ConnError> {
        let mut off = 0;
        while off < bytes.len() {
            let iov = [IoSlice::new(&bytes[off..])];
            match sendmsg::<()>(
                self.stream.as_raw_fd(),
                &iov,
                &[],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => off += n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(ConnError::Closed),
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        Ok(off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, ControlMessage, SockFlag, SockType};
    use std::os::fd::AsFd;
    use vsmmu_protocol::vfio_user::{Command, Message};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    fn send_with_fds(fd: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
        let iov = [IoSlice::new(bytes)];
        let c = [ControlMessage::ScmRights(fds)];
        let cm: &[ControlMessage] = if fds.is_empty() { &[] } else { &c };
        sendmsg::<()>(fd.as_raw_fd(), &iov, cm, MsgFlags::empty(), None).unwrap();
    }

    #[test]
    fn fds_follow_their_message() {
        let (a, b) = pair();
        let m1 = Message::command(1, Command::DeviceReset).finish();
        let m2 = Message::command(2, Command::DeviceReset)
            .bytes(&[0; 8])
            .finish();
        let m3 = Message::command(3, Command::DeviceReset).finish();
        let e1 = nix::sys::eventfd::EventFd::new().unwrap();
        let e2 = nix::sys::eventfd::EventFd::new().unwrap();
        send_with_fds(&a, &m1, &[]);
        send_with_fds(&a, &m2, &[e1.as_fd().as_raw_fd(), e2.as_fd().as_raw_fd()]);
        send_with_fds(&a, &m3, &[]);
        let mut c = Connection::new(b, 4096);
        let mut got = Vec::new();
        for _ in 0..10 {
            c.fill(false).unwrap();
            while let Some(m) = c.next_message().unwrap() {
                got.push((m.header.msg_id, m.fds.len(), m.bytes.len()));
            }
            if got.len() == 3 {
                break;
            }
        }
        assert_eq!(got, [(1, 0, 16), (2, 2, 24), (3, 0, 16)]);
    }

    #[test]
    fn partial_messages_and_eof() {
        let (a, b) = pair();
        let m = Message::command(9, Command::DeviceReset)
            .bytes(&[7; 20])
            .finish();
        nix::unistd::write(&a, &m[..10]).unwrap();
        let mut c = Connection::new(b, 4096);
        c.fill(false).unwrap();
        assert!(c.next_message().unwrap().is_none());
        nix::unistd::write(&a, &m[10..]).unwrap();
        c.fill(false).unwrap();
        let got = c.next_message().unwrap().unwrap();
        assert_eq!(got.bytes, m);
        drop(a);
        c.fill(false).unwrap();
        assert!(matches!(c.next_message(), Err(ConnError::Closed)));
    }

    #[test]
    fn oversized_header_is_fatal() {
        let (a, b) = pair();
        let mut m = Message::command(9, Command::DeviceReset).finish();
        m[4..8].copy_from_slice(&100_000u32.to_le_bytes());
        nix::unistd::write(&a, &m).unwrap();
        let mut c = Connection::new(b, 4096);
        c.fill(false).unwrap();
        assert!(matches!(
            c.next_message(),
            Err(ConnError::Header(HeaderError::SizeTooLarge {
                size: 100_000,
                max: 4096
            }))
        ));
    }
}
