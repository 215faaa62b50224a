//! VERSION: the negotiation that opens every session.

use vsmmu_protocol::vfio_user::{
    self as vu, Capabilities, Message, MigrationCap, VersionData, VersionHeader, VsmmuCap,
};

use super::{Device, RequestError, Session};
use crate::memory::PAGE_SIZE;

impl Device {
    /// VERSION: answers with the lower minor and this server's
    /// capabilities; the vsmmu extension is on when the client proposed it.
    pub(super) fn version(
        &mut self,
        session: &mut Session,
        reply: Message,
        major: u16,
        minor: u16,
        data: &VersionData,
    ) -> Result<Vec<u8>, RequestError> {
        if session.negotiated {
            return Err(RequestError::AlreadyNegotiated);
        }
        if major != vu::VERSION_MAJOR {
            return Err(RequestError::MajorVersion(major));
        }
        let theirs = &data.capabilities;
        let vsmmu = theirs
            .vsmmu
            .as_ref()
            .is_some_and(|v| v.version >= vu::VSMMU_EXT_VERSION);
        let caps = Capabilities {
            max_msg_fds: Some(self.limits.max_msg_fds),
            max_data_xfer_size: Some(self.limits.max_data_xfer_size.into()),
            pgsizes: Some(PAGE_SIZE),
            max_dma_maps: Some(self.limits.max_dma_maps),
            migration: Some(MigrationCap {
                pgsize: PAGE_SIZE,
                max_bitmap_size: 0,
            }),
            write_multiple: Some(true),
            vsmmu: vsmmu.then_some(VsmmuCap {
                version: vu::VSMMU_EXT_VERSION,
            }),
        };
        session.negotiated = true;
        session.minor = minor.min(vu::VERSION_MINOR);
        session.vsmmu = vsmmu;
        self.stats.clients += 1;
        Ok(reply
            .push(&VersionHeader {
                major,
                minor: session.minor,
            })
            .bytes(&VersionData { capabilities: caps }.encode())
            .finish())
    }
}
