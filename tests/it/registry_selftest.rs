//! Self-test of the registry/image/containerd test support (tests/it/support):
//! a real docker-registry, umoci-built images, skopeo, and containerd 1.6 on
//! loopback. Also pins down how `ctr images import` names images and treats
//! partial multi-platform indexes (see tests/it/support/containerd.rs docs).

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;
use support::containerd::{mounts_under, tar_layout, Containerd};
use support::images::{
    fixture_for, image_set, kubeadm_images, push_k8s_images, Fixture, ImageSet, MirrorRef, OCI_INDEX, REF_NAME,
};
use support::registry::{pid_alive, pids_with_cmdline_containing, sha256_digest, Registry};

const IMAGE_NAME: &str = "io.containerd.image.name";

fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    eprintln!("[timing] {label}: {:.2?}", t.elapsed());
    v
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tar_of(layout: &Path) -> std::path::PathBuf {
    let out = layout.with_extension("tar");
    tar_layout(layout, &out);
    out
}

#[test]
fn registry_answers_v2_and_logs_requests() {
    let reg = timed("registry start", Registry::start);
    assert!(reg.host().starts_with("127.0.0.1:"));
    assert_eq!(reg.url(), format!("http://{}", reg.host()));
    let r = reg.request("GET", "/v2/", &[]).expect("GET /v2/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Distribution-Api-Version"), Some("registry/2.0"));
    let missing = format!("sha256:{}", "0".repeat(64));
    assert!(!reg.blob_exists("nothing/here", &missing));
    // The access log line is written just after the response: poll briefly.
    let t = Instant::now();
    while reg.requests_matching("HEAD", "/v2/nothing/here/blobs/").is_empty() && t.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let heads = reg.requests_matching("HEAD", "/v2/nothing/here/blobs/");
    assert_eq!(heads.len(), 1, "log: {:?}", reg.request_log());
    assert_eq!(heads[0].status, 404);
    assert_eq!(heads[0].path, format!("/v2/nothing/here/blobs/{missing}"));
    assert!(reg
        .request_log()
        .iter()
        .any(|r| r.method == "GET" && r.path == "/v2/" && r.status == 200));
}

#[test]
fn image_set_builds_with_shared_layer_and_multi_index() {
    let set = timed("image_set", image_set);
    assert!(set.layout.join("oci-layout").is_file());
    for name in ["base-amd64", "base-arm64", "app-amd64", "multi"] {
        let d = set.digest(name);
        assert_eq!(
            sha256_digest(&set.blob(&d)),
            d,
            "{name}: blob content does not match its digest"
        );
    }
    for (manifest, arch) in [
        (&set.base_amd64, "amd64"),
        (&set.base_arm64, "arm64"),
        (&set.app_amd64, "amd64"),
    ] {
        let config = set.json(&set.config_digest(manifest));
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
    }
    // base and app share the base layer; app has one more.
    assert_eq!(set.layers(&set.base_amd64), vec![set.base_layer_amd64.clone()]);
    assert_eq!(
        set.layers(&set.app_amd64),
        vec![set.base_layer_amd64.clone(), set.app_layer.clone()]
    );
    assert_ne!(set.base_layer_amd64, set.base_layer_arm64);
    let layer_size = std::fs::metadata(set.blob_path(&set.base_layer_amd64)).unwrap().len();
    assert!(
        (500_000..3_000_000).contains(&layer_size),
        "base layer is {layer_size} bytes"
    );
    // The multi index lists both platforms.
    let multi = set.json(&set.multi);
    assert_eq!(multi["mediaType"], OCI_INDEX);
    let platforms: Vec<(String, String)> = multi["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap().to_string(),
                m["platform"]["architecture"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        vec![
            (set.base_amd64.clone(), "amd64".to_string()),
            (set.base_arm64.clone(), "arm64".to_string())
        ]
    );
    // Same digests on a second call (cached).
    assert_eq!(image_set().multi, set.multi);
}

#[test]
fn push_multi_then_raw_manifest_has_two_platforms() {
    let set = image_set();
    let reg = Registry::start();
    let digest = timed("push multi", || {
        reg.push_layout(&set.layout, "multi", "registry.k8s.io/pause:3.10.1")
    });
    assert_eq!(digest, set.multi, "index digest survives the push");
    let (media_type, body) = reg.raw_manifest("registry.k8s.io/pause:3.10.1");
    assert_eq!(media_type, OCI_INDEX);
    assert_eq!(sha256_digest(&body), set.multi);
    assert_eq!(body, reg.skopeo_inspect_raw("registry.k8s.io/pause:3.10.1"));
    let index: Value = serde_json::from_slice(&body).unwrap();
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    // By digest too, and the children and all layers are there.
    let (_, by_digest) = reg.raw_manifest(&format!("registry.k8s.io/pause@{}", set.multi));
    assert_eq!(by_digest, body);
    let (child_type, child) = reg.raw_manifest(&format!("registry.k8s.io/pause@{}", set.base_arm64));
    assert_eq!(child_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(sha256_digest(&child), set.base_arm64);
    for blob in [&set.base_layer_amd64, &set.base_layer_arm64] {
        assert!(reg.blob_exists("registry.k8s.io/pause", blob));
    }
    assert!(!reg.blob_exists("registry.k8s.io/pause", &set.app_layer));
}

#[test]
fn push_k8s_images_mirrors_kubeadm_set() {
    let set = image_set();
    let reg = Registry::start();
    let pushed = timed("push kubeadm v1.34.3 set (7 images)", || {
        push_k8s_images(&reg, "v1.34.3", &[])
    });
    let upstream: Vec<&str> = pushed.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        upstream,
        [
            "registry.k8s.io/kube-apiserver:v1.34.3",
            "registry.k8s.io/kube-controller-manager:v1.34.3",
            "registry.k8s.io/kube-scheduler:v1.34.3",
            "registry.k8s.io/kube-proxy:v1.34.3",
            "registry.k8s.io/coredns/coredns:v1.12.1",
            "registry.k8s.io/pause:3.10.1",
            "registry.k8s.io/etcd:3.6.5-0",
        ]
    );
    for (up, digest) in &pushed {
        let fixture = fixture_for(up);
        assert_eq!(*digest, fixture.digest(&set), "{up}");
        let m = MirrorRef::parse(up);
        let (_, body) = reg.raw_manifest(&format!("{}:{}", m.repo, m.push_tag()));
        assert_eq!(sha256_digest(&body), *digest, "{up}");
    }
    assert_eq!(fixture_for("registry.k8s.io/kube-proxy:v1.34.3"), Fixture::Multi);
    assert_eq!(fixture_for("registry.k8s.io/kube-apiserver:v1.34.3"), Fixture::App);
    assert_eq!(fixture_for("registry.k8s.io/etcd:3.6.5-0"), Fixture::Base);
    // The shared layer is in both an App and a Base repository; the app layer only in App ones.
    assert!(reg.blob_exists("registry.k8s.io/kube-apiserver", &set.base_layer_amd64));
    assert!(reg.blob_exists("registry.k8s.io/etcd", &set.base_layer_amd64));
    assert!(reg.blob_exists("registry.k8s.io/kube-apiserver", &set.app_layer));
    assert!(!reg.blob_exists("registry.k8s.io/etcd", &set.app_layer));

    // Digest refs: with a tag -> that tag; digest only -> tag "pinned".
    let fake = format!("sha256:{}", "ab".repeat(32));
    let by_digest = push_k8s_images(
        &reg,
        "v1.34.3",
        &[
            &format!("registry.k8s.io/pause:3.10.1@{fake}"),
            &format!("registry.k8s.io/coredns/coredns@{fake}"),
        ],
    );
    assert_eq!(by_digest[0].1, set.multi);
    assert_eq!(by_digest[1].1, set.base_amd64);
    let (_, pinned) = reg.raw_manifest("registry.k8s.io/coredns/coredns:pinned");
    assert_eq!(sha256_digest(&pinned), set.base_amd64);
}

#[test]
fn mirror_ref_parsing_and_kubeadm_tables() {
    let p = MirrorRef::parse("registry.k8s.io/coredns/coredns:v1.12.1");
    assert_eq!(
        (p.repo.as_str(), p.tag.as_deref(), p.digest.as_deref()),
        ("registry.k8s.io/coredns/coredns", Some("v1.12.1"), None)
    );
    let p = MirrorRef::parse("nginx:1.27");
    assert_eq!((p.repo.as_str(), p.push_tag()), ("docker.io/library/nginx", "1.27"));
    let p = MirrorRef::parse("flannel/flannel:v0.26.0");
    assert_eq!(p.repo, "docker.io/flannel/flannel");
    let d = format!("sha256:{}", "cd".repeat(32));
    let p = MirrorRef::parse(&format!("ghcr.io/flannel-io/flannel@{d}"));
    assert_eq!(
        (p.repo.as_str(), p.tag.clone(), p.digest.as_deref(), p.push_tag()),
        ("ghcr.io/flannel-io/flannel", None, Some(d.as_str()), "pinned")
    );
    assert!(kubeadm_images("v1.34.1").contains(&"registry.k8s.io/etcd:3.6.4-0".to_string()));
    assert!(kubeadm_images("v1.33.7").contains(&"registry.k8s.io/pause:3.10".to_string()));
}

#[test]
fn basic_auth_registry_requires_credentials() {
    let reg = timed("registry start (basic auth)", || {
        Registry::start_with_basic_auth("kb", "s3cret pw")
    })
    .expect("no bcrypt generator for the registry htpasswd (htpasswd, python3 bcrypt or perl crypt): install apache2-utils, as .ci/run does");
    let anonymous = support::registry::http_request("GET", &reg.host(), "/v2/", &[]).expect("GET /v2/");
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    let set = image_set();
    let digest = reg.push_layout(&set.layout, "app-amd64", "private/app:1");
    assert_eq!(digest, set.app_amd64);
    assert!(reg.blob_exists("private/app", &set.app_layer));
}

#[test]
fn containerd_imports_layout_pulled_from_registry() {
    let set = image_set();
    let reg = Registry::start();
    let ctrd = timed("containerd start", Containerd::start);
    let pushed = push_k8s_images(
        &reg,
        "v1.34.3",
        &["registry.k8s.io/pause:3.10.1", "registry.k8s.io/kube-apiserver:v1.34.3"],
    );
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    timed("skopeo pull 2 images into a layout", || {
        for (upstream, digest) in &pushed {
            let m = MirrorRef::parse(upstream);
            // ref.name = the full upstream reference: ctr uses it as the image name.
            let got = reg.pull_to_layout(&format!("{}:{}", m.repo, m.push_tag()), &layout, upstream);
            assert_eq!(&got, digest, "{upstream}");
        }
    });
    let tar = tar_of(&layout);
    timed("ctr images import", || ctrd.import("k8s.io", &tar));
    // In k8s.io the CRI plugin adds one more name per image: its image ID
    // ("sha256:<config digest>" of this platform's manifest), same target.
    let mut expected = pushed.clone();
    expected.push((set.config_digest(&set.base_amd64), set.multi.clone()));
    expected.push((set.config_digest(&set.app_amd64), set.app_amd64.clone()));
    expected.sort();
    assert_eq!(ctrd.images("k8s.io"), expected);
    assert!(pushed.contains(&("registry.k8s.io/pause:3.10.1".to_string(), set.multi.clone())));
    assert!(ctrd.images("default").is_empty());

    // containerd can also pull from the registry through hosts_dir() (plain HTTP).
    ctrd.add_http_registry(&reg.host());
    let hosts = ctrd.hosts_dir().to_string_lossy().into_owned();
    let pause = format!("{}/registry.k8s.io/pause:3.10.1", reg.host());
    timed("ctr images pull", || {
        ctrd.ctr_ok(&["-n", "pulled", "images", "pull", "--hosts-dir", &hosts, &pause])
    });
    assert_eq!(ctrd.images("pulled"), vec![(pause, set.multi.clone())]);
}

#[test]
fn containerd_import_partial_index_and_naming_rules() {
    let set = image_set();
    let ctrd = Containerd::start();
    let work = tempfile::tempdir().unwrap();
    import_a_partial_index(&ctrd, &set, work.path());
    import_naming_rules(&ctrd, &set, work.path());
}

/// A partial index (multi with only the amd64 blobs, named by io.containerd.image.name)
/// imports for amd64 only; a tar without `oci-layout` is not recognised.
fn import_a_partial_index(ctrd: &Containerd, set: &ImageSet, work: &Path) {
    let partial = work.join("partial");
    set.export_layout(
        &partial,
        &[(
            "multi",
            &[(IMAGE_NAME, "registry.k8s.io/pause:3.10.1"), (REF_NAME, "3.10.1")][..],
        )],
        Some("amd64"),
    );
    assert!(!partial.join("blobs/sha256").join(&set.base_arm64[7..]).exists());
    let tar = tar_of(&partial);
    ctrd.import("default-flags", &tar);
    assert_eq!(
        ctrd.images("default-flags"),
        vec![("registry.k8s.io/pause:3.10.1".to_string(), set.multi.clone())]
    );
    let check = ctrd.ctr_ok(&["-n", "default-flags", "images", "check"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("complete (2/2)"),
        "{check:?}"
    );
    let amd = ctrd.try_import("amd64-only", &tar, &["--platform", "linux/amd64"]);
    assert!(amd.status.success(), "{}", stderr(&amd));
    assert_eq!(ctrd.images("amd64-only").len(), 1);
    for (ns, flags) in [
        ("all", &["--all-platforms"][..]),
        ("arm", &["--platform", "linux/arm64"][..]),
    ] {
        let out = ctrd.try_import(ns, &tar, flags);
        assert!(!out.status.success(), "{flags:?} should fail on a partial index");
        assert!(
            stderr(&out).contains(&format!("content digest {}: not found", set.base_arm64)),
            "{}",
            stderr(&out)
        );
        assert!(ctrd.images(ns).is_empty());
    }

    // A tar without `oci-layout` is not recognised.
    let no_marker = work.join("no-marker.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&no_marker).unwrap());
        b.append_path_with_name(partial.join("index.json"), "index.json")
            .unwrap();
        b.append_dir_all("blobs", partial.join("blobs")).unwrap();
        b.finish().unwrap();
    }
    let out = ctrd.try_import("no-marker", &no_marker, &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("unrecognized image format"),
        "{}",
        stderr(&out)
    );
}

/// Naming: image.name wins; full ref.name kept; bare-tag ref.name gets "import-DATE:";
/// entries without annotations are skipped silently; --base-name and --digests.
fn import_naming_rules(ctrd: &Containerd, set: &ImageSet, work: &Path) {
    let date_prefix = "import-";
    let names = work.join("names");
    set.export_layout(
        &names,
        &[
            ("base-amd64", &[(REF_NAME, "3.10")][..]),
            ("app-amd64", &[(REF_NAME, "registry.k8s.io/kube-apiserver:v1.34.3")][..]),
            (
                "base-arm64",
                &[(IMAGE_NAME, "example.org/wins:1"), (REF_NAME, "loses")][..],
            ),
            ("multi", &[][..]),
        ],
        None,
    );
    let tar = tar_of(&names);
    ctrd.import("names", &tar);
    let got = ctrd.images("names");
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.contains(&("example.org/wins:1".to_string(), set.base_arm64.clone())),
        "{got:?}"
    );
    assert!(got.contains(&(
        "registry.k8s.io/kube-apiserver:v1.34.3".to_string(),
        set.app_amd64.clone()
    )));
    assert!(got
        .iter()
        .any(|(n, d)| n.starts_with(date_prefix) && n.ends_with(":3.10") && *d == set.base_amd64));

    // --base-name: bare tags go under it, other full refs are dropped, image.name is kept.
    let out = ctrd.try_import("based", &tar, &["--base-name", "registry.k8s.io/pause"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let based: BTreeSet<String> = ctrd.images("based").into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        based,
        BTreeSet::from([
            "example.org/wins:1".to_string(),
            "registry.k8s.io/pause:3.10".to_string()
        ])
    );

    // --digests also names every entry by digest, the unannotated one included.
    let out = ctrd.try_import("digests", &tar, &["--digests"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let by_digest = ctrd.images("digests");
    assert!(by_digest
        .iter()
        .any(|(n, d)| n.starts_with(date_prefix) && n.ends_with(&format!("@{}", set.multi)) && *d == set.multi));
    assert_eq!(by_digest.len(), 3 + 4, "{by_digest:?}");
}

#[test]
fn drop_stops_processes_and_unmounts() {
    let set = image_set();
    let reg = Registry::start();
    let ctrd = Containerd::start();
    let (reg_pid, ctrd_pid) = (reg.pid(), ctrd.pid());
    let ctrd_dir = ctrd.address().parent().unwrap().to_path_buf();
    let reg_storage = reg.storage_dir();

    // A running container leaves a shim and an overlay mount for Drop to clean up.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("app");
    set.export_layout(&layout, &[("app-amd64", &[(REF_NAME, "example.org/app:1")][..])], None);
    ctrd.import("k8s.io", &tar_of(&layout));
    // cgroup paths are host-wide: keep the container id unique per process.
    let id = format!("kbundle-selftest-{}", std::process::id());
    let run = ctrd.ctr(&[
        "-n",
        "k8s.io",
        "run",
        "-d",
        "example.org/app:1",
        &id,
        "/bin/sleep",
        "300",
    ]);
    let ran = run.status.success();
    if ran {
        assert!(
            !mounts_under(&ctrd_dir).is_empty(),
            "expected an overlay mount under {}",
            ctrd_dir.display()
        );
        assert!(
            !pids_with_cmdline_containing(&ctrd_dir.to_string_lossy()).is_empty(),
            "expected a shim"
        );
    } else {
        eprintln!(
            "note: `ctr run` failed here, Drop is tested without a running task:\n{}",
            stderr(&run)
        );
    }

    timed("drop registry + containerd", || {
        drop(reg);
        drop(ctrd);
    });
    assert!(!pid_alive(reg_pid), "registry {reg_pid} still running");
    assert!(!pid_alive(ctrd_pid), "containerd {ctrd_pid} still running");
    assert!(
        pids_with_cmdline_containing(&ctrd_dir.to_string_lossy()).is_empty(),
        "leftover processes"
    );
    assert!(mounts_under(&ctrd_dir).is_empty(), "leftover mounts");
    assert!(!ctrd_dir.exists(), "{} not removed", ctrd_dir.display());
    assert!(!reg_storage.exists(), "{} not removed", reg_storage.display());
}
