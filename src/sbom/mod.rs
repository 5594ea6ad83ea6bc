//! `sbom.spdx.json`: an SPDX 2.3 JSON document of everything a bundle carries, written by
//! `build` before bundle.json (so bundle.json lists it with its digest like any other file)
//! and printed, verified, by `kbundle inspect --sbom`.
//!
//! Field names and values follow the SPDX 2.3 JSON schema (docs/upstream-facts.md, "SBOM:
//! SPDX 2.3 and purl"). The document is a pure function of bundle.json's content and the
//! build time (`SOURCE_DATE_EPOCH`), so unsigned builds stay byte-reproducible.

mod build;
mod purl;
pub mod read;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use build::document;

/// The SBOM's path in a bundle.
pub const SBOM: &str = "sbom.spdx.json";
pub const SPDX_VERSION: &str = "SPDX-2.3";
/// SPDX 2.3 requires CC0-1.0 for the document's own data.
pub const DATA_LICENSE: &str = "CC0-1.0";
pub const NOASSERTION: &str = "NOASSERTION";
/// Prefix of `documentNamespace`; the bundle's name and content digest follow.
pub const NAMESPACE_PREFIX: &str = "https://kbundle.dev/spdx/";

/// The document (SPDX 2.3 §6), only the fields kbundle fills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub spdx_version: String,
    pub data_license: String,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<Package>,
    pub relationships: Vec<Relationship>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    /// `YYYY-MM-DDThh:mm:ssZ` (UTC).
    pub created: String,
    /// `Tool: kbundle-<version>`.
    pub creators: Vec<String>,
}

/// One package (SPDX 2.3 §7): the bundle, a file artifact, an image or a platform manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_file_name: Option<String>,
    /// `Organization: …` or `NOASSERTION`.
    pub supplier: String,
    pub download_location: String,
    pub files_analyzed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    pub license_concluded: String,
    pub license_declared: String,
    pub copyright_text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// Always `SHA256` here.
    pub algorithm: String,
    /// Lowercase hex.
    pub checksum_value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    /// `PACKAGE-MANAGER`.
    pub reference_category: String,
    /// `purl`.
    pub reference_type: String,
    pub reference_locator: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: String,
    pub related_spdx_element: String,
}

impl Document {
    /// Pretty JSON with a final newline: the bytes written to the bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The SBOM of `bundle` (entries in any order; the SBOM entry itself must not be among
/// them), created at `created` seconds since the epoch.
pub fn render(bundle: &crate::bundle::meta::BundleJson, created: u64) -> Vec<u8> {
    document(bundle, created).to_bytes()
}
