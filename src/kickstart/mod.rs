//! Kickstarts for air-gapped Rocky Linux nodes (`kbundle kickstart`) and install media that
//! carry them (`kbundle iso`).
//!
//! [`render`] turns a cluster config, a node and a bundle into a kickstart from the templates
//! in `kickstart/` (embedded at build time); [`validate`] checks the result before anything is
//! written; [`write`] writes the kickstarts and `cluster.toml` (secrets mode 0600, every file
//! atomically); [`iso`] remasters a Rocky install ISO with the bundle and the kickstarts.
//! The media layout and the secrets policy are documented in `kickstart/README.md`.

pub mod bootcfg;
mod inputs;
pub mod iso;
pub mod media;
mod menus;
pub mod render;
pub mod validate;
mod values;
mod xorriso;

use crate::digest::Sha256;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use render::{render_all, Rendered};

/// The release a kickstart is written for: commands and package names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Release {
    /// Rocky Linux 10 (pykickstart handler RHEL10).
    Rocky10,
    /// Rocky Linux 9 (pykickstart handler RHEL9).
    Rocky9,
}

impl Release {
    pub fn as_str(&self) -> &'static str {
        match self {
            Release::Rocky10 => "rocky10",
            Release::Rocky9 => "rocky9",
        }
    }
    pub fn parse(s: &str) -> Option<Release> {
        match s {
            "rocky10" => Some(Release::Rocky10),
            "rocky9" => Some(Release::Rocky9),
            _ => None,
        }
    }
    /// The pykickstart handler that checks this release's syntax (`ksvalidator -v`).
    pub fn ksvalidator_version(&self) -> &'static str {
        match self {
            Release::Rocky10 => "RHEL10",
            Release::Rocky9 => "RHEL9",
        }
    }
    pub fn display_name(&self) -> &'static str {
        match self {
            Release::Rocky10 => "Rocky Linux 10",
            Release::Rocky9 => "Rocky Linux 9",
        }
    }
}

/// Where things live on the install media (written by `kbundle iso`) and on the node.
pub mod layout {
    /// Directory at the media root holding the bundle, its sidecar, the installer and cluster.toml.
    pub const MEDIA_DIR: &str = "kbundle";
    /// Where the installer mounts the media.
    pub const MEDIA_MOUNT: &str = "/run/install/repo";
    pub const NODE_BUNDLE_DIR: &str = "/var/lib/kbundle";
    pub const NODE_INSTALLER: &str = "/var/lib/kbundle/kbundle";
    pub const NODE_CONFIG: &str = "/etc/kbundle/cluster.toml";
    pub const BOOTSTRAP_DONE: &str = "/var/lib/kbundle/bootstrap.done";
    pub const BOOTSTRAP_UNIT: &str = "kbundle-bootstrap.service";
    /// The copy of the cluster config written beside the kickstarts (and put on the media).
    pub const CONFIG_FILE: &str = "cluster.toml";
}

/// What a kickstart needs to know about the bundle it installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRef {
    /// The archive's file name, e.g. `kubernetes-v1.34.3.tar.zst`.
    pub archive_name: String,
    /// sha256 of the archive file.
    pub archive_sha256: Sha256,
    /// sha256 of the installer (`kbundle` entry of bundle.json).
    pub installer_sha256: Sha256,
    /// `--trusted-key`s: the %post writes each into the node's trust store before
    /// `kbundle install` runs, so the node requires a signature by one of them.
    pub trusted_keys: Vec<KeyLine>,
}

/// A public key as the %post writes it: `/etc/kbundle/trusted-keys/<id>.pub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    /// 16 hex digits (checked: it names a file).
    pub id: String,
    /// minisign's base64 line (`RW…`; only base64 characters).
    pub base64: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KickstartError {
    #[error("{path}:{line}: {field}: {message}")]
    Config {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{path}: no [[node]] in the cluster config: add one per machine to kickstart")]
    NoNodes { path: PathBuf },
    #[error("no node {name:?} in {path} (nodes: {known})")]
    UnknownNode { name: String, path: PathBuf, known: String },
    #[error("bundle {path}: {message}")]
    Bundle { path: PathBuf, message: String },
    #[error(
        "sidecar {path}: {source} (it must list the archive beside it: rename both together, or remove the sidecar)"
    )]
    Sidecar {
        path: PathBuf,
        #[source]
        source: crate::catalog::checksum::ChecksumError,
    },
    #[error(transparent)]
    Meta(#[from] crate::bundle::ReadMetaError),
    #[error("bundle {path}: {source}")]
    Archive {
        path: PathBuf,
        #[source]
        source: Box<crate::bundle::verified::SourceError>,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {template}: {message} (a kbundle bug)")]
    Template { template: &'static str, message: String },
    #[error("{} problem(s) in the rendered kickstarts, nothing written:\n{}", .0.len(), validate::list(.0))]
    Invalid(Vec<validate::Problem>),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KickstartError {
    let path = path.to_path_buf();
    move |source| KickstartError::Io { what, path, source }
}

/// One file `write` put in place.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub mode: u32,
    /// What secrets it holds (empty: none).
    pub secrets: Vec<String>,
}

/// Writes `out/<node>.ks` for each rendered kickstart and `out/cluster.toml` (mode 0600,
/// the exact bytes the kickstarts' digest was taken of). Call [`validate::check`] first:
/// everything is staged in temp files inside `out`, then each is renamed into place.
pub fn write(out: &Path, config_bytes: &[u8], rendered: &[Rendered]) -> Result<Vec<Written>, KickstartError> {
    std::fs::create_dir_all(out).map_err(io_err("cannot create", out))?;
    let mut staged = Vec::new();
    let config = out.join(layout::CONFIG_FILE);
    // Always 0600: it may hold [join] secrets, and nodes keep it 0600 too.
    staged.push((stage(&config, config_bytes, 0o600)?, config.clone(), 0o600, Vec::new()));
    for r in rendered {
        let path = out.join(&r.file_name);
        let mode = r.mode();
        staged.push((stage(&path, r.text.as_bytes(), mode)?, path, mode, r.secrets.clone()));
    }
    let mut written = Vec::new();
    for (tmp, path, mode, secrets) in staged {
        tmp.persist(&path).map_err(|e| KickstartError::Io {
            what: "cannot write",
            path: path.clone(),
            source: e.error,
        })?;
        written.push(Written { path, mode, secrets });
    }
    Ok(written)
}

/// Writes `data` to a synced temp file beside `path` with `mode`; persist it to finish.
pub(crate) fn stage(path: &Path, data: &[u8], mode: u32) -> Result<tempfile::NamedTempFile, KickstartError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = crate::fsutil::temp_beside(path).map_err(io_err("cannot create a temp file in", dir))?;
    set_mode(tmp.path(), mode)?;
    tmp.write_all(data).map_err(io_err("cannot write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err("cannot write", tmp.path()))?;
    Ok(tmp)
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), KickstartError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set the mode of", path))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The machine-readable header lines of a kickstart `kbundle kickstart` wrote; `kbundle iso`
/// reads them to check that the kickstarts, the bundle and cluster.toml belong together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KsInfo {
    pub node: String,
    pub release: Release,
    pub archive_name: String,
    pub archive_sha256: Sha256,
    pub installer_sha256: Sha256,
    pub config_sha256: Sha256,
    /// True when the header says the file holds secrets.
    pub secrets: bool,
}

pub(crate) const HDR_NODE: &str = "# kbundle-node: ";
pub(crate) const HDR_RELEASE: &str = "# kbundle-os: ";
pub(crate) const HDR_BUNDLE: &str = "# kbundle-bundle: ";
pub(crate) const HDR_INSTALLER: &str = "# kbundle-installer: sha256:";
pub(crate) const HDR_CONFIG: &str = "# kbundle-config: sha256:";
pub(crate) const HDR_SECRETS: &str = "# contains secrets: ";

/// A kickstart header that `kbundle kickstart` did not write as it stands.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("unknown release {0:?}")]
    UnknownRelease(String),
    #[error("bad bundle line {0:?}")]
    BadBundleLine(String),
    #[error("bad sha256 in {line:?}: {source}")]
    BadDigest {
        line: String,
        #[source]
        source: crate::digest::DigestError,
    },
    #[error("kbundle header without its {0} line")]
    Missing(&'static str),
}

/// The header lines read so far.
#[derive(Default)]
struct HeaderFields {
    node: Option<String>,
    release: Option<Release>,
    bundle: Option<(String, Sha256)>,
    installer: Option<Sha256>,
    config: Option<Sha256>,
    secrets: Option<bool>,
}

fn header_digest(line: &str, hex: &str) -> Result<Sha256, HeaderError> {
    hex.trim().parse().map_err(|source| HeaderError::BadDigest {
        line: line.to_string(),
        source,
    })
}

impl HeaderFields {
    fn read(&mut self, line: &str) -> Result<(), HeaderError> {
        if let Some(v) = line.strip_prefix(HDR_NODE) {
            self.node = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix(HDR_RELEASE) {
            self.release = Some(Release::parse(v.trim()).ok_or_else(|| HeaderError::UnknownRelease(v.to_string()))?);
        } else if let Some(v) = line.strip_prefix(HDR_BUNDLE) {
            let (name, digest) = v
                .trim()
                .split_once(" sha256:")
                .ok_or_else(|| HeaderError::BadBundleLine(line.to_string()))?;
            self.bundle = Some((name.to_string(), header_digest(line, digest)?));
        } else if let Some(v) = line.strip_prefix(HDR_INSTALLER) {
            self.installer = Some(header_digest(line, v)?);
        } else if let Some(v) = line.strip_prefix(HDR_CONFIG) {
            self.config = Some(header_digest(line, v)?);
        } else if let Some(v) = line.strip_prefix(HDR_SECRETS) {
            self.secrets = Some(!v.starts_with("none"));
        }
        Ok(())
    }

    fn finish(self) -> Result<Option<KsInfo>, HeaderError> {
        let Some(node) = self.node else { return Ok(None) };
        let (archive_name, archive_sha256) = self.bundle.ok_or(HeaderError::Missing("kbundle-bundle"))?;
        Ok(Some(KsInfo {
            node,
            release: self.release.ok_or(HeaderError::Missing("kbundle-os"))?,
            archive_name,
            archive_sha256,
            installer_sha256: self.installer.ok_or(HeaderError::Missing("kbundle-installer"))?,
            config_sha256: self.config.ok_or(HeaderError::Missing("kbundle-config"))?,
            secrets: self.secrets.ok_or(HeaderError::Missing("contains secrets"))?,
        }))
    }
}

impl KsInfo {
    /// Parses the header of a kickstart; `None` if it was not written by `kbundle kickstart`.
    pub fn parse(text: &str) -> Result<Option<KsInfo>, HeaderError> {
        let mut fields = HeaderFields::default();
        for line in text.lines().take_while(|l| l.starts_with('#')) {
            fields.read(line)?;
        }
        fields.finish()
    }
}
