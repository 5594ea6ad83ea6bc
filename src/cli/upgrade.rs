use crate::upgrade::{apply, observe, plan, rollback};
use crate::version::Version;
use std::path::PathBuf;

/// Upgrade a cluster one minor version at a time from an upgrade bundle
/// (`kbundle build --upgrade-from`): plan, then apply node by node.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    Plan(PlanArgs),
    Stage(super::upgrade_stage::StageArgs),
    Apply(ApplyArgs),
    Rollback(RollbackArgs),
}

/// Print the ordered plan for this cluster: per hop, the etcd snapshot, the first control
/// plane, the other control planes, then each worker. Exit 1, saying why, when the bundle
/// cannot take the cluster to its target within the version skew policy.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  kbundle upgrade plan --bundle kubernetes-v1.34.3.tar.zst                  # reads the cluster with kubectl
  kbundle upgrade plan --bundle kubernetes-v1.34.3.tar.zst --current v1.32.11")]
pub struct PlanArgs {
    #[arg(long, value_name = "PATH")]
    pub bundle: PathBuf,
    /// The cluster's version, instead of asking the cluster.
    #[arg(long, value_name = "vX.Y.Z")]
    pub current: Option<Version>,
    #[arg(long, value_name = "FILE", default_value = "/etc/kubernetes/admin.conf")]
    pub kubeconfig: PathBuf,
    /// kubectl to use (default: /usr/local/bin/kubectl, else kubectl on PATH).
    #[arg(long, value_name = "PATH")]
    pub kubectl: Option<PathBuf>,
    /// The control plane that runs `kubeadm upgrade apply` (default: first by name).
    #[arg(long, value_name = "NODE")]
    pub first: Option<String>,
}

/// Upgrade this node by one hop, in the only safe order: refuses unless the plan allows this
/// node now (control planes before workers; every control plane at the hop before any
/// kubelet moves to it). Every node must first have run `kbundle upgrade stage` with this
/// bundle (the first control plane checks every node's kbundle.io/staged annotation; --force
/// overrides). Control planes take an etcd snapshot first. Resumable.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # on every node first:
  kbundle upgrade stage --bundle kubernetes-v1.34.3.tar.zst
  # on the first control plane:
  kbundle upgrade apply --bundle kubernetes-v1.34.3.tar.zst --node cp1
  # on a worker, with an admin kubeconfig copied from a control plane (drain needs it):
  kbundle upgrade apply --bundle kubernetes-v1.34.3.tar.zst --node worker1 --kubeconfig /root/admin.conf")]
pub struct ApplyArgs {
    #[arg(long, value_name = "PATH")]
    pub bundle: PathBuf,
    /// This node's name in the cluster (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The hop to apply (default: the next one this node needs).
    #[arg(long, value_name = "VERSION")]
    pub hop: Option<Version>,
    #[arg(long, value_name = "FILE", default_value = "/etc/kubernetes/admin.conf")]
    pub kubeconfig: PathBuf,
    #[arg(long, value_name = "NODE")]
    pub first: Option<String>,
    /// etcd client endpoint for the pre-upgrade snapshot.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:2379")]
    pub etcd_endpoint: String,
    /// kubectl drain --grace-period, in seconds (kubespray's upgrade default).
    #[arg(long, value_name = "SECONDS", default_value_t = crate::upgrade::drain::DEFAULT_GRACE_PERIOD)]
    pub drain_grace_period: u64,
    /// kubectl drain --timeout, in seconds (kubespray's upgrade default).
    #[arg(long, value_name = "SECONDS", default_value_t = crate::upgrade::drain::DEFAULT_TIMEOUT)]
    pub drain_timeout: u64,
    /// Pass kubectl drain --force: DELETE pods that no controller manages (they are not
    /// recreated anywhere). Without it, such pods make the drain fail, naming them.
    #[arg(long)]
    pub force_drain: bool,
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub ready_timeout: u64,
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    #[arg(long)]
    pub dry_run: bool,
    /// Start a hop even though some nodes have not run `kbundle upgrade stage` (warns).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub trust: super::trust_args::NodeTrust,
}

/// Roll THIS node back from its last hop (after a failed or unwanted hop).
///
/// Rolled back: the control-plane static-pod manifests (kube-apiserver,
/// kube-controller-manager, kube-scheduler; etcd only if the hop kept etcd's image), from the
/// newest /etc/kubernetes/tmp/kubeadm-backup-manifests-* kubeadm wrote during the hop;
/// /var/lib/kubelet/config.yaml, from the copy `upgrade apply` saved before kubeadm ran; the
/// kubeadm, kubelet and kubectl links; when the hop moved them, the containerd, runc, CNI
/// plugin and crictl links and the previous /etc/containerd/config.toml (containerd
/// restarts); then kubelet restarts and the hop's journal is forgotten, so `upgrade apply`
/// can redo it.
///
/// NOT rolled back: etcd. If the hop upgraded etcd (1.33 -> 1.34 moves 3.5 to 3.6), etcd.yaml
/// is left alone and the exact `kbundle etcd snapshot restore` command for the snapshot taken
/// before the hop is printed (it loses every write since); the command then exits 1. Also
/// not rolled back: what kubeadm changed in the cluster (kubeadm-config and kubelet-config
/// ConfigMaps, CoreDNS, kube-proxy, RBAC), renewed certificates, and every other node: run
/// this on each node the hop touched, workers first, the first control plane last.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The hop to roll back (default: the newest one `upgrade apply` ran on this node).
    #[arg(long, value_name = "VERSION")]
    pub hop: Option<Version>,
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    match a.command {
        Sub::Plan(p) => plan_cmd(p),
        Sub::Stage(s) => super::upgrade_stage::stage_cmd(s),
        Sub::Apply(x) => apply_cmd(x),
        Sub::Rollback(r) => rollback_cmd(r),
    }
}

fn plan_cmd(p: PlanArgs) -> anyhow::Result<i32> {
    let b = crate::bundle::read_bundle_json(&p.bundle)?;
    let hops = apply::hops(&b)?;
    let state = match p.current {
        Some(v) => observe::from_current(v),
        None => {
            let host = crate::host::Host::new(std::path::Path::new("/"), true);
            let kubectl = p.kubectl.clone().unwrap_or_else(|| {
                let local = "/usr/local/bin/kubectl";
                if host.exists(local) {
                    PathBuf::from(local)
                } else {
                    PathBuf::from("kubectl")
                }
            });
            observe::from_kubectl(&host, &kubectl, &p.kubeconfig, p.first.as_deref())?
        }
    };
    match plan::plan(&state, &hops) {
        Ok(pl) => {
            let chain: Vec<String> = hops.iter().map(|h| h.with_v()).collect();
            crate::outln!("upgrade plan for bundle {} ({}):", b.name, chain.join(" -> "))?;
            crate::cli::out(format_args!("{pl}"))?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: this bundle cannot upgrade the cluster: {e}");
            Ok(super::EXIT_FAILURE)
        }
    }
}

fn apply_cmd(x: ApplyArgs) -> anyhow::Result<i32> {
    let node = x
        .node
        .or_else(|| crate::install::hostname(&crate::host::Host::new(&x.root, true)))
        .ok_or_else(|| anyhow::anyhow!("pass --node NAME (no hostname found)"))?;
    apply::run(&apply::Options {
        bundle: x.bundle,
        node,
        hop: x.hop,
        root: x.root,
        kubeconfig: x.kubeconfig,
        first: x.first,
        etcd_endpoint: x.etcd_endpoint,
        drain: crate::upgrade::drain::DrainOptions {
            grace_period: x.drain_grace_period,
            timeout: x.drain_timeout,
            force: x.force_drain,
        },
        ready_timeout: std::time::Duration::from_secs(x.ready_timeout),
        dry_run: x.dry_run,
        force: x.force,
        trust: x.trust.flags(),
    })?;
    Ok(0)
}

fn rollback_cmd(r: RollbackArgs) -> anyhow::Result<i32> {
    let host = crate::host::Host::new(&r.root, r.dry_run);
    let report = rollback::rollback_on(&host, r.hop)?;
    if let Some(h) = report.hop {
        crate::outln!("rolling back hop {}", h.with_v())?;
    }
    for line in &report.done {
        crate::outln!("restored {line}")?;
    }
    crate::outln!("restarted kubelet")?;
    for note in &report.notes {
        crate::outln!("note: {note}")?;
    }
    match &report.etcd {
        Some(etcd) => {
            crate::outln!("{etcd}")?;
            Ok(super::EXIT_FAILURE)
        }
        None => Ok(0),
    }
}
