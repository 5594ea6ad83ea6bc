//! Fixtures made with openssl at test time, shaped as Fulcio and Rekor make them: a root CA
//! and an intermediate (basicConstraints CA:TRUE), a leaf with an email SAN and the Fulcio
//! issuer extension, a Rekor P-256 key in a trusted_root.json, a SET signed over the
//! canonical bundle payload.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const IDENTITY: &str = "signer@example.com";
const ISSUER: &str = "https://issuer.example";

fn run(c: &mut Command) -> Vec<u8> {
    let o = c.output().expect("openssl runs");
    assert!(o.status.success(), "{c:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    run(Command::new("openssl").current_dir(dir).args(args))
}

fn b64e(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A CA `name` (self-signed when `parent` is None), its key `name.key`, cert `name.pem`.
fn ca(dir: &Path, name: &str, parent: Option<&str>) {
    let key = format!("{name}.key");
    openssl(
        dir,
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key],
    );
    let subj = format!("/CN={name}");
    let Some(p) = parent else {
        let ext = "basicConstraints=critical,CA:TRUE";
        let args = [
            "req", "-x509", "-new", "-key", &key, "-subj", &subj, "-days", "2", "-addext", ext,
        ];
        openssl(dir, &[&args[..], &["-out", &format!("{name}.pem")]].concat());
        return;
    };
    std::fs::write(dir.join(format!("{name}.ext")), "basicConstraints=critical,CA:TRUE\n").unwrap();
    issue(dir, name, p);
}

/// Issues `name.pem` for key `name.key` with extensions `name.ext`, signed by CA `parent`.
fn issue(dir: &Path, name: &str, parent: &str) {
    let (key, csr, subj) = (format!("{name}.key"), format!("{name}.csr"), format!("/CN={name}"));
    openssl(dir, &["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr]);
    let (pc, pk) = (format!("{parent}.pem"), format!("{parent}.key"));
    let ext = format!("{name}.ext");
    let out = format!("{name}.pem");
    let args = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &pc,
        "-CAkey",
        &pk,
        "-CAcreateserial",
        "-days",
        "1",
    ];
    openssl(dir, &[&args[..], &["-extfile", &ext, "-out", &out]].concat());
}

fn leaf(dir: &Path, name: &str, parent: &str, issuer_ext: &str) {
    let key = format!("{name}.key");
    openssl(
        dir,
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key],
    );
    let ext = format!("subjectAltName=email:{IDENTITY}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=codeSigning\n{issuer_ext}\n");
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    issue(dir, name, parent);
}

fn der(dir: &Path, pem: &str) -> Vec<u8> {
    openssl(dir, &["x509", "-in", pem, "-outform", "DER"])
}

fn sign(dir: &Path, key: &str, data: &[u8]) -> Vec<u8> {
    let f = dir.join("tosign");
    std::fs::write(&f, data).unwrap();
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["dgst", "-sha256", "-sign", key])
        .arg(&f))
}

struct Fixture {
    dir: tempfile::TempDir,
    root: TrustedRoot,
    log_id: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ca(d, "root", None);
        ca(d, "inter", Some("root"));
        ca(d, "otherroot", None);
        leaf(
            d,
            "leaf",
            "inter",
            &format!("1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{ISSUER}"),
        );
        let v1 = ISSUER.bytes().map(|b| format!("{b:02X}")).collect::<String>();
        leaf(d, "leafv1", "inter", &format!("1.3.6.1.4.1.57264.1.1=DER:{v1}"));
        leaf(
            d,
            "stranger",
            "otherroot",
            &format!("1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{ISSUER}"),
        );
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "rekor.key",
            ],
        );
        let spki = openssl(d, &["pkey", "-in", "rekor.key", "-pubout", "-outform", "DER"]);
        let id = sha2_of(&spki);
        let json = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": "https://rekor.example", "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": b64e(&spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": b64e(&id)}}],
            "certificateAuthorities": [{"subject": {"organization": "example", "commonName": "root"},
                "uri": "https://fulcio.example",
                "certChain": {"certificates": [{"rawBytes": b64e(&der(d, "inter.pem"))},
                    {"rawBytes": b64e(&der(d, "root.pem"))}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}}],
        });
        let root = TrustedRoot::from_json(json.to_string().as_bytes()).unwrap();
        Fixture {
            log_id: hex(&id),
            root,
            dir,
        }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn cert(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.path(&format!("{name}.pem"))).unwrap();
        leaf_from_pem(&pem).unwrap()
    }

    /// A bundle for an entry integrated at `time`, SET signed by the Rekor key.
    fn bundle(&self, time: i64) -> RekorBundle {
        self.bundle_of(time, b"{\"kind\":\"hashedrekord\"}")
    }

    fn bundle_of(&self, time: i64, body: &[u8]) -> RekorBundle {
        let payload = RekorPayload {
            body: b64e(body),
            integrated_time: time,
            log_index: 7,
            log_id: self.log_id.clone(),
        };
        let mut b = RekorBundle {
            signed_entry_timestamp: String::new(),
            payload,
        };
        b.signed_entry_timestamp = b64e(&sign(self.dir.path(), "rekor.key", &b.canonical_payload()));
        b
    }
}

fn sha2_of(b: &[u8]) -> Vec<u8> {
    let d = crate::digest::Sha256::of(b).hex();
    (0..32)
        .map(|i| u8::from_str_radix(&d[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn keyless_signature_checks_pass_and_each_one_fails_on_its_own_fault() {
    let f = Fixture::new();
    let der = f.cert("leaf");
    let leaf = parse_cert(&der).unwrap();
    // Chain: leaf -> inter -> root, both from the trusted root.
    let chain = verify_chain(&f.root, &leaf).unwrap();
    let names: Vec<String> = chain.iter().map(|c| c.subject().to_string()).collect();
    assert_eq!(names, ["CN=inter", "CN=root"]);
    check_identity(&leaf, IDENTITY, ISSUER).unwrap();
    // Wrong identity / issuer: named expected vs found.
    let e = check_identity(&leaf, "other@example.com", ISSUER)
        .unwrap_err()
        .to_string();
    assert!(e.contains("other@example.com") && e.contains(IDENTITY), "{e}");
    let e = check_identity(&leaf, IDENTITY, "https://accounts.example")
        .unwrap_err()
        .to_string();
    assert!(e.contains("https://accounts.example") && e.contains(ISSUER), "{e}");
    // Payload signature by the leaf key.
    let payload = b"{\"critical\":{}}";
    let sig = sign(f.dir.path(), "leaf.key", payload);
    assert!(leaf_verifies(&leaf, payload, &sig));
    assert!(!leaf_verifies(&leaf, b"{\"critical\":[]}", &sig));
    // SET verifies; integratedTime within the chain's validity.
    let t = now();
    let b = f.bundle(t);
    verify_set(&f.root, &b).unwrap();
    check_validity(&leaf, &chain, t).unwrap();
}

#[test]
fn v1_issuer_extension_is_the_fallback() {
    let f = Fixture::new();
    let der = f.cert("leafv1");
    let leaf = parse_cert(&der).unwrap();
    assert_eq!(oidc_issuer(&leaf).as_deref(), Some(ISSUER));
    assert_eq!(identities(&leaf), [IDENTITY]);
    check_identity(&leaf, IDENTITY, ISSUER).unwrap();
}

#[test]
fn a_leaf_from_another_ca_is_untrusted() {
    let f = Fixture::new();
    let der = f.cert("stranger");
    let leaf = parse_cert(&der).unwrap();
    assert!(matches!(verify_chain(&f.root, &leaf), Err(KeylessError::Untrusted)));
    // A trusted CA certificate is no signing certificate (no code signing usage).
    let inter = f.cert("inter");
    assert!(matches!(
        verify_chain(&f.root, &parse_cert(&inter).unwrap()),
        Err(KeylessError::Certificate(_))
    ));
}

#[test]
fn a_tampered_or_foreign_set_is_refused() {
    let f = Fixture::new();
    let mut b = f.bundle(now());
    b.payload.log_index += 1;
    let e = verify_set(&f.root, &b).unwrap_err();
    assert!(matches!(e, KeylessError::BadSet(_)), "{e}");
    let mut b = f.bundle(now());
    b.payload.log_id = "00".repeat(32);
    let e = verify_set(&f.root, &b).unwrap_err();
    assert!(matches!(e, KeylessError::UnknownLog(_)), "{e}");
    let mut b = f.bundle(now());
    b.signed_entry_timestamp = "!".into();
    assert!(matches!(verify_set(&f.root, &b), Err(KeylessError::Bundle(_))));
}

#[test]
fn integrated_time_outside_the_validity_is_refused() {
    let f = Fixture::new();
    let der = f.cert("leaf");
    let leaf = parse_cert(&der).unwrap();
    let chain = verify_chain(&f.root, &leaf).unwrap();
    let early = now() - 10 * 86400;
    let e = check_validity(&leaf, &chain, early).unwrap_err().to_string();
    assert!(e.contains("CN=leaf") && e.contains(&early.to_string()), "{e}");
    assert!(check_validity(&leaf, &chain, now() + 3 * 86400).is_err());
}

#[test]
fn bundle_json_and_canonical_payload_have_cosigns_shape() {
    let text = r#"{"SignedEntryTimestamp":"c2ln","Payload":{"body":"Ym9keQ==","integratedTime":1700000000,"logIndex":42,"logID":"abcd"}}"#;
    let b = RekorBundle::from_json(text).unwrap();
    assert_eq!(b.payload.integrated_time, 1_700_000_000);
    let canon = String::from_utf8(b.canonical_payload()).unwrap();
    assert_eq!(
        canon,
        r#"{"body":"Ym9keQ==","integratedTime":1700000000,"logID":"abcd","logIndex":42}"#
    );
    assert!(RekorBundle::from_json("{}").is_err());
    assert!(TrustedRoot::from_json(b"{\"tlogs\":[]}").is_err());
    assert!(leaf_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
}

/// A hashedrekord entry as Rekor records a cosign signature.
fn entry(payload: &[u8], sig: &[u8], cert_pem: &str) -> Vec<u8> {
    let hash = crate::digest::Sha256::of(payload).hex();
    let e = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hash}},
        "signature": {"content": b64e(sig), "publicKey": {"content": b64e(cert_pem.as_bytes())}}}});
    e.to_string().into_bytes()
}

#[test]
fn verify_takes_a_whole_keyless_signature_and_refuses_a_mismatched_one() {
    let f = Fixture::new();
    let pem = std::fs::read_to_string(f.path("leaf.pem")).unwrap();
    let payload = br#"{"critical":{"type":"cosign container image signature"}}"#;
    let sig = sign(f.dir.path(), "leaf.key", payload);
    let bundle = |b: &RekorBundle| {
        serde_json::json!({"SignedEntryTimestamp": b.signed_entry_timestamp,
        "Payload": {"body": b.payload.body, "integratedTime": b.payload.integrated_time,
        "logIndex": b.payload.log_index, "logID": b.payload.log_id}})
        .to_string()
    };
    let good = bundle(&f.bundle_of(now(), &entry(payload, &sig, &pem)));
    let x = Expected {
        root: &f.root,
        identity: IDENTITY,
        issuer: ISSUER,
    };
    let m = Material {
        payload,
        signature: &sig,
        certificate: &pem,
        bundle: &good,
    };
    verify(&m, &x).unwrap();
    // The entry must be about this payload, signature and certificate.
    let other = bundle(&f.bundle_of(now(), &entry(b"other", &sig, &pem)));
    let e = verify(
        &Material {
            bundle: &other,
            ..m.clone()
        },
        &x,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is not the payload's"), "{e}");
    let stranger = std::fs::read_to_string(f.path("stranger.pem")).unwrap();
    let other = bundle(&f.bundle_of(now(), &entry(payload, &sig, &stranger)));
    let e = verify(
        &Material {
            bundle: &other,
            ..m.clone()
        },
        &x,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("certificate is not this layer's"), "{e}");
    // A signature by another key, a wrong identity: refused before the bundle.
    let e = verify(
        &Material {
            signature: b"bad",
            ..m.clone()
        },
        &x,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not verify"), "{e}");
    let e = verify(
        &m,
        &Expected {
            identity: "x@example.com",
            ..x.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x@example.com"), "{e}");
    // Integrated before the certificate was valid.
    let early = bundle(&f.bundle_of(now() - 5 * 86400, &entry(payload, &sig, &pem)));
    let e = verify(&Material { bundle: &early, ..m }, &x).unwrap_err();
    assert!(matches!(e, KeylessError::OutsideValidity { .. }), "{e}");
}

#[test]
fn an_issuer_that_is_not_a_ca_breaks_the_chain() {
    let f = Fixture::new();
    let d = f.dir.path();
    // "sub" is signed by the (CA:FALSE) leaf key, and the leaf is made a trust anchor.
    leaf(
        d,
        "sub",
        "leaf",
        &format!("1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:{ISSUER}"),
    );
    let json = serde_json::json!({"certificateAuthorities": [{"certChain": {"certificates": [
        {"rawBytes": b64e(&der(d, "leaf.pem"))}]}}]});
    let root = TrustedRoot::from_json(json.to_string().as_bytes()).unwrap();
    let sub = f.cert("sub");
    let sub = parse_cert(&sub).unwrap();
    assert!(matches!(verify_chain(&root, &sub), Err(KeylessError::Untrusted)));
}
