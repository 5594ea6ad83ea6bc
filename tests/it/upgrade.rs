//! Upgrade bundles end to end: build with --upgrade-from (both hops' binaries and images
//! inside and verified), plan, apply node by node on a three-node fake cluster (kubeadm,
//! kubectl and systemctl stand-ins record the order; real containerd imports the images;
//! real etcd is snapshotted), rollback, and delta bundles.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use support::harness::Upstream;
use support::images::push_k8s_images;
use support::node::{self, stand_in};
use support::upgrade_env::{kb, text, KBUNDLE};
use support::upstream::{self, UpstreamSpec};

/// An upstream serving v1.34.3 (real Debian binaries) and v1.33.7's kubeadm/kubelet/kubectl
/// (tiny; its kubectl answers cluster calls), plus a registry with both image sets.
pub(crate) struct Env {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) up: Upstream,
    pub(crate) manifest: PathBuf,
    installer: PathBuf,
}

pub(crate) fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let real = upstream::shared_tree(&UpstreamSpec::v1_34_3());
    let old = tmp.path().join("old");
    upstream::build_tree(&old, &UpstreamSpec::v1_33_7().tiny()).unwrap();
    // v1.33.7's kubectl must answer cluster calls once the upgrade switches to it.
    let k = old.join("dl.k8s.io/release/v1.33.7/bin/linux/amd64/kubectl");
    std::fs::copy(stand_in("kubectl-cluster"), &k).unwrap();
    let digest = kbundle::digest::hash_file(&k).unwrap().0;
    std::fs::write(k.with_extension("sha256"), digest.hex()).unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("dl.k8s.io/release")).unwrap();
    link_github(&real, &old, &root);
    std::os::unix::fs::symlink(
        real.join("dl.k8s.io/release/v1.34.3"),
        root.join("dl.k8s.io/release/v1.34.3"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        old.join("dl.k8s.io/release/v1.33.7"),
        root.join("dl.k8s.io/release/v1.33.7"),
    )
    .unwrap();
    let mdir = tmp.path().join("manifests");
    std::fs::create_dir_all(&mdir).unwrap();
    for m in ["kubernetes-v1.33.7.toml", "kubernetes-v1.34.3.toml"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests").join(m),
            mdir.join(m),
        )
        .unwrap();
    }
    let manifest = mdir.join("kubernetes-v1.34.3.toml");
    let up = Upstream::start_at(&root, &manifest);
    push_k8s_images(&up.registry, "v1.33.7", &[]);
    let installer = tmp.path().join("installer");
    std::fs::write(&installer, "#!/bin/sh\necho installer\n").unwrap();
    Env {
        tmp,
        up,
        manifest,
        installer,
    }
}

/// `root/github.com` serves the real tree, plus the old tree's etcd release (the v1.33.7
/// hop's etcd tools, 3.5.x, beside v1.34.3's 3.6.x).
fn link_github(real: &Path, old: &Path, root: &Path) {
    let gh = root.join("github.com");
    std::fs::create_dir_all(&gh).unwrap();
    for e in std::fs::read_dir(real.join("github.com")).unwrap() {
        let name = e.unwrap().file_name();
        if name != "etcd-io" {
            std::os::unix::fs::symlink(real.join("github.com").join(&name), gh.join(&name)).unwrap();
        }
    }
    let rel = "github.com/etcd-io/etcd/releases/download";
    std::fs::create_dir_all(root.join(rel)).unwrap();
    for tree in [real, old] {
        for e in std::fs::read_dir(tree.join(rel)).unwrap() {
            let name = e.unwrap().file_name();
            let _ = std::os::unix::fs::symlink(tree.join(rel).join(&name), root.join(rel).join(&name));
        }
    }
}

impl Env {
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub(crate) fn build(&self, out: &str, extra: &[&str]) -> Output {
        let mut a: Vec<String> = vec![
            "build".into(),
            self.manifest.display().to_string(),
            "--out".into(),
            self.path(out).display().to_string(),
            "--cache".into(),
            self.path("cache").display().to_string(),
            "--installer".into(),
            self.installer.display().to_string(),
            "--quiet".into(),
        ];
        a.extend(self.up.mirror_args());
        a.extend(extra.iter().map(|s| s.to_string()));
        kb(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

pub(crate) fn bundle_json(archive: &Path) -> serde_json::Value {
    let o = kb(&["inspect", "--json", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn upgrade_bundle_carries_every_hop_and_refuses_bad_starts() {
    let env = env();
    let o = env.build("out", &["--upgrade-from", "v1.32.11"]);
    assert!(o.status.success(), "{}", text(&o));
    let archive = env.path("out/kubernetes-v1.34.3.tar.zst");
    let v = kb(&["verify", archive.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    let bj = bundle_json(&archive);
    assert_eq!(bj["upgrade_from"], "v1.32.11");
    let hops: Vec<&str> = bj["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kubernetes"].as_str().unwrap())
        .collect();
    assert_eq!(hops, ["v1.33.7", "v1.34.3"]);
    let paths: Vec<&str> = bj["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "files/kubeadm/1.33.7/linux-amd64/kubeadm",
        "files/kubelet/1.33.7/linux-amd64/kubelet",
        "files/kubeadm/1.34.3/linux-amd64/kubeadm",
        // Each hop's etcd tools, of its etcd server's minor (3.5.24-0, 3.6.5-0).
        "files/etcd/3.5.25/linux-amd64/etcd-v3.5.25-linux-amd64.tar.gz",
        "files/etcd/3.6.5/linux-amd64/etcd-v3.6.5-linux-amd64.tar.gz",
    ] {
        assert!(paths.contains(&p), "{p} missing");
    }
    let hop_files = |i: usize| -> Vec<&str> {
        bj["hops"][i]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f.as_str().filter(|f| f.starts_with("files/etcd/")))
            .collect()
    };
    assert_eq!(
        hop_files(0),
        ["files/etcd/3.5.25/linux-amd64/etcd-v3.5.25-linux-amd64.tar.gz"]
    );
    assert_eq!(
        hop_files(1),
        ["files/etcd/3.6.5/linux-amd64/etcd-v3.6.5-linux-amd64.tar.gz"]
    );
    let refs: Vec<&str> = bj["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap())
        .collect();
    for r in [
        "registry.k8s.io/pause:3.10",
        "registry.k8s.io/etcd:3.5.24-0",
        "registry.k8s.io/coredns/coredns:v1.12.0",
        "registry.k8s.io/kube-apiserver:v1.33.7",
        "registry.k8s.io/pause:3.10.1",
        "registry.k8s.io/kube-apiserver:v1.34.3",
    ] {
        assert!(refs.contains(&r), "{r} missing from {refs:?}");
    }
    let hop1 = &bj["hops"][0];
    assert!(hop1["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i == "registry.k8s.io/etcd:3.5.24-0"));
    assert!(!hop1["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_str().unwrap().contains("containerd")));
    // Refusals.
    let o = env.build("bad", &["--upgrade-from", "v1.35.0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("v1.35.0"), "{}", text(&o));
    let o = env.build("bad", &["--upgrade-from", "v1.30.2"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("v1.30.2") && err.contains("1.34"), "{err}");
    // Plans from the bundle alone.
    let p = kb(&[
        "upgrade",
        "plan",
        "--bundle",
        archive.to_str().unwrap(),
        "--current",
        "v1.32.11",
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let out = String::from_utf8_lossy(&p.stdout);
    assert!(
        out.contains("v1.33.7") && out.contains("v1.34.3") && out.contains("etcd snapshot"),
        "{out}"
    );
    assert!(
        out.find("upgrade apply v1.33.7").unwrap() < out.find("upgrade apply v1.34.3").unwrap(),
        "{out}"
    );
    let p = kb(&[
        "upgrade",
        "plan",
        "--bundle",
        archive.to_str().unwrap(),
        "--current",
        "v1.31.14",
    ]);
    assert_eq!(p.status.code(), Some(1), "{}", text(&p));
    assert!(String::from_utf8_lossy(&p.stderr).contains("v1.31.14"), "{}", text(&p));
}

/// A fake cluster's answers to `kubectl get nodes/pods -o json`.
fn write_state(dir: &Path, nodes: &[(&str, bool, &str, &str)]) {
    let items: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(name, cp, _, kubelet)| {
            let mut labels = serde_json::json!({"kubernetes.io/hostname": name});
            if *cp {
                labels["node-role.kubernetes.io/control-plane"] = serde_json::json!("");
            }
            serde_json::json!({"metadata": {"name": name, "labels": labels}, "status": {"nodeInfo": {"kubeletVersion": kubelet}}})
        })
        .collect();
    let pods: Vec<serde_json::Value> = nodes
        .iter()
        .filter(|n| n.1)
        .map(|(name, _, api, _)| {
            // A static pod's mirror, as the API server shows it (drain skips those).
            let meta = serde_json::json!({"namespace": "kube-system", "name": format!("kube-apiserver-{name}"),
                "annotations": {"kubernetes.io/config.mirror": "x"}});
            serde_json::json!({"metadata": meta, "spec": {"nodeName": name, "containers": [{"name": "kube-apiserver", "image": format!("registry.k8s.io/kube-apiserver:{api}")}]}})
        })
        .collect();
    std::fs::write(dir.join("nodes.json"), serde_json::json!({"items": items}).to_string()).unwrap();
    std::fs::write(dir.join("pods.json"), serde_json::json!({"items": pods}).to_string()).unwrap();
}

struct Etcd(Child);
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_etcd(dir: &Path) -> (Etcd, String) {
    let port = support::registry::free_port();
    let peer = support::registry::free_port();
    let metrics = support::registry::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("t=http://127.0.0.1:{peer}")])
        .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{metrics}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian etcd-server) must be installed");
    let e = Etcd(child);
    for _ in 0..100 {
        let ok = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &url, "endpoint", "health"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return (e, url);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("etcd did not become healthy");
}

#[test]
fn apply_walks_a_three_node_cluster_in_order_and_rolls_back() {
    let env = env();
    let o = env.build("out", &["--upgrade-from", "v1.32.11"]);
    assert!(o.status.success(), "{}", text(&o));
    let archive = env.path("out/kubernetes-v1.34.3.tar.zst");
    let cfg = env.path("cluster.toml");
    std::fs::write(&cfg, kb(&["example-config"]).stdout).unwrap();
    // Three node roots, prepared from the bundle (real containerd, etcdctl), with the
    // cluster-facing kubectl replaced by the stand-in.
    let mut roots = Vec::new();
    for node in ["cp1", "worker1", "worker2"] {
        let r = env.path(node);
        std::fs::create_dir_all(r.join("etc")).unwrap();
        let o = kb(&[
            "install",
            "--bundle",
            archive.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--root",
            r.to_str().unwrap(),
            "--node",
            node,
            "--phase",
            "prepare",
            "--skip-preflight",
            "os,commands",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let kubectl = r.join("opt/kbundle/versions/kubernetes-v1.34.3/kubectl");
        std::fs::copy(stand_in("kubectl-cluster"), &kubectl).unwrap();
        roots.push(r);
    }
    let state = env.path("cluster-state");
    std::fs::create_dir_all(&state).unwrap();
    write_state(
        &state,
        &[
            ("cp1", true, "v1.32.11", "v1.32.11"),
            ("worker1", false, "", "v1.32.11"),
            ("worker2", false, "", "v1.32.11"),
        ],
    );
    // Every node stages the bundle first (images, binaries, its kbundle.io/staged
    // annotation written with its own kubelet credentials).
    for (node, root) in ["cp1", "worker1", "worker2"].iter().zip(&roots) {
        let conf = format!("# stand-in kubelet kubeconfig\nuser: system:node:{node}\n");
        std::fs::create_dir_all(root.join("etc/kubernetes")).unwrap();
        std::fs::write(root.join("etc/kubernetes/kubelet.conf"), conf).unwrap();
        let o = Command::new(KBUNDLE)
            .args([
                "upgrade",
                "stage",
                "--bundle",
                archive.to_str().unwrap(),
                "--node",
                node,
                "--root",
            ])
            .arg(root)
            .env("KBUNDLE_STANDIN_STATE", &state)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let (_etcd, etcd_url) = start_etcd(env.tmp.path());
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(stand_in("systemctl"), bin.join("systemctl")).unwrap();
    let log = env.path("calls.log");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let apply = |node: &str, root: &Path| -> Output {
        Command::new(KBUNDLE)
            .args([
                "upgrade",
                "apply",
                "--bundle",
                archive.to_str().unwrap(),
                "--node",
                node,
                "--root",
            ])
            .arg(root)
            .args([
                "--kubeconfig",
                "/dev/null",
                "--etcd-endpoint",
                &etcd_url,
                "--ready-timeout",
                "20",
            ])
            .env("PATH", &path)
            .env("KBUNDLE_STANDIN_LOG", &log)
            .env("KBUNDLE_STANDIN_STATE", &state)
            .output()
            .unwrap()
    };
    // A worker before the control plane: refused, nothing done.
    let o = apply("worker1", &roots[1]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing to upgrade worker1"),
        "{}",
        text(&o)
    );
    assert!(
        !log.exists() || !std::fs::read_to_string(&log).unwrap().contains("upgrade"),
        "refused apply ran something"
    );
    // prepare pinned every image; unpin them all on cp1, so the hop's import must pin again.
    let refs: Vec<String> = bundle_json(&archive)["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(node::unpinned_in_root(&roots[0], &refs), Vec::<String>::new());
    node::unpin_in_root(&roots[0], &refs);
    // The control plane: etcd snapshot, kubeadm upgrade apply, drain, kubelet, uncordon.
    let o = apply("cp1", &roots[0]);
    assert!(o.status.success(), "{}", text(&o));
    let backups: Vec<_> = std::fs::read_dir(roots[0].join("var/lib/kbundle/backups"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        backups.iter().any(|b| b.file_name().to_string_lossy().ends_with(".db")),
        "no etcd snapshot"
    );
    // ...recorded for rollback, which prints it when the hop moved etcd.
    let snap = std::fs::read_to_string(roots[0].join("var/lib/kbundle/upgrade/v1.33.7/etcd-snapshot")).unwrap();
    assert!(
        snap.starts_with("/var/lib/kbundle/backups/etcd-before-v1.33.7-") && snap.ends_with(".db"),
        "{snap}"
    );
    assert!(roots[0].join(snap.trim_start_matches('/')).is_file(), "{snap}");
    // The hop's etcd tools (3.5.x for v1.33.7) are staged beside the installed 3.6.x ones,
    // and /usr/local/bin follows the hop once kubeadm has upgraded etcd; the snapshot was
    // taken with the tool of the running server's minor (Debian's 3.4 here).
    let versions = roots[0].join("opt/kbundle/versions");
    assert!(versions.join("etcd-3.6.5/etcdctl").is_file());
    assert!(versions.join("etcd-3.5.25/etcdutl").is_file());
    assert_eq!(
        std::fs::read_link(roots[0].join("usr/local/bin/etcdctl")).unwrap(),
        Path::new("/opt/kbundle/versions/etcd-3.5.25/etcdctl")
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("using etcdctl 3.4.23"),
        "{}",
        text(&o)
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let pos = |needle: &str| calls.find(needle).unwrap_or_else(|| panic!("no {needle:?} in {calls}"));
    assert!(pos("kubeadm upgrade apply v1.33.7 -y") < pos("drain cp1 --ignore-daemonsets --delete-emptydir-data"));
    assert!(pos("drain cp1") < pos("systemctl restart kubelet"));
    // The drained node's containerd pins the hop's pause (v1.33.7: 3.10, where prepare
    // pinned the target's 3.10.1) and restarts before the kubelet moves; its binaries are
    // the bundle's already, so their links stay.
    assert!(pos("drain cp1") < pos("systemctl restart containerd"));
    assert!(pos("systemctl restart containerd") < pos("systemctl restart kubelet"));
    let cfg = std::fs::read_to_string(roots[0].join("etc/containerd/config.toml")).unwrap();
    assert!(cfg.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""), "{cfg}");
    assert_eq!(
        std::fs::read_link(roots[0].join("usr/local/bin/containerd")).unwrap(),
        Path::new("/opt/kbundle/versions/containerd-2.1.5/containerd")
    );
    assert!(pos("systemctl restart kubelet") < pos("get node cp1"));
    assert!(pos("get node cp1") < pos("uncordon cp1"));
    assert_eq!(
        std::fs::read_link(roots[0].join("usr/local/bin/kubelet")).unwrap(),
        Path::new("/opt/kbundle/versions/kubernetes-v1.33.7/kubelet")
    );
    // The hop's import pinned every image of the bundle again (each hop's, for rollbacks).
    assert_eq!(node::unpinned_in_root(&roots[0], &refs), Vec::<String>::new());
    // The cluster moved; the workers go one at a time with `kubeadm upgrade node`.
    write_state(
        &state,
        &[
            ("cp1", true, "v1.33.7", "v1.33.7"),
            ("worker1", false, "", "v1.32.11"),
            ("worker2", false, "", "v1.32.11"),
        ],
    );
    let o = apply("worker1", &roots[1]);
    assert!(o.status.success(), "{}", text(&o));
    let calls = std::fs::read_to_string(&log).unwrap();
    let w = calls
        .find("kubeadm upgrade node")
        .expect("worker ran kubeadm upgrade node");
    assert!(
        w < calls.find("drain worker1").unwrap()
            && calls.find("drain worker1").unwrap() < calls.find("uncordon worker1").unwrap()
    );
    assert!(
        !roots[1].join("var/lib/kbundle/backups").exists(),
        "workers take no etcd snapshot"
    );
    // A re-run resumes from the journal and runs nothing again.
    let count = |c: &str| {
        c.lines()
            .filter(|l| l.contains("upgrade node") || l.contains("drain") || l.contains("restart"))
            .count()
    };
    let n = count(&calls);
    let o = apply("worker1", &roots[1]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("done earlier, skipped"),
        "{}",
        text(&o)
    );
    assert_eq!(
        count(&std::fs::read_to_string(&log).unwrap()),
        n,
        "a resumed apply repeated work"
    );
    // A bare pod (no controller) on worker2: the drain refuses it by name, deletes nothing,
    // and says which flag would; with --force-drain kubectl gets --force.
    let pods_file = state.join("pods.json");
    let mut pods: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pods_file).unwrap()).unwrap();
    let bare =
        serde_json::json!({"metadata": {"namespace": "default", "name": "debug"}, "spec": {"nodeName": "worker2"}});
    pods["items"].as_array_mut().unwrap().push(bare);
    std::fs::write(&pods_file, pods.to_string()).unwrap();
    let o = apply("worker2", &roots[2]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("default/debug") && err.contains("--force-drain"), "{err}");
    let forced = |c: &str| {
        c.lines()
            .any(|l| l.starts_with("kubectl") && l.contains("drain worker2") && l.contains("--force"))
    };
    assert!(
        !forced(&std::fs::read_to_string(&log).unwrap()),
        "drained with --force unasked"
    );
    let o = Command::new(KBUNDLE)
        .args([
            "upgrade",
            "apply",
            "--bundle",
            archive.to_str().unwrap(),
            "--node",
            "worker2",
            "--root",
        ])
        .arg(&roots[2])
        .args(["--kubeconfig", "/dev/null", "--ready-timeout", "20", "--force-drain"])
        .env("PATH", &path)
        .env("KBUNDLE_STANDIN_LOG", &log)
        .env("KBUNDLE_STANDIN_STATE", &state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(forced(&std::fs::read_to_string(&log).unwrap()));
    // Rollback on the control plane restores the previous binaries.
    let o = Command::new(KBUNDLE)
        .args(["upgrade", "rollback", "--root"])
        .arg(&roots[0])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_link(roots[0].join("usr/local/bin/kubelet")).unwrap(),
        Path::new("/opt/kbundle/versions/kubernetes-v1.34.3/kubelet")
    );
    // ...and forgets the hop's journal, so a later apply redoes it.
    let state = std::fs::read_dir(roots[0].join("var/lib/kbundle/state")).unwrap();
    assert!(!state
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("upgrade-")));
}

#[test]
fn delta_bundle_is_small_and_needs_its_base() {
    let env = env();
    let o = env.build("full", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let full = env.path("full/kubernetes-v1.34.3.tar.zst");
    let o = env.build(
        "delta",
        &["--upgrade-from", "v1.33.7", "--base", full.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let delta = env.path("delta/kubernetes-v1.34.3.tar.zst");
    let (fs, ds) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    assert!(ds * 5 < fs, "delta {ds} bytes is not much smaller than full {fs}");
    let bj = bundle_json(&delta);
    assert!(bj["base"]["name"] == "kubernetes-v1.34.3");
    // Without the base: every missing entry is named.
    let o = kb(&["verify", delta.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("files/containerd/2.1.5/linux-amd64/containerd-2.1.5-linux-amd64.tar.gz")
            && err.contains("images/blobs/sha256/"),
        "{err}"
    );
    // With the base unpacked (as a node keeps it): verifies.
    let u = kb(&["unpack", full.to_str().unwrap(), env.path("base").to_str().unwrap()]);
    assert!(u.status.success(), "{}", text(&u));
    let o = kb(&[
        "verify",
        delta.to_str().unwrap(),
        "--base",
        env.path("base/kubernetes-v1.34.3").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}
