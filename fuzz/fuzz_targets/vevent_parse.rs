//! vEVENTQ record parsing on arbitrary `read(2)` results.
//!
//! The walk never panics, stops at the first malformed record, and what it
//! yields re-encodes to exactly the bytes it consumed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vsmmu_protocol::iommufd::{
    lost_between, parse_vevents, Vevent, VeventArmSmmuv3, VeventHeader, VeventParseError,
    IOMMU_VEVENTQ_FLAG_LOST_EVENTS, VEVENT_SEQ_MASK,
};
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let mut it = parse_vevents(data);
    let mut encoded = Vec::with_capacity(data.len());
    let mut last: Option<u32> = None;
    let mut failed = None;
    while let Some(rec) = it.next() {
        let start = encoded.len();
        match rec {
            Ok(Vevent::Event { seq, evt }) => {
                encoded.extend_from_slice(
                    VeventHeader {
                        flags: 0,
                        sequence: seq,
                    }
                    .as_bytes(),
                );
                encoded.extend_from_slice(VeventArmSmmuv3 { evt }.as_bytes());
            }
            Ok(Vevent::Lost { seq }) => encoded.extend_from_slice(
                VeventHeader {
                    flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
                    sequence: seq,
                }
                .as_bytes(),
            ),
            Err(e) => {
                let offset = match e {
                    VeventParseError::Truncated { offset, .. }
                    | VeventParseError::UnknownFlags { offset, .. }
                    | VeventParseError::BadSequence { offset, .. } => offset,
                };
                assert_eq!(offset, it.offset(), "{e}");
                failed = Some(e);
                continue;
            }
        }
        assert!(failed.is_none(), "a record after an error");
        assert_eq!(it.offset(), encoded.len(), "offset after record at {start}");
        let seq = rec.map(|r| r.seq()).unwrap_or_default();
        assert!(seq <= VEVENT_SEQ_MASK);
        if let Some(l) = last {
            assert!(lost_between(l, seq) <= VEVENT_SEQ_MASK);
        }
        last = Some(seq);
    }
    assert_eq!(&data[..it.offset()], &encoded[..], "re-encoding differs");
    match failed {
        Some(_) => assert!(it.offset() < data.len()),
        None => assert_eq!(it.offset(), data.len(), "stopped early without an error"),
    }
    // Fused: nothing after the end.
    assert!(it.next().is_none());
});
