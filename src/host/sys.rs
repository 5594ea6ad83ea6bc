//! The primitive side effects on a node, as a trait: files, processes, the running kernel's
//! `/proc` and `/sys`, locks and time. [`Real`] does them; [`super::record::Recorder`]
//! records them for tests (files into a scratch directory, commands scripted). Everything
//! above this layer ([`super::Host`]) is policy: re-rooting, dry-run, atomic writes, errors.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a command wrote and how it ended.
#[derive(Debug, Clone)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Killed because it ran past its timeout.
    pub timed_out: bool,
}

/// Writes a command's standard input (on a helper thread, while the command runs).
pub type Feeder<'a> = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'a>;

/// What a command reads on its standard input.
pub enum Stdin<'a> {
    Null,
    Bytes(&'a [u8]),
    /// Streams of any size, such as an image layout piped into `ctr images import -`.
    Stream(Feeder<'a>),
}

/// The kind, size and identity of a path (not following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub is_dir: bool,
    pub is_file: bool,
    pub is_symlink: bool,
    pub len: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
}

/// A long-running process the node seam started.
pub trait Proc: Send {
    fn id(&self) -> u32;
    /// `Some` once it has exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>>;
    fn kill(&mut self) -> io::Result<()>;
    fn wait(&mut self) -> io::Result<ExitStatus>;
}

/// A held lock; released when dropped (and by the kernel if the process dies).
pub trait Held: Send + std::fmt::Debug {}

/// Every side effect kbundle has on a node.
pub trait Sys: Send + Sync {
    fn read(&self, p: &Path) -> io::Result<Vec<u8>>;
    /// A file opened for streaming reads (large files: snapshots, tarballs).
    fn open(&self, p: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// Flushes a file or a directory's entries to disk (best effort for directories).
    fn sync(&self, p: &Path) -> io::Result<()>;
    /// Like `symlink_metadata`: a final symlink is described, not followed.
    fn meta(&self, p: &Path) -> io::Result<Meta>;
    /// Like `metadata`: symlinks are followed.
    fn stat(&self, p: &Path) -> io::Result<Meta>;
    fn read_link(&self, p: &Path) -> io::Result<PathBuf>;
    /// The names in a directory.
    fn list(&self, p: &Path) -> io::Result<Vec<std::ffi::OsString>>;
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
    /// Creates a fresh directory `<prefix>XXXXXX` in `parent` (kept until removed).
    fn temp_dir(&self, parent: &Path, prefix: &str) -> io::Result<PathBuf>;
    fn set_mode(&self, p: &Path, mode: u32) -> io::Result<()>;
    /// Streams `r` into a temp file named `<prefix>XXXXXX` beside `p`, sets `mode`, syncs,
    /// and renames it over `p`.
    fn write_atomic(&self, p: &Path, prefix: &str, r: &mut dyn Read, mode: u32) -> io::Result<()>;
    /// Points `link` at `target` by renaming a fresh link named `temp` over it.
    fn symlink_atomic(&self, target: &Path, link: &Path, temp: &Path) -> io::Result<()>;
    /// Appends `data` to `p` (created if missing) and syncs.
    fn append(&self, p: &Path, data: &[u8]) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, p: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, p: &Path) -> io::Result<()>;
    /// An exclusive `flock` on `p` (created if missing); `None` when another holds it.
    fn try_lock(&self, p: &Path) -> io::Result<Option<Box<dyn Held>>>;
    /// Runs a command to completion (killed after `timeout`), capturing its output.
    fn run(&self, cmd: &mut Command, stdin: Stdin<'_>, timeout: Option<Duration>) -> io::Result<Ran>;
    /// Starts a long-running command (stdin null, stdout to the null device, stderr to
    /// `log`).
    fn spawn(&self, cmd: &mut Command, log: &Path) -> io::Result<Box<dyn Proc>>;
    /// A file of the running kernel (`/proc/…`, `/sys/…`): never re-rooted.
    fn kernel(&self, path: &str) -> io::Result<String>;
    fn sleep(&self, d: Duration);
    /// Monotonic time, for deadlines.
    fn now(&self) -> Duration;
}

/// The real node.
#[derive(Debug, Default)]
pub struct Real;

fn start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

#[derive(Debug)]
struct FileLock(#[allow(dead_code)] std::fs::File);
impl Held for FileLock {}

struct RealProc(Child);

impl Proc for RealProc {
    fn id(&self) -> u32 {
        self.0.id()
    }
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_wait()
    }
    fn kill(&mut self) -> io::Result<()> {
        self.0.kill()
    }
    fn wait(&mut self) -> io::Result<ExitStatus> {
        self.0.wait()
    }
}

impl Sys for Real {
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(p)
    }

    fn open(&self, p: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::fs::File::open(p)?))
    }

    fn sync(&self, p: &Path) -> io::Result<()> {
        let f = std::fs::File::open(p)?;
        match f.sync_all() {
            Err(e) if p.is_dir() => {
                // Some file systems refuse to fsync directories.
                let _ = e;
                Ok(())
            }
            r => r,
        }
    }

    fn meta(&self, p: &Path) -> io::Result<Meta> {
        Ok(meta_of(&std::fs::symlink_metadata(p)?))
    }

    fn stat(&self, p: &Path) -> io::Result<Meta> {
        Ok(meta_of(&std::fs::metadata(p)?))
    }

    fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(p)
    }

    fn list(&self, p: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(p)? {
            v.push(e?.file_name());
        }
        v.sort();
        Ok(v)
    }

    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }

    fn temp_dir(&self, parent: &Path, prefix: &str) -> io::Result<PathBuf> {
        Ok(tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?.keep())
    }

    fn set_mode(&self, p: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
    }

    fn write_atomic(&self, p: &Path, prefix: &str, r: &mut dyn Read, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let parent = p.parent().unwrap_or(Path::new("/"));
        let mut tmp = tempfile::Builder::new().prefix(prefix).tempfile_in(parent)?;
        io::copy(r, tmp.as_file_mut())?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
        tmp.as_file().sync_all()?;
        tmp.persist(p).map_err(|e| e.error)?;
        Ok(())
    }

    fn symlink_atomic(&self, target: &Path, link: &Path, temp: &Path) -> io::Result<()> {
        let _ = std::fs::remove_file(temp);
        std::os::unix::fs::symlink(target, temp)?;
        std::fs::rename(temp, link)
    }

    fn append(&self, p: &Path, data: &[u8]) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
        f.write_all(data)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_file(p)
    }

    fn remove_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(p)
    }

    fn try_lock(&self, p: &Path) -> io::Result<Option<Box<dyn Held>>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLock(f)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn run(&self, cmd: &mut Command, stdin: Stdin<'_>, timeout: Option<Duration>) -> io::Result<Ran> {
        run_real(cmd, stdin, timeout)
    }

    fn spawn(&self, cmd: &mut Command, log: &Path) -> io::Result<Box<dyn Proc>> {
        let log = std::fs::File::create(log)?;
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?;
        Ok(Box::new(RealProc(child)))
    }

    fn kernel(&self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }

    fn now(&self) -> Duration {
        start().elapsed()
    }
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    Meta {
        is_dir: m.is_dir(),
        is_file: m.is_file(),
        is_symlink: m.file_type().is_symlink(),
        len: m.len(),
        mode: m.permissions().mode() & 0o7777,
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Reads a pipe to its end on a helper thread.
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn run_real(cmd: &mut Command, stdin: Stdin<'_>, timeout: Option<Duration>) -> io::Result<Ran> {
    let piped = !matches!(stdin, Stdin::Null);
    cmd.stdin(if piped { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let fed = std::thread::scope(|s| -> io::Result<(ExitStatus, bool)> {
        let feeder = child.stdin.take().map(|mut w| {
            s.spawn(move || match stdin {
                Stdin::Null => Ok(()),
                Stdin::Bytes(b) => w.write_all(b),
                Stdin::Stream(f) => f(&mut w).and_then(|_| w.flush()),
            })
        });
        let waited = wait_with_timeout(&mut child, timeout);
        let fed = feeder.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("stdin writer panicked")))
        });
        let (status, timed_out) = waited?;
        // A command that exits without reading all of its input is judged by its status.
        if let Some(Err(e)) = fed {
            if status.success() && e.kind() != io::ErrorKind::BrokenPipe {
                return Err(e);
            }
        }
        Ok((status, timed_out))
    })?;
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Ran {
        status: fed.0,
        timed_out: fed.1,
        stdout: collect(out),
        stderr: collect(err),
    })
}

fn wait_with_timeout(child: &mut Child, timeout: Option<Duration>) -> io::Result<(ExitStatus, bool)> {
    let Some(limit) = timeout else {
        return child.wait().map(|s| (s, false));
    };
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok((s, false));
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            return child.wait().map(|s| (s, true));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An exit status for a command that did not run (dry-run) or was scripted.
pub fn exit_status(code: i32) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(code << 8)
}
