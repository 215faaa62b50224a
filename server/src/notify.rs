//! The invalidation ring shared with a VMM that caches translations
//! (`VSMMU_NOTIFY_SETUP`; the format and its rules are in
//! [`vsmmu_protocol::notify`]).
//!
//! The model appends a record for every command or register write that
//! could change a translation ([`Notifier::invalidate`]) and asks at each
//! CMD_SYNC whether it may complete ([`Notifier::sync_may_complete`]): with
//! [`VMM_WANT_ACK`] set, not before the VMM has acknowledged every record.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use vm_memory::{FileOffset, MmapRegion, VolatileMemory};
use vsmmu_protocol::notify::{
    ring_bytes, Record, RingHeader, RING_HEADER_SIZE, RING_MAGIC, RING_VERSION, VMM_WANT_ACK,
};
use zerocopy::IntoBytes;

use crate::stats::Stats;

/// Offsets of the atomically shared fields in [`RingHeader`].
const VMM_FLAGS: usize = 12;
const HEAD: usize = 16;
const ACK: usize = 24;

/// The ring and its two eventfds.
#[derive(Debug)]
struct Ring {
    map: MmapRegion,
    entries: u64,
    /// Records published.
    head: u64,
    /// `head` when the kick eventfd was last signalled.
    kicked: u64,
    kick: OwnedFd,
    ack: OwnedFd,
}

/// The VMM's notification channel, if it set one up.
#[derive(Debug, Default)]
pub struct Notifier {
    ring: Option<Ring>,
}

impl Notifier {
    /// Takes the ring the VMM shares: `memfd` of [`ring_bytes`]`(log2)`
    /// bytes or more, its header filled in (magic, version, `log2`) and
    /// `head` and `ack` zero. Replaces an earlier ring.
    pub fn setup(
        &mut self,
        memfd: OwnedFd,
        log2: u32,
        kick: OwnedFd,
        ack: OwnedFd,
    ) -> Result<(), String> {
        let len = ring_bytes(log2);
        let file = File::from(memfd);
        let size = file.metadata().map_err(|e| format!("ring fd: {e}"))?.len();
        if size < len as u64 {
            return Err(format!(
                "ring fd of {size} bytes, {len} needed for 2^{log2} records"
            ));
        }
        let map = MmapRegion::from_file(FileOffset::new(file, 0), len)
            .map_err(|e| format!("mapping the ring: {e}"))?;
        let mut header = RingHeader::default();
        map.get_slice(0, RING_HEADER_SIZE)
            .map_err(|e| format!("reading the ring header: {e}"))?
            .copy_to(header.as_mut_bytes());
        if header.magic != RING_MAGIC
            || header.version != RING_VERSION
            || header.log2_entries != log2
            || header.head != 0
            || header.ack != 0
        {
            return Err(format!(
                "ring header magic {:#x} version {} log2 {} head {} ack {}: expected {RING_MAGIC:#x}, \
                 {RING_VERSION}, {log2}, 0, 0",
                header.magic, header.version, header.log2_entries, header.head, header.ack
            ));
        }
        self.ring = Some(Ring {
            map,
            entries: 1 << log2,
            head: 0,
            kicked: 0,
            kick,
            ack,
        });
        Ok(())
    }

    /// The ack eventfd to poll, if a ring is set up.
    pub fn ack_fd(&self) -> Option<RawFd> {
        self.ring.as_ref().map(|r| r.ack.as_raw_fd())
    }

    /// Publishes `rec`.
    pub fn invalidate(&mut self, rec: Record, stats: &mut Stats) {
        let Some(r) = &mut self.ring else {
            return;
        };
        log::trace!("invalidation record {rec:?}");
        let slot = RING_HEADER_SIZE + (r.head % r.entries) as usize * std::mem::size_of::<Record>();
        if let Ok(s) = r.map.get_slice(slot, std::mem::size_of::<Record>()) {
            s.copy_from(rec.as_bytes());
        }
        r.head += 1;
        // Release: the record is visible before the head that covers it.
        if let Ok(h) = r.map.get_atomic_ref::<AtomicU64>(HEAD) {
            h.store(r.head, Ordering::Release);
        }
        stats.notify_records += 1;
    }

    /// At a CMD_SYNC: true when it may complete. With [`VMM_WANT_ACK`] and
    /// records the VMM has not acknowledged, signals the kick eventfd (once
    /// per head) and returns false; the ack eventfd wakes the loop, which
    /// consumes the queue again.
    pub fn sync_may_complete(&mut self, stats: &mut Stats) -> bool {
        let Some(r) = &mut self.ring else {
            return true;
        };
        let flags = r
            .map
            .get_atomic_ref::<AtomicU32>(VMM_FLAGS)
            .map_or(0, |f| f.load(Ordering::Acquire));
        if flags & VMM_WANT_ACK == 0 {
            return true;
        }
        let ack = r
            .map
            .get_atomic_ref::<AtomicU64>(ACK)
            .map_or(0, |a| a.load(Ordering::Acquire));
        if ack >= r.head {
            return true;
        }
        if r.kicked != r.head {
            r.kicked = r.head;
            match nix::unistd::write(r.kick.as_fd(), &1u64.to_ne_bytes()) {
                Ok(_) => stats.notify_kicks += 1,
                Err(e) => log::warn!("notify: kick eventfd write failed: {e}"),
            }
        }
        stats.notify_sync_waits += 1;
        false
    }

    /// The ack eventfd is readable: clear it.
    pub fn acked(&mut self) {
        if let Some(r) = &self.ring {
            let mut b = [0u8; 8];
            // The eventfd may be blocking: read only what poll reported.
            let _ = nix::unistd::read(&r.ack, &mut b);
        }
    }

    /// Drops the ring (the client left).
    pub fn clear(&mut self) {
        self.ring = None;
    }
}
