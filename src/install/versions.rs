//! The container runtime's binaries (containerd with everything in its tarball, runc, the
//! CNI plugins, crictl) live one directory per version under `/opt/kbundle/versions/`
//! (`containerd-2.1.5/`, `runc-1.3.4/`, `cni-plugins-1.8.0/`, `crictl-1.34.0/`), behind one
//! link per file at the paths the units and configs name: `/usr/local/bin/containerd*`,
//! `/usr/local/bin/ctr`, `/usr/local/sbin/runc`, `/opt/cni/bin/<plugin>`,
//! `/usr/local/bin/crictl`. An upgrade installs another directory and moves the links (each
//! one atomically); a rollback moves them back.
//!
//! Per-file links, not a link for the whole `/opt/cni/bin`: flannel's DaemonSet copies its
//! own `flannel` plugin into the host's `/opt/cni/bin` from an init container
//! (docs/upstream-facts.md, "Upgrades: container runtime and add-ons"), so that directory
//! must stay a real directory whose other files survive a switch. `/usr/local/bin` holds
//! kubeadm, kubelet and kubectl too, so it can only be per file.

use super::InstallError;
use crate::bundle::verified::VerifiedBundle;
use crate::host::Host;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where every version directory lives.
pub const VERSIONS: &str = "/opt/kbundle/versions";

/// One runtime component and where its links live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The bundle's component name, also the version directory's prefix.
    pub component: &'static str,
    /// The directory holding the links.
    pub link_dir: &'static str,
    /// The link whose target tells the installed version (switched last).
    pub primary: &'static str,
}

pub const CONTAINERD: Part = Part {
    component: "containerd",
    link_dir: "/usr/local/bin",
    primary: "containerd",
};

/// Every part, in install order.
pub const PARTS: [Part; 4] = [
    Part {
        component: "runc",
        link_dir: "/usr/local/sbin",
        primary: "runc",
    },
    CONTAINERD,
    Part {
        component: "cni-plugins",
        link_dir: "/opt/cni/bin",
        primary: "loopback",
    },
    Part {
        component: "crictl",
        link_dir: "/usr/local/bin",
        primary: "crictl",
    },
];

/// What a node has of a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Linked to `/opt/kbundle/versions/<component>-<version>/`.
    Version(String),
    /// Plain files (installed before version directories existed).
    Plain,
    Absent,
}

impl Part {
    /// `/opt/kbundle/versions/<component>-<version>`.
    pub fn dir(&self, version: &str) -> String {
        format!("{VERSIONS}/{}-{version}", self.component)
    }

    fn prefix(&self) -> String {
        format!("{VERSIONS}/{}-", self.component)
    }

    /// The version the node's links point at.
    pub fn installed(&self, host: &Host) -> Installed {
        let link = format!("{}/{}", self.link_dir, self.primary);
        match host.read_link(&link) {
            Some(t) => {
                let t = t.display().to_string();
                match t.strip_prefix(&self.prefix()).and_then(|r| r.split('/').next()) {
                    Some(v) if !v.is_empty() => Installed::Version(v.to_string()),
                    _ => Installed::Plain,
                }
            }
            None if host.exists(&link) => Installed::Plain,
            None => Installed::Absent,
        }
    }

    /// The bundle's file of this part for `platform`, and its version.
    pub fn source(&self, bundle: &VerifiedBundle, platform: &str) -> Result<(PathBuf, String), InstallError> {
        bundle
            .json()
            .entries
            .iter()
            .find(|e| e.component.as_deref() == Some(self.component) && e.platform.as_deref() == Some(platform))
            .map(|e| (bundle.file(&e.path), e.version.clone().unwrap_or_default()))
            .filter(|(_, v)| !v.is_empty())
            .ok_or_else(|| {
                InstallError::step(
                    "binaries",
                    format!("the bundle has no {} (with a version) for {platform}", self.component),
                )
            })
    }

    /// Does file `name` of the part's upstream archive belong in the node?
    fn wanted(&self, name: &str) -> bool {
        match self.component {
            "cni-plugins" => name != "LICENSE" && !name.ends_with(".md"),
            "crictl" => name == "crictl",
            _ => true,
        }
    }

    /// Installs `src` (the bundle's file) into the version directory for `version`;
    /// returns the names installed there.
    pub fn put(&self, host: &Host, src: &Path, version: &str) -> Result<Vec<String>, InstallError> {
        let dir = self.dir(version);
        if self.component == "runc" {
            host.install_file(src, &format!("{dir}/runc"), 0o755)?;
            return Ok(vec!["runc".into()]);
        }
        let mut names = Vec::new();
        extract(host, src, |b| {
            self.wanted(b).then(|| {
                names.push(b.to_string());
                format!("{dir}/{b}")
            })
        })?;
        if names.is_empty() && !host.dry_run() {
            return Err(InstallError::step(
                "binaries",
                format!("the {} archive {} holds no files", self.component, src.display()),
            ));
        }
        Ok(names)
    }

    /// Points a link per name at the version directory (the primary link last), and removes
    /// links into an older directory of this part that the new one has no file for.
    pub fn link(&self, host: &Host, version: &str, names: &[String]) -> Result<(), InstallError> {
        let dir = self.dir(version);
        let mut ordered: Vec<&String> = names.iter().filter(|n| *n != self.primary).collect();
        ordered.extend(names.iter().filter(|n| *n == self.primary));
        for n in ordered {
            host.symlink(&format!("{dir}/{n}"), &format!("{}/{n}", self.link_dir))?;
        }
        for n in host.list(self.link_dir) {
            let link = format!("{}/{n}", self.link_dir);
            let stale = host.read_link(&link).is_some_and(|t| {
                let t = t.display().to_string();
                t.starts_with(&self.prefix()) && !t.starts_with(&format!("{dir}/"))
            });
            if stale && !names.contains(&n) {
                host.remove(&link)?;
            }
        }
        Ok(())
    }

    /// The bundle's version of this part into its directory, linked. Returns the version.
    pub fn install(&self, host: &Host, bundle: &VerifiedBundle, platform: &str) -> Result<String, InstallError> {
        let (src, version) = self.source(bundle, platform)?;
        let names = self.put(host, &src, &version)?;
        self.link(host, &version, &names)?;
        Ok(version)
    }
}

/// Streams chosen regular files out of a (gzip) tarball in the bundle into the node:
/// `dest` maps each file's base name to its node path (or skips it).
pub(crate) fn extract(
    host: &Host,
    tarball: &Path,
    mut dest: impl FnMut(&str) -> Option<String>,
) -> Result<usize, InstallError> {
    let err = |source| InstallError::Tarball {
        path: tarball.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(tarball).map_err(err)?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut n = 0;
    for entry in ar.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(err)?.to_string_lossy().into_owned();
        let Some(base) = path
            .rsplit('/')
            .next()
            .filter(|b| !b.is_empty() && *b != "." && *b != "..")
        else {
            continue;
        };
        if let Some(target) = dest(base) {
            // The entry's own size (a pax header may override the ustar field).
            let size = entry.size();
            host.install_reader(&mut (&mut entry).take(size), &target, 0o755)?;
            n += 1;
        }
    }
    Ok(n)
}
