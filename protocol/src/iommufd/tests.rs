//! Tests of the iommufd uAPI records.

use super::*;

#[test]
fn ioctl_numbers() {
    assert_eq!(IOMMU_DESTROY, 0x3b80);
    assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
    assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
    assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
    assert_eq!(IOMMU_HWPT_ALLOC, 0x3b89);
    assert_eq!(IOMMU_GET_HW_INFO, 0x3b8a);
    assert_eq!(IOMMU_HWPT_INVALIDATE, 0x3b8d);
    assert_eq!(IOMMU_VIOMMU_ALLOC, 0x3b90);
    assert_eq!(IOMMU_VDEVICE_ALLOC, 0x3b91);
    assert_eq!(IOMMU_VEVENTQ_ALLOC, 0x3b93);
    assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
    assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
    assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
    assert_eq!(io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE), IOMMU_DESTROY);
}

#[test]
fn constants() {
    assert_eq!(IOMMU_IOAS_MAP_FIXED_IOVA, 1);
    assert_eq!(IOMMU_IOAS_MAP_WRITEABLE, 2);
    assert_eq!(IOMMU_IOAS_MAP_READABLE, 4);
    assert_eq!(IOMMU_HWPT_ALLOC_NEST_PARENT, 1);
    assert_eq!(IOMMU_HWPT_DATA_ARM_SMMUV3, 2);
    assert_eq!(IOMMU_HW_INFO_TYPE_ARM_SMMUV3, 2);
    assert_eq!(IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3, 1);
    assert_eq!(IOMMU_VIOMMU_TYPE_ARM_SMMUV3, 1);
    assert_eq!(IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, 1);
}

#[test]
fn destroy_bytes() {
    assert_eq!(
        IommuDestroy::new(0x0102_0304).as_bytes(),
        &[8, 0, 0, 0, 4, 3, 2, 1]
    );
}

#[test]
fn ioas_alloc_bytes() {
    let mut a = IommuIoasAlloc::new();
    a.out_ioas_id = 5;
    assert_eq!(a.as_bytes(), &[12, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0]);
}

#[test]
fn ioas_map_bytes() {
    let m = IommuIoasMap::new(
        3,
        IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        0x1122_3344_5566_7788,
        0x20_0000,
        0x4000_0000,
    );
    #[rustfmt::skip]
    let want = [
        40, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        0, 0, 0x20, 0, 0, 0, 0, 0,
        0, 0, 0, 0x40, 0, 0, 0, 0,
    ];
    assert_eq!(m.as_bytes(), &want);
}

#[test]
fn ioas_unmap_bytes() {
    let u = IommuIoasUnmap::new(3, 0x4000_0000, 0x1000);
    #[rustfmt::skip]
    let want = [
        24, 0, 0, 0, 3, 0, 0, 0,
        0, 0, 0, 0x40, 0, 0, 0, 0,
        0, 0x10, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(u.as_bytes(), &want);
}

#[test]
fn hwpt_alloc_bytes() {
    let h = IommuHwptAlloc {
        size: IommuHwptAlloc::SIZE,
        flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
        dev_id: 2,
        pt_id: 3,
        out_hwpt_id: 4,
        reserved: 0,
        data_type: IOMMU_HWPT_DATA_ARM_SMMUV3,
        data_len: 16,
        data_uptr: 0x0102_0304_0506_0708,
        fault_id: 9,
        reserved2: 0,
    };
    #[rustfmt::skip]
    let want = [
        48, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0,
        4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 16, 0, 0, 0,
        8, 7, 6, 5, 4, 3, 2, 1,
        9, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(h.as_bytes(), &want);
}

#[test]
fn hwpt_arm_smmuv3_bytes() {
    let v = IommuHwptArmSmmuv3 {
        ste: [0x0000_0000_1234_5009, 0x1000_0000],
    };
    #[rustfmt::skip]
    let want = [
        0x09, 0x50, 0x34, 0x12, 0, 0, 0, 0,
        0, 0, 0, 0x10, 0, 0, 0, 0,
    ];
    assert_eq!(v.as_bytes(), &want);
}

#[test]
fn hw_info_bytes() {
    let h = IommuHwInfo {
        size: IommuHwInfo::SIZE,
        flags: 0,
        dev_id: 7,
        data_len: 40,
        data_uptr: 0x1000,
        data_type: IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
        out_max_pasid_log2: 20,
        reserved: [0; 3],
        out_capabilities: 0x3,
    };
    #[rustfmt::skip]
    let want = [
        40, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 40, 0, 0, 0,
        0, 0x10, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0, 20, 0, 0, 0,
        3, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(h.as_bytes(), &want);
}

#[test]
fn hw_info_arm_smmuv3_bytes() {
    let h = IommuHwInfoArmSmmuv3 {
        flags: 0,
        reserved: 0,
        idr: [0x0d40_101a, 0x0273_0010, 0, 0x0000_1404, 0, 0x74],
        iidr: 0x43b,
        aidr: 1,
    };
    #[rustfmt::skip]
    let want = [
        0, 0, 0, 0, 0, 0, 0, 0,
        0x1a, 0x10, 0x40, 0x0d, 0x10, 0x00, 0x73, 0x02,
        0, 0, 0, 0, 0x04, 0x14, 0, 0,
        0, 0, 0, 0, 0x74, 0, 0, 0,
        0x3b, 0x04, 0, 0, 1, 0, 0, 0,
    ];
    assert_eq!(h.as_bytes(), &want);
    assert_eq!(IommuHwInfoArmSmmuv3::read_from_bytes(&want), Ok(h));
}

#[test]
fn hwpt_invalidate_bytes() {
    let i = IommuHwptInvalidate {
        size: IommuHwptInvalidate::SIZE,
        hwpt_id: 6,
        data_uptr: 0x7fff_0000_1000,
        data_type: IOMMU_HWPT_INVALIDATE_DATA_ARM_SMMUV3,
        entry_len: 16,
        entry_num: 256,
        reserved: 0,
    };
    #[rustfmt::skip]
    let want = [
        32, 0, 0, 0, 6, 0, 0, 0,
        0, 0x10, 0, 0, 0xff, 0x7f, 0, 0,
        1, 0, 0, 0, 16, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(i.as_bytes(), &want);
}

#[test]
fn viommu_invalidate_entry_bytes() {
    let e = IommuViommuArmSmmuv3Invalidate {
        cmd: [0x0000_0001_0000_0012, 0x0000_0000_0000_1001],
    };
    #[rustfmt::skip]
    let want = [
        0x12, 0, 0, 0, 1, 0, 0, 0,
        0x01, 0x10, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(e.as_bytes(), &want);
}

#[test]
fn viommu_alloc_bytes() {
    let v = IommuViommuAlloc {
        size: IommuViommuAlloc::SIZE,
        flags: 0,
        viommu_type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
        dev_id: 2,
        hwpt_id: 3,
        out_viommu_id: 4,
        data_len: 0,
        reserved: 0,
        data_uptr: 0,
    };
    #[rustfmt::skip]
    let want = [
        40, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0,
        3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(v.as_bytes(), &want);
}

#[test]
fn vdevice_alloc_bytes() {
    let v = IommuVdeviceAlloc {
        size: IommuVdeviceAlloc::SIZE,
        viommu_id: 4,
        dev_id: 2,
        out_vdevice_id: 5,
        virt_id: 0x0108,
    };
    #[rustfmt::skip]
    let want = [
        24, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0,
        0x08, 0x01, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(v.as_bytes(), &want);
}

#[test]
fn veventq_alloc_bytes() {
    let v = IommuVeventqAlloc {
        size: IommuVeventqAlloc::SIZE,
        flags: 0,
        viommu_id: 4,
        veventq_type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
        veventq_depth: 0x8_0000,
        out_veventq_id: 9,
        out_veventq_fd: 17,
        reserved: 0,
    };
    #[rustfmt::skip]
    let want = [
        32, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0,
        0, 0, 8, 0, 9, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(v.as_bytes(), &want);
}

#[test]
fn vfio_cdev_bytes() {
    let b = VfioDeviceBindIommufd {
        argsz: VfioDeviceBindIommufd::SIZE,
        flags: 0,
        iommufd: 5,
        out_devid: 2,
        token_uuid_ptr: 0,
    };
    #[rustfmt::skip]
    let want = [
        24, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(b.as_bytes(), &want);

    let a = VfioDeviceAttachIommufdPt {
        argsz: VfioDeviceAttachIommufdPt::SIZE,
        flags: 0,
        pt_id: 7,
        pasid: 0,
    };
    assert_eq!(
        a.as_bytes(),
        &[16, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
    );

    let d = VfioDeviceDetachIommufdPt {
        argsz: VfioDeviceDetachIommufdPt::SIZE,
        flags: 0,
        pasid: 0,
    };
    assert_eq!(d.as_bytes(), &[12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn vevent_header_bytes() {
    let h = VeventHeader {
        flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
        sequence: 0x7fff_ffff,
    };
    assert_eq!(h.as_bytes(), &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]);
}

fn event_record(seq: u32, evt: [u64; 4]) -> Vec<u8> {
    let mut v = VeventHeader {
        flags: 0,
        sequence: seq,
    }
    .as_bytes()
    .to_vec();
    v.extend_from_slice(VeventArmSmmuv3 { evt }.as_bytes());
    v
}

#[test]
fn parse_three_events() {
    let mut buf = Vec::new();
    for seq in 1..=3u32 {
        buf.extend(event_record(seq, [0x10 | (u64::from(seq) << 32), 2, 3, 4]));
    }
    assert_eq!(buf.len(), 3 * VEVENT_ARM_SMMUV3_RECORD_SIZE);
    // The first record byte by byte.
    #[rustfmt::skip]
    let first = [
        0, 0, 0, 0, 1, 0, 0, 0,
        0x10, 0, 0, 0, 1, 0, 0, 0,
        2, 0, 0, 0, 0, 0, 0, 0,
        3, 0, 0, 0, 0, 0, 0, 0,
        4, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(&buf[..40], &first);
    let got: Vec<_> = parse_vevents(&buf).collect();
    assert_eq!(
        got,
        (1..=3u32)
            .map(|seq| Ok(Vevent::Event {
                seq,
                evt: [0x10 | (u64::from(seq) << 32), 2, 3, 4]
            }))
            .collect::<Vec<_>>()
    );
}

#[test]
fn parse_event_then_lost_tail() {
    // Kernel selftest shape: depth 2, three events triggered.
    let mut buf = event_record(1, [0x10, 0, 0, 0]);
    buf.extend(event_record(2, [0x10, 0, 0, 0]));
    buf.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0]);
    let mut it = parse_vevents(&buf);
    assert_eq!(
        it.next(),
        Some(Ok(Vevent::Event {
            seq: 1,
            evt: [0x10, 0, 0, 0]
        }))
    );
    assert_eq!(
        it.next(),
        Some(Ok(Vevent::Event {
            seq: 2,
            evt: [0x10, 0, 0, 0]
        }))
    );
    assert_eq!(it.next(), Some(Ok(Vevent::Lost { seq: 3 })));
    assert_eq!(it.next(), None);
    assert_eq!(it.offset(), 88);
    // A new event after the LOST record, in the same buffer, is fine.
    buf.extend(event_record(4, [0x10, 0, 0, 0]));
    let got: Vec<_> = parse_vevents(&buf).map(|r| r.map(|e| e.seq())).collect();
    assert_eq!(got, vec![Ok(1), Ok(2), Ok(3), Ok(4)]);
}

#[test]
fn parse_truncated() {
    let mut buf = event_record(1, [1, 2, 3, 4]);
    buf.extend_from_slice(&event_record(2, [1, 2, 3, 4])[..39]);
    let got: Vec<_> = parse_vevents(&buf).collect();
    assert_eq!(
        got,
        vec![
            Ok(Vevent::Event {
                seq: 1,
                evt: [1, 2, 3, 4]
            }),
            Err(VeventParseError::Truncated {
                offset: 40,
                needed: 40,
                available: 39
            }),
        ]
    );
    // Shorter than a header.
    assert_eq!(
        parse_vevents(&[0, 0, 0]).collect::<Vec<_>>(),
        vec![Err(VeventParseError::Truncated {
            offset: 0,
            needed: 8,
            available: 3
        })]
    );
    // Empty buffer: nothing.
    assert_eq!(parse_vevents(&[]).next(), None);
}

#[test]
fn parse_garbage() {
    let garbage = [0xa5u8; 64];
    let mut it = parse_vevents(&garbage);
    assert_eq!(
        it.next(),
        Some(Err(VeventParseError::BadSequence {
            offset: 0,
            seq: 0xa5a5_a5a5
        }))
    );
    assert_eq!(it.next(), None);
    // Unknown flags with a sane sequence.
    let mut buf = event_record(1, [0; 4]);
    buf[0] = 0x2;
    assert_eq!(
        parse_vevents(&buf).collect::<Vec<_>>(),
        vec![Err(VeventParseError::UnknownFlags {
            offset: 0,
            flags: 2
        })]
    );
    // Every byte string parses without panicking.
    for len in 0..100usize {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        let _ = parse_vevents(&bytes).count();
    }
}

#[test]
fn lost_between_wraps() {
    assert_eq!(lost_between(0x7fff_ffff, 0), 0);
    assert_eq!(lost_between(0x7fff_fffe, 1), 2);
    assert_eq!(lost_between(5, 9), 3);
    assert_eq!(lost_between(5, 6), 0);
    assert_eq!(lost_between(0x7fff_fff0, 0x10), 0x1f);
}
