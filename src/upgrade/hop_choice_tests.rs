//! Hop choice: the highest patch of each minor by default, `--via` for another, and every
//! bad `--via` refused with the minors it could have named.

use super::*;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn vs(list: &[&str]) -> Vec<Version> {
    list.iter().map(|s| v(s)).collect()
}

/// The shipped manifests plus the catalog's pins, as `builder::scope` passes them.
fn pins() -> Vec<Version> {
    vs(&[
        "v1.32.11", "v1.33.3", "v1.33.7", "v1.34.3", "v1.35.4", "v1.31.14", "v1.33.7",
    ])
}

#[test]
fn the_highest_patch_of_each_minor_is_the_default_hop() {
    let hops = choose_hops(v("v1.32.11"), v("v1.35.4"), &pins(), &[]).unwrap();
    assert_eq!(hops, vs(&["v1.33.7", "v1.34.3", "v1.35.4"]));
    // Order of the pins does not matter.
    let mut rev = pins();
    rev.reverse();
    assert_eq!(
        choose_hops(v("v1.32.11"), v("v1.34.3"), &rev, &[]).unwrap(),
        vs(&["v1.33.7", "v1.34.3"])
    );
}

#[test]
fn via_picks_another_patch_for_its_minor() {
    let hops = choose_hops(v("v1.32.11"), v("v1.34.3"), &pins(), &vs(&["v1.33.3"])).unwrap();
    assert_eq!(hops, vs(&["v1.33.3", "v1.34.3"]));
    // A patch no manifest pins is a valid hop too (its kubeadm images come from the catalog).
    let hops = choose_hops(v("v1.32.11"), v("v1.35.4"), &pins(), &vs(&["v1.34.1", "v1.33.3"])).unwrap();
    assert_eq!(hops, vs(&["v1.33.3", "v1.34.1", "v1.35.4"]));
}

#[test]
fn bad_via_is_refused_naming_the_minors_in_between() {
    let e = choose_hops(v("v1.32.11"), v("v1.34.3"), &pins(), &vs(&["v1.34.1"])).unwrap_err();
    assert!(
        matches!(e, HopChoiceError::ViaEndMinor { which: "target", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("here 1.33"), "{e}");
    let e = choose_hops(v("v1.32.11"), v("v1.34.3"), &pins(), &vs(&["v1.32.12"])).unwrap_err();
    assert!(
        matches!(e, HopChoiceError::ViaEndMinor { which: "cluster", .. }),
        "{e:?}"
    );
    let e = choose_hops(v("v1.32.11"), v("v1.34.3"), &pins(), &vs(&["v1.35.4"])).unwrap_err();
    assert!(matches!(e, HopChoiceError::ViaOffChain { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("v1.35.4 is not on the way from v1.32.11 to v1.34.3"),
        "{e}"
    );
    let e = choose_hops(v("v1.33.7"), v("v1.34.3"), &pins(), &vs(&["v1.31.14"])).unwrap_err();
    assert!(e.to_string().contains("in between are none"), "{e}");
    let e = choose_hops(v("v1.32.11"), v("v1.35.4"), &pins(), &vs(&["v1.33.3", "v1.33.5"])).unwrap_err();
    assert_eq!(
        e,
        HopChoiceError::ViaTwice {
            a: v("v1.33.3"),
            b: v("v1.33.5")
        }
    );
}

#[test]
fn the_chain_rules_still_apply() {
    let e = choose_hops(v("v1.34.3"), v("v1.33.7"), &pins(), &[]).unwrap_err();
    assert!(matches!(e, HopChoiceError::Chain(PlanError::Downgrade { .. })), "{e:?}");
    let e = choose_hops(v("v1.30.2"), v("v1.34.3"), &pins(), &[]).unwrap_err();
    assert!(
        matches!(e, HopChoiceError::Chain(PlanError::TooManyMinors { .. })),
        "{e:?}"
    );
}
