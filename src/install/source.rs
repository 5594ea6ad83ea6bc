//! The bundle an install works from: verified in full before anything is written, then
//! (for archives) unpacked under `/var/lib/kbundle/bundles/<sha256>/` (see
//! [`crate::bundle::store`]), verified again as it is written.

use crate::bundle::meta::BundleJson;
use crate::bundle::store::{self, StoreError};
use crate::bundle::unpack::{self, UnpackError};
use crate::bundle::verify::{self, Report};
use crate::digest::Sha256;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bundle {path} failed verification; nothing was changed on this node:\n  {}", problems.join("\n  "))]
    Unverified { path: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Archive(#[from] crate::bundle::archive::ArchiveError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no bundle given and none next to this kbundle ({exe}): pass --bundle PATH")]
    NoDefault { exe: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A bundle whose every entry was hashed and matched `bundle.json`. Only [`open`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The unpacked bundle directory (holds bundle.json).
    pub dir: PathBuf,
    pub bundle: BundleJson,
    /// sha256 of bundle.json: names this bundle's install journal.
    pub id: Sha256,
    /// Delta bundles: the node's copy of the base bundle, checked for every entry used.
    pub base_dir: Option<PathBuf>,
    /// For `--dry-run` of an archive: a scratch unpack outside the node, removed on drop.
    _scratch: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl VerifiedBundle {
    /// Where entry `rel` is on disk: in this bundle, or for a delta bundle's `in_base`
    /// entries, in the base bundle (found by digest).
    pub fn file(&self, rel: &str) -> PathBuf {
        if let (Some(e), Some(base)) = (self.bundle.entry(rel).filter(|e| e.in_base), &self.base_dir) {
            if let Ok(bb) = crate::bundle::read_bundle_json(base) {
                if let Some(b) = bb.entries.iter().find(|b| b.sha256 == e.sha256 && !b.in_base) {
                    return base.join(&b.path);
                }
            }
        }
        self.dir.join(rel)
    }

    /// Every entry under `prefix/` as (path below the prefix, file on disk).
    pub fn files_under(&self, prefix: &str) -> Vec<(String, PathBuf)> {
        let p = format!("{prefix}/");
        self.bundle
            .entries
            .iter()
            .filter_map(|e| {
                e.path
                    .strip_prefix(&p)
                    .map(|rest| (rest.to_string(), self.file(&e.path)))
            })
            .collect()
    }

    /// The bundle path of the first entry with this component (and platform, if given).
    pub fn component_file(&self, component: &str, platform: Option<&str>) -> Option<PathBuf> {
        self.bundle
            .entries
            .iter()
            .find(|e| {
                e.component.as_deref() == Some(component) && (platform.is_none() || e.platform.as_deref() == platform)
            })
            .map(|e| self.file(&e.path))
    }
}

fn check(report: Report, path: &Path) -> Result<BundleJson, SourceError> {
    if report.ok() {
        if let Some(b) = report.bundle {
            return Ok(b);
        }
    }
    Err(SourceError::Unverified {
        path: path.to_path_buf(),
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
    })
}

/// The bundle next to the running executable (a kbundle inside an unpacked bundle).
pub fn default_bundle() -> Result<PathBuf, SourceError> {
    let exe = std::env::current_exe().map_err(|source| SourceError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    match exe.parent() {
        Some(d) if d.join(crate::bundle::meta::BUNDLE_JSON).is_file() => Ok(d.to_path_buf()),
        _ => Err(SourceError::NoDefault { exe }),
    }
}

/// A bundle that passed verification; nothing has been written yet.
#[derive(Debug)]
pub struct Checked {
    path: PathBuf,
    bundle: BundleJson,
    /// For archives: the archive's sha256 (names its slot in the node store).
    archive: Option<Sha256>,
}

impl Checked {
    pub fn bundle(&self) -> &BundleJson {
        &self.bundle
    }
}

/// Verifies `path` (archive or directory) completely without writing anything.
pub fn check_source(path: &Path) -> Result<Checked, SourceError> {
    if path.is_dir() {
        let bundle = check(verify::verify_dir(path)?, path)?;
        return Ok(Checked {
            path: path.to_path_buf(),
            bundle,
            archive: None,
        });
    }
    let bundle = check(verify::verify_archive(path)?, path)?;
    let (digest, _) = crate::digest::hash_file(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Checked {
        path: path.to_path_buf(),
        bundle,
        archive: Some(digest),
    })
}

/// A checked bundle ready to use: an archive is unpacked under `store` (normally
/// `<root>/var/lib/kbundle/bundles`, verified again as it is written) unless `dry_run`.
pub fn open(checked: Checked, store: &Path, dry_run: bool) -> Result<VerifiedBundle, SourceError> {
    let Checked { path, bundle, archive } = checked;
    let path = path.as_path();
    let Some(archive_digest) = archive else {
        return verified(path.to_path_buf(), bundle, None);
    };
    if dry_run {
        let dir = store.join(archive_digest.hex()).join(&bundle.name);
        println!("[dry-run] unpack {} -> {}", path.display(), dir.display());
        // Steps still need to read the bundle: unpack into a scratch dir off the node.
        let scratch = tempfile::Builder::new()
            .prefix("kbundle-dry-run-")
            .tempdir()
            .map_err(|source| SourceError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let out = unpack::unpack(path, scratch.path())?;
        return verified(out.dir, bundle, Some(std::sync::Arc::new(scratch)));
    }
    let slot = store::slot(store, &archive_digest)?;
    let dir = slot.join(&bundle.name);
    if let Some(b) = reuse(&slot, &dir, &bundle)? {
        return verified(dir, b, None);
    }
    // Not there, partial, or changed since: start again (the slot is ours).
    store::clear(&slot, &bundle.name)?;
    let out = unpack::unpack(path, &slot)?;
    let b = check(out.report, &out.dir)?;
    let vb = verified(out.dir, b, None)?;
    store::mark_complete(&slot, &vb.bundle.name, &vb.id)?;
    Ok(vb)
}

/// The bundle unpacked by an earlier run, when it completed and still verifies.
fn reuse(slot: &Path, dir: &Path, want: &BundleJson) -> Result<Option<BundleJson>, SourceError> {
    match store::completed(slot) {
        Some((name, _)) if name == want.name && dir.is_dir() => {}
        _ => return Ok(None),
    }
    Ok(check(verify::verify_dir(dir)?, dir).ok())
}

fn verified(
    dir: PathBuf,
    bundle: BundleJson,
    scratch: Option<std::sync::Arc<tempfile::TempDir>>,
) -> Result<VerifiedBundle, SourceError> {
    let id = bundle_id(&dir)?;
    Ok(VerifiedBundle {
        dir,
        bundle,
        id,
        base_dir: None,
        _scratch: scratch,
    })
}

/// For a delta bundle: finds the base under `store`, checks every entry the delta relies on,
/// and records it. Names anything missing.
pub fn attach_base(vb: &mut VerifiedBundle, store: &Path) -> Result<(), SourceError> {
    let Some(base) = vb.bundle.base.clone() else {
        return Ok(());
    };
    let dir = store::find(store, &base.bundle_json_sha256);
    let problems = crate::bundle::base::check_base(&vb.bundle, dir.as_deref());
    if !problems.is_empty() {
        return Err(SourceError::Unverified {
            path: vb.dir.clone(),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        });
    }
    vb.base_dir = dir;
    Ok(())
}

fn bundle_id(dir: &Path) -> Result<Sha256, SourceError> {
    let p = dir.join(crate::bundle::meta::BUNDLE_JSON);
    crate::digest::hash_file(&p)
        .map(|(d, _)| d)
        .map_err(|source| SourceError::Io { path: p, source })
}
