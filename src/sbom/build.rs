//! The SBOM of a bundle, from its bundle.json: one package for the bundle, one per entry
//! (file artifact, installer, kickstart, OCI blob, metadata file), one per image and one per
//! platform manifest of a multi-platform image. Every byte a node receives is named in it
//! with the digest bundle.json gives, so an auditor can match any file on the media.

use super::{
    Checksum, CreationInfo, Document, ExternalRef, Package, Relationship, DATA_LICENSE, NAMESPACE_PREFIX, NOASSERTION,
    SBOM, SPDX_VERSION,
};
use crate::bundle::meta::{BundleJson, Entry, EntryKind};
use crate::digest::Sha256;
use crate::image_ref::ImageRef;
use crate::images::{LockedImage, LockedPlatform};
use std::collections::BTreeSet;

const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
const BUNDLE_ID: &str = "SPDXRef-Bundle";

/// SPDX IDs handed out so far (they must be unique in a document).
#[derive(Default)]
pub(super) struct Ids(BTreeSet<String>);

impl Ids {
    /// `SPDXRef-<kind>-<name>` with every character outside `[A-Za-z0-9.-]` (SPDX 2.3's
    /// idstring) turned into `-`, and a counter added if that ID is taken.
    pub(super) fn make(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{clean}");
        let mut id = base.clone();
        let mut n = 1;
        while !self.0.insert(id.clone()) {
            n += 1;
            id = format!("{base}-{n}");
        }
        id
    }
}

/// The SBOM document of `b`. Entries may come in any order; the result does not depend on it.
pub fn document(b: &BundleJson, created: u64) -> Document {
    let mut b = b.clone();
    b.entries.retain(|e| e.path != SBOM);
    b.entries.sort_by(|x, y| x.path.cmp(&y.path));
    b.images.sort_by(|x, y| x.reference.cmp(&y.reference));
    let mut ids = Ids::default();
    let mut packages = vec![bundle_package(&b)];
    let mut rels = vec![relation(DOCUMENT_ID, "DESCRIBES", BUNDLE_ID)];
    for e in &b.entries {
        let p = entry_package(&b, e, &mut ids);
        rels.push(relation(BUNDLE_ID, "CONTAINS", &p.spdx_id));
        packages.push(p);
    }
    for i in &b.images {
        let (top, platforms) = image_packages(i, &mut ids);
        rels.push(relation(BUNDLE_ID, "CONTAINS", &top.spdx_id));
        for p in &platforms {
            rels.push(relation(&top.spdx_id, "CONTAINS", &p.spdx_id));
        }
        packages.push(top);
        packages.extend(platforms);
    }
    Document {
        spdx_id: DOCUMENT_ID.into(),
        spdx_version: SPDX_VERSION.into(),
        data_license: DATA_LICENSE.into(),
        name: b.name.to_string(),
        document_namespace: format!("{NAMESPACE_PREFIX}{}-{}", b.name, Sha256::of(&b.to_bytes()).hex()),
        creation_info: CreationInfo {
            created: timestamp(created),
            creators: vec![format!("Tool: kbundle-{}", b.kbundle_version)],
        },
        packages,
        relationships: rels,
    }
}

/// `YYYY-MM-DDThh:mm:ssZ`, the form SPDX 2.3 gives for `created`.
fn timestamp(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn relation(from: &str, kind: &str, to: &str) -> Relationship {
    Relationship {
        spdx_element_id: from.into(),
        relationship_type: kind.into(),
        related_spdx_element: to.into(),
    }
}

/// A package with nothing asserted but its name: the fields every package here shares.
fn bare(spdx_id: String, name: String) -> Package {
    Package {
        spdx_id,
        name,
        version_info: None,
        package_file_name: None,
        supplier: NOASSERTION.into(),
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        checksums: Vec::new(),
        license_concluded: NOASSERTION.into(),
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION.into(),
        external_refs: Vec::new(),
        primary_package_purpose: None,
        comment: None,
    }
}

fn sha256(d: &Sha256) -> Vec<Checksum> {
    vec![Checksum {
        algorithm: "SHA256".into(),
        checksum_value: d.hex(),
    }]
}

fn bundle_package(b: &BundleJson) -> Package {
    let hops: Vec<&str> = b.hops.iter().map(|h| h.kubernetes.as_str()).collect();
    let mut comment = format!(
        "kbundle bundle of Kubernetes {} (hops: {})",
        b.kubernetes,
        hops.join(" -> ")
    );
    if let Some(f) = &b.upgrade_from {
        comment.push_str(&format!("; upgrades a cluster at {f}"));
    }
    if let Some(base) = &b.base {
        comment.push_str(&format!(
            "; delta bundle over {} (bundle.json sha256 {})",
            base.name,
            base.bundle_json_sha256.hex()
        ));
    }
    Package {
        version_info: Some(b.kubernetes.to_string()),
        primary_package_purpose: Some("INSTALL".into()),
        comment: Some(comment),
        ..bare(BUNDLE_ID.into(), b.name.to_string())
    }
}

/// The supplier of a catalog component: the project that publishes it (docs/upstream-facts.md,
/// "SBOM: SPDX 2.3 and purl", where each component is downloaded from).
fn supplier(component: Option<&str>) -> String {
    let org = match component {
        Some("kubeadm" | "kubelet" | "kubectl" | "crictl" | "metrics-server") => "Kubernetes",
        Some("containerd") => "containerd",
        Some("runc") => "Open Container Initiative",
        Some("cni-plugins") => "containernetworking",
        Some("etcd") => "etcd-io",
        Some("flannel") => "flannel-io",
        _ => return NOASSERTION.into(),
    };
    format!("Organization: {org}")
}

fn entry_package(b: &BundleJson, e: &Entry, ids: &mut Ids) -> Package {
    let file_name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
    let (kind, name, version) = match e.kind {
        EntryKind::Installer => ("Installer", "kbundle".to_string(), Some(b.kbundle_version.to_string())),
        EntryKind::Kickstart => ("Kickstart", file_name.clone(), None),
        // The images' content (named by the image packages' digests) and the bundle's own
        // bookkeeping (lockfile, OCI index, oci-layout): listed so every entry is accounted for.
        EntryKind::Blob => ("Blob", e.path.clone(), None),
        EntryKind::Meta => ("Meta", e.path.clone(), None),
        _ => (
            "File",
            e.component.clone().unwrap_or(file_name.clone()),
            e.version.clone(),
        ),
    };
    let archive = [".tar.gz", ".tgz", ".tar"].iter().any(|x| file_name.ends_with(x));
    let purpose = match e.kind {
        EntryKind::Installer => "APPLICATION",
        _ if archive => "ARCHIVE",
        _ => "FILE",
    };
    let comment = e.in_base.then(|| match &b.base {
        Some(base) => format!(
            "not packed in this delta bundle: carried by its base bundle {}",
            base.name
        ),
        None => "not packed in this bundle: carried by its base bundle".to_string(),
    });
    Package {
        version_info: version,
        package_file_name: Some(e.path.clone()),
        supplier: supplier(e.component.as_deref().filter(|_| e.kind == EntryKind::File)),
        download_location: e.url.clone().unwrap_or_else(|| NOASSERTION.into()),
        checksums: sha256(&e.sha256),
        primary_package_purpose: Some(purpose.into()),
        comment,
        ..bare(ids.make(kind, &e.path), name)
    }
}

/// The image's package and, for an index, one package per platform manifest it carries.
fn image_packages(i: &LockedImage, ids: &mut Ids) -> (Package, Vec<Package>) {
    let parsed: Option<ImageRef> = i.reference.parse().ok();
    let id = ids.make("Image", &i.reference);
    let top = image_package(i, parsed.as_ref(), &i.digest, None, id.clone());
    let platforms = i
        .platforms
        .iter()
        .map(|p| {
            platform_package(
                i,
                parsed.as_ref(),
                p,
                ids.make("Image", &format!("{}-{}", i.reference, p.platform)),
            )
        })
        .collect();
    (top, platforms)
}

fn platform_package(i: &LockedImage, r: Option<&ImageRef>, p: &LockedPlatform, id: String) -> Package {
    let mut pkg = image_package(i, r, &p.digest, Some(&p.platform), id);
    pkg.comment = Some(format!("{} manifest of {}", p.platform, i.reference));
    pkg
}

fn image_package(
    i: &LockedImage,
    r: Option<&ImageRef>,
    digest: &Sha256,
    platform: Option<&str>,
    id: String,
) -> Package {
    let Some(r) = r else {
        // bundle.json's references are validated; this keeps an odd one visible anyway.
        return Package {
            checksums: sha256(digest),
            primary_package_purpose: Some("CONTAINER".into()),
            comment: Some(i.reference.clone()),
            ..bare(id, i.reference.clone())
        };
    };
    Package {
        version_info: Some(r.tag.clone().unwrap_or_else(|| digest.oci())),
        download_location: manifest_url(r, digest),
        checksums: sha256(digest),
        external_refs: vec![ExternalRef {
            reference_category: "PACKAGE-MANAGER".into(),
            reference_type: "purl".into(),
            reference_locator: super::purl::oci(r, digest, platform),
        }],
        primary_package_purpose: Some("CONTAINER".into()),
        comment: Some(format!("{} ({})", i.reference, i.media_type)),
        ..bare(id, r.name())
    }
}

/// Where the manifest is pulled from: the registry API's `GET /v2/<name>/manifests/<digest>`
/// (docs/upstream-facts.md, "SBOM: SPDX 2.3 and purl"); Docker Hub's API host is
/// registry-1.docker.io.
fn manifest_url(r: &ImageRef, digest: &Sha256) -> String {
    let host = if r.registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        &r.registry
    };
    format!("https://{host}/v2/{}/manifests/{}", r.repository, digest.oci())
}
