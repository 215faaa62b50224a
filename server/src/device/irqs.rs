//! The interrupt lines: DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS (one
//! vector per index, wired to the client's eventfds).

use std::os::fd::OwnedFd;

use vsmmu_protocol::vfio_user::{self as vu, IrqInfo, IrqSet, Message};

use super::{Device, RequestError};
use crate::irq::NUM_IRQS;

impl Device {
    /// DEVICE_GET_IRQ_INFO: one maskable eventfd vector per index.
    pub(super) fn irq_info(&self, reply: Message, q: &IrqInfo) -> Result<Vec<u8>, RequestError> {
        if q.index as usize >= NUM_IRQS {
            return Err(RequestError::NoIrq(q.index));
        }
        Ok(reply
            .push(&IrqInfo {
                argsz: IrqInfo::SIZE,
                flags: vu::VFIO_IRQ_INFO_EVENTFD | vu::VFIO_IRQ_INFO_MASKABLE,
                index: q.index,
                count: 1,
            })
            .finish())
    }

    /// DEVICE_SET_IRQS: assign or de-assign the eventfd, trigger, mask or
    /// unmask, as `VFIO_DEVICE_SET_IRQS` defines them.
    pub(super) fn set_irqs(
        &mut self,
        reply: Message,
        set: &IrqSet,
        data: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Vec<u8>, RequestError> {
        let index = set.index as usize;
        if index >= NUM_IRQS {
            return Err(RequestError::NoIrq(set.index));
        }
        let dtype = set.flags & vu::VFIO_IRQ_SET_DATA_TYPE_MASK;
        let action = set.flags & vu::VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if set.flags & !(vu::VFIO_IRQ_SET_DATA_TYPE_MASK | vu::VFIO_IRQ_SET_ACTION_TYPE_MASK) != 0
            || dtype.count_ones() != 1
            || action.count_ones() != 1
        {
            return Err(RequestError::IrqFlags(set.flags));
        }
        // Each index has one vector.
        if set.start != 0 || set.count > 1 {
            return Err(RequestError::IrqVectors {
                index: set.index,
                start: set.start,
                count: set.count,
            });
        }
        if dtype != vu::VFIO_IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
            return Err(RequestError::IrqFdsWithoutEventfd);
        }
        let wanted = match dtype {
            vu::VFIO_IRQ_SET_DATA_BOOL => {
                if data.len() != set.count as usize {
                    return Err(RequestError::IrqBoolData);
                }
                data.first().is_some_and(|b| *b != 0)
            }
            _ => {
                if !data.is_empty() {
                    return Err(RequestError::IrqUnexpectedData);
                }
                true
            }
        };
        match (action, dtype) {
            (vu::VFIO_IRQ_SET_ACTION_TRIGGER, vu::VFIO_IRQ_SET_DATA_EVENTFD) => {
                if fds.len() > set.count as usize {
                    return Err(RequestError::IrqTooManyFds);
                }
                // No fd (or count 0) de-assigns.
                self.irqs.set_fd(index, fds.into_iter().next());
            }
            (vu::VFIO_IRQ_SET_ACTION_TRIGGER, _) => {
                if set.count == 0 && dtype == vu::VFIO_IRQ_SET_DATA_NONE {
                    self.irqs.set_fd(index, None);
                } else if wanted {
                    self.irqs.trigger(index);
                }
            }
            (
                vu::VFIO_IRQ_SET_ACTION_MASK | vu::VFIO_IRQ_SET_ACTION_UNMASK,
                vu::VFIO_IRQ_SET_DATA_EVENTFD,
            ) => return Err(RequestError::IrqMaskEventfd),
            (vu::VFIO_IRQ_SET_ACTION_MASK, _) => {
                if wanted && set.count == 1 {
                    self.irqs.set_masked(index, true);
                }
            }
            _ => {
                if wanted && set.count == 1 {
                    self.irqs.set_masked(index, false);
                }
            }
        }
        Ok(reply.finish())
    }
}
