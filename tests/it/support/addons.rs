#![allow(dead_code)]
//! Changing an upstream tree's add-on manifests and kubeadm, for the tests of add-on images
//! read from the manifests and of the kubeadm image cross-check. Work on a private tree
//! ([`private_tree`]), never on a [`super::upstream::shared_tree`].

use super::upstream::{
    flannel_dir, flannel_manifest, kube_dir, local_path, metrics_server_dir, metrics_server_manifest, sha256_hex,
    UpstreamSpec,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A fresh upstream tree of `spec` under `dir/upstream`, the test's own to change.
pub fn private_tree(dir: &Path, spec: &UpstreamSpec) -> PathBuf {
    let root = dir.join("upstream");
    super::upstream::build_tree(&root, spec).expect("build upstream tree");
    root
}

/// The test tree's kube-flannel.yml with its two images replaced: the CNI plugin init
/// container's and flannel's own (both init container and daemon).
pub fn flannel_manifest_with(spec: &UpstreamSpec, cni_plugin: &str, flannel: &str) -> String {
    let text = flannel_manifest(&spec.flannel);
    let cni = "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1";
    let own = format!("ghcr.io/flannel-io/flannel:v{}", spec.flannel);
    assert!(
        text.contains(cni) && text.contains(&own),
        "fixture kube-flannel.yml changed"
    );
    text.replace(cni, cni_plugin).replace(&own, flannel)
}

/// The test tree's components.yaml with metrics-server's image replaced.
pub fn metrics_server_manifest_with(spec: &UpstreamSpec, image: &str) -> String {
    let text = metrics_server_manifest(&spec.metrics_server);
    let own = format!("registry.k8s.io/metrics-server/metrics-server:v{}", spec.metrics_server);
    assert!(text.contains(&own), "fixture components.yaml changed");
    text.replace(&own, image)
}

/// Serves `text` as the release's kube-flannel.yml (upstream publishes no checksum for it).
pub fn serve_flannel_manifest(root: &Path, spec: &UpstreamSpec, text: &str) {
    let p = local_path(root, &format!("{}/kube-flannel.yml", flannel_dir(spec)));
    std::fs::write(p, text).expect("write kube-flannel.yml");
}

/// Serves `text` as the release's components.yaml.
pub fn serve_metrics_server_manifest(root: &Path, spec: &UpstreamSpec, text: &str) {
    let p = local_path(root, &format!("{}/components.yaml", metrics_server_dir(spec)));
    std::fs::write(p, text).expect("write components.yaml");
}

/// Serves `script` as the release's kubeadm for `arch`, with its `.sha256` as dl.k8s.io
/// publishes it (the hex digest only, no newline).
pub fn serve_kubeadm(root: &Path, spec: &UpstreamSpec, arch: &str, script: &str) {
    let dir = kube_dir(spec, arch);
    let bin = local_path(root, &format!("{dir}/kubeadm"));
    std::fs::write(&bin, script).expect("write kubeadm");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod kubeadm");
    let sum = local_path(root, &format!("{dir}/kubeadm.sha256"));
    std::fs::write(sum, sha256_hex(script.as_bytes())).expect("write kubeadm.sha256");
}

/// A stand-in kubeadm: `config images list --kubernetes-version V` prints `images`, one per
/// line, as kubeadm does; every call appends its arguments to `log` (a fixed path, since
/// kbundle runs it with an empty environment). Anything else fails, as an unknown command
/// of the real kubeadm does.
pub fn kubeadm_stand_in(log: &Path, images: &[String]) -> String {
    format!(
        "#!/bin/sh\n# kbundle test stand-in for kubeadm: NOT the real kubeadm\n\
         printf '%s\\n' \"$*\" >>'{log}'\n\
         if [ \"$1 $2 $3 $4\" = \"config images list --kubernetes-version\" ] && [ -n \"$5\" ]; then\n\
         cat <<'EOF'\n{list}\nEOF\n  exit 0\nfi\n\
         echo \"unknown command: $*\" >&2\nexit 1\n",
        log = log.display(),
        list = images.join("\n"),
    )
}
