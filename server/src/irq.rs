//! The device's four interrupt lines, signalled through client eventfds.

use std::os::fd::{AsFd, OwnedFd};

pub(crate) use vsmmu_protocol::vfio_user::irq::{
    CMD_SYNC as IRQ_CMD_SYNC, COUNT as NUM_IRQS, EVENTQ as IRQ_EVENTQ, GERROR as IRQ_GERROR,
};

#[derive(Debug, Default)]
struct Line {
    fd: Option<OwnedFd>,
    masked: bool,
    pending: bool,
}

/// Eventfds per irq index, with mask state.
#[derive(Debug, Default)]
pub struct Irqs {
    lines: [Line; NUM_IRQS],
}

impl Irqs {
    /// Sets (or with `None` removes) the eventfd of `index`.
    pub fn set_fd(&mut self, index: usize, fd: Option<OwnedFd>) {
        if let Some(l) = self.lines.get_mut(index) {
            l.fd = fd;
        }
    }

    /// Masks or unmasks `index`; unmasking delivers a pending interrupt.
    pub fn set_masked(&mut self, index: usize, masked: bool) {
        let fire = match self.lines.get_mut(index) {
            Some(l) => {
                l.masked = masked;
                !masked && std::mem::take(&mut l.pending)
            }
            None => false,
        };
        if fire {
            self.trigger(index);
        }
    }

    /// Signals `index`. Returns true when an eventfd was signalled.
    pub fn trigger(&mut self, index: usize) -> bool {
        let Some(l) = self.lines.get_mut(index) else {
            return false;
        };
        if l.masked {
            l.pending = true;
            return false;
        }
        let Some(fd) = &l.fd else {
            return false;
        };
        match nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes()) {
            Ok(_) => true,
            // EAGAIN: the counter is saturated, the line is already pending.
            Err(nix::errno::Errno::EAGAIN) => true,
            Err(e) => {
                log::warn!("irq {index}: eventfd write failed: {e}");
                false
            }
        }
    }

    /// Drops every eventfd and mask state (the client left).
    pub fn clear(&mut self) {
        *self = Irqs::default();
    }
}
