//! Matching the etcd tools to the etcd server.
//!
//! A snapshot is saved and restored by the tools of the server's minor: a restore needs the
//! minor of the server that wrote the snapshot (etcd-io/etcd#13070), and etcd 3.6's
//! etcdctl has no `snapshot restore`/`status` any more (docs/upstream-facts.md, "etcd
//! tools per server version"). The node keeps one directory of tools per etcd release,
//! `/opt/kbundle/versions/etcd-<version>/` (the installer and each upgrade hop put them
//! there), with `/usr/local/bin/etcdctl`/`etcdutl` linked to the current ones.
//!
//! A tool's version is what `<tool> version` prints (`etcdctl version: 3.4.23`); the
//! server's comes from `endpoint status` (save), or from the `FILE.etcd-version` sidecar
//! written at save time, else from the image tag in kubeadm's `etcd.yaml` (restore).

use super::tools::{self, FoundBy, Kind, Tool};
use super::{EtcdError, Level, Notes};
use crate::catalog::etcd_tools::etcd_version_of;
use crate::host::Host;
use crate::version::Version;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where each etcd release's tools live on a node.
pub const VERSIONS_DIR: &str = "/opt/kbundle/versions";

/// The node directory of one etcd release's tools.
pub fn version_dir(v: Version) -> String {
    format!("{VERSIONS_DIR}/etcd-{v}")
}

/// Which server the tools must match, and how kbundle knows its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub version: Version,
    /// `the etcd server at URL`, `the snapshot's server (FILE.etcd-version)`, ...
    pub what: String,
}

/// Parses `etcdctl version` / `etcdutl version` output (`etcdctl version: 3.4.23`).
pub fn parse_tool_version(kind: Kind, stdout: &str) -> Option<Version> {
    let prefix = format!("{} version:", kind.name());
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .and_then(etcd_version_of)
}

/// Runs `<tool> version`.
pub fn tool_version(host: &Host, tool: &Tool) -> Result<Version, EtcdError> {
    let inv = tool.command(["version"]);
    let out = inv.run(host, Some(Duration::from_secs(30)))?;
    parse_tool_version(tool.kind, &out.stdout).ok_or_else(|| EtcdError::BadToolVersion {
        command: inv.display(),
        output: out.stdout.chars().take(300).collect(),
    })
}

/// The etcd version of the image in kubeadm's `etcd.yaml` under the host's root.
pub fn manifest_server(host: &Host) -> Option<Server> {
    let path = super::manifest::NodePaths::new(host.root()).etcd_manifest();
    let text = String::from_utf8(host.sys().read(&path).ok()?).ok()?;
    let tag = text.lines().find_map(|l| {
        let image = l.trim().trim_start_matches("- ").strip_prefix("image:")?.trim();
        let image = image.trim_matches(|c| c == '"' || c == '\'');
        let (name, tag) = image.rsplit_once(':')?;
        name.ends_with("/etcd").then(|| tag.to_string())
    })?;
    Some(Server {
        version: etcd_version_of(&tag)?,
        what: format!("the etcd image in {} ({tag})", path.display()),
    })
}

fn executable(host: &Host, p: &Path) -> bool {
    host.sys().stat(p).is_ok_and(|m| m.is_file && m.mode & 0o111 != 0)
}

/// Every place a `kind` tool may be, in order: `<root>/usr/local/bin`, the per-release
/// directories (newest first), `$PATH`.
fn candidates(host: &Host, kind: Kind, path_var: Option<&std::ffi::OsStr>) -> Vec<Tool> {
    let mut out: Vec<Tool> = Vec::new();
    if let Ok(Some(t)) = tools::find_in(host, kind, None, None) {
        out.push(t);
    }
    let mut releases: Vec<Version> = host
        .list(VERSIONS_DIR)
        .iter()
        .filter_map(|n| n.strip_prefix("etcd-").and_then(|v| v.parse().ok()))
        .collect();
    releases.sort_by(|a, b| b.cmp(a));
    for v in releases {
        let Ok(p) = host.path(&format!("{}/{}", version_dir(v), kind.name())) else {
            continue;
        };
        if executable(host, &p) {
            out.push(Tool {
                kind,
                path: p,
                found_by: FoundBy::Root,
            });
        }
    }
    // Empty or relative $PATH entries are never searched (see tools::find_in).
    for dir in path_var.map(std::env::split_paths).into_iter().flatten() {
        let p = dir.join(kind.name());
        if dir.is_absolute() && executable(host, &p) {
            out.push(Tool {
                kind,
                path: p,
                found_by: FoundBy::Path,
            });
        }
    }
    out
}

/// The first `kind` tool found (the explicit one, checked, else [`candidates`]' first), of
/// any version: for `endpoint status`, which tells the server's version.
pub fn first(host: &Host, kind: Kind, explicit: Option<&Path>) -> Result<Option<Tool>, EtcdError> {
    if explicit.is_some() {
        return tools::find_in(host, kind, explicit, None);
    }
    let path_var = std::env::var_os("PATH");
    Ok(candidates(host, kind, path_var.as_deref()).into_iter().next())
}

/// The `kind` tool for `server`: the explicit one (checked), else the first candidate of
/// the server's minor. `Ok(None)`: no `kind` tool anywhere. Without a known server the
/// first candidate is taken, with a warning.
pub fn pick(
    host: &Host,
    kind: Kind,
    explicit: Option<&Path>,
    server: Option<&Server>,
    notes: Notes,
) -> Result<Option<(Tool, Version)>, EtcdError> {
    pick_in(host, kind, explicit, server, std::env::var_os("PATH").as_deref(), notes)
}

/// [`pick`] with the search path given (for tests).
pub fn pick_in(
    host: &Host,
    kind: Kind,
    explicit: Option<&Path>,
    server: Option<&Server>,
    path_var: Option<&std::ffi::OsStr>,
    notes: Notes,
) -> Result<Option<(Tool, Version)>, EtcdError> {
    let found = match explicit {
        Some(_) => tools::find_in(host, kind, explicit, None)?.into_iter().collect(),
        None => candidates(host, kind, path_var),
    };
    let mut seen: Vec<(PathBuf, Version)> = Vec::new();
    for t in found {
        let v = match tool_version(host, &t) {
            Ok(v) => v,
            Err(e) if explicit.is_none() => {
                notes(Level::Warn, &format!("skipping {}: {e}", t.path.display()));
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(s) = server else {
            notes(
                Level::Warn,
                &format!(
                    "the etcd server's version is not known: using {} {v} ({}) unchecked",
                    kind.name(),
                    t.path.display()
                ),
            );
            return Ok(Some((t, v)));
        };
        if v.minor_line() == s.version.minor_line() {
            return Ok(Some((t, v)));
        }
        seen.push((t.path.clone(), v));
    }
    match (seen.is_empty(), server) {
        (false, Some(s)) => Err(mismatch(kind, explicit.is_some(), &seen, s)),
        _ => Ok(None),
    }
}

fn mismatch(kind: Kind, explicit: bool, seen: &[(PathBuf, Version)], s: &Server) -> EtcdError {
    let found = seen
        .iter()
        .map(|(p, v)| format!("{} is {} {v}", p.display(), kind.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let (major, minor) = s.version.minor_line();
    EtcdError::ToolMismatch {
        found,
        server: format!("{} is etcd {}", s.what, s.version),
        hint: format!(
            "use {name} {major}.{minor}.x: {how}{VERSIONS_DIR}/etcd-{major}.{minor}.<patch>/ holds one when a bundle of a Kubernetes \
             version that runs etcd {major}.{minor} was installed or upgraded to; pass {flag} PATH",
            name = kind.name(),
            how = if explicit {
                "the one given is of another minor; "
            } else {
                ""
            },
            flag = kind.flag(),
        ),
    }
}

/// Does `<tool> snapshot restore --help` offer `--bump-revision` and `--mark-compacted`
/// (etcdctl/etcdutl 3.5.10 and later; not 3.4)?
pub fn restore_bumps_revision(host: &Host, tool: &Tool) -> Result<bool, EtcdError> {
    let out = tool
        .command(["snapshot", "restore", "--help"])
        .run(host, Some(Duration::from_secs(30)))?;
    let text = format!("{}{}", out.stdout, out.stderr);
    Ok(text.contains("--bump-revision") && text.contains("--mark-compacted"))
}

#[cfg(test)]
#[path = "versions_tests.rs"]
mod tests;
