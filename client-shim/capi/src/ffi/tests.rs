//! Tests of the C ABI.

use super::open::negotiated;
use super::*;

fn last() -> (i32, String) {
    // SAFETY: plain getters; the string is copied before the next call.
    let msg = unsafe { CStr::from_ptr(vsmmu_last_error()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: plain getter.
    (unsafe { vsmmu_last_errno() }, msg)
}

#[test]
fn null_handles_are_einval() {
    let mut v = 0u64;
    let null = std::ptr::null_mut();
    // SAFETY: NULL handles are part of every function's contract.
    unsafe {
        assert_eq!(vsmmu_mmio_read(null, 0, 4, &mut v), -libc::EINVAL);
    }
    assert_eq!(
        last(),
        (libc::EINVAL, "vsmmu_mmio_read: NULL handle".into())
    );
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_mmio_write(null, 0, 4, 0, true), -libc::EINVAL);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_server_alive(null), -libc::EINVAL);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_server_pid(null), -1);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_socket_fd(null), -1);
    }
    // SAFETY: NULL is ignored.
    unsafe { vsmmu_close(null) };
    assert_eq!(last(), (0, String::new()));
    // SAFETY: NULL path is part of the contract.
    assert!(unsafe { vsmmu_connect(std::ptr::null()) }.is_null());
    assert_eq!(
        last(),
        (libc::EINVAL, "vsmmu_connect: socket_path is NULL".into())
    );
}

#[test]
fn connect_failure_reports_errno_and_message() {
    // SAFETY: a valid C string.
    let c = unsafe { vsmmu_connect(c"/nonexistent/vsmmu.sock".as_ptr()) };
    assert!(c.is_null());
    let (errno, msg) = last();
    assert_eq!(errno, libc::ENOENT);
    assert!(
        msg.starts_with("vsmmu_connect: /nonexistent/vsmmu.sock: i/o: "),
        "{msg}"
    );
    // SAFETY: a missing binary is an ordinary spawn failure.
    let c = unsafe {
        vsmmu_spawn(
            c"/nonexistent/vsmmud".as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert!(c.is_null());
    assert_eq!(last().0, libc::ENOENT);
}

/// A server stand-in's read of one message: its header (the payload is
/// read and dropped).
fn recv(s: &mut std::os::unix::net::UnixStream) -> vsmmu_protocol::vfio_user::Header {
    use std::io::Read;
    use vsmmu_protocol::vfio_user::{Header, HEADER_SIZE};
    let mut h = [0u8; HEADER_SIZE];
    s.read_exact(&mut h).unwrap();
    let h = Header::decode(&h).unwrap();
    let mut p = vec![0u8; h.msg_size as usize - HEADER_SIZE];
    s.read_exact(&mut p).unwrap();
    h
}

/// A server stand-in's answer to the client's VERSION.
fn answer_version(s: &mut std::os::unix::net::UnixStream) {
    use std::io::Write;
    use vsmmu_protocol::vfio_user::Message;
    let h = recv(s);
    let mut reply = vec![0u8, 0, 2, 0];
    reply.extend_from_slice(br#"{"capabilities":{"vsmmu":{"version":1}}}"#);
    reply.push(0);
    s.write_all(&Message::reply(&h).bytes(&reply).finish())
        .unwrap();
}

/// A server stand-in: answers VERSION, then one error reply, then
/// hangs up.
#[test]
fn calls_through_a_socketpair() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use vsmmu_protocol::vfio_user::{Command, Message};

    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        answer_version(&mut theirs);
        let h = recv(&mut theirs);
        assert_eq!(h.command, Command::VsmmuDetachDevice as u16);
        let m = Message::error_reply(&h, libc::ENOENT);
        theirs.write_all(&m).unwrap();
    });
    let c = Box::into_raw(Box::new(
        negotiated(Client::from_stream(ours), "test").unwrap(),
    ));
    // SAFETY: `c` is a live handle used by this thread only.
    unsafe {
        assert_eq!(vsmmu_detach_device(c, 0x10), -libc::ENOENT);
    }
    let (errno, msg) = last();
    assert_eq!(errno, libc::ENOENT);
    assert!(msg.starts_with("vsmmu_detach_device: vSID 0x10: "), "{msg}");
    let mut v = 0;
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_mmio_read(c, 0, 2, &mut v), -libc::EINVAL);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_dma_map(c, -1, 0, 0, 4096), -libc::EINVAL);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_get_stats(c, std::ptr::null_mut(), 8), -libc::EINVAL);
    }
    server.join().unwrap();
    // The stand-in has hung up. (A fork by a test running in parallel
    // can hold a copy of its socket for a moment: wait for the HUP.)
    let t0 = std::time::Instant::now();
    // SAFETY: as above.
    while unsafe { vsmmu_server_alive(c) } != 0 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "no HUP");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_mmio_read(c, 0, 4, &mut v), -libc::EPIPE);
    }
    assert_eq!(last().0, libc::EPIPE);
    // SAFETY: as above.
    unsafe {
        assert_eq!(vsmmu_server_pid(c), -1);
    }
    // SAFETY: closed once, not used afterwards.
    unsafe { vsmmu_close(c) };
}

/// A server stand-in whose VSMMU_GET_STATS reply has a counter this
/// library does not know: the C caller gets the server's JSON byte for
/// byte, and snprintf-style truncation; a reply that is not an object of
/// counters is EPROTO.
#[test]
fn stats_pass_the_servers_json_through() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use vsmmu_protocol::vfio_user::{Command, Message};

    const JSON: &str = r#"{"cmds_consumed":7,"counter_of_a_newer_vsmmud":5}"#;
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        answer_version(&mut theirs);
        for json in [JSON, JSON, "[]"] {
            let h = recv(&mut theirs);
            assert_eq!(h.command, Command::VsmmuGetStats as u16);
            let mut payload = (8 + json.len() as u32).to_le_bytes().to_vec();
            payload.extend_from_slice(&0u32.to_le_bytes());
            payload.extend_from_slice(json.as_bytes());
            theirs
                .write_all(&Message::reply(&h).bytes(&payload).finish())
                .unwrap();
        }
    });
    let c = Box::into_raw(Box::new(
        negotiated(Client::from_stream(ours), "test").unwrap(),
    ));
    let mut buf = [0x55u8; 128];
    // SAFETY: `c` is a live handle used by this thread only; `buf` has
    // 128 writable bytes.
    let n = unsafe { vsmmu_get_stats(c, buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, JSON.len() as i32);
    assert_eq!(&buf[..JSON.len()], JSON.as_bytes());
    assert_eq!(buf[JSON.len()], 0);
    // Truncated to 10 bytes and the NUL; the whole length returned.
    let mut small = [0x55u8; 11];
    // SAFETY: as above, 11 bytes.
    let n = unsafe { vsmmu_get_stats(c, small.as_mut_ptr().cast(), small.len()) };
    assert_eq!(n, JSON.len() as i32);
    assert_eq!(&small[..10], &JSON.as_bytes()[..10]);
    assert_eq!(small[10], 0);
    // Not an object of counters: refused, the buffer untouched.
    let mut untouched = [0x55u8; 16];
    // SAFETY: as above, 16 bytes.
    let n = unsafe { vsmmu_get_stats(c, untouched.as_mut_ptr().cast(), untouched.len()) };
    assert_eq!(n, -libc::EPROTO);
    assert_eq!(untouched, [0x55u8; 16]);
    server.join().unwrap();
    // SAFETY: `c` is live and not used again.
    unsafe { vsmmu_close(c) };
}
