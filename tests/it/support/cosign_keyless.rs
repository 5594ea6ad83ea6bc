//! Keyless cosign signatures made without cosign, Fulcio or Rekor, in cosign's classic
//! format: an openssl root CA stands in for Fulcio (leaf with an email SAN, the Fulcio
//! issuer extension 1.3.6.1.4.1.57264.1.8 as a DER UTF8String, code signing usage), an
//! openssl P-256 key for Rekor (a SignedEntryTimestamp over the canonical JSON of the
//! bundle payload, whose body is a hashedrekord entry), and a trusted_root.json naming both.
//! The layer carries the signature, certificate and bundle annotations.

use super::cosign::{annotated_layout, payload, SIGNATURE_ANNOTATION};
use super::registry::{run, Registry};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    run(Command::new("openssl").current_dir(dir).args(args)).stdout
}

pub struct KeylessSigner {
    dir: tempfile::TempDir,
    pub identity: String,
    pub issuer: String,
    /// The trusted_root.json naming the CA and the log key.
    pub trusted_root: PathBuf,
    log_id: String,
}

impl KeylessSigner {
    pub fn generate(identity: &str, issuer: &str) -> KeylessSigner {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for k in ["ca.key", "leaf.key", "rekor.key"] {
            openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", k]);
        }
        let ca = [
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=fulcio",
            "-days",
            "2",
        ];
        openssl(
            d,
            &[
                &ca[..],
                &["-addext", "basicConstraints=critical,CA:TRUE", "-out", "ca.pem"],
            ]
            .concat(),
        );
        let ext = format!(
            "subjectAltName=email:{identity}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=codeSigning\n1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{issuer}\n"
        );
        std::fs::write(d.join("leaf.ext"), ext).unwrap();
        openssl(
            d,
            &[
                "req", "-new", "-key", "leaf.key", "-subj", "/CN=leaf", "-out", "leaf.csr",
            ],
        );
        let x = [
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
        ];
        openssl(
            d,
            &[&x[..], &["-days", "1", "-extfile", "leaf.ext", "-out", "leaf.pem"]].concat(),
        );
        let ca_der = openssl(d, &["x509", "-in", "ca.pem", "-outform", "DER"]);
        let spki = openssl(d, &["pkey", "-in", "rekor.key", "-pubout", "-outform", "DER"]);
        let id = Sha256::digest(&spki);
        let root = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": "https://rekor.example", "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": b64(&spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256"},
                "logId": {"keyId": b64(&id)}}],
            "certificateAuthorities": [{"uri": "https://fulcio.example",
                "certChain": {"certificates": [{"rawBytes": b64(&ca_der)}]}}],
        });
        let trusted_root = d.join("trusted_root.json");
        std::fs::write(&trusted_root, root.to_string()).unwrap();
        KeylessSigner {
            log_id: hex::encode(id),
            identity: identity.into(),
            issuer: issuer.into(),
            trusted_root,
            dir,
        }
    }

    fn sign(&self, key: &str, data: &[u8]) -> Vec<u8> {
        let f = self.dir.path().join("tosign");
        std::fs::write(&f, data).unwrap();
        openssl(self.dir.path(), &["dgst", "-sha256", "-sign", key, f.to_str().unwrap()])
    }

    /// The layer annotations of a keyless signature of `payload`, logged now.
    pub fn annotations(&self, payload: &[u8]) -> serde_json::Value {
        let sig = self.sign("leaf.key", payload);
        let cert = std::fs::read_to_string(self.dir.path().join("leaf.pem")).unwrap();
        let entry = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
            "signature": {"content": b64(&sig), "publicKey": {"content": b64(cert.as_bytes())}}}});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        // Canonical JSON (RFC 8785): sorted keys, no spaces (serde_json's map is sorted).
        let body = serde_json::json!({"body": b64(entry.to_string().as_bytes()),
            "integratedTime": now.as_secs(), "logIndex": 1, "logID": self.log_id});
        let set = self.sign("rekor.key", body.to_string().as_bytes());
        let bundle = serde_json::json!({"SignedEntryTimestamp": b64(&set), "Payload": body});
        serde_json::json!({
            SIGNATURE_ANNOTATION: b64(&sig),
            "dev.sigstore.cosign/certificate": cert,
            "dev.sigstore.cosign/chain": std::fs::read_to_string(self.dir.path().join("ca.pem")).unwrap(),
            "dev.sigstore.cosign/bundle": bundle.to_string(),
        })
    }
}

/// Signs image `upstream` (pushed at `digest`) keyless and pushes the signature to `reg`
/// under cosign's tag. Returns the signature tag.
pub fn push_keyless_signature(reg: &Registry, upstream: &str, digest: &str, signer: &KeylessSigner) -> String {
    let m = super::images::MirrorRef::parse(upstream);
    let dir = tempfile::tempdir().unwrap();
    let p = payload(&m.repo, digest);
    annotated_layout(dir.path(), &p, signer.annotations(&p));
    let tag = format!("{}.sig", digest.replace(':', "-"));
    reg.push_layout(dir.path(), "sig", &format!("{}:{tag}", m.repo));
    tag
}
