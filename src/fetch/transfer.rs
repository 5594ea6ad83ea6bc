//! One HTTP transfer with retries: the request, its status, and the body streamed into a
//! sink while it is hashed, all under the artifact's [`Guard`] (deadline, minimum rate).

use super::limits::{Guard, LimitHit};
use super::{FetchError, Fetcher};
use crate::digest::Hashing;
use crate::progress::Bar;
use std::io::{Seek, Write};
use std::path::PathBuf;

/// Where downloaded bytes go: a temp file (blobs) or memory (small checksum files).
pub(super) trait Sink {
    fn reset(&mut self) -> std::io::Result<()>;
    fn put(&mut self, data: &[u8]) -> std::io::Result<()>;
}

pub(super) struct FileSink<'a>(pub &'a mut std::fs::File);
impl Sink for FileSink<'_> {
    fn reset(&mut self) -> std::io::Result<()> {
        self.0.set_len(0)?;
        self.0.rewind().map(|_| ())
    }
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)
    }
}

pub(super) struct VecSink<'a>(pub &'a mut Vec<u8>);
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

/// What one transfer is: where from, how it is shown, what it may be.
pub(super) struct Job<'a> {
    /// The URL actually requested (after mirrors).
    pub url: &'a str,
    /// The URL for messages: upstream, with `(via mirror)`.
    pub shown: &'a str,
    /// Most bytes accepted.
    pub limit: u64,
    pub expected_size: Option<u64>,
    /// `Range` continuation into the same sink after an interruption.
    pub resume: bool,
    pub bar: Option<&'a Bar>,
}

/// The state of one transfer: its sink, the hash of what the sink holds, its guard.
pub(super) struct Transfer<'a> {
    pub sink: &'a mut dyn Sink,
    pub hash: &'a mut Hashing,
    pub guard: &'a mut Guard,
}

impl Transfer<'_> {
    fn reset(&mut self, job: &Job<'_>) -> Result<(), FetchError> {
        self.sink.reset().map_err(|e| write_err(job, e))?;
        *self.hash = Hashing::new();
        Ok(())
    }
}

enum Attempt {
    Done,
    Retry(String),
    Slow(LimitHit),
}

fn write_err(job: &Job<'_>, source: std::io::Error) -> FetchError {
    FetchError::Write {
        url: job.shown.to_string(),
        path: PathBuf::new(),
        source,
    }
}

fn limit_err(job: &Job<'_>, hit: LimitHit, received: u64, attempts: u32) -> FetchError {
    FetchError::Limit {
        url: job.shown.to_string(),
        hit,
        received,
        attempts,
    }
}

impl Fetcher {
    /// The retry loop: transient failures and slow windows are retried with backoff until
    /// the attempts run out or the artifact's deadline passes.
    pub(super) async fn transfer(&self, job: &Job<'_>, t: &mut Transfer<'_>) -> Result<(), FetchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            t.guard.restart_window();
            let why = match self.attempt(job, t, attempt).await? {
                Attempt::Done => return Ok(()),
                Attempt::Slow(hit) if attempt >= self.retry.attempts => {
                    return Err(limit_err(job, hit, t.hash.len(), attempt))
                }
                Attempt::Retry(why) if attempt >= self.retry.attempts => {
                    return Err(FetchError::Transport {
                        url: job.shown.to_string(),
                        message: why,
                        attempts: attempt,
                    })
                }
                Attempt::Slow(hit) => hit.to_string(),
                Attempt::Retry(why) => why,
            };
            let delay = self.retry.delay(attempt);
            self.progress.warn(&format!(
                "{}: {why}; retrying in {:.1}s (attempt {}/{})",
                job.shown,
                delay.as_secs_f32(),
                attempt + 1,
                self.retry.attempts
            ));
            let received = t.hash.len();
            t.guard
                .sleep(delay)
                .await
                .map_err(|hit| limit_err(job, hit, received, attempt))?;
        }
    }

    async fn attempt(&self, job: &Job<'_>, t: &mut Transfer<'_>, attempt: u32) -> Result<Attempt, FetchError> {
        let have = t.hash.len();
        let mut rq = self.client.get(job.url);
        if job.resume && have > 0 {
            rq = rq.header(reqwest::header::RANGE, format!("bytes={have}-"));
        } else if have > 0 {
            t.reset(job)?;
        }
        let resp = match t.guard.wait(rq.send()).await {
            Err(hit) => return slow_or_final(job, hit, have, attempt),
            Ok(Err(e)) => return Ok(Attempt::Retry(describe_reqwest(&e))),
            Ok(Ok(r)) => r,
        };
        let start = match self.check_status(job, t, &resp, attempt)? {
            Ok(start) => start,
            Err(outcome) => return Ok(outcome),
        };
        let total = check_length(job, resp.content_length().map(|n| n + start))?;
        if let Some(b) = job.bar {
            if let Some(total) = total.or(job.expected_size) {
                b.set_total(total);
            }
            b.set_position(start);
        }
        self.receive(job, t, resp, total, attempt).await
    }

    /// Where the body starts (0, or the resume offset), or the outcome of a failed status.
    fn check_status(
        &self,
        job: &Job<'_>,
        t: &mut Transfer<'_>,
        resp: &reqwest::Response,
        attempt: u32,
    ) -> Result<Result<u64, Attempt>, FetchError> {
        let status = resp.status().as_u16();
        let start = t.hash.len();
        match status {
            200 => {
                if start > 0 {
                    t.reset(job)?; // The server ignored Range: start over.
                }
                Ok(Ok(0))
            }
            206 if start > 0 => {
                let ok = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&format!("bytes {start}-")));
                if ok {
                    return Ok(Ok(start));
                }
                t.reset(job)?;
                Ok(Err(Attempt::Retry(
                    "server answered Range with an unexpected Content-Range".into(),
                )))
            }
            408 | 429 | 500..=599 => Ok(Err(Attempt::Retry(format!("HTTP {status}")))),
            416 if start > 0 => {
                t.reset(job)?;
                Ok(Err(Attempt::Retry("HTTP 416 on resume".into())))
            }
            _ => Err(FetchError::Status {
                url: job.shown.to_string(),
                status,
                hint: status_hint(status),
                attempts: attempt,
            }),
        }
    }

    /// Streams the body into the sink, hashing it, under the guard.
    async fn receive(
        &self,
        job: &Job<'_>,
        t: &mut Transfer<'_>,
        mut resp: reqwest::Response,
        total: Option<u64>,
        attempt: u32,
    ) -> Result<Attempt, FetchError> {
        loop {
            let chunk = match t.guard.wait(resp.chunk()).await {
                Err(hit) => return slow_or_final(job, hit, t.hash.len(), attempt),
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    if !job.resume {
                        t.reset(job)?;
                    }
                    return Ok(Attempt::Retry(format!(
                        "body interrupted after {} bytes: {}",
                        t.hash.len(),
                        describe_reqwest(&e)
                    )));
                }
            };
            if t.hash.len() + chunk.len() as u64 > job.limit {
                return Err(FetchError::TooLarge {
                    url: job.shown.to_string(),
                    limit: job.limit,
                });
            }
            t.sink.put(&chunk).map_err(|e| write_err(job, e))?;
            t.hash.update(&chunk);
            if let Some(b) = job.bar {
                b.inc(chunk.len() as u64);
            }
            if let Err(hit) = t.guard.received(chunk.len() as u64) {
                return slow_or_final(job, hit, t.hash.len(), attempt);
            }
        }
        finish_body(job, t.hash.len(), total)
    }
}

/// A slow window is retried (resuming); a missed deadline ends the artifact.
fn slow_or_final(job: &Job<'_>, hit: LimitHit, received: u64, attempts: u32) -> Result<Attempt, FetchError> {
    if hit.is_final() {
        return Err(limit_err(job, hit, received, attempts));
    }
    Ok(Attempt::Slow(hit))
}

/// Checks the announced total length against the expected size and the limit.
fn check_length(job: &Job<'_>, total: Option<u64>) -> Result<Option<u64>, FetchError> {
    if let (Some(t), Some(e)) = (total, job.expected_size) {
        if t != e {
            return Err(FetchError::Size {
                url: job.shown.to_string(),
                expected: e,
                actual: t,
            });
        }
    }
    if total.is_some_and(|t| t > job.limit) {
        return Err(FetchError::TooLarge {
            url: job.shown.to_string(),
            limit: job.limit,
        });
    }
    Ok(total)
}

/// After the body: a short one is retried, a wrong size is final.
fn finish_body(job: &Job<'_>, got: u64, total: Option<u64>) -> Result<Attempt, FetchError> {
    if let Some(t) = total {
        if got < t {
            return Ok(Attempt::Retry(format!("body truncated at {got} of {t} bytes")));
        }
    }
    if let Some(e) = job.expected_size {
        if got != e {
            return Err(FetchError::Size {
                url: job.shown.to_string(),
                expected: e,
                actual: got,
            });
        }
    }
    Ok(Attempt::Done)
}

fn status_hint(status: u16) -> &'static str {
    match status {
        404 => " Not Found: is the version right, and does the mirror hold this file?",
        401 | 403 => " (access denied)",
        _ => "",
    }
}

pub(super) fn describe_reqwest(e: &reqwest::Error) -> String {
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
