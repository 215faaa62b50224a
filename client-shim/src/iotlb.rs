//! The VMM-side IOTLB: translations of emulated devices' DMA
//! (`VSMMU_TRANSLATE`), cached per (StreamID, SubstreamID, 4 KiB page) and
//! dropped by the invalidation ring vsmmud writes
//! ([`vsmmu_protocol::notify`]).
//!
//! Why no stale translation survives a guest's TLBI + CMD_SYNC: vsmmud
//! publishes the ring's `head` before it completes the CMD_SYNC, and every
//! lookup first reads `head` and applies the records up to it. A
//! translation answered while an invalidation was published (the head moved
//! during the request) is used once and not cached.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use vm_memory::{FileOffset, MmapRegion, VolatileMemory};
use vsmmu_protocol::notify::{
    ring_bytes, Kind, Record, RingHeader, RING_HEADER_SIZE, RING_MAGIC, RING_VERSION, VMM_WANT_ACK,
};
use vsmmu_protocol::vfio_user::TranslateReply;
use zerocopy::IntoBytes;

/// Offsets of the atomically shared header fields.
const VMM_FLAGS: usize = 12;
const HEAD: usize = 16;
const ACK: usize = 24;

/// Cached translations kept at most; a full cache is emptied (as QEMU's own
/// SMMUv3 model does with its IOTLB).
pub const IOTLB_CAPACITY: usize = 8192;

/// Counters of the cache and the ring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IotlbStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to vsmmud.
    pub misses: u64,
    /// Records applied.
    pub records: u64,
    /// Times the whole cache was dropped (ring overrun, capacity, `All`).
    pub flushes: u64,
}

/// One cached translation: `[base_in, base_in + mask]` maps to
/// `[base_out, base_out + mask]` with `perm`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    base_in: u64,
    base_out: u64,
    mask: u64,
    perm: u32,
}

/// The IOTLB and the VMM's side of the ring.
#[derive(Debug)]
pub struct Iotlb {
    map: MmapRegion,
    entries: u64,
    /// Records applied to the cache.
    tail: u64,
    /// Records handed to the notify handler (and acknowledged).
    notified: u64,
    kick: EventFd,
    ack: EventFd,
    cache: HashMap<(u32, u32, u64), Entry>,
    /// Counters.
    pub stats: IotlbStats,
}

/// The fds `VSMMU_NOTIFY_SETUP` sends: the ring's memfd, the kick and the
/// ack eventfds (vsmmud's copies).
pub struct SetupFds {
    /// The ring.
    pub ring: OwnedFd,
    /// vsmmud signals it.
    pub kick: OwnedFd,
    /// The VMM signals it.
    pub ack: OwnedFd,
}

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

impl Iotlb {
    /// A ring of `2^log2` records (header written) and an empty cache.
    pub fn new(log2: u32) -> std::io::Result<(Iotlb, SetupFds)> {
        let len = ring_bytes(log2);
        let memfd = memfd_create("vsmmu-notify", MFdFlags::MFD_CLOEXEC).map_err(io)?;
        nix::unistd::ftruncate(&memfd, len as i64).map_err(io)?;
        let ring = memfd.try_clone()?;
        let map = MmapRegion::from_file(FileOffset::new(File::from(memfd), 0), len)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let header = RingHeader {
            magic: RING_MAGIC,
            version: RING_VERSION,
            log2_entries: log2,
            ..RingHeader::default()
        };
        map.get_slice(0, RING_HEADER_SIZE)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .copy_from(header.as_bytes());
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let kick = EventFd::from_value_and_flags(0, flags).map_err(io)?;
        let ack = EventFd::from_value_and_flags(0, flags).map_err(io)?;
        let fds = SetupFds {
            ring,
            kick: kick.as_fd().try_clone_to_owned()?,
            ack: ack.as_fd().try_clone_to_owned()?,
        };
        Ok((
            Iotlb {
                map,
                entries: 1 << log2,
                tail: 0,
                notified: 0,
                kick,
                ack,
                cache: HashMap::new(),
                stats: IotlbStats::default(),
            },
            fds,
        ))
    }

    fn atomic64(&self, off: usize) -> Option<&AtomicU64> {
        self.map.get_atomic_ref::<AtomicU64>(off).ok()
    }

    /// Records vsmmud has published.
    pub fn head(&self) -> u64 {
        self.atomic64(HEAD).map_or(0, |h| h.load(Ordering::Acquire))
    }

    /// The kick eventfd: readable when vsmmud waits for an acknowledgement.
    pub fn kick_fd(&self) -> RawFd {
        self.kick.as_fd().as_raw_fd()
    }

    /// Asks vsmmud to complete each CMD_SYNC only after the records before
    /// it were handed on by [`Iotlb::drain`]: needed when the VMM
    /// acts on them itself (IOMMU notifiers).
    pub fn set_want_ack(&self, on: bool) {
        if let Ok(f) = self.map.get_atomic_ref::<AtomicU32>(VMM_FLAGS) {
            if on {
                f.fetch_or(VMM_WANT_ACK, Ordering::AcqRel);
            } else {
                f.fetch_and(!VMM_WANT_ACK, Ordering::AcqRel);
            }
        }
    }

    /// Records `[from, head)`; one [`Record::all`] when vsmmud lapped the
    /// ring past `from` (before or while they were read).
    fn records(&self, from: u64, head: u64) -> Vec<Record> {
        let lapped = |h: u64| h.wrapping_sub(from) > self.entries;
        if lapped(head) {
            return vec![Record::all()];
        }
        let mut records = Vec::with_capacity(head.wrapping_sub(from) as usize);
        for i in from..head {
            let slot =
                RING_HEADER_SIZE + (i % self.entries) as usize * std::mem::size_of::<Record>();
            let mut rec = Record::default();
            match self.map.get_slice(slot, std::mem::size_of::<Record>()) {
                Ok(s) => {
                    s.copy_to(rec.as_mut_bytes());
                    records.push(rec);
                }
                Err(_) => return vec![Record::all()],
            }
        }
        if lapped(self.head()) {
            return vec![Record::all()];
        }
        records
    }

    /// Applies to the cache the records published since the last call.
    /// Returns the head applied.
    pub fn sync(&mut self) -> u64 {
        let head = self.head();
        if head != self.tail {
            for rec in self.records(self.tail, head) {
                self.apply(&rec);
            }
            self.tail = head;
        }
        head
    }

    /// [`Iotlb::sync`], then hands `on_record` every record it has not
    /// seen and acknowledges them (vsmmud completes a CMD_SYNC waiting for
    /// them).
    pub fn drain(&mut self, on_record: &mut dyn FnMut(&Record)) {
        let head = self.sync();
        if head != self.notified {
            for rec in self.records(self.notified, head) {
                on_record(&rec);
            }
            self.notified = head;
        }
        self.acknowledge();
    }

    /// From now on, hand the handler only what is published after this.
    pub fn skip_to_head(&mut self) {
        self.sync();
        self.notified = self.tail;
        self.acknowledge();
    }

    fn apply(&mut self, rec: &Record) {
        self.stats.records += 1;
        match rec.kind() {
            None | Some(Kind::All) => self.flush(),
            Some(_) => self
                .cache
                .retain(|&(sid, _, _), e| !rec.covers(sid, e.base_in, e.mask.saturating_add(1))),
        }
    }

    fn flush(&mut self) {
        self.cache.clear();
        self.stats.flushes += 1;
    }

    /// Stores `ack` = the records handed to the handler and signals the
    /// ack eventfd when it moved.
    fn acknowledge(&mut self) {
        let Some(ack) = self.atomic64(ACK) else {
            return;
        };
        if ack.swap(self.notified, Ordering::AcqRel) != self.notified {
            // EAGAIN only when the counter is about to overflow: vsmmud
            // has a wakeup pending anyway.
            let _ = self.ack.write(1);
        }
    }

    /// Clears the kick eventfd (after it polled readable).
    pub fn clear_kick(&self) {
        let _ = self.kick.read();
    }

    /// A cached translation of `iova` allowing `write` (else a read).
    pub fn lookup(
        &mut self,
        sid: u32,
        ssid: u32,
        iova: u64,
        write: bool,
    ) -> Option<TranslateReply> {
        let need = if write {
            vsmmu_protocol::vfio_user::TRANSLATE_PERM_WRITE
        } else {
            vsmmu_protocol::vfio_user::TRANSLATE_PERM_READ
        };
        match self.cache.get(&(sid, ssid, iova >> 12)) {
            Some(e) if e.perm & need != 0 => {
                self.stats.hits += 1;
                Some(TranslateReply {
                    argsz: TranslateReply::SIZE,
                    flags: 0,
                    status: 0,
                    perm: e.perm,
                    addr: e.base_out + (iova - e.base_in),
                    mask: e.mask,
                })
            }
            _ => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Caches a successful translation of `iova` (permissions of the same
    /// mapping add up).
    pub fn insert(&mut self, sid: u32, ssid: u32, iova: u64, r: &TranslateReply) {
        if r.status != 0 || r.perm == 0 || r.mask & (r.mask.wrapping_add(1)) != 0 {
            return;
        }
        if self.cache.len() >= IOTLB_CAPACITY {
            self.flush();
        }
        let e = Entry {
            base_in: iova & !r.mask,
            base_out: r.addr.wrapping_sub(iova & r.mask),
            mask: r.mask,
            perm: r.perm,
        };
        let slot = self.cache.entry((sid, ssid, iova >> 12)).or_insert(e);
        if (slot.base_in, slot.base_out, slot.mask) == (e.base_in, e.base_out, e.mask) {
            slot.perm |= e.perm;
        } else {
            *slot = e;
        }
    }

    /// Cached translations now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsmmu_protocol::vfio_user::{TRANSLATE_PERM_READ, TRANSLATE_PERM_WRITE};

    /// vsmmud's side, as the server writes: a record, then the head.
    fn publish(t: &Iotlb, i: u64, rec: Record) {
        let slot = RING_HEADER_SIZE + (i % t.entries) as usize * 32;
        t.map.get_slice(slot, 32).unwrap().copy_from(rec.as_bytes());
        t.atomic64(HEAD).unwrap().store(i + 1, Ordering::Release);
    }

    fn reply(addr: u64, mask: u64, perm: u32) -> TranslateReply {
        TranslateReply {
            argsz: TranslateReply::SIZE,
            flags: 0,
            status: 0,
            perm,
            addr,
            mask,
        }
    }

    #[test]
    fn hits_misses_and_permissions() {
        let (mut t, _fds) = Iotlb::new(4).unwrap();
        assert!(t.lookup(1, 0, 0x1234, false).is_none());
        t.insert(1, 0, 0x1234, &reply(0x8_1234, 0xfff, TRANSLATE_PERM_READ));
        let hit = t.lookup(1, 0, 0x1ff8, false).unwrap();
        assert_eq!(
            (hit.addr, hit.mask, hit.perm),
            (0x8_1ff8, 0xfff, TRANSLATE_PERM_READ)
        );
        // A write needs its own answer; both then hit.
        assert!(t.lookup(1, 0, 0x1000, true).is_none());
        t.insert(1, 0, 0x1000, &reply(0x8_1000, 0xfff, TRANSLATE_PERM_WRITE));
        assert_eq!(t.lookup(1, 0, 0x1000, true).unwrap().perm, 3);
        assert!(t.lookup(1, 0, 0x1000, false).is_some());
        // Other StreamID, SubstreamID or page: misses.
        assert!(t.lookup(2, 0, 0x1000, false).is_none());
        assert!(t.lookup(1, 1, 0x1000, false).is_none());
        assert!(t.lookup(1, 0, 0x2000, false).is_none());
        // A 2 MiB block: any page of it, once cached, answers within it.
        t.insert(
            1,
            0,
            0x20_5010,
            &reply(0x4020_5010, 0x1f_ffff, TRANSLATE_PERM_READ),
        );
        assert_eq!(t.lookup(1, 0, 0x20_5ff0, false).unwrap().addr, 0x4020_5ff0);
        // Faults are never cached.
        t.insert(
            3,
            0,
            0,
            &TranslateReply {
                status: 0x10,
                ..reply(0, 0xfff, 1)
            },
        );
        assert!(t.lookup(3, 0, 0, false).is_none());
        assert_eq!((t.stats.hits, t.stats.misses), (4, 6));
    }

    #[test]
    fn records_drop_what_they_cover() {
        let (mut t, _fds) = Iotlb::new(4).unwrap();
        let fill = |t: &mut Iotlb| {
            for (sid, iova) in [(1, 0x1000), (1, 0x2000), (2, 0x1000), (2, 0x20_0000)] {
                let mask = if iova == 0x20_0000 { 0x1f_ffff } else { 0xfff };
                t.insert(sid, 0, iova, &reply(iova, mask, TRANSLATE_PERM_READ));
            }
        };
        fill(&mut t);
        let mut seen = Vec::new();
        publish(&t, 0, Record::addresses(0x1000, 1));
        t.drain(&mut |r| seen.push(*r));
        assert_eq!(seen, [Record::addresses(0x1000, 1)]);
        assert_eq!(t.len(), 2);
        assert!(t.lookup(1, 0, 0x2000, false).is_some());
        // An address inside the block drops the block.
        publish(&t, 1, Record::addresses(0x21_0000, 0x1000));
        t.sync();
        assert!(t.lookup(2, 0, 0x20_0000, false).is_none());
        fill(&mut t);
        publish(&t, 2, Record::streams(2, 1));
        t.sync();
        assert_eq!(t.len(), 2);
        assert!(t.lookup(1, 0, 0x1000, false).is_some());
        publish(&t, 3, Record::all());
        t.sync();
        assert!(t.is_empty());
        assert_eq!(t.stats.records, 4);
    }

    #[test]
    fn an_overrun_ring_flushes_everything() {
        let (mut t, _fds) = Iotlb::new(4).unwrap();
        t.insert(1, 0, 0x1000, &reply(0x1000, 0xfff, 1));
        // 17 records into 16 slots: the first was overwritten.
        for i in 0..17 {
            publish(&t, i, Record::streams(9, 1));
        }
        let mut seen = Vec::new();
        t.drain(&mut |r| seen.push(*r));
        assert_eq!(seen, [Record::all()]);
        assert!(t.is_empty());
    }

    #[test]
    fn acknowledgement_and_flags() {
        let (mut t, fds) = Iotlb::new(4).unwrap();
        let flags = |t: &Iotlb| {
            t.map
                .get_atomic_ref::<AtomicU32>(VMM_FLAGS)
                .unwrap()
                .load(Ordering::Acquire)
        };
        t.set_want_ack(true);
        assert_eq!(flags(&t), VMM_WANT_ACK);
        publish(&t, 0, Record::all());
        publish(&t, 1, Record::all());
        // The cache alone acknowledges nothing.
        t.sync();
        assert_eq!(t.atomic64(ACK).unwrap().load(Ordering::Acquire), 0);
        let mut n = 0;
        t.drain(&mut |_| n += 1);
        assert_eq!(n, 2);
        assert_eq!(t.atomic64(ACK).unwrap().load(Ordering::Acquire), 2);
        let mut b = [0u8; 8];
        assert_eq!(nix::unistd::read(&fds.ack, &mut b), Ok(8));
        assert_eq!(u64::from_ne_bytes(b), 1);
        // Nothing new: no second signal.
        t.drain(&mut |_| n += 1);
        assert_eq!(n, 2);
        assert_eq!(nix::unistd::read(&fds.ack, &mut b), Err(nix::Error::EAGAIN));
        t.set_want_ack(false);
        assert_eq!(flags(&t), 0);
    }
}
