//! Unpacking an archive into `DIR/<name>`: checked by the same streaming check as `verify`
//! while it is written (into a temp directory inside DIR), renamed into place only when
//! every entry matched. A failure leaves nothing behind; nothing is ever written outside DIR.

use super::archive::ArchiveError;
use super::check::{self, Sink, SinkError};
use super::verify::{check_sidecar, Problem, Report};
use crate::host::sys::Sys;
use std::path::{Path, PathBuf};

/// Prefix of unpacking temp directories.
pub const TEMP_PREFIX: &str = ".unpack-";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{archive} failed verification; nothing was unpacked:\n  {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Unverified { archive: PathBuf, problems: Vec<Problem> },
    #[error("{path} already exists: remove it or unpack into another directory")]
    Exists { path: PathBuf },
    #[error("{path} exists and is not a directory: give the directory to unpack into")]
    NotADirectory { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An unpacked, verified bundle.
#[derive(Debug)]
pub struct Unpacked {
    pub dir: PathBuf,
    pub report: Report,
}

/// Writes each listed entry below `root` (a directory of our own), mode 0755 for entries
/// bundle.json marks executable and 0644 otherwise, through the node seam.
struct DirSink<'a> {
    sys: &'a dyn Sys,
    archive: &'a Path,
    root: &'a Path,
}

/// A reader that remembers whether it failed (to tell read errors from write errors).
struct Watched<'a> {
    inner: &'a mut dyn std::io::Read,
    failed: Option<std::io::Error>,
}

impl std::io::Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
        })
    }
}

impl Sink for DirSink<'_> {
    fn entry(&mut self, rel: &str, executable: bool, content: &mut dyn std::io::Read) -> Result<(), SinkError> {
        // `rel` passed check_rel_path: relative, no `..`, no empty components.
        let target = self.root.join(rel);
        let wr = |path: &Path, source| {
            SinkError::Write(ArchiveError::Write {
                archive: self.archive.to_path_buf(),
                path: path.to_path_buf(),
                source,
            })
        };
        if let Some(parent) = target.parent() {
            self.sys.create_dir_all(parent).map_err(|e| wr(parent, e))?;
        }
        let mode = if executable { 0o755 } else { 0o644 };
        let mut r = Watched {
            inner: content,
            failed: None,
        };
        match self.sys.write_atomic(&target, ".part-", &mut r, mode) {
            Ok(()) => Ok(()),
            Err(e) => Err(match r.failed.take() {
                Some(read) => SinkError::Read(read),
                None => wr(&target, e),
            }),
        }
    }
}

/// Unpacks `archive` into `dest/<name>` and returns that directory with its report.
/// The sidecar, when present, must match first. A killed unpack's temp directory in `dest`
/// is removed when no other unpack is running there.
pub fn unpack(archive: &Path, dest: &Path) -> Result<Unpacked, UnpackError> {
    let started = std::time::SystemTime::now();
    // Held while this unpack runs, so another one never takes its temp dir for a leftover.
    let _claim = dest
        .is_dir()
        .then(|| crate::fetch::sweep::claim(dest, dest, is_temp, started));
    unpack_with(&crate::host::sys::Real, archive, dest)
}

/// [`unpack`] through a node seam (the node store; its clean-up is the node lock's job).
pub fn unpack_with(sys: &dyn Sys, archive: &Path, dest: &Path) -> Result<Unpacked, UnpackError> {
    let unverified = |problems| UnpackError::Unverified {
        archive: archive.to_path_buf(),
        problems,
    };
    let mut problems = Vec::new();
    check_sidecar(archive, &mut problems)?;
    if !problems.is_empty() {
        return Err(unverified(problems));
    }
    // The name first (bundle.json is the second entry), so an existing destination is
    // refused before gigabytes are extracted.
    let (meta, _) = match check::read_meta(archive) {
        Ok(m) => m,
        Err(e @ ArchiveError::Open { .. }) => return Err(e.into()),
        Err(e) => return Err(unverified(vec![Problem::from_archive_error(e)])),
    };
    refuse_existing(sys, &dest.join(&meta.name))?;
    if sys.meta(dest).is_ok_and(|m| !m.is_dir) && !dest.is_dir() {
        return Err(UnpackError::NotADirectory {
            path: dest.to_path_buf(),
        });
    }
    sys.create_dir_all(dest).map_err(io("creating", dest))?;
    let tmp = sys
        .temp_dir(dest, TEMP_PREFIX)
        .map_err(io("creating a temp directory in", dest))?;
    let done = fill(sys, archive, &tmp).and_then(|report| {
        let Some(bundle) = report.bundle.as_ref().filter(|_| report.ok()) else {
            return Err(unverified(report.problems));
        };
        let final_dir = dest.join(&bundle.name);
        refuse_existing(sys, &final_dir)?;
        sys.set_mode(&tmp, 0o755).map_err(io("setting the mode of", &tmp))?;
        sys.rename(&tmp, &final_dir)
            .map_err(io("renaming into place", &final_dir))?;
        Ok(Unpacked { dir: final_dir, report })
    });
    if done.is_err() {
        let _ = sys.remove_dir_all(&tmp);
    }
    done
}

/// Checks the archive while writing it below `tmp`.
fn fill(sys: &dyn Sys, archive: &Path, tmp: &Path) -> Result<Report, UnpackError> {
    let mut sink = DirSink {
        sys,
        archive,
        root: tmp,
    };
    Ok(check::check_archive(archive, &mut sink)?)
}

/// `.unpack-XXXXXX`: an unpacking temp directory.
pub fn is_temp(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn refuse_existing(sys: &dyn Sys, p: &Path) -> Result<(), UnpackError> {
    if sys.meta(p).is_ok() {
        return Err(UnpackError::Exists { path: p.to_path_buf() });
    }
    Ok(())
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UnpackError {
    let path = path.to_path_buf();
    move |source| UnpackError::Io { action, path, source }
}
