//! Verify while bytes pass. A [`VerifyingWriter`] hashes every byte written through it,
//! refuses bytes beyond the expected size, and at the end of the stream
//! ([`VerifyingWriter::finish`]) checks size and digest. Only then does it hand out a
//! [`Verified`]: the proof the cache asks for before it commits anything.

use crate::digest::{Hashing, Sha256};
use std::io::{self, Write};
use std::path::PathBuf;

/// What a download must turn out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expected {
    /// The digest a lock, checksum file, pin or manifest vouches for; `None` trusts the
    /// first download (its digest is the one that gets locked).
    pub sha256: Option<Sha256>,
    /// The size, when known (lock, descriptor).
    pub size: Option<u64>,
}

impl Expected {
    pub fn new(sha256: Option<Sha256>, size: Option<u64>) -> Expected {
        Expected { sha256, size }
    }
}

/// Why a finished stream does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("sha256 mismatch: expected {expected}, got {actual} ({size} bytes received)")]
    Digest {
        expected: Sha256,
        actual: Sha256,
        size: u64,
    },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
}

/// A write past the most bytes the stream may have; carried inside the `io::Error` the
/// writer returns (see [`Oversize::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{attempted} bytes would exceed the {limit}-byte limit")]
pub struct Oversize {
    pub limit: u64,
    pub attempted: u64,
}

impl Oversize {
    /// The [`Oversize`] inside an error returned by a [`VerifyingWriter`], if that is what it is.
    pub fn of(e: &io::Error) -> Option<Oversize> {
        e.get_ref().and_then(|i| i.downcast_ref::<Oversize>()).copied()
    }
}

/// Where verified bytes go: memory, or a temp file in the cache.
pub trait Sink: Write {
    /// Throws away what it holds, for a server that sends the whole body again.
    fn restart(&mut self) -> io::Result<()>;
    /// Where the bytes are, for messages.
    fn path(&self) -> PathBuf;
}

impl Sink for Vec<u8> {
    fn restart(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("(memory)")
    }
}

/// Hashes what is written through it into `inner`; see the module docs.
pub struct VerifyingWriter<W> {
    inner: W,
    hash: Hashing,
    expected: Expected,
    limit: u64,
}

impl<W: Sink> VerifyingWriter<W> {
    /// Takes at most the expected size, or any number of bytes when it is unknown.
    pub fn new(inner: W, expected: Expected) -> Self {
        VerifyingWriter {
            inner,
            hash: Hashing::new(),
            expected,
            limit: expected.size.unwrap_or(u64::MAX),
        }
    }

    /// The same writer taking at most `limit` bytes (when less than the expected size).
    pub fn at_most(mut self, limit: u64) -> Self {
        self.limit = self.limit.min(limit);
        self
    }

    /// Bytes received so far: where a resumed transfer continues.
    pub fn received(&self) -> u64 {
        self.hash.len()
    }

    pub fn expected(&self) -> Expected {
        self.expected
    }

    /// Most bytes accepted.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Where the bytes go, for messages.
    pub fn path(&self) -> PathBuf {
        self.inner.path()
    }

    /// Drops everything received so far (the server sent the whole body again).
    pub fn restart(&mut self) -> io::Result<()> {
        self.inner.restart()?;
        self.hash = Hashing::new();
        Ok(())
    }

    /// The end of the stream: the bytes verify, or the sink is dropped.
    pub fn finish(mut self) -> Result<Verified<W>, Mismatch> {
        // A flush error surfaces when the cache syncs the file; nothing is buffered here.
        let _ = self.inner.flush();
        let (actual, size) = self.hash.finish();
        if let Some(expected) = self.expected.size.filter(|e| *e != size) {
            return Err(Mismatch::Size { expected, actual: size });
        }
        if let Some(expected) = self.expected.sha256.filter(|e| *e != actual) {
            return Err(Mismatch::Digest { expected, actual, size });
        }
        Ok(Verified {
            inner: self.inner,
            sha256: actual,
            size,
        })
    }
}

impl<W: Write> Write for VerifyingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let attempted = self.hash.len().saturating_add(buf.len() as u64);
        if attempted > self.limit {
            return Err(io::Error::other(Oversize {
                limit: self.limit,
                attempted,
            }));
        }
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Content whose size and digest were checked at the end of its stream. Only
/// [`VerifyingWriter::finish`] makes one.
#[derive(Debug)]
pub struct Verified<W> {
    inner: W,
    sha256: Sha256,
    size: u64,
}

impl<W> Verified<W> {
    pub fn sha256(&self) -> Sha256 {
        self.sha256
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(expected: Expected, parts: &[&[u8]]) -> Result<Verified<Vec<u8>>, Mismatch> {
        let mut w = VerifyingWriter::new(Vec::new(), expected);
        for p in parts {
            w.write_all(p).unwrap();
        }
        w.finish()
    }

    #[test]
    fn the_right_bytes_verify_in_any_chunking() {
        let d = Sha256::of(b"hello world");
        let v = write(Expected::new(Some(d), Some(11)), &[b"hello", b" ", b"world"]).unwrap();
        assert_eq!((v.sha256(), v.size()), (d, 11));
        assert_eq!(v.into_inner(), b"hello world");
    }

    #[test]
    fn a_wrong_digest_fails_at_the_end_naming_both() {
        let want = Sha256::of(b"hello world");
        let e = write(Expected::new(Some(want), None), &[b"hello w0rld"]).unwrap_err();
        assert_eq!(
            e,
            Mismatch::Digest {
                expected: want,
                actual: Sha256::of(b"hello w0rld"),
                size: 11
            }
        );
        assert!(e.to_string().contains(&want.hex()));
    }

    #[test]
    fn short_and_long_streams_fail_on_size() {
        let e = write(Expected::new(None, Some(5)), &[b"abc"]).unwrap_err();
        assert_eq!(e, Mismatch::Size { expected: 5, actual: 3 });
        let mut w = VerifyingWriter::new(Vec::new(), Expected::new(None, Some(3)));
        let err = w.write_all(b"abcd").unwrap_err();
        assert_eq!(Oversize::of(&err), Some(Oversize { limit: 3, attempted: 4 }));
        let mut w = VerifyingWriter::new(Vec::new(), Expected::default()).at_most(2);
        assert!(Oversize::of(&w.write_all(b"abc").unwrap_err()).is_some());
    }

    #[test]
    fn a_restart_forgets_what_came_before() {
        let d = Sha256::of(b"xyz");
        let mut w = VerifyingWriter::new(Vec::new(), Expected::new(Some(d), None));
        w.write_all(b"garbage").unwrap();
        w.restart().unwrap();
        assert_eq!(w.received(), 0);
        w.write_all(b"xyz").unwrap();
        assert_eq!(w.finish().unwrap().into_inner(), b"xyz");
    }

    #[test]
    fn without_an_expectation_the_first_download_is_trusted() {
        let v = write(Expected::default(), &[b"tofu"]).unwrap();
        assert_eq!(v.sha256(), Sha256::of(b"tofu"));
    }
}
