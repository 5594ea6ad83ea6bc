use crate::cluster::Cluster;
use crate::host::Host;
use crate::install::csr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Approve the kubelet serving certificate requests of the cluster config's nodes, and only
/// those.
///
/// Signer kubernetes.io/kubelet-serving, requestor system:node:NAME, subject
/// CN=system:node:NAME O=system:nodes, names only NAME and the node's address. Others are
/// left pending, with the reason. Installed as kbundle-csr-approve.timer on control planes
/// when kubelet-serving-certs = "cluster-signed".
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  kbundle csr-approve --config /etc/kbundle/cluster.toml --once
  kbundle csr-approve --config /etc/kbundle/cluster.toml        # every 30 s until stopped")]
pub struct Args {
    /// Cluster config (see `kbundle example-config`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// One pass, then exit (what the timer runs).
    #[arg(long)]
    pub once: bool,
    /// Admin kubeconfig.
    #[arg(long, value_name = "FILE", default_value = "/etc/kubernetes/admin.conf")]
    pub kubeconfig: PathBuf,
    /// The kubectl to use.
    #[arg(long, value_name = "FILE", default_value = "/usr/local/bin/kubectl")]
    pub kubectl: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let cluster = Cluster::load(&a.config)?;
    let host = Host::new(Path::new("/"), false);
    loop {
        csr::pass(&host, &a.kubectl, &a.kubeconfig, &cluster)?;
        if a.once {
            return Ok(0);
        }
        host.sleep(Duration::from_secs(30));
    }
}
