//! Images end to end: a real registry on loopback (Debian's docker-registry) filled with
//! umoci-built images, kbundle pulling them into the bundle's OCI layout, and skopeo and
//! Debian's containerd reading that layout.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::containerd::{tar_layout, Containerd};
use support::harness::Upstream;
use support::images::image_set;
use support::registry::Registry;
use support::upstream::{self, UpstreamSpec};

const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Env {
    tmp: tempfile::TempDir,
    up: Upstream,
    manifest: PathBuf,
    installer: PathBuf,
}

/// A v1.34.3 manifest (tiny files) with extra lines appended, and its upstream.
fn env_with(extra_toml: &str, arches: &[&str], registry: Option<Registry>) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kubernetes-v1.34.3.toml"))
        .unwrap();
    let arch_list = arches.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let src = src.replace("arches = [\"amd64\"]", &format!("arches = [{arch_list}]"));
    let src = src.replace("extra = []", extra_toml) + &upstream::pgp::trust_table(&upstream::pgp::test_signer_public());
    let manifest = tmp.path().join("kubernetes-v1.34.3.toml");
    std::fs::write(&manifest, src).unwrap();
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(arches);
    let root = upstream::shared_tree(&spec);
    let up = match registry {
        Some(r) => Upstream::start_with(&root, &manifest, r),
        None => Upstream::start_at(&root, &manifest),
    };
    let installer = tmp.path().join("installer");
    std::fs::write(&installer, "#!/bin/sh\necho installer\n").unwrap();
    Env {
        tmp,
        up,
        manifest,
        installer,
    }
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn kbundle(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut c = Command::new(KBUNDLE);
        c.args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("REGISTRY_AUTH_FILE", self.path("no-auth.json"));
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run kbundle")
    }

    fn build_args(&self, out: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "build".into(),
            self.manifest.display().to_string(),
            "--out".into(),
            self.path(out).display().to_string(),
            "--cache".into(),
            self.path("cache").display().to_string(),
            "--installer".into(),
            self.installer.display().to_string(),
        ];
        a.extend(self.up.mirror_args());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn build(&self, out: &str, extra: &[&str]) -> Output {
        let a = self.build_args(out, extra);
        self.kbundle(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    }

    /// Builds and unpacks; returns the bundle directory.
    fn build_unpacked(&self) -> PathBuf {
        let o = self.build("out", &[]);
        assert!(o.status.success(), "{}", text(&o));
        let archive = self.path("out/kubernetes-v1.34.3.tar.zst");
        let u = self.kbundle(
            &["unpack", archive.to_str().unwrap(), self.path("un").to_str().unwrap()],
            &[],
        );
        assert!(u.status.success(), "{}", text(&u));
        self.path("un/kubernetes-v1.34.3")
    }
}

fn layout_blobs(bundle: &Path) -> BTreeSet<String> {
    std::fs::read_dir(bundle.join("images/blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

fn index_entries(bundle: &Path) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("images/index.json")).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn layout_is_read_by_skopeo_and_imported_by_containerd_under_upstream_names() {
    let env = env_with("extra = []", &["amd64"], None);
    let dir = env.build_unpacked();
    let entries = index_entries(&dir);
    assert_eq!(entries.len(), env.up.images.len());
    for (upstream, digest) in &env.up.images {
        assert!(
            entries.contains(&(upstream.clone(), digest.clone())),
            "{upstream} {digest} not in index.json: {entries:?}"
        );
        // skopeo reads each image from the layout by its full upstream name.
        let o = Command::new("skopeo")
            .args(["inspect", &format!("oci:{}:{upstream}", dir.join("images").display())])
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo inspect {upstream}: {}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Architecture"], "amd64");
    }
    // containerd imports the layout and lists every image with the upstream digest.
    let ctd = Containerd::start();
    let tar = env.path("layout.tar");
    tar_layout(&dir.join("images"), &tar);
    let o = ctd.import("k8s.io", &tar);
    assert!(o.status.success(), "{}", text(&o));
    let listed = ctd.images("k8s.io");
    for (upstream, digest) in &env.up.images {
        assert!(
            listed.contains(&(upstream.clone(), digest.clone())),
            "containerd lacks {upstream}@{digest}: {listed:?}"
        );
    }
    // Every blob is a verified bundle entry.
    let v = env.kbundle(&["verify", dir.to_str().unwrap()], &[]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn shared_layers_are_stored_once_and_only_target_platforms() {
    let env = env_with("extra = []", &["amd64"], None);
    let dir = env.build_unpacked();
    let set = image_set();
    let mut want = BTreeSet::new();
    for (_, digest) in &env.up.images {
        want.extend(set.closure(digest, Some("amd64")));
    }
    let have = layout_blobs(&dir);
    assert_eq!(
        have, want,
        "the layout must hold exactly the amd64 closure of every image, each blob once"
    );
    assert!(!have.contains(&set.base_layer_arm64) && !have.contains(&set.base_arm64));
    // Ten images, but only a handful of distinct blobs.
    assert!(have.len() <= 8, "{} blobs", have.len());
}

#[test]
fn both_arches_keep_upstream_platform_digests() {
    let env = env_with("extra = []", &["amd64", "arm64"], None);
    let dir = env.build_unpacked();
    let set = image_set();
    let have = layout_blobs(&dir);
    assert!(have.contains(&set.base_arm64) && have.contains(&set.base_layer_arm64) && have.contains(&set.multi));
    let bj: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap();
    let pause = bj["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ref"] == "registry.k8s.io/pause:3.10.1")
        .unwrap()
        .clone();
    assert_eq!(pause["digest"], set.multi);
    let plats: Vec<(&str, &str)> = pause["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["platform"].as_str().unwrap(), p["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(
        plats,
        [
            ("linux/amd64", set.base_amd64.as_str()),
            ("linux/arm64", set.base_arm64.as_str())
        ]
    );
}

#[test]
fn tag_and_digest_pinned_extra_images() {
    let set = image_set();
    let extra = format!(
        "extra = [\"busybox:1.37\", \"quay.io/pinned/pause@{}\", \"ghcr.io/pinned/both:v1@{}\"]",
        set.multi, set.base_amd64
    );
    let env = env_with(&extra, &["amd64"], None);
    let dir = env.build_unpacked();
    let entries = index_entries(&dir);
    assert!(
        entries.contains(&("docker.io/library/busybox:1.37".into(), set.base_amd64.clone())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&(format!("quay.io/pinned/pause@{}", set.multi), set.multi.clone())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&(
            format!("ghcr.io/pinned/both:v1@{}", set.base_amd64),
            set.base_amd64.clone()
        )),
        "{entries:?}"
    );
}

#[test]
fn locked_build_refuses_a_moved_tag_naming_image_and_digests() {
    let env = env_with("extra = []", &["amd64"], None);
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut lock = a(&[
        "lock",
        env.manifest.to_str().unwrap(),
        "--cache",
        env.path("cache").to_str().unwrap(),
    ]);
    lock.extend(env.up.mirror_args());
    let o = env.kbundle(&lock.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let lockfile = std::fs::read_to_string(env.manifest.with_extension("lock")).unwrap();
    let set = image_set();
    assert!(lockfile.contains(&format!("digest = \"{}\"", set.multi)), "{lockfile}");
    // Upstream re-tags coredns to another image.
    let coredns = "registry.k8s.io/coredns/coredns:v1.12.1";
    let old = env.up.images.iter().find(|(r, _)| r == coredns).unwrap().1.clone();
    let new = env
        .up
        .registry
        .push_layout(&set.layout, "app-amd64", "registry.k8s.io/coredns/coredns:v1.12.1");
    assert_ne!(old, new);
    let o = env.build("out", &["--locked"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(coredns) && err.contains(&old[7..]) && err.contains(&new[7..]),
        "{err}"
    );
    assert!(!env.path("out/kubernetes-v1.34.3.tar.zst").exists());
    // Without --locked the lock still pins the old digest: the bundle keeps the locked image.
    let o = env.build("out", &[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn corrupt_blob_in_registry_fails_naming_blob_and_digests() {
    let env = env_with("extra = []", &["amd64"], None);
    let set = image_set();
    // Damage the app layer as stored by the registry.
    let hex = &set.app_layer[7..];
    let data = env
        .up
        .registry
        .storage_dir()
        .join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    std::fs::create_dir_all(env.path("out")).unwrap();
    let o = env.build("out", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("digest mismatch") && err.contains(hex), "{err}");
    assert!(
        std::fs::read_dir(env.path("out")).unwrap().next().is_none(),
        "output left behind"
    );
    assert!(
        !env.path(&format!("cache/blobs/sha256/{hex}")).exists(),
        "bad blob entered the cache"
    );
    assert!(
        std::fs::read_dir(env.path("cache/tmp")).unwrap().next().is_none(),
        "temp files left behind"
    );
}

#[test]
fn unknown_tag_names_the_reference_and_registry_answer() {
    // The registry holds the manifest's images; then the manifest asks for one more.
    let env = env_with("extra = []", &["amd64"], None);
    let src = std::fs::read_to_string(&env.manifest).unwrap();
    let src = src.replace("extra = []", "extra = [\"registry.k8s.io/does-not/exist:v0.0.1\"]");
    std::fs::write(&env.manifest, src).unwrap();
    let o = env.build("out", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("registry.k8s.io/does-not/exist:v0.0.1") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn warm_cache_pulls_no_blob_again() {
    let env = env_with("extra = []", &["amd64"], None);
    let o = env.build("out1", &[]);
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = env
        .up
        .registry
        .requests_matching("GET", "/v2/")
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert!(before > 0);
    let o = env.build("out2", &[]);
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = env
        .up
        .registry
        .requests_matching("GET", "/v2/")
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(before, after, "a warm build fetched blobs again");
    assert_eq!(
        std::fs::read(env.path("out1/kubernetes-v1.34.3.tar.zst")).unwrap(),
        std::fs::read(env.path("out2/kubernetes-v1.34.3.tar.zst")).unwrap()
    );
}

#[test]
fn basic_auth_from_registry_auth_file() {
    let reg = Registry::start_with_basic_auth("ci", "s3cret")
        .expect("no bcrypt generator for the registry htpasswd (htpasswd, python3 bcrypt or perl crypt): install apache2-utils, as .ci/run does");
    let env = env_with("extra = []", &["amd64"], Some(reg));
    // Without credentials: a clear authentication error.
    let o = env.build("out", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        err.contains("auth") || err.contains("401") || err.contains("unauthorized"),
        "{err}"
    );
    // With REGISTRY_AUTH_FILE: it works.
    let auth = env.path("auth.json");
    let b64 = support::registry::base64(b"ci:s3cret");
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{b64}\"}}}}}}",
            env.up.registry.host()
        ),
    )
    .unwrap();
    let a = env.build_args("out", &[]);
    let o = env.kbundle(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn registry_5xx_is_retried_then_named() {
    let env = env_with("extra = []", &["amd64"], None);
    // A "registry" that answers 500 to everything: the loopback file mirror with faults.
    let bad = support::mirror::Mirror::start(env.path("empty"));
    for (r, _) in &env.up.images {
        if let Some(rest) = r.strip_prefix("registry.k8s.io/") {
            let (repo, tag) = rest.rsplit_once(':').unwrap();
            bad.set_fault(
                &format!("/v2/broken/registry.k8s.io/{repo}/manifests/{tag}"),
                support::mirror::Fault::Fail500Always,
            );
        }
    }
    let mut a = env.build_args("out", &[]);
    a.push("--mirror".into());
    a.push(format!("registry.k8s.io={}/broken/registry.k8s.io", bad.url()));
    // Every registry.k8s.io manifest answers 500; the lock does not exist yet, so it asks.
    let o = env.kbundle(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("registry.k8s.io/") && err.contains("500") && err.contains("5 attempt"),
        "{err}"
    );
    let tries = bad.requests().iter().filter(|r| r.path.contains("/manifests/")).count();
    assert!(tries >= 5, "not retried: {:?}", bad.requests());
}
