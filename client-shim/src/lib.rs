//! VMM side of vsmmu.
