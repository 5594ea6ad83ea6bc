//! The content-addressed download cache: `blobs/sha256/<hex>`, filled only through a temp
//! file that is renamed into place once its digest is known to be right.

use crate::digest::Sha256;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cache {path}: {source}")]
pub struct CacheError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
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

    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for d in [root.join("blobs").join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(|source| CacheError {
                path: d.clone(),
                source,
            })?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
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

    /// A fresh temp file in the cache (same filesystem as the blobs, so rename is atomic).
    /// It is deleted when dropped unless committed.
    pub fn temp(&self) -> Result<tempfile::NamedTempFile, CacheError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("download-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(|source| CacheError { path: dir, source })
    }

    /// Moves a fully written and verified temp file into place as the blob `d`.
    pub fn commit(&self, tmp: tempfile::NamedTempFile, d: &Sha256) -> Result<PathBuf, CacheError> {
        let dest = self.blob_path(d);
        tmp.as_file().sync_all().map_err(|source| CacheError {
            path: tmp.path().to_path_buf(),
            source,
        })?;
        tmp.persist(&dest).map_err(|e| CacheError {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(dest)
    }

    /// Drops a blob found to be corrupt.
    pub fn evict(&self, d: &Sha256) {
        let _ = std::fs::remove_file(self.blob_path(d));
    }
}
