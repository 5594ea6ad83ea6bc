//! Drain through the node seam: the procedure's flags, bare pods refused by name with the
//! flag that would delete them, `--force` only when asked.

use super::*;
use crate::testkit;

/// What kubectl 1.34 prints when a node has bare pods (kubectl `pkg/drain` and
/// `cmd/drain`: the aggregated error line, then one line per message).
const REFUSED: &str = "node/worker1 cordoned\n\
error: unable to drain node \"worker1\" due to error: [cannot delete Pods that declare no controller (use --force to override): default/debug, team/one-off, cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): kube-system/kube-proxy-x], continuing command...\n\
There are pending nodes to be drained:\n worker1\n\
cannot delete Pods that declare no controller (use --force to override): default/debug, team/one-off\n";

fn kubectl() -> Command {
    let mut c = Command::new("/usr/local/bin/kubectl");
    c.args(["--kubeconfig", "/etc/kubernetes/admin.conf"]);
    c
}

#[test]
fn the_default_drain_is_the_procedures_without_force() {
    let t = tempfile::tempdir().unwrap();
    let (rec, host) = testkit::recording_host(t.path(), true);
    drain(&host, kubectl(), "worker1", &DrainOptions::default()).unwrap();
    let cmds = rec.commands();
    assert_eq!(cmds.len(), 1);
    assert!(
        cmds[0].ends_with("drain worker1 --ignore-daemonsets --delete-emptydir-data --grace-period=300 --timeout=360s"),
        "{cmds:?}"
    );
}

#[test]
fn bare_pods_fail_the_drain_naming_them_and_the_flag_and_nothing_is_forced() {
    let t = tempfile::tempdir().unwrap();
    let (rec, host) = testkit::recording_host(t.path(), true);
    rec.answer_stderr("drain worker1", 1, REFUSED);
    let e = drain(&host, kubectl(), "worker1", &DrainOptions::default()).unwrap_err();
    match &e {
        DrainError::UnmanagedPods { pods, .. } => assert_eq!(pods, &["default/debug", "team/one-off"]),
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("--force-drain") && msg.contains("default/debug, team/one-off"),
        "{msg}"
    );
    assert_eq!(rec.commands().len(), 1, "no second, forced drain");
    assert!(!rec.commands()[0].contains("--force"));
}

#[test]
fn force_drain_passes_kubectls_force() {
    let t = tempfile::tempdir().unwrap();
    let (rec, host) = testkit::recording_host(t.path(), true);
    let o = DrainOptions {
        force: true,
        ..Default::default()
    };
    drain(&host, kubectl(), "worker1", &o).unwrap();
    assert!(
        rec.commands()[0].ends_with("--timeout=360s --force"),
        "{:?}",
        rec.commands()
    );
}

#[test]
fn other_drain_failures_keep_kubectls_error() {
    let t = tempfile::tempdir().unwrap();
    let (rec, host) = testkit::recording_host(t.path(), true);
    rec.answer_stderr(
        "drain",
        1,
        "error when evicting pods/\"web-1\" -n \"default\": global timeout reached: 6m0s",
    );
    let e = drain(&host, kubectl(), "worker1", &DrainOptions::default()).unwrap_err();
    assert!(matches!(e, DrainError::Kubectl { .. }), "{e:?}");
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert!(chain.contains("global timeout reached"), "{chain}");
}

#[test]
fn older_kubectl_wording_is_understood_too() {
    let old = "cannot delete Pods not managed by ReplicationController, ReplicaSet, Job, DaemonSet or StatefulSet (use --force to override): default/bare\n";
    assert_eq!(unmanaged_pods(old), ["default/bare"]);
    assert!(
        unmanaged_pods("cannot delete Pods with local storage (use --delete-emptydir-data to override): a/b")
            .is_empty()
    );
}
