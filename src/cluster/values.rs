//! Validated values of the cluster config, checked once when they are parsed: from
//! `cluster.toml` ([`super::Cluster::parse`]) and from the command line (clap parses
//! `install --token/--ca-cert-hash/--certificate-key` with the same `FromStr`), so both
//! refuse the same values with the same words. A value of one of these types is known good
//! wherever it goes, kubeadm's YAML included.
//!
//! Each type derefs to `str` and compares with `str`, so code that only reads the text
//! needs no change.

use crate::checked::checked_string;
use std::net::IpAddr;

/// Why a value was refused. The words are shared by `cluster.toml` errors (after
/// `file:line:col: field:`) and by clap (after `invalid value 'X' for '--flag'`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0:?} is not a plain name")]
    ClusterName(String),
    #[error(
        "{0:?} is not a valid hostname label (DNS-1123 label: lowercase letters, digits and \
         '-', starting and ending with a letter or digit, 63 characters at most)"
    )]
    NodeName(String),
    #[error("{0:?} is not host[:port]")]
    HostPort(String),
    #[error("{0:?} is not a CIDR such as 10.244.0.0/16")]
    Cidr(String),
    #[error("{0:?} is not a DNS domain such as cluster.local (lowercase letters, digits, '-' and '.')")]
    DnsDomain(String),
    // The three secrets are not echoed: a near-miss of a secret is still mostly the secret.
    #[error("expected [a-z0-9]{{6}}.[a-z0-9]{{16}} (kubeadm token generate)")]
    BootstrapToken,
    #[error("expected sha256:<64 hex>")]
    CaCertHash,
    #[error("expected 64 hex characters (kubeadm certs certificate-key)")]
    CertificateKey,
}

checked_string!(
    /// The cluster's name (`cluster.name`, kubeadm's `clusterName`): a plain name, safe as a
    /// file name.
    ClusterName,
    ValueError,
    |s| crate::manifest::valid_name(s).then_some(()).ok_or_else(|| ValueError::ClusterName(s.to_string()))
);

checked_string!(
    /// A node's name: a DNS-1123 label, as the node's hostname, its kickstart file name and
    /// kubeadm's `nodeRegistration.name` all need.
    NodeName,
    ValueError,
    |s| valid_node_name(s).then_some(()).ok_or_else(|| ValueError::NodeName(s.to_string()))
);

checked_string!(
    /// `host[:port]`: an IP address (IPv6 in brackets when a port follows) or a DNS name,
    /// with an optional port 1-65535. The control-plane endpoint and the registry mirror.
    HostPort,
    ValueError,
    |s| valid_host_port(s).then_some(()).ok_or_else(|| ValueError::HostPort(s.to_string()))
);

checked_string!(
    /// An IPv4 or IPv6 CIDR (`10.244.0.0/16`).
    Cidr,
    ValueError,
    |s| valid_cidr(s).then_some(()).ok_or_else(|| ValueError::Cidr(s.to_string()))
);

checked_string!(
    /// The cluster's DNS domain (`cluster.local`): an RFC 1123 subdomain as kubeadm
    /// validates `networking.dnsDomain`, with labels of 63 bytes at most.
    DnsDomain,
    ValueError,
    |s| valid_dns_domain(s).then_some(()).ok_or_else(|| ValueError::DnsDomain(s.to_string()))
);

checked_string!(
    /// A kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
    BootstrapToken,
    ValueError,
    |s| valid_token(s).then_some(()).ok_or(ValueError::BootstrapToken)
);

checked_string!(
    /// A discovery CA certificate hash, `sha256:<64 hex>`.
    CaCertHash,
    ValueError,
    |s| valid_ca_hash(s).then_some(()).ok_or(ValueError::CaCertHash)
);

checked_string!(
    /// The key that encrypts the control-plane certificates kubeadm uploads: 64 hex
    /// characters (32 bytes).
    CertificateKey,
    ValueError,
    |s| valid_cert_key(s).then_some(()).ok_or(ValueError::CertificateKey)
);

impl HostPort {
    /// `host:port`, with `port` added when none is given.
    pub fn with_default_port(&self, port: u16) -> String {
        let e = self.as_str();
        let bracketed_with_port = e.starts_with('[') && e.contains("]:");
        let name_with_port = !e.starts_with('[') && e.matches(':').count() == 1;
        if bracketed_with_port || name_with_port {
            e.to_string()
        } else {
            format!("{e}:{port}")
        }
    }
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

/// One DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, 63 bytes at most.
fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A DNS subdomain as Kubernetes accepts for the cluster domain (RFC 1123): lowercase
/// labels of `[a-z0-9-]`, 1-63 bytes, not starting or ending with `-`, 253 bytes at most.
pub fn valid_dns_domain(d: &str) -> bool {
    d.len() <= 253 && d.split('.').all(valid_label)
}

/// A node name: one DNS-1123 label.
pub fn valid_node_name(n: &str) -> bool {
    valid_label(n)
}

pub fn valid_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(t.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

pub fn valid_ca_hash(h: &str) -> bool {
    h.strip_prefix("sha256:").is_some_and(valid_cert_key)
}

pub fn valid_cert_key(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `host[:port]`; a bare IPv6 address (no brackets) has no port.
pub fn valid_host_port(e: &str) -> bool {
    let (host, port) = match e.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (e, None),
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

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
