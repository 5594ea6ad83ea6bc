//! What can go wrong with one download, typed: the final errors ([`FetchError`]) and the
//! transient failures the engine retries ([`Transient`]), whose last one a final error keeps.

use super::cache::CacheError;
use super::limits::LimitHit;
use super::verify::Mismatch;
use std::path::PathBuf;

/// Any error, boxed, for a failure an [`Origin`](super::engine::Origin) reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Each `what` names the download as messages show it: `GET https://… (via …)` for a file,
/// `image …: blob sha256:… from …` for an image blob.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what}: HTTP {status}{hint} (after {attempts} attempt(s))")]
    Status {
        what: String,
        status: u16,
        hint: &'static str,
        attempts: u32,
    },
    #[error("{what}: {last} (after {attempts} attempt(s))")]
    Transport {
        what: String,
        attempts: u32,
        /// The failure of the last attempt.
        #[source]
        last: Transient,
    },
    #[error("{what}: {mismatch}")]
    Mismatch {
        what: String,
        #[source]
        mismatch: Mismatch,
    },
    #[error("{what}: {hit} ({received} bytes received, after {attempts} attempt(s))")]
    Limit {
        what: String,
        hit: LimitHit,
        received: u64,
        attempts: u32,
    },
    #[error("{what}: body exceeds the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: writing the download to {path}: {source}")]
    Write {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {context}: {source}")]
    Origin {
        what: String,
        context: &'static str,
        #[source]
        source: BoxError,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A failure worth another attempt.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("{}", describe_reqwest(.0))]
    Request(#[source] reqwest::Error),
    #[error("body interrupted after {received} bytes: {}", describe_reqwest(.source))]
    Interrupted {
        received: u64,
        #[source]
        source: reqwest::Error,
    },
    #[error("body truncated at {got} of {total} bytes")]
    Truncated { got: u64, total: u64 },
    #[error("server answered Range bytes={asked}- with Content-Range {answer:?}")]
    ContentRange { asked: u64, answer: String },
    #[error("HTTP 416 on resume")]
    RangeRefused,
    #[error("HTTP 401: authenticating again")]
    Reauthenticate,
    #[error("{context}: {source}")]
    Origin {
        context: &'static str,
        #[source]
        source: BoxError,
    },
}

/// Why an [`Origin`](super::engine::Origin) could not make a request, and whether trying
/// again may help (a network error while authenticating) or not (credentials refused).
#[derive(Debug)]
pub struct OriginError {
    pub context: &'static str,
    pub retry: bool,
    pub source: BoxError,
}

impl OriginError {
    pub fn new(context: &'static str, retry: bool, source: impl Into<BoxError>) -> OriginError {
        OriginError {
            context,
            retry,
            source: source.into(),
        }
    }
}

/// A reqwest error with its causes: `timed out: …`, `connection failed: …`.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
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
