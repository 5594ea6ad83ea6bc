//! Container image references: `registry/repo:tag`, `…@sha256:…`, `…:tag@sha256:…`.
//!
//! References are normalised the way containerd and Docker do: no registry means
//! `docker.io`, and a one-component Docker Hub name gets `library/`.

use crate::digest::Sha256;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// `registry.k8s.io`, `ghcr.io`, `127.0.0.1:5000`, `docker.io`
    pub registry: String,
    /// `kube-apiserver`, `flannel-io/flannel`, `library/busybox`
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Sha256>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ImageRefError {
    pub input: String,
    pub reason: String,
}

impl ImageRef {
    /// `registry/repository`
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, or `latest` when only a digest or nothing was given... never used for
    /// digest-only references, which are addressed by digest.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{}", d.oci())?;
        }
        Ok(())
    }
}

fn valid_component(c: &str) -> bool {
    // distribution's path-component grammar: [a-z0-9]+ separated by . _ __ or -+
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-')
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

/// `host[:port]`: dot-separated labels of `[A-Za-z0-9-]` (no empty label, so no `..`), an
/// optional numeric port. The registry name becomes a directory under
/// `/etc/containerd/certs.d/`, so nothing else may pass.
fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    port_ok && host.len() <= 253 && host.split('.').all(label_ok)
}

/// A tag: 1-128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub(crate) fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ImageRefError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() || input.len() > 512 || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("empty, too long, or contains whitespace"));
        }
        let (rest, digest) = split_digest(input).map_err(err)?;
        let (name, tag) = split_tag(rest);
        if tag.as_deref().is_some_and(|t| !valid_tag(t)) {
            return Err(err("tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(err(
                "a tag or a digest is required (pin versions: name:tag or name@sha256:…)",
            ));
        }
        let (registry, repository) = split_registry(name);
        if !valid_registry(&registry) {
            return Err(err("registry must be host[:port] with DNS labels of [A-Za-z0-9-]"));
        }
        if !repository.split('/').all(valid_component) {
            return Err(err(
                "repository must be lowercase [a-z0-9] components separated by / . _ -",
            ));
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// `name[:tag]` and the digest after `@`, if any (only sha256).
fn split_digest(input: &str) -> Result<(&str, Option<Sha256>), &'static str> {
    let Some((rest, d)) = input.split_once('@') else {
        return Ok((input, None));
    };
    if !d.starts_with("sha256:") {
        return Err("only sha256 digests are supported");
    }
    let digest = Sha256::parse_any(d).map_err(|_| "digest is not sha256:<64 hex>")?;
    Ok((rest, Some(digest)))
}

/// The name and the tag: after the last ':' that follows the last '/'.
fn split_tag(rest: &str) -> (&str, Option<String>) {
    let last_slash = rest.rfind('/');
    match rest.rfind(':') {
        Some(i) if last_slash.is_none_or(|s| i > s) => (&rest[..i], Some(rest[i + 1..].to_string())),
        _ => (rest, None),
    }
}

/// Registry and repository, normalised like Docker: no registry means `docker.io`, where a
/// one-component name gets `library/`.
fn split_registry(name: &str) -> (String, String) {
    let (registry, repo) = match name.split_once('/') {
        Some((first, r)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_string(), r.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if registry == "docker.io" && !repo.contains('/') {
        return (registry, format!("library/{repo}"));
    }
    (registry, repo)
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub() {
        let r: ImageRef = "busybox:1.37".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1.37");
    }

    #[test]
    fn tag_and_digest_forms() {
        let d = Sha256::of(b"x");
        let a: ImageRef = format!("registry.k8s.io/pause@{}", d.oci()).parse().unwrap();
        assert_eq!(a.tag, None);
        assert_eq!(a.digest, Some(d));
        let b: ImageRef = format!("127.0.0.1:5000/x/y:v1@{}", d.oci()).parse().unwrap();
        assert_eq!(b.registry, "127.0.0.1:5000");
        assert_eq!(b.repository, "x/y");
        assert_eq!(b.tag.as_deref(), Some("v1"));
        let c: ImageRef = "registry.k8s.io/coredns/coredns:v1.12.1".parse().unwrap();
        assert_eq!(c.repository, "coredns/coredns");
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "",
            "busybox",
            "Busybox:1",
            "a b:1",
            "x:@",
            "x@md5:abc",
            "x:-bad",
            "../x:1",
            "a..b/x:1",
            "h:99x/x:1",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}
