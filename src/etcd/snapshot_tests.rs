use super::*;
use crate::etcd::restore::{check_new_data_dir, read_checksum_file};
use crate::host::sys::Real;

#[test]
fn status_json() {
    let st = parse_status(r#"{"hash":368396203,"revision":2,"totalKey":5,"totalSize":20480}"#).unwrap();
    assert_eq!(
        st,
        SnapshotStatus {
            hash: 368396203,
            revision: 2,
            total_key: 5,
            total_size: 20480
        }
    );
    assert!(parse_status("Deprecated: use etcdutl").is_err());
    let (v, n) =
        parse_endpoint_status(r#"[{"Endpoint":"http://127.0.0.1:2379","Status":{"version":"3.4.23","dbSize":20480}}]"#);
    assert_eq!((v.as_deref(), n), (Some("3.4.23"), Some(20480)));
    assert_eq!(parse_endpoint_status("[]"), (None, None));
}

#[test]
fn tls_defaults_follow_kubeadm() {
    let t = tempfile::tempdir().unwrap();
    let pki = t.path();
    let none = Tls::default();
    // http: nothing added.
    assert_eq!(none.resolve("http://127.0.0.1:2379", pki).unwrap(), none);
    // https without a CA: the error names the file and the flag.
    let e = none.resolve(DEFAULT_ENDPOINT, pki).unwrap_err().to_string();
    assert!(e.contains("ca.crt") && e.contains("--cacert"), "{e}");
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::write(pki.join(f), "x").unwrap();
    }
    let r = none.resolve(DEFAULT_ENDPOINT, pki).unwrap();
    assert_eq!(r.cert, Some(pki.join("server.crt")));
    for f in ["healthcheck-client.crt", "healthcheck-client.key"] {
        std::fs::write(pki.join(f), "x").unwrap();
    }
    let r = none.resolve(DEFAULT_ENDPOINT, pki).unwrap();
    assert_eq!(r.cacert, Some(pki.join("ca.crt")));
    assert_eq!(r.cert, Some(pki.join("healthcheck-client.crt")));
    assert_eq!(r.key, Some(pki.join("healthcheck-client.key")));
    assert_eq!(
        r.args(),
        vec![
            flag_arg("--cacert=", &pki.join("ca.crt")),
            flag_arg("--cert=", &pki.join("healthcheck-client.crt")),
            flag_arg("--key=", &pki.join("healthcheck-client.key")),
        ]
    );
    // Half a pair, or a missing explicit file, is refused.
    let half = Tls {
        cert: Some(pki.join("server.crt")),
        ..Tls::default()
    };
    assert!(half.resolve(DEFAULT_ENDPOINT, pki).is_err());
    let missing = Tls {
        cacert: Some(pki.join("nope.crt")),
        ..Tls::default()
    };
    let e = missing.resolve(DEFAULT_ENDPOINT, pki).unwrap_err().to_string();
    assert!(e.contains("nope.crt"), "{e}");
}

#[test]
fn endpoints() {
    check_endpoint("https://127.0.0.1:2379").unwrap();
    check_endpoint("http://10.0.0.1:2379").unwrap();
    assert!(check_endpoint("127.0.0.1:2379").is_err());
    assert!(check_endpoint("https://a:2379,https://b:2379").is_err());
    assert!(check_endpoint("https://").is_err());
}

#[test]
fn checksum_files() {
    let t = tempfile::tempdir().unwrap();
    let d = Sha256::of(b"snap");
    let p = t.path().join("s.sha256");
    std::fs::write(&p, format!("{d}  snap.db\n")).unwrap();
    assert_eq!(read_checksum_file(&Real, &p, "snap.db").unwrap(), d);
    // A single line is accepted even if the file was renamed since.
    assert_eq!(read_checksum_file(&Real, &p, "renamed.db").unwrap(), d);
    let other = Sha256::of(b"other");
    std::fs::write(&p, format!("{other} *a.db\n{d} *snap.db\n")).unwrap();
    assert_eq!(read_checksum_file(&Real, &p, "snap.db").unwrap(), d);
    assert!(read_checksum_file(&Real, &p, "c.db").is_err());
    std::fs::write(&p, "not-a-digest  snap.db\n").unwrap();
    let e = read_checksum_file(&Real, &p, "snap.db").unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
    std::fs::write(&p, "\n").unwrap();
    assert!(read_checksum_file(&Real, &p, "snap.db").is_err());
}

#[test]
fn data_dir_checks() {
    let t = tempfile::tempdir().unwrap();
    check_new_data_dir(&Real, &t.path().join("missing")).unwrap();
    check_new_data_dir(&Real, t.path()).unwrap();
    std::fs::write(t.path().join("f"), "x").unwrap();
    assert!(matches!(
        check_new_data_dir(&Real, t.path()),
        Err(EtcdError::DataDirNotEmpty { .. })
    ));
    assert!(matches!(
        check_new_data_dir(&Real, &t.path().join("f")),
        Err(EtcdError::DataDirNotADirectory { .. })
    ));
    assert_eq!(path_arg(Path::new("-x.db")), OsString::from("./-x.db"));
    assert_eq!(path_arg(Path::new("/a/x.db")), OsString::from("/a/x.db"));
}
