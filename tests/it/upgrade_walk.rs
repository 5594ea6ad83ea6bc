//! `upgrade apply` node by node on a three-node fake cluster (cp1, worker1, worker2) from a
//! v1.32.11 -> v1.33.7 -> v1.34.3 bundle: kubeadm, kubectl and systemctl stand-ins record
//! the order; the real containerd imports and pins the images; a real etcd is snapshotted.
//! Then resume, drain's refusal of a bare pod, and rollback.

use crate::support;
use crate::upgrade::{bundle_json, env, Env};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use support::node::{self, stand_in};
use support::upgrade_env::{kb, text, KBUNDLE};

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

const NODES: [&str; 3] = ["cp1", "worker1", "worker2"];

/// Three prepared and staged node roots, the stand-in cluster's state, a real etcd.
struct Walk {
    /// Keeps the upstream, the registry and the temp dir alive.
    _env: Env,
    archive: PathBuf,
    roots: Vec<PathBuf>,
    state: PathBuf,
    log: PathBuf,
    path: String,
    etcd_url: String,
    _etcd: Etcd,
}

/// Prepares one node root from the bundle (real containerd, etcdctl), with the
/// cluster-facing kubectl replaced by the stand-in.
fn prepare(env: &Env, archive: &Path, cfg: &Path, node: &str) -> PathBuf {
    let r = env.path(node);
    std::fs::create_dir_all(r.join("etc")).unwrap();
    support::upgrade_env::prepare_root(archive, cfg, &r, node);
    let kubectl = r.join("opt/kbundle/versions/kubernetes-v1.34.3/kubectl");
    std::fs::copy(stand_in("kubectl-cluster"), &kubectl).unwrap();
    r
}

/// `upgrade stage` on a node (images, binaries, its kbundle.io/staged annotation written
/// with its own kubelet credentials).
fn stage(archive: &Path, state: &Path, node: &str, root: &Path) {
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
        .env("KBUNDLE_STANDIN_STATE", state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

impl Walk {
    fn new() -> Walk {
        let env = env();
        let o = env.build("out", &["--upgrade-from", "v1.32.11"]);
        assert!(o.status.success(), "{}", text(&o));
        let archive = env.path("out/kubernetes-v1.34.3.tar.zst");
        let cfg = env.path("cluster.toml");
        std::fs::write(&cfg, kb(&["example-config"]).stdout).unwrap();
        let roots: Vec<PathBuf> = NODES.iter().map(|n| prepare(&env, &archive, &cfg, n)).collect();
        let state = env.path("cluster-state");
        std::fs::create_dir_all(&state).unwrap();
        let old = "v1.32.11";
        write_state(
            &state,
            &[
                ("cp1", true, old, old),
                ("worker1", false, "", old),
                ("worker2", false, "", old),
            ],
        );
        for (node, root) in NODES.iter().zip(&roots) {
            stage(&archive, &state, node, root);
        }
        let (etcd, etcd_url) = start_etcd(env.tmp.path());
        let bin = env.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(stand_in("systemctl"), bin.join("systemctl")).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let log = env.path("calls.log");
        Walk {
            _env: env,
            archive,
            roots,
            state,
            log,
            path,
            etcd_url,
            _etcd: etcd,
        }
    }

    /// `upgrade apply` on node `i` with the stand-ins, plus `extra` arguments.
    fn apply(&self, i: usize, extra: &[&str]) -> Output {
        Command::new(KBUNDLE)
            .args([
                "upgrade",
                "apply",
                "--bundle",
                self.archive.to_str().unwrap(),
                "--node",
                NODES[i],
            ])
            .arg("--root")
            .arg(&self.roots[i])
            .args([
                "--kubeconfig",
                "/dev/null",
                "--etcd-endpoint",
                &self.etcd_url,
                "--ready-timeout",
                "20",
            ])
            .args(extra)
            .env("PATH", &self.path)
            .env("KBUNDLE_STANDIN_LOG", &self.log)
            .env("KBUNDLE_STANDIN_STATE", &self.state)
            .output()
            .unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn link(&self, i: usize, p: &str) -> PathBuf {
        std::fs::read_link(self.roots[i].join(p)).unwrap()
    }

    /// Every image reference of the bundle.
    fn refs(&self) -> Vec<String> {
        bundle_json(&self.archive)["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["ref"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A worker before the control plane: refused, nothing done.
fn a_worker_first_is_refused(w: &Walk) {
    let o = w.apply(1, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refusing to upgrade worker1"), "{}", text(&o));
    assert!(!w.calls().contains("upgrade"), "refused apply ran something");
}

/// The pre-hop etcd snapshot: taken, recorded for rollback, with the tool of the server's
/// minor; the hop's etcd tools (3.5.x for v1.33.7) staged beside the installed 3.6.x and
/// linked once kubeadm has upgraded etcd.
fn cp1_snapshot_and_etcd_tools(w: &Walk, o: &Output) {
    let backups: Vec<_> = std::fs::read_dir(w.roots[0].join("var/lib/kbundle/backups"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        backups.iter().any(|b| b.file_name().to_string_lossy().ends_with(".db")),
        "no etcd snapshot"
    );
    let snap = std::fs::read_to_string(w.roots[0].join("var/lib/kbundle/upgrade/v1.33.7/etcd-snapshot")).unwrap();
    assert!(
        snap.starts_with("/var/lib/kbundle/backups/etcd-before-v1.33.7-") && snap.ends_with(".db"),
        "{snap}"
    );
    assert!(w.roots[0].join(snap.trim_start_matches('/')).is_file(), "{snap}");
    let versions = w.roots[0].join("opt/kbundle/versions");
    assert!(versions.join("etcd-3.6.5/etcdctl").is_file());
    assert!(versions.join("etcd-3.5.25/etcdutl").is_file());
    assert_eq!(
        w.link(0, "usr/local/bin/etcdctl"),
        Path::new("/opt/kbundle/versions/etcd-3.5.25/etcdctl")
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("using etcdctl 3.4.23"),
        "{}",
        text(o)
    );
}

/// kubeadm, drain, containerd (the hop's pause: 3.10 where prepare pinned the target's
/// 3.10.1; binaries already the bundle's, so their links stay), kubelet, Ready, uncordon.
fn cp1_order_runtime_and_links(w: &Walk) {
    let calls = w.calls();
    let pos = |needle: &str| calls.find(needle).unwrap_or_else(|| panic!("no {needle:?} in {calls}"));
    assert!(pos("kubeadm upgrade apply v1.33.7 -y") < pos("drain cp1 --ignore-daemonsets --delete-emptydir-data"));
    assert!(pos("drain cp1") < pos("systemctl restart containerd"));
    assert!(pos("systemctl restart containerd") < pos("systemctl restart kubelet"));
    assert!(pos("systemctl restart kubelet") < pos("get node cp1"));
    assert!(pos("get node cp1") < pos("uncordon cp1"));
    let cfg = std::fs::read_to_string(w.roots[0].join("etc/containerd/config.toml")).unwrap();
    assert!(cfg.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""), "{cfg}");
    assert_eq!(
        w.link(0, "usr/local/bin/containerd"),
        Path::new("/opt/kbundle/versions/containerd-2.1.5/containerd")
    );
    assert_eq!(
        w.link(0, "usr/local/bin/kubelet"),
        Path::new("/opt/kbundle/versions/kubernetes-v1.33.7/kubelet")
    );
}

/// The workers go one at a time with `kubeadm upgrade node`, no snapshot; a re-run resumes
/// from the journal and runs nothing again.
fn worker1_upgrades_then_resumes(w: &Walk) {
    let o = w.apply(1, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let calls = w.calls();
    let at = |n: &str| calls.find(n).unwrap_or_else(|| panic!("no {n:?} in {calls}"));
    assert!(at("kubeadm upgrade node") < at("drain worker1") && at("drain worker1") < at("uncordon worker1"));
    assert!(
        !w.roots[1].join("var/lib/kbundle/backups").exists(),
        "workers take no etcd snapshot"
    );
    let count = |c: &str| {
        c.lines()
            .filter(|l| l.contains("upgrade node") || l.contains("drain") || l.contains("restart"))
            .count()
    };
    let n = count(&calls);
    let o = w.apply(1, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("done earlier, skipped"),
        "{}",
        text(&o)
    );
    assert_eq!(count(&w.calls()), n, "a resumed apply repeated work");
}

/// A bare pod (no controller) on worker2: the drain refuses it by name, deletes nothing,
/// and says which flag would; with --force-drain kubectl gets --force.
fn worker2_bare_pod_needs_force_drain(w: &Walk) {
    let pods_file = w.state.join("pods.json");
    let mut pods: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pods_file).unwrap()).unwrap();
    let bare =
        serde_json::json!({"metadata": {"namespace": "default", "name": "debug"}, "spec": {"nodeName": "worker2"}});
    pods["items"].as_array_mut().unwrap().push(bare);
    std::fs::write(&pods_file, pods.to_string()).unwrap();
    let o = w.apply(2, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("default/debug") && err.contains("--force-drain"), "{err}");
    let forced = |c: &str| {
        c.lines()
            .any(|l| l.starts_with("kubectl") && l.contains("drain worker2") && l.contains("--force"))
    };
    assert!(!forced(&w.calls()), "drained with --force unasked");
    let o = w.apply(2, &["--force-drain"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(forced(&w.calls()));
}

/// Rollback on the control plane restores the previous binaries and forgets the hop's
/// journal, so a later apply redoes it.
fn cp1_rolls_back(w: &Walk) {
    let o = Command::new(KBUNDLE)
        .args(["upgrade", "rollback", "--root"])
        .arg(&w.roots[0])
        .env("PATH", &w.path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        w.link(0, "usr/local/bin/kubelet"),
        Path::new("/opt/kbundle/versions/kubernetes-v1.34.3/kubelet")
    );
    let state = std::fs::read_dir(w.roots[0].join("var/lib/kbundle/state")).unwrap();
    assert!(!state
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("upgrade-")));
}

#[test]
fn apply_walks_a_three_node_cluster_in_order_and_rolls_back() {
    let w = Walk::new();
    a_worker_first_is_refused(&w);
    // prepare pinned every image; unpin them all on cp1, so the hop's import must pin again.
    let refs = w.refs();
    assert_eq!(node::unpinned_in_root(&w.roots[0], &refs), Vec::<String>::new());
    node::unpin_in_root(&w.roots[0], &refs);
    let o = w.apply(0, &[]);
    assert!(o.status.success(), "{}", text(&o));
    cp1_snapshot_and_etcd_tools(&w, &o);
    cp1_order_runtime_and_links(&w);
    // The hop's import pinned every image of the bundle again (each hop's, for rollbacks).
    assert_eq!(node::unpinned_in_root(&w.roots[0], &refs), Vec::<String>::new());
    // The cluster moved; the workers follow.
    let (new, old) = ("v1.33.7", "v1.32.11");
    write_state(
        &w.state,
        &[
            ("cp1", true, new, new),
            ("worker1", false, "", old),
            ("worker2", false, "", old),
        ],
    );
    worker1_upgrades_then_resumes(&w);
    worker2_bare_pod_needs_force_drain(&w);
    cp1_rolls_back(&w);
}
