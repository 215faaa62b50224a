//! iommufd uAPI records.
