//! Image signatures at build time: the manifest's `[[image-signatures]]` policies checked
//! against the registry (see `images::pull::signature`).

use super::{BuildError, Engines, Scope};
use crate::resolve::ResolveError;

/// Verifies the cosign signatures the manifest's policies require (their blobs join the
/// images' blobs) and says how many images were checked and how many no policy covers.
pub(super) fn check(
    e: &Engines,
    sc: &Scope,
    resolved: &mut [crate::images::pull::Resolved],
    jobs: usize,
) -> Result<Vec<crate::images::pull::SignatureArtifact>, BuildError> {
    if e.policies.is_empty() {
        return Ok(Vec::new());
    }
    let refs: Vec<_> = sc.images.iter().map(|i| i.reference.clone()).collect();
    let check = crate::images::pull::check_signatures(&e.images, &e.cache, &e.policies, &refs, resolved, jobs);
    let (found, summary) = e.rt.block_on(check).map_err(ResolveError::from)?;
    e.progress.line(&summary.to_string());
    Ok(found)
}
