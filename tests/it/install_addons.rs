//! Bootstrap's add-ons against stand-ins that model the cluster (tests/stand-ins/
//! kubectl-cluster): the patched manifests applied from /etc/kbundle/addons, the waits,
//! the one-node untaint, an unpatched metrics-server as negative control, and the
//! cluster-signed path with real CSRs made by the real openssl. Nodes are prepared from a
//! real bundle (real containerd imports the images the stand-in cluster may run).

use super::install::{fixture, install, node_root, stand_in, text, Fixture, KBUNDLE};
use crate::support;
use crate::support::node::{bootstrap_stand_ins, StandIns};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A node prepared from the bundle, whose cluster calls go to stand-ins: kubectl-cluster
/// (its state holds the images the real containerd imported) and systemctl.
struct Booted(StandIns);

impl std::ops::Deref for Booted {
    type Target = StandIns;
    fn deref(&self) -> &StandIns {
        &self.0
    }
}

fn prepared_with_stand_ins(f: &Fixture, config: &Path, node: &str) -> Booted {
    let root = node_root(f, node);
    let o = Command::new(KBUNDLE)
        .args(["install", "--bundle"])
        .arg(&f.archive)
        .arg("--config")
        .arg(config)
        .arg("--root")
        .arg(&root)
        .args(["--node", node, "--phase", "prepare"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let dir = f.tmp.path().join(format!("{node}-stand-ins"));
    Booted(bootstrap_stand_ins(&root, &dir, &stand_in("kubectl-cluster")))
}

impl Booted {
    fn bootstrap(&self, f: &Fixture, config: &Path, node: &str) -> Output {
        let mut c = Command::new(KBUNDLE);
        c.args(["install", "--bundle"])
            .arg(&f.archive)
            .arg("--config")
            .arg(config)
            .arg("--root")
            .arg(&self.root)
            .args(["--node", node, "--phase", "bootstrap"]);
        self.env(&mut c);
        c.output().unwrap()
    }

    /// The stand-in cluster's kubectl, run directly.
    fn kubectl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(self.root.join("usr/local/bin/kubectl"));
        c.args(args);
        self.env(&mut c);
        c.output().unwrap()
    }
}

fn position(calls: &[String], needle: &str) -> usize {
    calls
        .iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no call with {needle:?}: {calls:#?}"))
}

/// The example config cut down to its init node.
fn one_node_config(f: &Fixture) -> PathBuf {
    let text = std::fs::read_to_string(&f.config).unwrap();
    let cut = text.find("[[node]]\nname = \"worker1\"").expect("example has worker1");
    let p = f.tmp.path().join("one-node.toml");
    std::fs::write(&p, &text[..cut]).unwrap();
    p
}

#[test]
fn bootstrap_runs_kubeadm_addons_and_waits_in_order() {
    let f = fixture(false);
    let b = prepared_with_stand_ins(&f, &f.config, "cp1");
    let o = b.bootstrap(&f, &f.config, "cp1");
    assert!(o.status.success(), "{}", text(&o));
    let calls = b.calls();
    let pos = |needle: &str| position(&calls, needle);
    assert!(pos("systemctl daemon-reload") < pos("systemctl enable --now containerd.service"));
    assert!(pos("enable --now containerd") < pos("kubeadm init --config"));
    assert!(pos("kubeadm init --config") < pos("apply -f"));
    // The patched copies are applied, flannel first.
    let addons = b.root.join("etc/kbundle/addons");
    let flannel = pos(&format!(
        "apply -f {}",
        addons.join("flannel-kube-flannel.yml").display()
    ));
    let metrics = pos(&format!(
        "apply -f {}",
        addons.join("metrics-server-components.yaml").display()
    ));
    assert!(flannel < metrics && metrics < pos("get node cp1"), "{calls:#?}");
    let args = kbundle::addons::patch::metrics_server_args(
        &std::fs::read_to_string(addons.join("metrics-server-components.yaml")).unwrap(),
    )
    .unwrap();
    assert!(args.iter().any(|a| a == "--kubelet-insecure-tls"), "{args:?}");
    // Then the waits: CoreDNS and flannel run on the tainted control plane; metrics-server
    // waits for a worker (three nodes in this config), and the taint stays.
    assert!(pos("get node cp1") < pos("rollout status deployment/coredns"));
    assert!(pos("rollout status deployment/coredns") < pos("rollout status daemonset/kube-flannel-ds"));
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("deployment/metrics-server") || c.contains(" taint ")),
        "{calls:#?}"
    );
    assert!(calls[pos("kubeadm init --config")].contains("--upload-certs"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Deployment kube-system/metrics-server runs once a worker joins")
            && out.contains("--node worker1")
            && out.contains("--token abcdef.0123456789abcdef")
            && out.contains("--ca-cert-hash sha256:"),
        "{out}"
    );
    let root = &b.root;
    assert!(root.join("var/lib/kbundle/bootstrap.done").exists());
    assert!(root.join("root/.kube/config").exists());
    let init = std::fs::read_to_string(root.join("etc/kbundle/kubeadm-init.yaml")).unwrap();
    // kubeadm's own etcd/coredns tags for v1.34.3 are the bundle's: nothing is pinned (a pin
    // is stored in the cluster and would freeze them across upgrades).
    assert!(
        init.contains("kubernetesVersion: \"v1.34.3\"")
            && init.contains("imagePullPolicy: Never")
            && !init.contains("imageTag")
            && init.contains("kind: KubeProxyConfiguration\nmode: iptables\n"),
        "{init}"
    );
    // Re-running a completed bootstrap does nothing.
    let n = calls.len();
    let o = install(&f, root, &["--node", "cp1", "--phase", "bootstrap"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(b.calls().len(), n);
    // A bootstrapped node is never moved to another version by install (only by upgrade apply).
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/kbundle/kubernetes-version")).unwrap(),
        "v1.34.3\n"
    );
    std::fs::write(root.join("var/lib/kbundle/kubernetes-version"), "v1.33.7\n").unwrap();
    let o = install(&f, root, &["--node", "cp1", "--phase", "all"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("upgrade apply"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_one_node_cluster_untaints_and_waits_for_every_addon_and_an_unpatched_metrics_server_never_is() {
    let f = fixture(false);
    let config = one_node_config(&f);
    let b = prepared_with_stand_ins(&f, &config, "cp1");
    let o = b.bootstrap(&f, &config, "cp1");
    assert!(o.status.success(), "{}", text(&o));
    let calls = b.calls();
    let pos = |needle: &str| position(&calls, needle);
    let taint = pos("taint nodes cp1 node-role.kubernetes.io/control-plane:NoSchedule-");
    assert!(pos("kubeadm init") < taint && taint < pos("apply -f"), "{calls:#?}");
    assert!(pos("get node cp1") < pos("-n kube-system rollout status deployment/metrics-server"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Deployment kube-system/metrics-server is available"),
        "{out}"
    );
    // Negative control: upstream's components.yaml as downloaded (no --kubelet-insecure-tls,
    // kubelets self-signed) never becomes available in the stand-in cluster.
    let raw = f.tmp.path().join("components.yaml");
    std::fs::write(&raw, support::upstream::metrics_server_manifest("0.8.0")).unwrap();
    let o = b.kubectl(&["apply", "-f", raw.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = b.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/metrics-server",
        "--timeout=5s",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("metrics-server") && err.contains("x509"), "{err}");
    // The stand-in refuses what a cluster would not serve.
    let bad = f.tmp.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Deploymnet\nmetadata:\n  name: x\n").unwrap();
    let o = b.kubectl(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no matches for kind \"Deploymnet\""),
        "{}",
        text(&o)
    );
}

/// A kubelet serving CSR for `node` made by the real openssl, as the cluster lists it.
fn serving_csr(dir: &Path, name: &str, user: &str, subject: &str, san: &str) -> serde_json::Value {
    let (key, req) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.csr")));
    let o = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
        ])
        .arg(&key)
        .args(["-subj", subject, "-addext", &format!("subjectAltName={san}"), "-out"])
        .arg(&req)
        .output()
        .expect("openssl is needed");
    assert!(o.status.success(), "{}", text(&o));
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).unwrap());
    serde_json::json!({
        "metadata": {"name": name},
        "spec": {"signerName": "kubernetes.io/kubelet-serving", "username": user,
                 "usages": ["digital signature", "server auth"], "request": pem},
        "status": {}
    })
}

#[test]
fn cluster_signed_kubelet_certificates_are_approved_for_the_node_only_and_metrics_server_verifies_them() {
    let f = fixture(false);
    let config = one_node_config(&f);
    let cfg = std::fs::read_to_string(&config).unwrap().replace(
        "kubelet-serving-certs = \"self-signed\"",
        "kubelet-serving-certs = \"cluster-signed\"",
    );
    assert!(cfg.contains("cluster-signed"), "example changed shape");
    std::fs::write(&config, cfg).unwrap();
    let b = prepared_with_stand_ins(&f, &config, "cp1");
    // The kubelet's own request, and one asking for more than the node's names.
    let csrs = serde_json::json!({"items": [
        serving_csr(f.tmp.path(), "csr-cp1", "system:node:cp1", "/O=system:nodes/CN=system:node:cp1", "DNS:cp1,IP:192.168.122.10"),
        serving_csr(f.tmp.path(), "csr-wide", "system:node:cp1", "/O=system:nodes/CN=system:node:cp1", "DNS:cp1,DNS:kubernetes.default"),
    ]});
    std::fs::write(b.state.join("csrs.json"), csrs.to_string()).unwrap();
    let o = b.bootstrap(&f, &config, "cp1");
    assert!(o.status.success(), "{}", text(&o));
    let calls = b.calls();
    let pos = |needle: &str| position(&calls, needle);
    assert!(pos("systemctl start kbundle-csr-approve.timer") < pos("get node cp1"));
    assert!(pos("get node cp1") < pos("certificate approve csr-cp1"));
    assert!(pos("certificate approve csr-cp1") < pos("rollout status deployment/metrics-server"));
    assert!(!calls.iter().any(|c| c.contains("approve csr-wide")), "{calls:#?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("left CSR csr-wide pending: asks for DNS name \"kubernetes.default\""),
        "{out}"
    );
    // metrics-server verifies the kubelet's certificate and still became available.
    let args = kbundle::addons::patch::metrics_server_args(
        &std::fs::read_to_string(b.root.join("etc/kbundle/addons/metrics-server-components.yaml")).unwrap(),
    )
    .unwrap();
    assert!(!args.iter().any(|a| a.contains("insecure")), "{args:?}");
    let init = std::fs::read_to_string(b.root.join("etc/kbundle/kubeadm-init.yaml")).unwrap();
    assert!(init.contains("serverTLSBootstrap: true"), "{init}");
    let timer = std::fs::read_link(
        b.root
            .join("etc/systemd/system/timers.target.wants/kbundle-csr-approve.timer"),
    )
    .unwrap();
    assert_eq!(timer, Path::new("/etc/systemd/system/kbundle-csr-approve.timer"));
    // systemd-analyze verify, where available, accepts the approver's units.
    if Command::new("systemd-analyze").arg("--version").output().is_ok() {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", b.root.display()))
            .args([
                "/etc/systemd/system/kbundle-csr-approve.service",
                "/etc/systemd/system/kbundle-csr-approve.timer",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("Unknown") && !err.contains("bad-setting"), "{err}");
    }
}
