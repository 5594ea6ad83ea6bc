//! A loopback upstream for upgrade bundles over a chain of Kubernetes versions, each
//! version's kubeadm and kubectl replaced by chosen stand-ins (so a node that switches to a
//! hop's binaries still talks to the modelled cluster), and the kbundle runner helpers the
//! upgrade tests share.

use super::harness::Upstream;
use super::images::push_k8s_images;
use super::upstream::{self, UpstreamSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");

/// Status, stdout and stderr, for assertion messages.
pub use super::bundles::text;

/// `kbundle ARGS` with a fixed SOURCE_DATE_EPOCH.
pub fn kb(args: &[&str]) -> Output {
    Command::new(KBUNDLE)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap()
}

/// The upstream and registry of a version chain, and where builds go.
pub struct ChainEnv {
    pub tmp: tempfile::TempDir,
    pub up: Upstream,
    /// The manifest of the chain's last version.
    pub manifest: PathBuf,
    pub installer: PathBuf,
}

/// Links every file under `from` into `to`, except those `keep` names (paths below `from`).
fn link_tree(from: &Path, to: &Path, skip: &[&str], rel: &Path) {
    std::fs::create_dir_all(to.join(rel)).unwrap();
    for e in std::fs::read_dir(from.join(rel)).unwrap().flatten() {
        let r = rel.join(e.file_name());
        if skip.iter().any(|s| Path::new(s) == r) {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            link_tree(from, to, skip, &r);
        } else {
            std::os::unix::fs::symlink(from.join(&r), to.join(&r)).unwrap();
        }
    }
}

/// `chain` (e.g. `["v1.32.11", "v1.33.7", "v1.34.3"]`): the cluster's version, then every
/// hop. The last version from the shared real tree, the others tiny (each with its etcd
/// release, so a hop of etcd 3.5 finds its 3.5.x tools beside the real tree's 3.6.x); every
/// version's kubeadm and kubectl are `stand_in(bin, version)` (with their upstream
/// `.sha256`). Images of every hop's version are in the registry (not the cluster's: an
/// upgrade bundle does not carry them).
pub fn chain_env(chain: &[&str], stand_in: &dyn Fn(&str, &str) -> Vec<u8>) -> ChainEnv {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let last = chain.last().copied().unwrap_or("v1.34.3");
    let real = upstream::shared_tree(&UpstreamSpec::v1_34_3());
    let bin_dir = |v: &str| format!("dl.k8s.io/release/{v}/bin/linux/amd64");
    let mut skip: Vec<String> = Vec::new();
    for b in ["kubeadm", "kubectl"] {
        skip.push(format!("{}/{b}", bin_dir(last)));
        skip.push(format!("{}/{b}.sha256", bin_dir(last)));
    }
    let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
    link_tree(&real, &root, &skip, Path::new(""));
    for v in &chain[..chain.len() - 1] {
        let n = v.trim_start_matches('v');
        let minor: u32 = n.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap();
        let spec = UpstreamSpec {
            kubernetes: n.into(),
            crictl: format!("1.{minor}.0"),
            ..UpstreamSpec::v1_33_7().tiny()
        };
        let t = tmp.path().join(format!("tiny-{v}"));
        upstream::build_tree(&t, &spec).unwrap();
        std::os::unix::fs::symlink(
            t.join("dl.k8s.io/release").join(v),
            root.join("dl.k8s.io/release").join(v),
        )
        .unwrap();
        let etcd = format!("github.com/etcd-io/etcd/releases/download/v{}", spec.etcd);
        if !root.join(&etcd).exists() {
            std::os::unix::fs::symlink(t.join(&etcd), root.join(&etcd)).unwrap();
        }
    }
    for v in chain {
        for b in ["kubeadm", "kubectl"] {
            let f = root.join(bin_dir(v)).join(b);
            let _ = std::fs::remove_file(&f);
            std::fs::create_dir_all(f.parent().unwrap()).ok();
            let _ = std::fs::remove_file(f.with_extension("sha256"));
            std::fs::write(&f, stand_in(b, v)).unwrap();
            let digest = kbundle::digest::hash_file(&f).unwrap().0;
            std::fs::write(f.with_extension("sha256"), digest.hex()).unwrap();
        }
    }
    let mdir = tmp.path().join("manifests");
    std::fs::create_dir_all(&mdir).unwrap();
    for v in chain {
        let m = format!("kubernetes-{v}.toml");
        upstream::pgp::copy_manifest(&m, &mdir.join(&m)).unwrap();
    }
    let manifest = mdir.join(format!("kubernetes-{last}.toml"));
    let up = Upstream::start_at(&root, &manifest);
    for v in &chain[1..chain.len() - 1] {
        push_k8s_images(&up.registry, v, &[]);
    }
    let installer = tmp.path().join("installer");
    std::fs::write(&installer, "#!/bin/sh\necho installer\n").unwrap();
    ChainEnv {
        tmp,
        up,
        manifest,
        installer,
    }
}

impl ChainEnv {
    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// `kbundle build` of the last version into `out`, with `extra` arguments.
    pub fn build(&self, out: &str, extra: &[&str]) -> Output {
        let mut a: Vec<String> = vec![
            "build".into(),
            self.manifest.display().to_string(),
            "--out".into(),
            self.path(out).display().to_string(),
            "--cache".into(),
            self.path("cache").display().to_string(),
            "--installer".into(),
            self.installer.display().to_string(),
            "--quiet".into(),
        ];
        a.extend(self.up.mirror_args());
        a.extend(extra.iter().map(|s| s.to_string()));
        kb(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// `kbundle install --phase prepare` of `archive` into the node root `root` as `node` (the
/// OS and command checks skipped: this machine is not Rocky).
pub fn prepare_root(archive: &Path, cfg: &Path, root: &Path, node: &str) {
    let (a, c, r) = (archive.to_str().unwrap(), cfg.to_str().unwrap(), root.to_str().unwrap());
    let o = kb(&[
        "install",
        "--bundle",
        a,
        "--config",
        c,
        "--root",
        r,
        "--node",
        node,
        "--phase",
        "prepare",
        "--skip-preflight",
        "os,commands",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}
