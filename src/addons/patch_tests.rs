//! The patches on the real release manifests (built from upstream's kustomizations at the
//! pinned tags), checked as parsed objects and by the real kubectl's YAML reader.

use super::*;
use std::process::Command;

pub(crate) const FLANNEL_YML: &str = include_str!("../../tests/fixtures/addons/kube-flannel-v0.27.3.yml");
pub(crate) const METRICS_YML: &str = include_str!("../../tests/fixtures/addons/metrics-server-v0.8.0-components.yaml");

fn args(text: &str) -> Vec<String> {
    metrics_server_args(text).unwrap()
}

fn net_conf(text: &str) -> serde_json::Value {
    let (_, objs) = objects(text, FLANNEL).unwrap();
    let cm = find(&objs, "ConfigMap", "kube-flannel-cfg").unwrap();
    serde_json::from_str(&scalar(&cm.get_mapping("data").unwrap(), "net-conf.json").unwrap()).unwrap()
}

/// The real kubectl (`kubectl kustomize`, offline) reads `text` as Kubernetes objects and
/// prints them back.
fn kubectl_reads(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), text).unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), "resources:\n- m.yaml\n").unwrap();
    let o = Command::new("/usr/bin/kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("/usr/bin/kubectl (the real client) is needed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn flannel_gets_the_pod_cidr_and_nftables_mode_and_kubectl_reads_it() {
    let out = flannel(FLANNEL_YML, "10.32.0.0/12", true).unwrap();
    let conf = net_conf(&out);
    assert_eq!(conf["Network"], "10.32.0.0/12");
    assert_eq!(conf["EnableNFTables"], true);
    assert_eq!(conf["Backend"]["Type"], "vxlan", "other keys kept: {conf}");
    let read = kubectl_reads(&out);
    assert!(read.contains("\"Network\":\"10.32.0.0/12\""), "{read}");
    assert!(read.contains("\"EnableNFTables\":true"), "{read}");
    // Everything else is upstream's text, byte for byte.
    assert_eq!(out.lines().count(), FLANNEL_YML.lines().count() - 6, "{out}");
    assert!(out.contains("image: ghcr.io/flannel-io/flannel:v0.27.3"));
    let iptables = flannel(&out, "10.244.0.0/16", false).unwrap();
    assert_eq!(net_conf(&iptables)["EnableNFTables"], false);
    assert_eq!(
        flannel(&iptables, "10.244.0.0/16", false).unwrap(),
        iptables,
        "idempotent"
    );
}

#[test]
fn flannel_drops_other_spellings_of_the_keys_go_would_also_match() {
    let text = FLANNEL_YML.replace("\"EnableNFTables\": false", "\"enablenftables\": false");
    assert!(text.contains("enablenftables"), "fixture changed shape");
    let conf = net_conf(&flannel(&text, "10.244.0.0/16", true).unwrap());
    assert!(conf.get("enablenftables").is_none(), "{conf}");
    assert_eq!(conf["EnableNFTables"], true);
}

#[test]
fn a_manifest_without_flannels_configmap_is_refused_by_name() {
    let e = flannel("kind: ConfigMap\nmetadata:\n  name: other\n", "10.244.0.0/16", false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ConfigMap kube-flannel-cfg"), "{e}");
}

#[test]
fn metrics_server_with_self_signed_kubelets_skips_tls_verification_once() {
    let out = metrics_server(METRICS_YML, true).unwrap();
    let a = args(&out);
    assert_eq!(a.iter().filter(|x| *x == "--kubelet-insecure-tls").count(), 1, "{a:?}");
    let types: Vec<&String> = a.iter().filter(|x| x.starts_with(ADDRESS_TYPES)).collect();
    assert_eq!(
        types,
        ["--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname"]
    );
    assert_eq!(metrics_server(&out, true).unwrap(), out, "idempotent");
    let read = kubectl_reads(&out);
    assert!(read.contains("- --kubelet-insecure-tls\n"), "{read}");
}

#[test]
fn metrics_server_with_cluster_signed_kubelets_keeps_verifying() {
    let insecure = metrics_server(METRICS_YML, true).unwrap();
    let out = metrics_server(&insecure, false).unwrap();
    let a = args(&out);
    assert!(!a.iter().any(|x| x.starts_with("--kubelet-insecure-tls")), "{a:?}");
    assert_eq!(a, args(METRICS_YML), "upstream's args, nothing else");
    kubectl_reads(&out);
}

#[test]
fn metrics_server_address_types_get_internal_ip_first_and_once() {
    let text = METRICS_YML.replace(
        "- --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "- --kubelet-insecure-tls=false\n        - --kubelet-preferred-address-types=Hostname,InternalIP\n        - --kubelet-preferred-address-types=ExternalIP",
    );
    assert!(text.contains("=Hostname,InternalIP"), "fixture changed shape");
    let a = args(&metrics_server(&text, true).unwrap());
    let types: Vec<&String> = a.iter().filter(|x| x.starts_with(ADDRESS_TYPES)).collect();
    assert_eq!(
        types,
        ["--kubelet-preferred-address-types=InternalIP,Hostname"],
        "{a:?}"
    );
    assert_eq!(
        a.iter()
            .filter(|x| x.starts_with("--kubelet-insecure-tls"))
            .collect::<Vec<_>>(),
        ["--kubelet-insecure-tls"]
    );
    let none = METRICS_YML.replace(
        "        - --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname\n",
        "",
    );
    let a = args(&metrics_server(&none, false).unwrap());
    assert!(a.contains(&DEFAULT_ADDRESS_TYPES.to_string()), "{a:?}");
}

#[test]
fn workloads_name_each_deployment_and_daemonset_with_its_namespace() {
    let w = workloads(FLANNEL_YML, FLANNEL).unwrap();
    assert_eq!(
        w,
        [Workload {
            kind: "DaemonSet".into(),
            namespace: "kube-flannel".into(),
            name: "kube-flannel-ds".into(),
            tolerates_control_plane: true,
        }]
    );
    let w = workloads(METRICS_YML, METRICS).unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(
        (w[0].kind.as_str(), w[0].namespace.as_str()),
        ("Deployment", "kube-system")
    );
}
