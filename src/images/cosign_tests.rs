//! Fixtures made with openssl the way cosign signs: an ECDSA P-256 key
//! (`openssl ecparam -name prime256v1 -genkey`, `openssl pkey -pubout`), a simple-signing
//! payload, `openssl dgst -sha256 -sign` (ASN.1 DER), base64.

use super::*;
use crate::images::policy::glob;

const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEiKTTKLus7h/1meok2r764RRvMnIQ
qBe2xiKBTbJjYr0aJov+zp284R6tmOg0MEk7mfTtdbX2jrXa0aTIcAC1Hw==
-----END PUBLIC KEY-----
";
const OTHER_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEiGYWmUXwnbi6iEfdA91oKSmSiYq6
oXsZHx2Ts+Hltd2vmOvxr46qkOyeOVXKQ/A64ET0WPWqjxFqIgE47Q7Q0w==
-----END PUBLIC KEY-----
";
const ED25519_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAwACvSLKtdgkyZjriY9QsFPI9PoG0x/2a3U4/+5dE/Is=
-----END PUBLIC KEY-----
";
/// Signs image digest sha256("x").
const PAYLOAD: &str = r#"{"critical":{"identity":{"docker-reference":"registry.k8s.io/pause"},"image":{"docker-manifest-digest":"sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"},"type":"cosign container image signature"},"optional":null}"#;
const SIG: &str = "MEUCIQDi5cRiok91sjAZBWatmKE8t8UoNi3kdXRjgwdPeVZcsQIgabOmhQwbHRtrTi7mBmb+zCp7BiVhGNpcTltzWhodTPo=";

fn sig() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(SIG).unwrap()
}

#[test]
fn verifies_with_the_signing_key_only() {
    let key = PublicKey::from_pem(KEY.as_bytes()).unwrap();
    assert!(key.verifies(PAYLOAD.as_bytes(), &sig()));
    let other = PublicKey::from_pem(OTHER_KEY.as_bytes()).unwrap();
    assert!(!other.verifies(PAYLOAD.as_bytes(), &sig()));
    let tampered = PAYLOAD.replace("pause", "pausf");
    assert!(!key.verifies(tampered.as_bytes(), &sig()));
    assert!(!key.verifies(PAYLOAD.as_bytes(), b"not der"));
    assert_ne!(key.fingerprint(), other.fingerprint());
}

#[test]
fn refuses_keys_that_are_not_p256_public_keys() {
    let e = PublicKey::from_pem(ED25519_KEY.as_bytes()).unwrap_err();
    assert!(matches!(e, CosignError::NotP256), "{e}");
    let priv_pem = KEY.replace("PUBLIC KEY", "EC PRIVATE KEY");
    let e = PublicKey::from_pem(priv_pem.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("EC PRIVATE KEY"), "{e}");
    assert!(PublicKey::from_pem(b"garbage").is_err());
}

#[test]
fn payload_must_name_the_image_digest() {
    let image = Sha256::of(b"x");
    check_payload(PAYLOAD.as_bytes(), &image).unwrap();
    let e = check_payload(PAYLOAD.as_bytes(), &Sha256::of(b"y"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("payload signs sha256:2d7116"), "{e}");
    // The spec's capitalised spelling, as Go's case-insensitive decoding reads it.
    let cap = PAYLOAD.replace("docker-manifest-digest", "Docker-manifest-digest");
    check_payload(cap.as_bytes(), &image).unwrap();
    let other_type = PAYLOAD.replace("cosign container image signature", "atomic container signature");
    assert!(matches!(
        check_payload(other_type.as_bytes(), &image),
        Err(CosignError::PayloadType(_))
    ));
    assert!(matches!(check_payload(b"{}", &image), Err(CosignError::Payload(_))));
}

fn sig_manifest(layers: &str) -> String {
    let c = Sha256::of(b"{}").oci();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"{c}"}},"layers":[{layers}]}}"#
    )
}

#[test]
fn signature_manifest_layers_and_annotations() {
    let p = Sha256::of(PAYLOAD.as_bytes()).oci();
    let n = PAYLOAD.len();
    let layer = format!(
        r#"{{"mediaType":"{SIMPLESIGNING}","size":{n},"digest":"{p}","annotations":{{"{SIGNATURE_ANNOTATION}":"{SIG}"}}}}"#
    );
    let other = format!(
        r#"{{"mediaType":"application/octet-stream","size":1,"digest":"{}"}}"#,
        Sha256::of(b"z").oci()
    );
    let m = parse_sig_manifest(sig_manifest(&format!("{layer},{other}")).as_bytes()).unwrap();
    assert_eq!(m.blobs.len(), 3, "config and both layers are carried");
    assert_eq!(m.signed.len(), 1, "only simple-signing layers are signatures");
    assert_eq!(m.signed[0].digest, Sha256::of(PAYLOAD.as_bytes()));
    assert_eq!(m.signed[0].signature.as_deref().unwrap(), sig().as_slice());
    let unsigned = format!(r#"{{"mediaType":"{SIMPLESIGNING}","size":{n},"digest":"{p}"}}"#);
    let m = parse_sig_manifest(sig_manifest(&unsigned).as_bytes()).unwrap();
    assert!(m.signed[0]
        .signature
        .as_ref()
        .unwrap_err()
        .contains(SIGNATURE_ANNOTATION));
    let e = parse_sig_manifest(sig_manifest(&other).as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no layer of media type"), "{e}");
}

#[test]
fn signature_tag_is_the_digest_with_a_dash_and_sig() {
    let d = Sha256::of(b"x");
    assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
}

#[test]
fn glob_patterns_on_references() {
    assert!(glob("registry.k8s.io/*", "registry.k8s.io/coredns/coredns:v1.12.1"));
    assert!(glob("ghcr.io/flannel-io/*", "ghcr.io/flannel-io/flannel:v0.27.4"));
    assert!(!glob("ghcr.io/flannel-io/*", "ghcr.io/flannel-iox/flannel:v1"));
    assert!(glob("registry.k8s.io/pause:3.1?", "registry.k8s.io/pause:3.10"));
    assert!(!glob("registry.k8s.io/pause:3.1?", "registry.k8s.io/pause:3.10.1"));
    assert!(glob("*/etcd:*", "registry.k8s.io/etcd:3.6.5-0"));
    assert!(glob("registry.k8s.io/etcd:3.6.5-0", "registry.k8s.io/etcd:3.6.5-0"));
    assert!(!glob("registry.k8s.io/etcd", "registry.k8s.io/etcd:3.6.5-0"));
    assert!(glob("*", "anything"));
}
