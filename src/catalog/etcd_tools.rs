//! Which etcd tools (`etcdctl`, `etcdutl`) go with which Kubernetes version.
//!
//! kubeadm runs etcd as a static pod from its own image (`registry.k8s.io/etcd:<tag>`,
//! [`super::images`]); kbundle ships the tools from etcd's release tarball. A snapshot must
//! be restored by the tools of the minor of the server that wrote it (etcd-io/etcd#13070;
//! docs/upstream-facts.md, "etcd tools per server version"), and etcd 3.6's etcdctl no
//! longer has `snapshot restore` or `snapshot status`. So the tools of every hop have the
//! minor of that hop's etcd server.
//!
//! Intermediate hops of an upgrade bundle take the tools from [`ETCD_TOOLS_PINS`]: one
//! fixed patch per etcd minor, not the patch of kubeadm's image tag. The minor is what has
//! to match; one pin per minor lets hops that share a minor share one tarball, and the pin
//! is the newest patch kbundle was checked against (bug fixes of the tools included).

use super::images::kubeadm_tags;
use crate::manifest::Manifest;
use crate::version::Version;

/// The etcd release whose tools kbundle ships for each etcd server minor.
pub const ETCD_TOOLS_PINS: &[Version] = &[Version::new(3, 5, 25), Version::new(3, 6, 5)];

/// The etcd version in an image tag or version string: `3.6.5-0` → 3.6.5, `v3.5.24` →
/// 3.5.24.
pub fn etcd_version_of(tag: &str) -> Option<Version> {
    let t = tag.trim();
    let end = t.find(['-', '+']).unwrap_or(t.len());
    t[..end].parse().ok()
}

/// kubeadm's etcd image tag for `k8s`, or the manifest's `[images] etcd` override.
fn server_tag(k8s: Version, override_tag: Option<&str>) -> Option<String> {
    override_tag
        .map(str::to_string)
        .or_else(|| kubeadm_tags(k8s).map(|t| t.etcd))
}

/// The pinned etcd tools release for the etcd server kubeadm runs at `k8s`.
pub fn tools_for(k8s: Version) -> Option<Version> {
    let server = etcd_version_of(&server_tag(k8s, None)?)?;
    ETCD_TOOLS_PINS
        .iter()
        .find(|p| p.minor_line() == server.minor_line())
        .copied()
}

/// The manifest's etcd tools are not of the minor of its etcd server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{manifest}: [components] etcd = \"{tools}\" (etcdctl/etcdutl), but Kubernetes {k8s} runs etcd \
     {server_tag}: snapshots must be restored with tools of the server's minor {major}.{minor} \
     (etcd 3.6's etcdctl cannot restore at all); set etcd = \"{suggest}\""
)]
pub struct ToolsMismatch {
    pub manifest: String,
    pub tools: Version,
    pub k8s: String,
    pub server_tag: String,
    pub major: u32,
    pub minor: u32,
    pub suggest: String,
}

/// Refuses a manifest whose etcd tools are of another minor than its etcd server (kubeadm's
/// image for its Kubernetes version, or its `[images] etcd` override). Unknown server
/// versions are not checked.
pub fn check_manifest(m: &Manifest) -> Result<(), Box<ToolsMismatch>> {
    let Some(tag) = server_tag(m.kubernetes, m.images.etcd.as_deref()) else {
        return Ok(());
    };
    let Some(server) = etcd_version_of(&tag) else {
        return Ok(());
    };
    let tools = m.components.etcd;
    if tools.minor_line() == server.minor_line() {
        return Ok(());
    }
    let suggest = ETCD_TOOLS_PINS
        .iter()
        .find(|p| p.minor_line() == server.minor_line())
        .map_or(format!("{}.{}.x", server.major, server.minor), |p| p.to_string());
    Err(Box::new(ToolsMismatch {
        manifest: m.path.display().to_string(),
        tools,
        k8s: m.kubernetes.with_v(),
        server_tag: tag,
        major: server.major,
        minor: server.minor,
        suggest,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest(k8s: &str, etcd: &str, images: &str) -> Manifest {
        let src = format!(
            "schema = 1\n[kubernetes]\nversion = \"{k8s}\"\n[components]\ncontainerd = \"2.1.5\"\nrunc = \
             \"1.3.4\"\ncni-plugins = \"1.8.0\"\ncrictl = \"1.34.0\"\netcd = \"{etcd}\"\n{images}"
        );
        Manifest::parse(Path::new("m.toml"), &src).unwrap()
    }

    #[test]
    fn tools_follow_kubeadms_etcd_minor() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert_eq!(tools_for(v("v1.33.7")), Some(v("3.5.25")));
        assert_eq!(tools_for(v("v1.32.11")), Some(v("3.5.25")));
        assert_eq!(tools_for(v("v1.34.3")), Some(v("3.6.5")));
        assert_eq!(tools_for(v("v1.35.0")), Some(v("3.6.5")));
        assert_eq!(tools_for(v("v1.40.0")), None);
        assert_eq!(etcd_version_of("3.6.5-0"), Some(v("3.6.5")));
        assert_eq!(etcd_version_of("v3.5.24"), Some(v("3.5.24")));
        assert_eq!(etcd_version_of("latest"), None);
    }

    #[test]
    fn manifest_tools_must_match_the_server_minor() {
        check_manifest(&manifest("v1.34.3", "3.6.5", "")).unwrap();
        check_manifest(&manifest("v1.33.7", "3.5.25", "")).unwrap();
        let e = check_manifest(&manifest("v1.34.3", "3.5.25", ""))
            .unwrap_err()
            .to_string();
        for s in ["m.toml", "etcd = \"3.5.25\"", "v1.34.3", "3.6.5-0", "etcd = \"3.6.5\""] {
            assert!(e.contains(s), "{s}: {e}");
        }
        // The [images] etcd override is the server that runs.
        let over = "[images]\netcd = \"3.5.24-0\"\n";
        check_manifest(&manifest("v1.34.3", "3.5.25", over)).unwrap();
        assert!(check_manifest(&manifest("v1.34.3", "3.6.5", over)).is_err());
        // Unknown Kubernetes without an override: nothing to check against.
        check_manifest(&manifest("v1.40.0", "3.5.25", "")).unwrap();
    }
}
