//! `bundle.json` and `SHA256SUMS`: what a bundle holds, and the rules for entry paths.

use super::fields::{KubeVersion, Platform, SafeName, Token};
use crate::digest::Sha256;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The bundle format version this kbundle writes and reads.
pub const BUNDLE_SCHEMA: u32 = 1;
pub const BUNDLE_JSON: &str = "bundle.json";
pub const SHA256SUMS: &str = "SHA256SUMS";
/// The minisign signature of `bundle.json` (signed bundles only; not an entry, not in SHA256SUMS).
pub const BUNDLE_JSON_SIG: &str = "bundle.json.minisig";
pub const INSTALLER: &str = "kbundle";
pub const LOCKFILE: &str = "kbundle.lock";
/// Largest `bundle.json`/`SHA256SUMS` kbundle will read (a hostile bundle could claim more).
pub const MAX_META_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// An upstream artifact under `files/`.
    File,
    /// An OCI blob under `images/blobs/`.
    Blob,
    /// Bundle metadata: `kbundle.lock`, `images/index.json`, `images/oci-layout`.
    Meta,
    /// The installer executable (this program).
    Installer,
    /// Kickstart files.
    Kickstart,
}

/// One file of the bundle, relative to the bundle's top directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub sha256: Sha256,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Upstream URL the file was fetched from (never a mirror's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Delta bundles: the file is not in this bundle but in its base (same digest).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_base: bool,
}

/// One Kubernetes version a bundle can install or upgrade to. A plain bundle has one hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    pub kubernetes: KubeVersion,
    /// Entry paths of this hop's files.
    pub files: Vec<String>,
    /// Image references of this hop.
    #[serde(default)]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleJson {
    pub schema: u32,
    /// The top directory of the archive, and the directory name nodes unpack to.
    pub name: SafeName,
    pub kbundle_version: Token,
    pub kubernetes: KubeVersion,
    pub platforms: Vec<Platform>,
    pub components: BTreeMap<SafeName, Token>,
    pub hops: Vec<Hop>,
    /// For upgrade bundles: the cluster version the first hop starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_from: Option<KubeVersion>,
    /// For delta bundles: the bundle whose content this one leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// Images in `images/` (an OCI layout), pinned to upstream digests.
    #[serde(default)]
    pub images: Vec<crate::images::LockedImage>,
    pub entries: Vec<Entry>,
}

/// The base of a delta bundle: its name and the sha256 of its `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    pub name: SafeName,
    pub bundle_json_sha256: Sha256,
}

impl BundleJson {
    /// Canonical bytes: pretty JSON, fields in declaration order, entries sorted by path.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("bundle.json is not valid: {0}")]
    Json(String),
    #[error("bundle.json has schema {found}; this kbundle reads schema {BUNDLE_SCHEMA} (use the kbundle shipped inside that bundle)")]
    Schema { found: u32 },
    #[error("bundle.json field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("bundle.json lists an unsafe path {}: {reason}", super::fields::shown(path))]
    UnsafePath { path: String, reason: &'static str },
    #[error("bundle.json lists {} more than once or out of order", super::fields::shown(path))]
    Unsorted { path: String },
    #[error("SHA256SUMS line {line}: {reason}")]
    Sums { line: usize, reason: String },
}

impl BundleJson {
    /// Parses and validates every field (see [`super::rules`]): a `BundleJson` obtained
    /// here holds only safe names, strict versions, known platforms and entry paths that
    /// follow the bundle format.
    pub fn parse(bytes: &[u8]) -> Result<BundleJson, MetaError> {
        #[derive(Deserialize)]
        struct SchemaOnly {
            schema: u32,
        }
        let s: SchemaOnly = serde_json::from_slice(bytes).map_err(|e| MetaError::Json(e.to_string()))?;
        if s.schema != BUNDLE_SCHEMA {
            return Err(MetaError::Schema { found: s.schema });
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let b: BundleJson = serde_path_to_error::deserialize(&mut de).map_err(|e| MetaError::Field {
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
        de.end().map_err(|e| MetaError::Json(e.to_string()))?;
        super::rules::validate(&b)?;
        Ok(b)
    }
}

/// Checks that a bundle-relative path is plain: relative, `/`-separated, printable ASCII
/// without spaces or backslashes, no `.`/`..`/empty components, and of sane length.
pub fn check_rel_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty path");
    }
    if p.len() > 1024 {
        return Err("path longer than 1024 bytes");
    }
    if p.starts_with('/') {
        return Err("absolute path");
    }
    if p.bytes().any(|b| !(0x21..=0x7e).contains(&b) || b == b'\\') {
        return Err("only printable ASCII without spaces or backslashes is allowed in paths");
    }
    for c in p.split('/') {
        match c {
            "" => return Err("empty path component (// or trailing /)"),
            "." => return Err("'.' path component"),
            ".." => return Err("'..' path component"),
            _ => {}
        }
        if c.len() > 255 {
            return Err("path component longer than 255 bytes");
        }
    }
    Ok(())
}

/// `SHA256SUMS`, checkable with `sha256sum -c` from inside the bundle directory. It covers
/// every entry and `bundle.json` itself, sorted by path.
pub fn render_sums(bundle_json: &Sha256, entries: &[Entry]) -> Vec<u8> {
    let mut lines: Vec<(&str, String)> = entries
        .iter()
        .filter(|e| !e.in_base)
        .map(|e| (e.path.as_str(), e.sha256.hex()))
        .collect();
    lines.push((BUNDLE_JSON, bundle_json.hex()));
    lines.sort();
    let mut out = String::new();
    for (p, h) in lines {
        out.push_str(&h);
        out.push_str("  ");
        out.push_str(p);
        out.push('\n');
    }
    out.into_bytes()
}

/// Parses `SHA256SUMS` strictly into path → digest.
pub fn parse_sums(bytes: &[u8]) -> Result<BTreeMap<String, Sha256>, MetaError> {
    let text = std::str::from_utf8(bytes).map_err(|_| MetaError::Sums {
        line: 0,
        reason: "not UTF-8".into(),
    })?;
    let mut out = BTreeMap::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(MetaError::Sums {
            line: text.lines().count(),
            reason: "last line has no newline".into(),
        });
    }
    for (i, line) in text.split_terminator('\n').enumerate() {
        let bad = |reason: &str| MetaError::Sums {
            line: i + 1,
            reason: format!("{reason}: {:?}", line.chars().take(120).collect::<String>()),
        };
        let sum = crate::catalog::checksum::sum_line(i, line).map_err(|_| bad("expected '<sha256>  <path>'"))?;
        // kbundle writes one form only: lowercase hex, two spaces, the plain bundle path.
        if line != format!("{}  {}", sum.digest, sum.name) {
            return Err(bad("not in the form kbundle writes ('<lowercase sha256>  <path>')"));
        }
        check_rel_path(sum.name).map_err(bad)?;
        if out.insert(sum.name.to_string(), sum.digest).is_some() {
            return Err(bad("path listed twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        for ok in ["a", "files/x/1.2.3/linux-amd64/kubeadm", "images/blobs/sha256/ab"] {
            assert!(check_rel_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            "./a",
            "a\\b",
            "a\0b",
            "a\nb",
            "a b",
            "é",
        ] {
            assert!(check_rel_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sums_roundtrip() {
        let e = Entry {
            path: "files/a".into(),
            size: 1,
            sha256: Sha256::of(b"a"),
            kind: EntryKind::File,
            executable: false,
            component: None,
            version: None,
            platform: None,
            url: None,
            in_base: false,
        };
        let bj = Sha256::of(b"{}");
        let s = render_sums(&bj, std::slice::from_ref(&e));
        let m = parse_sums(&s).unwrap();
        assert_eq!(m.get("files/a"), Some(&e.sha256));
        assert_eq!(m.get(BUNDLE_JSON), Some(&bj));
        assert!(parse_sums(b"abc  x\n").is_err());
        let mut t = s.clone();
        t.pop();
        assert!(parse_sums(&t).is_err());
        // Only the form kbundle writes: no uppercase, `*`, `./`, CR, blank line or repeat.
        let d = e.sha256.hex();
        for bad in [
            format!("{}  files/a\n", d.to_uppercase()),
            format!("{d} *files/a\n"),
            format!("{d}  ./files/a\n"),
            format!("{d}  files/a\r\n"),
            format!("{d}  files/a\n\n"),
            format!("{d}  ../a\n"),
            format!("{d}  files/a\n{d}  files/a\n"),
        ] {
            assert!(parse_sums(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
