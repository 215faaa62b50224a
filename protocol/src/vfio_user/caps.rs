//! The VERSION message's JSON capabilities.

use serde::{Deserialize, Serialize};

use super::DecodeError;

/// Version of the vsmmu extension this crate speaks.
pub const VSMMU_EXT_VERSION: u32 = 1;

/// The JSON object after the VERSION numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionData {
    /// Capabilities of the sender.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Capabilities a peer advertises. Unknown members are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Fds the sender accepts in one message (spec default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_msg_fds: Option<u32>,
    /// Largest data transfer (spec default 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_data_xfer_size: Option<u64>,
    /// DMA page sizes, or'ed (spec default 4 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgsizes: Option<u64>,
    /// Simultaneous DMA maps (spec default 65535).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_dma_maps: Option<u32>,
    /// Migration support (libvfio-user's form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationCap>,
    /// REGION_WRITE_MULTI supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_multiple: Option<bool>,
    /// The vsmmu extension commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsmmu: Option<VsmmuCap>,
}

/// `capabilities.migration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCap {
    /// Dirty page tracking granule.
    #[serde(default)]
    pub pgsize: u64,
    /// Largest dirty bitmap.
    #[serde(default)]
    pub max_bitmap_size: u64,
}

/// `capabilities.vsmmu`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsmmuCap {
    /// Extension version (1).
    pub version: u32,
}

impl VersionData {
    /// Decodes the optional, NUL-terminated JSON of a VERSION message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Ok(VersionData::default());
        }
        let Some((&0, json)) = bytes.split_last() else {
            return Err(DecodeError::Json(
                "version data is not NUL-terminated".into(),
            ));
        };
        if json.contains(&0) {
            return Err(DecodeError::Json("NUL inside version data".into()));
        }
        serde_json::from_slice(json).map_err(|e| DecodeError::Json(e.to_string()))
    }

    /// Encodes as NUL-terminated JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of numbers cannot fail.
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(0);
        v
    }
}
