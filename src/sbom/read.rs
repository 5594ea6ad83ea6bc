//! `kbundle inspect --sbom`: a bundle's SBOM, handed out only when its bytes match the
//! digest and size bundle.json lists for it. An archive is read as a stream, without
//! unpacking: bundle.json first (validated, as `inspect` reads it), then the SBOM entry,
//! within a budget of what bundle.json declares. `kbundle verify` checks the rest of the
//! bundle, bundle.json itself and its signature; this does not replace it.

use super::SBOM;
use crate::bundle::archive::ArchiveError;
use crate::bundle::check::{declared_bytes, read_meta, ALLOWANCE};
use crate::bundle::meta::{BundleJson, MAX_META_BYTES};
use crate::bundle::walk::{self, Budget, Flow};
use crate::bundle::ReadMetaError;
use crate::digest::Sha256;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error(transparent)]
    Meta(#[from] ReadMetaError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{}: bundle.json lists no {SBOM}: the bundle was built by a kbundle without SBOM support; rebuild it to get one", path.display())]
    Missing { path: PathBuf },
    #[error("{}: bundle.json lists {SBOM} but the bundle does not hold it; not shown", path.display())]
    Absent { path: PathBuf },
    #[error("{}: {SBOM} does not match bundle.json (found sha256 {found}, listed {listed}); the bundle was altered, not shown", path.display())]
    Mismatch {
        path: PathBuf,
        found: String,
        listed: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The SBOM of the bundle at `path` (archive or directory), checked against bundle.json.
pub fn read_verified(path: &Path) -> Result<Vec<u8>, SbomError> {
    let bundle = if path.is_dir() {
        crate::bundle::read_bundle_json(path)?
    } else {
        read_meta(path)?.0
    };
    let listed = bundle
        .entry(SBOM)
        .map(|e| (e.sha256, e.size))
        .ok_or_else(|| SbomError::Missing { path: path.into() })?;
    let bytes = if path.is_dir() {
        read_file(&path.join(SBOM), listed.1)?
    } else {
        read_member(path, &bundle, listed.1)?
    };
    let bytes = bytes.ok_or_else(|| SbomError::Absent { path: path.into() })?;
    let found = Sha256::of(&bytes);
    if found != listed.0 || bytes.len() as u64 != listed.1 {
        return Err(SbomError::Mismatch {
            path: path.into(),
            found: found.hex(),
            listed: listed.0.hex(),
        });
    }
    Ok(bytes)
}

/// Reads at most one byte more than listed (so a longer file is caught, not loaded whole).
fn limit(listed: u64) -> u64 {
    listed.min(MAX_META_BYTES) + 1
}

/// The archive member `<top>/sbom.spdx.json`; `None` if the archive has none.
fn read_member(archive: &Path, bundle: &BundleJson, size: u64) -> Result<Option<Vec<u8>>, SbomError> {
    let budget = Budget::new(
        2 * MAX_META_BYTES + ALLOWANCE + declared_bytes(bundle, true),
        "that bundle.json declares (plus bundle.json, SHA256SUMS and a small allowance)",
    );
    let mut found = None;
    walk::walk(archive, &budget, |e, content| {
        if e.rel != SBOM {
            return Ok(Flow::Continue);
        }
        let mut buf = Vec::new();
        content
            .take(limit(size))
            .read_to_end(&mut buf)
            .map_err(|err| walk::read_error(archive, &budget, &e.rel, err))?;
        found = Some(buf);
        Ok(Flow::Stop)
    })?;
    Ok(found)
}

/// A directory's SBOM file; `None` if absent.
fn read_file(p: &Path, size: u64) -> Result<Option<Vec<u8>>, SbomError> {
    let io = |source| SbomError::Io {
        path: p.to_path_buf(),
        source,
    };
    let f = match std::fs::File::open(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        f => f.map_err(io)?,
    };
    let mut buf = Vec::new();
    f.take(limit(size)).read_to_end(&mut buf).map_err(io)?;
    Ok(Some(buf))
}
