//! The commented example cluster config printed by `kbundle example-config`.

/// The commented example printed by `kbundle example-config`.
pub const EXAMPLE: &str = r#"# kbundle cluster config: one control plane and two workers.
# Used by `kbundle install --config cluster.toml` on each node and by `kbundle kickstart`.

[cluster]
name = "demo"
control-plane-endpoint = "192.168.122.10:6443"   # a VIP/load balancer, or the first control plane
pod-cidr = "10.244.0.0/16"                        # flannel's default network
service-cidr = "10.96.0.0/12"
dns-domain = "cluster.local"
firewall = "open-ports"                           # open-ports | disabled | unchanged
proxy-mode = "iptables"                           # iptables | nftables (kube-proxy and flannel)
selinux = "permissive"                            # permissive | enforcing
kubelet-serving-certs = "self-signed"             # self-signed | cluster-signed (metrics-server TLS)
# registry-mirror = "registry.internal:5000"     # optional internal mirror for later pulls

# Optional pre-generated join secrets, so kickstarted nodes join with no keyboard.
# Generate them on a connected machine: `kubeadm token generate`, `kubeadm certs certificate-key`.
# The CA hash is known only once the CA exists: pre-create the CA, or let `init` print the
# exact `kbundle install` command lines for the other nodes.
# [join]
# token = "abcdef.0123456789abcdef"
# ca-cert-hash = "sha256:<64 hex>"
# certificate-key = "<64 hex>"

[os]                                              # used by kickstarts
timezone = "UTC"
ntp-servers = ["192.168.122.1"]
# openssl passwd -6  (a hash only: plain-text passwords are refused)
root-password-hash = "$6$kbundleexample$YX.HAlAGn7/y/pSbKV8WZIRAM6iMYUOmqx0ZnSDnhjrwsNiWvDtopjXFa8lgvwfiZtIHYCSNLsIv4vqMcC.vm0"   # "changeme": replace it
ssh-keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbundleExampleKeyReplaceMeWithYourOwnKey0000 ops@example"]
dns = ["192.168.122.1"]
gateway = "192.168.122.1"
prefix = 24
# interface = "enp1s0"                           # default: the primary connection (kickstart `--device=link`)

[[node]]
name = "cp1"
address = "192.168.122.10"
role = "init"                                     # init | control-plane | worker

[[node]]
name = "worker1"
address = "192.168.122.21"
role = "worker"

[[node]]
name = "worker2"
address = "192.168.122.22"
role = "worker"
"#;
