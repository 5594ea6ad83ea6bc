//! The images a cluster needs: kubeadm's set for one Kubernetes patch, and the add-ons'.
//!
//! kubeadm bumps the pause, etcd and coredns tags inside a minor (`SupportedEtcdVersion` and
//! friends in `cmd/kubeadm/app/constants`), so the table is per patch range. It matches
//! `kubeadm config images list --kubernetes-version vX.Y.Z`.

use crate::image_ref::ImageRef;
use crate::manifest::Manifest;
use crate::version::Version;

/// (minor, first patch, last patch, coredns, etcd, pause)
const KUBEADM_IMAGES: &[(u32, u32, u32, &str, &str, &str)] = &[
    (31, 0, 0, "v1.11.1", "3.5.15-0", "3.10"),
    (31, 1, 13, "v1.11.3", "3.5.15-0", "3.10"),
    (31, 14, 99, "v1.11.3", "3.5.24-0", "3.10"),
    (32, 0, 9, "v1.11.3", "3.5.16-0", "3.10"),
    (32, 10, 99, "v1.11.3", "3.5.24-0", "3.10"),
    (33, 0, 5, "v1.12.0", "3.5.21-0", "3.10"),
    (33, 6, 99, "v1.12.0", "3.5.24-0", "3.10"),
    (34, 0, 1, "v1.12.1", "3.6.4-0", "3.10.1"),
    (34, 2, 99, "v1.12.1", "3.6.5-0", "3.10.1"),
    (35, 0, 99, "v1.13.1", "3.6.6-0", "3.10.1"),
];

/// Where each image of the set comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageSource {
    Kubeadm,
    Flannel,
    MetricsServer,
    Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CatalogImage {
    #[serde(rename = "ref")]
    pub reference: ImageRef,
    pub source: ImageSource,
}

/// kubeadm's coredns, etcd and pause tags for a Kubernetes version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeadmTags {
    pub coredns: String,
    pub etcd: String,
    pub pause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kbundle does not know kubeadm's image tags for Kubernetes {version} (known: v1.31.0 to v1.35.x); set pause, etcd and coredns under [images] in the manifest (`kubeadm config images list --kubernetes-version {version}` prints them)")]
pub struct UnknownKubernetes {
    pub version: String,
}

pub fn kubeadm_tags(k8s: Version) -> Option<KubeadmTags> {
    if k8s.major != 1 {
        return None;
    }
    KUBEADM_IMAGES
        .iter()
        .find(|(minor, lo, hi, ..)| *minor == k8s.minor && (*lo..=*hi).contains(&k8s.patch))
        .map(|(_, _, _, c, e, p)| KubeadmTags {
            coredns: c.to_string(),
            etcd: e.to_string(),
            pause: p.to_string(),
        })
}

fn image(s: String, source: ImageSource) -> CatalogImage {
    // Every string here is built from validated versions and tags (the manifest's overrides
    // are checked with the reference grammar's tag rule), so it always parses; the panic
    // only guards against a catalog typo.
    let reference = s.parse().unwrap_or_else(|e| panic!("catalog image {s}: {e}"));
    CatalogImage { reference, source }
}

/// kubeadm's images for one Kubernetes version, with manifest overrides applied.
pub fn kubeadm_images(
    k8s: Version,
    pause: Option<&str>,
    etcd: Option<&str>,
    coredns: Option<&str>,
) -> Result<Vec<CatalogImage>, UnknownKubernetes> {
    let tags = tags_with(k8s, pause, etcd, coredns)?;
    let v = k8s.with_v();
    let own = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ];
    let mut refs: Vec<String> = own.iter().map(|n| format!("registry.k8s.io/{n}:{v}")).collect();
    refs.push(format!("registry.k8s.io/pause:{}", tags.pause));
    refs.push(format!("registry.k8s.io/etcd:{}", tags.etcd));
    refs.push(format!("registry.k8s.io/coredns/coredns:{}", tags.coredns));
    Ok(refs.into_iter().map(|r| image(r, ImageSource::Kubeadm)).collect())
}

/// kubeadm's tags for `k8s`, each replaced by an override where one is given; every tag
/// must come from one or the other.
fn tags_with(
    k8s: Version,
    pause: Option<&str>,
    etcd: Option<&str>,
    coredns: Option<&str>,
) -> Result<KubeadmTags, UnknownKubernetes> {
    let known = kubeadm_tags(k8s);
    let pick = |o: Option<&str>, f: fn(&KubeadmTags) -> &String| match (o, &known) {
        (Some(v), _) => Ok(v.to_string()),
        (None, Some(k)) => Ok(f(k).clone()),
        (None, None) => Err(UnknownKubernetes { version: k8s.with_v() }),
    };
    Ok(KubeadmTags {
        coredns: pick(coredns, |k| &k.coredns)?,
        etcd: pick(etcd, |k| &k.etcd)?,
        pause: pick(pause, |k| &k.pause)?,
    })
}

/// flannel's two images for a flannel release, as the catalog expects them. Known wrong for
/// some releases (docs/upstream-facts.md, "Add-on manifests and their images"): builds take
/// the images from the release's kube-flannel.yml and only warn when this table disagrees.
pub fn flannel_images(flannel: Version) -> Vec<CatalogImage> {
    let (registry, cni_tag) = if flannel < Version::new(0, 27, 0) {
        ("docker.io/flannel", "v1.5.1-flannel2")
    } else if flannel < Version::new(0, 28, 0) {
        ("ghcr.io/flannel-io", "v1.7.1-flannel1")
    } else if flannel < Version::new(0, 28, 9) {
        ("ghcr.io/flannel-io", "v1.9.1-flannel1")
    } else {
        ("ghcr.io/flannel-io", "v1.9.1-flannel3")
    };
    vec![
        image(format!("{registry}/flannel:{}", flannel.with_v()), ImageSource::Flannel),
        image(format!("{registry}/flannel-cni-plugin:{cni_tag}"), ImageSource::Flannel),
    ]
}

impl ImageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::Kubeadm => "kubeadm",
            ImageSource::Flannel => "flannel",
            ImageSource::MetricsServer => "metrics-server",
            ImageSource::Extra => "extra",
        }
    }

    /// Images that come from an add-on manifest: the catalog only expects them; a build
    /// takes them from the locked manifest file (see `crate::addons::images`).
    pub fn is_addon(self) -> bool {
        matches!(self, ImageSource::Flannel | ImageSource::MetricsServer)
    }
}

/// The add-on images the catalog expects for this manifest: what the release manifests of
/// these versions referenced when the table was written. A cross-check only: builds bundle
/// the images the downloaded manifests name.
pub fn addon_images(m: &Manifest) -> Vec<CatalogImage> {
    let mut out = Vec::new();
    if let Some(f) = m.addons.flannel {
        out.extend(flannel_images(f));
    }
    if let Some(ms) = m.addons.metrics_server {
        out.push(image(
            format!("registry.k8s.io/metrics-server/metrics-server:{}", ms.with_v()),
            ImageSource::MetricsServer,
        ));
    }
    out
}

/// kubeadm's images (with the manifest's overrides) and the manifest's extra images: the
/// images of a bundle that do not come from an add-on manifest.
pub fn base_images(m: &Manifest) -> Result<Vec<CatalogImage>, UnknownKubernetes> {
    let mut out = kubeadm_images(
        m.kubernetes,
        m.images.pause.as_deref(),
        m.images.etcd.as_deref(),
        m.images.coredns.as_deref(),
    )?;
    out.extend(m.images.extra.iter().map(|r| CatalogImage {
        reference: r.clone(),
        source: ImageSource::Extra,
    }));
    Ok(out)
}

/// Every image a bundle of this manifest carries as far as the catalog knows (add-on
/// images as [`addon_images`] expects them), sorted by reference, without duplicates.
pub fn manifest_images(m: &Manifest) -> Result<Vec<CatalogImage>, UnknownKubernetes> {
    let mut out = base_images(m)?;
    out.extend(addon_images(m));
    out.sort_by_key(|a| a.reference.to_string());
    out.dedup_by(|a, b| a.reference == b.reference);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &str) -> Vec<String> {
        kubeadm_images(v.parse().unwrap(), None, None, None)
            .unwrap()
            .into_iter()
            .map(|i| i.reference.to_string())
            .collect()
    }

    #[test]
    fn v1_34_3() {
        let r = refs("v1.34.3");
        assert!(r.contains(&"registry.k8s.io/pause:3.10.1".to_string()));
        assert!(r.contains(&"registry.k8s.io/etcd:3.6.5-0".to_string()));
        assert!(r.contains(&"registry.k8s.io/coredns/coredns:v1.12.1".to_string()));
        assert!(r.contains(&"registry.k8s.io/kube-apiserver:v1.34.3".to_string()));
    }

    #[test]
    fn tags_change_within_a_minor() {
        assert!(refs("v1.33.5").contains(&"registry.k8s.io/etcd:3.5.21-0".to_string()));
        assert!(refs("v1.33.7").contains(&"registry.k8s.io/etcd:3.5.24-0".to_string()));
        assert!(refs("v1.34.1").contains(&"registry.k8s.io/etcd:3.6.4-0".to_string()));
        assert!(refs("v1.32.11").contains(&"registry.k8s.io/etcd:3.5.24-0".to_string()));
    }

    #[test]
    fn unknown_minor_needs_overrides() {
        let v = "v1.40.0".parse().unwrap();
        assert!(kubeadm_images(v, None, None, None).is_err());
        assert!(kubeadm_images(v, Some("3.11"), Some("3.7.0-0"), Some("v1.15.0")).is_ok());
    }
}
