//! A whole upgrade of a modelled five-node cluster (three control planes, two workers), in
//! an air gap. Each node is its own root holding the real containerd with its own image
//! store (filled by the real `kbundle install --phase prepare`, then `upgrade stage` and
//! `upgrade apply`); kubeadm and kubectl are stand-ins sharing one cluster state
//! (tests/stand-ins/kubeadm-cluster, kubectl-cluster). The model: the last control plane's
//! `kubeadm upgrade apply|node` rolls kube-proxy (every node) and CoreDNS (the workers) to
//! the hop's images; a pod starts only if its image is in its node's store.
//!
//! kubeadm also rewrites each control plane's static-pod manifests (backing up the changed
//! ones to /etc/kubernetes/tmp/kubeadm-backup-manifests-<timestamp>, as kubeadm does) and
//! every node's kubelet config.
//!
//! Staged on every node first, the upgrade v1.32.11 → v1.33.7 → v1.34.3 ends with every
//! node at the target and every pod's image on its node; `upgrade rollback` then undoes the
//! last hop on a control plane (all but etcd, which that hop moved from 3.5 to 3.6: the
//! restore command is printed) and on a worker. Not staged, apply refuses, naming the nodes;
//! forced, the workers' kube-proxy and CoreDNS pods have no image once the first hop's last
//! control plane is done.
//!
//! `upgrade stage` runs in a fresh network namespace (`unshare --net`: nothing reachable);
//! `upgrade apply` runs in a private namespace with only `lo` up, shared with the etcd it
//! snapshots (nothing outside it reachable).

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use support::kubeadm_files;
use support::node::{images_in_root, in_new_netns, stand_in};
use support::upgrade_env::{chain_env, kb, text, ChainEnv, KBUNDLE};

/// The cluster's version, then every hop, in order.
const CHAIN: [&str; 3] = ["v1.32.11", "v1.33.7", "v1.34.3"];
/// (name, control plane?); the first control plane by name runs `kubeadm upgrade apply`.
const NODES: [(&str, bool); 5] = [
    ("cp1", true),
    ("cp2", true),
    ("cp3", true),
    ("w1", false),
    ("w2", false),
];
/// The order `upgrade apply` runs per hop: each control plane's kubeadm (the first two
/// control planes' kubelets wait for the last), their kubelets, then the workers.
const APPLY_ORDER: [&str; 7] = ["cp1", "cp2", "cp3", "cp1", "cp2", "w1", "w2"];

/// Per-version kubeadm and kubectl: the cluster stand-ins.
fn cluster_stand_in(bin: &str, version: &str) -> Vec<u8> {
    let name = if bin == "kubeadm" {
        "kubeadm-cluster"
    } else {
        "kubectl-cluster"
    };
    let s = std::fs::read_to_string(stand_in(name)).unwrap();
    s.replace(
        "DEFAULT_VERSION = \"v1.34.3\"",
        &format!("DEFAULT_VERSION = \"{version}\""),
    )
    .into_bytes()
}

/// etcd in a network namespace of its own with only `lo` up; `apply` joins it.
struct Etcd(Child);
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Etcd {
    fn start(dir: &Path) -> (Etcd, String) {
        support::node::require_unshare_net();
        let url = "http://127.0.0.1:2379";
        let script = "ip link set lo up && exec \"$@\"";
        let child = Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                script,
                "sh",
                "etcd",
                "--name",
                "t",
                "--data-dir",
            ])
            .arg(dir.join("etcd-data"))
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let e = Etcd(child);
        for _ in 0..100 {
            let mut c = e.join(Command::new("etcdctl"));
            c.env("ETCDCTL_API", "3")
                .args(["--endpoints", url, "endpoint", "health"]);
            if c.output().is_ok_and(|o| o.status.success()) {
                return (e, url.to_string());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("etcd did not become healthy in its namespace");
    }

    /// `cmd` run inside etcd's network namespace.
    fn join(&self, cmd: Command) -> Command {
        let mut w = Command::new("nsenter");
        w.arg(format!("--net=/proc/{}/ns/net", self.0.id()))
            .arg("--")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                w.env(k, v);
            }
        }
        w
    }
}

struct Cluster {
    env: ChainEnv,
    archive: PathBuf,
    roots: BTreeMap<&'static str, PathBuf>,
    state: PathBuf,
    bin: PathBuf,
    /// Each node's image store as last listed.
    stores: BTreeMap<&'static str, Vec<String>>,
    etcd: Etcd,
    etcd_url: String,
}

fn bundle_json(archive: &Path) -> serde_json::Value {
    let o = kb(&["inspect", "--json", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn store(root: &Path) -> Vec<String> {
    images_in_root(root).into_iter().map(|(n, _)| n).collect()
}

/// Every hop's images; each hop carries the etcd tools of its etcd server's minor (v1.33.7:
/// 3.5.25 for 3.5.24-0; v1.34.3: 3.6.5 for 3.6.5-0).
fn hop_images(archive: &Path) -> Vec<String> {
    let bj = bundle_json(archive);
    let hops = bj["hops"].as_array().unwrap();
    let strings = |h: &serde_json::Value, k: &str| -> Vec<String> {
        let a = h[k].as_array().unwrap().iter();
        a.map(|i| i.as_str().unwrap().to_string()).collect()
    };
    let etcd: Vec<Vec<String>> = hops
        .iter()
        .map(|h| {
            strings(h, "files")
                .into_iter()
                .filter(|f| f.starts_with("files/etcd/"))
                .collect()
        })
        .collect();
    let tarball = |v: &str| vec![format!("files/etcd/{v}/linux-amd64/etcd-v{v}-linux-amd64.tar.gz")];
    assert_eq!(etcd, [tarball("3.5.25"), tarball("3.6.5")]);
    hops.iter().flat_map(|h| strings(h, "images")).collect()
}

/// `node` prepared from the upgrade bundle, then made a node of `CHAIN[0]` (no hop images,
/// its kubelet kubeconfig, kubeadm's files of that version).
fn prepare_node(env: &ChainEnv, archive: &Path, cfg: &Path, node: &str, cp: bool, hop_images: &[String]) -> PathBuf {
    let r = env.path(node);
    std::fs::create_dir_all(r.join("etc/kubernetes")).unwrap();
    support::upgrade_env::prepare_root(archive, cfg, &r, node);
    let rm: Vec<&str> = ["images", "rm"]
        .into_iter()
        .chain(hop_images.iter().map(String::as_str))
        .collect();
    support::node::ctr_in_root(&r, &[&rm]);
    let conf = format!("# stand-in kubelet kubeconfig\nuser: system:node:{node}\n");
    std::fs::write(r.join("etc/kubernetes/kubelet.conf"), conf).unwrap();
    std::fs::write(r.join("var/lib/kbundle/kubernetes-version"), format!("{}\n", CHAIN[0])).unwrap();
    kubeadm_files::write_initial(&r, cp, CHAIN[0]);
    r
}

/// Five prepared nodes at `CHAIN[0]`: the bundle's hop images removed from each store (a
/// node of the old version has none of them), the cluster state saying so.
fn cluster() -> Cluster {
    let env = chain_env(&CHAIN, &cluster_stand_in);
    let o = env.build("out", &["--upgrade-from", CHAIN[0]]);
    assert!(o.status.success(), "{}", text(&o));
    let archive = env.path(&format!("out/kubernetes-{}.tar.zst", CHAIN[CHAIN.len() - 1]));
    let hop_images = hop_images(&archive);
    let cfg = env.path("cluster.toml");
    let mut config = String::from_utf8(kb(&["example-config"]).stdout).unwrap();
    for (i, (node, cp)) in NODES.iter().enumerate().filter(|(_, n)| !["cp1"].contains(&n.0)) {
        let role = if *cp { "control-plane" } else { "worker" };
        config.push_str(&format!(
            "\n[[node]]\nname = \"{node}\"\naddress = \"192.168.122.{}\"\nrole = \"{role}\"\n",
            30 + i
        ));
    }
    std::fs::write(&cfg, config).unwrap();
    let (mut roots, mut stores) = (BTreeMap::new(), BTreeMap::new());
    for (node, cp) in NODES {
        let r = prepare_node(&env, &archive, &cfg, node, cp, &hop_images);
        stores.insert(node, store(&r));
        roots.insert(node, r);
    }
    let state = env.path("cluster-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("cluster-version.txt"), CHAIN[0]).unwrap();
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(stand_in("systemctl"), bin.join("systemctl")).unwrap();
    let (etcd, etcd_url) = Etcd::start(env.tmp.path());
    let c = Cluster {
        env,
        archive,
        roots,
        state,
        bin,
        stores,
        etcd,
        etcd_url,
    };
    c.write_nodes();
    let pods: Vec<serde_json::Value> = NODES
        .iter()
        .filter(|n| n.1)
        .map(|(n, _)| {
            // kubeadm's static pods appear as mirror pods, which drain skips.
            serde_json::json!({"metadata": {"namespace": "kube-system", "name": format!("kube-apiserver-{n}"),
                "annotations": {"kubernetes.io/config.mirror": "mirror"}},
            "spec": {"nodeName": n, "containers": [
            {"name": "kube-apiserver", "image": format!("registry.k8s.io/kube-apiserver:{}", CHAIN[0])}]}})
        })
        .collect();
    std::fs::write(
        c.state.join("pods.json"),
        serde_json::json!({"items": pods}).to_string(),
    )
    .unwrap();
    c
}

impl Cluster {
    /// nodes.json: each node's kubelet reports the version kbundle last finished on it.
    fn write_nodes(&self) {
        let items: Vec<serde_json::Value> = NODES
            .iter()
            .map(|(n, cp)| {
                let mut labels = serde_json::json!({"kubernetes.io/hostname": n});
                if *cp {
                    labels["node-role.kubernetes.io/control-plane"] = serde_json::json!("");
                }
                let v = self.kubelet(n);
                serde_json::json!({"metadata": {"name": n, "labels": labels},
                    "status": {"nodeInfo": {"kubeletVersion": v}}})
            })
            .collect();
        std::fs::write(
            self.state.join("nodes.json"),
            serde_json::json!({"items": items}).to_string(),
        )
        .unwrap();
    }

    fn kubelet(&self, node: &str) -> String {
        let f = self.roots[node].join("var/lib/kbundle/kubernetes-version");
        std::fs::read_to_string(f).unwrap().trim().to_string()
    }

    fn cmd(&self, node: &str, args: &[&str]) -> Command {
        self.cmd_as(node, node, args)
    }

    /// `kbundle ARGS` on `node`'s root, naming the node `name`.
    fn cmd_as(&self, node: &str, name: &str, args: &[&str]) -> Command {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut c = Command::new(KBUNDLE);
        c.args(args)
            .args(["--bundle", self.archive.to_str().unwrap(), "--node", name, "--root"])
            .arg(&self.roots[node])
            .env("PATH", path)
            .env("KBUNDLE_STANDIN_LOG", self.env.path("calls.log"))
            .env("KBUNDLE_STANDIN_STATE", &self.state)
            .env("KBUNDLE_STANDIN_ROOT", &self.roots[node])
            .env("KBUNDLE_STANDIN_NODE", node);
        c
    }

    /// `kbundle upgrade stage` on `node`, with no network at all.
    fn stage(&mut self, node: &'static str) -> Output {
        let (mut c, _report) = in_new_netns(&self.cmd(node, &["upgrade", "stage"]));
        let o = c.output().unwrap();
        self.stores.insert(node, store(&self.roots[node]));
        o
    }

    /// `kbundle upgrade apply` on `node` in etcd's namespace; then the node's kubelet
    /// reports what kbundle finished, and its store is listed again.
    fn apply(&mut self, node: &'static str, extra: &[&str]) -> Output {
        let mut args = vec!["upgrade", "apply", "--kubeconfig", "/dev/null", "--ready-timeout", "20"];
        args.extend(["--etcd-endpoint", &self.etcd_url]);
        args.extend(extra);
        let o = self.etcd.join(self.cmd(node, &args)).output().unwrap();
        self.stores.insert(node, store(&self.roots[node]));
        self.write_nodes();
        o
    }

    /// Every add-on pod whose image is not in its node's store, as `pod on node: image`.
    fn pods_without_image(&self) -> Vec<String> {
        let Ok(t) = std::fs::read_to_string(self.state.join("addon-pods.json")) else {
            return Vec::new();
        };
        let pods: Vec<serde_json::Value> = serde_json::from_str(&t).unwrap();
        pods.iter()
            .filter(|p| {
                let node = p["node"].as_str().unwrap();
                !self.stores[node].iter().any(|i| p["image"] == i.as_str())
            })
            .map(|p| {
                let f = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                format!("{} on {}: {}", f("pod"), f("node"), f("image"))
            })
            .collect()
    }

    /// Runs every hop's applies in order, checking after each that every pod's image is on
    /// its node; returns the first step after which some are not.
    fn upgrade(&mut self, extra: &[&str]) -> Result<(), String> {
        for _hop in &CHAIN[1..] {
            for node in APPLY_ORDER {
                let o = self.apply(node, extra);
                assert!(o.status.success(), "apply on {node}: {}", text(&o));
                let missing = self.pods_without_image();
                if !missing.is_empty() {
                    return Err(format!(
                        "after apply on {node}, pods without their image: {}",
                        missing.join("; ")
                    ));
                }
            }
        }
        Ok(())
    }
}

#[test]
fn staged_on_every_node_the_whole_cluster_upgrades_and_every_pod_has_its_image() {
    let mut c = cluster();
    for (node, _) in NODES {
        let o = c.stage(node);
        assert!(o.status.success(), "stage on {node}: {}", text(&o));
    }
    // A node's kubelet credentials annotate only its own Node (NodeRestriction): staging
    // w1's root (already staged) under w2's name is refused, and says so.
    let wrong = c.cmd_as("w1", "w2", &["upgrade", "stage"]);
    let o = in_new_netns(&wrong).0.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("recording the staged bundle on node w2") && err.contains("is not allowed to modify node"),
        "{err}"
    );
    let last = CHAIN[CHAIN.len() - 1];
    c.upgrade(&[]).unwrap();
    for (node, cp) in NODES {
        assert_eq!(c.kubelet(node), last, "{node}");
        if cp {
            let pods = std::fs::read_to_string(c.state.join("pods.json")).unwrap();
            assert!(!pods.contains(CHAIN[0]), "an API server is behind: {pods}");
        }
    }
    let addons = std::fs::read_to_string(c.state.join("addon-pods.json")).expect("kubeadm rolled the add-ons");
    assert!(addons.contains(&format!("kube-proxy:{last}")), "{addons}");
    assert_eq!(c.pods_without_image(), Vec::<String>::new());
    rollback::rollback_of_the_last_hop(&c);
}

#[test]
fn unstaged_apply_refuses_naming_the_nodes_and_forced_leaves_worker_pods_without_images() {
    let mut c = cluster();
    let o = c.apply("cp1", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cp1, cp2, cp3, w1, w2") && err.contains("kbundle upgrade stage --bundle"),
        "{err}"
    );
    assert!(
        !c.env.path("calls.log").exists()
            || !std::fs::read_to_string(c.env.path("calls.log"))
                .unwrap()
                .contains("kubeadm upgrade")
    );
    // The first hop already strands them: its last control plane rolls the add-ons.
    let e = c.upgrade(&["--force"]).unwrap_err();
    let hop = CHAIN[1];
    assert!(
        e.starts_with("after apply on cp3,"),
        "the last control plane rolls the add-ons: {e}"
    );
    for w in ["w1", "w2"] {
        assert!(
            e.contains(&format!(
                "kube-system/kube-proxy-{w} on {w}: registry.k8s.io/kube-proxy:{hop}"
            )),
            "{e}"
        );
    }
    assert!(
        e.contains("coredns/coredns:v1.12.0") && !e.contains("kube-proxy-cp"),
        "{e}"
    );
}

mod rollback;
