//! The upgrade planner: pure functions from what a cluster runs now and an upgrade bundle's
//! hops to the ordered kubeadm steps, refusing any input whose upgrade would break the
//! Kubernetes version skew policy. It owns the rules (hop chains, kubeadm order, skew and
//! turn checks); running the steps on hosts belongs to the caller.
//!
//! Per hop `vX` (one minor at a time): the first control plane takes an etcd snapshot and runs
//! `kubeadm upgrade apply vX`, the other control planes run `kubeadm upgrade node`; only once
//! every kube-apiserver runs the hop do kubelets move, control planes first, then workers one
//! at a time (`kubeadm upgrade node`, drain, kubelet, uncordon). A component already at or
//! past a hop skips it. The kubeadm page upgrades each control plane's kubelet right after its
//! own `upgrade node`; with several control planes that briefly puts a kubelet ahead of an
//! older apiserver, which the skew policy forbids, so here control-plane kubelets wait.

use super::skew::{apiserver_range, check_hops, check_nodes, check_versions, join, list_versions, minors};
pub use super::skew::{hop_chain, kubelet_skew};
use crate::cluster::Role;
use crate::version::Version;
use std::fmt;

/// Whether a node runs a control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    ControlPlane,
    Worker,
}

impl From<Role> for NodeRole {
    fn from(role: Role) -> Self {
        if role.is_control_plane() {
            NodeRole::ControlPlane
        } else {
            NodeRole::Worker
        }
    }
}

/// What the cluster runs now, as observed (kubectl) or declared (--current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    pub nodes: Vec<NodeState>,
}

/// One node's versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    pub role: NodeRole,
    /// Exactly one control plane is first: it runs `kubeadm upgrade apply`.
    pub first: bool,
    /// The kube-apiserver version on control planes; `None` on workers.
    pub apiserver: Option<Version>,
    pub kubelet: Version,
}

impl NodeState {
    /// A node from its `cluster.toml` role: the `init` node is the first control plane.
    pub fn from_role(name: impl Into<String>, role: Role, apiserver: Option<Version>, kubelet: Version) -> Self {
        let (name, first) = (name.into(), role == Role::Init);
        NodeState {
            name,
            role: role.into(),
            first,
            apiserver,
            kubelet,
        }
    }

    pub(super) fn components(&self) -> impl Iterator<Item = Component> + '_ {
        let apiserver = self.apiserver.map(|v| self.component("kube-apiserver", v));
        apiserver.into_iter().chain([self.component("kubelet", self.kubelet)])
    }

    pub(super) fn component(&self, name: &'static str, version: Version) -> Component {
        Component {
            node: self.name.clone(),
            name,
            version,
        }
    }
}

/// One component on one node, as errors name it: `kube-apiserver v1.32.11 on cp1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub node: String,
    /// `kube-apiserver` or `kubelet`.
    pub name: &'static str,
    pub version: Version,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{} on {}", self.name, self.version, self.node)
    }
}

/// The remaining work, hop by hop; hops with nothing left to do are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub hops: Vec<HopPlan>,
}

/// One hop of the upgrade and its steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopPlan {
    /// The oldest version any component that moves in this hop runs before it.
    pub from: Version,
    pub version: Version,
    pub steps: Vec<Step>,
}

/// One thing to do on one node. `EtcdSnapshot` (`etcdctl snapshot save`) runs on the first
/// control plane right before its `UpgradeApply` (`kubeadm upgrade apply vX -y`); `UpgradeNode`
/// is `kubeadm upgrade node` on the other control planes and on each worker; `UpgradeKubelet`
/// installs the hop's kubelet and kubectl and restarts the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    EtcdSnapshot { node: String },
    UpgradeApply { node: String },
    UpgradeNode { node: String, control_plane: bool },
    Drain { node: String },
    UpgradeKubelet { node: String },
    Uncordon { node: String },
}

impl Step {
    /// The node the step runs on.
    pub fn node(&self) -> &str {
        match self {
            Step::EtcdSnapshot { node }
            | Step::UpgradeApply { node }
            | Step::UpgradeNode { node, .. }
            | Step::Drain { node }
            | Step::UpgradeKubelet { node }
            | Step::Uncordon { node } => node,
        }
    }

    /// The step in words, in a hop to `version`.
    pub fn describe(&self, version: Version) -> String {
        match self {
            Step::EtcdSnapshot { node } => format!("etcd snapshot on {node}"),
            Step::UpgradeApply { node } => format!("{node}: kubeadm upgrade apply v{version}"),
            Step::UpgradeNode { node, control_plane } if *control_plane => {
                format!("{node}: kubeadm upgrade node (control plane)")
            }
            Step::UpgradeNode { node, .. } => format!("{node}: kubeadm upgrade node"),
            Step::Drain { node } => format!("drain {node}"),
            Step::UpgradeKubelet { node } => {
                format!("{node}: upgrade kubelet and kubectl to v{version}, restart kubelet")
            }
            Step::Uncordon { node } => format!("uncordon {node}"),
        }
    }
}

impl Plan {
    /// The steps `node` has in the hop to `hop` (none when it has nothing to do there).
    pub fn steps_for(&self, hop: Version, node: &str) -> Vec<&Step> {
        let hop = self.hops.iter().find(|h| h.version == hop);
        hop.map(|h| h.steps.iter().filter(|s| s.node() == node).collect())
            .unwrap_or_default()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hops.is_empty() {
            return writeln!(f, "nothing to upgrade: every node already runs the target version");
        }
        for (i, hop) in self.hops.iter().enumerate() {
            writeln!(f, "hop {}: v{} -> v{}", i + 1, hop.from, hop.version)?;
            writeln!(f, "  0. {}", super::stage::PLAN_STEP)?;
            for (j, step) in hop.steps.iter().enumerate() {
                writeln!(f, "  {}. {}", j + 1, step.describe(hop.version))?;
            }
        }
        Ok(())
    }
}

/// What a node may do now in a hop (see [`check_node_turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// Its steps as the first control plane: snapshot and `upgrade apply`, or its kubelet.
    FirstControlPlane,
    /// Its steps as another control plane: `upgrade node`, or its kubelet.
    OtherControlPlane,
    /// Its steps as a worker: `upgrade node`, drain, kubelet, uncordon.
    Worker,
    /// Nothing left for this node in this hop.
    AlreadyDone,
}

/// Why a plan, a turn or a hop chain is refused, naming the nodes and versions involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the upgrade bundle has no hops: nothing to plan")]
    EmptyHops,
    #[error("versions must stay on one major: v{previous} is followed by v{next}")]
    MajorChange { previous: Version, next: Version },
    #[error("hops must strictly increase: v{previous} is followed by v{next}")]
    HopsNotIncreasing { previous: Version, next: Version },
    #[error("hop v{next} after hop v{previous} would be a patch downgrade within the same minor")]
    HopPatchDowngrade { previous: Version, next: Version },
    #[error(
        "hops skip a minor: v{previous} is followed by v{next}; kubeadm upgrades the control plane one minor at a time, so the bundle needs a hop for every minor in between"
    )]
    HopSkipsMinor { previous: Version, next: Version },
    #[error("the cluster has no control-plane node")]
    NoControlPlane,
    #[error("no control plane is flagged first; exactly one of {control_planes} must run `kubeadm upgrade apply`")]
    NoFirstControlPlane { control_planes: String },
    #[error("both {first} and {second} are flagged first; exactly one control plane runs `kubeadm upgrade apply`")]
    TwoFirstControlPlanes { first: String, second: String },
    #[error("worker {node} is flagged first; only a control plane can run `kubeadm upgrade apply`")]
    FirstIsWorker { node: String },
    #[error("control plane {node} has no kube-apiserver version")]
    MissingApiserver { node: String },
    #[error("worker {node} has a kube-apiserver version (v{version}); only control planes run one")]
    WorkerWithApiserver { node: String, version: Version },
    #[error("node name {node:?} appears more than once")]
    DuplicateNode { node: String },
    #[error("{component} is on a different major from the bundle's hops (v{hop})")]
    MajorMismatch { component: Component, hop: Version },
    #[error(
        "{component} is newer than the bundle's target v{target}; the bundle would downgrade it: use a bundle for v{} or later",
        component.version
    )]
    NewerThanTarget { component: Component, target: Version },
    #[error(
        "control planes are more than one minor apart ({oldest}, {newest}); the skew policy allows one minor between HA apiservers: finish the earlier upgrade first"
    )]
    MixedControlPlanes { oldest: Component, newest: Component },
    #[error("{kubelet} is newer than {apiserver}; the skew policy forbids a kubelet newer than any apiserver")]
    KubeletNewerThanApiserver { kubelet: Component, apiserver: Component },
    #[error(
        "{kubelet} is {} minors older than {apiserver}; the skew policy allows {}",
        minors(apiserver.version, kubelet.version), kubelet_skew(kubelet.version)
    )]
    KubeletOutOfSkew { kubelet: Component, apiserver: Component },
    #[error(
        "gap before hop v{hop}: {apiserver} would skip a minor, which kubeadm cannot do; the bundle needs a hop to {}.{} first",
        apiserver.version.major, u64::from(apiserver.version.minor) + 1
    )]
    GapBeforeHop { apiserver: Component, hop: Version },
    #[error(
        "{kubelet} is too old for hop v{hop}: with kube-apiserver at v{apiserver} it would be {} minors behind, the skew policy allows {}; upgrade that kubelet first",
        minors(*apiserver, kubelet.version), kubelet_skew(kubelet.version)
    )]
    KubeletTooOldForHop {
        kubelet: Component,
        hop: Version,
        apiserver: Version,
    },
    #[error("unknown node {node:?}; the cluster has {known}")]
    UnknownNode { node: String, known: String },
    #[error("v{hop} is not a hop of this bundle (hops: {hops})")]
    HopNotInBundle { hop: Version, hops: String },
    #[error("not {node}'s turn in hop v{hop}: {reason}")]
    NotYourTurn { node: String, hop: Version, reason: String },
    #[error("cannot upgrade from v{from} to v{to}: that is a downgrade")]
    Downgrade { from: Version, to: Version },
    #[error("the cluster already runs v{to}: nothing to upgrade")]
    NoUpgrade { to: Version },
    #[error(
        "v{from} -> v{to} spans {} minors, but kubelets at v{from} may trail the apiserver by at most {}; upgrade in two bundles",
        minors(*to, *from), kubelet_skew(*from)
    )]
    TooManyMinors { from: Version, to: Version },
    #[error("no pinned version for minor {minor} on the way from v{from} to v{to} (pins: {pins})")]
    MissingPin {
        minor: String,
        from: Version,
        to: Version,
        pins: String,
    },
    #[error("two different pins for the same minor: v{a} and v{b}; keep one")]
    ConflictingPins { a: Version, b: Version },
}

/// The upgrade bundle's hops, in order, e.g. `[v1.33.7, v1.34.3]` for a v1.32.11 cluster:
/// the remaining steps, or why this cluster cannot take this bundle.
pub fn plan(state: &ClusterState, hops: &[Version]) -> Result<Plan, PlanError> {
    let target = check_hops(hops)?;
    let control_planes = check_nodes(state)?;
    check_versions(state, target)?;
    let workers: Vec<usize> = (0..state.nodes.len()).filter(|i| !control_planes.contains(i)).collect();
    let mut nodes = state.nodes.clone();
    let mut plan = Plan { hops: Vec::new() };
    for &hop in hops {
        let behind = nodes.iter().flat_map(NodeState::components).map(|c| c.version);
        let Some(from) = behind.filter(|&v| v < hop).min() else {
            continue;
        };
        let mut steps = control_plane_steps(&mut nodes, &control_planes, hop)?;
        check_kubelets_for_hop(&nodes, hop)?;
        let order: Vec<usize> = control_planes.iter().chain(&workers).copied().collect();
        steps.extend(kubelet_steps(&mut nodes, &order, hop));
        plan.hops.push(HopPlan {
            from,
            version: hop,
            steps,
        });
    }
    Ok(plan)
}

/// `kubeadm upgrade apply` on the first control plane (after an etcd snapshot), then
/// `kubeadm upgrade node` on the others; `nodes` then run the hop's API server.
fn control_plane_steps(
    nodes: &mut [NodeState],
    control_planes: &[usize],
    hop: Version,
) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    for &i in control_planes {
        let n = &mut nodes[i];
        let Some(version) = n.apiserver.filter(|&a| a < hop) else {
            continue;
        };
        if minors(hop, version) > 1 {
            return Err(PlanError::GapBeforeHop {
                apiserver: n.component("kube-apiserver", version),
                hop,
            });
        }
        let node = n.name.clone();
        if n.first {
            steps.push(Step::EtcdSnapshot { node: node.clone() });
            steps.push(Step::UpgradeApply { node });
        } else {
            steps.push(Step::UpgradeNode {
                node,
                control_plane: true,
            });
        }
        n.apiserver = Some(hop);
    }
    Ok(steps)
}

/// The control plane now runs the hop; every kubelet must still be within skew.
fn check_kubelets_for_hop(nodes: &[NodeState], hop: Version) -> Result<(), PlanError> {
    let apiserver = apiserver_range(nodes).map_or(hop, |(_, newest)| newest.version);
    match nodes
        .iter()
        .find(|n| minors(apiserver, n.kubelet) > kubelet_skew(n.kubelet))
    {
        Some(n) => Err(PlanError::KubeletTooOldForHop {
            kubelet: n.component("kubelet", n.kubelet),
            hop,
            apiserver,
        }),
        None => Ok(()),
    }
}

/// Drain, kubelet, uncordon on every node behind `hop`, in `order` (control planes first).
fn kubelet_steps(nodes: &mut [NodeState], order: &[usize], hop: Version) -> Vec<Step> {
    let mut steps = Vec::new();
    for &i in order {
        let n = &mut nodes[i];
        if n.kubelet >= hop {
            continue;
        }
        let node = n.name.clone();
        if n.role == NodeRole::Worker {
            steps.push(Step::UpgradeNode {
                node: node.clone(),
                control_plane: false,
            });
        }
        steps.push(Step::Drain { node: node.clone() });
        steps.push(Step::UpgradeKubelet { node: node.clone() });
        steps.push(Step::Uncordon { node });
        n.kubelet = hop;
    }
    steps
}

/// A step's place in a hop: snapshot and apply, the other control planes, the control
/// planes' kubelets, the workers. A node waits for every earlier phase, never for its own.
fn phase(step: &Step, worker: bool) -> usize {
    match step {
        Step::EtcdSnapshot { .. } | Step::UpgradeApply { .. } => 0,
        Step::UpgradeNode {
            control_plane: true, ..
        } => 1,
        _ if worker => 3,
        _ => 2,
    }
}

const PHASES: [&str; 4] = [
    "`kubeadm upgrade apply` on the first control plane",
    "`kubeadm upgrade node` on the other control planes",
    "the control planes' kubelets",
    "the workers",
];

/// Whether `node` may run its steps of the hop to `hop` now (used by `upgrade apply` to
/// refuse out-of-order work): earlier hops must be finished, and within the hop every earlier
/// phase (see the module docs) on every node. Ask again after each step: a control plane's
/// kubelet waits for the other control planes. Workers may go in any order.
pub fn check_node_turn(
    state: &ClusterState,
    hops: &[Version],
    node: &str,
    hop: Version,
) -> Result<NodeAction, PlanError> {
    let plan = plan(state, hops)?;
    if !hops.contains(&hop) {
        return Err(PlanError::HopNotInBundle {
            hop,
            hops: list_versions(hops),
        });
    }
    let Some(me) = state.nodes.iter().find(|n| n.name == node) else {
        let known = join(state.nodes.iter().map(|n| n.name.as_str()));
        return Err(PlanError::UnknownNode {
            node: node.into(),
            known,
        });
    };
    let Some(this) = plan.hops.iter().find(|h| h.version == hop) else {
        return Ok(NodeAction::AlreadyDone);
    };
    let is_worker = |name: &str| state.nodes.iter().any(|n| n.name == name && n.role == NodeRole::Worker);
    let phases: Vec<(usize, &str)> = this
        .steps
        .iter()
        .map(|s| (phase(s, is_worker(s.node())), s.node()))
        .collect();
    let Some(mine) = phases.iter().filter(|p| p.1 == node).map(|p| p.0).min() else {
        return Ok(NodeAction::AlreadyDone);
    };
    let refuse = |reason: String| {
        Err(PlanError::NotYourTurn {
            node: node.into(),
            hop,
            reason,
        })
    };
    if let Some(earlier) = plan.hops.first().filter(|h| h.version != hop) {
        let first = earlier.steps.first().map_or("", Step::node);
        return refuse(format!("hop v{} is not finished (next: {first})", earlier.version));
    }
    if let Some(&(phase, blocker)) = phases.iter().find(|p| p.0 < mine) {
        return refuse(format!("{} must come first ({blocker} still to go)", PHASES[phase]));
    }
    Ok(match (me.role, me.first) {
        (NodeRole::Worker, _) => NodeAction::Worker,
        (_, true) => NodeAction::FirstControlPlane,
        (_, false) => NodeAction::OtherControlPlane,
    })
}
