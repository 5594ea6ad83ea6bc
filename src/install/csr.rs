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
//! The request (`spec.request`, a PEM PKCS#10 certification request) is read in-process by
//! the x509-parser crate from its DER: its self-signature is verified with its own public
//! key, the subject is compared RDN by RDN, and the subjectAltName names are taken by kind
//! (any kind but DNS name and IP address is refused). No openssl is run.

use crate::cluster::{Cluster, Node};
use crate::host::{Host, HostError};
use base64::Engine;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use x509_parser::certification_request::{X509CertificationRequest, X509CertificationRequestInfo};
use x509_parser::cri_attributes::{ExtensionRequest, ParsedCriAttribute};
use x509_parser::error::{PEMError, X509Error};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_X509_COMMON_NAME, OID_X509_EXT_SUBJECT_ALT_NAME, OID_X509_ORGANIZATION_NAME};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

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

/// One attribute of a subject RDN, with its string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// commonName (2.5.4.3).
    Cn(String),
    /// organizationName (2.5.4.10).
    O(String),
    /// Any other attribute type (dotted OID).
    Other { oid: String, value: String },
}

/// What one request asks for, read from its DER after its self-signature verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The subject's RDNs in encoded order, each with its attributes (more than one when
    /// multi-valued).
    pub subject: Vec<Vec<Attr>>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Any other kind of name (email, URI, …), described.
    pub other: Vec<String>,
}

/// Why a CSR's `spec.request` cannot be read as a request to decide on.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("spec.request is not base64")]
    Base64(#[source] base64::DecodeError),
    #[error("spec.request is not a PEM block")]
    Pem(#[source] x509_parser::nom::Err<PEMError>),
    #[error("spec.request is a PEM {0:?} block, not a CERTIFICATE REQUEST")]
    Label(String),
    #[error("spec.request is not a DER PKCS#10 certification request")]
    Der(#[source] x509_parser::nom::Err<X509Error>),
    #[error("spec.request has {0} bytes after the certification request")]
    Trailing(usize),
    #[error("the request's signature does not verify with its own public key")]
    Signature(#[source] X509Error),
    #[error("subject attribute {oid} is not a string")]
    NotAString {
        oid: String,
        #[source]
        source: X509Error,
    },
    #[error("the request has more than one extensionRequest attribute")]
    ExtensionRequests,
    #[error("the request has more than one subjectAltName extension")]
    SanExtensions,
    #[error("the request's subjectAltName extension cannot be read")]
    San,
}

/// Reads a PEM `CERTIFICATE REQUEST` (PKCS#10, RFC 2986) with x509-parser: verifies its
/// self-signature with its own public key, then reads its subject and the subjectAltName
/// of its extension request.
pub fn parse_request(pem: &[u8]) -> Result<Request, RequestError> {
    let (_, block) = parse_x509_pem(pem).map_err(RequestError::Pem)?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(RequestError::Label(block.label));
    }
    let (rest, csr) = X509CertificationRequest::from_der(&block.contents).map_err(RequestError::Der)?;
    if !rest.is_empty() {
        return Err(RequestError::Trailing(rest.len()));
    }
    csr.verify_signature().map_err(RequestError::Signature)?;
    let info = &csr.certification_request_info;
    let mut req = Request {
        subject: subject(&info.subject)?,
        ..Request::default()
    };
    for name in requested_names(info)? {
        add_name(&mut req, name);
    }
    Ok(req)
}

fn subject(name: &X509Name) -> Result<Vec<Vec<Attr>>, RequestError> {
    name.iter_rdn().map(|rdn| rdn.iter().map(attr).collect()).collect()
}

fn attr(a: &AttributeTypeAndValue) -> Result<Attr, RequestError> {
    let oid = a.attr_type();
    let value = a.as_str().map_err(|source| RequestError::NotAString {
        oid: oid.to_id_string(),
        source,
    })?;
    Ok(if *oid == OID_X509_COMMON_NAME {
        Attr::Cn(value.to_string())
    } else if *oid == OID_X509_ORGANIZATION_NAME {
        Attr::O(value.to_string())
    } else {
        Attr::Other {
            oid: oid.to_id_string(),
            value: value.to_string(),
        }
    })
}

/// The names of the request's one subjectAltName extension (none without one).
fn requested_names<'a>(info: &'a X509CertificationRequestInfo<'a>) -> Result<&'a [GeneralName<'a>], RequestError> {
    let requests: Vec<&ExtensionRequest> = info
        .iter_attributes()
        .filter_map(|a| match a.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(r) => Some(r),
            _ => None,
        })
        .collect();
    let extensions = match requests.as_slice() {
        [] => return Ok(&[]),
        [r] => &r.extensions,
        _ => return Err(RequestError::ExtensionRequests),
    };
    let sans: Vec<_> = extensions
        .iter()
        .filter(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
        .collect();
    match sans.as_slice() {
        [] => Ok(&[]),
        [e] => match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Ok(&san.general_names),
            _ => Err(RequestError::San),
        },
        _ => Err(RequestError::SanExtensions),
    }
}

fn add_name(req: &mut Request, name: &GeneralName) {
    match name {
        GeneralName::DNSName(d) => req.dns.push(d.to_string()),
        GeneralName::IPAddress(b) => match ip(b) {
            Some(ip) => req.ips.push(ip),
            None => req.other.push(format!("IP address of {} bytes", b.len())),
        },
        GeneralName::RFC822Name(e) => req.other.push(format!("email {e}")),
        other => req.other.push(other.to_string()),
    }
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

/// `subject` as `/O="…"/CN="…"` (encoded order, values quoted, `+` within an RDN).
fn show_subject(subject: &[Vec<Attr>]) -> String {
    let show = |a: &Attr| match a {
        Attr::Cn(v) => format!("CN={v:?}"),
        Attr::O(v) => format!("O={v:?}"),
        Attr::Other { oid, value } => format!("{oid}={value:?}"),
    };
    let rdns: Vec<String> = subject
        .iter()
        .map(|rdn| rdn.iter().map(show).collect::<Vec<_>>().join("+"))
        .collect();
    format!("/{}", rdns.join("/"))
}

/// The decision on one pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    /// Left pending, and why.
    Leave(String),
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

/// Does the request ask for exactly `node`'s identity: its subject (two single-valued RDNs,
/// CN `system:node:<name>` and O `system:nodes`, in either order), and no names but the
/// node's name and its configured address?
pub fn check_request(req: &Request, node: &Node) -> Result<(), String> {
    let cn = Attr::Cn(format!("system:node:{}", node.name));
    let o = Attr::O("system:nodes".into());
    let ok = [vec![vec![cn.clone()], vec![o.clone()]], vec![vec![o], vec![cn]]];
    if !ok.contains(&req.subject) {
        return Err(format!(
            "subject {} is not CN=system:node:{} with O=system:nodes",
            show_subject(&req.subject),
            node.name
        ));
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

/// The request in `item`'s spec.request (base64 of a PEM block), its signature verified.
fn read_request(item: &Item) -> Result<Request, RequestError> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(item.spec.request.trim())
        .map_err(RequestError::Base64)?;
    parse_request(&pem)
}

/// `e` and its sources, joined with ": ".
fn reason(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn decide(item: &Item, cluster: &Cluster) -> Verdict {
    let checked = requesting_node(item, cluster).and_then(|node| {
        let req = read_request(item).map_err(|e| reason(&e))?;
        check_request(&req, node)
    });
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
        let verdict = decide(item, cluster);
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
