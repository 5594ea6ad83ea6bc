//! Fixtures in `keys/testdata/` were made with Debian's gnupg 2.2 (see `keys/testdata/README`):
//! an Ed25519 key (9BDE…), an RSA 3072 key (F3BD…) and a stranger's Ed25519 key (58D3…).

use super::*;

const KEYRING: &str = include_str!("keys/testdata/keyring.asc");
const SUMS: &str = include_str!("keys/testdata/sums.txt");
const BY_ED25519: &str = include_str!("keys/testdata/sums.ed25519.asc");
const BY_RSA: &str = include_str!("keys/testdata/sums.rsa.asc");
const BY_STRANGER: &str = include_str!("keys/testdata/sums.stranger.asc");
const ED25519: &str = "9BDE3068D806E39FE05A444AAB98BD77F2547F4F";
const RSA: &str = "F3BD58D5B97D74D3FF00E8D5A737805BDD76CCA3";
const STRANGER: &str = "58D3E73E2CBA1CA5D055091A396F83066D9DCFEB";

fn keyring() -> Keyring {
    Keyring::parse("test keyring", KEYRING).unwrap()
}

#[test]
fn gpg_clear_signatures_verify_with_ed25519_and_rsa() {
    for (msg, fpr) in [(BY_ED25519, ED25519), (BY_RSA, RSA)] {
        let v = keyring().verify(msg).unwrap();
        assert_eq!(v.signer.primary, fpr);
        // Dash-escaping undone; the line end before the signature is not signed text.
        assert_eq!(v.text, SUMS.trim_end_matches('\n'));
        assert!(v.text.contains("\n- dash line"), "{}", v.text);
    }
}

#[test]
fn unknown_key_names_the_key_found_and_the_keyring() {
    let e = keyring().verify(BY_STRANGER).unwrap_err();
    assert!(matches!(e, SignatureError::UnknownKey { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains(STRANGER) && e.contains(ED25519) && e.contains(RSA), "{e}");
}

#[test]
fn altered_signed_text_fails_naming_the_signer() {
    let first = SUMS.chars().next().unwrap();
    let other = if first == '8' { '9' } else { '8' };
    let altered = BY_ED25519.replacen(&SUMS[..1], &other.to_string(), 1);
    assert_ne!(altered, BY_ED25519);
    let e = keyring().verify(&altered).unwrap_err();
    assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");
    assert!(e.to_string().contains(ED25519), "{e}");
}

#[test]
fn tampered_signature_fails() {
    let altered = tamper_signature(BY_RSA);
    let e = keyring().verify(&altered).unwrap_err();
    assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");
    assert!(e.to_string().contains(RSA), "{e}");
}

/// Flips one bit in the signature's last MPI byte and re-armors the block (checksum line
/// dropped: it is optional), so the packet still parses but no longer verifies.
fn tamper_signature(msg: &str) -> String {
    use base64::Engine;
    let (head, sig) = msg.split_once("-----BEGIN PGP SIGNATURE-----\n\n").unwrap();
    let b64: String = sig
        .lines()
        .take_while(|l| !l.starts_with('=') && !l.starts_with("-----"))
        .collect();
    let mut raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    format!("{head}-----BEGIN PGP SIGNATURE-----\n\n{b64}\n-----END PGP SIGNATURE-----\n")
}

#[test]
fn unsigned_sums_are_refused() {
    let e = keyring().verify(SUMS).unwrap_err();
    assert!(matches!(e, SignatureError::NotClearSigned { .. }), "{e}");
}

#[test]
fn text_outside_the_signed_part_is_refused() {
    let with_prefix = format!("{}  evil\n{BY_ED25519}", "0".repeat(64));
    assert!(keyring().verify(&with_prefix).is_err());
    let with_suffix = format!("{BY_ED25519}{}  evil\n", "0".repeat(64));
    assert!(keyring().verify(&with_suffix).is_err());
}

#[test]
fn pinned_runc_keyring_holds_the_maintainer_keys() {
    // docs/upstream-facts.md, "runc release signatures": runc.keyring at v1.3.4.
    let k = Keyring::runc_pinned().unwrap();
    assert_eq!(
        k.fingerprints(),
        "5F36C6C61B5460124A75F5A69E18AA267DDB8DB4, C9C370B246B09F6DBCFC744C34401015D1D2D386, \
         C2428CD75720FACDCF76B6EA17DE5ECB75A1100E, C020EA876CE4E06C7AB95AEF49524C6F9F638F1A"
    );
    // Every subkey binding verifies (cyphar signs with an Ed25519 subkey of C9C3…).
    for key in &k.keys {
        for sub in &key.public_subkeys {
            sub.verify_bindings(&key.primary_key).unwrap();
        }
    }
    let e = k.verify(BY_ED25519).unwrap_err().to_string();
    assert!(e.contains(ED25519) && e.contains(RUNC_KEYRING_ORIGIN), "{e}");
}

#[test]
fn empty_keyring_is_an_error() {
    let e = Keyring::parse("k.asc", "no keys here").unwrap_err().to_string();
    assert!(
        e.contains("k.asc") && e.contains("no -----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{e}"
    );
}

const MANIFEST: &str = "schema = 1\n[kubernetes]\nversion = \"v1.34.3\"\n[components]\ncontainerd = \"2.1.5\"\n\
runc = \"1.3.4\"\ncni-plugins = \"1.8.0\"\ncrictl = \"1.34.0\"\netcd = \"3.6.5\"\n";

#[test]
fn a_manifests_keyring_is_read_relative_to_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/runc.asc"), KEYRING).unwrap();
    let path = dir.path().join("m.toml");
    let src = format!("{MANIFEST}[upstream-keys]\nrunc = \"keys/runc.asc\"\n");
    let m = Manifest::parse(&path, &src).unwrap();
    let k = keyring_for(Component::Runc, &m).unwrap();
    assert_eq!(k.verify(BY_ED25519).unwrap().signer.primary, ED25519);
    assert!(k.origin.ends_with("keys/runc.asc"), "{}", k.origin);
    // No override: kbundle's pin.
    let m = Manifest::parse(&path, MANIFEST).unwrap();
    assert_eq!(keyring_for(Component::Runc, &m).unwrap().origin, RUNC_KEYRING_ORIGIN);
    // A missing file is named.
    let m = Manifest::parse(&path, &src.replace("runc.asc", "gone.asc")).unwrap();
    let e = keyring_for(Component::Runc, &m).unwrap_err().to_string();
    assert!(e.contains("gone.asc"), "{e}");
}

#[test]
fn upstream_keys_for_other_components_are_refused_with_line_and_column() {
    let src = format!("{MANIFEST}[upstream-keys]\ncontainerd = \"k.asc\"\n");
    let e = Manifest::parse(Path::new("m.toml"), &src).unwrap_err().to_string();
    assert!(e.starts_with("m.toml:11:1:") && e.contains("containerd"), "{e}");
}
