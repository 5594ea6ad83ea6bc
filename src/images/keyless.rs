//! Cosign keyless signature checks (docs/upstream-facts.md, "Cosign keyless signatures"),
//! for cosign's classic format: a signature layer carries the Fulcio leaf certificate, and a
//! Rekor bundle whose SignedEntryTimestamp (SET) the transparency log signed. Checked
//! against a sigstore `trusted_root.json`: the leaf chains to one of its certificate
//! authorities, names the expected identity (SAN) and OIDC issuer, was valid when Rekor
//! integrated the entry, and the SET verifies with the log key whose id the bundle names.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use x509_parser::asn1_rs::BitString;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// Layer annotation with the PEM leaf certificate (cosign's `static.CertificateAnnotationKey`).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation with the Rekor bundle JSON (cosign's `static.BundleAnnotationKey`).
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Fulcio's OIDC issuer extension, DER UTF8String (docs/upstream-facts.md, "Cosign keyless
/// signatures").
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// Fulcio's deprecated OIDC issuer extension, the raw string bytes.
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Longest chain walked from the leaf to a trust anchor.
const MAX_DEPTH: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum KeylessError {
    #[error("trusted root: {0}")]
    TrustedRoot(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("certificate does not chain to a certificate authority of the trusted root")]
    Untrusted,
    #[error("certificate identity is {found:?}, expected {expected:?}")]
    Identity { expected: String, found: Vec<String> },
    #[error("certificate OIDC issuer is {found:?}, expected {expected:?}")]
    Issuer { expected: String, found: Option<String> },
    #[error("Rekor bundle: {0}")]
    Bundle(String),
    #[error("Rekor bundle names log {0}, which the trusted root does not hold")]
    UnknownLog(String),
    #[error("Rekor bundle's SignedEntryTimestamp does not verify with log {0}'s key")]
    BadSet(String),
    #[error("Rekor integrated the entry at {time} (unix), outside certificate {subject}'s validity {from}..{to}")]
    OutsideValidity {
        time: i64,
        subject: String,
        from: i64,
        to: i64,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    #[serde(default)]
    tlogs: Vec<RawTlog>,
    #[serde(default)]
    certificate_authorities: Vec<RawCa>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTlog {
    public_key: RawBytes,
    log_id: RawKeyId,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKeyId {
    key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    cert_chain: RawChain,
}

#[derive(Debug, Deserialize)]
struct RawChain {
    certificates: Vec<RawBytes>,
}

/// A sigstore trusted root: CA certificates (DER) and transparency log keys by log id.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    ca_certs: Vec<Vec<u8>>,
    /// The last certificate of each CA's chain: its trust anchor (self-signed root or not).
    anchors: Vec<Vec<u8>>,
    /// Lowercase hex log id (as the bundle's `logID` spells it) to DER SubjectPublicKeyInfo.
    tlogs: BTreeMap<String, Vec<u8>>,
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("{what} is not base64: {e}"))
}

impl TrustedRoot {
    pub fn from_json(bytes: &[u8]) -> Result<TrustedRoot, KeylessError> {
        let err = KeylessError::TrustedRoot;
        let raw: RawRoot = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
        let (mut ca_certs, mut anchors) = (Vec::new(), Vec::new());
        for ca in &raw.certificate_authorities {
            let mut last = None;
            for c in &ca.cert_chain.certificates {
                let der = b64(&c.raw_bytes, "certificate rawBytes").map_err(err)?;
                X509Certificate::from_der(&der).map_err(|e| err(format!("CA certificate: {e}")))?;
                last = Some(der.clone());
                ca_certs.push(der);
            }
            anchors.extend(last);
        }
        let mut tlogs = BTreeMap::new();
        for t in &raw.tlogs {
            let id = b64(&t.log_id.key_id, "logId.keyId").map_err(err)?;
            let key = b64(&t.public_key.raw_bytes, "publicKey rawBytes").map_err(err)?;
            SubjectPublicKeyInfo::from_der(&key).map_err(|e| err(format!("tlog key: {e}")))?;
            tlogs.insert(hex(&id), key);
        }
        if ca_certs.is_empty() {
            return Err(err("no certificateAuthorities".into()));
        }
        Ok(TrustedRoot {
            ca_certs,
            anchors,
            tlogs,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, KeylessError> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| KeylessError::Certificate(e.to_string()))?;
    Ok(c)
}

/// Parses the leaf certificate annotation (PEM).
pub fn leaf_from_pem(pem: &str) -> Result<Vec<u8>, KeylessError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| KeylessError::Certificate(format!("not PEM: {e}")))?;
    if p.label != "CERTIFICATE" {
        return Err(KeylessError::Certificate(format!(
            "PEM block is {:?}, not CERTIFICATE",
            p.label
        )));
    }
    parse_cert(&p.contents)?;
    Ok(p.contents)
}

fn is_ca(c: &X509Certificate) -> bool {
    matches!(c.basic_constraints(), Ok(Some(b)) if b.value.ca)
}

/// The trusted CA certificate that issued `child`: same subject as its issuer, a CA by its
/// basic constraints, and its key verifies `child`'s signature.
fn issuer_of<'a>(root: &'a TrustedRoot, child: &X509Certificate) -> Option<(&'a [u8], X509Certificate<'a>)> {
    root.ca_certs.iter().find_map(|d| {
        let ca = parse_cert(d).ok()?;
        let ok = ca.subject() == child.issuer() && is_ca(&ca) && child.verify_signature(Some(ca.public_key())).is_ok();
        ok.then_some((d.as_slice(), ca))
    })
}

/// Walks from `leaf` to a trust anchor (the last certificate of a CA's chain), every link
/// issued by a CA certificate of the trusted root; returns the issuing chain in order.
/// The leaf must allow code signing (cosign's `TrustedCert` asks for that key usage).
pub fn verify_chain<'a>(
    root: &'a TrustedRoot,
    leaf: &X509Certificate,
) -> Result<Vec<X509Certificate<'a>>, KeylessError> {
    if !matches!(leaf.extended_key_usage(), Ok(Some(e)) if e.value.code_signing) {
        return Err(KeylessError::Certificate("no code signing extended key usage".into()));
    }
    let mut chain: Vec<X509Certificate<'a>> = Vec::new();
    for _ in 0..MAX_DEPTH {
        let child = chain.last().unwrap_or(leaf);
        let Some((der, ca)) = issuer_of(root, child) else {
            return Err(KeylessError::Untrusted);
        };
        chain.push(ca);
        if root.anchors.iter().any(|a| a == der) {
            return Ok(chain);
        }
    }
    Err(KeylessError::Untrusted)
}

/// The leaf's SAN emails and URIs.
pub fn identities(leaf: &X509Certificate) -> Vec<String> {
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some(s.to_string()),
            _ => None,
        })
        .collect()
}

/// The leaf's OIDC issuer: the v2 extension (DER UTF8String), else the v1 one (raw bytes).
pub fn oidc_issuer(leaf: &X509Certificate) -> Option<String> {
    let ext = |oid: &str| {
        leaf.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .map(|e| e.value)
    };
    if let Some(v) = ext(OID_ISSUER_V2) {
        let (_, s) = x509_parser::asn1_rs::Utf8String::from_der(v).ok()?;
        return Some(s.string());
    }
    ext(OID_ISSUER_V1).and_then(|v| String::from_utf8(v.to_vec()).ok())
}

/// Checks the leaf's identity and issuer against the policy's.
pub fn check_identity(leaf: &X509Certificate, identity: &str, issuer: &str) -> Result<(), KeylessError> {
    let found = identities(leaf);
    if !found.iter().any(|i| i == identity) {
        return Err(KeylessError::Identity {
            expected: identity.into(),
            found,
        });
    }
    let found = oidc_issuer(leaf);
    if found.as_deref() != Some(issuer) {
        return Err(KeylessError::Issuer {
            expected: issuer.into(),
            found,
        });
    }
    Ok(())
}

#[path = "keyless_set.rs"]
mod set;
pub use set::{check_body, check_validity, verify_set, RekorBundle, RekorPayload};

/// Does `signature` (ASN.1 DER ECDSA, SHA-256) sign `data` with `spki`'s key?
fn ecdsa_verifies(spki: &SubjectPublicKeyInfo, data: &[u8], signature: &[u8]) -> bool {
    let alg = AlgorithmIdentifier::new(OID_SIG_ECDSA_WITH_SHA256, None);
    x509_parser::verify::verify_signature(spki, &alg, &BitString::new(0, signature), data).is_ok()
}

/// Does the payload signature verify with the leaf's public key (ECDSA P-256 / SHA-256)?
pub fn leaf_verifies(leaf: &X509Certificate, payload: &[u8], signature: &[u8]) -> bool {
    ecdsa_verifies(leaf.public_key(), payload, signature)
}

/// What a keyless policy expects of a signature.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub root: &'a TrustedRoot,
    pub identity: &'a str,
    pub issuer: &'a str,
}

/// One signature layer's keyless material, from its annotations.
#[derive(Debug, Clone)]
pub struct Material<'a> {
    pub payload: &'a [u8],
    pub signature: &'a [u8],
    /// `dev.sigstore.cosign/certificate` (PEM).
    pub certificate: &'a str,
    /// `dev.sigstore.cosign/bundle` (JSON).
    pub bundle: &'a str,
}

/// Every keyless check of one layer: the leaf chains to the trusted root, names the expected
/// identity and issuer, signed the payload; the SET verifies, the log entry is about this
/// signature, and Rekor integrated it while the chain was valid. The payload's digest rule
/// (`cosign::check_payload`) is the caller's, as for key-based signatures.
pub fn verify(m: &Material, x: &Expected) -> Result<(), KeylessError> {
    let der = leaf_from_pem(m.certificate)?;
    let leaf = parse_cert(&der)?;
    let chain = verify_chain(x.root, &leaf)?;
    check_identity(&leaf, x.identity, x.issuer)?;
    if !leaf_verifies(&leaf, m.payload, m.signature) {
        return Err(KeylessError::Certificate(
            "the signature does not verify with the certificate's key".into(),
        ));
    }
    let bundle = RekorBundle::from_json(m.bundle)?;
    verify_set(x.root, &bundle)?;
    check_body(&bundle, m.payload, m.signature, &der)?;
    check_validity(&leaf, &chain, bundle.payload.integrated_time)
}

#[cfg(test)]
#[path = "keyless_tests.rs"]
mod tests;
