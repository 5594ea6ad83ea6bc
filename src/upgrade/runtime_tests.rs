//! The runtime and add-ons per hop, recorded through the node seam: a drained node's
//! containerd, runc, CNI plugins and crictl move to the bundle's versions (new directories,
//! links, config, restart) before its kubelet; a new pause alone rewrites the config; an
//! up-to-date node is left alone; a rollback switches back; add-ons follow the last
//! control plane of a hop and never come earlier.

use super::*;
use crate::host::record::{Event, Recorder};
use crate::testkit;
use crate::upgrade::apply::{run_on, Options};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Scene {
    _t: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    /// The bundle's id, which every node has staged.
    id: String,
}

fn write(root: &Path, node: &str, text: &str) {
    let p = root.join(node.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn link(root: &Path, target: &str, node: &str) {
    let p = root.join(node.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(target, p).unwrap();
}

/// `(component, link dir, files)` as install leaves them, at `version`.
fn installed(root: &Path, component: &str, version: &str) {
    let (dir, files): (&str, &[&str]) = match component {
        "containerd" => ("/usr/local/bin", &["containerd", "ctr", "containerd-shim-runc-v2"]),
        "runc" => ("/usr/local/sbin", &["runc"]),
        "cni-plugins" => ("/opt/cni/bin", &["bridge", "loopback"]),
        _ => ("/usr/local/bin", &["crictl"]),
    };
    for f in files {
        let target = format!("/opt/kbundle/versions/{component}-{version}/{f}");
        write(root, &target, "old");
        link(root, &target, &format!("{dir}/{f}"));
    }
}

/// A worker node at v1.33.7 running `runtime` (component, version) and this config.
fn scene(runtime: &[(&str, &str)], config: &str) -> Scene {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    testkit::node_root(&root);
    for b in ["kubeadm", "kubelet", "kubectl"] {
        let target = format!("/opt/kbundle/versions/kubernetes-v1.33.7/{b}");
        write(&root, &target, "old");
        link(&root, &target, &format!("/usr/local/bin/{b}"));
    }
    for (c, v) in runtime {
        installed(&root, c, v);
    }
    write(&root, "/etc/containerd/config.toml", config);
    // What a control plane's etcd snapshot needs.
    for tool in ["etcdctl", "etcdutl"] {
        write(&root, &format!("/usr/local/bin/{tool}"), "#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        let p = root.join("usr/local/bin").join(tool);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["ca.crt", "server.crt", "server.key"] {
        write(&root, &format!("/etc/kubernetes/pki/etcd/{f}"), "x");
    }
    let bundle = testkit::bundle_dir(&t.path().join("b"), &["v1.34.3"]);
    // This node has staged the bundle (`upgrade stage`).
    let id = crate::bundle::verified::check_source(&bundle, &crate::trust::Policy::no_keys())
        .unwrap()
        .id()
        .hex();
    write(&root, "/var/lib/kbundle/staged", &format!("{id}\n"));
    Scene {
        _t: t,
        root,
        bundle,
        id,
    }
}

fn config(major: u32, pause: &str) -> String {
    files::containerd_config(major, &ContainerdSettings::node(pause))
}

const BUNDLES: [(&str, &str); 4] = [
    ("containerd", "2.1.5"),
    ("runc", "1.3.4"),
    ("cni-plugins", "1.8.0"),
    ("crictl", "1.34.0"),
];

fn opts(s: &Scene, node: &str) -> Options {
    crate::upgrade::apply::tests::options(&s.bundle, &s.root, node)
}

/// The API server's answers: (name, control plane?, kubelet, API server); every node has
/// staged bundle `id`.
fn answers(rec: &Recorder, id: &str, nodes: &[(&str, bool, &str, &str)], times: Option<usize>) {
    let (nodes, pods) = crate::upgrade::apply::tests::cluster(nodes, id, &[]);
    match times {
        Some(n) => rec
            .answer_times("get nodes", 0, &nodes, n)
            .answer_times("get pods", 0, &pods, n),
        None => rec.answer("get nodes", 0, &nodes).answer("get pods", 0, &pods),
    };
}

fn recorder(s: &Scene) -> (Arc<Recorder>, Host) {
    let (rec, host) = testkit::recording_host(&s.root, true);
    rec.answer(
        "--version",
        0,
        "containerd github.com/containerd/containerd/v2 v2.1.5 x\n",
    );
    crate::upgrade::apply::tests::etcd_answers(&rec);
    let images = "registry.k8s.io/pause:3.10.1\nregistry.k8s.io/etcd:3.6.5-0\nregistry.k8s.io/kube-apiserver:v1.34.3\n";
    rec.answer("images ls -q", 0, images);
    rec.answer("get node ", 0, "True");
    (rec, host)
}

/// Index of the first event matching `f`.
fn first(events: &[Event], what: &str, f: impl Fn(&Event) -> bool) -> usize {
    events
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("no {what} in {events:#?}"))
}

fn ran(events: &[Event], needle: &str) -> usize {
    first(
        events,
        needle,
        |e| matches!(e, Event::Run { argv } if argv.contains(needle)),
    )
}

fn wrote(events: &[Event], root: &Path, node: &str) -> usize {
    let p = root.join(node.trim_start_matches('/'));
    first(events, node, |e| match e {
        Event::Write { path, .. } => *path == p,
        Event::Symlink { link, .. } => *link == p,
        _ => false,
    })
}

fn target(s: &Scene, node: &str) -> PathBuf {
    std::fs::read_link(s.root.join(node.trim_start_matches('/'))).unwrap()
}

fn read(s: &Scene, node: &str) -> String {
    std::fs::read_to_string(s.root.join(node.trim_start_matches('/'))).unwrap()
}

fn worker_upgrade(s: &Scene) -> Arc<Recorder> {
    let (rec, host) = recorder(s);
    answers(
        &rec,
        &s.id,
        &[("cp1", true, "v1.34.3", "v1.34.3"), ("worker1", false, "v1.33.7", "")],
        None,
    );
    run_on(host, &opts(s, "worker1")).unwrap();
    rec
}

#[test]
fn a_drained_worker_gets_the_bundles_runtime_config_and_restart_before_its_kubelet() {
    let old = [
        ("containerd", "1.7.27"),
        ("runc", "1.2.6"),
        ("cni-plugins", "1.6.2"),
        ("crictl", "1.33.0"),
    ];
    let s = scene(&old, &config(1, "registry.k8s.io/pause:3.10"));
    // containerd 1.7's v1 shim, which 2.x no longer ships; flannel's own plugin.
    let shim = "/opt/kbundle/versions/containerd-1.7.27/containerd-shim";
    write(&s.root, shim, "old");
    link(&s.root, shim, "/usr/local/bin/containerd-shim");
    write(&s.root, "/opt/cni/bin/flannel", "flannel's");
    let rec = worker_upgrade(&s);
    let e = rec.events();
    let r = &s.root;
    assert!(
        std::fs::symlink_metadata(s.root.join("usr/local/bin/containerd-shim")).is_err(),
        "a link into the old version with no file in the new one is removed"
    );
    assert_eq!(read(&s, "/opt/cni/bin/flannel"), "flannel's");
    let order = [
        ran(&e, "drain worker1"),
        wrote(&e, r, "/opt/kbundle/versions/containerd-2.1.5/containerd"),
        wrote(&e, r, "/var/lib/kbundle/state/rollback/runtime"),
        wrote(&e, r, "/usr/local/sbin/runc"),
        wrote(&e, r, "/usr/local/bin/ctr"),
        wrote(&e, r, "/usr/local/bin/containerd"),
        wrote(&e, r, "/etc/containerd/config.toml"),
        ran(&e, "systemctl restart containerd"),
        ran(&e, "images ls -q"),
        ran(&e, "systemctl restart kubelet"),
    ];
    // `images ls -q` also answers the image import earlier: the one after the restart counts.
    let after_restart = e[order[7]..]
        .iter()
        .position(|x| matches!(x, Event::Run { argv } if argv.contains("images ls -q")))
        .map(|i| i + order[7]);
    assert!(after_restart.is_some_and(|w| w < order[9]), "{e:#?}");
    let order: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 8)
        .map(|(_, v)| *v)
        .collect();
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{order:?}\n{e:#?}");
    for (c, v) in BUNDLES {
        let dir = format!("/opt/kbundle/versions/{c}-{v}");
        let l = match c {
            "containerd" => "/usr/local/bin/containerd",
            "runc" => "/usr/local/sbin/runc",
            "cni-plugins" => "/opt/cni/bin/loopback",
            _ => "/usr/local/bin/crictl",
        };
        assert_eq!(target(&s, l).parent().unwrap(), Path::new(&dir), "{l}");
    }
    let cfg = read(&s, "/etc/containerd/config.toml");
    assert!(
        cfg.contains("version = 3") && cfg.contains("sandbox = \"registry.k8s.io/pause:3.10.1\""),
        "{cfg}"
    );
    assert_eq!(
        read(&s, STATE),
        "hop v1.34.3\nrunc 1.2.6\ncontainerd 1.7.27\ncni-plugins 1.6.2\ncrictl 1.33.0\n"
    );
    assert!(!s.root.join("opt/cni/bin/LICENSE").exists());
}

#[test]
fn same_versions_with_a_new_pause_only_rewrite_the_config_and_restart_containerd() {
    let s = scene(&BUNDLES, &config(2, "registry.k8s.io/pause:3.10"));
    let rec = worker_upgrade(&s);
    let e = rec.events();
    let r = &s.root;
    let (drain, cfg, restart, kubelet) = (
        ran(&e, "drain worker1"),
        wrote(&e, r, "/etc/containerd/config.toml"),
        ran(&e, "systemctl restart containerd"),
        ran(&e, "systemctl restart kubelet"),
    );
    assert!(drain < cfg && cfg < restart && restart < kubelet, "{e:#?}");
    assert!(read(&s, "/etc/containerd/config.toml").contains("pause:3.10.1"));
    let runtime_writes: Vec<String> = rec
        .writes_under(&s.root)
        .into_iter()
        .filter(|p| {
            let versions = p.starts_with("/opt/kbundle/versions/") && !p.contains("/kubernetes-");
            let links = ["/usr/local/bin/c", "/usr/local/sbin/", "/opt/cni/"]
                .iter()
                .any(|d| p.starts_with(d));
            versions || links
        })
        .collect();
    assert!(runtime_writes.is_empty(), "{runtime_writes:#?}");
    assert_eq!(
        target(&s, "/usr/local/bin/containerd"),
        Path::new("/opt/kbundle/versions/containerd-2.1.5/containerd")
    );
}

#[test]
fn nothing_differs_nothing_changes() {
    let s = scene(&BUNDLES, &config(2, "registry.k8s.io/pause:3.10.1"));
    let (rec, host) = recorder(&s);
    let restarted = upgrade(&host, &open(&s, &host), Version::new(1, 34, 3)).unwrap();
    assert!(!restarted);
    assert!(rec.writes_under(&s.root).is_empty(), "{:#?}", rec.writes_under(&s.root));
    let cmds = rec.commands();
    assert!(cmds.iter().all(|c| c.ends_with("containerd --version")), "{cmds:#?}");
}

fn open(s: &Scene, host: &Host) -> VerifiedBundle {
    let checked = crate::bundle::verified::check_source(&s.bundle, &crate::trust::Policy::no_keys()).unwrap();
    crate::bundle::verified::open(checked, host).unwrap()
}

#[test]
fn rollback_switches_the_links_and_the_config_back_and_restarts_containerd() {
    let old = [
        ("containerd", "1.7.27"),
        ("runc", "1.2.6"),
        ("cni-plugins", "1.6.2"),
        ("crictl", "1.33.0"),
    ];
    let before = config(1, "registry.k8s.io/pause:3.10");
    let s = scene(&old, &before);
    worker_upgrade(&s);
    let (rec, host) = recorder(&s);
    // Rolling back another hop than the one that moved the runtime leaves it alone.
    let other: Version = "v1.33.7".parse().unwrap();
    assert!(rollback(&host, Some(other)).unwrap().is_empty());
    assert!(rec.commands().is_empty(), "{:#?}", rec.commands());
    let done = rollback(&host, Some("v1.34.3".parse().unwrap())).unwrap();
    assert_eq!(done.len(), 5, "{done:?}");
    assert_eq!(
        target(&s, "/usr/local/bin/containerd"),
        Path::new("/opt/kbundle/versions/containerd-1.7.27/containerd")
    );
    assert_eq!(
        target(&s, "/usr/local/bin/ctr"),
        Path::new("/opt/kbundle/versions/containerd-1.7.27/ctr")
    );
    assert_eq!(
        target(&s, "/usr/local/sbin/runc"),
        Path::new("/opt/kbundle/versions/runc-1.2.6/runc")
    );
    assert_eq!(
        target(&s, "/opt/cni/bin/bridge"),
        Path::new("/opt/kbundle/versions/cni-plugins-1.6.2/bridge")
    );
    assert_eq!(
        target(&s, "/usr/local/bin/crictl"),
        Path::new("/opt/kbundle/versions/crictl-1.33.0/crictl")
    );
    assert_eq!(read(&s, "/etc/containerd/config.toml"), before);
    let e = rec.events();
    assert!(wrote(&e, &s.root, "/etc/containerd/config.toml") < ran(&e, "systemctl restart containerd"));
    assert!(
        !s.root.join(STATE.trim_start_matches('/')).exists(),
        "the record is used up"
    );
    let (_, host) = recorder(&s);
    assert!(
        rollback(&host, None).unwrap().is_empty(),
        "a second rollback has nothing to do"
    );
}

#[test]
fn plain_files_from_an_older_install_are_kept_for_a_rollback() {
    let s = scene(&BUNDLES[1..], &config(1, "registry.k8s.io/pause:3.10"));
    for f in ["containerd", "ctr"] {
        write(&s.root, &format!("/usr/local/bin/{f}"), "plain");
    }
    worker_upgrade(&s);
    assert_eq!(read(&s, "/opt/kbundle/versions/containerd-previous/ctr"), "plain");
    assert!(read(&s, STATE).contains("containerd previous\n"));
    let (_, host) = recorder(&s);
    rollback(&host, None).unwrap();
    assert_eq!(
        target(&s, "/usr/local/bin/ctr"),
        Path::new("/opt/kbundle/versions/containerd-previous/ctr")
    );
}

/// A control plane whose cluster config install kept.
fn with_cluster_config(s: &Scene) {
    let p = testkit::cluster_file(s._t.path(), "open-ports");
    write(
        &s.root,
        "/etc/kbundle/cluster.toml",
        &std::fs::read_to_string(p).unwrap(),
    );
}

#[test]
fn add_ons_follow_the_last_control_plane_of_a_hop_and_are_awaited_before_its_kubelet() {
    let s = scene(&BUNDLES, &config(2, "registry.k8s.io/pause:3.10.1"));
    with_cluster_config(&s);
    // cp1 upgrades first while cp2 is behind: no add-ons yet.
    let (rec, host) = recorder(&s);
    answers(
        &rec,
        &s.id,
        &[("cp1", true, "v1.33.7", "v1.34.3"), ("cp2", true, "v1.33.7", "v1.33.7")],
        None,
    );
    answers(
        &rec,
        &s.id,
        &[("cp1", true, "v1.33.7", "v1.33.7"), ("cp2", true, "v1.33.7", "v1.33.7")],
        Some(1),
    );
    run_on(host, &opts(&s, "cp1")).unwrap();
    let cmds = rec.commands();
    assert!(
        !cmds
            .iter()
            .any(|c| c.contains("apply -f") || c.contains("rollout status")),
        "{cmds:#?}"
    );
    // cp2 (another node) is the last control plane: its `kubeadm upgrade node` brings every
    // API server to the hop, so it re-applies the add-ons and waits for them, before its
    // kubelet moves.
    let s = scene(&BUNDLES, &config(2, "registry.k8s.io/pause:3.10.1"));
    with_cluster_config(&s);
    let (rec, host) = recorder(&s);
    let all = [("cp1", true, "v1.33.7", "v1.34.3"), ("cp2", true, "v1.33.7", "v1.34.3")];
    answers(&rec, &s.id, &all, None);
    answers(
        &rec,
        &s.id,
        &[("cp1", true, "v1.33.7", "v1.34.3"), ("cp2", true, "v1.33.7", "v1.33.7")],
        Some(1),
    );
    run_on(host, &opts(&s, "cp2")).unwrap();
    let e = rec.events();
    let flannel = format!(
        "apply -f {}/etc/kbundle/addons/flannel-kube-flannel.yml",
        s.root.display()
    );
    let metrics = format!(
        "apply -f {}/etc/kbundle/addons/metrics-server-components.yaml",
        s.root.display()
    );
    let order = [
        ran(&e, "kubeadm upgrade node"),
        ran(&e, &flannel),
        ran(&e, &metrics),
        ran(&e, "rollout status deployment/coredns"),
        ran(&e, "rollout status daemonset/kube-flannel-ds"),
        ran(&e, "drain cp2"),
        ran(&e, "systemctl restart kubelet"),
    ];
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{order:?}\n{e:#?}");
}
