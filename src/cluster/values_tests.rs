use super::*;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// Every `good` parses (and reads back unchanged); every `bad` is refused with `err`.
fn check<T>(good: &[&str], bad: &[&str], err: fn(&str) -> ValueError)
where
    T: FromStr<Err = ValueError> + Deref<Target = str> + fmt::Debug,
{
    for g in good {
        let v: T = g.parse().unwrap_or_else(|e| panic!("{g:?} refused: {e}"));
        assert_eq!(&*v, *g);
    }
    for b in bad {
        assert_eq!(b.parse::<T>().unwrap_err(), err(b), "{b:?} accepted");
    }
}

#[test]
fn cluster_name() {
    check::<ClusterName>(
        &["demo", "prod-1", "a.b_c"],
        &["", "-x", ".x", "a b", "a/b", "a\nb", &"x".repeat(101)],
        |s| ValueError::ClusterName(s.into()),
    );
}

#[test]
fn node_name_is_a_dns_1123_label() {
    check::<NodeName>(
        &["cp1", "worker-2", "a", &"a".repeat(63)],
        &["", "CP1", "cp_1", "cp.1", "-cp", "cp-", "cp 1", &"a".repeat(64)],
        |s| ValueError::NodeName(s.into()),
    );
}

#[test]
fn host_port() {
    check::<HostPort>(
        &[
            "192.168.122.10:6443",
            "192.168.122.10",
            "cp.example.com",
            "registry.internal:5000",
            "[fd00::1]:6443",
            "fd00::1",
        ],
        &[
            "",
            ":6443",
            "host:0",
            "host:65536",
            "host:x",
            "a..b",
            "a b:1",
            "h/x:1",
            "a\nb",
        ],
        |s| ValueError::HostPort(s.into()),
    );
    let hp = |s: &str| s.parse::<HostPort>().unwrap().with_default_port(6443);
    assert_eq!(hp("10.0.0.1"), "10.0.0.1:6443");
    assert_eq!(hp("10.0.0.1:443"), "10.0.0.1:443");
    assert_eq!(hp("[fd00::1]:443"), "[fd00::1]:443");
    assert_eq!(hp("cp.example.com"), "cp.example.com:6443");
}

#[test]
fn cidr() {
    check::<Cidr>(
        &["10.244.0.0/16", "10.96.0.0/12", "0.0.0.0/0", "fd00::/64", "::/128"],
        &[
            "",
            "10.244.0.0",
            "10.244.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ],
        |s| ValueError::Cidr(s.into()),
    );
}

#[test]
fn dns_domain_is_an_rfc_1123_subdomain() {
    check::<DnsDomain>(
        &[
            "cluster.local",
            "k8s",
            "a-b.c1.example",
            &format!("{}.x", "a".repeat(63)),
        ],
        &[
            "",
            "Cluster.local",
            "cluster..local",
            ".cluster",
            "cluster.",
            "-a.local",
            "a-.local",
            "a_b.local",
            "cluster.local\nanonymous-auth: true",
            &format!("{}.x", "a".repeat(64)),
            &["abcdefghi"; 26].join("."),
        ],
        |s| ValueError::DnsDomain(s.into()),
    );
}

#[test]
fn bootstrap_token() {
    check::<BootstrapToken>(
        &["abcdef.0123456789abcdef", "000000.0000000000000000"],
        &[
            "",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef0123456789abcdef",
            "abcdef.0123456789abcdeg.",
            "abcdef-0123456789abcdef",
        ],
        |_| ValueError::BootstrapToken,
    );
}

#[test]
fn ca_cert_hash() {
    let hex = "0123456789abcdefABCDEF".repeat(3)[..64].to_string();
    check::<CaCertHash>(
        &[&format!("sha256:{hex}"), &format!("sha256:{}", "a".repeat(64))],
        &[
            "",
            &hex,
            &format!("sha1:{hex}"),
            &format!("sha256:{}", &hex[..63]),
            &format!("sha256:{hex}0"),
            &format!("sha256:{}g", &hex[..63]),
        ],
        |_| ValueError::CaCertHash,
    );
}

#[test]
fn certificate_key() {
    check::<CertificateKey>(
        &[&"a".repeat(64), &"0F".repeat(32)],
        &[
            "",
            &"a".repeat(63),
            &"a".repeat(65),
            &format!("{}z", "a".repeat(63)),
            &format!("sha256:{}", "a".repeat(64)),
        ],
        |_| ValueError::CertificateKey,
    );
}

#[test]
fn secrets_are_not_echoed_and_values_are() {
    let e = "hunter2".parse::<BootstrapToken>().unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    let e = "deadbeef".parse::<CertificateKey>().unwrap_err().to_string();
    assert!(!e.contains("deadbeef"), "{e}");
    let e = "10.0.0.0".parse::<Cidr>().unwrap_err().to_string();
    assert_eq!(e, "\"10.0.0.0\" is not a CIDR such as 10.244.0.0/16");
}

#[test]
fn newtypes_read_like_str() {
    let c: Cidr = "10.244.0.0/16".parse().unwrap();
    assert!(c == "10.244.0.0/16" && c != "10.96.0.0/12");
    assert_eq!(c.to_string(), "10.244.0.0/16");
    assert_eq!(String::from(c.clone()), "10.244.0.0/16");
    assert!(c.starts_with("10.")); // through Deref<Target = str>
}
