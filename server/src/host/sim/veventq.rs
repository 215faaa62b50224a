//! The sim's vEVENTQ object: the deliver list, its sequence numbers and
//! the LOST record, behind an eventfd (the module documentation of
//! [`super`] says which kernel rules it follows).

use std::collections::VecDeque;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use vsmmu_protocol::iommufd::VEVENT_SEQ_MASK;

use crate::host::HostError;

/// Largest vEVENTQ depth the kernel accepts (`VEVENTQ_MAX_DEPTH`, eventq.c):
/// the largest SMMUv3 event queue, 2^19 entries.
pub(crate) const VEVENTQ_MAX_DEPTH: u32 = 1 << 19;

/// One queued event: its sequence number and the 32-byte record.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueuedEvent {
    pub(super) sequence: u32,
    pub(super) evt: [u64; 4],
}

/// The vEVENTQ object: the deliver list, split into the real events and the
/// LOST record that can only sit at its tail.
#[derive(Debug)]
pub(super) struct Veventq {
    pub(super) depth: u32,
    /// Real events, oldest first (`num_events == events.len()`).
    pub(super) events: VecDeque<QueuedEvent>,
    /// The LOST record at the tail of the deliver list, with its sequence.
    pub(super) lost: Option<u32>,
    /// `veventq->sequence`: the sequence of the next reported event.
    pub(super) next_seq: u32,
    /// Readable (counter non-zero) exactly while the deliver list is not
    /// empty.
    pub(super) fd: EventFd,
}

impl Veventq {
    pub(super) fn new(depth: u32, first_seq: u32) -> Result<Self, HostError> {
        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        let fd = EventFd::from_value_and_flags(0, flags).map_err(|e| {
            HostError::new("IOMMU_VEVENTQ_ALLOC", e as i32, "eventfd() for the vEVENTQ")
        })?;
        Ok(Veventq {
            depth,
            events: VecDeque::new(),
            lost: None,
            next_seq: first_seq & VEVENT_SEQ_MASK,
            fd,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.lost.is_none()
    }

    /// `iommufd_viommu_report_event` + `iommufd_vevent_handler`; true when
    /// the event was queued, false when it was dropped.
    pub(super) fn report(&mut self, evt: [u64; 4]) -> bool {
        let sequence = self.next_seq;
        self.next_seq = sequence.wrapping_add(1) & VEVENT_SEQ_MASK;
        if self.events.len() >= self.depth as usize {
            // The LOST record is moved (or added) to the tail with the
            // dropped event's sequence.
            self.lost = Some(sequence);
            false
        } else {
            // A new real event unlinks the LOST record from the tail.
            self.lost = None;
            self.events.push_back(QueuedEvent { sequence, evt });
            true
        }
    }

    /// Makes the eventfd readable (one more wakeup edge).
    pub(super) fn signal(&self) {
        if let Err(e) = self.fd.write(1) {
            // EAGAIN only when the counter is at its maximum: still readable.
            log::debug!("sim vEVENTQ: eventfd write: {e}");
        }
    }

    /// Resets the eventfd counter so the fd stops being readable.
    pub(super) fn drain(&self) {
        match self.fd.read() {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => log::warn!("sim vEVENTQ: eventfd read: {e}"),
        }
    }
}

/// `iommufd_veventq_alloc`'s depth checks.
pub(super) fn check_depth(depth: u32) -> Result<(), HostError> {
    if depth == 0 || depth > VEVENTQ_MAX_DEPTH {
        return Err(HostError::new(
            "IOMMU_VEVENTQ_ALLOC",
            libc::EINVAL,
            format!("vEVENTQ depth {depth} is not in 1..={VEVENTQ_MAX_DEPTH}"),
        ));
    }
    Ok(())
}
