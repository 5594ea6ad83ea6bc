//! Image import through the node seam: every imported image is labelled pinned after the
//! import, through the same containerd the import used, in order, on every import.

use super::*;
use crate::host::record::Recorder;
use crate::testkit;
use std::sync::Arc;

const REFS: [&str; 3] = [
    "registry.k8s.io/pause:3.10.1",
    "registry.k8s.io/etcd:3.6.5-0",
    "registry.k8s.io/kube-apiserver:v1.34.3",
];

struct Node {
    _t: tempfile::TempDir,
    root: PathBuf,
    layout: Vec<(String, PathBuf)>,
}

fn node() -> Node {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    testkit::node_root(&root);
    let index = t.path().join("index.json");
    std::fs::write(&index, "{}\n").unwrap();
    Node {
        layout: vec![("index.json".into(), index)],
        root,
        _t: t,
    }
}

fn refs(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn recorder(n: &Node, live: bool) -> (Arc<Recorder>, Host) {
    let (rec, host) = testkit::recording_host(&n.root, live);
    rec.answer("images ls -q", 0, &format!("{}\n", REFS.join("\n")));
    (rec, host)
}

fn import(n: &Node, host: &Host, expected: &[String], pin: &[String]) -> Result<Vec<String>, InstallError> {
    let containerd = n.root.join("usr/local/bin/containerd");
    let ctr = n.root.join("usr/local/bin/ctr");
    import_images(host, &containerd, &ctr, 2, &n.layout, expected, pin)
}

fn at(cmds: &[String], needle: &str) -> usize {
    cmds.iter()
        .position(|c| c.contains(needle))
        .unwrap_or_else(|| panic!("no command with {needle:?}: {cmds:#?}"))
}

/// The `ctr images label` commands, in order.
fn labels(cmds: &[String]) -> Vec<&String> {
    cmds.iter().filter(|c| c.contains(" images label ")).collect()
}

/// The `--address` argument of a ctr command line.
fn address(cmd: &str) -> &str {
    cmd.split_whitespace()
        .skip_while(|a| *a != "--address")
        .nth(1)
        .unwrap_or_else(|| panic!("no --address in {cmd}"))
}

#[test]
fn every_imported_image_is_labelled_pinned_in_order_after_the_import() {
    let n = node();
    let (rec, host) = recorder(&n, false);
    let all = refs(&REFS);
    let names = import(&n, &host, &all, &all).unwrap();
    assert_eq!(names, all);
    let cmds = rec.commands();
    let labels = labels(&cmds);
    assert_eq!(labels.len(), REFS.len(), "{cmds:#?}");
    let import_cmd = &cmds[at(&cmds, "images import -")];
    for (label, r) in labels.iter().zip(REFS) {
        assert!(
            label.ends_with(&format!(" -n k8s.io images label {r} io.cri-containerd.pinned=pinned")),
            "{label}"
        );
        // Through the containerd that imported the images (the temporary one).
        assert_eq!(address(label), address(import_cmd));
    }
    let first = at(&cmds, " images label ");
    assert!(at(&cmds, "images ls -q") < first, "{cmds:#?}");
    // The temporary containerd is stopped only after the last label.
    let last = cmds.iter().rposition(|c| c.contains(" images label ")).unwrap();
    assert!(last < at(&cmds, "kill -TERM"), "{cmds:#?}");
}

#[test]
fn images_beyond_the_expected_ones_are_pinned_too() {
    // An upgrade hop expects its own images but imports (and pins) the whole layout.
    let n = node();
    let (rec, host) = recorder(&n, false);
    import(&n, &host, &refs(&REFS[..1]), &refs(&REFS)).unwrap();
    let cmds = rec.commands();
    let pinned: Vec<&str> = labels(&cmds)
        .iter()
        .map(|c| c.split_whitespace().rev().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(pinned, REFS);
}

#[test]
fn a_running_containerd_labels_through_its_own_socket() {
    let n = node();
    std::fs::create_dir_all(n.root.join("run/containerd")).unwrap();
    std::fs::write(n.root.join("run/containerd/containerd.sock"), "").unwrap();
    let (rec, host) = recorder(&n, true);
    let all = refs(&REFS);
    import(&n, &host, &all, &all).unwrap();
    let cmds = rec.commands();
    assert!(
        !cmds.iter().any(|c| c.contains("--config")),
        "no second containerd: {cmds:#?}"
    );
    let sock = n.root.join("run/containerd/containerd.sock");
    let labels = labels(&cmds);
    assert_eq!(labels.len(), REFS.len(), "{cmds:#?}");
    for l in labels {
        assert_eq!(Path::new(address(l)), sock.as_path());
    }
}

#[test]
fn every_import_labels_again() {
    // containerd 2.x's import replaces the labels of an image that already exists, so a
    // re-run (or the next upgrade hop) must set the label again.
    let n = node();
    let (rec, host) = recorder(&n, false);
    let all = refs(&REFS);
    import(&n, &host, &all, &all).unwrap();
    import(&n, &host, &all, &all).unwrap();
    let cmds = rec.commands();
    let imports: Vec<usize> = (0..cmds.len())
        .filter(|&i| cmds[i].contains("images import -"))
        .collect();
    assert_eq!(imports.len(), 2);
    let after_second = cmds[imports[1]..]
        .iter()
        .filter(|c| c.contains(" images label "))
        .count();
    assert_eq!(after_second, REFS.len(), "{cmds:#?}");
}

#[test]
fn a_failed_label_fails_the_step_naming_the_image_and_stops_containerd() {
    let n = node();
    let (rec, host) = recorder(&n, false);
    rec.answer("images label registry.k8s.io/etcd", 1, "");
    let all = refs(&REFS);
    let e = import(&n, &host, &all, &all).unwrap_err().to_string();
    assert!(e.contains("images label registry.k8s.io/etcd:3.6.5-0"), "{e}");
    let cmds = rec.commands();
    // No label after the failed one; the temporary containerd still stopped.
    assert_eq!(labels(&cmds).len(), 2, "{cmds:#?}");
    at(&cmds, "kill -TERM");
}

#[test]
fn dry_run_runs_no_command() {
    let n = node();
    let rec = Arc::new(Recorder::new());
    let host = Host::with_sys(&n.root, true, rec.clone(), false);
    let all = refs(&REFS);
    assert_eq!(import(&n, &host, &all, &all).unwrap(), all);
    assert!(rec.commands().is_empty(), "{:#?}", rec.commands());
}
