#![allow(dead_code)]
//! One "upstream" for builder tests: the loopback file mirror (dl.k8s.io, github.com) and a
//! real registry holding every image a manifest needs, plus the `--mirror` flags that point
//! kbundle at both. [`BuildEnv`] puts a manifest, its upstream and an installer in a temp
//! dir and runs `kbundle build` against them.

use super::images::push_k8s_images;
use super::mirror::Mirror;
use super::registry::Registry;
use super::upstream::{self, UpstreamSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The kbundle binary under test (examples, which compile this module too, have no
/// `CARGO_BIN_EXE_*` and look it up on PATH).
pub const KBUNDLE: &str = match option_env!("CARGO_BIN_EXE_kbundle") {
    Some(p) => p,
    None => "kbundle",
};

/// `kbundle ARGS` with fixed archive timestamps, no registry credentials and stdin closed.
pub fn kbundle_command(args: &[String]) -> Command {
    let mut c = Command::new(KBUNDLE);
    c.args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("REGISTRY_AUTH_FILE", "/nonexistent/kbundle-test-auth.json")
        .stdin(Stdio::null());
    c
}

/// Runs [`kbundle_command`] to its end.
pub fn run_kbundle(args: &[String]) -> Output {
    kbundle_command(args).output().expect("run kbundle")
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every name in `d`, dot files included, sorted; none if `d` cannot be read.
pub fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Polls `what` every few milliseconds until it returns something; panics after `limit`.
pub fn poll<T>(limit: Duration, why: &str, mut what: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = what() {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up after {limit:?} waiting for {why}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A shell script standing in for the installer (mode 0755): small, so packing is quick.
pub fn small_installer(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("installer");
    std::fs::write(&p, "#!/bin/sh\necho test installer\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A temp dir holding a copy of the shipped v1.34.3 manifest (in `m/`), its upstream and a
/// small installer; builds put their cache and output in it too.
pub struct BuildEnv {
    pub tmp: tempfile::TempDir,
    pub up: Upstream,
    pub manifest: PathBuf,
    pub installer: PathBuf,
}

impl BuildEnv {
    pub fn new(spec: &UpstreamSpec) -> BuildEnv {
        let tmp = tempfile::tempdir().unwrap();
        let mdir = tmp.path().join("m");
        std::fs::create_dir_all(&mdir).unwrap();
        let manifest = mdir.join("kubernetes-v1.34.3.toml");
        upstream::pgp::copy_manifest("kubernetes-v1.34.3.toml", &manifest).unwrap();
        let up = Upstream::start(spec, &manifest);
        let installer = small_installer(tmp.path());
        BuildEnv {
            tmp,
            up,
            manifest,
            installer,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// `build` arguments with a cache and an output dir under the temp dir, fetching through
    /// `mirrors`, plus `extra`.
    pub fn build_args(&self, cache: &str, out: &str, mirrors: Vec<String>, extra: &[&str]) -> Vec<String> {
        let mut a = strings(&["build", &self.manifest.display().to_string()]);
        a.extend(strings(&["--out", &self.path(out).display().to_string()]));
        a.extend(strings(&["--cache", &self.path(cache).display().to_string()]));
        a.extend(strings(&["--installer", &self.installer.display().to_string()]));
        a.extend(mirrors);
        a.extend(strings(extra));
        a
    }

    /// `kbundle build` straight from the upstream.
    pub fn build(&self, cache: &str, out: &str, extra: &[&str]) -> Output {
        run_kbundle(&self.build_args(cache, out, self.up.mirror_args(), extra))
    }

    pub fn archive(&self, out: &str, name: &str) -> Vec<u8> {
        std::fs::read(self.path(out).join(name)).unwrap()
    }
}

pub struct Upstream {
    pub mirror: Mirror,
    pub registry: Registry,
    /// (upstream reference, digest pushed)
    pub images: Vec<(String, String)>,
}

/// Every image reference a bundle of `manifest` holds, from the library's own catalog.
pub fn manifest_image_refs(manifest: &Path) -> Vec<String> {
    let m = kbundle::manifest::Manifest::load(manifest).expect("manifest parses");
    kbundle::catalog::images::manifest_images(&m)
        .expect("known Kubernetes version")
        .into_iter()
        .map(|i| i.reference.to_string())
        .collect()
}

impl Upstream {
    /// Serves `root` (an upstream tree) and a registry with the images of `manifest`.
    pub fn start_at(root: &Path, manifest: &Path) -> Upstream {
        Self::start_with(root, manifest, Registry::start())
    }

    /// Like [`Upstream::start_at`], with a registry of the caller's (e.g. one with auth).
    pub fn start_with(root: &Path, manifest: &Path, registry: Registry) -> Upstream {
        let mirror = Mirror::start(root);
        let refs = manifest_image_refs(manifest);
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let k8s = kbundle::manifest::Manifest::load(manifest).unwrap().kubernetes.with_v();
        let images = push_k8s_images(&registry, &k8s, &refs);
        Upstream {
            mirror,
            registry,
            images,
        }
    }

    pub fn start(spec: &UpstreamSpec, manifest: &Path) -> Upstream {
        Self::start_at(&upstream::shared_tree(spec), manifest)
    }

    /// `--mirror` flags for files and for every registry the images come from.
    pub fn mirror_args(&self) -> Vec<String> {
        self.mirror_args_via(&self.mirror.url(), &self.registry.url())
    }

    /// Like [`Upstream::mirror_args`], with files fetched from `files_url` and images from
    /// `registry_url` (e.g. a [`super::drip::DripProxy`] in front of either).
    pub fn mirror_args_via(&self, files_url: &str, registry_url: &str) -> Vec<String> {
        let mut v = upstream::mirror_args(files_url);
        let mut hosts: Vec<String> = self
            .images
            .iter()
            .filter_map(|(r, _)| r.split('/').next().map(str::to_string))
            .collect();
        hosts.sort();
        hosts.dedup();
        for h in hosts {
            v.push("--mirror".into());
            v.push(format!("{h}={registry_url}/{h}"));
        }
        v
    }
}
