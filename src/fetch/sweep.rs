//! Leftovers of killed builds. Every build holds a shared `flock` on each directory it
//! writes temp files in (the cache, `--out`) for as long as it runs. At start it first tries
//! the lock exclusively: only when that succeeds, so no other kbundle is alive there, does it
//! delete kbundle's own temp files older than its start, then it downgrades to shared. Two
//! builds sharing a cache or an output directory never delete each other's files in flight.
//!
//! The directory itself is locked (no lock file is left in `--out`). Where the file system
//! cannot lock, the build goes on without sweeping.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Held for a build's lifetime: the shared lock on one directory (if it could be taken).
#[derive(Debug)]
pub struct DirLock {
    _file: Option<File>,
}

/// What [`claim`] did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Stale temp files deleted, with their sizes.
    pub removed: Vec<(PathBuf, u64)>,
    /// Why nothing was swept or a file could not be deleted, for a warning.
    pub problems: Vec<String>,
}

impl Swept {
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|r| r.1).sum()
    }
}

/// Temp names in the cache's `tmp/`: `download-XXXXXX.part` (files, image blobs, manifests).
pub fn is_cache_temp(name: &str) -> bool {
    name.strip_prefix("download-")
        .and_then(|r| r.strip_suffix(".part"))
        .is_some_and(is_random_part)
}

/// Temp names in `--out`: `.<name>.tar[.zst|.gz][.sha256].XXXXXX.tmp` (archive, sidecar).
pub fn is_out_temp(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((base, random)) = inner.rsplit_once('.') else {
        return false;
    };
    let base = base.strip_suffix(".sha256").unwrap_or(base);
    is_random_part(random) && [".tar.zst", ".tar.gz", ".tar"].iter().any(|ext| base.ends_with(ext))
}

/// `tempfile`'s random part: 6 ASCII letters and digits.
fn is_random_part(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Locks `dir` for this build and, if no other build holds it, deletes the files in
/// `sweep_dir` whose names match `is_temp` and that were last written before `started`.
pub fn claim(dir: &Path, sweep_dir: &Path, is_temp: fn(&str) -> bool, started: SystemTime) -> (DirLock, Swept) {
    let mut swept = Swept::default();
    let file = match File::open(dir) {
        Ok(f) => f,
        Err(e) => {
            swept.problems.push(format!(
                "cannot open {} to lock it ({e}); leftovers of interrupted builds are not cleaned up",
                dir.display()
            ));
            return (DirLock { _file: None }, swept);
        }
    };
    match file.try_lock() {
        Ok(()) => sweep(sweep_dir, is_temp, started, &mut swept),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => {
            swept.problems.push(format!(
                "cannot lock {} ({e}); leftovers of interrupted builds are not cleaned up",
                dir.display()
            ));
            return (DirLock { _file: None }, swept);
        }
    }
    // From exclusive (or none) to shared; waits while another build sweeps.
    if let Err(e) = file.lock_shared() {
        swept
            .problems
            .push(format!("cannot lock {} shared ({e}); going on without", dir.display()));
        return (DirLock { _file: None }, swept);
    }
    (DirLock { _file: Some(file) }, swept)
}

fn sweep(dir: &Path, is_temp: fn(&str) -> bool, started: SystemTime, swept: &mut Swept) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_str().is_some_and(is_temp) {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        let stale = (meta.is_file() || meta.is_dir()) && meta.modified().is_ok_and(|m| m < started);
        if !stale {
            continue;
        }
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(e.path())
        } else {
            std::fs::remove_file(e.path())
        };
        match removed {
            Ok(()) => swept.removed.push((e.path(), meta.len())),
            Err(err) => swept
                .problems
                .push(format!("cannot delete stale temp file {}: {err}", e.path().display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        assert!(is_cache_temp("download-Ab3xYz.part"));
        assert!(!is_cache_temp("download-Ab3xYz.part.bak"));
        assert!(!is_cache_temp("notes.part"));
        assert!(is_out_temp(".kubernetes-v1.34.3.tar.zst.Ab3xYz.tmp"));
        assert!(is_out_temp(".kubernetes-v1.34.3.tar.zst.sha256.Ab3xYz.tmp"));
        assert!(is_out_temp(".b.tar.Ab3xYz.tmp") && is_out_temp(".b.tar.gz.Ab3xYz.tmp"));
        assert!(!is_out_temp("kubernetes-v1.34.3.tar.zst"));
        assert!(!is_out_temp(".notes.Ab3xYz.tmp"));
        assert!(!is_out_temp(".b.tar.zst.toolong1.tmp"));
    }

    #[test]
    fn sweeps_only_old_own_temp_files_and_only_when_alone() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join("download-aaaaaa.part");
        let mine = d.path().join("notes.part");
        std::fs::write(&old, b"stale").unwrap();
        std::fs::write(&mine, b"user file").unwrap();
        let before = SystemTime::now() - Duration::from_secs(3600);
        let after = SystemTime::now() + Duration::from_secs(1);

        // A build that started before the file was written leaves it alone (and holds on).
        let (other, s) = claim(d.path(), d.path(), is_cache_temp, before);
        assert!(s.removed.is_empty() && s.problems.is_empty() && old.exists(), "{s:?}");
        // While it runs, a later build sweeps nothing.
        let (second, s) = claim(d.path(), d.path(), is_cache_temp, after);
        assert!(s.removed.is_empty() && old.exists(), "{s:?}");
        drop((other, second));

        // Alone: the stale temp file goes, the user's file stays.
        let (_l, s) = claim(d.path(), d.path(), is_cache_temp, after);
        assert_eq!(s.removed, vec![(old.clone(), 5)]);
        assert_eq!(s.bytes(), 5);
        assert!(!old.exists() && mine.exists());
    }
}
