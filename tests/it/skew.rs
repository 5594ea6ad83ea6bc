//! The upgrade planner against the version skew policy: worked examples and one case per
//! error, then property tests that run every plan step by step on a model cluster and check
//! the skew invariants, the kubeadm order and the turn checks after each step.

use kbundle::upgrade::plan::*;
use kbundle::version::Version;
use proptest::prelude::*;

fn v(s: &str) -> Version {
    s.parse().expect("test version")
}
fn ver(minor: u32, patch: u32) -> Version {
    Version::new(1, minor, patch)
}
fn hops(list: &[&str]) -> Vec<Version> {
    list.iter().map(|s| v(s)).collect()
}
fn node(name: &str, role: NodeRole, first: bool, apiserver: Option<Version>, kubelet: Version) -> NodeState {
    NodeState {
        name: name.to_string(),
        role,
        first,
        apiserver,
        kubelet,
    }
}
fn first(name: &str, apiserver: &str, kubelet: &str) -> NodeState {
    node(name, NodeRole::ControlPlane, true, Some(v(apiserver)), v(kubelet))
}
fn cp(name: &str, apiserver: &str, kubelet: &str) -> NodeState {
    node(name, NodeRole::ControlPlane, false, Some(v(apiserver)), v(kubelet))
}
fn worker(name: &str, kubelet: &str) -> NodeState {
    node(name, NodeRole::Worker, false, None, v(kubelet))
}
fn cluster(nodes: Vec<NodeState>) -> ClusterState {
    ClusterState { nodes }
}
fn three_nodes() -> ClusterState {
    let n = "1.32.11";
    cluster(vec![first("cp1", n, n), worker("w1", n), worker("w2", n)])
}

/// One hop's steps in short: `snap cp1, apply cp1, node cp2, drain cp1, kubelet cp1, ...`.
fn short(hop: &HopPlan) -> String {
    let words = hop.steps.iter().map(|step| {
        let what = match step {
            Step::EtcdSnapshot { .. } => "snap",
            Step::UpgradeApply { .. } => "apply",
            Step::UpgradeNode { .. } => "node",
            Step::Drain { .. } => "drain",
            Step::UpgradeKubelet { .. } => "kubelet",
            Step::Uncordon { .. } => "uncordon",
        };
        format!("{what} {}", step.node())
    });
    words.collect::<Vec<_>>().join(", ")
}
/// A node's kubelet steps in short; a worker's also start with `kubeadm upgrade node`.
fn kub(n: &str) -> String {
    format!("drain {n}, kubelet {n}, uncordon {n}")
}
fn wk(n: &str) -> String {
    format!("node {n}, {}", kub(n))
}

#[test]
fn three_node_cluster_two_hops() {
    let plan = plan(&three_nodes(), &hops(&["1.33.7", "1.34.3"])).expect("plan");
    let expected = format!("snap cp1, apply cp1, {}, {}, {}", kub("cp1"), wk("w1"), wk("w2"));
    assert_eq!(plan.hops.len(), 2);
    assert!(plan.hops.iter().all(|h| short(h) == expected), "{plan}");
    assert_eq!((plan.hops[0].from, plan.hops[0].version), (v("1.32.11"), v("1.33.7")));
    assert_eq!((plan.hops[1].from, plan.hops[1].version), (v("1.33.7"), v("1.34.3")));
    let w1 = Step::UpgradeNode {
        node: "w1".into(),
        control_plane: false,
    };
    assert!(plan.hops[0].steps.contains(&w1));
    let text = plan.to_string();
    let start = format!(
        "hop 1: v1.32.11 -> v1.33.7\n  0. {}\n  1. etcd snapshot on cp1\n  2. cp1: kubeadm upgrade apply v1.33.7\n",
        kbundle::upgrade::stage::PLAN_STEP
    );
    assert!(
        text.starts_with(&start) && text.contains("\n  3. drain cp1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nhop 2: v1.33.7 -> v1.34.3\n  0. stage on every node") && text.ends_with("  13. uncordon w2\n"),
        "{text}"
    );
}

#[test]
fn every_control_plane_moves_before_any_kubelet() {
    let n = "1.33.2";
    let state = cluster(vec![
        cp("cp2", n, n),
        first("cp1", n, n),
        worker("w1", n),
        cp("cp3", n, n),
    ]);
    let plan = plan(&state, &hops(&["1.34.3"])).expect("plan");
    let cps = format!("{}, {}, {}", kub("cp1"), kub("cp2"), kub("cp3"));
    assert_eq!(
        short(&plan.hops[0]),
        format!("snap cp1, apply cp1, node cp2, node cp3, {cps}, {}", wk("w1"))
    );
    assert!(plan.to_string().contains("cp2: kubeadm upgrade node (control plane)"));
}

#[test]
fn nodes_already_at_a_hop_skip_it() {
    let (n, m, two) = ("1.32.11", "1.33.7", hops(&["1.33.7", "1.34.3"]));
    // Interrupted after `upgrade apply` on cp1: no second snapshot or apply.
    let state = cluster(vec![
        first("cp1", m, n),
        cp("cp2", n, n),
        worker("w1", n),
        worker("w2", n),
    ]);
    let left = plan(&state, &two).expect("plan");
    let rest = format!("node cp2, {}, {}, {}, {}", kub("cp1"), kub("cp2"), wk("w1"), wk("w2"));
    assert_eq!(short(&left.hops[0]), rest);
    assert_eq!(left.hops[1].steps.len(), 2 + 1 + 3 + 3 + 4 + 4);
    // Interrupted after w1: only w2 is left in the first hop.
    let state = cluster(vec![
        first("cp1", m, m),
        cp("cp2", m, m),
        worker("w1", m),
        worker("w2", n),
    ]);
    assert_eq!(short(&plan(&state, &two).expect("plan").hops[0]), wk("w2"));
    // Past a hop (here by patch): skipped; a finished cluster has nothing to do.
    let past = cluster(vec![first("cp1", "1.33.9", "1.33.9"), worker("w1", "1.33.1")]);
    assert_eq!(short(&plan(&past, &two).expect("plan").hops[0]), wk("w1"));
    let done = cluster(vec![first("cp1", "1.34.3", "1.34.3"), worker("w1", "1.34.3")]);
    let nothing = plan(&done, &two).expect("plan");
    assert!(nothing.hops.is_empty() && nothing.to_string().starts_with("nothing to upgrade"));
}

#[test]
fn same_minor_patch_upgrade_is_one_hop() {
    let plan = plan(&three_nodes(), &hops(&["1.32.12"])).expect("plan");
    assert_eq!(plan.hops.len(), 1);
    assert!(short(&plan.hops[0]).starts_with("snap cp1, apply cp1, drain cp1"));
}

/// The refusal as `Variant: message`, checked for the variant and each expected fragment.
fn refused(state: &ClusterState, list: &[&str], variant: &str, fragments: &[&str]) {
    let e = plan(state, &hops(list)).expect_err("must be refused");
    let text = format!("{e:?}: {e}");
    assert!(text.starts_with(variant), "expected {variant}: {text}");
    assert!(
        fragments.iter().all(|f| text.contains(f)),
        "expected {fragments:?}: {text}"
    );
}

#[test]
fn refuses_bad_hops() {
    let s = three_nodes();
    refused(&s, &[], "EmptyHops", &["no hops"]);
    refused(
        &s,
        &["1.33.7", "1.35.0"],
        "HopSkipsMinor",
        &["v1.33.7 is followed by v1.35.0"],
    );
    refused(
        &s,
        &["1.34.3", "1.33.7"],
        "HopsNotIncreasing",
        &["v1.34.3 is followed by v1.33.7"],
    );
    refused(&s, &["1.33.7", "1.33.7"], "HopsNotIncreasing", &[]);
    refused(
        &s,
        &["1.33.7", "1.33.5"],
        "HopPatchDowngrade",
        &["patch downgrade", "v1.33.5"],
    );
    refused(&s, &["1.33.7", "2.0.0"], "MajorChange", &["v2.0.0"]);
    // Gap: a v1.32 control plane cannot jump to v1.34.
    refused(
        &s,
        &["1.34.3"],
        "GapBeforeHop",
        &["kube-apiserver v1.32.11 on cp1", "hop v1.34.3"],
    );
}

#[test]
fn refuses_bad_roles() {
    let (n, one) = ("1.32.11", &["1.33.7"]);
    refused(&cluster(vec![worker("w1", n)]), one, "NoControlPlane", &[]);
    refused(
        &cluster(vec![cp("cp1", n, n), cp("cp2", n, n)]),
        one,
        "NoFirstControlPlane",
        &["cp1, cp2"],
    );
    refused(
        &cluster(vec![first("cp1", n, n), first("cp2", n, n)]),
        one,
        "TwoFirst",
        &["cp1 and cp2"],
    );
    let w_first = node("w1", NodeRole::Worker, true, None, v(n));
    refused(
        &cluster(vec![first("cp1", n, n), w_first]),
        one,
        "FirstIsWorker",
        &["w1"],
    );
    let headless = node("cp1", NodeRole::ControlPlane, true, None, v(n));
    refused(&cluster(vec![headless]), one, "MissingApiserver", &["cp1"]);
    let w_api = node("w1", NodeRole::Worker, false, Some(v(n)), v(n));
    refused(
        &cluster(vec![first("cp1", n, n), w_api]),
        one,
        "WorkerWithApiserver",
        &["w1", "v1.32.11"],
    );
    refused(
        &cluster(vec![first("cp1", n, n), worker("cp1", n)]),
        one,
        "DuplicateNode",
        &["cp1"],
    );
}

#[test]
fn refuses_skew_violations() {
    let one = &["1.33.7"];
    let c = |api: &str, kubelet: &str| cluster(vec![first("cp1", api, api), worker("w1", kubelet)]);
    // Newer than the target, by patch or by minor.
    refused(
        &cluster(vec![first("cp1", "1.33.9", "1.33.1")]),
        one,
        "NewerThanTarget",
        &["kube-apiserver v1.33.9 on cp1"],
    );
    refused(
        &c("1.33.1", "1.34.0"),
        one,
        "NewerThanTarget",
        &["kubelet v1.34.0 on w1", "v1.33.7"],
    );
    // HA apiservers two minors apart.
    let mixed = cluster(vec![first("cp1", "1.31.0", "1.31.0"), cp("cp2", "1.33.0", "1.31.0")]);
    refused(
        &mixed,
        one,
        "MixedControlPlanes",
        &["kube-apiserver v1.31.0 on cp1", "kube-apiserver v1.33.0 on cp2"],
    );
    // A kubelet newer than the oldest apiserver.
    let ahead = cluster(vec![
        first("cp1", "1.32.0", "1.32.0"),
        cp("cp2", "1.33.0", "1.32.0"),
        worker("w1", "1.33.0"),
    ]);
    refused(
        &ahead,
        one,
        "KubeletNewerThanApiserver",
        &["kubelet v1.33.0 on w1", "v1.32.0 on cp1"],
    );
    // Already out of skew: 4 minors behind.
    refused(
        &c("1.32.0", "1.28.4"),
        one,
        "KubeletOutOfSkew",
        &["kubelet v1.28.4 on w1", "4 minors older"],
    );
    // Within skew now, but not once the control plane reaches the first hop.
    refused(
        &c("1.32.0", "1.29.4"),
        one,
        "KubeletTooOldForHop",
        &["v1.29.4 on w1", "hop v1.33.7", "4 minors", "allows 3"],
    );
    assert!(plan(&c("1.32.0", "1.30.0"), &hops(one)).is_ok());
    // Kubelets older than 1.25 may trail by only 2 minors.
    assert!(plan(&c("1.24.0", "1.23.0"), &hops(&["1.25.0"])).is_ok());
    refused(
        &c("1.24.0", "1.22.0"),
        &["1.25.0"],
        "KubeletTooOldForHop",
        &["allows 2"],
    );
}

#[test]
fn node_turns_follow_the_plan() {
    let two = hops(&["1.33.7", "1.34.3"]);
    let (h1, h2, n, m) = (two[0], two[1], "1.32.11", "1.33.7");
    let turn = |state: &ClusterState, node: &str, hop| check_node_turn(state, &two, node, hop);
    let refusal = |state: &ClusterState, node: &str, hop| match turn(state, node, hop) {
        Err(e @ PlanError::NotYourTurn { .. }) => e.to_string(),
        other => panic!("{node} should wait: {other:?}"),
    };
    let s = three_nodes();
    assert_eq!(turn(&s, "cp1", h1), Ok(NodeAction::FirstControlPlane));
    assert!(refusal(&s, "w1", h1).contains("upgrade apply` on the first control plane must come first (cp1"));
    assert!(refusal(&s, "cp1", h2).contains("hop v1.33.7 is not finished"));
    let after = cluster(vec![first("cp1", m, m), worker("w1", n), worker("w2", m)]);
    assert_eq!(turn(&after, "w1", h1), Ok(NodeAction::Worker));
    assert_eq!(turn(&after, "w2", h1), Ok(NodeAction::AlreadyDone));
    assert_eq!(turn(&after, "cp1", h1), Ok(NodeAction::AlreadyDone));
    // HA: cp2 waits for the apply; cp1's kubelet waits for cp2; workers wait for both.
    assert!(refusal(&cluster(vec![first("cp1", n, n), cp("cp2", n, n)]), "cp2", h1).contains("upgrade apply"));
    let applied = cluster(vec![first("cp1", m, n), cp("cp2", n, n), worker("w1", n)]);
    assert_eq!(turn(&applied, "cp2", h1), Ok(NodeAction::OtherControlPlane));
    assert!(refusal(&applied, "cp1", h1).contains("cp2 still to go"));
    let cps_moved = cluster(vec![first("cp1", m, n), cp("cp2", m, m), worker("w1", n)]);
    assert_eq!(turn(&cps_moved, "cp1", h1), Ok(NodeAction::FirstControlPlane));
    assert!(refusal(&cps_moved, "w1", h1).contains("kubelets must come first (cp1 still to go)"));
    assert!(matches!(turn(&s, "nope", h1), Err(PlanError::UnknownNode { .. })));
    assert!(matches!(
        turn(&s, "cp1", v("1.33.8")),
        Err(PlanError::HopNotInBundle { .. })
    ));
}

#[test]
fn hop_chains() {
    let pins = hops(&["1.31.14", "1.32.11", "1.33.7", "1.34.3", "1.35.0"]);
    let chain = |from: &str, to: &str, pins: &[Version]| hop_chain(v(from), v(to), pins);
    let failure = |from: &str, to: &str, pins: &[Version]| {
        let e = chain(from, to, pins).expect_err("must be refused");
        format!("{e:?}: {e}")
    };
    assert_eq!(chain("1.32.11", "1.34.3", &pins), Ok(hops(&["1.33.7", "1.34.3"])));
    assert_eq!(
        chain("1.31.2", "1.34.5", &pins),
        Ok(hops(&["1.32.11", "1.33.7", "1.34.5"]))
    );
    assert_eq!(chain("1.34.1", "1.34.3", &[]), Ok(hops(&["1.34.3"])));
    assert_eq!(
        chain("1.23.0", "1.25.0", &hops(&["1.24.17"])),
        Ok(hops(&["1.24.17", "1.25.0"]))
    );
    assert_eq!(
        chain("1.32.0", "1.34.3", &hops(&["1.33.7", "1.33.7"])),
        Ok(hops(&["1.33.7", "1.34.3"]))
    );
    assert!(failure("1.34.3", "1.33.7", &pins).starts_with("Downgrade"));
    assert!(failure("1.34.3", "1.34.2", &pins).starts_with("Downgrade"));
    assert!(failure("1.34.3", "1.34.3", &pins).starts_with("NoUpgrade"));
    let e = failure("1.30.0", "1.34.3", &pins);
    assert!(
        e.starts_with("TooManyMinors") && e.contains("spans 4 minors") && e.contains("at most 3"),
        "{e}"
    );
    assert!(failure("1.22.0", "1.25.0", &[]).contains("at most 2"));
    let e = failure("1.32.0", "1.34.3", &hops(&["1.34.3"]));
    assert!(
        e.starts_with("MissingPin") && e.contains("minor 1.33") && e.contains("pins: v1.34.3"),
        "{e}"
    );
    assert!(failure("1.32.0", "1.34.3", &hops(&["1.33.7", "1.33.8"])).starts_with("ConflictingPins"));
    assert!(failure("1.34.0", "2.0.0", &pins).starts_with("MajorChange"));
}

// ---- Property tests: a model cluster runs each plan step by step. ----

fn gap(newer: Version, older: Version) -> i64 {
    i64::from(newer.minor) - i64::from(older.minor)
}
fn allowed(kubelet: Version) -> i64 {
    if kubelet.minor >= 25 {
        3
    } else {
        2
    }
}

/// The skew policy on a cluster state: HA apiservers within one minor; kubelets never newer
/// than the oldest apiserver and at most 3 (2 below 1.25) minors behind the newest.
fn skew_ok(state: &ClusterState) -> Result<(), String> {
    let apis: Vec<Version> = state.nodes.iter().filter_map(|n| n.apiserver).collect();
    let (Some(&lo), Some(&hi)) = (apis.iter().min(), apis.iter().max()) else {
        return Err("no apiserver".into());
    };
    if gap(hi, lo) > 1 {
        return Err(format!("apiservers v{lo} and v{hi} more than a minor apart"));
    }
    match state
        .nodes
        .iter()
        .find(|n| gap(n.kubelet, lo) > 0 || gap(hi, n.kubelet) > allowed(n.kubelet))
    {
        Some(n) => Err(format!(
            "kubelet v{} on {} out of skew with apiservers v{lo}..v{hi}",
            n.kubelet, n.name
        )),
        None => Ok(()),
    }
}

/// Whether the upgrade is legal, worked out independently of the planner.
fn legal(state: &ClusterState, hops: &[Version]) -> bool {
    let Some(&target) = hops.last() else { return false };
    if hops
        .windows(2)
        .any(|w| w[1] <= w[0] || w[1].major != w[0].major || gap(w[1], w[0]) > 1)
    {
        return false;
    }
    let apis: Vec<Version> = state.nodes.iter().filter_map(|n| n.apiserver).collect();
    let kubelets: Vec<Version> = state.nodes.iter().map(|n| n.kubelet).collect();
    if apis.iter().chain(&kubelets).any(|&c| c > target) || skew_ok(state).is_err() {
        return false;
    }
    let (lo, hi) = (
        apis.iter().min().copied().unwrap_or(target),
        apis.iter().max().copied().unwrap_or(target),
    );
    // The first hop that moves the oldest apiserver must be the next minor at most; while the
    // control plane runs hop i, each kubelet still runs what hop i - 1 left it at.
    hops.iter().find(|&&h| h > lo).is_none_or(|&h| gap(h, lo) <= 1)
        && hops.iter().enumerate().all(|(i, &h)| {
            let before = |k: Version| if i == 0 { k } else { k.max(hops[i - 1]) };
            kubelets
                .iter()
                .all(|&k| gap(hi.max(h), before(k)) <= allowed(before(k)))
        })
}

#[derive(Debug, PartialEq)]
enum Turn {
    Done,
    Go,
    Wait,
}

/// The turn rules, independently of the planner.
fn may_go(s: &ClusterState, hops: &[Version], node: &NodeState, hop: Version) -> Turn {
    let behind = |n: &NodeState, h: Version| n.apiserver.is_some_and(|a| a < h);
    if !behind(node, hop) && node.kubelet >= hop {
        return Turn::Done;
    }
    let open = |h: Version| s.nodes.iter().any(|n| n.kubelet < h || behind(n, h));
    let cps = || s.nodes.iter().filter(|n| n.role == NodeRole::ControlPlane);
    let apis_done = cps().all(|n| !behind(n, hop));
    let go = match (node.role, node.first, behind(node, hop)) {
        (NodeRole::Worker, ..) => apis_done && cps().all(|n| n.kubelet >= hop),
        (_, true, true) => true,
        (_, false, true) => cps().all(|n| !n.first || !behind(n, hop)),
        (_, _, false) => apis_done,
    };
    match go && !hops.iter().any(|&h| h < hop && open(h)) {
        true => Turn::Go,
        false => Turn::Wait,
    }
}

/// `simulate` fails with the condition that did not hold.
macro_rules! check {
    ($cond:expr) => {
        check!($cond, "")
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("failed: {}: {}", stringify!($cond), format!($($fmt)+)));
        }
    };
}

fn flat(plan: Plan) -> Vec<(Version, Step)> {
    plan.hops
        .into_iter()
        .flat_map(|h| h.steps.into_iter().map(move |s| (h.version, s)))
        .collect()
}

/// Runs `plan` on a model of `state`. Before each step: `check_node_turn` agrees with
/// [`may_go`] for every node. Each step: its kubeadm preconditions. After each step: the skew
/// policy, and after each node's work, re-planning gives the remaining steps. Returns the end.
fn simulate(state: &ClusterState, hops: &[Version], planned: &Plan) -> Result<ClusterState, String> {
    let (mut s, mut drained) = (state.clone(), None::<String>);
    let all = flat(planned.clone());
    for (done, (hop, step)) in all.iter().enumerate() {
        let (hop, name) = (*hop, step.node().to_string());
        for other in &s.nodes {
            let raw = check_node_turn(&s, hops, &other.name, hop);
            let turn = match &raw {
                Ok(NodeAction::AlreadyDone) => Turn::Done,
                Ok(_) => Turn::Go,
                Err(PlanError::NotYourTurn { .. }) => Turn::Wait,
                Err(e) => return Err(format!("turn of {}: {e}", other.name)),
            };
            let rules = may_go(&s, hops, other, hop);
            check!(turn == rules, "{} before {step:?}: {raw:?}", other.name);
            // The model sees versions only: once its kubelet moved, a node is done (uncordon).
            if other.name == name && !matches!(step, Step::Uncordon { .. }) {
                let action = match (other.role, other.first) {
                    (NodeRole::Worker, _) => NodeAction::Worker,
                    (_, true) => NodeAction::FirstControlPlane,
                    (_, false) => NodeAction::OtherControlPlane,
                };
                check!(raw == Ok(action), "{name} before {step:?}");
            }
        }
        let apis_at_hop = s.nodes.iter().all(|n| n.apiserver.is_none_or(|a| a >= hop));
        let applied = s.nodes.iter().any(|n| n.first && n.apiserver.is_some_and(|a| a >= hop));
        let i = s.nodes.iter().position(|n| n.name == name).ok_or("unknown node")?;
        let n = &mut s.nodes[i];
        let moves = |a: Option<Version>| a.is_some_and(|a| a < hop && gap(hop, a) <= 1);
        match step {
            Step::EtcdSnapshot { .. } => {
                check!(n.first && matches!(all.get(done + 1), Some((_, Step::UpgradeApply { .. }))))
            }
            Step::UpgradeApply { .. } => {
                check!(
                    n.first && done > 0 && matches!(all[done - 1].1, Step::EtcdSnapshot { .. }) && moves(n.apiserver)
                );
                n.apiserver = Some(hop);
            }
            Step::UpgradeNode {
                control_plane: true, ..
            } => {
                check!(!n.first && applied && moves(n.apiserver));
                n.apiserver = Some(hop);
            }
            Step::UpgradeNode { .. } => check!(n.role == NodeRole::Worker && apis_at_hop && n.kubelet < hop),
            Step::Drain { .. } => {
                check!(drained.is_none(), "two nodes drained at once");
                drained = Some(name.clone());
            }
            Step::UpgradeKubelet { .. } => {
                check!(drained.as_deref() == Some(name.as_str()) && apis_at_hop && n.kubelet < hop);
                n.kubelet = hop;
            }
            Step::Uncordon { .. } => check!(drained.take().as_deref() == Some(name.as_str())),
        }
        skew_ok(&s).map_err(|e| format!("after {step:?} in hop v{hop}: {e}"))?;
        if matches!(
            step,
            Step::UpgradeApply { .. }
                | Step::UpgradeNode {
                    control_plane: true,
                    ..
                }
                | Step::Uncordon { .. }
        ) {
            let again = plan(&s, hops)
                .map(flat)
                .map_err(|e| format!("re-plan after {step:?}: {e}"))?;
            check!(again[..] == all[done + 1..], "after {step:?}: {again:?}");
        }
    }
    check!(drained.is_none());
    Ok(s)
}

fn at_target(end: &ClusterState, target: Version) -> bool {
    end.nodes
        .iter()
        .all(|n| n.kubelet == target && n.apiserver.is_none_or(|a| a == target))
}

/// A node's random numbers: apiserver minor offset, kubelet lag, two patches, and whether
/// to set its versions to a hop exactly.
type Seed = (u32, u32, u32, u32, bool);

/// Legal by construction: apiservers at minor `b` or `b + 1`, hops from below the cluster up
/// to 3 minors on, kubelets as old as the skew policy allows for the first hop.
fn build(
    b: u32,
    up: u32,
    lead: u32,
    ncp: usize,
    first_at: usize,
    patches: &[u32],
    seeds: &[Seed],
) -> (ClusterState, Vec<Version>) {
    let t = (b + up).min(35);
    let hops: Vec<Version> = ((b + 1).saturating_sub(lead).max(28).min(t)..=t)
        .zip(patches)
        .map(|(m, &p)| ver(m, p))
        .collect();
    let target = hops[hops.len() - 1];
    let at = |minor: u32, patch: u32, exact: bool| match hops.iter().find(|h| h.minor == minor) {
        Some(&hop) if exact => hop,
        _ => ver(minor, if minor == t { patch.min(target.patch) } else { patch }),
    };
    let apis: Vec<Version> = seeds[..ncp]
        .iter()
        .map(|&(o, _, p, _, x)| at((b + o).min(t), p, x))
        .collect();
    let (lo, hi) = (
        apis.iter().map(|a| a.minor).min().unwrap_or(b),
        apis.iter().map(|a| a.minor).max().unwrap_or(b),
    );
    let oldest = (hi.max((lo + 1).min(t)) - 3).max(28);
    let kubelet = |&(_, lag, _, p, x): &Seed| at(lo.saturating_sub(lag).max(oldest), p, x);
    let nodes = seeds.iter().enumerate().map(|(i, seed)| match apis.get(i) {
        Some(&a) => node(
            &format!("cp{}", i + 1),
            NodeRole::ControlPlane,
            i == first_at % ncp,
            Some(a),
            kubelet(seed),
        ),
        None => node(
            &format!("w{}", i + 1 - ncp),
            NodeRole::Worker,
            false,
            None,
            kubelet(seed),
        ),
    });
    (cluster(nodes.collect()), hops)
}

fn legal_case() -> impl Strategy<Value = (ClusterState, Vec<Version>)> {
    let seeds = proptest::collection::vec((0u32..2, 0u32..4, 0u32..16, 0u32..16, any::<bool>()), 1..=7);
    let patches = proptest::collection::vec(0u32..16, 8);
    (28u32..=35, 0u32..=3, 0u32..=2, 1usize..=3, 0usize..3, patches, seeds).prop_map(
        |(b, up, lead, ncp, first_at, patches, seeds)| {
            build(b, up, lead, ncp.min(seeds.len()), first_at, &patches, &seeds)
        },
    )
}

/// Anything goes: apiservers up to two minors apart, kubelets ahead of or far behind them,
/// hops starting near the cluster, sometimes out of order, repeated or skipping a minor.
fn any_case() -> impl Strategy<Value = (ClusterState, Vec<Version>)> {
    let seeds = proptest::collection::vec((0u32..6, 0u32..5, 0u32..16, 0u32..16), 1..=7);
    let hop_seeds = (0u32..=3, proptest::collection::vec(0u32..16, 1..=4), 0u32..12);
    (28u32..=35, 1usize..=3, hop_seeds, seeds).prop_map(|(b, ncp, (start, patches, mutate), seeds)| {
        let mut hops: Vec<Version> = patches
            .iter()
            .zip(0..)
            .map(|(&p, i)| ver(b - 1 + start + i, p))
            .collect();
        match mutate {
            0 if hops.len() > 1 => hops.swap(0, 1),
            1 => hops.push(hops[hops.len() - 1]),
            2 if hops.len() > 2 => _ = hops.remove(1),
            _ => {}
        }
        let ncp = ncp.min(seeds.len());
        let nodes = seeds.iter().enumerate().map(|(i, &(o, lag, p, q))| {
            let kubelet = ver((b + 1).saturating_sub(lag), q);
            match i < ncp {
                true => node(
                    &format!("cp{}", i + 1),
                    NodeRole::ControlPlane,
                    i == 0,
                    Some(ver(b + [0, 0, 0, 1, 1, 2][o as usize], p)),
                    kubelet,
                ),
                false => node(&format!("w{}", i + 1 - ncp), NodeRole::Worker, false, None, kubelet),
            }
        });
        (cluster(nodes.collect()), hops)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_legal_upgrade_plans_and_keeps_skew((state, hops) in legal_case()) {
        prop_assert!(legal(&state, &hops), "generator made an illegal case: {state:?} {hops:?}");
        let plan = plan(&state, &hops).map_err(|e| TestCaseError::fail(format!("{e}\n{state:?}\n{hops:?}")))?;
        prop_assert!(plan.hops.iter().all(|h| !h.steps.is_empty() && hops.contains(&h.version)));
        let end = simulate(&state, &hops, &plan).map_err(|e| TestCaseError::fail(format!("{e}\n{plan}")))?;
        prop_assert!(at_target(&end, hops[hops.len() - 1]), "{end:?}");
        prop_assert_eq!(kbundle::upgrade::plan::plan(&end, &hops).map(|p| p.hops.len()), Ok(0));
    }

    #[test]
    fn plans_exactly_the_legal_upgrades((state, hops) in any_case()) {
        let result = plan(&state, &hops);
        prop_assert_eq!(result.is_ok(), legal(&state, &hops), "{:?}\n{:?}\n{:?}", result, state, hops);
        if let Ok(plan) = result {
            let end = simulate(&state, &hops, &plan).map_err(|e| TestCaseError::fail(format!("{e}\n{plan}")))?;
            prop_assert!(at_target(&end, hops[hops.len() - 1]));
        }
    }

    #[test]
    fn hop_chains_are_one_minor_at_a_time(
        (fm, fp, up, tp) in (28u32..=35, 0u32..16, 0u32..=4, 0u32..16),
        pins in proptest::collection::vec((26u32..=40, 0u32..16), 0..20),
    ) {
        let (from, to) = (ver(fm, fp), ver(fm + up, tp));
        let pins: Vec<Version> = pins.into_iter().map(|(m, p)| ver(m, p)).collect();
        let pin_for = |m: u32| {
            let mut found: Vec<Version> = pins.iter().copied().filter(|p| p.minor == m).collect();
            found.sort();
            found.dedup();
            found
        };
        match hop_chain(from, to, &pins) {
            Ok(chain) => {
                prop_assert!(from < to && up <= 3 && chain.last() == Some(&to));
                prop_assert_eq!(chain.len(), up.max(1) as usize);
                for (hop, i) in chain.iter().zip(0..) {
                    prop_assert_eq!(hop.minor, if up == 0 { fm } else { fm + 1 + i });
                    prop_assert!(*hop == to || pin_for(hop.minor) == vec![*hop]);
                }
                let state = cluster(vec![
                    node("cp1", NodeRole::ControlPlane, true, Some(from), from),
                    node("w1", NodeRole::Worker, false, None, from),
                ]);
                let plan = plan(&state, &chain).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let end = simulate(&state, &chain, &plan).map_err(TestCaseError::fail)?;
                prop_assert!(at_target(&end, to));
            }
            Err(PlanError::Downgrade { .. }) => prop_assert!(from > to),
            Err(PlanError::NoUpgrade { .. }) => prop_assert!(from == to),
            Err(PlanError::TooManyMinors { .. }) => prop_assert!(up > 3),
            Err(PlanError::MissingPin { .. }) => prop_assert!((fm + 1..fm + up).any(|m| pin_for(m).is_empty())),
            Err(PlanError::ConflictingPins { .. }) => prop_assert!((fm + 1..fm + up).any(|m| pin_for(m).len() > 1)),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}
