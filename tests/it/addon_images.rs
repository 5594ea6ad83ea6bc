//! Add-on images come from the add-on manifests a build downloads (the catalog table only
//! warns), and the opt-in cross-check of kubeadm's image list against the bundle's kubeadm.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::addons::{
    flannel_manifest_with, kubeadm_stand_in, metrics_server_manifest_with, private_tree, serve_flannel_manifest,
    serve_kubeadm, serve_metrics_server_manifest,
};
use support::harness::{kbundle_command, run_kbundle, small_installer, stderr, strings, Upstream};
use support::images::{image_set, kubeadm_images, push_k8s_images};
use support::registry::{output_text as text, Registry};
use support::upstream::{self, UpstreamSpec};

const CATALOG_CNI: &str = "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1";
const CATALOG_FLANNEL: &str = "ghcr.io/flannel-io/flannel:v0.27.3";
const CATALOG_METRICS: &str = "registry.k8s.io/metrics-server/metrics-server:v0.8.0";
const MANIFEST_CNI: &str = "docker.io/flannel/flannel-cni-plugin:v1.8.0-flannel1";
const MANIFEST_FLANNEL: &str = "docker.io/flannel/flannel:v0.27.3";

/// A private upstream tree, the shipped v1.34.3 manifest beside its lock, an installer.
struct Site {
    tmp: tempfile::TempDir,
    spec: UpstreamSpec,
    root: PathBuf,
    manifest: PathBuf,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let spec = UpstreamSpec::v1_34_3().tiny();
        let root = private_tree(tmp.path(), &spec);
        std::fs::create_dir_all(tmp.path().join("m")).unwrap();
        let manifest = tmp.path().join("m/kubernetes-v1.34.3.toml");
        upstream::pgp::copy_manifest("kubernetes-v1.34.3.toml", &manifest).unwrap();
        Site {
            tmp,
            spec,
            root,
            manifest,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn build_args(&self, mirrors: &[String], out: &str, extra: &[&str]) -> Vec<String> {
        let inst = small_installer(self.tmp.path());
        let mut a = strings(&["build", &self.manifest.display().to_string()]);
        a.extend(strings(&["--out", &self.path(out).display().to_string()]));
        a.extend(strings(&["--cache", &self.path("cache").display().to_string()]));
        a.extend(strings(&["--installer", &inst.display().to_string()]));
        a.extend(mirrors.iter().cloned());
        a.extend(strings(extra));
        a
    }
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Every image reference of a bundle.json and the digest it names.
fn bundle_images(bj: &serde_json::Value) -> BTreeSet<(String, String)> {
    let images = bj["images"].as_array().expect("images");
    let pair = |i: &serde_json::Value| (i["ref"].as_str().unwrap().into(), i["digest"].as_str().unwrap().into());
    images.iter().map(pair).collect()
}

/// (containerd name, digest) of every entry of an unpacked bundle's OCI layout.
fn layout_images(dir: &Path) -> BTreeSet<(String, String)> {
    let raw = std::fs::read(dir.join("images/index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let name = |m: &serde_json::Value| {
        m["annotations"]["io.containerd.image.name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let entries = v["manifests"].as_array().unwrap().iter();
    entries
        .map(|m| (name(m), m["digest"].as_str().unwrap().into()))
        .collect()
}

/// A site whose add-on manifests name other images than the catalog: flannel's from
/// docker.io with another CNI plugin tag, metrics-server by tag and digest (with its tag
/// then moved to another image, so only a build that honours the digest gets it right).
struct Differing {
    site: Site,
    _up: Upstream,
    mirrors: Vec<String>,
    metrics: String,
    /// (reference, digest) of the images the manifests name.
    pushed: Vec<(String, String)>,
}

fn differing_site() -> Differing {
    let site = Site::new();
    let set = image_set();
    let metrics = format!("{CATALOG_METRICS}@{}", set.base_amd64);
    let flannel = flannel_manifest_with(&site.spec, MANIFEST_CNI, MANIFEST_FLANNEL);
    serve_flannel_manifest(&site.root, &site.spec, &flannel);
    let components = metrics_server_manifest_with(&site.spec, &metrics);
    serve_metrics_server_manifest(&site.root, &site.spec, &components);
    let up = Upstream::start_with(&site.root, &site.manifest, Registry::start());
    let pushed = push_k8s_images(&up.registry, "v1.34.3", &[MANIFEST_CNI, MANIFEST_FLANNEL, &metrics]);
    up.registry.push_layout(&set.layout, "app-amd64", CATALOG_METRICS);
    let mut mirrors = up.mirror_args();
    let docker = format!("docker.io={}/docker.io", up.registry.url());
    mirrors.extend(strings(&["--mirror", &docker]));
    Differing {
        site,
        _up: up,
        mirrors,
        metrics,
        pushed,
    }
}

impl Differing {
    fn build(&self, out: &str, extra: &[&str]) -> Output {
        run_kbundle(&self.site.build_args(&self.mirrors, out, extra))
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.site.manifest.with_extension("lock")).unwrap()
    }
}

/// Each pair (catalog's, manifest's) is named together on one warning line.
fn assert_warned_both(o: &Output, pairs: &[(&str, &str)]) {
    let err = stderr(o);
    for (catalog, manifest) in pairs {
        let both = |l: &&str| l.starts_with("warning:") && l.contains(catalog) && l.contains(manifest);
        assert!(
            err.lines().any(|l| both(&l)),
            "no warning naming {catalog} and {manifest}:\n{err}"
        );
    }
}

/// bundle.json and the OCI layout of the built archive hold kubeadm's images and exactly
/// the images the add-on manifests name, the digest-pinned one at its digest.
fn assert_bundle_holds_the_manifests_images(d: &Differing, out: &str) {
    let mut want: BTreeSet<String> = kubeadm_images("v1.34.3").into_iter().collect();
    want.extend(d.pushed.iter().map(|(r, _)| r.clone()));
    let archive = d.site.path(&format!("{out}/kubernetes-v1.34.3.tar.zst"));
    let archive = archive.to_str().unwrap();
    let bj = json_of(&run_kbundle(&strings(&["inspect", "--json", archive])));
    let images = bundle_images(&bj);
    assert_eq!(images.iter().map(|(r, _)| r.clone()).collect::<BTreeSet<_>>(), want);
    assert!(
        images.contains(&(d.metrics.clone(), image_set().base_amd64)),
        "{images:?}"
    );
    let hop = bj["hops"][0]["images"].as_array().unwrap();
    let hop: BTreeSet<&str> = hop.iter().filter_map(|v| v.as_str()).collect();
    assert!(
        hop.contains(MANIFEST_CNI) && hop.contains(d.metrics.as_str()),
        "{hop:?}"
    );
    let un = d.site.path(&format!("{out}-unpacked"));
    let u = run_kbundle(&strings(&["unpack", archive, un.to_str().unwrap()]));
    assert!(u.status.success(), "{}", text(&u));
    assert_eq!(layout_images(&un.join("kubernetes-v1.34.3")), images);
}

#[test]
fn the_add_on_manifests_images_are_bundled_and_the_catalog_only_warns() {
    let d = differing_site();
    let o = d.build("out", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let metrics = d.metrics.as_str();
    assert_warned_both(
        &o,
        &[
            (CATALOG_CNI, MANIFEST_CNI),
            (CATALOG_FLANNEL, MANIFEST_FLANNEL),
            (CATALOG_METRICS, metrics),
        ],
    );
    assert_bundle_holds_the_manifests_images(&d, "out");
    let lock = d.lock();
    assert!(lock.contains(MANIFEST_CNI) && !lock.contains(CATALOG_CNI), "{lock}");
    // The lock holds exactly these images: --locked builds from it.
    let o = d.build("out2", &["--locked"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_lock_missing_an_add_on_image_or_an_add_on_manifest_republished_is_stale() {
    let d = differing_site();
    assert!(d.build("out", &[]).status.success());
    let lock = d.lock();
    // Drop the CNI plugin's entry: --locked names the image and where it comes from; a
    // plain build locks again, to the same text.
    let (head, blocks) = lock.split_once("[[image]]").unwrap();
    let kept: Vec<&str> = blocks
        .split("[[image]]")
        .filter(|b| !b.contains(MANIFEST_CNI))
        .collect();
    let lock_path = d.site.manifest.with_extension("lock");
    std::fs::write(&lock_path, format!("{head}[[image]]{}", kept.join("[[image]]"))).unwrap();
    let o = d.build("out-stale", &["--locked"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let want = format!("image {MANIFEST_CNI} (named by the flannel manifest): not in the lockfile");
    assert!(stderr(&o).contains(&want), "{}", text(&o));
    let o = d.build("out-relock", &[]);
    assert!(
        o.status.success() && stderr(&o).contains("wrote lockfile"),
        "{}",
        text(&o)
    );
    assert_eq!(d.lock(), lock);

    // flannel republishes its manifest with another image: --locked says the file changed
    // and that the images follow from it.
    let other_cni = "docker.io/flannel/flannel-cni-plugin:v1.9.0-flannel1";
    let newer = flannel_manifest_with(&d.site.spec, other_cni, MANIFEST_FLANNEL);
    serve_flannel_manifest(&d.site.root, &d.site.spec, &newer);
    let o = d.build("out3", &["--locked"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    let named = err.contains("kube-flannel.yml") && err.contains("add-on images are read from this file");
    assert!(named && err.contains("kbundle lock"), "{err}");
    assert!(!d.site.path("out3/kubernetes-v1.34.3.tar.zst").exists());
}

/// Files-only builds (no registry needed) of the site with `script` as kubeadm.
fn kubeadm_build(
    site: &Site,
    mirror: &support::mirror::Mirror,
    out: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mirrors = upstream::mirror_args(&mirror.url());
    let mut args = site.build_args(&mirrors, out, &["--skip-images"]);
    args.extend(strings(extra));
    let mut cmd = kbundle_command(&args);
    cmd.envs(env.iter().copied());
    cmd.output().expect("run kbundle")
}

fn kubeadm_warnings(o: &Output) -> Vec<String> {
    let err = stderr(o);
    err.lines()
        .filter(|l| l.starts_with("warning:") && l.contains("config images list"))
        .map(str::to_string)
        .collect()
}

#[test]
fn kubeadm_image_list_cross_check_is_opt_in_and_warns_naming_both_refs() {
    let site = Site::new();
    let log = site.path("kubeadm.log");
    let agree = kubeadm_images("v1.34.3");
    serve_kubeadm(&site.root, &site.spec, "amd64", &kubeadm_stand_in(&log, &agree));
    let mirror = support::mirror::Mirror::start(&site.root);

    // Off by default: the downloaded kubeadm is not run.
    let o = kubeadm_build(&site, &mirror, "out0", &[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!log.exists(), "kubeadm ran without --check-kubeadm-images");

    // Agreement: it runs, with the exact version, and nothing is said.
    let o = kubeadm_build(&site, &mirror, "out1", &["--check-kubeadm-images"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let ran = std::fs::read_to_string(&log).expect("kubeadm ran");
    assert_eq!(ran.trim(), "config images list --kubernetes-version v1.34.3");
    assert!(kubeadm_warnings(&o).is_empty(), "{}", text(&o));

    // kubeadm names another etcd: a warning names both; the bundle still builds.
    let other: Vec<String> = agree
        .iter()
        .map(|r| r.replace("etcd:3.6.5-0", "etcd:3.6.6-0"))
        .collect();
    serve_kubeadm(&site.root, &site.spec, "amd64", &kubeadm_stand_in(&log, &other));
    std::fs::remove_file(site.manifest.with_extension("lock")).unwrap();
    let o = kubeadm_build(&site, &mirror, "out2", &[], &[("KBUNDLE_CHECK_KUBEADM_IMAGES", "1")]);
    assert!(o.status.success(), "{}", text(&o));
    let w = kubeadm_warnings(&o);
    assert_eq!(w.len(), 1, "{}", text(&o));
    assert!(
        w[0].contains("registry.k8s.io/etcd:3.6.6-0") && w[0].contains("registry.k8s.io/etcd:3.6.5-0"),
        "{w:?}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
}
