//! The bundle side of kickstarts and media: the archive's digest (checked against its
//! `.sha256` sidecar), the installer's digest from bundle.json, and extracting the installer
//! from the archive with its sha256 checked.

use super::{BundleRef, KickstartError};
use crate::bundle::archive::ArchiveError;
use crate::bundle::check::{self, Sink, SinkError};
use crate::bundle::meta::{BundleJson, EntryKind, INSTALLER};
use crate::bundle::verified::{check_source_with, SourceError};
use crate::catalog::checksum::{self, ChecksumFormat};
use crate::digest::Sha256;
use crate::trust::Policy;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 3] = [".tar.zst", ".tar.gz", ".tar"];

fn bad(path: &Path, message: impl Into<String>) -> KickstartError {
    KickstartError::Bundle {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A verification failure: its problems (the first five) named; any other error kept.
fn unverified(archive: &Path, e: SourceError) -> KickstartError {
    let SourceError::Unverified { problems, .. } = e else {
        return KickstartError::Archive {
            path: archive.to_path_buf(),
            source: Box::new(e),
        };
    };
    let list: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
    bad(
        archive,
        format!(
            "does not verify ({} problem(s)): {}",
            problems.len().max(1),
            list.join("; ")
        ),
    )
}

/// The archive's file name, if it is one kbundle writes and safe to put in a shell script,
/// a kickstart and an ISO path.
pub fn archive_name(path: &Path) -> Result<String, KickstartError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad(path, "has no UTF-8 file name"))?;
    let stem = EXTENSIONS.iter().find_map(|e| name.strip_suffix(e));
    match stem {
        Some(s) if crate::manifest::valid_name(s) && crate::manifest::valid_name(name) => Ok(name.to_string()),
        _ => Err(bad(
            path,
            "expected the archive `kbundle build` wrote: <name>.tar.zst, .tar.gz or .tar, with a plain name",
        )),
    }
}

/// `<archive>.sha256` beside the archive.
pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The digest the sidecar beside `archive` records for `name`, if there is a sidecar. It must
/// be `sha256sum` output that lists `name` (the one parser kbundle has for that format).
pub fn read_sidecar(archive: &Path, name: &str) -> Result<Option<Sha256>, KickstartError> {
    let path = sidecar_path(archive);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KickstartError::Io {
                what: "cannot read",
                path,
                source,
            })
        }
    };
    checksum::parse(ChecksumFormat::Sha256Sum, &body, name)
        .map(Some)
        .map_err(|source| KickstartError::Sidecar { path, source })
}

/// Hashes the archive and checks it against its sidecar when there is one.
pub fn archive_digest(archive: &Path) -> Result<Sha256, KickstartError> {
    let name = archive_name(archive)?;
    let (digest, _) = crate::digest::hash_file(archive).map_err(|source| KickstartError::Io {
        what: "cannot read",
        path: archive.to_path_buf(),
        source,
    })?;
    match read_sidecar(archive, &name)? {
        Some(side) if side != digest => Err(bad(
            archive,
            format!(
                "its sidecar {} says sha256 {side}, the file hashes to {digest}: the archive is damaged or the sidecar belongs to another build",
                sidecar_path(archive).display()
            ),
        )),
        _ => Ok(digest),
    }
}

/// The installer's digest and size from bundle.json.
pub fn installer_entry(archive: &Path, bj: &BundleJson) -> Result<(Sha256, u64), KickstartError> {
    match bj.entry(INSTALLER) {
        Some(e) if e.kind == EntryKind::Installer && e.executable => Ok((e.sha256, e.size)),
        Some(_) => Err(bad(
            archive,
            "bundle.json lists `kbundle` but not as an executable installer",
        )),
        None => Err(bad(
            archive,
            "bundle.json has no `kbundle` installer entry: rebuild the bundle with `kbundle build`",
        )),
    }
}

/// Everything a kickstart needs from the bundle archive at `path`.
/// With trusted keys in `policy`, `<archive>.minisig` must be by one of them (checked first).
pub fn bundle_ref(path: &Path, policy: &Policy) -> Result<BundleRef, KickstartError> {
    if path.is_dir() {
        return Err(bad(
            path,
            "is a directory: pass the archive (<name>.tar.zst) `kbundle build` wrote",
        ));
    }
    let archive_name = archive_name(path)?;
    policy
        .check_archive(path)
        .map_err(|e| unverified(path, SourceError::Trust(e)))?;
    let archive_sha256 = archive_digest(path)?;
    let bj = crate::bundle::read_bundle_json(path)?;
    let (installer_sha256, _) = installer_entry(path, &bj)?;
    Ok(BundleRef {
        archive_name,
        archive_sha256,
        installer_sha256,
        trusted_keys: policy
            .keys()
            .iter()
            .map(|k| super::KeyLine {
                id: k.id.to_string(),
                base64: k.key.to_base64(),
            })
            .collect(),
    })
}

/// Writes the installer to its destination, leaves the rest to the check.
struct InstallerSink<'a> {
    archive: &'a Path,
    dest: &'a Path,
    wrote: bool,
}

impl Sink for InstallerSink<'_> {
    fn entry(&mut self, rel: &str, _: bool, content: &mut dyn Read) -> Result<(), SinkError> {
        if rel != INSTALLER {
            return Ok(());
        }
        let wr = |source| {
            SinkError::Write(ArchiveError::Write {
                archive: self.archive.to_path_buf(),
                path: self.dest.to_path_buf(),
                source,
            })
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o755);
        }
        let mut w = std::io::BufWriter::new(opts.open(self.dest).map_err(wr)?);
        check::copy(content, &mut w).map_err(|(read, e)| if read { SinkError::Read(e) } else { wr(e) })?;
        w.flush().map_err(wr)?;
        self.wrote = true;
        Ok(())
    }
}

/// Verifies the whole archive (sidecar, every entry) and, in the same pass, extracts the
/// installer to `dest` (mode 0755). Returns bundle.json.
pub fn extract_installer(archive: &Path, dest: &Path, policy: &Policy) -> Result<BundleJson, KickstartError> {
    let mut sink = InstallerSink {
        archive,
        dest,
        wrote: false,
    };
    let checked = check_source_with(archive, policy, &mut sink).map_err(|e| unverified(archive, e))?;
    let bj = checked.json().clone();
    installer_entry(archive, &bj)?;
    if !sink.wrote {
        return Err(bad(
            archive,
            "bundle.json lists `kbundle` but the archive has no such file",
        ));
    }
    super::set_mode(dest, 0o755)?;
    Ok(bj)
}
