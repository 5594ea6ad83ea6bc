//! `kubectl drain` as the upgrade procedure runs it: DaemonSet pods ignored, emptyDir data
//! deleted, kubespray's grace period and timeout. Pods that no controller manages ("bare"
//! pods) would be gone for good, so kubectl's `--force` is never passed by default: when
//! kubectl refuses them, the error names them and `--force-drain`, and nothing is deleted.
//! Facts: docs/upstream-facts.md, "Upgrades: drain, kubeadm backups, hop choice".

use crate::host::{Host, HostError};
use std::process::Command;

/// kubespray `roles/upgrade/pre-upgrade/defaults/main.yml`: `drain_grace_period: 300`.
pub const DEFAULT_GRACE_PERIOD: u64 = 300;
/// kubespray `roles/upgrade/pre-upgrade/defaults/main.yml`: `drain_timeout: 360s`.
pub const DEFAULT_TIMEOUT: u64 = 360;

/// What kubectl prints before the pods it will not delete without `--force`
/// (kubectl `pkg/drain/filters.go` `unmanagedFatal`, in every kubectl release).
const FORCE_MARKER: &str = "(use --force to override): ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOptions {
    /// `--grace-period`, seconds.
    pub grace_period: u64,
    /// `--timeout`, seconds.
    pub timeout: u64,
    /// Pass kubectl's `--force`: delete pods that no controller manages.
    pub force: bool,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            grace_period: DEFAULT_GRACE_PERIOD,
            timeout: DEFAULT_TIMEOUT,
            force: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(
        "step drain: kubectl refuses to drain {node}: these pods have no controller, so deleting them would lose them for good: {}. Nothing was deleted; {node} stays cordoned (`kubectl uncordon {node}` undoes that). Move or delete them yourself and run `kbundle upgrade apply` again, or run it with --force-drain (kubectl drain --force) to delete them",
        pods.join(", ")
    )]
    UnmanagedPods { node: String, pods: Vec<String> },
    #[error("step drain: {node}")]
    Kubectl {
        node: String,
        #[source]
        source: HostError,
    },
}

/// The arguments after `kubectl --kubeconfig FILE`.
pub fn args(node: &str, o: &DrainOptions) -> Vec<String> {
    let mut a: Vec<String> = ["drain", node, "--ignore-daemonsets", "--delete-emptydir-data"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(format!("--grace-period={}", o.grace_period));
    a.push(format!("--timeout={}s", o.timeout));
    if o.force {
        a.push("--force".into());
    }
    a
}

/// Drains `node` with `kubectl` (already carrying `--kubeconfig`).
pub fn drain(host: &Host, mut kubectl: Command, node: &str, o: &DrainOptions) -> Result<(), DrainError> {
    kubectl.args(args(node, o));
    match host.run(&mut kubectl) {
        Ok(_) => Ok(()),
        Err(HostError::Command { stderr, .. }) if !o.force && !unmanaged_pods(&stderr).is_empty() => {
            Err(DrainError::UnmanagedPods {
                node: node.to_string(),
                pods: unmanaged_pods(&stderr),
            })
        }
        Err(source) => Err(DrainError::Kubectl {
            node: node.to_string(),
            source,
        }),
    }
}

/// The `namespace/name` of every pod kubectl's drain error says needs `--force`, in order,
/// once each. kubectl prints them as `<message> (use --force to override): ns/a, ns/b`, on
/// its own line and inside `error: unable to drain node "X" due to error: [...], continuing
/// command...`.
pub fn unmanaged_pods(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let Some((_, rest)) = line.split_once(FORCE_MARKER) else {
            continue;
        };
        let rest = rest.split(", continuing command").next().unwrap_or(rest);
        let rest = rest.split(", cannot delete").next().unwrap_or(rest);
        let rest = rest.split(']').next().unwrap_or(rest);
        for pod in rest.split(", ").map(str::trim) {
            let valid = pod
                .split_once('/')
                .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty());
            if valid && !out.iter().any(|p| p == pod) {
                out.push(pod.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "drain_tests.rs"]
mod tests;
