use super::*;

fn parse(s: &str) -> Result<Cluster, ClusterError> {
    Cluster::parse(Path::new("cluster.toml"), s)
}

fn err(s: &str) -> String {
    parse(s).unwrap_err().to_string()
}

#[test]
fn example_parses() {
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(c.nodes.len(), 3);
    assert_eq!(c.init_node().unwrap().name, "cp1");
    assert_eq!(c.endpoint_with_port(), "192.168.122.10:6443");
    assert_eq!(c.pod_cidr, "10.244.0.0/16");
    assert_eq!(c.dns_domain, "cluster.local");
    assert!(c.registry_mirror.is_none());
    assert_eq!(c.node("worker2").map(|n| n.role), Some(Role::Worker));
}

#[test]
fn errors_name_line_and_field() {
    let e = err(&EXAMPLE.replace("address = \"192.168.122.21\"", "address = \"192.168.122.300\""));
    assert!(
        e.contains("cluster.toml:") && e.contains("node.address") && e.contains("192.168.122.300"),
        "{e}"
    );
    let e = err(&EXAMPLE.replace("pod-cidr = \"10.244.0.0/16\"", "pod-cidr = \"10.244.0.0\""));
    assert!(e.starts_with("cluster.toml:7:"), "{e}");
    let e = err(&EXAMPLE.replace("dns-domain", "dns-domian"));
    assert!(e.contains("dns-domian"), "{e}");
    let e = err(&EXAMPLE.replace(
        "root-password-hash = \"$6$kbundleexample$YX",
        "root-password-hash = \"hunter2",
    ));
    assert!(e.contains("plain-text"), "{e}");
    let e = err(&EXAMPLE.replace("role = \"worker\"", "role = \"init\""));
    assert!(e.contains("only one node"), "{e}");
}

/// Each cluster value refused at its own line and column, with its field and the words
/// of its value type.
#[test]
fn each_value_is_checked_where_it_is_written() {
    let cases = [
        (
            "name = \"demo\"",
            "name = \"de mo\"",
            "cluster.toml:5:8: cluster.name: \"de mo\" is not a plain name",
        ),
        (
            "control-plane-endpoint = \"192.168.122.10:6443\"",
            "control-plane-endpoint = \"192.168.122.10:0\"",
            "cluster.toml:6:26: cluster.control-plane-endpoint: \"192.168.122.10:0\" is not host[:port]",
        ),
        (
            "service-cidr = \"10.96.0.0/12\"",
            "service-cidr = \"10.96.0.0/40\"",
            "cluster.toml:8:16: cluster.service-cidr: \"10.96.0.0/40\" is not a CIDR such as 10.244.0.0/16",
        ),
        (
            "dns-domain = \"cluster.local\"",
            "dns-domain = \"Cluster.local\"",
            "cluster.toml:9:14: cluster.dns-domain: \"Cluster.local\" is not a DNS domain",
        ),
        (
            "# registry-mirror = \"registry.internal:5000\"",
            "registry-mirror = \"registry internal\"",
            "cluster.toml:14:19: cluster.registry-mirror: \"registry internal\" is not host[:port]",
        ),
        (
            "name = \"worker1\"",
            "name = \"Worker1\"",
            "node.name: \"Worker1\" is not a valid hostname label",
        ),
        (
            "name = \"worker2\"",
            "name = \"worker1\"",
            "node.name: node \"worker1\" is listed twice",
        ),
    ];
    for (from, to, want) in cases {
        assert!(EXAMPLE.contains(from), "example changed shape: {from}");
        let e = err(&EXAMPLE.replacen(from, to, 1));
        assert!(e.contains(want), "{to}:\n{e}\nwanted: {want}");
    }
}

#[test]
fn join_secrets_are_checked_and_not_echoed() {
    let with_join = |body: &str| EXAMPLE.replace("# [join]\n", &format!("[join]\n{body}\n"));
    let hash = format!("sha256:{}", "a".repeat(64));
    let ok = parse(&with_join(&format!(
        "token = \"abcdef.0123456789abcdef\"\nca-cert-hash = \"{hash}\"\ncertificate-key = \"{}\"",
        "b".repeat(64)
    )))
    .unwrap();
    assert_eq!(ok.join.token.as_deref(), Some("abcdef.0123456789abcdef"));
    assert_eq!(ok.join.ca_cert_hash.as_deref(), Some(hash.as_str()));
    let cases = [
        (
            "token = \"ABCDEF.0123456789abcdef\"",
            "join.token: expected [a-z0-9]{6}.[a-z0-9]{16}",
        ),
        (
            "ca-cert-hash = \"sha256:abc\"",
            "join.ca-cert-hash: expected sha256:<64 hex>",
        ),
        (
            "certificate-key = \"secretish\"",
            "join.certificate-key: expected 64 hex characters",
        ),
    ];
    for (body, want) in cases {
        let e = err(&with_join(body));
        assert!(e.starts_with("cluster.toml:") && e.contains(want), "{e}");
        assert!(!e.contains("ABCDEF") && !e.contains("secretish"), "{e}");
    }
}

#[test]
fn errors_keep_their_cause() {
    use std::error::Error;
    let e = parse(&EXAMPLE.replace("pod-cidr = \"10.244.0.0/16\"", "pod-cidr = \"x\"")).unwrap_err();
    let problem = e.source().and_then(|s| s.downcast_ref::<Problem>());
    assert!(
        matches!(problem, Some(Problem::Value(ValueError::Cidr(v))) if v == "x"),
        "{problem:?}"
    );
    let e = parse(&EXAMPLE.replace("address = \"192.168.122.21\"", "address = \"nope\"")).unwrap_err();
    let problem = e.source().expect("a problem");
    assert!(problem.source().is_some(), "the address parse error is kept");
}

#[test]
fn node_roles_need_exactly_one_init() {
    let e = err(&EXAMPLE.replace("role = \"init\"", "role = \"control-plane\""));
    assert!(e.contains("node.role: one node must have role \"init\""), "{e}");
    // No nodes at all is fine (kickstart-less installs name their role on the command line).
    let bare = EXAMPLE.split("[[node]]").next().unwrap_or_default();
    assert!(parse(bare).unwrap().nodes.is_empty());
}

#[test]
fn join_values() {
    assert!(valid_token("abcdef.0123456789abcdef"));
    assert!(!valid_token("ABCDEF.0123456789abcdef"));
    assert!(valid_cert_key(&"a".repeat(64)));
    assert!(valid_ca_hash(&format!("sha256:{}", "0".repeat(64))));
}

#[test]
fn modes_default_and_refuse_unknown_values() {
    use super::{KubeletServingCerts, ProxyMode, Selinux};
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(
        (c.proxy_mode, c.selinux, c.kubelet_serving_certs),
        (
            ProxyMode::Iptables,
            Selinux::Permissive,
            KubeletServingCerts::SelfSigned
        )
    );
    let bare = EXAMPLE
        .lines()
        .filter(|l| !l.starts_with("proxy-mode") && !l.starts_with("selinux") && !l.starts_with("kubelet-serving"))
        .collect::<Vec<_>>()
        .join("\n");
    let d = parse(&bare).unwrap();
    assert_eq!((d.proxy_mode, d.selinux), (ProxyMode::Iptables, Selinux::Permissive));
    let n = parse(&EXAMPLE.replace("proxy-mode = \"iptables\"", "proxy-mode = \"nftables\"")).unwrap();
    assert_eq!(n.proxy_mode, ProxyMode::Nftables);
    let e = err(&EXAMPLE.replace("selinux = \"permissive\"", "selinux = \"disabled\""));
    assert!(e.contains("cluster.toml:") && e.contains("selinux"), "{e}");
}

#[test]
fn trust_keys_are_inline_minisign_public_keys_checked_at_parse() {
    let d = tempfile::tempdir().unwrap();
    let id = crate::bundle::keys::generate(d.path(), crate::bundle::keys::NewPassword::Unencrypted).unwrap();
    let pubfile = std::fs::read_to_string(d.path().join("kbundle.pub")).unwrap();
    let line = pubfile.lines().nth(1).unwrap();
    let c = parse(&format!("{EXAMPLE}\n[trust]\nkeys = [\"{line}\"]\n")).unwrap();
    assert_eq!(c.trust_keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![id]);
    assert!(parse(EXAMPLE).unwrap().trust_keys.is_empty());
    let e = err(&format!("{EXAMPLE}\n[trust]\nkeys = [\"keys/site.pub\"]\n"));
    assert!(
        e.contains("trust.keys") && e.contains("not a minisign public key"),
        "{e}"
    );
}
