//! The lockfile: every file (and later image) of a bundle pinned by URL, size and sha256.
//! Sorted and stable, so it diffs cleanly and two resolutions of the same upstream match.

use crate::digest::Sha256;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const LOCK_SCHEMA: u32 = 1;

/// Where a locked digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DigestSource {
    /// Upstream's published checksum file.
    ChecksumFile,
    /// A `[sha256]` pin in the manifest.
    ManifestPin,
    /// Upstream publishes no checksum: the digest of the first download (trust on first use).
    FirstDownload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub path: String,
    pub url: String,
    pub size: u64,
    pub sha256: Sha256,
    pub source: DigestSource,
    /// Fingerprint of the keyring key that signed the checksum file the digest came from
    /// (runc's clear-signed `runc.sha256sum`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "signed-by")]
    pub signed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub schema: u32,
    pub name: String,
    pub kubernetes: String,
    #[serde(default, rename = "file")]
    pub files: Vec<LockedFile>,
    #[serde(default, rename = "image")]
    pub images: Vec<crate::images::LockedImage>,
    /// The manifest's `[[image-signatures]]` policies with their keys' fingerprints.
    #[serde(default, rename = "image-signature", skip_serializing_if = "Vec::is_empty")]
    pub image_signatures: Vec<crate::images::policy::LockedPolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Read(#[from] crate::fsutil::TextError),
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot write lockfile {path}: {source} ({hint}; --lockfile PATH writes it elsewhere)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
}

impl Lock {
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        let src = crate::fsutil::read_text(path, "lockfile", "run `kbundle lock` to write it again")?;
        Self::parse(path, &src)
    }

    pub fn parse(path: &Path, src: &str) -> Result<Lock, LockError> {
        let invalid = |offset: usize, message: String| {
            let (line, column) = crate::manifest::line_col(src, offset);
            LockError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let lock: Lock = toml::from_str(src)
            .map_err(|e| invalid(e.span().map_or(0, |s| s.start), e.message().trim().to_string()))?;
        if lock.schema != LOCK_SCHEMA {
            return Err(invalid(
                0,
                format!(
                    "unsupported lockfile schema {}: this kbundle reads {LOCK_SCHEMA}",
                    lock.schema
                ),
            ));
        }
        for f in &lock.files {
            crate::bundle::meta::check_rel_path(&f.path)
                .map_err(|r| invalid(0, format!("unsafe path {:?} in lockfile: {r}", f.path)))?;
        }
        Ok(lock)
    }

    /// Canonical text: a header comment, then entries sorted by path.
    pub fn render(&self) -> String {
        let mut l = self.clone();
        l.files.sort_by(|a, b| a.path.cmp(&b.path));
        l.images.sort_by(|a, b| a.reference.cmp(&b.reference));
        let body = toml::to_string(&l).unwrap_or_default();
        format!(
            "# kbundle lockfile for {}: every file pinned by URL, size and sha256, every image by digest.\n# Written by `kbundle lock`; `kbundle build --locked` refuses to build if upstream no longer matches.\n\n{body}",
            self.name
        )
    }

    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        crate::fsutil::write_atomic(path, self.render().as_bytes()).map_err(|source| LockError::Write {
            path: path.to_path_buf(),
            hint: crate::fsutil::write_hint(&source),
            source,
        })
    }

    /// One entry by path. Linear: for lookups in a loop use [`Lock::index`].
    pub fn file(&self, path: &str) -> Option<&LockedFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// One image by reference. Linear: for lookups in a loop use [`Lock::index`].
    pub fn image(&self, reference: &str) -> Option<&crate::images::LockedImage> {
        self.images.iter().find(|i| i.reference == reference)
    }

    /// Maps from path and reference to entries, for lookups in O(1).
    pub fn index(&self) -> LockIndex<'_> {
        LockIndex {
            // Reversed, so that a repeated key keeps its first entry, as `file` and `image` do.
            files: self.files.iter().rev().map(|f| (f.path.as_str(), f)).collect(),
            images: self.images.iter().rev().map(|i| (i.reference.as_str(), i)).collect(),
        }
    }
}

/// A lock's entries keyed by file path and image reference.
#[derive(Debug, Clone)]
pub struct LockIndex<'a> {
    pub files: HashMap<&'a str, &'a LockedFile>,
    pub images: HashMap<&'a str, &'a crate::images::LockedImage>,
}

impl<'a> LockIndex<'a> {
    pub fn file(&self, path: &str) -> Option<&'a LockedFile> {
        self.files.get(path).copied()
    }

    pub fn image(&self, reference: &str) -> Option<&'a crate::images::LockedImage> {
        self.images.get(reference).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::policy::LockedPolicy;

    #[test]
    fn image_signature_policies_round_trip_and_are_omitted_when_absent() {
        let mut lock = Lock {
            schema: LOCK_SCHEMA,
            name: "b".into(),
            kubernetes: "v1.34.3".into(),
            files: Vec::new(),
            images: Vec::new(),
            image_signatures: Vec::new(),
        };
        assert!(!lock.render().contains("image-signature"));
        lock.image_signatures.push(LockedPolicy {
            images: vec!["registry.k8s.io/*".into()],
            key: "keys/cosign.pub".into(),
            key_sha256: Sha256::of(b"k"),
            identity: None,
            issuer: None,
        });
        let text = lock.render();
        assert!(
            text.contains("[[image-signature]]") && !text.contains("issuer"),
            "{text}"
        );
        assert_eq!(Lock::parse(Path::new("l.lock"), &text).unwrap(), lock);
        lock.image_signatures.push(LockedPolicy {
            images: vec!["ghcr.io/*".into()],
            key: "trusted_root.json".into(),
            key_sha256: Sha256::of(b"r"),
            identity: Some("signer@example.com".into()),
            issuer: Some("https://issuer.example".into()),
        });
        let text = lock.render();
        assert_eq!(Lock::parse(Path::new("l.lock"), &text).unwrap(), lock);
    }
}
