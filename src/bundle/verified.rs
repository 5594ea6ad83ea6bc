//! A bundle whose every entry was hashed and matched its `bundle.json`: the only way install
//! and upgrade get a bundle. An archive is verified in full before anything is written,
//! then unpacked under `/var/lib/kbundle/bundles/<sha256>/` ([`super::store`]) and checked
//! again as it is written.

use super::meta::BundleJson;
use super::store::{self, StoreError};
use super::unpack::{self, UnpackError};
use super::verify::{self, Report};
use crate::digest::Sha256;
use crate::host::{Host, HostError};
use crate::trust::{Policy, Verdict};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("bundle {path} failed verification; nothing was changed on this node:\n  {}", problems.join("\n  "))]
    Unverified { path: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Archive(#[from] super::archive::ArchiveError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error("no bundle given and none next to this kbundle ({exe}): pass --bundle PATH")]
    NoDefault { exe: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A bundle that passed verification and the node's trust policy; nothing has been written
/// yet.
#[derive(Debug)]
pub struct Checked {
    path: PathBuf,
    bundle: BundleJson,
    trust: Verdict,
    /// sha256 of the checked bundle.json.
    id: Sha256,
    /// For archives: the archive's sha256 (names its slot in the node store).
    archive: Option<Sha256>,
}

impl Checked {
    pub fn json(&self) -> &BundleJson {
        &self.bundle
    }

    /// sha256 of bundle.json: the bundle's identity.
    pub fn id(&self) -> &Sha256 {
        &self.id
    }

    /// Why the policy accepted it.
    pub fn trust(&self) -> &Verdict {
        &self.trust
    }
}

/// A verified bundle on disk. Only [`open`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The unpacked bundle directory (holds bundle.json).
    dir: PathBuf,
    bundle: BundleJson,
    trust: Verdict,
    /// sha256 of bundle.json: names this bundle's journals.
    id: Sha256,
    /// Delta bundles: where each `in_base` entry is in the node's copy of the base bundle
    /// (each hashed and matched by [`attach_base`]).
    in_base: std::collections::HashMap<String, PathBuf>,
    /// For `--dry-run` of an archive: a scratch unpack outside the node, removed on drop.
    _scratch: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl VerifiedBundle {
    pub fn json(&self) -> &BundleJson {
        &self.bundle
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// sha256 of bundle.json.
    pub fn id(&self) -> &Sha256 {
        &self.id
    }

    /// The trust verdict it was opened with (recorded after a successful install/upgrade).
    pub fn trust(&self) -> &Verdict {
        &self.trust
    }

    /// Where entry `rel` is on disk: in this bundle, or for a delta bundle's `in_base`
    /// entries, in the base bundle (found by digest).
    pub fn file(&self, rel: &str) -> PathBuf {
        match self.in_base.get(rel) {
            Some(f) => f.clone(),
            None => self.dir.join(rel),
        }
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

/// The bundle.json of a clean report and its sha256; every problem otherwise.
fn check(report: Report, path: &Path) -> Result<(BundleJson, Sha256), SourceError> {
    if report.ok() {
        if let (Some(b), Some(id)) = (report.bundle, report.bundle_json_sha256) {
            return Ok((b, id));
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
        Some(d) if d.join(super::meta::BUNDLE_JSON).is_file() => Ok(d.to_path_buf()),
        _ => Err(SourceError::NoDefault { exe }),
    }
}

/// Verifies `path` (archive or directory) completely and judges it by `policy`, without
/// writing anything. An archive's `<archive>.minisig` is judged before its content is read.
pub fn check_source(path: &Path, policy: &Policy) -> Result<Checked, SourceError> {
    check_source_with(path, policy, &mut super::check::Discard)
}

/// [`check_source`], giving an archive's entries to `sink` as they are checked (a
/// kickstart takes the installer from the same pass). Directories are only checked.
pub fn check_source_with(
    path: &Path,
    policy: &Policy,
    sink: &mut dyn super::check::Sink,
) -> Result<Checked, SourceError> {
    if path.is_dir() {
        let (bundle, id, trust) = judged(verify::verify_dir(path)?, path, policy)?;
        return Ok(Checked {
            path: path.to_path_buf(),
            bundle,
            trust,
            id,
            archive: None,
        });
    }
    policy.check_archive(path)?;
    let (bundle, id, trust) = judged(verify::verify_archive_with(path, sink)?, path, policy)?;
    let (digest, _) = crate::digest::hash_file(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Checked {
        path: path.to_path_buf(),
        bundle,
        trust,
        id,
        archive: Some(digest),
    })
}

/// [`check`], then the policy's verdict on the checked `bundle.json` and its signature.
fn judged(mut report: Report, path: &Path, policy: &Policy) -> Result<(BundleJson, Sha256, Verdict), SourceError> {
    let (json, sig) = (report.bundle_json.take(), report.json_sig.take());
    let (bundle, id) = check(report, path)?;
    let what = format!("bundle {}", path.display());
    let verdict = policy.judge(&what, json.as_deref().unwrap_or_default(), sig.as_deref(), &bundle)?;
    Ok((bundle, id, verdict))
}

/// A checked bundle ready to use on `host`: an archive is unpacked into the node store
/// (verified again as it is written); in dry-run mode, into a scratch dir off the node.
pub fn open(checked: Checked, host: &Host) -> Result<VerifiedBundle, SourceError> {
    let Checked {
        path,
        bundle,
        trust,
        id,
        archive,
    } = checked;
    let Some(archive_digest) = archive else {
        return Ok(verified(path, (bundle, id), trust, None));
    };
    if host.dry_run() {
        return open_scratch(&path, (bundle, id), trust, &archive_digest);
    }
    let slot = store::slot(host, &archive_digest)?;
    let dir = format!("{slot}/{}", bundle.name);
    if let Some(b) = reuse(host, &slot, &dir, &bundle)? {
        return Ok(verified(host.path(&dir)?, b, trust, None));
    }
    // Not there, partial, or changed since: start again (the slot is ours).
    store::clear(host, &slot, &bundle.name)?;
    let out = unpack::unpack_with(host.sys(), &path, &host.path(&slot)?)?;
    let b = unchanged(&path, &id, check(out.report, &out.dir)?)?;
    let vb = verified(out.dir, b, trust, None);
    store::mark_complete(host, &slot, &vb.bundle.name, &vb.id)?;
    Ok(vb)
}

/// Dry-run: steps still read the bundle, from a scratch unpack off the node.
fn open_scratch(
    path: &Path,
    bundle: (BundleJson, Sha256),
    trust: Verdict,
    digest: &Sha256,
) -> Result<VerifiedBundle, SourceError> {
    let dir = format!("{}/{}", store::slot_of(digest), bundle.0.name);
    println!("[dry-run] unpack {} -> {dir}", path.display());
    let scratch = tempfile::Builder::new()
        .prefix("kbundle-dry-run-")
        .tempdir()
        .map_err(|source| SourceError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let out = unpack::unpack(path, scratch.path())?;
    let got = unchanged(path, &bundle.1, check(out.report, &out.dir)?)?;
    Ok(verified(out.dir, got, trust, Some(std::sync::Arc::new(scratch))))
}

/// The bundle unpacked by an earlier run, when it completed and still verifies.
fn reuse(host: &Host, slot: &str, dir: &str, want: &BundleJson) -> Result<Option<(BundleJson, Sha256)>, SourceError> {
    match store::completed(host, slot) {
        Some((name, _)) if name == want.name && host.is_dir(dir) => {}
        _ => return Ok(None),
    }
    let on_disk = host.path(dir)?;
    Ok(check(verify::verify_dir(&on_disk)?, &on_disk).ok())
}

/// The unpacked bundle is the one that was checked (the archive was not replaced between).
fn unchanged(path: &Path, want: &Sha256, got: (BundleJson, Sha256)) -> Result<(BundleJson, Sha256), SourceError> {
    if got.1 == *want {
        return Ok(got);
    }
    Err(SourceError::Unverified {
        path: path.to_path_buf(),
        problems: vec![format!(
            "the archive changed while it was in use: bundle.json had sha256 {want} when checked, {} when unpacked",
            got.1
        )],
    })
}

fn verified(
    dir: PathBuf,
    (bundle, id): (BundleJson, Sha256),
    trust: Verdict,
    scratch: Option<std::sync::Arc<tempfile::TempDir>>,
) -> VerifiedBundle {
    VerifiedBundle {
        dir,
        bundle,
        trust,
        id,
        in_base: std::collections::HashMap::new(),
        _scratch: scratch,
    }
}

/// For a delta bundle: finds the base in the node store, checks every entry the delta
/// relies on, and records it. Names anything missing.
pub fn attach_base(vb: &mut VerifiedBundle, host: &Host) -> Result<(), SourceError> {
    let Some(base) = vb.bundle.base.clone() else {
        return Ok(());
    };
    let dir = store::find(host, &base.bundle_json_sha256);
    vb.in_base = super::base::locate(&vb.bundle, dir.as_deref()).map_err(|problems| SourceError::Unverified {
        path: vb.dir.clone(),
        problems: problems.iter().map(|p| p.to_string()).collect(),
    })?;
    Ok(())
}
