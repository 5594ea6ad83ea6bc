//! sbom.spdx.json in every bundle: valid for the stock SPDX tools (`pyspdxtools -i`), listing
//! every file, the installer and every image (and platform manifest) with the digests
//! bundle.json gives them; printed by `inspect --sbom` only when it matches bundle.json.

use crate::support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use support::bundles::{kbundle, repack, text, Built};
use support::spdx::{assert_valid, validate};

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// (packageFileName, sha256) of every package that has a file name, and every sha256.
fn sbom_sets(sbom: &Value) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut files = BTreeSet::new();
    let mut digests = BTreeSet::new();
    for p in sbom["packages"].as_array().unwrap() {
        let Some(sum) = p["checksums"][0]["checksumValue"].as_str() else {
            continue;
        };
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
        digests.insert(sum.to_string());
        if let Some(f) = p["packageFileName"].as_str() {
            files.insert((f.to_string(), sum.to_string()));
        }
    }
    (files, digests)
}

/// Every bundle.json entry (files, installer, blobs, metadata) is a package with its digest,
/// and so is every image and platform manifest.
fn assert_lists_everything(sbom: &Value, bj: &Value) {
    let (files, digests) = sbom_sets(sbom);
    let want: BTreeSet<(String, String)> = bj["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] != "sbom.spdx.json")
        .map(|e| (e["path"].as_str().unwrap().into(), e["sha256"].as_str().unwrap().into()))
        .collect();
    assert!(want.iter().any(|(p, _)| p == "kbundle"), "the installer is listed");
    assert_eq!(files, want, "SBOM packages vs bundle.json entries");
    let mut images = 0;
    for i in bj["images"].as_array().unwrap() {
        images += 1;
        let top = i["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(digests.contains(top), "image {} ({top}) is not in the SBOM", i["ref"]);
        let r = i["ref"].as_str().unwrap();
        let (repo, tag) = r.rsplit_once(':').unwrap();
        let enc = repo.replace(':', "%3A").replace('/', "%2F");
        // Test images may share content (one digest, several references): one must match.
        let of = |d: &str, arch: bool| {
            purls_of(sbom, d).into_iter().any(|purl| {
                purl.starts_with("pkg:oci/")
                    && purl.contains(&format!("@sha256:{d}?"))
                    && purl.contains(&format!("repository_url={enc}"))
                    && purl.ends_with(&format!("&tag={tag}"))
                    && purl.contains("arch=") == arch
            })
        };
        assert!(of(top, false), "{r}: {:?}", purls_of(sbom, top));
        for p in i["platforms"].as_array().into_iter().flatten() {
            let d = p["digest"].as_str().unwrap().trim_start_matches("sha256:");
            assert!(of(d, true), "{r} {}: {:?}", p["platform"], purls_of(sbom, d));
        }
    }
    assert!(images > 0 || bj["images"].as_array().unwrap().is_empty());
    let uses = |id: &str| {
        sbom["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["relatedSpdxElement"] == id)
    };
    for p in sbom["packages"].as_array().unwrap() {
        assert!(
            uses(p["SPDXID"].as_str().unwrap()),
            "{} is related to nothing",
            p["SPDXID"]
        );
    }
}

/// The purls of every image package with this sha256 (the blob package of the same manifest
/// has no purl).
fn purls_of(sbom: &Value, sha: &str) -> Vec<String> {
    let found: Vec<String> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["checksums"][0]["checksumValue"] == sha && p["primaryPackagePurpose"] == "CONTAINER")
        .map(|p| {
            assert_eq!(p["externalRefs"][0]["referenceCategory"], "PACKAGE-MANAGER");
            assert_eq!(p["externalRefs"][0]["referenceType"], "purl");
            p["externalRefs"][0]["referenceLocator"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(!found.is_empty(), "no package with {sha}");
    found
}

/// `inspect --sbom` of the archive and of the unpacked directory both print the file, and
/// bundle.json lists it with its digest.
fn check_bundle(archive: &Path, dir: &Path) -> Value {
    let file = std::fs::read(dir.join("sbom.spdx.json")).expect("the bundle holds sbom.spdx.json");
    for p in [archive, dir] {
        let o = kbundle(&["inspect", "--sbom", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(o.stdout == file, "inspect --sbom {} differs from the file", p.display());
    }
    let bj = json(&std::fs::read(dir.join("bundle.json")).unwrap());
    let listed = bj["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "sbom.spdx.json")
        .expect("listed");
    assert_eq!(listed["sha256"], kbundle::digest::Sha256::of(&file).hex());
    assert_valid(&dir.join("sbom.spdx.json"));
    let sbom = json(&file);
    assert_lists_everything(&sbom, &bj);
    assert_eq!(sbom["name"], bj["name"]);
    sbom
}

#[test]
fn install_bundle_sbom_validates_lists_everything_and_inspect_prints_it() {
    let b = Built::new(true);
    let dir = b.unpacked("u");
    let sbom = check_bundle(&b.archive, &dir);
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    // SOURCE_DATE_EPOCH (support::bundles::MTIME) is the creation time.
    assert_eq!(sbom["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    assert!(sbom["documentNamespace"]
        .as_str()
        .unwrap()
        .starts_with("https://kbundle.dev/spdx/kubernetes-v1.34.3-"));
    // The validator really checks: a broken copy (bad SPDX ID, supplier without its
    // `Organization:` prefix) is refused.
    let mut bad = sbom.clone();
    bad["packages"][1]["SPDXID"] = "not an id".into();
    bad["packages"][2]["supplier"] = "Kubernetes".into();
    let p = b.path("bad.spdx.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&bad).unwrap()).unwrap();
    let (ok, out) = validate(&p);
    assert!(!ok, "pyspdxtools accepted a broken SBOM:\n{out}");
}

#[test]
fn altered_sbom_fails_verify_and_is_not_shown() {
    let b = Built::new(true);
    let dir = b.unpacked("u");
    let p = dir.join("sbom.spdx.json");
    let mut doc = json(&std::fs::read(&p).unwrap());
    doc["packages"][1]["downloadLocation"] = "https://evil.example/kubeadm".into();
    std::fs::write(&p, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let archive = b.path("altered.tar.zst");
    repack(&dir, &archive);
    for target in [&dir, &archive] {
        let v = kbundle(&["verify", target.to_str().unwrap()]);
        assert_eq!(v.status.code(), Some(1), "{}", text(&v));
        assert!(
            String::from_utf8_lossy(&v.stderr).contains("sbom.spdx.json"),
            "{}",
            text(&v)
        );
        let i = kbundle(&["inspect", "--sbom", target.to_str().unwrap()]);
        assert!(!i.status.success() && i.stdout.is_empty(), "{}", text(&i));
        assert!(
            String::from_utf8_lossy(&i.stderr).contains("does not match bundle.json"),
            "{}",
            text(&i)
        );
    }
}

#[test]
fn upgrade_and_delta_bundle_sboms_list_every_hop() {
    let env = crate::upgrade::env();
    let o = env.build("full", &["--upgrade-from", "v1.32.11"]);
    assert!(o.status.success(), "{}", text(&o));
    let full = env.path("full/kubernetes-v1.34.3.tar.zst");
    let u = kbundle(&["unpack", full.to_str().unwrap(), env.path("u").to_str().unwrap()]);
    assert!(u.status.success(), "{}", text(&u));
    let sbom = check_bundle(&full, &env.path("u/kubernetes-v1.34.3"));
    let versions: BTreeSet<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "kubeadm")
        .filter_map(|p| p["versionInfo"].as_str())
        .collect();
    assert_eq!(versions, BTreeSet::from(["1.33.7", "1.34.3"]), "both hops' kubeadm");
    // A delta bundle lists what it leaves to its base too, and needs no base to show it.
    let base = env.build("base", &[]);
    assert!(base.status.success(), "{}", text(&base));
    let b = env.path("base/kubernetes-v1.34.3.tar.zst");
    let o = env.build("delta", &["--upgrade-from", "v1.33.7", "--base", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let delta = env.path("delta/kubernetes-v1.34.3.tar.zst");
    let i = kbundle(&["inspect", "--sbom", delta.to_str().unwrap()]);
    assert!(i.status.success(), "{}", text(&i));
    let tmp = env.path("delta.spdx.json");
    std::fs::write(&tmp, &i.stdout).unwrap();
    assert_valid(&tmp);
    let bj = json(&kbundle(&["inspect", "--json", delta.to_str().unwrap()]).stdout);
    let d = json(&i.stdout);
    assert_lists_everything(&d, &bj);
    assert!(String::from_utf8_lossy(&i.stdout).contains("carried by its base bundle kubernetes-v1.34.3"));
}
