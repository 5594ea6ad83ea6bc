//! Approval decisions on requests made by the real openssl (as a kubelet would send them,
//! and forged ones) and read by x509-parser, and one recorded pass through the node seam.

use super::*;
use crate::host::record::Recorder;
use std::sync::Arc;

fn cluster() -> Cluster {
    match Cluster::parse(Path::new("c.toml"), crate::cluster::EXAMPLE) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// A PEM CSR made by openssl with `subject` and `san` (empty: none).
fn csr(subject: &str, san: &str) -> Vec<u8> {
    csr_with(subject, san, &[])
}

/// A PEM CSR made by the real `openssl req -new` (EC P-256), with `extra` arguments.
fn csr_with(subject: &str, san: &str, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new("openssl");
    c.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ])
    .arg("-keyout")
    .arg(dir.path().join("k.pem"))
    .args(extra)
    .args(["-subj", subject]);
    if !san.is_empty() {
        c.args(["-addext", &format!("subjectAltName={san}")]);
    }
    let o = c.output().expect("openssl is needed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// What the approver reads from `pem`.
fn read(pem: &[u8]) -> Request {
    match parse_request(pem) {
        Ok(r) => r,
        Err(e) => panic!("{}", reason(&e)),
    }
}

const CP1: &str = "/O=system:nodes/CN=system:node:cp1";

#[test]
fn a_kubelets_own_request_is_approved() {
    let c = cluster();
    let cp1 = c.node("cp1").unwrap();
    let req = read(&csr(CP1, "DNS:cp1,IP:192.168.122.10"));
    let subject = [
        vec![Attr::O("system:nodes".into())],
        vec![Attr::Cn("system:node:cp1".into())],
    ];
    assert_eq!(req.subject, subject);
    assert_eq!(req.dns, ["cp1"]);
    assert_eq!(req.ips, [IpAddr::from([192, 168, 122, 10])]);
    assert_eq!(check_request(&req, cp1), Ok(()));
    assert_eq!(check_request(&read(&csr(CP1, "IP:192.168.122.10")), cp1), Ok(()));
}

#[test]
fn forged_or_foreign_requests_are_refused_with_the_reason() {
    let c = cluster();
    let cp1 = c.node("cp1").unwrap();
    let cases = [
        (csr("/O=system:nodes/CN=system:node:worker1", "DNS:cp1"), "subject"),
        (csr("/CN=system:node:cp1", "DNS:cp1"), "subject"),
        (csr("/O=system:masters/CN=system:node:cp1", "DNS:cp1"), "subject"),
        (csr(CP1, "DNS:cp1,DNS:kubernetes.default"), "kubernetes.default"),
        (csr(CP1, "DNS:cp1,IP:10.96.0.1"), "10.96.0.1"),
        (csr(CP1, "DNS:cp1,email:a@example.com"), "email"),
        (csr(CP1, "DNS:cp1,URI:spiffe://x"), "URI"),
        (csr(CP1, ""), "no DNS name or IP"),
    ];
    for (pem, why) in cases {
        let e = check_request(&read(&pem), cp1).unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
    }
}

fn item(name: &str, signer: &str, user: &str, pem: &[u8]) -> serde_json::Value {
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    serde_json::json!({
        "metadata": {"name": name},
        "spec": {"signerName": signer, "username": user, "groups": ["system:nodes", "system:authenticated"],
                 "usages": ["digital signature", "server auth"], "request": request},
        "status": {}
    })
}

#[test]
fn a_pass_approves_only_valid_serving_requests_of_configured_nodes() {
    let c = cluster();
    let good = csr(CP1, "DNS:cp1,IP:192.168.122.10");
    let mut approved_already = item("csr-done", SIGNER, "system:node:cp1", &good);
    approved_already["status"] = serde_json::json!({"conditions": [{"type": "Approved"}]});
    let list = serde_json::json!({"items": [
        item("csr-good", SIGNER, "system:node:cp1", &good),
        item("csr-client", "kubernetes.io/kube-apiserver-client-kubelet", "system:node:cp1", &good),
        item("csr-stranger", SIGNER, "system:node:intruder", &good),
        item("csr-spoof", SIGNER, "system:node:worker1", &good),
        item("csr-extra", SIGNER, "system:node:cp1", &csr(CP1, "DNS:cp1,IP:10.0.0.1")),
        approved_already,
    ]});
    let t = tempfile::tempdir().unwrap();
    let (rec, host): (Arc<Recorder>, Host) = crate::testkit::recording_host(t.path(), true);
    rec.answer("get csr -o json", 0, &list.to_string());
    let decided = pass(&host, Path::new("/k"), Path::new("/admin.conf"), &c).unwrap();
    let verdicts: Vec<(&str, bool)> = decided
        .iter()
        .map(|(n, v)| (n.as_str(), *v == Verdict::Approve))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("csr-good", true),
            ("csr-client", false),
            ("csr-stranger", false),
            ("csr-spoof", false),
            ("csr-extra", false)
        ]
    );
    let approvals: Vec<String> = rec.commands().into_iter().filter(|c| c.contains("approve")).collect();
    assert_eq!(approvals, ["/k --kubeconfig /admin.conf certificate approve csr-good"]);
    assert!(
        !rec.commands().iter().any(|c| c.contains("openssl")),
        "{:?}",
        rec.commands()
    );
    let reason = |n: &str| match &decided.iter().find(|(x, _)| x == n).unwrap().1 {
        Verdict::Leave(why) => why.clone(),
        Verdict::Approve => panic!("{n} approved"),
    };
    assert!(reason("csr-client").contains("signer"), "{}", reason("csr-client"));
    assert!(reason("csr-stranger").contains("not in"), "{}", reason("csr-stranger"));
    assert!(reason("csr-spoof").contains("subject"), "{}", reason("csr-spoof"));
    assert!(reason("csr-extra").contains("10.0.0.1"), "{}", reason("csr-extra"));
}

/// Every `(pem, why)` is refused for `cp1`, with a reason containing `why`.
fn assert_refused(cases: &[(Vec<u8>, &str)]) {
    let c = cluster();
    let cp1 = c.node("cp1").unwrap();
    for (pem, why) in cases {
        let e = match parse_request(pem) {
            Ok(req) => check_request(&req, cp1).unwrap_err(),
            Err(e) => reason(&e),
        };
        assert!(e.contains(why), "{why}: {e}");
    }
}

#[test]
fn names_hidden_in_a_dns_name_or_of_other_kinds_are_refused() {
    assert_refused(&[
        // openssl's text output showed this as "DNS:cp1" on one line and "evil" on the next.
        (csr(CP1, "DNS:cp1\\nevil"), r#""cp1\nevil""#),
        // One DNS name holding a newline and ", DNS:" (openssl keeps the escaped line intact).
        (
            csr(CP1, "DNS:cp1\\n, DNS:kubernetes.default"),
            r#""cp1\n, DNS:kubernetes.default""#,
        ),
        (csr(CP1, "DNS:cp1,IP:192.168.122.10,URI:https://cp1"), "URI"),
        (csr(CP1, "DNS:cp1,email:root@cp1"), "email"),
        (csr(CP1, "DNS:cp1,otherName:1.2.3.4;UTF8:cp1"), "OtherName"),
        (csr(CP1, "DNS:cp1,RID:1.2.3.4"), "RegisteredID"),
    ]);
}

/// A PEM CSR made by openssl with a multi-valued RDN in `subject` (`+`).
fn csr_multivalued(subject: &str) -> Vec<u8> {
    csr_with(subject, "DNS:cp1", &["-multivalue-rdn"])
}

#[test]
fn subjects_with_extra_or_multi_valued_rdns_are_refused() {
    assert_refused(&[
        (csr("/O=system:nodes/OU=x/CN=system:node:cp1", "DNS:cp1"), "subject"),
        (
            csr("/O=system:nodes/CN=system:node:cp1/CN=system:node:cp1", "DNS:cp1"),
            "subject",
        ),
        (
            csr("/O=system:nodes/O=system:nodes/CN=system:node:cp1", "DNS:cp1"),
            "subject",
        ),
        (csr("/CN=system:node:cp1,O=system:nodes", "DNS:cp1"), "subject"),
        (csr_multivalued("/O=system:nodes+OU=x/CN=system:node:cp1"), "subject"),
        (csr_multivalued("/O=system:nodes+CN=system:node:cp1"), "subject"),
    ]);
}

/// `pem` with its DER's first `from` replaced by `to` (same length), as PEM again.
fn tamper(pem: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let mut der = block.contents;
    let at = der
        .windows(from.len())
        .position(|w| w == from)
        .expect("bytes to tamper with");
    der[at..at + to.len()].copy_from_slice(to);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

#[test]
fn a_request_whose_signature_does_not_match_its_key_is_refused() {
    let signed = csr(CP1, "DNS:cpX,IP:192.168.122.10");
    assert_refused(&[(signed.clone(), "\"cpX\"")]);
    // The same request asking for the node's own name, but not signed by its key.
    assert_refused(&[(tamper(&signed, b"cpX", b"cp1"), "signature does not verify")]);
}

#[test]
fn what_is_not_a_pem_certification_request_is_refused() {
    let key = String::from_utf8(csr(CP1, "DNS:cp1"))
        .unwrap()
        .replace("CERTIFICATE REQUEST", "PRIVATE KEY");
    assert_refused(&[
        (b"not pem".to_vec(), "not a PEM block"),
        (key.into_bytes(), "not a CERTIFICATE REQUEST"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".to_vec(),
            "not a DER PKCS#10",
        ),
    ]);
}
