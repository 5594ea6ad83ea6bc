//! HTTP downloads: streamed to a temp file in the cache, hashed as bytes arrive, retried
//! with backoff, resumed with `Range`, and committed only when the digest matches.

pub mod cache;
pub mod mirror;

use crate::digest::{Hashing, Sha256};
use crate::progress::Progress;
pub use cache::{Cache, CacheError};
pub use mirror::Mirrors;
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

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
    progress: Progress,
    downloads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Where downloaded bytes go: a temp file (blobs) or memory (small checksum files).
trait Sink {
    fn reset(&mut self) -> std::io::Result<()>;
    fn put(&mut self, data: &[u8]) -> std::io::Result<()>;
}

struct FileSink<'a>(&'a mut std::fs::File);
impl Sink for FileSink<'_> {
    fn reset(&mut self) -> std::io::Result<()> {
        self.0.set_len(0)?;
        self.0.rewind().map(|_| ())
    }
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)
    }
}

struct VecSink<'a>(&'a mut Vec<u8>);
impl Sink for VecSink<'_> {
    fn reset(&mut self) -> std::io::Result<()> {
        self.0.clear();
        Ok(())
    }
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
}

enum Attempt {
    Done,
    Retry(String),
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
            progress,
            downloads: Default::default(),
        })
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
        let mut body = Vec::new();
        let mut hash = Hashing::new();
        self.transfer(
            &real,
            &shown,
            limit,
            None,
            &mut VecSink(&mut body),
            &mut hash,
            false,
            None,
        )
        .await?;
        Ok(body)
    }

    /// Ensures the blob of `req` is in the cache, downloading it if needed.
    pub async fn fetch(&self, cache: &Cache, req: &Request<'_>) -> Result<Fetched, FetchError> {
        if let Some(d) = req.sha256 {
            if let Some(size) = cache.size_of(&d) {
                if req.size.is_none_or(|s| s == size) {
                    return Ok(Fetched {
                        sha256: d,
                        size,
                        path: cache.blob_path(&d),
                        downloaded: false,
                    });
                }
                cache.evict(&d);
            }
        }
        let (real, shown) = self.describe(req.url);
        let bar = self.progress.bar(req.label, req.size);
        // One fresh retry after a mismatch, in case a resumed transfer stitched bad bytes.
        let mut last_err = None;
        for fresh in 0..2 {
            let mut tmp = cache.temp()?;
            let tmp_path = tmp.path().to_path_buf();
            let mut hash = Hashing::new();
            let res = self
                .transfer(
                    &real,
                    &shown,
                    req.size.unwrap_or(u64::MAX),
                    req.size,
                    &mut FileSink(tmp.as_file_mut()),
                    &mut hash,
                    true,
                    Some(&bar),
                )
                .await;
            if let Err(e) = res {
                bar.abandon();
                return Err(match e {
                    FetchError::Write { url, source, .. } => FetchError::Write {
                        url,
                        path: tmp_path,
                        source,
                    },
                    e => e,
                });
            }
            let (actual, size) = hash.finish();
            if let Some(expected) = req.sha256 {
                if expected != actual {
                    last_err = Some(FetchError::Mismatch {
                        url: shown.clone(),
                        expected,
                        actual,
                        size,
                    });
                    if fresh == 0 {
                        self.progress.warn(&format!(
                            "{}: sha256 mismatch, downloading once more from scratch",
                            req.label
                        ));
                    }
                    continue; // tmp dropped: the bad bytes are deleted
                }
            }
            let path = cache.commit(tmp, &actual)?;
            self.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bar.finish("fetched", size);
            return Ok(Fetched {
                sha256: actual,
                size,
                path,
                downloaded: true,
            });
        }
        bar.abandon();
        Err(last_err.unwrap_or_else(|| FetchError::Transport {
            url: shown,
            message: "download failed".into(),
            attempts: 2,
        }))
    }

    /// The retry loop. `resume` allows `Range` continuation into the same sink.
    #[allow(clippy::too_many_arguments)]
    async fn transfer(
        &self,
        url: &str,
        shown: &str,
        limit: u64,
        expected_size: Option<u64>,
        sink: &mut dyn Sink,
        hash: &mut Hashing,
        resume: bool,
        bar: Option<&crate::progress::Bar>,
    ) -> Result<(), FetchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self
                .attempt(url, shown, limit, expected_size, sink, hash, resume, bar, attempt)
                .await?;
            match outcome {
                Attempt::Done => return Ok(()),
                Attempt::Retry(why) => {
                    if attempt >= self.retry.attempts {
                        return Err(FetchError::Transport {
                            url: shown.to_string(),
                            message: why,
                            attempts: attempt,
                        });
                    }
                    let delay = self.retry.delay(attempt);
                    self.progress.warn(&format!(
                        "{shown}: {why}; retrying in {:.1}s (attempt {}/{})",
                        delay.as_secs_f32(),
                        attempt + 1,
                        self.retry.attempts
                    ));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        url: &str,
        shown: &str,
        limit: u64,
        expected_size: Option<u64>,
        sink: &mut dyn Sink,
        hash: &mut Hashing,
        resume: bool,
        bar: Option<&crate::progress::Bar>,
        attempt: u32,
    ) -> Result<Attempt, FetchError> {
        let write_err = |source| FetchError::Write {
            url: shown.to_string(),
            path: PathBuf::new(),
            source,
        };
        let have = hash.len();
        let mut rq = self.client.get(url);
        if resume && have > 0 {
            rq = rq.header(reqwest::header::RANGE, format!("bytes={have}-"));
        } else if have > 0 {
            sink.reset().map_err(write_err)?;
            *hash = Hashing::new();
        }
        let resp = match rq.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry(describe_reqwest(&e))),
        };
        let status = resp.status().as_u16();
        let mut start = hash.len();
        match status {
            200 => {
                if start > 0 {
                    // The server ignored Range: start over.
                    sink.reset().map_err(write_err)?;
                    *hash = Hashing::new();
                    start = 0;
                }
            }
            206 if start > 0 => {
                let ok = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&format!("bytes {start}-")));
                if !ok {
                    sink.reset().map_err(write_err)?;
                    *hash = Hashing::new();
                    return Ok(Attempt::Retry(
                        "server answered Range with an unexpected Content-Range".into(),
                    ));
                }
            }
            408 | 429 | 500..=599 => return Ok(Attempt::Retry(format!("HTTP {status}"))),
            416 if start > 0 => {
                sink.reset().map_err(write_err)?;
                *hash = Hashing::new();
                return Ok(Attempt::Retry("HTTP 416 on resume".into()));
            }
            _ => {
                let hint = match status {
                    404 => " Not Found: is the version right, and does the mirror hold this file?",
                    401 | 403 => " (access denied)",
                    _ => "",
                };
                return Err(FetchError::Status {
                    url: shown.to_string(),
                    status,
                    hint,
                    attempts: attempt,
                });
            }
        }
        let total = resp.content_length().map(|n| n + start);
        if let (Some(t), Some(e)) = (total, expected_size) {
            if t != e {
                return Err(FetchError::Size {
                    url: shown.to_string(),
                    expected: e,
                    actual: t,
                });
            }
        }
        if let Some(t) = total {
            if t > limit {
                return Err(FetchError::TooLarge {
                    url: shown.to_string(),
                    limit,
                });
            }
        }
        if let Some(b) = bar {
            if let Some(t) = total.or(expected_size) {
                b.set_total(t);
            }
            b.set_position(start);
        }
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if hash.len() + chunk.len() as u64 > limit {
                        return Err(FetchError::TooLarge {
                            url: shown.to_string(),
                            limit,
                        });
                    }
                    sink.put(&chunk).map_err(write_err)?;
                    hash.update(&chunk);
                    if let Some(b) = bar {
                        b.inc(chunk.len() as u64);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if !resume {
                        sink.reset().map_err(write_err)?;
                        *hash = Hashing::new();
                    }
                    return Ok(Attempt::Retry(format!(
                        "body interrupted after {} bytes: {}",
                        hash.len(),
                        describe_reqwest(&e)
                    )));
                }
            }
        }
        if let Some(t) = total {
            if hash.len() < t {
                return Ok(Attempt::Retry(format!("body truncated at {} of {t} bytes", hash.len())));
            }
        }
        if let Some(e) = expected_size {
            if hash.len() != e {
                return Err(FetchError::Size {
                    url: shown.to_string(),
                    expected: e,
                    actual: hash.len(),
                });
            }
        }
        Ok(Attempt::Done)
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "transfer failed".to_string()
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
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
