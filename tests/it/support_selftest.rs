//! Self-test of the test-support code (tests/it/support): the fake upstream tree here,
//! the loopback mirror in [`mirror`], the fault-injecting proxy in [`proxy`].

mod mirror;
mod proxy;

use mirror::parse_resp;

use crate::support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::mirror::{Fault, Mirror, Request};
use support::upstream::{
    self, artifact_paths, artifacts, build_tree, checksum_paths, mirror_args, shared_tree, Payload, UpstreamSpec,
};

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn tiny_tree(spec: &UpstreamSpec) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    build_tree(dir.path(), spec).expect("build tiny tree");
    dir
}

fn sha256_file(p: &Path) -> String {
    upstream::sha256_file(p).unwrap_or_else(|e| panic!("hash {}: {e}", p.display()))
}

fn read_text(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses `<hex>  <name>` lines (sha256sum output) into name -> hex, with kbundle's parser.
fn parse_sha256sum_lines(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let lines = kbundle::catalog::checksum::sum_lines(text.as_bytes());
    for l in lines.unwrap_or_else(|e| panic!("not sha256sum output: {e}\n{text}")) {
        let hex = l.digest.hex();
        assert!(
            text.contains(&format!("{hex}  {}", l.name)),
            "not lowercase text mode: {text}"
        );
        assert!(map.insert(l.name.to_string(), hex).is_none(), "duplicate {}", l.name);
    }
    map
}

/// Parses runc's PGP clear-signed sha256sum file.
fn parse_runc_sums(text: &str) -> BTreeMap<String, String> {
    let body = text
        .strip_prefix("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n")
        .expect("clear-signed header");
    let (sums, sig) = body
        .split_once("-----BEGIN PGP SIGNATURE-----\n")
        .expect("signature block");
    assert!(sig.ends_with("-----END PGP SIGNATURE-----\n"), "signature end");
    assert!(sig.lines().any(|l| l.starts_with('=')), "armor checksum line");
    parse_sha256sum_lines(sums)
}

/// (raw name, mode, is_dir, contents) of every entry of a .tar.gz.
fn tar_entries(p: &Path) -> Vec<(String, u32, bool, Vec<u8>)> {
    let f = File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in ar.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let name = String::from_utf8(e.path_bytes().to_vec()).expect("utf8 tar name");
        let mode = e.header().mode().expect("mode");
        let is_dir = e.header().entry_type().is_dir();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read tar entry");
        out.push((name, mode, is_dir, data));
    }
    out
}

fn tar_names(p: &Path) -> Vec<String> {
    tar_entries(p).into_iter().map(|e| e.0).collect()
}

fn walk(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("dir entry");
            let p = e.path();
            if p.is_dir() {
                rec(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(root, root, &mut out);
    out
}

fn kubeadm_path(spec: &UpstreamSpec) -> String {
    format!("{}/kubeadm", upstream::kube_dir(spec, "amd64"))
}

// ---------------------------------------------------------------------------
// upstream tree
// ---------------------------------------------------------------------------

/// The checksum file of `a`, in its upstream's format, vouches for the file's digest.
fn check_published_digest(root: &Path, a: &upstream::Artifact) {
    let file = upstream::local_path(root, &a.url_path);
    let digest = sha256_file(&file);
    let name = a.file_name().to_string();
    let Some(cpath) = &a.checksum_path else {
        assert!(matches!(a.component, "flannel" | "metrics-server"));
        return;
    };
    let ctext = read_text(&upstream::local_path(root, cpath));
    match a.component {
        "kubeadm" | "kubelet" | "kubectl" => {
            assert!(is_hex64(&ctext), "{cpath}: {ctext:?} must be bare hex, no newline");
            assert_eq!(ctext, digest, "{cpath}");
        }
        "containerd" | "cni-plugins" => {
            assert!(cpath.ends_with(if a.component == "containerd" {
                ".tar.gz.sha256sum"
            } else {
                ".tgz.sha256"
            }));
            assert_eq!(ctext, format!("{digest}  {name}\n"), "{cpath}");
        }
        "crictl" => assert_eq!(ctext, format!("{digest}\n"), "{cpath}"),
        "runc" => {
            let sums = parse_runc_sums(&ctext);
            assert_eq!(sums.get(&name), Some(&digest), "{cpath} entry for {name}");
            assert!(sums.contains_key("runc.tar.xz"), "runc.tar.xz line");
            assert!(sums.contains_key("runc.amd64") && sums.contains_key("runc.arm64"));
        }
        "etcd" => {
            let sums = parse_sha256sum_lines(&ctext);
            assert_eq!(sums.get(&name), Some(&digest), "{cpath} entry for {name}");
            let v = name
                .trim_start_matches("etcd-v")
                .split("-linux")
                .next()
                .unwrap_or_default();
            assert!(sums.contains_key(&format!("etcd-v{v}-darwin-amd64.zip")), "{sums:?}");
            let keys: Vec<_> = sums.keys().cloned().collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "SHA256SUMS sorted by name");
        }
        other => panic!("unexpected component {other}"),
    }
}

#[test]
fn tiny_tree_has_every_artifact_and_correct_checksums() {
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(&["amd64", "arm64"]);
    let dir = tiny_tree(&spec);
    let root = dir.path();

    let paths = artifact_paths(&spec);
    assert_eq!(paths.len(), 2 * 8 + 2, "{paths:#?}");
    for p in &paths {
        let f = upstream::local_path(root, p);
        let len = fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .len();
        assert!(len > 0, "{p} is empty");
    }
    for p in checksum_paths(&spec) {
        assert!(upstream::local_path(root, &p).is_file(), "missing {p}");
    }
    assert!(
        paths
            .iter()
            .all(|p| !p.ends_with(".sha256") && !p.ends_with("sha256sum") && !p.ends_with("SUMS")),
        "artifact_paths must not list checksum files"
    );

    for a in artifacts(&spec) {
        check_published_digest(root, &a);
    }

    // Exact URL layout spot checks.
    for p in [
        "/dl.k8s.io/release/v1.34.3/bin/linux/arm64/kubelet",
        "/github.com/containerd/containerd/releases/download/v2.1.5/containerd-2.1.5-linux-amd64.tar.gz",
        "/github.com/opencontainers/runc/releases/download/v1.3.4/runc.arm64",
        "/github.com/containernetworking/plugins/releases/download/v1.8.0/cni-plugins-linux-amd64-v1.8.0.tgz",
        "/github.com/etcd-io/etcd/releases/download/v3.6.5/etcd-v3.6.5-linux-arm64.tar.gz",
        "/github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz",
        "/github.com/flannel-io/flannel/releases/download/v0.27.3/kube-flannel.yml",
        "/github.com/kubernetes-sigs/metrics-server/releases/download/v0.8.0/components.yaml",
    ] {
        assert!(paths.iter().any(|x| x == p), "missing {p}");
    }
    // Checksum files that upstream does not publish must not exist.
    assert!(!root
        .join("github.com/flannel-io/flannel/releases/download/v0.27.3/kube-flannel.yml.sha256")
        .exists());
}

/// The layout and modes of one arch's containerd, CNI, etcd and crictl tarballs.
fn check_tarballs(spec: &UpstreamSpec, root: &Path, arch: &str) {
    let lp = |p: String| upstream::local_path(root, &p);
    let containerd = lp(format!(
        "{}/{}",
        upstream::containerd_dir(spec),
        upstream::containerd_tarball(spec, arch)
    ));
    let entries = tar_entries(&containerd);
    let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"]);
    for (name, mode, _, data) in &entries {
        assert_eq!(*mode, 0o755, "{name}");
        let text = String::from_utf8(data.clone()).expect("tiny script is text");
        assert!(text.starts_with("#!/bin/sh\n"), "{name}");
        assert!(text.contains("v2.1.5") && text.contains(arch), "{text}");
    }

    let cni = lp(format!(
        "{}/{}",
        upstream::cni_dir(spec),
        upstream::cni_tarball(spec, arch)
    ));
    let entries = tar_entries(&cni);
    assert_eq!(entries[0].0, "./");
    assert!(entries[0].2, "./ is a directory");
    for want in ["./bridge", "./host-local", "./loopback", "./portmap"] {
        let e = entries
            .iter()
            .find(|e| e.0 == want)
            .unwrap_or_else(|| panic!("{want} in cni tgz"));
        assert_eq!(e.1, 0o755, "{want} mode");
    }

    let etcd = lp(format!(
        "{}/{}",
        upstream::etcd_dir(spec),
        upstream::etcd_tarball(spec, arch)
    ));
    let names = tar_names(&etcd);
    let top = format!("etcd-v{}-linux-{arch}", spec.etcd);
    for want in ["etcd", "etcdctl", "etcdutl", "README.md"] {
        assert!(names.contains(&format!("{top}/{want}")), "{want} in {names:?}");
    }

    let crictl = lp(format!(
        "{}/{}",
        upstream::crictl_dir(spec),
        upstream::crictl_tarball(spec, arch)
    ));
    let entries = tar_entries(&crictl);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "crictl");
    assert_eq!(entries[0].1, 0o755);
}

#[test]
fn tiny_tree_tarball_contents() {
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(&["amd64", "arm64"]);
    let dir = tiny_tree(&spec);
    let root = dir.path();
    let lp = |p: String| upstream::local_path(root, &p);

    for arch in ["amd64", "arm64"] {
        check_tarballs(&spec, root, arch);
    }

    // Bytes differ per arch.
    let a = fs::read(lp(format!("{}/kubeadm", upstream::kube_dir(&spec, "amd64")))).expect("read");
    let b = fs::read(lp(format!("{}/kubeadm", upstream::kube_dir(&spec, "arm64")))).expect("read");
    assert_ne!(a, b);
    assert!(a.len() < 1024, "tiny scripts are small");

    // Manifests.
    let flannel = read_text(&lp(format!("{}/kube-flannel.yml", upstream::flannel_dir(&spec))));
    for want in [
        "name: kube-flannel",
        "kind: DaemonSet",
        "kind: ConfigMap",
        "\"Network\": \"10.244.0.0/16\"",
        "\"Type\": \"vxlan\"",
        "image: ghcr.io/flannel-io/flannel:v0.27.3",
        "image: ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1",
    ] {
        assert!(flannel.contains(want), "flannel manifest lacks {want}");
    }
    let ms = read_text(&lp(format!("{}/components.yaml", upstream::metrics_server_dir(&spec))));
    assert!(ms.contains("image: registry.k8s.io/metrics-server/metrics-server:v0.8.0"));
    assert!(ms.contains("kind: Deployment"));
}

#[test]
fn tiny_tree_build_is_deterministic() {
    let spec = UpstreamSpec::v1_33_7().tiny().with_arches(&["amd64", "arm64"]);
    let a = tiny_tree(&spec);
    let b = tiny_tree(&spec);
    let (wa, wb) = (walk(a.path()), walk(b.path()));
    assert!(!wa.is_empty());
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, v) in &wa {
        assert!(v == &wb[k], "{} differs between builds", k.display());
    }
    // v1.33.7 really is 1.33.7 / crictl 1.33.0.
    assert!(artifact_paths(&spec)
        .iter()
        .any(|p| p.ends_with("/v1.33.0/crictl-v1.33.0-linux-arm64.tar.gz")));
    assert!(wa.contains_key(Path::new("dl.k8s.io/release/v1.33.7/bin/linux/amd64/kubeadm.sha256")));
}

#[test]
fn tiny_scripts_and_stand_ins_run() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let log = dir.path().join("standin.log");
    let kubeadm = upstream::local_path(dir.path(), &kubeadm_path(&spec));
    let out = Command::new("sh")
        .arg(&kubeadm)
        .args(["version", "-o", "short"])
        .env("KBUNDLE_STANDIN_LOG", &log)
        .output()
        .expect("run tiny kubeadm");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1.34.3\n");
    let kubelet = upstream::local_path(dir.path(), &format!("{}/kubelet", upstream::kube_dir(&spec, "amd64")));
    let out = Command::new("sh")
        .arg(&kubelet)
        .arg("--version")
        .env("KBUNDLE_STANDIN_LOG", &log)
        .output()
        .expect("run tiny kubelet");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Kubernetes v1.34.3\n");

    let stand_ins = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stand-ins");
    let run = |name: &str, args: &[&str], version: Option<&str>| -> String {
        let mut c = Command::new(stand_ins.join(name));
        c.args(args).env("KBUNDLE_STANDIN_LOG", &log);
        match version {
            Some(v) => c.env("KBUNDLE_STANDIN_VERSION", v),
            None => c.env_remove("KBUNDLE_STANDIN_VERSION"),
        };
        let out = c.output().unwrap_or_else(|e| panic!("run stand-in {name}: {e}"));
        assert!(out.status.success(), "{name} failed");
        String::from_utf8(out.stdout).expect("utf8 output")
    };
    assert_eq!(run("kubeadm", &["version", "-o", "short"], None), "v1.34.3\n");
    assert_eq!(run("kubeadm", &["version", "-o", "short"], Some("1.33.7")), "v1.33.7\n");
    assert_eq!(run("kubeadm", &["config", "images", "list"], None), "");
    assert_eq!(run("kubelet", &["--version"], None), "Kubernetes v1.34.3\n");
    assert_eq!(
        run("crictl", &["--version"], Some("v1.33.0")),
        "crictl version v1.33.0\n"
    );
    assert_eq!(
        read_text(&log),
        "kubeadm version -o short\n\
         kubelet --version\n\
         kubeadm version -o short\n\
         kubeadm version -o short\n\
         kubeadm config images list\n\
         kubelet --version\n\
         crictl --version\n"
    );
}

#[test]
fn shared_tree_is_built_once_under_races() {
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(&["arm64"]);
    let roots: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| shared_tree(&spec))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("shared_tree thread"))
            .collect()
    });
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
    for p in artifact_paths(&spec) {
        assert!(upstream::local_path(&roots[0], &p).is_file(), "{p}");
    }
    let other = shared_tree(&UpstreamSpec::v1_33_7().tiny().with_arches(&["arm64"]));
    assert_ne!(other, roots[0]);
}

#[test]
fn mirror_args_map_both_hosts() {
    assert_eq!(
        mirror_args("http://127.0.0.1:1234"),
        [
            "--mirror",
            "https://dl.k8s.io=http://127.0.0.1:1234/dl.k8s.io",
            "--mirror",
            "https://github.com=http://127.0.0.1:1234/github.com",
        ]
    );
}

// ---------------------------------------------------------------------------
// Payload::Real (big: built once per cache key, shared between runs)
// ---------------------------------------------------------------------------

#[test]
fn real_tree_via_shared_tree() {
    let spec = UpstreamSpec::v1_34_3();
    assert_eq!(spec.payload, Payload::Real);
    let root = shared_tree(&spec);

    for a in artifacts(&spec) {
        let f = upstream::local_path(&root, &a.url_path);
        assert!(f.is_file(), "missing {}", a.url_path);
    }
    let kd = upstream::kube_dir(&spec, "amd64");
    let kubectl = upstream::local_path(&root, &format!("{kd}/kubectl"));
    let digest = sha256_file(&kubectl);
    assert_eq!(
        read_text(&upstream::local_path(&root, &format!("{kd}/kubectl.sha256"))),
        digest
    );
    assert_eq!(digest, sha256_file(Path::new("/usr/bin/kubectl")));

    // kubeadm is the stand-in with the pinned version baked in.
    let kubeadm = upstream::local_path(&root, &format!("{kd}/kubeadm"));
    let out = Command::new(&kubeadm)
        .args(["version", "-o", "short"])
        .env_remove("KBUNDLE_STANDIN_VERSION")
        .output()
        .expect("run stand-in kubeadm");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1.34.3\n");

    let t = upstream::local_path(
        &root,
        &format!(
            "{}/{}",
            upstream::containerd_dir(&spec),
            upstream::containerd_tarball(&spec, "amd64")
        ),
    );
    let entries = tar_entries(&t);
    let containerd = entries
        .iter()
        .find(|e| e.0 == "bin/containerd")
        .expect("bin/containerd");
    assert_eq!(
        containerd.3.len() as u64,
        fs::metadata("/usr/bin/containerd").expect("stat").len()
    );

    // Stream a big file through the mirror and hash it without buffering it.
    let mirror = Mirror::start(&root);
    let p = format!("{kd}/kubectl");
    let mut s = TcpStream::connect(mirror.addr()).expect("connect");
    write!(s, "GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    let resp = parse_resp(&head);
    assert_eq!(resp.status, 200);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = s.read(&mut buf).expect("read body");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    assert_eq!(n_total, resp.content_length());
    assert_eq!(hex::encode(h.finalize()), digest);
}
