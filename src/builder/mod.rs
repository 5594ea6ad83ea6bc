//! `kbundle build`: manifest → lock → verified downloads → one deterministic archive.

mod addons;
mod contents;
pub use contents::{hop_files, hop_images};
mod kubeadm_check;
mod outdir;
mod settle;
pub mod sign;
mod signatures;

use crate::bundle::meta::BundleJson;
use crate::bundle::pack::{self, Compression, PackEntry, Source};
use crate::bundle::signature::TrustedComment;
use crate::catalog::{self, FileArtifact};
use crate::digest::Sha256;
use crate::fetch::{Cache, Expected, Fetcher, Limits, Mirrors, Retry};
use crate::images::auth::Credentials;
use crate::images::policy::LoadedPolicy;
use crate::images::pull::Puller;
use crate::lock::Lock;
use crate::manifest::{Manifest, MirrorRule};
use crate::progress::Progress;
use crate::resolve::{self, ResolveError};
use crate::version::Version;
use contents::Gathered;
use std::collections::HashSet;
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
    #[error(transparent)]
    SignaturePolicy(#[from] crate::images::policy::PolicyError),
    #[error("add-on manifest {file} ({path}): {source}")]
    AddonRead {
        file: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("add-on manifest {file} ({url}): cannot read its images: {source}")]
    AddonImages {
        file: String,
        url: String,
        #[source]
        source: crate::addons::images::ImagesError,
    },
    #[error("--locked: no lockfile at {path}; run `kbundle lock {manifest}` first")]
    NoLock { path: PathBuf, manifest: PathBuf },
    #[error("installer {path}: {source}")]
    Installer {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A `bundle.json` value the bundle's field types refuse (their reason names it).
    #[error("bundle.json: {0}")]
    Field(#[source] crate::bundle::fields::FieldError),
    /// Two entries for one path, or another contents rule `bundle::Contents` enforces.
    #[error("bundle layout: {0}")]
    Layout(#[source] crate::bundle::DuplicatePath),
    #[error(transparent)]
    EtcdTools(#[from] Box<catalog::etcd_tools::ToolsMismatch>),
    #[error("upgrade bundle: {0}")]
    Upgrade(#[source] crate::upgrade::plan::PlanError),
    #[error("upgrade bundle: {0}")]
    Hops(#[source] crate::upgrade::hop_choice::HopChoiceError),
    #[error("--base {path}: {source}")]
    BaseUnreadable {
        path: PathBuf,
        #[source]
        source: Box<crate::bundle::verified::SourceError>,
    },
    #[error("--base {path} does not verify: {}", problems.join("; "))]
    BaseInvalid { path: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Mirror(#[from] crate::fetch::mirror::RefusedMirror),
    #[error("--out {path} is a file, but --out must name a directory (it is created if missing): choose another path or move the file away")]
    OutNotDir { path: PathBuf },
    #[error("signing {what}: {source}")]
    Sign {
        what: String,
        #[source]
        source: crate::bundle::keys::KeyError,
    },
    #[error("--out {path}: cannot {what}: {source} ({hint})")]
    OutDir {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
}

/// Settings shared by `lock` and `build`.
#[derive(Debug, Clone)]
pub struct Options {
    pub cache_dir: PathBuf,
    pub mirrors: Vec<MirrorRule>,
    pub jobs: usize,
    pub quiet: bool,
    /// Attempts and backoff for transient failures.
    pub retry: Retry,
    /// Per-artifact deadline and minimum transfer rate.
    pub limits: Limits,
    /// Accept mirrors on link-local and cloud-metadata addresses.
    pub allow_private_mirror: bool,
    /// Where the lockfile is read and written; default: beside the manifest.
    pub lockfile: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_dir: Cache::default_root(),
            mirrors: Vec::new(),
            jobs: 4,
            quiet: false,
            retry: Retry::default(),
            limits: Limits::default(),
            allow_private_mirror: false,
            lockfile: None,
        }
    }
}

impl Options {
    /// `--lockfile`, else `MANIFEST.lock` beside the manifest.
    pub fn lock_path(&self, m: &Manifest) -> PathBuf {
        self.lockfile.clone().unwrap_or_else(|| m.lock_path())
    }
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
    /// `--via`: the patch to go through for an intermediate minor (default: the highest pin).
    pub via: Vec<Version>,
    /// Build a delta bundle that leaves out everything this earlier bundle holds.
    pub base: Option<PathBuf>,
    /// Files only: no container images (for sites that serve images from their own registry).
    pub skip_images: bool,
    /// Run the bundle's own kubeadm (for this host's arch) to cross-check kubeadm's image
    /// list; see `kubeadm_check` for why this is off by default.
    pub check_kubeadm_images: bool,
    /// `--sign`: the key to sign bundle.json and the archive with.
    pub sign: Option<sign::Signing>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            common: Options::default(),
            out: PathBuf::from("."),
            compression: Compression::Zstd,
            locked: false,
            installer: None,
            upgrade_from: None,
            via: Vec::new(),
            base: None,
            skip_images: false,
            check_kubeadm_images: false,
            sign: None,
        }
    }
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

/// What talks to upstream for one command: the cache, the file fetcher and the image
/// puller (both on the one download engine), a runtime.
struct Engines {
    cache: Cache,
    files: Fetcher,
    images: Puller,
    rt: tokio::runtime::Runtime,
    progress: Progress,
    /// The manifest's `[[image-signatures]]`, keys loaded.
    policies: Vec<LoadedPolicy>,
}

impl Engines {
    /// Checks the mirrors, opens (and sweeps) the cache, and sets up the fetcher and puller.
    fn start(m: &Manifest, o: &Options) -> Result<Engines, BuildError> {
        let policies = m.image_signatures.iter().map(|p| p.load()).collect::<Result<_, _>>()?;
        let mirrors = Mirrors::new(&o.mirrors, &m.mirrors);
        if !o.allow_private_mirror {
            mirrors.check_destinations()?;
        }
        let progress = Progress::new(o.quiet);
        let cache = Cache::open(&o.cache_dir)?;
        outdir::report(&progress, &o.cache_dir, cache.swept());
        let files = Fetcher::new(mirrors.clone(), o.retry, progress.clone())?.with_limits(o.limits);
        let creds = Credentials::load_default().map_err(|e| BuildError::Resolve(ResolveError::Image(e.into())))?;
        let images = Puller::new(mirrors, o.retry, progress.clone(), creds)?.with_limits(o.limits);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(BuildError::Runtime)?;
        Ok(Engines {
            cache,
            files,
            images,
            rt,
            progress,
            policies,
        })
    }

    fn downloads(&self) -> usize {
        self.files.downloads() + self.images.downloads()
    }
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

/// Files, images and hops of a bundle of `m`, optionally upgrading from `from`. The add-on
/// images are the catalog's expectation here; `lock` and `build` replace them with the
/// images the add-on manifests name, once those are fetched (see `addons`).
pub fn scope(m: &Manifest, from: Option<Version>) -> Result<Scope, BuildError> {
    scope_via(m, from, &[])
}

/// [`scope`], each intermediate minor through its `via` patch when one is given, else
/// through the highest patch pinned beside the manifest or in the catalog.
pub fn scope_via(m: &Manifest, from: Option<Version>, via: &[Version]) -> Result<Scope, BuildError> {
    use crate::upgrade::hop_choice::{choose_hops, HopChoiceError};
    catalog::etcd_tools::check_manifest(m)?;
    let mut files = catalog::manifest_files(m);
    let mut images = catalog::images::manifest_images(m)?;
    let hops = match from {
        None if !via.is_empty() => return Err(BuildError::Hops(HopChoiceError::ViaWithoutUpgrade)),
        None => vec![m.kubernetes],
        Some(f) => {
            let mut pins = sibling_pins(&m.path);
            pins.extend_from_slice(catalog::KUBERNETES_PINS);
            choose_hops(f, m.kubernetes, &pins, via).map_err(|e| match e {
                HopChoiceError::Chain(p) => BuildError::Upgrade(p),
                other => BuildError::Hops(other),
            })?
        }
    };
    for &h in hops.iter().filter(|h| **h != m.kubernetes) {
        for &arch in &m.arches {
            files.extend(catalog::kubernetes_binaries(h, arch));
            // Each hop's etcd tools, of its etcd server's minor (catalog::etcd_tools).
            files.extend(catalog::etcd_tools::tools_for(h).map(|v| catalog::etcd(v, arch)));
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

/// `kbundle lock`: resolve and write the lockfile (beside the manifest, or `--lockfile`).
pub fn lock(
    manifest: &Path,
    o: &Options,
    upgrade_from: Option<Version>,
    via: &[Version],
) -> Result<(Lock, PathBuf), BuildError> {
    let m = Manifest::load(manifest)?;
    let mut sc = scope_via(&m, upgrade_from, via)?;
    let e = Engines::start(&m, o)?;
    let lock = settle::fresh_lock(&e, &m, &mut sc, o.jobs, true)?;
    let path = o.lock_path(&m);
    lock.write(&path)?;
    Ok((lock, path))
}

/// `kbundle build`.
pub fn build(manifest: &Path, o: &BuildOptions) -> Result<Built, BuildError> {
    let m = Manifest::load(manifest)?;
    // Validate everything that needs no network before touching it.
    let mut sc = scope_via(&m, o.upgrade_from, &o.via)?;
    if o.skip_images {
        sc.images.clear();
    }
    resolve::pins_by_path(&m, &sc.files)?;
    let installer = installer(&m, o)?;
    let _out = outdir::claim(&o.out, &Progress::new(o.common.quiet))?;
    let e = Engines::start(&m, &o.common)?;
    let lock_path = o.common.lock_path(&m);
    let (lock, lock_written) = settle::settle_lock(&e, &m, &mut sc, o, &lock_path)?;
    let (bundle, (archive, sha256, size), comment) = gather_and_pack(&e, &m, &sc, &lock, &installer, o)?;
    match (&o.sign, comment) {
        (Some(s), Some(c)) => sign::sign_archive(&archive, &c, s)?,
        _ => sign::remove_stale(&archive)?,
    }
    Ok(Built {
        archive,
        sha256,
        size,
        bundle,
        downloaded: e.downloads(),
        lock_path,
        lock_written,
    })
}

/// The executable shipped as the installer (warns when it cannot run on the targets).
fn installer(m: &Manifest, o: &BuildOptions) -> Result<PathBuf, BuildError> {
    if let Some(p) = &o.installer {
        return Ok(p.clone());
    }
    if !m.arches.iter().any(|a| Some(*a) == crate::manifest::Arch::host()) {
        Progress::new(o.common.quiet).warn(&format!(
            "this kbundle runs on {}, but the bundle targets {}: pass --installer with a kbundle built for the target",
            std::env::consts::ARCH,
            m.arches.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    std::env::current_exe().map_err(|source| BuildError::Installer {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })
}

/// Every file and image blob, verified into the cache (cache hits cost no network).
fn gather(e: &Engines, m: &Manifest, sc: &Scope, lock: &Lock, o: &BuildOptions) -> Result<Gathered, BuildError> {
    let index = lock.index();
    let expected: Vec<Expected> = sc
        .files
        .iter()
        .map(|a| index.file(&a.path))
        .map(|l| Expected::new(l.map(|l| l.sha256), l.map(|l| l.size)))
        .collect();
    let jobs = o.common.jobs;
    let files =
        e.rt.block_on(resolve::fetch_all(&e.files, &e.cache, &sc.files, &expected, jobs))?;
    // Images by their locked digests (`--locked` also checks that tags have not moved).
    let mut resolved = e.rt.block_on(resolve::resolve_images(
        &e.images,
        &e.cache,
        m,
        &sc.images,
        Some(lock),
        o.locked,
        jobs,
    ))?;
    let signatures = signatures::check(e, sc, &mut resolved, jobs)?;
    let fetch = resolve::fetch_images(&e.images, &e.cache, &sc.images, &resolved, jobs);
    let (blobs, _) = e.rt.block_on(fetch)?;
    Ok(Gathered {
        files,
        images: resolved.into_iter().map(|r| r.locked).collect(),
        blobs,
        signatures,
    })
}

/// The packed archive: its path, sha256 and size.
type Packed = (PathBuf, Sha256, u64);

/// Fetches and packs (with `--sign`, bundle.json.minisig included; the comment is returned
/// to sign the archive with). Cache entries are trusted by name and size until packing hashes them;
/// if packing finds one that changed, every cache entry of the bundle is checked, the bad
/// ones are evicted (with a warning) and fetched again, and packing starts over, once.
fn gather_and_pack(
    e: &Engines,
    m: &Manifest,
    sc: &Scope,
    lock: &Lock,
    installer: &Path,
    o: &BuildOptions,
) -> Result<(BundleJson, Packed, Option<TrustedComment>), BuildError> {
    let mut round = 0;
    loop {
        round += 1;
        let g = gather(e, m, sc, lock, o)?;
        if o.check_kubeadm_images && round == 1 {
            kubeadm_check::check(&e.progress, m, sc, &g.files);
        }
        let contents = contents::assemble(m, sc, lock, &g, installer, o.base.as_deref())?;
        let (bundle, mut entries) = contents.finish().map_err(BuildError::Layout)?;
        let comment = o.sign.as_ref().map(|s| sign::comment(&bundle, s));
        if let (Some(c), Some(s)) = (&comment, &o.sign) {
            sign::add_json_sig(&mut entries, c, s)?;
        }
        match pack_all(&m.name, &entries, o) {
            Err(err @ pack::PackError::Changed { .. }) if round == 1 => {
                if evict_corrupt(&e.cache, &entries, &e.progress) == 0 {
                    return Err(err.into());
                }
            }
            packed => return Ok((bundle, packed?, comment)),
        }
    }
}

fn pack_all(name: &str, entries: &[PackEntry], o: &BuildOptions) -> Result<(PathBuf, Sha256, u64), pack::PackError> {
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let bar = Progress::new(o.common.quiet).bar(name, Some(total));
    let sde = pack::source_date_epoch();
    let packed = pack::write_archive(&o.out, name, entries, o.compression, sde, |n| bar.inc(n));
    match &packed {
        Ok(_) => bar.finish("packed", total),
        Err(_) => bar.abandon(),
    }
    packed
}

/// Hashes every cache blob the entries come from; evicts (and warns about) each whose
/// content does not match its name. Returns how many were evicted.
fn evict_corrupt(cache: &Cache, entries: &[PackEntry], progress: &Progress) -> usize {
    let mut seen = HashSet::new();
    let mut evicted = 0;
    for e in entries {
        let Source::File(p) = &e.source else { continue };
        if *p != cache.blob_path(&e.sha256) || !seen.insert(e.sha256) {
            continue;
        }
        if let Some(bad) = cache.check(&e.sha256) {
            progress.warn(&bad.to_string());
            evicted += 1;
        }
    }
    evicted
}
