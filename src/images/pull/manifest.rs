//! Manifests and indexes through the download engine, into the cache: by digest (verified),
//! or by tag (the registry's bytes, whose digest then gets locked). At most
//! [`MAX_MANIFEST`] bytes each.

use super::registry::Endpoint;
use super::{ImageError, Puller};
use crate::digest::Sha256;
use crate::fetch::engine::Job;
use crate::fetch::{Cache, Expected, Fetched};
use crate::image_ref::ImageRef;
use crate::images::MAX_MANIFEST;

impl Puller {
    /// GETs manifest `by` (a tag or `sha256:…`) of `r` into the cache.
    pub(super) async fn pull_manifest(
        &self,
        cache: &Cache,
        r: &ImageRef,
        by: &str,
        expected: Expected,
    ) -> Result<Fetched, ImageError> {
        let origin = self.origin(r, Endpoint::Manifest, by);
        let job = Job {
            origin: &origin,
            expected,
            limit: MAX_MANIFEST as u64,
            bar: None,
        };
        let fetched = self.engine.to_cache(cache, &job).await;
        fetched.map_err(|e| origin.subject.error(e))
    }

    /// Manifest `by` (a tag) of `r`: its bytes and their digest.
    pub(super) async fn manifest_by_tag(
        &self,
        cache: &Cache,
        r: &ImageRef,
        tag: &str,
    ) -> Result<(Vec<u8>, Sha256), ImageError> {
        let f = self.pull_manifest(cache, r, tag, Expected::default()).await?;
        Ok((read(r, &f)?, f.sha256))
    }

    /// Manifest `want` of `r` (of `size` bytes, when an index says so): from the cache,
    /// hashed again, else from the registry, verified.
    pub(super) async fn manifest_by_digest(
        &self,
        cache: &Cache,
        r: &ImageRef,
        want: Sha256,
        size: Option<u64>,
    ) -> Result<Vec<u8>, ImageError> {
        if let Some(bytes) = self.cached_manifest(cache, want) {
            return Ok(bytes);
        }
        let expected = Expected::new(Some(want), size);
        let f = self.pull_manifest(cache, r, &want.oci(), expected).await?;
        read(r, &f)
    }

    /// The cached manifest `want`, if it is there and matches its name; a cache entry that
    /// does not is evicted with a warning.
    fn cached_manifest(&self, cache: &Cache, want: Sha256) -> Option<Vec<u8>> {
        let size = cache.size_of(&want)?;
        if size <= MAX_MANIFEST as u64 {
            if let Ok(b) = std::fs::read(cache.blob_path(&want)) {
                if Sha256::of(&b) == want {
                    return Some(b);
                }
            }
        }
        if let Some(bad) = cache.check(&want) {
            self.engine.progress().warn(&bad.to_string());
        }
        None
    }
}

/// The bytes of a manifest the engine just verified into the cache.
fn read(r: &ImageRef, f: &Fetched) -> Result<Vec<u8>, ImageError> {
    std::fs::read(&f.path).map_err(|source| ImageError::ReadManifest {
        reference: r.to_string(),
        path: f.path.clone(),
        source,
    })
}
