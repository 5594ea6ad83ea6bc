//! Rollback through the node seam: manifests from the hop's newest kubeadm backup, the
//! saved kubelet config, the links switched back, and etcd left alone (with the restore
//! command printed) when the hop changed it.

use super::*;
use crate::testkit;
use std::path::Path;

fn put(root: &Path, abs: &str, text: &str) {
    let p = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn read(root: &Path, abs: &str) -> String {
    std::fs::read_to_string(root.join(abs.trim_start_matches('/'))).unwrap()
}

fn manifest(component: &str, tag: &str) -> String {
    let repo = if component == "etcd" { "etcd" } else { component };
    format!("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - {component}\n    image: registry.k8s.io/{repo}:{tag}\n    name: {component}\n")
}

/// A control plane after `upgrade apply` of v1.34.3 from v1.33.7: the node as apply and
/// kubeadm leave it. `etcd_new` is the etcd tag kubeadm moved to.
fn upgraded(root: &Path, etcd_new: &str) {
    testkit::node_root(root);
    let v = |ver: &str, b: &str| format!("/opt/kbundle/versions/kubernetes-{ver}/{b}");
    for b in ["kubeadm", "kubelet", "kubectl"] {
        put(root, &v("v1.33.7", b), "old");
        put(root, &v("v1.34.3", b), "new");
        let link = root.join("usr/local/bin").join(b);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(v("v1.34.3", b), &link).unwrap();
        put(root, &format!("/var/lib/kbundle/state/rollback/{b}"), &v("v1.33.7", b));
    }
    // A backup from an earlier hop, then this hop's first (failed) and second kubeadm run.
    let tmp = "/etc/kubernetes/tmp";
    put(
        root,
        &format!("{tmp}/kubeadm-backup-manifests-2026-01-02-10-00-00/kube-apiserver.yaml"),
        &manifest("kube-apiserver", "v1.32.11"),
    );
    put(
        root,
        &format!("{tmp}/kubeadm-backup-manifests-2026-11-30-09-00-00/kube-apiserver.yaml"),
        "partial",
    );
    for (c, tag) in [
        ("kube-apiserver", "v1.33.7"),
        ("kube-scheduler", "v1.33.7"),
        ("etcd", "3.5.24-0"),
    ] {
        put(
            root,
            &format!("{tmp}/kubeadm-backup-manifests-2026-11-30-10-00-00/{c}.yaml"),
            &manifest(c, tag),
        );
    }
    for (c, tag) in [
        ("kube-apiserver", "v1.34.3"),
        ("kube-scheduler", "v1.34.3"),
        ("etcd", etcd_new),
    ] {
        put(root, &format!("/etc/kubernetes/manifests/{c}.yaml"), &manifest(c, tag));
    }
    put(
        root,
        "/var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\n# v1.34.3\n",
    );
    let hop = "/var/lib/kbundle/upgrade/v1.34.3";
    put(
        root,
        &format!("{hop}/kubelet-config.yaml"),
        "kind: KubeletConfiguration\n# v1.33.7\n",
    );
    put(
        root,
        &format!("{hop}/kubeadm-backups-before"),
        "kubeadm-backup-manifests-2026-01-02-10-00-00",
    );
    put(
        root,
        &format!("{hop}/etcd-snapshot"),
        "/var/lib/kbundle/backups/etcd-before-v1.34.3-1764570000.db",
    );
    put(
        root,
        "/var/lib/kbundle/state/upgrade-v1.34.3-0123456789ab/kubeadm-upgrade",
        "",
    );
}

#[test]
fn manifests_come_back_from_the_hops_newest_kubeadm_backup() {
    let t = tempfile::tempdir().unwrap();
    upgraded(t.path(), "3.5.24-0");
    let (rec, host) = testkit::recording_host(t.path(), true);
    let report = rollback_on(&host, None).unwrap();
    assert_eq!(report.hop, Some("v1.34.3".parse().unwrap()));
    for c in ["kube-apiserver", "kube-scheduler", "etcd"] {
        let now = read(t.path(), &format!("/etc/kubernetes/manifests/{c}.yaml"));
        let tag = if c == "etcd" { "3.5.24-0" } else { "v1.33.7" };
        assert_eq!(now, manifest(c, tag), "{c}");
    }
    assert!(report.etcd.is_none(), "etcd's image did not change: {report:?}");
    let cmds = rec.commands();
    assert!(cmds.last().unwrap().ends_with("systemctl restart kubelet"), "{cmds:?}");
    assert!(!t
        .path()
        .join("var/lib/kbundle/state/upgrade-v1.34.3-0123456789ab")
        .exists());
}

#[test]
fn the_saved_kubelet_config_and_the_old_binaries_come_back() {
    let t = tempfile::tempdir().unwrap();
    upgraded(t.path(), "3.5.24-0");
    let (_rec, host) = testkit::recording_host(t.path(), true);
    rollback_on(&host, None).unwrap();
    assert_eq!(
        read(t.path(), "/var/lib/kubelet/config.yaml"),
        "kind: KubeletConfiguration\n# v1.33.7\n"
    );
    for b in ["kubeadm", "kubelet", "kubectl"] {
        let target = std::fs::read_link(t.path().join("usr/local/bin").join(b)).unwrap();
        assert_eq!(
            target,
            Path::new(&format!("/opt/kbundle/versions/kubernetes-v1.33.7/{b}"))
        );
    }
}

#[test]
fn a_hop_that_moved_etcd_prints_the_restore_command_and_leaves_etcd_alone() {
    let t = tempfile::tempdir().unwrap();
    upgraded(t.path(), "3.6.5-0");
    let (rec, host) = testkit::recording_host(t.path(), true);
    let report = rollback_on(&host, None).unwrap();
    let etcd = report.etcd.expect("etcd notice");
    assert!(
        etcd.contains("kbundle etcd snapshot restore /var/lib/kbundle/backups/etcd-before-v1.34.3-1764570000.db --data-dir /var/lib/etcd-before-v1.34.3 --update-manifest"),
        "{etcd}"
    );
    assert!(etcd.contains("3.5.24-0") && etcd.contains("3.6.5-0"), "{etcd}");
    assert_eq!(
        read(t.path(), "/etc/kubernetes/manifests/etcd.yaml"),
        manifest("etcd", "3.6.5-0")
    );
    assert_eq!(
        read(t.path(), "/etc/kubernetes/manifests/kube-apiserver.yaml"),
        manifest("kube-apiserver", "v1.33.7")
    );
    let writes = rec.writes_under(t.path());
    assert!(!writes.iter().any(|w| w.contains("etcd.yaml")), "{writes:?}");
    assert!(
        !rec.commands().iter().any(|c| c.contains("etcd")),
        "{:?}",
        rec.commands()
    );
}

#[test]
fn apply_saves_what_rollback_needs_before_kubeadm_runs() {
    let t = tempfile::tempdir().unwrap();
    testkit::node_root(t.path());
    put(t.path(), "/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\n");
    put(
        t.path(),
        "/etc/kubernetes/tmp/kubeadm-backup-manifests-2026-01-02-10-00-00/etcd.yaml",
        "x",
    );
    let (_rec, host) = testkit::recording_host(t.path(), true);
    save_before_hop(&host, "v1.34.3".parse().unwrap()).unwrap();
    let hop = "/var/lib/kbundle/upgrade/v1.34.3";
    assert_eq!(
        read(t.path(), &format!("{hop}/kubelet-config.yaml")),
        "kind: KubeletConfiguration\n"
    );
    assert_eq!(
        read(t.path(), &format!("{hop}/kubeadm-backups-before")),
        "kubeadm-backup-manifests-2026-01-02-10-00-00"
    );
}

#[test]
fn a_hop_without_saved_state_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    upgraded(t.path(), "3.5.24-0");
    let (rec, host) = testkit::recording_host(t.path(), true);
    let e = rollback_on(&host, Some("v1.33.7".parse().unwrap()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("v1.33.7"), "{e}");
    assert!(rec.commands().is_empty());
}
