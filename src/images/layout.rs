//! The bundle's `images/` directory: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), each blob once, every image named by its full upstream reference.

use super::pull::SignatureArtifact;
use super::LockedImage;
use crate::bundle::meta::{Entry, EntryKind};
use crate::bundle::pack::Source;
use crate::digest::Sha256;
use serde::Serialize;
use std::collections::BTreeMap;

pub const LAYOUT_DIR: &str = "images";
pub const OCI_LAYOUT: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    annotations: BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<IndexEntry<'a>>,
}

/// `images/index.json`: one entry per image, sorted by reference, pointing at the upstream
/// top-level digest (index or manifest) so digest-pinned references keep working; then one
/// per cosign signature, named only by `org.opencontainers.image.ref.name`
/// (`registry/repo:sha256-<hex>.sig`, as cosign tags it), without `io.containerd.image.name`,
/// so `skopeo inspect oci:images:<ref>` and admission tooling find it and
/// [`importable_index`] can leave it out of what nodes import.
pub fn index_json(images: &[LockedImage], signatures: &[SignatureArtifact]) -> Vec<u8> {
    let mut sorted: Vec<&LockedImage> = images.iter().collect();
    sorted.sort_by(|a, b| a.reference.cmp(&b.reference));
    sorted.dedup_by(|a, b| a.reference == b.reference);
    let manifests = sorted
        .into_iter()
        .map(|i| IndexEntry {
            media_type: &i.media_type,
            digest: i.digest.oci(),
            size: i.size,
            annotations: BTreeMap::from([
                (CONTAINERD_NAME, i.reference.as_str()),
                (REF_NAME, i.reference.as_str()),
            ]),
        })
        .chain(signatures.iter().map(|s| IndexEntry {
            media_type: &s.media_type,
            digest: s.digest.oci(),
            size: s.size,
            annotations: BTreeMap::from([(REF_NAME, s.ref_name.as_str())]),
        }))
        .collect();
    let idx = Index {
        schema_version: 2,
        media_type: super::OCI_INDEX,
        manifests,
    };
    let mut v = serde_json::to_vec(&idx).unwrap_or_default();
    v.push(b'\n');
    v
}

/// `index.json` as nodes import it: only the entries named for containerd (the images), so
/// `ctr images import`, which makes an image of every entry with a full reference as its
/// ref name and then fails to unpack a cosign signature's simple-signing layer, never sees
/// the signature entries (docs/upstream-facts.md, "Cosign image signatures"). Bytes it
/// cannot read as an index are passed on unchanged.
pub fn importable_index(bytes: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return bytes.to_vec();
    };
    let Some(list) = v.get_mut("manifests").and_then(|m| m.as_array_mut()) else {
        return bytes.to_vec();
    };
    let before = list.len();
    list.retain(|m| m.get("annotations").and_then(|a| a.get(CONTAINERD_NAME)).is_some());
    if list.len() == before {
        return bytes.to_vec();
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec())
}

pub fn blob_path(d: &Sha256) -> String {
    format!("{LAYOUT_DIR}/blobs/sha256/{}", d.hex())
}

/// Bundle entries for the layout: the two metadata files and each distinct blob once.
pub fn entries(
    images: &[LockedImage],
    signatures: &[SignatureArtifact],
    blobs: &BTreeMap<Sha256, (u64, std::path::PathBuf)>,
) -> Vec<(Entry, Source)> {
    let mut out = Vec::new();
    let index = index_json(images, signatures);
    out.push((
        crate::bundle::meta_entry(&format!("{LAYOUT_DIR}/index.json"), EntryKind::Meta, &index),
        Source::Bytes(index),
    ));
    out.push((
        crate::bundle::meta_entry(&format!("{LAYOUT_DIR}/oci-layout"), EntryKind::Meta, OCI_LAYOUT),
        Source::Bytes(OCI_LAYOUT.to_vec()),
    ));
    for (d, (size, path)) in blobs {
        out.push((
            Entry {
                path: blob_path(d),
                size: *size,
                sha256: *d,
                kind: EntryKind::Blob,
                executable: false,
                component: None,
                version: None,
                platform: None,
                url: None,
                in_base: false,
            },
            Source::File(path.clone()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::pull::SignatureArtifact;

    #[test]
    fn signatures_are_listed_by_ref_name_only_and_left_out_of_the_import() {
        let image = LockedImage {
            reference: "registry.k8s.io/pause:3.10.1".into(),
            digest: Sha256::of(b"i"),
            media_type: crate::images::OCI_INDEX.into(),
            size: 1,
            platforms: Vec::new(),
        };
        let sig = SignatureArtifact {
            ref_name: format!("registry.k8s.io/pause:sha256-{}.sig", image.digest.hex()),
            digest: Sha256::of(b"s"),
            size: 2,
            media_type: crate::images::OCI_MANIFEST.into(),
            blobs: Vec::new(),
        };
        let idx: serde_json::Value = serde_json::from_slice(&index_json(&[image], std::slice::from_ref(&sig))).unwrap();
        let m = idx["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1]["annotations"][REF_NAME], sig.ref_name.as_str());
        assert!(m[1]["annotations"].get(CONTAINERD_NAME).is_none());
        let imported: serde_json::Value =
            serde_json::from_slice(&importable_index(&serde_json::to_vec(&idx).unwrap())).unwrap();
        let m = imported["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["annotations"][CONTAINERD_NAME], "registry.k8s.io/pause:3.10.1");
        assert_eq!(importable_index(b"{}\n"), b"{}\n");
    }
}
