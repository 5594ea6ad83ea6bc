//! Hop choice from the command line, on the shipped manifests (v1.32.11, v1.33.3, v1.33.7,
//! v1.34.3, v1.35.4 side by side): the highest patch of each minor by default, `--via` for
//! another, bad `--via` refused by `list`, `build` and `lock` before any download; and
//! `list --upgrade-from` naming exactly what `build --upgrade-from --via` bundles.

use crate::support;
use crate::support::upgrade_env::{kb as kb_env, text};
use crate::upgrade::{bundle_json, env};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kbundle")).args(args).output().unwrap()
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests").join(name)
}

fn hops(manifest: &str, extra: &[&str]) -> Vec<String> {
    let m = shipped(manifest);
    let mut args = vec!["list", m.to_str().unwrap(), "--json"];
    args.extend(extra);
    let o = kb(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kubernetes"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_highest_shipped_patch_is_the_default_and_via_picks_another() {
    assert_eq!(
        hops("kubernetes-v1.34.3.toml", &["--upgrade-from", "v1.32.11"]),
        ["v1.33.7", "v1.34.3"]
    );
    assert_eq!(
        hops(
            "kubernetes-v1.34.3.toml",
            &["--upgrade-from", "v1.32.11", "--via", "v1.33.3"]
        ),
        ["v1.33.3", "v1.34.3"]
    );
    assert_eq!(
        hops(
            "kubernetes-v1.35.4.toml",
            &["--upgrade-from", "v1.32.11", "--via", "v1.33.3"]
        ),
        ["v1.33.3", "v1.34.3", "v1.35.4"]
    );
}

#[test]
fn every_shipped_manifest_lists_with_the_catalogs_kubeadm_tags() {
    for (name, want) in [
        (
            "kubernetes-v1.32.11.toml",
            [
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/etcd:3.5.24-0",
                "registry.k8s.io/coredns/coredns:v1.11.3",
            ],
        ),
        (
            "kubernetes-v1.33.3.toml",
            [
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/etcd:3.5.21-0",
                "registry.k8s.io/coredns/coredns:v1.12.0",
            ],
        ),
        (
            "kubernetes-v1.35.4.toml",
            [
                "registry.k8s.io/pause:3.10.1",
                "registry.k8s.io/etcd:3.6.6-0",
                "registry.k8s.io/coredns/coredns:v1.13.1",
            ],
        ),
    ] {
        let m = shipped(name);
        let o = kb(&["list", m.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let refs: Vec<&str> = v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["ref"].as_str().unwrap())
            .collect();
        for w in want {
            assert!(refs.contains(&w), "{name}: {w} missing from {refs:?}");
        }
    }
}

#[test]
fn a_via_off_the_chain_is_refused_by_list_build_and_lock_before_any_download() {
    let tmp = tempfile::tempdir().unwrap();
    let m = shipped("kubernetes-v1.34.3.toml");
    let m = m.to_str().unwrap();
    let out = tmp.path().join("out");
    let lockfile = tmp.path().join("x.lock");
    // An unroutable mirror: anything that tried the network would fail differently.
    let mirror = [
        "--mirror",
        "https://dl.k8s.io=http://127.0.0.1:9",
        "--cache",
        tmp.path().to_str().unwrap(),
    ];
    for (args, says) in [
        (
            vec!["list", m, "--upgrade-from", "v1.32.11", "--via", "v1.34.1"],
            "the target's",
        ),
        (
            vec!["list", m, "--upgrade-from", "v1.32.11", "--via", "v1.32.5"],
            "the cluster's",
        ),
        (
            vec![
                "build",
                m,
                "--out",
                out.to_str().unwrap(),
                "--upgrade-from",
                "v1.32.11",
                "--via",
                "v1.35.4",
            ],
            "not on the way",
        ),
        (
            vec![
                "lock",
                m,
                "--lockfile",
                lockfile.to_str().unwrap(),
                "--upgrade-from",
                "v1.32.11",
                "--via",
                "v1.33.3",
                "--via",
                "v1.33.5",
            ],
            "two patches of one minor",
        ),
    ] {
        let mut args = args.clone();
        if args[0] != "list" {
            args.extend(mirror);
        }
        let o = kb(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says) && err.contains("--via"), "{args:?}: {err}");
    }
    assert!(!out.exists() && !lockfile.exists(), "nothing written");
    // --via alone is a usage error (exit 2).
    let o = kb(&["list", m, "--via", "v1.33.3"]);
    assert_eq!(o.status.code(), Some(2));
}

/// One hop as (kubernetes, sorted files, sorted images).
fn hop_sets(hops: &serde_json::Value) -> Vec<(String, Vec<String>, Vec<String>)> {
    let strings = |v: &serde_json::Value| {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    };
    hops.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kubernetes"].as_str().unwrap().to_string(),
                strings(&h["files"]),
                strings(&h["images"]),
            )
        })
        .collect()
}

#[test]
fn list_upgrade_from_names_what_build_puts_in_the_bundle_and_via_picks_the_patch() {
    let env = env();
    support::versions::serve_kubernetes(&env.path("root"), env.tmp.path(), &env.up.registry, "1.33.3");
    let args = ["--upgrade-from", "v1.32.11", "--via", "v1.33.3"];
    let o = env.build("out", &args);
    assert!(o.status.success(), "{}", text(&o));
    let bj = bundle_json(&env.path("out/kubernetes-v1.34.3.tar.zst"));
    let mut list_args = vec!["list", env.manifest.to_str().unwrap(), "--json"];
    list_args.extend(args);
    let l = kb_env(&list_args);
    assert!(l.status.success(), "{}", text(&l));
    let listed: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    // The same hops, each with the same files and images.
    let hops = hop_sets(&bj["hops"]);
    assert_eq!(hop_sets(&listed["hops"]), hops);
    assert_eq!(
        hops.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
        ["v1.33.3", "v1.34.3"]
    );
    assert_eq!(listed["upgrade_from"], bj["upgrade_from"]);
    // And the same files and images overall.
    let field = |v: &serde_json::Value, key: &str| {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[key].as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    };
    let files: Vec<String> = field(&bj["entries"], "path")
        .into_iter()
        .filter(|p| p.starts_with("files/"))
        .collect();
    assert_eq!(field(&listed["files"], "path"), files);
    assert_eq!(field(&listed["images"], "ref"), field(&bj["images"], "ref"));
    assert!(files.contains(&"files/kubeadm/1.33.3/linux-amd64/kubeadm".to_string()));
    assert!(!files.iter().any(|f| f.contains("1.33.7")), "{files:?}");
}
