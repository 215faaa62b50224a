//! The invalidation ring: how vsmmud tells the VMM that translations it
//! handed out (`VSMMU_TRANSLATE`) may have changed.
//!
//! A VMM that caches translations for the devices it emulates (an IOTLB in
//! the VMM, or IOMMU notifiers such as vhost's device IOTLB) shares a memfd
//! with vsmmud (`VSMMU_NOTIFY_SETUP`). vsmmud appends one [`Record`] for
//! every guest command or register write that could change a translation
//! and publishes it by advancing [`RingHeader::head`] (release) *before* it
//! completes any later CMD_SYNC, so a VMM that looks at `head` (acquire)
//! before using a cached translation never uses one the guest has
//! invalidated and synced. A VMM that must act on invalidations itself
//! (notifiers) sets [`VMM_WANT_ACK`]: vsmmud then signals the kick eventfd
//! at each CMD_SYNC that follows new records and completes that CMD_SYNC
//! only once [`RingHeader::ack`] reached them (the VMM signals the ack
//! eventfd after storing it).
//!
//! Records name what changed conservatively: the VMM does not know ASIDs
//! or VMIDs, so an address invalidation applies to every StreamID, and an
//! ASID-wide one to everything.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::smmu::command::{Command, TlbiRange};

/// `RingHeader::magic`: "VSMN".
pub const RING_MAGIC: u32 = 0x4e4d_5356;
/// `RingHeader::version`.
pub const RING_VERSION: u32 = 1;
/// Bytes before the first record.
pub const RING_HEADER_SIZE: usize = 64;
/// Smallest and largest ring (log2 of the record count).
pub const RING_LOG2_MIN: u32 = 4;
/// See [`RING_LOG2_MIN`].
pub const RING_LOG2_MAX: u32 = 16;
/// `RingHeader::vmm_flags`: complete a CMD_SYNC only after the VMM
/// acknowledged the records before it.
pub const VMM_WANT_ACK: u32 = 1;

/// Bytes of the shared area for `2^log2` records.
pub const fn ring_bytes(log2: u32) -> usize {
    RING_HEADER_SIZE + (std::mem::size_of::<Record>() << log2)
}

/// The shared area's first 64 bytes. `head`, `ack` and `vmm_flags` are
/// accessed atomically by both processes; the rest is written once by the
/// VMM before `VSMMU_NOTIFY_SETUP`.
#[repr(C)]
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RingHeader {
    /// [`RING_MAGIC`].
    pub magic: u32,
    /// [`RING_VERSION`].
    pub version: u32,
    /// log2 of the number of records.
    pub log2_entries: u32,
    /// [`VMM_WANT_ACK`], written by the VMM.
    pub vmm_flags: u32,
    /// Records published, written by vsmmud (record `i` is at `i % n`).
    pub head: u64,
    /// Records the VMM has processed, written by the VMM.
    pub ack: u64,
    /// Zero.
    pub reserved: [u64; 4],
}

/// What a [`Record`] invalidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Every translation.
    All = 1,
    /// Every translation of StreamIDs `[sid, sid + count)`.
    Streams = 2,
    /// Every translation whose input range meets `[addr, addr + size)`, of
    /// any StreamID.
    Addresses = 3,
}

/// One invalidation, 32 bytes.
#[repr(C)]
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Record {
    /// A [`Kind`].
    pub kind: u32,
    /// First StreamID ([`Kind::Streams`]).
    pub sid: u32,
    /// Number of StreamIDs ([`Kind::Streams`]).
    pub count: u32,
    /// Zero.
    pub reserved: u32,
    /// First address ([`Kind::Addresses`]).
    pub addr: u64,
    /// Bytes, at least 1 ([`Kind::Addresses`]; `u64::MAX` reaches the end).
    pub size: u64,
}

impl Record {
    /// Everything.
    pub const fn all() -> Record {
        Record {
            kind: Kind::All as u32,
            sid: 0,
            count: 0,
            reserved: 0,
            addr: 0,
            size: 0,
        }
    }

    /// StreamIDs `[sid, sid + count)`.
    pub const fn streams(sid: u32, count: u32) -> Record {
        Record {
            kind: Kind::Streams as u32,
            sid,
            count,
            reserved: 0,
            addr: 0,
            size: 0,
        }
    }

    /// Addresses `[addr, addr + size)` of every StreamID.
    pub const fn addresses(addr: u64, size: u64) -> Record {
        Record {
            kind: Kind::Addresses as u32,
            sid: 0,
            count: 0,
            reserved: 0,
            addr,
            size,
        }
    }

    /// The kind, `None` for an unknown one (the reader then drops
    /// everything).
    pub fn kind(&self) -> Option<Kind> {
        match self.kind {
            1 => Some(Kind::All),
            2 => Some(Kind::Streams),
            3 => Some(Kind::Addresses),
            _ => None,
        }
    }

    /// True when a translation of `sid` covering `[start, start + len)`
    /// (`len` ≥ 1) is invalidated by this record.
    pub fn covers(&self, sid: u32, start: u64, len: u64) -> bool {
        match self.kind() {
            None | Some(Kind::All) => true,
            Some(Kind::Streams) => {
                sid >= self.sid && u64::from(sid - self.sid) < u64::from(self.count)
            }
            Some(Kind::Addresses) => {
                let end = start.saturating_add(len.max(1) - 1);
                let rec_end = self.addr.saturating_add(self.size.max(1) - 1);
                start <= rec_end && self.addr <= end
            }
        }
    }

    /// What a guest command invalidates in a VMM's cache of translations,
    /// `None` for commands that change none (CMD_SYNC, prefetches, ...).
    pub fn of_command(cmd: &Command) -> Option<Record> {
        Some(match *cmd {
            Command::CfgiSte { sid, .. } | Command::CfgiCd { sid, .. } => Record::streams(sid, 1),
            Command::CfgiCdAll { sid } | Command::AtcInv { sid, .. } => Record::streams(sid, 1),
            // CMD_CFGI_ALL is CFGI_STE_RANGE with Range 31.
            Command::CfgiSteRange { range, .. } if range >= 31 => Record::all(),
            Command::CfgiSteRange { sid, range } => {
                let span = 1u32 << (u32::from(range) + 1);
                Record::streams(sid & !(span - 1), span)
            }
            Command::TlbiNhVa { range, .. }
            | Command::TlbiNhVaa { range, .. }
            | Command::TlbiEl2Va { range, .. }
            | Command::TlbiEl2Vaa { range }
            | Command::TlbiS2Ipa { range, .. } => {
                let (addr, size) = tlbi_span(&range);
                Record::addresses(addr, size)
            }
            Command::CfgiVmsPidm { .. }
            | Command::TlbiNhAll { .. }
            | Command::TlbiNhAsid { .. }
            | Command::TlbiEl2All
            | Command::TlbiEl2Asid { .. }
            | Command::TlbiS12Vmall { .. }
            | Command::TlbiNsnhAll => Record::all(),
            _ => return None,
        })
    }
}

/// `[addr, addr + size)` of a TLBI by address: one byte without a range
/// (TG = 0; the reader drops whatever translation contains it), else
/// `(NUM + 1) << SCALE` granules, clamped at the top of the address space.
pub fn tlbi_span(r: &TlbiRange) -> (u64, u64) {
    let shift = match r.tg {
        0 => return (r.addr, 1),
        1 => 12,
        2 => 14,
        _ => 16,
    };
    let bytes = (u128::from(r.num) + 1) << (u32::from(r.scale.min(63)) + shift);
    let size = bytes.min((1u128 << 64) - u128::from(r.addr));
    (r.addr, size.min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(std::mem::size_of::<RingHeader>(), RING_HEADER_SIZE);
        assert_eq!(std::mem::size_of::<Record>(), 32);
        assert_eq!(ring_bytes(4), 64 + 16 * 32);
        assert_eq!(
            Record::addresses(0x1000, 0x2000).as_bytes(),
            &[
                3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20,
                0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn records_of_commands() {
        let va = |addr| TlbiRange::va(addr, true);
        assert_eq!(
            Record::of_command(&Command::TlbiNhVa {
                vmid: 0,
                asid: 3,
                range: va(0x20_0000)
            }),
            Some(Record::addresses(0x20_0000, 1))
        );
        // 4K granules, NUM 1, SCALE 2: (1 + 1) << 2 = 8 pages.
        let ranged = TlbiRange {
            num: 1,
            scale: 2,
            tg: 1,
            ..va(0x40_0000)
        };
        assert_eq!(
            Record::of_command(&Command::TlbiNhVaa {
                vmid: 0,
                range: ranged
            }),
            Some(Record::addresses(0x40_0000, 8 << 12))
        );
        // Clamped at 2^64.
        let top = TlbiRange {
            num: 31,
            scale: 63,
            tg: 3,
            ..va(0xffff_ffff_ffff_0000)
        };
        assert_eq!(tlbi_span(&top), (0xffff_ffff_ffff_0000, 0x1_0000));
        assert_eq!(
            Record::of_command(&Command::CfgiSteRange {
                sid: 0x13,
                range: 1
            }),
            Some(Record::streams(0x10, 4))
        );
        assert_eq!(
            Record::of_command(&Command::CfgiSteRange { sid: 7, range: 31 }),
            Some(Record::all())
        );
        assert_eq!(
            Record::of_command(&Command::CfgiCdAll { sid: 9 }),
            Some(Record::streams(9, 1))
        );
        assert_eq!(
            Record::of_command(&Command::TlbiNhAsid { vmid: 0, asid: 5 }),
            Some(Record::all())
        );
        assert_eq!(
            Record::of_command(&Command::TlbiNsnhAll),
            Some(Record::all())
        );
        assert_eq!(
            Record::of_command(&Command::Sync {
                cs: crate::smmu::command::SyncCs::None,
                msh: 0,
                msiattr: 0,
                msidata: 0,
                msiaddr: 0
            }),
            None
        );
    }

    #[test]
    fn coverage() {
        let r = Record::addresses(0x2000, 0x1000);
        assert!(r.covers(5, 0x2000, 0x1000));
        assert!(r.covers(5, 0x2fff, 1));
        assert!(!r.covers(5, 0x3000, 0x1000));
        assert!(!r.covers(5, 0x1000, 0x1000));
        // A 2 MiB block containing the address.
        assert!(Record::addresses(0x20_1234, 1).covers(1, 0x20_0000, 0x20_0000));
        let s = Record::streams(0x10, 4);
        assert!(s.covers(0x13, 0, 1) && s.covers(0x10, 0, 1));
        assert!(!s.covers(0x14, 0, 1) && !s.covers(0xf, 0, 1));
        assert!(Record::all().covers(0, 0, 1));
        let unknown = Record {
            kind: 9,
            ..Record::all()
        };
        assert_eq!(unknown.kind(), None);
        assert!(unknown.covers(1, 2, 3));
        // The end of the address space.
        assert!(Record::addresses(u64::MAX, u64::MAX).covers(0, u64::MAX, 1));
    }
}
