//! OpenPGP clear-signed checksum files (RFC 4880 §7), verified against a pinned keyring.
//!
//! runc publishes `runc.sha256sum` clear-signed by a maintainer key listed in the
//! `runc.keyring` of its repository (docs/upstream-facts.md, "runc release signatures").
//! kbundle pins that keyring here; a manifest may name another (`[upstream-keys] runc`), for
//! a mirror that re-signs or for tests. Only the signed text is returned: lines outside it
//! never reach the checksum parser.

use super::Component;
use crate::manifest::Manifest;
use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::{Fingerprint, KeyDetails, KeyId};
use std::path::{Path, PathBuf};

/// runc's maintainer keyring as published at its v1.3.4 tag (opencontainers/runc
/// `runc.keyring`): docs/upstream-facts.md, "runc release signatures".
const RUNC_KEYRING: &str = include_str!("keys/runc.keyring");

/// Where kbundle's pinned runc keyring came from, for messages and the lock.
pub const RUNC_KEYRING_ORIGIN: &str = "kbundle's pinned runc.keyring (opencontainers/runc v1.3.4)";

const BEGIN_KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const END_KEY: &str = "-----END PGP PUBLIC KEY BLOCK-----";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read keyring {}: {source}", path.display())]
    ReadKeyring {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring {origin}: {reason}")]
    BadKeyring { origin: String, reason: String },
    #[error("keyring {origin}: key block {index}: {source}")]
    BadKey {
        origin: String,
        index: usize,
        #[source]
        source: pgp::errors::Error,
    },
    #[error("not an OpenPGP clear-signed message (upstream publishes this file signed by a key of {origin}: {trusted}): {source}")]
    NotClearSigned {
        origin: String,
        trusted: String,
        #[source]
        source: pgp::errors::Error,
    },
    #[error("kbundle pins no keyring for {component}")]
    NoKeyring { component: Component },
    #[error("the message carries no signature")]
    NoSignature,
    #[error("signed by key {found}, which is not in the keyring {origin} (its keys: {trusted})")]
    UnknownKey {
        found: String,
        origin: String,
        trusted: String,
    },
    #[error("signature by key {found} (of {primary}) does not verify: the signed text or the signature was altered (keyring {origin}, its keys: {trusted})")]
    BadSignature {
        found: String,
        primary: String,
        origin: String,
        trusted: String,
    },
}

/// The key that made a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Fingerprint of the keyring entry (the primary key), upper-case hex.
    pub primary: String,
    /// Fingerprint of the key that signed (the primary key or one of its subkeys).
    pub key: String,
}

/// A verified clear-signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed text, dash-escaping undone, with `\n` line ends.
    pub text: String,
    pub signer: Signer,
}

/// The public keys a signature must come from.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Where the keys came from: kbundle's pin or a manifest's file.
    pub origin: String,
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// runc's maintainer keyring as pinned in kbundle.
    pub fn runc_pinned() -> Result<Keyring, SignatureError> {
        Keyring::parse(RUNC_KEYRING_ORIGIN, RUNC_KEYRING)
    }

    /// The keyring of a file (ASCII-armored public key blocks; text between them is ignored,
    /// as in runc's `runc.keyring`).
    pub fn load(path: &Path) -> Result<Keyring, SignatureError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignatureError::ReadKeyring {
            path: path.to_path_buf(),
            source,
        })?;
        Keyring::parse(&path.display().to_string(), &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<Keyring, SignatureError> {
        let mut keys = Vec::new();
        for (i, block) in armored_blocks(text).enumerate() {
            let bad = |source| SignatureError::BadKey {
                origin: origin.to_string(),
                index: i + 1,
                source,
            };
            // One armored block may hold several keys (`gpg --export --armor A B`).
            let (many, _) = SignedPublicKey::from_string_many(block).map_err(bad)?;
            for k in many {
                keys.push(k.map_err(bad)?);
            }
        }
        if keys.is_empty() {
            return Err(SignatureError::BadKeyring {
                origin: origin.to_string(),
                reason: format!("holds no {BEGIN_KEY}"),
            });
        }
        Ok(Keyring {
            origin: origin.to_string(),
            keys,
        })
    }

    /// The primary-key fingerprints, upper-case hex, comma-separated.
    pub fn fingerprints(&self) -> String {
        let f: Vec<String> = self.keys.iter().map(|k| hex_fpr(&k.fingerprint())).collect();
        f.join(", ")
    }

    /// Verifies a clear-signed message: at least one signature, of the text type, made by a
    /// key of this keyring (a primary key, or a subkey bound to it), must verify.
    pub fn verify(&self, message: &str) -> Result<Verified, SignatureError> {
        let (msg, _) =
            CleartextSignedMessage::from_string(message).map_err(|source| SignatureError::NotClearSigned {
                origin: self.origin.clone(),
                trusted: self.fingerprints(),
                source,
            })?;
        let signed = msg.signed_text();
        let mut first_err = None;
        for sig in msg.signatures() {
            match self.check(sig, signed.as_bytes()) {
                Ok(signer) => {
                    let text = signed.replace("\r\n", "\n");
                    return Ok(Verified { text, signer });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(SignatureError::NoSignature))
    }

    /// Checks one signature against the keyring.
    fn check(&self, sig: &Signature, data: &[u8]) -> Result<Signer, SignatureError> {
        let found = issuer(sig);
        let Some((primary, key)) = self.keys.iter().find_map(|k| signing_key(k, sig)) else {
            return Err(SignatureError::UnknownKey {
                found,
                origin: self.origin.clone(),
                trusted: self.fingerprints(),
            });
        };
        let text_sig = sig.typ() == Some(SignatureType::Text);
        let good = match key {
            Key::Primary(k) => sig.verify(k, data).is_ok(),
            Key::Sub(k) => sig.verify(k, data).is_ok(),
        };
        let primary = hex_fpr(&primary.fingerprint());
        if !(text_sig && good) {
            return Err(SignatureError::BadSignature {
                found,
                primary,
                origin: self.origin.clone(),
                trusted: self.fingerprints(),
            });
        }
        Ok(Signer {
            primary,
            key: key.fingerprint(),
        })
    }
}

/// The keyring `component`'s clear-signed checksum file must be signed by: the manifest's
/// `[upstream-keys]` file (relative to the manifest), else kbundle's pin. Only runc publishes
/// one.
pub fn keyring_for(component: Component, m: &Manifest) -> Result<Keyring, SignatureError> {
    let custom = match component {
        Component::Runc => m.upstream_keys.runc.as_ref(),
        other => return Err(SignatureError::NoKeyring { component: other }),
    };
    match custom {
        Some(p) => Keyring::load(&m.path.parent().unwrap_or(Path::new("")).join(p)),
        None => Keyring::runc_pinned(),
    }
}

enum Key<'a> {
    Primary(&'a pgp::packet::PublicKey),
    Sub(&'a pgp::packet::PublicSubkey),
}

impl Key<'_> {
    fn fingerprint(&self) -> String {
        match self {
            Key::Primary(k) => hex_fpr(&k.fingerprint()),
            Key::Sub(k) => hex_fpr(&k.fingerprint()),
        }
    }
}

/// The key of `k` that `sig` names as its issuer: the primary key, or a subkey whose binding
/// to the primary key verifies.
fn signing_key<'a>(k: &'a SignedPublicKey, sig: &Signature) -> Option<(&'a SignedPublicKey, Key<'a>)> {
    if names(sig, &k.primary_key.fingerprint(), &k.primary_key.legacy_key_id()) {
        return Some((k, Key::Primary(&k.primary_key)));
    }
    k.public_subkeys
        .iter()
        .filter(|s| names(sig, &s.key.fingerprint(), &s.key.legacy_key_id()))
        .find(|s| s.verify_bindings(&k.primary_key).is_ok())
        .map(|s| (k, Key::Sub(&s.key)))
}

/// Does `sig` name this key (by issuer fingerprint, else by key id)?
fn names(sig: &Signature, fpr: &Fingerprint, id: &KeyId) -> bool {
    let fprs = sig.issuer_fingerprint();
    if !fprs.is_empty() {
        return fprs.contains(&fpr);
    }
    sig.issuer_key_id().contains(&id)
}

/// The issuer a signature names, for messages: its fingerprint, else its key id.
fn issuer(sig: &Signature) -> String {
    if let Some(f) = sig.issuer_fingerprint().first() {
        return hex_fpr(f);
    }
    match sig.issuer_key_id().first() {
        Some(id) => format!("id {}", hex::encode_upper(id.as_ref())),
        None => "(the signature names no issuer)".into(),
    }
}

fn hex_fpr(f: &Fingerprint) -> String {
    format!("{f:X}")
}

/// Each ASCII-armored public key block of `text`, BEGIN and END lines included.
fn armored_blocks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find(BEGIN_KEY)?;
        let len = rest[start..].find(END_KEY)? + END_KEY.len();
        let block = &rest[start..start + len];
        rest = &rest[start + len..];
        Some(block)
    })
}

#[cfg(test)]
#[path = "clearsign_tests.rs"]
mod tests;
