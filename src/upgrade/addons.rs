//! Add-ons per hop: once every kube-apiserver runs the hop, the bundle's flannel and
//! metrics-server manifests, patched for the cluster as install patches them, are applied
//! again and CoreDNS (which `kubeadm upgrade apply` moved) and every add-on workload are
//! waited for. kubespray's upgrade does the same: it re-applies its network plugin once
//! every control plane is upgraded, before the workers, and the other add-ons from the
//! first control plane (docs/upstream-facts.md, "Upgrades: container runtime and
//! add-ons").

use crate::bundle::verified::VerifiedBundle;
use crate::cluster::Cluster;
use crate::host::Host;
use crate::install::addons::{self, Target, CLUSTER_CONFIG};
use crate::install::InstallError;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AddonsError {
    #[error("step addons: reading the cluster config {CLUSTER_CONFIG}")]
    Config(#[source] crate::cluster::ClusterError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

/// Whether this node can re-apply the add-ons: it keeps the cluster config install wrote.
pub fn can_reapply(host: &Host) -> bool {
    host.is_file(CLUSTER_CONFIG)
}

/// What to tell the user when [`can_reapply`] is false.
pub fn missing_config() -> String {
    format!(
        "warning: {CLUSTER_CONFIG} is missing, so the add-ons (flannel, metrics-server) are not re-applied for this hop; copy the cluster config there and run `kbundle upgrade apply` again on this control plane"
    )
}

/// Applies the bundle's add-ons patched for the cluster and waits (within `timeout`) until
/// CoreDNS and every add-on workload is available.
pub fn reapply(
    host: &Host,
    bundle: &VerifiedBundle,
    kubectl: &Path,
    kubeconfig: &Path,
    timeout: Duration,
) -> Result<(), AddonsError> {
    let cluster = Cluster::load(&host.path(CLUSTER_CONFIG)?).map_err(AddonsError::Config)?;
    let t = Target {
        host,
        bundle,
        cluster: &cluster,
        kubectl: kubectl.to_path_buf(),
        kubeconfig: kubeconfig.to_path_buf(),
        ready_timeout: timeout,
    };
    addons::apply_to(&t)?;
    addons::wait_available_on(&t)?;
    Ok(())
}
