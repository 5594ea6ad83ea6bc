//! Bootstrap's add-on steps through the recorded node seam: patched manifests written and
//! applied from /etc/kbundle/addons, the control-plane taint removed only on a one-node
//! cluster, the waits (and their refusal naming the workload), and the cluster-signed
//! path (approver units, one approval pass before the waits, metrics-server verifying TLS).

use super::super::{run_on, Options, Phase};
use crate::host::record::{Event, Recorder};
use crate::testkit;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct Scene {
    _t: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    config: PathBuf,
}

/// The example cluster, edited by `edit` (the config text in, the config text out).
fn scene(edit: impl Fn(String) -> String) -> Scene {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    testkit::node_root(&root);
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    let bundle = testkit::bundle_dir(&t.path().join("b"), &["v1.34.3"]);
    let config = testkit::cluster_file(t.path(), "open-ports");
    let text = edit(std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, text).unwrap();
    Scene {
        _t: t,
        root,
        bundle,
        config,
    }
}

/// Only the init node.
fn one_node(text: String) -> String {
    let cut = text.find("[[node]]\nname = \"worker1\"").expect("example has worker1");
    text[..cut].to_string()
}

fn cluster_signed_nftables(text: String) -> String {
    let t = text
        .replace("proxy-mode = \"iptables\"", "proxy-mode = \"nftables\"")
        .replace(
            "kubelet-serving-certs = \"self-signed\"",
            "kubelet-serving-certs = \"cluster-signed\"",
        );
    assert!(
        t.contains("cluster-signed") && t.contains("\"nftables\""),
        "example changed shape"
    );
    t
}

fn run(s: &Scene, script: impl Fn(&Recorder)) -> (Arc<Recorder>, Result<(), super::InstallError>) {
    let (rec, host) = testkit::recording_host(&s.root, true);
    rec.answer(
        "--version",
        0,
        "containerd github.com/containerd/containerd/v2 v2.1.5 x\n",
    );
    let images = "registry.k8s.io/pause:3.10.1\nregistry.k8s.io/etcd:3.6.5-0\nregistry.k8s.io/kube-apiserver:v1.34.3\n";
    rec.answer("images ls -q", 0, images);
    rec.answer("get node", 0, "True");
    rec.answer("get csr -o json", 0, "{\"items\": []}");
    rec.creates(
        "kubeadm init --config",
        &s.root.join("etc/kubernetes/admin.conf"),
        "admin\n",
    );
    script(&rec);
    let opts = Options {
        bundle: s.bundle.clone(),
        config: s.config.clone(),
        node: Some("cp1".into()),
        role: None,
        root: s.root.clone(),
        phase: Phase::All,
        dry_run: false,
        skip_preflight: Vec::new(),
        secrets: Default::default(),
        ready_timeout: Duration::from_secs(120),
        trust: Default::default(),
    };
    let r = run_on(host, opts);
    (rec, r)
}

fn at(cmds: &[String], needle: &str) -> usize {
    cmds.iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no command with {needle:?} in {cmds:#?}"))
}

fn read(s: &Scene, p: &str) -> String {
    std::fs::read_to_string(s.root.join(p.trim_start_matches('/'))).unwrap()
}

#[test]
fn a_one_node_cluster_untaints_applies_patched_addons_then_waits_for_each() {
    let s = scene(one_node);
    let (rec, r) = run(&s, |_| {});
    r.unwrap();
    let cmds = rec.commands();
    let order = [
        at(&cmds, "kubeadm init --config"),
        at(
            &cmds,
            "taint nodes cp1 node-role.kubernetes.io/control-plane:NoSchedule-",
        ),
        at(&cmds, "apply -f"),
        at(&cmds, "get node cp1"),
        at(&cmds, "-n kube-system rollout status deployment/coredns"),
        at(&cmds, "-n kube-flannel rollout status daemonset/kube-flannel-ds"),
        at(&cmds, "-n kube-system rollout status deployment/metrics-server"),
    ];
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{cmds:#?}");
    // Applied from the patched copies, which were written first.
    let flannel = "/etc/kbundle/addons/flannel-kube-flannel.yml";
    let metrics = "/etc/kbundle/addons/metrics-server-components.yaml";
    for f in [flannel, metrics] {
        let apply = at(&cmds, &format!("apply -f {}{f}", s.root.display()));
        assert!(apply > order[1], "{cmds:#?}");
    }
    let args = crate::addons::patch::metrics_server_args(&read(&s, metrics)).unwrap();
    assert!(args.iter().any(|a| a == "--kubelet-insecure-tls"), "{args:?}");
    assert!(read(&s, flannel).contains("\"EnableNFTables\":false"));
    assert!(
        !cmds.iter().any(|c| c.contains("csr")),
        "self-signed: no CSR approval: {cmds:#?}"
    );
    let w = rec.writes_under(&s.root);
    assert!(w.iter().position(|p| p == flannel) < w.iter().position(|p| p == "/var/lib/kbundle/bootstrap.done"));
}

#[test]
fn a_multi_node_cluster_keeps_the_taint_and_leaves_metrics_server_to_the_workers() {
    let s = scene(|t| t);
    let (rec, r) = run(&s, |_| {});
    r.unwrap();
    let cmds = rec.commands();
    assert!(!cmds.iter().any(|c| c.contains(" taint ")), "{cmds:#?}");
    at(&cmds, "rollout status daemonset/kube-flannel-ds");
    at(&cmds, "rollout status deployment/coredns");
    assert!(
        !cmds
            .iter()
            .any(|c| c.contains("rollout status deployment/metrics-server")),
        "{cmds:#?}"
    );
}

#[test]
fn an_addon_that_never_becomes_available_fails_the_wait_by_name() {
    let s = scene(one_node);
    let (rec, r) = run(&s, |rec| {
        rec.answer("rollout status deployment/metrics-server", 1, "");
    });
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("Deployment kube-system/metrics-server is not available after 120s")
            && e.contains("kubectl -n kube-system describe deployment metrics-server"),
        "{e}"
    );
    let tries = rec
        .commands()
        .iter()
        .filter(|c| c.contains("rollout status deployment/metrics-server"))
        .count();
    assert!(
        (20..=26).contains(&tries),
        "retried every 5 s within the timeout: {tries}"
    );
    assert!(!s.root.join("var/lib/kbundle/bootstrap.done").exists());
}

#[test]
fn cluster_signed_installs_the_approver_approves_before_waiting_and_keeps_tls_verification() {
    let s = scene(|t| cluster_signed_nftables(one_node(t)));
    let (rec, r) = run(&s, |_| {});
    r.unwrap();
    let cmds = rec.commands();
    let start = at(&cmds, "systemctl start kbundle-csr-approve.timer");
    let ready = at(&cmds, "get node cp1");
    let pass = at(&cmds, "get csr -o json");
    let wait = at(&cmds, "rollout status deployment/metrics-server");
    assert!(start < ready && ready < pass && pass < wait, "{cmds:#?}");
    let linked = rec.events().into_iter().any(|e| {
        matches!(e, Event::Symlink { link, target }
            if link.ends_with("timers.target.wants/kbundle-csr-approve.timer")
                && target == Path::new("/etc/systemd/system/kbundle-csr-approve.timer"))
    });
    assert!(linked, "{:#?}", rec.events());
    let service = read(&s, "/etc/systemd/system/kbundle-csr-approve.service");
    assert!(
        service.contains(" csr-approve --config /etc/kbundle/cluster.toml --once\n"),
        "{service}"
    );
    assert!(read(&s, "/etc/kbundle/cluster.toml").contains("cluster-signed"));
    let metrics = read(&s, "/etc/kbundle/addons/metrics-server-components.yaml");
    let args = crate::addons::patch::metrics_server_args(&metrics).unwrap();
    assert!(!args.iter().any(|a| a.contains("kubelet-insecure-tls")), "{args:?}");
    assert!(read(&s, "/etc/kbundle/addons/flannel-kube-flannel.yml").contains("\"EnableNFTables\":true"));
    let init = read(&s, "/etc/kbundle/kubeadm-init.yaml");
    assert!(
        init.contains("serverTLSBootstrap: true") && init.contains("mode: nftables"),
        "{init}"
    );
}
