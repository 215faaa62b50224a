//! Tests of the iommufd backend.

use std::fs::File;

use super::hw_info::same_smmu;
use super::memlock::memlock_text;
use super::viommu::{ABORT_VSTE, BYPASS_VSTE};
use super::*;
use vsmmu_protocol::iommufd as uapi;
use vsmmu_protocol::smmu::ste::{check_vste, VsteConfig};
use zerocopy::IntoBytes;

fn dev_null() -> OwnedFd {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .expect("/dev/null")
        .into()
}

/// A host over a fake iommufd (`/dev/null`: every ioctl fails with
/// ENOTTY), with a vIOMMU as if a device had been attached.
fn fake_host() -> IommufdHost {
    IommufdHost {
        iommufd: dev_null(),
        ioas_id: 1,
        vmm: None,
        hw_info: None,
        viommu: Some(Viommu {
            parent_hwpt_id: 2,
            own_parent: true,
            viommu_id: 3,
            abort_hwpt_id: 4,
            bypass_hwpt_id: 5,
        }),
        devices: BTreeMap::new(),
        veventq: None,
        released: BTreeMap::new(),
        mapped: 0,
        memlock_limit: || None,
    }
}

fn fake_device(host: &mut IommufdHost, vsid: u32, config: Config) {
    host.devices.insert(
        vsid,
        Device {
            cdev: dev_null(),
            dev_id: 10,
            rdev: 0,
            vdevice_id: 11,
            config,
            vmm_bound: host.vmm.is_some(),
        },
    );
}

fn vmm_device(dev_id: u32, parent_hwpt_id: u32) -> VmmDevice {
    VmmDevice {
        cdev: dev_null(),
        iommufd: dev_null(),
        dev_id,
        parent_hwpt_id,
    }
}

#[test]
fn vmm_bound_and_own_devices_do_not_mix() {
    // vsmmud's own device attached: a VMM-bound one is EBUSY, before
    // any ioctl, and nothing changes.
    let mut host = fake_host();
    fake_device(&mut host, 7, Config::Abort);
    assert!(!host.viommu_ends(DeviceChange::AttachVmmBound));
    let err = host
        .attach_vmm_device(8, vmm_device(20, 30))
        .expect_err("mixed");
    assert_eq!((err.op, err.errno), ("IOMMU_VIOMMU_ALLOC", libc::EBUSY));
    assert!(
        err.msg.contains("devices vsmmud bound are attached"),
        "{err}"
    );
    assert!(host.vmm.is_none() && host.viommu.is_some());

    // In the VMM's context: an own attach is EBUSY, a second parent
    // EINVAL, a duplicate vSID EEXIST; none touches the context.
    let mut host = fake_host();
    host.vmm = Some(VmmContext {
        iommufd: dev_null(),
        parent_hwpt_id: 30,
    });
    fake_device(&mut host, 7, Config::Abort);
    let err = host.attach_device(8, Some(dev_null())).expect_err("mixed");
    assert_eq!(
        (err.op, err.errno),
        ("VFIO_DEVICE_BIND_IOMMUFD", libc::EBUSY)
    );
    assert!(err.msg.contains("lives in the VMM's iommufd"), "{err}");
    let err = host
        .attach_vmm_device(8, vmm_device(21, 31))
        .expect_err("parent");
    assert_eq!((err.op, err.errno), ("IOMMU_VIOMMU_ALLOC", libc::EINVAL));
    assert!(
        err.msg
            .contains("nesting parent HWPT 31 differs from the vIOMMU's (30)"),
        "{err}"
    );
    let err = host
        .attach_vmm_device(7, vmm_device(21, 30))
        .expect_err("dup");
    assert_eq!(err.errno, libc::EEXIST);
    // The same parent reaches the kernel (GET_HW_INFO: ENOTTY here).
    let err = host
        .attach_vmm_device(8, vmm_device(21, 30))
        .expect_err("fake");
    assert_eq!((err.op, err.errno), ("IOMMU_GET_HW_INFO", libc::ENOTTY));
    assert!(host.vmm.is_some() && host.is_attached(7) && !host.is_attached(8));
    // Detaching the last VMM-bound device ends the vIOMMU; another
    // vSID's detach does not.
    assert!(host.viommu_ends(DeviceChange::Detach(7)));
    assert!(!host.viommu_ends(DeviceChange::Detach(8)));
}

#[test]
fn first_vmm_bound_device_replaces_an_idle_own_viommu() {
    // An own vIOMMU left without devices: the VMM's first device makes
    // the model drain the vEVENTQ, and the host frees the vIOMMU and
    // moves to the VMM's context; the failed attach (fake fds) then
    // leaves neither context nor vIOMMU behind.
    let mut host = fake_host();
    assert!(host.viommu_ends(DeviceChange::AttachVmmBound));
    let err = host
        .attach_vmm_device(8, vmm_device(20, 30))
        .expect_err("fake");
    assert_eq!((err.op, err.errno), ("IOMMU_GET_HW_INFO", libc::ENOTTY));
    assert!(host.vmm.is_none() && host.viommu.is_none());
    assert!(!host.viommu_ends(DeviceChange::AttachVmmBound));
}

#[test]
fn missing_dev_iommu_is_one_clear_error() {
    let dir = std::env::temp_dir().join(format!("vsmmu-no-iommu-{}", std::process::id()));
    let path = dir.join("iommu");
    let err = IommufdHost::open_path(&path).expect_err("no such file");
    assert_eq!(err.errno, libc::ENOENT);
    assert_eq!(err.op, "open /dev/iommu");
    assert!(err.msg.contains("this host has no iommufd"), "{err}");
    assert!(err.msg.contains("CONFIG_IOMMUFD"), "{err}");
    assert!(err.msg.contains(&path.display().to_string()), "{err}");
}

#[test]
fn fd_that_is_not_an_iommufd() {
    let err = IommufdHost::open(Some(dev_null())).expect_err("not an iommufd");
    assert_eq!(err.errno, libc::ENOTTY);
    assert_eq!(err.op, "IOMMU_IOAS_ALLOC");
    assert!(err.msg.contains("not an iommufd"), "{err}");
}

#[test]
// `ioctl_num_type` is u64 on glibc but c_int on musl.
#[allow(clippy::unnecessary_cast)]
fn request_numbers_match_this_arch() {
    let pairs: [(u64, u8); 13] = [
        (uapi::IOMMU_DESTROY, 0x80),
        (uapi::IOMMU_IOAS_ALLOC, 0x81),
        (uapi::IOMMU_IOAS_MAP, 0x85),
        (uapi::IOMMU_IOAS_UNMAP, 0x86),
        (uapi::IOMMU_HWPT_ALLOC, 0x89),
        (uapi::IOMMU_GET_HW_INFO, 0x8a),
        (uapi::IOMMU_HWPT_INVALIDATE, 0x8d),
        (uapi::IOMMU_VIOMMU_ALLOC, 0x90),
        (uapi::IOMMU_VDEVICE_ALLOC, 0x91),
        (uapi::IOMMU_VEVENTQ_ALLOC, 0x93),
        (uapi::VFIO_DEVICE_BIND_IOMMUFD, 0x76),
        (uapi::VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x77),
        (uapi::VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x78),
    ];
    for (req, nr) in pairs {
        assert_eq!(req, nix::request_code_none!(b';', nr) as u64, "nr {nr:#x}");
    }
}

#[test]
fn shared_vstes_are_accepted() {
    assert_eq!(check_vste(&ABORT_VSTE), Ok(VsteConfig::Abort));
    assert_eq!(check_vste(&BYPASS_VSTE), Ok(VsteConfig::Bypass));
    let data = uapi::IommuHwptArmSmmuv3 { ste: BYPASS_VSTE };
    assert_eq!(
        data.as_bytes(),
        &[9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn bad_vste_is_refused_without_an_ioctl() {
    let mut host = fake_host();
    fake_device(&mut host, 7, Config::Abort);
    let s1 = 1 | (0b101 << 1) | 0x8000_0000;
    let bad = [
        [s1 | (1 << 52), 0],   // word 0 outside the mask
        [s1, 1 << 31],         // word 1 outside the mask (STRW)
        [1 | (0b110 << 1), 0], // Config = S2
        [s1, 2 << 28],         // EATS = split
    ];
    for ste in bad {
        // Any ioctl on the fake fds would fail with ENOTTY instead.
        let err = host
            .install_ste(7, SteAction::Nested { ste })
            .expect_err("refused");
        assert_eq!(err.errno, libc::EINVAL, "{err}");
        assert!(err.msg.contains("vSID 0x7"), "{err}");
        assert_eq!(host.devices[&7].config, Config::Abort);
    }
    // A good one does reach the kernel (here: ENOTTY from /dev/null).
    let err = host
        .install_ste(7, SteAction::Nested { ste: [s1, 1 << 28] })
        .expect_err("fake");
    assert_eq!(err.errno, libc::ENOTTY);
    // Abort when already aborting needs no ioctl.
    assert_eq!(host.install_ste(7, SteAction::Abort), Ok(()));
    // Non-valid and abort-config vSTEs use the shared abort HWPT too.
    assert_eq!(
        host.install_ste(7, SteAction::Nested { ste: [0, u64::MAX] }),
        Ok(())
    );
    assert_eq!(
        host.install_ste(7, SteAction::Nested { ste: ABORT_VSTE }),
        Ok(())
    );
    // Bypass needs an attach: ENOTTY, and the device stays aborting.
    let err = host.install_ste(7, SteAction::Bypass).expect_err("fake");
    assert_eq!(err.errno, libc::ENOTTY);
    assert_eq!(host.devices[&7].config, Config::Abort);
    // Unknown vSID.
    assert_eq!(
        host.install_ste(8, SteAction::Abort).map_err(|e| e.errno),
        Err(libc::ENOENT)
    );
}

#[test]
fn attach_checks_before_any_ioctl() {
    let mut host = fake_host();
    fake_device(&mut host, 7, Config::Abort);
    // Duplicate vSID: EEXIST (an ioctl on /dev/null would be ENOTTY).
    let err = host.attach_device(7, Some(dev_null())).expect_err("dup");
    assert_eq!(err.errno, libc::EEXIST);
    // No cdev fd.
    let err = host.attach_device(8, None).expect_err("no fd");
    assert_eq!(err.errno, libc::EINVAL);
    assert!(host.needs_device_fd());
    assert!(host.is_attached(7));
    assert!(!host.is_attached(8));
    // A fresh vSID reaches VFIO_DEVICE_BIND_IOMMUFD.
    let err = host.attach_device(8, Some(dev_null())).expect_err("fake");
    assert_eq!(
        (err.op, err.errno),
        ("VFIO_DEVICE_BIND_IOMMUFD", libc::ENOTTY)
    );
    assert!(!host.is_attached(8));
}

#[test]
fn viommu_and_veventq_preconditions() {
    let mut host = fake_host();
    // depth 0 is refused before the kernel.
    assert_eq!(
        host.alloc_veventq(0).map_err(|e| e.errno),
        Err(libc::EINVAL)
    );
    assert_eq!(
        host.alloc_veventq(8).map_err(|e| e.errno),
        Err(libc::ENOTTY)
    );
    assert_eq!(host.veventq_fd(), None);
    let mut buf = [0u8; 40];
    assert_eq!(
        host.read_veventq(&mut buf).map_err(|e| e.errno),
        Err(libc::ENODEV)
    );

    host.viommu = None;
    let err = host.alloc_veventq(8).expect_err("no device yet");
    assert_eq!(err.errno, libc::ENODEV);
    assert!(err.msg.contains("first device is attached"), "{err}");
    // Nothing to invalidate without a vIOMMU.
    assert_eq!(host.invalidate(&[[0x10, 0]]), Ok(()));
}

/// RLIMIT_MEMLOCK is checked before the kernel pins anything, with the
/// numbers in the message; no limit (CAP_IPC_LOCK) checks nothing.
#[test]
fn memlock_checked_up_front() {
    assert_eq!(check_memlock(0, 64 << 20, None), Ok(()));
    assert_eq!(check_memlock(4 << 20, 4 << 20, Some(8 << 20)), Ok(()));
    let err = check_memlock(4 << 20, 8 << 20, Some(8 << 20)).unwrap_err();
    assert_eq!((err.op, err.errno), ("IOMMU_IOAS_MAP", libc::ENOMEM));
    assert_eq!(
        err.msg,
        "mapping 8192 KiB more guest RAM (4096 KiB mapped) exceeds RLIMIT_MEMLOCK (8192 KiB): \
         iommufd pins guest RAM for device DMA against it; raise it (systemd \
         LimitMEMLOCK=, prlimit --memlock) or give vsmmud CAP_IPC_LOCK"
    );
    let mut host = fake_host();
    host.memlock_limit = || Some(1 << 20);
    let err = host.map_guest_ram(0, 2 << 20, 0x1000).unwrap_err();
    assert_eq!(err.errno, libc::ENOMEM);
    // A kernel ENOMEM is explained too; other errnos pass through.
    let e = memlock_hint(
        HostError::new("IOMMU_HWPT_ALLOC", libc::ENOMEM, "x"),
        2 << 20,
        Some(1 << 20),
    );
    assert_eq!(
        e.msg,
        format!(
            "x: pinning 2048 KiB of guest RAM failed; RLIMIT_MEMLOCK: {} (counted per user, \
             across processes)",
            memlock_text(None)
        )
    );
    let e = memlock_hint(HostError::new("IOMMU_HWPT_ALLOC", libc::EIO, "x"), 0, None);
    assert_eq!(e.msg, "x");
}

/// Only EINVAL from BIND (a bound open file) leads to reuse or EBUSY;
/// any other error is the kernel's, unchanged.
#[test]
fn bind_errors_other_than_einval_pass_through() {
    let mut host = fake_host();
    // /dev/null: BIND gives ENOTTY, not EINVAL: passed through as is.
    let err = host.bind_or_reuse(8, dev_null().as_fd(), 0).unwrap_err();
    assert_eq!(
        (err.op, err.errno),
        ("VFIO_DEVICE_BIND_IOMMUFD", libc::ENOTTY)
    );
}

/// A second device behind another physical SMMU is refused with a
/// clear EINVAL; one behind the same SMMU passes.
#[test]
fn second_device_behind_another_smmu() {
    let a = HwInfo {
        idr: [0x0d44_101b, 0x0273_0010, 0, 0x1514, 0, 0x74],
        iidr: 0,
        aidr: 1,
    };
    let mut b = a;
    b.idr[5] = 0x75;
    assert_eq!(same_smmu(8, Some(a), &a), Ok(()));
    assert_eq!(same_smmu(8, None, &b), Ok(()));
    let err = same_smmu(9, Some(a), &b).unwrap_err();
    assert_eq!((err.op, err.errno), ("IOMMU_VDEVICE_ALLOC", libc::EINVAL));
    assert_eq!(
        err.msg,
        "vSID 0x9: the device is behind another physical SMMU than the vIOMMU's (its SMMU \
         reports IDR0 0x0d44101b IDR1 0x02730010 IDR3 0x00001514 IDR5 0x00000075, the \
         vIOMMU's IDR0 0x0d44101b IDR1 0x02730010 IDR3 0x00001514 IDR5 0x00000074); one \
         vsmmud serves the devices of one host SMMU: start one per SMMU"
    );
}

#[test]
fn kernel_errors_carry_the_errno() {
    let mut host = fake_host();
    let err = host
        .map_guest_ram(0x4000_0000, 0x1000, 0x7f00_0000_0000)
        .expect_err("fake");
    assert_eq!((err.op, err.errno), ("IOMMU_IOAS_MAP", libc::ENOTTY));
    let err = host.unmap_guest_ram(0x4000_0000, 0x1000).expect_err("fake");
    assert_eq!((err.op, err.errno), ("IOMMU_IOAS_UNMAP", libc::ENOTTY));
    let err = host.invalidate(&[[0x10, 0]; 3]).expect_err("fake");
    assert_eq!(err.handled, 0);
    assert_eq!(err.error.errno, libc::ENOTTY);
    // detach: every step fails on the fake fds, the device is gone anyway.
    fake_device(&mut host, 7, Config::Nested(12));
    let err = host.detach_device(7).expect_err("fake");
    assert_eq!(err.op, "VFIO_DEVICE_DETACH_IOMMUFD_PT");
    assert!(!host.is_attached(7));
    assert_eq!(
        host.detach_device(7).map_err(|e| e.errno),
        Err(libc::ENOENT)
    );
    // Drop with a device left runs the whole teardown without panicking.
    fake_device(&mut host, 9, Config::Bypass);
    drop(host);
}

#[test]
fn invalidation_chunks_and_handled_count() {
    let cmds: Vec<[u64; 2]> = (0..10u64).map(|i| [i, 0]).collect();
    // All succeed: chunks of at most 4, in order, covering everything.
    let mut seen = Vec::new();
    let r = invalidate_in_chunks(&cmds, 4, |c| {
        seen.push(c.to_vec());
        Ok(())
    });
    assert_eq!(r, Ok(()));
    assert_eq!(seen.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    assert_eq!(seen.concat(), cmds);

    // The third chunk fails after the kernel handled 1 of its entries.
    let fail = HostError::new("IOMMU_HWPT_INVALIDATE", libc::EIO, "bad command");
    let mut calls = 0;
    let r = invalidate_in_chunks(&cmds, 4, |c| {
        calls += 1;
        if c[0][0] == 8 {
            Err((1, fail.clone()))
        } else {
            Ok(())
        }
    });
    assert_eq!(calls, 3);
    assert_eq!(
        r,
        Err(InvalidateError {
            handled: 9,
            error: fail.clone()
        })
    );

    // First chunk fails on its first entry.
    let r = invalidate_in_chunks(&cmds, 4, |_| Err((0, fail.clone())));
    assert_eq!(r.map_err(|e| e.handled), Err(0));

    // A bogus kernel count never exceeds the chunk.
    let r = invalidate_in_chunks(&cmds, 4, |_| Err((1000, fail.clone())));
    assert_eq!(r.map_err(|e| e.handled), Err(4));

    // The real limit: 600 entries → 256 + 256 + 88.
    let big = vec![[0x10u64, 0]; 600];
    let mut sizes = Vec::new();
    let r = invalidate_in_chunks(&big, MAX_INVALIDATION_ENTRIES, |c| {
        sizes.push(c.len());
        Ok(())
    });
    assert_eq!(r, Ok(()));
    assert_eq!(sizes, vec![256, 256, 88]);

    // Nothing to send: no call.
    let r = invalidate_in_chunks(&[], 4, |_| -> Result<(), (usize, HostError)> {
        panic!("no call expected")
    });
    assert_eq!(r, Ok(()));
}
