//! One image blob into the cache, through the download engine: streamed to a temp file,
//! hashed as it arrives, resumed after interruptions, under the artifact's deadline and
//! minimum rate, committed only when its digest and size verify.

use super::registry::Endpoint;
use super::{ImageError, Puller};
use crate::digest::Sha256;
use crate::fetch::engine::Job;
use crate::fetch::{Cache, Expected, Fetched};
use crate::image_ref::ImageRef;

impl Puller {
    /// Ensures blob `digest` (of `size` bytes) of image `r` is in the cache.
    pub async fn fetch_blob(
        &self,
        cache: &Cache,
        r: &ImageRef,
        digest: Sha256,
        size: u64,
    ) -> Result<Fetched, ImageError> {
        if let Some(hit) = self.cached_blob(cache, digest, size) {
            return Ok(hit);
        }
        let origin = self.origin(r, Endpoint::Blob, &digest.oci());
        let label = format!("{} {}", r.repository, &digest.hex()[..12]);
        let bar = self.engine.progress().bar(&label, Some(size));
        let job = Job {
            origin: &origin,
            expected: Expected::new(Some(digest), Some(size)),
            limit: size,
            bar: Some(&bar),
        };
        match self.engine.to_cache(cache, &job).await {
            Ok(f) => {
                bar.finish("pulled", f.size);
                Ok(f)
            }
            Err(e) => {
                bar.abandon();
                Err(origin.subject.error(e))
            }
        }
    }

    /// The cached blob, if its size is right (packing hashes it again); a blob of the wrong
    /// size is hashed, and evicted with a warning if it does not match its name.
    fn cached_blob(&self, cache: &Cache, digest: Sha256, size: u64) -> Option<Fetched> {
        let have = cache.size_of(&digest)?;
        if have == size {
            return Some(Fetched {
                sha256: digest,
                size,
                path: cache.blob_path(&digest),
                downloaded: false,
            });
        }
        match cache.check(&digest) {
            Some(bad) => self.engine.progress().warn(&bad.to_string()),
            None => cache.evict(&digest),
        }
        None
    }
}
