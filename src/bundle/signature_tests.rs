use super::*;
use crate::bundle::keys::{self, NewPassword, Signer};

fn comment() -> TrustedComment {
    TrustedComment {
        name: "kubernetes-v1.34.3".into(),
        kubernetes: "v1.34.3".into(),
        serial: 1_700_000_000,
        built: 1_700_000_000,
    }
}

#[test]
fn comment_renders_the_documented_form_and_parses_back() {
    let s = comment().render();
    assert_eq!(
        s,
        "kbundle name=kubernetes-v1.34.3 kubernetes=v1.34.3 serial=1700000000 built=2023-11-14T22:13:20Z"
    );
    assert_eq!(TrustedComment::parse(&s), Ok(comment()));
}

#[test]
fn comment_parse_refuses_other_shapes_naming_the_reason() {
    for (bad, why) in [
        ("timestamp:1700000000\tfile:x", "does not start"),
        (
            "kbundle kubernetes=v1 name=x serial=1 built=2023-11-14T22:13:20Z",
            "expected name=",
        ),
        (
            "kbundle name=x kubernetes=v1 serial=-1 built=2023-11-14T22:13:20Z",
            "serial",
        ),
        (
            "kbundle name=x kubernetes=v1 serial=1 built=2023-13-14T22:13:20Z",
            "built",
        ),
        (
            "kbundle name=x kubernetes=v1 serial=1 built=2023-11-14T22:13:20Z extra",
            "unexpected",
        ),
        ("kbundle name=x kubernetes=v1 serial=1", "built= is missing"),
    ] {
        let e = TrustedComment::parse(bad).unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}

#[test]
fn dates_render_and_parse_across_leap_years_and_the_epoch() {
    for (secs, s) in [
        (0, "1970-01-01T00:00:00Z"),
        (315_532_800, "1980-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (4_107_542_399, "2100-02-28T23:59:59Z"),
    ] {
        assert_eq!(rfc3339(secs), s);
        assert_eq!(parse_rfc3339(s), Some(secs));
    }
    assert_eq!(parse_rfc3339("2023-02-30T00:00:00Z"), None);
}

#[test]
fn key_ids_render_as_minisign_shows_them() {
    let id = KeyId([0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01]);
    assert_eq!(id.to_string(), "0123456789ABCDEF");
    assert_eq!(KeyId::from_slice(&[1]).to_string(), "0000000000000001");
}

#[test]
fn sign_then_verify_and_refuse_others_and_changes() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let id_a = keys::generate(&a, NewPassword::Unencrypted).unwrap();
    let id_b = keys::generate(&b, NewPassword::Given("pw".into())).unwrap();
    assert!(matches!(
        keys::generate(&a, NewPassword::Unencrypted),
        Err(keys::KeyError::Exists { .. })
    ));
    let signer = Signer::load(&b.join(keys::SECRET_KEY_FILE), Some("pw".into())).unwrap();
    assert_eq!(signer.id, id_b);
    let sig = signer.sign(&b"data"[..], &comment()).unwrap();
    let ka = read_public_key(&a.join(keys::PUBLIC_KEY_FILE)).unwrap();
    let kb = read_public_key(&b.join(keys::PUBLIC_KEY_FILE)).unwrap();
    assert_eq!(ka.id, id_a);
    let ok = verify_json_sig(b"data", Some(&sig), &[ka.clone(), kb.clone()]).unwrap();
    assert_eq!((ok.key_id, ok.fields().unwrap()), (id_b, comment()));
    let e = verify_json_sig(b"data", Some(&sig), std::slice::from_ref(&ka)).unwrap_err();
    assert!(matches!(e, SigError::Untrusted { found, .. } if found == id_b), "{e}");
    assert!(e.to_string().contains(&id_a.to_string()), "{e}");
    let e = verify_json_sig(b"dato", Some(&sig), std::slice::from_ref(&kb)).unwrap_err();
    assert!(matches!(e, SigError::Bad { .. }), "{e}");
    let e = verify_json_sig(b"data", None, &[kb]).unwrap_err();
    assert!(e.to_string().contains("not signed"), "{e}");
    assert!(Signer::load(&b.join(keys::SECRET_KEY_FILE), Some("wrong".into())).is_err());
}

#[test]
fn a_signed_comment_must_name_the_bundle_it_comes_with() {
    let json = r#"{"schema":1,"name":"kubernetes-v1.34.3","kbundle_version":"0.1.0","kubernetes":"v1.34.3",
        "platforms":["linux/amd64"],"components":{},"hops":[{"kubernetes":"v1.34.3","files":[]}],"entries":[]}"#;
    let b: crate::bundle::meta::BundleJson = serde_json::from_str(json).unwrap();
    let signed = |c: &TrustedComment| Signed {
        key_id: KeyId([0; 8]),
        comment: c.render(),
    };
    assert_eq!(comment_matches(&signed(&comment()), &b), Ok(()));
    let other = TrustedComment {
        kubernetes: "v1.33.7".into(),
        ..comment()
    };
    let e = comment_matches(&signed(&other), &b).unwrap_err();
    assert!(
        e.contains("names kubernetes-v1.34.3 v1.33.7, but bundle.json is kubernetes-v1.34.3 v1.34.3"),
        "{e}"
    );
    let e = comment_matches(
        &Signed {
            key_id: KeyId([0; 8]),
            comment: "timestamp:1".into(),
        },
        &b,
    )
    .unwrap_err();
    assert!(e.contains("not kbundle's"), "{e}");
}
