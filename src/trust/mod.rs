//! Trust on the node: which keys a node trusts (`/etc/kbundle/trusted-keys/*.pub`, plus
//! `--trusted-key` and cluster.toml's `[trust]`), the decision whether a bundle may be used
//! (a signature by a trusted key is required as soon as any key is trusted), and the
//! highest serial installed per key (downgrade and replay protection).
//!
//! The signatures themselves are checked by [`crate::bundle::signature`]; this module only
//! decides what to do with the result.

pub mod store;

use crate::bundle::meta::BundleJson;
use crate::bundle::signature::{self, KeyId, SigError, TrustedKey};
use crate::host::{Host, HostError};
use std::path::{Path, PathBuf};
pub use store::{Serials, KEYS_DIR, SERIALS};

/// What the user said about trust on one command line.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--trusted-key FILE` (repeatable): trusted in addition to the node's store.
    pub trusted_keys: Vec<PathBuf>,
    /// `--allow-unsigned`: accept a bundle without a signature by a trusted key (warned).
    pub allow_unsigned: bool,
    /// `--allow-downgrade`: accept a serial lower than the one recorded (warned).
    pub allow_downgrade: bool,
}

/// Why a bundle was accepted without a signature by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsigned {
    /// No key is trusted here, so no signature is required.
    NoKeys,
    /// `--allow-unsigned`, and what the signature check found.
    Allowed { reason: String },
}

/// The trust verdict a checked bundle carries: only a [`Policy`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Signed {
        key_id: KeyId,
        serial: u64,
        comment: String,
    },
    Unsigned(Unsigned),
}

impl Verdict {
    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Signed { key_id, serial, .. } => format!("signed by trusted key id {key_id} (serial {serial})"),
            Verdict::Unsigned(Unsigned::NoKeys) => {
                format!("signature not required: no trusted keys (none in {KEYS_DIR}, no --trusted-key)")
            }
            Verdict::Unsigned(Unsigned::Allowed { reason }) => format!("accepted by --allow-unsigned: {reason}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "{what} refused: signed by {found}, but the trusted keys are {trusted}; nothing was changed on this node \
         (sign it with a trusted key, trust its key with `kbundle key trust`, or pass --allow-unsigned): {source}"
    )]
    Refused {
        what: String,
        found: String,
        trusted: String,
        #[source]
        source: SigError,
    },
    #[error("{what} refused: the signature by trusted key id {found} is not for this bundle: {detail}")]
    Comment { what: String, found: KeyId, detail: String },
    #[error(
        "{what} refused as a downgrade or replay: serial {serial} signed by key id {key_id} is lower than serial \
         {recorded} already installed from that key ({SERIALS}); pass --allow-downgrade to accept it"
    )]
    Downgrade {
        what: String,
        key_id: KeyId,
        serial: u64,
        recorded: u64,
    },
    #[error("trusted key {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: SigError,
    },
    #[error("{}: {detail}", path.display())]
    Serials { path: PathBuf, detail: String },
    #[error("no trusted key with id {id} in {KEYS_DIR} (trusted: {trusted})")]
    NotTrusted { id: String, trusted: String },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// `WARNING: …` on stderr: every use of an opt-out says so.
pub fn warn(msg: &str) {
    eprintln!("WARNING: {msg}");
}

/// Who signed, for a refusal: `unsigned`, or the key id found.
fn found(e: &SigError) -> String {
    match e {
        SigError::Missing { .. } => "unsigned".into(),
        SigError::Untrusted { found, .. } | SigError::Bad { found, .. } => format!("key id {found}"),
        _ => "an unreadable signature".into(),
    }
}

/// The decision for one command: which keys are trusted, what is allowed, the serials seen.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    keys: Vec<TrustedKey>,
    allow_unsigned: bool,
    allow_downgrade: bool,
    serials: Serials,
}

impl Policy {
    /// No trusted keys, nothing recorded: bundles are accepted unsigned (tests, and the
    /// build's own check of a delta's base bundle).
    pub fn no_keys() -> Policy {
        Policy::default()
    }

    pub fn new(keys: Vec<TrustedKey>, flags: &Flags, serials: Serials) -> Policy {
        let mut uniq: Vec<TrustedKey> = Vec::new();
        for k in keys {
            if !uniq.iter().any(|u| u.id == k.id) {
                uniq.push(k);
            }
        }
        if flags.allow_unsigned {
            warn("--allow-unsigned: a bundle without a valid signature by a trusted key will be accepted");
        }
        if flags.allow_downgrade {
            warn("--allow-downgrade: a bundle older than one already installed (lower serial) will be accepted");
        }
        Policy {
            keys: uniq,
            allow_unsigned: flags.allow_unsigned,
            allow_downgrade: flags.allow_downgrade,
            serials,
        }
    }

    /// On a node: its store, `--trusted-key`, `extra` (cluster.toml's `[trust]`), its serials.
    pub fn for_node(host: &Host, flags: &Flags, extra: Vec<TrustedKey>) -> Result<Policy, TrustError> {
        let mut keys = store::load_keys(host)?;
        keys.extend(read_key_files(&flags.trusted_keys)?);
        keys.extend(extra);
        Ok(Policy::new(keys, flags, store::load_serials(host)?))
    }

    /// On the admin machine (kickstart, iso): only `--trusted-key`; its own store is not the
    /// nodes'.
    pub fn for_build(flags: &Flags) -> Result<Policy, TrustError> {
        Ok(Policy::new(
            read_key_files(&flags.trusted_keys)?,
            flags,
            Serials::default(),
        ))
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// A signature is required as soon as any key is trusted.
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// `<archive>.minisig`, checked before the archive's content is read.
    pub fn check_archive(&self, archive: &Path) -> Result<(), TrustError> {
        if !self.required() {
            return Ok(());
        }
        match signature::verify_archive_sig(archive, &self.keys) {
            Ok(_) => Ok(()),
            Err(e) => self.refuse_or_allow(&archive.display().to_string(), e).map(|_| ()),
        }
    }

    /// The verdict on a checked bundle from its `bundle.json` bytes and `bundle.json.minisig`.
    pub fn judge(
        &self,
        what: &str,
        json: &[u8],
        sig: Option<&[u8]>,
        bundle: &BundleJson,
    ) -> Result<Verdict, TrustError> {
        if !self.required() {
            return Ok(Verdict::Unsigned(Unsigned::NoKeys));
        }
        let signed = match signature::verify_json_sig(json, sig, &self.keys) {
            Ok(s) => s,
            Err(e) => return self.refuse_or_allow(what, e),
        };
        let comment = |detail: String| TrustError::Comment {
            what: what.to_string(),
            found: signed.key_id,
            detail,
        };
        signature::comment_matches(&signed, bundle).map_err(comment)?;
        let serial = signed.fields().map_err(|e| comment(e.to_string()))?.serial;
        self.check_serial(what, signed.key_id, serial)?;
        Ok(Verdict::Signed {
            key_id: signed.key_id,
            serial,
            comment: signed.comment,
        })
    }

    fn refuse_or_allow(&self, what: &str, e: SigError) -> Result<Verdict, TrustError> {
        if self.allow_unsigned {
            warn(&format!("{what}: {e}; accepted because of --allow-unsigned"));
            return Ok(Verdict::Unsigned(Unsigned::Allowed { reason: e.to_string() }));
        }
        Err(TrustError::Refused {
            what: what.to_string(),
            found: found(&e),
            trusted: signature::ids(&self.keys),
            source: e,
        })
    }

    /// Lower than the highest serial recorded for the key: refused unless `--allow-downgrade`.
    fn check_serial(&self, what: &str, key_id: KeyId, serial: u64) -> Result<(), TrustError> {
        let Some(recorded) = self.serials.get(key_id).filter(|r| serial < *r) else {
            return Ok(());
        };
        if self.allow_downgrade {
            warn(&format!(
                "{what}: serial {serial} is lower than serial {recorded} installed from key id {key_id}; accepted because of --allow-downgrade"
            ));
            return Ok(());
        }
        Err(TrustError::Downgrade {
            what: what.to_string(),
            key_id,
            serial,
            recorded,
        })
    }
}

/// `--trusted-key` files; a bad one is an error naming it.
pub fn read_key_files(paths: &[PathBuf]) -> Result<Vec<TrustedKey>, TrustError> {
    paths
        .iter()
        .map(|p| {
            signature::read_public_key(p).map_err(|source| TrustError::KeyFile {
                path: p.clone(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
