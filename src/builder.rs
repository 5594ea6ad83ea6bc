//! `kbundle build`: manifest → lock → verified downloads → one deterministic archive.

use crate::bundle::meta::{BundleJson, Entry, EntryKind, Hop, BUNDLE_SCHEMA, INSTALLER, LOCKFILE};
use crate::bundle::pack::{self, Compression, Source};
use crate::bundle::{meta_entry, Contents};
use crate::catalog::{self, Component, FileArtifact};
use crate::digest::Sha256;
use crate::fetch::{Cache, Fetcher, Mirrors, Retry};
use crate::images::auth::Credentials;
use crate::images::pull::Puller;
use crate::images::LockedImage;
use crate::lock::Lock;
use crate::manifest::{Manifest, MirrorRule};
use crate::progress::Progress;
use crate::resolve::{self, ResolveError};
use crate::version::Version;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error(transparent)]
    Cache(#[from] crate::fetch::CacheError),
    #[error(transparent)]
    Pack(#[from] pack::PackError),
    #[error(transparent)]
    Images(#[from] catalog::images::UnknownKubernetes),
    #[error("--locked: no lockfile at {path}; run `kbundle lock {manifest}` first")]
    NoLock { path: PathBuf, manifest: PathBuf },
    #[error("installer {path}: {source}")]
    Installer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("bundle layout: {0}")]
    Layout(String),
    #[error("upgrade bundle: {0}")]
    Upgrade(String),
    #[error("--base: {0}")]
    Base(String),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub cache_dir: PathBuf,
    pub mirrors: Vec<MirrorRule>,
    pub jobs: usize,
    pub quiet: bool,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub common: Options,
    pub out: PathBuf,
    pub compression: Compression,
    pub locked: bool,
    /// The executable shipped as the bundle's installer; default: this program.
    pub installer: Option<PathBuf>,
    /// Build an upgrade bundle from this cluster version (every minor hop to the target).
    pub upgrade_from: Option<Version>,
    /// Build a delta bundle that leaves out everything this earlier bundle holds.
    pub base: Option<PathBuf>,
    /// Files only: no container images (for sites that serve images from their own registry).
    pub skip_images: bool,
}

#[derive(Debug, Clone)]
pub struct Built {
    pub archive: PathBuf,
    pub sha256: Sha256,
    pub size: u64,
    pub bundle: BundleJson,
    pub downloaded: usize,
    pub lock_path: PathBuf,
    pub lock_written: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, BuildError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BuildError::Runtime)
}

fn fetcher(m: &Manifest, o: &Options) -> Result<Fetcher, BuildError> {
    Ok(Fetcher::new(
        Mirrors::new(&o.mirrors, &m.mirrors),
        Retry::default(),
        Progress::new(o.quiet),
    )?)
}

fn puller(m: &Manifest, o: &Options) -> Result<Puller, BuildError> {
    let creds = Credentials::load_default().map_err(|e| BuildError::Resolve(ResolveError::Image(e.into())))?;
    Ok(Puller::new(
        Mirrors::new(&o.mirrors, &m.mirrors),
        Retry::default(),
        Progress::new(o.quiet),
        creds,
    ))
}

/// What one bundle carries: its files, its images, and its hops in upgrade order.
#[derive(Debug, Clone)]
pub struct Scope {
    pub files: Vec<FileArtifact>,
    pub images: Vec<catalog::images::CatalogImage>,
    /// Kubernetes versions in order; an install bundle has one.
    pub hops: Vec<Version>,
    pub upgrade_from: Option<Version>,
}

/// Kubernetes versions pinned by the manifests beside `manifest` (e.g. `manifests/`), for
/// the intermediate hops of upgrade bundles. Unreadable files are skipped.
pub fn sibling_pins(manifest: &Path) -> Vec<Version> {
    let dir = manifest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut out: Vec<Version> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .filter_map(|p| Manifest::load(&p).ok().map(|m| m.kubernetes))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Files, images and hops of a bundle of `m`, optionally upgrading from `from`.
pub fn scope(m: &Manifest, from: Option<Version>) -> Result<Scope, BuildError> {
    let mut files = catalog::manifest_files(m);
    let mut images = catalog::images::manifest_images(m)?;
    let hops = match from {
        None => vec![m.kubernetes],
        Some(f) => {
            let mut pins = sibling_pins(&m.path);
            pins.extend_from_slice(catalog::KUBERNETES_PINS);
            crate::upgrade::plan::hop_chain(f, m.kubernetes, &pins).map_err(|e| BuildError::Upgrade(e.to_string()))?
        }
    };
    for &h in hops.iter().filter(|h| **h != m.kubernetes) {
        for &arch in &m.arches {
            files.extend(catalog::kubernetes_binaries(h, arch));
        }
        images.extend(catalog::images::kubeadm_images(h, None, None, None)?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    images.sort_by_key(|i| i.reference.to_string());
    images.dedup_by(|a, b| a.reference == b.reference);
    Ok(Scope {
        files,
        images,
        hops,
        upgrade_from: from,
    })
}

/// `kbundle lock`: resolve and write the lockfile beside the manifest.
pub fn lock(manifest: &Path, o: &Options, upgrade_from: Option<Version>) -> Result<(Lock, PathBuf), BuildError> {
    let m = Manifest::load(manifest)?;
    let Scope { files, images, .. } = scope(&m, upgrade_from)?;
    let cache = Cache::open(&o.cache_dir)?;
    let f = fetcher(&m, o)?;
    let p = puller(&m, o)?;
    let lock = runtime()?.block_on(resolve::lock(&f, &p, &cache, &m, &files, &images, o.jobs))?;
    let path = m.lock_path();
    lock.write(&path)?;
    Ok((lock, path))
}

/// `kbundle build`.
pub fn build(manifest: &Path, o: &BuildOptions) -> Result<Built, BuildError> {
    let m = Manifest::load(manifest)?;
    // Validate everything that needs no network before touching it.
    let mut sc = scope(&m, o.upgrade_from)?;
    if o.skip_images {
        sc.images.clear();
    }
    let (files, images) = (sc.files.clone(), sc.images.clone());
    resolve::pins_by_path(&m, &files)?;
    let installer = match &o.installer {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|source| BuildError::Installer {
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?,
    };
    if o.installer.is_none() && !m.arches.iter().any(|a| Some(*a) == crate::manifest::Arch::host()) {
        Progress::new(o.common.quiet).warn(&format!(
            "this kbundle runs on {}, but the bundle targets {}: pass --installer with a kbundle built for the target",
            std::env::consts::ARCH,
            m.arches.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let cache = Cache::open(&o.common.cache_dir)?;
    let f = fetcher(&m, &o.common)?;
    let p = puller(&m, &o.common)?;
    let lock_path = m.lock_path();
    let rt = runtime()?;

    let existing = if lock_path.exists() {
        Some(Lock::load(&lock_path)?)
    } else {
        None
    };
    let (lock, lock_written) = match existing {
        None if o.locked => {
            return Err(BuildError::NoLock {
                path: lock_path,
                manifest: manifest.to_path_buf(),
            })
        }
        Some(l) if o.locked => {
            let stale = resolve::stale_details(&l, &m, &files, &images)?;
            if !stale.is_empty() {
                return Err(ResolveError::Stale {
                    path: lock_path,
                    details: stale,
                }
                .into());
            }
            rt.block_on(resolve::check_upstream(
                &f,
                &cache,
                &l,
                &lock_path,
                &m,
                &files,
                o.common.jobs,
            ))?;
            (l, false)
        }
        Some(l) if resolve::stale_details(&l, &m, &files, &images)?.is_empty() => (l, false),
        _ => {
            let l = rt.block_on(resolve::lock(&f, &p, &cache, &m, &files, &images, o.common.jobs))?;
            l.write(&lock_path)?;
            (l, true)
        }
    };

    // Every file, verified against the lock (cache hits cost no network).
    let digests: Vec<Option<Sha256>> = files.iter().map(|a| lock.file(&a.path).map(|l| l.sha256)).collect();
    let sizes: Vec<Option<u64>> = files.iter().map(|a| lock.file(&a.path).map(|l| l.size)).collect();
    let fetched = rt.block_on(resolve::fetch_all(&f, &cache, &files, &digests, &sizes, o.common.jobs))?;
    // Images by their locked digests (`--locked` also checks that tags have not moved).
    let resolved = rt.block_on(resolve::resolve_images(
        &p,
        &cache,
        &m,
        &images,
        Some(&lock),
        o.locked,
        o.common.jobs,
    ))?;
    let (blobs, _) = rt.block_on(resolve::fetch_images(&p, &cache, &images, &resolved, o.common.jobs))?;
    drop(rt);
    let downloaded = f.downloads() + p.downloads();
    let locked_images: Vec<LockedImage> = resolved.into_iter().map(|r| r.locked).collect();

    let mut contents = Contents {
        bundle: bundle_json(&m, &sc, &locked_images).map_err(BuildError::Layout)?,
        sources: Vec::new(),
    };
    for (e, s) in crate::images::layout::entries(&locked_images, &blobs) {
        contents.push(e, s);
    }
    for (a, r) in files.iter().zip(&fetched) {
        contents.push(file_entry(a, r.sha256, r.size), Source::File(r.path.clone()));
    }
    let (inst_digest, inst_size) = crate::digest::hash_file(&installer).map_err(|source| BuildError::Installer {
        path: installer.clone(),
        source,
    })?;
    contents.push(
        Entry {
            executable: true,
            ..meta_entry(INSTALLER, EntryKind::Installer, &[])
        }
        .with_content(inst_digest, inst_size),
        Source::File(installer),
    );
    // The bundle carries the lock of exactly what it holds.
    let mut lock = lock;
    lock.files.retain(|l| files.iter().any(|f| f.path == l.path));
    lock.images
        .retain(|l| images.iter().any(|i| i.reference.to_string() == l.reference));
    let lock_bytes = lock.render().into_bytes();
    contents.push(
        meta_entry(LOCKFILE, EntryKind::Meta, &lock_bytes),
        Source::Bytes(lock_bytes),
    );
    if let Some(base) = &o.base {
        mark_in_base(&mut contents, base)?;
    }
    let (bundle, entries) = contents.finish().map_err(BuildError::Layout)?;

    let total: u64 = entries.iter().map(|e| e.size).sum();
    let progress = Progress::new(o.common.quiet);
    let bar = progress.bar(&m.name, Some(total));
    let (archive, sha256, size) = pack::write_archive(
        &o.out,
        &m.name,
        &entries,
        o.compression,
        pack::source_date_epoch(),
        |n| bar.inc(n),
    )?;
    bar.finish("packed", total);
    Ok(Built {
        archive,
        sha256,
        size,
        bundle,
        downloaded,
        lock_path,
        lock_written,
    })
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
    let report =
        crate::bundle::verify::verify(base).map_err(|e| BuildError::Base(format!("{}: {e}", base.display())))?;
    let Some(b) = report.bundle.filter(|_| report.problems.is_empty()) else {
        return Err(BuildError::Base(format!(
            "{} does not verify: {}",
            base.display(),
            report
                .problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )));
    };
    let bj = crate::bundle::read_bundle_json_bytes(base).map_err(BuildError::Base)?;
    let have: std::collections::HashSet<Sha256> = b.entries.iter().filter(|e| !e.in_base).map(|e| e.sha256).collect();
    for e in contents.bundle.entries.iter_mut() {
        if matches!(e.kind, EntryKind::File | EntryKind::Blob) && have.contains(&e.sha256) {
            e.in_base = true;
        }
    }
    contents.bundle.base = Some(crate::bundle::meta::BaseRef {
        name: b.name.clone(),
        bundle_json_sha256: Sha256::of(&bj),
    });
    Ok(())
}

/// One hop: its own kubeadm/kubelet/kubectl and kubeadm images; the last hop (the
/// manifest's version) also has the runtime, add-ons and every other image.
fn hop(m: &Manifest, sc: &Scope, images: &[LockedImage], h: Version) -> Hop {
    let last = h == m.kubernetes;
    let own: Vec<String> = if last {
        catalog::images::manifest_images(m)
            .map(|v| v.into_iter().map(|i| i.reference.to_string()).collect())
            .unwrap_or_default()
    } else {
        catalog::images::kubeadm_images(h, None, None, None)
            .map(|v| v.into_iter().map(|i| i.reference.to_string()).collect())
            .unwrap_or_default()
    };
    Hop {
        kubernetes: h.into(),
        files: sc
            .files
            .iter()
            .filter(|f| {
                let k8s_bin = matches!(
                    f.component,
                    Component::Kubeadm | Component::Kubelet | Component::Kubectl
                );
                if k8s_bin {
                    f.version == h
                } else {
                    last
                }
            })
            .map(|f| f.path.clone())
            .collect(),
        images: images
            .iter()
            .filter(|i| own.contains(&i.reference))
            .map(|i| i.reference.clone())
            .collect(),
    }
}

fn bundle_json(m: &Manifest, sc: &Scope, images: &[LockedImage]) -> Result<BundleJson, String> {
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
