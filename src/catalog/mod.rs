//! What upstream looks like: each component's release URL layout, checksum file and format,
//! and where its file goes in a bundle. Pure: nothing here touches the network.

pub mod checksum;
pub mod clearsign;
pub mod etcd_tools;
pub mod images;

use crate::manifest::{Arch, Manifest};
use crate::version::Version;
pub use checksum::ChecksumFormat;

/// A component kbundle knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Kubeadm,
    Kubelet,
    Kubectl,
    Containerd,
    Runc,
    CniPlugins,
    Crictl,
    Etcd,
    Flannel,
    MetricsServer,
}

impl Component {
    pub fn as_str(&self) -> &'static str {
        match self {
            Component::Kubeadm => "kubeadm",
            Component::Kubelet => "kubelet",
            Component::Kubectl => "kubectl",
            Component::Containerd => "containerd",
            Component::Runc => "runc",
            Component::CniPlugins => "cni-plugins",
            Component::Crictl => "crictl",
            Component::Etcd => "etcd",
            Component::Flannel => "flannel",
            Component::MetricsServer => "metrics-server",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the published digest of an artifact lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChecksumSource {
    pub url: String,
    pub format: ChecksumFormat,
}

/// One file a bundle carries, as upstream publishes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileArtifact {
    /// Upstream's file name, e.g. `containerd-2.1.5-linux-amd64.tar.gz`.
    pub name: String,
    pub component: Component,
    pub version: Version,
    /// `linux/amd64`, or `None` for arch-independent files (add-on manifests).
    pub platform: Option<String>,
    /// The upstream URL (never a mirror's).
    pub url: String,
    /// Where the file sits inside the bundle directory.
    pub path: String,
    pub executable: bool,
    /// `None`: upstream publishes no checksum; the digest comes from a manifest pin or the lock.
    pub checksum: Option<ChecksumSource>,
}

const GITHUB: &str = "https://github.com";

/// The patch release kbundle picks for an intermediate minor of an upgrade bundle when no
/// manifest beside the target pins one (kubespray v2.30/v2.31's pins).
pub const KUBERNETES_PINS: &[Version] = &[
    Version::new(1, 31, 14),
    Version::new(1, 32, 11),
    Version::new(1, 33, 7),
    Version::new(1, 34, 3),
    Version::new(1, 35, 4),
];
const DL_K8S: &str = "https://dl.k8s.io";

fn artifact(
    component: Component,
    version: Version,
    arch: Option<Arch>,
    url: String,
    executable: bool,
    checksum: Option<ChecksumSource>,
) -> FileArtifact {
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    let path = match arch {
        Some(a) => format!("files/{component}/{version}/linux-{a}/{name}"),
        None => format!("files/{component}/{version}/{name}"),
    };
    FileArtifact {
        name,
        component,
        version,
        platform: arch.map(|a| a.platform()),
        url,
        path,
        executable,
        checksum,
    }
}

fn sums(url: String, format: ChecksumFormat) -> Option<ChecksumSource> {
    Some(ChecksumSource { url, format })
}

/// kubeadm, kubelet and kubectl of one Kubernetes release for one arch.
pub fn kubernetes_binaries(k8s: Version, arch: Arch) -> Vec<FileArtifact> {
    [Component::Kubeadm, Component::Kubelet, Component::Kubectl]
        .into_iter()
        .map(|c| {
            let url = format!("{DL_K8S}/release/{}/bin/linux/{arch}/{c}", k8s.with_v());
            let sum = format!("{url}.sha256");
            artifact(c, k8s, Some(arch), url, true, sums(sum, ChecksumFormat::DigestOnly))
        })
        .collect()
}

/// The node runtime and tools for one arch.
pub fn runtime_files(m: &Manifest, arch: Arch) -> Vec<FileArtifact> {
    let c = &m.components;
    vec![
        containerd(c.containerd, arch),
        runc(c.runc, arch),
        cni_plugins(c.cni_plugins, arch),
        crictl(c.crictl, arch),
        etcd(c.etcd, arch),
    ]
}

/// `containerd-<v>-linux-<arch>.tar.gz`, with a `.sha256sum` beside it.
fn containerd(v: Version, arch: Arch) -> FileArtifact {
    let url = format!(
        "{GITHUB}/containerd/containerd/releases/download/{}/containerd-{v}-linux-{arch}.tar.gz",
        v.with_v()
    );
    let sum = sums(format!("{url}.sha256sum"), ChecksumFormat::Sha256Sum);
    artifact(Component::Containerd, v, Some(arch), url, false, sum)
}

/// `runc.<arch>`; one clear-signed `runc.sha256sum` for every arch.
fn runc(v: Version, arch: Arch) -> FileArtifact {
    let base = format!("{GITHUB}/opencontainers/runc/releases/download/{}", v.with_v());
    let sum = sums(format!("{base}/runc.sha256sum"), ChecksumFormat::ClearSigned);
    artifact(Component::Runc, v, Some(arch), format!("{base}/runc.{arch}"), true, sum)
}

/// `cni-plugins-linux-<arch>-v<v>.tgz`, with a `.sha256` (sha256sum line) beside it.
fn cni_plugins(v: Version, arch: Arch) -> FileArtifact {
    let url = format!(
        "{GITHUB}/containernetworking/plugins/releases/download/{vv}/cni-plugins-linux-{arch}-{vv}.tgz",
        vv = v.with_v()
    );
    let sum = sums(format!("{url}.sha256"), ChecksumFormat::Sha256Sum);
    artifact(Component::CniPlugins, v, Some(arch), url, false, sum)
}

/// `crictl-v<v>-linux-<arch>.tar.gz`, with a digest-only `.sha256` beside it.
fn crictl(v: Version, arch: Arch) -> FileArtifact {
    let url = format!(
        "{GITHUB}/kubernetes-sigs/cri-tools/releases/download/{vv}/crictl-{vv}-linux-{arch}.tar.gz",
        vv = v.with_v()
    );
    let sum = sums(format!("{url}.sha256"), ChecksumFormat::DigestOnly);
    artifact(Component::Crictl, v, Some(arch), url, false, sum)
}

/// `etcd-v<v>-linux-<arch>.tar.gz`; one `SHA256SUMS` for the release (the same layout
/// for 3.5 and 3.6: docs/upstream-facts.md, "etcd tools per server version").
pub fn etcd(v: Version, arch: Arch) -> FileArtifact {
    let base = format!("{GITHUB}/etcd-io/etcd/releases/download/{}", v.with_v());
    let url = format!("{base}/etcd-{}-linux-{arch}.tar.gz", v.with_v());
    let sum = sums(format!("{base}/SHA256SUMS"), ChecksumFormat::Sha256Sum);
    artifact(Component::Etcd, v, Some(arch), url, false, sum)
}

/// Add-on manifests (arch-independent). Upstream publishes no checksums for them.
pub fn addon_files(m: &Manifest) -> Vec<FileArtifact> {
    let mut out = Vec::new();
    if let Some(v) = m.addons.flannel {
        let url = format!(
            "{GITHUB}/flannel-io/flannel/releases/download/{}/kube-flannel.yml",
            v.with_v()
        );
        out.push(artifact(Component::Flannel, v, None, url, false, None));
    }
    if let Some(v) = m.addons.metrics_server {
        let url = format!(
            "{GITHUB}/kubernetes-sigs/metrics-server/releases/download/{}/components.yaml",
            v.with_v()
        );
        out.push(artifact(Component::MetricsServer, v, None, url, false, None));
    }
    out
}

/// Every file a bundle of this manifest carries, sorted by bundle path.
pub fn manifest_files(m: &Manifest) -> Vec<FileArtifact> {
    let mut out = Vec::new();
    for &arch in &m.arches {
        out.extend(kubernetes_binaries(m.kubernetes, arch));
        out.extend(runtime_files(m, arch));
    }
    out.extend(addon_files(m));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(arches: &str) -> Manifest {
        let src = format!(
            "schema = 1\narches = {arches}\n[kubernetes]\nversion = \"v1.34.3\"\n[components]\ncontainerd = \"2.1.5\"\nrunc = \"1.3.4\"\ncni-plugins = \"1.8.0\"\ncrictl = \"1.34.0\"\netcd = \"3.6.5\"\n[addons]\nflannel = \"0.27.3\"\nmetrics-server = \"0.8.0\"\n"
        );
        Manifest::parse(Path::new("m.toml"), &src).unwrap()
    }

    #[test]
    fn upstream_urls() {
        let files = manifest_files(&manifest("[\"amd64\"]"));
        let urls: Vec<&str> = files.iter().map(|f| f.url.as_str()).collect();
        for want in [
            "https://dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm",
            "https://github.com/containerd/containerd/releases/download/v2.1.5/containerd-2.1.5-linux-amd64.tar.gz",
            "https://github.com/opencontainers/runc/releases/download/v1.3.4/runc.amd64",
            "https://github.com/containernetworking/plugins/releases/download/v1.8.0/cni-plugins-linux-amd64-v1.8.0.tgz",
            "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz",
            "https://github.com/etcd-io/etcd/releases/download/v3.6.5/etcd-v3.6.5-linux-amd64.tar.gz",
            "https://github.com/flannel-io/flannel/releases/download/v0.27.3/kube-flannel.yml",
            "https://github.com/kubernetes-sigs/metrics-server/releases/download/v0.8.0/components.yaml",
        ] {
            assert!(urls.contains(&want), "missing {want}");
        }
        assert_eq!(files.len(), 10);
    }

    #[test]
    fn two_arches_unique_paths() {
        let files = manifest_files(&manifest("[\"arm64\", \"amd64\"]"));
        assert_eq!(files.len(), 18);
        let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        paths.dedup();
        assert_eq!(paths.len(), 18);
        assert!(paths.contains(&"files/runc/1.3.4/linux-arm64/runc.arm64"));
    }
}
