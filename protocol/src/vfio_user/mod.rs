//! vfio-user messages (QEMU `docs/interop/vfio-user.rst`) and the vsmmu
//! extension commands (docs/design.md, and the README's table).
//!
//! Every message is a 16-byte [`Header`] followed by a command-specific
//! payload. [`Request::decode`] turns a command message into a typed value
//! or a [`DecodeError`] that names the errno the server replies with;
//! [`Message`] builds messages of either direction.

mod caps;
mod payload;

pub use caps::{Capabilities, MigrationCap, VersionData, VsmmuCap, VSMMU_EXT_VERSION};
pub use payload::*;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of the message header.
pub const HEADER_SIZE: usize = 16;

/// The SMMU's interrupt lines, by vfio-user irq index (`SET_IRQS`,
/// `DEVICE_GET_IRQ_INFO`): the VMM wires one eventfd per index.
pub mod irq {
    /// Irq index of the EVENTQ interrupt.
    pub const EVENTQ: usize = 0;
    /// Irq index of the PRIQ interrupt (no PRI queue: never signalled).
    pub const PRIQ: usize = 1;
    /// Irq index of the CMD_SYNC interrupt.
    pub const CMD_SYNC: usize = 2;
    /// Irq index of the GERROR interrupt.
    pub const GERROR: usize = 3;
    /// Number of irq indexes.
    pub const COUNT: usize = 4;
}

/// Header flag: type field mask.
pub const FLAG_TYPE_MASK: u32 = 0xf;
/// Header type: command.
pub const FLAG_TYPE_COMMAND: u32 = 0;
/// Header type: reply.
pub const FLAG_TYPE_REPLY: u32 = 1;
/// Header flag: the sender wants no reply.
pub const FLAG_NO_REPLY: u32 = 1 << 4;
/// Header flag: the reply reports an error in `error_no`.
pub const FLAG_ERROR: u32 = 1 << 5;
/// Every flag bit the spec defines.
pub const FLAG_KNOWN: u32 = FLAG_TYPE_MASK | FLAG_NO_REPLY | FLAG_ERROR;

/// The protocol major version this crate speaks.
pub const VERSION_MAJOR: u16 = 0;
/// The highest minor version this crate speaks.
pub const VERSION_MINOR: u16 = 2;

/// The 16-byte header in front of every message.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Header {
    /// Chosen by the sender, echoed in the reply.
    pub msg_id: u16,
    /// A [`Command`] number.
    pub command: u16,
    /// Size of the whole message, header included.
    pub msg_size: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// errno of a failed command, in replies.
    pub error_no: u32,
}

impl Header {
    /// Decodes the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Header::read_from_prefix(bytes)
            .map(|(h, _)| h)
            .map_err(|_| DecodeError::Truncated {
                what: "header",
                need: HEADER_SIZE,
                got: bytes.len(),
            })
    }

    /// Checks a header received by a server: a command, a sane size.
    ///
    /// An error here means the byte stream cannot be trusted any more: the
    /// connection is closed.
    pub fn validate_command(&self, max_msg_size: usize) -> Result<(), HeaderError> {
        let size = self.msg_size as usize;
        if size < HEADER_SIZE {
            return Err(HeaderError::SizeTooSmall(self.msg_size));
        }
        if size > max_msg_size {
            return Err(HeaderError::SizeTooLarge {
                size: self.msg_size,
                max: max_msg_size,
            });
        }
        if self.flags & !FLAG_KNOWN != 0 {
            return Err(HeaderError::UnknownFlags(self.flags));
        }
        if self.flags & FLAG_TYPE_MASK != FLAG_TYPE_COMMAND {
            return Err(HeaderError::NotACommand(self.flags));
        }
        Ok(())
    }

    /// True when the command asks for no reply (a posted write).
    pub fn no_reply(&self) -> bool {
        self.flags & FLAG_NO_REPLY != 0
    }

    /// True for a reply with the error bit set.
    pub fn is_error(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }
}

/// A header that makes the rest of the stream untrustworthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// `msg_size` smaller than the header itself.
    #[error("message size {0} is smaller than the 16-byte header")]
    SizeTooSmall(u32),
    /// `msg_size` above the negotiated maximum.
    #[error("message size {size} exceeds the maximum of {max} bytes")]
    SizeTooLarge {
        /// The size the header claims.
        size: u32,
        /// The limit in force.
        max: usize,
    },
    /// Flag bits the spec does not define.
    #[error("unknown header flags {0:#x}")]
    UnknownFlags(u32),
    /// A reply (or another type) where a command was expected.
    #[error("header type {0:#x} is not a command")]
    NotACommand(u32),
}

macro_rules! commands {
    ($($(#[$m:meta])* $name:ident = $val:expr,)*) => {
        /// vfio-user command numbers, and the vsmmu extension (0x1000 up).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Command { $($(#[$m])* $name = $val,)* }

        impl Command {
            /// Every command, in number order.
            pub const ALL: &'static [Command] = &[$(Command::$name,)*];
        }

        impl TryFrom<u16> for Command {
            type Error = DecodeError;
            fn try_from(v: u16) -> Result<Self, DecodeError> {
                match v {
                    $($val => Ok(Command::$name),)*
                    _ => Err(DecodeError::UnknownCommand(v)),
                }
            }
        }
    };
}

commands! {
    /// `VFIO_USER_VERSION`.
    Version = 1,
    /// `VFIO_USER_DMA_MAP`.
    DmaMap = 2,
    /// `VFIO_USER_DMA_UNMAP`.
    DmaUnmap = 3,
    /// `VFIO_USER_DEVICE_GET_INFO`.
    DeviceGetInfo = 4,
    /// `VFIO_USER_DEVICE_GET_REGION_INFO`.
    DeviceGetRegionInfo = 5,
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS`.
    DeviceGetRegionIoFds = 6,
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO`.
    DeviceGetIrqInfo = 7,
    /// `VFIO_USER_DEVICE_SET_IRQS`.
    DeviceSetIrqs = 8,
    /// `VFIO_USER_REGION_READ`.
    RegionRead = 9,
    /// `VFIO_USER_REGION_WRITE`.
    RegionWrite = 10,
    /// `VFIO_USER_DMA_READ` (server to client).
    DmaRead = 11,
    /// `VFIO_USER_DMA_WRITE` (server to client).
    DmaWrite = 12,
    /// `VFIO_USER_DEVICE_RESET`.
    DeviceReset = 13,
    /// `VFIO_USER_REGION_WRITE_MULTI`.
    RegionWriteMulti = 15,
    /// `VFIO_USER_DEVICE_FEATURE`.
    DeviceFeature = 16,
    /// `VFIO_USER_MIG_DATA_READ`.
    MigDataRead = 17,
    /// `VFIO_USER_MIG_DATA_WRITE`.
    MigDataWrite = 18,
    /// `VSMMU_ATTACH_DEVICE`: bind a host device to a guest StreamID.
    VsmmuAttachDevice = 0x1000,
    /// `VSMMU_DETACH_DEVICE`.
    VsmmuDetachDevice = 0x1001,
    /// `VSMMU_SIM_INJECT`: queue event records in the sim host vEVENTQ.
    VsmmuSimInject = 0x1002,
    /// `VSMMU_SIM_DMA`: a simulated device DMA through the sim host.
    VsmmuSimDma = 0x1003,
    /// `VSMMU_GET_STATS`: counters as JSON.
    VsmmuGetStats = 0x1004,
    /// `VSMMU_TRANSLATE`: translate one address for a VMM-emulated device.
    VsmmuTranslate = 0x1005,
    /// `VSMMU_NOTIFY_SETUP`: share the invalidation ring
    /// ([`crate::notify`]).
    VsmmuNotifySetup = 0x1006,
}

impl Command {
    /// True for the vsmmu extension commands, usable only after both sides
    /// advertised the `vsmmu` capability.
    pub fn is_extension(self) -> bool {
        (self as u16) >= 0x1000
    }
}

/// Why a message could not be decoded. Each maps to the errno of the
/// error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a fixed structure needs.
    #[error("{what}: need {need} bytes, got {got}")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// A command number nobody defined.
    #[error("unknown command {0:#x}")]
    UnknownCommand(u16),
    /// A command that only a server sends.
    #[error("command {0:?} is sent by servers, not clients")]
    WrongDirection(Command),
    /// A size field that disagrees with the message.
    #[error("{what}: size field says {field}, message carries {actual}")]
    SizeMismatch {
        /// The structure being decoded.
        what: &'static str,
        /// The value of the size field.
        field: u64,
        /// The size actually present.
        actual: u64,
    },
    /// A field with a value the spec forbids.
    #[error("{0}")]
    Invalid(String),
    /// The VERSION JSON is malformed.
    #[error("version data: {0}")]
    Json(String),
}

impl DecodeError {
    /// The errno an error reply carries for this decode failure.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::UnknownCommand(_) | DecodeError::WrongDirection(_) => libc_errno::ENOSYS,
            _ => libc_errno::EINVAL,
        }
    }
}

/// The errno values this crate names (Linux numbering, as on the wire).
pub mod libc_errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such entry.
    pub const ENOENT: i32 = 2;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Bad file descriptor.
    pub const EBADF: i32 = 9;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// Already exists.
    pub const EEXIST: i32 = 17;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left.
    pub const ENOSPC: i32 = 28;
    /// Out of range.
    pub const ERANGE: i32 = 34;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
    /// Not supported.
    pub const ENOTSUP: i32 = 95;
    /// Protocol error.
    pub const EPROTO: i32 = 71;
    /// Message too long.
    pub const EMSGSIZE: i32 = 90;
}

/// Reads a fixed structure from the front of `bytes`.
pub(crate) fn read_prefix<'a, T: FromBytes + KnownLayout + Immutable>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), DecodeError> {
    T::read_from_prefix(bytes).map_err(|_| DecodeError::Truncated {
        what,
        need: std::mem::size_of::<T>(),
        got: bytes.len(),
    })
}

/// Reads a fixed structure that must be exactly the whole of `bytes`.
pub(crate) fn read_exact<T: FromBytes + KnownLayout + Immutable>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (v, rest) = read_prefix::<T>(what, bytes)?;
    if !rest.is_empty() {
        return Err(DecodeError::SizeMismatch {
            what,
            field: std::mem::size_of::<T>() as u64,
            actual: bytes.len() as u64,
        });
    }
    Ok(v)
}

/// A decoded command message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `VFIO_USER_VERSION`.
    Version {
        /// Proposed major version.
        major: u16,
        /// Proposed minor version.
        minor: u16,
        /// Proposed capabilities (defaults when the JSON is absent).
        data: VersionData,
    },
    /// `VFIO_USER_DMA_MAP`.
    DmaMap(DmaMap),
    /// `VFIO_USER_DMA_UNMAP`.
    DmaUnmap(DmaUnmap),
    /// `VFIO_USER_DEVICE_GET_INFO`.
    DeviceGetInfo(DeviceInfo),
    /// `VFIO_USER_DEVICE_GET_REGION_INFO`.
    DeviceGetRegionInfo(RegionInfo),
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS`.
    DeviceGetRegionIoFds(RegionIoFds),
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO`.
    DeviceGetIrqInfo(IrqInfo),
    /// `VFIO_USER_DEVICE_SET_IRQS` with its optional bool array.
    DeviceSetIrqs {
        /// The fixed part.
        set: IrqSet,
        /// `DATA_BOOL` bytes (empty otherwise).
        data: &'a [u8],
    },
    /// `VFIO_USER_REGION_READ`.
    RegionRead(RegionAccess),
    /// `VFIO_USER_REGION_WRITE`.
    RegionWrite {
        /// Where and how much.
        access: RegionAccess,
        /// `access.count` bytes.
        data: &'a [u8],
    },
    /// `VFIO_USER_DEVICE_RESET`.
    DeviceReset,
    /// `VFIO_USER_REGION_WRITE_MULTI`.
    RegionWriteMulti(Vec<WriteMultiEntry>),
    /// `VFIO_USER_DEVICE_FEATURE`.
    DeviceFeature {
        /// argsz and flags.
        feature: DeviceFeature,
        /// Feature data.
        data: &'a [u8],
    },
    /// `VFIO_USER_MIG_DATA_READ`.
    MigDataRead(MigData),
    /// `VFIO_USER_MIG_DATA_WRITE`.
    MigDataWrite {
        /// argsz and size.
        hdr: MigData,
        /// `hdr.size` bytes.
        data: &'a [u8],
    },
    /// `VSMMU_ATTACH_DEVICE`: a device vsmmud binds (fd: the cdev; none
    /// with the sim host).
    VsmmuAttachDevice(VsmmuDevice),
    /// `VSMMU_ATTACH_DEVICE` with [`VSMMU_DEVICE_VMM_BOUND`]: a device the
    /// VMM bound to its own iommufd (fds: the cdev, the iommufd).
    VsmmuAttachBoundDevice(VsmmuBoundDevice),
    /// `VSMMU_DETACH_DEVICE`.
    VsmmuDetachDevice(VsmmuDevice),
    /// `VSMMU_SIM_INJECT`: event records as the kernel delivers them.
    VsmmuSimInject(Vec<[u64; 4]>),
    /// `VSMMU_SIM_DMA`.
    VsmmuSimDma {
        /// The fixed part.
        req: SimDma,
        /// Data of a write (`req.len` bytes), empty for a read.
        data: &'a [u8],
    },
    /// `VSMMU_GET_STATS`.
    VsmmuGetStats(StatsRequest),
    /// `VSMMU_TRANSLATE`.
    VsmmuTranslate(Translate),
    /// `VSMMU_NOTIFY_SETUP`.
    VsmmuNotifySetup(NotifySetup),
}

impl<'a> Request<'a> {
    /// Decodes the payload of a command message with header `hdr`.
    ///
    /// `payload` is everything after the header (`hdr.msg_size - 16` bytes).
    pub fn decode(hdr: &Header, payload: &'a [u8]) -> Result<Self, DecodeError> {
        let cmd = Command::try_from(hdr.command)?;
        Ok(match cmd {
            Command::Version => {
                let (v, json) = read_prefix::<VersionHeader>("version", payload)?;
                Request::Version {
                    major: v.major,
                    minor: v.minor,
                    data: VersionData::decode(json)?,
                }
            }
            Command::DmaMap => {
                let m = read_exact::<DmaMap>("dma_map", payload)?;
                if m.argsz as usize != std::mem::size_of::<DmaMap>() {
                    return Err(DecodeError::SizeMismatch {
                        what: "dma_map argsz",
                        field: m.argsz.into(),
                        actual: payload.len() as u64,
                    });
                }
                Request::DmaMap(m)
            }
            Command::DmaUnmap => {
                let m = read_exact::<DmaUnmap>("dma_unmap", payload)?;
                check_argsz("dma_unmap argsz", m.argsz, std::mem::size_of::<DmaUnmap>())?;
                Request::DmaUnmap(m)
            }
            Command::DeviceGetInfo => {
                let m = read_exact::<DeviceInfo>("device_info", payload)?;
                check_argsz(
                    "device_info argsz",
                    m.argsz,
                    std::mem::size_of::<DeviceInfo>(),
                )?;
                Request::DeviceGetInfo(m)
            }
            Command::DeviceGetRegionInfo => {
                let m = read_exact::<RegionInfo>("region_info", payload)?;
                check_argsz(
                    "region_info argsz",
                    m.argsz,
                    std::mem::size_of::<RegionInfo>(),
                )?;
                Request::DeviceGetRegionInfo(m)
            }
            Command::DeviceGetRegionIoFds => {
                let m = read_exact::<RegionIoFds>("region_io_fds", payload)?;
                check_argsz(
                    "region_io_fds argsz",
                    m.argsz,
                    std::mem::size_of::<RegionIoFds>(),
                )?;
                Request::DeviceGetRegionIoFds(m)
            }
            Command::DeviceGetIrqInfo => {
                let m = read_exact::<IrqInfo>("irq_info", payload)?;
                check_argsz("irq_info argsz", m.argsz, std::mem::size_of::<IrqInfo>())?;
                Request::DeviceGetIrqInfo(m)
            }
            Command::DeviceSetIrqs => {
                let (set, data) = read_prefix::<IrqSet>("irq_set", payload)?;
                if set.argsz as usize != payload.len() {
                    return Err(DecodeError::SizeMismatch {
                        what: "irq_set argsz",
                        field: set.argsz.into(),
                        actual: payload.len() as u64,
                    });
                }
                Request::DeviceSetIrqs { set, data }
            }
            Command::RegionRead => {
                Request::RegionRead(read_exact::<RegionAccess>("region_read", payload)?)
            }
            Command::RegionWrite => {
                let (access, data) = read_prefix::<RegionAccess>("region_write", payload)?;
                if access.count as usize != data.len() {
                    return Err(DecodeError::SizeMismatch {
                        what: "region_write count",
                        field: access.count.into(),
                        actual: data.len() as u64,
                    });
                }
                Request::RegionWrite { access, data }
            }
            Command::DmaRead | Command::DmaWrite => return Err(DecodeError::WrongDirection(cmd)),
            Command::DeviceReset => {
                if !payload.is_empty() {
                    return Err(DecodeError::SizeMismatch {
                        what: "device_reset",
                        field: 0,
                        actual: payload.len() as u64,
                    });
                }
                Request::DeviceReset
            }
            Command::RegionWriteMulti => {
                let (hdr, rest) = read_prefix::<WriteMultiHeader>("write_multi", payload)?;
                let n = std::mem::size_of::<WriteMultiEntry>() as u64;
                if hdr.wr_cnt.checked_mul(n) != Some(rest.len() as u64) {
                    return Err(DecodeError::SizeMismatch {
                        what: "write_multi wr_cnt",
                        field: hdr.wr_cnt,
                        actual: rest.len() as u64 / n,
                    });
                }
                let entries = <[WriteMultiEntry]>::ref_from_bytes(rest)
                    .map_err(|_| DecodeError::Invalid("write_multi entries".into()))?;
                for e in entries {
                    if e.count == 0 || e.count > 8 {
                        return Err(DecodeError::Invalid(format!(
                            "write_multi entry count {} not in 1..=8",
                            e.count
                        )));
                    }
                }
                Request::RegionWriteMulti(entries.to_vec())
            }
            Command::DeviceFeature => {
                let (feature, data) = read_prefix::<DeviceFeature>("device_feature", payload)?;
                Request::DeviceFeature { feature, data }
            }
            Command::MigDataRead => {
                Request::MigDataRead(read_exact::<MigData>("mig_data_read", payload)?)
            }
            Command::MigDataWrite => {
                let (hdr, data) = read_prefix::<MigData>("mig_data_write", payload)?;
                if hdr.size as usize != data.len() {
                    return Err(DecodeError::SizeMismatch {
                        what: "mig_data_write size",
                        field: hdr.size.into(),
                        actual: data.len() as u64,
                    });
                }
                Request::MigDataWrite { hdr, data }
            }
            Command::VsmmuAttachDevice => decode_attach(payload)?,
            Command::VsmmuDetachDevice => Request::VsmmuDetachDevice(decode_vsmmu_device(payload)?),
            Command::VsmmuSimInject => {
                let (h, rest) = read_prefix::<SimInjectHeader>("sim_inject", payload)?;
                check_argsz("sim_inject argsz", h.argsz, payload.len())?;
                if (h.count as u64) * 32 != rest.len() as u64 {
                    return Err(DecodeError::SizeMismatch {
                        what: "sim_inject count",
                        field: h.count.into(),
                        actual: rest.len() as u64 / 32,
                    });
                }
                let recs = <[[u64; 4]]>::ref_from_bytes(rest)
                    .map_err(|_| DecodeError::Invalid("sim_inject records".into()))?;
                Request::VsmmuSimInject(recs.to_vec())
            }
            Command::VsmmuSimDma => {
                let (req, data) = read_prefix::<SimDma>("sim_dma", payload)?;
                check_argsz("sim_dma argsz", req.argsz, payload.len())?;
                if req.flags & !SIM_DMA_WRITE != 0 {
                    return Err(DecodeError::Invalid(format!(
                        "sim_dma flags {:#x}",
                        req.flags
                    )));
                }
                if req.len == 0 || req.len > SIM_DMA_MAX_LEN {
                    return Err(DecodeError::Invalid(format!(
                        "sim_dma len {} not in 1..={SIM_DMA_MAX_LEN}",
                        req.len
                    )));
                }
                let want = if req.flags & SIM_DMA_WRITE != 0 {
                    req.len
                } else {
                    0
                };
                if data.len() as u64 != want {
                    return Err(DecodeError::SizeMismatch {
                        what: "sim_dma data",
                        field: want,
                        actual: data.len() as u64,
                    });
                }
                Request::VsmmuSimDma { req, data }
            }
            Command::VsmmuGetStats => {
                let r = read_exact::<StatsRequest>("get_stats", payload)?;
                check_argsz(
                    "get_stats argsz",
                    r.argsz,
                    std::mem::size_of::<StatsRequest>(),
                )?;
                if r.flags != 0 {
                    return Err(DecodeError::Invalid(format!(
                        "get_stats flags {:#x}",
                        r.flags
                    )));
                }
                Request::VsmmuGetStats(r)
            }
            Command::VsmmuNotifySetup => {
                let n = read_exact::<NotifySetup>("notify_setup", payload)?;
                let log2 = crate::notify::RING_LOG2_MIN..=crate::notify::RING_LOG2_MAX;
                if n.argsz as usize != std::mem::size_of::<NotifySetup>()
                    || n.flags != 0
                    || n.reserved != 0
                    || !log2.contains(&n.log2_entries)
                {
                    return Err(DecodeError::Invalid(format!(
                        "notify_setup argsz {} flags {:#x} log2_entries {} reserved {:#x}: \
                         expected 16, 0, {}..={}, 0",
                        n.argsz,
                        n.flags,
                        n.log2_entries,
                        n.reserved,
                        log2.start(),
                        log2.end()
                    )));
                }
                Request::VsmmuNotifySetup(n)
            }
            Command::VsmmuTranslate => {
                let t = read_exact::<Translate>("translate", payload)?;
                check_argsz(
                    "translate argsz",
                    t.argsz,
                    std::mem::size_of::<TranslateReply>(),
                )?;
                if t.flags
                    & !(TRANSLATE_WRITE | TRANSLATE_NO_EVENT | TRANSLATE_AHEAD | TRANSLATE_BEHIND)
                    != 0
                {
                    return Err(DecodeError::Invalid(format!(
                        "translate flags {:#x}",
                        t.flags
                    )));
                }
                Request::VsmmuTranslate(t)
            }
        })
    }

    /// The command this request decodes.
    pub fn command(&self) -> Command {
        match self {
            Request::Version { .. } => Command::Version,
            Request::DmaMap(_) => Command::DmaMap,
            Request::DmaUnmap(_) => Command::DmaUnmap,
            Request::DeviceGetInfo(_) => Command::DeviceGetInfo,
            Request::DeviceGetRegionInfo(_) => Command::DeviceGetRegionInfo,
            Request::DeviceGetRegionIoFds(_) => Command::DeviceGetRegionIoFds,
            Request::DeviceGetIrqInfo(_) => Command::DeviceGetIrqInfo,
            Request::DeviceSetIrqs { .. } => Command::DeviceSetIrqs,
            Request::RegionRead(_) => Command::RegionRead,
            Request::RegionWrite { .. } => Command::RegionWrite,
            Request::DeviceReset => Command::DeviceReset,
            Request::RegionWriteMulti(_) => Command::RegionWriteMulti,
            Request::DeviceFeature { .. } => Command::DeviceFeature,
            Request::MigDataRead(_) => Command::MigDataRead,
            Request::MigDataWrite { .. } => Command::MigDataWrite,
            Request::VsmmuAttachDevice(_) | Request::VsmmuAttachBoundDevice(_) => {
                Command::VsmmuAttachDevice
            }
            Request::VsmmuDetachDevice(_) => Command::VsmmuDetachDevice,
            Request::VsmmuSimInject(_) => Command::VsmmuSimInject,
            Request::VsmmuSimDma { .. } => Command::VsmmuSimDma,
            Request::VsmmuGetStats(_) => Command::VsmmuGetStats,
            Request::VsmmuTranslate(_) => Command::VsmmuTranslate,
            Request::VsmmuNotifySetup(_) => Command::VsmmuNotifySetup,
        }
    }
}

/// `argsz` in a request is the largest reply the client accepts; it must
/// at least hold the fixed reply.
fn check_argsz(what: &'static str, argsz: u32, min: usize) -> Result<(), DecodeError> {
    if (argsz as usize) < min {
        return Err(DecodeError::SizeMismatch {
            what,
            field: argsz.into(),
            actual: min as u64,
        });
    }
    Ok(())
}

/// `VSMMU_ATTACH_DEVICE`: the plain form (16 bytes, flags 0) or, with
/// [`VSMMU_DEVICE_VMM_BOUND`], the form that names the VMM's objects.
fn decode_attach(payload: &[u8]) -> Result<Request<'_>, DecodeError> {
    if payload.len() != std::mem::size_of::<VsmmuBoundDevice>() {
        return Ok(Request::VsmmuAttachDevice(decode_vsmmu_device(payload)?));
    }
    let d = read_exact::<VsmmuBoundDevice>("vsmmu_bound_device", payload)?;
    if d.argsz as usize != std::mem::size_of::<VsmmuBoundDevice>()
        || d.flags != VSMMU_DEVICE_VMM_BOUND
        || d.reserved != 0
    {
        return Err(DecodeError::Invalid(format!(
            "vsmmu_bound_device argsz {} flags {:#x} reserved {:#x}: expected 24, {:#x}, 0",
            d.argsz, d.flags, d.reserved, VSMMU_DEVICE_VMM_BOUND
        )));
    }
    Ok(Request::VsmmuAttachBoundDevice(d))
}

fn decode_vsmmu_device(payload: &[u8]) -> Result<VsmmuDevice, DecodeError> {
    let d = read_exact::<VsmmuDevice>("vsmmu_device", payload)?;
    if d.argsz as usize != std::mem::size_of::<VsmmuDevice>() || d.flags != 0 || d.reserved != 0 {
        return Err(DecodeError::Invalid(format!(
            "vsmmu_device argsz {} flags {:#x} reserved {:#x}: expected 16, 0, 0",
            d.argsz, d.flags, d.reserved
        )));
    }
    Ok(d)
}

/// Builds a message: header plus payload pieces.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// Starts a message with the given header fields; `msg_size` is filled
    /// in by [`Message::finish`].
    pub fn new(msg_id: u16, command: u16, flags: u32, error_no: u32) -> Self {
        let hdr = Header {
            msg_id,
            command,
            msg_size: HEADER_SIZE as u32,
            flags,
            error_no,
        };
        // Room for the common replies without reallocating.
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(hdr.as_bytes());
        Message { buf }
    }

    /// A command message from a client.
    pub fn command(msg_id: u16, command: Command) -> Self {
        Message::new(msg_id, command as u16, FLAG_TYPE_COMMAND, 0)
    }

    /// A successful reply to `req`.
    pub fn reply(req: &Header) -> Self {
        Message::new(req.msg_id, req.command, FLAG_TYPE_REPLY, 0)
    }

    /// An error reply to `req`: header only, as the spec demands.
    pub fn error_reply(req: &Header, errno: i32) -> Vec<u8> {
        Message::new(
            req.msg_id,
            req.command,
            FLAG_TYPE_REPLY | FLAG_ERROR,
            errno as u32,
        )
        .finish()
    }

    /// Appends a fixed structure.
    pub fn push<T: IntoBytes + Immutable>(mut self, v: &T) -> Self {
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Sets the no-reply flag.
    pub fn no_reply(mut self) -> Self {
        self.buf[8] |= FLAG_NO_REPLY as u8;
        self
    }

    /// Fills in `msg_size` and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let size = self.buf.len() as u32;
        self.buf[4..8].copy_from_slice(&size.to_le_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests;
