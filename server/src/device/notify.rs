//! The invalidation ring shared with the VMM: `VSMMU_NOTIFY_SETUP`, and
//! its ack eventfd, which the event loop polls.

use std::os::fd::{OwnedFd, RawFd};

use vsmmu_protocol::vfio_user::{Message, NotifySetup};

use super::{Device, RequestError};

impl Device {
    /// NOTIFY_SETUP: the ring's memfd, the kick and the ack eventfds.
    pub(super) fn notify_setup(
        &mut self,
        reply: Message,
        n: &NotifySetup,
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, RequestError> {
        let mut fds = fds.into_iter();
        let (Some(ring), Some(kick), Some(ack)) = (fds.next(), fds.next(), fds.next()) else {
            return Err(RequestError::NotifyFds);
        };
        self.notify
            .setup(ring, n.log2_entries, kick, ack)
            .map_err(RequestError::NotifySetup)?;
        self.notify_generation += 1;
        log::info!(
            "invalidation ring of {} records shared with the client",
            1u32 << n.log2_entries
        );
        Ok(reply.push(n).finish())
    }

    /// The ring's ack eventfd to poll, with a generation that changes
    /// whenever the ring does.
    pub fn notify_ack_fd(&self) -> Option<(RawFd, u64)> {
        self.notify.ack_fd().map(|fd| (fd, self.notify_generation))
    }

    /// The VMM acknowledged invalidations: a CMD_SYNC waiting for them
    /// completes.
    pub fn notify_acked(&mut self) {
        self.notify.acked();
        let (smmu, mut ctx) = self.model();
        smmu.resume_commands(&mut ctx);
    }
}
