//! The Linux probe sequence end to end against the real `vsmmud`.

use vsmmu_protocol::smmu::regs::*;
use vsmmu_tests::guest::{boot, small, RAM_BASE};

#[test]
fn linux_probe_boots_the_smmu() {
    let (_srv, mut d) = boot(&[], 8 << 20, small(6));
    let c = &mut d.client;
    assert_eq!(c.read32(CR0).unwrap(), 0xd);
    assert_eq!(c.read32(CR0ACK).unwrap(), 0xd);
    assert_eq!(c.read32(CR1).unwrap(), 0xd75);
    assert_eq!(c.read32(CR2).unwrap(), 0x6);
    assert_eq!(c.read32(IRQ_CTRLACK).unwrap(), 0x5);
    assert_eq!(c.read32(GERROR).unwrap(), 0);
    let s = c.stats().unwrap();
    // CFGI_ALL + sync, TLBI_NSNH_ALL + sync: four commands.
    assert_eq!(s.cmds_consumed, 4);
    assert_eq!(s.cmd_syncs, 2);
    // TLBI_NSNH_ALL reached the host in one call.
    assert_eq!(s.host_invalidate_calls, 1);
    let (cmdq, shift) = d.cmdq_layout();
    assert_eq!(shift, 8);
    assert_eq!(d.client.read64(CMDQ_BASE).unwrap(), 1 << 62 | cmdq | 8);
    assert_eq!(d.client.read32(CMDQ_PROD).unwrap(), 4);
    assert_eq!(d.client.read32(CMDQ_CONS).unwrap(), 4);
    let (evtq, eshift) = d.evtq_layout();
    assert_eq!(
        d.client.read64(EVENTQ_BASE).unwrap(),
        1 << 62 | evtq | u64::from(eshift)
    );
    assert!(evtq >= RAM_BASE);
}
