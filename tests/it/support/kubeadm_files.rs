//! kubeadm's files on a node of the modelled cluster, which the cluster's kubeadm stand-in
//! (tests/stand-ins/kubeadm-cluster) rewrites on `kubeadm upgrade apply|node`: the static-pod
//! manifests of a control plane and the kubelet config of every node.

use std::path::Path;

/// kubeadm's static pods on a control plane, by manifest name.
pub const STATIC_PODS: [&str; 4] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"];

/// The image kubeadm `k8s` writes into `pod`'s manifest (etcd: kubeadm's own etcd tag,
/// src/catalog/images.rs).
pub fn image(pod: &str, k8s: &str) -> String {
    if pod != "etcd" {
        return format!("registry.k8s.io/{pod}:{k8s}");
    }
    let v: kbundle::version::Version = k8s.parse().unwrap();
    let tags = kbundle::catalog::images::kubeadm_tags(v).unwrap();
    format!("registry.k8s.io/etcd:{}", tags.etcd)
}

/// A minimal static-pod manifest as kubeadm writes it: one container, one `image:` line.
pub fn manifest(pod: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - {pod}\n    image: {image}\n    name: {pod}\n"
    )
}

/// What `kubeadm init|join` left at `k8s`: the kubelet config, and on a control plane the
/// four static-pod manifests.
pub fn write_initial(root: &Path, control_plane: bool, k8s: &str) {
    let kubelet = root.join("var/lib/kubelet");
    std::fs::create_dir_all(&kubelet).unwrap();
    let config = format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n# written by kubeadm {k8s} init/join\n"
    );
    std::fs::write(kubelet.join("config.yaml"), config).unwrap();
    if !control_plane {
        return;
    }
    let dir = root.join("etc/kubernetes/manifests");
    std::fs::create_dir_all(&dir).unwrap();
    for pod in STATIC_PODS {
        let m = manifest(pod, &image(pod, k8s));
        std::fs::write(dir.join(format!("{pod}.yaml")), m).unwrap();
    }
}

/// The `image:` of `pod`'s manifest on the node.
pub fn manifest_image(root: &Path, pod: &str) -> String {
    let f = root.join(format!("etc/kubernetes/manifests/{pod}.yaml"));
    let text = std::fs::read_to_string(&f).unwrap();
    let line = text.lines().find_map(|l| l.trim().strip_prefix("image:"));
    line.unwrap_or_else(|| panic!("no image in {}", f.display()))
        .trim()
        .to_string()
}

/// The node's kubelet config.
pub fn kubelet_config(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/lib/kubelet/config.yaml")).unwrap()
}
