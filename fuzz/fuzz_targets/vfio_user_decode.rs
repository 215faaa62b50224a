//! vfio-user framing and payload decoding on arbitrary bytes.
//!
//! The input is a message as a client could send it: a header, then a
//! payload. Every decoder must return a typed result, never panic, and
//! agree with itself: a request decodes to the command its header names,
//! and every decode error maps to an errno the server can reply with.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vsmmu_protocol::vfio_user::{
    libc_errno, Command, DecodeError, Header, HeaderError, Request, HEADER_SIZE,
};

/// The server's default limit: 1 MiB of data plus headers.
const MAX_MSG_SIZE: usize = (1 << 20) + 64;

fn check_decode(hdr: &Header, payload: &[u8]) {
    match Request::decode(hdr, payload) {
        Ok(req) => {
            assert_eq!(req.command() as u16, hdr.command, "{req:?}");
            assert!(!matches!(
                req.command(),
                Command::DmaRead | Command::DmaWrite
            ));
        }
        Err(e) => {
            let errno = e.errno();
            assert!(
                errno == libc_errno::EINVAL || errno == libc_errno::ENOSYS,
                "{e}: errno {errno}"
            );
            if let DecodeError::UnknownCommand(c) = e {
                assert_eq!(c, hdr.command);
                assert!(Command::try_from(c).is_err());
            }
            // The log line must render.
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let hdr = match Header::decode(data) {
        Ok(h) => h,
        Err(e) => {
            assert!(data.len() < HEADER_SIZE, "{e}");
            return;
        }
    };
    for max in [0, HEADER_SIZE, MAX_MSG_SIZE, usize::MAX] {
        match hdr.validate_command(max) {
            Ok(()) => {
                let size = hdr.msg_size as usize;
                assert!((HEADER_SIZE..=max).contains(&size));
                assert_eq!(hdr.flags & 0xf, 0, "a command");
            }
            Err(HeaderError::SizeTooLarge { size, max: m }) => {
                assert_eq!(m, max);
                assert!(size as usize > max);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let rest = &data[HEADER_SIZE..];
    // As the server sees it: exactly msg_size bytes, when the stream holds them.
    if hdr.validate_command(MAX_MSG_SIZE).is_ok() {
        if let Some(payload) = rest.get(..hdr.msg_size as usize - HEADER_SIZE) {
            check_decode(&hdr, payload);
        }
    }
    // The whole rest under this header, and under every defined command so
    // that each payload decoder sees every input.
    check_decode(&hdr, rest);
    for &cmd in Command::ALL {
        check_decode(
            &Header {
                command: cmd as u16,
                ..hdr
            },
            rest,
        );
    }
});
