//! Cosign signatures made without cosign, in its exact format: an ECDSA P-256 key pair
//! from openssl (`ecparam -name prime256v1 -genkey`, `pkey -pubout`, as `cosign
//! generate-key-pair` writes PKIX PEM public keys), a simple-signing payload signed with
//! `openssl dgst -sha256 -sign` (ASN.1 DER, base64 in the layer annotation), laid out as an
//! OCI image layout (config + one simple-signing layer) and pushed with skopeo under
//! cosign's tag `sha256-<hex>.sig` in the image's repository.

use super::registry::{run, Registry};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

pub struct CosignKey {
    _dir: tempfile::TempDir,
    pub private: PathBuf,
    pub public: PathBuf,
}

impl CosignKey {
    pub fn generate() -> CosignKey {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("cosign.key.pem");
        let public = dir.path().join("cosign.pub");
        run(Command::new("openssl")
            .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
            .arg(&private));
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public));
        CosignKey {
            _dir: dir,
            private,
            public,
        }
    }

    /// The DER signature (base64) of `payload`, SHA-256 ECDSA.
    pub fn sign(&self, payload: &[u8]) -> String {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), payload).unwrap();
        let o = run(Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.private)
            .arg(f.path()));
        base64::engine::general_purpose::STANDARD.encode(o.stdout)
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// cosign's simple-signing payload for `docker_reference` at `manifest_digest`.
pub fn payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let d = digest(bytes);
    let p = layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    (d, bytes.len())
}

/// Writes the signature manifest of `payload` (signed by `key`) as OCI layout `layout`, ref
/// `sig`; returns the manifest's digest.
pub fn signature_layout(layout: &Path, payload: &[u8], key: &CosignKey) -> String {
    let annotations = serde_json::json!({SIGNATURE_ANNOTATION: key.sign(payload)});
    annotated_layout(layout, payload, annotations)
}

/// Writes a signature manifest with one payload layer annotated with `annotations`.
pub fn annotated_layout(layout: &Path, payload: &[u8], annotations: serde_json::Value) -> String {
    let (pd, pn) = put_blob(layout, payload);
    let config = serde_json::json!({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": [pd]},
        "history": [{"created": "0001-01-01T00:00:00Z"}]
    });
    let (cd, cn) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": cn, "digest": cd},
        "layers": [{"mediaType": SIMPLESIGNING, "size": pn, "digest": pd,
            "annotations": annotations}]
    });
    let (md, mn) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
            "annotations": {"org.opencontainers.image.ref.name": "sig"}}]
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    md
}

/// Signs image `upstream` (e.g. `registry.k8s.io/pause:3.10.1`, pushed at `digest`) with
/// `key`, its payload naming `signed_digest`, and pushes the signature to `reg` under
/// cosign's tag. Returns the signature tag.
pub fn push_signature(reg: &Registry, upstream: &str, digest: &str, signed_digest: &str, key: &CosignKey) -> String {
    let m = super::images::MirrorRef::parse(upstream);
    let dir = tempfile::tempdir().unwrap();
    signature_layout(dir.path(), &payload(&m.repo, signed_digest), key);
    let tag = format!("{}.sig", digest.replace(':', "-"));
    reg.push_layout(dir.path(), "sig", &format!("{}:{tag}", m.repo));
    tag
}
