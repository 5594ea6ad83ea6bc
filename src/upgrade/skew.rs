//! The version skew policy kbundle plans upgrades by: hops one minor at a time, a kubelet at
//! most 3 minors (2 before 1.25) behind the API server and never ahead of it, control planes
//! at most one minor apart.

use super::plan::{ClusterState, Component, NodeRole, NodeState, PlanError};
use crate::version::Version;
use std::collections::HashSet;

/// How many minors a kubelet may trail the apiserver: 3 from 1.25 on, 2 before.
pub fn kubelet_skew(kubelet: Version) -> i64 {
    if kubelet.minor_line() >= (1, 25) {
        3
    } else {
        2
    }
}

/// `newer.minor - older.minor` (callers ensure one major).
pub(super) fn minors(newer: Version, older: Version) -> i64 {
    i64::from(newer.minor) - i64::from(older.minor)
}

pub(super) fn join<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

pub(super) fn list_versions(versions: &[Version]) -> String {
    let versions: Vec<String> = versions.iter().map(Version::with_v).collect();
    join(versions.iter().map(String::as_str))
}

/// Checks the hops and returns the target (the last hop).
pub(super) fn check_hops(hops: &[Version]) -> Result<Version, PlanError> {
    let target = *hops.last().ok_or(PlanError::EmptyHops)?;
    for pair in hops.windows(2) {
        let (previous, next) = (pair[0], pair[1]);
        if next.major != previous.major {
            return Err(PlanError::MajorChange { previous, next });
        }
        if next.minor == previous.minor && next.patch < previous.patch {
            return Err(PlanError::HopPatchDowngrade { previous, next });
        }
        if next <= previous {
            return Err(PlanError::HopsNotIncreasing { previous, next });
        }
        if minors(next, previous) > 1 {
            return Err(PlanError::HopSkipsMinor { previous, next });
        }
    }
    Ok(target)
}

/// Checks roles and names; returns the control planes' indexes, the first one leading.
pub(super) fn check_nodes(state: &ClusterState) -> Result<Vec<usize>, PlanError> {
    let mut seen = HashSet::new();
    let (mut first, mut others): (Option<usize>, Vec<usize>) = (None, Vec::new());
    for (i, n) in state.nodes.iter().enumerate() {
        let node = n.name.clone();
        if !seen.insert(n.name.as_str()) {
            return Err(PlanError::DuplicateNode { node });
        }
        match (n.role, n.apiserver, first) {
            (NodeRole::ControlPlane, None, _) => return Err(PlanError::MissingApiserver { node }),
            (NodeRole::Worker, Some(version), _) => return Err(PlanError::WorkerWithApiserver { node, version }),
            (NodeRole::Worker, None, _) if n.first => return Err(PlanError::FirstIsWorker { node }),
            (NodeRole::Worker, None, _) => {}
            (NodeRole::ControlPlane, Some(_), Some(f)) if n.first => {
                let first = state.nodes[f].name.clone();
                return Err(PlanError::TwoFirstControlPlanes { first, second: node });
            }
            (NodeRole::ControlPlane, Some(_), None) if n.first => first = Some(i),
            (NodeRole::ControlPlane, Some(_), _) => others.push(i),
        }
    }
    match first {
        Some(f) => Ok([f].into_iter().chain(others).collect()),
        None if others.is_empty() => Err(PlanError::NoControlPlane),
        None => {
            let control_planes = join(others.iter().map(|&i| state.nodes[i].name.as_str()));
            Err(PlanError::NoFirstControlPlane { control_planes })
        }
    }
}

/// The oldest and the newest kube-apiserver.
pub(super) fn apiserver_range(nodes: &[NodeState]) -> Option<(Component, Component)> {
    let apis = || {
        nodes
            .iter()
            .filter_map(|n| n.apiserver.map(|v| n.component("kube-apiserver", v)))
    };
    Some((apis().min_by_key(|c| c.version)?, apis().max_by_key(|c| c.version)?))
}

/// Checks every version against the target, and the skew policy as the cluster stands.
pub(super) fn check_versions(state: &ClusterState, target: Version) -> Result<(), PlanError> {
    for component in state.nodes.iter().flat_map(NodeState::components) {
        if component.version.major != target.major {
            return Err(PlanError::MajorMismatch { component, hop: target });
        }
        if component.version > target {
            return Err(PlanError::NewerThanTarget { component, target });
        }
    }
    let (oldest, newest) = apiserver_range(&state.nodes).ok_or(PlanError::NoControlPlane)?;
    if minors(newest.version, oldest.version) > 1 {
        return Err(PlanError::MixedControlPlanes { oldest, newest });
    }
    for n in &state.nodes {
        let kubelet = n.component("kubelet", n.kubelet);
        if minors(n.kubelet, oldest.version) > 0 {
            return Err(PlanError::KubeletNewerThanApiserver {
                kubelet,
                apiserver: oldest,
            });
        }
        if minors(newest.version, n.kubelet) > kubelet_skew(n.kubelet) {
            return Err(PlanError::KubeletOutOfSkew {
                kubelet,
                apiserver: newest,
            });
        }
    }
    Ok(())
}

/// For upgrade bundles: the chain of minor hops from `from` to `to`, taking each intermediate
/// minor's patch from `pins` (e.g. the shipped manifests: 1.33 -> 1.33.7). A same-minor patch
/// upgrade is a single hop. A chain spans at most as many minors as a kubelet at `from` may
/// trail the apiserver (3, or 2 below 1.25).
pub fn hop_chain(from: Version, to: Version, pins: &[Version]) -> Result<Vec<Version>, PlanError> {
    if from.major != to.major {
        return Err(PlanError::MajorChange {
            previous: from,
            next: to,
        });
    }
    if from > to {
        return Err(PlanError::Downgrade { from, to });
    }
    if from == to {
        return Err(PlanError::NoUpgrade { to });
    }
    if minors(to, from) > kubelet_skew(from) {
        return Err(PlanError::TooManyMinors { from, to });
    }
    let mut chain = Vec::new();
    for minor in (from.minor..to.minor).skip(1) {
        let mut found = pins.iter().filter(|p| p.major == from.major && p.minor == minor);
        let Some(&pin) = found.next() else {
            let (minor, pins) = (format!("{}.{minor}", from.major), list_versions(pins));
            return Err(PlanError::MissingPin { minor, from, to, pins });
        };
        if let Some(&other) = found.find(|&&p| p != pin) {
            return Err(PlanError::ConflictingPins { a: pin, b: other });
        }
        chain.push(pin);
    }
    chain.push(to);
    Ok(chain)
}
