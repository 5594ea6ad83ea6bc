//! Every step of `upgrade apply`, recorded through the node seam: the order of the etcd
//! snapshot, image import, kubeadm, drain, kubelet switch, Ready and uncordon; refusals of
//! out-of-order work; a control plane's kubelet waiting for its peers.

use super::*;
use crate::host::record::Recorder;
use crate::testkit;
use std::sync::Arc;

pub(crate) struct Scene {
    _t: tempfile::TempDir,
    pub root: PathBuf,
    pub bundle: PathBuf,
    /// The bundle's id; every node has staged it (`upgrade stage`), unless a test says not.
    pub id: String,
}

pub(crate) fn scene() -> Scene {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    testkit::node_root(&root);
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["etcdctl", "etcdutl"] {
        std::fs::write(bin.join(tool), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The binaries of the version the node runs now, linked as install leaves them.
    let old = root.join("opt/kbundle/versions/kubernetes-v1.33.7");
    std::fs::create_dir_all(&old).unwrap();
    for b in ["kubeadm", "kubelet", "kubectl"] {
        std::fs::write(old.join(b), "old").unwrap();
        std::os::unix::fs::symlink(format!("/opt/kbundle/versions/kubernetes-v1.33.7/{b}"), bin.join(b)).unwrap();
    }
    let pki = root.join("etc/kubernetes/pki/etcd");
    std::fs::create_dir_all(&pki).unwrap();
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::write(pki.join(f), "x").unwrap();
    }
    let bundle = testkit::bundle_dir(&t.path().join("b"), &["v1.34.3"]);
    let id = source::check_source(&bundle, &crate::trust::Policy::no_keys())
        .unwrap()
        .id()
        .hex();
    std::fs::create_dir_all(root.join("var/lib/kbundle")).unwrap();
    std::fs::write(root.join("var/lib/kbundle/staged"), format!("{id}\n")).unwrap();
    Scene {
        _t: t,
        root,
        bundle,
        id,
    }
}

pub(crate) fn opts(s: &Scene, node: &str) -> Options {
    options(&s.bundle, &s.root, node)
}

/// `upgrade apply`'s options for `node` of the node root `root`, as the CLI defaults them.
pub(crate) fn options(bundle: &Path, root: &Path, node: &str) -> Options {
    Options {
        bundle: bundle.to_path_buf(),
        node: node.into(),
        hop: None,
        root: root.to_path_buf(),
        kubeconfig: PathBuf::from("/etc/kubernetes/admin.conf"),
        first: None,
        etcd_endpoint: crate::etcd::snapshot::DEFAULT_ENDPOINT.into(),
        drain: Default::default(),
        ready_timeout: Duration::from_secs(60),
        dry_run: false,
        force: false,
        trust: Default::default(),
    }
}

/// A control plane's etcd 3.6.5 as the pre-hop snapshot meets it: `endpoint status`, the
/// tools' versions, `snapshot save` (creates the file) and `snapshot status`.
pub(crate) fn etcd_answers(rec: &Recorder) {
    rec.answer(
        "endpoint status",
        0,
        r#"[{"Status":{"version":"3.6.5","dbSize":20480}}]"#,
    );
    rec.answer("etcdctl version", 0, "etcdctl version: 3.6.5\nAPI version: 3.6\n")
        .answer("etcdutl version", 0, "etcdutl version: 3.6.5\nAPI version: 3.6\n");
    rec.creates_last_arg("snapshot save", "etcd snapshot bytes");
    rec.answer(
        "snapshot status",
        0,
        r#"{"hash":1,"revision":7,"totalKey":42,"totalSize":20480}"#,
    );
}

/// `kubectl get nodes` and `get pods` as the API server would answer: (name, control
/// plane?, kubelet version, API server version); every node but `unstaged` carries the
/// staged annotation for bundle `id`.
pub(crate) fn cluster(nodes: &[(&str, bool, &str, &str)], id: &str, unstaged: &[&str]) -> (String, String) {
    let items: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(n, cp, kubelet, _)| {
            let labels = if *cp {
                serde_json::json!({"node-role.kubernetes.io/control-plane": ""})
            } else {
                serde_json::json!({})
            };
            let mut annotations = serde_json::json!({});
            if !unstaged.contains(n) {
                annotations[super::super::stage::ANNOTATION] = serde_json::json!(id);
            }
            serde_json::json!({"metadata": {"name": n, "labels": labels, "annotations": annotations},
                "status": {"nodeInfo": {"kubeletVersion": kubelet}}})
        })
        .collect();
    let pods: Vec<serde_json::Value> = nodes
        .iter()
        .filter(|n| n.1)
        .map(|(n, _, _, api)| {
            serde_json::json!({"spec": {"nodeName": n, "containers": [
                {"name": "kube-apiserver", "image": format!("registry.k8s.io/kube-apiserver:{api}")}]}})
        })
        .collect();
    (
        serde_json::json!({ "items": items }).to_string(),
        serde_json::json!({ "items": pods }).to_string(),
    )
}

pub(crate) fn recorder(
    s: &Scene,
    now: &[(&str, bool, &str, &str)],
    later: &[(&str, bool, &str, &str)],
) -> (Arc<Recorder>, Host) {
    let (rec, host) = testkit::recording_host(&s.root, true);
    // After `kubeadm upgrade apply`, the API servers answer with `later`.
    let (nodes, pods) = cluster(later, &s.id, &[]);
    rec.answer("get nodes", 0, &nodes).answer("get pods", 0, &pods);
    let (nodes, pods) = cluster(now, &s.id, &[]);
    rec.answer_times("get nodes", 0, &nodes, 1)
        .answer_times("get pods", 0, &pods, 1);
    etcd_answers(&rec);
    rec.answer(
        "--version",
        0,
        "containerd github.com/containerd/containerd/v2 v2.1.5 x\n",
    );
    let images = "registry.k8s.io/pause:3.10.1\nregistry.k8s.io/etcd:3.6.5-0\nregistry.k8s.io/kube-apiserver:v1.34.3\n";
    rec.answer("images ls -q", 0, images);
    rec.answer("get node ", 0, "True");
    (rec, host)
}

fn at(cmds: &[String], needle: &str) -> usize {
    cmds.iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no command with {needle:?} in {cmds:#?}"))
}

#[test]
fn the_first_control_plane_snapshots_etcd_imports_upgrades_then_drains_switches_and_uncordons() {
    let s = scene();
    let (rec, host) = recorder(
        &s,
        &[("cp1", true, "v1.33.7", "v1.33.7"), ("worker1", false, "v1.33.7", "")],
        &[("cp1", true, "v1.33.7", "v1.34.3"), ("worker1", false, "v1.33.7", "")],
    );
    run_on(host, &opts(&s, "cp1")).unwrap();
    let cmds = rec.commands();
    let order = [
        at(&cmds, "endpoint status"),
        at(&cmds, "snapshot save"),
        at(&cmds, "snapshot status"),
        at(&cmds, "images import -"),
        at(&cmds, "kubeadm upgrade apply v1.34.3 -y"),
        at(
            &cmds,
            "drain cp1 --ignore-daemonsets --delete-emptydir-data --grace-period=300 --timeout=360s",
        ),
        at(&cmds, "systemctl daemon-reload"),
        at(&cmds, "systemctl restart kubelet"),
        at(&cmds, "get node cp1"),
        at(&cmds, "uncordon cp1"),
    ];
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{cmds:#?}");
    let w = rec.writes_under(&s.root);
    let rollback = w
        .iter()
        .position(|p| p == "/var/lib/kbundle/state/rollback/kubeadm")
        .unwrap();
    let link = w.iter().position(|p| p == "/usr/local/bin/kubeadm").unwrap();
    assert!(
        rollback < link,
        "the old target is recorded before the link moves: {w:#?}"
    );
    assert_eq!(
        std::fs::read_link(s.root.join("usr/local/bin/kubelet")).unwrap(),
        Path::new("/opt/kbundle/versions/kubernetes-v1.34.3/kubelet")
    );
    let mut backups: Vec<String> = std::fs::read_dir(s.root.join("var/lib/kbundle/backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    backups.sort();
    assert_eq!(
        backups.len(),
        3,
        "the snapshot, its .sha256 and .etcd-version: {backups:?}"
    );
    // The server's version (from `endpoint status`) is recorded for a later restore.
    let version = s.root.join("var/lib/kbundle/backups").join(&backups[1]);
    assert!(backups[1].ends_with(".db.etcd-version"), "{backups:?}");
    assert_eq!(std::fs::read_to_string(version).unwrap(), "3.6.5\n");
    assert_eq!(
        w.last().map(String::as_str),
        Some("/var/lib/kbundle/kubernetes-version")
    );
}

#[test]
fn a_worker_is_refused_while_the_control_plane_is_behind_and_nothing_changes() {
    let s = scene();
    let now = [("cp1", true, "v1.33.7", "v1.33.7"), ("worker1", false, "v1.33.7", "")];
    let (rec, host) = recorder(&s, &now, &now);
    let e = run_on(host, &opts(&s, "worker1")).unwrap_err().to_string();
    assert!(e.contains("refusing to upgrade worker1"), "{e}");
    let cmds = rec.commands();
    assert!(cmds.iter().all(|c| c.contains("kubectl")), "only observed: {cmds:#?}");
    assert!(!rec
        .writes_under(&s.root)
        .iter()
        .any(|p| p.starts_with("/opt") || p.starts_with("/usr")));
}

#[test]
fn a_control_planes_kubelet_waits_until_every_control_plane_runs_the_hop() {
    let s = scene();
    let (rec, host) = recorder(
        &s,
        &[("cp1", true, "v1.33.7", "v1.33.7"), ("cp2", true, "v1.33.7", "v1.33.7")],
        &[("cp1", true, "v1.33.7", "v1.34.3"), ("cp2", true, "v1.33.7", "v1.33.7")],
    );
    run_on(host, &opts(&s, "cp1")).unwrap();
    let cmds = rec.commands();
    at(&cmds, "kubeadm upgrade apply v1.34.3");
    assert!(
        !cmds
            .iter()
            .any(|c| c.contains("drain") || c.contains("restart kubelet")),
        "{cmds:#?}"
    );
}

#[test]
fn a_node_already_at_the_last_hop_has_nothing_to_do() {
    let s = scene();
    let done = [("cp1", true, "v1.34.3", "v1.34.3")];
    let (rec, host) = recorder(&s, &done, &done);
    run_on(host, &opts(&s, "cp1")).unwrap();
    assert!(
        rec.commands().iter().all(|c| c.contains("kubectl")),
        "{:#?}",
        rec.commands()
    );
}

#[test]
fn a_worker_after_the_control_plane_upgrades_with_kubeadm_upgrade_node_and_takes_no_snapshot() {
    let s = scene();
    let now = [("cp1", true, "v1.34.3", "v1.34.3"), ("worker1", false, "v1.33.7", "")];
    let (rec, host) = recorder(&s, &now, &now);
    run_on(host, &opts(&s, "worker1")).unwrap();
    let cmds = rec.commands();
    let order = [
        at(&cmds, "images import -"),
        at(&cmds, "kubeadm upgrade node"),
        at(&cmds, "drain worker1"),
        at(&cmds, "systemctl restart kubelet"),
        at(&cmds, "get node worker1"),
        at(&cmds, "uncordon worker1"),
    ];
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{cmds:#?}");
    for never in ["snapshot save", "upgrade apply"] {
        assert!(
            !cmds.iter().any(|c| c.contains(never)),
            "{never} on a worker: {cmds:#?}"
        );
    }
}

#[test]
fn a_second_control_plane_runs_kubeadm_upgrade_node_not_apply() {
    let s = scene();
    let now = [("cp1", true, "v1.33.7", "v1.34.3"), ("cp2", true, "v1.33.7", "v1.33.7")];
    let later = [("cp1", true, "v1.33.7", "v1.34.3"), ("cp2", true, "v1.33.7", "v1.34.3")];
    let (rec, host) = recorder(&s, &now, &later);
    run_on(host, &opts(&s, "cp2")).unwrap();
    let cmds = rec.commands();
    assert!(
        at(&cmds, "snapshot save") < at(&cmds, "kubeadm upgrade node"),
        "{cmds:#?}"
    );
    assert!(!cmds.iter().any(|c| c.contains("upgrade apply")), "{cmds:#?}");
}

#[test]
fn a_run_after_kubeadm_failed_resumes_there_without_a_second_snapshot() {
    let s = scene();
    let now = [("cp1", true, "v1.33.7", "v1.33.7"), ("worker1", false, "v1.33.7", "")];
    let later = [("cp1", true, "v1.33.7", "v1.34.3"), ("worker1", false, "v1.33.7", "")];
    let (rec, host) = recorder(&s, &now, &now);
    rec.answer_times("upgrade apply", 1, "", 1);
    let e = run_on(host, &opts(&s, "cp1")).unwrap_err().to_string();
    assert!(e.contains("upgrade apply"), "{e}");
    at(&rec.commands(), "snapshot save");
    let (rec, host) = recorder(&s, &now, &later);
    run_on(host, &opts(&s, "cp1")).unwrap();
    let cmds = rec.commands();
    assert!(!cmds.iter().any(|c| c.contains("snapshot save")), "{cmds:#?}");
    assert!(
        at(&cmds, "kubeadm upgrade apply v1.34.3") < at(&cmds, "uncordon cp1"),
        "{cmds:#?}"
    );
}

#[test]
fn the_pre_hop_snapshot_refuses_etcd_tools_of_another_minor_than_the_server() {
    let s = scene();
    let now = [("cp1", true, "v1.33.7", "v1.33.7"), ("worker1", false, "v1.33.7", "")];
    let (rec, host) = recorder(&s, &now, &now);
    // The server still runs 3.5; the node only has 3.6 tools.
    rec.answer_times(
        "endpoint status",
        0,
        r#"[{"Status":{"version":"3.5.24","dbSize":20480}}]"#,
        1,
    );
    let e = run_on(host, &opts(&s, "cp1")).unwrap_err();
    let chain = format!(
        "{e}: {}",
        std::error::Error::source(&e).map(|c| c.to_string()).unwrap_or_default()
    );
    for want in [
        "etcd-snapshot",
        "is etcdctl 3.6.5",
        "is etcd 3.5.24",
        "etcdctl 3.5.x",
        "--etcdctl",
    ] {
        assert!(chain.contains(want), "{want}: {chain}");
    }
    let cmds = rec.commands();
    assert!(!cmds.iter().any(|c| c.contains("snapshot save")), "{cmds:#?}");
    assert!(!cmds.iter().any(|c| c.contains("upgrade apply")), "{cmds:#?}");
}

/// Signs the scene's bundle.json with a new key (serial `serial`); returns its public key file
/// and id.
fn sign_bundle(s: &Scene, serial: u64) -> (PathBuf, String) {
    use crate::bundle::keys::{self, NewPassword, Signer};
    let d = s._t.path().join(format!("key-{serial}"));
    let id = keys::generate(&d, NewPassword::Unencrypted).unwrap();
    let signer = Signer::load(&d.join(keys::SECRET_KEY_FILE), None).unwrap();
    let json = std::fs::read(s.bundle.join("bundle.json")).unwrap();
    let c = crate::bundle::signature::TrustedComment {
        name: "kubernetes-v1.34.3".into(),
        kubernetes: "v1.34.3".into(),
        serial,
        built: 1_700_000_000,
    };
    std::fs::write(
        s.bundle.join("bundle.json.minisig"),
        signer.sign(&json[..], &c).unwrap(),
    )
    .unwrap();
    (d.join(keys::PUBLIC_KEY_FILE), id.to_string())
}

#[test]
fn a_signed_hop_records_its_serial_and_a_lower_one_is_refused_before_any_command() {
    let s = scene();
    let (key, id) = sign_bundle(&s, 9);
    let now = [("cp1", true, "v1.34.3", "v1.34.3"), ("worker1", false, "v1.33.7", "")];
    let mut o = opts(&s, "worker1");
    o.trust.trusted_keys = vec![key];
    let serials = s.root.join(crate::trust::SERIALS.trim_start_matches('/'));
    std::fs::create_dir_all(serials.parent().unwrap()).unwrap();
    std::fs::write(&serials, format!("{{\"{id}\": 10}}")).unwrap();
    let (rec, host) = recorder(&s, &now, &now);
    let e = run_on(host, &o).unwrap_err().to_string();
    assert!(e.contains("serial 9") && e.contains("lower than serial 10"), "{e}");
    assert_eq!(rec.commands(), Vec::<String>::new());
    std::fs::write(&serials, format!("{{\"{id}\": 8}}")).unwrap();
    let (_, host) = recorder(&s, &now, &now);
    run_on(host, &o).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&serials).unwrap()).unwrap();
    assert_eq!(v[&id], 9);
}
