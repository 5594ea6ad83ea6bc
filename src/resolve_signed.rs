//! Clear-signed checksum files, verified before any digest is read from them.

use super::ResolveError;
use crate::catalog::clearsign::{self, Verified};
use crate::catalog::{ChecksumFormat, FileArtifact};
use crate::manifest::Manifest;
use std::collections::BTreeMap;

/// Verifies each fetched clear-signed checksum file against its keyring; only the signed text
/// is kept (docs/upstream-facts.md, "runc release signatures").
pub(super) fn verify_signed<'a>(
    m: &Manifest,
    files: &[FileArtifact],
    bodies: &BTreeMap<&'a str, Vec<u8>>,
) -> Result<BTreeMap<&'a str, Verified>, ResolveError> {
    let mut out = BTreeMap::new();
    for (url, body) in bodies {
        let Some(f) = files.iter().find(|f| {
            f.checksum
                .as_ref()
                .is_some_and(|c| c.url == *url && c.format == ChecksumFormat::ClearSigned)
        }) else {
            continue;
        };
        let err = |source| ResolveError::Signature {
            name: f.name.clone(),
            url: url.to_string(),
            source,
        };
        let keyring = clearsign::keyring_for(f.component, m).map_err(err)?;
        let verified = keyring.verify(&String::from_utf8_lossy(body)).map_err(err)?;
        out.insert(*url, verified);
    }
    Ok(out)
}
