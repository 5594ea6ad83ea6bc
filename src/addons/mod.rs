//! Add-on manifests (kube-flannel.yml, metrics-server's components.yaml, later ones) read
//! and edited as parsed Kubernetes objects, never as text.
//!
//! * [`images`]: the container images a manifest's workloads reference, so a bundle
//!   carries exactly those (builder side).
//! * [`patch`]: the edits `install` makes before applying a manifest (flannel's network
//!   and nftables mode, metrics-server's kubelet TLS flags).

pub mod images;
pub mod patch;

use yaml_edit::Mapping;

/// The text of `key` in `map` when its value is a scalar (shared by [`images`] and
/// [`patch`]).
pub(crate) fn scalar(map: &Mapping, key: &str) -> Option<String> {
    map.get(key)?.as_scalar().map(|s| s.as_string())
}
