//! The manifest's `[[image-signatures]]`: which images (glob patterns on the upstream
//! reference) must carry a cosign signature by which public key.
//!
//! ```toml
//! [[image-signatures]]
//! images = ["registry.k8s.io/*", "ghcr.io/flannel-io/*"]
//! key = "keys/cosign.pub"   # beside the manifest; PKIX PEM ECDSA P-256, as cosign writes
//!
//! [[image-signatures]]       # keyless (images::keyless): all three, no key
//! images = ["ghcr.io/*"]
//! trusted-root = "sigstore/trusted_root.json"
//! identity = "release@example.com"
//! issuer = "https://accounts.example.com"
//! ```

use super::cosign::{CosignError, PublicKey};
use super::keyless::{KeylessError, TrustedRoot};
use crate::digest::Sha256;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One `[[image-signatures]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "kebab-case")]
pub struct RawPolicy {
    pub images: toml::Spanned<Vec<String>>,
    pub key: Option<toml::Spanned<String>>,
    /// Keyless (Fulcio certificate + Rekor bundle): all three, instead of `key`.
    pub trusted_root: Option<toml::Spanned<String>>,
    pub identity: Option<toml::Spanned<String>>,
    pub issuer: Option<toml::Spanned<String>>,
}

/// A policy: patterns and the key file (relative paths resolved against the manifest's dir).
/// A keyless policy names its trusted_root.json in `key`/`key_path` and has `keyless`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    pub images: Vec<String>,
    /// The key (or trusted root) file as written in the manifest (the lock records it so).
    pub key: String,
    pub key_path: PathBuf,
    pub keyless: Option<KeylessIdentity>,
}

/// The certificate identity (SAN) and OIDC issuer a keyless policy requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessIdentity {
    pub identity: String,
    pub issuer: String,
}

/// A policy as the lockfile records it: the patterns, the key file and its fingerprint, so
/// a `--locked` build refuses a policy or a key that changed since `kbundle lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPolicy {
    pub images: Vec<String>,
    pub key: String,
    /// sha256 of the key's DER SubjectPublicKeyInfo (keyless: of the trusted root file).
    pub key_sha256: Sha256,
    /// Keyless policies: the certificate identity and OIDC issuer required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// A policy with its key (or trusted root) loaded.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub policy: SignaturePolicy,
    pub verifier: Verifier,
}

/// What verifies a policy's signatures.
#[derive(Debug, Clone)]
pub enum Verifier {
    Key(PublicKey),
    /// A trusted root and the sha256 of its file.
    Keyless(TrustedRoot, Sha256),
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("image signature {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image signature key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: CosignError,
    },
    #[error("image signature trusted root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: KeylessError,
    },
}

/// Checks one raw policy: at least one pattern, none empty, a key path. `Err` is the byte
/// offset and message of the first problem.
pub fn validate(raw: RawPolicy, manifest: &Path) -> Result<SignaturePolicy, (usize, String)> {
    let span = raw.images.span().start;
    let images = raw.images.get_ref().clone();
    if images.is_empty() || images.iter().any(|p| p.trim().is_empty()) {
        return Err((span, "image-signatures: images must list non-empty patterns".into()));
    }
    let dir = manifest.parent().unwrap_or(Path::new(""));
    if raw.trusted_root.is_some() || raw.identity.is_some() || raw.issuer.is_some() {
        return keyless(raw, images, dir, span);
    }
    let Some(key) = raw.key.filter(|k| !k.get_ref().trim().is_empty()) else {
        return Err((span, "image-signatures: key must name a cosign public key file".into()));
    };
    let key = key.into_inner();
    Ok(SignaturePolicy {
        images,
        key_path: dir.join(&key),
        key,
        keyless: None,
    })
}

/// A keyless policy: trusted-root, identity and issuer all given, no key.
fn keyless(raw: RawPolicy, images: Vec<String>, dir: &Path, span: usize) -> Result<SignaturePolicy, (usize, String)> {
    if let Some(k) = raw.key {
        return Err((
            k.span().start,
            "image-signatures: give either key or trusted-root, identity and issuer".into(),
        ));
    }
    let given = |v: Option<toml::Spanned<String>>, what: &str| match v.map(|v| v.into_inner()) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err((
            span,
            format!("image-signatures: keyless verification needs {what} (with trusted-root, identity and issuer)"),
        )),
    };
    let root = given(raw.trusted_root, "trusted-root")?;
    let identity = given(raw.identity, "identity")?;
    let issuer = given(raw.issuer, "issuer")?;
    Ok(SignaturePolicy {
        images,
        key_path: dir.join(&root),
        key: root,
        keyless: Some(KeylessIdentity { identity, issuer }),
    })
}

impl SignaturePolicy {
    pub fn load(&self) -> Result<LoadedPolicy, PolicyError> {
        let path = self.key_path.clone();
        let what = if self.keyless.is_some() { "trusted root" } else { "key" };
        let text = std::fs::read(&path).map_err(|source| PolicyError::Read {
            what,
            path: path.clone(),
            source,
        })?;
        let verifier = if self.keyless.is_some() {
            let root = TrustedRoot::from_json(&text).map_err(|source| PolicyError::Root { path, source })?;
            Verifier::Keyless(root, Sha256::of(&text))
        } else {
            Verifier::Key(PublicKey::from_pem(&text).map_err(|source| PolicyError::Key { path, source })?)
        };
        Ok(LoadedPolicy {
            policy: self.clone(),
            verifier,
        })
    }

    pub fn covers(&self, reference: &str) -> bool {
        self.images.iter().any(|p| glob(p, reference))
    }
}

impl LoadedPolicy {
    pub fn locked(&self) -> LockedPolicy {
        LockedPolicy {
            images: self.policy.images.clone(),
            key: self.policy.key.clone(),
            key_sha256: match &self.verifier {
                Verifier::Key(k) => k.fingerprint(),
                Verifier::Keyless(_, sha) => *sha,
            },
            identity: self.policy.keyless.as_ref().map(|k| k.identity.clone()),
            issuer: self.policy.keyless.as_ref().map(|k| k.issuer.clone()),
        }
    }
}

/// The first policy covering `reference`, if any.
pub fn policy_for<'a>(policies: &'a [LoadedPolicy], reference: &str) -> Option<&'a LoadedPolicy> {
    policies.iter().find(|p| p.policy.covers(reference))
}

/// Glob match of a whole reference: `*` matches any run of characters (`/` included, so
/// `registry.k8s.io/*` covers `registry.k8s.io/coredns/coredns:v1.12.1`), `?` one
/// character, everything else itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use crate::manifest::Manifest;
    use std::path::Path;

    const BASE: &str = "schema = 1\n[kubernetes]\nversion = \"v1.34.3\"\n[components]\ncontainerd = \"2.1.5\"\nrunc = \"1.3.4\"\ncni-plugins = \"1.8.0\"\ncrictl = \"1.34.0\"\netcd = \"3.5.25\"\n";

    #[test]
    fn manifest_section_resolves_keys_beside_the_manifest() {
        let src = format!("{BASE}[[image-signatures]]\nimages = [\"registry.k8s.io/*\"]\nkey = \"keys/cosign.pub\"\n");
        let m = Manifest::parse(Path::new("/m/k.toml"), &src).unwrap();
        let p = &m.image_signatures[0];
        assert_eq!(p.key_path, Path::new("/m/keys/cosign.pub"));
        assert!(p.covers("registry.k8s.io/pause:3.10.1") && !p.covers("docker.io/library/nginx:1"));
    }

    #[test]
    fn manifest_section_errors_name_line_and_column() {
        let src = format!("{BASE}[[image-signatures]]\nimages = []\nkey = \"k.pub\"\n");
        let e = Manifest::parse(Path::new("k.toml"), &src).unwrap_err().to_string();
        assert!(
            e.starts_with("k.toml:11:10:") && e.contains("non-empty patterns"),
            "{e}"
        );
        let src = format!("{BASE}[[image-signatures]]\nimages = [\"a/*\"]\n");
        let e = Manifest::parse(Path::new("k.toml"), &src).unwrap_err().to_string();
        assert!(e.contains("key"), "{e}");
        let src = format!("{BASE}[[image-signatures]]\nimages = [\"a/*\"]\nkey = \"k\"\nidentity = \"x\"\n");
        let e = Manifest::parse(Path::new("k.toml"), &src).unwrap_err().to_string();
        assert!(
            e.starts_with("k.toml:12:7:") && e.contains("either key or trusted-root"),
            "{e}"
        );
        let src =
            format!("{BASE}[[image-signatures]]\nimages = [\"a/*\"]\ntrusted-root = \"r.json\"\nidentity = \"x\"\n");
        let e = Manifest::parse(Path::new("k.toml"), &src).unwrap_err().to_string();
        assert!(e.contains("keyless verification needs issuer"), "{e}");
        let src = format!("{BASE}[[image-signatures]]\nimages = [\"a/*\"]\nkey = \"k\"\nkeys = \"x\"\n");
        let e = Manifest::parse(Path::new("k.toml"), &src).unwrap_err().to_string();
        assert!(e.contains("keys"), "{e}");
    }

    #[test]
    fn keyless_policies_name_a_trusted_root_identity_and_issuer() {
        let src = format!("{BASE}[[image-signatures]]\nimages = [\"ghcr.io/*\"]\ntrusted-root = \"sig/trusted_root.json\"\nidentity = \"a@example.com\"\nissuer = \"https://issuer.example\"\n");
        let m = Manifest::parse(Path::new("/m/k.toml"), &src).unwrap();
        let p = &m.image_signatures[0];
        assert_eq!(p.key_path, Path::new("/m/sig/trusted_root.json"));
        let k = p.keyless.as_ref().unwrap();
        assert_eq!(
            (k.identity.as_str(), k.issuer.as_str()),
            ("a@example.com", "https://issuer.example")
        );
        let e = p.load().unwrap_err().to_string();
        assert!(e.contains("trusted root /m/sig/trusted_root.json"), "{e}");
    }

    #[test]
    fn missing_or_bad_key_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = super::SignaturePolicy {
            images: vec!["*".into()],
            key: "k.pub".into(),
            key_path: dir.path().join("k.pub"),
            keyless: None,
        };
        let e = p.load().unwrap_err().to_string();
        assert!(e.contains("k.pub"), "{e}");
        std::fs::write(dir.path().join("k.pub"), "not pem").unwrap();
        let e = p.load().unwrap_err().to_string();
        assert!(e.contains("k.pub") && e.contains("PEM"), "{e}");
    }
}
