use super::*;

fn hdr(cmd: Command, payload_len: usize) -> Header {
    Header {
        msg_id: 7,
        command: cmd as u16,
        msg_size: (HEADER_SIZE + payload_len) as u32,
        flags: 0,
        error_no: 0,
    }
}

#[test]
fn header_bytes() {
    let h = Header {
        msg_id: 0x1234,
        command: 9,
        msg_size: 32,
        flags: FLAG_NO_REPLY,
        error_no: 0,
    };
    assert_eq!(
        h.as_bytes(),
        &[0x34, 0x12, 9, 0, 32, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(Header::decode(h.as_bytes()).unwrap(), h);
    assert!(h.no_reply());
    assert_eq!(
        Header::decode(&[0; 15]),
        Err(DecodeError::Truncated {
            what: "header",
            need: 16,
            got: 15
        })
    );
}

#[test]
fn header_validation() {
    let mut h = hdr(Command::Version, 0);
    assert_eq!(h.validate_command(4096), Ok(()));
    h.msg_size = 15;
    assert_eq!(h.validate_command(4096), Err(HeaderError::SizeTooSmall(15)));
    h.msg_size = 4097;
    assert_eq!(
        h.validate_command(4096),
        Err(HeaderError::SizeTooLarge {
            size: 4097,
            max: 4096
        })
    );
    h.msg_size = 16;
    h.flags = FLAG_TYPE_REPLY;
    assert_eq!(h.validate_command(4096), Err(HeaderError::NotACommand(1)));
    h.flags = 1 << 9;
    assert_eq!(
        h.validate_command(4096),
        Err(HeaderError::UnknownFlags(1 << 9))
    );
}

#[test]
fn command_numbers() {
    let nums: Vec<u16> = Command::ALL.iter().map(|c| *c as u16).collect();
    assert_eq!(
        nums,
        [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 0x1000, 0x1001, 0x1002,
            0x1003, 0x1004, 0x1005, 0x1006
        ]
    );
    assert_eq!(Command::try_from(14), Err(DecodeError::UnknownCommand(14)));
    assert_eq!(DecodeError::UnknownCommand(14).errno(), 38);
    assert!(Command::VsmmuGetStats.is_extension());
    assert!(!Command::MigDataWrite.is_extension());
}

#[test]
fn version_roundtrip_and_json() {
    let data = VersionData {
        capabilities: Capabilities {
            max_msg_fds: Some(8),
            vsmmu: Some(VsmmuCap { version: 1 }),
            ..Default::default()
        },
    };
    let json = data.encode();
    assert_eq!(
        json,
        b"{\"capabilities\":{\"max_msg_fds\":8,\"vsmmu\":{\"version\":1}}}\0"
    );
    let msg = Message::command(1, Command::Version)
        .push(&VersionHeader { major: 0, minor: 2 })
        .bytes(&json)
        .finish();
    let h = Header::decode(&msg).unwrap();
    assert_eq!(h.msg_size as usize, msg.len());
    assert_eq!(&msg[16..20], &[0, 0, 2, 0]);
    let req = Request::decode(&h, &msg[16..]).unwrap();
    assert_eq!(
        req,
        Request::Version {
            major: 0,
            minor: 2,
            data
        }
    );
}

#[test]
fn version_json_rules() {
    // Absent JSON: defaults.
    assert_eq!(VersionData::decode(b""), Ok(VersionData::default()));
    // Missing NUL.
    assert!(matches!(
        VersionData::decode(b"{}"),
        Err(DecodeError::Json(_))
    ));
    // Unknown capabilities are ignored.
    let d = VersionData::decode(
        b"{\"capabilities\":{\"twin_socket\":{\"supported\":true},\"max_msg_fds\":3}}\0",
    )
    .unwrap();
    assert_eq!(d.capabilities.max_msg_fds, Some(3));
    // Wrong type.
    let e = VersionData::decode(b"{\"capabilities\":{\"max_msg_fds\":\"x\"}}\0").unwrap_err();
    assert_eq!(e.errno(), 22);
    // Not JSON.
    assert!(VersionData::decode(b"\xff\0").is_err());
}

#[test]
fn dma_map_bytes() {
    let m = DmaMap {
        argsz: 32,
        flags: 3,
        offset: 0x1000,
        addr: 0x4000_0000,
        size: 0x20_0000,
    };
    let msg = Message::command(2, Command::DmaMap).push(&m).finish();
    assert_eq!(msg.len(), 48);
    assert_eq!(
        &msg[16..],
        &[
            32, 0, 0, 0, 3, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0,
            0x20, 0, 0, 0, 0, 0
        ]
    );
    let h = Header::decode(&msg).unwrap();
    assert_eq!(Request::decode(&h, &msg[16..]), Ok(Request::DmaMap(m)));
    // argsz must be 32.
    let bad = DmaMap { argsz: 31, ..m };
    let e = Request::decode(&hdr(Command::DmaMap, 32), bad.as_bytes()).unwrap_err();
    assert_eq!(e.errno(), 22);
    // Truncated.
    let e = Request::decode(&hdr(Command::DmaMap, 31), &m.as_bytes()[..31]).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Truncated {
            what: "dma_map",
            need: 32,
            got: 31
        }
    );
}

#[test]
fn fixed_requests_decode() {
    let u = DmaUnmap {
        argsz: 24,
        flags: 0,
        addr: 0x1000,
        size: 0x1000,
    };
    assert_eq!(
        Request::decode(&hdr(Command::DmaUnmap, 24), u.as_bytes()),
        Ok(Request::DmaUnmap(u))
    );
    let i = DeviceInfo {
        argsz: 16,
        ..Default::default()
    };
    assert_eq!(
        Request::decode(&hdr(Command::DeviceGetInfo, 16), i.as_bytes()),
        Ok(Request::DeviceGetInfo(i))
    );
    let short = DeviceInfo {
        argsz: 8,
        ..Default::default()
    };
    assert!(Request::decode(&hdr(Command::DeviceGetInfo, 16), short.as_bytes()).is_err());
    let r = RegionInfo {
        argsz: 32,
        index: 0,
        ..Default::default()
    };
    assert_eq!(
        Request::decode(&hdr(Command::DeviceGetRegionInfo, 32), r.as_bytes()),
        Ok(Request::DeviceGetRegionInfo(r))
    );
    let q = IrqInfo {
        argsz: 16,
        index: 3,
        ..Default::default()
    };
    assert_eq!(
        Request::decode(&hdr(Command::DeviceGetIrqInfo, 16), q.as_bytes()),
        Ok(Request::DeviceGetIrqInfo(q))
    );
    let f = RegionIoFds {
        argsz: 16,
        ..Default::default()
    };
    assert_eq!(
        Request::decode(&hdr(Command::DeviceGetRegionIoFds, 16), f.as_bytes()),
        Ok(Request::DeviceGetRegionIoFds(f))
    );
    assert_eq!(
        Request::decode(&hdr(Command::DeviceReset, 0), &[]),
        Ok(Request::DeviceReset)
    );
    assert!(Request::decode(&hdr(Command::DeviceReset, 1), &[0]).is_err());
    assert_eq!(
        Request::decode(&hdr(Command::DmaRead, 16), &[0; 16])
            .unwrap_err()
            .errno(),
        38
    );
}

#[test]
fn region_access() {
    let a = RegionAccess {
        offset: 0x20,
        region: 0,
        count: 4,
    };
    let msg = Message::command(3, Command::RegionWrite)
        .push(&a)
        .bytes(&[1, 2, 3, 4])
        .finish();
    assert_eq!(
        &msg[16..],
        &[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]
    );
    let h = Header::decode(&msg).unwrap();
    assert_eq!(
        Request::decode(&h, &msg[16..]),
        Ok(Request::RegionWrite {
            access: a,
            data: &[1, 2, 3, 4]
        })
    );
    // count disagrees with data.
    let e = Request::decode(&hdr(Command::RegionWrite, 19), &msg[16..35]).unwrap_err();
    assert_eq!(
        e,
        DecodeError::SizeMismatch {
            what: "region_write count",
            field: 4,
            actual: 3
        }
    );
    assert_eq!(
        Request::decode(&hdr(Command::RegionRead, 16), a.as_bytes()),
        Ok(Request::RegionRead(a))
    );
    assert!(Request::decode(&hdr(Command::RegionRead, 20), &msg[16..]).is_err());
}

#[test]
fn set_irqs() {
    let s = IrqSet {
        argsz: 20,
        flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
        index: 0,
        start: 0,
        count: 1,
    };
    assert_eq!(
        s.as_bytes(),
        &[20, 0, 0, 0, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    );
    assert_eq!(
        Request::decode(&hdr(Command::DeviceSetIrqs, 20), s.as_bytes()),
        Ok(Request::DeviceSetIrqs { set: s, data: &[] })
    );
    let b = IrqSet {
        argsz: 21,
        flags: VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
        ..s
    };
    let mut p = b.as_bytes().to_vec();
    p.push(1);
    assert_eq!(
        Request::decode(&hdr(Command::DeviceSetIrqs, 21), &p),
        Ok(Request::DeviceSetIrqs { set: b, data: &[1] })
    );
    assert!(Request::decode(&hdr(Command::DeviceSetIrqs, 20), &p[..20]).is_err());
}

#[test]
fn write_multi() {
    let e1 = WriteMultiEntry {
        offset: 0x98,
        region: 0,
        count: 4,
        data: [5, 0, 0, 0, 0, 0, 0, 0],
    };
    let e2 = WriteMultiEntry {
        offset: 0x100ac,
        region: 0,
        count: 4,
        data: [1, 0, 0, 0, 0, 0, 0, 0],
    };
    let msg = Message::command(4, Command::RegionWriteMulti)
        .push(&WriteMultiHeader { wr_cnt: 2 })
        .push(&e1)
        .push(&e2)
        .finish();
    assert_eq!(msg.len(), 16 + 8 + 48);
    let h = Header::decode(&msg).unwrap();
    assert_eq!(
        Request::decode(&h, &msg[16..]),
        Ok(Request::RegionWriteMulti(vec![e1, e2]))
    );
    let e = Request::decode(&hdr(Command::RegionWriteMulti, 32), &msg[16..48]).unwrap_err();
    assert_eq!(e.errno(), 22);
    let bad = WriteMultiEntry { count: 9, ..e1 };
    let m = Message::command(4, Command::RegionWriteMulti)
        .push(&WriteMultiHeader { wr_cnt: 1 })
        .push(&bad)
        .finish();
    assert!(Request::decode(&Header::decode(&m).unwrap(), &m[16..]).is_err());
    // A huge count cannot overflow the size check.
    let m = WriteMultiHeader { wr_cnt: u64::MAX };
    assert!(Request::decode(&hdr(Command::RegionWriteMulti, 8), m.as_bytes()).is_err());
}

#[test]
fn feature_and_migration() {
    let f = DeviceFeature {
        argsz: 16,
        flags: DEVICE_FEATURE_GET | DEVICE_FEATURE_MIGRATION,
    };
    assert_eq!(f.as_bytes(), &[16, 0, 0, 0, 1, 0, 1, 0]);
    assert_eq!(
        Request::decode(&hdr(Command::DeviceFeature, 8), f.as_bytes()),
        Ok(Request::DeviceFeature {
            feature: f,
            data: &[]
        })
    );
    let r = MigData {
        argsz: 4104,
        size: 4096,
    };
    assert_eq!(
        Request::decode(&hdr(Command::MigDataRead, 8), r.as_bytes()),
        Ok(Request::MigDataRead(r))
    );
    let w = MigData { argsz: 8, size: 3 };
    let mut p = w.as_bytes().to_vec();
    p.extend_from_slice(&[9, 9, 9]);
    assert_eq!(
        Request::decode(&hdr(Command::MigDataWrite, 11), &p),
        Ok(Request::MigDataWrite {
            hdr: w,
            data: &[9, 9, 9]
        })
    );
    assert!(Request::decode(&hdr(Command::MigDataWrite, 10), &p[..10]).is_err());
}

#[test]
fn vsmmu_extension() {
    let d = VsmmuDevice {
        argsz: 16,
        flags: 0,
        vsid: 0x42,
        reserved: 0,
    };
    assert_eq!(
        d.as_bytes(),
        &[16, 0, 0, 0, 0, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        Request::decode(&hdr(Command::VsmmuAttachDevice, 16), d.as_bytes()),
        Ok(Request::VsmmuAttachDevice(d))
    );
    let bad = VsmmuDevice { flags: 1, ..d };
    assert!(Request::decode(&hdr(Command::VsmmuDetachDevice, 16), bad.as_bytes()).is_err());

    // The VMM-bound form: 24 bytes, flag 1, the VMM's ids after the vSID.
    let b = VsmmuBoundDevice {
        argsz: 24,
        flags: VSMMU_DEVICE_VMM_BOUND,
        vsid: 0x42,
        reserved: 0,
        dev_id: 3,
        parent_hwpt_id: 5,
    };
    assert_eq!(
        b.as_bytes(),
        &[24, 0, 0, 0, 1, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0]
    );
    let r = Request::decode(&hdr(Command::VsmmuAttachDevice, 24), b.as_bytes());
    assert_eq!(r, Ok(Request::VsmmuAttachBoundDevice(b)));
    assert_eq!(r.unwrap().command(), Command::VsmmuAttachDevice);
    // Each field outside the form is refused: flag 0 at 24 bytes, flag 1
    // at 16, a nonzero reserved, a wrong argsz; DETACH has no bound form.
    for bad in [
        VsmmuBoundDevice { flags: 0, ..b },
        VsmmuBoundDevice { flags: 3, ..b },
        VsmmuBoundDevice { reserved: 1, ..b },
        VsmmuBoundDevice { argsz: 16, ..b },
    ] {
        assert!(Request::decode(&hdr(Command::VsmmuAttachDevice, 24), bad.as_bytes()).is_err());
    }
    assert!(Request::decode(&hdr(Command::VsmmuAttachDevice, 16), bad.as_bytes()).is_err());
    assert!(Request::decode(&hdr(Command::VsmmuDetachDevice, 24), b.as_bytes()).is_err());

    let rec = [0x0000_0042_0000_0010u64, 0, 0x1000, 0];
    let msg = Message::command(9, Command::VsmmuSimInject)
        .push(&SimInjectHeader {
            argsz: 40,
            count: 1,
        })
        .push(&rec)
        .finish();
    assert_eq!(&msg[16..24], &[40, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&msg[24..32], &[0x10, 0, 0, 0, 0x42, 0, 0, 0]);
    let h = Header::decode(&msg).unwrap();
    assert_eq!(
        Request::decode(&h, &msg[16..]),
        Ok(Request::VsmmuSimInject(vec![rec]))
    );
    let e = Request::decode(&hdr(Command::VsmmuSimInject, 39), &msg[16..55]).unwrap_err();
    assert_eq!(e.errno(), 22);

    let dma = SimDma {
        argsz: 36,
        flags: SIM_DMA_WRITE,
        vsid: 1,
        ssid: SIM_DMA_NO_SSID,
        iova: 0x1000,
        len: 4,
    };
    let mut p = dma.as_bytes().to_vec();
    p.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        Request::decode(&hdr(Command::VsmmuSimDma, 36), &p),
        Ok(Request::VsmmuSimDma {
            req: dma,
            data: &[1, 2, 3, 4]
        })
    );
    let rd = SimDma {
        argsz: 32,
        flags: 0,
        len: 4,
        ..dma
    };
    assert!(Request::decode(
        &hdr(Command::VsmmuSimDma, 36),
        &[rd.as_bytes(), &[0u8; 4][..]].concat()
    )
    .is_err());
    let big = SimDma {
        argsz: 32,
        flags: 0,
        len: 4097,
        ..dma
    };
    assert!(Request::decode(&hdr(Command::VsmmuSimDma, 32), big.as_bytes()).is_err());

    let s = StatsRequest { argsz: 8, flags: 0 };
    assert_eq!(
        Request::decode(&hdr(Command::VsmmuGetStats, 8), s.as_bytes()),
        Ok(Request::VsmmuGetStats(s))
    );
}

#[test]
fn replies() {
    let req = hdr(Command::DmaMap, 32);
    let e = Message::error_reply(&req, 17);
    assert_eq!(e, [7, 0, 2, 0, 16, 0, 0, 0, 0x21, 0, 0, 0, 17, 0, 0, 0]);
    let ok = Message::reply(&req).finish();
    assert_eq!(ok, [7, 0, 2, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    let posted = Message::command(1, Command::RegionWrite)
        .no_reply()
        .finish();
    assert_eq!(posted[8], 0x10);
}

/// Decoding arbitrary bytes never panics, for every command.
#[test]
fn decode_garbage_never_panics() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    for len in 0..200usize {
        for cmd in 0..20u16 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let h = Header {
                command: cmd,
                msg_size: (16 + len) as u32,
                ..Default::default()
            };
            let _ = Request::decode(&h, &bytes);
            let h = Header {
                command: 0x1000 + cmd % 5,
                ..h
            };
            let _ = Request::decode(&h, &bytes);
        }
    }
}

#[test]
fn translate_bytes() {
    let t = Translate {
        argsz: 32,
        flags: TRANSLATE_WRITE,
        sid: 0x0008,
        ssid: SIM_DMA_NO_SSID,
        iova: 0xffff_f000,
    };
    assert_eq!(
        t.as_bytes(),
        &[
            32, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0xf0, 0xff, 0xff, 0, 0,
            0, 0
        ]
    );
    assert_eq!(
        Request::decode(&hdr(Command::VsmmuTranslate, 24), t.as_bytes()),
        Ok(Request::VsmmuTranslate(t))
    );
    // TRANSLATE_AHEAD (bit 2) and TRANSLATE_BEHIND (bit 3) are known;
    // bit 4 is not.
    for flags in [TRANSLATE_AHEAD, TRANSLATE_BEHIND] {
        let ahead = Translate {
            flags,
            argsz: 32 + 2 * 32,
            ..t
        };
        assert_eq!(
            Request::decode(&hdr(Command::VsmmuTranslate, 24), ahead.as_bytes()),
            Ok(Request::VsmmuTranslate(ahead))
        );
    }
    let bad = Translate { flags: 16, ..t };
    assert_eq!(
        Request::decode(&hdr(Command::VsmmuTranslate, 24), bad.as_bytes())
            .unwrap_err()
            .errno(),
        22
    );
    let short = Translate { argsz: 24, ..t };
    assert!(Request::decode(&hdr(Command::VsmmuTranslate, 24), short.as_bytes()).is_err());
}

#[test]
fn notify_setup() {
    let n = NotifySetup {
        argsz: 16,
        flags: 0,
        log2_entries: 8,
        reserved: 0,
    };
    assert_eq!(Command::try_from(0x1006u16), Ok(Command::VsmmuNotifySetup));
    assert_eq!(
        Request::decode(&hdr(Command::VsmmuNotifySetup, 16), n.as_bytes()),
        Ok(Request::VsmmuNotifySetup(n))
    );
    // log2 out of 4..=16, flags, argsz: refused.
    for bad in [
        NotifySetup {
            log2_entries: 3,
            ..n
        },
        NotifySetup {
            log2_entries: 17,
            ..n
        },
        NotifySetup { flags: 1, ..n },
        NotifySetup { argsz: 24, ..n },
        NotifySetup { reserved: 1, ..n },
    ] {
        assert!(Request::decode(&hdr(Command::VsmmuNotifySetup, 16), bad.as_bytes()).is_err());
    }
}
