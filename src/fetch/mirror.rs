//! `--mirror FROM=TO`: URL-prefix rewrites for sites that pull through an internal mirror.
//!
//! `FROM` is either a URL prefix (`https://github.com`) for files, or a registry host
//! (`registry.k8s.io`) for images. The bundle always records upstream URLs and names.

use crate::manifest::MirrorRule;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mirror {rule:?}: {reason}")]
pub struct MirrorError {
    pub rule: String,
    pub reason: &'static str,
}

/// A mirror that points at a link-local or cloud-metadata address, refused unless
/// `--allow-private-mirror` is given: a hostile manifest or a typo must not make a build in
/// the cloud fetch (and bundle) the instance's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mirror {from}={to}: refusing {host}: it is {why}; pass --allow-private-mirror if this really is your mirror")]
pub struct RefusedMirror {
    pub from: String,
    pub to: String,
    pub host: String,
    pub why: &'static str,
}

const LINK_LOCAL_V4: &str = "a link-local address (169.254.0.0/16), where cloud metadata services answer";
const METADATA_NAME: &str = "the host name of a cloud metadata service";

/// Why a mirror host is refused without `--allow-private-mirror`, if it is.
pub fn refused_host(host: &url::Host<&str>) -> Option<&'static str> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v4 = |ip: Ipv4Addr| match ip.octets() {
        [169, 254, _, _] => Some(LINK_LOCAL_V4),
        [100, 100, 100, 200] => Some("Alibaba Cloud's metadata service address (100.100.100.200)"),
        _ => None,
    };
    match host {
        url::Host::Ipv4(ip) => v4(*ip),
        url::Host::Ipv6(ip) if ip.segments()[0] & 0xffc0 == 0xfe80 => Some("an IPv6 link-local address (fe80::/10)"),
        url::Host::Ipv6(ip) if *ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            Some("the AWS metadata service's IPv6 address (fd00:ec2::254)")
        }
        url::Host::Ipv6(ip) => ip.to_ipv4_mapped().and_then(v4),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            matches!(d.as_str(), "metadata" | "metadata.google.internal").then_some(METADATA_NAME)
        }
    }
}

/// Refuses a rule whose `TO` is a link-local or cloud-metadata address.
pub fn check_destination(rule: &MirrorRule) -> Result<(), RefusedMirror> {
    let Ok(u) = url::Url::parse(&rule.to) else {
        return Ok(()); // parse_rule already refused what is not a URL
    };
    let Some(host) = u.host() else {
        return Ok(());
    };
    match refused_host(&host) {
        None => Ok(()),
        Some(why) => Err(RefusedMirror {
            from: rule.from.clone(),
            to: rule.to.clone(),
            host: host.to_string(),
            why,
        }),
    }
}

/// Parses `FROM=TO` as given on the command line.
pub fn parse_arg(arg: &str) -> Result<MirrorRule, MirrorError> {
    let (from, to) = arg.split_once('=').ok_or(MirrorError {
        rule: arg.to_string(),
        reason: "expected FROM=TO, e.g. https://github.com=http://mirror.internal/github.com",
    })?;
    parse_rule(from, to)
}

pub fn parse_rule(from: &str, to: &str) -> Result<MirrorRule, MirrorError> {
    let err = |reason| MirrorError {
        rule: format!("{from}={to}"),
        reason,
    };
    let from = from.trim_end_matches('/');
    let to = to.trim_end_matches('/');
    if from.is_empty() || from.chars().any(char::is_whitespace) {
        return Err(err("FROM is empty or has whitespace"));
    }
    if from.contains("://") && !(from.starts_with("https://") || from.starts_with("http://")) {
        return Err(err("FROM must be an http(s):// URL prefix or a registry host"));
    }
    let parsed = url::Url::parse(to).map_err(|_| err("TO must be an absolute http:// or https:// URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(err("TO must be an absolute http:// or https:// URL"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(err("TO must not carry a query or fragment"));
    }
    Ok(MirrorRule {
        from: from.to_string(),
        to: to.to_string(),
    })
}

/// A set of rules; the longest matching prefix wins.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    rules: Vec<MirrorRule>,
}

impl Mirrors {
    /// Command-line rules take precedence over manifest rules with the same `FROM`.
    /// A repeated `FROM` on the command line: the last one wins.
    pub fn new(cli: &[MirrorRule], manifest: &[MirrorRule]) -> Self {
        let mut rules: Vec<MirrorRule> = Vec::new();
        for r in cli.iter().rev() {
            if !rules.iter().any(|c| c.from == r.from) {
                rules.push(r.clone());
            }
        }
        for r in manifest {
            if !rules.iter().any(|c| c.from == r.from) {
                rules.push(r.clone());
            }
        }
        rules.sort_by(|a, b| b.from.len().cmp(&a.from.len()).then(a.from.cmp(&b.from)));
        Mirrors { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Refuses the first rule that points at a link-local or cloud-metadata address.
    pub fn check_destinations(&self) -> Result<(), RefusedMirror> {
        self.rules.iter().try_for_each(check_destination)
    }

    /// Rewrites a file URL if a URL-prefix rule matches at a path boundary.
    pub fn rewrite_url(&self, url: &str) -> String {
        for r in self.rules.iter().filter(|r| r.from.contains("://")) {
            if let Some(rest) = url.strip_prefix(r.from.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    return format!("{}{rest}", r.to);
                }
            }
        }
        url.to_string()
    }

    /// Registry mirror hosts (`host:port`) reached over plain HTTP (`http://` rules).
    pub fn http_registry_hosts(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| !r.from.contains("://") && r.to.starts_with("http://"))
            .filter_map(|r| url::Url::parse(&r.to).ok())
            .filter_map(|u| {
                let h = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                })
            })
            .collect()
    }

    /// The mirror base URL for a registry host, if one is set (`registry.k8s.io` →
    /// `http://127.0.0.1:5000/registry.k8s.io`).
    pub fn registry(&self, host: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| !r.from.contains("://") && r.from == host)
            .map(|r| r.to.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_at_boundary_longest_first() {
        let m = Mirrors::new(
            &[
                parse_arg("https://github.com=http://m/gh").unwrap(),
                parse_arg("https://github.com/etcd-io=http://m/etcd").unwrap(),
            ],
            &[],
        );
        assert_eq!(m.rewrite_url("https://github.com/a/b"), "http://m/gh/a/b");
        assert_eq!(m.rewrite_url("https://github.com/etcd-io/etcd"), "http://m/etcd/etcd");
        assert_eq!(
            m.rewrite_url("https://github.company.com/x"),
            "https://github.company.com/x"
        );
        assert_eq!(m.rewrite_url("https://dl.k8s.io/x"), "https://dl.k8s.io/x");
    }

    #[test]
    fn registry_rules() {
        let m = Mirrors::new(
            &[parse_arg("registry.k8s.io=http://127.0.0.1:5000/registry.k8s.io").unwrap()],
            &[],
        );
        assert_eq!(
            m.registry("registry.k8s.io"),
            Some("http://127.0.0.1:5000/registry.k8s.io")
        );
        assert_eq!(m.registry("ghcr.io"), None);
        assert_eq!(
            m.rewrite_url("https://registry.k8s.io/v2/"),
            "https://registry.k8s.io/v2/"
        );
    }

    #[test]
    fn bad_rules() {
        assert!(parse_arg("nothing").is_err());
        assert!(parse_arg("https://github.com=ftp://x").is_err());
        assert!(parse_arg("https://github.com=mirror").is_err());
        assert!(parse_arg("=http://x").is_err());
    }

    #[test]
    fn metadata_and_link_local_mirrors_are_refused() {
        for to in [
            "http://169.254.169.254/latest",
            "http://169.254.1.2:8080",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://100.100.100.200",
            "http://[fe80::1]:5000",
            "http://[febf::1]",
            "http://[fd00:ec2::254]",
            "http://[::ffff:169.254.169.254]",
            "http://metadata.google.internal/computeMetadata",
            "http://METADATA.google.internal./x",
            "http://metadata",
        ] {
            let rule = parse_arg(&format!("https://github.com={to}")).unwrap();
            let e = check_destination(&rule).expect_err(to).to_string();
            assert!(
                e.contains("--allow-private-mirror") && e.contains("https://github.com="),
                "{e}"
            );
        }
        let e = check_destination(&parse_arg("registry.k8s.io=http://169.254.169.254:5000").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("169.254.169.254") && e.contains("link-local"), "{e}");
    }

    #[test]
    fn loopback_and_private_mirrors_stay_allowed() {
        for to in [
            "http://127.0.0.1:8080",
            "http://[::1]:5000",
            "http://10.0.0.5/m",
            "http://172.16.3.4",
            "http://192.168.1.1:5000",
            "http://mirror.internal/github.com",
            "https://metadata.example.com",
            "http://169.253.0.1",
            "http://[fec0::1]",
        ] {
            let rule = parse_arg(&format!("https://github.com={to}")).unwrap();
            assert_eq!(check_destination(&rule), Ok(()), "{to}");
        }
    }

    #[test]
    fn cli_overrides_manifest() {
        let m = Mirrors::new(
            &[parse_arg("https://github.com=http://cli").unwrap()],
            &[parse_arg("https://github.com=http://manifest").unwrap()],
        );
        assert_eq!(m.rewrite_url("https://github.com/x"), "http://cli/x");
    }
}
