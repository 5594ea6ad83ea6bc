use super::*;
use crate::bundle::keys::{self, NewPassword, Signer};
use crate::bundle::signature::TrustedComment;

const JSON: &str = r#"{"schema":1,"name":"kubernetes-v1.34.3","kbundle_version":"0.1.0","kubernetes":"v1.34.3",
    "platforms":["linux/amd64"],"components":{},"hops":[{"kubernetes":"v1.34.3","files":[]}],"entries":[]}"#;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    a: (Signer, TrustedKey),
    b: (Signer, TrustedKey),
    bundle: BundleJson,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = |n: &str| {
        let d = dir.path().join(n);
        keys::generate(&d, NewPassword::Unencrypted).unwrap();
        let s = Signer::load(&d.join(keys::SECRET_KEY_FILE), None).unwrap();
        let k = signature::read_public_key(&d.join(keys::PUBLIC_KEY_FILE)).unwrap();
        (s, k)
    };
    let (a, b) = (key("a"), key("b"));
    let root = dir.path().join("node");
    std::fs::create_dir_all(&root).unwrap();
    Fixture {
        root,
        a,
        b,
        bundle: serde_json::from_str(JSON).unwrap(),
        _dir: dir,
    }
}

fn sig(s: &Signer, serial: u64) -> Vec<u8> {
    let c = TrustedComment {
        name: "kubernetes-v1.34.3".into(),
        kubernetes: "v1.34.3".into(),
        serial,
        built: 1_700_000_000,
    };
    s.sign(JSON.as_bytes(), &c).unwrap()
}

fn policy(keys: &[&TrustedKey], flags: Flags, serials: Serials) -> Policy {
    Policy::new(keys.iter().map(|k| (*k).clone()).collect(), &flags, serials)
}

fn judge(p: &Policy, f: &Fixture, sig: Option<&[u8]>) -> Result<Verdict, TrustError> {
    p.judge("bundle x", JSON.as_bytes(), sig, &f.bundle)
}

#[test]
fn no_keys_accepts_unsigned_with_a_note() {
    let f = fixture();
    let v = judge(&Policy::no_keys(), &f, None).unwrap();
    assert_eq!(v, Verdict::Unsigned(Unsigned::NoKeys));
    assert!(v.describe().contains("signature not required"), "{}", v.describe());
}

#[test]
fn keys_and_unsigned_is_refused_naming_the_trusted_ids() {
    let f = fixture();
    let p = policy(&[&f.a.1, &f.b.1], Flags::default(), Serials::default());
    let e = judge(&p, &f, None).unwrap_err().to_string();
    assert!(e.contains("signed by unsigned"), "{e}");
    assert!(e.contains(&format!("{}, {}", f.a.1.id, f.b.1.id)), "{e}");
}

#[test]
fn keys_and_another_key_is_refused_naming_both() {
    let f = fixture();
    let p = policy(&[&f.a.1], Flags::default(), Serials::default());
    let e = judge(&p, &f, Some(&sig(&f.b.0, 1))).unwrap_err().to_string();
    assert!(e.contains(&format!("signed by key id {}", f.b.1.id)), "{e}");
    assert!(e.contains(&format!("trusted keys are {}", f.a.1.id)), "{e}");
}

#[test]
fn a_trusted_signature_gives_its_key_and_serial() {
    let f = fixture();
    let p = policy(&[&f.b.1, &f.a.1], Flags::default(), Serials::default());
    match judge(&p, &f, Some(&sig(&f.a.0, 7))).unwrap() {
        Verdict::Signed { key_id, serial, .. } => assert_eq!((key_id, serial), (f.a.1.id, 7)),
        v => panic!("{v:?}"),
    }
}

#[test]
fn a_lower_serial_is_refused_an_equal_one_accepted() {
    let f = fixture();
    let mut serials = Serials::default();
    serials.set(f.a.1.id, 5);
    let p = policy(&[&f.a.1], Flags::default(), serials.clone());
    let e = judge(&p, &f, Some(&sig(&f.a.0, 4))).unwrap_err().to_string();
    assert!(
        e.contains("serial 4") && e.contains("serial 5") && e.contains("--allow-downgrade"),
        "{e}"
    );
    assert!(judge(&p, &f, Some(&sig(&f.a.0, 5))).is_ok());
    assert!(judge(&p, &f, Some(&sig(&f.a.0, 6))).is_ok());
    // A serial recorded for another key does not bind this one.
    let mut other = Serials::default();
    other.set(f.b.1.id, 100);
    let p = policy(&[&f.a.1], Flags::default(), other);
    assert!(judge(&p, &f, Some(&sig(&f.a.0, 1))).is_ok());
}

#[test]
fn allow_downgrade_accepts_a_lower_serial() {
    let f = fixture();
    let mut serials = Serials::default();
    serials.set(f.a.1.id, 5);
    let flags = Flags {
        allow_downgrade: true,
        ..Flags::default()
    };
    let v = judge(&policy(&[&f.a.1], flags, serials), &f, Some(&sig(&f.a.0, 4))).unwrap();
    assert!(matches!(v, Verdict::Signed { serial: 4, .. }), "{v:?}");
}

#[test]
fn allow_unsigned_accepts_unsigned_and_untrusted_but_still_checks_good_ones() {
    let f = fixture();
    let flags = Flags {
        allow_unsigned: true,
        ..Flags::default()
    };
    let p = policy(&[&f.a.1], flags, Serials::default());
    for s in [None, Some(sig(&f.b.0, 1))] {
        match judge(&p, &f, s.as_deref()).unwrap() {
            Verdict::Unsigned(Unsigned::Allowed { reason }) => assert!(!reason.is_empty()),
            v => panic!("{v:?}"),
        }
    }
    assert!(matches!(
        judge(&p, &f, Some(&sig(&f.a.0, 1))).unwrap(),
        Verdict::Signed { .. }
    ));
}

#[test]
fn store_trusts_lists_and_untrusts_keys_through_the_host() {
    let f = fixture();
    let host = Host::new(&f.root, false);
    assert!(store::load_keys(&host).unwrap().is_empty());
    let (abs, changed) = store::trust(&host, &f.a.1).unwrap();
    assert_eq!(abs, format!("{KEYS_DIR}/{}.pub", f.a.1.id));
    assert!(changed);
    assert!(
        !store::trust(&host, &f.a.1).unwrap().1,
        "trusting again changes nothing"
    );
    store::trust(&host, &f.b.1).unwrap();
    let ids: Vec<_> = store::load_keys(&host).unwrap().iter().map(|k| k.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&f.a.1.id) && ids.contains(&f.b.1.id));
    let removed = store::untrust(&host, &f.a.1.id.to_string().to_lowercase()).unwrap();
    assert_eq!(removed, vec![abs]);
    let left: Vec<_> = store::load_keys(&host).unwrap().iter().map(|k| k.id).collect();
    assert_eq!(left, vec![f.b.1.id]);
    let e = store::untrust(&host, &f.a.1.id.to_string()).unwrap_err().to_string();
    assert!(e.contains(&f.b.1.id.to_string()), "{e}");
}

#[test]
fn a_bad_key_file_is_an_error_naming_it() {
    let f = fixture();
    let dir = f.root.join(KEYS_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broken.pub"), "untrusted comment: x\nnot base64\n").unwrap();
    std::fs::write(dir.join("README"), "ignored: not *.pub").unwrap();
    let e = Policy::for_node(&Host::new(&f.root, false), &Flags::default(), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.pub"), "{e}");
}

#[test]
fn serials_are_raised_never_lowered_and_feed_the_node_policy() {
    let f = fixture();
    let host = Host::new(&f.root, false);
    store::trust(&host, &f.a.1).unwrap();
    let signed = |serial| Verdict::Signed {
        key_id: f.a.1.id,
        serial,
        comment: String::new(),
    };
    store::record(&host, &signed(9)).unwrap();
    store::record(&host, &signed(3)).unwrap();
    store::record(&host, &Verdict::Unsigned(Unsigned::NoKeys)).unwrap();
    assert_eq!(store::load_serials(&host).unwrap().get(f.a.1.id), Some(9));
    let p = Policy::for_node(&host, &Flags::default(), vec![]).unwrap();
    assert!(p.required());
    let e = judge(&p, &f, Some(&sig(&f.a.0, 8))).unwrap_err();
    assert!(matches!(e, TrustError::Downgrade { recorded: 9, .. }), "{e}");
    std::fs::write(f.root.join(SERIALS.trim_start_matches('/')), "[1]").unwrap();
    let e = store::load_serials(&host).unwrap_err().to_string();
    assert!(e.contains("serials.json"), "{e}");
}
