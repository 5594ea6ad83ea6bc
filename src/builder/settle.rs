//! Which lock a build uses (the existing one, checked, or a fresh one), and the add-on
//! images that follow from the add-on manifests it locks.

use super::{addons, BuildError, BuildOptions, Engines, Scope};
use crate::lock::Lock;
use crate::manifest::Manifest;
use crate::resolve::{self, ResolveError};
use std::path::Path;

/// The lock to build from: the existing one if it still matches the manifest (with
/// `--locked`: it must exist, match, and upstream must still agree), else a fresh one,
/// written to `lock_path`. Returns the lock and whether it was written. Either way the
/// scope's add-on images become those the (locked) add-on manifests name.
pub(super) fn settle_lock(
    e: &Engines,
    m: &Manifest,
    sc: &mut Scope,
    o: &BuildOptions,
    lock_path: &Path,
) -> Result<(Lock, bool), BuildError> {
    let existing = if lock_path.exists() {
        Some(Lock::load(lock_path)?)
    } else {
        None
    };
    let (jobs, images) = (o.common.jobs, !o.skip_images);
    let (mut lock, written) = match existing {
        None if o.locked => Err(BuildError::NoLock {
            path: lock_path.to_path_buf(),
            manifest: m.path.clone(),
        }),
        Some(l) if o.locked => {
            check_locked(e, m, sc, &l, lock_path, jobs, images)?;
            Ok((l, false))
        }
        Some(l) if lock_fits(e, m, sc, &l, jobs, images)? => Ok((l, false)),
        _ => {
            let l = fresh_lock(e, m, sc, jobs, images)?;
            l.write(lock_path)?;
            Ok((l, true))
        }
    }?;
    let want = locked_policies(e);
    if lock.image_signatures == want {
        return Ok((lock, written));
    }
    if o.locked {
        return Err(ResolveError::Stale {
            path: lock_path.to_path_buf(),
            details: vec![format!(
                "image-signatures: lock has {:?}, manifest and key files have {want:?}",
                lock.image_signatures
            )],
        }
        .into());
    }
    lock.image_signatures = want;
    lock.write(lock_path)?;
    Ok((lock, true))
}

/// The manifest's signature policies as the lock records them.
fn locked_policies(e: &Engines) -> Vec<crate::images::policy::LockedPolicy> {
    e.policies.iter().map(|p| p.locked()).collect()
}

/// A fresh lock: files first, then (with `images`) the add-on images read from the add-on
/// manifests just fetched, then every image resolved.
pub(super) fn fresh_lock(
    e: &Engines,
    m: &Manifest,
    sc: &mut Scope,
    jobs: usize,
    images: bool,
) -> Result<Lock, BuildError> {
    let files = resolve::lock_files(&e.files, &e.cache, m, &sc.files, jobs);
    let (files, fetched) = e.rt.block_on(files)?;
    if images {
        sc.images = addons::from_fetched(&e.progress, m, sc, &fetched)?;
    }
    let locked =
        e.rt.block_on(resolve::lock_images(&e.images, &e.cache, m, &sc.images, jobs))?;
    let mut lock = resolve::new_lock(m, files, locked);
    lock.image_signatures = locked_policies(e);
    Ok(lock)
}

/// Does the lock still describe the manifest? Its files first; if they do, the add-on
/// images are read from the add-on manifests as locked, and the lock's images must match.
fn lock_fits(
    e: &Engines,
    m: &Manifest,
    sc: &mut Scope,
    l: &Lock,
    jobs: usize,
    images: bool,
) -> Result<bool, BuildError> {
    if !resolve::stale_file_details(l, m, &sc.files)?.is_empty() {
        return Ok(false);
    }
    if images {
        sc.images = addons::from_locked(e, m, sc, l, jobs)?;
    }
    Ok(resolve::stale_image_details(l, m, &sc.images).is_empty())
}

/// `--locked`: the lock must match the manifest, and upstream must still agree with it. The
/// files are checked first (a changed add-on manifest is reported as such, since its images
/// follow from it), then the images the locked add-on manifests name.
fn check_locked(
    e: &Engines,
    m: &Manifest,
    sc: &mut Scope,
    l: &Lock,
    lock_path: &Path,
    jobs: usize,
    images: bool,
) -> Result<(), BuildError> {
    let stale = |details: Vec<String>| -> Result<(), BuildError> {
        if details.is_empty() {
            return Ok(());
        }
        Err(ResolveError::Stale {
            path: lock_path.to_path_buf(),
            details,
        }
        .into())
    };
    stale(resolve::stale_file_details(l, m, &sc.files)?)?;
    let check = resolve::check_upstream(&e.files, &e.cache, l, lock_path, m, &sc.files, jobs);
    e.rt.block_on(check)?;
    if images {
        sc.images = addons::from_locked(e, m, sc, l, jobs)?;
    }
    stale(resolve::stale_image_details(l, m, &sc.images))
}
