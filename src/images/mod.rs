//! Container images: resolve references to upstream digests (lock), pull manifests and blobs
//! into the content-addressed cache (verified before commit), and lay them out as one OCI
//! image layout in the bundle, each blob once.

pub mod auth;
pub mod cosign;
pub mod keyless;
pub mod layout;
pub mod policy;
pub mod pull;

use crate::digest::Sha256;
use crate::manifest::Arch;
use serde::{Deserialize, Serialize};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What kbundle asks registries for (schema 1 is refused).
pub const ACCEPT: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
/// Manifests and indexes larger than this are refused.
pub const MAX_MANIFEST: usize = 4 << 20;

/// An image pinned in the lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// The upstream reference, normalised (`registry.k8s.io/pause:3.10.1`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// What the reference points at upstream: an index or a single manifest.
    #[serde(with = "crate::digest::oci_form")]
    pub digest: Sha256,
    pub media_type: String,
    pub size: u64,
    /// Per selected platform, the upstream platform manifest (empty for single manifests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<LockedPlatform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPlatform {
    pub platform: String,
    #[serde(with = "crate::digest::oci_form")]
    pub digest: Sha256,
    pub media_type: String,
    pub size: u64,
}

/// An OCI/Docker descriptor, as much of it as kbundle needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PlatformSpec {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone)]
pub enum Parsed {
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
    Manifest {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// What is wrong with a manifest, index or descriptor; `what` names it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}: {source}")]
    Digest {
        what: String,
        #[source]
        source: crate::digest::DigestError,
    },
    #[error("{what}: not a manifest: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A descriptor's digest and size, checked.
pub fn checked(d: &Descriptor, what: &str) -> Result<(Sha256, u64), ManifestError> {
    let err = |reason: String| ManifestError::Invalid {
        what: what.to_string(),
        reason,
    };
    if !d.digest.starts_with("sha256:") {
        return Err(err(format!("unsupported digest {:?} (only sha256)", d.digest)));
    }
    let digest = Sha256::parse_any(&d.digest).map_err(|source| ManifestError::Digest {
        what: what.to_string(),
        source,
    })?;
    if d.size < 0 {
        return Err(err(format!("negative size for {}", d.digest)));
    }
    if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(err(format!(
            "{} is a foreign layer with external URLs; kbundle bundles only registry content",
            d.digest
        )));
    }
    Ok((digest, d.size as u64))
}

/// Parses manifest bytes; `content_type` is the registry's Content-Type, if known.
pub fn parse(bytes: &[u8], what: &str) -> Result<Parsed, ManifestError> {
    let err = |reason: String| ManifestError::Invalid {
        what: what.to_string(),
        reason,
    };
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what: what.to_string(),
        source,
    })?;
    if raw.schema_version != Some(2) {
        return Err(err(format!(
            "schemaVersion {:?} is not supported (Docker schema 1 images must be re-pushed)",
            raw.schema_version
        )));
    }
    match (raw.manifests, raw.config) {
        (Some(manifests), None) => {
            let media_type = raw.media_type.unwrap_or_else(|| OCI_INDEX.to_string());
            if media_type != OCI_INDEX && media_type != DOCKER_LIST {
                return Err(err(format!("index with media type {media_type}")));
            }
            Ok(Parsed::Index { media_type, manifests })
        }
        (None, Some(config)) => {
            let media_type = raw.media_type.unwrap_or_else(|| OCI_MANIFEST.to_string());
            if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
                return Err(err(format!("manifest with media type {media_type}")));
            }
            Ok(Parsed::Manifest {
                media_type,
                config,
                layers: raw.layers.unwrap_or_default(),
            })
        }
        _ => Err(err("neither an image index nor an image manifest".into())),
    }
}

/// Does an index entry serve `linux/<arch>`? arm64 accepts variant `v8` or none.
pub fn matches(p: &PlatformSpec, arch: Arch) -> bool {
    p.os == "linux"
        && p.architecture == arch.as_str()
        && match arch {
            Arch::Arm64 => p.variant.as_deref().is_none_or(|v| v == "v8"),
            Arch::Amd64 => p.variant.as_deref().is_none_or(|v| v == "v1"),
        }
}

/// Picks the index entry for each target arch; every arch must be present.
pub fn select_platforms<'a>(
    manifests: &'a [Descriptor],
    arches: &[Arch],
    what: &str,
) -> Result<Vec<(Arch, &'a Descriptor)>, ManifestError> {
    let mut out = Vec::new();
    for &arch in arches {
        let hit = manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| matches(p, arch)));
        match hit {
            Some(d) => out.push((arch, d)),
            None => {
                let avail: Vec<String> = manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                return Err(ManifestError::Invalid {
                    what: what.to_string(),
                    reason: format!(
                        "no {} manifest in the image index (it has: {})",
                        arch.platform(),
                        if avail.is_empty() {
                            "none".into()
                        } else {
                            avail.join(", ")
                        }
                    ),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_selects() {
        let d = Sha256::of(b"x").oci();
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":2,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":3,"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#
        );
        let Parsed::Index { manifests, .. } = parse(idx.as_bytes(), "t").unwrap() else {
            panic!("not an index")
        };
        let sel = select_platforms(&manifests, &[Arch::Amd64, Arch::Arm64], "t").unwrap();
        assert_eq!(sel[0].1.size, 1);
        assert_eq!(sel[1].1.size, 2);
        let only = &manifests[..1];
        let e = select_platforms(only, &[Arch::Arm64], "img").unwrap_err().to_string();
        assert!(e.contains("no linux/arm64") && e.contains("linux/amd64"), "{e}");
    }

    #[test]
    fn refuses_schema1_and_foreign_layers() {
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, "t").is_err());
        let d = Descriptor {
            media_type: String::new(),
            digest: Sha256::of(b"x").oci(),
            size: 1,
            platform: None,
            urls: Some(vec!["https://example.com/layer".into()]),
        };
        assert!(checked(&d, "t").is_err());
    }
}
