//! Add-on manifests (kube-flannel.yml, metrics-server's components.yaml, later ones) read
//! and edited as parsed Kubernetes objects, never as text.
//!
//! * [`images`]: the container images a manifest's workloads reference, so a bundle
//!   carries exactly those (builder side).
//! * [`patch`]: the edits `install` makes before applying a manifest (flannel's network
//!   and nftables mode, metrics-server's kubelet TLS flags).

pub mod images;
pub mod patch;
