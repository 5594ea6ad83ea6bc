//! runc's clear-signed `runc.sha256sum` is verified at build time against the manifest's
//! keyring (`[upstream-keys] runc`, here the test signer's key): a good signature builds and
//! is recorded in the lock; a tampered signature, altered signed text, a stranger's key or an
//! unsigned file fails the build, naming the file's URL and the keys found and trusted.

use super::*;
use base64::Engine;
use support::mirror::Mirror;
use upstream::pgp::{self, STRANGER_FPR, TEST_SIGNER_FPR};

const SUMS_URL: &str = "https://github.com/opencontainers/runc/releases/download/v1.3.4/runc.sha256sum";

/// A private tiny upstream whose `runc.sha256sum` is rewritten by `change`, served on a
/// loopback mirror, and a trusting copy of the v1.34.3 manifest.
struct Site {
    tmp: tempfile::TempDir,
    mirror: Mirror,
    manifest: PathBuf,
}

impl Site {
    fn new(change: impl FnOnce(&str) -> String) -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let spec = UpstreamSpec::v1_34_3().tiny();
        let root = tmp.path().join("upstream");
        upstream::build_tree(&root, &spec).unwrap();
        let sums = upstream::local_path(&root, &format!("{}/runc.sha256sum", upstream::runc_dir(&spec)));
        let good = std::fs::read_to_string(&sums).unwrap();
        std::fs::write(&sums, change(&good)).unwrap();
        let manifest = manifest_copy(tmp.path(), "kubernetes-v1.34.3.toml");
        Site {
            mirror: Mirror::start(&root),
            tmp,
            manifest,
        }
    }

    fn build(&self) -> Output {
        let inst = small_installer(self.tmp.path());
        let (m, t) = (self.manifest.to_str().unwrap(), self.tmp.path());
        let mut args = strs(&["build", m, "--skip-images", "--installer", inst.to_str().unwrap()]);
        args.extend(strs(&["--out", t.join("out").to_str().unwrap()]));
        args.extend(strs(&["--cache", t.join("cache").to_str().unwrap()]));
        args.extend(upstream::mirror_args(&self.mirror.url()));
        kbundle(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Builds and expects a refusal naming the file's URL and every key in `wants`.
    fn refused(&self, wants: &[&str]) -> String {
        let o = self.build();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        for w in [SUMS_URL].iter().chain(wants) {
            assert!(err.contains(w), "want {w:?} in:\n{}", text(&o));
        }
        assert!(!self.tmp.path().join("out/kubernetes-v1.34.3.tar.zst").exists());
        err
    }
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The signed text of a clear-signed message (dash-escaping aside: sha256sum lines have none).
fn signed_text(msg: &str) -> String {
    let body = msg.split_once("\n\n").unwrap().1;
    let text = body.split_once("-----BEGIN PGP SIGNATURE-----").unwrap().0;
    text.to_string()
}

#[test]
fn good_signature_builds_and_the_lock_names_the_signer() {
    let site = Site::new(str::to_string);
    let o = site.build();
    assert!(o.status.success(), "{}", text(&o));
    let lock = std::fs::read_to_string(site.manifest.with_extension("lock")).unwrap();
    let signed: Vec<&str> = lock.lines().filter(|l| l.starts_with("signed-by")).collect();
    assert_eq!(signed, [format!("signed-by = \"{TEST_SIGNER_FPR}\"")], "{lock}");
    let v = kbundle(&[
        "verify",
        site.tmp.path().join("out/kubernetes-v1.34.3.tar.zst").to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn tampered_signature_fails_naming_the_signer() {
    let site = Site::new(|good| {
        let (head, sig) = good.split_once("-----BEGIN PGP SIGNATURE-----\n\n").unwrap();
        let b64: String = sig
            .lines()
            .take_while(|l| !l.starts_with('=') && !l.starts_with("-----"))
            .collect();
        let mut raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        format!("{head}-----BEGIN PGP SIGNATURE-----\n\n{b64}\n-----END PGP SIGNATURE-----\n")
    });
    let err = site.refused(&[TEST_SIGNER_FPR, "does not verify"]);
    assert!(err.contains("runc.amd64"), "{err}");
}

#[test]
fn altered_signed_text_fails_naming_the_signer() {
    // Another file's line is enough: every byte of the signed text is covered.
    let site = Site::new(|good| {
        let line = good.lines().find(|l| l.ends_with("  runc.tar.xz")).unwrap();
        let altered = format!("{}{}", "0".repeat(64), &line[64..]);
        good.replace(line, &altered)
    });
    site.refused(&[TEST_SIGNER_FPR, "does not verify"]);
}

#[test]
fn a_strangers_key_fails_naming_both_keys() {
    let site = Site::new(|good| pgp::clearsign(&signed_text(good), &pgp::fixture("stranger.sec.asc")).unwrap());
    site.refused(&[STRANGER_FPR, TEST_SIGNER_FPR, "not in the keyring"]);
}

#[test]
fn an_unsigned_checksum_file_fails_naming_the_keyring() {
    let site = Site::new(signed_text);
    site.refused(&[TEST_SIGNER_FPR, "not an OpenPGP clear-signed message"]);
}

#[test]
fn lines_outside_the_signed_text_fail() {
    let site = Site::new(|good| format!("{}  runc.amd64\n{good}", "0".repeat(64)));
    site.refused(&[TEST_SIGNER_FPR]);
}

#[test]
fn without_an_override_runcs_pinned_keyring_is_required() {
    let site = Site::new(str::to_string);
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kubernetes-v1.34.3.toml"));
    std::fs::write(&site.manifest, shipped.unwrap()).unwrap();
    // docs/upstream-facts.md, "runc release signatures": runc.keyring at v1.3.4.
    site.refused(&[
        TEST_SIGNER_FPR,
        "pinned runc.keyring",
        "5F36C6C61B5460124A75F5A69E18AA267DDB8DB4",
        "C9C370B246B09F6DBCFC744C34401015D1D2D386",
    ]);
}
