//! Cosign signatures at build time: the signature manifest of an image (tag
//! `sha256-<hex>.sig` in its repository, through the same registry or mirror), its payload
//! blobs checked against the image digest and verified with the policy's key.

use super::{ImageError, Puller};
use crate::digest::Sha256;
use crate::fetch::Cache;
use crate::image_ref::ImageRef;
use crate::images::cosign::{self, SignedLayer, MAX_PAYLOAD};
use crate::images::keyless;
use crate::images::policy::{LoadedPolicy, Verifier};
use crate::images::Parsed;

/// A verified signature of one image, carried into the bundle's layout beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureArtifact {
    /// `registry/repository:sha256-<hex>.sig`: the layout's ref name for it.
    pub ref_name: String,
    pub digest: Sha256,
    pub size: u64,
    pub media_type: String,
    /// The signature manifest, its config and its layers.
    pub blobs: Vec<(Sha256, u64)>,
}

impl Puller {
    /// Finds and verifies the cosign signature of image `r` (top-level digest `image`) with
    /// `policy`'s key: at least one payload layer must name `image` and verify.
    pub async fn verify_signature(
        &self,
        cache: &Cache,
        r: &ImageRef,
        image: Sha256,
        policy: &LoadedPolicy,
    ) -> Result<SignatureArtifact, ImageError> {
        let fail = |reason: String| ImageError::Signature {
            reference: r.to_string(),
            digest: image,
            key: policy.policy.key_path.clone(),
            reason,
        };
        let tag = cosign::signature_tag(&image);
        let (artifact, sig) = self.signature_manifest(cache, r, &tag).await?.map_err(fail)?;
        let mut reasons = Vec::new();
        for layer in &sig.signed {
            match self.check_layer(cache, r, image, layer, policy).await? {
                Ok(()) => return Ok(artifact),
                Err(reason) => reasons.push(format!("payload {}: {reason}", layer.digest.oci())),
            }
        }
        Err(fail(format!("no valid signature in {tag}: {}", reasons.join("; "))))
    }

    /// The signature manifest tagged `tag` in `r`'s repository, as the layout will carry it,
    /// and its parsed layers; `Ok(Err(reason))` when it is missing or not a signature.
    async fn signature_manifest(
        &self,
        cache: &Cache,
        r: &ImageRef,
        tag: &str,
    ) -> Result<Result<(SignatureArtifact, cosign::SigManifest), String>, ImageError> {
        let (bytes, digest) = match self.manifest_by_tag(cache, r, tag).await {
            Ok(found) => found,
            Err(ImageError::NotFound { .. }) => {
                return Ok(Err(format!("not signed: the repository has no signature tag {tag}")))
            }
            Err(e) => return Err(e),
        };
        let media_type = match crate::images::parse(&bytes, &format!("signature manifest {tag}")) {
            Ok(Parsed::Manifest { media_type, .. }) => media_type,
            Ok(Parsed::Index { .. }) => return Ok(Err(format!("{tag} is an index, not a signature manifest"))),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let sig = match cosign::parse_sig_manifest(&bytes) {
            Ok(sig) => sig,
            Err(e) => return Ok(Err(format!("{tag}: {e}"))),
        };
        let size = bytes.len() as u64;
        let mut blobs = vec![(digest, size)];
        blobs.extend(sig.blobs.iter().copied());
        let artifact = SignatureArtifact {
            ref_name: format!("{}:{tag}", r.name()),
            digest,
            size,
            media_type,
            blobs,
        };
        Ok(Ok((artifact, sig)))
    }

    /// One payload layer: `Ok(Err(reason))` when it does not vouch for `image` with the key.
    async fn check_layer(
        &self,
        cache: &Cache,
        r: &ImageRef,
        image: Sha256,
        layer: &SignedLayer,
        policy: &LoadedPolicy,
    ) -> Result<Result<(), String>, ImageError> {
        let signature = match &layer.signature {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason.clone())),
        };
        if layer.size > MAX_PAYLOAD {
            return Ok(Err(format!("{} bytes, more than a payload can be", layer.size)));
        }
        let f = self.fetch_blob(cache, r, layer.digest, layer.size).await?;
        let payload = std::fs::read(&f.path).map_err(|source| ImageError::ReadManifest {
            reference: r.to_string(),
            path: f.path.clone(),
            source,
        })?;
        if let Err(e) = cosign::check_payload(&payload, &image) {
            return Ok(Err(e.to_string()));
        }
        Ok(verify_with(policy, layer, &payload, signature))
    }
}

/// How many images a build signature-checked, and how many no policy covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignatureSummary {
    pub checked: usize,
    pub not_covered: usize,
}

impl std::fmt::Display for SignatureSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images signature-checked, {} not covered by an image-signatures policy",
            self.checked, self.not_covered
        )
    }
}

/// Verifies the signature of every image a policy covers (`refs[i]` resolved to
/// `resolved[i]`); adds the signature blobs to the image's blobs so they are fetched and
/// packed, and returns the signatures for the layout, one per distinct image digest.
pub async fn check_all(
    puller: &Puller,
    cache: &Cache,
    policies: &[LoadedPolicy],
    refs: &[ImageRef],
    resolved: &mut [super::Resolved],
    jobs: usize,
) -> Result<(Vec<SignatureArtifact>, SignatureSummary), ImageError> {
    use futures::{StreamExt, TryStreamExt};
    let mut summary = SignatureSummary::default();
    let mut todo = Vec::new();
    for (i, (r, res)) in refs.iter().zip(resolved.iter()).enumerate() {
        match crate::images::policy::policy_for(policies, &r.to_string()) {
            Some(p) => todo.push((i, r, res.locked.digest, p)),
            None => summary.not_covered += 1,
        }
    }
    summary.checked = todo.len();
    let found: Vec<(usize, SignatureArtifact)> = futures::stream::iter(todo)
        .map(|(i, r, d, p)| async move { puller.verify_signature(cache, r, d, p).await.map(|a| (i, a)) })
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    let mut out: Vec<SignatureArtifact> = Vec::new();
    for (i, a) in found {
        resolved[i].blobs.extend(a.blobs.iter().copied());
        if !out.iter().any(|o| o.ref_name == a.ref_name) {
            out.push(a);
        }
    }
    out.sort_by(|a, b| a.ref_name.cmp(&b.ref_name));
    Ok((out, summary))
}

/// The payload signature checked with the policy's key, or keyless against its trusted root,
/// identity and issuer (docs/upstream-facts.md, "Cosign keyless signatures").
fn verify_with(policy: &LoadedPolicy, layer: &SignedLayer, payload: &[u8], signature: &[u8]) -> Result<(), String> {
    let (root, want) = match (&policy.verifier, &policy.policy.keyless) {
        (Verifier::Key(key), _) if key.verifies(payload, signature) => return Ok(()),
        (Verifier::Key(_), _) => return Err("the signature does not verify with the key".into()),
        (Verifier::Keyless(root, _), Some(want)) => (root, want),
        (Verifier::Keyless(..), None) => return Err("keyless policy without identity".into()),
    };
    let (Some(certificate), Some(bundle)) = (&layer.certificate, &layer.bundle) else {
        return Err(format!(
            "keyless: no {} or {} annotation",
            keyless::CERTIFICATE_ANNOTATION,
            keyless::BUNDLE_ANNOTATION
        ));
    };
    let m = keyless::Material {
        payload,
        signature,
        certificate,
        bundle,
    };
    let x = keyless::Expected {
        root,
        identity: &want.identity,
        issuer: &want.issuer,
    };
    keyless::verify(&m, &x).map_err(|e| format!("keyless: {e}"))
}
