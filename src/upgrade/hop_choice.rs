//! Which patch each intermediate minor of an upgrade bundle goes through. Several pins of
//! one minor may be known (manifests of v1.33.3 and v1.33.7 side by side, and the catalog's
//! pins): the highest patch is the default, and `--via vX.Y.Z` chooses another for its
//! minor. kubeadm upgrades the control plane one minor at a time and only requires each
//! hop to be a release of the next minor, so any patch of that minor is a valid hop
//! (kubeadm `EnforceVersionPolicies` checks minors only: docs/upstream-facts.md, "Upgrades:
//! drain, kubeadm backups, hop choice").

use super::plan::{hop_chain, PlanError};
use crate::version::Version;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopChoiceError {
    #[error("--via needs --upgrade-from: it chooses a patch for an intermediate minor of an upgrade bundle")]
    ViaWithoutUpgrade,
    #[error(
        "--via v{via} is of minor {minor}, the {which}'s (v{version}); --via chooses the patch of a minor in between, here {between}"
    )]
    ViaEndMinor {
        via: Version,
        minor: String,
        which: &'static str,
        version: Version,
        between: String,
    },
    #[error("--via v{via} is not on the way from v{from} to v{to}: its minors in between are {between}")]
    ViaOffChain {
        via: Version,
        from: Version,
        to: Version,
        between: String,
    },
    #[error("--via v{a} and --via v{b} choose two patches of one minor; give one")]
    ViaTwice { a: Version, b: Version },
    #[error(transparent)]
    Chain(#[from] PlanError),
}

/// `major.minor` of each minor strictly between `from` and `to`, or `none`.
fn between(from: Version, to: Version) -> String {
    let minors: Vec<String> = (from.minor + 1..to.minor)
        .map(|m| format!("{}.{m}", from.major))
        .collect();
    if minors.is_empty() {
        "none".into()
    } else {
        minors.join(", ")
    }
}

/// Refuses a `--via` that is not of a minor strictly between `from` and `to`, or a second
/// one for a minor.
fn check_via(from: Version, to: Version, via: &[Version]) -> Result<(), HopChoiceError> {
    for (i, &v) in via.iter().enumerate() {
        let minor = format!("{}.{}", v.major, v.minor);
        let end = [(from, "cluster"), (to, "target")]
            .into_iter()
            .find(|(e, _)| e.major == v.major && e.minor == v.minor);
        if let Some((version, which)) = end {
            let between = between(from, to);
            return Err(HopChoiceError::ViaEndMinor {
                via: v,
                minor,
                which,
                version,
                between,
            });
        }
        if v.major != from.major || v.minor <= from.minor || v.minor >= to.minor {
            let between = between(from, to);
            return Err(HopChoiceError::ViaOffChain {
                via: v,
                from,
                to,
                between,
            });
        }
        if let Some(&a) = via[..i].iter().find(|a| a.minor == v.minor) {
            return Err(HopChoiceError::ViaTwice { a, b: v });
        }
    }
    Ok(())
}

/// The hops from `from` to `to`: each minor in between through its `--via` patch, else
/// through the highest of `pins` for it; then `to`.
pub fn choose_hops(
    from: Version,
    to: Version,
    pins: &[Version],
    via: &[Version],
) -> Result<Vec<Version>, HopChoiceError> {
    if from.major == to.major && from < to {
        check_via(from, to, via)?;
    }
    let same_minor = |a: &Version, b: &Version| a.major == b.major && a.minor == b.minor;
    let mut chosen: Vec<Version> = via.to_vec();
    for p in pins.iter().filter(|p| !via.iter().any(|v| same_minor(v, p))) {
        match chosen.iter_mut().find(|c| same_minor(c, p)) {
            Some(c) => *c = (*c).max(*p),
            None => chosen.push(*p),
        }
    }
    Ok(hop_chain(from, to, &chosen)?)
}

#[cfg(test)]
#[path = "hop_choice_tests.rs"]
mod tests;
