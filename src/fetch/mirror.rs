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
    fn cli_overrides_manifest() {
        let m = Mirrors::new(
            &[parse_arg("https://github.com=http://cli").unwrap()],
            &[parse_arg("https://github.com=http://manifest").unwrap()],
        );
        assert_eq!(m.rewrite_url("https://github.com/x"), "http://cli/x");
    }
}
