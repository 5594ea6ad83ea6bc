//! Builder end to end against a loopback upstream: build, verify, reproducibility, cache,
//! faults, --locked, list without network.

use crate::support;

mod faults;
mod runc_signature;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::harness::{small_installer, Upstream};
use support::mirror::Fault;
use support::registry::output_text as text;
use support::upstream::{self, UpstreamSpec};

const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");

fn kbundle(args: &[&str]) -> Output {
    Command::new(KBUNDLE)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run kbundle")
}

/// A copy of a shipped manifest in its own directory (the lockfile is written beside it),
/// trusting the loopback upstream's runc signer.
fn manifest_copy(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    upstream::pgp::copy_manifest(name, &dst).expect("copy manifest");
    dst
}

struct Env {
    tmp: tempfile::TempDir,
    up: Upstream,
    manifest: PathBuf,
}

impl Env {
    fn new(spec: &UpstreamSpec, manifest: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let mdir = tmp.path().join("m");
        std::fs::create_dir_all(&mdir).unwrap();
        let manifest = manifest_copy(&mdir, manifest);
        let up = Upstream::start(spec, &manifest);
        Env { tmp, up, manifest }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// `kbundle build` with mirrors, a cache and an output dir under the temp dir.
    fn build(&self, cache: &str, out: &str, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "build".into(),
            self.manifest.display().to_string(),
            "--out".into(),
            self.path(out).display().to_string(),
            "--cache".into(),
            self.path(cache).display().to_string(),
        ];
        args.extend(self.up.mirror_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kbundle(&refs)
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn dir_files(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn real_bundle_builds_verifies_and_checks_with_sha256sum() {
    let env = Env::new(&UpstreamSpec::v1_34_3(), "kubernetes-v1.34.3.toml");
    let o = env.build("cache", "out", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let archive = env.path("out/kubernetes-v1.34.3.tar.zst");
    assert!(archive.is_file(), "{}", text(&o));
    assert_eq!(
        dir_files(&env.path("out")),
        ["kubernetes-v1.34.3.tar.zst", "kubernetes-v1.34.3.tar.zst.sha256"]
    );
    // The sidecar is sha256sum -c compatible.
    let c = Command::new("sha256sum")
        .arg("-c")
        .arg("kubernetes-v1.34.3.tar.zst.sha256")
        .current_dir(env.path("out"))
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
    // The lockfile was written beside the manifest.
    let lock = std::fs::read_to_string(env.manifest.with_extension("lock")).unwrap();
    assert!(
        lock.contains("https://dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm"),
        "{lock}"
    );

    let v = kbundle(&["verify", archive.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));

    // Unpack, then check with coreutils from inside the bundle directory.
    let u = kbundle(&[
        "unpack",
        archive.to_str().unwrap(),
        env.path("unpacked").to_str().unwrap(),
    ]);
    assert!(u.status.success(), "{}", text(&u));
    let dir = env.path("unpacked/kubernetes-v1.34.3");
    let c = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
    let v = kbundle(&["verify", dir.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));

    // bundle.json records upstream URLs (never the mirror's) and the real bytes.
    let bj = read_json(&dir.join("bundle.json"));
    let entries = bj["entries"].as_array().unwrap();
    let mirror = env.up.mirror.url();
    let registry = env.up.registry.url();
    for e in entries {
        if let Some(u) = e["url"].as_str() {
            assert!(
                u.starts_with("https://dl.k8s.io/") || u.starts_with("https://github.com/"),
                "{u}"
            );
            assert!(!u.contains(&mirror) && !u.contains(&registry));
        }
    }
    let kubectl = dir.join("files/kubectl/1.34.3/linux-amd64/kubectl");
    assert_eq!(
        std::fs::read(&kubectl).unwrap(),
        std::fs::read("/usr/bin/kubectl").unwrap()
    );
    let installer = dir.join("kbundle");
    assert_eq!(std::fs::read(&installer).unwrap(), std::fs::read(KBUNDLE).unwrap());
    let out = Command::new(&installer).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kbundle "));
    for want in [
        "kbundle.lock",
        "sbom.spdx.json",
        "files/containerd/2.1.5/linux-amd64/containerd-2.1.5-linux-amd64.tar.gz",
        "files/runc/1.3.4/linux-amd64/runc.amd64",
        "files/etcd/3.6.5/linux-amd64/etcd-v3.6.5-linux-amd64.tar.gz",
        "files/flannel/0.27.3/kube-flannel.yml",
    ] {
        assert!(entries.iter().any(|e| e["path"] == want), "bundle.json lacks {want}");
    }
    assert_eq!(bj["kubernetes"], "v1.34.3");
    assert_eq!(bj["platforms"], serde_json::json!(["linux/amd64"]));
}

#[test]
fn two_cold_builds_are_byte_identical_in_every_format() {
    let env = Env::new(&UpstreamSpec::v1_34_3().tiny(), "kubernetes-v1.34.3.toml");
    let inst = small_installer(env.tmp.path());
    for comp in ["zstd", "gzip", "none"] {
        let ext = match comp {
            "zstd" => "tar.zst",
            "gzip" => "tar.gz",
            _ => "tar",
        };
        let mut digests = Vec::new();
        for run in 0..2 {
            let _ = std::fs::remove_file(env.manifest.with_extension("lock"));
            let o = env.build(
                &format!("cache-{comp}-{run}"),
                &format!("out-{comp}-{run}"),
                &["--compression", comp, "--installer", inst.to_str().unwrap()],
            );
            assert!(o.status.success(), "{}", text(&o));
            let bytes = std::fs::read(env.path(&format!("out-{comp}-{run}/kubernetes-v1.34.3.{ext}"))).unwrap();
            digests.push(bytes);
        }
        assert!(digests[0] == digests[1], "{comp}: two cold builds differ");
    }
}

#[test]
fn warm_cache_downloads_nothing() {
    let env = Env::new(&UpstreamSpec::v1_34_3().tiny(), "kubernetes-v1.34.3.toml");
    let inst = small_installer(env.tmp.path());
    let i = ["--installer", inst.to_str().unwrap()];
    let o = env.build("cache", "out1", &i);
    assert!(o.status.success(), "{}", text(&o));
    let first = env.up.mirror.total_gets();
    assert!(first >= 10, "cold build fetched {first} URLs");
    env.up.mirror.reset_counters();
    let o = env.build("cache", "out2", &i);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        env.up.mirror.total_gets(),
        0,
        "warm build requested {:?}",
        env.up.mirror.requests()
    );
    // Same bytes either way.
    assert_eq!(
        std::fs::read(env.path("out1/kubernetes-v1.34.3.tar.zst")).unwrap(),
        std::fs::read(env.path("out2/kubernetes-v1.34.3.tar.zst")).unwrap()
    );
}

#[test]
fn locked_build_refuses_upstream_drift_naming_the_file() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    // A private copy of the upstream tree that we can change.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("upstream");
    upstream::build_tree(&root, &spec).unwrap();
    let mdir = tmp.path().join("m");
    std::fs::create_dir_all(&mdir).unwrap();
    let manifest = manifest_copy(&mdir, "kubernetes-v1.34.3.toml");
    let up = Upstream::start_at(&root, &manifest);
    let inst = small_installer(tmp.path());
    let mut base: Vec<String> = vec!["--cache".into(), tmp.path().join("cache").display().to_string()];
    base.extend(up.mirror_args());
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = base.clone();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |a: Vec<String>| kbundle(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let mut a = vec![
        "build".to_string(),
        manifest.display().to_string(),
        "--locked".into(),
        "--out".into(),
        tmp.path().join("out").display().to_string(),
    ];
    a.extend(args(&["--installer", inst.to_str().unwrap()]));
    let o = run(a.clone());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("kbundle lock"),
        "{}",
        text(&o)
    );

    let mut l = vec!["lock".to_string(), manifest.display().to_string()];
    l.extend(args(&[]));
    let o = run(l.clone());
    assert!(o.status.success(), "{}", text(&o));
    let lock1 = std::fs::read_to_string(manifest.with_extension("lock")).unwrap();
    // Locking again gives the same text (sorted, stable).
    assert!(run(l).status.success());
    assert_eq!(lock1, std::fs::read_to_string(manifest.with_extension("lock")).unwrap());
    let o = run(a.clone());
    assert!(o.status.success(), "{}", text(&o));

    // Upstream replaces kubectl (and its checksum file).
    let kubectl = root.join(format!(
        "dl.k8s.io/release/v{}/bin/linux/amd64/kubectl",
        spec.kubernetes
    ));
    let old = kbundle::digest::hash_file(&kubectl).unwrap().0;
    std::fs::write(&kubectl, b"#!/bin/sh\necho replaced\n").unwrap();
    let new = kbundle::digest::hash_file(&kubectl).unwrap().0;
    std::fs::write(
        root.join(format!(
            "dl.k8s.io/release/v{}/bin/linux/amd64/kubectl.sha256",
            spec.kubernetes
        )),
        new.hex(),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(tmp.path().join("out"));
    let o = run(a);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kubectl") && err.contains(&old.hex()) && err.contains(&new.hex()),
        "{err}"
    );
    assert!(!tmp.path().join("out/kubernetes-v1.34.3.tar.zst").exists());
}

#[test]
fn list_needs_no_network_and_has_the_documented_shape() {
    // No mirror is running and the manifest names real upstream hosts: list must not care.
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest_copy(tmp.path(), "kubernetes-v1.34.3.toml");
    let o = kbundle(&["list", m.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 10);
    for f in files {
        assert!(
            f["name"].is_string() && f["url"].as_str().unwrap().starts_with("https://"),
            "{f}"
        );
    }
    let images: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap())
        .collect();
    for want in [
        "registry.k8s.io/kube-apiserver:v1.34.3",
        "registry.k8s.io/pause:3.10.1",
        "registry.k8s.io/etcd:3.6.5-0",
        "registry.k8s.io/coredns/coredns:v1.12.1",
        "ghcr.io/flannel-io/flannel:v0.27.3",
        "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1",
        "registry.k8s.io/metrics-server/metrics-server:v0.8.0",
    ] {
        assert!(images.contains(&want), "missing {want} in {images:?}");
    }
    // 1.33.7 gets its own kubeadm tags.
    let m = manifest_copy(tmp.path(), "kubernetes-v1.33.7.toml");
    let o = kbundle(&["list", m.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = v["images"].to_string();
    assert!(
        s.contains("registry.k8s.io/etcd:3.5.24-0") && s.contains("registry.k8s.io/pause:3.10\""),
        "{s}"
    );
    assert!(
        !tmp.path().join("kubernetes-v1.34.3.lock").exists(),
        "list must not write a lockfile"
    );
}

#[test]
fn bad_manifest_errors_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest_copy(tmp.path(), "kubernetes-v1.34.3.toml");
    let orig = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        orig.replace("runc = \"1.3.4\"", "runc = \"1.3.4\"\ncontainrd = \"2\""),
    )
    .unwrap();
    let o = kbundle(&["list", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:13:1:", m.display())) && err.contains("containrd"),
        "{err}"
    );
    std::fs::write(&m, orig.replace("runc = \"1.3.4\"", "runc = \"1.3\"")).unwrap();
    let o = kbundle(&["list", m.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:12:8:", m.display())) && err.contains("\"1.3\""),
        "{err}"
    );
}

#[test]
fn manifest_pin_wins_and_a_wrong_pin_fails() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec, "kubernetes-v1.34.3.toml");
    let inst = small_installer(env.tmp.path());
    let flannel = env.up.mirror.root().join(format!(
        "github.com/flannel-io/flannel/releases/download/v{}/kube-flannel.yml",
        spec.flannel
    ));
    let good = kbundle::digest::hash_file(&flannel).unwrap().0;
    let wrong = kbundle::digest::Sha256::of(b"not flannel");
    let base = std::fs::read_to_string(&env.manifest).unwrap();
    let url = "https://github.com/flannel-io/flannel/releases/download/v0.27.3/kube-flannel.yml";
    std::fs::write(&env.manifest, format!("{base}\n[sha256]\n\"{url}\" = \"{wrong}\"\n")).unwrap();
    let o = env.build("cache", "out", &["--installer", inst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&wrong.hex()) && err.contains(&good.hex()) && err.contains("kube-flannel.yml"),
        "{err}"
    );
    std::fs::write(&env.manifest, format!("{base}\n[sha256]\n\"{url}\" = \"{good}\"\n")).unwrap();
    let o = env.build("cache", "out", &["--installer", inst.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let lock = std::fs::read_to_string(env.manifest.with_extension("lock")).unwrap();
    assert!(lock.contains("manifest-pin"), "{lock}");
    // A pin that names no file is an error with its line.
    std::fs::write(
        &env.manifest,
        format!("{base}\n[sha256]\n\"https://example.com/x\" = \"{good}\"\n"),
    )
    .unwrap();
    let o = kbundle(&["list", env.manifest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("matches no file"),
        "{}",
        text(&o)
    );
}

#[test]
fn files_only_bundle_needs_no_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_copy(tmp.path(), "kubernetes-v1.34.3.toml");
    let mirror = support::mirror::Mirror::start(upstream::shared_tree(&UpstreamSpec::v1_34_3().tiny()));
    let inst = small_installer(tmp.path());
    let mut a: Vec<String> = vec![
        "build".into(),
        manifest.display().to_string(),
        "--out".into(),
        tmp.path().join("out").display().to_string(),
        "--cache".into(),
        tmp.path().join("cache").display().to_string(),
        "--installer".into(),
        inst.display().to_string(),
        "--skip-images".into(),
    ];
    a.extend(upstream::mirror_args(&mirror.url()));
    let o = kbundle(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let archive = tmp.path().join("out/kubernetes-v1.34.3.tar.zst");
    let v = kbundle(&["verify", archive.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    let i = kbundle(&["inspect", "--json", archive.to_str().unwrap()]);
    let bj: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(bj["images"].as_array().map(|v| v.len()), Some(0));
}

#[test]
fn etcd_tools_of_another_minor_than_kubeadms_etcd_are_refused_before_any_download() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest_copy(tmp.path(), "kubernetes-v1.34.3.toml");
    let orig = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, orig.replace("etcd = \"3.6.5\"", "etcd = \"3.5.25\"")).unwrap();
    let out = tmp.path().join("out");
    for cmd in ["lock", "build"] {
        let mut args = vec![cmd, m.to_str().unwrap(), "--cache", "/nonexistent/kbundle-cache"];
        if cmd == "build" {
            args.extend(["--out", out.to_str().unwrap()]);
        }
        let o = kbundle(&args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        for want in ["etcd = \"3.5.25\"", "v1.34.3", "3.6.5-0", "etcd = \"3.6.5\""] {
            assert!(err.contains(want), "{cmd} {want}: {err}");
        }
    }
    assert!(!out.exists() && !m.with_extension("lock").exists());
}
