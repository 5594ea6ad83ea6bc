//! Package URLs of the `oci` type (docs/upstream-facts.md, "SBOM: SPDX 2.3 and purl"):
//! `pkg:oci/<name>@sha256:<hex>?arch=…&repository_url=…&tag=…`, in the canonical form (name
//! lowercased, qualifiers sorted by key, values percent-encoded).

use crate::digest::Sha256;
use crate::image_ref::ImageRef;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the purl spec's unreserved characters is percent-encoded in a value.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'_').remove(b'~');

/// The purl of `digest` in `r`'s repository; `platform` (`linux/amd64`) adds `arch`.
pub fn oci(r: &ImageRef, digest: &Sha256, platform: Option<&str>) -> String {
    // The name is the last fragment of the repository, lowercased.
    let name = r.repository.rsplit('/').next().unwrap_or(&r.repository).to_lowercase();
    let mut q: Vec<(&str, String)> = vec![("repository_url", r.name())];
    if let Some(arch) = platform.and_then(|p| p.split('/').nth(1)) {
        q.push(("arch", arch.to_string()));
    }
    if let Some(t) = &r.tag {
        q.push(("tag", t.clone()));
    }
    q.sort();
    let qs: Vec<String> = q
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, VALUE)))
        .collect();
    format!(
        "pkg:oci/{}@{}?{}",
        utf8_percent_encode(&name, VALUE),
        digest.oci(),
        qs.join("&")
    )
}
