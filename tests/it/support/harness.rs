#![allow(dead_code)]
//! One "upstream" for builder tests: the loopback file mirror (dl.k8s.io, github.com) and a
//! real registry holding every image a manifest needs, plus the `--mirror` flags that point
//! kbundle at both.

use super::images::push_k8s_images;
use super::mirror::Mirror;
use super::registry::Registry;
use super::upstream::{self, UpstreamSpec};
use std::path::Path;

pub struct Upstream {
    pub mirror: Mirror,
    pub registry: Registry,
    /// (upstream reference, digest pushed)
    pub images: Vec<(String, String)>,
}

/// Every image reference a bundle of `manifest` holds, from the library's own catalog.
pub fn manifest_image_refs(manifest: &Path) -> Vec<String> {
    let m = kbundle::manifest::Manifest::load(manifest).expect("manifest parses");
    kbundle::catalog::images::manifest_images(&m)
        .expect("known Kubernetes version")
        .into_iter()
        .map(|i| i.reference.to_string())
        .collect()
}

impl Upstream {
    /// Serves `root` (an upstream tree) and a registry with the images of `manifest`.
    pub fn start_at(root: &Path, manifest: &Path) -> Upstream {
        Self::start_with(root, manifest, Registry::start())
    }

    /// Like [`Upstream::start_at`], with a registry of the caller's (e.g. one with auth).
    pub fn start_with(root: &Path, manifest: &Path, registry: Registry) -> Upstream {
        let mirror = Mirror::start(root);
        let refs = manifest_image_refs(manifest);
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let k8s = kbundle::manifest::Manifest::load(manifest).unwrap().kubernetes.with_v();
        let images = push_k8s_images(&registry, &k8s, &refs);
        Upstream {
            mirror,
            registry,
            images,
        }
    }

    pub fn start(spec: &UpstreamSpec, manifest: &Path) -> Upstream {
        Self::start_at(&upstream::shared_tree(spec), manifest)
    }

    /// `--mirror` flags for files and for every registry the images come from.
    pub fn mirror_args(&self) -> Vec<String> {
        self.mirror_args_via(&self.mirror.url(), &self.registry.url())
    }

    /// Like [`Upstream::mirror_args`], with files fetched from `files_url` and images from
    /// `registry_url` (e.g. a [`super::drip::DripProxy`] in front of either).
    pub fn mirror_args_via(&self, files_url: &str, registry_url: &str) -> Vec<String> {
        let mut v = upstream::mirror_args(files_url);
        let mut hosts: Vec<String> = self
            .images
            .iter()
            .filter_map(|(r, _)| r.split('/').next().map(str::to_string))
            .collect();
        hosts.sort();
        hosts.dedup();
        for h in hosts {
            v.push("--mirror".into());
            v.push(format!("{h}={registry_url}/{h}"));
        }
        v
    }
}
