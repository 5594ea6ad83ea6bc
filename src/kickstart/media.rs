//! The bundle side of kickstarts and media: the archive's digest (checked against its
//! `.sha256` sidecar), the installer's digest from bundle.json, and extracting the installer
//! from the archive with its sha256 checked.

use super::{BundleRef, KickstartError};
use crate::bundle::archive::{self, ArchiveError};
use crate::bundle::meta::{BundleJson, EntryKind, BUNDLE_JSON, INSTALLER, MAX_META_BYTES};
use crate::digest::{HashWriter, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 3] = [".tar.zst", ".tar.gz", ".tar"];

fn bad(path: &Path, message: impl Into<String>) -> KickstartError {
    KickstartError::Bundle {
        path: path.to_path_buf(),
        message: message.into(),
    }
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

/// Reads the sidecar if there is one: (digest, file name it names).
pub fn read_sidecar(archive: &Path) -> Result<Option<(Sha256, String)>, KickstartError> {
    let p = sidecar_path(archive);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KickstartError::Io {
                what: "cannot read",
                path: p,
                source,
            })
        }
    };
    let line = text.lines().next().unwrap_or("");
    let (hex, name) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad(&p, format!("expected '<sha256>  <file name>', got {line:?}")))?;
    let digest: Sha256 = hex.parse().map_err(|e| bad(&p, format!("{e}")))?;
    Ok(Some((digest, name.trim().trim_start_matches('*').to_string())))
}

/// Hashes the archive and checks it against its sidecar when there is one.
pub fn archive_digest(archive: &Path) -> Result<Sha256, KickstartError> {
    let name = archive_name(archive)?;
    let (digest, _) = crate::digest::hash_file(archive).map_err(|source| KickstartError::Io {
        what: "cannot read",
        path: archive.to_path_buf(),
        source,
    })?;
    if let Some((side, side_name)) = read_sidecar(archive)? {
        if side != digest {
            return Err(bad(
                archive,
                format!(
                    "its sidecar {} says sha256 {side}, the file hashes to {digest}: the archive is damaged or the sidecar belongs to another build",
                    sidecar_path(archive).display()
                ),
            ));
        }
        if side_name != name {
            return Err(bad(
                archive,
                format!("its sidecar names {side_name:?}, not {name:?}: rename both together"),
            ));
        }
    }
    Ok(digest)
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
pub fn bundle_ref(path: &Path) -> Result<BundleRef, KickstartError> {
    if path.is_dir() {
        return Err(bad(
            path,
            "is a directory: pass the archive (<name>.tar.zst) `kbundle build` wrote",
        ));
    }
    let archive_name = archive_name(path)?;
    let archive_sha256 = archive_digest(path)?;
    let bj = crate::bundle::read_bundle_json(path).map_err(|m| bad(path, m))?;
    let (installer_sha256, _) = installer_entry(path, &bj)?;
    Ok(BundleRef {
        archive_name,
        archive_sha256,
        installer_sha256,
    })
}

/// Extracts the installer from the archive to `dest` (mode 0755) in one pass, and checks
/// its size and sha256 against the archive's bundle.json. Returns bundle.json.
pub fn extract_installer(archive: &Path, dest: &Path) -> Result<BundleJson, KickstartError> {
    let mut bj_bytes: Option<Vec<u8>> = None;
    let mut got: Option<(Sha256, u64)> = None;
    let corrupt = |at: &str, source| ArchiveError::Corrupt {
        archive: archive.to_path_buf(),
        at: format!(" at {at:?}"),
        source,
    };
    archive::walk(archive, |e, content| {
        if e.rel == BUNDLE_JSON {
            let mut buf = Vec::new();
            content
                .take(MAX_META_BYTES)
                .read_to_end(&mut buf)
                .map_err(|err| corrupt(BUNDLE_JSON, err))?;
            bj_bytes = Some(buf);
        } else if e.rel == INSTALLER {
            let write_err = |source| ArchiveError::Write {
                archive: archive.to_path_buf(),
                path: dest.to_path_buf(),
                source,
            };
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o755);
            }
            let f = opts.open(dest).map_err(write_err)?;
            let mut w = HashWriter::new(std::io::BufWriter::new(f));
            std::io::copy(&mut content.take(e.size), &mut w).map_err(|err| corrupt(INSTALLER, err))?;
            let (mut buf, digest, n) = w.finish();
            buf.flush().map_err(write_err)?;
            got = Some((digest, n));
        }
        Ok(())
    })
    .map_err(|e| bad(archive, e.to_string()))?;
    let bytes = bj_bytes.ok_or_else(|| bad(archive, "no bundle.json in the archive"))?;
    let bj = BundleJson::parse(&bytes).map_err(|e| bad(archive, e.to_string()))?;
    let (want, want_size) = installer_entry(archive, &bj)?;
    let (digest, size) =
        got.ok_or_else(|| bad(archive, "bundle.json lists `kbundle` but the archive has no such file"))?;
    if digest != want || size != want_size {
        return Err(bad(
            archive,
            format!("installer `kbundle`: bundle.json says sha256 {want} ({want_size} bytes), the archive holds sha256 {digest} ({size} bytes)"),
        ));
    }
    super::set_mode(dest, 0o755)?;
    Ok(bj)
}
