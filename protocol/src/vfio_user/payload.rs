//! Fixed payload structures, `#[repr(C)]`, little-endian, decoded in place.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::wire::wire_struct;

pub use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_PLATFORM, VFIO_DEVICE_FLAGS_RESET,
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK,
    VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};

wire_struct!(
    /// VERSION payload head; the JSON follows.
    VersionHeader {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    } = 4
);

/// DMA_MAP flag: the region may be read.
pub const DMA_MAP_READ: u32 = 1 << 0;
/// DMA_MAP flag: the region may be written.
pub const DMA_MAP_WRITE: u32 = 1 << 1;

wire_struct!(
    /// `VFIO_USER_DMA_MAP` request.
    DmaMap {
        /// 32.
        argsz: u32,
        /// `DMA_MAP_READ | DMA_MAP_WRITE`.
        flags: u32,
        /// Offset into the passed fd.
        offset: u64,
        /// Guest (DMA) address.
        addr: u64,
        /// Length in bytes.
        size: u64,
    } = 32
);

wire_struct!(
    /// `VFIO_USER_DMA_UNMAP` request and reply.
    DmaUnmap {
        /// Reply size the client accepts.
        argsz: u32,
        /// Unused, zero.
        flags: u32,
        /// Guest address of an existing mapping.
        addr: u64,
        /// Its exact size.
        size: u64,
    } = 24
);

wire_struct!(
    /// `VFIO_USER_DEVICE_GET_INFO` request and reply (`vfio_device_info`).
    DeviceInfo {
        /// Reply size.
        argsz: u32,
        /// `VFIO_DEVICE_FLAGS_*`.
        flags: u32,
        /// Number of regions.
        num_regions: u32,
        /// Number of irq indexes.
        num_irqs: u32,
    } = 16
);

wire_struct!(
    /// `VFIO_USER_DEVICE_GET_REGION_INFO` request and reply (`vfio_region_info`).
    RegionInfo {
        /// Reply size.
        argsz: u32,
        /// `VFIO_REGION_INFO_FLAG_*`.
        flags: u32,
        /// Region index.
        index: u32,
        /// Offset of the capability chain.
        cap_offset: u32,
        /// Region size.
        size: u64,
        /// mmap offset.
        offset: u64,
    } = 32
);

wire_struct!(
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS` request and reply head.
    RegionIoFds {
        /// Reply size.
        argsz: u32,
        /// Zero.
        flags: u32,
        /// Region index.
        index: u32,
        /// Number of sub-regions.
        count: u32,
    } = 16
);

wire_struct!(
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO` request and reply (`vfio_irq_info`).
    IrqInfo {
        /// Reply size.
        argsz: u32,
        /// `VFIO_IRQ_INFO_*`.
        flags: u32,
        /// Irq index.
        index: u32,
        /// Number of vectors.
        count: u32,
    } = 16
);

wire_struct!(
    /// `VFIO_USER_DEVICE_SET_IRQS` request head (`vfio_irq_set`).
    IrqSet {
        /// Size of the request payload.
        argsz: u32,
        /// `VFIO_IRQ_SET_DATA_*` | `VFIO_IRQ_SET_ACTION_*`.
        flags: u32,
        /// Irq index.
        index: u32,
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
    } = 20
);

wire_struct!(
    /// `VFIO_USER_REGION_READ/WRITE` head.
    RegionAccess {
        /// Offset into the region.
        offset: u64,
        /// Region index.
        region: u32,
        /// Bytes.
        count: u32,
    } = 16
);

wire_struct!(
    /// `VFIO_USER_DMA_READ/WRITE` head (server to client).
    DmaAccess {
        /// Guest address.
        addr: u64,
        /// Bytes.
        count: u64,
    } = 16
);

wire_struct!(
    /// `VFIO_USER_REGION_WRITE_MULTI` head and reply.
    WriteMultiHeader {
        /// Number of entries.
        wr_cnt: u64,
    } = 8
);

wire_struct!(
    /// One write of `VFIO_USER_REGION_WRITE_MULTI`.
    WriteMultiEntry {
        /// Offset into the region.
        offset: u64,
        /// Region index.
        region: u32,
        /// Bytes, 1 to 8.
        count: u32,
        /// The data, first `count` bytes used.
        data: [u8; 8],
    } = 24
);

/// DEVICE_FEATURE: feature index mask.
pub const DEVICE_FEATURE_MASK: u32 = 0xffff;
/// DEVICE_FEATURE: get.
pub const DEVICE_FEATURE_GET: u32 = 1 << 16;
/// DEVICE_FEATURE: set.
pub const DEVICE_FEATURE_SET: u32 = 1 << 17;
/// DEVICE_FEATURE: probe.
pub const DEVICE_FEATURE_PROBE: u32 = 1 << 18;
/// Feature index: migration (data: u64 flags).
pub const DEVICE_FEATURE_MIGRATION: u32 = 1;
/// Feature index: migration device state (data: u32 state, u32 data_fd).
pub const DEVICE_FEATURE_MIG_DEVICE_STATE: u32 = 2;
/// Migration flag: STOP_COPY supported.
pub const MIGRATION_STOP_COPY: u64 = 1 << 0;

wire_struct!(
    /// `VFIO_USER_DEVICE_FEATURE` head.
    DeviceFeature {
        /// Reply size.
        argsz: u32,
        /// Feature index and GET/SET/PROBE.
        flags: u32,
    } = 8
);

wire_struct!(
    /// Data of `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`.
    MigDeviceState {
        /// A `vfio_device_mig_state`.
        device_state: u32,
        /// Unused by vfio-user.
        data_fd: i32,
    } = 8
);

/// `vfio_device_mig_state` values.
pub mod mig_state {
    /// The device failed and must be reset.
    pub const ERROR: u32 = 0;
    /// Stopped.
    pub const STOP: u32 = 1;
    /// Running.
    pub const RUNNING: u32 = 2;
    /// Stopped, state can be read out.
    pub const STOP_COPY: u32 = 3;
    /// Stopped, loading a new state.
    pub const RESUMING: u32 = 4;
    /// Not used by vfio-user.
    pub const RUNNING_P2P: u32 = 5;
    /// Running, tracking changes.
    pub const PRE_COPY: u32 = 6;
    /// Not used by vfio-user.
    pub const PRE_COPY_P2P: u32 = 7;
}

wire_struct!(
    /// `VFIO_USER_MIG_DATA_READ/WRITE` head.
    MigData {
        /// Reply size.
        argsz: u32,
        /// Data bytes.
        size: u32,
    } = 8
);

wire_struct!(
    /// `VSMMU_ATTACH_DEVICE` / `VSMMU_DETACH_DEVICE` request; the reply
    /// carries the host device id in `reserved`'s place.
    VsmmuDevice {
        /// 16.
        argsz: u32,
        /// Zero.
        flags: u32,
        /// Guest StreamID.
        vsid: u32,
        /// Zero in requests; host device id in the attach reply.
        reserved: u32,
    } = 16
);

/// `VSMMU_ATTACH_DEVICE` flag: the VMM bound the device to its own iommufd
/// and hands vsmmud that context ([`VsmmuBoundDevice`], two fds: the cdev,
/// then the iommufd).
pub const VSMMU_DEVICE_VMM_BOUND: u32 = 1;

wire_struct!(
    /// `VSMMU_ATTACH_DEVICE` request for a device the VMM bound to its own
    /// iommufd (flags = [`VSMMU_DEVICE_VMM_BOUND`]); the reply is a
    /// [`VsmmuDevice`].
    VsmmuBoundDevice {
        /// 24.
        argsz: u32,
        /// [`VSMMU_DEVICE_VMM_BOUND`].
        flags: u32,
        /// Guest StreamID.
        vsid: u32,
        /// Zero.
        reserved: u32,
        /// The device's id in the VMM's iommufd (`VFIO_DEVICE_BIND_IOMMUFD`).
        dev_id: u32,
        /// The VMM's nesting-parent HWPT (`IOMMU_HWPT_ALLOC_NEST_PARENT` over
        /// its IOAS of guest RAM), which the device is attached to.
        parent_hwpt_id: u32,
    } = 24
);

wire_struct!(
    /// `VSMMU_SIM_INJECT` head; `count` records of `[u64; 4]` follow.
    SimInjectHeader {
        /// Size of the request payload.
        argsz: u32,
        /// Number of records.
        count: u32,
    } = 8
);

wire_struct!(
    /// `VSMMU_SIM_INJECT` reply.
    SimInjectReply {
        /// 16.
        argsz: u32,
        /// Zero.
        flags: u32,
        /// Records the sim vEVENTQ accepted.
        queued: u32,
        /// Records that did not fit its depth.
        dropped: u32,
    } = 16
);

/// `VSMMU_SIM_DMA` flag: a write.
pub const SIM_DMA_WRITE: u32 = 1;
/// Largest `VSMMU_SIM_DMA` transfer.
pub const SIM_DMA_MAX_LEN: u64 = 4096;

wire_struct!(
    /// `VSMMU_SIM_DMA` request head.
    SimDma {
        /// Size of the request payload.
        argsz: u32,
        /// `SIM_DMA_WRITE`.
        flags: u32,
        /// Guest StreamID of the device.
        vsid: u32,
        /// SubstreamID, or `SIM_DMA_NO_SSID`.
        ssid: u32,
        /// Address the device uses.
        iova: u64,
        /// Bytes, 1 to 4096.
        len: u64,
    } = 32
);

/// `SimDmaReply::status` when the host SMMU terminated the transaction
/// without recording an event (an abort STE): above every event code.
pub const SIM_DMA_ABORTED: u32 = 0x100;

/// `SimDma::ssid` when the transaction has no SubstreamID.
pub const SIM_DMA_NO_SSID: u32 = u32::MAX;

wire_struct!(
    /// `VSMMU_SIM_DMA` reply head; read data follows on success.
    SimDmaReply {
        /// Size of the reply payload.
        argsz: u32,
        /// Echoed.
        flags: u32,
        /// 0, or the SMMU event code raised.
        status: u32,
        /// Zero.
        reserved: u32,
    } = 16
);

/// `VSMMU_TRANSLATE` flag: translate for a write (else a read).
pub const TRANSLATE_WRITE: u32 = 1 << 0;
/// `VSMMU_TRANSLATE` flag: a fault is reported in the status only, no event.
pub const TRANSLATE_NO_EVENT: u32 = 1 << 1;
/// `VSMMU_TRANSLATE` flag: after a translated access, also translate the
/// granules that follow it, walked as reads and without events, as many as
/// `argsz` leaves room for ([`TranslateAhead`] records after the reply,
/// each with what its granule allows, up to [`TRANSLATE_AHEAD_MAX`]; they
/// stop at the first that would fault). A VMM caching translations saves a
/// round trip per page of a sequential transfer; an SMMU may fill its TLB
/// ahead alike.
pub const TRANSLATE_AHEAD: u32 = 1 << 2;
/// `VSMMU_TRANSLATE` flag: as [`TRANSLATE_AHEAD`], for the granules before
/// the access, nearest first. With both, the two sides alternate (the one
/// after, the one before, ...), each stopping at its first fault. Linux
/// allocates IOVAs top down, so the buffers of one request, or the
/// segments of one transfer, often lie below the first one a device
/// touches.
pub const TRANSLATE_BEHIND: u32 = 1 << 3;
/// Most [`TranslateAhead`] records in one reply.
pub const TRANSLATE_AHEAD_MAX: usize = 63;
/// `TranslateReply::perm`: reads allowed.
pub const TRANSLATE_PERM_READ: u32 = 1 << 0;
/// `TranslateReply::perm`: writes allowed.
pub const TRANSLATE_PERM_WRITE: u32 = 1 << 1;

wire_struct!(
    /// `VSMMU_TRANSLATE` request: one access of a device the VMM emulates.
    Translate {
        /// Reply size the client accepts (at least 32).
        argsz: u32,
        /// `TRANSLATE_WRITE | TRANSLATE_NO_EVENT | TRANSLATE_AHEAD |
        /// TRANSLATE_BEHIND`.
        flags: u32,
        /// StreamID of the device.
        sid: u32,
        /// SubstreamID, or `SIM_DMA_NO_SSID`.
        ssid: u32,
        /// The address the device uses.
        iova: u64,
    } = 24
);

wire_struct!(
    /// `VSMMU_TRANSLATE` reply.
    TranslateReply {
        /// 32.
        argsz: u32,
        /// Echoed.
        flags: u32,
        /// 0, the event code raised, or `SIM_DMA_ABORTED`.
        status: u32,
        /// `TRANSLATE_PERM_*`: what the translation allows, for any access
        /// (write only once the page is writable without a dirty update).
        perm: u32,
        /// Translated address of `iova` (stage 2 is the identity).
        addr: u64,
        /// Size of the translation granule minus one.
        mask: u64,
    } = 32
);

wire_struct!(
    /// `VSMMU_NOTIFY_SETUP` request (and reply): three fds come with it, the
    /// memfd of the ring ([`crate::notify::ring_bytes`] of `log2_entries`,
    /// header filled in), the kick eventfd (vsmmud signals it) and the ack
    /// eventfd (the VMM signals it).
    NotifySetup {
        /// 16.
        argsz: u32,
        /// Zero.
        flags: u32,
        /// log2 of the ring's record count.
        log2_entries: u32,
        /// Zero.
        reserved: u32,
    } = 16
);

wire_struct!(
    /// One granule translated ahead ([`TRANSLATE_AHEAD`]).
    TranslateAhead {
        /// Input address of the granule (aligned).
        iova: u64,
        /// Its translated address.
        addr: u64,
        /// Size of the granule minus one.
        mask: u64,
        /// `TRANSLATE_PERM_*`: what the translation allows, for any access
        /// (write only once the page is writable without a dirty update).
        perm: u32,
        /// Zero.
        reserved: u32,
    } = 32
);

wire_struct!(
    /// `VSMMU_GET_STATS` request and reply head (JSON follows in the reply).
    StatsRequest {
        /// Reply size the client accepts.
        argsz: u32,
        /// Zero.
        flags: u32,
    } = 8
);

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use vfio_bindings::bindings::vfio as k;

    /// Our wire structs that mirror kernel VFIO structs have the kernel's
    /// layout (vfio-user reuses them).
    #[test]
    fn kernel_layouts_match() {
        assert_eq!(size_of::<RegionInfo>(), size_of::<k::vfio_region_info>());
        assert_eq!(
            offset_of!(RegionInfo, size),
            offset_of!(k::vfio_region_info, size)
        );
        assert_eq!(
            offset_of!(RegionInfo, offset),
            offset_of!(k::vfio_region_info, offset)
        );
        assert_eq!(size_of::<IrqInfo>(), size_of::<k::vfio_irq_info>());
        assert_eq!(
            offset_of!(IrqInfo, count),
            offset_of!(k::vfio_irq_info, count)
        );
        assert_eq!(size_of::<IrqSet>(), size_of::<k::vfio_irq_set>());
        assert_eq!(
            offset_of!(IrqSet, count),
            offset_of!(k::vfio_irq_set, count)
        );
        assert_eq!(
            size_of::<DeviceInfo>(),
            offset_of!(k::vfio_device_info, cap_offset)
        );
    }
}
