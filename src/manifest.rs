//! The manifest: a short TOML file of pinned versions (`manifests/*.toml`).
//!
//! Parsing is strict: unknown keys, bad versions and bad digests are errors that name the
//! file, line and column. See `manifests/README.md` for the format.

use crate::digest::Sha256;
use crate::image_ref::ImageRef;
use crate::version::Version;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The manifest schema this build of kbundle reads.
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Read(#[from] crate::fsutil::TextError),
    #[error("manifest {path} is a directory: give the manifest file itself (e.g. manifests/kubernetes-v1.34.3.toml)")]
    IsDir { path: PathBuf },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}:{column}: {source}")]
    Mirror {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: crate::fetch::mirror::MirrorError,
    },
}

/// A CPU architecture kbundle can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(&self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// `linux/amd64`
    pub fn platform(&self) -> String {
        format!("linux/{}", self.as_str())
    }
    /// The arch of the machine running kbundle, if it is one we target.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    schema: Spanned<u32>,
    name: Option<Spanned<String>>,
    arches: Option<Spanned<Vec<Arch>>>,
    kubernetes: RawKubernetes,
    components: Components,
    #[serde(default)]
    addons: Addons,
    #[serde(default)]
    images: RawImages,
    #[serde(default)]
    sha256: BTreeMap<String, Spanned<Sha256>>,
    #[serde(default)]
    mirrors: BTreeMap<String, Spanned<String>>,
    #[serde(default, rename = "upstream-keys")]
    upstream_keys: UpstreamKeys,
    #[serde(default, rename = "image-signatures")]
    image_signatures: Vec<crate::images::policy::RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    version: Version,
}

/// Pinned versions of the node runtime components.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Components {
    pub containerd: Version,
    pub runc: Version,
    pub cni_plugins: Version,
    pub crictl: Version,
    pub etcd: Version,
}

/// Pinned add-on versions; an absent add-on is not bundled.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Addons {
    pub flannel: Option<Version>,
    pub metrics_server: Option<Version>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImages {
    pause: Option<Spanned<String>>,
    etcd: Option<Spanned<String>>,
    coredns: Option<Spanned<String>>,
    #[serde(default)]
    extra: Vec<ImageRef>,
}

/// Overrides of kubeadm's image tags, and extra images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOverrides {
    pub pause: Option<String>,
    pub etcd: Option<String>,
    pub coredns: Option<String>,
    pub extra: Vec<ImageRef>,
}

/// A sha256 pinned in the manifest for one file, keyed by upstream URL or bundle path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub key: String,
    pub sha256: Sha256,
    pub line: usize,
    pub column: usize,
}

/// `[upstream-keys]`: keyring files (relative to the manifest) that replace kbundle's pinned
/// ones, e.g. for a mirror that re-signs; see src/catalog/clearsign.rs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamKeys {
    pub runc: Option<PathBuf>,
}

/// A URL-prefix rewrite `from = to` declared in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRule {
    pub from: String,
    pub to: String,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub name: String,
    pub arches: Vec<Arch>,
    pub kubernetes: Version,
    pub components: Components,
    pub addons: Addons,
    pub images: ImageOverrides,
    pub pins: Vec<Pin>,
    pub mirrors: Vec<MirrorRule>,
    pub upstream_keys: UpstreamKeys,
    /// `[[image-signatures]]`: images that must carry a cosign signature by a key.
    pub image_signatures: Vec<crate::images::policy::SignaturePolicy>,
}

/// Turns a byte offset into 1-based (line, column); the column counts characters.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    line_cols(src, &[offset])[0]
}

/// [`line_col`] for many offsets in one pass over `src` (sorted sweep), so a manifest with
/// many pins costs O(len + pins log pins), not O(len x pins).
pub fn line_cols(src: &str, offsets: &[usize]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..offsets.len()).collect();
    order.sort_by_key(|&i| offsets[i]);
    let mut out = vec![(1, 1); offsets.len()];
    let (mut line, mut col) = (1, 1);
    let mut chars = src.char_indices().peekable();
    for i in order {
        while let Some(&(at, c)) = chars.peek() {
            if at >= offsets[i] {
                break;
            }
            chars.next();
            if c == '\n' {
                (line, col) = (line + 1, 1);
            } else {
                col += 1;
            }
        }
        out[i] = (line, col);
    }
    out
}

/// Is `name` safe as a file and directory name (bundle names, node names)?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The manifest text being parsed: every error names its file, line and column.
struct Text<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Text<'_> {
    fn invalid(&self, offset: usize, message: String) -> ManifestError {
        let (line, column) = line_col(self.src, offset);
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    fn check_schema(&self, schema: &Spanned<u32>) -> Result<(), ManifestError> {
        if *schema.get_ref() == SCHEMA {
            return Ok(());
        }
        Err(self.invalid(
            schema.span().start,
            format!(
                "unsupported manifest schema {}: this kbundle reads schema {SCHEMA}",
                schema.get_ref()
            ),
        ))
    }

    /// The bundle's name: as given (a safe file name), else `kubernetes-v<version>`.
    fn name(&self, name: Option<Spanned<String>>, kubernetes: Version) -> Result<String, ManifestError> {
        let Some(n) = name else {
            return Ok(format!("kubernetes-{}", kubernetes.with_v()));
        };
        if !valid_name(n.get_ref()) {
            return Err(self.invalid(
                n.span().start,
                format!(
                    "invalid name {:?}: use letters, digits, '.', '_' and '-' (it names the bundle archive)",
                    n.get_ref()
                ),
            ));
        }
        Ok(n.into_inner())
    }

    /// Target arches, sorted and without repeats; amd64 when not given.
    fn arches(&self, arches: Option<Spanned<Vec<Arch>>>) -> Result<Vec<Arch>, ManifestError> {
        let Some(a) = arches else {
            return Ok(vec![Arch::Amd64]);
        };
        let span = a.span();
        let mut v = a.into_inner();
        if v.is_empty() {
            return Err(self.invalid(span.start, "arches must name at least one of amd64, arm64".into()));
        }
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// `[images]`: tag overrides checked, extra images as given.
    fn images(&self, raw: RawImages) -> Result<ImageOverrides, ManifestError> {
        let mut images = ImageOverrides {
            extra: raw.extra,
            ..Default::default()
        };
        for (slot, value, what) in [
            (&mut images.pause, raw.pause, "pause"),
            (&mut images.etcd, raw.etcd, "etcd"),
            (&mut images.coredns, raw.coredns, "coredns"),
        ] {
            let Some(v) = value else { continue };
            if !crate::image_ref::valid_tag(v.get_ref()) {
                return Err(self.invalid(v.span().start, format!("invalid {what} image tag {:?}", v.get_ref())));
            }
            *slot = Some(v.into_inner());
        }
        Ok(images)
    }

    /// `[sha256]` pins with their line and column (one pass over the text for all of them).
    fn pins(&self, raw: BTreeMap<String, Spanned<Sha256>>) -> Vec<Pin> {
        let offsets: Vec<usize> = raw.values().map(|v| v.span().start).collect();
        raw.into_iter()
            .zip(line_cols(self.src, &offsets))
            .map(|((key, v), (line, column))| Pin {
                key,
                sha256: v.into_inner(),
                line,
                column,
            })
            .collect()
    }

    fn mirrors(&self, raw: BTreeMap<String, Spanned<String>>) -> Result<Vec<MirrorRule>, ManifestError> {
        raw.into_iter()
            .map(|(from, to)| {
                crate::fetch::mirror::parse_rule(&from, to.get_ref()).map_err(|source| {
                    let (line, column) = line_col(self.src, to.span().start);
                    ManifestError::Mirror {
                        path: self.path.to_path_buf(),
                        line,
                        column,
                        source,
                    }
                })
            })
            .collect()
    }
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        if path.is_dir() {
            return Err(ManifestError::IsDir {
                path: path.to_path_buf(),
            });
        }
        let src = crate::fsutil::read_text(path, "manifest", "re-save it as UTF-8")?;
        Self::parse(path, &src)
    }

    pub fn parse(path: &Path, src: &str) -> Result<Manifest, ManifestError> {
        let text = Text { path, src };
        let raw: Raw = toml::from_str(src).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            text.invalid(offset, e.message().trim().to_string())
        })?;
        text.check_schema(&raw.schema)?;
        Ok(Manifest {
            path: path.to_path_buf(),
            name: text.name(raw.name, raw.kubernetes.version)?,
            arches: text.arches(raw.arches)?,
            kubernetes: raw.kubernetes.version,
            components: raw.components,
            addons: raw.addons,
            images: text.images(raw.images)?,
            pins: text.pins(raw.sha256),
            mirrors: text.mirrors(raw.mirrors)?,
            upstream_keys: raw.upstream_keys,
            image_signatures: (raw.image_signatures.into_iter())
                .map(|p| crate::images::policy::validate(p, path).map_err(|(at, msg)| text.invalid(at, msg)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Where `kbundle lock` writes this manifest's lockfile: beside it, `.lock` for `.toml`.
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema = 1
[kubernetes]
version = "v1.34.3"
[components]
containerd = "2.1.5"
runc = "1.3.4"
cni-plugins = "1.8.0"
crictl = "1.34.0"
etcd = "3.5.25"
"#;

    fn parse(src: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("m.toml"), src)
    }

    #[test]
    fn minimal_defaults() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "kubernetes-v1.34.3");
        assert_eq!(m.arches, vec![Arch::Amd64]);
        assert_eq!(m.addons, Addons::default());
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let src = GOOD.replace("runc = \"1.3.4\"", "runc = \"1.3.4\"\nrunk = \"1\"");
        let e = parse(&src).unwrap_err().to_string();
        assert!(e.starts_with("m.toml:8:1:"), "{e}");
        assert!(e.contains("runk"), "{e}");
    }

    #[test]
    fn bad_version_names_line_and_column() {
        let src = GOOD.replace("\"2.1.5\"", "\"2.1\"");
        let e = parse(&src).unwrap_err().to_string();
        assert!(e.starts_with("m.toml:6:14:"), "{e}");
        assert!(e.contains("2.1"), "{e}");
    }

    #[test]
    fn wrong_schema() {
        let e = parse(&GOOD.replace("schema = 1", "schema = 2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema 2"), "{e}");
    }

    #[test]
    fn bad_arch() {
        let e = parse(&format!("arches = [\"s390x\"]\n{GOOD}")).unwrap_err().to_string();
        assert!(e.starts_with("m.toml:1:"), "{e}");
    }

    #[test]
    fn line_cols_match_a_naive_scan() {
        let src = "ab\nc\u{e9}d\n\nxyz";
        let naive = |off: usize| {
            let before = &src[..off];
            let line = before.matches('\n').count() + 1;
            (line, before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1)
        };
        let offsets: Vec<usize> = (0..=src.len()).filter(|&o| src.is_char_boundary(o)).rev().collect();
        let got = line_cols(src, &offsets);
        for (o, g) in offsets.iter().zip(got) {
            assert_eq!(g, naive(*o), "offset {o}");
        }
        assert_eq!(line_col(src, 10_000), naive(src.len()));
    }

    #[test]
    fn not_utf8_names_offset_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        let mut bytes = GOOD.as_bytes().to_vec();
        let at = GOOD.find("runc").unwrap() + 2;
        bytes[at] = 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let e = Manifest::load(&p).unwrap_err().to_string();
        let want = format!("{}:7:3: not UTF-8: byte 0xff at byte offset {at}", p.display());
        assert!(e.starts_with(&want), "{e}");
    }

    #[test]
    fn missing_and_directory_manifests_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = Manifest::load(&dir.path().join("nope.toml")).unwrap_err().to_string();
        assert!(
            e.contains("nope.toml") && e.contains("no such file: check the path"),
            "{e}"
        );
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&dir.path().display().to_string()) && e.contains("is a directory"),
            "{e}"
        );
    }

    #[test]
    fn image_tag_overrides_follow_the_reference_grammar() {
        let src = GOOD.replace("[kubernetes]", "[images]\npause = \"-3.10\"\n[kubernetes]");
        let e = parse(&src).unwrap_err().to_string();
        assert!(
            e.starts_with("m.toml:4:9:") && e.contains("invalid pause image tag"),
            "{e}"
        );
        let src = GOOD.replace("[kubernetes]", "[images]\npause = \"3.10\"\n[kubernetes]");
        assert_eq!(parse(&src).unwrap().images.pause.as_deref(), Some("3.10"));
    }

    #[test]
    fn bad_pin() {
        let e = parse(&format!("{GOOD}[sha256]\n\"files/x\" = \"abc\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m.toml:12:13:"), "{e}");
    }
}
