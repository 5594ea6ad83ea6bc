//! Delta bundles: the entries a bundle leaves to its base (`in_base`) must be present, by
//! digest, in the base bundle the node keeps (or the one given with `--base`).

use super::archive::ArchiveError;
use super::meta::{BundleJson, Entry, BUNDLE_JSON};
use super::verify::{verify, Problem, Report};
use crate::digest::Sha256;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Checks that every entry a delta bundle leaves to its base is present in `base_dir`
/// (found by digest in the base's bundle.json, then hashed). Problems name each missing or
/// changed entry.
pub fn check_base(bundle: &BundleJson, base_dir: Option<&Path>) -> Vec<Problem> {
    locate(bundle, base_dir).err().unwrap_or_default()
}

/// Where each entry a delta bundle leaves to its base is, in `base_dir` (bundle path →
/// file, every one hashed and matched); the problems when any is missing or changed.
pub fn locate(bundle: &BundleJson, base_dir: Option<&Path>) -> Result<HashMap<String, PathBuf>, Vec<Problem>> {
    let wanted: Vec<&Entry> = bundle.entries.iter().filter(|e| e.in_base).collect();
    let Some(base) = bundle.base.as_ref().filter(|_| !wanted.is_empty()) else {
        return Ok(HashMap::new());
    };
    let Some(dir) = base_dir else {
        return Err(wanted
            .iter()
            .map(|e| Problem::Missing {
                path: format!(
                    "{} (delta bundle: its base {} [bundle.json sha256 {}] is not on this machine; pass --base DIR)",
                    e.path, base.name, base.bundle_json_sha256
                ),
                expected: e.sha256,
            })
            .collect());
    };
    let base_json = std::fs::read(dir.join(BUNDLE_JSON)).ok();
    let base_bundle = match &base_json {
        Some(b) if Sha256::of(b) == base.bundle_json_sha256 => BundleJson::parse(b).ok(),
        _ => None,
    };
    let Some(bb) = base_bundle else {
        return Err(vec![Problem::Meta {
            detail: format!(
                "{} is not the base bundle {} (bundle.json sha256 {})",
                dir.display(),
                base.name,
                base.bundle_json_sha256
            ),
        }]);
    };
    find_in(&wanted, &bb, dir, &base.name)
}

/// Each wanted entry's file in the base at `dir`, holding the same digest and size; the
/// entries it does not hold otherwise.
fn find_in(
    wanted: &[&Entry],
    bb: &BundleJson,
    dir: &Path,
    base_name: &str,
) -> Result<HashMap<String, PathBuf>, Vec<Problem>> {
    let by_digest: HashMap<Sha256, &Entry> = bb
        .entries
        .iter()
        .filter(|b| !b.in_base)
        .map(|b| (b.sha256, b))
        .collect();
    let mut found = HashMap::new();
    let mut problems = Vec::new();
    for e in wanted {
        let file = by_digest.get(&e.sha256).map(|b| dir.join(&b.path));
        match file {
            Some(f) if crate::digest::hash_file(&f).is_ok_and(|(h, n)| h == e.sha256 && n == e.size) => {
                found.insert(e.path.clone(), f);
            }
            _ => problems.push(Problem::Missing {
                path: format!("{} (expected in base bundle {base_name} at {})", e.path, dir.display()),
                expected: e.sha256,
            }),
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

/// Verifies a bundle; for a delta bundle, also the base content it relies on (`base_dir`,
/// else looked up under the node store).
pub fn verify_with_base(path: &Path, base_dir: Option<&Path>) -> Result<Report, ArchiveError> {
    let mut report = verify(path)?;
    if let Some(b) = &report.bundle {
        if let Some(base) = &b.base {
            let found = base_dir.map(Path::to_path_buf).or_else(|| {
                super::store::find(&crate::host::Host::new(Path::new("/"), true), &base.bundle_json_sha256)
            });
            let extra = check_base(b, found.as_deref());
            report.problems.extend(extra);
        }
    }
    Ok(report)
}
