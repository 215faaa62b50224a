//! The sim host backend (placeholder, being written).
