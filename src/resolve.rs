//! Manifest → lock: find each file's upstream digest (manifest pin, checksum file, or the
//! first download), fetch it into the cache verified, and record URL, size and sha256.
//! `--locked` re-resolves and refuses any difference.

use crate::catalog::checksum::{self, ChecksumError, ChecksumFormat};
use crate::catalog::clearsign::{SignatureError, Verified};
use crate::catalog::images::CatalogImage;
use crate::catalog::{Component, FileArtifact};
use crate::digest::Sha256;
use crate::fetch::{Cache, Expected, FetchError, Fetched, Fetcher, Request};
use crate::images::pull::{Puller, Resolved};
use crate::lock::{DigestSource, Lock, LockIndex, LockedFile, LOCK_SCHEMA};
use crate::manifest::{Manifest, Pin};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

/// Checksum files are tiny; anything bigger is not one.
const CHECKSUM_LIMIT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{path}:{line}:{column}: sha256 pin for {key:?} matches no file of this bundle (keys are upstream URLs or bundle paths, as `kbundle list` prints them)")]
    UnusedPin {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
    },
    #[error("{name}: checksum file {url}: {source}")]
    Checksum {
        name: String,
        url: String,
        #[source]
        source: ChecksumError,
    },
    #[error("{name}: signed checksum file {url}: {source}")]
    Signature {
        name: String,
        url: String,
        #[source]
        source: SignatureError,
    },
    #[error("{name}: {source}")]
    Fetch {
        name: String,
        #[source]
        source: FetchError,
    },
    #[error("lockfile {path} does not match the manifest (run `kbundle lock` to update it):\n  {}", details.join("\n  "))]
    Stale { path: PathBuf, details: Vec<String> },
    #[error("upstream no longer matches the lockfile {path}:\n  {}", changes.join("\n  "))]
    Drift { path: PathBuf, changes: Vec<String> },
    #[error(transparent)]
    Image(#[from] crate::images::pull::ImageError),
}

/// Maps each pin to the file it names; a pin that names nothing is an error. Linear: one
/// map of every file's URL and path, then one lookup per pin.
pub fn pins_by_path(m: &Manifest, files: &[FileArtifact]) -> Result<HashMap<String, Pin>, ResolveError> {
    let by_key = files_by_key(files);
    let mut out = HashMap::with_capacity(m.pins.len());
    for pin in &m.pins {
        let Some(f) = by_key.get(pin.key.as_str()) else {
            return Err(ResolveError::UnusedPin {
                path: m.path.clone(),
                line: pin.line,
                column: pin.column,
                key: pin.key.clone(),
            });
        };
        out.insert(f.path.clone(), pin.clone());
    }
    Ok(out)
}

/// Every file by its upstream URL and by its bundle path; where two files share a key, the
/// first one in `files` wins.
pub fn files_by_key(files: &[FileArtifact]) -> HashMap<&str, &FileArtifact> {
    let mut by_key = HashMap::with_capacity(files.len() * 2);
    for f in files {
        by_key.entry(f.url.as_str()).or_insert(f);
        by_key.entry(f.path.as_str()).or_insert(f);
    }
    by_key
}

/// A vouched digest, where it came from, and the key that signed its checksum file (if any).
pub type Vouched = (Sha256, DigestSource, Option<String>);

/// The digest upstream (or the manifest) vouches for, per file; `None` where nobody does.
pub async fn upstream_digests(
    fetcher: &Fetcher,
    m: &Manifest,
    files: &[FileArtifact],
    jobs: usize,
) -> Result<Vec<Option<Vouched>>, ResolveError> {
    let pins = pins_by_path(m, files)?;
    let bodies = checksum_files(fetcher, files, &pins, jobs).await?;
    let signed = verify_signed(m, files, &bodies)?;
    files.iter().map(|f| vouched(f, &pins, &bodies, &signed)).collect()
}

/// Every checksum file the unpinned files need, each fetched once (runc and etcd publish one
/// file for every arch), by URL.
async fn checksum_files<'a>(
    fetcher: &Fetcher,
    files: &'a [FileArtifact],
    pins: &HashMap<String, Pin>,
    jobs: usize,
) -> Result<BTreeMap<&'a str, Vec<u8>>, ResolveError> {
    let mut urls: Vec<(&str, &str)> = files
        .iter()
        .filter(|f| !pins.contains_key(&f.path))
        .filter_map(|f| f.checksum.as_ref().map(|c| (c.url.as_str(), f.name.as_str())))
        .collect();
    urls.sort();
    urls.dedup_by(|a, b| a.0 == b.0);
    futures::stream::iter(urls)
        .map(|(url, name)| async move {
            let body = fetcher.get_small(url, CHECKSUM_LIMIT).await;
            body.map(|b| (url, b)).map_err(|source| ResolveError::Fetch {
                name: format!("checksum for {name}"),
                source,
            })
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await
}

/// The digest of `f`: its manifest pin, else from its checksum file, else nobody's.
/// A clear-signed file's digest is read from its verified signed text only.
fn vouched(
    f: &FileArtifact,
    pins: &HashMap<String, Pin>,
    bodies: &BTreeMap<&str, Vec<u8>>,
    signed: &BTreeMap<&str, Verified>,
) -> Result<Option<Vouched>, ResolveError> {
    if let Some(p) = pins.get(&f.path) {
        return Ok(Some((p.sha256, DigestSource::ManifestPin, None)));
    }
    let Some(c) = &f.checksum else {
        return Ok(None);
    };
    let (format, body, signer) = match signed.get(c.url.as_str()) {
        Some(v) => (
            ChecksumFormat::Sha256Sum,
            v.text.as_bytes(),
            Some(v.signer.primary.clone()),
        ),
        // Every clear-signed body was verified above (or failed the build); others are plain.
        None => (
            c.format,
            bodies.get(c.url.as_str()).map(Vec::as_slice).unwrap_or_default(),
            None,
        ),
    };
    checksum::parse(format, body, &f.name)
        .map(|d| Some((d, DigestSource::ChecksumFile, signer)))
        .map_err(|source| ResolveError::Checksum {
            name: f.name.clone(),
            url: c.url.clone(),
            source,
        })
}

/// Fetches every file into the cache, verified against `digests` (and `sizes`, when known).
/// Returns one result per file, in order.
pub async fn fetch_all(
    fetcher: &Fetcher,
    cache: &Cache,
    files: &[FileArtifact],
    expected: &[Expected],
    jobs: usize,
) -> Result<Vec<Fetched>, ResolveError> {
    let mut out: Vec<(usize, Fetched)> = futures::stream::iter(files.iter().zip(expected).enumerate())
        .map(|(i, (f, want))| async move {
            let req = Request {
                url: &f.url,
                label: &f.name,
                sha256: want.sha256,
                size: want.size,
            };
            fetcher
                .fetch(cache, &req)
                .await
                .map(|r| (i, r))
                .map_err(|source| ResolveError::Fetch {
                    name: format!("{} {} ({})", f.component, f.version, f.name),
                    source,
                })
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// Resolves every image to its upstream digests (manifests are cached; blobs are not
/// fetched). With a lock, images are taken by their locked digests, and `check_tags` also
/// refuses tags that moved.
pub async fn resolve_images(
    puller: &Puller,
    cache: &Cache,
    m: &Manifest,
    images: &[CatalogImage],
    lock: Option<&Lock>,
    check_tags: bool,
    jobs: usize,
) -> Result<Vec<Resolved>, ResolveError> {
    let index = lock.map(Lock::index);
    let index = &index;
    let out: Vec<Resolved> = futures::stream::iter(images)
        .map(|img| async move {
            let pinned = index.as_ref().and_then(|l| l.image(&img.reference.to_string()));
            puller
                .resolve(cache, &img.reference, &m.arches, pinned, check_tags)
                .await
                .map_err(ResolveError::from)
        })
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    Ok(out)
}

/// Pulls every distinct blob of the resolved images into the cache (each once, in parallel).
pub async fn fetch_images(
    puller: &Puller,
    cache: &Cache,
    images: &[CatalogImage],
    resolved: &[Resolved],
    jobs: usize,
) -> Result<(BTreeMap<Sha256, (u64, PathBuf)>, usize), ResolveError> {
    let mut wanted: BTreeMap<Sha256, (u64, &crate::image_ref::ImageRef)> = BTreeMap::new();
    for (img, r) in images.iter().zip(resolved) {
        for (d, size) in &r.blobs {
            wanted.entry(*d).or_insert((*size, &img.reference));
        }
    }
    let fetched: Vec<Fetched> = futures::stream::iter(wanted)
        .map(|(d, (size, r))| async move { puller.fetch_blob(cache, r, d, size).await.map_err(ResolveError::from) })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    let downloaded = fetched.iter().filter(|f| f.downloaded).count();
    Ok((
        fetched.into_iter().map(|f| (f.sha256, (f.size, f.path))).collect(),
        downloaded,
    ))
}

/// Locks every file: its vouched digest (or that of its first download), fetched into the
/// cache verified. Returns the locked entries and the fetched files, both in `files` order.
pub async fn lock_files(
    fetcher: &Fetcher,
    cache: &Cache,
    m: &Manifest,
    files: &[FileArtifact],
    jobs: usize,
) -> Result<(Vec<LockedFile>, Vec<Fetched>), ResolveError> {
    let digests = upstream_digests(fetcher, m, files, jobs).await?;
    warn_unvouched(fetcher, m, files, &digests);
    let want: Vec<Expected> = digests
        .iter()
        .map(|d| Expected::new(d.as_ref().map(|x| x.0), None))
        .collect();
    let fetched = fetch_all(fetcher, cache, files, &want, jobs).await?;
    let locked = files
        .iter()
        .zip(digests)
        .zip(&fetched)
        .map(|((f, d), r)| LockedFile {
            path: f.path.clone(),
            url: f.url.clone(),
            size: r.size,
            sha256: r.sha256,
            source: d.as_ref().map_or(DigestSource::FirstDownload, |x| x.1),
            signed_by: d.and_then(|x| x.2),
        })
        .collect();
    Ok((locked, fetched))
}

/// Resolves every image to its upstream digests, sorted by reference, for a fresh lock.
pub async fn lock_images(
    puller: &Puller,
    cache: &Cache,
    m: &Manifest,
    images: &[CatalogImage],
    jobs: usize,
) -> Result<Vec<crate::images::LockedImage>, ResolveError> {
    let resolved = resolve_images(puller, cache, m, images, None, false, jobs).await?;
    let mut images: Vec<_> = resolved.into_iter().map(|r| r.locked).collect();
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(images)
}

/// A lock of `m` from locked files and images.
pub fn new_lock(m: &Manifest, mut files: Vec<LockedFile>, images: Vec<crate::images::LockedImage>) -> Lock {
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Lock {
        schema: LOCK_SCHEMA,
        name: m.name.clone(),
        kubernetes: m.kubernetes.with_v(),
        files,
        images,
        image_signatures: Vec::new(),
    }
}

/// Warns about each file nobody vouches for: its first download's digest gets locked.
fn warn_unvouched(fetcher: &Fetcher, m: &Manifest, files: &[FileArtifact], digests: &[Option<Vouched>]) {
    for (f, _) in files.iter().zip(digests).filter(|(_, d)| d.is_none()) {
        fetcher.progress().warn(&format!(
            "{} publishes no checksum for {}; locking the sha256 of this download (pin it under [sha256] in {} to be sure)",
            f.component,
            f.url,
            m.path.display()
        ));
    }
}

/// Does the lock describe exactly this manifest's files and pins? Lists every difference.
pub fn stale_details(
    lock: &Lock,
    m: &Manifest,
    files: &[FileArtifact],
    images: &[CatalogImage],
) -> Result<Vec<String>, ResolveError> {
    let mut d = stale_file_details(lock, m, files)?;
    d.extend(stale_image_details(lock, m, images));
    Ok(d)
}

/// The differences of [`stale_details`] in the name and the files only.
pub fn stale_file_details(lock: &Lock, m: &Manifest, files: &[FileArtifact]) -> Result<Vec<String>, ResolveError> {
    let pins = pins_by_path(m, files)?;
    let index = lock.index();
    let mut d = Vec::new();
    if lock.name != m.name {
        d.push(format!("name: lock has {:?}, manifest has {:?}", lock.name, m.name));
    }
    d.extend(files.iter().filter_map(|f| stale_file(&index, &pins, f)));
    let paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for l in lock.files.iter().filter(|l| !paths.contains(l.path.as_str())) {
        d.push(format!("{}: in the lockfile but no longer in the manifest", l.path));
    }
    Ok(d)
}

/// The differences of [`stale_details`] in the images only.
pub fn stale_image_details(lock: &Lock, m: &Manifest, images: &[CatalogImage]) -> Vec<String> {
    let index = lock.index();
    let mut d: Vec<String> = images.iter().flat_map(|i| stale_image(&index, m, i)).collect();
    let refs: HashSet<String> = images.iter().map(|i| i.reference.to_string()).collect();
    for l in lock.images.iter().filter(|l| !refs.contains(&l.reference)) {
        d.push(format!(
            "image {}: in the lockfile but no longer in the manifest or its add-on manifests",
            l.reference
        ));
    }
    d
}

/// How the lock's entry for `f` differs from what the manifest needs, if it does.
fn stale_file(index: &LockIndex<'_>, pins: &HashMap<String, Pin>, f: &FileArtifact) -> Option<String> {
    let Some(l) = index.file(&f.path) else {
        return Some(format!("{}: not in the lockfile", f.path));
    };
    if l.url != f.url {
        return Some(format!(
            "{}: lock has URL {}, manifest needs {}{}",
            f.path,
            l.url,
            f.url,
            addon_note(f)
        ));
    }
    let p = pins.get(&f.path).filter(|p| p.sha256 != l.sha256)?;
    Some(format!(
        "{}: manifest pins sha256 {} (line {}), lock has {}{}",
        f.path,
        p.sha256,
        p.line,
        l.sha256,
        addon_note(f)
    ))
}

/// How the lock's entry for image `i` differs from what the manifest needs.
fn stale_image(index: &LockIndex<'_>, m: &Manifest, i: &CatalogImage) -> Vec<String> {
    let r = i.reference.to_string();
    let Some(l) = index.image(&r) else {
        let from = if i.source.is_addon() {
            format!(" (named by the {} manifest)", i.source.as_str())
        } else {
            String::new()
        };
        return vec![format!("image {r}{from}: not in the lockfile")];
    };
    let mut d = Vec::new();
    if i.reference.digest.is_some_and(|pin| pin != l.digest) {
        d.push(format!("image {r}: lock has {}", l.digest.oci()));
    }
    let have: Vec<&str> = l.platforms.iter().map(|p| p.platform.as_str()).collect();
    let want: Vec<String> = m.arches.iter().map(|a| a.platform()).collect();
    if !l.platforms.is_empty() && have != want {
        d.push(format!(
            "image {r}: locked for {}, manifest targets {}",
            have.join(","),
            want.join(",")
        ));
    }
    d
}

/// `--locked`: re-resolves upstream and lists every file whose digest differs from the lock.
pub async fn check_upstream(
    fetcher: &Fetcher,
    cache: &Cache,
    lock: &Lock,
    lock_path: &std::path::Path,
    m: &Manifest,
    files: &[FileArtifact],
    jobs: usize,
) -> Result<(), ResolveError> {
    let now = digests_now(fetcher, cache, m, files, jobs).await?;
    let index = lock.index();
    let changes: Vec<String> = files
        .iter()
        .zip(now)
        .filter_map(|(f, now)| {
            let (l, now) = (index.file(&f.path)?, now?);
            (now != l.sha256).then(|| {
                format!(
                    "{} ({}): lock has sha256 {}, upstream now {}{}",
                    f.name,
                    f.url,
                    l.sha256,
                    now,
                    addon_note(f)
                )
            })
        })
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    Err(ResolveError::Drift {
        path: lock_path.to_path_buf(),
        changes,
    })
}

/// For an add-on manifest: its images come from it, so a new file may mean new images.
pub fn addon_note(f: &FileArtifact) -> &'static str {
    match f.component {
        Component::Flannel | Component::MetricsServer => {
            " (the bundle's add-on images are read from this file: run `kbundle lock` to take the new file and its images)"
        }
        _ => "",
    }
}

/// Each file's digest upstream now: the one published (or pinned), else that of a fresh
/// download.
async fn digests_now(
    fetcher: &Fetcher,
    cache: &Cache,
    m: &Manifest,
    files: &[FileArtifact],
    jobs: usize,
) -> Result<Vec<Option<Sha256>>, ResolveError> {
    let digests = upstream_digests(fetcher, m, files, jobs).await?;
    let tofu: Vec<FileArtifact> = files
        .iter()
        .zip(&digests)
        .filter(|(_, d)| d.is_none())
        .map(|(f, _)| f.clone())
        .collect();
    let anything = vec![Expected::default(); tofu.len()];
    let fetched = fetch_all(fetcher, cache, &tofu, &anything, jobs).await?;
    let mut fetched = fetched.into_iter();
    let now = digests.iter().map(|d| match d {
        Some((s, _, _)) => Some(*s),
        None => fetched.next().map(|r| r.sha256),
    });
    Ok(now.collect())
}

#[path = "resolve_signed.rs"]
mod signed;
use signed::verify_signed;

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
