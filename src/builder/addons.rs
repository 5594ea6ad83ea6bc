//! Add-on images from the add-on manifests themselves: kube-flannel.yml and components.yaml
//! are ordinary bundle files (fetched and verified into the cache like any other), and the
//! images their workloads name are the images the bundle carries for them. The catalog's
//! table is only a cross-check: where it disagrees, the build warns naming both references
//! and goes on with the manifest's (docs/upstream-facts.md, "Add-on manifests and their
//! images").

use super::{BuildError, Engines, Scope};
use crate::catalog::images::{addon_images, CatalogImage, ImageSource};
use crate::catalog::{Component, FileArtifact};
use crate::fetch::{Expected, Fetched};
use crate::image_ref::ImageRef;
use crate::lock::Lock;
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::resolve;

/// The image source of an add-on manifest file, `None` for other files.
fn source_of(f: &FileArtifact) -> Option<ImageSource> {
    match f.component {
        Component::Flannel => Some(ImageSource::Flannel),
        Component::MetricsServer => Some(ImageSource::MetricsServer),
        _ => None,
    }
}

/// The scope's images with the add-on images replaced by those the add-on manifests of
/// `fetched` (one per file of the scope, in order, as a fresh lock fetched them) name.
pub(super) fn from_fetched(
    progress: &Progress,
    m: &Manifest,
    sc: &Scope,
    fetched: &[Fetched],
) -> Result<Vec<CatalogImage>, BuildError> {
    let pairs: Vec<(&FileArtifact, &Fetched)> = sc
        .files
        .iter()
        .zip(fetched)
        .filter(|(f, _)| source_of(f).is_some())
        .collect();
    derive(progress, m, sc, &pairs)
}

/// Like [`from_fetched`], with the add-on manifests fetched at their locked digests (from
/// the cache when it has them; a download that does not match the lock is refused).
pub(super) fn from_locked(
    e: &Engines,
    m: &Manifest,
    sc: &Scope,
    lock: &Lock,
    jobs: usize,
) -> Result<Vec<CatalogImage>, BuildError> {
    let files: Vec<FileArtifact> = sc.files.iter().filter(|f| source_of(f).is_some()).cloned().collect();
    let index = lock.index();
    let expected: Vec<Expected> = files
        .iter()
        .map(|f| index.file(&f.path))
        .map(|l| Expected::new(l.map(|l| l.sha256), l.map(|l| l.size)))
        .collect();
    let fetch = resolve::fetch_all(&e.files, &e.cache, &files, &expected, jobs);
    let fetched = e.rt.block_on(fetch)?;
    let pairs: Vec<(&FileArtifact, &Fetched)> = files.iter().zip(&fetched).collect();
    derive(&e.progress, m, sc, &pairs)
}

/// Every non-add-on image of the scope plus the images each add-on manifest names, sorted
/// by reference, each once; warns where the catalog expected other add-on images.
fn derive(
    progress: &Progress,
    m: &Manifest,
    sc: &Scope,
    addons: &[(&FileArtifact, &Fetched)],
) -> Result<Vec<CatalogImage>, BuildError> {
    let mut out: Vec<CatalogImage> = sc.images.iter().filter(|i| !i.source.is_addon()).cloned().collect();
    let catalog = addon_images(m);
    for (f, r) in addons {
        let Some(source) = source_of(f) else { continue };
        let named = read_images(f, r)?;
        let expected: Vec<&ImageRef> = catalog
            .iter()
            .filter(|i| i.source == source)
            .map(|i| &i.reference)
            .collect();
        for w in disagreements(&format!("{} {}", f.component, f.version), &f.name, &expected, &named) {
            progress.warn(&w);
        }
        out.extend(named.into_iter().map(|reference| CatalogImage { reference, source }));
    }
    out.sort_by_key(|i| i.reference.to_string());
    out.dedup_by(|a, b| a.reference == b.reference);
    Ok(out)
}

/// The images the workloads of one fetched add-on manifest name.
fn read_images(f: &FileArtifact, r: &Fetched) -> Result<Vec<ImageRef>, BuildError> {
    let text = std::fs::read_to_string(&r.path).map_err(|source| BuildError::AddonRead {
        file: f.name.clone(),
        path: r.path.clone(),
        source,
    })?;
    crate::addons::images::workload_images(&text).map_err(|source| BuildError::AddonImages {
        file: f.name.clone(),
        url: f.url.clone(),
        source,
    })
}

/// The last component of an image's repository (`flannel-cni-plugin`): what pairs an
/// expected image with the one a manifest names instead.
fn short_name(r: &ImageRef) -> &str {
    r.repository.rsplit('/').next().unwrap_or(&r.repository)
}

/// One warning per difference between the catalog's `expected` images and the ones the
/// manifest file `file` of `addon` (`flannel 0.27.3`) `named`; both references are named
/// where one stands for the other.
pub(super) fn disagreements(addon: &str, file: &str, expected: &[&ImageRef], named: &[ImageRef]) -> Vec<String> {
    let missing: Vec<&ImageRef> = expected.iter().copied().filter(|e| !named.contains(e)).collect();
    let mut unmatched: Vec<&ImageRef> = named.iter().filter(|n| !expected.contains(n)).collect();
    let mut out = Vec::new();
    for e in missing {
        let pair = unmatched.iter().position(|n| short_name(n) == short_name(e));
        match pair.map(|i| unmatched.remove(i)) {
            Some(n) => out.push(format!(
                "{addon}: {file} names image {n} where kbundle's catalog expects {e}; bundling {n}, as the manifest says"
            )),
            None => out.push(format!(
                "{addon}: kbundle's catalog expects image {e}, which {file} does not name; not bundling it"
            )),
        }
    }
    for n in unmatched {
        out.push(format!(
            "{addon}: {file} names image {n}, which kbundle's catalog does not list; bundling it, as the manifest says"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    #[test]
    fn agreement_gives_no_warning() {
        let e = [
            r("ghcr.io/flannel-io/flannel:v0.27.3"),
            r("ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1"),
        ];
        let named = vec![e[1].clone(), e[0].clone()];
        assert!(disagreements("flannel 0.27.3", "kube-flannel.yml", &[&e[0], &e[1]], &named).is_empty());
    }

    #[test]
    fn a_replaced_image_names_both_refs_and_extra_or_missing_ones_are_named_alone() {
        let cat_cni = r("docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2");
        let cat_fl = r("docker.io/flannel/flannel:v0.26.4");
        let gone = r("docker.io/flannel/helper:v1");
        let named = vec![
            r("ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1"),
            r("ghcr.io/flannel-io/flannel:v0.26.4"),
            r("ghcr.io/flannel-io/extra:v2"),
        ];
        let w = disagreements(
            "flannel 0.26.4",
            "kube-flannel.yml",
            &[&cat_cni, &cat_fl, &gone],
            &named,
        );
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(
            w[0].contains(&cat_cni.to_string()) && w[0].contains(&named[0].to_string()),
            "{}",
            w[0]
        );
        assert!(
            w[1].contains(&cat_fl.to_string()) && w[1].contains(&named[1].to_string()),
            "{}",
            w[1]
        );
        assert!(
            w[2].contains(&gone.to_string()) && w[2].contains("does not name"),
            "{}",
            w[2]
        );
        assert!(
            w[3].contains(&named[2].to_string()) && w[3].contains("does not list"),
            "{}",
            w[3]
        );
        assert!(w.iter().all(|l| l.starts_with("flannel 0.26.4: ")));
    }
}
