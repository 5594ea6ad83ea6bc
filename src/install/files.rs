//! The text of every file `install` writes: systemd units, kernel settings, containerd and
//! firewalld configuration. Pure functions, so tests can check them directly.

use crate::cluster::{ProxyMode, Role};

pub const CONTAINERD_SERVICE: &str = "\
# Installed by kbundle (upstream containerd.service for binary installs).
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target dbus.service

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
";

pub const KUBELET_SERVICE: &str = "\
# Installed by kbundle (kubernetes/release kubelet.service for binary installs).
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
";

pub const KUBEADM_DROPIN: &str = "\
# Installed by kbundle (kubernetes/release 10-kubeadm.conf).
# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"
Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"
# This is a file that \"kubeadm init\" and \"kubeadm join\" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort.
EnvironmentFile=-/etc/sysconfig/kubelet
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
";

/// Kernel modules every node needs, whatever the proxy mode: containerd's overlayfs, the
/// bridge netfilter hooks flannel's sysctls live in, and conntrack, whose sysctls kube-proxy
/// sets at start (docs/upstream-facts.md, "Kernel modules per EL release").
pub const BASE_MODULES: &[&str] = &["overlay", "br_netfilter", "nf_conntrack"];

/// What kube-proxy's iptables mode and flannel's iptables rules need on the nf_tables-backed
/// `iptables` of EL9/EL10: `nft_compat` plus the xtables matches and targets their rules use
/// (docs/upstream-facts.md, "Kernel modules per EL release").
pub const IPTABLES_MODULES: &[&str] = &[
    "nft_compat",
    "xt_comment",
    "xt_conntrack",
    "xt_mark",
    "xt_MASQUERADE",
    "xt_addrtype",
    "xt_statistic",
    "xt_recent",
    "xt_nat",
];

/// The kernel modules a node needs for `mode`, in load order.
pub fn modules(mode: ProxyMode) -> Vec<&'static str> {
    let mut m = BASE_MODULES.to_vec();
    match mode {
        ProxyMode::Iptables => m.extend_from_slice(IPTABLES_MODULES),
        ProxyMode::Nftables => m.push("nf_tables"),
    }
    m
}

/// `/etc/modules-load.d/kbundle-kubernetes.conf` for `mode`.
pub fn modules_load(mode: ProxyMode) -> String {
    let mut s = format!(
        "# Installed by kbundle: kernel modules Kubernetes needs (kube-proxy mode {}).\n",
        mode.as_str()
    );
    for m in modules(mode) {
        s.push_str(m);
        s.push('\n');
    }
    s
}

pub const SYSCTL: &str = "\
# Installed by kbundle: kernel settings Kubernetes and flannel need.
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
";

/// The one-shot unit that runs `install --phase bootstrap` on first boot.
pub fn bootstrap_unit(exec: &str) -> String {
    format!(
        "\
# Installed by kbundle: finishes the install once systemd and the network are up.
[Unit]
Description=kbundle: bootstrap Kubernetes on this node (kubeadm init/join)
Wants=network-online.target
After=network-online.target containerd.service
ConditionPathExists=!/var/lib/kbundle/bootstrap.done

[Service]
Type=oneshot
ExecStart={exec}
RemainAfterExit=yes
TimeoutStartSec=0

[Install]
WantedBy=multi-user.target
"
    )
}

/// TCP/UDP ports a role needs open: kubeadm's ports-and-protocols for the role, and on
/// every node kube-proxy's health check (10256), NodePorts (TCP and UDP) and flannel's VXLAN
/// (docs/upstream-facts.md, "firewalld forwarding and zones").
pub fn ports(role: Role) -> Vec<(&'static str, &'static str)> {
    let mut p = vec![("10250", "tcp")];
    if role.is_control_plane() {
        p.extend([
            ("6443", "tcp"),
            ("2379-2380", "tcp"),
            ("10257", "tcp"),
            ("10259", "tcp"),
        ]);
    }
    p.extend([
        ("10256", "tcp"),
        ("30000-32767", "tcp"),
        ("30000-32767", "udp"),
        ("8472", "udp"),
    ]);
    p
}

/// A firewalld service definition opening the role's ports.
pub fn firewalld_service(role: Role) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- Installed by kbundle -->\n<service>\n  <short>kbundle-{}</short>\n  <description>Kubernetes {} ports (kubeadm) and flannel VXLAN.</description>\n",
        role.as_str(),
        role.as_str()
    );
    for (port, proto) in ports(role) {
        s.push_str(&format!("  <port protocol=\"{proto}\" port=\"{port}\"/>\n"));
    }
    s.push_str("</service>\n");
    s
}

/// Settings for `/etc/containerd/config.toml`.
pub struct ContainerdSettings<'a> {
    pub sandbox_image: &'a str,
    pub root: &'a str,
    pub state: &'a str,
    pub address: &'a str,
}

impl<'a> ContainerdSettings<'a> {
    /// The node's own containerd (what `install` writes and `upgrade apply` rewrites).
    pub fn node(sandbox_image: &'a str) -> Self {
        ContainerdSettings {
            sandbox_image,
            root: "/var/lib/containerd",
            state: "/run/containerd",
            address: "/run/containerd/containerd.sock",
        }
    }
}

/// containerd 2.x reads config `version = 3`; 1.6/1.7 read `version = 2`.
pub fn containerd_config(major: u32, s: &ContainerdSettings) -> String {
    if major >= 2 {
        containerd_config_v3(s)
    } else {
        containerd_config_v2(s)
    }
}

/// For containerd 2.x (`version = 3`, CRI split into images and runtime plugins).
fn containerd_config_v3(s: &ContainerdSettings) -> String {
    format!(
        r#"# Installed by kbundle for containerd 2.x. Images come only from the bundle (imported);
# registry hosts are configured under /etc/containerd/certs.d.
version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{address}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox}"

  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "/etc/containerd/certs.d"

[plugins.'io.containerd.cri.v1.runtime']
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/local/sbin/runc"
        SystemdCgroup = true

  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
"#,
        root = s.root,
        state = s.state,
        address = s.address,
        sandbox = s.sandbox_image
    )
}

/// For containerd 1.6/1.7 (`version = 2`, one CRI plugin).
fn containerd_config_v2(s: &ContainerdSettings) -> String {
    format!(
        r#"# Installed by kbundle for containerd 1.6/1.7. Images come only from the bundle (imported);
# registry hosts are configured under /etc/containerd/certs.d.
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{address}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/local/sbin/runc"
        SystemdCgroup = true

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"#,
        root = s.root,
        state = s.state,
        address = s.address,
        sandbox = s.sandbox_image
    )
}

/// A minimal config for the temporary containerd that imports images during `prepare`:
/// CRI off (nothing to serve), content and snapshots in the node's own root.
pub fn import_config(major: u32, root: &str, state: &str, address: &str) -> String {
    let (version, cri) = if major >= 2 {
        (
            3,
            r#"["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.nri.v1.nri"]"#,
        )
    } else {
        (2, r#"["io.containerd.grpc.v1.cri"]"#)
    };
    format!(
        "version = {version}\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = {cri}\n\n[grpc]\n  address = \"{address}\"\n"
    )
}

/// `/etc/containerd/certs.d/<registry>/hosts.toml` sending pulls to an internal mirror.
pub fn mirror_hosts_toml(registry: &str, mirror: &str) -> String {
    let upstream = if registry == "docker.io" {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{registry}")
    };
    format!(
        "# Installed by kbundle: pulls of {registry} go to the internal mirror.\nserver = \"{upstream}\"\n\n[host.\"https://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

/// Parses `containerd --version` output (`containerd github.com/containerd/containerd v1.6.20 …`,
/// `containerd containerd.io 2.1.5 …`, Debian's `1.6.20~ds1`) into (major, minor).
pub fn parse_containerd_version(out: &str) -> Option<(u32, u32)> {
    out.split_whitespace().find_map(|tok| {
        let t = tok.trim_start_matches('v');
        let mut it = t.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        t.contains('.').then_some((major, minor))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_versions() {
        assert_eq!(
            parse_containerd_version("containerd github.com/containerd/containerd v1.6.20 2806fc1"),
            Some((1, 6))
        );
        assert_eq!(
            parse_containerd_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"),
            Some((1, 6))
        );
        assert_eq!(
            parse_containerd_version("containerd containerd.io v2.1.5 fcd43222"),
            Some((2, 1))
        );
        assert_eq!(parse_containerd_version("garbage"), None);
    }

    #[test]
    fn configs_pin_sandbox_and_systemd_cgroups() {
        let s = ContainerdSettings {
            sandbox_image: "registry.k8s.io/pause:3.10.1",
            root: "/var/lib/containerd",
            state: "/run/containerd",
            address: "/run/containerd/containerd.sock",
        };
        for major in [1, 2] {
            let c = containerd_config(major, &s);
            assert!(c.contains("SystemdCgroup = true") && c.contains("pause:3.10.1") && c.contains("certs.d"));
            let v: toml::Value = toml::from_str(&c).unwrap();
            assert_eq!(v["version"].as_integer(), Some(if major == 2 { 3 } else { 2 }));
        }
    }
}
