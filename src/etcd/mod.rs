//! etcd backup and restore on kubeadm control planes, with the etcd tools shipped in the
//! bundle (`etcdctl`, and `etcdutl` from etcd 3.5 on).
//!
//! * [`tools`]: finding `etcdctl`/`etcdutl` (explicit path, `<root>/usr/local/bin`, `$PATH`)
//!   and running them with a clean environment, a watchdog and errors that carry the command
//!   line and its stderr.
//! * [`snapshot`]: `snapshot save` (atomic, checked with `snapshot status`, sha256 recorded
//!   beside it) and `snapshot restore` (never into a non-empty directory; staged in a hidden
//!   sibling and renamed into place).
//! * [`manifest`]: pointing a kubeadm `etcd.yaml` static pod at the restored data directory
//!   through a lossless YAML edit ([`yaml`], yaml-edit: comments and layout kept, only the
//!   data-dir flag and its volume change), with the API server stopped meanwhile and every
//!   step undone if a later one fails.
//! * [`versions`]: picking the tools of the etcd server's minor (per-release directories
//!   under `/opt/kbundle/versions`), and whether a tool can bump revisions on restore.

pub mod install;
pub mod manifest;
pub mod restore;
pub mod snapshot;
pub mod tools;
pub mod versions;
pub mod yaml;

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in `kbundle etcd`. Each error names the paths and, for a
/// failed `etcdctl`/`etcdutl`, the full command line and its stderr.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{tool} not found: {searched}; pass {flag} PATH")]
    ToolNotFound {
        tool: &'static str,
        flag: &'static str,
        searched: String,
    },
    #[error("{flag} {path}: not an executable file")]
    ToolNotExecutable { flag: &'static str, path: PathBuf },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}){}", fmt_stderr(stderr))]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {secs}s and was killed{}", fmt_stderr(stderr))]
    ToolTimedOut { command: String, secs: u64, stderr: String },
    #[error("`{command}` printed output kbundle cannot read ({source}): {output:?}")]
    BadToolOutput {
        command: String,
        #[source]
        source: serde_json::Error,
        output: String,
    },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} already exists; choose another file name or move the old snapshot away")]
    SnapshotExists { path: PathBuf },
    #[error("invalid --endpoints {endpoints:?}: {reason}")]
    BadEndpoint { endpoints: String, reason: String },
    #[error("{what}: {path} does not exist (pass {flag} PATH)")]
    MissingTlsFile {
        what: String,
        flag: &'static str,
        path: PathBuf,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error("{path} is a snapshot to restore from, but it is not a regular file")]
    NotASnapshot { path: PathBuf },
    #[error("{path}: {source}")]
    BadChecksumFile {
        path: PathBuf,
        #[source]
        source: crate::catalog::checksum::ChecksumError,
    },
    #[error(
        "{file}: sha256 is {actual}, but {sums} says {expected}; the snapshot is damaged or not \
         the one that was saved, refusing to restore it"
    )]
    ChecksumMismatch {
        file: PathBuf,
        sums: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "data directory {path} is not empty; restore never reuses a data directory: pass a new \
         --data-dir (a missing or empty directory)"
    )]
    DataDirNotEmpty { path: PathBuf },
    #[error("data directory {path} exists and is not a directory")]
    DataDirNotADirectory { path: PathBuf },
    #[error("`{command}` succeeded but {missing} is missing; not moving the staged data into place")]
    RestoreIncomplete { command: String, missing: PathBuf },
    #[error("`{command}` printed no version kbundle can read: {output:?}")]
    BadToolVersion { command: String, output: String },
    #[error("etcd tool and server minors differ: {found}, but {server}; {hint}")]
    ToolMismatch {
        found: String,
        server: String,
        hint: String,
    },
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: yaml::ManifestError,
    },
    #[error("--update-manifest failed at step {step} ({what}): {cause}\nstate of the node now:\n{state}")]
    UpdateManifest {
        step: u8,
        what: &'static str,
        #[source]
        cause: manifest::StepError,
        state: String,
    },
}

fn fmt_stderr(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        "; it printed nothing on stderr".to_string()
    } else {
        format!("; its stderr:\n{s}")
    }
}

impl EtcdError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| EtcdError::Io { action, path, source }
    }
}

/// How important a progress note is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A step done or about to be done.
    Step,
    /// Something the operator should read even with `--quiet`.
    Warn,
}

/// Receives progress notes; the CLI prints them, tests collect them.
pub type Notes<'a> = &'a mut dyn FnMut(Level, &str);

/// `root` joined with the absolute node path `node_path` (`/` + `/etc/x` → `/etc/x`,
/// `/tmp/r` + `/etc/x` → `/tmp/r/etc/x`).
pub fn under_root(root: &Path, node_path: &Path) -> Result<PathBuf, EtcdError> {
    let text = node_path
        .to_str()
        .ok_or_else(|| EtcdError::Usage(format!("{} is not UTF-8", node_path.display())))?;
    Ok(crate::host::node_path(root, text)?)
}

/// [`under_root`] for a path kbundle itself names (always clean).
pub(crate) fn fixed_under_root(root: &Path, node_path: &'static str) -> PathBuf {
    crate::host::node_path(root, node_path).unwrap_or_else(|_| root.to_path_buf())
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `path` with `suffix` appended to its file name (`a/snap.db` + `.part` → `a/snap.db.part`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_joining() {
        assert_eq!(
            under_root(Path::new("/"), Path::new("/etc/kubernetes")).unwrap(),
            Path::new("/etc/kubernetes")
        );
        assert_eq!(
            under_root(Path::new("/tmp/r"), Path::new("/etc/kubernetes")).unwrap(),
            Path::new("/tmp/r/etc/kubernetes")
        );
        assert!(under_root(Path::new("/tmp/r"), Path::new("/var/../../x")).is_err());
        assert_eq!(
            with_suffix(Path::new("a/snap.db"), ".part"),
            Path::new("a/snap.db.part")
        );
        assert_eq!(parent_dir(Path::new("snap.db")), Path::new("."));
    }

    #[test]
    fn tool_failure_names_command_and_stderr() {
        let e = EtcdError::ToolFailed {
            command: "ETCDCTL_API=3 etcdctl snapshot save x".into(),
            status: "exit status 1".into(),
            stderr: "Error: boom\n".into(),
        };
        let s = e.to_string();
        assert!(s.contains("`ETCDCTL_API=3 etcdctl snapshot save x` failed (exit status 1)"));
        assert!(s.ends_with("its stderr:\nError: boom"), "{s}");
    }
}
