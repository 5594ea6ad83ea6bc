//! The one download engine, for file artifacts, image blobs and image manifests alike.
//!
//! Each attempt's request comes from an [`Origin`] (a URL; a registry with its credentials);
//! the body streams through a [`VerifyingWriter`] into a cache temp file or memory, under the
//! artifact's [`Guard`] (deadline, minimum rate). Transient failures are retried with
//! backoff and resumed with `Range`, the answer's `Content-Range` checked. A stream that does
//! not verify is fetched once more from scratch (a resume may have stitched bad bytes); only
//! a [`Verified`] temp file is committed to the cache.

use super::cache::{Cache, TempBlob};
use super::error::{FetchError, OriginError, Transient};
use super::limits::{Guard, LimitHit, Limits};
use super::verify::{Expected, Oversize, Sink, Verified, VerifyingWriter};
use super::{Fetched, Retry};
use crate::progress::{Bar, Progress};
use reqwest::header::{CONTENT_RANGE, RANGE};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where one artifact's bytes come from: it names the download and builds each attempt's
/// request. Implemented for plain URLs ([`UrlOrigin`]) and for registries
/// (`images::pull`).
pub(crate) trait Origin {
    /// What is fetched, for messages: `GET https://dl.k8s.io/… (via …)`.
    fn what(&self) -> &str;

    /// The request of one attempt, credentials applied; the engine adds `Range`.
    async fn request(&self, client: &reqwest::Client) -> Result<reqwest::RequestBuilder, OriginError>;

    /// After a 401: `true` when fresh credentials are worth one more attempt.
    async fn unauthorized(&self) -> bool {
        false
    }

    /// Words after a final HTTP status, e.g. what a 404 may mean.
    fn hint(&self, status: u16) -> &'static str {
        match status {
            404 => " Not Found: is the version right, and does the mirror hold this file?",
            401 | 403 => " (access denied)",
            _ => "",
        }
    }
}

/// A plain URL (a mirror's, when one applies), named by its upstream URL.
pub(crate) struct UrlOrigin {
    pub url: String,
    /// `GET <upstream> (via <mirror>)`.
    pub what: String,
}

impl Origin for UrlOrigin {
    fn what(&self) -> &str {
        &self.what
    }

    async fn request(&self, client: &reqwest::Client) -> Result<reqwest::RequestBuilder, OriginError> {
        Ok(client.get(&self.url))
    }
}

/// One download: where from, what it must be, at most how big, where progress goes.
pub(crate) struct Job<'a, O> {
    pub origin: &'a O,
    pub expected: Expected,
    /// Most bytes accepted (less than the expected size has no effect).
    pub limit: u64,
    pub bar: Option<&'a Bar>,
}

/// The HTTP client, retry policy, limits and progress shared by every download.
#[derive(Clone)]
pub struct Engine {
    client: reqwest::Client,
    retry: Retry,
    limits: Limits,
    progress: Progress,
    downloads: Arc<AtomicUsize>,
}

/// How one attempt ended, short of a final error.
enum Outcome {
    Done,
    Again(Again),
}

/// Why another attempt is made.
enum Again {
    Transient(Transient),
    /// A rate window below `--min-rate`.
    Slow(LimitHit),
}

impl std::fmt::Display for Again {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Again::Transient(t) => t.fmt(f),
            Again::Slow(hit) => hit.fmt(f),
        }
    }
}

fn again(t: Transient) -> Result<Outcome, FetchError> {
    Ok(Outcome::Again(Again::Transient(t)))
}

/// The state of one transfer across its attempts.
struct Transfer<'j, 'a, O, W> {
    job: &'j Job<'a, O>,
    sink: &'j mut VerifyingWriter<W>,
    guard: &'j mut Guard,
    attempt: u32,
}

impl Engine {
    pub fn new(retry: Retry, progress: Progress) -> Result<Engine, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kbundle/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Engine {
            client,
            retry,
            limits: Limits::default(),
            progress,
            downloads: Default::default(),
        })
    }

    /// The same engine with other download limits (deadline, minimum rate).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Downloads committed to the cache by this engine (and its clones) so far.
    pub fn downloads(&self) -> usize {
        self.downloads.load(Ordering::Relaxed)
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Downloads `job` into the cache, verified, within one deadline for the artifact
    /// (retries included); after a mismatch, once more from scratch.
    pub(crate) async fn to_cache<O: Origin>(&self, cache: &Cache, job: &Job<'_, O>) -> Result<Fetched, FetchError> {
        let mut guard = Guard::start(self.limits);
        let verified = match self.download_once(cache, job, &mut guard).await? {
            Ok(v) => v,
            Err(mismatch) => {
                let what = job.origin.what();
                self.progress
                    .warn(&format!("{what}: {mismatch}; downloading once more from scratch"));
                let again = self.download_once(cache, job, &mut guard).await?;
                again.map_err(|mismatch| FetchError::Mismatch {
                    what: what.to_string(),
                    mismatch,
                })?
            }
        };
        let (sha256, size) = (verified.sha256(), verified.size());
        let path = cache.commit(verified)?;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        Ok(Fetched {
            sha256,
            size,
            path,
            downloaded: true,
        })
    }

    /// Downloads a small body (a checksum file) into memory, verified against `job.expected`.
    pub(crate) async fn to_memory<O: Origin>(&self, job: &Job<'_, O>) -> Result<Verified<Vec<u8>>, FetchError> {
        let mut sink = VerifyingWriter::new(Vec::new(), job.expected).at_most(job.limit);
        self.transfer(job, &mut sink, &mut Guard::start(self.limits)).await?;
        sink.finish().map_err(|mismatch| FetchError::Mismatch {
            what: job.origin.what().to_string(),
            mismatch,
        })
    }

    /// One download into a fresh temp file: `Ok(Err(_))` when the bytes arrived but do not
    /// verify (the temp file is deleted), `Err` on any other failure.
    async fn download_once<O: Origin>(
        &self,
        cache: &Cache,
        job: &Job<'_, O>,
        guard: &mut Guard,
    ) -> Result<Result<Verified<TempBlob>, super::verify::Mismatch>, FetchError> {
        let mut sink = VerifyingWriter::new(cache.temp()?, job.expected).at_most(job.limit);
        self.transfer(job, &mut sink, guard).await?;
        Ok(sink.finish())
    }

    /// The retry loop: transient failures and slow windows are retried with backoff until
    /// the attempts run out or the artifact's deadline passes.
    async fn transfer<O: Origin, W: Sink>(
        &self,
        job: &Job<'_, O>,
        sink: &mut VerifyingWriter<W>,
        guard: &mut Guard,
    ) -> Result<(), FetchError> {
        let mut t = Transfer {
            job,
            sink,
            guard,
            attempt: 0,
        };
        loop {
            t.attempt += 1;
            t.guard.restart_window();
            let why = match self.attempt(&mut t).await? {
                Outcome::Done => return Ok(()),
                Outcome::Again(why) => why,
            };
            if t.attempt >= self.retry.attempts {
                return Err(t.gave_up(why));
            }
            self.backoff(&t, &why).await?;
        }
    }

    /// Says why a retry happens, then waits the backoff delay, within the deadline.
    async fn backoff<O: Origin, W: Sink>(&self, t: &Transfer<'_, '_, O, W>, why: &Again) -> Result<(), FetchError> {
        let delay = self.retry.delay(t.attempt);
        self.progress.warn(&format!(
            "{}: {why}; retrying in {:.1}s (attempt {}/{})",
            t.job.origin.what(),
            delay.as_secs_f32(),
            t.attempt + 1,
            self.retry.attempts
        ));
        t.guard.sleep(delay).await.map_err(|hit| t.limit_err(hit))
    }

    async fn attempt<O: Origin, W: Sink>(&self, t: &mut Transfer<'_, '_, O, W>) -> Result<Outcome, FetchError> {
        let have = t.sink.received();
        let rq = match t.guard.wait(t.job.origin.request(&self.client)).await {
            Err(hit) => return t.slow_or_final(hit),
            Ok(Err(e)) => return t.origin_failed(e),
            Ok(Ok(rq)) => rq,
        };
        let rq = if have > 0 {
            rq.header(RANGE, format!("bytes={have}-"))
        } else {
            rq
        };
        let resp = match t.guard.wait(rq.send()).await {
            Err(hit) => return t.slow_or_final(hit),
            Ok(Err(e)) => return again(Transient::Request(e)),
            Ok(Ok(r)) => r,
        };
        let start = match t.check_status(&resp).await? {
            Ok(start) => start,
            Err(outcome) => return Ok(outcome),
        };
        let total = t.check_length(resp.content_length().map(|n| n + start))?;
        if let Some(b) = t.job.bar {
            if let Some(total) = total.or(t.job.expected.size) {
                b.set_total(total);
            }
            b.set_position(start);
        }
        t.receive(resp, total).await
    }
}

impl<O: Origin, W: Sink> Transfer<'_, '_, O, W> {
    fn what(&self) -> String {
        self.job.origin.what().to_string()
    }

    /// Where the body starts (0, or the resume offset), or the outcome of a failed status.
    async fn check_status(&mut self, resp: &reqwest::Response) -> Result<Result<u64, Outcome>, FetchError> {
        let status = resp.status().as_u16();
        let start = self.sink.received();
        let retry = |t| Ok(Err(Outcome::Again(Again::Transient(t))));
        match status {
            200 => {
                if start > 0 {
                    self.restart()?; // The server ignored Range: start over.
                }
                Ok(Ok(0))
            }
            206 if start > 0 => {
                let answer = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok());
                if answer.is_some_and(|a| resumes_at(a, start)) {
                    return Ok(Ok(start));
                }
                let answer = answer.unwrap_or("(none)").to_string();
                self.restart()?;
                retry(Transient::ContentRange { asked: start, answer })
            }
            408 | 429 | 500..=599 => retry(Transient::Status(status)),
            416 if start > 0 => {
                self.restart()?;
                retry(Transient::RangeRefused)
            }
            401 if self.job.origin.unauthorized().await => retry(Transient::Reauthenticate),
            _ => Err(FetchError::Status {
                what: self.what(),
                status,
                hint: self.job.origin.hint(status),
                attempts: self.attempt,
            }),
        }
    }

    /// Checks the announced total length against the expected size and the limit.
    fn check_length(&self, total: Option<u64>) -> Result<Option<u64>, FetchError> {
        if let (Some(t), Some(e)) = (total, self.job.expected.size) {
            if t != e {
                return Err(FetchError::Mismatch {
                    what: self.what(),
                    mismatch: super::verify::Mismatch::Size { expected: e, actual: t },
                });
            }
        }
        if total.is_some_and(|t| t > self.sink.limit()) {
            return Err(self.too_large());
        }
        Ok(total)
    }

    /// Streams the body into the sink under the guard.
    async fn receive(&mut self, mut resp: reqwest::Response, total: Option<u64>) -> Result<Outcome, FetchError> {
        loop {
            let chunk = match self.guard.wait(resp.chunk()).await {
                Err(hit) => return self.slow_or_final(hit),
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(source)) => {
                    let received = self.sink.received();
                    return again(Transient::Interrupted { received, source });
                }
            };
            self.put(&chunk)?;
            if let Err(hit) = self.guard.received(chunk.len() as u64) {
                return self.slow_or_final(hit);
            }
        }
        // A short body is resumed; a long one was refused by the sink.
        let got = self.sink.received();
        match total.or(self.job.expected.size) {
            Some(total) if got < total => again(Transient::Truncated { got, total }),
            _ => Ok(Outcome::Done),
        }
    }

    fn put(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        use std::io::Write;
        if let Err(e) = self.sink.write_all(chunk) {
            return Err(match (Oversize::of(&e), self.job.expected.size) {
                (Some(o), Some(expected)) => FetchError::Mismatch {
                    what: self.what(),
                    mismatch: super::verify::Mismatch::Size {
                        expected,
                        actual: o.attempted,
                    },
                },
                (Some(_), None) => self.too_large(),
                (None, _) => self.write_err(e),
            });
        }
        if let Some(b) = self.job.bar {
            b.inc(chunk.len() as u64);
        }
        Ok(())
    }

    fn restart(&mut self) -> Result<(), FetchError> {
        self.sink.restart().map_err(|e| self.write_err(e))?;
        if let Some(b) = self.job.bar {
            b.set_position(0);
        }
        Ok(())
    }

    /// A slow window is retried (resuming); a missed deadline ends the artifact.
    fn slow_or_final(&self, hit: LimitHit) -> Result<Outcome, FetchError> {
        if hit.is_final() {
            return Err(self.limit_err(hit));
        }
        Ok(Outcome::Again(Again::Slow(hit)))
    }

    fn origin_failed(&self, e: OriginError) -> Result<Outcome, FetchError> {
        let OriginError { context, retry, source } = e;
        if retry {
            return again(Transient::Origin { context, source });
        }
        Err(FetchError::Origin {
            what: self.what(),
            context,
            source,
        })
    }

    /// The final error once the attempts are used up.
    fn gave_up(&self, why: Again) -> FetchError {
        match why {
            Again::Slow(hit) => self.limit_err(hit),
            Again::Transient(last) => FetchError::Transport {
                what: self.what(),
                attempts: self.attempt,
                last,
            },
        }
    }

    fn limit_err(&self, hit: LimitHit) -> FetchError {
        FetchError::Limit {
            what: self.what(),
            hit,
            received: self.sink.received(),
            attempts: self.attempt,
        }
    }

    fn too_large(&self) -> FetchError {
        FetchError::TooLarge {
            what: self.what(),
            limit: self.sink.limit(),
        }
    }

    fn write_err(&self, source: std::io::Error) -> FetchError {
        FetchError::Write {
            what: self.what(),
            path: self.sink.path(),
            source,
        }
    }
}

/// Does `Content-Range: bytes <first>-<last>/<total|*>` continue at `start`?
fn resumes_at(content_range: &str, start: u64) -> bool {
    let Some((first, rest)) = content_range.strip_prefix("bytes ").and_then(|r| r.split_once('-')) else {
        return false;
    };
    let last = rest.split_once('/').map_or(rest, |(l, _)| l);
    matches!((first.parse::<u64>(), last.parse::<u64>()), (Ok(f), Ok(l)) if f == start && l >= f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_must_continue_where_we_stopped() {
        assert!(resumes_at("bytes 100-199/200", 100));
        assert!(resumes_at("bytes 100-199/*", 100));
        assert!(!resumes_at("bytes 0-199/200", 100));
        assert!(!resumes_at("bytes 100-99/200", 100));
        assert!(!resumes_at("items 100-199/200", 100));
        assert!(!resumes_at("bytes 100-", 100));
    }
}
