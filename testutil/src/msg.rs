//! Raw vfio-user payloads that tests send by hand, built from
//! `vsmmu_protocol`'s structs rather than byte literals.

use vsmmu_protocol::vfio_user::{self as vu, IrqSet};

/// SET_IRQS: trigger `count` vectors of irq `index`, from 0, through the
/// eventfds sent with the message (`DATA_EVENTFD | ACTION_TRIGGER`, no
/// data after the header). Other flags: `IrqSet { flags, ..irq_eventfds(..) }`.
pub fn irq_eventfds(index: u32, count: u32) -> IrqSet {
    IrqSet {
        argsz: IrqSet::SIZE,
        flags: vu::VFIO_IRQ_SET_DATA_EVENTFD | vu::VFIO_IRQ_SET_ACTION_TRIGGER,
        index,
        start: 0,
        count,
    }
}
