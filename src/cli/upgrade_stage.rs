//! `kbundle upgrade stage`: see [`crate::upgrade::stage`].

use crate::upgrade::stage;
use std::path::PathBuf;

/// Before any hop: import and pin every hop's images on this node and place every hop's
/// kubeadm, kubelet and kubectl in their version directories, changing nothing that runs;
/// then mark the node staged (a local marker and the Node annotation kbundle.io/staged,
/// written with the kubelet's own kubeconfig). `upgrade apply` on the first control plane
/// refuses a hop until every node is staged. Run it on every node; safe to repeat.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # on every node, before `upgrade apply` anywhere:
  kbundle upgrade stage --bundle kubernetes-v1.34.3.tar.zst
  # also trusting a key that is not in /etc/kbundle/trusted-keys yet:
  kbundle upgrade stage --bundle kubernetes-v1.34.3.tar.zst \\
      --trusted-key /root/site-2027.pub

With any trusted key the bundle must be signed by one of them and its serial must not be lower
than the highest installed from that key (checked here, recorded by `upgrade apply`).")]
pub struct StageArgs {
    #[arg(long, value_name = "PATH")]
    pub bundle: PathBuf,
    /// This node's name in the cluster (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The kubeconfig the annotation is written with (the node's own kubelet credentials).
    #[arg(long, value_name = "FILE", default_value = "/etc/kubernetes/kubelet.conf")]
    pub kubeconfig: String,
    /// Write only the local marker, not the Node annotation.
    #[arg(long)]
    pub no_annotate: bool,
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub trust: super::trust_args::NodeTrust,
}

pub fn stage_cmd(s: StageArgs) -> anyhow::Result<i32> {
    let node = s
        .node
        .or_else(|| crate::install::hostname(&crate::host::Host::new(&s.root, true)))
        .ok_or_else(|| anyhow::anyhow!("pass --node NAME (no hostname found)"))?;
    let dry_run = s.dry_run;
    let r = stage::run(&stage::Options {
        bundle: s.bundle,
        node: node.clone(),
        root: s.root,
        kubeconfig: s.kubeconfig,
        no_annotate: s.no_annotate,
        dry_run: s.dry_run,
        trust: s.trust.flags(),
    })?;
    let done = if dry_run { "would stage" } else { "staged" };
    crate::outln!(
        "{node}: {done} bundle {} ({} images, {} binaries); nothing switched",
        &r.id[..12],
        r.images,
        r.binaries.len()
    )?;
    Ok(0)
}
