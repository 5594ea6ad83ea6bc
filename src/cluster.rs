//! The cluster config (`cluster.toml`): the cluster's settings and its nodes, read by
//! `install` and `kickstart`. Strict: unknown keys and bad values name file, line and field.

use crate::manifest::{line_col, valid_name};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read cluster config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cluster config {path} is not UTF-8: invalid byte at offset {offset} (line {line}); save it as UTF-8 text"
    )]
    NotUtf8 { path: PathBuf, offset: usize, line: usize },
    #[error("{path}:{line}:{column}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The first control plane: runs `kubeadm init`.
    Init,
    /// Further control planes: `kubeadm join --control-plane`.
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
    pub fn is_control_plane(&self) -> bool {
        !matches!(self, Role::Worker)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "init" => Ok(Role::Init),
            "control-plane" => Ok(Role::ControlPlane),
            "worker" => Ok(Role::Worker),
            _ => Err(format!("unknown role {s:?}: use init, control-plane or worker")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firewall {
    /// Keep firewalld on and open the ports the role needs.
    OpenPorts,
    /// Disable (mask) firewalld.
    Disabled,
    /// Leave the firewall alone.
    Unchanged,
}

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

/// Settings for kickstarted installs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Os {
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub ntp_servers: Vec<String>,
    /// A crypt(3) hash (`$6$…`, `$y$…`); plain-text passwords are refused.
    #[serde(default)]
    pub root_password_hash: Option<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub prefix: Option<u8>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub disk: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNode {
    name: Spanned<String>,
    address: Spanned<String>,
    role: Role,
}

/// Pre-generated join secrets, so kickstarted nodes join unattended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Join {
    /// `[a-z0-9]{6}.[a-z0-9]{16}`
    pub token: Option<String>,
    /// `sha256:<64 hex>` of the cluster CA's public key.
    pub ca_cert_hash: Option<String>,
    /// 64 hex characters (32 bytes), for control planes.
    pub certificate_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub address: IpAddr,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub path: PathBuf,
    pub name: String,
    /// `host:port`
    pub control_plane_endpoint: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub dns_domain: String,
    pub firewall: Firewall,
    /// `host[:port]` of an internal registry mirror, if any.
    pub registry_mirror: Option<String>,
    pub join: Join,
    pub os: Os,
    pub nodes: Vec<Node>,
}

/// Valid `a.b.c.d/n` or IPv6 CIDR.
pub fn valid_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else { return false };
    let Ok(bits) = bits.parse::<u8>() else { return false };
    bits <= if ip.is_ipv4() { 32 } else { 128 }
}

/// A DNS subdomain as Kubernetes accepts for the cluster domain (RFC 1123): lowercase
/// labels of `[a-z0-9-]`, 1-63 bytes, not starting or ending with `-`, 253 bytes at most.
pub fn valid_dns_domain(d: &str) -> bool {
    d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

pub fn valid_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(t.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

pub fn valid_ca_hash(h: &str) -> bool {
    h.strip_prefix("sha256:")
        .is_some_and(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn valid_cert_key(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit())
}

fn valid_endpoint(e: &str) -> bool {
    let (host, port) = match e.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (e, None), // bare IPv6
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), Some(p)),
        None => (e, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let host_ok = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')));
    port_ok && host_ok
}

impl Cluster {
    pub fn load(path: &Path) -> Result<Cluster, ClusterError> {
        let bytes = std::fs::read(path).map_err(|source| ClusterError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let src = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            ClusterError::NotUtf8 {
                path: path.to_path_buf(),
                offset,
                line: e.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() + 1,
            }
        })?;
        Self::parse(path, &src)
    }

    pub fn parse(path: &Path, src: &str) -> Result<Cluster, ClusterError> {
        let invalid = |offset: usize, field: &str, message: String| {
            let (line, column) = line_col(src, offset);
            ClusterError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                field: field.to_string(),
                message,
            }
        };
        let raw: Raw = toml::from_str(src).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = line_col(src, offset);
            let field = {
                let l = src.lines().nth(line.saturating_sub(1)).unwrap_or("");
                l.split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['[', ']'])
                    .to_string()
            };
            ClusterError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                field,
                message: e.message().trim().to_string(),
            }
        })?;
        let c = raw.cluster;
        if !valid_name(c.name.get_ref()) {
            return Err(invalid(
                c.name.span().start,
                "cluster.name",
                format!("{:?} is not a plain name", c.name.get_ref()),
            ));
        }
        if !valid_endpoint(c.control_plane_endpoint.get_ref()) {
            return Err(invalid(
                c.control_plane_endpoint.span().start,
                "cluster.control-plane-endpoint",
                format!("{:?} is not host[:port]", c.control_plane_endpoint.get_ref()),
            ));
        }
        for (v, f) in [
            (&c.pod_cidr, "cluster.pod-cidr"),
            (&c.service_cidr, "cluster.service-cidr"),
        ] {
            if !valid_cidr(v.get_ref()) {
                return Err(invalid(
                    v.span().start,
                    f,
                    format!("{:?} is not a CIDR such as 10.244.0.0/16", v.get_ref()),
                ));
            }
        }
        if !valid_dns_domain(c.dns_domain.get_ref()) {
            return Err(invalid(
                c.dns_domain.span().start,
                "cluster.dns-domain",
                format!(
                    "{:?} is not a DNS domain such as cluster.local (lowercase letters, digits, '-' and '.')",
                    c.dns_domain.get_ref()
                ),
            ));
        }
        if let Some(m) = &c.registry_mirror {
            if !valid_endpoint(m.get_ref()) {
                return Err(invalid(
                    m.span().start,
                    "cluster.registry-mirror",
                    format!("{:?} is not host[:port]", m.get_ref()),
                ));
            }
        }
        let mut join = Join::default();
        if let Some(j) = raw.join {
            if let Some(t) = j.token {
                if !valid_token(t.get_ref()) {
                    return Err(invalid(
                        t.span().start,
                        "join.token",
                        "expected [a-z0-9]{6}.[a-z0-9]{16} (kubeadm token generate)".into(),
                    ));
                }
                join.token = Some(t.into_inner());
            }
            if let Some(h) = j.ca_cert_hash {
                if !valid_ca_hash(h.get_ref()) {
                    return Err(invalid(
                        h.span().start,
                        "join.ca-cert-hash",
                        "expected sha256:<64 hex>".into(),
                    ));
                }
                join.ca_cert_hash = Some(h.into_inner());
            }
            if let Some(k) = j.certificate_key {
                if !valid_cert_key(k.get_ref()) {
                    return Err(invalid(
                        k.span().start,
                        "join.certificate-key",
                        "expected 64 hex characters (kubeadm certs certificate-key)".into(),
                    ));
                }
                join.certificate_key = Some(k.into_inner());
            }
        }
        let os = raw.os.unwrap_or_default();
        if let Some(p) = &os.root_password_hash {
            if !p.starts_with('$') || p.split('$').count() < 4 {
                let off = src.find("root-password-hash").unwrap_or(0);
                return Err(invalid(
                    off,
                    "os.root-password-hash",
                    "must be a crypt(3) hash such as $6$… (openssl passwd -6); plain-text passwords are refused".into(),
                ));
            }
        }
        let mut nodes = Vec::new();
        let mut inits = 0;
        for n in raw.nodes {
            if !valid_name(n.name.get_ref()) || n.name.get_ref().contains('_') || n.name.get_ref().contains('.') {
                return Err(invalid(
                    n.name.span().start,
                    "node.name",
                    format!("{:?} is not a valid hostname label", n.name.get_ref()),
                ));
            }
            if nodes.iter().any(|x: &Node| &x.name == n.name.get_ref()) {
                return Err(invalid(
                    n.name.span().start,
                    "node.name",
                    format!("node {:?} is listed twice", n.name.get_ref()),
                ));
            }
            let address: IpAddr = n.address.get_ref().parse().map_err(|_| {
                invalid(
                    n.address.span().start,
                    "node.address",
                    format!("{:?} is not an IP address", n.address.get_ref()),
                )
            })?;
            if n.role == Role::Init {
                inits += 1;
                if inits > 1 {
                    return Err(invalid(
                        n.name.span().start,
                        "node.role",
                        "only one node can have role \"init\"".into(),
                    ));
                }
            }
            nodes.push(Node {
                name: n.name.into_inner(),
                address,
                role: n.role,
            });
        }
        if !nodes.is_empty() && inits == 0 {
            return Err(invalid(
                src.find("[[node]]").unwrap_or(0),
                "node.role",
                "one node must have role \"init\" (the first control plane)".into(),
            ));
        }
        Ok(Cluster {
            path: path.to_path_buf(),
            name: c.name.into_inner(),
            control_plane_endpoint: c.control_plane_endpoint.into_inner(),
            pod_cidr: c.pod_cidr.into_inner(),
            service_cidr: c.service_cidr.into_inner(),
            dns_domain: c.dns_domain.into_inner(),
            firewall: c.firewall,
            registry_mirror: c.registry_mirror.map(Spanned::into_inner),
            join,
            os,
            nodes,
        })
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn init_node(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.role == Role::Init)
    }

    /// `host:port` with kubeadm's default port when none is given.
    pub fn endpoint_with_port(&self) -> String {
        let e = &self.control_plane_endpoint;
        if e.starts_with('[') && e.contains("]:") || (!e.starts_with('[') && e.matches(':').count() == 1) {
            e.clone()
        } else {
            format!("{e}:6443")
        }
    }
}

/// The commented example printed by `kbundle example-config`.
pub const EXAMPLE: &str = r#"# kbundle cluster config: one control plane and two workers.
# Used by `kbundle install --config cluster.toml` on each node and by `kbundle kickstart`.

[cluster]
name = "demo"
control-plane-endpoint = "192.168.122.10:6443"   # a VIP/load balancer, or the first control plane
pod-cidr = "10.244.0.0/16"                        # flannel's default network
service-cidr = "10.96.0.0/12"
dns-domain = "cluster.local"
firewall = "open-ports"                           # open-ports | disabled | unchanged
# registry-mirror = "registry.internal:5000"     # optional internal mirror for later pulls

# Optional pre-generated join secrets, so kickstarted nodes join with no keyboard.
# Generate them on a connected machine: `kubeadm token generate`, `kubeadm certs certificate-key`.
# The CA hash is known only once the CA exists: pre-create the CA, or let `init` print the
# exact `kbundle install` command lines for the other nodes.
# [join]
# token = "abcdef.0123456789abcdef"
# ca-cert-hash = "sha256:<64 hex>"
# certificate-key = "<64 hex>"

[os]                                              # used by kickstarts
timezone = "UTC"
ntp-servers = ["192.168.122.1"]
# openssl passwd -6  (a hash only: plain-text passwords are refused)
root-password-hash = "$6$kbundleexample$YX.HAlAGn7/y/pSbKV8WZIRAM6iMYUOmqx0ZnSDnhjrwsNiWvDtopjXFa8lgvwfiZtIHYCSNLsIv4vqMcC.vm0"   # "changeme": replace it
ssh-keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbundleExampleKeyReplaceMeWithYourOwnKey0000 ops@example"]
dns = ["192.168.122.1"]
gateway = "192.168.122.1"
prefix = 24
interface = "eth0"

[[node]]
name = "cp1"
address = "192.168.122.10"
role = "init"                                     # init | control-plane | worker

[[node]]
name = "worker1"
address = "192.168.122.21"
role = "worker"

[[node]]
name = "worker2"
address = "192.168.122.22"
role = "worker"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Cluster, ClusterError> {
        Cluster::parse(Path::new("cluster.toml"), s)
    }

    #[test]
    fn example_parses() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.init_node().unwrap().name, "cp1");
        assert_eq!(c.endpoint_with_port(), "192.168.122.10:6443");
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = parse(&EXAMPLE.replace("address = \"192.168.122.21\"", "address = \"192.168.122.300\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster.toml:") && e.contains("node.address") && e.contains("192.168.122.300"),
            "{e}"
        );
        let e = parse(&EXAMPLE.replace("pod-cidr = \"10.244.0.0/16\"", "pod-cidr = \"10.244.0.0\""))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cluster.toml:7:"), "{e}");
        let e = parse(&EXAMPLE.replace("dns-domain", "dns-domian"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dns-domian"), "{e}");
        let e = parse(&EXAMPLE.replace(
            "root-password-hash = \"$6$kbundleexample$YX",
            "root-password-hash = \"hunter2",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("plain-text"), "{e}");
        let e = parse(&EXAMPLE.replace("role = \"worker\"", "role = \"init\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("only one node"), "{e}");
    }

    #[test]
    fn join_values() {
        assert!(valid_token("abcdef.0123456789abcdef"));
        assert!(!valid_token("ABCDEF.0123456789abcdef"));
        assert!(valid_cert_key(&"a".repeat(64)));
        assert!(valid_ca_hash(&format!("sha256:{}", "0".repeat(64))));
    }
}
