//! What goes into bundle.json: entries of files, hops, components, delta marks.

use super::{BuildError, Scope};
use crate::bundle::fields::FieldError;
use crate::bundle::meta::{BundleJson, Entry, EntryKind, Hop, BUNDLE_SCHEMA, INSTALLER, LOCKFILE};
use crate::bundle::pack::Source;
use crate::bundle::{meta_entry, Contents};
use crate::catalog::{self, Component, FileArtifact};
use crate::digest::Sha256;
use crate::fetch::Fetched;
use crate::images::LockedImage;
use crate::lock::Lock;
use crate::manifest::Manifest;
use crate::version::Version;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Everything fetched for one bundle: files in the order of the scope, locked images, and
/// every image blob by digest.
pub(super) struct Gathered {
    pub files: Vec<Fetched>,
    pub images: Vec<LockedImage>,
    pub blobs: BTreeMap<Sha256, (u64, PathBuf)>,
    /// Verified cosign signatures, laid out beside the images.
    pub signatures: Vec<crate::images::pull::SignatureArtifact>,
}

/// Every entry of the bundle, with where its bytes come from.
pub(super) fn assemble(
    m: &Manifest,
    sc: &Scope,
    lock: &Lock,
    g: &Gathered,
    installer: &Path,
    base: Option<&Path>,
) -> Result<Contents, BuildError> {
    let mut contents = Contents {
        bundle: bundle_json(m, sc, &g.images).map_err(BuildError::Field)?,
        sources: Vec::new(),
    };
    for (e, s) in crate::images::layout::entries(&g.images, &g.signatures, &g.blobs) {
        contents.push(e, s);
    }
    for (a, r) in sc.files.iter().zip(&g.files) {
        contents.push(file_entry(a, r.sha256, r.size), Source::File(r.path.clone()));
    }
    let (entry, source) = installer_entry(installer)?;
    contents.push(entry, source);
    // The bundle carries the lock of exactly what it holds.
    let lock_bytes = lock_of(lock, sc).render().into_bytes();
    contents.push(
        meta_entry(LOCKFILE, EntryKind::Meta, &lock_bytes),
        Source::Bytes(lock_bytes),
    );
    if let Some(base) = base {
        mark_in_base(&mut contents, base)?;
    }
    // Last, so it lists everything else; bundle.json then lists it like any other file.
    let sbom = crate::sbom::render(&contents.bundle, crate::bundle::pack::source_date_epoch());
    contents.push(
        meta_entry(crate::sbom::SBOM, EntryKind::Meta, &sbom),
        Source::Bytes(sbom),
    );
    Ok(contents)
}

/// The installer's entry: this program (or `--installer`), hashed now.
fn installer_entry(installer: &Path) -> Result<(Entry, Source), BuildError> {
    let (digest, size) = crate::digest::hash_file(installer).map_err(|source| BuildError::Installer {
        path: installer.to_path_buf(),
        source,
    })?;
    let entry = Entry {
        executable: true,
        ..meta_entry(INSTALLER, EntryKind::Installer, &[])
    };
    Ok((entry.with_content(digest, size), Source::File(installer.to_path_buf())))
}

/// The part of `lock` that names the files and images of `sc`.
fn lock_of(lock: &Lock, sc: &Scope) -> Lock {
    let paths: HashSet<&str> = sc.files.iter().map(|f| f.path.as_str()).collect();
    let refs: HashSet<String> = sc.images.iter().map(|i| i.reference.to_string()).collect();
    let mut lock = lock.clone();
    lock.files.retain(|l| paths.contains(l.path.as_str()));
    lock.images.retain(|l| refs.contains(&l.reference));
    lock
}

impl Entry {
    fn with_content(mut self, sha256: Sha256, size: u64) -> Entry {
        self.sha256 = sha256;
        self.size = size;
        self
    }
}

fn file_entry(a: &FileArtifact, sha256: Sha256, size: u64) -> Entry {
    Entry {
        path: a.path.clone(),
        size,
        sha256,
        kind: EntryKind::File,
        executable: a.executable,
        component: Some(a.component.to_string()),
        version: Some(a.version.to_string()),
        platform: a.platform.clone(),
        url: Some(a.url.clone()),
        in_base: false,
    }
}

/// Delta bundles: every file or blob whose digest the (verified) base bundle already holds
/// is listed but not packed.
fn mark_in_base(contents: &mut Contents, base: &Path) -> Result<(), BuildError> {
    use crate::bundle::verified::{check_source, SourceError};
    // The base is this build's own input (not a node), so no signature is required of it.
    let checked = check_source(base, &crate::trust::Policy::no_keys()).map_err(|e| match e {
        SourceError::Unverified { problems, .. } => BuildError::BaseInvalid {
            path: base.to_path_buf(),
            problems,
        },
        source => BuildError::BaseUnreadable {
            path: base.to_path_buf(),
            source: Box::new(source),
        },
    })?;
    let b = checked.json();
    let have: HashSet<Sha256> = b.entries.iter().filter(|e| !e.in_base).map(|e| e.sha256).collect();
    for e in contents.bundle.entries.iter_mut() {
        if matches!(e.kind, EntryKind::File | EntryKind::Blob) && have.contains(&e.sha256) {
            e.in_base = true;
        }
    }
    contents.bundle.base = Some(crate::bundle::meta::BaseRef {
        name: b.name.clone(),
        bundle_json_sha256: *checked.id(),
    });
    Ok(())
}

/// One hop: its own kubeadm/kubelet/kubectl and kubeadm images; the last hop (the
/// manifest's version) also has the runtime, add-ons and every other image.
fn hop(m: &Manifest, sc: &Scope, images: &[LockedImage], h: Version) -> Hop {
    let own = hop_images(m, sc, h);
    Hop {
        kubernetes: h.into(),
        files: hop_files(m, sc, h),
        images: images
            .iter()
            .filter(|i| own.contains(&i.reference))
            .map(|i| i.reference.clone())
            .collect(),
    }
}

/// The image references hop `h` of the scope brings: the last hop (the manifest's own
/// version) kubeadm's and the extra images from the catalog plus the add-on images as the
/// scope has them (read from the add-on manifests at build time); an intermediate hop
/// kubeadm's images for its version. Shared by `build` (bundle.json) and `list`.
pub fn hop_images(m: &Manifest, sc: &Scope, h: Version) -> HashSet<String> {
    if h == m.kubernetes {
        let base = catalog::images::base_images(m).unwrap_or_default();
        let addons = sc.images.iter().filter(|i| i.source.is_addon()).cloned();
        base.into_iter()
            .chain(addons)
            .map(|i| i.reference.to_string())
            .collect()
    } else {
        catalog::images::kubeadm_images(h, None, None, None)
            .map(|v| v.into_iter().map(|i| i.reference.to_string()).collect())
            .unwrap_or_default()
    }
}

/// The bundle paths of the files hop `h` brings: its kubeadm, kubelet and kubectl, its etcd
/// tools (catalog::etcd_tools), and on the last hop everything else.
pub fn hop_files(m: &Manifest, sc: &Scope, h: Version) -> Vec<String> {
    let last = h == m.kubernetes;
    sc.files
        .iter()
        .filter(|f| match f.component {
            Component::Kubeadm | Component::Kubelet | Component::Kubectl => f.version == h,
            Component::Etcd => {
                let tools = if last {
                    Some(m.components.etcd)
                } else {
                    catalog::etcd_tools::tools_for(h)
                };
                Some(f.version) == tools
            }
            _ => last,
        })
        .map(|f| f.path.clone())
        .collect()
}

pub(super) fn bundle_json(m: &Manifest, sc: &Scope, images: &[LockedImage]) -> Result<BundleJson, FieldError> {
    let c = &m.components;
    let mut components = BTreeMap::new();
    let mut pairs = vec![
        ("kubernetes", m.kubernetes),
        ("containerd", c.containerd),
        ("runc", c.runc),
        ("cni-plugins", c.cni_plugins),
        ("crictl", c.crictl),
        ("etcd", c.etcd),
    ];
    pairs.extend(m.addons.flannel.map(|v| ("flannel", v)));
    pairs.extend(m.addons.metrics_server.map(|v| ("metrics-server", v)));
    for (k, v) in pairs {
        components.insert(k.parse()?, v.to_string().parse()?);
    }
    Ok(BundleJson {
        schema: BUNDLE_SCHEMA,
        name: m.name.parse()?,
        kbundle_version: env!("CARGO_PKG_VERSION").parse()?,
        kubernetes: m.kubernetes.into(),
        platforms: m
            .arches
            .iter()
            .map(|a| a.platform().parse())
            .collect::<Result<_, _>>()?,
        components,
        hops: sc.hops.iter().map(|&h| hop(m, sc, images, h)).collect(),
        upgrade_from: sc.upgrade_from.map(Into::into),
        base: None,
        images: images.to_vec(),
        entries: Vec::new(),
    })
}
