//! The node seam. Every side effect on a node goes through [`Host`]: files relative to a
//! root directory and written atomically, commands with their argv and stderr in errors,
//! the running kernel's `/proc` and `/sys`, the temporary containerd, locks and time. Host
//! is policy (re-rooting, dry-run, errors); the primitive effects are a trait,
//! [`sys::Sys`], done for real by [`sys::Real`] and recorded for tests by
//! [`record::Recorder`].
//!
//! Every node path is built by [`node_path`], which refuses anything that could leave the
//! root. Temp files are named `.kbundle-tmp.*` in directories recorded in the node state,
//! so an interrupted run's leftovers are found and removed by the next one ([`lock`]).

pub mod journal;
pub mod lock;
pub mod record;
mod run;
pub mod sys;

pub use run::tail;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use sys::Sys;

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
    /// The running system itself (root `/`, not a chroot): its kernel, swap and services
    /// are ours to change.
    live: bool,
    sys: Arc<dyn Sys>,
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
    /// The real node at `root`.
    pub fn new(root: &Path, dry_run: bool) -> Host {
        let sys: Arc<dyn Sys> = Arc::new(sys::Real);
        let live = root == Path::new("/") && !in_chroot(sys.as_ref());
        Host::with_sys(root, dry_run, sys, live)
    }

    /// A node whose side effects go to `sys` (a [`record::Recorder`] in tests); `live` says
    /// whether it is to be treated as the running system.
    pub fn with_sys(root: &Path, dry_run: bool, sys: Arc<dyn Sys>, live: bool) -> Host {
        Host {
            root: root.to_path_buf(),
            dry_run,
            live,
            sys,
            recorded: Default::default(),
        }
    }

    pub fn sys(&self) -> &dyn Sys {
        self.sys.as_ref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Is this the real root of the running system (not a `--root` image)?
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/") || self.live
    }

    /// The running system itself: root `/` and not inside a chroot (a kickstart `%post`
    /// chroot is `/` too, but its kernel, swap and services belong to the installer).
    pub fn is_running_system(&self) -> bool {
        self.live
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
            match self.sys.read_link(&p) {
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

    /// Does `abs` exist (following symlinks inside the root)?
    pub fn exists(&self, abs: &str) -> bool {
        self.resolve(abs).is_ok_and(|p| self.sys.meta(&p).is_ok())
    }

    pub fn is_dir(&self, abs: &str) -> bool {
        self.resolve(abs)
            .is_ok_and(|p| self.sys.meta(&p).is_ok_and(|m| m.is_dir))
    }

    pub fn is_file(&self, abs: &str) -> bool {
        self.resolve(abs)
            .is_ok_and(|p| self.sys.meta(&p).is_ok_and(|m| m.is_file))
    }

    pub fn read(&self, abs: &str) -> Option<String> {
        let bytes = self.sys.read(&self.path(abs).ok()?).ok()?;
        String::from_utf8(bytes).ok()
    }

    /// The bytes of node file `abs`.
    pub fn read_bytes(&self, abs: &str) -> Result<Vec<u8>, HostError> {
        let p = self.path(abs)?;
        self.sys.read(&p).map_err(io("reading", &p))
    }

    /// The names in directory `abs` (empty when it does not exist).
    pub fn list(&self, abs: &str) -> Vec<String> {
        let Ok(p) = self.path(abs) else { return Vec::new() };
        self.sys
            .list(&p)
            .map(|v| v.into_iter().map(|n| n.to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// The target of the symlink `abs`, if it is one.
    pub fn read_link(&self, abs: &str) -> Option<PathBuf> {
        self.sys.read_link(&self.path(abs).ok()?).ok()
    }

    pub fn mkdir(&self, abs: &str) -> Result<(), HostError> {
        let p = self.path(abs)?;
        if self.dry_run {
            if !self.is_dir(abs) {
                self.say(&format!("mkdir -p {abs}"));
            }
            return Ok(());
        }
        self.sys.create_dir_all(&p).map_err(io("creating directory", &p))
    }

    /// Writes a file atomically with `mode`; unchanged content is left untouched.
    pub fn write(&self, abs: &str, data: &[u8], mode: u32) -> Result<bool, HostError> {
        let p = self.path(abs)?;
        let same = self.sys.read(&p).is_ok_and(|old| old == data);
        if same && self.sys.meta(&p).is_ok_and(|m| m.mode == mode) {
            return Ok(false);
        }
        if self.dry_run {
            self.say(&format!("write {abs} ({} bytes, mode {mode:o})", data.len()));
            return Ok(true);
        }
        self.install_reader(&mut &data[..], abs, mode)?;
        Ok(true)
    }

    /// Copies a file (from the bundle, not the node) atomically, streamed, with `mode`.
    pub fn install_file(&self, src: &Path, abs: &str, mode: u32) -> Result<(), HostError> {
        if self.dry_run {
            self.say(&format!("install {} -> {abs} (mode {mode:o})", src.display()));
            return Ok(());
        }
        let mut f = std::fs::File::open(src).map_err(io("reading", src))?;
        self.install_reader(&mut f, abs, mode)
    }

    /// Streams `r` into `abs` atomically, with `mode`.
    pub fn install_reader(&self, r: &mut dyn std::io::Read, abs: &str, mode: u32) -> Result<(), HostError> {
        let p = self.path(abs)?;
        if self.dry_run {
            self.say(&format!("install {abs} (mode {mode:o})"));
            return Ok(());
        }
        self.temp_dir_for(&p)?;
        self.sys
            .write_atomic(&p, TEMP_PREFIX, r, mode)
            .map_err(io("writing", &p))
    }

    /// Points the symlink `abs` at `target`, atomically (temp link, then rename).
    pub fn symlink(&self, target: &str, abs: &str) -> Result<(), HostError> {
        let p = self.path(abs)?;
        // The target is a node path too: it must stay inside the root once re-rooted.
        if target != "/dev/null" {
            self.path(target)?;
        }
        if self.sys.read_link(&p).is_ok_and(|t| t == Path::new(target)) {
            return Ok(());
        }
        if self.dry_run {
            self.say(&format!("ln -sfn {target} {abs}"));
            return Ok(());
        }
        let parent = self.temp_dir_for(&p)?;
        let tmp = parent.join(format!("{TEMP_PREFIX}link-{}", std::process::id()));
        self.sys
            .symlink_atomic(Path::new(target), &p, &tmp)
            .map_err(io("creating symlink", &p))
    }

    /// Removes the file or directory tree `abs` (kbundle's own state only).
    pub fn remove(&self, abs: &str) -> Result<(), HostError> {
        let p = self.path(abs)?;
        if self.dry_run {
            self.say(&format!("rm -rf {abs}"));
            return Ok(());
        }
        match self.sys.meta(&p) {
            Ok(m) if m.is_dir => self.sys.remove_dir_all(&p).map_err(io("removing", &p)),
            Ok(_) => self.sys.remove_file(&p).map_err(io("removing", &p)),
            Err(_) => Ok(()),
        }
    }

    /// The parent directory of `p`, created if needed and recorded in [`WRITE_DIRS`] before
    /// the first temp file is made in it.
    fn temp_dir_for(&self, p: &Path) -> Result<PathBuf, HostError> {
        let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.sys
            .create_dir_all(&parent)
            .map_err(io("creating directory", &parent))?;
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if recorded.contains(&parent) {
            return Ok(parent);
        }
        let node = match parent.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => return Ok(parent),
        };
        // The scratch dir is removed whole by the next run; its temp dirs are not recorded.
        if Path::new(&node).starts_with(lock::SCRATCH) {
            return Ok(parent);
        }
        let list = self.path(WRITE_DIRS)?;
        let known = self.sys.read(&list).unwrap_or_default();
        if !String::from_utf8_lossy(&known).lines().any(|l| l == node) {
            if let Some(d) = list.parent() {
                self.sys.create_dir_all(d).map_err(io("creating directory", d))?;
            }
            self.sys
                .append(&list, format!("{node}\n").as_bytes())
                .map_err(io("recording a write directory in", &list))?;
        }
        recorded.insert(parent.clone());
        Ok(parent)
    }
}

/// An I/O error with what was being done and where.
pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HostError {
    let path = path.to_path_buf();
    move |source| HostError::Io { action, path, source }
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
fn in_chroot(sys: &dyn Sys) -> bool {
    match (sys.meta(Path::new("/")), sys.meta(Path::new("/proc/1/root/."))) {
        (Ok(a), Ok(b)) => (a.dev, a.ino) != (b.dev, b.ino),
        _ => false,
    }
}
