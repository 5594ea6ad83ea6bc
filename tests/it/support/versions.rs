//! Extra Kubernetes versions on a running loopback upstream: an upgrade bundle's hop through
//! a patch the fixture does not serve (e.g. `--via v1.33.3`) needs that release's kubeadm,
//! kubelet and kubectl on dl.k8s.io and its kubeadm images in the registry.

use super::images::push_k8s_images;
use super::registry::Registry;
use super::upstream::{build_tree, UpstreamSpec};
use std::path::Path;

/// Serves tiny kubeadm/kubelet/kubectl of `version` (`1.33.3`) from the upstream tree at
/// `root` (built under `scratch`) and pushes kubeadm's images for it to `registry`.
pub fn serve_kubernetes(root: &Path, scratch: &Path, registry: &Registry, version: &str) {
    let spec = UpstreamSpec {
        kubernetes: version.into(),
        crictl: crictl_for(version),
        ..UpstreamSpec::v1_34_3()
    }
    .tiny();
    let tree = scratch.join(format!("upstream-{version}"));
    build_tree(&tree, &spec).unwrap();
    let release = format!("dl.k8s.io/release/v{version}");
    std::fs::create_dir_all(root.join("dl.k8s.io/release")).unwrap();
    std::os::unix::fs::symlink(tree.join(&release), root.join(&release)).unwrap();
    push_k8s_images(registry, &format!("v{version}"), &[]);
}

/// cri-tools tracks the Kubernetes minor: `1.33.3` -> `1.33.0`.
fn crictl_for(version: &str) -> String {
    let minor: Vec<&str> = version.split('.').take(2).collect();
    format!("{}.0", minor.join("."))
}
