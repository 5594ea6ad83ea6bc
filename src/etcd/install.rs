//! Putting a bundle's etcd tools on a node: `etcdctl` and `etcdutl` of each etcd release go
//! to `/opt/kbundle/versions/etcd-<version>/` ([`super::versions`] picks among them by the
//! server's minor), and `/usr/local/bin/etcdctl`/`etcdutl` link to the current release's.
//! The installer puts the bundle's own release there; `upgrade apply` adds each hop's.

use super::versions::version_dir;
use super::EtcdError;
use crate::bundle::verified::VerifiedBundle;
use crate::host::Host;
use crate::version::Version;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The tools kbundle takes from an etcd release tarball.
const TOOLS: [&str; 2] = ["etcdctl", "etcdutl"];

/// The bundle's etcd tarball of `version` (default: the bundle's own `etcd` component, else
/// its first etcd tarball) for `platform` (`linux/amd64`).
pub fn tarball(bundle: &VerifiedBundle, version: Option<Version>, platform: &str) -> Option<(Version, PathBuf)> {
    let want = version.map(|v| v.to_string()).or_else(|| {
        let own = bundle.json().components.get("etcd");
        own.map(|t| t.to_string())
    });
    let entry = bundle.json().entries.iter().find(|e| {
        e.component.as_deref() == Some("etcd")
            && e.platform.as_deref() == Some(platform)
            && want.as_deref().is_none_or(|w| e.version.as_deref() == Some(w))
    })?;
    Some((entry.version.as_deref()?.parse().ok()?, bundle.file(&entry.path)))
}

/// The etcd tarball of one hop of an upgrade bundle (its `hops[].files`) for `platform`.
pub fn hop_tarball(bundle: &VerifiedBundle, hop: Version, platform: &str) -> Option<(Version, PathBuf)> {
    let b = bundle.json();
    let files = &b.hops.iter().find(|h| h.kubernetes.version() == hop)?.files;
    let entry = b.entries.iter().find(|e| {
        e.component.as_deref() == Some("etcd") && e.platform.as_deref() == Some(platform) && files.contains(&e.path)
    })?;
    Some((entry.version.as_deref()?.parse().ok()?, bundle.file(&entry.path)))
}

/// Extracts `etcdctl`/`etcdutl` of `tarball` (release `version`) into their version
/// directory; with `link`, points `/usr/local/bin/<tool>` at them. Returns how many tools
/// the tarball held (etcd 3.4's has no etcdutl).
pub fn install(host: &Host, tarball: &Path, version: Version, link: bool) -> Result<usize, EtcdError> {
    let bad = EtcdError::io("cannot read the etcd tarball", tarball);
    let f = std::fs::File::open(tarball).map_err(EtcdError::io("cannot read the etcd tarball", tarball))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let dir = version_dir(version);
    let mut found = Vec::new();
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(EtcdError::io("cannot read the etcd tarball", tarball))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(EtcdError::io("cannot read the etcd tarball", tarball))?;
        let Some(name) = TOOLS.into_iter().find(|t| path.file_name().is_some_and(|n| n == *t)) else {
            continue;
        };
        let size = entry.size();
        host.install_reader(&mut (&mut entry).take(size), &format!("{dir}/{name}"), 0o755)?;
        found.push(name);
    }
    if link {
        for name in &found {
            host.symlink(&format!("{dir}/{name}"), &format!("/usr/local/bin/{name}"))?;
        }
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(path: &Path, top: &str) {
        let f = std::fs::File::create(path).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, body) in [
            ("etcd", "server"),
            ("etcdctl", "ctl"),
            ("etcdutl", "utl"),
            ("README.md", "r"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, format!("{top}/{name}"), body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn tools_go_to_their_version_dir_and_links_follow() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let tgz = t.path().join("etcd.tar.gz");
        tarball(&tgz, "etcd-v3.6.5-linux-amd64");
        let host = Host::new(&root, false);
        assert_eq!(install(&host, &tgz, Version::new(3, 6, 5), true).unwrap(), 2);
        let dir = root.join("opt/kbundle/versions/etcd-3.6.5");
        assert_eq!(std::fs::read_to_string(dir.join("etcdutl")).unwrap(), "utl");
        assert!(!dir.join("etcd").exists() && !dir.join("README.md").exists());
        assert_eq!(
            std::fs::read_link(root.join("usr/local/bin/etcdctl")).unwrap(),
            Path::new("/opt/kbundle/versions/etcd-3.6.5/etcdctl")
        );
        // Staged without linking: the links keep pointing at the current release.
        install(&host, &tgz, Version::new(3, 5, 25), false).unwrap();
        assert!(root.join("opt/kbundle/versions/etcd-3.5.25/etcdctl").is_file());
        assert_eq!(
            std::fs::read_link(root.join("usr/local/bin/etcdutl")).unwrap(),
            Path::new("/opt/kbundle/versions/etcd-3.6.5/etcdutl")
        );
    }
}
