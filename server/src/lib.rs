//! vsmmud: the SMMUv3 model served over vfio-user.

pub mod host;
