//! Cosign image signatures in cosign's storage format (docs/upstream-facts.md,
//! "Cosign image signatures"): the signature of image digest `sha256:<hex>` is the OCI
//! manifest tagged `sha256-<hex>.sig` in the image's repository; each of its layers of
//! media type [`SIMPLESIGNING`] is a simple-signing JSON payload naming the image digest,
//! with the base64 ECDSA P-256 / SHA-256 (ASN.1 DER) signature over the payload blob in
//! the layer annotation [`SIGNATURE_ANNOTATION`]. Key-based checks are here; keyless layers
//! also carry a certificate and a Rekor bundle, checked in `images::keyless`.

use crate::digest::Sha256;
use serde::Deserialize;
use std::collections::BTreeMap;
use x509_parser::asn1_rs::BitString;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// Media type of a simple-signing payload layer (cosign's `types.SimpleSigningMediaType`).
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature (cosign's `static.SignatureAnnotationKey`).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Payloads larger than this are refused (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD: u64 = 1 << 20;

/// The tag cosign stores the signature of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Sha256) -> String {
    format!("sha256-{}.sig", digest.hex())
}

#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    #[error("not a PEM public key: {0}")]
    Pem(String),
    #[error("PEM block is {0:?}, not \"PUBLIC KEY\" (cosign public keys are PKIX PEM)")]
    Label(String),
    #[error("not an ECDSA P-256 public key (cosign key-based verification here supports ECDSA P-256 only)")]
    NotP256,
    #[error("signature manifest: {0}")]
    Manifest(String),
    #[error("payload is not a simple-signing JSON document: {0}")]
    Payload(#[source] serde_json::Error),
    #[error("payload type is {0:?}, not \"cosign container image signature\"")]
    PayloadType(String),
    #[error("payload signs {found}, not this image")]
    OtherDigest { found: String },
}

/// A cosign public key: PKIX `PUBLIC KEY` PEM of an ECDSA P-256 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki_der: Vec<u8>,
}

impl PublicKey {
    pub fn from_pem(text: &[u8]) -> Result<PublicKey, CosignError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(text).map_err(|e| CosignError::Pem(e.to_string()))?;
        if pem.label != "PUBLIC KEY" {
            return Err(CosignError::Label(pem.label));
        }
        let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents).map_err(|e| CosignError::Pem(e.to_string()))?;
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
            return Err(CosignError::NotP256);
        }
        Ok(PublicKey {
            spki_der: pem.contents.clone(),
        })
    }

    /// The sha256 of the key's DER SubjectPublicKeyInfo (names the key in messages and locks).
    pub fn fingerprint(&self) -> Sha256 {
        Sha256::of(&self.spki_der)
    }

    /// Does `signature` (ASN.1 DER ECDSA) sign `payload` with this key (SHA-256)?
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(&self.spki_der) else {
            return false;
        };
        let alg = AlgorithmIdentifier::new(OID_SIG_ECDSA_WITH_SHA256, None);
        x509_parser::verify::verify_signature(&spki, &alg, &BitString::new(0, signature), payload).is_ok()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSigManifest {
    schema_version: Option<u32>,
    config: super::Descriptor,
    #[serde(default)]
    layers: Vec<RawLayer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLayer {
    #[serde(flatten)]
    desc: super::Descriptor,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// One signed payload layer of a signature manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLayer {
    pub digest: Sha256,
    pub size: u64,
    /// The decoded signature, or why it could not be decoded.
    pub signature: Result<Vec<u8>, String>,
    /// Keyless material: the leaf certificate (PEM) and Rekor bundle (JSON) annotations.
    pub certificate: Option<String>,
    pub bundle: Option<String>,
}

/// A signature manifest: every blob it names (config and layers), and its signed layers.
#[derive(Debug, Clone)]
pub struct SigManifest {
    pub blobs: Vec<(Sha256, u64)>,
    pub signed: Vec<SignedLayer>,
}

/// Parses a signature manifest (an OCI image manifest whose layers are payloads).
pub fn parse_sig_manifest(bytes: &[u8]) -> Result<SigManifest, CosignError> {
    use base64::Engine as _;
    let raw: RawSigManifest = serde_json::from_slice(bytes).map_err(|e| CosignError::Manifest(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(CosignError::Manifest(format!("schemaVersion {:?}", raw.schema_version)));
    }
    let check =
        |d: &super::Descriptor, what: &str| super::checked(d, what).map_err(|e| CosignError::Manifest(e.to_string()));
    let mut blobs = vec![check(&raw.config, "config")?];
    let mut signed = Vec::new();
    for l in &raw.layers {
        let (digest, size) = check(&l.desc, "layer")?;
        blobs.push((digest, size));
        if l.desc.media_type != SIMPLESIGNING {
            continue;
        }
        let signature = match l.annotations.get(SIGNATURE_ANNOTATION) {
            None => Err(format!("no {SIGNATURE_ANNOTATION} annotation")),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| format!("signature annotation is not base64: {e}")),
        };
        let annotation = |k: &str| l.annotations.get(k).cloned();
        signed.push(SignedLayer {
            digest,
            size,
            signature,
            certificate: annotation(super::keyless::CERTIFICATE_ANNOTATION),
            bundle: annotation(super::keyless::BUNDLE_ANNOTATION),
        });
    }
    if signed.is_empty() {
        return Err(CosignError::Manifest(format!("no layer of media type {SIMPLESIGNING}")));
    }
    Ok(SigManifest { blobs, signed })
}

#[derive(Debug, Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Debug, Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: PayloadImage,
}

#[derive(Debug, Deserialize)]
struct PayloadImage {
    /// sigstore's `payload.SimpleContainerImage` tag; Go's JSON decoding ignores case, so the
    /// spec's `Docker-manifest-digest` spelling is accepted too.
    #[serde(rename = "docker-manifest-digest", alias = "Docker-manifest-digest")]
    digest: String,
}

/// The payload type cosign writes in `critical.type`.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Checks a simple-signing payload: cosign's type, and `critical.image.docker-manifest-digest`
/// equal to `image` (cosign's `SimpleClaimVerifier`). `critical.identity.docker-reference` is
/// ignored, as the spec says (a signature stays valid for a mirrored copy).
pub fn check_payload(payload: &[u8], image: &Sha256) -> Result<(), CosignError> {
    let p: Payload = serde_json::from_slice(payload).map_err(CosignError::Payload)?;
    if p.critical.kind != PAYLOAD_TYPE {
        return Err(CosignError::PayloadType(p.critical.kind));
    }
    if p.critical.image.digest != image.oci() {
        return Err(CosignError::OtherDigest {
            found: p.critical.image.digest,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "cosign_tests.rs"]
mod tests;
