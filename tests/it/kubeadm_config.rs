//! The kubeadm configs `install` writes: byte for byte what kbundle wrote before they were
//! typed documents (tests/it/golden/, captured from the string-formatting version), and,
//! read back with a YAML parser, exactly the v1beta4 keys and the values that went in.

use kbundle::cluster::{Cluster, Role, EXAMPLE};
use kbundle::install::kubeadm::{init_config, join_config, Images, Secrets};
use std::path::Path;
use std::str::FromStr;
use yaml_edit::{Mapping, YamlFile, YamlNode};

const TOKEN: &str = "abcdef.0123456789abcdef";

fn cluster() -> Cluster {
    Cluster::parse(Path::new("cluster.toml"), EXAMPLE).expect("the example config parses")
}

fn images(tags: bool) -> Images {
    Images {
        repository: "registry.k8s.io".into(),
        etcd_tag: tags.then(|| "3.6.5-0".into()),
        coredns_tag: tags.then(|| "v1.12.1".into()),
    }
}

fn secrets(key: bool) -> Secrets {
    Secrets {
        token: Some(TOKEN.parse().unwrap()),
        ca_cert_hash: Some(format!("sha256:{}", "a".repeat(64)).parse().unwrap()),
        certificate_key: key.then(|| "b".repeat(64).parse().unwrap()),
    }
}

#[test]
fn configs_are_byte_for_byte_as_before() {
    let c = cluster();
    let (cp1, worker1) = (&c.nodes[0], &c.nodes[1]);
    let join = |role, key| join_config(&c, worker1, role, &secrets(key)).expect("secrets known");
    let cases = [
        (
            include_str!("golden/kubeadm-init.yaml"),
            init_config(&c, cp1, "v1.34.3", &images(true), &secrets(true)),
        ),
        (
            include_str!("golden/kubeadm-init-minimal.yaml"),
            init_config(&c, cp1, "v1.34.3", &images(false), &Secrets::default()),
        ),
        (
            include_str!("golden/kubeadm-join-worker.yaml"),
            join(Role::Worker, true),
        ),
        (
            include_str!("golden/kubeadm-join-control-plane.yaml"),
            join(Role::ControlPlane, true),
        ),
        (
            include_str!("golden/kubeadm-join-control-plane-no-key.yaml"),
            join(Role::ControlPlane, false),
        ),
    ];
    for (want, got) in cases {
        assert_eq!(got, want);
    }
}

/// Every scalar of `map` as `(dotted.path, value)`, lists as `path.-`.
fn leaves(prefix: &str, node: &YamlNode, out: &mut Vec<(String, String)>) {
    match node {
        YamlNode::Scalar(s) => out.push((prefix.to_string(), s.as_string())),
        YamlNode::Mapping(m) => mapping_leaves(prefix, m, out),
        YamlNode::Sequence(s) => s.values().for_each(|v| leaves(&format!("{prefix}.-"), &v, out)),
        other => panic!("{prefix}: unexpected node {other:?}"),
    }
}

fn mapping_leaves(prefix: &str, m: &Mapping, out: &mut Vec<(String, String)>) {
    for (k, v) in m.iter() {
        let key = k.as_scalar().map(|s| s.as_string()).unwrap_or_default();
        let path = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        leaves(&path, &v, out);
    }
}

/// Each document of `text` as its leaves.
fn documents(text: &str) -> Vec<Vec<(String, String)>> {
    let file = YamlFile::from_str(text).expect("kbundle writes YAML");
    let docs: Vec<_> = file.documents().collect();
    docs.iter()
        .map(|d| {
            let mut out = Vec::new();
            mapping_leaves("", &d.as_mapping().expect("a mapping"), &mut out);
            out
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn init_config_reads_back_as_v1beta4_keys_and_the_values_given() {
    let c = cluster();
    let key = "b".repeat(64);
    let docs = documents(&init_config(&c, &c.nodes[0], "v1.34.3", &images(true), &secrets(true)));
    let init = [
        ("apiVersion", "kubeadm.k8s.io/v1beta4"),
        ("kind", "InitConfiguration"),
        ("bootstrapTokens.-.token", TOKEN),
        ("bootstrapTokens.-.ttl", "24h0m0s"),
        ("bootstrapTokens.-.usages.-", "signing"),
        ("bootstrapTokens.-.usages.-", "authentication"),
        (
            "bootstrapTokens.-.groups.-",
            "system:bootstrappers:kubeadm:default-node-token",
        ),
        ("certificateKey", &key),
        ("localAPIEndpoint.advertiseAddress", "192.168.122.10"),
        ("localAPIEndpoint.bindPort", "6443"),
        ("nodeRegistration.name", "cp1"),
        ("nodeRegistration.criSocket", "unix:///run/containerd/containerd.sock"),
        ("nodeRegistration.imagePullPolicy", "Never"),
        ("nodeRegistration.kubeletExtraArgs.-.name", "node-ip"),
        ("nodeRegistration.kubeletExtraArgs.-.value", "192.168.122.10"),
    ];
    let cluster_cfg = [
        ("apiVersion", "kubeadm.k8s.io/v1beta4"),
        ("kind", "ClusterConfiguration"),
        ("clusterName", "demo"),
        ("kubernetesVersion", "v1.34.3"),
        ("controlPlaneEndpoint", "192.168.122.10:6443"),
        ("imageRepository", "registry.k8s.io"),
        ("networking.podSubnet", "10.244.0.0/16"),
        ("networking.serviceSubnet", "10.96.0.0/12"),
        ("networking.dnsDomain", "cluster.local"),
        ("etcd.local.imageTag", "3.6.5-0"),
        ("dns.imageTag", "v1.12.1"),
    ];
    let kubelet = [
        ("apiVersion", "kubelet.config.k8s.io/v1beta1"),
        ("kind", "KubeletConfiguration"),
        ("cgroupDriver", "systemd"),
        ("failSwapOn", "true"),
    ];
    let proxy = [
        ("apiVersion", "kubeproxy.config.k8s.io/v1alpha1"),
        ("kind", "KubeProxyConfiguration"),
        ("mode", "iptables"),
    ];
    assert_eq!(
        docs,
        [pairs(&init), pairs(&cluster_cfg), pairs(&kubelet), pairs(&proxy)]
    );
}

#[test]
fn join_config_reads_back_as_v1beta4_keys_and_the_values_given() {
    let c = cluster();
    let (key, hash) = ("b".repeat(64), format!("sha256:{}", "a".repeat(64)));
    let text = join_config(&c, &c.nodes[1], Role::ControlPlane, &secrets(true)).expect("secrets known");
    let want = [
        ("apiVersion", "kubeadm.k8s.io/v1beta4"),
        ("kind", "JoinConfiguration"),
        ("discovery.bootstrapToken.apiServerEndpoint", "192.168.122.10:6443"),
        ("discovery.bootstrapToken.token", TOKEN),
        ("discovery.bootstrapToken.caCertHashes.-", &hash),
        ("nodeRegistration.name", "worker1"),
        ("nodeRegistration.criSocket", "unix:///run/containerd/containerd.sock"),
        ("nodeRegistration.imagePullPolicy", "Never"),
        ("nodeRegistration.kubeletExtraArgs.-.name", "node-ip"),
        ("nodeRegistration.kubeletExtraArgs.-.value", "192.168.122.21"),
        ("controlPlane.localAPIEndpoint.advertiseAddress", "192.168.122.21"),
        ("controlPlane.localAPIEndpoint.bindPort", "6443"),
        ("controlPlane.certificateKey", &key),
    ];
    assert_eq!(documents(&text), [pairs(&want)]);
}

#[test]
fn a_value_that_would_break_its_line_reads_back_as_one_value() {
    // Values from the bundle are not cluster.toml types; they are quoted all the same.
    let c = cluster();
    let version = "v1.34.3\"\nanonymous-auth: true\n# x";
    let mut img = images(false);
    img.repository = "registry.k8s.io\n---\nkind: Evil".into();
    let docs = documents(&init_config(&c, &c.nodes[0], version, &img, &Secrets::default()));
    assert_eq!(docs.len(), 4);
    let get = |k: &str| docs[1].iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    assert_eq!(get("kubernetesVersion"), Some(version));
    assert_eq!(get("imageRepository"), Some(img.repository.as_str()));
    assert!(docs.iter().flatten().all(|(k, _)| k != "anonymous-auth"));
}
