#![allow(dead_code)]
//! Small real container images for tests, built with `umoci` from
//! `busybox-static`, and pushing them to a [`Registry`] under upstream-like names.
//!
//! One OCI layout holds four refs (`org.opencontainers.image.ref.name`):
//!
//! | ref          | what                                                                  |
//! |--------------|-----------------------------------------------------------------------|
//! | `base-amd64` | one layer: busybox + applet links + `/etc/testbed-release`; config `linux/amd64` |
//! | `base-arm64` | same recipe, its own layer (different release file); config `linux/arm64` (the binary is still x86-64: only the metadata is arm64) |
//! | `app-amd64`  | `base-amd64` + a second small layer: shares base-amd64's layer blob    |
//! | `multi`      | an OCI image index over base-amd64 and base-arm64 with `platform` fields |
//!
//! The layout is built once and cached under `CARGO_TARGET_TMPDIR`
//! (`target/tmp/kbundle-image-set-<key>`, key = recipe version + busybox hash),
//! so all test binaries and runs share the same digests until `cargo clean`.
//! Treat it as **read-only**; use [`ImageSet::export_layout`] for a private copy.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::registry::{run, sha256_digest, Registry};

/// Bump when the recipe changes so the cached layout is rebuilt.
const RECIPE_VERSION: &str = "v1";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The cached image layout; digests are `sha256:...`.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// OCI layout dir (`oci-layout`, `index.json`, `blobs/sha256/`). Read-only.
    pub layout: PathBuf,
    /// Manifest digest of `base-amd64`.
    pub base_amd64: String,
    /// Manifest digest of `base-arm64`.
    pub base_arm64: String,
    /// Manifest digest of `app-amd64`.
    pub app_amd64: String,
    /// Index digest of `multi` (children: base-amd64, base-arm64).
    pub multi: String,
    /// The only layer of base-amd64 = the first layer of app-amd64.
    pub base_layer_amd64: String,
    /// The only layer of base-arm64.
    pub base_layer_arm64: String,
    /// The second (extra) layer of app-amd64.
    pub app_layer: String,
}

/// What a ref in the set is, as pushed by [`push_k8s_images`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// The `multi` index (amd64 + arm64).
    Multi,
    /// `app-amd64` (single arch, 2 layers).
    App,
    /// `base-amd64` (single arch, 1 layer).
    Base,
}

impl Fixture {
    /// The ref name in the layout.
    pub fn ref_name(self) -> &'static str {
        match self {
            Fixture::Multi => "multi",
            Fixture::App => "app-amd64",
            Fixture::Base => "base-amd64",
        }
    }

    /// Its top-level digest in `set`.
    pub fn digest(self, set: &ImageSet) -> String {
        set.digest(self.ref_name())
    }
}

impl ImageSet {
    pub const REFS: [&'static str; 4] = ["base-amd64", "base-arm64", "app-amd64", "multi"];

    /// Top-level digest of a ref name (one of [`ImageSet::REFS`]).
    pub fn digest(&self, ref_name: &str) -> String {
        match ref_name {
            "base-amd64" => self.base_amd64.clone(),
            "base-arm64" => self.base_arm64.clone(),
            "app-amd64" => self.app_amd64.clone(),
            "multi" => self.multi.clone(),
            other => panic!("no ref {other:?} in the image set (have {:?})", Self::REFS),
        }
    }

    /// `LAYOUT/blobs/sha256/<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.layout, digest)
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let p = self.blob_path(digest);
        fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// A blob parsed as JSON (manifest, index, config).
    pub fn json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).unwrap_or_else(|e| panic!("blob {digest} is not JSON: {e}"))
    }

    /// Layer digests of a manifest, in order.
    pub fn layers(&self, manifest_digest: &str) -> Vec<String> {
        digests_of(&self.json(manifest_digest)["layers"])
    }

    /// Config digest of a manifest.
    pub fn config_digest(&self, manifest_digest: &str) -> String {
        self.json(manifest_digest)["config"]["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("manifest {manifest_digest} has no config digest"))
            .to_string()
    }

    /// Every blob reachable from `digest` (itself, children of an index,
    /// configs, layers). `arch`: for an index, only children whose
    /// `platform.architecture` is `arch` (the index blob itself is always kept).
    pub fn closure(&self, digest: &str, arch: Option<&str>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.closure_into(digest, arch, &mut out);
        out
    }

    fn closure_into(&self, digest: &str, arch: Option<&str>, out: &mut BTreeSet<String>) {
        out.insert(digest.to_string());
        let doc = self.json(digest);
        if let Some(children) = doc["manifests"].as_array() {
            for child in children {
                let child_arch = child["platform"]["architecture"].as_str();
                if arch.is_none() || child_arch.is_none() || child_arch == arch {
                    self.closure_into(child["digest"].as_str().expect("child digest"), arch, out);
                }
            }
        } else {
            out.insert(doc["config"]["digest"].as_str().expect("config digest").to_string());
            out.extend(digests_of(&doc["layers"]));
        }
    }

    /// Writes a new OCI layout at `dst` (created if missing) with one
    /// `index.json` entry per `(ref name in this set, annotations)` and only the
    /// blobs those entries need. With `arch = Some("amd64")`, an index keeps its
    /// full list of platforms but the other platforms' manifests, configs and
    /// layers are left out, as kbundle stores them. Returns `dst`'s index.json entries.
    pub fn export_layout(&self, dst: &Path, entries: &[(&str, &[(&str, &str)])], arch: Option<&str>) -> Vec<Value> {
        let blobs = dst.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("create {}: {e}", blobs.display()));
        write_file(&dst.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#);
        let mut index_entries = Vec::new();
        for (name, annotations) in entries {
            let digest = self.digest(name);
            for blob in self.closure(&digest, arch) {
                let (from, to) = (self.blob_path(&blob), blob_path(dst, &blob));
                fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
            }
            let bytes = self.blob(&digest);
            let media_type = self.json(&digest)["mediaType"]
                .as_str()
                .unwrap_or(OCI_MANIFEST)
                .to_string();
            let mut entry = json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() });
            if !annotations.is_empty() {
                let map: serde_json::Map<String, Value> = annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect();
                entry["annotations"] = Value::Object(map);
            }
            index_entries.push(entry);
        }
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries });
        write_file(
            &dst.join("index.json"),
            &serde_json::to_vec(&index).expect("serialize index.json"),
        );
        index_entries
    }
}

fn digests_of(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["digest"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `LAYOUT/blobs/<alg>/<hex>` for `alg:hex`.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("bad digest {digest:?}"));
    layout.join("blobs").join(alg).join(hex)
}

fn write_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The image set, built once per process (and cached across processes, see the module docs).
pub fn image_set() -> ImageSet {
    static SET: OnceLock<ImageSet> = OnceLock::new();
    SET.get_or_init(build_or_load).clone()
}

fn cache_parent() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn build_or_load() -> ImageSet {
    let busybox = fs::read("/bin/busybox").expect("read /bin/busybox (install busybox-static)");
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION.as_bytes());
    h.update(&busybox);
    let key = hex::encode(h.finalize());
    let parent = cache_parent();
    fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    let cached = parent.join(format!("kbundle-image-set-{}", &key[..16]));
    if let Some(set) = load(&cached) {
        return set;
    }
    let staging = tempfile::Builder::new()
        .prefix(".kbundle-image-set-build-")
        .tempdir_in(&parent)
        .expect("create staging dir for the image set");
    let layout = staging.path().join("layout");
    build(&layout, staging.path());
    // Atomic publish; if another process won the race, use its copy.
    if fs::rename(&layout, &cached).is_err() {
        if let Some(set) = load(&cached) {
            return set;
        }
        // An invalid directory is in the way: use a private copy for this process.
        let private = staging.keep();
        return load(&private.join("layout")).expect("freshly built image set is valid");
    }
    load(&cached).unwrap_or_else(|| panic!("image set at {} is invalid right after building", cached.display()))
}

/// Reads the set from `layout` if index.json names all refs and their blobs exist.
fn load(layout: &Path) -> Option<ImageSet> {
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).ok()?).ok()?;
    let find = |name: &str| -> Option<String> {
        index["manifests"]
            .as_array()?
            .iter()
            .find(|m| m["annotations"][REF_NAME] == name)
            .and_then(|m| m["digest"].as_str().map(str::to_string))
    };
    let mut set = ImageSet {
        layout: layout.to_path_buf(),
        base_amd64: find("base-amd64")?,
        base_arm64: find("base-arm64")?,
        app_amd64: find("app-amd64")?,
        multi: find("multi")?,
        base_layer_amd64: String::new(),
        base_layer_arm64: String::new(),
        app_layer: String::new(),
    };
    for name in ImageSet::REFS {
        for blob in set.closure(&set.digest(name), None) {
            if !set.blob_path(&blob).is_file() {
                return None;
            }
        }
    }
    let (base_amd, base_arm, app) = (
        set.layers(&set.base_amd64),
        set.layers(&set.base_arm64),
        set.layers(&set.app_amd64),
    );
    if base_amd.len() != 1 || base_arm.len() != 1 || app.len() != 2 || app[0] != base_amd[0] {
        return None;
    }
    set.base_layer_amd64 = base_amd[0].clone();
    set.base_layer_arm64 = base_arm[0].clone();
    set.app_layer = app[1].clone();
    Some(set)
}

/// Builds the layout at `layout` (like testbed/build-image.sh and make-index.py).
fn build(layout: &Path, work: &Path) {
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    let umoci = |args: &[&str]| {
        run(Command::new("umoci").args(args));
    };
    umoci(&["init", "--layout", &layout.display().to_string()]);
    let rootless = !is_root();
    for arch in ["amd64", "arm64"] {
        let tag = image(&format!("base-{arch}"));
        let bundle = work.join(format!("bundle-{arch}"));
        let bundle_s = bundle.display().to_string();
        umoci(&["new", "--image", &tag]);
        let mut unpack = vec!["unpack", "--image", &tag];
        if rootless {
            unpack.push("--rootless");
        }
        unpack.push(&bundle_s);
        umoci(&unpack);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "etc", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap_or_else(|e| panic!("mkdir in {}: {e}", rootfs.display()));
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox into rootfs");
        for applet in ["sh", "ls", "cat", "echo", "sleep", "uname", "id", "hostname", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink applet");
        }
        write_file(
            &rootfs.join("etc/testbed-release"),
            format!("built-for={arch}\n").as_bytes(),
        );
        umoci(&["repack", "--image", &tag, &bundle_s]);
        umoci(&[
            "config",
            "--image",
            &tag,
            &format!("--architecture={arch}"),
            "--os=linux",
            "--config.entrypoint=/bin/sh",
            "--config.env=PATH=/bin",
            "--config.workingdir=/",
            "--config.cmd=-c",
            "--config.cmd=cat /etc/testbed-release; uname -m",
        ]);
        fs::remove_dir_all(&bundle).unwrap_or_else(|e| panic!("remove {}: {e}", bundle.display()));
    }
    // app-amd64 = base-amd64 + one small layer.
    umoci(&["tag", "--image", &image("base-amd64"), "app-amd64"]);
    let extra = work.join("app-release");
    write_file(&extra, b"kbundle test app layer\n");
    umoci(&[
        "insert",
        "--image",
        &image("app-amd64"),
        &extra.display().to_string(),
        "/etc/app-release",
    ]);
    umoci(&["gc", "--layout", &layout.display().to_string()]);
    add_multi_index(layout);
}

/// Adds the `multi` index over base-amd64 and base-arm64 (as make-index.py does).
fn add_multi_index(layout: &Path) {
    let index_path = layout.join("index.json");
    let mut index: Value =
        serde_json::from_slice(&fs::read(&index_path).expect("read index.json")).expect("index.json");
    let entries = index["manifests"].as_array().expect("index.json manifests").clone();
    let children: Vec<Value> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let m = entries
                .iter()
                .find(|m| m["annotations"][REF_NAME] == format!("base-{arch}").as_str())
                .unwrap_or_else(|| panic!("base-{arch} missing from {}", index_path.display()));
            json!({
                "mediaType": m["mediaType"],
                "digest": m["digest"],
                "size": m["size"],
                "platform": { "architecture": arch, "os": "linux" },
            })
        })
        .collect();
    let multi = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children });
    let bytes = serde_json::to_vec(&multi).expect("serialize index");
    let digest = sha256_digest(&bytes);
    write_file(&blob_path(layout, &digest), &bytes);
    index["manifests"].as_array_mut().expect("manifests").push(json!({
        "mediaType": OCI_INDEX,
        "digest": digest,
        "size": bytes.len(),
        "annotations": { REF_NAME: "multi" },
    }));
    write_file(&index_path, &serde_json::to_vec(&index).expect("serialize index.json"));
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// upstream-like names
// ---------------------------------------------------------------------------

/// kubeadm's image list (`kubeadm config images list`) for a Kubernetes
/// version, from the table in shared/reference/kubernetes-artifacts.md.
/// Supports v1.33.x, v1.34.x and v1.35.x; panics otherwise.
pub fn kubeadm_images(k8s: &str) -> Vec<String> {
    let v = k8s.trim_start_matches('v');
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("bad version {k8s:?}")));
    let (major, minor, patch) = (parts.next(), parts.next(), parts.next());
    let (coredns, etcd, pause) = match (major, minor, patch) {
        (Some(1), Some(33), Some(p)) if p <= 5 => ("v1.12.0", "3.5.21-0", "3.10"),
        (Some(1), Some(33), Some(_)) => ("v1.12.0", "3.5.24-0", "3.10"),
        (Some(1), Some(34), Some(p)) if p <= 1 => ("v1.12.1", "3.6.4-0", "3.10.1"),
        (Some(1), Some(34), Some(_)) => ("v1.12.1", "3.6.5-0", "3.10.1"),
        (Some(1), Some(35), Some(_)) => ("v1.13.1", "3.6.6-0", "3.10.1"),
        _ => panic!("kubeadm_images: no image table for {k8s:?}"),
    };
    let mut list: Vec<String> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ]
    .iter()
    .map(|n| format!("registry.k8s.io/{n}:v{v}"))
    .collect();
    list.push(format!("registry.k8s.io/coredns/coredns:{coredns}"));
    list.push(format!("registry.k8s.io/pause:{pause}"));
    list.push(format!("registry.k8s.io/etcd:{etcd}"));
    list
}

/// An upstream reference split for the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRef {
    /// Repository on the local registry: upstream host + path, e.g. `registry.k8s.io/pause`,
    /// `docker.io/library/nginx`.
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl MirrorRef {
    /// Docker-style parse: a first component with `.`/`:` or `localhost` is the host,
    /// otherwise `docker.io` (and `library/` for one-component names).
    pub fn parse(upstream: &str) -> MirrorRef {
        let (name_tag, digest) = match upstream.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (upstream, None),
        };
        let slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[slash..].rfind(':') {
            Some(i) => (&name_tag[..slash + i], Some(name_tag[slash + i + 1..].to_string())),
            None => (name_tag, None),
        };
        let first = name.split('/').next().unwrap_or("");
        let repo = if name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
            name.to_string()
        } else if name.contains('/') {
            format!("docker.io/{name}")
        } else {
            format!("docker.io/library/{name}")
        };
        assert!(
            !repo.contains(':') && repo == repo.to_ascii_lowercase(),
            "{upstream:?}: cannot be a repository path on the mirror ({repo:?})"
        );
        MirrorRef { repo, tag, digest }
    }

    /// The tag pushed to: the upstream tag, else `pinned` (digest-only refs).
    pub fn push_tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("pinned")
    }
}

/// Which fixture stands in for an upstream image: `pause` and `kube-proxy` get
/// the multi-arch index, other `kube-*` images `app-amd64`, the rest (etcd,
/// coredns, ...) `base-amd64`. So app and base share a layer, and the multi
/// index's amd64 child *is* base-amd64 (same manifest digest under other names).
pub fn fixture_for(upstream: &str) -> Fixture {
    let repo = MirrorRef::parse(upstream).repo;
    let name = repo.rsplit('/').next().unwrap_or("");
    match name {
        "pause" | "kube-proxy" => Fixture::Multi,
        n if n.starts_with("kube-") => Fixture::App,
        _ => Fixture::Base,
    }
}

/// Pushes a fixture for each upstream ref to `reg` as `<host>/<upstream repo>:<tag>`
/// (`registry.k8s.io/pause:3.10.1` -> repo `registry.k8s.io/pause`, tag `3.10.1`;
/// a digest-only ref goes to tag `pinned`). `images` empty = [`kubeadm_images`]`(k8s)`.
/// Returns (upstream ref as given, pushed digest) in input order. The pushed
/// digest is the fixture's, not the one in an `@sha256:` ref.
pub fn push_k8s_images(reg: &Registry, k8s: &str, images: &[&str]) -> Vec<(String, String)> {
    let set = image_set();
    let list: Vec<String> = if images.is_empty() {
        kubeadm_images(k8s)
    } else {
        images.iter().map(|s| s.to_string()).collect()
    };
    list.into_iter()
        .map(|upstream| {
            let m = MirrorRef::parse(&upstream);
            let fixture = fixture_for(&upstream);
            let digest = reg.push_layout(&set.layout, fixture.ref_name(), &format!("{}:{}", m.repo, m.push_tag()));
            assert_eq!(
                digest,
                fixture.digest(&set),
                "pushing {upstream} changed the fixture's digest"
            );
            (upstream, digest)
        })
        .collect()
}
