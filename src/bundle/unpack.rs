//! Unpacking an archive into `DIR/<name>`: checked by the same streaming check as `verify`
//! while it is written (into a temp directory inside DIR), renamed into place only when
//! every entry matched. A failure leaves nothing behind; nothing is ever written outside DIR.

use super::archive::ArchiveError;
use super::check::{self, Sink, SinkError};
use super::verify::{check_sidecar, Problem, Report};
use std::io::Write;
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
/// bundle.json marks executable and 0644 otherwise.
struct DirSink<'a> {
    archive: &'a Path,
    root: &'a Path,
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
            std::fs::create_dir_all(parent).map_err(|e| wr(parent, e))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if executable { 0o755 } else { 0o644 });
        }
        let f = opts.open(&target).map_err(|e| wr(&target, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        check::copy(content, &mut w).map_err(|(read, e)| if read { SinkError::Read(e) } else { wr(&target, e) })?;
        w.flush().map_err(|e| wr(&target, e))?;
        Ok(())
    }
}

/// Unpacks `archive` into `dest/<name>` and returns that directory with its report.
/// The sidecar, when present, must match first.
pub fn unpack(archive: &Path, dest: &Path) -> Result<Unpacked, UnpackError> {
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
    refuse_existing(&dest.join(&meta.name))?;
    if dest.symlink_metadata().is_ok_and(|m| !m.is_dir()) && !dest.is_dir() {
        return Err(UnpackError::NotADirectory {
            path: dest.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dest).map_err(io("creating", dest))?;
    // Leftovers of a killed unpack into the same directory, when no other unpack is alive.
    let (_lock, _) = crate::fetch::sweep::claim(dest, dest, is_temp, std::time::SystemTime::now());
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir_in(dest)
        .map_err(io("creating a temp directory in", dest))?;
    let report = check::check_archive(
        archive,
        &mut DirSink {
            archive,
            root: tmp.path(),
        },
    )?;
    let Some(bundle) = report.bundle.as_ref().filter(|_| report.ok()) else {
        return Err(unverified(report.problems));
    };
    let final_dir = dest.join(&bundle.name);
    refuse_existing(&final_dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting the mode of", tmp.path()))?;
    }
    std::fs::rename(tmp.path(), &final_dir).map_err(io("renaming into place", &final_dir))?;
    let _ = tmp.keep();
    Ok(Unpacked { dir: final_dir, report })
}

/// `.unpack-XXXXXX`: an unpacking temp directory.
pub fn is_temp(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn refuse_existing(p: &Path) -> Result<(), UnpackError> {
    if p.symlink_metadata().is_ok() {
        return Err(UnpackError::Exists { path: p.to_path_buf() });
    }
    Ok(())
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UnpackError {
    let path = path.to_path_buf();
    move |source| UnpackError::Io { action, path, source }
}
