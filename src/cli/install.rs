use crate::cluster::{BootstrapToken, CaCertHash, CertificateKey, NodeName, Role};
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
  ./kbundle install --config cluster.toml --node cp1 --dry-run
  # require a signature by this key (besides /etc/kbundle/trusted-keys/*.pub):
  ./kbundle install --config cluster.toml --node cp1 \\
      --trusted-key /etc/kbundle/site.pub

With any trusted key (/etc/kbundle/trusted-keys/*.pub, cluster.toml [trust] keys, --trusted-key),
the bundle must be signed by one of them and its serial must not be lower than the highest
installed from that key; otherwise nothing is written. See docs/trust.md.")]
pub struct Args {
    /// Bundle archive or unpacked directory (default: the bundle this kbundle sits in).
    #[arg(long, value_name = "PATH")]
    pub bundle: Option<PathBuf>,
    /// Cluster config (see `kbundle example-config`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This node's name in the cluster config (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<NodeName>,
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
    /// Skip preflight checks by name: os, arch, memory, cpu, commands, modules (comma-separated or repeated).
    #[arg(long, value_name = "CHECK", value_delimiter = ',')]
    pub skip_preflight: Vec<String>,
    /// Bootstrap token for joining (printed by the init node).
    #[arg(long)]
    pub token: Option<BootstrapToken>,
    /// CA certificate hash for joining, sha256:<hex> (printed by the init node).
    #[arg(long)]
    pub ca_cert_hash: Option<CaCertHash>,
    /// Certificate key for joining control planes (printed by the init node).
    #[arg(long)]
    pub certificate_key: Option<CertificateKey>,
    /// How long to wait for the node to become Ready, and then for the add-ons
    /// (flannel, CoreDNS, metrics-server) to be available, in seconds (each).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub ready_timeout: u64,
    #[command(flatten)]
    pub trust: super::trust_args::NodeTrust,
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
    let bundle = match a.bundle {
        Some(b) => b,
        None => crate::bundle::verified::default_bundle()?,
    };
    install::run(install::Options {
        bundle,
        config: a.config,
        node: a.node.map(String::from),
        role: a.role,
        root: a.root,
        phase: a.phase,
        dry_run: a.dry_run,
        skip_preflight: a.skip_preflight,
        // Checked by clap with the cluster config's own types.
        secrets: install::kubeadm::Secrets {
            token: a.token,
            ca_cert_hash: a.ca_cert_hash,
            certificate_key: a.certificate_key,
        },
        ready_timeout: std::time::Duration::from_secs(a.ready_timeout),
        trust: a.trust.flags(),
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let argv = ["install", "--config", "c.toml"].iter().chain(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn join_flags_use_the_cluster_config_types() {
        let hash = format!("sha256:{}", "a".repeat(64));
        let key = "b".repeat(64);
        let a = parse(&[
            "--token",
            "abcdef.0123456789abcdef",
            "--ca-cert-hash",
            &hash,
            "--certificate-key",
            &key,
        ])
        .unwrap();
        assert_eq!(a.token.unwrap(), "abcdef.0123456789abcdef");
        assert_eq!(a.ca_cert_hash.unwrap(), hash.as_str());
        assert_eq!(a.certificate_key.unwrap(), key.as_str());
        let cases = [
            (
                "--token",
                "ABCDEF.0123456789abcdef",
                "expected [a-z0-9]{6}.[a-z0-9]{16} (kubeadm token generate)",
            ),
            ("--ca-cert-hash", "sha256:abc", "expected sha256:<64 hex>"),
            (
                "--certificate-key",
                "abc",
                "expected 64 hex characters (kubeadm certs certificate-key)",
            ),
            ("--node", "Worker_1", "\"Worker_1\" is not a valid hostname label"),
        ];
        for (flag, value, want) in cases {
            let e = parse(&[flag, value]).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(want), "{flag} {value}: {e}");
        }
    }
}
