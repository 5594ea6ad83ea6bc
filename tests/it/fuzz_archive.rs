//! Issue 9: a fuzz-style property test of the archive readers. A small valid bundle (made
//! with the library's own packer) is mutated — bytes flipped, inserted, deleted, cut off, in
//! the plain tar and in the zstd stream; bundle.json fields replaced with hostile values and
//! made self-consistent again — and `verify` and `unpack` must never panic, must finish
//! within a bound, must never accept changed content, and must never write outside the
//! destination.
//!
//! Bounded to a few seconds in CI; `KBUNDLE_FUZZ_CASES=5000 cargo test --test it fuzz_archive::`
//! runs longer.

use kbundle::bundle::meta::{BundleJson, Entry, EntryKind, Hop, BUNDLE_SCHEMA};
use kbundle::bundle::pack::{self, Compression, Source};
use kbundle::bundle::{meta_entry, Contents};
use kbundle::digest::Sha256;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const NAME: &str = "kubernetes-v1.34.3";
const KUBEADM: &str = "files/kubeadm/1.34.3/linux-amd64/kubeadm";

fn cases() -> u32 {
    std::env::var("KBUNDLE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// A minimal valid bundle: installer, a kubeadm file, the lockfile and an OCI layout file.
fn contents() -> Contents {
    let mut c = Contents {
        bundle: BundleJson {
            schema: BUNDLE_SCHEMA,
            name: NAME.parse().unwrap(),
            kbundle_version: "0.1.0".parse().unwrap(),
            kubernetes: "v1.34.3".parse().unwrap(),
            platforms: vec!["linux/amd64".parse().unwrap()],
            components: BTreeMap::from([("kubernetes".parse().unwrap(), "1.34.3".parse().unwrap())]),
            hops: vec![Hop {
                kubernetes: "v1.34.3".parse().unwrap(),
                files: vec![KUBEADM.into()],
                images: Vec::new(),
            }],
            upgrade_from: None,
            base: None,
            images: Vec::new(),
            entries: Vec::new(),
        },
        sources: Vec::new(),
    };
    let kubeadm = b"#!/bin/sh\necho kubeadm v1.34.3\n".repeat(40);
    let e = Entry {
        executable: true,
        component: Some("kubeadm".into()),
        version: Some("1.34.3".into()),
        platform: Some("linux/amd64".into()),
        url: Some("https://dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm".into()),
        ..meta_entry(KUBEADM, EntryKind::File, &kubeadm)
    };
    c.push(e, Source::Bytes(kubeadm));
    let inst = b"#!/bin/sh\necho installer\n".to_vec();
    let e = Entry {
        executable: true,
        ..meta_entry("kbundle", EntryKind::Installer, &inst)
    };
    c.push(e, Source::Bytes(inst));
    for (p, b) in [
        ("kbundle.lock", &b"# lock\n"[..]),
        ("images/oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}"),
    ] {
        c.push(meta_entry(p, EntryKind::Meta, b), Source::Bytes(b.to_vec()));
    }
    c
}

/// The packed archive bytes (plain tar or zstd) and the payload it must unpack to.
fn packed(zstd: bool) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let c = contents();
    let payload: BTreeMap<String, Vec<u8>> = c
        .bundle
        .entries
        .iter()
        .zip(&c.sources)
        .map(|(e, s)| match s {
            Source::Bytes(b) => (e.path.clone(), b.clone()),
            Source::File(_) => unreachable!(),
        })
        .collect();
    let (_, entries) = c.finish().unwrap();
    let t = tempfile::tempdir().unwrap();
    let compression = if zstd { Compression::Zstd } else { Compression::None };
    let (path, _, _) = pack::write_archive(t.path(), NAME, &entries, compression, 1_700_000_000, |_| {}).unwrap();
    (std::fs::read(path).unwrap(), payload)
}

#[derive(Debug, Clone)]
enum Op {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Cut(usize),
}

fn apply(bytes: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for op in ops {
        if b.is_empty() {
            break;
        }
        match *op {
            Op::Flip(p, m) => {
                let i = p % b.len();
                b[i] ^= m.max(1);
            }
            Op::Insert(p, v) => {
                let i = p % (b.len() + 1);
                b.insert(i, v);
            }
            Op::Delete(p) => {
                let i = p % b.len();
                b.remove(i);
            }
            Op::Cut(p) => b.truncate(p % b.len()),
        }
    }
    b
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(p, m)| Op::Flip(p, m)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Op::Insert(p, v)),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => any::<usize>().prop_map(Op::Cut),
    ]
}

/// Every regular file under `dir`, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The properties, for one (possibly changed) archive: returns whether it was accepted.
fn check(bytes: &[u8], payload: &BTreeMap<String, Vec<u8>>) -> Result<bool, TestCaseError> {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join(format!("{NAME}.tar"));
    std::fs::write(&archive, bytes).unwrap();
    let start = Instant::now();
    let report = kbundle::bundle::verify::verify_archive(&archive).unwrap();
    let dest = t.path().join("dest");
    let unpacked = kbundle::bundle::unpack::unpack(&archive, &dest);
    prop_assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    // Nothing but the archive and the destination exist next to each other.
    let mut names: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.retain(|n| n != "dest" && *n != format!("{NAME}.tar"));
    prop_assert!(names.is_empty(), "written outside the destination: {names:?}");
    prop_assert_eq!(
        report.ok(),
        unpacked.is_ok(),
        "verify and unpack disagree: {:?}",
        report.problems
    );
    let Ok(u) = unpacked else {
        prop_assert!(files(&dest).is_empty(), "a failed unpack left files");
        return Ok(false);
    };
    let mut got = files(&u.dir);
    got.remove("bundle.json");
    got.remove("SHA256SUMS");
    prop_assert_eq!(&got, payload, "accepted, but the content changed");
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_archives_are_never_accepted_with_changed_content(
        zstd in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..4),
    ) {
        let (bytes, payload) = packed(zstd);
        check(&apply(&bytes, &ops), &payload)?;
    }

    #[test]
    fn hostile_bundle_json_values_are_refused_even_when_self_consistent(
        field in prop_oneof![
            Just("name"), Just("kubernetes"), Just("kbundle_version"), Just("platforms"),
            Just("entry_path"), Just("entry_platform"), Just("hop_file"), Just("upgrade_from"),
        ],
        value in prop_oneof![
            Just("../../etc".to_string()), Just("/etc".to_string()), Just("v1.34.3/../../x".to_string()),
            Just("a\nb".to_string()), Just("".to_string()), Just("..".to_string()),
            Just("linux/../amd64".to_string()), "[ -~]{0,24}".prop_map(|s| s),
        ],
    ) {
        let c = contents();
        let mut v: serde_json::Value = serde_json::to_value(&c.bundle).unwrap();
        match field {
            "platforms" => v["platforms"] = serde_json::json!([value.clone()]),
            "entry_path" => v["entries"][0]["path"] = value.clone().into(),
            "entry_platform" => v["entries"][0]["platform"] = value.clone().into(),
            "hop_file" => v["hops"][0]["files"][0] = value.clone().into(),
            f => v[f] = value.clone().into(),
        }
        let bytes = serde_json::to_vec_pretty(&v).unwrap();
        // Either parsing refuses it, or (a harmless value) every field still follows the rules.
        if let Ok(b) = BundleJson::parse(&bytes) {
            prop_assert!(kbundle::bundle::fields::check_name(&b.name).is_ok());
            prop_assert!(kbundle::bundle::fields::check_kube_version(&b.kubernetes).is_ok());
            prop_assert!(b.entries.iter().all(|e| kbundle::bundle::meta::check_rel_path(&e.path).is_ok()));
            prop_assert!(!value.contains('\n') && value != ".." && !value.starts_with('/'), "{field}={value:?} accepted");
            prop_assert!(field != "kubernetes" && field != "upgrade_from" && field != "platforms" || value != "v1.34.3/../../x");
        }
        prop_assert!(Sha256::of(&bytes) != Sha256::of(b""));
    }
}
