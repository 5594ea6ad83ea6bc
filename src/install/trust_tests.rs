//! Install and the node's trust policy, through the recording seam: a refused bundle leaves
//! no write and runs no command; an accepted one records its serial and installs cluster.toml
//! `[trust]` keys into the store.

use super::*;
use crate::bundle::keys::{self, NewPassword, Signer};
use crate::bundle::signature::TrustedComment;
use crate::trust::{KEYS_DIR, SERIALS};

/// A key pair under `dir/name`: (signer, public key file, key id).
fn key(dir: &Path, name: &str) -> (Signer, PathBuf, String) {
    let d = dir.join(name);
    let id = keys::generate(&d, NewPassword::Unencrypted).unwrap();
    let s = Signer::load(&d.join(keys::SECRET_KEY_FILE), None).unwrap();
    (s, d.join(keys::PUBLIC_KEY_FILE), id.to_string())
}

/// Writes `bundle.json.minisig` into the bundle directory.
fn sign(s: &Scene, signer: &Signer, serial: u64) {
    let json = std::fs::read(s.bundle.join("bundle.json")).unwrap();
    let b: crate::bundle::meta::BundleJson = serde_json::from_slice(&json).unwrap();
    let c = TrustedComment {
        name: b.name.to_string(),
        kubernetes: b.kubernetes.to_string(),
        serial,
        built: 1_700_000_000,
    };
    std::fs::write(
        s.bundle.join("bundle.json.minisig"),
        signer.sign(&json[..], &c).unwrap(),
    )
    .unwrap();
}

fn trusting(s: &Scene, key: &Path) -> Options {
    let mut o = opts(s, "worker1", Phase::Prepare);
    o.trust.trusted_keys = vec![key.to_path_buf()];
    o
}

fn install(s: &Scene, o: Options) -> (Arc<Recorder>, Result<(), InstallError>) {
    let (rec, host) = testkit::recording_host(&s.root, false);
    script(&rec);
    let r = run_on(host, o);
    (rec, r)
}

/// Every path under `root`, sorted.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir(root);
    v.sort();
    v
}

fn walkdir(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            v.extend(walkdir(&p));
        }
        v.push(p);
    }
    v
}

fn refused_untouched(s: &Scene, o: Options, wants: &[&str]) {
    let before = tree(&s.root);
    let (rec, r) = install(s, o);
    let e = r.unwrap_err().to_string();
    for w in wants {
        assert!(e.contains(w), "wanted {w:?} in {e}");
    }
    assert_eq!(rec.writes_under(&s.root), Vec::<String>::new());
    assert_eq!(rec.commands(), Vec::<String>::new());
    assert_eq!(tree(&s.root), before);
}

#[test]
fn unsigned_or_other_signer_is_refused_before_any_write_or_command() {
    let s = scene("open-ports");
    let keys_dir = s._t.path().join("keys");
    let (a, a_pub, id_a) = key(&keys_dir, "a");
    let (b, _, id_b) = key(&keys_dir, "b");
    refused_untouched(
        &s,
        trusting(&s, &a_pub),
        &["signed by unsigned", &format!("trusted keys are {id_a}")],
    );
    sign(&s, &b, 7);
    refused_untouched(
        &s,
        trusting(&s, &a_pub),
        &[&format!("signed by key id {id_b}, but the trusted keys are {id_a}")],
    );
    // Signed by A: installs, and records A's serial; a lower serial is then refused.
    sign(&s, &a, 7);
    let (_, r) = install(&s, trusting(&s, &a_pub));
    r.unwrap();
    let serials = std::fs::read_to_string(s.root.join(SERIALS.trim_start_matches('/'))).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&serials).unwrap()[&id_a], 7);
    sign(&s, &a, 6);
    refused_untouched(
        &s,
        trusting(&s, &a_pub),
        &["serial 6", "lower than serial 7", "--allow-downgrade"],
    );
    sign(&s, &a, 7);
    install(&s, trusting(&s, &a_pub)).1.unwrap();
}

#[test]
fn cluster_trust_keys_are_enforced_and_installed_into_the_store() {
    let s = scene("open-ports");
    let (a, a_pub, id_a) = key(&s._t.path().join("keys"), "a");
    let line = std::fs::read_to_string(&a_pub)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{cfg}\n[trust]\nkeys = [\"{line}\"]\n")).unwrap();
    let o = || opts(&s, "worker1", Phase::Prepare);
    refused_untouched(&s, o(), &["signed by unsigned", &format!("trusted keys are {id_a}")]);
    sign(&s, &a, 3);
    let (rec, r) = install(&s, o());
    r.unwrap();
    let stored = format!("{KEYS_DIR}/{id_a}.pub");
    let w = rec.writes_under(&s.root);
    assert_eq!(w.iter().position(|p| *p == stored), Some(0), "{w:#?}");
    let text = std::fs::read_to_string(s.root.join(stored.trim_start_matches('/'))).unwrap();
    assert!(text.ends_with(&format!("{line}\n")), "{text}");
}
