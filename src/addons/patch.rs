//! Edits to add-on manifests before `install` applies them (see the module docs).
//!
//! The manifests are parsed with yaml-edit (lossless: comments and layout of everything
//! not edited stay as upstream wrote them) and edited as Kubernetes objects:
//!
//! * flannel: the `kube-flannel-cfg` ConfigMap's `net-conf.json` gets the cluster's pod
//!   CIDR as `Network` and `EnableNFTables` for kube-proxy's nftables mode
//!   (docs/upstream-facts.md, "Add-ons: metrics-server, flannel, kubelet serving
//!   certificates": flannel net-conf keys).
//! * metrics-server: the container's args get `--kubelet-insecure-tls` while kubelets serve
//!   self-signed certificates, and `--kubelet-preferred-address-types` starting with
//!   `InternalIP` (same section: metrics-server README and kubespray defaults).

use super::scalar;
use std::str::FromStr;
use yaml_edit::{Mapping, Sequence, YamlFile};

/// Why a manifest cannot be patched.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("{manifest}: not YAML kbundle can read")]
    Parse {
        manifest: &'static str,
        #[source]
        source: yaml_edit::YamlError,
    },
    #[error("{manifest}: no {what}; is this the upstream manifest?")]
    Missing { manifest: &'static str, what: String },
    #[error("{manifest}: net-conf.json is not a JSON object")]
    NetConf {
        manifest: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

const FLANNEL: &str = "kube-flannel.yml";
const METRICS: &str = "metrics-server components.yaml";
const INSECURE_TLS: &str = "--kubelet-insecure-tls";
const ADDRESS_TYPES: &str = "--kubelet-preferred-address-types=";
/// kubespray's default and what components.yaml v0.8.0 passes.
const DEFAULT_ADDRESS_TYPES: &str = "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname";

/// A Deployment or DaemonSet a manifest creates, to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Its pods tolerate kubeadm's control-plane taint
    /// (`node-role.kubernetes.io/control-plane:NoSchedule`), so they run on a control plane
    /// that keeps it.
    pub tolerates_control_plane: bool,
}

/// kubeadm's control-plane taint key (docs/upstream-facts.md, "Add-ons: metrics-server,
/// flannel, kubelet serving certificates").
pub const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane";

/// Does one of the pod template's tolerations match the control-plane NoSchedule taint
/// (the taint's key, or any key with `operator: Exists`; effect NoSchedule or any)?
fn tolerates_control_plane(obj: &Mapping) -> bool {
    let tolerations = obj
        .get_mapping("spec")
        .and_then(|s| s.get_mapping("template"))
        .and_then(|t| t.get_mapping("spec"))
        .and_then(|s| s.get_sequence("tolerations"));
    let items: Vec<Mapping> = tolerations
        .map(|t| t.values().filter_map(|v| v.as_mapping().cloned()).collect())
        .unwrap_or_default();
    items.iter().any(|t| {
        let key = scalar(t, "key");
        let key_ok = match key.as_deref() {
            None | Some("") => scalar(t, "operator").as_deref() == Some("Exists"),
            Some(k) => k == CONTROL_PLANE_TAINT,
        };
        let effect_ok = matches!(scalar(t, "effect").as_deref(), None | Some("") | Some("NoSchedule"));
        key_ok && effect_ok
    })
}

/// The parsed file and its documents that are mappings (Kubernetes objects).
fn objects(text: &str, manifest: &'static str) -> Result<(YamlFile, Vec<Mapping>), PatchError> {
    let file = YamlFile::from_str(text).map_err(|source| PatchError::Parse { manifest, source })?;
    let maps = file.documents().filter_map(|d| d.as_mapping()).collect();
    Ok((file, maps))
}

fn meta(obj: &Mapping, key: &str) -> Option<String> {
    obj.get_mapping("metadata").and_then(|m| scalar(&m, key))
}

/// The object of `kind` named `name`.
fn find(objs: &[Mapping], kind: &str, name: &str) -> Option<Mapping> {
    objs.iter()
        .find(|o| scalar(o, "kind").as_deref() == Some(kind) && meta(o, "name").as_deref() == Some(name))
        .cloned()
}

/// Every Deployment and DaemonSet in `text`, in order (namespace `default` when unset).
pub fn workloads(text: &str, manifest: &'static str) -> Result<Vec<Workload>, PatchError> {
    let (_, objs) = objects(text, manifest)?;
    Ok(objs
        .iter()
        .filter_map(|o| {
            let kind = scalar(o, "kind").filter(|k| k == "Deployment" || k == "DaemonSet")?;
            Some(Workload {
                kind,
                namespace: meta(o, "namespace").unwrap_or_else(|| "default".into()),
                name: meta(o, "name")?,
                tolerates_control_plane: tolerates_control_plane(o),
            })
        })
        .collect())
}

/// flannel's manifest with `Network` = `pod_cidr` and `EnableNFTables` = `nftables` in
/// `net-conf.json` (flannel reads it with Go's encoding/json, which matches keys without
/// regard to case: other spellings of the two keys are dropped).
pub fn flannel(text: &str, pod_cidr: &str, nftables: bool) -> Result<String, PatchError> {
    let (file, objs) = objects(text, FLANNEL)?;
    let missing = |what: &str| PatchError::Missing {
        manifest: FLANNEL,
        what: what.to_string(),
    };
    let cm = find(&objs, "ConfigMap", "kube-flannel-cfg").ok_or_else(|| missing("ConfigMap kube-flannel-cfg"))?;
    let data = cm
        .get_mapping("data")
        .ok_or_else(|| missing("data in ConfigMap kube-flannel-cfg"))?;
    let conf = scalar(&data, "net-conf.json").ok_or_else(|| missing("net-conf.json in ConfigMap kube-flannel-cfg"))?;
    let mut json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&conf).map_err(|source| PatchError::NetConf {
            manifest: FLANNEL,
            source,
        })?;
    json.retain(|k, _| !k.eq_ignore_ascii_case("Network") && !k.eq_ignore_ascii_case("EnableNFTables"));
    json.insert("Network".into(), pod_cidr.into());
    json.insert("EnableNFTables".into(), nftables.into());
    let mut out = serde_json::Value::Object(json).to_string();
    out.push('\n');
    data.set("net-conf.json", out.as_str());
    Ok(file.to_string())
}

/// The metrics-server container's `args` sequence.
fn metrics_args(objs: &[Mapping]) -> Result<Sequence, PatchError> {
    let missing = |what: &str| PatchError::Missing {
        manifest: METRICS,
        what: what.to_string(),
    };
    let dep = find(objs, "Deployment", "metrics-server").ok_or_else(|| missing("Deployment metrics-server"))?;
    let containers = dep
        .get_mapping("spec")
        .and_then(|s| s.get_mapping("template"))
        .and_then(|t| t.get_mapping("spec"))
        .and_then(|s| s.get_sequence("containers"))
        .ok_or_else(|| missing("containers in Deployment metrics-server"))?;
    let container = containers
        .values()
        .filter_map(|c| c.as_mapping().cloned())
        .find(|c| scalar(c, "name").as_deref() == Some("metrics-server"))
        .ok_or_else(|| missing("container metrics-server"))?;
    container
        .get_sequence("args")
        .ok_or_else(|| missing("args of container metrics-server"))
}

/// The metrics-server container's args, as YAML reads them.
pub fn metrics_server_args(text: &str) -> Result<Vec<String>, PatchError> {
    let (_, objs) = objects(text, METRICS)?;
    let args = metrics_args(&objs)?;
    Ok(args
        .values()
        .filter_map(|v| v.as_scalar().map(|s| s.as_string()))
        .collect())
}

/// `--kubelet-preferred-address-types=` with `InternalIP` first and the others kept in
/// their order.
fn internal_ip_first(flag: &str) -> String {
    let types = flag.trim_start_matches(ADDRESS_TYPES);
    let rest = types.split(',').filter(|t| !t.is_empty() && *t != "InternalIP");
    let all: Vec<&str> = std::iter::once("InternalIP").chain(rest).collect();
    format!("{ADDRESS_TYPES}{}", all.join(","))
}

/// metrics-server's manifest with `--kubelet-insecure-tls` present exactly once when
/// `insecure_tls` (self-signed kubelet certificates) and absent otherwise, and one
/// `--kubelet-preferred-address-types` that starts with `InternalIP`. Idempotent.
pub fn metrics_server(text: &str, insecure_tls: bool) -> Result<String, PatchError> {
    let (file, objs) = objects(text, METRICS)?;
    let args = metrics_args(&objs)?;
    let items: Vec<String> = args
        .values()
        .map(|v| v.as_scalar().map(|s| s.as_string()).unwrap_or_default())
        .collect();
    let is_tls = |a: &str| a == INSECURE_TLS || a.starts_with("--kubelet-insecure-tls=");
    let types: Vec<usize> = (0..items.len())
        .filter(|i| items[*i].starts_with(ADDRESS_TYPES))
        .collect();
    // Remove from the end so the indices stay valid: every TLS flag, and every
    // address-types flag after the first.
    for i in (0..items.len()).rev() {
        if is_tls(&items[i]) || (items[i].starts_with(ADDRESS_TYPES) && Some(&i) != types.first()) {
            args.remove(i);
        }
    }
    match types.first() {
        Some(&i) => {
            let at = i - (0..i).filter(|j| is_tls(&items[*j])).count();
            args.set(at, internal_ip_first(&items[i]).as_str());
        }
        None => args.push(DEFAULT_ADDRESS_TYPES),
    }
    if insecure_tls {
        args.push(INSECURE_TLS);
    }
    Ok(file.to_string())
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;
