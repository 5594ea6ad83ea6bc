//! The content-addressed download cache: `blobs/sha256/<hex>`, filled only through a temp
//! file in `tmp/` that is renamed into place once its digest is known to be right.
//!
//! Opening the cache locks it for the build (see [`super::sweep`]) and deletes temp files
//! that killed builds left behind. Entries are trusted by name and size when used; one whose
//! content turns out not to match its name ([`Cache::check`]) is evicted and fetched again.

use super::sweep::{self, DirLock, Swept};
use super::verify::{Sink, Verified};
use crate::digest::Sha256;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path} is not a directory: pass --cache DIR naming a directory, or move the file away")]
    NotADir { path: PathBuf },
    #[error("cannot create cache directory {path}: {source} ({hint}; or pass --cache DIR)")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("cache directory {path} is not writable: {source} ({hint}; or pass --cache DIR)")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("cache {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A cache entry whose content does not match its name; it has been evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub path: PathBuf,
    pub expected: Sha256,
    /// `sha256 <hex> (<n> bytes)`, or why it could not be read.
    pub found: String,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cache entry {} does not match its name: expected sha256 {}, found {}; evicted, it will be fetched again",
            self.path.display(),
            self.expected,
            self.found
        )
    }
}

/// A temp file in the cache's `tmp/`, written through a
/// [`VerifyingWriter`](super::verify::VerifyingWriter); deleted when dropped unless committed.
#[derive(Debug)]
pub struct TempBlob(tempfile::NamedTempFile);

impl TempBlob {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Write for TempBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Sink for TempBlob {
    fn restart(&mut self) -> io::Result<()> {
        let f = self.0.as_file_mut();
        f.set_len(0)?;
        f.rewind().map(|_| ())
    }
    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    lock: Arc<(DirLock, Swept)>,
}

impl Cache {
    /// `$XDG_CACHE_HOME/kbundle`, else `$HOME/.cache/kbundle`, else a temp dir.
    pub fn default_root() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("kbundle");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(h).join(".cache").join("kbundle");
        }
        std::env::temp_dir().join("kbundle-cache")
    }

    /// Creates (if needed), checks and locks the cache, and sweeps stale temp files.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        let started = std::time::SystemTime::now();
        for d in [
            root,
            &root.join("blobs"),
            &root.join("blobs").join("sha256"),
            &root.join("tmp"),
        ] {
            if d.exists() && !d.is_dir() {
                return Err(CacheError::NotADir { path: d.to_path_buf() });
            }
        }
        for d in [root.join("blobs").join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(|source| CacheError::Create {
                path: d.clone(),
                hint: crate::fsutil::write_hint(&source),
                source,
            })?;
        }
        let tmp = root.join("tmp");
        tempfile::tempfile_in(&tmp).map_err(|source| CacheError::NotWritable {
            path: tmp.clone(),
            hint: crate::fsutil::write_hint(&source),
            source,
        })?;
        let lock = sweep::claim(root, &tmp, sweep::is_cache_temp, started);
        Ok(Cache {
            root: root.to_path_buf(),
            lock: Arc::new(lock),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stale temp files this cache deleted when it was opened.
    pub fn swept(&self) -> &Swept {
        &self.lock.1
    }

    pub fn blob_path(&self, d: &Sha256) -> PathBuf {
        self.root.join("blobs").join("sha256").join(d.hex())
    }

    /// Size of the cached blob, if present.
    pub fn size_of(&self, d: &Sha256) -> Option<u64> {
        std::fs::metadata(self.blob_path(d))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// A fresh temp file in the cache (same filesystem as the blobs, so rename is atomic),
    /// named `download-XXXXXX.part`. It is deleted when dropped unless committed.
    pub fn temp(&self) -> Result<TempBlob, CacheError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("download-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map(TempBlob)
            .map_err(|source| CacheError::Io {
                path: dir,
                what: "creating a temp file",
                source,
            })
    }

    /// Moves a temp file whose stream verified into place, named by the digest it was
    /// verified to have.
    pub fn commit(&self, blob: Verified<TempBlob>) -> Result<PathBuf, CacheError> {
        let dest = self.blob_path(&blob.sha256());
        let TempBlob(tmp) = blob.into_inner();
        tmp.as_file().sync_all().map_err(|source| CacheError::Io {
            path: tmp.path().to_path_buf(),
            what: "syncing a download",
            source,
        })?;
        tmp.persist(&dest).map_err(|e| CacheError::Io {
            path: dest.clone(),
            what: "moving a download into place",
            source: e.error,
        })?;
        Ok(dest)
    }

    /// Hashes the cached blob `d`: `None` if it matches its name (or is absent); otherwise it
    /// is evicted and returned as [`Corrupt`] for a warning.
    pub fn check(&self, d: &Sha256) -> Option<Corrupt> {
        let path = self.blob_path(d);
        let found = match crate::digest::hash_file(&path) {
            Ok((actual, _)) if actual == *d => return None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Ok((actual, n)) => format!("sha256 {actual} ({n} bytes)"),
            Err(e) => format!("an unreadable file ({e})"),
        };
        self.evict(d);
        Some(Corrupt {
            path,
            expected: *d,
            found,
        })
    }

    /// Drops a blob found to be corrupt.
    pub fn evict(&self, d: &Sha256) {
        let _ = std::fs::remove_file(self.blob_path(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_is_found_and_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let good = Sha256::of(b"content");
        std::fs::write(c.blob_path(&good), b"content").unwrap();
        assert_eq!(c.check(&good), None);
        std::fs::write(c.blob_path(&good), b"contenu").unwrap();
        let bad = c.check(&good).unwrap();
        assert_eq!(bad.found, format!("sha256 {} (7 bytes)", Sha256::of(b"contenu")));
        let msg = bad.to_string();
        assert!(msg.contains(&good.hex()) && msg.contains(&c.blob_path(&good).display().to_string()));
        assert!(c.size_of(&good).is_none(), "evicted");
    }

    #[test]
    fn a_file_in_place_of_the_cache_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cache");
        std::fs::write(&f, b"").unwrap();
        let e = Cache::open(&f).unwrap_err().to_string();
        assert!(
            e.contains(&f.display().to_string()) && e.contains("not a directory"),
            "{e}"
        );
        let e = Cache::open(&f.join("sub")).unwrap_err().to_string();
        assert!(
            e.contains("cannot create cache directory") && e.contains("--cache DIR"),
            "{e}"
        );
    }
}
