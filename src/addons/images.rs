//! The container images an add-on manifest's workloads reference, read from the parsed
//! Kubernetes objects (every document; `List` items too), so a bundle carries exactly what
//! the manifest will make the nodes run.
//!
//! Pod specs are found where the API puts them: `Pod.spec`; `spec.template.spec` of
//! Deployment, DaemonSet, StatefulSet, ReplicaSet, ReplicationController and Job;
//! `template.spec` of a PodTemplate; `spec.jobTemplate.spec.template.spec` of a CronJob. In
//! each, `containers`, `initContainers` and `ephemeralContainers` are read. Other kinds
//! (ConfigMaps, CRDs, RBAC, ...) are not workloads and are ignored, whatever text they hold.
//! Where the API puts pod specs and containers: docs/upstream-facts.md, "Add-on manifests
//! and their images".

use super::scalar;
use crate::image_ref::{ImageRef, ImageRefError};
use std::str::FromStr;
use yaml_edit::{Mapping, YamlFile, YamlNode};

/// Kinds whose pod template sits at `spec.template.spec`.
const TEMPLATED: &[&str] = &[
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
];

/// The container lists of a pod spec.
const CONTAINER_LISTS: &[&str] = &["initContainers", "containers", "ephemeralContainers"];

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("not YAML kbundle can read: {0}")]
    Parse(#[source] yaml_edit::YamlError),
    #[error("{kind} {name}, container {container}: {source}")]
    BadRef {
        kind: String,
        name: String,
        container: String,
        #[source]
        source: ImageRefError,
    },
}

/// One workload object being read: its kind and name, for error messages.
struct Workload {
    kind: String,
    name: String,
}

/// Every image the workloads of `text` (one or more YAML documents) reference, normalised
/// (`docker.io/…` for Docker Hub names), each once, sorted. Tags and digests are kept as
/// written. A container without an `image` is skipped (the API allows it in templates).
pub fn workload_images(text: &str) -> Result<Vec<ImageRef>, ImagesError> {
    let file = YamlFile::from_str(text).map_err(ImagesError::Parse)?;
    let mut out = Vec::new();
    for doc in file.documents() {
        if let Some(root) = doc.as_mapping() {
            object(&root, &mut out)?;
        }
    }
    out.sort_by_key(|r| r.to_string());
    out.dedup();
    Ok(out)
}

/// The images of one object (recursing into a `List`'s items).
fn object(obj: &Mapping, out: &mut Vec<ImageRef>) -> Result<(), ImagesError> {
    let kind = scalar(obj, "kind").unwrap_or_default();
    let name = obj.get_mapping("metadata").and_then(|m| scalar(&m, "name"));
    let w = Workload {
        name: name.unwrap_or_else(|| "(unnamed)".into()),
        kind,
    };
    let spec = obj.get_mapping("spec");
    let pod = match w.kind.as_str() {
        "List" => {
            let items = obj.get_sequence("items");
            for item in items.iter().flat_map(|s| s.values()) {
                if let Some(m) = item.as_mapping() {
                    object(m, out)?;
                }
            }
            return Ok(());
        }
        "Pod" => spec,
        "PodTemplate" => path(obj, &["template", "spec"]),
        "CronJob" => spec.and_then(|s| path(&s, &["jobTemplate", "spec", "template", "spec"])),
        k if TEMPLATED.contains(&k) => spec.and_then(|s| path(&s, &["template", "spec"])),
        _ => None,
    };
    match pod {
        Some(p) => pod_spec(&w, &p, out),
        None => Ok(()),
    }
}

/// The mapping reached from `m` through `keys`.
fn path(m: &Mapping, keys: &[&str]) -> Option<Mapping> {
    let mut at = m.clone();
    for k in keys {
        at = at.get_mapping(*k)?;
    }
    Some(at)
}

/// The images of every container list of one pod spec.
fn pod_spec(w: &Workload, pod: &Mapping, out: &mut Vec<ImageRef>) -> Result<(), ImagesError> {
    let lists = CONTAINER_LISTS.iter().filter_map(|k| pod.get_sequence(*k));
    for list in lists {
        let containers: Vec<YamlNode> = list.values().collect();
        for c in containers.iter().filter_map(YamlNode::as_mapping) {
            let Some(image) = scalar(c, "image").filter(|i| !i.trim().is_empty()) else {
                continue;
            };
            let reference = ImageRef::from_str(image.trim()).map_err(|source| ImagesError::BadRef {
                kind: w.kind.clone(),
                name: w.name.clone(),
                container: scalar(c, "name").unwrap_or_else(|| "(unnamed)".into()),
                source,
            })?;
            out.push(reference);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
