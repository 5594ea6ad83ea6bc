//! `kbundle upgrade stage`: before any hop starts, every node imports (and pins) every hop's
//! images and places every hop's kubeadm, kubelet and kubectl in their version directories,
//! without changing what runs (no link moves, no restart). Since kubeadm 1.28 the last
//! control plane to finish `kubeadm upgrade apply|node` rolls kube-proxy (a DaemonSet, on
//! every node) and CoreDNS to the hop's images at once (docs/upstream-facts.md, "Upgrades:
//! staging images before kubeadm rolls kube-proxy and CoreDNS"); in the air gap a node
//! that imports its images only at its own turn would then sit in ImagePullBackOff.
//!
//! Evidence, for `upgrade apply` to check: a local marker ([`MARKER`]) and the annotation
//! [`ANNOTATION`] on the node's own Node object, written with the node's kubelet
//! credentials (NodeRestriction lets a kubelet change its own Node's annotations; same
//! section). The first control plane refuses a hop until every node carries it.

use crate::bundle::verified::{self as source, VerifiedBundle};
use crate::host::{Host, HostError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Node annotation naming the bundle (sha256 of its bundle.json) a node has staged.
pub const ANNOTATION: &str = "kbundle.io/staged";
/// The local marker: the staged bundle's id, one line.
pub const MARKER: &str = "/var/lib/kbundle/staged";
/// How the plan names step 0 of each hop.
pub const PLAN_STEP: &str =
    "stage on every node first: `kbundle upgrade stage --bundle BUNDLE` (every hop's images and binaries, nothing switched)";

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("staging images")]
    Images(#[from] crate::install::InstallError),
    #[error("the bundle has no {bin} {version} for this machine")]
    MissingBinary { bin: String, version: String },
    #[error("recording the staged bundle on node {node} (kubectl annotate with {kubeconfig})")]
    Annotate {
        node: String,
        kubeconfig: String,
        #[source]
        source: HostError,
    },
    #[error("this node has not staged this bundle ({why}); run `kbundle upgrade stage --bundle {bundle}` on it first")]
    NotStagedHere { why: String, bundle: String },
    #[error(
        "refusing to start hop {hop}: {} not staged this bundle yet ({}); run `kbundle upgrade stage --bundle {bundle}` on each, or pass --force to go on without it (their kube-proxy and CoreDNS pods will not start in an air gap)",
        if missing.len() == 1 { "1 node has" } else { "nodes have" },
        missing.join(", ")
    )]
    Unstaged {
        hop: String,
        missing: Vec<String>,
        bundle: String,
    },
    #[error(transparent)]
    Observe(#[from] super::observe::ObserveError),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub bundle: PathBuf,
    /// This node's name in the cluster.
    pub node: String,
    pub root: PathBuf,
    /// Node path of the kubeconfig the annotation is written with (the kubelet's own).
    pub kubeconfig: String,
    /// Only the local marker, no annotation (a node not yet reachable, or a test root).
    pub no_annotate: bool,
    pub dry_run: bool,
    pub trust: crate::trust::Flags,
}

/// What staging did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The bundle's id (sha256 of bundle.json), as the marker and annotation carry it.
    pub id: String,
    pub images: usize,
    pub binaries: Vec<String>,
}

pub fn run(opts: &Options) -> Result<Report, StageError> {
    run_on(Host::new(&opts.root, opts.dry_run), opts)
}

/// Stages the bundle on this node through `host`; running it again redoes nothing harmful.
pub fn run_on(host: Host, opts: &Options) -> Result<Report, StageError> {
    // Serials are checked here and recorded by `upgrade apply`.
    let policy = crate::trust::Policy::for_node(&host, &opts.trust, Vec::new()).map_err(source::SourceError::from)?;
    let checked = source::check_source(&opts.bundle, &policy)?;
    println!("bundle {}: {}", checked.json().name, checked.trust().describe());
    let _lock = crate::install::lock_node(&host)?;
    let mut bundle = source::open(checked, &host)?;
    source::attach_base(&mut bundle, &host)?;
    let binaries = place_binaries(&host, &bundle)?;
    let images = import_all(&host, &bundle)?;
    let id = bundle.id().hex();
    host.write(MARKER, format!("{id}\n").as_bytes(), 0o644)?;
    if !opts.no_annotate {
        annotate(&host, opts, &id)?;
    }
    Ok(Report { id, images, binaries })
}

/// Every hop's kubeadm, kubelet and kubectl into `/opt/kbundle/versions/kubernetes-vX/`
/// (where `upgrade apply` links them from); the links in /usr/local/bin stay.
fn place_binaries(host: &Host, bundle: &VerifiedBundle) -> Result<Vec<String>, StageError> {
    let platform = crate::manifest::Arch::host().map(|a| a.platform());
    let mut placed = Vec::new();
    for hop in bundle.json().hops.iter().map(|h| h.kubernetes.version()) {
        for bin in ["kubeadm", "kubelet", "kubectl"] {
            let entry = bundle
                .json()
                .entries
                .iter()
                .find(|e| {
                    e.component.as_deref() == Some(bin)
                        && e.version.as_deref() == Some(&hop.to_string())
                        && e.platform == platform
                })
                .ok_or_else(|| StageError::MissingBinary {
                    bin: bin.into(),
                    version: hop.with_v(),
                })?;
            let dest = format!("/opt/kbundle/versions/kubernetes-{}/{bin}", hop.with_v());
            // What runs now is never rewritten: the link's current target stays as it is.
            let in_use = host.read_link(&format!("/usr/local/bin/{bin}")) == Some(PathBuf::from(&dest));
            if !in_use && !same_file(host, &bundle.file(&entry.path), &dest) {
                host.install_file(&bundle.file(&entry.path), &dest, 0o755)?;
            }
            placed.push(dest);
        }
    }
    Ok(placed)
}

/// Whether node file `dest` already holds exactly `src`'s bytes (a re-run leaves it be).
fn same_file(host: &Host, src: &Path, dest: &str) -> bool {
    let Ok(have) = host.read_bytes(dest) else { return false };
    std::fs::read(src).is_ok_and(|want| want == have)
}

/// Every image of every hop into containerd, every image of the bundle pinned (as install
/// and `upgrade apply` pin them).
fn import_all(host: &Host, bundle: &VerifiedBundle) -> Result<usize, StageError> {
    let mut expected: Vec<String> = Vec::new();
    for h in &bundle.json().hops {
        for i in &h.images {
            if !expected.contains(i) {
                expected.push(i.clone());
            }
        }
    }
    let pinned: Vec<String> = bundle.json().images.iter().map(|i| i.reference.clone()).collect();
    let containerd = host.resolve("/usr/local/bin/containerd")?;
    let major = crate::install::runtime::containerd_version(host, &containerd)?.0;
    let ctr = host.resolve("/usr/local/bin/ctr")?;
    let layout = bundle.files_under("images");
    crate::install::runtime::import_images(host, &containerd, &ctr, major, &layout, &expected, &pinned)?;
    Ok(expected.len())
}

/// `kubectl annotate node SELF --overwrite kbundle.io/staged=ID` with the kubelet's own
/// credentials: the Node authorizer allows a node to patch its own Node object, and
/// NodeRestriction checks only its taints, labels and configSource, not annotations.
fn annotate(host: &Host, opts: &Options, id: &str) -> Result<(), StageError> {
    let kubectl = host.resolve("/usr/local/bin/kubectl")?;
    let kubeconfig = host.path(&opts.kubeconfig)?;
    let mut k = Command::new(kubectl);
    k.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["annotate", "node", &opts.node, "--overwrite"])
        .arg(format!("{ANNOTATION}={id}"));
    host.run(&mut k).map(drop).map_err(|source| StageError::Annotate {
        node: opts.node.clone(),
        kubeconfig: opts.kubeconfig.clone(),
        source,
    })
}

/// Refuses unless this node's marker names bundle `id`.
pub fn check_local(host: &Host, id: &str, bundle: &Path) -> Result<(), StageError> {
    let why = match host.read(MARKER) {
        None => format!("no {MARKER}"),
        Some(m) if m.trim() == id => return Ok(()),
        Some(m) => format!("{MARKER} names bundle {}", m.trim()),
    };
    Err(StageError::NotStagedHere {
        why,
        bundle: bundle.display().to_string(),
    })
}

/// The nodes of `kubectl get nodes -o json` whose [`ANNOTATION`] is not `id`.
pub fn unstaged(nodes: &serde_json::Value, id: &str) -> Vec<String> {
    let mut out: Vec<String> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["metadata"]["annotations"][ANNOTATION].as_str() != Some(id))
        .map(|n| n["metadata"]["name"].as_str().unwrap_or("<unnamed node>").to_string())
        .collect();
    out.sort();
    out
}

/// Refuses hop `hop` until every node of the cluster carries the annotation for `id`;
/// with `force`, warns and goes on.
pub fn check_cluster(
    host: &Host,
    kubectl: &Path,
    kubeconfig: &Path,
    id: &str,
    hop: &str,
    force: bool,
    bundle: &Path,
) -> Result<(), StageError> {
    let nodes = super::observe::nodes_json(host, kubectl, kubeconfig)?;
    let missing = unstaged(&nodes, id);
    if missing.is_empty() {
        return Ok(());
    }
    let e = StageError::Unstaged {
        hop: hop.into(),
        missing,
        bundle: bundle.display().to_string(),
    };
    if force {
        eprintln!("warning: --force: {e}");
        return Ok(());
    }
    Err(e)
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
