//! Pulling with `oci-client`: manifests and blobs streamed into the content-addressed cache,
//! every digest checked before commit (temp file, hash, rename), retries with backoff and
//! resume, mirrors that keep upstream names and digests.

use super::auth::Credentials;
use super::{
    checked, parse, select_platforms, LockedImage, LockedPlatform, ManifestError, Parsed, ACCEPT, MAX_MANIFEST,
};
mod blob;

use crate::digest::Sha256;
use crate::fetch::{Cache, CacheError, LimitHit, Limits, Mirrors, Retry};
use crate::image_ref::ImageRef;
use crate::manifest::Arch;
use crate::progress::Progress;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference, RegistryOperation};
use std::collections::HashSet;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference}: {what} not found at {registry}: {answer}")]
    NotFound {
        reference: String,
        what: String,
        registry: String,
        answer: String,
    },
    #[error("image {reference}: {what} from {registry}: {answer} (after {attempts} attempt(s))")]
    Registry {
        reference: String,
        what: String,
        registry: String,
        answer: String,
        attempts: u32,
    },
    #[error("image {reference}: {what} digest mismatch: expected {expected}, got {actual}")]
    Mismatch {
        reference: String,
        what: String,
        expected: Sha256,
        actual: Sha256,
    },
    #[error("image {reference}: blob {digest}: expected {expected} bytes, got {actual}")]
    Size {
        reference: String,
        digest: Sha256,
        expected: u64,
        actual: u64,
    },
    #[error(
        "image {reference}: {what} from {registry}: {hit} ({received} bytes received, after {attempts} attempt(s))"
    )]
    Limit {
        reference: String,
        what: String,
        registry: String,
        hit: LimitHit,
        received: u64,
        attempts: u32,
    },
    #[error("image {reference}: {source}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("image {reference}: the tag now points at {new}, but the lockfile pins {old} (run `kbundle lock` to accept the change)")]
    Moved {
        reference: String,
        old: Sha256,
        new: Sha256,
    },
    #[error("image {reference}: writing blob {digest} to {path}: {source}")]
    Write {
        reference: String,
        digest: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
}

/// Everything one image brings into the bundle.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub locked: LockedImage,
    /// Every blob: the top manifest or index, platform manifests, configs, layers.
    pub blobs: Vec<(Sha256, u64)>,
}

pub struct Puller {
    client: Client,
    mirrors: Mirrors,
    creds: Credentials,
    retry: Retry,
    limits: Limits,
    progress: Progress,
    authed: tokio::sync::Mutex<HashSet<(String, String)>>,
    downloads: std::sync::atomic::AtomicUsize,
}

enum Failure {
    Retry(String),
    /// A rate window below `--min-rate`: retried like `Retry`, named if it is the last.
    Slow(LimitHit),
    Fatal(ImageError),
}

fn retryable(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429 || *code == 408,
        _ => false,
    }
}

fn not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| format!("{:?}", x.code).to_uppercase().contains("UNKNOWN")),
        _ => false,
    }
}

impl Puller {
    pub fn new(mirrors: Mirrors, retry: Retry, progress: Progress, creds: Credentials) -> Self {
        // Plain HTTP only where a mirror rule says http://.
        let http_hosts: Vec<String> = mirrors.http_registry_hosts();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(http_hosts),
            platform_resolver: None,
            read_timeout: Some(std::time::Duration::from_secs(60)),
            connect_timeout: Some(std::time::Duration::from_secs(20)),
            user_agent: concat!("kbundle/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        Puller {
            client: Client::new(config),
            mirrors,
            creds,
            retry,
            limits: Limits::default(),
            progress,
            authed: tokio::sync::Mutex::new(HashSet::new()),
            downloads: Default::default(),
        }
    }

    /// The same puller with other download limits (deadline, minimum rate).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Blobs downloaded (not found in the cache) so far.
    pub fn downloads(&self) -> usize {
        self.downloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where an upstream reference is actually fetched from: (registry host, repository).
    pub fn source(&self, r: &ImageRef) -> (String, String) {
        match self.mirrors.registry(&r.registry).and_then(|m| url::Url::parse(m).ok()) {
            Some(u) => {
                let host = match u.port() {
                    Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                    None => u.host_str().unwrap_or_default().to_string(),
                };
                let prefix = u.path().trim_matches('/');
                let repo = if prefix.is_empty() {
                    r.repository.clone()
                } else {
                    format!("{prefix}/{}", r.repository)
                };
                (host, repo)
            }
            None => (r.registry.clone(), r.repository.clone()),
        }
    }

    fn reference(&self, r: &ImageRef, tag_or_digest: &str) -> Reference {
        let (host, repo) = self.source(r);
        if tag_or_digest.starts_with("sha256:") {
            Reference::with_digest(host, repo, tag_or_digest.to_string())
        } else {
            Reference::with_tag(host, repo, tag_or_digest.to_string())
        }
    }

    fn shown_registry(&self, r: &ImageRef) -> String {
        let (host, repo) = self.source(r);
        if host == r.registry {
            host
        } else {
            format!("{host}/{repo} (mirror of {})", r.registry)
        }
    }

    async fn ensure_auth(&self, reference: &Reference) -> Result<(), Failure> {
        let key = (reference.registry().to_string(), reference.repository().to_string());
        if self.authed.lock().await.contains(&key) {
            return Ok(());
        }
        let auth = self.creds.for_host(reference.registry());
        match self.client.auth(reference, &auth, RegistryOperation::Pull).await {
            Ok(_) => {
                self.authed.lock().await.insert(key);
                Ok(())
            }
            Err(e) if retryable(&e) => Err(Failure::Retry(e.to_string())),
            Err(e) => Err(Failure::Fatal(ImageError::Registry {
                reference: reference.whole(),
                what: "authentication".into(),
                registry: reference.registry().to_string(),
                answer: e.to_string(),
                attempts: 1,
            })),
        }
    }

    /// Says why a retry happens, then waits the backoff delay.
    async fn backoff(&self, r: &ImageRef, what: &str, why: &str, attempt: u32) {
        let delay = self.retry.delay(attempt);
        self.progress.warn(&format!(
            "image {r}: {what}: {why}; retrying in {:.1}s (attempt {}/{})",
            delay.as_secs_f32(),
            attempt + 1,
            self.retry.attempts
        ));
        tokio::time::sleep(delay).await;
    }

    /// Runs `op` with retries and backoff.
    async fn with_retry<T, F, Fut>(&self, r: &ImageRef, what: &str, mut op: F) -> Result<T, ImageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Slow(hit)) => {
                    let why = hit.to_string();
                    if attempt >= self.retry.attempts {
                        return Err(self.limit_error(r, what, hit, 0, attempt));
                    }
                    self.backoff(r, what.as_ref(), &why, attempt).await;
                }
                Err(Failure::Retry(why)) => {
                    if attempt >= self.retry.attempts {
                        return Err(ImageError::Registry {
                            reference: r.to_string(),
                            what: what.to_string(),
                            registry: self.shown_registry(r),
                            answer: why,
                            attempts: attempt,
                        });
                    }
                    self.backoff(r, what.as_ref(), &why, attempt).await;
                }
            }
        }
    }

    fn limit_error(&self, r: &ImageRef, what: &str, hit: LimitHit, received: u64, attempts: u32) -> ImageError {
        ImageError::Limit {
            reference: r.to_string(),
            what: what.to_string(),
            registry: self.shown_registry(r),
            hit,
            received,
            attempts,
        }
    }

    /// GETs a manifest by tag or digest, retries included, within the `--timeout` deadline;
    /// returns its bytes and their sha256.
    async fn get_manifest(&self, r: &ImageRef, by: &str) -> Result<(Vec<u8>, Sha256), ImageError> {
        let what = format!("manifest {by}");
        tokio::time::timeout(self.limits.timeout, self.get_manifest_retried(r, by, &what))
            .await
            .unwrap_or_else(|_| Err(self.limit_error(r, &what, LimitHit::Deadline(self.limits.timeout), 0, 1)))
    }

    async fn get_manifest_retried(&self, r: &ImageRef, by: &str, what: &str) -> Result<(Vec<u8>, Sha256), ImageError> {
        let what = what.to_string();
        let reference = self.reference(r, by);
        let (bytes, digest) = self
            .with_retry(r, &what, || async {
                self.ensure_auth(&reference).await?;
                match self
                    .client
                    .pull_manifest_raw(&reference, &self.creds.for_host(reference.registry()), ACCEPT)
                    .await
                {
                    Ok((b, _)) => {
                        let d = Sha256::of(&b);
                        Ok((b.to_vec(), d))
                    }
                    Err(e) if retryable(&e) => Err(Failure::Retry(e.to_string())),
                    Err(e) if not_found(&e) => Err(Failure::Fatal(ImageError::NotFound {
                        reference: r.to_string(),
                        what: what.clone(),
                        registry: self.shown_registry(r),
                        answer: e.to_string(),
                    })),
                    Err(e) => Err(Failure::Fatal(ImageError::Registry {
                        reference: r.to_string(),
                        what: what.clone(),
                        registry: self.shown_registry(r),
                        answer: e.to_string(),
                        attempts: 1,
                    })),
                }
            })
            .await?;
        if bytes.len() > MAX_MANIFEST {
            return Err(ImageError::Manifest {
                reference: r.to_string(),
                source: ManifestError {
                    what: what.clone(),
                    reason: format!("larger than {MAX_MANIFEST} bytes"),
                },
            });
        }
        Ok((bytes, digest))
    }

    /// A manifest by digest: from the cache, else from the registry; verified and cached.
    async fn manifest_by_digest(&self, cache: &Cache, r: &ImageRef, want: Sha256) -> Result<Vec<u8>, ImageError> {
        if cache.size_of(&want).is_some() {
            let p = cache.blob_path(&want);
            if let Ok(b) = std::fs::read(&p) {
                if Sha256::of(&b) == want {
                    return Ok(b);
                }
                if let Some(bad) = cache.check(&want) {
                    self.progress.warn(&bad.to_string());
                }
            }
        }
        let (bytes, got) = self.get_manifest(r, &want.oci()).await?;
        if got != want {
            return Err(ImageError::Mismatch {
                reference: r.to_string(),
                what: format!("manifest {}", want.oci()),
                expected: want,
                actual: got,
            });
        }
        store_small(cache, &bytes, got, r)?;
        Ok(bytes)
    }

    /// Resolves one image to its upstream digests for the target arches, caching every
    /// manifest on the way. With `pinned`, pulls by the locked digest; with `check_tag`, also
    /// asks the registry where the tag points now and refuses if it moved.
    pub async fn resolve(
        &self,
        cache: &Cache,
        r: &ImageRef,
        arches: &[Arch],
        pinned: Option<&LockedImage>,
        check_tag: bool,
    ) -> Result<Resolved, ImageError> {
        let (top_bytes, top) = match (pinned, &r.digest) {
            (Some(l), _) => {
                if check_tag && r.tag.is_some() && r.digest.is_none() {
                    let (_, now) = self.get_manifest(r, r.tag_or_latest()).await?;
                    if now != l.digest {
                        return Err(ImageError::Moved {
                            reference: r.to_string(),
                            old: l.digest,
                            new: now,
                        });
                    }
                }
                (self.manifest_by_digest(cache, r, l.digest).await?, l.digest)
            }
            (None, Some(d)) => (self.manifest_by_digest(cache, r, *d).await?, *d),
            (None, None) => {
                let (b, d) = self.get_manifest(r, r.tag_or_latest()).await?;
                store_small(cache, &b, d, r)?;
                (b, d)
            }
        };
        let merr = |source| ImageError::Manifest {
            reference: r.to_string(),
            source,
        };
        let mut blobs = vec![(top, top_bytes.len() as u64)];
        let mut platforms = Vec::new();
        let media_type;
        match parse(&top_bytes, &format!("manifest {}", top.oci())).map_err(merr)? {
            Parsed::Index {
                media_type: mt,
                manifests,
            } => {
                media_type = mt;
                for (arch, desc) in select_platforms(&manifests, arches, "image index").map_err(merr)? {
                    let (d, size) = checked(desc, "index entry").map_err(merr)?;
                    let bytes = self.manifest_by_digest(cache, r, d).await?;
                    if bytes.len() as u64 != size {
                        return Err(ImageError::Size {
                            reference: r.to_string(),
                            digest: d,
                            expected: size,
                            actual: bytes.len() as u64,
                        });
                    }
                    blobs.push((d, size));
                    let Parsed::Manifest {
                        media_type: pmt,
                        config,
                        layers,
                    } = parse(&bytes, &format!("manifest {}", d.oci())).map_err(merr)?
                    else {
                        return Err(merr(ManifestError {
                            what: format!("manifest {}", d.oci()),
                            reason: "an index inside an index is not supported".into(),
                        }));
                    };
                    blobs.push(checked(&config, "config").map_err(merr)?);
                    for l in &layers {
                        blobs.push(checked(l, "layer").map_err(merr)?);
                    }
                    platforms.push(LockedPlatform {
                        platform: arch.platform(),
                        digest: d,
                        media_type: pmt,
                        size,
                    });
                }
            }
            Parsed::Manifest {
                media_type: mt,
                config,
                layers,
            } => {
                media_type = mt;
                blobs.push(checked(&config, "config").map_err(merr)?);
                for l in &layers {
                    blobs.push(checked(l, "layer").map_err(merr)?);
                }
            }
        }
        Ok(Resolved {
            locked: LockedImage {
                reference: r.to_string(),
                digest: top,
                media_type,
                size: top_bytes.len() as u64,
                platforms,
            },
            blobs,
        })
    }
}

/// Writes small verified bytes (a manifest) into the cache.
fn store_small(cache: &Cache, bytes: &[u8], d: Sha256, r: &ImageRef) -> Result<(), ImageError> {
    if cache.size_of(&d).is_some() {
        return Ok(());
    }
    let mut tmp = cache.temp()?;
    let p = tmp.path().to_path_buf();
    tmp.write_all(bytes).map_err(|source| ImageError::Write {
        reference: r.to_string(),
        digest: d.oci(),
        path: p,
        source,
    })?;
    cache.commit(tmp, &d)?;
    Ok(())
}
