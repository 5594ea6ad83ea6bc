//! One kbundle at a time per node, and the clean-up after one that was killed.
//!
//! Every command that changes a node (`install`, `upgrade apply|rollback`, `etcd snapshot
//! restore`) first takes `/var/lib/kbundle/lock`. Holding it, it removes what an interrupted
//! run left: a temporary containerd it had started (found by the PID and start time it
//! recorded), its scratch directory, temp files in every directory it had written to, and
//! half-unpacked bundles. Nothing else is touched.

use super::sys::Held;
use super::{io, Host, HostError, TEMP_PREFIX, WRITE_DIRS};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The node lock file.
pub const LOCK: &str = "/var/lib/kbundle/lock";
/// Scratch space of a run (the temporary containerd's state), emptied by the next run.
pub const SCRATCH: &str = "/var/lib/kbundle/tmp";
/// `<name>.pid` files of processes a run started: `<pid> <start time>`.
pub const CHILDREN: &str = "/var/lib/kbundle/run";

/// Held for as long as a command changes the node.
#[derive(Debug)]
pub struct NodeLock {
    _held: Box<dyn Held>,
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

impl Host {
    /// Takes the node lock (refusing when another kbundle holds it), then cleans up after
    /// an interrupted run. `None` in dry-run mode, which changes nothing.
    pub fn lock(&self) -> Result<Option<(NodeLock, Swept)>, HostError> {
        if self.dry_run() {
            return Ok(None);
        }
        let path = self.path(LOCK)?;
        if let Some(d) = path.parent() {
            self.sys().create_dir_all(d).map_err(io("creating directory", d))?;
        }
        // The file is never written: a re-run of a finished install changes nothing.
        let held = self.sys().try_lock(&path).map_err(io("locking", &path))?;
        let Some(held) = held else {
            return Err(HostError::Busy { path });
        };
        let swept = self.sweep()?;
        Ok(Some((NodeLock { _held: held }, swept)))
    }

    /// Removes an interrupted run's leftovers (call only while holding the lock).
    fn sweep(&self) -> Result<Swept, HostError> {
        let mut s = Swept {
            processes: self.stop_recorded_children()?,
            ..Default::default()
        };
        if self.exists(SCRATCH) {
            self.release_mounts_below(&self.path(SCRATCH)?, &[]);
            self.remove(SCRATCH)?;
            s.scratch = true;
        }
        s.temp_files = self.remove_temp_files()?;
        s.partial_unpacks = crate::bundle::store::sweep(self)?;
        Ok(s)
    }

    /// `.kbundle-tmp.*` files in every directory recorded in [`WRITE_DIRS`].
    fn remove_temp_files(&self) -> Result<usize, HostError> {
        let text = self.read(WRITE_DIRS).unwrap_or_default();
        let mut n = 0;
        for dir in text.lines() {
            // A line that is not a clean node path is ignored, never followed.
            if self.path(dir).is_err() {
                continue;
            }
            for name in self.list(dir).into_iter().filter(|n| n.starts_with(TEMP_PREFIX)) {
                let abs = format!("{}/{name}", dir.trim_end_matches('/'));
                if !self.is_dir(&abs) {
                    self.remove(&abs)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Records a process this run started, so a later run can stop it if this one is
    /// killed before it does. Returns the record's node path.
    pub fn record_child(&self, name: &str, pid: u32) -> Result<String, HostError> {
        let abs = format!("{CHILDREN}/{name}.pid");
        let start = self.start_time(pid).unwrap_or_default();
        self.write(&abs, format!("{pid} {start}\n").as_bytes(), 0o644)?;
        Ok(abs)
    }

    /// Stops every recorded child that is still the process it was (same PID and start
    /// time, still running kbundle's scratch config), and forgets the records.
    fn stop_recorded_children(&self) -> Result<Vec<String>, HostError> {
        let scratch = self.path(SCRATCH)?;
        let mut stopped = Vec::new();
        for name in self.list(CHILDREN) {
            let abs = format!("{CHILDREN}/{name}");
            let text = self.read(&abs).unwrap_or_default();
            let mut it = text.split_whitespace();
            let pid: Option<u32> = it.next().and_then(|p| p.parse().ok());
            let start: Option<u64> = it.next().and_then(|s| s.parse().ok());
            if let (Some(pid), Some(start)) = (pid, start) {
                if self.start_time(pid) == Some(start) && self.cmdline_mentions(pid, &scratch) {
                    self.kill_and_wait(pid);
                    stopped.push(format!("pid {pid} ({name})"));
                }
            }
            self.remove(&abs)?;
        }
        Ok(stopped)
    }

    /// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot.
    pub fn start_time(&self, pid: u32) -> Option<u64> {
        let stat = self.kernel(&format!("/proc/{pid}/stat"))?;
        let after = &stat[stat.rfind(')')? + 1..];
        after.split_whitespace().nth(19)?.parse().ok()
    }

    /// Is the process gone or a zombie (its exit is only waiting to be reaped)?
    pub fn finished(&self, pid: u32) -> bool {
        let Some(stat) = self.kernel(&format!("/proc/{pid}/stat")) else {
            return true;
        };
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
        matches!(state, None | Some("Z") | Some("X"))
    }

    fn cmdline_mentions(&self, pid: u32, dir: &Path) -> bool {
        let cmd = self.kernel(&format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = dir.to_string_lossy();
        !needle.is_empty() && cmd.contains(needle.as_ref())
    }

    /// SIGKILL, then waits (10 s at most) until the process is gone.
    fn kill_and_wait(&self, pid: u32) {
        let _ = self.exec(
            Command::new("kill").args(["-KILL", &pid.to_string()]),
            super::sys::Stdin::Null,
            None,
        );
        self.poll(Duration::from_secs(10), Duration::from_millis(50), || {
            self.finished(pid).then_some(())
        });
    }

    /// Lazily unmounts whatever is mounted strictly below `dir` (deepest first), except
    /// the mount points in `keep`.
    pub fn release_mounts_below(&self, dir: &Path, keep: &[String]) {
        let mounts = self.kernel("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| Path::new(p).starts_with(dir) && Path::new(p) != dir)
            .filter(|p| !keep.iter().any(|k| k == p))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = self.exec(Command::new("umount").arg("-l").arg(p), super::sys::Stdin::Null, None);
        }
    }

    /// The mount points of the running system.
    pub fn mount_points(&self) -> Vec<String> {
        let mounts = self.kernel("/proc/self/mounts").unwrap_or_default();
        mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
            .collect()
    }
}

/// Where a child's record lives on the machine (for messages).
pub fn record_path(host: &Host, name: &str) -> Option<PathBuf> {
    host.path(&format!("{CHILDREN}/{name}.pid")).ok()
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
        let h = Host::new(Path::new("/"), true);
        assert!(h.start_time(std::process::id()).is_some());
        assert!(!h.finished(std::process::id()));
    }
}
