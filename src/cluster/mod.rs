//! The cluster config (`cluster.toml`): the cluster's settings and its nodes, read by
//! `install` and `kickstart`. Strict: unknown keys and bad values name file, line and field.
//!
//! * [`values`]: the validated value types (names, CIDRs, DNS domain, endpoints, join
//!   secrets), shared with the command line.
//! * `parse`: TOML to [`Cluster`], each section checked by its own function.
//! * `example`: the commented config `kbundle example-config` prints.

mod example;
mod parse;
pub mod values;

pub use example::EXAMPLE;
pub use values::{
    valid_ca_hash, valid_cert_key, valid_cidr, valid_dns_domain, valid_host_port, valid_node_name, valid_token,
    BootstrapToken, CaCertHash, CertificateKey, Cidr, ClusterName, DnsDomain, HostPort, NodeName, ValueError,
};

use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
    #[error("{path}:{line}:{column}: {field}: {problem}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        #[source]
        problem: Problem,
    },
}

/// What is wrong at the place a [`ClusterError::Invalid`] names.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// Not TOML, an unknown key, a wrong type (toml's own message).
    #[error("{}", .0.message().trim())]
    Toml(toml::de::Error),
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("{value:?} is not an IP address")]
    Address {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("must be a crypt(3) hash such as $6$… (openssl passwd -6); plain-text passwords are refused")]
    PlainPassword,
    #[error("node {0:?} is listed twice")]
    DuplicateNode(String),
    #[error("only one node can have role \"init\"")]
    SecondInit,
    #[error("one node must have role \"init\" (the first control plane)")]
    NoInit,
    #[error("not a minisign public key (the base64 line of a kbundle.pub, RW…): {0}")]
    TrustKey(#[source] crate::bundle::signature::SigError),
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

/// kube-proxy's mode, and flannel's matching `EnableNFTables` (docs/upstream-facts.md,
/// "kube-proxy modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// kubeadm's default; needs the `xt_*`/`nft_compat` modules (EL10: kernel-modules-extra).
    #[default]
    Iptables,
    /// GA since Kubernetes 1.33; flannel then writes nftables rules too.
    Nftables,
}

impl ProxyMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// The SELinux mode `prepare` leaves the node in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selinux {
    /// kubeadm's install guide: `SELINUX=permissive`.
    #[default]
    Permissive,
    /// Stay enforcing: binaries are labelled for container-selinux's policy.
    Enforcing,
}

/// Who signs each kubelet's serving certificate, and so how metrics-server checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KubeletServingCerts {
    /// kubeadm's default: each kubelet signs its own; metrics-server runs with
    /// `--kubelet-insecure-tls` (as kubespray's default).
    #[default]
    SelfSigned,
    /// `serverTLSBootstrap: true`; kbundle approves only kubelet-serving CSRs of the
    /// cluster's own nodes with matching addresses, and metrics-server verifies them.
    ClusterSigned,
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

/// Pre-generated join secrets, so kickstarted nodes join unattended. Each was parsed as
/// its [`values`] type ([`BootstrapToken`], [`CaCertHash`], [`CertificateKey`]); they are
/// kept as text here because `install` merges them with values kubeadm prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Join {
    /// `[a-z0-9]{6}.[a-z0-9]{16}`
    pub token: Option<BootstrapToken>,
    /// `sha256:<64 hex>` of the cluster CA's public key.
    pub ca_cert_hash: Option<CaCertHash>,
    /// 64 hex characters (32 bytes), for control planes.
    pub certificate_key: Option<CertificateKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// A DNS-1123 label.
    pub name: NodeName,
    pub address: IpAddr,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub path: PathBuf,
    pub name: ClusterName,
    /// `host[:port]`
    pub control_plane_endpoint: HostPort,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
    pub dns_domain: DnsDomain,
    pub firewall: Firewall,
    pub proxy_mode: ProxyMode,
    pub selinux: Selinux,
    pub kubelet_serving_certs: KubeletServingCerts,
    /// `host[:port]` of an internal registry mirror, if any.
    pub registry_mirror: Option<HostPort>,
    pub join: Join,
    pub os: Os,
    pub nodes: Vec<Node>,
    /// `[trust] keys`: public keys `install` puts in the node's trust store (checked).
    pub trust_keys: Vec<crate::bundle::signature::TrustedKey>,
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

    /// Parses and checks `src`, the text of the config at `path` (named in errors).
    pub fn parse(path: &Path, src: &str) -> Result<Cluster, ClusterError> {
        parse::parse(path, src)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn init_node(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.role == Role::Init)
    }

    /// `host:port` with kubeadm's default port when none is given.
    pub fn endpoint_with_port(&self) -> String {
        self.control_plane_endpoint.with_default_port(6443)
    }
}

#[cfg(test)]
mod tests;
