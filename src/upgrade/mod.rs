//! `kbundle upgrade`: moving an installed cluster to a newer Kubernetes release from an
//! upgrade bundle. [`plan`] owns the pure planner (hop chains, kubeadm step order, version
//! skew checks) and touches no host.

pub mod addons;
pub mod apply;
pub mod drain;
pub mod hop_choice;
pub mod observe;
pub mod plan;
pub mod rollback;
pub mod runtime;
pub mod skew;
pub mod stage;
