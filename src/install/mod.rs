//! `kbundle install`: turn a Rocky Linux node into a control plane or worker from the bundle
//! alone. `prepare` (files, binaries, configs, images; no systemd, no network) then
//! `bootstrap` (services, kubeadm init/join, add-ons, Ready). Every step is journaled under
//! `/var/lib/kbundle/state/`, so a re-run after a crash finishes the job and a completed
//! install re-run changes nothing.

pub mod addons;
pub mod bootstrap;
pub mod csr;
pub mod files;
pub mod hostprep;
pub mod kubeadm;
pub mod preflight;
pub mod prepare;
pub mod ready;
pub mod runtime;
pub mod versions;

use crate::bundle::verified::{self as source, VerifiedBundle};
use crate::cluster::{Cluster, Node, Role};
use crate::host::journal::Journal;
use crate::host::{Host, HostError};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error("preflight failed ({} check(s)); fix them or skip a check with --skip-preflight NAME:\n  {}", failures.len(), failures.join("\n  "))]
    Preflight { failures: Vec<String> },
    #[error("step {step}: {message}")]
    Step { step: String, message: String },
    #[error("step {step}: cannot read {path}")]
    Read {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("step wait-ready: {0}")]
    NotReady(#[source] ready::NotReady),
    #[error("step addons: {0}")]
    Patch(#[from] crate::addons::patch::PatchError),
    #[error("step csr-approve: {0}")]
    Csr(#[from] csr::CsrError),
    #[error(
        "step wait-addons: {kind} {namespace}/{name} is not available after {timeout:?} (last answer: {last}); \
         check `kubectl -n {namespace} describe {} {name}` and `kubectl -n {namespace} get pods`",
        kind.to_lowercase()
    )]
    NotAvailable {
        kind: String,
        namespace: String,
        name: String,
        timeout: Duration,
        last: String,
    },
    #[error("step binaries: reading the tarball {path}")]
    Tarball {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl InstallError {
    /// A step that cannot go on, and why.
    pub(crate) fn step(step: &str, message: impl Into<String>) -> InstallError {
        InstallError::Step {
            step: step.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Prepare,
    Bootstrap,
    All,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub bundle: PathBuf,
    pub config: PathBuf,
    pub node: Option<String>,
    pub role: Option<Role>,
    pub root: PathBuf,
    pub phase: Phase,
    pub dry_run: bool,
    pub skip_preflight: Vec<String>,
    pub secrets: kubeadm::Secrets,
    pub ready_timeout: Duration,
    pub trust: crate::trust::Flags,
}

/// Everything the steps need.
pub struct Ctx {
    pub host: Host,
    pub bundle: VerifiedBundle,
    pub cluster: Cluster,
    pub role: Role,
    pub node: Option<Node>,
    pub opts: Options,
    journal: Journal,
    /// Held until the install ends: one kbundle at a time changes a node.
    _lock: Option<crate::host::lock::NodeLock>,
}

impl crate::host::journal::Journaled for Ctx {
    type Error = InstallError;
    fn host(&self) -> &Host {
        &self.host
    }
    fn journal(&self) -> &Journal {
        &self.journal
    }
}

impl Ctx {
    /// The node's own entry, required for bootstrap.
    pub fn node(&self) -> Result<&Node, InstallError> {
        self.node.as_ref().ok_or_else(|| {
            InstallError::Usage(format!(
                "this node is not in {}: pass --node NAME (nodes: {})",
                self.cluster.path.display(),
                self.cluster
                    .nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The `kbundle` of the bundle, as the node will find it.
    pub fn kbundle_exe(&self) -> PathBuf {
        self.bundle.file(crate::bundle::meta::INSTALLER)
    }

    /// A node path of the installed system, for use in files the node reads later.
    pub fn node_path(&self, p: &std::path::Path) -> String {
        match p.strip_prefix(self.host.root()) {
            Ok(rel) if self.host.root() != std::path::Path::new("/") => format!("/{}", rel.display()),
            _ => p.display().to_string(),
        }
    }
}

/// The node's short host name: `/etc/hostname` under the root, else the running kernel's.
pub fn hostname(host: &Host) -> Option<String> {
    host.read("/etc/hostname")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| host.kernel("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()))
        .map(|h| h.split('.').next().unwrap_or(&h).to_string())
        .filter(|h| !h.is_empty())
}

/// A running node moves to another version only through `upgrade apply` (drain, order,
/// skew checks), never by installing a newer bundle over it.
fn refuse_other_version(host: &Host, b: &crate::bundle::meta::BundleJson, opts: &Options) -> Result<(), InstallError> {
    if !host.exists("/var/lib/kbundle/bootstrap.done") {
        return Ok(());
    }
    match host.read("/var/lib/kbundle/kubernetes-version") {
        Some(v) if b.kubernetes != v.trim() => Err(InstallError::Usage(format!(
            "this node already runs Kubernetes {} (bootstrapped); use `kbundle upgrade apply --bundle {}` to move it to {}",
            v.trim(),
            opts.bundle.display(),
            b.kubernetes
        ))),
        _ => Ok(()),
    }
}

/// Takes the node lock and reports what an interrupted earlier run left behind.
pub fn lock_node(host: &Host) -> Result<Option<crate::host::lock::NodeLock>, HostError> {
    let Some((lock, swept)) = host.lock()? else {
        return Ok(None);
    };
    if let Some(s) = swept.summary() {
        println!("cleaned up after an interrupted run: {s}");
    }
    Ok(Some(lock))
}

/// Runs an install on this machine (or the image at `--root`). Verification happens
/// before anything is written.
pub fn run(opts: Options) -> Result<(), InstallError> {
    let host = Host::new(&opts.root, opts.dry_run);
    run_on(host, opts)
}

/// Runs an install through `host` (the node seam).
pub fn run_on(host: Host, opts: Options) -> Result<(), InstallError> {
    let cluster = Cluster::load(&opts.config)?;
    let node = this_node(&host, &cluster, &opts)?;
    let role = this_role(&cluster, node.as_ref(), &opts)?;
    println!("kbundle install: verifying {}", opts.bundle.display());
    let policy = crate::trust::Policy::for_node(&host, &opts.trust, cluster.trust_keys.clone())?;
    let checked = source::check_source(&opts.bundle, &policy)?;
    println!(
        "bundle {} (Kubernetes {}) verified: {} entries; {}",
        checked.json().name,
        checked.json().kubernetes,
        checked.json().entries.len(),
        checked.trust().describe()
    );
    refuse_other_version(&host, checked.json(), &opts)?;
    // Nothing is written before this point.
    let lock = lock_node(&host)?;
    for k in &cluster.trust_keys {
        if crate::trust::store::trust(&host, k)?.1 {
            println!("trusted key id {} from {} [trust]", k.id, cluster.path.display());
        }
    }
    let mut bundle = source::open(checked, &host)?;
    source::attach_base(&mut bundle, &host)?;
    let journal = Journal::new(format!("/var/lib/kbundle/state/{}", &bundle.id().hex()[..16]));
    let mut ctx = Ctx {
        host,
        bundle,
        cluster,
        role,
        node,
        opts: opts.clone(),
        journal,
        _lock: lock,
    };
    if matches!(opts.phase, Phase::Prepare | Phase::All) {
        prepare::run(&mut ctx)?;
    }
    if matches!(opts.phase, Phase::Bootstrap | Phase::All) {
        bootstrap::run(&mut ctx)?;
    }
    crate::trust::store::record(&ctx.host, ctx.bundle.trust())?;
    Ok(())
}

fn node_names(cluster: &Cluster) -> String {
    cluster
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// This node's entry: `--node`, else the one named like this host.
fn this_node(host: &Host, cluster: &Cluster, opts: &Options) -> Result<Option<Node>, InstallError> {
    match &opts.node {
        Some(n) => cluster.node(n).cloned().map(Some).ok_or_else(|| {
            InstallError::Usage(format!(
                "node {n:?} is not in {} (nodes: {})",
                cluster.path.display(),
                node_names(cluster)
            ))
        }),
        None => Ok(hostname(host).and_then(|h| cluster.node(&h).cloned())),
    }
}

/// This node's role: `--role`, which must agree with the config, else the config's.
fn this_role(cluster: &Cluster, node: Option<&Node>, opts: &Options) -> Result<Role, InstallError> {
    match (opts.role, node) {
        (Some(r), Some(n)) if r != n.role => Err(InstallError::Usage(format!(
            "--role {} contradicts {}, which gives node {} the role {}",
            r.as_str(),
            cluster.path.display(),
            n.name,
            n.role.as_str()
        ))),
        (Some(r), _) => Ok(r),
        (None, Some(n)) => Ok(n.role),
        (None, None) => Err(InstallError::Usage(
            "cannot tell this node's role: pass --role init|control-plane|worker or --node NAME".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
