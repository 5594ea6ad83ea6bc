//! Approving kubelet serving certificates (`kubelet-serving-certs = "cluster-signed"`).
//!
//! With `serverTLSBootstrap: true` every kubelet asks for its serving certificate through a
//! CertificateSigningRequest with signer `kubernetes.io/kubelet-serving`, and nothing in
//! the cluster approves those (kube-controller-manager's approver handles only kubelet
//! client certificates): docs/upstream-facts.md, "Add-ons: metrics-server, flannel,
//! kubelet serving certificates". `kbundle csr-approve` approves exactly the requests of
//! the cluster config's own nodes: requestor `system:node:<name>`, subject
//! `CN=system:node:<name>, O=system:nodes`, subject alternative names only the node's name
//! and its configured address, serving usages only. Everything else is left pending, with
//! the reason printed.
//!
//! No X.509 crate is available offline (Cargo.lock and the registry have none), so the
//! request is read by `openssl req` on the node, through the node seam.

use crate::cluster::{Cluster, Node};
use crate::host::sys::Stdin;
use crate::host::{Host, HostError};
use base64::Engine;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("`kubectl get csr -o json` did not print a CertificateSigningRequest list")]
    List(#[source] serde_json::Error),
}

#[derive(Debug, Deserialize)]
struct List {
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    metadata: Meta,
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Deserialize)]
struct Meta {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    signer_name: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    usages: Vec<String>,
    #[serde(default)]
    request: String,
}

#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Debug, Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
}

impl Item {
    /// Neither approved, denied nor failed yet.
    fn pending(&self) -> bool {
        !self
            .status
            .conditions
            .iter()
            .any(|c| matches!(c.kind.as_str(), "Approved" | "Denied" | "Failed"))
    }
}

/// What one request asks for, as openssl reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// RFC 2253 form, most specific RDN first (`CN=…,O=…`).
    pub subject: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Any other kind of name (email, URI, …), as openssl prints it.
    pub other: Vec<String>,
}

/// The decision on one pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    /// Left pending, and why.
    Leave(String),
}

/// The arguments that make `openssl req` print the subject and the requested extensions.
pub const OPENSSL_ARGS: [&str; 8] = [
    "req",
    "-noout",
    "-subject",
    "-nameopt",
    "RFC2253",
    "-text",
    "-reqopt",
    "no_header,no_version,no_subject,no_pubkey,no_sigdump,no_signame",
];

/// Reads `openssl req` output (see [`OPENSSL_ARGS`]).
pub fn parse_openssl(text: &str) -> Result<Request, String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let subjects: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("subject=")).collect();
    let [subject] = subjects.as_slice() else {
        return Err(format!("openssl printed {} subject lines", subjects.len()));
    };
    let mut req = Request {
        subject: subject.to_string(),
        ..Request::default()
    };
    let headers: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("X509v3 Subject Alternative Name:"))
        .collect();
    let names = match headers.as_slice() {
        [] => "",
        [i] => lines.get(i + 1).copied().unwrap_or(""),
        _ => return Err("more than one subjectAltName extension".into()),
    };
    for name in names.split(", ").filter(|n| !n.is_empty()) {
        if let Some(d) = name.strip_prefix("DNS:") {
            req.dns.push(d.to_string());
        } else if let Some(ip) = name.strip_prefix("IP Address:").and_then(|i| i.parse().ok()) {
            req.ips.push(ip);
        } else {
            req.other.push(name.to_string());
        }
    }
    Ok(req)
}

/// The node of the cluster config whose kubelet sent `item`, if the CSR's own fields
/// (signer, requestor, usages) are those of a kubelet serving certificate request.
fn requesting_node<'a>(item: &Item, cluster: &'a Cluster) -> Result<&'a Node, String> {
    if item.spec.signer_name != SIGNER {
        return Err(format!("signer {:?} is not {SIGNER}", item.spec.signer_name));
    }
    let name = item
        .spec
        .username
        .strip_prefix("system:node:")
        .ok_or_else(|| format!("requested by {:?}, not a node", item.spec.username))?;
    let node = cluster
        .node(name)
        .ok_or_else(|| format!("node {name:?} is not in {}", cluster.path.display()))?;
    let allowed = ["digital signature", "key encipherment", "server auth"];
    let odd: Vec<&String> = item
        .spec
        .usages
        .iter()
        .filter(|u| !allowed.contains(&u.as_str()))
        .collect();
    if !odd.is_empty() || !item.spec.usages.iter().any(|u| u == "server auth") {
        return Err(format!("usages {:?} are not a serving certificate's", item.spec.usages));
    }
    Ok(node)
}

/// Does the request ask for exactly `node`'s identity: its subject, and no names but the
/// node's name and its configured address?
pub fn check_request(req: &Request, node: &Node) -> Result<(), String> {
    let cn = format!("CN=system:node:{}", node.name);
    let ok_subjects = [format!("{cn},O=system:nodes"), format!("O=system:nodes,{cn}")];
    if !ok_subjects.contains(&req.subject) {
        return Err(format!("subject {:?} is not {:?}", req.subject, ok_subjects[0]));
    }
    if let Some(o) = req.other.first() {
        return Err(format!("asks for the name {o:?}"));
    }
    if let Some(d) = req.dns.iter().find(|d| d.as_str() != node.name.as_str()) {
        return Err(format!("asks for DNS name {d:?}, not the node's name {}", node.name));
    }
    if let Some(ip) = req.ips.iter().find(|ip| **ip != node.address) {
        return Err(format!(
            "asks for IP address {ip}, not the node's address {}",
            node.address
        ));
    }
    if req.dns.is_empty() && req.ips.is_empty() {
        return Err("asks for no DNS name or IP address".into());
    }
    Ok(())
}

fn kubectl(kubectl: &Path, kubeconfig: &Path) -> Command {
    let mut k = Command::new(kubectl);
    k.arg("--kubeconfig").arg(kubeconfig);
    k
}

/// The request of `item`, read by openssl on the node.
fn read_request(host: &Host, item: &Item) -> Result<Request, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(item.spec.request.trim())
        .map_err(|e| format!("spec.request is not base64: {e}"))?;
    let mut cmd = Command::new("openssl");
    cmd.args(OPENSSL_ARGS);
    let out = host
        .query_with(&mut cmd, Stdin::Bytes(&pem))
        .map_err(|e| format!("openssl cannot read the request: {e}"))?;
    parse_openssl(&String::from_utf8_lossy(&out.stdout))
}

fn decide(host: &Host, item: &Item, cluster: &Cluster) -> Verdict {
    let checked = requesting_node(item, cluster).and_then(|node| check_request(&read_request(host, item)?, node));
    match checked {
        Ok(()) => Verdict::Approve,
        Err(why) => Verdict::Leave(why),
    }
}

/// One pass: every pending CSR is decided, and approved ones are approved with
/// `kubectl certificate approve`. Returns each pending CSR's name and verdict.
pub fn pass(
    host: &Host,
    kubectl_bin: &Path,
    kubeconfig: &Path,
    cluster: &Cluster,
) -> Result<Vec<(String, Verdict)>, CsrError> {
    let out = host.query(kubectl(kubectl_bin, kubeconfig).args(["get", "csr", "-o", "json"]))?;
    let list: List = serde_json::from_slice(&out.stdout).map_err(CsrError::List)?;
    let mut decided = Vec::new();
    for item in list.items.iter().filter(|i| i.pending()) {
        let verdict = decide(host, item, cluster);
        match &verdict {
            Verdict::Approve => {
                host.run(kubectl(kubectl_bin, kubeconfig).args(["certificate", "approve", &item.metadata.name]))?;
                println!("    approved CSR {} ({})", item.metadata.name, item.spec.username);
            }
            Verdict::Leave(why) => println!("    left CSR {} pending: {why}", item.metadata.name),
        }
        decided.push((item.metadata.name.clone(), verdict));
    }
    Ok(decided)
}

pub const SERVICE: &str = "/etc/systemd/system/kbundle-csr-approve.service";
pub const TIMER: &str = "/etc/systemd/system/kbundle-csr-approve.timer";
pub const TIMER_WANTS: &str = "/etc/systemd/system/timers.target.wants/kbundle-csr-approve.timer";

/// The one-shot service running `exe csr-approve --once` (each run bounded to 60 s).
pub fn service_unit(exe: &str) -> String {
    format!(
        "\
# Installed by kbundle: approves kubelet serving certificates of the cluster's own nodes.
[Unit]
Description=kbundle: approve kubelet serving CSRs of the nodes in /etc/kbundle/cluster.toml
After=kubelet.service
ConditionPathExists=/etc/kubernetes/admin.conf

[Service]
Type=oneshot
ExecStart={exe} csr-approve --config /etc/kbundle/cluster.toml --once
TimeoutStartSec=60
"
    )
}

/// The timer starting [`service_unit`] every 30 s.
pub fn timer_unit() -> String {
    "\
# Installed by kbundle: runs kbundle-csr-approve.service every 30 s.
[Unit]
Description=kbundle: approve kubelet serving CSRs every 30 s

[Timer]
OnBootSec=30s
OnUnitActiveSec=30s
AccuracySec=5s

[Install]
WantedBy=timers.target
"
    .to_string()
}

#[cfg(test)]
#[path = "csr_tests.rs"]
mod tests;
