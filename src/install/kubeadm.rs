//! kubeadm v1beta4 configuration with the exact Kubernetes version and image tags of the
//! bundle, so kubeadm never looks anything up online and never pulls.
//!
//! Each document is a typed struct named and shaped after kubeadm's own Go types
//! (`cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go`; see docs/upstream-facts.md) and
//! rendered by serde-saphyr. Values from the cluster config or the command line are
//! written double-quoted, kbundle's constants plain, as kbundle always wrote them.

use crate::cluster::{Cluster, KubeletServingCerts, Node, Role};
use serde::Serialize;
use serde_saphyr::{DoubleQuoted, FlowSeq, SerializerOptions};

/// Image tags kubeadm must use, taken from the bundle's own images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub repository: String,
    pub etcd_tag: Option<String>,
    pub coredns_tag: Option<String>,
}

/// Join secrets, from the cluster config or the command line.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub token: Option<crate::cluster::BootstrapToken>,
    pub ca_cert_hash: Option<crate::cluster::CaCertHash>,
    pub certificate_key: Option<crate::cluster::CertificateKey>,
}

const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
const KUBEADM_API: &str = "kubeadm.k8s.io/v1beta4";
const KUBELET_API: &str = "kubelet.config.k8s.io/v1beta1";
const KUBE_PROXY_API: &str = "kubeproxy.config.k8s.io/v1alpha1";
const API_PORT: u16 = 6443;

/// A YAML double-quoted scalar, escaped as the configs below write every value that comes
/// from outside kbundle: no value can end its line and add keys. JSON strings are valid
/// YAML 1.2 double-quoted scalars.
pub fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A value from the cluster config or the command line: always double-quoted.
type Quoted<'a> = DoubleQuoted<&'a str>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bootstrap_tokens: Vec<BootstrapToken<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_key: Option<Quoted<'a>>,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: ApiEndpoint<'a>,
    node_registration: NodeRegistration<'a>,
}

/// `bootstraptoken/v1.BootstrapToken`.
#[derive(Serialize)]
struct BootstrapToken<'a> {
    token: Quoted<'a>,
    ttl: &'static str,
    usages: FlowSeq<[&'static str; 2]>,
    groups: FlowSeq<[Quoted<'static>; 1]>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiEndpoint<'a> {
    advertise_address: Quoted<'a>,
    bind_port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration<'a> {
    name: Quoted<'a>,
    cri_socket: Quoted<'static>,
    image_pull_policy: &'static str,
    kubelet_extra_args: [Arg<'a>; 1],
}

/// v1beta4 passes extra arguments as a list of name/value pairs (a map in v1beta3).
#[derive(Serialize)]
struct Arg<'a> {
    name: &'static str,
    value: Quoted<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    cluster_name: Quoted<'a>,
    kubernetes_version: Quoted<'a>,
    control_plane_endpoint: Quoted<'a>,
    image_repository: Quoted<'a>,
    networking: Networking<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<Etcd<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<ImageMeta<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking<'a> {
    pod_subnet: Quoted<'a>,
    service_subnet: Quoted<'a>,
    dns_domain: Quoted<'a>,
}

#[derive(Serialize)]
struct Etcd<'a> {
    local: ImageMeta<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageMeta<'a> {
    image_tag: Quoted<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: &'static str,
    kind: &'static str,
    cgroup_driver: &'static str,
    fail_swap_on: bool,
    /// Only with cluster-signed serving certificates (docs/upstream-facts.md, "Add-ons:
    /// metrics-server, flannel, kubelet serving certificates": serverTLSBootstrap).
    #[serde(rename = "serverTLSBootstrap", skip_serializing_if = "std::ops::Not::not")]
    server_tls_bootstrap: bool,
}

/// `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`: only the mode (same
/// section: kube-proxy `mode`, nftables GA in 1.33).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeProxyConfiguration {
    api_version: &'static str,
    kind: &'static str,
    mode: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    discovery: Discovery<'a>,
    node_registration: NodeRegistration<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<JoinControlPlane<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery<'a> {
    bootstrap_token: BootstrapTokenDiscovery<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery<'a> {
    api_server_endpoint: Quoted<'a>,
    token: Quoted<'a>,
    ca_cert_hashes: [Quoted<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinControlPlane<'a> {
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: ApiEndpoint<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_key: Option<Quoted<'a>>,
}

/// Renders one document. The documents are the fixed structs above, holding strings,
/// numbers and booleans, which serde-saphyr renders into a `String` without fail (its
/// errors are for options, tags, anchors and failing writers, none of which occur here);
/// the tests render every shape.
fn render<T: Serialize>(doc: &T) -> String {
    let mut options = SerializerOptions::default();
    // `key:\n  - item`, as kubeadm's own docs write lists.
    options.compact_list_indent = false;
    serde_saphyr::to_string_with_options(doc, options).expect("a kubeadm config document renders")
}

/// The strings a node contributes, owned here so the documents can borrow them.
struct NodeText<'a> {
    name: &'a str,
    ip: String,
}

impl<'a> NodeText<'a> {
    fn new(node: &'a Node) -> Self {
        NodeText {
            name: &node.name,
            ip: node.address.to_string(),
        }
    }
    fn registration(&self) -> NodeRegistration<'_> {
        NodeRegistration {
            name: DoubleQuoted(self.name),
            cri_socket: DoubleQuoted(CRI_SOCKET),
            image_pull_policy: "Never",
            kubelet_extra_args: [Arg {
                name: "node-ip",
                value: DoubleQuoted(&self.ip),
            }],
        }
    }
    fn api_endpoint(&self) -> ApiEndpoint<'_> {
        ApiEndpoint {
            advertise_address: DoubleQuoted(&self.ip),
            bind_port: API_PORT,
        }
    }
}

fn bootstrap_token(token: &str) -> BootstrapToken<'_> {
    BootstrapToken {
        token: DoubleQuoted(token),
        ttl: "24h0m0s",
        usages: FlowSeq(["signing", "authentication"]),
        groups: FlowSeq([DoubleQuoted("system:bootstrappers:kubeadm:default-node-token")]),
    }
}

fn cluster_configuration(c: &Cluster, endpoint: &str, k8s: &str, img: &Images) -> String {
    render(&ClusterConfiguration {
        api_version: KUBEADM_API,
        kind: "ClusterConfiguration",
        cluster_name: DoubleQuoted(&c.name),
        kubernetes_version: DoubleQuoted(k8s),
        control_plane_endpoint: DoubleQuoted(endpoint),
        image_repository: DoubleQuoted(&img.repository),
        networking: Networking {
            pod_subnet: DoubleQuoted(&c.pod_cidr),
            service_subnet: DoubleQuoted(&c.service_cidr),
            dns_domain: DoubleQuoted(&c.dns_domain),
        },
        etcd: img.etcd_tag.as_deref().map(|t| Etcd {
            local: ImageMeta {
                image_tag: DoubleQuoted(t),
            },
        }),
        dns: img.coredns_tag.as_deref().map(|t| ImageMeta {
            image_tag: DoubleQuoted(t),
        }),
    })
}

fn kubelet_configuration(c: &Cluster) -> String {
    render(&KubeletConfiguration {
        api_version: KUBELET_API,
        kind: "KubeletConfiguration",
        cgroup_driver: "systemd",
        fail_swap_on: true,
        server_tls_bootstrap: c.kubelet_serving_certs == KubeletServingCerts::ClusterSigned,
    })
}

fn kube_proxy_configuration(c: &Cluster) -> String {
    render(&KubeProxyConfiguration {
        api_version: KUBE_PROXY_API,
        kind: "KubeProxyConfiguration",
        mode: c.proxy_mode.as_str(),
    })
}

/// `InitConfiguration` + `ClusterConfiguration` + `KubeletConfiguration` +
/// `KubeProxyConfiguration` for the first control plane (kubeadm stores the last two in
/// the cluster for every node that joins).
pub fn init_config(c: &Cluster, node: &Node, k8s: &str, img: &Images, secrets: &Secrets) -> String {
    let n = NodeText::new(node);
    let init = render(&InitConfiguration {
        api_version: KUBEADM_API,
        kind: "InitConfiguration",
        bootstrap_tokens: secrets.token.as_deref().map(bootstrap_token).into_iter().collect(),
        certificate_key: secrets.certificate_key.as_deref().map(DoubleQuoted),
        local_api_endpoint: n.api_endpoint(),
        node_registration: n.registration(),
    });
    let cluster = cluster_configuration(c, &c.endpoint_with_port(), k8s, img);
    format!(
        "# Generated by kbundle: kubeadm init --config this-file\n{init}---\n{cluster}---\n{}---\n{}",
        kubelet_configuration(c),
        kube_proxy_configuration(c)
    )
}

/// `JoinConfiguration` for other control planes and workers; `None` while the token or CA
/// hash is not known yet.
pub fn join_config(c: &Cluster, node: &Node, role: Role, secrets: &Secrets) -> Option<String> {
    let token = secrets.token.as_deref()?;
    let hash = secrets.ca_cert_hash.as_deref()?;
    let n = NodeText::new(node);
    let endpoint = c.endpoint_with_port();
    let join = render(&JoinConfiguration {
        api_version: KUBEADM_API,
        kind: "JoinConfiguration",
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: DoubleQuoted(&endpoint),
                token: DoubleQuoted(token),
                ca_cert_hashes: [DoubleQuoted(hash)],
            },
        },
        node_registration: n.registration(),
        control_plane: (role == Role::ControlPlane).then(|| JoinControlPlane {
            local_api_endpoint: n.api_endpoint(),
            certificate_key: secrets.certificate_key.as_deref().map(DoubleQuoted),
        }),
    });
    Some(format!(
        "# Generated by kbundle: kubeadm join --config this-file\n{join}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn example() -> Cluster {
        match Cluster::parse(Path::new("c.toml"), crate::cluster::EXAMPLE) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn dns_domain_injection_is_refused_and_values_stay_on_their_line() {
        // The config refuses a crafted dns-domain (named with its line)…
        let evil = crate::cluster::EXAMPLE.replace(
            "dns-domain = \"cluster.local\"",
            "dns-domain = \"cluster.local\\nanonymous-auth: true\"",
        );
        assert!(evil.contains("anonymous-auth"), "example changed shape");
        let e = Cluster::parse(Path::new("c.toml"), &evil).unwrap_err().to_string();
        assert!(e.contains("cluster.dns-domain"), "{e}");
        // …and every value written into kubeadm YAML is one quoted scalar anyway.
        assert_eq!(q("a\nanonymous-auth: true"), "\"a\\nanonymous-auth: true\"");
        let c = example();
        let img = Images {
            repository: "registry.k8s.io".into(),
            etcd_tag: None,
            coredns_tag: None,
        };
        let s = init_config(&c, &c.nodes[0], "v1.34.3", &img, &Secrets::default());
        assert!(s.contains("  dnsDomain: \"cluster.local\"\n"), "{s}");
        // A value from outside that would break out of its line stays one scalar.
        let s = init_config(
            &c,
            &c.nodes[0],
            "v1.34.3\nanonymous-auth: true",
            &img,
            &Secrets::default(),
        );
        assert!(
            s.contains("kubernetesVersion: \"v1.34.3\\nanonymous-auth: true\"\n"),
            "{s}"
        );
    }

    #[test]
    fn init_and_join_configs() {
        let c = example();
        let img = Images {
            repository: "registry.k8s.io".into(),
            etcd_tag: Some("3.6.5-0".into()),
            coredns_tag: Some("v1.12.1".into()),
        };
        let s = init_config(&c, &c.nodes[0], "v1.34.3", &img, &Secrets::default());
        assert!(
            s.contains("kubernetesVersion: \"v1.34.3\"")
                && s.contains("imagePullPolicy: Never")
                && s.contains("imageTag: \"3.6.5-0\"")
        );
        assert!(s.contains("kind: InitConfiguration") && s.contains("kind: KubeletConfiguration"));
        assert!(join_config(&c, &c.nodes[1], Role::Worker, &Secrets::default()).is_none());
        let sec = Secrets {
            token: Some("abcdef.0123456789abcdef".parse().unwrap()),
            ca_cert_hash: Some(format!("sha256:{}", "a".repeat(64)).parse().unwrap()),
            certificate_key: None,
        };
        let j = join_config(&c, &c.nodes[1], Role::Worker, &sec).unwrap();
        assert!(j.contains("apiServerEndpoint: \"192.168.122.10:6443\"") && !j.contains("controlPlane:"));
    }

    #[test]
    fn proxy_mode_and_cluster_signed_serving_certs_reach_kubeadm() {
        let mut c = example();
        let img = Images {
            repository: "registry.k8s.io".into(),
            etcd_tag: None,
            coredns_tag: None,
        };
        let s = init_config(&c, &c.nodes[0], "v1.34.3", &img, &Secrets::default());
        assert!(
            s.ends_with(
                "---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n"
            ),
            "{s}"
        );
        assert!(!s.contains("serverTLSBootstrap"), "{s}");
        c.proxy_mode = crate::cluster::ProxyMode::Nftables;
        c.kubelet_serving_certs = KubeletServingCerts::ClusterSigned;
        let s = init_config(&c, &c.nodes[0], "v1.34.3", &img, &Secrets::default());
        assert!(s.contains("\nmode: nftables\n"), "{s}");
        assert!(s.contains("failSwapOn: true\nserverTLSBootstrap: true\n---\n"), "{s}");
    }

    #[test]
    fn q_quotes_as_the_documents_do() {
        for s in [
            "cluster.local",
            "a\"b",
            "back\\slash",
            "tab\there",
            "line\nbreak",
            "ünï",
            "#x: y",
        ] {
            let doc = render(&ImageMeta {
                image_tag: DoubleQuoted(s),
            });
            assert_eq!(doc, format!("imageTag: {}\n", q(s)), "{s:?}");
        }
    }
}
