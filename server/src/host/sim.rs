//! The sim host backend (placeholder, being written).

/// The software host SMMU.
#[derive(Debug, Default)]
pub struct SimHost {}
