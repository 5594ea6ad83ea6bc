//! `--out`: a directory (created if missing) that this build can write, locked for the
//! build's lifetime, with the temp files of killed builds swept (see [`crate::fetch::sweep`]).

use super::BuildError;
use crate::fetch::sweep::{self, DirLock, Swept};
use crate::progress::Progress;
use std::path::Path;

/// Checks, creates and locks `out`; deletes stale temp archives another build left there.
pub(super) fn claim(out: &Path, progress: &Progress) -> Result<DirLock, BuildError> {
    let started = std::time::SystemTime::now();
    if out.exists() && !out.is_dir() {
        return Err(BuildError::OutNotDir {
            path: out.to_path_buf(),
        });
    }
    let err = |what, source: std::io::Error| BuildError::OutDir {
        path: out.to_path_buf(),
        what,
        hint: crate::fsutil::write_hint(&source),
        source,
    };
    std::fs::create_dir_all(out).map_err(|e| err("create it", e))?;
    tempfile::tempfile_in(out).map_err(|e| err("write in it", e))?;
    let (lock, swept) = sweep::claim(out, out, sweep::is_out_temp, started);
    report(progress, out, &swept);
    Ok(lock)
}

/// Says what a sweep removed (a line) and what it could not do (warnings).
pub(super) fn report(progress: &Progress, dir: &Path, swept: &Swept) {
    if !swept.removed.is_empty() {
        progress.line(&format!(
            "removed {} temp file(s) ({}) left in {} by an interrupted build",
            swept.removed.len(),
            indicatif::HumanBytes(swept.bytes()),
            dir.display()
        ));
    }
    for p in &swept.problems {
        progress.warn(p);
    }
}
