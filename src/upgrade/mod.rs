//! `kbundle upgrade`: moving an installed cluster to a newer Kubernetes release from an
//! upgrade bundle. [`plan`] owns the pure planner (hop chains, kubeadm step order, version
//! skew checks) and touches no host.

pub mod apply;
pub mod observe;
pub mod plan;
pub mod skew;
pub mod stage;
