//! `upgrade stage` through the node seam: every hop's images imported and pinned, every
//! hop's binaries in their version directories, no link moved and nothing restarted, the
//! marker and the Node annotation written; and `upgrade apply` refusing a hop until every
//! node is staged (naming the missing ones), or warning and going on with --force.

use super::*;
use crate::host::record::Recorder;
use crate::testkit;
use crate::upgrade::apply::{self, tests as at};
use std::sync::Arc;

/// An error and its sources, one per line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push('\n');
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

const HOPS: [&str; 2] = ["v1.33.7", "v1.34.3"];

struct Node {
    _t: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
}

/// A worker running v1.32.11 (binaries linked from its version directory) and a bundle
/// with the hops v1.33.7 and v1.34.3.
fn node() -> Node {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    testkit::node_root(&root);
    let bin = root.join("usr/local/bin");
    let old = root.join("opt/kbundle/versions/kubernetes-v1.32.11");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&old).unwrap();
    for b in ["kubeadm", "kubelet", "kubectl"] {
        std::fs::write(old.join(b), "old").unwrap();
        std::os::unix::fs::symlink(format!("/opt/kbundle/versions/kubernetes-v1.32.11/{b}"), bin.join(b)).unwrap();
    }
    let bundle = testkit::bundle_dir(&t.path().join("b"), &HOPS);
    Node { _t: t, root, bundle }
}

fn stage_opts(n: &Node) -> Options {
    Options {
        bundle: n.bundle.clone(),
        node: "worker1".into(),
        root: n.root.clone(),
        kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
        no_annotate: false,
        dry_run: false,
        trust: Default::default(),
    }
}

fn recorder(n: &Node) -> (Arc<Recorder>, Host) {
    let (rec, host) = testkit::recording_host(&n.root, true);
    rec.answer(
        "--version",
        0,
        "containerd github.com/containerd/containerd/v2 v2.1.5 x\n",
    );
    let mut listed = vec![
        "registry.k8s.io/pause:3.10.1".to_string(),
        "registry.k8s.io/etcd:3.6.5-0".into(),
    ];
    listed.extend(HOPS.iter().map(|h| format!("registry.k8s.io/kube-apiserver:{h}")));
    rec.answer("images ls -q", 0, &listed.join("\n"));
    (rec, host)
}

#[test]
fn stage_imports_and_pins_every_hop_places_binaries_and_switches_nothing() {
    let n = node();
    let (rec, host) = recorder(&n);
    let report = run_on(host, &stage_opts(&n)).unwrap();
    let cmds = rec.commands();
    assert_eq!(
        cmds.iter().filter(|c| c.contains("images import -")).count(),
        1,
        "{cmds:#?}"
    );
    for h in HOPS {
        let pin = format!("images label registry.k8s.io/kube-apiserver:{h} io.cri-containerd.pinned=pinned");
        assert!(cmds.iter().any(|c| c.contains(&pin)), "{h} not pinned: {cmds:#?}");
        for b in ["kubeadm", "kubelet", "kubectl"] {
            let f = n.root.join(format!("opt/kbundle/versions/kubernetes-{h}/{b}"));
            assert!(std::fs::read_to_string(&f).unwrap().contains(h), "{}", f.display());
        }
    }
    assert_eq!(report.binaries.len(), 6);
    for b in ["kubeadm", "kubelet", "kubectl"] {
        let link = std::fs::read_link(n.root.join("usr/local/bin").join(b)).unwrap();
        assert_eq!(
            link,
            Path::new(&format!("/opt/kbundle/versions/kubernetes-v1.32.11/{b}"))
        );
    }
    assert!(
        !cmds.iter().any(|c| c.contains("systemctl") || c.contains("kubeadm ")),
        "{cmds:#?}"
    );
    let id = source::check_source(&n.bundle, &crate::trust::Policy::no_keys())
        .unwrap()
        .id()
        .hex();
    assert_eq!(report.id, id);
    let marker = std::fs::read_to_string(n.root.join("var/lib/kbundle/staged")).unwrap();
    assert_eq!(marker, format!("{id}\n"));
    let kubelet_conf = n.root.join("etc/kubernetes/kubelet.conf");
    let annotate = format!(
        "--kubeconfig {} annotate node worker1 --overwrite kbundle.io/staged={id}",
        kubelet_conf.display()
    );
    let last = cmds.last().unwrap();
    assert!(
        last.ends_with(&annotate),
        "annotation last, with the kubelet's kubeconfig: {last}"
    );
}

#[test]
fn staging_again_rewrites_no_binary() {
    let n = node();
    let (_rec, host) = recorder(&n);
    run_on(host, &stage_opts(&n)).unwrap();
    let (rec, host) = recorder(&n);
    run_on(host, &stage_opts(&n)).unwrap();
    let w = rec.writes_under(&n.root);
    assert!(
        !w.iter().any(|p| p.starts_with("/opt") || p.starts_with("/usr")),
        "{w:#?}"
    );
}

#[test]
fn a_failed_annotation_is_an_error_naming_the_node_and_kubeconfig_but_the_marker_stays() {
    let n = node();
    let (rec, host) = recorder(&n);
    rec.answer("annotate node", 1, "");
    let e = run_on(host, &stage_opts(&n)).unwrap_err();
    let chain = chain(&e);
    assert!(
        chain.contains("worker1") && chain.contains("/etc/kubernetes/kubelet.conf"),
        "{chain}"
    );
    assert!(chain.contains("scripted failure of annotate node"), "{chain}");
    assert!(n.root.join("var/lib/kbundle/staged").exists());
}

const NOW: [(&str, bool, &str, &str); 3] = [
    ("cp1", true, "v1.33.7", "v1.33.7"),
    ("worker1", false, "v1.33.7", ""),
    ("worker2", false, "v1.33.7", ""),
];
const LATER: [(&str, bool, &str, &str); 3] = [
    ("cp1", true, "v1.33.7", "v1.34.3"),
    ("worker1", false, "v1.33.7", ""),
    ("worker2", false, "v1.33.7", ""),
];

/// The first control plane, with worker1 and worker2 not staged.
fn unstaged_cluster(s: &at::Scene) -> (Arc<Recorder>, Host) {
    let (rec, host) = at::recorder(s, &NOW, &LATER);
    let (nodes, pods) = at::cluster(&NOW, &s.id, &["worker2", "worker1"]);
    rec.answer_times("get nodes", 0, &nodes, 2)
        .answer_times("get pods", 0, &pods, 1);
    (rec, host)
}

#[test]
fn apply_on_the_first_control_plane_refuses_until_every_node_is_staged() {
    let s = at::scene();
    let (rec, host) = unstaged_cluster(&s);
    let e = apply::run_on(host, &at::opts(&s, "cp1")).unwrap_err().to_string();
    assert!(e.contains("refusing to start hop v1.34.3"), "{e}");
    assert!(e.contains("worker1, worker2") && !e.contains("cp1"), "{e}");
    assert!(
        e.contains(&format!("kbundle upgrade stage --bundle {}", s.bundle.display())),
        "{e}"
    );
    let cmds = rec.commands();
    assert!(cmds.iter().all(|c| c.contains("kubectl")), "only observed: {cmds:#?}");
    assert!(!s.root.join("var/lib/kbundle/backups").exists());
}

#[test]
fn apply_with_force_goes_on_without_every_node_staged() {
    let s = at::scene();
    let (rec, host) = unstaged_cluster(&s);
    let o = apply::Options {
        force: true,
        ..at::opts(&s, "cp1")
    };
    apply::run_on(host, &o).unwrap();
    let cmds = rec.commands();
    assert!(
        cmds.iter().any(|c| c.contains("kubeadm upgrade apply v1.34.3 -y")),
        "{cmds:#?}"
    );
}

#[test]
fn apply_on_a_node_that_has_not_staged_the_bundle_names_the_command() {
    let s = at::scene();
    std::fs::write(s.root.join("var/lib/kbundle/staged"), "0123\n").unwrap();
    let now = [("cp1", true, "v1.34.3", "v1.34.3"), ("worker1", false, "v1.33.7", "")];
    let (rec, host) = at::recorder(&s, &now, &now);
    let e = apply::run_on(host, &at::opts(&s, "worker1")).unwrap_err().to_string();
    assert!(e.contains("names bundle 0123"), "{e}");
    assert!(e.contains("run `kbundle upgrade stage --bundle"), "{e}");
    assert!(rec.commands().iter().all(|c| c.contains("kubectl")));
}

#[test]
fn unstaged_lists_nodes_without_this_bundles_annotation() {
    let nodes = serde_json::json!({"items": [
        {"metadata": {"name": "b", "annotations": {ANNOTATION: "old"}}},
        {"metadata": {"name": "a"}},
        {"metadata": {"name": "c", "annotations": {ANNOTATION: "id"}}},
    ]});
    assert_eq!(unstaged(&nodes, "id"), ["a", "b"]);
}
