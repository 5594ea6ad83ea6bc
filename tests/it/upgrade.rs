//! Upgrade bundles end to end: build with --upgrade-from (every hop's binaries and images
//! inside and verified), plan, and delta bundles. The upgrade itself, node by node, is in
//! `upgrade_walk` (three nodes) and `upgrade_cluster` (five, with a cluster model).

use crate::support;

use std::path::Path;
use support::harness::Upstream;
use support::images::push_k8s_images;
use support::node::stand_in;
use support::upgrade_env::{kb, text};
use support::upstream::{self, UpstreamSpec};

/// An upstream serving v1.34.3 (real Debian binaries) and v1.33.7's kubeadm/kubelet/kubectl
/// (tiny; its kubectl answers cluster calls), plus a registry with both image sets: the same
/// shape as the five-node model's [`ChainEnv`].
pub(crate) use support::upgrade_env::ChainEnv as Env;

pub(crate) fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let real = upstream::shared_tree(&UpstreamSpec::v1_34_3());
    let old = tmp.path().join("old");
    upstream::build_tree(&old, &UpstreamSpec::v1_33_7().tiny()).unwrap();
    // v1.33.7's kubectl must answer cluster calls once the upgrade switches to it.
    let k = old.join("dl.k8s.io/release/v1.33.7/bin/linux/amd64/kubectl");
    std::fs::copy(stand_in("kubectl-cluster"), &k).unwrap();
    let digest = kbundle::digest::hash_file(&k).unwrap().0;
    std::fs::write(k.with_extension("sha256"), digest.hex()).unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("dl.k8s.io/release")).unwrap();
    link_github(&real, &old, &root);
    std::os::unix::fs::symlink(
        real.join("dl.k8s.io/release/v1.34.3"),
        root.join("dl.k8s.io/release/v1.34.3"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        old.join("dl.k8s.io/release/v1.33.7"),
        root.join("dl.k8s.io/release/v1.33.7"),
    )
    .unwrap();
    let mdir = tmp.path().join("manifests");
    std::fs::create_dir_all(&mdir).unwrap();
    for m in ["kubernetes-v1.33.7.toml", "kubernetes-v1.34.3.toml"] {
        upstream::pgp::copy_manifest(m, &mdir.join(m)).unwrap();
    }
    let manifest = mdir.join("kubernetes-v1.34.3.toml");
    let up = Upstream::start_at(&root, &manifest);
    push_k8s_images(&up.registry, "v1.33.7", &[]);
    let installer = tmp.path().join("installer");
    std::fs::write(&installer, "#!/bin/sh\necho installer\n").unwrap();
    Env {
        tmp,
        up,
        manifest,
        installer,
    }
}

/// `root/github.com` serves the real tree, plus the old tree's etcd release (the v1.33.7
/// hop's etcd tools, 3.5.x, beside v1.34.3's 3.6.x).
fn link_github(real: &Path, old: &Path, root: &Path) {
    let gh = root.join("github.com");
    std::fs::create_dir_all(&gh).unwrap();
    for e in std::fs::read_dir(real.join("github.com")).unwrap() {
        let name = e.unwrap().file_name();
        if name != "etcd-io" {
            std::os::unix::fs::symlink(real.join("github.com").join(&name), gh.join(&name)).unwrap();
        }
    }
    let rel = "github.com/etcd-io/etcd/releases/download";
    std::fs::create_dir_all(root.join(rel)).unwrap();
    for tree in [real, old] {
        for e in std::fs::read_dir(tree.join(rel)).unwrap() {
            let name = e.unwrap().file_name();
            let _ = std::os::unix::fs::symlink(tree.join(rel).join(&name), root.join(rel).join(&name));
        }
    }
}

pub(crate) fn bundle_json(archive: &Path) -> serde_json::Value {
    let o = kb(&["inspect", "--json", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn upgrade_bundle_carries_every_hop_and_refuses_bad_starts() {
    let env = env();
    let o = env.build("out", &["--upgrade-from", "v1.32.11"]);
    assert!(o.status.success(), "{}", text(&o));
    let archive = env.path("out/kubernetes-v1.34.3.tar.zst");
    let v = kb(&["verify", archive.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    let bj = bundle_json(&archive);
    assert_eq!(bj["upgrade_from"], "v1.32.11");
    let hops: Vec<&str> = bj["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kubernetes"].as_str().unwrap())
        .collect();
    assert_eq!(hops, ["v1.33.7", "v1.34.3"]);
    let paths: Vec<&str> = bj["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "files/kubeadm/1.33.7/linux-amd64/kubeadm",
        "files/kubelet/1.33.7/linux-amd64/kubelet",
        "files/kubeadm/1.34.3/linux-amd64/kubeadm",
        // Each hop's etcd tools, of its etcd server's minor (3.5.24-0, 3.6.5-0).
        "files/etcd/3.5.25/linux-amd64/etcd-v3.5.25-linux-amd64.tar.gz",
        "files/etcd/3.6.5/linux-amd64/etcd-v3.6.5-linux-amd64.tar.gz",
    ] {
        assert!(paths.contains(&p), "{p} missing");
    }
    let hop_files = |i: usize| -> Vec<&str> {
        bj["hops"][i]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f.as_str().filter(|f| f.starts_with("files/etcd/")))
            .collect()
    };
    assert_eq!(
        hop_files(0),
        ["files/etcd/3.5.25/linux-amd64/etcd-v3.5.25-linux-amd64.tar.gz"]
    );
    assert_eq!(
        hop_files(1),
        ["files/etcd/3.6.5/linux-amd64/etcd-v3.6.5-linux-amd64.tar.gz"]
    );
    let refs: Vec<&str> = bj["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap())
        .collect();
    for r in [
        "registry.k8s.io/pause:3.10",
        "registry.k8s.io/etcd:3.5.24-0",
        "registry.k8s.io/coredns/coredns:v1.12.0",
        "registry.k8s.io/kube-apiserver:v1.33.7",
        "registry.k8s.io/pause:3.10.1",
        "registry.k8s.io/kube-apiserver:v1.34.3",
    ] {
        assert!(refs.contains(&r), "{r} missing from {refs:?}");
    }
    let hop1 = &bj["hops"][0];
    assert!(hop1["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i == "registry.k8s.io/etcd:3.5.24-0"));
    assert!(!hop1["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_str().unwrap().contains("containerd")));
    // Refusals.
    let o = env.build("bad", &["--upgrade-from", "v1.35.0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("v1.35.0"), "{}", text(&o));
    let o = env.build("bad", &["--upgrade-from", "v1.30.2"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("v1.30.2") && err.contains("1.34"), "{err}");
    // Plans from the bundle alone.
    let p = kb(&[
        "upgrade",
        "plan",
        "--bundle",
        archive.to_str().unwrap(),
        "--current",
        "v1.32.11",
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let out = String::from_utf8_lossy(&p.stdout);
    assert!(
        out.contains("v1.33.7") && out.contains("v1.34.3") && out.contains("etcd snapshot"),
        "{out}"
    );
    assert!(
        out.find("upgrade apply v1.33.7").unwrap() < out.find("upgrade apply v1.34.3").unwrap(),
        "{out}"
    );
    let p = kb(&[
        "upgrade",
        "plan",
        "--bundle",
        archive.to_str().unwrap(),
        "--current",
        "v1.31.14",
    ]);
    assert_eq!(p.status.code(), Some(1), "{}", text(&p));
    assert!(String::from_utf8_lossy(&p.stderr).contains("v1.31.14"), "{}", text(&p));
}

#[test]
fn delta_bundle_is_small_and_needs_its_base() {
    let env = env();
    let o = env.build("full", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let full = env.path("full/kubernetes-v1.34.3.tar.zst");
    let o = env.build(
        "delta",
        &["--upgrade-from", "v1.33.7", "--base", full.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let delta = env.path("delta/kubernetes-v1.34.3.tar.zst");
    let (fs, ds) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    assert!(ds * 5 < fs, "delta {ds} bytes is not much smaller than full {fs}");
    let bj = bundle_json(&delta);
    assert!(bj["base"]["name"] == "kubernetes-v1.34.3");
    // Without the base: every missing entry is named.
    let o = kb(&["verify", delta.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("files/containerd/2.1.5/linux-amd64/containerd-2.1.5-linux-amd64.tar.gz")
            && err.contains("images/blobs/sha256/"),
        "{err}"
    );
    // With the base unpacked (as a node keeps it): verifies.
    let u = kb(&["unpack", full.to_str().unwrap(), env.path("base").to_str().unwrap()]);
    assert!(u.status.success(), "{}", text(&u));
    let o = kb(&[
        "verify",
        delta.to_str().unwrap(),
        "--base",
        env.path("base/kubernetes-v1.34.3").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}
