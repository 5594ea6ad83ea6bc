//! `kbundle upgrade rollback` on the five-node model after its whole upgrade (see the
//! parent module): the last hop undone on a control plane and on a worker.

use super::{Cluster, CHAIN, KBUNDLE};
use crate::support::kubeadm_files::{self, kubelet_config, manifest_image};
use crate::support::upgrade_env::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

impl Cluster {
    /// `kbundle upgrade rollback` on `node`'s root.
    fn rollback(&self, node: &str) -> Output {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        Command::new(KBUNDLE)
            .args(["upgrade", "rollback", "--root"])
            .arg(&self.roots[node])
            .env("PATH", path)
            .env("KBUNDLE_STANDIN_LOG", self.env.path("calls.log"))
            .output()
            .unwrap()
    }

    /// Where `/usr/local/bin/BIN` points on `node`.
    fn link(&self, node: &str, bin: &str) -> PathBuf {
        std::fs::read_link(self.roots[node].join("usr/local/bin").join(bin)).unwrap()
    }
}

/// The kubelet config the kubeadm stand-in of `k8s` writes on `node` during `upgrade`.
fn kubelet_by(k8s: &str, node: &str) -> String {
    format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n# written by kubeadm {k8s} upgrade on {node}\n")
}

/// kubeadm, kubelet and kubectl on `node` are `k8s`'s.
fn assert_links_at(c: &Cluster, node: &str, k8s: &str, ctx: &str) {
    for bin in ["kubeadm", "kubelet", "kubectl"] {
        let want = format!("/opt/kbundle/versions/kubernetes-{k8s}/{bin}");
        assert_eq!(c.link(node, bin), Path::new(&want), "{node}: {ctx}");
    }
}

/// After the whole upgrade: `upgrade rollback` undoes the last hop on cp1: manifests (from
/// the hop's kubeadm backup), kubelet config and links, but not etcd, which that hop moved
/// from 3.5 to 3.6: the restore command of apply's pre-hop snapshot is printed, exit 1.
pub(super) fn rollback_of_the_last_hop(c: &Cluster) {
    let (prev, last) = (CHAIN[CHAIN.len() - 2], CHAIN[CHAIN.len() - 1]);
    let root = &c.roots["cp1"];
    for pod in kubeadm_files::STATIC_PODS {
        assert_eq!(manifest_image(root, pod), kubeadm_files::image(pod, last), "{pod}");
    }
    assert_eq!(kubelet_config(root), kubelet_by(last, "cp1"));
    assert_links_at(c, "cp1", last, "before rollback");
    let snap = std::fs::read_to_string(root.join(format!("var/lib/kbundle/upgrade/{last}/etcd-snapshot"))).unwrap();
    assert!(
        snap.starts_with(&format!("/var/lib/kbundle/backups/etcd-before-{last}-")),
        "{snap}"
    );
    assert!(root.join(snap.trim_start_matches('/')).is_file(), "{snap}");
    let o = c.rollback("cp1");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let restore =
        format!("kbundle etcd snapshot restore {snap} --data-dir /var/lib/etcd-before-{last} --update-manifest");
    assert!(out.contains(&restore), "{restore}\n{}", text(&o));
    assert!(
        out.contains("etcd was NOT rolled back") && out.contains("3.5.24-0 to registry.k8s.io/etcd:3.6.5-0"),
        "{out}"
    );
    for pod in &kubeadm_files::STATIC_PODS[..3] {
        assert_eq!(manifest_image(root, pod), kubeadm_files::image(pod, prev), "{pod}");
    }
    assert_eq!(manifest_image(root, "etcd"), "registry.k8s.io/etcd:3.6.5-0");
    assert_eq!(kubelet_config(root), kubelet_by(prev, "cp1"));
    assert_links_at(c, "cp1", prev, &text(&o));
    rollback_of_a_worker(c, prev, last);
}

/// On w1: links and kubelet config back, no etcd notice, exit 0; w2 untouched.
fn rollback_of_a_worker(c: &Cluster, prev: &str, last: &str) {
    assert_links_at(c, "w1", last, "before rollback");
    let o = c.rollback("w1");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("etcd"), "{}", text(&o));
    assert_links_at(c, "w1", prev, &text(&o));
    assert_eq!(kubelet_config(&c.roots["w1"]), kubelet_by(prev, "w1"));
    assert_eq!(kubelet_config(&c.roots["w2"]), kubelet_by(last, "w2"));
}
