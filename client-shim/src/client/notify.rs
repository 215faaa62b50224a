//! VSMMU_NOTIFY_SETUP: the invalidation ring that keeps the IOTLB
//! current, and the IOMMU notifier handler its records go to.

use std::os::fd::{AsFd, RawFd};

use vsmmu_protocol::notify::Record;
use vsmmu_protocol::vfio_user::{self as vu, Command};
use zerocopy::IntoBytes;

use super::{Client, Result};
use crate::iotlb::{Iotlb, IotlbStats};

/// What [`Client::set_notify_handler`] takes.
pub type NotifyHandler = Box<dyn FnMut(&Record) + Send>;

/// A [`NotifyHandler`] that `Client`'s `Debug` can name.
pub(super) struct Handler(NotifyHandler);

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotifyHandler")
    }
}

impl Client {
    /// VSMMU_NOTIFY_SETUP: shares an invalidation ring of `2^log2` records
    /// with vsmmud and caches translations from now on
    /// ([`crate::iotlb`]).
    pub fn enable_iotlb(&mut self, log2: u32) -> Result<()> {
        let (iotlb, fds) = Iotlb::new(log2)?;
        let n = vu::NotifySetup {
            argsz: vu::NotifySetup::SIZE,
            flags: 0,
            log2_entries: log2,
            reserved: 0,
        };
        self.request(
            Command::VsmmuNotifySetup,
            n.as_bytes(),
            &[fds.ring.as_fd(), fds.kick.as_fd(), fds.ack.as_fd()],
        )?;
        iotlb.set_want_ack(self.notify_handler.is_some());
        self.iotlb = Some(iotlb);
        Ok(())
    }

    /// Calls `handler` with every invalidation record from now on (IOMMU
    /// notifiers), or none. With a handler, vsmmud completes each CMD_SYNC
    /// only once the records before it went through the handler: the VMM
    /// calls [`Client::notify_drain`] when [`Client::notify_fd`] is
    /// readable.
    pub fn set_notify_handler(&mut self, handler: Option<NotifyHandler>) {
        self.notify_handler = handler.map(Handler);
        if let Some(t) = &mut self.iotlb {
            t.set_want_ack(self.notify_handler.is_some());
            // A new handler starts from now; nothing may wait on an old one.
            t.skip_to_head();
        }
    }

    /// The eventfd vsmmud signals when it waits for [`Client::notify_drain`].
    pub fn notify_fd(&self) -> Option<RawFd> {
        self.iotlb.as_ref().map(|t| t.kick_fd())
    }

    /// Applies the published invalidations to the cache, hands them to the
    /// handler and acknowledges them. The handler runs only here (the
    /// VMM's chosen context, e.g. its main loop), never inside
    /// [`Client::translate`].
    pub fn notify_drain(&mut self) {
        let Some(t) = &mut self.iotlb else {
            return;
        };
        t.clear_kick();
        let handler = &mut self.notify_handler;
        t.drain(&mut |r| {
            if let Some(h) = handler.as_mut() {
                (h.0)(r)
            }
        });
    }

    /// The IOTLB's counters, if enabled.
    pub fn iotlb_stats(&self) -> Option<IotlbStats> {
        self.iotlb.as_ref().map(|t| t.stats)
    }
}
