use super::*;
use crate::bundle::meta::{BundleJson, EntryKind};
use crate::digest::Sha256;
use crate::images::{LockedImage, LockedPlatform};
use std::collections::BTreeSet;

/// A fixture bundle (files, installer, lock, images) with one multi-platform image added.
fn fixture() -> (tempfile::TempDir, BundleJson) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::testkit::bundle_dir(tmp.path(), &["v1.33.7", "v1.34.3"]);
    let mut b = crate::bundle::read_bundle_json(&dir).unwrap();
    b.images.push(LockedImage {
        reference: "docker.io/flannel/flannel:v0.27.3".into(),
        digest: Sha256::of(b"index"),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        size: 1,
        platforms: vec![
            LockedPlatform {
                platform: "linux/amd64".into(),
                digest: Sha256::of(b"amd64"),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 1,
            },
            LockedPlatform {
                platform: "linux/arm64".into(),
                digest: Sha256::of(b"arm64"),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 1,
            },
        ],
    });
    (tmp, b)
}

fn package(d: &Document, pred: impl Fn(&Package) -> bool) -> &Package {
    d.packages.iter().find(|p| pred(p)).expect("package")
}

#[test]
fn every_entry_and_image_is_a_package_with_the_bundles_digest() {
    let (_t, b) = fixture();
    let d = document(&b, 1_700_000_000);
    let digests: BTreeSet<(String, String)> = d
        .packages
        .iter()
        .flat_map(|p| {
            p.checksums.iter().map(|c| {
                (
                    p.package_file_name.clone().unwrap_or_default(),
                    c.checksum_value.clone(),
                )
            })
        })
        .collect();
    for e in b
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File | EntryKind::Installer))
    {
        assert!(digests.contains(&(e.path.clone(), e.sha256.hex())), "{}", e.path);
    }
    let kubeadm = package(&d, |p| {
        p.name == "kubeadm" && p.version_info.as_deref() == Some("1.33.7")
    });
    assert_eq!(kubeadm.supplier, "Organization: Kubernetes");
    assert_eq!(
        Some(&kubeadm.download_location),
        b.entry("files/kubeadm/1.33.7/linux-amd64/kubeadm")
            .and_then(|e| e.url.as_ref())
    );
    assert_eq!(
        package(&d, |p| p.name == "runc").supplier,
        "Organization: Open Container Initiative"
    );
    for i in &b.images {
        let top = package(&d, |p| {
            p.checksums.first().is_some_and(|c| c.checksum_value == i.digest.hex())
        });
        assert_eq!(top.primary_package_purpose.as_deref(), Some("CONTAINER"));
        for pl in &i.platforms {
            let p = package(&d, |p| {
                p.checksums.first().is_some_and(|c| c.checksum_value == pl.digest.hex())
            });
            let rel = relation(&top.spdx_id, "CONTAINS", &p.spdx_id);
            assert!(d.relationships.contains(&rel), "{rel:?}");
        }
    }
    // Every entry is a package with its digest (blobs and metadata too); the SBOM itself is not.
    for e in b.entries.iter().filter(|e| e.path != SBOM) {
        let p = package(&d, |p| p.package_file_name.as_deref() == Some(e.path.as_str()));
        assert_eq!(p.checksums[0].checksum_value, e.sha256.hex(), "{}", e.path);
    }
    assert!(d.packages.iter().all(|p| p.package_file_name.as_deref() != Some(SBOM)));
}

fn relation(a: &str, kind: &str, b: &str) -> Relationship {
    Relationship {
        spdx_element_id: a.into(),
        relationship_type: kind.into(),
        related_spdx_element: b.into(),
    }
}

#[test]
fn document_fields_and_relationships_are_complete() {
    let (_t, b) = fixture();
    let d = document(&b, 1_700_000_000);
    assert_eq!(
        (d.spdx_id.as_str(), d.spdx_version.as_str()),
        ("SPDXRef-DOCUMENT", "SPDX-2.3")
    );
    assert_eq!(d.data_license, "CC0-1.0");
    assert_eq!(d.name, "kubernetes-v1.34.3");
    assert_eq!(d.creation_info.created, "2023-11-14T22:13:20Z");
    assert_eq!(d.creation_info.creators, ["Tool: kbundle-0.1.0"]);
    assert!(d
        .relationships
        .contains(&relation("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Bundle")));
    let ids: BTreeSet<&str> = d.packages.iter().map(|p| p.spdx_id.as_str()).collect();
    assert_eq!(ids.len(), d.packages.len(), "SPDX IDs are unique");
    for id in &ids {
        assert!(id
            .strip_prefix("SPDXRef-")
            .is_some_and(|r| r.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')));
    }
    // Every package is reached from the bundle (directly or through its image).
    let contained: BTreeSet<&str> = d
        .relationships
        .iter()
        .filter(|r| r.relationship_type == "CONTAINS")
        .map(|r| r.related_spdx_element.as_str())
        .collect();
    assert_eq!(contained.len() + 1, ids.len());
    let json: serde_json::Value = serde_json::from_slice(&d.to_bytes()).unwrap();
    assert!(json["packages"][0]["SPDXID"].is_string() && json["packages"][0]["filesAnalyzed"] == false);
    assert!(json["relationships"][0]["spdxElementId"].is_string());
}

#[test]
fn deterministic_and_namespaced_by_content() {
    let (_t, b) = fixture();
    let one = String::from_utf8(render(&b, 1)).unwrap();
    let render = |b: &BundleJson, t| String::from_utf8(render(b, t)).unwrap();
    let mut shuffled = b.clone();
    shuffled.entries.reverse();
    shuffled.images.reverse();
    assert_eq!(render(&shuffled, 1), one, "entry order does not matter");
    let d = document(&b, 1);
    assert!(d
        .document_namespace
        .starts_with("https://kbundle.dev/spdx/kubernetes-v1.34.3-"));
    let mut changed = b.clone();
    changed.entries[0].sha256 = Sha256::of(b"other");
    assert_ne!(document(&changed, 1).document_namespace, d.document_namespace);
    // The SBOM's own entry, if present, changes nothing.
    let mut with_sbom = b.clone();
    with_sbom
        .entries
        .push(crate::bundle::meta_entry(SBOM, EntryKind::Meta, one.as_bytes()));
    assert_eq!(render(&with_sbom, 1), one);
}

#[test]
fn oci_purls_are_canonical() {
    let (_t, b) = fixture();
    let d = document(&b, 1);
    let flannel = package(&d, |p| {
        p.comment.as_deref() == Some("linux/arm64 manifest of docker.io/flannel/flannel:v0.27.3")
    });
    assert_eq!(
        flannel.external_refs[0].reference_locator,
        format!(
            "pkg:oci/flannel@sha256:{}?arch=arm64&repository_url=docker.io%2Fflannel%2Fflannel&tag=v0.27.3",
            Sha256::of(b"arm64").hex()
        )
    );
    assert_eq!(flannel.external_refs[0].reference_category, "PACKAGE-MANAGER");
    assert_eq!(
        flannel.download_location,
        format!(
            "https://registry-1.docker.io/v2/flannel/flannel/manifests/sha256:{}",
            Sha256::of(b"arm64").hex()
        )
    );
    let r: crate::image_ref::ImageRef = "127.0.0.1:5000/kube-apiserver:v1.34.3".parse().unwrap();
    assert_eq!(
        purl::oci(&r, &Sha256::of(b"x"), None),
        format!(
            "pkg:oci/kube-apiserver@sha256:{}?repository_url=127.0.0.1%3A5000%2Fkube-apiserver&tag=v1.34.3",
            Sha256::of(b"x").hex()
        )
    );
}

#[test]
fn ids_stay_unique_when_names_clash() {
    let mut ids = build::Ids::default();
    assert_eq!(ids.make("File", "a/b"), "SPDXRef-File-a-b");
    assert_eq!(ids.make("File", "a_b"), "SPDXRef-File-a-b-2");
}
