use super::*;
use crate::host::Host;
use std::os::unix::fs::PermissionsExt;

/// What `kubeadm init` writes (v1.34, trimmed of nothing).
pub(crate) const KUBEADM_ETCD: &str = include_str!("../../tests/fixtures/kubeadm-v1.34-etcd.yaml");

fn diff(a: &str, b: &str) -> Vec<(usize, String, String)> {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.split_inclusive('\n').collect(), b.split_inclusive('\n').collect());
    assert_eq!(la.len(), lb.len(), "line count changed");
    la.iter()
        .zip(&lb)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i + 1, x.to_string(), y.to_string()))
        .collect()
}

#[test]
fn rewrites_kubeadm_manifest_in_three_places_only() {
    let r = rewrite_data_dir(KUBEADM_ETCD, "/var/lib/etcd-restored").unwrap();
    assert_eq!(r.old_data_dir, "/var/lib/etcd");
    assert_eq!(r.volume, "etcd-data");
    let d = diff(KUBEADM_ETCD, &r.text);
    assert_eq!(
        d,
        vec![
            (
                19,
                "    - --data-dir=/var/lib/etcd\n".into(),
                "    - --data-dir=/var/lib/etcd-restored\n".into()
            ),
            (
                65,
                "    - mountPath: /var/lib/etcd\n".into(),
                "    - mountPath: /var/lib/etcd-restored\n".into()
            ),
            (
                81,
                "      path: /var/lib/etcd\n".into(),
                "      path: /var/lib/etcd-restored\n".into()
            ),
        ]
    );
    assert_eq!(r.changed.len(), 3);
    assert_eq!(r.changed[0].line, 19);
    // The certs volume and its mount, a prefix of the same path, are untouched.
    assert!(r.text.contains("      path: /etc/kubernetes/pki/etcd\n"));
    // Rewriting again from the new text goes back byte for byte.
    let back = rewrite_data_dir(&r.text, "/var/lib/etcd").unwrap();
    assert_eq!(back.text, KUBEADM_ETCD);
}

#[test]
fn reads_command_flags() {
    let flags = command_flags(KUBEADM_ETCD).unwrap();
    let get = |k: &str| flags.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    assert_eq!(get("--name"), Some("cp1"));
    assert_eq!(get("--initial-cluster"), Some("cp1=https://10.0.0.11:2380"));
    assert_eq!(get("--initial-advertise-peer-urls"), Some("https://10.0.0.11:2380"));
    assert_eq!(get("--data-dir"), Some("/var/lib/etcd"));
}

#[test]
fn keeps_quotes_comments_crlf_and_other_indentation() {
    let text = [
        "# managed by kubeadm",
        "spec:",
        "  containers:",
        "    - name: etcd",
        "      command:",
        "        - etcd",
        "        - \"--data-dir=/var/lib/etcd/\"   # trailing slash",
        "      volumeMounts:",
        "        - name: etcd-data",
        "          mountPath: '/var/lib/etcd'",
        "      env:",
        "        - name: X",
        "          value: |",
        "            path: /var/lib/etcd",
        "            - --data-dir=/nope",
        "  volumes:",
        "    - name: etcd-data",
        "      hostPath:",
        "        type: DirectoryOrCreate",
        "        path: /var/lib/etcd # host",
        "",
    ]
    .join("\r\n");
    let text = text.as_str();
    let r = rewrite_data_dir(text, "/data/etcd-2").unwrap();
    assert_eq!(r.old_data_dir, "/var/lib/etcd");
    let d = diff(text, &r.text);
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(d[0].2, "        - \"--data-dir=/data/etcd-2\"   # trailing slash\r\n");
    assert_eq!(d[1].2, "          mountPath: '/data/etcd-2'\r\n");
    assert_eq!(d[2].2, "        path: /data/etcd-2 # host\r\n");
}

fn without_line(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| !l.contains(needle))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn refuses_what_it_cannot_edit_safely() {
    let err = |t: &str, d: &str| rewrite_data_dir(t, d).unwrap_err().to_string();
    let e = err(&without_line(KUBEADM_ETCD, "--data-dir"), "/var/lib/x");
    assert!(e.contains("no `- --data-dir=PATH`"), "{e}");
    let twice = KUBEADM_ETCD.replace(
        "    - --name=cp1\n",
        "    - --name=cp1\n    - --data-dir=/var/lib/etcd\n",
    );
    assert!(err(&twice, "/var/lib/x").contains("2 times"));
    let wal = KUBEADM_ETCD.replace(
        "    - --name=cp1\n",
        "    - --name=cp1\n    - --wal-dir=/var/lib/etcd-wal\n",
    );
    assert!(err(&wal, "/var/lib/x").contains("--wal-dir"));
    let no_mount = KUBEADM_ETCD.replace("- mountPath: /var/lib/etcd\n", "- mountPath: /data\n");
    assert!(err(&no_mount, "/var/lib/x").contains("no volumeMount"));
    let other_host = KUBEADM_ETCD.replace("      path: /var/lib/etcd\n", "      path: /srv/etcd\n");
    assert!(err(&other_host, "/var/lib/x").contains("/srv/etcd"));
    let split = KUBEADM_ETCD.replace("      path: /var/lib/etcd\n", "      path: /var/lib/\n        etcd\n");
    assert!(
        err(&split, "/var/lib/x").contains("line"),
        "{}",
        err(&split, "/var/lib/x")
    );
    let tabs = KUBEADM_ETCD.replace("    name: etcd-data\n", "\tname: etcd-data\n");
    assert!(err(&tabs, "/var/lib/x").contains("tab"));
    assert!(err(KUBEADM_ETCD, "/var/lib/etcd").contains("already uses"));
    for bad in ["relative", "/", "/a/../b", "/a/", "/a b", "/a:b", "/a//b"] {
        assert!(check_node_dir(bad).is_err(), "{bad}");
    }
    check_node_dir("/var/lib/etcd-restore.2024-01-01_1").unwrap();
}

/// Diffs `text` before and after pointing it at /data/etcd-2: the changed lines, 1-based.
fn edited_lines(text: &str) -> Vec<(usize, String, String)> {
    let r = rewrite_data_dir(text, "/data/etcd-2").unwrap();
    diff(text, &r.text)
}

#[test]
fn round_trip_keeps_comments_and_layout() {
    let text = [
        "# etcd static pod, managed by kubeadm",
        "---",
        "apiVersion: v1   # core",
        "kind: Pod",
        "",
        "spec:",
        "  # the only container",
        "  containers:",
        "  - command:",
        "    - etcd    # the binary",
        "    # data lives here:",
        "    - --data-dir=/var/lib/etcd",
        "    - --name=cp1",
        "    volumeMounts:",
        "    - {mountPath: /etc/kubernetes/pki/etcd, name: etcd-certs}",
        "    - mountPath: /var/lib/etcd   # keep in step with --data-dir",
        "      name: etcd-data",
        "",
        "  volumes:",
        "  - name: etcd-data",
        "    hostPath: {type: DirectoryOrCreate, path: /srv/unrelated}",
        "    # kubeadm writes hostPath as a block:",
        "  - name: etcd-certs",
        "    hostPath:",
        "      path: /etc/kubernetes/pki/etcd",
        "",
    ]
    .join("\n");
    // The data volume's hostPath is a flow mapping naming another directory: refused.
    let e = rewrite_data_dir(&text, "/data/etcd-2").unwrap_err();
    assert!(matches!(&e, ManifestError::OtherHostDir { line: 21, .. }), "{e}");
    // In block style it is edited, and every comment, blank line and the `---` stay.
    let text = text.replace(
        "    hostPath: {type: DirectoryOrCreate, path: /srv/unrelated}",
        "    hostPath:\n      path: /var/lib/etcd     # host side\n      type: DirectoryOrCreate",
    );
    assert_eq!(
        edited_lines(&text),
        vec![
            (
                12,
                "    - --data-dir=/var/lib/etcd\n".into(),
                "    - --data-dir=/data/etcd-2\n".into()
            ),
            (
                16,
                "    - mountPath: /var/lib/etcd   # keep in step with --data-dir\n".into(),
                "    - mountPath: /data/etcd-2   # keep in step with --data-dir\n".into()
            ),
            (
                22,
                "      path: /var/lib/etcd     # host side\n".into(),
                "      path: /data/etcd-2     # host side\n".into()
            ),
        ]
    );
}

#[test]
fn refuses_flow_escaped_and_multi_document_manifests() {
    let err = |t: &str| rewrite_data_dir(t, "/data/etcd-2").unwrap_err();
    let flow = KUBEADM_ETCD.replace(
        "    - mountPath: /var/lib/etcd\n      name: etcd-data\n",
        "    - {mountPath: /var/lib/etcd, name: etcd-data}\n",
    );
    assert!(
        matches!(err(&flow), ManifestError::NotInPlace { line: 65 }),
        "{}",
        err(&flow)
    );
    let escaped = KUBEADM_ETCD.replace(
        "    - --data-dir=/var/lib/etcd\n",
        "    - \"--data-dir=/var/lib/\\x65tcd\"\n",
    );
    assert!(
        matches!(err(&escaped), ManifestError::NotInPlace { line: 19 }),
        "{}",
        err(&escaped)
    );
    let broken = KUBEADM_ETCD.replace("status: {}", "status: {");
    assert!(matches!(err(&broken), ManifestError::Parse(_)), "{}", err(&broken));
    let two = format!("{KUBEADM_ETCD}---\n{KUBEADM_ETCD}");
    assert!(matches!(err(&two), ManifestError::NotAPod), "{}", err(&two));
    let twice = KUBEADM_ETCD.replace(
        "    - --name=cp1\n",
        "    - --name=cp1\n    - --data-dir=/var/lib/etcd\n",
    );
    assert!(matches!(err(&twice), ManifestError::ManyDataDirs { lines } if lines == [19, 28]));
}

#[test]
fn reads_only_the_pod_spec_not_text_that_looks_like_it() {
    // A block scalar and another key's list hold look-alikes; only spec.containers counts.
    let text = KUBEADM_ETCD.replace(
        "  annotations:\n",
        "  annotations:\n    note: |\n      - --data-dir=/elsewhere\n      path: /var/lib/etcd\n",
    );
    let flags = command_flags(&text).unwrap();
    assert_eq!(flags.iter().filter(|(k, _)| k == "--data-dir").count(), 1);
    let d = diff(&text, &rewrite_data_dir(&text, "/data/etcd-2").unwrap().text);
    assert_eq!(d.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(), [22, 68, 84]);
}

// --- the node procedure ---

const APISERVER: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n";

fn node() -> (tempfile::TempDir, NodePaths) {
    let t = tempfile::tempdir().unwrap();
    let p = NodePaths::new(t.path());
    std::fs::create_dir_all(p.manifests_dir()).unwrap();
    std::fs::write(p.etcd_manifest(), KUBEADM_ETCD).unwrap();
    std::fs::set_permissions(p.etcd_manifest(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(p.apiserver_manifest(), APISERVER).unwrap();
    (t, p)
}

fn opts(p: &NodePaths) -> ApplyOptions {
    ApplyOptions {
        wait_for_apiserver: None,
        restored_dir: p.root.join("var/lib/etcd-new"),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn apply_switches_and_backs_up() {
    let (_t, p) = node();
    let plan = plan(&Host::new(&p.root, false), "/var/lib/etcd-new").unwrap();
    assert_eq!(plan.flag("--name"), Some("cp1"));
    let mut log = Vec::new();
    apply(&Host::new(&p.root, false), &plan, &opts(&p), &mut |_, m| {
        log.push(m.to_string())
    })
    .unwrap();
    assert_eq!(read(&p.etcd_manifest()), plan.rewrite.text);
    assert_eq!(read(&p.etcd_backup()), KUBEADM_ETCD);
    assert_eq!(read(&p.apiserver_manifest()), APISERVER);
    assert!(!p.apiserver_stopped().exists());
    let mode = std::fs::metadata(p.etcd_manifest()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = log.join("\n");
    for s in ["step 1/3", "step 2/3", "step 3/3", "line 19"] {
        assert!(log.contains(s), "{log}");
    }
    // No temp files left in the manifests directory (kubelet would see them).
    let names: Vec<_> = std::fs::read_dir(p.manifests_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A second restore keeps the first backup under another name.
    let plan2 = super::plan(&Host::new(&p.root, false), "/var/lib/etcd-newer").unwrap();
    apply(&Host::new(&p.root, false), &plan2, &opts(&p), &mut |_, _| {}).unwrap();
    assert_eq!(read(&p.etcd_backup()), plan.rewrite.text);
    assert_eq!(read(&super::super::with_suffix(&p.etcd_backup(), ".1")), KUBEADM_ETCD);
}

#[test]
fn plan_refuses_leftovers_and_missing_apiserver() {
    let (_t, p) = node();
    std::fs::write(p.apiserver_stopped(), APISERVER).unwrap();
    let e = plan(&Host::new(&p.root, false), "/var/lib/etcd-new")
        .unwrap_err()
        .to_string();
    assert!(e.contains("kbundle-stopped") && e.contains("earlier run"), "{e}");
    std::fs::remove_file(p.apiserver_stopped()).unwrap();
    std::fs::remove_file(p.apiserver_manifest()).unwrap();
    let e = plan(&Host::new(&p.root, false), "/var/lib/etcd-new")
        .unwrap_err()
        .to_string();
    assert!(e.contains("kube-apiserver.yaml"), "{e}");
}

fn fail_at(step: Step) -> (tempfile::TempDir, NodePaths, String) {
    let (t, p) = node();
    let plan = plan(&Host::new(&p.root, false), "/var/lib/etcd-new").unwrap();
    let e = apply_with(&Host::new(&p.root, false), &plan, &opts(&p), &mut |_, _| {}, &mut |s| {
        if s == step {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    (t, p, e.to_string())
}

#[test]
fn failures_undo_earlier_steps_and_say_so() {
    for step in [Step::StopApiserver, Step::WriteBackup, Step::WriteEtcdManifest] {
        let (_t, p, e) = fail_at(step);
        assert!(e.contains("injected failure"), "{e}");
        assert!(e.contains("state of the node now"), "{e}");
        assert_eq!(read(&p.etcd_manifest()), KUBEADM_ETCD, "{step:?}");
        assert_eq!(read(&p.apiserver_manifest()), APISERVER, "{step:?}");
        assert!(!p.apiserver_stopped().exists(), "{step:?}");
        assert!(e.contains("etcd-new (not used by etcd"), "{e}");
    }
    let (_t, _p, e) = fail_at(Step::StopApiserver);
    assert!(
        e.contains("step 1") && e.contains("in place (API server running)"),
        "{e}"
    );
    let (_t, _p, e) = fail_at(Step::WriteBackup);
    assert!(e.contains("step 2") && e.contains("moved back"), "{e}");

    // Step 3 cannot put the API server back (the injected failure stands in for the
    // rename failing), so it says how to, and etcd.yaml goes back to the original.
    let (_t, p, e) = fail_at(Step::StartApiserver);
    assert!(e.contains("step 3"), "{e}");
    assert!(e.contains("STILL MOVED AWAY"), "{e}");
    assert!(e.contains(&format!("mv {}", p.apiserver_stopped().display())), "{e}");
    assert!(e.contains("put back as it was"), "{e}");
    assert_eq!(read(&p.etcd_manifest()), KUBEADM_ETCD);
    assert_eq!(read(&p.apiserver_stopped()), APISERVER);
}

#[test]
fn refuses_etcd_yaml_changed_meanwhile() {
    let (_t, p) = node();
    let plan = plan(&Host::new(&p.root, false), "/var/lib/etcd-new").unwrap();
    let edited = format!("{KUBEADM_ETCD}# edited\n");
    std::fs::write(p.etcd_manifest(), &edited).unwrap();
    let e = apply(&Host::new(&p.root, false), &plan, &opts(&p), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("changed while kbundle was restoring"), "{e}");
    assert!(e.contains("changed by someone else"), "{e}");
    assert_eq!(read(&p.etcd_manifest()), edited);
    assert!(!p.etcd_backup().exists());
    assert_eq!(read(&p.apiserver_manifest()), APISERVER);
}

#[test]
fn process_scan_finds_nothing_made_up() {
    assert!(processes_named(&Host::new(Path::new("/"), true), "no-such-process-kb").is_empty());
    let mut log = Vec::new();
    wait_for_exit(
        &Host::new(Path::new("/"), true),
        "no-such-process-kb",
        Duration::from_secs(1),
        &mut |_, m| log.push(m.to_string()),
    )
    .unwrap();
    assert!(log[0].contains("no no-such-process-kb process"));
}
