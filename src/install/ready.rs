//! Waiting for a node to become Ready, as `install` and `upgrade apply` both do.

use crate::host::sys::Stdin;
use crate::host::Host;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A node that did not become Ready in time, with kubectl's last answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {node} not Ready after {timeout:?} (last answer: {last:?})")]
pub struct NotReady {
    pub node: String,
    pub timeout: Duration,
    pub last: String,
}

const READY: &str = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";

/// Polls `kubectl get node NODE` every 2 s until its Ready condition is `True`. On timeout,
/// the error is the last answer kubectl gave.
pub fn wait_node_ready(
    host: &Host,
    kubectl: &Path,
    kubeconfig: &Path,
    node: &str,
    timeout: Duration,
) -> Result<(), NotReady> {
    if host.dry_run() {
        host.say(&format!("wait until node {node} is Ready (timeout {timeout:?})"));
        return Ok(());
    }
    let mut last = String::new();
    let ready = host.poll(timeout, Duration::from_secs(2), || {
        let mut k = Command::new(kubectl);
        k.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["get", "node", node, "-o", READY]);
        match host.exec(&mut k, Stdin::Null, None) {
            Ok(r) if r.status.success() && String::from_utf8_lossy(&r.stdout).trim() == "True" => Some(()),
            Ok(r) => {
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&r.stdout).trim(),
                    String::from_utf8_lossy(&r.stderr).trim()
                );
                None
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    });
    ready.ok_or_else(|| NotReady {
        node: node.to_string(),
        timeout,
        last,
    })
}
