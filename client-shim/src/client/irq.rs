//! Interrupts: DEVICE_GET_IRQ_INFO and SET_IRQS (the eventfds vsmmud
//! signals).

use std::os::fd::BorrowedFd;

use vsmmu_protocol::vfio_user::{self as vu, Command, IrqInfo, IrqSet};
use zerocopy::IntoBytes;

use super::{parse, Client, Result};

impl Client {
    /// DEVICE_GET_IRQ_INFO.
    pub fn irq_info(&mut self, index: u32) -> Result<IrqInfo> {
        let req = IrqInfo {
            argsz: IrqInfo::SIZE,
            index,
            ..Default::default()
        };
        let r = self.request(Command::DeviceGetIrqInfo, req.as_bytes(), &[])?;
        parse(&r)
    }

    /// SET_IRQS: give (`Some`) or take back (`None`) the eventfd of an irq index.
    pub fn set_irq_eventfd(&mut self, index: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let s = IrqSet {
            argsz: IrqSet::SIZE,
            flags: vu::VFIO_IRQ_SET_DATA_EVENTFD | vu::VFIO_IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: u32::from(fd.is_some()),
        };
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        self.request(Command::DeviceSetIrqs, s.as_bytes(), &fds)?;
        Ok(())
    }

    /// SET_IRQS with a raw header and fds.
    pub fn set_irqs(&mut self, set: &IrqSet, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        let mut payload = set.as_bytes().to_vec();
        payload.extend_from_slice(data);
        self.request(Command::DeviceSetIrqs, &payload, fds)?;
        Ok(())
    }
}
