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
