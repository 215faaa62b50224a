//! SMMUv3 architectural formats.
