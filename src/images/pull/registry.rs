//! A registry as an [`Origin`] of the download engine: `GET /v2/<repo>/{manifests,blobs}/<ref>`
//! on the registry (or its mirror), with the credentials its token dance gave. `oci-client`
//! does only that dance (`/v2/` challenge, token endpoint); every byte goes through the engine.

use super::{ImageError, Puller};
use crate::fetch::engine::Origin;
use crate::fetch::error::OriginError;
use crate::fetch::{FetchError, Mismatch};
use crate::image_ref::ImageRef;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use std::sync::atomic::{AtomicBool, Ordering};

/// How requests to one repository authenticate.
#[derive(Debug, Clone)]
pub(super) enum Access {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Access {
    fn apply(&self, rq: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Access::Anonymous => rq,
            Access::Basic(user, password) => rq.basic_auth(user, Some(password)),
            Access::Bearer(token) => rq.bearer_auth(token),
        }
    }
}

/// Which endpoint of a repository.
#[derive(Debug, Clone, Copy)]
pub(super) enum Endpoint {
    Manifest,
    Blob,
}

/// One image download as messages name it: `image <ref>: <thing> from <registry>`.
#[derive(Debug, Clone)]
pub(super) struct Subject {
    pub reference: String,
    /// `blob sha256:…`, `manifest v1.34.3`.
    pub thing: String,
    /// The registry as messages show it (mirror and upstream).
    pub registry: String,
}

impl Subject {
    fn what(&self) -> String {
        format!("image {}: {} from {}", self.reference, self.thing, self.registry)
    }

    /// The engine's error in the words of images: a 404 is "not found", a wrong digest a
    /// "digest mismatch" naming both digests; anything else as the engine says it.
    pub fn error(&self, e: FetchError) -> ImageError {
        match e {
            FetchError::Status { status: 404, .. } => ImageError::NotFound {
                reference: self.reference.clone(),
                what: self.thing.clone(),
                registry: self.registry.clone(),
            },
            FetchError::Mismatch {
                mismatch: Mismatch::Digest { expected, actual, size },
                ..
            } => ImageError::Mismatch {
                reference: self.reference.clone(),
                what: format!("{} ({size} bytes)", self.thing),
                expected,
                actual,
            },
            e => ImageError::Fetch(e),
        }
    }
}

/// `GET` of one manifest or blob of one repository.
pub(super) struct RegistryOrigin<'a> {
    puller: &'a Puller,
    reference: Reference,
    url: String,
    accept: Option<String>,
    pub subject: Subject,
    what: String,
    /// A 401 earns one new token per download, not more.
    reauthenticated: AtomicBool,
}

impl Origin for RegistryOrigin<'_> {
    fn what(&self) -> &str {
        &self.what
    }

    async fn request(&self, client: &reqwest::Client) -> Result<reqwest::RequestBuilder, OriginError> {
        let access = self.puller.access(&self.reference).await?;
        let mut rq = client.get(&self.url);
        if let Some(accept) = &self.accept {
            rq = rq.header(reqwest::header::ACCEPT, accept);
        }
        Ok(access.apply(rq))
    }

    async fn unauthorized(&self) -> bool {
        if self.reauthenticated.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.puller.forget_access(&self.reference).await;
        true
    }

    fn hint(&self, status: u16) -> &'static str {
        match status {
            401 | 403 => {
                " (access denied: check the registry credentials in REGISTRY_AUTH_FILE or ~/.docker/config.json)"
            }
            _ => "",
        }
    }
}

fn retryable(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429 || *code == 408,
        _ => false,
    }
}

impl Puller {
    /// The download of `by` (a tag or `sha256:…`) from the manifests or blobs of `r`'s
    /// repository, at the registry or its mirror.
    pub(super) fn origin(&self, r: &ImageRef, endpoint: Endpoint, by: &str) -> RegistryOrigin<'_> {
        let reference = self.reference(r, by);
        let (kind, thing, accept) = match endpoint {
            Endpoint::Manifest => (
                "manifests",
                format!("manifest {by}"),
                Some(crate::images::ACCEPT.join(", ")),
            ),
            Endpoint::Blob => ("blobs", format!("blob {by}"), None),
        };
        let host = reference.resolve_registry();
        let scheme = if self.http_hosts.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        let url = format!("{scheme}://{host}/v2/{}/{kind}/{by}", reference.repository());
        let subject = Subject {
            reference: r.to_string(),
            thing,
            registry: self.shown_registry(r),
        };
        RegistryOrigin {
            puller: self,
            what: subject.what(),
            subject,
            reference,
            url,
            accept,
            reauthenticated: AtomicBool::new(false),
        }
    }

    /// How to authenticate to `reference`'s repository: asked once (the registry's `/v2/`
    /// challenge, then its token endpoint), then remembered.
    async fn access(&self, reference: &Reference) -> Result<Access, OriginError> {
        let key = (
            reference.resolve_registry().to_string(),
            reference.repository().to_string(),
        );
        if let Some(a) = self.access.lock().await.get(&key) {
            return Ok(a.clone());
        }
        let creds = self.creds.for_host(reference.resolve_registry());
        let token = self
            .client
            .auth(reference, &creds, RegistryOperation::Pull)
            .await
            .map_err(|e| OriginError::new("authenticating with the registry", retryable(&e), e))?;
        let access = match (token, creds) {
            (Some(token), _) => Access::Bearer(token),
            (None, RegistryAuth::Basic(user, password)) => Access::Basic(user, password),
            (None, _) => Access::Anonymous,
        };
        self.access.lock().await.insert(key, access.clone());
        Ok(access)
    }

    /// Forgets the access to `reference`'s repository (a token that expired).
    async fn forget_access(&self, reference: &Reference) {
        let key = (
            reference.resolve_registry().to_string(),
            reference.repository().to_string(),
        );
        self.access.lock().await.remove(&key);
    }
}
