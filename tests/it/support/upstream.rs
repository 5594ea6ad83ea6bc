#![allow(dead_code)]
//! Builds a fake "upstream" tree with upstream's real URL layout and real
//! checksum-file formats, to be served by [`super::mirror::Mirror`].
//!
//! The tree root contains one directory per host (`dl.k8s.io/`,
//! `github.com/`), so that `https://dl.k8s.io/X` maps to
//! `<mirror url>/dl.k8s.io/X` (see [`mirror_args`]).
//!
//! Checksum formats (exactly as upstream publishes them):
//!
//! | artifact | checksum file | format |
//! |---|---|---|
//! | kubeadm/kubelet/kubectl | `<bin>.sha256` | 64 hex, no file name, no trailing newline |
//! | containerd tarball | `<tarball>.sha256sum` | `<hex>  <tarball>\n` |
//! | runc.{arch} | one `runc.sha256sum` per release | PGP clear-signed sha256sum lines |
//! | cni-plugins tgz | `<tgz>.sha256` | `<hex>  <tgz>\n` |
//! | etcd tarball | one `SHA256SUMS` per release | sha256sum lines, also for other files |
//! | crictl tarball | `<tarball>.sha256` | `<hex>\n` |
//! | flannel / metrics-server manifests | none | |
//!
//! Tarballs are deterministic: sorted entries, mtime fixed, uid/gid 0,
//! gzip header mtime 0. The gzip header carries the tar file name (as GNU
//! gzip does), which includes the arch, so tarballs differ per arch even with
//! [`Payload::Real`] where the same host binaries are reused for every arch.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flate2::{Compression, GzBuilder};

#[path = "pgp.rs"]
pub mod pgp;
use sha2::{Digest, Sha256};

/// Fixed tar mtime (the same value tar's `HeaderMode::Deterministic` uses).
const TAR_MTIME: u64 = 1_153_704_088;

/// What the binaries in the tree are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Real host binaries from Debian packages (kubectl, containerd, runc,
    /// CNI plugins, etcd); stand-in scripts for kubeadm, kubelet, crictl.
    /// Large (hundreds of MiB per arch): use [`shared_tree`].
    Real,
    /// Every binary is a small generated `#!/bin/sh` script. Fast.
    Tiny,
}

/// Versions (without leading `v`) and arches of a fake upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamSpec {
    pub kubernetes: String,
    pub containerd: String,
    pub runc: String,
    pub cni: String,
    pub crictl: String,
    pub etcd: String,
    pub flannel: String,
    pub metrics_server: String,
    /// Upstream arch names: `amd64`, `arm64`.
    pub arches: Vec<String>,
    pub payload: Payload,
}

impl UpstreamSpec {
    pub fn v1_34_3() -> Self {
        UpstreamSpec {
            kubernetes: "1.34.3".into(),
            containerd: "2.1.5".into(),
            runc: "1.3.4".into(),
            cni: "1.8.0".into(),
            crictl: "1.34.0".into(),
            // etcdctl/etcdutl of kubeadm's etcd minor (3.6.5-0 for v1.34).
            etcd: "3.6.5".into(),
            flannel: "0.27.3".into(),
            metrics_server: "0.8.0".into(),
            arches: vec!["amd64".into()],
            payload: Payload::Real,
        }
    }

    pub fn v1_33_7() -> Self {
        UpstreamSpec {
            kubernetes: "1.33.7".into(),
            crictl: "1.33.0".into(),
            etcd: "3.5.25".into(),
            ..Self::v1_34_3()
        }
    }

    pub fn tiny(mut self) -> Self {
        self.payload = Payload::Tiny;
        self
    }

    pub fn real(mut self) -> Self {
        self.payload = Payload::Real;
        self
    }

    pub fn with_arches(mut self, arches: &[&str]) -> Self {
        self.arches = arches.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Canonical one-line description, used for cache keys.
    fn canonical(&self) -> String {
        format!(
            "k8s={} containerd={} runc={} cni={} crictl={} etcd={} flannel={} metrics-server={} arches={} payload={:?}",
            self.kubernetes,
            self.containerd,
            self.runc,
            self.cni,
            self.crictl,
            self.etcd,
            self.flannel,
            self.metrics_server,
            self.arches.join(","),
            self.payload
        )
    }
}

// ---------------------------------------------------------------------------
// URL layout
// ---------------------------------------------------------------------------

/// One downloadable artifact of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `kubeadm`, `kubelet`, `kubectl`, `containerd`, `runc`, `cni-plugins`,
    /// `etcd`, `crictl`, `flannel`, `metrics-server`.
    pub component: &'static str,
    /// `None` for arch-independent manifests.
    pub arch: Option<String>,
    /// URL path on the mirror, e.g. `/dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm`.
    pub url_path: String,
    /// URL path of the checksum file covering this artifact (`None` for the
    /// manifests: upstream publishes no checksums for them).
    pub checksum_path: Option<String>,
}

impl Artifact {
    /// Upstream URL, e.g. `https://dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm`.
    pub fn upstream_url(&self) -> String {
        format!("https:/{}", self.url_path)
    }

    /// File name (last URL segment).
    pub fn file_name(&self) -> &str {
        self.url_path.rsplit('/').next().unwrap_or_default()
    }
}

pub fn kube_dir(spec: &UpstreamSpec, arch: &str) -> String {
    format!("/dl.k8s.io/release/v{}/bin/linux/{arch}", spec.kubernetes)
}
pub fn containerd_dir(spec: &UpstreamSpec) -> String {
    format!(
        "/github.com/containerd/containerd/releases/download/v{}",
        spec.containerd
    )
}
pub fn runc_dir(spec: &UpstreamSpec) -> String {
    format!("/github.com/opencontainers/runc/releases/download/v{}", spec.runc)
}
pub fn cni_dir(spec: &UpstreamSpec) -> String {
    format!(
        "/github.com/containernetworking/plugins/releases/download/v{}",
        spec.cni
    )
}
pub fn etcd_dir(spec: &UpstreamSpec) -> String {
    format!("/github.com/etcd-io/etcd/releases/download/v{}", spec.etcd)
}
pub fn crictl_dir(spec: &UpstreamSpec) -> String {
    format!(
        "/github.com/kubernetes-sigs/cri-tools/releases/download/v{}",
        spec.crictl
    )
}
pub fn flannel_dir(spec: &UpstreamSpec) -> String {
    format!("/github.com/flannel-io/flannel/releases/download/v{}", spec.flannel)
}
pub fn metrics_server_dir(spec: &UpstreamSpec) -> String {
    format!(
        "/github.com/kubernetes-sigs/metrics-server/releases/download/v{}",
        spec.metrics_server
    )
}

pub fn containerd_tarball(spec: &UpstreamSpec, arch: &str) -> String {
    format!("containerd-{}-linux-{arch}.tar.gz", spec.containerd)
}
pub fn cni_tarball(spec: &UpstreamSpec, arch: &str) -> String {
    format!("cni-plugins-linux-{arch}-v{}.tgz", spec.cni)
}
pub fn etcd_tarball(spec: &UpstreamSpec, arch: &str) -> String {
    format!("etcd-v{}-linux-{arch}.tar.gz", spec.etcd)
}
pub fn crictl_tarball(spec: &UpstreamSpec, arch: &str) -> String {
    format!("crictl-v{}-linux-{arch}.tar.gz", spec.crictl)
}

/// Every artifact (not checksum files) of the tree, in a fixed order.
pub fn artifacts(spec: &UpstreamSpec) -> Vec<Artifact> {
    let mut out = Vec::new();
    let mut push = |component, arch: Option<&str>, url_path: String, checksum: Option<String>| {
        out.push(Artifact {
            component,
            arch: arch.map(str::to_string),
            url_path,
            checksum_path: checksum,
        })
    };
    for arch in &spec.arches {
        let a = Some(arch.as_str());
        let kd = kube_dir(spec, arch);
        for bin in ["kubeadm", "kubelet", "kubectl"] {
            push(bin, a, format!("{kd}/{bin}"), Some(format!("{kd}/{bin}.sha256")));
        }
        let (d, t) = (containerd_dir(spec), containerd_tarball(spec, arch));
        push("containerd", a, format!("{d}/{t}"), Some(format!("{d}/{t}.sha256sum")));
        let d = runc_dir(spec);
        push(
            "runc",
            a,
            format!("{d}/runc.{arch}"),
            Some(format!("{d}/runc.sha256sum")),
        );
        let (d, t) = (cni_dir(spec), cni_tarball(spec, arch));
        push("cni-plugins", a, format!("{d}/{t}"), Some(format!("{d}/{t}.sha256")));
        let (d, t) = (etcd_dir(spec), etcd_tarball(spec, arch));
        push("etcd", a, format!("{d}/{t}"), Some(format!("{d}/SHA256SUMS")));
        let (d, t) = (crictl_dir(spec), crictl_tarball(spec, arch));
        push("crictl", a, format!("{d}/{t}"), Some(format!("{d}/{t}.sha256")));
    }
    push("flannel", None, format!("{}/kube-flannel.yml", flannel_dir(spec)), None);
    push(
        "metrics-server",
        None,
        format!("{}/components.yaml", metrics_server_dir(spec)),
        None,
    );
    out
}

/// URL path of every artifact (not checksum files) in the tree.
pub fn artifact_paths(spec: &UpstreamSpec) -> Vec<String> {
    artifacts(spec).into_iter().map(|a| a.url_path).collect()
}

/// URL paths of all checksum files in the tree (deduplicated, sorted).
pub fn checksum_paths(spec: &UpstreamSpec) -> Vec<String> {
    let mut v: Vec<String> = artifacts(spec).into_iter().filter_map(|a| a.checksum_path).collect();
    v.sort();
    v.dedup();
    v
}

/// `--mirror` arguments mapping both upstream hosts onto a [`super::mirror::Mirror`].
pub fn mirror_args(mirror_url: &str) -> Vec<String> {
    let base = mirror_url.trim_end_matches('/');
    vec![
        "--mirror".into(),
        format!("https://dl.k8s.io={base}/dl.k8s.io"),
        "--mirror".into(),
        format!("https://github.com={base}/github.com"),
    ]
}

/// Local file for a URL path of the tree rooted at `root`.
pub fn local_path(root: &Path, url_path: &str) -> PathBuf {
    root.join(url_path.trim_start_matches('/'))
}

// ---------------------------------------------------------------------------
// Hashing helpers
// ---------------------------------------------------------------------------

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Streams the file through SHA-256.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }
    fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------
// Payload sources
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Source {
    /// A file on the host, streamed.
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// Locates a real host binary or panics naming the Debian package.
fn host_binary(candidates: &[&str], package: &str) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return p.to_path_buf();
        }
    }
    panic!(
        "Payload::Real needs {} (not found); install the Debian package `{package}` \
         (apt-get install {package}) or use Payload::Tiny",
        candidates.join(" or ")
    );
}

pub const CNI_PLUGINS: &[&str] = &[
    "bandwidth",
    "bridge",
    "dhcp",
    "firewall",
    "host-device",
    "host-local",
    "ipvlan",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tuning",
    "vlan",
    "vrf",
];

fn stand_in_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stand-ins")
}

/// A stand-in script from tests/stand-ins with its `DEFAULT_VERSION=` line
/// set to `version` (given without `v`).
fn stand_in(name: &str, version: &str) -> Vec<u8> {
    let path = stand_in_dir().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read stand-in script {}: {e}", path.display()));
    let mut replaced = 0;
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if line.starts_with("DEFAULT_VERSION=") {
            out.push_str(&format!("DEFAULT_VERSION=v{version}"));
            replaced += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(
        replaced,
        1,
        "stand-in {} must contain exactly one DEFAULT_VERSION= line",
        path.display()
    );
    out.into_bytes()
}

/// A small generated shell script standing in for a binary (Payload::Tiny).
/// `version`/`--version`/`-v` print a version line shaped like the real
/// tool's (`version -o short` prints just `v<version>`); every invocation
/// appends `<component> <args>` to `$KBUNDLE_STANDIN_LOG` if set.
pub fn tiny_script(component: &str, version: &str, arch: &str) -> Vec<u8> {
    let long = match component {
        "kubelet" => format!("Kubernetes v{version}"),
        "kubectl" => format!("Client Version: v{version}"),
        "crictl" => format!("crictl version v{version}"),
        "containerd" => format!("containerd github.com/containerd/containerd/v2 v{version}"),
        "runc" => format!("runc version {version}"),
        "etcd" => format!("etcd Version: {version}"),
        // etcdctl/etcdutl `version`: `etcdctl version: 3.6.5` (etcdctl/ctlv3/command/version_command.go).
        "etcdctl" | "etcdutl" => format!("{component} version: {version}"),
        _ => format!("{component} version v{version}"),
    };
    format!(
        r#"#!/bin/sh
# kbundle test fixture (Payload::Tiny): NOT the real {component}, never shipped.
# component={component} version=v{version} os=linux arch={arch}
if [ -n "${{KBUNDLE_STANDIN_LOG:-}}" ]; then
  printf '{component} %s\n' "$*" >>"$KBUNDLE_STANDIN_LOG"
fi
case "$1" in
  version | --version | -v)
    if [ "$2" = "-o" ] && [ "$3" = "short" ]; then echo "v{version}"
    else echo "{long}"; fi ;;
esac
exit 0
"#
    )
    .into_bytes()
}

/// Where the bytes of one binary come from.
fn binary_source(spec: &UpstreamSpec, component: &str, version: &str, arch: &str) -> Source {
    if spec.payload == Payload::Tiny {
        return Source::Bytes(tiny_script(component, version, arch));
    }
    match component {
        "kubeadm" | "kubelet" | "crictl" => Source::Bytes(stand_in(component, version)),
        "kubectl" => Source::Host(host_binary(&["/usr/bin/kubectl"], "kubectl")),
        "containerd" | "containerd-shim-runc-v2" | "ctr" => {
            Source::Host(host_binary(&[&format!("/usr/bin/{component}")], "containerd"))
        }
        "runc" => Source::Host(host_binary(&["/usr/sbin/runc", "/usr/bin/runc"], "runc")),
        "etcd" => Source::Host(host_binary(&["/usr/bin/etcd"], "etcd-server")),
        "etcdctl" => Source::Host(host_binary(&["/usr/bin/etcdctl"], "etcd-client")),
        "etcdutl" => Source::Host(host_binary(&["/usr/bin/etcdutl"], "etcd-client")),
        plugin if CNI_PLUGINS.contains(&plugin) => Source::Host(host_binary(
            &[&format!("/usr/lib/cni/{plugin}"), &format!("/usr/libexec/cni/{plugin}")],
            "containernetworking-plugins",
        )),
        other => panic!("no binary source for {other}"),
    }
}

/// Host files a Real tree depends on (for cache invalidation).
fn real_host_files() -> Vec<PathBuf> {
    let spec = UpstreamSpec::v1_34_3();
    let mut names = vec![
        "kubectl",
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "runc",
        "etcd",
        "etcdctl",
    ];
    names.extend_from_slice(CNI_PLUGINS);
    let mut files: Vec<PathBuf> = names
        .into_iter()
        .filter_map(|n| match binary_source(&spec, n, "0", "amd64") {
            Source::Host(p) => Some(p),
            Source::Bytes(_) => None,
        })
        .collect();
    files.push(PathBuf::from("/usr/bin/etcdutl"));
    files
}

// ---------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) => fs::create_dir_all(p),
        None => Ok(()),
    }
}

/// Writes a bare file (mode 0755) and returns its sha256 hex.
fn write_bare(dest: &Path, src: &Source) -> io::Result<String> {
    create_parent(dest)?;
    let mut out = HashingWriter::new(BufWriter::new(File::create(dest)?));
    match src {
        Source::Host(p) => {
            io::copy(&mut File::open(p)?, &mut out)?;
        }
        Source::Bytes(b) => out.write_all(b)?,
    }
    let (bw, digest) = out.finish();
    bw.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    set_mode(dest, 0o755)?;
    Ok(digest)
}

fn write_text(dest: &Path, text: &str) -> io::Result<()> {
    create_parent(dest)?;
    fs::write(dest, text)?;
    set_mode(dest, 0o644)
}

struct TarEntry {
    /// Exact name bytes in the archive (may start with `./`; dirs end in `/`).
    name: String,
    /// `None` = directory.
    src: Option<Source>,
    mode: u32,
}

impl TarEntry {
    fn dir(name: impl Into<String>) -> Self {
        TarEntry {
            name: name.into(),
            src: None,
            mode: 0o755,
        }
    }
    fn file(name: impl Into<String>, src: Source, mode: u32) -> Self {
        TarEntry {
            name: name.into(),
            src: Some(src),
            mode,
        }
    }
}

/// Writes a deterministic `.tar.gz` and returns its sha256 hex.
fn write_tar_gz(dest: &Path, mut entries: Vec<TarEntry>) -> io::Result<String> {
    create_parent(dest)?;
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .expect("tarball path has a UTF-8 file name");
    // Name stored in the gzip header, as GNU gzip does for `x.tar` -> `x.tar.gz`.
    let inner_name = if let Some(s) = file_name.strip_suffix(".tgz") {
        format!("{s}.tar")
    } else {
        file_name.strip_suffix(".gz").unwrap_or(file_name).to_string()
    };
    let out = HashingWriter::new(BufWriter::new(File::create(dest)?));
    let gz = GzBuilder::new()
        .filename(inner_name)
        .mtime(0)
        .write(out, Compression::fast());
    let mut tb = tar::Builder::new(gz);
    tb.mode(tar::HeaderMode::Deterministic);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(TAR_MTIME);
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            let bytes = e.name.as_bytes();
            assert!(bytes.len() < gnu.name.len(), "tar name too long: {}", e.name);
            gnu.name = [0; 100];
            gnu.name[..bytes.len()].copy_from_slice(bytes);
        }
        match e.src {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_cksum();
                tb.append(&h, io::empty())?;
            }
            Some(Source::Bytes(b)) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(b.len() as u64);
                h.set_cksum();
                tb.append(&h, &b[..])?;
            }
            Some(Source::Host(p)) => {
                let f = File::open(&p)?;
                let len = f.metadata()?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                h.set_cksum();
                tb.append(&h, f.take(len))?;
            }
        }
    }
    let gz = tb.into_inner()?;
    let out = gz.finish()?;
    let (bw, digest) = out.finish();
    bw.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    set_mode(dest, 0o644)?;
    Ok(digest)
}

fn sha256sum_line(digest: &str, name: &str) -> String {
    format!("{digest}  {name}\n")
}

/// Fake but stable digest for files listed in checksum files that the tree
/// does not contain (other OSes, source tarballs, ...).
fn fake_digest(name: &str) -> String {
    sha256_hex(format!("kbundle fixture: not built: {name}").as_bytes())
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

const FLANNEL_MANIFEST: &str = r#"---
kind: Namespace
apiVersion: v1
metadata:
  name: kube-flannel
  labels:
    k8s-app: flannel
    pod-security.kubernetes.io/enforce: privileged
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  labels:
    k8s-app: flannel
  name: flannel
rules:
- apiGroups:
  - ""
  resources:
  - pods
  verbs:
  - get
- apiGroups:
  - ""
  resources:
  - nodes
  verbs:
  - get
  - list
  - watch
- apiGroups:
  - ""
  resources:
  - nodes/status
  verbs:
  - patch
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  labels:
    k8s-app: flannel
  name: flannel
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: flannel
subjects:
- kind: ServiceAccount
  name: flannel
  namespace: kube-flannel
---
apiVersion: v1
kind: ServiceAccount
metadata:
  labels:
    k8s-app: flannel
  name: flannel
  namespace: kube-flannel
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
  labels:
    tier: node
    k8s-app: flannel
    app: flannel
data:
  cni-conf.json: |
    {
      "name": "cbr0",
      "cniVersion": "0.3.1",
      "plugins": [
        {
          "type": "flannel",
          "delegate": {
            "hairpinMode": true,
            "isDefaultGateway": true
          }
        },
        {
          "type": "portmap",
          "capabilities": {
            "portMappings": true
          }
        }
      ]
    }
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan"
      }
    }
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
  labels:
    tier: node
    app: flannel
    k8s-app: flannel
spec:
  selector:
    matchLabels:
      app: flannel
  template:
    metadata:
      labels:
        tier: node
        app: flannel
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: kubernetes.io/os
                operator: In
                values:
                - linux
      hostNetwork: true
      priorityClassName: system-node-critical
      tolerations:
      - operator: Exists
        effect: NoSchedule
      serviceAccountName: flannel
      initContainers:
      - name: install-cni-plugin
        image: ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1
        command:
        - cp
        args:
        - -f
        - /flannel
        - /opt/cni/bin/flannel
        volumeMounts:
        - name: cni-plugin
          mountPath: /opt/cni/bin
      - name: install-cni
        image: ghcr.io/flannel-io/flannel:v@VERSION@
        command:
        - cp
        args:
        - -f
        - /etc/kube-flannel/cni-conf.json
        - /etc/cni/net.d/10-flannel.conflist
        volumeMounts:
        - name: cni
          mountPath: /etc/cni/net.d
        - name: flannel-cfg
          mountPath: /etc/kube-flannel/
      containers:
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v@VERSION@
        command:
        - /opt/bin/flanneld
        args:
        - --ip-masq
        - --kube-subnet-mgr
        resources:
          requests:
            cpu: "100m"
            memory: "50Mi"
        securityContext:
          privileged: false
          capabilities:
            add: ["NET_ADMIN", "NET_RAW"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: EVENT_QUEUE_DEPTH
          value: "5000"
        - name: CONT_WHEN_CACHE_NOT_READY
          value: "false"
        volumeMounts:
        - name: run
          mountPath: /run/flannel
        - name: flannel-cfg
          mountPath: /etc/kube-flannel/
        - name: xtables-lock
          mountPath: /run/xtables.lock
      volumes:
      - name: run
        hostPath:
          path: /run/flannel
      - name: cni-plugin
        hostPath:
          path: /opt/cni/bin
      - name: cni
        hostPath:
          path: /etc/cni/net.d
      - name: flannel-cfg
        configMap:
          name: kube-flannel-cfg
      - name: xtables-lock
        hostPath:
          path: /run/xtables.lock
          type: FileOrCreate
"#;

const METRICS_SERVER_MANIFEST: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  labels:
    k8s-app: metrics-server
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  labels:
    k8s-app: metrics-server
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-view: "true"
  name: system:aggregated-metrics-reader
rules:
- apiGroups:
  - metrics.k8s.io
  resources:
  - pods
  - nodes
  verbs:
  - get
  - list
  - watch
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  labels:
    k8s-app: metrics-server
  name: system:metrics-server
rules:
- apiGroups:
  - ""
  resources:
  - nodes/metrics
  verbs:
  - get
- apiGroups:
  - ""
  resources:
  - pods
  - nodes
  verbs:
  - get
  - list
  - watch
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  labels:
    k8s-app: metrics-server
  name: metrics-server-auth-reader
  namespace: kube-system
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: extension-apiserver-authentication-reader
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  labels:
    k8s-app: metrics-server
  name: metrics-server:system:auth-delegator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  labels:
    k8s-app: metrics-server
  name: system:metrics-server
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:metrics-server
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: v1
kind: Service
metadata:
  labels:
    k8s-app: metrics-server
  name: metrics-server
  namespace: kube-system
spec:
  ports:
  - name: https
    port: 443
    protocol: TCP
    targetPort: https
  selector:
    k8s-app: metrics-server
---
apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    k8s-app: metrics-server
  name: metrics-server
  namespace: kube-system
spec:
  selector:
    matchLabels:
      k8s-app: metrics-server
  strategy:
    rollingUpdate:
      maxUnavailable: 0
  template:
    metadata:
      labels:
        k8s-app: metrics-server
    spec:
      containers:
      - args:
        - --cert-dir=/tmp
        - --secure-port=10250
        - --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname
        - --kubelet-use-node-status-port
        - --metric-resolution=15s
        image: registry.k8s.io/metrics-server/metrics-server:v@VERSION@
        imagePullPolicy: IfNotPresent
        livenessProbe:
          failureThreshold: 3
          httpGet:
            path: /livez
            port: https
            scheme: HTTPS
          periodSeconds: 10
        name: metrics-server
        ports:
        - containerPort: 10250
          name: https
          protocol: TCP
        readinessProbe:
          failureThreshold: 3
          httpGet:
            path: /readyz
            port: https
            scheme: HTTPS
          initialDelaySeconds: 20
          periodSeconds: 10
        resources:
          requests:
            cpu: 100m
            memory: 200Mi
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            drop:
            - ALL
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          runAsUser: 1000
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
        - mountPath: /tmp
          name: tmp-dir
      nodeSelector:
        kubernetes.io/os: linux
      priorityClassName: system-cluster-critical
      serviceAccountName: metrics-server
      volumes:
      - emptyDir: {}
        name: tmp-dir
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  labels:
    k8s-app: metrics-server
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  groupPriorityMinimum: 100
  insecureSkipTLSVerify: true
  service:
    name: metrics-server
    namespace: kube-system
  version: v1beta1
  versionPriority: 100
"#;

pub fn flannel_manifest(version: &str) -> String {
    FLANNEL_MANIFEST.replace("@VERSION@", version)
}

pub fn metrics_server_manifest(version: &str) -> String {
    METRICS_SERVER_MANIFEST.replace("@VERSION@", version)
}

// ---------------------------------------------------------------------------
// Tree builder
// ---------------------------------------------------------------------------

/// Builds the fake upstream tree for `spec` under `root` (created if needed).
///
/// Panics (naming the Debian package) if a host binary needed by
/// [`Payload::Real`] is missing.
pub fn build_tree(root: &Path, spec: &UpstreamSpec) -> io::Result<()> {
    assert!(!spec.arches.is_empty(), "UpstreamSpec.arches must not be empty");
    let tree = Tree { root, spec };
    let mut runc_sums: BTreeMap<String, String> = BTreeMap::new();
    let mut etcd_sums: BTreeMap<String, String> = BTreeMap::new();
    for arch in &spec.arches {
        let arch = arch.as_str();
        tree.kubernetes(arch)?;
        tree.containerd(arch)?;
        runc_sums.extend([tree.runc(arch)?]);
        tree.cni(arch)?;
        etcd_sums.extend([tree.etcd(arch)?]);
        tree.crictl(arch)?;
    }
    tree.runc_sums(runc_sums)?;
    tree.etcd_sums(etcd_sums)?;
    tree.addon_manifests()
}

/// One upstream tree being written: each method writes one release's files.
struct Tree<'a> {
    root: &'a Path,
    spec: &'a UpstreamSpec,
}

impl Tree<'_> {
    fn lp(&self, url_path: &str) -> PathBuf {
        local_path(self.root, url_path)
    }

    /// dl.k8s.io: bare binaries + `<bin>.sha256` (hex only, no newline).
    fn kubernetes(&self, arch: &str) -> io::Result<()> {
        let kd = kube_dir(self.spec, arch);
        for bin in ["kubeadm", "kubelet", "kubectl"] {
            let src = binary_source(self.spec, bin, &self.spec.kubernetes, arch);
            let digest = write_bare(&self.lp(&format!("{kd}/{bin}")), &src)?;
            write_text(&self.lp(&format!("{kd}/{bin}.sha256")), &digest)?;
        }
        Ok(())
    }

    /// containerd: bin/* tarball + `<tarball>.sha256sum` (sha256sum line).
    fn containerd(&self, arch: &str) -> io::Result<()> {
        let spec = self.spec;
        let (d, t) = (containerd_dir(spec), containerd_tarball(spec, arch));
        let entries = ["containerd", "containerd-shim-runc-v2", "ctr"]
            .into_iter()
            .map(|b| {
                TarEntry::file(
                    format!("bin/{b}"),
                    binary_source(spec, b, &spec.containerd, arch),
                    0o755,
                )
            })
            .collect();
        let digest = write_tar_gz(&self.lp(&format!("{d}/{t}")), entries)?;
        write_text(&self.lp(&format!("{d}/{t}.sha256sum")), &sha256sum_line(&digest, &t))
    }

    /// runc: bare `runc.<arch>`; its line of the one clear-signed runc.sha256sum.
    fn runc(&self, arch: &str) -> io::Result<(String, String)> {
        let name = format!("runc.{arch}");
        let src = binary_source(self.spec, "runc", &self.spec.runc, arch);
        let digest = write_bare(&self.lp(&format!("{}/{name}", runc_dir(self.spec))), &src)?;
        Ok((name, digest))
    }

    /// CNI plugins: `./<plugin>` tgz + `<tgz>.sha256` (sha256sum line).
    fn cni(&self, arch: &str) -> io::Result<()> {
        let spec = self.spec;
        let (d, t) = (cni_dir(spec), cni_tarball(spec, arch));
        let readme = format!("Some CNI network plugins, v{} (kbundle test fixture)\n", spec.cni);
        let mut entries = vec![
            TarEntry::dir("./"),
            text_entry("./LICENSE", "Apache License 2.0 (kbundle test fixture)\n"),
            text_entry("./README.md", &readme),
        ];
        for plugin in CNI_PLUGINS {
            let src = binary_source(spec, plugin, &spec.cni, arch);
            entries.push(TarEntry::file(format!("./{plugin}"), src, 0o755));
        }
        let digest = write_tar_gz(&self.lp(&format!("{d}/{t}")), entries)?;
        write_text(&self.lp(&format!("{d}/{t}.sha256")), &sha256sum_line(&digest, &t))
    }

    /// etcd: `etcd-v<V>-linux-<arch>/...` tarball; its line of the one SHA256SUMS.
    fn etcd(&self, arch: &str) -> io::Result<(String, String)> {
        let spec = self.spec;
        let t = etcd_tarball(spec, arch);
        let top = format!("etcd-v{}-linux-{arch}", spec.etcd);
        let readme = format!("# etcd v{} (kbundle test fixture)\n", spec.etcd);
        let mut entries = vec![
            TarEntry::dir(format!("{top}/")),
            text_entry(&format!("{top}/README.md"), &readme),
            text_entry(
                &format!("{top}/README-etcdctl.md"),
                "# etcdctl (kbundle test fixture)\n",
            ),
        ];
        let mut etcd_bins = vec!["etcd", "etcdctl"];
        if spec.payload == Payload::Tiny || Path::new("/usr/bin/etcdutl").is_file() {
            etcd_bins.push("etcdutl");
        }
        for b in etcd_bins {
            let src = binary_source(spec, b, &spec.etcd, arch);
            entries.push(TarEntry::file(format!("{top}/{b}"), src, 0o755));
        }
        let digest = write_tar_gz(&self.lp(&format!("{}/{t}", etcd_dir(spec))), entries)?;
        Ok((t, digest))
    }

    /// crictl: `crictl` tarball + `<tarball>.sha256` (hex + newline).
    fn crictl(&self, arch: &str) -> io::Result<()> {
        let spec = self.spec;
        let (d, t) = (crictl_dir(spec), crictl_tarball(spec, arch));
        let src = binary_source(spec, "crictl", &spec.crictl, arch);
        let digest = write_tar_gz(
            &self.lp(&format!("{d}/{t}")),
            vec![TarEntry::file("crictl", src, 0o755)],
        )?;
        write_text(&self.lp(&format!("{d}/{t}.sha256")), &format!("{digest}\n"))
    }

    /// runc.sha256sum: PGP clear-signed (by the test signer, [`pgp`]), one line per file of the
    /// release.
    fn runc_sums(&self, mut sums: BTreeMap<String, String>) -> io::Result<()> {
        for extra in ["libseccomp-2.5.6.tar.gz", "libseccomp-2.5.6.tar.gz.asc", "runc.tar.xz"] {
            let digest = fake_digest(&format!("runc v{} {extra}", self.spec.runc));
            sums.entry(extra.to_string()).or_insert(digest);
        }
        let text: String = sums.iter().map(|(name, digest)| sha256sum_line(digest, name)).collect();
        let text = pgp::clearsign(&text, &pgp::test_signer_secret())?;
        write_text(&self.lp(&format!("{}/runc.sha256sum", runc_dir(self.spec))), &text)
    }

    /// etcd SHA256SUMS: sorted sha256sum lines incl. files not in the tree.
    fn etcd_sums(&self, mut sums: BTreeMap<String, String>) -> io::Result<()> {
        let v = &self.spec.etcd;
        for extra in [
            format!("etcd-v{v}-darwin-amd64.zip"),
            format!("etcd-v{v}-darwin-arm64.zip"),
            format!("etcd-v{v}-linux-ppc64le.tar.gz"),
            format!("etcd-v{v}-linux-s390x.tar.gz"),
            format!("etcd-v{v}-windows-amd64.zip"),
        ] {
            let digest = fake_digest(&extra);
            sums.entry(extra).or_insert(digest);
        }
        let text: String = sums.iter().map(|(name, digest)| sha256sum_line(digest, name)).collect();
        write_text(&self.lp(&format!("{}/SHA256SUMS", etcd_dir(self.spec))), &text)
    }

    /// Add-on manifests (no checksum files upstream).
    fn addon_manifests(&self) -> io::Result<()> {
        let spec = self.spec;
        write_text(
            &self.lp(&format!("{}/kube-flannel.yml", flannel_dir(spec))),
            &flannel_manifest(&spec.flannel),
        )?;
        write_text(
            &self.lp(&format!("{}/components.yaml", metrics_server_dir(spec))),
            &metrics_server_manifest(&spec.metrics_server),
        )
    }
}

/// A small text file in a tarball, mode 0644.
fn text_entry(path: &str, text: &str) -> TarEntry {
    TarEntry::file(path, Source::Bytes(text.as_bytes().to_vec()), 0o644)
}

// ---------------------------------------------------------------------------
// Shared, cached trees
// ---------------------------------------------------------------------------

fn fixtures_base() -> PathBuf {
    let base = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    base.join("kbundle-fixtures")
}

/// Cache key: spec, the builder's own source, the stand-in scripts and (for
/// Real) the identity of the host binaries. Returns (spec part, code part).
fn cache_key(spec: &UpstreamSpec) -> (String, String) {
    let spec_hash = sha256_hex(spec.canonical().as_bytes());
    let mut h = Sha256::new();
    h.update(include_str!("upstream.rs").as_bytes());
    h.update(include_str!("pgp.rs").as_bytes());
    h.update(include_str!("../fixtures/pgp/test-signer.sec.asc").as_bytes());
    for name in ["kubeadm", "kubelet", "crictl"] {
        let p = stand_in_dir().join(name);
        h.update(name.as_bytes());
        h.update(fs::read(&p).unwrap_or_default());
    }
    if spec.payload == Payload::Real {
        for p in real_host_files() {
            h.update(p.to_string_lossy().as_bytes());
            if let Ok(m) = fs::metadata(&p) {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                h.update(format!(":{}:{mtime};", m.len()).as_bytes());
            }
        }
    }
    (spec_hash, hex::encode(h.finalize()))
}

/// Builds the tree for `spec` once into a shared cache directory
/// (`$CARGO_TARGET_TMPDIR/kbundle-fixtures/…`, falling back to the system
/// temp dir) and returns its root. Safe when several threads or processes
/// race: each builds into its own temp dir and renames it into place; the
/// loser discards its copy. Within one process, builds are serialized.
///
/// Do NOT modify files in the returned tree (copy it first); other tests
/// share it.
pub fn shared_tree(spec: &UpstreamSpec) -> PathBuf {
    static BUILD_LOCK: Mutex<()> = Mutex::new(());

    let base = fixtures_base();
    let (spec_hash, code_hash) = cache_key(spec);
    let payload = match spec.payload {
        Payload::Real => "real",
        Payload::Tiny => "tiny",
    };
    let prefix = format!(
        "k{}-{payload}-{}-{}-",
        spec.kubernetes,
        spec.arches.join("+"),
        &spec_hash[..12]
    );
    let dest = base.join(format!("{prefix}{}", &code_hash[..12]));

    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if dest.is_dir() {
        return dest;
    }
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("create fixture cache dir {}: {e}", base.display()));
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("create temp dir in {}: {e}", base.display()));
    build_tree(tmp.path(), spec).unwrap_or_else(|e| panic!("build upstream tree for {}: {e}", spec.canonical()));
    match fs::rename(tmp.path(), &dest) {
        Ok(()) => {
            // `tmp` now points at nothing; dropping it is a no-op.
            // Prune trees of the same spec built by older fixture code.
            if let Ok(rd) = fs::read_dir(&base) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&prefix) && e.path() != dest {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        // Another process won the race; our copy is removed when `tmp` drops.
        Err(_) if dest.is_dir() => {}
        Err(e) => panic!("rename {} -> {}: {e}", tmp.path().display(), dest.display()),
    }
    dest
}
