//! The node seam: every file write relative to a root directory and atomic, every command
//! through one runner that records argv and puts stderr into errors, and a dry-run mode that
//! prints what would happen instead.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
}

pub struct Host {
    root: PathBuf,
    dry_run: bool,
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

    /// `abs` (an absolute node path such as `/etc/containerd/config.toml`) under the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    pub fn say(&self, msg: &str) {
        if self.dry_run {
            println!("[dry-run] {msg}");
        }
    }

    /// The real path of node path `abs`, following symlinks inside the root (absolute link
    /// targets are node paths, so they are re-rooted).
    pub fn resolve(&self, abs: &str) -> PathBuf {
        let mut cur = abs.to_string();
        for _ in 0..16 {
            let p = self.path(&cur);
            match std::fs::read_link(&p) {
                Ok(t) if t.is_absolute() => cur = t.display().to_string(),
                Ok(t) => {
                    let parent = Path::new(&cur).parent().unwrap_or(Path::new("/"));
                    cur = normalize(&parent.join(t));
                }
                Err(_) => return p,
            }
        }
        self.path(&cur)
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    pub fn read(&self, abs: &str) -> Option<String> {
        std::fs::read_to_string(self.path(abs)).ok()
    }

    pub fn mkdir(&self, abs: &str) -> Result<(), HostError> {
        let p = self.path(abs);
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
        let p = self.path(abs);
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
        let p = self.path(abs);
        if self.dry_run {
            self.say(&format!("install {abs} (mode {mode:o})"));
            return Ok(());
        }
        let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|source| HostError::Io {
            action: "creating directory",
            path: parent.clone(),
            source,
        })?;
        let io = |action, source| HostError::Io {
            action,
            path: p.clone(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".kbundle-")
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
        let p = self.path(abs);
        if std::fs::read_link(&p).is_ok_and(|t| t == Path::new(target)) {
            return Ok(());
        }
        if self.dry_run {
            self.say(&format!("ln -sfn {target} {abs}"));
            return Ok(());
        }
        let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|source| HostError::Io {
            action: "creating directory",
            path: parent.clone(),
            source,
        })?;
        let tmp = parent.join(format!(".kbundle-link-{}", std::process::id()));
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
