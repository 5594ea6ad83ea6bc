//! One blob into the cache: streamed to a temp file, hashed as it arrives, resumed after
//! interruptions, under the artifact's [`Guard`] (deadline, minimum rate), committed only
//! when the digest matches.

use super::{not_found, retryable, Failure, ImageError, Puller};
use crate::digest::{Hashing, Sha256};
use crate::fetch::{Cache, Fetched, Guard, LimitHit};
use crate::image_ref::ImageRef;
use crate::progress::Bar;
use futures::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::Reference;
use std::io::{Seek, Write};

/// The state of one blob's pull across attempts.
struct BlobPull<'a> {
    r: &'a ImageRef,
    reference: Reference,
    /// The registry as messages show it (mirror and upstream).
    registry: String,
    digest: Sha256,
    size: u64,
    what: String,
    tmp: tempfile::NamedTempFile,
    hash: Hashing,
    bar: Bar,
    guard: Guard,
}

impl BlobPull<'_> {
    fn write_err(&self, source: std::io::Error) -> Failure {
        Failure::Fatal(ImageError::Write {
            reference: self.r.to_string(),
            digest: self.digest.oci(),
            path: self.tmp.path().to_path_buf(),
            source,
        })
    }

    /// The server sent the whole blob again: drop what we have.
    fn restart(&mut self) -> Result<(), Failure> {
        if self.hash.is_empty() {
            return Ok(());
        }
        let f = self.tmp.as_file_mut();
        let res = f.set_len(0).and_then(|_| f.rewind());
        res.map_err(|e| self.write_err(e))?;
        self.hash = Hashing::new();
        self.bar.set_position(0);
        Ok(())
    }

    /// A limit hit: a slow window is retried, a missed deadline is final.
    fn limit(&self, hit: LimitHit) -> Failure {
        if hit.is_final() {
            return Failure::Fatal(ImageError::Limit {
                reference: self.r.to_string(),
                what: self.what.clone(),
                registry: self.registry.clone(),
                hit,
                received: self.hash.len(),
                attempts: 1,
            });
        }
        Failure::Slow(hit)
    }
}

impl Puller {
    /// Ensures blob `digest` of image `r` is in the cache: streamed to a temp file, hashed as
    /// it arrives, resumed after interruptions, committed only when the digest matches.
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
        let mut st = BlobPull {
            r,
            reference: self.reference(r, &digest.oci()),
            registry: self.shown_registry(r),
            digest,
            size,
            what: format!("blob {}", digest.oci()),
            tmp: cache.temp()?,
            hash: Hashing::new(),
            bar: self
                .progress
                .bar(&format!("{} {}", r.repository, &digest.hex()[..12]), Some(size)),
            guard: Guard::start(self.limits),
        };
        if let Err(e) = self.pull_with_retries(&mut st).await {
            st.bar.abandon();
            return Err(e);
        }
        self.commit_blob(cache, st)
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
            Some(bad) => self.progress.warn(&bad.to_string()),
            None => cache.evict(&digest),
        }
        None
    }

    async fn pull_with_retries(&self, st: &mut BlobPull<'_>) -> Result<(), ImageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            st.guard.restart_window();
            let why = match self.blob_attempt(st).await {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(ImageError::Limit { hit, received, .. })) => {
                    return Err(self.limit_error(st.r, &st.what, hit, received, attempt))
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Slow(hit)) if attempt >= self.retry.attempts => {
                    return Err(self.limit_error(st.r, &st.what, hit, st.hash.len(), attempt))
                }
                Err(Failure::Retry(why)) if attempt >= self.retry.attempts => {
                    return Err(ImageError::Registry {
                        reference: st.r.to_string(),
                        what: st.what.clone(),
                        registry: self.shown_registry(st.r),
                        answer: why,
                        attempts: attempt,
                    })
                }
                Err(Failure::Slow(hit)) => hit.to_string(),
                Err(Failure::Retry(why)) => why,
            };
            self.blob_backoff(st, &why, attempt).await?;
        }
    }

    /// Says why a retry happens, then waits the backoff delay, within the deadline.
    async fn blob_backoff(&self, st: &BlobPull<'_>, why: &str, attempt: u32) -> Result<(), ImageError> {
        let delay = self.retry.delay(attempt);
        self.progress.warn(&format!(
            "image {}: {}: {why}; retrying in {:.1}s (attempt {}/{})",
            st.r,
            st.what,
            delay.as_secs_f32(),
            attempt + 1,
            self.retry.attempts
        ));
        st.guard
            .sleep(delay)
            .await
            .map_err(|hit| self.limit_error(st.r, &st.what, hit, st.hash.len(), attempt))
    }

    async fn blob_attempt(&self, st: &mut BlobPull<'_>) -> Result<(), Failure> {
        let auth = st.guard.wait(self.ensure_auth(&st.reference)).await;
        auth.map_err(|hit| st.limit(hit))??;
        let mut stream = self.open_blob(st).await?;
        loop {
            let chunk = match st.guard.wait(stream.next()).await {
                Err(hit) => return Err(st.limit(hit)),
                Ok(None) => break,
                Ok(Some(c)) => c,
            };
            match chunk {
                Ok(b) => self.take_chunk(st, &b)?,
                // oci-client's own digest check fails at the very end; ours decides.
                Err(_) if st.hash.len() == st.size => break,
                Err(e) => {
                    return Err(Failure::Retry(format!(
                        "body interrupted after {} bytes: {e}",
                        st.hash.len()
                    )))
                }
            }
        }
        if st.hash.len() < st.size {
            return Err(Failure::Retry(format!(
                "body truncated at {} of {} bytes",
                st.hash.len(),
                st.size
            )));
        }
        Ok(())
    }

    /// Opens the blob stream, from where the temp file ends (or from the start).
    async fn open_blob(&self, st: &mut BlobPull<'_>) -> Result<oci_client::client::SizedStream, Failure> {
        let offset = st.hash.len();
        let dstr = st.digest.oci();
        let res = if offset == 0 {
            let fut = self.client.pull_blob_stream(&st.reference, dstr.as_str());
            st.guard.wait(fut).await.map(|r| r.map(BlobResponse::Full))
        } else {
            let fut = self
                .client
                .pull_blob_stream_partial(&st.reference, dstr.as_str(), offset, None);
            st.guard.wait(fut).await
        };
        match res.map_err(|hit| st.limit(hit))? {
            Ok(BlobResponse::Full(s)) => {
                st.restart()?;
                Ok(s)
            }
            Ok(BlobResponse::Partial(s)) => Ok(s),
            Err(e) if retryable(&e) => Err(Failure::Retry(e.to_string())),
            Err(e) if not_found(&e) => Err(Failure::Fatal(ImageError::NotFound {
                reference: st.r.to_string(),
                what: st.what.clone(),
                registry: self.shown_registry(st.r),
                answer: e.to_string(),
            })),
            Err(e) => Err(Failure::Fatal(ImageError::Registry {
                reference: st.r.to_string(),
                what: st.what.clone(),
                registry: self.shown_registry(st.r),
                answer: e.to_string(),
                attempts: 1,
            })),
        }
    }

    fn take_chunk(&self, st: &mut BlobPull<'_>, b: &[u8]) -> Result<(), Failure> {
        let n = b.len() as u64;
        if st.hash.len() + n > st.size {
            return Err(Failure::Fatal(ImageError::Size {
                reference: st.r.to_string(),
                digest: st.digest,
                expected: st.size,
                actual: st.hash.len() + n,
            }));
        }
        st.tmp.as_file_mut().write_all(b).map_err(|e| st.write_err(e))?;
        st.hash.update(b);
        st.bar.inc(n);
        st.guard.received(n).map_err(|hit| st.limit(hit))
    }

    fn commit_blob(&self, cache: &Cache, st: BlobPull<'_>) -> Result<Fetched, ImageError> {
        let (actual, n) = st.hash.finish();
        if actual != st.digest {
            st.bar.abandon();
            return Err(ImageError::Mismatch {
                reference: st.r.to_string(),
                what: format!("blob {} ({n} bytes)", st.digest.oci()),
                expected: st.digest,
                actual,
            });
        }
        let path = cache.commit(st.tmp, &st.digest)?;
        self.downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        st.bar.finish("pulled", n);
        Ok(Fetched {
            sha256: st.digest,
            size: n,
            path,
            downloaded: true,
        })
    }
}
