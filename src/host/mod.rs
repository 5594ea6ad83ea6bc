//! The node seam: every file write relative to a root directory and atomic, every command
//! through one runner that records argv and puts stderr into errors, and a dry-run mode that
//! prints what would happen instead.
//!
//! Every node path is built by [`node_path`], which refuses anything that could leave the
//! root. Temp files are named `.kbundle-tmp.*` in directories recorded in the node state,
//! so an interrupted run's leftovers are found and removed by the next one ([`lock`]).

pub mod lock;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Prefix of every temp file kbundle creates on a node.
pub const TEMP_PREFIX: &str = ".kbundle-tmp.";
/// Node state: the directories kbundle has created temp files in, one node path a line.
pub const WRITE_DIRS: &str = "/var/lib/kbundle/state/write-dirs";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` failed ({status}): {stderr}")]
    Command {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{argv}`: {source}")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing node path {}: {reason} (node paths are absolute, without '.', '..' or empty components)",
        crate::bundle::fields::shown(path)
    )]
    OutsideRoot { path: String, reason: &'static str },
    #[error("another kbundle is changing this node (lock {path} is held; `fuser {path}` names it); wait for it to finish, or stop it")]
    Busy { path: PathBuf },
}

pub struct Host {
    root: PathBuf,
    dry_run: bool,
    /// Directories already recorded in [`WRITE_DIRS`] during this run.
    recorded: std::sync::Mutex<std::collections::BTreeSet<PathBuf>>,
}

/// `abs` (an absolute node path such as `/etc/containerd/config.toml`) under `root`. The one
/// place node paths are made: relative paths, `.`, `..`, empty components and NUL are
/// refused, so nothing a bundle or a config says can lead outside the root.
pub fn node_path(root: &Path, abs: &str) -> Result<PathBuf, HostError> {
    let refuse = |reason| HostError::OutsideRoot {
        path: abs.to_string(),
        reason,
    };
    let rest = abs.strip_prefix('/').ok_or_else(|| refuse("not absolute"))?;
    if abs.contains('\0') {
        return Err(refuse("NUL in the path"));
    }
    if rest.is_empty() {
        return Ok(root.to_path_buf());
    }
    for c in rest.split('/') {
        match c {
            "" => return Err(refuse("empty path component")),
            "." | ".." => return Err(refuse("'.' or '..' path component")),
            _ => {}
        }
    }
    Ok(root.join(rest))
}

fn quote(a: &OsStr) -> String {
    let s = a.to_string_lossy();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+".contains(&b))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A command line as a shell would show it.
pub fn argv_string(cmd: &Command) -> String {
    let mut v = vec![quote(cmd.get_program())];
    v.extend(cmd.get_args().map(quote));
    v.join(" ")
}

impl Host {
    pub fn new(root: &Path, dry_run: bool) -> Host {
        Host {
            root: root.to_path_buf(),
            dry_run,
            recorded: Default::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Is this the real root of the running system (not a `--root` image)?
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The running system itself: root `/` and not inside a chroot (a kickstart `%post`
    /// chroot is `/` too, but its kernel, swap and services belong to the installer).
    pub fn is_running_system(&self) -> bool {
        self.is_live() && !in_chroot()
    }

    /// `abs` (an absolute node path such as `/etc/containerd/config.toml`) under the root;
    /// see [`node_path`].
    pub fn path(&self, abs: &str) -> Result<PathBuf, HostError> {
        node_path(&self.root, abs)
    }

    pub fn say(&self, msg: &str) {
        if self.dry_run {
            println!("[dry-run] {msg}");
        }
    }

    /// The real path of node path `abs`, following symlinks inside the root (absolute link
    /// targets are node paths, so they are re-rooted).
    pub fn resolve(&self, abs: &str) -> Result<PathBuf, HostError> {
        let mut cur = normalize(Path::new(abs));
        for _ in 0..16 {
            let p = self.path(&cur)?;
            match std::fs::read_link(&p) {
                Ok(t) if t.is_absolute() => cur = normalize(&t),
                Ok(t) => {
                    let parent = Path::new(&cur).parent().unwrap_or(Path::new("/"));
                    cur = normalize(&parent.join(t));
                }
                Err(_) => return Ok(p),
            }
        }
        self.path(&cur)
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).is_ok_and(|p| p.exists())
    }

    pub fn read(&self, abs: &str) -> Option<String> {
        std::fs::read_to_string(self.path(abs).ok()?).ok()
    }

    pub fn mkdir(&self, abs: &str) -> Result<(), HostError> {
        let p = self.path(abs)?;
        if self.dry_run {
            if !p.is_dir() {
                self.say(&format!("mkdir -p {abs}"));
            }
            return Ok(());
        }
        std::fs::create_dir_all(&p).map_err(|source| HostError::Io {
            action: "creating directory",
            path: p,
            source,
        })
    }

    /// Writes a file atomically with `mode`; unchanged content is left untouched.
    pub fn write(&self, abs: &str, data: &[u8], mode: u32) -> Result<bool, HostError> {
        let p = self.path(abs)?;
        if std::fs::read(&p).is_ok_and(|old| old == data) && mode_of(&p) == Some(mode) {
            return Ok(false);
        }
        if self.dry_run {
            self.say(&format!("write {abs} ({} bytes, mode {mode:o})", data.len()));
            return Ok(true);
        }
        self.install_reader(&mut &data[..], abs, mode)?;
        Ok(true)
    }

    /// Copies a file atomically (streamed), with `mode`.
    pub fn install_file(&self, src: &Path, abs: &str, mode: u32) -> Result<(), HostError> {
        if self.dry_run {
            self.say(&format!("install {} -> {abs} (mode {mode:o})", src.display()));
            return Ok(());
        }
        let mut f = std::fs::File::open(src).map_err(|source| HostError::Io {
            action: "reading",
            path: src.to_path_buf(),
            source,
        })?;
        self.install_reader(&mut f, abs, mode)
    }

    /// Streams `r` into `abs` atomically, with `mode`.
    pub fn install_reader(&self, r: &mut dyn std::io::Read, abs: &str, mode: u32) -> Result<(), HostError> {
        let p = self.path(abs)?;
        if self.dry_run {
            self.say(&format!("install {abs} (mode {mode:o})"));
            return Ok(());
        }
        let parent = self.temp_dir_for(&p)?;
        let io = |action, source| HostError::Io {
            action,
            path: p.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&parent)
            .map_err(|e| io("creating a temp file for", e))?;
        std::io::copy(r, tmp.as_file_mut()).map_err(|e| io("writing", e))?;
        set_mode(tmp.path(), mode).map_err(|e| io("setting the mode of", e))?;
        tmp.as_file().sync_all().map_err(|e| io("syncing", e))?;
        tmp.persist(&p).map_err(|e| io("renaming into place", e.error))?;
        Ok(())
    }

    /// Points the symlink `abs` at `target`, atomically (temp link, then rename).
    pub fn symlink(&self, target: &str, abs: &str) -> Result<(), HostError> {
        let p = self.path(abs)?;
        // The target is a node path too: it must stay inside the root once re-rooted.
        if target != "/dev/null" {
            self.path(target)?;
        }
        if std::fs::read_link(&p).is_ok_and(|t| t == Path::new(target)) {
            return Ok(());
        }
        if self.dry_run {
            self.say(&format!("ln -sfn {target} {abs}"));
            return Ok(());
        }
        let parent = self.temp_dir_for(&p)?;
        let tmp = parent.join(format!("{TEMP_PREFIX}link-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(target, &tmp).map_err(|source| HostError::Io {
            action: "creating symlink",
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &p).map_err(|source| HostError::Io {
            action: "renaming symlink into place",
            path: p.clone(),
            source,
        })
    }

    /// The parent directory of `p`, created if needed and recorded in [`WRITE_DIRS`] before
    /// the first temp file is made in it.
    fn temp_dir_for(&self, p: &Path) -> Result<PathBuf, HostError> {
        let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        let io = |action, path: &Path, source| HostError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&parent).map_err(|e| io("creating directory", &parent, e))?;
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if recorded.contains(&parent) {
            return Ok(parent);
        }
        let node = match parent.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => return Ok(parent),
        };
        let list = self.path(WRITE_DIRS)?;
        let known = std::fs::read_to_string(&list).unwrap_or_default();
        if !known.lines().any(|l| l == node) {
            lock::append_line(&list, &node).map_err(|e| io("recording a write directory in", &list, e))?;
        }
        recorded.insert(parent.clone());
        Ok(parent)
    }

    /// Runs a command (not in dry-run mode); fails with argv and stderr on non-zero exit.
    pub fn run(&self, cmd: &mut Command) -> Result<Output, HostError> {
        let argv = argv_string(cmd);
        if self.dry_run {
            self.say(&format!("run: {argv}"));
            return Ok(Output {
                status: exit_ok(),
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        }
        self.query(cmd)
    }

    /// Runs a command that only reads (also in dry-run mode).
    pub fn query(&self, cmd: &mut Command) -> Result<Output, HostError> {
        let argv = argv_string(cmd);
        let out = cmd.stdin(Stdio::null()).output().map_err(|source| HostError::Spawn {
            argv: argv.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(HostError::Command {
                argv,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().chars().take(4000).collect(),
            });
        }
        Ok(out)
    }
}

/// Lexically normalises an absolute node path, clamping `..` at `/` so it cannot leave
/// the root.
fn normalize(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(x) => parts.push(x.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Are we in a chroot? `/` differs from PID 1's root.
pub fn in_chroot() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata("/"), std::fs::metadata("/proc/1/root/.")) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    false
}

#[cfg(unix)]
fn exit_ok() -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(0)
}

#[cfg(unix)]
fn mode_of(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}
