//! Every install step's effects, recorded through the node seam: which files are written in
//! which order, which commands run (and which must not), journals, and time-outs on virtual
//! time. Commands are answered by the recorder the way the real programs would answer.

use super::*;
use crate::host::record::{Event, Recorder};
use crate::testkit;
use std::path::Path;
use std::sync::Arc;

struct Scene {
    _t: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    config: PathBuf,
}

fn scene(firewall: &str) -> Scene {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    testkit::node_root(&root);
    let bundle = testkit::bundle_dir(&t.path().join("b"), &["v1.34.3"]);
    let config = testkit::cluster_file(t.path(), firewall);
    Scene {
        _t: t,
        root,
        bundle,
        config,
    }
}

fn opts(s: &Scene, node: &str, phase: Phase) -> Options {
    Options {
        bundle: s.bundle.clone(),
        config: s.config.clone(),
        node: Some(node.into()),
        role: None,
        root: s.root.clone(),
        phase,
        dry_run: false,
        skip_preflight: Vec::new(),
        secrets: Default::default(),
        ready_timeout: Duration::from_secs(60),
        trust: Default::default(),
    }
}

/// Answers as containerd, ctr and kubectl would on a node where all goes well.
fn script(rec: &Recorder) {
    rec.answer(
        "--version",
        0,
        "containerd github.com/containerd/containerd/v2 v2.1.5 fcd4322\n",
    );
    let images = "registry.k8s.io/pause:3.10.1\nregistry.k8s.io/etcd:3.6.5-0\nregistry.k8s.io/kube-apiserver:v1.34.3\n";
    rec.answer("images ls -q", 0, images);
    rec.answer("get node", 0, "True");
    rec.answer(
        "token create",
        0,
        &format!(
            "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:{}\n",
            "c".repeat(64)
        ),
    );
    rec.answer(
        "upload-certs",
        0,
        &format!("[upload-certs] Using certificate key:\n{}\n", "d".repeat(64)),
    );
}

fn run(s: &Scene, node: &str, phase: Phase, live: bool) -> (Arc<Recorder>, Result<(), InstallError>) {
    let (rec, host) = testkit::recording_host(&s.root, live);
    script(&rec);
    rec.creates(
        "kubeadm init --config",
        &s.root.join("etc/kubernetes/admin.conf"),
        "admin\n",
    );
    let r = run_on(host, opts(s, node, phase));
    (rec, r)
}

/// The position of the first command containing `needle`.
fn at(cmds: &[String], needle: &str) -> usize {
    cmds.iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no command with {needle:?} in {cmds:#?}"))
}

fn pos(list: &[String], item: &str) -> usize {
    list.iter()
        .position(|w| w == item)
        .unwrap_or_else(|| panic!("{item} not in {list:#?}"))
}

#[test]
fn prepare_on_an_image_writes_every_file_then_imports_through_a_temporary_containerd() {
    let s = scene("open-ports");
    let (rec, r) = run(&s, "worker1", Phase::Prepare, false);
    r.unwrap();
    let w = rec.writes_under(&s.root);
    let order = [
        "/etc/modules-load.d/kbundle-kubernetes.conf",
        "/etc/sysctl.d/99-kbundle-kubernetes.conf",
        "/etc/fstab",
        "/etc/selinux/config",
        "/etc/firewalld/services/kbundle-worker.xml",
        "/opt/kbundle/versions/kubernetes-v1.34.3/kubeadm",
        "/usr/local/bin/kubeadm",
        "/usr/local/sbin/runc",
        "/usr/local/bin/containerd",
        "/opt/cni/bin/bridge",
        "/usr/local/bin/crictl",
        "/usr/local/bin/etcdctl",
        "/etc/systemd/system/containerd.service",
        "/etc/systemd/system/multi-user.target.wants/kubelet.service",
        "/etc/containerd/config.toml",
        "/etc/kbundle/kubeadm-join.yaml",
        "/var/lib/kbundle/kubernetes-version",
    ];
    let idx: Vec<usize> = order.iter().map(|f| pos(&w, f)).collect();
    assert!(
        idx.windows(2).all(|p| p[0] < p[1]),
        "out of order: {order:?} at {idx:?}"
    );
    assert!(
        !w.iter().any(|p| p == "/opt/cni/bin/LICENSE"),
        "the CNI licence is not a plugin"
    );
    let cmds = rec.commands();
    let (version, start, probe, import, ls, stop) = (
        at(&cmds, "containerd --version"),
        at(&cmds, "--pdeathsig KILL -- "),
        at(&cmds, " version"),
        at(&cmds, "images import -"),
        at(&cmds, "images ls -q"),
        at(&cmds, "kill -TERM"),
    );
    assert!(
        version < start && start < probe && probe < import && import < ls && ls < stop,
        "{cmds:#?}"
    );
    for never in [
        "systemctl",
        "modprobe",
        "swapoff",
        "sysctl",
        "firewall-cmd",
        "setenforce",
    ] {
        assert!(
            !cmds.iter().any(|c| c.contains(never)),
            "{never} on an image: {cmds:#?}"
        );
    }
    // Each step is journaled right after its own writes.
    let done = w.iter().position(|p| p.ends_with("/binaries.done")).unwrap();
    assert!(done > pos(&w, "/usr/local/bin/etcdctl") && done < pos(&w, "/etc/systemd/system/containerd.service"));
}

#[test]
fn prepare_on_a_live_node_loads_modules_turns_swap_off_and_opens_the_firewall() {
    let s = scene("open-ports");
    std::fs::write(s.root.join("usr/bin/firewall-offline-cmd"), "").unwrap();
    std::fs::write(s.root.join("usr/bin/firewall-cmd"), "").unwrap();
    std::fs::write(s.root.join("usr/sbin/setenforce"), "").unwrap();
    let (rec, r) = run(&s, "worker1", Phase::Prepare, true);
    r.unwrap();
    let cmds = rec.commands();
    // firewalld runs (firewall-cmd --state answers 0): permanent rules, then a reload.
    let add = at(&cmds, "firewall-cmd --permanent --add-service=kbundle-worker");
    assert!(
        add < cmds.iter().rposition(|c| c == "firewall-cmd --reload").unwrap(),
        "{cmds:#?}"
    );
    for c in [
        "modprobe overlay",
        "modprobe br_netfilter",
        "sysctl --system",
        "swapoff -a",
        "setenforce 0",
    ] {
        at(&cmds, c);
    }
    assert!(
        at(&cmds, "modprobe br_netfilter") < at(&cmds, "sysctl --system"),
        "{cmds:#?}"
    );
}

#[test]
fn firewall_disabled_masks_firewalld_and_opens_no_ports() {
    let s = scene("disabled");
    let (rec, r) = run(&s, "worker1", Phase::Prepare, false);
    r.unwrap();
    let masked = rec.events().into_iter().any(|e| {
        matches!(e, Event::Symlink { link, target }
            if link.ends_with("etc/systemd/system/firewalld.service") && target == Path::new("/dev/null"))
    });
    assert!(masked, "{:#?}", rec.events());
    assert!(!rec
        .writes_under(&s.root)
        .iter()
        .any(|p| p.contains("firewalld/services")));
}

#[test]
fn firewall_disabled_on_a_live_node_stops_firewalld_before_masking_it() {
    let s = scene("disabled");
    std::fs::create_dir_all(s.root.join("usr/lib/systemd/system")).unwrap();
    std::fs::write(s.root.join("usr/lib/systemd/system/firewalld.service"), "[Unit]\n").unwrap();
    let (rec, r) = run(&s, "worker1", Phase::Prepare, true);
    r.unwrap();
    let events = rec.events();
    let stop = events
        .iter()
        .position(|e| matches!(e, Event::Run { argv } if argv.contains("systemctl stop firewalld.service")))
        .unwrap_or_else(|| panic!("firewalld not stopped: {events:#?}"));
    let mask = events
        .iter()
        .position(
            |e| matches!(e, Event::Symlink { link, .. } if link.ends_with("etc/systemd/system/firewalld.service")),
        )
        .unwrap_or_else(|| panic!("firewalld not masked: {events:#?}"));
    assert!(stop < mask, "{events:#?}");
}

#[test]
fn bootstrap_of_the_first_control_plane_inits_then_applies_addons_then_waits_for_ready() {
    let s = scene("open-ports");
    std::fs::create_dir_all(s.root.join("run/systemd/system")).unwrap();
    let (rec, r) = run(&s, "cp1", Phase::All, true);
    r.unwrap();
    let cmds = rec.commands();
    let order = [
        at(&cmds, "systemctl daemon-reload"),
        at(&cmds, "systemctl enable --now containerd.service"),
        at(&cmds, "systemctl enable kubelet.service"),
        at(&cmds, "kubeadm init --config"),
        at(&cmds, "kube-flannel.yml"),
        at(&cmds, "components.yaml"),
        at(&cmds, "get node cp1"),
    ];
    // The config carries the join secrets: no new token is made.
    assert!(!cmds.iter().any(|c| c.contains("token create")), "{cmds:#?}");
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{cmds:#?}");
    assert!(
        cmds[order[3]].ends_with("/etc/kbundle/kubeadm-init.yaml --upload-certs"),
        "{cmds:#?}"
    );
    let w = rec.writes_under(&s.root);
    assert_eq!(
        w.last().map(String::as_str),
        Some("/var/lib/kbundle/bootstrap.done"),
        "{w:#?}"
    );
    assert!(pos(&w, "/root/.kube/config") > 0);
}

#[test]
fn bootstrap_without_systemd_installs_the_first_boot_unit_and_runs_nothing() {
    let s = scene("open-ports");
    let (rec, r) = run(&s, "worker1", Phase::Bootstrap, false);
    r.unwrap();
    let w = rec.writes_under(&s.root);
    for f in [
        "/etc/kbundle/cluster.toml",
        "/etc/systemd/system/kbundle-bootstrap.service",
        "/etc/systemd/system/multi-user.target.wants/kbundle-bootstrap.service",
    ] {
        pos(&w, f);
    }
    assert!(rec.commands().is_empty(), "{:#?}", rec.commands());
}

#[test]
fn a_finished_prepare_run_again_writes_and_runs_nothing() {
    let s = scene("open-ports");
    let (_, first) = run(&s, "worker1", Phase::Prepare, false);
    first.unwrap();
    let (rec, again) = run(&s, "worker1", Phase::Prepare, false);
    again.unwrap();
    let effects: Vec<Event> = rec
        .events()
        .into_iter()
        .filter(|e| !matches!(e, Event::Lock { .. } | Event::Kernel { .. }))
        .collect();
    assert!(effects.is_empty(), "a re-run changed the node: {effects:#?}");
}

#[test]
fn waiting_for_ready_gives_up_after_the_timeout_with_kubectls_last_answer() {
    let s = scene("open-ports");
    std::fs::create_dir_all(s.root.join("run/systemd/system")).unwrap();
    let (rec, host) = testkit::recording_host(&s.root, true);
    script(&rec);
    rec.answer("get node", 0, "False");
    let mut o = opts(&s, "worker1", Phase::All);
    o.ready_timeout = Duration::from_secs(300);
    let e = run_on(host, o).unwrap_err().to_string();
    assert!(
        e.contains("not Ready after 300s") && e.contains("last answer: \"False\""),
        "{e}"
    );
    let polls = rec.commands().iter().filter(|c| c.contains("get node worker1")).count();
    assert!((140..=152).contains(&polls), "polled every 2 s for 300 s: {polls}");
}

#[test]
fn bootstrap_of_a_worker_joins_with_the_configs_secrets_then_waits_for_ready() {
    let s = scene("open-ports");
    std::fs::create_dir_all(s.root.join("run/systemd/system")).unwrap();
    let (rec, r) = run(&s, "worker1", Phase::All, true);
    r.unwrap();
    let cmds = rec.commands();
    let join = at(&cmds, "kubeadm join --config");
    assert!(cmds[join].ends_with("/etc/kbundle/kubeadm-join.yaml"), "{cmds:#?}");
    assert!(join < at(&cmds, "get node worker1"), "{cmds:#?}");
    for never in ["kubeadm init", "kube-flannel.yml", "token create"] {
        assert!(
            !cmds.iter().any(|c| c.contains(never)),
            "{never} on a worker: {cmds:#?}"
        );
    }
    let cfg = std::fs::read_to_string(s.root.join("etc/kbundle/kubeadm-join.yaml")).unwrap();
    assert!(
        cfg.contains("abcdef.0123456789abcdef") && cfg.contains(&"b".repeat(64)),
        "{cfg}"
    );
    assert!(!rec.writes_under(&s.root).iter().any(|p| p == "/root/.kube/config"));
}

#[test]
fn a_control_plane_join_without_a_certificate_key_is_refused_before_kubeadm_runs() {
    let s = scene("open-ports");
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str("\n[[node]]\nname = \"cp2\"\naddress = \"192.168.122.11\"\nrole = \"control-plane\"\n");
    std::fs::write(&s.config, text).unwrap();
    std::fs::create_dir_all(s.root.join("run/systemd/system")).unwrap();
    let (rec, r) = run(&s, "cp2", Phase::All, true);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("kubeadm-join") && e.contains("--certificate-key"), "{e}");
    assert!(
        !rec.commands().iter().any(|c| c.contains("kubeadm join")),
        "{:#?}",
        rec.commands()
    );
}

#[test]
fn a_failed_preflight_changes_nothing_on_the_node() {
    let s = scene("open-ports");
    std::fs::write(s.root.join("etc/os-release"), "ID=\"ubuntu\"\nVERSION_ID=\"24.04\"\n").unwrap();
    let (rec, r) = run(&s, "worker1", Phase::Prepare, true);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("preflight failed") && e.contains("[os]"), "{e}");
    let node_files: Vec<String> = rec
        .writes_under(&s.root)
        .into_iter()
        .filter(|p| !p.starts_with("/var/lib/kbundle/"))
        .collect();
    assert!(node_files.is_empty(), "{node_files:#?}");
    // Only preflight's read-only queries ran.
    let cmds = rec.commands();
    assert!(cmds.iter().all(|c| c.starts_with("modinfo ")), "{cmds:#?}");
}

#[test]
fn a_run_after_a_failed_step_starts_again_at_that_step() {
    let s = scene("open-ports");
    let (rec, host) = testkit::recording_host(&s.root, false);
    rec.answer_times("images import", 1, "", 1);
    script(&rec);
    let e = run_on(host, opts(&s, "worker1", Phase::Prepare))
        .unwrap_err()
        .to_string();
    assert!(e.contains("images"), "{e}");
    let first = rec.writes_under(&s.root);
    assert!(!first.iter().any(|p| p.ends_with("/images.done")), "{first:#?}");
    let (rec, r) = run(&s, "worker1", Phase::Prepare, false);
    r.unwrap();
    let again = rec.writes_under(&s.root);
    for done in [
        "/etc/modules-load.d/kbundle-kubernetes.conf",
        "/usr/local/bin/kubeadm",
        "/etc/containerd/config.toml",
    ] {
        assert!(!again.iter().any(|p| p == done), "{done} written again: {again:#?}");
    }
    at(&rec.commands(), "images import -");
    assert!(again.iter().any(|p| p.ends_with("/images.done")), "{again:#?}");
}

#[path = "trust_tests.rs"]
mod trust;
