//! Waiting for a node to become Ready, as `install` and `upgrade apply` both do.

use crate::host::sys::Stdin;
use crate::host::Host;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const READY: &str = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";

/// Polls `kubectl get node NODE` every 2 s until its Ready condition is `True`. On timeout,
/// the error is the last answer kubectl gave.
pub fn wait_node_ready(
    host: &Host,
    kubectl: &Path,
    kubeconfig: &Path,
    node: &str,
    timeout: Duration,
) -> Result<(), String> {
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
    ready.ok_or(last)
}
