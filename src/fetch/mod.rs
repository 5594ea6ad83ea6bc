//! HTTP downloads: streamed to a temp file in the cache, hashed as bytes arrive, retried
//! with backoff, resumed with `Range`, and committed only when the digest matches.
//!
//! - [`engine`]: the one download engine (retries, resume, limits, commit), used by the
//!   [`Fetcher`] here for files and by `images::pull` for image manifests and blobs;
//! - [`verify`]: the writer that hashes while bytes pass and the [`Verified`] proof the
//!   [`cache`] commits; [`limits`]: deadline and minimum rate; [`sweep`]: temp files of
//!   killed builds; [`mirror`]: `--mirror` rewrites; [`error`]: what can go wrong.

pub mod cache;
pub mod engine;
pub mod error;
pub mod limits;
pub mod mirror;
pub mod sweep;
pub mod verify;

use crate::digest::Sha256;
use crate::progress::Progress;
pub use cache::{Cache, CacheError};
pub use engine::Engine;
use engine::{Job, UrlOrigin};
pub use error::{FetchError, Transient};
pub use limits::{Guard, LimitHit, Limits};
pub use mirror::Mirrors;
use std::path::PathBuf;
use std::time::Duration;
pub use verify::{Expected, Mismatch, Verified};

/// Retry policy for transient failures (5xx, 408, 429, resets, timeouts, short bodies).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            base: Duration::from_millis(250),
            max: Duration::from_secs(8),
        }
    }
}

impl Retry {
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        d.min(self.max)
    }
}

/// What to download and what it must hash to.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The upstream URL; mirrors are applied by the fetcher.
    pub url: &'a str,
    /// Progress label, e.g. the file name.
    pub label: &'a str,
    /// Known digest (lock, checksum file or manifest pin). `None` trusts the first download.
    pub sha256: Option<Sha256>,
    pub size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub sha256: Sha256,
    pub size: u64,
    pub path: PathBuf,
    /// `false` when the cache already held the blob.
    pub downloaded: bool,
}

/// File artifacts: upstream URLs (rewritten by the mirrors) through the [`Engine`].
#[derive(Clone)]
pub struct Fetcher {
    engine: Engine,
    mirrors: Mirrors,
}

impl Fetcher {
    pub fn new(mirrors: Mirrors, retry: Retry, progress: Progress) -> Result<Self, FetchError> {
        Ok(Fetcher {
            engine: Engine::new(retry, progress)?,
            mirrors,
        })
    }

    /// The same fetcher with other download limits (deadline, minimum rate).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.engine = self.engine.with_limits(limits);
        self
    }

    /// Files downloaded (not found in the cache) by this fetcher so far.
    pub fn downloads(&self) -> usize {
        self.engine.downloads()
    }

    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    pub fn progress(&self) -> &Progress {
        self.engine.progress()
    }

    /// The URL actually requested, named `GET <upstream> (via <mirror>)` when rewritten.
    fn origin(&self, upstream: &str) -> UrlOrigin {
        let url = self.mirrors.rewrite_url(upstream);
        let what = if url == upstream {
            format!("GET {upstream}")
        } else {
            format!("GET {upstream} (via {url})")
        };
        UrlOrigin { url, what }
    }

    /// Downloads a small text file (checksum files) into memory, at most `limit` bytes.
    pub async fn get_small(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let job = Job {
            origin: &self.origin(url),
            expected: Expected::default(),
            limit,
            bar: None,
        };
        Ok(self.engine.to_memory(&job).await?.into_inner())
    }

    /// The cached blob of `req`, if the cache holds it: trusted by name and size when the
    /// size is known (packing hashes it again), hashed when it is not. A blob that does not
    /// match is evicted with a warning.
    fn cached(&self, cache: &Cache, req: &Request<'_>) -> Option<Fetched> {
        let d = req.sha256?;
        let size = cache.size_of(&d)?;
        let hit = Fetched {
            sha256: d,
            size,
            path: cache.blob_path(&d),
            downloaded: false,
        };
        if req.size == Some(size) {
            return Some(hit);
        }
        match cache.check(&d) {
            None if req.size.is_none() => return Some(hit),
            // Right content, but not the size the lock says: fetch it and let the size decide.
            None => cache.evict(&d),
            Some(bad) => self.progress().warn(&bad.to_string()),
        }
        None
    }

    /// Ensures the blob of `req` is in the cache, downloading it if needed, within the
    /// fetcher's limits (one deadline for the artifact, retries included).
    pub async fn fetch(&self, cache: &Cache, req: &Request<'_>) -> Result<Fetched, FetchError> {
        if let Some(hit) = self.cached(cache, req) {
            return Ok(hit);
        }
        let bar = self.progress().bar(req.label, req.size);
        let job = Job {
            origin: &self.origin(req.url),
            expected: Expected::new(req.sha256, req.size),
            limit: u64::MAX,
            bar: Some(&bar),
        };
        let fetched = self.engine.to_cache(cache, &job).await;
        match &fetched {
            Ok(f) => bar.finish("fetched", f.size),
            Err(_) => bar.abandon(),
        }
        fetched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let r = Retry::default();
        assert_eq!(r.delay(1), Duration::from_millis(250));
        assert_eq!(r.delay(2), Duration::from_millis(500));
        assert_eq!(r.delay(10), Duration::from_secs(8));
    }
}
