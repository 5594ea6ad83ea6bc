use crate::cluster::Role;
use crate::install::{self, Phase};
use std::path::PathBuf;

/// Install Kubernetes on this node from the bundle alone (no network): verify the bundle,
/// then `prepare` (preflight, host files, binaries, units, containerd config, images,
/// kubeadm config) and `bootstrap` (services, kubeadm init/join, add-ons, Ready).
/// Safe to re-run: finished steps are journaled under /var/lib/kbundle/state/.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # first control plane, everything:
  ./kbundle install --config cluster.toml --node cp1 --phase all
  # inside a kickstart %post chroot or an image build (no systemd, no network):
  ./kbundle install --bundle /var/lib/kbundle/kubernetes-v1.34.3.tar.zst --config /etc/kbundle/cluster.toml --role worker --phase prepare
  # a worker, with the values the init node printed:
  ./kbundle install --config cluster.toml --node worker1 --token abcdef.0123456789abcdef --ca-cert-hash sha256:<hex>
  # see every step and command without changing anything:
  ./kbundle install --config cluster.toml --node cp1 --dry-run")]
pub struct Args {
    /// Bundle archive or unpacked directory (default: the bundle this kbundle sits in).
    #[arg(long, value_name = "PATH")]
    pub bundle: Option<PathBuf>,
    /// Cluster config (see `kbundle example-config`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This node's name in the cluster config (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The node's role; needed for `prepare` when the node is not named.
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Install into this root instead of / (image builds, tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Print each step and command without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip preflight checks by name: os, arch, memory, cpu, commands (comma-separated or repeated).
    #[arg(long, value_name = "CHECK", value_delimiter = ',')]
    pub skip_preflight: Vec<String>,
    /// Bootstrap token for joining (printed by the init node).
    #[arg(long)]
    pub token: Option<String>,
    /// CA certificate hash for joining, sha256:<hex> (printed by the init node).
    #[arg(long)]
    pub ca_cert_hash: Option<String>,
    /// Certificate key for joining control planes (printed by the init node).
    #[arg(long)]
    pub certificate_key: Option<String>,
    /// How long to wait for the node to become Ready, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub ready_timeout: u64,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    for s in &a.skip_preflight {
        if s != "all" && !install::preflight::CHECKS.contains(&s.as_str()) {
            anyhow::bail!(
                "unknown preflight check {s:?}: use {}",
                install::preflight::CHECKS.join(", ")
            );
        }
    }
    if let Some(t) = &a.token {
        anyhow::ensure!(
            crate::cluster::valid_token(t),
            "--token {t:?}: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}"
        );
    }
    if let Some(h) = &a.ca_cert_hash {
        anyhow::ensure!(
            crate::cluster::valid_ca_hash(h),
            "--ca-cert-hash {h:?}: expected sha256:<64 hex>"
        );
    }
    if let Some(k) = &a.certificate_key {
        anyhow::ensure!(
            crate::cluster::valid_cert_key(k),
            "--certificate-key: expected 64 hex characters"
        );
    }
    let bundle = match a.bundle {
        Some(b) => b,
        None => crate::bundle::verified::default_bundle()?,
    };
    install::run(install::Options {
        bundle,
        config: a.config,
        node: a.node,
        role: a.role,
        root: a.root,
        phase: a.phase,
        dry_run: a.dry_run,
        skip_preflight: a.skip_preflight,
        secrets: install::kubeadm::Secrets {
            token: a.token,
            ca_cert_hash: a.ca_cert_hash,
            certificate_key: a.certificate_key,
        },
        ready_timeout: std::time::Duration::from_secs(a.ready_timeout),
    })?;
    Ok(0)
}
