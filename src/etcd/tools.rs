//! Finding and running `etcdctl` / `etcdutl`.
//!
//! Lookup order for each tool: the explicit flag, then `<root>/usr/local/bin/<tool>` (where
//! the node installer links the bundle's copies), then `$PATH`. [`super::versions`] adds the
//! per-release directories and picks the tool of the etcd server's minor. The tools run with every
//! `ETCDCTL_*`/`ETCDUTL_*` variable removed from their environment (etcdctl 3.4 aborts when
//! a variable and the matching flag are both set) and `ETCDCTL_API=3` set for etcdctl
//! (3.4 still defaults to the v2 API, which has no `snapshot` command).

use super::EtcdError;
use crate::host::sys::Stdin;
use crate::host::{Host, HostError};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which etcd tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Etcdctl,
    Etcdutl,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Etcdctl => "etcdctl",
            Kind::Etcdutl => "etcdutl",
        }
    }
    pub fn flag(self) -> &'static str {
        match self {
            Kind::Etcdctl => "--etcdctl",
            Kind::Etcdutl => "--etcdutl",
        }
    }
}

/// Where a tool was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundBy {
    Flag,
    Root,
    Path,
}

/// A tool ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub kind: Kind,
    pub path: PathBuf,
    pub found_by: FoundBy,
}

impl Tool {
    /// `etcdctl /usr/bin/etcdctl (from --etcdctl)`, for progress notes.
    pub fn describe(&self) -> String {
        let how = match self.found_by {
            FoundBy::Flag => format!("from {}", self.kind.flag()),
            FoundBy::Root => "bundled copy".to_string(),
            FoundBy::Path => "from $PATH".to_string(),
        };
        format!("{} ({how})", self.path.display())
    }

    /// An invocation of this tool with `args`.
    pub fn command<I, S>(&self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Invocation {
            tool: self.clone(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

fn is_executable_file(host: &Host, p: &Path) -> bool {
    host.sys().stat(p).is_ok_and(|m| m.is_file && m.mode & 0o111 != 0)
}

/// Finds `kind` on `host` using the real `$PATH`; `Ok(None)` when it is nowhere.
pub fn find(host: &Host, kind: Kind, explicit: Option<&Path>) -> Result<Option<Tool>, EtcdError> {
    find_in(host, kind, explicit, std::env::var_os("PATH").as_deref())
}

/// [`find`] with the search path given (for tests).
pub fn find_in(
    host: &Host,
    kind: Kind,
    explicit: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<Option<Tool>, EtcdError> {
    if let Some(p) = explicit {
        if !is_executable_file(host, p) {
            return Err(EtcdError::ToolNotExecutable {
                flag: kind.flag(),
                path: p.to_path_buf(),
            });
        }
        return Ok(Some(Tool {
            kind,
            path: p.to_path_buf(),
            found_by: FoundBy::Flag,
        }));
    }
    let bundled = super::fixed_under_root(host.root(), "/usr/local/bin").join(kind.name());
    if is_executable_file(host, &bundled) {
        return Ok(Some(Tool {
            kind,
            path: bundled,
            found_by: FoundBy::Root,
        }));
    }
    for dir in path_var.map(std::env::split_paths).into_iter().flatten() {
        // Empty $PATH entries mean the current directory; never run a tool from there.
        if !dir.is_absolute() {
            continue;
        }
        let p = dir.join(kind.name());
        if is_executable_file(host, &p) {
            return Ok(Some(Tool {
                kind,
                path: p,
                found_by: FoundBy::Path,
            }));
        }
    }
    Ok(None)
}

/// Like [`find`], but a missing tool is an error that says where it looked.
pub fn require(host: &Host, kind: Kind, explicit: Option<&Path>) -> Result<Tool, EtcdError> {
    find(host, kind, explicit)?.ok_or_else(|| not_found(kind, host.root()))
}

pub(crate) fn not_found(kind: Kind, root: &Path) -> EtcdError {
    let bundled = super::fixed_under_root(root, "/usr/local/bin").join(kind.name());
    EtcdError::ToolNotFound {
        tool: kind.name(),
        flag: kind.flag(),
        searched: format!("not at {} and not on $PATH", bundled.display()),
    }
}

/// One run of a tool: its arguments and how to show it in errors.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub tool: Tool,
    pub args: Vec<OsString>,
}

/// What a successful run printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    /// The command line as a shell would take it, with the environment kbundle sets.
    pub fn display(&self) -> String {
        let mut parts = Vec::with_capacity(self.args.len() + 2);
        if self.tool.kind == Kind::Etcdctl {
            parts.push("ETCDCTL_API=3".to_string());
        }
        parts.push(shell_quote(self.tool.path.as_os_str()));
        parts.extend(self.args.iter().map(|a| shell_quote(a)));
        parts.join(" ")
    }

    /// Runs the tool through the node seam to completion, killing it after `timeout`. A
    /// non-zero exit, a signal or the timeout is an error naming the command line and its
    /// stderr (or stdout, where etcdctl prints its errors).
    pub fn run(&self, host: &Host, timeout: Option<Duration>) -> Result<Output, EtcdError> {
        let mut cmd = Command::new(&self.tool.path);
        cmd.args(&self.args);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("ETCDCTL_") || k.starts_with("ETCDUTL_") {
                cmd.env_remove(k.as_ref());
            }
        }
        if self.tool.kind == Kind::Etcdctl {
            cmd.env("ETCDCTL_API", "3");
        }
        let ran = host.exec(&mut cmd, Stdin::Null, timeout).map_err(|e| match e {
            HostError::Spawn { source, .. } => EtcdError::Spawn {
                command: self.display(),
                source,
            },
            other => EtcdError::Host(other),
        })?;
        if ran.timed_out {
            return Err(EtcdError::ToolTimedOut {
                command: self.display(),
                secs: timeout.map(|t| t.as_secs()).unwrap_or_default(),
                stderr: crate::host::tail(&ran),
            });
        }
        if !ran.status.success() {
            return Err(EtcdError::ToolFailed {
                command: self.display(),
                status: ran.status.to_string(),
                stderr: crate::host::tail(&ran),
            });
        }
        let stdout = String::from_utf8_lossy(&ran.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&ran.stderr).into_owned();
        Ok(Output { stdout, stderr })
    }
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-+=:,./@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            "#!/bin/sh\necho \"$ETCDCTL_API:$ETCDCTL_ENDPOINTS:$*\"\necho oops >&2\nexit ${EXIT:-0}\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn lookup_order_flag_then_root_then_path() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let pathdir = t.path().join("bin");
        let flag = t.path().join("my-etcdctl");
        exe(&root.join("usr/local/bin/etcdctl"));
        exe(&pathdir.join("etcdctl"));
        exe(&pathdir.join("etcdutl"));
        exe(&flag);
        let pv = std::env::join_paths(["relative", pathdir.to_str().unwrap()]).unwrap();
        let host = Host::new(&root, true);
        let f = |k, e: Option<&Path>| find_in(&host, k, e, Some(&pv)).unwrap().unwrap();

        let t1 = f(Kind::Etcdctl, Some(&flag));
        assert_eq!((t1.path, t1.found_by), (flag.clone(), FoundBy::Flag));
        let t2 = f(Kind::Etcdctl, None);
        assert_eq!(
            (t2.path, t2.found_by),
            (root.join("usr/local/bin/etcdctl"), FoundBy::Root)
        );
        let t3 = f(Kind::Etcdutl, None);
        assert_eq!((t3.path, t3.found_by), (pathdir.join("etcdutl"), FoundBy::Path));
        assert!(find_in(&host, Kind::Etcdutl, None, None).unwrap().is_none());

        // An explicit path that is not executable is an error, not a fallback.
        let plain = t.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let e = find_in(&host, Kind::Etcdctl, Some(&plain), Some(&pv)).unwrap_err();
        assert!(e.to_string().contains("--etcdctl"), "{e}");
        let e = not_found(Kind::Etcdutl, Path::new("/r")).to_string();
        assert!(e.contains("/r/usr/local/bin/etcdutl") && e.contains("--etcdutl"), "{e}");
    }

    #[test]
    fn runs_with_api3_and_scrubbed_env_and_reports_failures() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("etcdctl");
        exe(&p);
        let tool = Tool {
            kind: Kind::Etcdctl,
            path: p.clone(),
            found_by: FoundBy::Flag,
        };
        let inv = tool.command(["snapshot", "save", "a b"]);
        assert_eq!(
            inv.display(),
            format!("ETCDCTL_API=3 {} snapshot save 'a b'", p.display())
        );
        // ETCDCTL_API is set and any ETCDCTL_ENDPOINTS from the environment is removed.
        let host = Host::new(Path::new("/"), true);
        let out = inv.run(&host, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(out.stdout, "3::snapshot save a b\n");
        assert_eq!(out.stderr, "oops\n");

        let failing = Tool {
            path: PathBuf::from("/bin/sh"),
            ..tool.clone()
        }
        .command(["-c", "echo 'Error: no luck' >&2; exit 3"]);
        let e = failing.run(&host, None).unwrap_err().to_string();
        assert!(e.contains("/bin/sh -c"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("Error: no luck"), "{e}");

        let slow = Tool {
            path: PathBuf::from("/bin/sleep"),
            ..tool
        }
        .command(["30"]);
        let t0 = std::time::Instant::now();
        let e = slow.run(&host, Some(Duration::from_millis(300))).unwrap_err();
        assert!(matches!(e, EtcdError::ToolTimedOut { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(OsStr::new("--a=b/c:1")), "--a=b/c:1");
        assert_eq!(shell_quote(OsStr::new("")), "''");
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
    }
}
