//! The Rekor bundle of a keyless signature layer and its SignedEntryTimestamp
//! (docs/upstream-facts.md, "Cosign keyless signatures").

use super::{ecdsa_verifies, KeylessError, TrustedRoot};
use base64::Engine as _;
use serde::Deserialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// cosign's `bundle.RekorBundle` as JSON (Go field names, no tags).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RekorBundle {
    /// base64 ECDSA signature by the log over the canonical payload.
    pub signed_entry_timestamp: String,
    pub payload: RekorPayload,
}

/// cosign's `bundle.RekorPayload`; `body` is the base64 log entry.
#[derive(Debug, Clone, Deserialize)]
pub struct RekorPayload {
    pub body: String,
    #[serde(rename = "integratedTime")]
    pub integrated_time: i64,
    #[serde(rename = "logIndex")]
    pub log_index: i64,
    #[serde(rename = "logID")]
    pub log_id: String,
}

impl RekorBundle {
    pub fn from_json(text: &str) -> Result<RekorBundle, KeylessError> {
        serde_json::from_str(text).map_err(|e| KeylessError::Bundle(e.to_string()))
    }

    /// The payload as RFC 8785 canonical JSON. Its values are two ASCII strings (base64,
    /// hex) and two integers, for which serde_json's compact output with sorted keys (its
    /// map is a BTreeMap) is the canonical form.
    pub fn canonical_payload(&self) -> Vec<u8> {
        let p = &self.payload;
        let v = serde_json::json!({
            "body": p.body,
            "integratedTime": p.integrated_time,
            "logIndex": p.log_index,
            "logID": p.log_id,
        });
        v.to_string().into_bytes()
    }
}

/// Verifies the bundle's SET with the trusted root's log key named by the bundle's log id.
pub fn verify_set(root: &TrustedRoot, bundle: &RekorBundle) -> Result<(), KeylessError> {
    let id = bundle.payload.log_id.to_ascii_lowercase();
    let Some(key) = root.tlogs.get(&id) else {
        return Err(KeylessError::UnknownLog(id));
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(bundle.signed_entry_timestamp.trim())
        .map_err(|e| KeylessError::Bundle(format!("SignedEntryTimestamp is not base64: {e}")))?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(key).map_err(|e| KeylessError::TrustedRoot(e.to_string()))?;
    if !ecdsa_verifies(&spki, &bundle.canonical_payload(), &sig) {
        return Err(KeylessError::BadSet(id));
    }
    Ok(())
}

/// Checks that `time` (unix seconds, Rekor's integratedTime) lies within the validity of the
/// leaf and of every certificate of its issuing chain (cosign's `CheckExpiry`).
pub fn check_validity(leaf: &X509Certificate, chain: &[X509Certificate], time: i64) -> Result<(), KeylessError> {
    for c in std::iter::once(leaf).chain(chain) {
        let (from, to) = (c.validity().not_before.timestamp(), c.validity().not_after.timestamp());
        if time < from || time > to {
            return Err(KeylessError::OutsideValidity {
                time,
                subject: c.subject().to_string(),
                from,
                to,
            });
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Entry {
    kind: String,
    spec: HashedRekord,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HashedRekord {
    signature: EntrySignature,
    data: EntryData,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntrySignature {
    content: String,
    public_key: EntryContent,
}

#[derive(Debug, Deserialize)]
struct EntryContent {
    content: String,
}

#[derive(Debug, Deserialize)]
struct EntryData {
    hash: EntryHash,
}

#[derive(Debug, Deserialize)]
struct EntryHash {
    algorithm: String,
    value: String,
}

/// Checks that the bundle's log entry (a `hashedrekord`) is about this signature: its
/// signature is `signature`, its certificate is `leaf_der` (PEM in base64), and its hash is
/// the sha256 of `payload` (cosign's `compareSigs`, `comparePublicKey`, `bundleHash`).
pub fn check_body(bundle: &RekorBundle, payload: &[u8], signature: &[u8], leaf_der: &[u8]) -> Result<(), KeylessError> {
    let fail = |m: &str| KeylessError::Bundle(format!("log entry: {m}"));
    let std = base64::engine::general_purpose::STANDARD;
    let body = std
        .decode(bundle.payload.body.trim())
        .map_err(|_| fail("body is not base64"))?;
    let e: Entry = serde_json::from_slice(&body).map_err(|e| fail(&e.to_string()))?;
    if e.kind != "hashedrekord" {
        return Err(fail(&format!("kind {:?}, not hashedrekord", e.kind)));
    }
    if std.decode(e.spec.signature.content.trim()).ok().as_deref() != Some(signature) {
        return Err(fail("its signature is not this layer's"));
    }
    let pem = std
        .decode(e.spec.signature.public_key.content.trim())
        .map_err(|_| fail("key is not base64"))?;
    let cert = x509_parser::pem::parse_x509_pem(&pem).map(|(_, p)| p.contents).ok();
    if cert.as_deref() != Some(leaf_der) {
        return Err(fail("its certificate is not this layer's"));
    }
    let h = &e.spec.data.hash;
    if h.algorithm != "sha256" || h.value != crate::digest::Sha256::of(payload).hex() {
        return Err(fail(&format!("hash {}:{} is not the payload's", h.algorithm, h.value)));
    }
    Ok(())
}
