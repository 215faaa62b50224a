//! vfio-user conformance: every command's success path and every error
//! path, exact reply bytes, against the real `vsmmud` over a real socket.

use std::os::fd::AsFd;

use vsmmu_client::ClientError;
use vsmmu_guest::GuestRam;
use vsmmu_protocol::vfio_user::{
    self as vu, Command, DmaMap, DmaUnmap, IrqSet, RegionAccess, VersionData,
};
use vsmmu_tests::*;
use vsmmu_testutil::msg::irq_eventfds;
use zerocopy::IntoBytes;

const C_VERSION: u16 = Command::Version as u16;

#[test]
fn version_negotiation() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    // QEMU proposes 0.0 with no capabilities we know: minor 0, no vsmmu.
    let reply = r.version(
        0,
        r#"{"capabilities":{"max_msg_fds":16,"twin_socket":{"supported":true}}}"#,
    );
    let p = assert_ok(&reply, C_VERSION);
    assert_eq!(&p[..4], &[0, 0, 0, 0]);
    let caps = VersionData::decode(&p[4..]).unwrap().capabilities;
    assert_eq!(caps.max_msg_fds, Some(8));
    assert_eq!(caps.max_data_xfer_size, Some(1 << 20));
    assert_eq!(caps.pgsizes, Some(4096));
    assert_eq!(caps.max_dma_maps, Some(1024));
    assert_eq!(caps.write_multiple, Some(true));
    assert_eq!(caps.vsmmu, None);
    assert_eq!(*p.last().unwrap(), 0, "JSON is NUL-terminated");
    // A second VERSION is refused.
    assert_error(&r.version(0, "{}"), C_VERSION, 22);
    // Extension commands were not negotiated: ENOSYS.
    let stats = r.call(
        5,
        Command::VsmmuGetStats as u16,
        &[8, 0, 0, 0, 0, 0, 0, 0],
        &[],
    );
    assert_error(&stats, Command::VsmmuGetStats as u16, 38);
}

#[test]
fn version_minor_is_the_lower_one_and_vsmmu_is_echoed() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    let p = assert_ok(
        &r.version(7, r#"{"capabilities":{"vsmmu":{"version":1}}}"#),
        C_VERSION,
    );
    assert_eq!(&p[..4], &[0, 0, 2, 0]);
    let text = std::str::from_utf8(&p[4..p.len() - 1]).unwrap();
    assert_eq!(
        text,
        r#"{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":1024,"migration":{"pgsize":4096,"max_bitmap_size":0},"write_multiple":true,"vsmmu":{"version":1}}}"#
    );
}

#[test]
fn version_errors_close_the_connection() {
    let srv = TestServer::start(&[]);
    // JSON without the terminating NUL.
    let mut r = srv.raw();
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(b"{}");
    assert_error(&r.call(1, C_VERSION, &p, &[]), C_VERSION, 22);
    assert!(r.closed_by_server());
    // Wrong major.
    let mut r = srv.raw();
    assert_error(&r.call(1, C_VERSION, &[1, 0, 0, 0], &[]), C_VERSION, 95);
    assert!(r.closed_by_server());
    // The server still serves the next client.
    let mut c = srv.client();
    assert_eq!(c.read32(0x18).unwrap(), 0);
}

#[test]
fn commands_before_version_are_refused() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    let reply = r.call(
        3,
        Command::DeviceGetInfo as u16,
        &[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
    );
    assert_error(&reply, Command::DeviceGetInfo as u16, 22);
}

#[test]
fn device_region_and_irq_info() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    r.negotiate();
    let info = assert_ok(
        &r.call(
            2,
            Command::DeviceGetInfo as u16,
            &[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
        ),
        Command::DeviceGetInfo as u16,
    );
    // argsz 16, flags PLATFORM|RESET, 1 region, 4 irqs.
    assert_eq!(info, [16, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0]);

    let req = vu::RegionInfo {
        argsz: vu::RegionInfo::SIZE,
        index: 0,
        ..Default::default()
    };
    let ri = assert_ok(&r.call(3, 5, req.as_bytes(), &[]), 5);
    assert_eq!(
        ri,
        [
            32, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0
        ]
    );
    let bad = vu::RegionInfo {
        argsz: vu::RegionInfo::SIZE,
        index: 1,
        ..Default::default()
    };
    assert_error(&r.call(4, 5, bad.as_bytes(), &[]), 5, 22);
    let short = vu::RegionInfo {
        argsz: 16,
        index: 0,
        ..Default::default()
    };
    assert_error(&r.call(4, 5, short.as_bytes(), &[]), 5, 22);

    for index in 0..4u32 {
        let q = vu::IrqInfo {
            argsz: vu::IrqInfo::SIZE,
            index,
            ..Default::default()
        };
        let p = assert_ok(&r.call(5, 7, q.as_bytes(), &[]), 7);
        assert_eq!(
            p,
            [
                &16u32.to_le_bytes()[..],
                &3u32.to_le_bytes(),
                &index.to_le_bytes(),
                &1u32.to_le_bytes()
            ]
            .concat()
        );
    }
    let q = vu::IrqInfo {
        argsz: vu::IrqInfo::SIZE,
        index: 4,
        ..Default::default()
    };
    assert_error(&r.call(6, 7, q.as_bytes(), &[]), 7, 22);

    let f = vu::RegionIoFds {
        argsz: vu::RegionIoFds::SIZE,
        index: 0,
        ..Default::default()
    };
    assert_eq!(
        assert_ok(&r.call(7, 6, f.as_bytes(), &[]), 6),
        [16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn id_registers_and_cr0ack_through_the_shim() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    let idr0 = c.read32(0x0).unwrap();
    let idr1 = c.read32(0x4).unwrap();
    // 64-bit read of IDR0/IDR1 returns both.
    assert_eq!(
        c.read64(0x0).unwrap(),
        u64::from(idr1) << 32 | u64::from(idr0)
    );
    // ID registers are read-only.
    c.write32(0x0, 0xffff_ffff).unwrap();
    assert_eq!(c.read32(0x0).unwrap(), idr0);
    c.write32(0x20, 0x8).unwrap();
    assert_eq!(c.read32(0x24).unwrap(), 0x8);
    // Unknown offsets read as zero, writes ignored.
    c.write32(0x1000, 0x1234).unwrap();
    assert_eq!(c.read32(0x1000).unwrap(), 0);
}

#[test]
fn region_access_errors() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    r.negotiate();
    let read = |r: &mut Raw, offset: u64, region: u32, count: u32| {
        let a = RegionAccess {
            offset,
            region,
            count,
        };
        r.call(9, 9, a.as_bytes(), &[])
    };
    assert_error(&read(&mut r, 0x2, 0, 4), 9, 22); // unaligned
    assert_error(&read(&mut r, 0x4, 0, 8), 9, 22); // unaligned for 8
    assert_error(&read(&mut r, 0x0, 0, 2), 9, 22); // size
    assert_error(&read(&mut r, 0x20000, 0, 4), 9, 22); // outside
    assert_error(&read(&mut r, 0x1fffc, 0, 8), 9, 22); // crosses the end
    assert_error(&read(&mut r, 0x0, 1, 4), 9, 22); // region
    assert_error(&read(&mut r, u64::MAX - 3, 0, 4), 9, 22); // wraps
                                                            // A good read echoes the access and carries the data.
    let p = assert_ok(&read(&mut r, 0x1c, 0, 4), 9);
    assert_eq!(
        &p[..16],
        RegionAccess {
            offset: 0x1c,
            region: 0,
            count: 4
        }
        .as_bytes()
    );
    assert_eq!(&p[16..], &[1, 0, 0, 0], "AIDR = SMMUv3.1");
    // Write with count disagreeing with the data.
    let mut w = RegionAccess {
        offset: 0x20,
        region: 0,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    w.extend_from_slice(&[1, 2]);
    assert_error(&r.call(10, 10, &w, &[]), 10, 22);
    // A good write echoes the access without data.
    let mut w = RegionAccess {
        offset: 0x44,
        region: 0,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    w.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        assert_ok(&r.call(11, 10, &w, &[]), 10),
        RegionAccess {
            offset: 0x44,
            region: 0,
            count: 4
        }
        .as_bytes()
    );
    // Truncated payload.
    assert_error(&r.call(12, 9, &[0; 15], &[]), 9, 22);
}

#[test]
fn posted_writes_get_no_reply_and_errors_are_counted() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    // A posted write that fails (unaligned) is logged and counted.
    let a = RegionAccess {
        offset: 0x21,
        region: 0,
        count: 4,
    };
    let mut p = a.as_bytes().to_vec();
    p.extend_from_slice(&[1, 0, 0, 0]);
    c.post(Command::RegionWrite, &p).unwrap();
    // A posted write that works.
    c.mmio_write(0x20, 4, 0x8, true).unwrap();
    // The next acknowledged request proves both were handled in order.
    assert_eq!(c.read32(0x24).unwrap(), 0x8);
    assert_eq!(c.stats().unwrap().posted_errors, 1);
    assert!(srv.log_text().contains("posted RegionWrite"));
}

#[test]
fn replies_that_back_up_go_out_as_the_client_reads() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    let idr0 = c.read32(0x0).unwrap();
    // Far more replies than the socket holds: the server keeps the rest
    // until the client reads, and must then be told the socket has room.
    let a = RegionAccess {
        offset: 0x0,
        region: 0,
        count: 4,
    };
    let payloads = vec![a.as_bytes().to_vec(); 20_000];
    // A server that is never told would leave the client waiting forever:
    // fail instead of hanging.
    c.socket()
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let replies = c.pipeline(Command::RegionRead, &payloads).unwrap();
    assert_eq!(replies.len(), payloads.len());
    for r in &replies {
        assert_eq!(r[16..], idr0.to_le_bytes());
    }
    assert_eq!(c.read32(0x0).unwrap(), idr0);
}

#[test]
fn write_multi() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    assert_eq!(
        c.write_multi(&[(0x28, 4, 0xd75), (0x2c, 4, 0x6), (0x80, 8, 0x1234_5640)])
            .unwrap(),
        3
    );
    assert_eq!(c.read32(0x28).unwrap(), 0xd75);
    assert_eq!(c.read32(0x2c).unwrap(), 0x6);
    assert_eq!(c.read64(0x80).unwrap(), 0x1234_5640);
    // One bad entry rejects the whole batch, nothing applied.
    let err = c.write_multi(&[(0x28, 4, 0), (0x31, 4, 1)]).unwrap_err();
    assert_eq!(err.errno(), 22);
    assert_eq!(c.read32(0x28).unwrap(), 0xd75);
}

#[test]
fn dma_map_and_unmap() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    r.negotiate();
    let ram = GuestRam::new(0x4000_0000, 0x10_0000).unwrap();
    let map =
        |r: &mut Raw, addr: u64, size: u64, offset: u64, fds: &[std::os::fd::BorrowedFd<'_>]| {
            let m = DmaMap {
                argsz: DmaMap::SIZE,
                flags: 3,
                offset,
                addr,
                size,
            };
            r.call(20, 2, m.as_bytes(), fds)
        };
    assert_eq!(
        assert_ok(&map(&mut r, 0x4000_0000, 0x8_0000, 0, &[ram.fd()]), 2),
        Vec::<u8>::new()
    );
    // Over an existing mapping.
    assert_error(&map(&mut r, 0x4004_0000, 0x8_0000, 0, &[ram.fd()]), 2, 17);
    // The stream stays in sync after EEXIST.
    assert_eq!(
        assert_ok(
            &map(&mut r, 0x4008_0000, 0x8_0000, 0x8_0000, &[ram.fd()]),
            2
        ),
        Vec::<u8>::new()
    );
    // Zero size, unaligned, no fd, two fds, beyond the file.
    assert_error(&map(&mut r, 0x5000_0000, 0, 0, &[ram.fd()]), 2, 22);
    assert_error(&map(&mut r, 0x5000_0100, 0x1000, 0, &[ram.fd()]), 2, 22);
    assert_error(&map(&mut r, 0x5000_0000, 0x1000, 0x10, &[ram.fd()]), 2, 22);
    assert_error(&map(&mut r, 0x5000_0000, 0x1000, 0, &[]), 2, 22);
    assert_error(
        &map(&mut r, 0x5000_0000, 0x1000, 0, &[ram.fd(), ram.fd()]),
        2,
        22,
    );
    assert_error(&map(&mut r, 0x5000_0000, 0x20_0000, 0, &[ram.fd()]), 2, 22);
    // argsz other than 32.
    let m = DmaMap {
        argsz: 24,
        flags: 3,
        offset: 0,
        addr: 0x6000_0000,
        size: 0x1000,
    };
    assert_error(&r.call(21, 2, m.as_bytes(), &[ram.fd()]), 2, 22);

    // UNMAP must match exactly; the reply echoes the entry.
    let u = DmaUnmap {
        argsz: DmaUnmap::SIZE,
        flags: 0,
        addr: 0x4000_0000,
        size: 0x4_0000,
    };
    assert_error(&r.call(22, 3, u.as_bytes(), &[]), 3, 22);
    let u = DmaUnmap {
        argsz: DmaUnmap::SIZE,
        flags: 0,
        addr: 0x4000_0000,
        size: 0x8_0000,
    };
    assert_eq!(
        assert_ok(&r.call(23, 3, u.as_bytes(), &[]), 3),
        u.as_bytes()
    );
    assert_error(&r.call(24, 3, u.as_bytes(), &[]), 3, 22);
    let bad = DmaUnmap { flags: 1, ..u };
    assert_error(&r.call(25, 3, bad.as_bytes(), &[]), 3, 22);
}

#[test]
fn set_irqs() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    let efd = eventfd();
    let base = irq_eventfds(3, 1);
    c.set_irqs(&base, &[], &[efd.as_fd()]).unwrap();
    // The client triggers it itself: DATA_NONE | TRIGGER.
    let trig = IrqSet {
        flags: vu::VFIO_IRQ_SET_DATA_NONE | vu::VFIO_IRQ_SET_ACTION_TRIGGER,
        ..base
    };
    c.set_irqs(&trig, &[], &[]).unwrap();
    assert_eq!(eventfd_count(&efd), 1);
    // Masked: the trigger is held, delivered at unmask.
    let mask = IrqSet {
        flags: vu::VFIO_IRQ_SET_DATA_NONE | vu::VFIO_IRQ_SET_ACTION_MASK,
        ..base
    };
    let unmask = IrqSet {
        flags: vu::VFIO_IRQ_SET_DATA_NONE | vu::VFIO_IRQ_SET_ACTION_UNMASK,
        ..base
    };
    c.set_irqs(&mask, &[], &[]).unwrap();
    c.set_irqs(&trig, &[], &[]).unwrap();
    assert_eq!(eventfd_count(&efd), 0);
    c.set_irqs(&unmask, &[], &[]).unwrap();
    assert_eq!(eventfd_count(&efd), 1);
    // DATA_BOOL: triggers only where true.
    let b = IrqSet {
        argsz: 21,
        flags: vu::VFIO_IRQ_SET_DATA_BOOL | vu::VFIO_IRQ_SET_ACTION_TRIGGER,
        ..base
    };
    c.set_irqs(&b, &[0], &[]).unwrap();
    assert_eq!(eventfd_count(&efd), 0);
    c.set_irqs(&b, &[1], &[]).unwrap();
    assert_eq!(eventfd_count(&efd), 1);
    // count 0 with DATA_NONE tears down: a trigger signals nothing.
    let off = IrqSet {
        flags: vu::VFIO_IRQ_SET_DATA_NONE | vu::VFIO_IRQ_SET_ACTION_TRIGGER,
        count: 0,
        ..base
    };
    c.set_irqs(&off, &[], &[]).unwrap();
    c.set_irqs(&trig, &[], &[]).unwrap();
    assert_eq!(eventfd_count(&efd), 0);

    let errno = |r: Result<(), ClientError>| r.unwrap_err().errno();
    assert_eq!(
        errno(c.set_irqs(&IrqSet { index: 4, ..base }, &[], &[efd.as_fd()])),
        22
    );
    assert_eq!(
        errno(c.set_irqs(&IrqSet { start: 1, ..base }, &[], &[efd.as_fd()])),
        22
    );
    assert_eq!(
        errno(c.set_irqs(&IrqSet { count: 2, ..base }, &[], &[efd.as_fd()])),
        22
    );
    assert_eq!(
        errno(c.set_irqs(
            &IrqSet {
                flags: vu::VFIO_IRQ_SET_ACTION_TRIGGER,
                ..base
            },
            &[],
            &[]
        )),
        22
    );
    assert_eq!(
        errno(c.set_irqs(&IrqSet { argsz: 24, ..base }, &[], &[efd.as_fd()])),
        22
    );
    // Too many fds for one vector.
    assert_eq!(
        errno(c.set_irqs(&base, &[], &[efd.as_fd(), efd.as_fd()])),
        22
    );
    // fds with DATA_NONE.
    assert_eq!(errno(c.set_irqs(&trig, &[], &[efd.as_fd()])), 22);
}

#[test]
fn reset_restores_registers() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    c.write32(0x28, 0xd75).unwrap();
    c.write32(0x20, 0x8).unwrap();
    c.reset().unwrap();
    assert_eq!(c.read32(0x28).unwrap(), 0);
    assert_eq!(c.read32(0x20).unwrap(), 0);
    assert_eq!(c.read32(0x24).unwrap(), 0);
}

#[test]
fn unknown_command_is_enosys() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    r.negotiate();
    assert_error(&r.call(30, 14, &[], &[]), 14, 38);
    assert_error(&r.call(31, 0x2000, &[1, 2, 3], &[]), 0x2000, 38);
    // DMA_READ/WRITE go server to client only.
    assert_error(&r.call(32, 11, &[0; 16], &[]), 11, 38);
    // Still in sync.
    let p = assert_ok(&r.call(33, 13, &[], &[]), 13);
    assert!(p.is_empty());
}

#[test]
fn garbage_header_closes_only_that_connection() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    r.negotiate();
    // msg_size smaller than a header.
    let mut m = vu::Message::command(40, Command::DeviceReset).finish();
    m[4..8].copy_from_slice(&8u32.to_le_bytes());
    r.send(&m);
    assert!(r.closed_by_server());
    // A size above the maximum.
    let mut r = srv.raw();
    r.negotiate();
    let mut m = vu::Message::command(41, Command::DeviceReset).finish();
    m[4..8].copy_from_slice(&(64u32 << 20).to_le_bytes());
    r.send(&m);
    assert!(r.closed_by_server());
    // A reply-typed message.
    let mut r = srv.raw();
    r.send(&vu::Message::new(1, 1, vu::FLAG_TYPE_REPLY, 0).finish());
    assert!(r.closed_by_server());
    // The server still works.
    let mut c = srv.client();
    assert_eq!(c.read32(0x1c).unwrap(), 1);
    // A closed connection carries no reason; the log has it.
    assert!(srv
        .log_text()
        .contains("message size 8 is smaller than the 16-byte header"));
}

#[test]
fn client_killed_mid_stream_then_a_new_client_works() {
    let srv = TestServer::start(&[]);
    let ram = GuestRam::new(0x4000_0000, 0x1_0000).unwrap();
    {
        let mut c = srv.client();
        c.dma_map(ram.fd(), 0, 0x4000_0000, 0x1_0000).unwrap();
        c.write32(0x28, 0xd75).unwrap();
        // Half a message, then the connection dies.
        let msg = vu::Message::command(50, Command::RegionRead)
            .push(&RegionAccess {
                offset: 0,
                region: 0,
                count: 4,
            })
            .finish();
        c.send_raw(&msg[..10], &[]).unwrap();
    }
    srv.wait_clients_gone();
    let mut c = srv.client();
    // Device state kept.
    assert_eq!(c.read32(0x28).unwrap(), 0xd75);
    // Mappings were released: the same range maps again.
    c.dma_map(ram.fd(), 0, 0x4000_0000, 0x1_0000).unwrap();
}

#[test]
fn second_client_is_refused_while_one_is_served() {
    let srv = TestServer::start(&[]);
    let mut a = srv.client();
    let mut b = srv.raw_now();
    assert!(b.closed_by_server());
    assert_eq!(a.read32(0x1c).unwrap(), 1);
    // The refused client only sees the close; the log says why.
    assert!(srv.log_text().contains("refusing a second client"));
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_socket() {
    let mut srv = TestServer::start(&[]);
    let _c = srv.client();
    let path = srv.socket().to_path_buf();
    let st = srv.terminate();
    assert_eq!(st.code(), Some(0));
    assert!(!path.exists());
}

#[test]
fn extension_commands() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    assert_eq!(c.attach_device(0x10, None).unwrap(), 1);
    assert_eq!(c.attach_device(0x10, None).unwrap_err().errno(), 17);
    assert_eq!(c.detach_device(0x11).unwrap_err().errno(), 2);
    c.detach_device(0x10).unwrap();
    // SIM_INJECT before the vEVENTQ exists.
    assert_eq!(
        c.sim_inject(&[[0x10 << 32 | 0x10, 0, 0, 0]])
            .unwrap_err()
            .errno(),
        19
    );
    let stats = c.stats().unwrap();
    // EEXIST, ENOENT, ENODEV; nothing reached the event path.
    assert_eq!(stats.error_replies, 3);
    assert_eq!(stats.host_events_read, 0);
    assert_eq!(stats.clients, 1);
}

#[test]
fn vmm_bound_attach_needs_an_iommufd_host() {
    let srv = TestServer::start(&[]);
    let mut c = srv.client();
    let a = eventfd();
    let b = eventfd();
    // The sim host has no iommufd to work in: EOPNOTSUPP, nothing attached.
    let err = c
        .attach_vmm_device(0x10, a.as_fd(), b.as_fd(), 3, 5)
        .unwrap_err();
    assert_eq!(err.errno(), libc::EOPNOTSUPP);
    assert_eq!(c.detach_device(0x10).unwrap_err().errno(), libc::ENOENT);
    // The errno cannot say what to do about it; the log does.
    assert!(
        srv.log_text().contains(
            "vSID 0x10: device id 3 was bound by the VMM to its iommufd; the sim host has none \
             to work in (run vsmmud with --host iommufd)"
        ),
        "{}",
        srv.log_text()
    );
    // The bound form with one fd, or three: EINVAL.
    drop(c);
    srv.wait_clients_gone();
    let mut r = srv.raw();
    r.negotiate();
    let bound = [
        24, 0, 0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0,
    ];
    assert_error(
        &r.call(61, 0x1000, &bound, &[a.as_fd()]),
        0x1000,
        libc::EINVAL,
    );
    let fds = [a.as_fd(), b.as_fd(), a.as_fd()];
    assert_error(&r.call(62, 0x1000, &bound, &fds), 0x1000, libc::EINVAL);
}

#[test]
fn malformed_extension_payload_is_einval() {
    let srv = TestServer::start(&[]);
    let mut r = srv.raw();
    r.negotiate();
    // flags must be 0.
    assert_error(
        &r.call(
            60,
            0x1000,
            &[16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
        ),
        0x1000,
        22,
    );
    // Truncated.
    assert_error(&r.call(61, 0x1001, &[16, 0, 0, 0], &[]), 0x1001, 22);
    // SIM_INJECT count disagrees with the records.
    assert_error(
        &r.call(62, 0x1002, &[40, 0, 0, 0, 2, 0, 0, 0], &[]),
        0x1002,
        22,
    );
}
