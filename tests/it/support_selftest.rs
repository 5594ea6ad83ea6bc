//! Self-test of the test-support code (tests/it/support): the fake upstream tree
//! and the loopback mirror.

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

/// A parsed raw HTTP response.
#[derive(Debug)]
struct Resp {
    /// 0 when the connection closed without any response bytes.
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn content_length(&self) -> u64 {
        self.header("content-length")
            .expect("Content-Length header")
            .parse()
            .expect("numeric Content-Length")
    }
}

/// Sends one raw request and reads until the server closes the connection.
fn send_raw(mirror: &Mirror, raw: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(mirror.addr()).expect("connect to mirror");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("set timeout");
    s.write_all(raw.as_bytes()).expect("send request");
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read response: {e}"),
        }
    }
    out
}

fn parse_resp(raw: &[u8]) -> Resp {
    if raw.is_empty() {
        return Resp {
            status: 0,
            headers: vec![],
            body: vec![],
        };
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head");
    let head = std::str::from_utf8(&raw[..end]).expect("utf8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().expect("status").parse().expect("status code");
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header colon");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn request(mirror: &Mirror, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: selftest\r\n",
        mirror.addr()
    );
    for (k, v) in extra {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    parse_resp(&send_raw(mirror, &raw))
}

fn get(mirror: &Mirror, path: &str) -> Resp {
    request(mirror, "GET", path, &[])
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
            assert!(sums.contains_key("etcd-v3.5.25-darwin-amd64.zip"));
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
        "/github.com/etcd-io/etcd/releases/download/v3.5.25/etcd-v3.5.25-linux-arm64.tar.gz",
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
    let top = format!("etcd-v3.5.25-linux-{arch}");
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
// mirror
// ---------------------------------------------------------------------------

#[test]
fn mirror_serves_files_byte_identically_with_get_and_head() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    assert!(mirror.url().starts_with("http://127.0.0.1:"));

    for p in artifact_paths(&spec) {
        let want = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");
        let r = get(&mirror, &p);
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.content_length(), want.len() as u64, "{p}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.body == want, "{p} body differs");

        let h = request(&mirror, "HEAD", &p, &[]);
        assert_eq!(h.status, 200, "HEAD {p}");
        assert_eq!(h.content_length(), want.len() as u64, "HEAD {p}");
        assert!(h.body.is_empty(), "HEAD has no body");
    }
    // Query strings are ignored for lookup and bookkeeping.
    let p = kubeadm_path(&spec);
    assert_eq!(get(&mirror, &format!("{p}?x=1")).status, 200);
    assert_eq!(mirror.hits(&p), 2);
}

#[test]
fn mirror_range_requests() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);
    let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");
    let len = full.len();

    let r = request(&mirror, "GET", &p, &[("Range", "bytes=100-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[100..]);
    assert_eq!(r.content_length(), (len - 100) as u64);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-{}/{len}", len - 1).as_str())
    );

    let r = request(&mirror, "GET", &p, &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[10..20]);
    assert_eq!(r.header("content-range"), Some(format!("bytes 10-19/{len}").as_str()));

    // End beyond EOF is clamped.
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=5-999999")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[5..]);

    // Suffix range.
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=-7")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[len - 7..]);

    // HEAD with range.
    let r = request(&mirror, "HEAD", &p, &[("Range", "bytes=1-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.content_length(), (len - 1) as u64);
    assert!(r.body.is_empty());

    for bad in [format!("bytes={len}-"), "bytes=999999-".into(), "bytes=9-3".into()] {
        let r = request(&mirror, "GET", &p, &[("Range", &bad)]);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()));
    }

    let ranges: Vec<Option<String>> = mirror.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(ranges[0].as_deref(), Some("bytes=100-"));
    assert_eq!(mirror.hits(&p), 7, "HEAD is not a hit");
}

#[test]
fn mirror_404_400_405() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());

    for (method, path, want) in [
        ("GET", "/dl.k8s.io/release/v9.9.9/bin/linux/amd64/kubeadm", 404),
        ("HEAD", "/dl.k8s.io/release/v9.9.9/bin/linux/amd64/kubeadm", 404),
        ("GET", "/dl.k8s.io/release/v1.34.3/bin/linux/amd64", 404),
        ("GET", "/dl.k8s.io/release/v1.34.3/bin/linux/amd64/", 404),
        ("GET", "/", 404),
        ("GET", "//dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm", 404),
        (
            "GET",
            "/dl.k8s.io/../dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm",
            400,
        ),
        ("GET", "/dl.k8s.io/%2e%2e/%2e%2e/etc/passwd", 400),
        ("POST", "/dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm", 405),
    ] {
        let r = request(&mirror, method, path, &[]);
        assert_eq!(r.status, want, "{method} {path}");
        if method == "GET" {
            assert_eq!(r.body.len() as u64, r.content_length(), "{method} {path}");
        }
    }
    // Percent-encoded but valid paths are decoded.
    let p = kubeadm_path(&spec).replace("kubeadm", "kube%61dm");
    assert_eq!(get(&mirror, &p).status, 200);
    assert_eq!(mirror.hits(&kubeadm_path(&spec)), 1);
}

#[test]
fn fault_fail500_once_and_always() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);

    mirror.set_fault(&p, Fault::Fail500Once);
    assert_eq!(request(&mirror, "HEAD", &p, &[]).status, 200, "HEAD does not consume");
    assert_eq!(get(&mirror, &p).status, 500);
    assert_eq!(get(&mirror, &p).status, 200);
    assert_eq!(get(&mirror, &p).status, 200);

    mirror.set_fault(&p, Fault::Fail500Always);
    for _ in 0..3 {
        assert_eq!(get(&mirror, &p).status, 500);
    }
    assert_eq!(request(&mirror, "HEAD", &p, &[]).status, 500);
    mirror.clear_faults();
    assert_eq!(get(&mirror, &p).status, 200);

    let statuses: Vec<u16> = mirror
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 200, 200, 500, 500, 500, 200]);
    assert_eq!(mirror.hits(&p), 7);
}

#[test]
fn fault_truncate_once() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);
    let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");

    mirror.set_fault(&p, Fault::TruncateOnce);
    let r = get(&mirror, &p);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), full.len() as u64, "full Content-Length");
    assert_eq!(r.body, &full[..full.len() / 2], "only half the body");

    let r = get(&mirror, &p);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, full);

    // With a range: half of the requested range.
    mirror.set_fault(&p, Fault::TruncateOnce);
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=100-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[100..100 + (full.len() - 100) / 2]);
}

#[test]
fn fault_corrupt_not_found_reset() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);
    let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");

    mirror.set_fault(&p, Fault::Corrupt);
    for _ in 0..2 {
        let r = get(&mirror, &p);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), full.len());
        let diffs: Vec<usize> = (0..full.len()).filter(|&i| r.body[i] != full[i]).collect();
        assert_eq!(diffs, [full.len() / 2], "exactly the middle byte flipped");
    }
    // Consistent for a resumed download covering the flipped byte.
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=1-")]);
    assert_eq!(r.body.len(), full.len() - 1);
    assert_ne!(r.body, &full[1..]);
    assert_ne!(
        sha256_file(&upstream::local_path(dir.path(), &p)),
        hex::encode(Sha256::digest(&r.body))
    );

    mirror.set_fault(&p, Fault::NotFound);
    assert_eq!(get(&mirror, &p).status, 404);
    assert_eq!(get(&mirror, &p).status, 404);
    assert_eq!(request(&mirror, "HEAD", &p, &[]).status, 404);

    mirror.set_fault(&p, Fault::ResetOnce);
    let raw = send_raw(&mirror, &format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(raw.is_empty(), "no response bytes at all");
    assert_eq!(get(&mirror, &p).body, full);

    let last: Vec<Request> = mirror.requests().into_iter().rev().take(2).collect();
    assert_eq!(last[1].status, 0, "reset is recorded as status 0");
    assert_eq!(last[0].status, 200);
}

#[test]
fn hits_requests_and_reset_counters() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let paths = artifact_paths(&spec);

    for p in &paths[..3] {
        get(&mirror, p);
    }
    get(&mirror, &paths[0]);
    request(&mirror, "HEAD", &paths[1], &[]);
    get(&mirror, "/missing");

    assert_eq!(mirror.hits(&paths[0]), 2);
    assert_eq!(mirror.hits(&paths[1]), 1);
    assert_eq!(mirror.hits("/missing"), 1, "404s count as hits");
    assert_eq!(mirror.hits(&paths[5]), 0);
    assert_eq!(mirror.total_gets(), 5);
    let reqs = mirror.requests();
    assert_eq!(reqs.len(), 6);
    assert_eq!(
        reqs[4],
        Request {
            method: "HEAD".into(),
            path: paths[1].clone(),
            range: None,
            status: 200
        }
    );
    assert_eq!(reqs[5].status, 404);

    mirror.reset_counters();
    assert_eq!(mirror.total_gets(), 0);
    assert!(mirror.requests().is_empty());
    get(&mirror, &paths[0]);
    assert_eq!(mirror.hits(&paths[0]), 1);
}

#[test]
fn mirror_handles_many_concurrent_connections() {
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(&["amd64", "arm64"]);
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let paths = artifact_paths(&spec);

    // Open many idle connections first: they must not block others.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(mirror.addr()).expect("idle connect"))
        .collect();
    std::thread::scope(|s| {
        for i in 0..64 {
            let (mirror, paths, root) = (&mirror, &paths, dir.path());
            s.spawn(move || {
                let p = &paths[i % paths.len()];
                let want = fs::read(upstream::local_path(root, p)).expect("read fixture");
                let r = get(mirror, p);
                assert_eq!(r.status, 200, "{p}");
                assert!(r.body == want, "{p}");
            });
        }
    });
    drop(idle);
    assert_eq!(mirror.total_gets(), 64);
}

#[test]
fn mirror_drop_does_not_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mirror = Mirror::start(dir.path());
    let addr = mirror.addr();
    // An idle connection that never sends a request.
    let _idle = TcpStream::connect(addr).expect("connect");
    let t = Instant::now();
    drop(mirror);
    assert!(t.elapsed() < Duration::from_secs(5), "drop took {:?}", t.elapsed());
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "listener closed after drop"
    );
}

/// The real client is reqwest/hyper: check the mirror speaks HTTP well enough
/// for it, including how faults surface.
#[test]
fn mirror_works_with_reqwest() {
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(&["amd64", "arm64"]);
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        let base = mirror.url();

        // Parallel downloads of everything.
        let paths = artifact_paths(&spec);
        let futs = paths.iter().map(|p| {
            let (client, url) = (client.clone(), format!("{base}{p}"));
            async move {
                let r = client.get(&url).send().await.expect("send");
                assert_eq!(r.status().as_u16(), 200, "{url}");
                (p.clone(), r.bytes().await.expect("body").to_vec())
            }
        });
        for (p, body) in futures::future::join_all(futs).await {
            let want = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");
            assert!(body == want, "{p}");
        }

        let p = kubeadm_path(&spec);
        let url = mirror.url_for(&p);
        assert_eq!(url, format!("{base}{p}"));
        let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");

        let r = client
            .get(&url)
            .header("Range", "bytes=50-")
            .send()
            .await
            .expect("range send");
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(r.bytes().await.expect("range body"), &full[50..]);

        let r = client.head(&url).send().await.expect("head");
        // (reqwest's content_length() is the body size hint, 0 for HEAD.)
        let len = r.headers().get("content-length").expect("Content-Length");
        assert_eq!(len.to_str().expect("ascii"), full.len().to_string());

        mirror.set_fault(&p, Fault::TruncateOnce);
        let r = client.get(&url).send().await.expect("headers arrive");
        assert!(r.bytes().await.is_err(), "truncated body is an error");

        mirror.set_fault(&p, Fault::ResetOnce);
        assert!(client.get(&url).send().await.is_err(), "reset is an error");

        mirror.set_fault(&p, Fault::Fail500Once);
        let r = client.get(&url).send().await.expect("500 response");
        assert_eq!(r.status().as_u16(), 500);

        let r = client.get(&url).send().await.expect("ok after faults");
        assert_eq!(r.bytes().await.expect("body"), full);
    });
    // 1 parallel GET + range + 3 faulted + final (reqwest does not retry).
    assert_eq!(mirror.hits(&kubeadm_path(&spec)), 6);
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

// ---------------------------------------------------------------------------------------
// The fault-injecting proxy (support::drip)
// ---------------------------------------------------------------------------------------

#[test]
fn fault_proxy_breaks_the_chosen_gets_and_logs_them() {
    use support::drip::{DripProxy, Fault as ProxyFault, FaultRule};
    use support::registry::http_request;
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    fs::write(dir.path().join("f"), &data).unwrap();
    let mirror = Mirror::start(dir.path());
    let proxy = DripProxy::start(mirror.addr());
    let host = proxy.host();
    let get = |range: Option<&str>| {
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        http_request("GET", &host, "/f", &headers)
    };

    proxy.fault(FaultRule::containing("/f", ProxyFault::Status(503)).times(1));
    assert_eq!(get(None).unwrap().status, 503);
    assert_eq!(mirror.total_gets(), 0, "an injected status does not ask the backend");
    assert_eq!(get(None).unwrap().body, data, "the rule was used up");

    proxy.fault(FaultRule::containing("/f", ProxyFault::Truncate).times(1));
    let e = get(None).unwrap_err().to_string();
    assert!(e.contains("body has 500 of 1000 bytes"), "{e}");
    proxy.fault(FaultRule::containing("/f", ProxyFault::ResetMidBody).times(1));
    assert!(get(None).is_err(), "a reset body cannot be read to its end");

    proxy.fault(FaultRule::containing("/f", ProxyFault::Corrupt).times(2));
    let mut flipped = data.clone();
    flipped[500] ^= 0xff;
    assert_eq!(get(None).unwrap().body, flipped);
    let r = get(Some("bytes=400-")).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (206, &flipped[400..]));

    let log: Vec<(u16, Option<ProxyFault>, Option<String>)> = proxy
        .requests()
        .into_iter()
        .map(|r| (r.status, r.fault, r.range))
        .collect();
    assert_eq!(
        log,
        [
            (503, Some(ProxyFault::Status(503)), None),
            (200, None, None),
            (200, Some(ProxyFault::Truncate), None),
            (200, Some(ProxyFault::ResetMidBody), None),
            (200, Some(ProxyFault::Corrupt), None),
            (206, Some(ProxyFault::Corrupt), Some("bytes=400-".to_string())),
        ]
    );
}
