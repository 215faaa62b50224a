//! Circular queue pointer arithmetic (command, event and PRI queues) and the
//! `*Q_BASE` register.
//!
//! A queue of `2^n` entries uses pointer bits `[n-1:0]` as the index and bit
//! `n` as the wrap flag; bits above `n` belong to other fields (CONS.ERR,
//! PROD.OVFLG, ...) and are ignored here. With `n = 0` the queue has one
//! entry: the index is always 0 and only the wrap flag toggles.

use super::bits::{align_down, low_mask};
use super::regs::{Q_BASE_ADDR_MASK, Q_BASE_LOG2SIZE, Q_BASE_RA};

/// Largest queue size the architecture allows: `2^19` entries (pointer
/// fields are 20 bits).
pub const MAX_LOG2SIZE: u8 = 19;
/// Bytes of a command queue entry.
pub const CMD_ENTRY_SIZE: u64 = 16;
/// Bytes of an event queue entry.
pub const EVENT_ENTRY_SIZE: u64 = 32;
/// Bytes of a PRI queue entry.
pub const PRI_ENTRY_SIZE: u64 = 16;

/// Why a queue size was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// More than `2^19` entries.
    #[error("queue LOG2SIZE {0} is above the architectural maximum of 19")]
    TooLarge(u8),
}

/// The geometry of a queue of `2^log2size` entries, `log2size <= 19`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Queue {
    log2size: u8,
}

impl Queue {
    /// A queue of `2^log2size` entries.
    pub const fn new(log2size: u8) -> Result<Queue, QueueError> {
        if log2size > MAX_LOG2SIZE {
            Err(QueueError::TooLarge(log2size))
        } else {
            Ok(Queue { log2size })
        }
    }

    /// The queue a `*Q_BASE.LOG2SIZE` value describes: the architecture
    /// caps any use of the field at the IDR1 maximum (`max_log2size`, e.g.
    /// IDR1.CMDQS); this also caps at 19.
    pub const fn capped(log2size: u8, max_log2size: u8) -> Queue {
        let mut n = log2size;
        if n > max_log2size {
            n = max_log2size;
        }
        if n > MAX_LOG2SIZE {
            n = MAX_LOG2SIZE;
        }
        Queue { log2size: n }
    }

    /// log2 of the number of entries.
    pub const fn log2size(self) -> u8 {
        self.log2size
    }

    /// Number of entries.
    pub const fn entries(self) -> u32 {
        1 << self.log2size
    }

    /// Mask of the index bits.
    pub const fn index_mask(self) -> u32 {
        self.entries() - 1
    }

    /// The wrap flag bit.
    pub const fn wrap_bit(self) -> u32 {
        1 << self.log2size
    }

    /// Mask of the wrap flag and index bits (the pointer proper).
    pub const fn ptr_mask(self) -> u32 {
        (self.wrap_bit() << 1) - 1
    }

    /// Index part of a pointer.
    pub const fn index(self, ptr: u32) -> u32 {
        ptr & self.index_mask()
    }

    /// Wrap flag of a pointer.
    pub const fn wrap(self, ptr: u32) -> bool {
        ptr & self.wrap_bit() != 0
    }

    /// True when the queue holds no entries (same index, same wrap).
    pub const fn is_empty(self, prod: u32, cons: u32) -> bool {
        (prod ^ cons) & self.ptr_mask() == 0
    }

    /// True when the queue is full (same index, different wrap).
    pub const fn is_full(self, prod: u32, cons: u32) -> bool {
        (prod ^ cons) & self.ptr_mask() == self.wrap_bit()
    }

    /// The pointer after `ptr` (index + 1, toggling the wrap flag when the
    /// index wraps). Only the pointer bits are returned: merge other
    /// register fields back with [`Queue::with_ptr`].
    pub const fn incr(self, ptr: u32) -> u32 {
        ptr.wrapping_add(1) & self.ptr_mask()
    }

    /// Entries between `cons` and `prod`. For consistent pointers this is
    /// `0..=entries()`; a guest that writes an inconsistent PROD (more than
    /// a queue ahead) gets a value above `entries()` — check with
    /// [`Queue::is_consistent`].
    pub const fn used(self, prod: u32, cons: u32) -> u32 {
        prod.wrapping_sub(cons) & self.ptr_mask()
    }

    /// Free entries (`entries() - used()`, 0 for inconsistent pointers).
    pub const fn free(self, prod: u32, cons: u32) -> u32 {
        self.entries().saturating_sub(self.used(prod, cons))
    }

    /// True when `prod` is at most one queue ahead of `cons`.
    pub const fn is_consistent(self, prod: u32, cons: u32) -> bool {
        self.used(prod, cons) <= self.entries()
    }

    /// `reg` with its pointer bits replaced by those of `ptr`; the other
    /// bits of `reg` (CONS.ERR, PROD.OVFLG, bits above the wrap flag) are
    /// kept.
    pub const fn with_ptr(self, reg: u32, ptr: u32) -> u32 {
        (reg & !self.ptr_mask()) | (ptr & self.ptr_mask())
    }
}

/// A decoded `SMMU_CMDQ_BASE` / `SMMU_EVENTQ_BASE` / `SMMU_PRIQ_BASE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueueBase {
    /// ADDR\[51:5\]: queue base (physical address).
    pub addr: u64,
    /// LOG2SIZE\[4:0\] as written (not yet capped).
    pub log2size: u8,
    /// RA / WA (bit 62): allocation hint.
    pub ra: bool,
}

impl QueueBase {
    /// Decodes a 64-bit `*Q_BASE` value (RES0 bits are ignored).
    pub const fn decode(reg: u64) -> QueueBase {
        QueueBase {
            addr: reg & Q_BASE_ADDR_MASK,
            log2size: Q_BASE_LOG2SIZE.get(reg) as u8,
            ra: reg & Q_BASE_RA != 0,
        }
    }

    /// The register value (the guest driver's `Q_BASE_RWA | addr | size`).
    pub const fn encode(&self) -> u64 {
        let ra = if self.ra { Q_BASE_RA } else { 0 };
        ra | (self.addr & Q_BASE_ADDR_MASK) | Q_BASE_LOG2SIZE.prep(self.log2size as u64)
    }

    /// The same base with LOG2SIZE capped at `max_log2size` (and 19), as the
    /// SMMU uses it.
    pub const fn capped(self, max_log2size: u8) -> QueueBase {
        QueueBase {
            log2size: Queue::capped(self.log2size, max_log2size).log2size(),
            ..self
        }
    }

    /// The queue geometry, LOG2SIZE capped at `max_log2size` (and 19).
    pub const fn queue(&self, max_log2size: u8) -> Queue {
        Queue::capped(self.log2size, max_log2size)
    }

    /// Address of entry `index` for entries of `entry_size` bytes, or
    /// `None` when `index` is outside the queue or the address overflows.
    ///
    /// The base is aligned down to the larger of the queue size in bytes and
    /// 32 bytes, as the architecture says the SMMU does. LOG2SIZE is used as
    /// stored (capped at 19): call [`QueueBase::capped`] first to apply the
    /// IDR1 maximum.
    pub fn entry_addr(&self, index: u32, entry_size: u64) -> Option<u64> {
        let queue = Queue::capped(self.log2size, MAX_LOG2SIZE);
        if index >= queue.entries() {
            return None;
        }
        let mut align_bits = 5;
        if entry_size.is_power_of_two() {
            let size_bits = entry_size.trailing_zeros() + u32::from(queue.log2size());
            if size_bits > align_bits {
                align_bits = size_bits;
            }
        }
        let base = align_down(self.addr, align_bits);
        u64::from(index)
            .checked_mul(entry_size)
            .and_then(|off| base.checked_add(off))
    }

    /// Size of the queue in bytes (LOG2SIZE capped at 19), or `None` on
    /// overflow.
    pub fn size_bytes(&self, entry_size: u64) -> Option<u64> {
        let entries = u64::from(Queue::capped(self.log2size, MAX_LOG2SIZE).entries());
        entries.checked_mul(entry_size)
    }
}

/// `ptr & low_mask(bits)` for callers that hold a raw `u64` pointer value.
pub const fn ptr_bits(value: u64, log2size: u8) -> u32 {
    let bits = if log2size > MAX_LOG2SIZE {
        MAX_LOG2SIZE
    } else {
        log2size
    };
    (value & low_mask(bits as u32 + 1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: u8) -> Queue {
        Queue::new(n).unwrap()
    }

    #[test]
    fn new_rejects_above_19() {
        assert_eq!(Queue::new(20), Err(QueueError::TooLarge(20)));
        assert_eq!(Queue::capped(31, 19).log2size(), 19);
        assert_eq!(Queue::capped(31, 40).log2size(), 19);
        assert_eq!(Queue::capped(8, 5).log2size(), 5);
    }

    #[test]
    fn log2size_0_single_entry() {
        let q = q(0);
        assert_eq!(q.entries(), 1);
        assert_eq!(q.ptr_mask(), 1);
        assert!(q.is_empty(0, 0));
        assert!(!q.is_full(0, 0));
        let p = q.incr(0);
        assert_eq!(p, 1);
        assert_eq!(q.index(p), 0);
        assert!(q.wrap(p));
        assert!(q.is_full(p, 0));
        assert!(!q.is_empty(p, 0));
        assert_eq!(q.used(p, 0), 1);
        assert_eq!(q.free(p, 0), 0);
        assert_eq!(q.incr(p), 0);
        assert!(q.is_empty(1, 1));
        // Bits above the wrap flag are ignored.
        assert!(q.is_empty(0x8000_0002, 0x7f00_0000));
    }

    #[test]
    fn log2size_1() {
        let q = q(1);
        assert_eq!(q.ptr_mask(), 3);
        let mut p = 0;
        let seq: Vec<u32> = (0..5)
            .map(|_| {
                p = q.incr(p);
                p
            })
            .collect();
        assert_eq!(seq, vec![1, 2, 3, 0, 1]);
        assert!(q.is_full(2, 0));
        assert!(q.is_full(0, 2));
        assert!(q.is_full(3, 1));
        assert!(!q.is_full(1, 0));
        assert_eq!(q.used(1, 3), 2);
        assert_eq!(q.used(0, 3), 1);
    }

    #[test]
    fn log2size_5() {
        let q = q(5);
        assert_eq!(q.entries(), 32);
        assert_eq!(q.wrap_bit(), 0x20);
        assert_eq!(q.incr(0x1f), 0x20);
        assert_eq!(q.incr(0x3f), 0x00);
        assert!(q.is_full(0x20, 0x00));
        assert!(q.is_full(0x05, 0x25));
        assert!(q.is_empty(0x25, 0x25));
        assert_eq!(q.used(0x03, 0x3e), 5);
        assert_eq!(q.free(0x03, 0x3e), 27);
        // CMDQ_CONS.ERR and EVENTQ_PROD.OVFLG stay out of the way.
        assert!(q.is_empty(0x8000_0007, 0x0100_0007));
        assert_eq!(q.with_ptr(0x8000_0007, q.incr(0x8000_0007)), 0x8000_0008);
        assert_eq!(q.with_ptr(0x0100_003f, 0), 0x0100_0000);
        // An inconsistent PROD.
        assert!(!q.is_consistent(0x30, 0x00));
        assert_eq!(q.free(0x30, 0x00), 0);
    }

    #[test]
    fn log2size_19() {
        let q = q(19);
        assert_eq!(q.entries(), 1 << 19);
        assert_eq!(q.ptr_mask(), 0xf_ffff);
        assert_eq!(q.incr(0x7_ffff), 0x8_0000);
        assert_eq!(q.incr(0xf_ffff), 0);
        assert!(q.is_full(0x8_0000, 0));
        assert!(q.is_empty(0xf_ffff, 0xf_ffff));
        assert_eq!(q.used(0x8_0001, 0x0_0001), 1 << 19);
        assert_eq!(q.incr(u32::MAX), 0);
    }

    #[test]
    fn queue_base() {
        let b = QueueBase::decode(0x4000_0000_8123_4567 | 0xfff0_0000_0000_0000);
        assert_eq!(b.addr, 0x8123_4560);
        assert_eq!(b.log2size, 7);
        assert!(b.ra);
        assert_eq!(b.encode(), 0x4000_0000_8123_4567);
        assert_eq!(QueueBase::decode(0x13).log2size, 19);
        let b = QueueBase {
            addr: 0x4000_0000,
            log2size: 8,
            ra: true,
        };
        assert_eq!(b.encode(), 0x4000_0000_4000_0008);
        assert_eq!(b.entry_addr(0, CMD_ENTRY_SIZE), Some(0x4000_0000));
        assert_eq!(b.entry_addr(255, CMD_ENTRY_SIZE), Some(0x4000_0ff0));
        assert_eq!(b.entry_addr(256, CMD_ENTRY_SIZE), None);
        assert_eq!(b.size_bytes(EVENT_ENTRY_SIZE), Some(8192));
        // Misaligned base: aligned down to the queue size (4 KiB here).
        let b = QueueBase {
            addr: 0x4000_0820,
            log2size: 8,
            ra: false,
        };
        assert_eq!(b.entry_addr(1, CMD_ENTRY_SIZE), Some(0x4000_0010));
        // Small queues align to 32 bytes.
        let b = QueueBase {
            addr: 0x1060,
            log2size: 0,
            ra: false,
        };
        assert_eq!(b.entry_addr(0, CMD_ENTRY_SIZE), Some(0x1060));
        // Capping.
        let b = QueueBase::decode(0x1f).capped(19);
        assert_eq!(b.log2size, 19);
        assert_eq!(QueueBase::decode(0x1f).queue(7).entries(), 128);
        // Overflow never panics.
        let b = QueueBase {
            addr: Q_BASE_ADDR_MASK,
            log2size: 19,
            ra: false,
        };
        assert_eq!(b.entry_addr(1, u64::MAX), None);
        assert_eq!(b.size_bytes(u64::MAX), None);
    }

    #[test]
    fn ptr_bits_helper() {
        assert_eq!(ptr_bits(0xffff_ffff, 5), 0x3f);
        assert_eq!(ptr_bits(u64::MAX, 200), 0xf_ffff);
    }
}
