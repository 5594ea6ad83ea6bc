//! One kbundle at a time per node, and the clean-up after one that was killed.
//!
//! Every command that changes a node (`install`, `upgrade apply|rollback`, `etcd snapshot
//! restore`) first takes `/var/lib/kbundle/lock`. Holding it, it removes what an interrupted
//! run left: a temporary containerd it had started (found by the PID and start time it
//! recorded), its scratch directory, temp files in every directory it had written to, and
//! half-unpacked bundles. Nothing else is touched.

use super::{Host, HostError, TEMP_PREFIX, WRITE_DIRS};
use std::fs::File;
use std::io::{self, Write};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The node lock file.
pub const LOCK: &str = "/var/lib/kbundle/lock";
/// Scratch space of a run (the temporary containerd's state), emptied by the next run.
pub const SCRATCH: &str = "/var/lib/kbundle/tmp";
/// `<name>.pid` files of processes a run started: `<pid> <start time>`.
pub const CHILDREN: &str = "/var/lib/kbundle/run";

/// Held for as long as a command changes the node.
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
}

/// What the clean-up found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub processes: Vec<String>,
    pub temp_files: usize,
    pub scratch: bool,
    pub partial_unpacks: usize,
}

impl Swept {
    /// One line for the operator, or `None` when there was nothing to clean.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.processes.is_empty() {
            parts.push(format!("stopped {}", self.processes.join(", ")));
        }
        if self.scratch {
            parts.push("removed the scratch directory".to_string());
        }
        if self.temp_files > 0 {
            parts.push(format!("removed {} partial file(s)", self.temp_files));
        }
        if self.partial_unpacks > 0 {
            parts.push(format!("removed {} partial unpack(s)", self.partial_unpacks));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> HostError {
    let path = path.to_path_buf();
    move |source| HostError::Io { action, path, source }
}

/// Appends one line to `path` (created with its directory if needed) and syncs it.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_all()
}

impl Host {
    /// Takes the node lock (refusing when another kbundle holds it), then cleans up after
    /// an interrupted run. `None` in dry-run mode, which changes nothing.
    pub fn lock(&self) -> Result<Option<(NodeLock, Swept)>, HostError> {
        if self.dry_run() {
            return Ok(None);
        }
        let path = self.path(LOCK)?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io_err("creating directory", d))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        if let Err(e) = file.try_lock() {
            return match e {
                std::fs::TryLockError::WouldBlock => Err(HostError::Busy { path }),
                std::fs::TryLockError::Error(e) => Err(io_err("locking", &path)(e)),
            };
        }
        // The file is never written: a re-run of a finished install changes nothing.
        let swept = self.sweep()?;
        Ok(Some((NodeLock { _file: file }, swept)))
    }

    /// Removes an interrupted run's leftovers (call only while holding the lock).
    fn sweep(&self) -> Result<Swept, HostError> {
        let mut s = Swept {
            processes: self.stop_recorded_children()?,
            ..Default::default()
        };
        let scratch = self.path(SCRATCH)?;
        if scratch.exists() {
            release_mounts_below(&scratch);
            std::fs::remove_dir_all(&scratch).map_err(io_err("removing", &scratch))?;
            s.scratch = true;
        }
        s.temp_files = self.remove_temp_files()?;
        let store = self.path(crate::bundle::store::NODE_STORE)?;
        s.partial_unpacks = crate::bundle::store::sweep(&store).map_err(|e| HostError::Io {
            action: "cleaning",
            path: store.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(s)
    }

    /// `.kbundle-tmp.*` files in every directory recorded in [`WRITE_DIRS`].
    fn remove_temp_files(&self) -> Result<usize, HostError> {
        let list = self.path(WRITE_DIRS)?;
        let text = std::fs::read_to_string(&list).unwrap_or_default();
        let mut n = 0;
        for line in text.lines() {
            // A line that is not a clean node path is ignored, never followed.
            let Ok(dir) = self.path(line) else { continue };
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let ours = e.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
                if ours && e.file_type().is_ok_and(|t| !t.is_dir()) {
                    std::fs::remove_file(e.path()).map_err(io_err("removing", &e.path()))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Records a process this run started, so a later run can stop it if this one is
    /// killed before it does.
    pub fn record_child(&self, name: &str, pid: u32) -> Result<PathBuf, HostError> {
        let p = self.path(&format!("{CHILDREN}/{name}.pid"))?;
        let start = start_time(pid).unwrap_or_default();
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io_err("creating directory", d))?;
        }
        crate::fsutil::write_atomic(&p, format!("{pid} {start}\n").as_bytes()).map_err(io_err("writing", &p))?;
        Ok(p)
    }

    /// Stops every recorded child that is still the process it was (same PID and start
    /// time, still running kbundle's scratch config), and forgets the records.
    fn stop_recorded_children(&self) -> Result<Vec<String>, HostError> {
        let dir = self.path(CHILDREN)?;
        let scratch = self.path(SCRATCH)?;
        let mut stopped = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(stopped);
        };
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let mut it = text.split_whitespace();
            let pid: Option<u32> = it.next().and_then(|p| p.parse().ok());
            let start: Option<u64> = it.next().and_then(|s| s.parse().ok());
            if let (Some(pid), Some(start)) = (pid, start) {
                if start_time(pid) == Some(start) && cmdline_mentions(pid, &scratch) {
                    kill_and_wait(pid);
                    stopped.push(format!("pid {pid} ({})", e.file_name().to_string_lossy()));
                }
            }
            std::fs::remove_file(e.path()).map_err(io_err("removing", &e.path()))?;
        }
        Ok(stopped)
    }
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process gone or a zombie (its exit is only waiting to be reaped)?
pub fn finished(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, None | Some("Z") | Some("X"))
}

fn cmdline_mentions(pid: u32, dir: &Path) -> bool {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.as_os_str().as_encoded_bytes();
    !needle.is_empty() && cmd.windows(needle.len()).any(|w| w == needle)
}

fn kill_and_wait(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !finished(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lazily unmounts whatever is mounted strictly below `dir` (deepest first).
pub fn release_mounts_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir) && Path::new(p) != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = std::process::Command::new("umount").arg("-l").arg(p).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_leftovers_are_swept() {
        let t = tempfile::tempdir().unwrap();
        let h = Host::new(t.path(), false);
        h.write("/usr/local/bin/x", b"x", 0o755).unwrap();
        let stale = t.path().join("usr/local/bin/.kbundle-tmp.123abc");
        std::fs::write(&stale, "partial").unwrap();
        let foreign = t.path().join("usr/local/bin/.other");
        std::fs::write(&foreign, "not ours").unwrap();
        std::fs::create_dir_all(t.path().join("var/lib/kbundle/tmp/containerd-1")).unwrap();
        let (held, swept) = h.lock().unwrap().unwrap();
        assert_eq!((swept.temp_files, swept.scratch), (1, true));
        assert!(!stale.exists() && foreign.exists());
        assert!(matches!(Host::new(t.path(), false).lock(), Err(HostError::Busy { .. })));
        drop(held);
        assert!(Host::new(t.path(), false).lock().unwrap().is_some());
    }

    #[test]
    fn start_time_of_this_process() {
        assert!(start_time(std::process::id()).is_some());
        assert!(!finished(std::process::id()));
    }
}
