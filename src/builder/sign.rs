//! `build --sign`: `bundle.json.minisig` packed into the bundle, `<archive>.minisig` beside it.
//!
//! minisign signatures carry a random nonce, so a signed archive's bytes differ from one
//! signing to the next; everything else in it (bundle.json included) stays reproducible.

use super::BuildError;
use crate::bundle::keys::Signer;
use crate::bundle::meta::{BundleJson, BUNDLE_JSON, BUNDLE_JSON_SIG};
use crate::bundle::pack::{PackEntry, Source};
use crate::bundle::signature::{archive_sig_path, TrustedComment};
use crate::digest::Sha256;
use std::path::Path;

/// The key a build signs with, and the serial to put in the trusted comment.
#[derive(Debug, Clone)]
pub struct Signing {
    pub signer: Signer,
    /// Default: the build time.
    pub serial: Option<u64>,
}

/// The build time: `SOURCE_DATE_EPOCH` if set, else now (seconds since the epoch).
pub fn built_time() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
}

pub fn comment(b: &BundleJson, s: &Signing) -> TrustedComment {
    let built = built_time();
    TrustedComment {
        name: b.name.to_string(),
        kubernetes: b.kubernetes.to_string(),
        serial: s.serial.unwrap_or(built),
        built,
    }
}

fn sign_error(what: String) -> impl FnOnce(crate::bundle::keys::KeyError) -> BuildError {
    move |source| BuildError::Sign { what, source }
}

/// Signs the packed bundle.json and adds `bundle.json.minisig` to the pack list.
pub fn add_json_sig(entries: &mut Vec<PackEntry>, c: &TrustedComment, s: &Signing) -> Result<(), BuildError> {
    let Some(Source::Bytes(bj)) = entries.iter().find(|e| e.path == BUNDLE_JSON).map(|e| &e.source) else {
        return Err(BuildError::Sign {
            what: BUNDLE_JSON.into(),
            source: crate::bundle::keys::KeyError::Io {
                path: BUNDLE_JSON.into(),
                source: std::io::Error::other("bundle.json is not in the pack list"),
            },
        });
    };
    let sig = s.signer.sign(&bj[..], c).map_err(sign_error(BUNDLE_JSON.into()))?;
    entries.push(PackEntry {
        path: BUNDLE_JSON_SIG.into(),
        size: sig.len() as u64,
        sha256: Sha256::of(&sig),
        executable: false,
        source: Source::Bytes(sig),
    });
    Ok(())
}

/// Writes `<archive>.minisig` (temp file, then rename).
pub fn sign_archive(archive: &Path, c: &TrustedComment, s: &Signing) -> Result<(), BuildError> {
    let what = archive.display().to_string();
    let f = std::fs::File::open(archive).map_err(|source| BuildError::Sign {
        what: what.clone(),
        source: crate::bundle::keys::KeyError::Io {
            path: archive.to_path_buf(),
            source,
        },
    })?;
    let sig = s
        .signer
        .sign(std::io::BufReader::new(f), c)
        .map_err(sign_error(what.clone()))?;
    let path = archive_sig_path(archive);
    crate::fsutil::write_atomic(&path, &sig).map_err(|source| BuildError::Sign {
        what,
        source: crate::bundle::keys::KeyError::Io { path, source },
    })
}

/// An unsigned build removes a `<archive>.minisig` an earlier build left: it would not match.
pub fn remove_stale(archive: &Path) -> Result<(), BuildError> {
    let path = archive_sig_path(archive);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BuildError::Sign {
            what: archive.display().to_string(),
            source: crate::bundle::keys::KeyError::Io { path, source: e },
        }),
        _ => Ok(()),
    }
}
