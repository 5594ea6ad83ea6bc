//! What the cluster runs now: from `kubectl` (nodes' kubelets, each control plane's
//! kube-apiserver image tag) or from a declared `--current` version.

use super::plan::{ClusterState, NodeRole, NodeState};
use crate::host::Host;
use crate::version::Version;
use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Kubectl(#[from] crate::host::HostError),
    #[error("`{argv}` did not print JSON")]
    Json {
        argv: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unexpected answer from `{argv}`: {reason}")]
    Parse { argv: String, reason: String },
}

fn kubectl_json(
    host: &Host,
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
) -> Result<serde_json::Value, ObserveError> {
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args).args(["-o", "json"]);
    let out = host.query(&mut cmd)?;
    serde_json::from_slice(&out.stdout).map_err(|source| ObserveError::Json {
        argv: crate::host::argv_string(&cmd),
        source,
    })
}

/// `kubectl get nodes -o json`, as the API server answers it.
pub fn nodes_json(host: &Host, kubectl: &Path, kubeconfig: &Path) -> Result<serde_json::Value, ObserveError> {
    kubectl_json(host, kubectl, kubeconfig, &["get", "nodes"])
}

/// A version from a kubelet version string or an image tag (`v1.33.7`, `v1.33.7-eks…`).
fn version_of(s: &str) -> Option<Version> {
    let core: String = s
        .trim_start_matches('v')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    core.trim_end_matches('.').parse().ok()
}

/// Each kube-apiserver pod's node and image version.
fn apiserver_versions(pods: &serde_json::Value) -> Vec<(String, Version)> {
    let mut apiservers = Vec::new();
    for p in pods["items"].as_array().into_iter().flatten() {
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
        let image = p["spec"]["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "kube-apiserver").or_else(|| c.first()))
            .and_then(|c| c["image"].as_str())
            .unwrap_or_default();
        let tag = image.rsplit(':').next().unwrap_or_default();
        if let Some(v) = version_of(tag) {
            apiservers.push((node, v));
        }
    }
    apiservers
}

/// Every node with its role and versions (a control plane without an API server pod is
/// taken to run its kubelet's version).
fn node_states(nodes: &serde_json::Value, apiservers: &[(String, Version)]) -> Result<Vec<NodeState>, ObserveError> {
    let parse = |reason: String| ObserveError::Parse {
        argv: "kubectl get nodes".into(),
        reason,
    };
    let mut out = Vec::new();
    for n in nodes["items"].as_array().into_iter().flatten() {
        let name = n["metadata"]["name"]
            .as_str()
            .ok_or_else(|| parse("a node has no name".into()))?
            .to_string();
        let kubelet_s = n["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or_default();
        let kubelet =
            version_of(kubelet_s).ok_or_else(|| parse(format!("node {name}: kubelet version {kubelet_s:?}")))?;
        let labels = &n["metadata"]["labels"];
        let cp = labels.get("node-role.kubernetes.io/control-plane").is_some()
            || labels.get("node-role.kubernetes.io/master").is_some();
        let apiserver = apiservers.iter().find(|(node, _)| *node == name).map(|(_, v)| *v);
        out.push(NodeState {
            name,
            role: if cp { NodeRole::ControlPlane } else { NodeRole::Worker },
            first: false,
            apiserver: if cp { apiserver.or(Some(kubelet)) } else { None },
            kubelet,
        });
    }
    Ok(out)
}

/// Reads nodes and kube-apiserver pods. `first` names the control plane that runs
/// `kubeadm upgrade apply` (default: the first control plane by name).
pub fn from_kubectl(
    host: &Host,
    kubectl: &Path,
    kubeconfig: &Path,
    first: Option<&str>,
) -> Result<ClusterState, ObserveError> {
    let nodes = kubectl_json(host, kubectl, kubeconfig, &["get", "nodes"])?;
    let pods = kubectl_json(
        host,
        kubectl,
        kubeconfig,
        &["get", "pods", "-n", "kube-system", "-l", "component=kube-apiserver"],
    )?;
    let apiservers = apiserver_versions(&pods);
    let mut out = node_states(&nodes, &apiservers)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let first_name = first.map(str::to_string).or_else(|| {
        out.iter()
            .find(|n| n.role == NodeRole::ControlPlane)
            .map(|n| n.name.clone())
    });
    for n in &mut out {
        n.first = Some(&n.name) == first_name.as_ref() && n.role == NodeRole::ControlPlane;
    }
    Ok(ClusterState { nodes: out })
}

/// A cluster known only by its version: one (first) control plane and the workers, named
/// generically.
pub fn from_current(v: Version) -> ClusterState {
    ClusterState {
        nodes: vec![
            NodeState {
                name: "<first control plane>".into(),
                role: NodeRole::ControlPlane,
                first: true,
                apiserver: Some(v),
                kubelet: v,
            },
            NodeState {
                name: "<each worker>".into(),
                role: NodeRole::Worker,
                first: false,
                apiserver: None,
                kubelet: v,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_tags() {
        assert_eq!(version_of("v1.33.7"), Some(Version::new(1, 33, 7)));
        assert_eq!(version_of("v1.33.7-eks-1234"), Some(Version::new(1, 33, 7)));
        assert_eq!(version_of("latest"), None);
    }
}
