//! The iommufd host backend (placeholder, being written).
