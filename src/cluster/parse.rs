//! `cluster.toml` text to [`Cluster`]: serde reads the shape (unknown keys refused), then
//! each value becomes its [`super::values`] type here, so an error names the value's
//! `file:line:col` and its field.

use super::{
    Cluster, ClusterError, Firewall, Join, KubeletServingCerts, Node, Os, Problem, ProxyMode, Role, Selinux, ValueError,
};
use crate::manifest::line_col;
use serde::Deserialize;
use std::path::Path;
use std::str::FromStr;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    cluster: RawCluster,
    #[serde(default)]
    join: Option<RawJoin>,
    #[serde(default)]
    os: Option<Os>,
    #[serde(default, rename = "node")]
    nodes: Vec<RawNode>,
    #[serde(default)]
    trust: Option<RawTrust>,
}

/// `[trust] keys = ["RW…"]`: inline public keys (the base64 line of a kbundle.pub), so the
/// config carries them to kickstarted nodes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    #[serde(default)]
    keys: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCluster {
    name: Spanned<String>,
    control_plane_endpoint: Spanned<String>,
    #[serde(default = "default_pod_cidr")]
    pod_cidr: Spanned<String>,
    #[serde(default = "default_service_cidr")]
    service_cidr: Spanned<String>,
    #[serde(default = "default_dns_domain")]
    dns_domain: Spanned<String>,
    #[serde(default = "default_firewall")]
    firewall: Firewall,
    #[serde(default)]
    proxy_mode: ProxyMode,
    #[serde(default)]
    selinux: Selinux,
    #[serde(default)]
    kubelet_serving_certs: KubeletServingCerts,
    #[serde(default)]
    registry_mirror: Option<Spanned<String>>,
}

fn default_pod_cidr() -> Spanned<String> {
    Spanned::new(0..0, "10.244.0.0/16".into())
}
fn default_service_cidr() -> Spanned<String> {
    Spanned::new(0..0, "10.96.0.0/12".into())
}
fn default_dns_domain() -> Spanned<String> {
    Spanned::new(0..0, "cluster.local".into())
}
fn default_firewall() -> Firewall {
    Firewall::OpenPorts
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawJoin {
    token: Option<Spanned<String>>,
    ca_cert_hash: Option<Spanned<String>>,
    certificate_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNode {
    name: Spanned<String>,
    address: Spanned<String>,
    role: Role,
}

/// The config being parsed, for errors that point into it.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn invalid(&self, offset: usize, field: &str, problem: impl Into<Problem>) -> ClusterError {
        let (line, column) = line_col(self.text, offset);
        ClusterError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    /// `v` as its checked type, or an error at `v` naming `field`.
    fn value<T: FromStr<Err = ValueError>>(&self, v: &Spanned<String>, field: &str) -> Result<T, ClusterError> {
        v.get_ref()
            .parse()
            .map_err(|e: ValueError| self.invalid(v.span().start, field, e))
    }

    /// Like [`Self::value`], for an optional key; checked, then kept as text.
    fn secret<T>(&self, v: Option<Spanned<String>>, field: &str) -> Result<Option<T>, ClusterError>
    where
        T: FromStr<Err = ValueError>,
    {
        v.map(|v| self.value::<T>(&v, field)).transpose()
    }

    fn toml(&self) -> Result<Raw, ClusterError> {
        toml::from_str(self.text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, _) = line_col(self.text, offset);
            let field = self.key_on_line(line);
            self.invalid(offset, &field, Problem::Toml(e))
        })
    }

    /// The key (or table name) written on 1-based `line`, for toml's own errors.
    fn key_on_line(&self, line: usize) -> String {
        let l = self.text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        l.split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['[', ']'])
            .to_string()
    }
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Cluster, ClusterError> {
    let s = Source { path, text };
    let raw = s.toml()?;
    let c = raw.cluster;
    Ok(Cluster {
        path: path.to_path_buf(),
        name: s.value(&c.name, "cluster.name")?,
        control_plane_endpoint: s.value(&c.control_plane_endpoint, "cluster.control-plane-endpoint")?,
        pod_cidr: s.value(&c.pod_cidr, "cluster.pod-cidr")?,
        service_cidr: s.value(&c.service_cidr, "cluster.service-cidr")?,
        dns_domain: s.value(&c.dns_domain, "cluster.dns-domain")?,
        firewall: c.firewall,
        proxy_mode: c.proxy_mode,
        selinux: c.selinux,
        kubelet_serving_certs: c.kubelet_serving_certs,
        registry_mirror: c
            .registry_mirror
            .map(|m| s.value(&m, "cluster.registry-mirror"))
            .transpose()?,
        join: join(&s, raw.join)?,
        os: os(&s, raw.os.unwrap_or_default())?,
        nodes: nodes(&s, raw.nodes)?,
        trust_keys: trust_keys(&s, raw.trust)?,
    })
}

fn trust_keys(s: &Source, raw: Option<RawTrust>) -> Result<Vec<crate::bundle::signature::TrustedKey>, ClusterError> {
    let origin = Path::new("cluster.toml [trust] keys");
    raw.map(|t| t.keys)
        .unwrap_or_default()
        .iter()
        .map(|k| {
            crate::bundle::signature::parse_public_key(origin, k.get_ref())
                .map_err(|e| s.invalid(k.span().start, "trust.keys", Problem::TrustKey(e)))
        })
        .collect()
}

fn join(s: &Source, raw: Option<RawJoin>) -> Result<Join, ClusterError> {
    let Some(j) = raw else {
        return Ok(Join::default());
    };
    Ok(Join {
        token: s.secret::<super::BootstrapToken>(j.token, "join.token")?,
        ca_cert_hash: s.secret::<super::CaCertHash>(j.ca_cert_hash, "join.ca-cert-hash")?,
        certificate_key: s.secret::<super::CertificateKey>(j.certificate_key, "join.certificate-key")?,
    })
}

fn os(s: &Source, os: Os) -> Result<Os, ClusterError> {
    if let Some(p) = &os.root_password_hash {
        if !p.starts_with('$') || p.split('$').count() < 4 {
            let at = s.text.find("root-password-hash").unwrap_or(0);
            return Err(s.invalid(at, "os.root-password-hash", Problem::PlainPassword));
        }
    }
    Ok(os)
}

fn nodes(s: &Source, raw: Vec<RawNode>) -> Result<Vec<Node>, ClusterError> {
    let mut nodes: Vec<Node> = Vec::new();
    for n in raw {
        let node = node(s, &n)?;
        if nodes.iter().any(|x| x.name == node.name) {
            return Err(s.invalid(
                n.name.span().start,
                "node.name",
                Problem::DuplicateNode(node.name.to_string()),
            ));
        }
        if node.role == Role::Init && nodes.iter().any(|x| x.role == Role::Init) {
            return Err(s.invalid(n.name.span().start, "node.role", Problem::SecondInit));
        }
        nodes.push(node);
    }
    if !nodes.is_empty() && !nodes.iter().any(|n| n.role == Role::Init) {
        let at = s.text.find("[[node]]").unwrap_or(0);
        return Err(s.invalid(at, "node.role", Problem::NoInit));
    }
    Ok(nodes)
}

fn node(s: &Source, n: &RawNode) -> Result<Node, ClusterError> {
    let name: super::NodeName = s.value(&n.name, "node.name")?;
    let address = n.address.get_ref().parse().map_err(|source| {
        let problem = Problem::Address {
            value: n.address.get_ref().clone(),
            source,
        };
        s.invalid(n.address.span().start, "node.address", problem)
    })?;
    Ok(Node {
        name,
        address,
        role: n.role,
    })
}
