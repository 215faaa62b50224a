//! The SMMUv3 register file as the tests and the fuzzer walk it, named by
//! `vsmmu_protocol::smmu::regs` and split into 32-bit words by its
//! `is_64bit`, so that no test keeps a list of offsets of its own.

use vsmmu_protocol::smmu::regs::*;

/// Every register from IDR0 to the PRI queue's pointers that a guest
/// driver programs or reads, in offset order, then the page-1 homes of the
/// queue pointers (page 0 holds their QEMU aliases). One entry per
/// register; a 64-bit one at its offset.
pub const REGISTERS: [u64; 39] = [
    IDR0,
    IDR1,
    IDR2,
    IDR3,
    IDR4,
    IDR5,
    IIDR,
    AIDR,
    CR0,
    CR0ACK,
    CR1,
    CR2,
    STATUSR,
    GBPA,
    IRQ_CTRL,
    IRQ_CTRLACK,
    GERROR,
    GERRORN,
    GERROR_IRQ_CFG0,
    GERROR_IRQ_CFG1,
    GERROR_IRQ_CFG2,
    STRTAB_BASE,
    STRTAB_BASE_CFG,
    CMDQ_BASE,
    CMDQ_PROD,
    CMDQ_CONS,
    EVENTQ_BASE,
    EVENTQ_PROD,
    EVENTQ_CONS,
    EVENTQ_IRQ_CFG0,
    EVENTQ_IRQ_CFG1,
    EVENTQ_IRQ_CFG2,
    PRIQ_BASE,
    PRIQ_PROD,
    PRIQ_CONS,
    EVENTQ_PROD_PAGE1,
    EVENTQ_CONS_PAGE1,
    PRIQ_PROD_PAGE1,
    PRIQ_CONS_PAGE1,
];

/// [`REGISTERS`] as the 32-bit words a 4-byte access reaches: a 64-bit
/// register as its low half, then its high half.
pub const REGISTER_WORDS: [u64; word_count()] = words();

const fn word_count() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < REGISTERS.len() {
        n += if is_64bit(REGISTERS[i]) { 2 } else { 1 };
        i += 1;
    }
    n
}

const fn words() -> [u64; word_count()] {
    let mut out = [0; word_count()];
    let mut i = 0;
    let mut j = 0;
    while i < REGISTERS.len() {
        out[j] = REGISTERS[i];
        j += 1;
        if is_64bit(REGISTERS[i]) {
            out[j] = REGISTERS[i] + 4;
            j += 1;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_aligned_distinct_and_inside_the_region() {
        assert_eq!(REGISTER_WORDS.len(), REGISTERS.len() + 6);
        let mut seen = std::collections::BTreeSet::new();
        for o in REGISTER_WORDS {
            assert!(o % 4 == 0 && o < REGION_SIZE, "{o:#x}");
            assert!(seen.insert(o), "{o:#x} twice");
        }
        assert!(REGISTER_WORDS.contains(&(STRTAB_BASE + 4)));
    }
}
