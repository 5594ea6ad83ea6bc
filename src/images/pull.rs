//! Pulling images: manifests and blobs through the download engine into the
//! content-addressed cache (every digest checked before commit), mirrors that keep upstream
//! names and digests, and resolving a reference to the digests a lock pins.

use super::auth::Credentials;
use super::{checked, parse, select_platforms, Descriptor, LockedImage, LockedPlatform, ManifestError, Parsed};
mod blob;
mod manifest;
mod registry;
mod signature;
pub use signature::{check_all as check_signatures, SignatureArtifact, SignatureSummary};

use crate::digest::Sha256;
use crate::fetch::Cache;
use crate::fetch::{CacheError, Engine, FetchError, Limits, Mirrors, Retry};
use crate::image_ref::ImageRef;
use crate::manifest::Arch;
use crate::progress::Progress;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use registry::Access;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference}: {what} not found at {registry} (HTTP 404)")]
    NotFound {
        reference: String,
        what: String,
        registry: String,
    },
    #[error("image {reference}: {what} digest mismatch: expected {expected}, got {actual}")]
    Mismatch {
        reference: String,
        what: String,
        expected: Sha256,
        actual: Sha256,
    },
    #[error("image {reference}: manifest {digest}: the index says {expected} bytes, it has {actual}")]
    Size {
        reference: String,
        digest: Sha256,
        expected: u64,
        actual: u64,
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
    #[error("image {reference}: reading manifest {path} from the cache: {source}")]
    ReadManifest {
        reference: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {reference} ({}): cosign signature check with {} failed: {reason}", digest.oci(), key.display())]
    Signature {
        reference: String,
        digest: Sha256,
        key: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
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
    /// Only for the registry's token dance; bytes go through `engine`.
    client: Client,
    engine: Engine,
    mirrors: Mirrors,
    /// Registry mirror hosts reached over plain HTTP.
    http_hosts: Vec<String>,
    creds: Credentials,
    access: tokio::sync::Mutex<HashMap<(String, String), Access>>,
}

impl Puller {
    pub fn new(mirrors: Mirrors, retry: Retry, progress: Progress, creds: Credentials) -> Result<Self, FetchError> {
        // Plain HTTP only where a mirror rule says http://.
        let http_hosts: Vec<String> = mirrors.http_registry_hosts();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(http_hosts.clone()),
            platform_resolver: None,
            read_timeout: Some(std::time::Duration::from_secs(60)),
            connect_timeout: Some(std::time::Duration::from_secs(20)),
            user_agent: concat!("kbundle/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        Ok(Puller {
            client: Client::new(config),
            engine: Engine::new(retry, progress)?,
            mirrors,
            http_hosts,
            creds,
            access: Default::default(),
        })
    }

    /// The same puller with other download limits (deadline, minimum rate).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.engine = self.engine.with_limits(limits);
        self
    }

    /// Manifests and blobs downloaded (not found in the cache) so far.
    pub fn downloads(&self) -> usize {
        self.engine.downloads()
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
        let (top_bytes, top) = self.top_manifest(cache, r, pinned, check_tag).await?;
        let size = top_bytes.len() as u64;
        let mut blobs = vec![(top, size)];
        let (media_type, platforms) = match parse(&top_bytes, &format!("manifest {}", top.oci())).map_err(merr(r))? {
            Parsed::Index { media_type, manifests } => {
                let platforms = self.platforms(cache, r, &manifests, arches, &mut blobs).await?;
                (media_type, platforms)
            }
            Parsed::Manifest {
                media_type,
                config,
                layers,
            } => {
                blobs.extend(image_blobs(r, &config, &layers)?);
                (media_type, Vec::new())
            }
        };
        let reference = r.to_string();
        Ok(Resolved {
            locked: LockedImage {
                reference,
                digest: top,
                media_type,
                size,
                platforms,
            },
            blobs,
        })
    }

    /// The manifest or index a reference points at: the locked digest (after checking that
    /// the tag still points there, with `check_tag`), the reference's digest, or its tag.
    async fn top_manifest(
        &self,
        cache: &Cache,
        r: &ImageRef,
        pinned: Option<&LockedImage>,
        check_tag: bool,
    ) -> Result<(Vec<u8>, Sha256), ImageError> {
        let want = match (pinned, r.digest) {
            (Some(l), _) => {
                if check_tag && r.tag.is_some() && r.digest.is_none() {
                    self.check_tag(cache, r, l.digest).await?;
                }
                l.digest
            }
            (None, Some(d)) => d,
            (None, None) => return self.manifest_by_tag(cache, r, r.tag_or_latest()).await,
        };
        Ok((self.manifest_by_digest(cache, r, want, None).await?, want))
    }

    /// Refuses a tag that no longer points at the locked digest.
    async fn check_tag(&self, cache: &Cache, r: &ImageRef, locked: Sha256) -> Result<(), ImageError> {
        let (_, now) = self.manifest_by_tag(cache, r, r.tag_or_latest()).await?;
        if now != locked {
            return Err(ImageError::Moved {
                reference: r.to_string(),
                old: locked,
                new: now,
            });
        }
        Ok(())
    }

    /// The platform manifest of each target arch in an index, each pulled; their blobs
    /// (manifest, config, layers) are added to `blobs`.
    async fn platforms(
        &self,
        cache: &Cache,
        r: &ImageRef,
        manifests: &[Descriptor],
        arches: &[Arch],
        blobs: &mut Vec<(Sha256, u64)>,
    ) -> Result<Vec<LockedPlatform>, ImageError> {
        let mut out = Vec::new();
        for (arch, desc) in select_platforms(manifests, arches, "image index").map_err(merr(r))? {
            let (digest, size) = checked(desc, "index entry").map_err(merr(r))?;
            let bytes = self.manifest_by_digest(cache, r, digest, Some(size)).await?;
            if bytes.len() as u64 != size {
                return Err(ImageError::Size {
                    reference: r.to_string(),
                    digest,
                    expected: size,
                    actual: bytes.len() as u64,
                });
            }
            let (media_type, own) = platform_manifest(r, &bytes, digest)?;
            blobs.push((digest, size));
            blobs.extend(own);
            out.push(LockedPlatform {
                platform: arch.platform(),
                digest,
                media_type,
                size,
            });
        }
        Ok(out)
    }
}

/// Turns a manifest problem into an error naming the image.
fn merr(r: &ImageRef) -> impl Fn(ManifestError) -> ImageError + '_ {
    move |source| ImageError::Manifest {
        reference: r.to_string(),
        source,
    }
}

/// A platform manifest of an index (not another index): its media type, config and layers.
fn platform_manifest(r: &ImageRef, bytes: &[u8], d: Sha256) -> Result<(String, Vec<(Sha256, u64)>), ImageError> {
    let what = format!("manifest {}", d.oci());
    match parse(bytes, &what).map_err(merr(r))? {
        Parsed::Manifest {
            media_type,
            config,
            layers,
        } => Ok((media_type, image_blobs(r, &config, &layers)?)),
        Parsed::Index { .. } => Err(merr(r)(ManifestError::Invalid {
            what,
            reason: "an index inside an index is not supported".into(),
        })),
    }
}

/// The config and layers of one image manifest, checked.
fn image_blobs(r: &ImageRef, config: &Descriptor, layers: &[Descriptor]) -> Result<Vec<(Sha256, u64)>, ImageError> {
    let mut out = vec![checked(config, "config").map_err(merr(r))?];
    for l in layers {
        out.push(checked(l, "layer").map_err(merr(r))?);
    }
    Ok(out)
}
