//! HTTP downloads: streamed to a temp file in the cache, hashed as bytes arrive, retried
//! with backoff, resumed with `Range`, and committed only when the digest matches.

pub mod cache;
pub mod limits;
pub mod mirror;
pub mod sweep;
mod transfer;

use crate::digest::{Hashing, Sha256};
use crate::progress::Progress;
pub use cache::{Cache, CacheError};
pub use limits::{Guard, LimitHit, Limits};
pub use mirror::Mirrors;
use std::path::PathBuf;
use std::time::Duration;
use transfer::{FileSink, Job, Transfer, VecSink};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: HTTP {status}{hint} (after {attempts} attempt(s))")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
        attempts: u32,
    },
    #[error("GET {url}: {message} (after {attempts} attempt(s))")]
    Transport {
        url: String,
        message: String,
        attempts: u32,
    },
    #[error("GET {url}: sha256 mismatch: expected {expected}, got {actual} ({size} bytes received)")]
    Mismatch {
        url: String,
        expected: Sha256,
        actual: Sha256,
        size: u64,
    },
    #[error("GET {url}: size mismatch: expected {expected} bytes, server sends {actual}")]
    Size { url: String, expected: u64, actual: u64 },
    #[error("GET {url}: {hit} ({received} bytes received, after {attempts} attempt(s))")]
    Limit {
        url: String,
        hit: LimitHit,
        received: u64,
        attempts: u32,
    },
    #[error("GET {url}: body exceeds the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
    #[error("writing download of {url} to {path}: {source}")]
    Write {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

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

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    mirrors: Mirrors,
    retry: Retry,
    limits: Limits,
    progress: Progress,
    downloads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Fetcher {
    pub fn new(mirrors: Mirrors, retry: Retry, progress: Progress) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kbundle/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(Fetcher {
            client,
            mirrors,
            retry,
            limits: Limits::default(),
            progress,
            downloads: Default::default(),
        })
    }

    /// The same fetcher with other download limits (deadline, minimum rate).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Files downloaded (not found in the cache) by this fetcher so far.
    pub fn downloads(&self) -> usize {
        self.downloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The URL actually requested, with `(via mirror)` when rewritten, for messages.
    fn describe(&self, upstream: &str) -> (String, String) {
        let real = self.mirrors.rewrite_url(upstream);
        let shown = if real == upstream {
            upstream.to_string()
        } else {
            format!("{upstream} (via {real})")
        };
        (real, shown)
    }

    /// Downloads a small text file (checksum files) into memory, at most `limit` bytes.
    pub async fn get_small(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let (real, shown) = self.describe(url);
        let job = Job {
            url: &real,
            shown: &shown,
            limit,
            expected_size: None,
            resume: false,
            bar: None,
        };
        let mut body = Vec::new();
        let mut t = Transfer {
            sink: &mut VecSink(&mut body),
            hash: &mut Hashing::new(),
            guard: &mut Guard::start(self.limits),
        };
        self.transfer(&job, &mut t).await?;
        Ok(body)
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
            Some(bad) => self.progress.warn(&bad.to_string()),
        }
        None
    }

    /// Ensures the blob of `req` is in the cache, downloading it if needed, within the
    /// fetcher's limits (one deadline for the artifact, retries included).
    pub async fn fetch(&self, cache: &Cache, req: &Request<'_>) -> Result<Fetched, FetchError> {
        if let Some(hit) = self.cached(cache, req) {
            return Ok(hit);
        }
        let (real, shown) = self.describe(req.url);
        let bar = self.progress.bar(req.label, req.size);
        let job = Job {
            url: &real,
            shown: &shown,
            limit: req.size.unwrap_or(u64::MAX),
            expected_size: req.size,
            resume: true,
            bar: Some(&bar),
        };
        let mut guard = Guard::start(self.limits);
        // One fresh retry after a mismatch, in case a resumed transfer stitched bad bytes.
        let mut mismatch = None;
        for fresh in 0..2 {
            match self.download(cache, req, &job, &mut guard).await {
                Ok(Ok(f)) => {
                    bar.finish("fetched", f.size);
                    return Ok(f);
                }
                Ok(Err(e)) if fresh == 0 => {
                    self.progress.warn(&format!(
                        "{}: sha256 mismatch, downloading once more from scratch",
                        req.label
                    ));
                    mismatch = Some(e);
                }
                Ok(Err(e)) | Err(e) => {
                    mismatch = Some(e);
                    break;
                }
            }
        }
        bar.abandon();
        Err(mismatch.unwrap_or_else(|| FetchError::Transport {
            url: shown,
            message: "download failed".into(),
            attempts: 2,
        }))
    }

    /// One download into a fresh temp file: `Ok(Err(Mismatch))` when the bytes arrived but
    /// hash wrong (the temp file is deleted), `Err` on any other failure.
    async fn download(
        &self,
        cache: &Cache,
        req: &Request<'_>,
        job: &Job<'_>,
        guard: &mut Guard,
    ) -> Result<Result<Fetched, FetchError>, FetchError> {
        let mut tmp = cache.temp()?;
        let tmp_path = tmp.path().to_path_buf();
        let mut hash = Hashing::new();
        let mut t = Transfer {
            sink: &mut FileSink(tmp.as_file_mut()),
            hash: &mut hash,
            guard,
        };
        self.transfer(job, &mut t).await.map_err(|e| match e {
            FetchError::Write { url, source, .. } => FetchError::Write {
                url,
                path: tmp_path,
                source,
            },
            e => e,
        })?;
        let (actual, size) = hash.finish();
        if let Some(expected) = req.sha256.filter(|e| *e != actual) {
            return Ok(Err(FetchError::Mismatch {
                url: job.shown.to_string(),
                expected,
                actual,
                size,
            }));
        }
        let path = cache.commit(tmp, &actual)?;
        self.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Ok(Fetched {
            sha256: actual,
            size,
            path,
            downloaded: true,
        }))
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
