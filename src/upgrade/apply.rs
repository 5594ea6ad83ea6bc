//! `kbundle upgrade apply` on one node: check it is this node's turn, back up etcd (control
//! planes), save what rollback needs, import the hop's images, switch kubeadm, `kubeadm
//! upgrade apply|node` (once every API server runs the hop: re-apply the add-ons,
//! [`super::addons`]), drain, move the container runtime and its sandbox pin
//! ([`super::runtime`]), switch kubelet and kubectl, restart kubelet, wait for Ready,
//! uncordon. Binaries live one directory per version behind atomically switched links, and
//! the kubelet config is saved before kubeadm runs, so `upgrade rollback`
//! ([`super::rollback`]) can go back. Every step is journaled per hop, so a re-run resumes.

use super::observe;
use super::plan::{self, NodeAction};
use crate::bundle::verified::{self as source, VerifiedBundle};
use crate::host::journal::{Journal, Journaled};
use crate::host::{Host, HostError};
use crate::version::Version;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Observe(#[from] observe::ObserveError),
    #[error("step etcd-snapshot")]
    Snapshot(#[from] crate::etcd::EtcdError),
    #[error("step images")]
    Images(#[from] crate::install::InstallError),
    #[error("refusing to upgrade {node} to {hop} now: {source}")]
    NotNow {
        node: String,
        hop: String,
        #[source]
        source: plan::PlanError,
    },
    #[error("step {step}: {message}")]
    Step { step: String, message: String },
    #[error(transparent)]
    Drain(#[from] super::drain::DrainError),
    #[error("step wait-ready: {0}")]
    NotReady(#[source] crate::install::ready::NotReady),
    #[error("step runtime: {0}")]
    Runtime(#[from] super::runtime::RuntimeError),
    #[error(transparent)]
    Addons(#[from] super::addons::AddonsError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Stage(#[from] super::stage::StageError),
}

fn step_err(step: &str, message: impl Into<String>) -> ApplyError {
    ApplyError::Step {
        step: step.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub bundle: PathBuf,
    pub node: String,
    pub hop: Option<Version>,
    pub root: PathBuf,
    pub kubeconfig: PathBuf,
    /// The control plane that runs `kubeadm upgrade apply` (default: first by name).
    pub first: Option<String>,
    pub etcd_endpoint: String,
    pub drain: super::drain::DrainOptions,
    pub ready_timeout: Duration,
    pub dry_run: bool,
    pub trust: crate::trust::Flags,
    /// Start a hop even though some nodes have not staged the bundle (`upgrade stage`).
    pub force: bool,
}

/// The bundle's hops, in order.
pub fn hops(b: &crate::bundle::meta::BundleJson) -> Result<Vec<Version>, ApplyError> {
    // Validated when bundle.json was parsed.
    Ok(b.hops.iter().map(|h| h.kubernetes.version()).collect())
}

struct Run<'a> {
    host: Host,
    bundle: VerifiedBundle,
    opts: &'a Options,
    hop: Version,
    journal: Journal,
    /// Held until the hop ends: one kbundle at a time changes a node.
    _lock: Option<crate::host::lock::NodeLock>,
}

impl crate::host::journal::Journaled for Run<'_> {
    type Error = ApplyError;
    fn host(&self) -> &Host {
        &self.host
    }
    fn journal(&self) -> &Journal {
        &self.journal
    }
}

impl Run<'_> {
    fn kubectl(&self) -> Result<Command, ApplyError> {
        let mut c = Command::new(self.host.resolve("/usr/local/bin/kubectl")?);
        c.arg("--kubeconfig").arg(&self.opts.kubeconfig);
        Ok(c)
    }

    fn version_dir(&self) -> String {
        format!("/opt/kbundle/versions/kubernetes-{}", self.hop.with_v())
    }

    /// Installs this hop's binary into its version directory and points the link at it,
    /// remembering the previous target for rollback.
    fn switch(&mut self, bin: &str) -> Result<(), ApplyError> {
        let platform = crate::manifest::Arch::host().map(|a| a.platform());
        let entry = self
            .bundle
            .json()
            .entries
            .iter()
            .find(|e| {
                e.component.as_deref() == Some(bin)
                    && e.version.as_deref() == Some(&self.hop.to_string())
                    && e.platform == platform
            })
            .ok_or_else(|| {
                step_err(
                    bin,
                    format!("the bundle has no {bin} {} for this machine", self.hop.with_v()),
                )
            })?
            .path
            .clone();
        let link = format!("/usr/local/bin/{bin}");
        if let Some(prev) = self.host.read_link(&link) {
            let target = prev.display().to_string();
            if !target.contains(&self.hop.with_v()) {
                self.host.write(
                    &format!("/var/lib/kbundle/state/rollback/{bin}"),
                    target.as_bytes(),
                    0o644,
                )?;
            }
        }
        let dest = format!("{}/{bin}", self.version_dir());
        self.host.install_file(&self.bundle.file(&entry), &dest, 0o755)?;
        self.host.symlink(&dest, &link)?;
        Ok(())
    }
}

fn node_ready(run: &Run, node: &str) -> Result<(), ApplyError> {
    let kubectl = run.host.resolve("/usr/local/bin/kubectl")?;
    let timeout = run.opts.ready_timeout;
    crate::install::ready::wait_node_ready(&run.host, &kubectl, &run.opts.kubeconfig, node, timeout)
        .map_err(ApplyError::NotReady)
}

/// Upgrades this node by one hop.
pub fn run(opts: &Options) -> Result<(), ApplyError> {
    run_on(Host::new(&opts.root, opts.dry_run), opts)
}

/// Upgrades this node by one hop, through `host` (the node seam).
pub fn run_on(host: Host, opts: &Options) -> Result<(), ApplyError> {
    let policy = crate::trust::Policy::for_node(&host, &opts.trust, Vec::new()).map_err(source::SourceError::from)?;
    let checked = source::check_source(&opts.bundle, &policy)?;
    println!("bundle {}: {}", checked.json().name, checked.trust().describe());
    let lock = crate::install::lock_node(&host)?;
    let mut bundle = source::open(checked, &host)?;
    source::attach_base(&mut bundle, &host)?;
    let hops = hops(bundle.json())?;
    let kubectl = host.resolve("/usr/local/bin/kubectl")?;
    let state = observe::from_kubectl(&host, &kubectl, &opts.kubeconfig, opts.first.as_deref())?;
    let Some(hop) = which_hop(&state, &hops, opts)? else {
        return Ok(());
    };
    let action = plan::check_node_turn(&state, &hops, &opts.node, hop).map_err(|source| ApplyError::NotNow {
        node: opts.node.clone(),
        hop: hop.with_v(),
        source,
    })?;
    if action == NodeAction::AlreadyDone {
        println!(
            "{} is already at {} for this hop: nothing to do",
            opts.node,
            hop.with_v()
        );
        return Ok(());
    }
    check_staged(&host, &bundle, opts, action, hop, &kubectl)?;
    println!("upgrading {} to {} ({action:?})", opts.node, hop.with_v());
    let journal = Journal::new(format!(
        "/var/lib/kbundle/state/upgrade-{}-{}",
        hop.with_v(),
        &bundle.id().hex()[..12]
    ));
    let mut run = Run {
        host,
        bundle,
        opts,
        hop,
        journal,
        _lock: lock,
    };
    if !control_plane_steps(&mut run, action, &hops, &kubectl)? {
        return Ok(());
    }
    node_steps(&mut run)?;
    crate::trust::store::record(&run.host, run.bundle.trust()).map_err(|e| ApplyError::Source(e.into()))
}

/// The hop asked for, else the first this node still needs (`None`: nothing to do).
fn which_hop(state: &plan::ClusterState, hops: &[Version], opts: &Options) -> Result<Option<Version>, ApplyError> {
    let me = state.nodes.iter().find(|n| n.name == opts.node).ok_or_else(|| {
        ApplyError::Usage(format!(
            "node {:?} is not in the cluster (kubectl get nodes)",
            opts.node
        ))
    })?;
    if let Some(h) = opts.hop {
        return Ok(Some(h));
    }
    let next = hops
        .iter()
        .find(|h| me.kubelet < **h || me.apiserver.is_some_and(|a| a < **h));
    if next.is_none() {
        let last = hops.last().map(|h| h.with_v()).unwrap_or_default();
        println!("{} already runs {last}: nothing to do", opts.node);
    }
    Ok(next.copied())
}

/// Every node imports every hop's images before kubeadm can roll kube-proxy and CoreDNS
/// onto it (see [`super::stage`]): this node's own marker, and on the first control plane
/// every node's annotation.
fn check_staged(
    host: &Host,
    bundle: &VerifiedBundle,
    opts: &Options,
    action: NodeAction,
    hop: Version,
    kubectl: &Path,
) -> Result<(), ApplyError> {
    use super::stage;
    let id = bundle.id().hex();
    if action == NodeAction::FirstControlPlane {
        let hop = hop.with_v();
        stage::check_cluster(host, kubectl, &opts.kubeconfig, &id, &hop, opts.force, &opts.bundle)?;
    }
    if let Err(e) = stage::check_local(host, &id, &opts.bundle) {
        if !opts.force {
            return Err(e.into());
        }
        eprintln!("warning: --force: {e}");
    }
    Ok(())
}

/// etcd snapshot (control planes), images, kubeadm and `kubeadm upgrade`. Returns `false`
/// when this control plane's kubelet has to wait for the other control planes.
fn control_plane_steps(
    run: &mut Run,
    action: NodeAction,
    hops: &[Version],
    kubectl: &Path,
) -> Result<bool, ApplyError> {
    let control_plane = matches!(action, NodeAction::FirstControlPlane | NodeAction::OtherControlPlane);
    if control_plane {
        // This hop's etcd tools beside the current ones; the snapshot picks by the server.
        run.step("etcd-tools", |r| etcd_tools(r, false))?;
        run.step("etcd-snapshot", etcd_snapshot)?;
    }
    run.step("images", import_hop_images)?;
    run.step("kubeadm", |r| r.switch("kubeadm"))?;
    run.step("save-for-rollback", |r| {
        Ok(super::rollback::save_before_hop(&r.host, r.hop)?)
    })?;
    run.step("kubeadm-upgrade", |r| {
        let mut k = Command::new(r.host.resolve("/usr/local/bin/kubeadm")?);
        if action == NodeAction::FirstControlPlane {
            k.args(["upgrade", "apply", &r.hop.with_v(), "-y"]);
        } else {
            k.args(["upgrade", "node"]);
        }
        r.host.run(&mut k)?;
        Ok(())
    })?;
    if control_plane {
        // etcd now runs this hop's release: /usr/local/bin's tools follow it.
        run.step("etcd-tools-link", |r| etcd_tools(r, true))?;
    }
    if !control_plane || run.host.dry_run() || run.journal.is_done(&run.host, "kubelet") {
        return Ok(true);
    }
    // A control plane's kubelet moves only once every control plane runs the hop.
    let opts = run.opts;
    let now = observe::from_kubectl(&run.host, kubectl, &opts.kubeconfig, opts.first.as_deref())?;
    if let Err(e @ plan::PlanError::NotYourTurn { .. }) = plan::check_node_turn(&now, hops, &opts.node, run.hop) {
        println!(
            "control plane of {} is at {}; its kubelet waits: {e}\nRun `kbundle upgrade apply` on {} again once every control plane has been upgraded.",
            opts.node,
            run.hop.with_v(),
            opts.node
        );
        return Ok(false);
    }
    // Every kube-apiserver runs the hop now: the add-ons follow.
    if super::addons::can_reapply(&run.host) {
        run.step("addons", |r| {
            let timeout = r.opts.ready_timeout;
            super::addons::reapply(&r.host, &r.bundle, kubectl, &r.opts.kubeconfig, timeout)?;
            Ok(())
        })?;
    } else {
        println!("    {}", super::addons::missing_config());
    }
    Ok(true)
}

/// The hop's images into containerd, before anything needs them.
fn import_hop_images(r: &mut Run) -> Result<(), ApplyError> {
    let expected: Vec<String> = r
        .bundle
        .json()
        .hops
        .iter()
        .find(|h| h.kubernetes.version() == r.hop)
        .map(|h| h.images.clone())
        .unwrap_or_default();
    // Every image the layout carries is imported, so every one is pinned (not only this
    // hop's); those of earlier hops and of the version installed before stay pinned.
    let pinned: Vec<String> = r.bundle.json().images.iter().map(|i| i.reference.clone()).collect();
    let containerd = r.host.resolve("/usr/local/bin/containerd")?;
    let major = crate::install::runtime::containerd_version(&r.host, &containerd)?.0;
    let ctr = r.host.resolve("/usr/local/bin/ctr")?;
    crate::install::runtime::import_images(
        &r.host,
        &containerd,
        &ctr,
        major,
        &r.bundle.files_under("images"),
        &expected,
        &pinned,
    )?;
    Ok(())
}

/// Drain, kubelet and kubectl, Ready, uncordon.
fn node_steps(run: &mut Run) -> Result<(), ApplyError> {
    let node = run.opts.node.clone();
    run.step("drain", |r| {
        super::drain::drain(&r.host, r.kubectl()?, &node, &r.opts.drain)?;
        Ok(())
    })?;
    // On the drained node: containerd, runc, CNI plugins, crictl and the sandbox pin.
    run.step("runtime", |r| {
        super::runtime::upgrade(&r.host, &r.bundle, r.hop)?;
        Ok(())
    })?;
    run.step("kubelet", |r| {
        r.switch("kubelet")?;
        r.switch("kubectl")?;
        r.host.run(Command::new("systemctl").arg("daemon-reload"))?;
        r.host.run(Command::new("systemctl").args(["restart", "kubelet"]))?;
        Ok(())
    })?;
    run.step("wait-ready", |r| node_ready(r, &node))?;
    run.step("uncordon", |r| {
        r.host.run(r.kubectl()?.args(["uncordon", &node]))?;
        Ok(())
    })?;
    let version = format!("{}\n", run.hop.with_v());
    run.host
        .write("/var/lib/kbundle/kubernetes-version", version.as_bytes(), 0o644)?;
    println!("{node} upgraded to {}", run.hop.with_v());
    Ok(())
}

/// Puts this hop's etcd tools in their version directory (`link`: and links them); a
/// bundle without per-hop etcd tools is skipped.
fn etcd_tools(r: &mut Run, link: bool) -> Result<(), ApplyError> {
    let platform = crate::manifest::Arch::host().map(|a| a.platform()).unwrap_or_default();
    let Some((v, tgz)) = crate::etcd::install::hop_tarball(&r.bundle, r.hop, &platform) else {
        r.host
            .say(&format!("the bundle has no etcd tools for {}", r.hop.with_v()));
        return Ok(());
    };
    crate::etcd::install::install(&r.host, &tgz, v, link)?;
    Ok(())
}

fn etcd_snapshot(r: &mut Run) -> Result<(), ApplyError> {
    let dir = "/var/lib/kbundle/backups";
    r.host.mkdir(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let node_file = format!("{dir}/etcd-before-{}-{stamp}.db", r.hop.with_v());
    let file = r.host.path(&node_file)?;
    if r.host.dry_run() {
        r.host.say(&format!("etcd snapshot save {}", file.display()));
        return Ok(());
    }

    let opts = crate::etcd::snapshot::SaveOptions {
        file: file.clone(),
        endpoint: r.opts.etcd_endpoint.clone(),
        tls: Default::default(),
        pki_dir: r.host.path("/etc/kubernetes/pki/etcd")?,
        etcdctl: None,
        etcdutl: None,
        timeout: Duration::from_secs(300),
    };
    let mut notes = |_level: crate::etcd::Level, msg: &str| println!("    {msg}");
    let report = crate::etcd::snapshot::save(&r.host, &opts, &mut notes)?;
    println!("    etcd snapshot {} (sha256 {})", report.file.display(), report.sha256);
    super::rollback::record_snapshot(&r.host, r.hop, &node_file)?;
    Ok(())
}

#[cfg(test)]
#[path = "apply_tests.rs"]
pub(crate) mod tests;
