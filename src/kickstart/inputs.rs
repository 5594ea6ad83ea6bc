//! What `kbundle iso` puts on the media besides the base: the kickstarts, the cluster.toml
//! beside them and the bundle, checked to belong together before anything is written (each
//! kickstart's header records the sha256 of the bundle, its installer and cluster.toml).

use super::iso::{IsoError, IsoOptions};
use super::{layout, media, KickstartError, KsInfo};
use crate::cluster::Cluster;
use crate::digest::Sha256;
use std::path::{Path, PathBuf};

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IsoError {
    let path = path.to_path_buf();
    move |source| IsoError::Io { what, path, source }
}

/// One kickstart from the --kickstarts directory.
#[derive(Debug, Clone)]
pub(crate) struct Ks {
    pub path: PathBuf,
    pub info: KsInfo,
}

fn ks_error(dir: &Path, message: String) -> IsoError {
    IsoError::Kickstarts {
        dir: dir.to_path_buf(),
        message,
    }
}

/// Reads the kickstarts (all `*.ks`, or `<node>.ks`) and checks they were rendered together
/// from the `cluster.toml` beside them. Ordered as the nodes are in cluster.toml.
pub(crate) fn read_kickstarts(dir: &Path, node: Option<&str>) -> Result<(Vec<Ks>, PathBuf), IsoError> {
    let (config, config_bytes, cluster) = read_config(dir)?;
    let paths = kickstart_paths(dir, node)?;
    let config_digest = Sha256::of(&config_bytes);
    let mut out: Vec<(usize, Ks)> = Vec::new();
    for path in paths {
        out.push(read_one(dir, path, &config_digest, &cluster)?);
    }
    out.sort_by_key(|(i, _)| *i);
    let kss: Vec<Ks> = out.into_iter().map(|(_, k)| k).collect();
    same_bundle(dir, &kss)?;
    Ok((kss, config))
}

/// `dir/cluster.toml`: its path, exact bytes and parsed config.
fn read_config(dir: &Path) -> Result<(PathBuf, Vec<u8>, Cluster), IsoError> {
    let config = dir.join(layout::CONFIG_FILE);
    let bytes = std::fs::read(&config).map_err(|source| IsoError::ConfigUnreadable {
        dir: dir.to_path_buf(),
        path: config.clone(),
        source,
    })?;
    let cluster = Cluster::parse(&config, &String::from_utf8_lossy(&bytes)).map_err(|source| IsoError::Config {
        dir: dir.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok((config, bytes, cluster))
}

/// `dir/<node>.ks`, or every `*.ks` file in `dir` (sorted); at least one.
fn kickstart_paths(dir: &Path, node: Option<&str>) -> Result<Vec<PathBuf>, IsoError> {
    let paths: Vec<PathBuf> = match node {
        Some(n) => vec![dir.join(format!("{n}.ks"))],
        None => {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io("cannot list", dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "ks") && p.is_file())
                .collect();
            v.sort();
            v
        }
    };
    if paths.is_empty() {
        return Err(ks_error(
            dir,
            "no .ks files: run `kbundle kickstart --out DIR` first".into(),
        ));
    }
    Ok(paths)
}

/// One kickstart, checked against its file name, cluster.toml and its digest; with the
/// index of its node in cluster.toml.
fn read_one(dir: &Path, path: PathBuf, config_digest: &Sha256, cluster: &Cluster) -> Result<(usize, Ks), IsoError> {
    let text = std::fs::read_to_string(&path).map_err(io("cannot read", &path))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let info = KsInfo::parse(&text)
        .map_err(|source| IsoError::Header {
            dir: dir.to_path_buf(),
            name: name.clone(),
            source,
        })?
        .ok_or_else(|| {
            ks_error(
                dir,
                format!(
                    "{name} was not written by `kbundle kickstart` (no kbundle header): remove it or render it again"
                ),
            )
        })?;
    if name != format!("{}.ks", info.node) || !crate::manifest::valid_name(&info.node) || info.node.contains('.') {
        return Err(ks_error(
            dir,
            format!(
                "{name} says it is for node {:?}: keep the name `kbundle kickstart` gave it",
                info.node
            ),
        ));
    }
    if info.config_sha256 != *config_digest {
        return Err(ks_error(
            dir,
            format!("{name} was rendered from a cluster.toml with sha256 {}, not the cluster.toml here ({config_digest}): render the kickstarts again", info.config_sha256),
        ));
    }
    let index = cluster.nodes.iter().position(|n| n.name == info.node).ok_or_else(|| {
        ks_error(
            dir,
            format!(
                "{name}: node {} is not in cluster.toml: remove the file or render again",
                info.node
            ),
        )
    })?;
    Ok((index, Ks { path, info }))
}

/// All kickstarts were rendered for the same bundle.
fn same_bundle(dir: &Path, kss: &[Ks]) -> Result<(), IsoError> {
    let first = &kss[0].info;
    for k in &kss[1..] {
        let i = &k.info;
        if (&i.archive_name, i.archive_sha256, i.installer_sha256)
            != (&first.archive_name, first.archive_sha256, first.installer_sha256)
        {
            return Err(ks_error(
                dir,
                format!("{}.ks and {}.ks were rendered for different bundles ({} sha256:{} and {} sha256:{}): render them again together", first.node, i.node, first.archive_name, first.archive_sha256, i.archive_name, i.archive_sha256),
            ));
        }
    }
    Ok(())
}

fn bundle_err(path: &Path, message: String) -> IsoError {
    KickstartError::Bundle {
        path: path.to_path_buf(),
        message,
    }
    .into()
}

/// Checks the bundle against what the kickstarts expect, verifies it, extracts the
/// installer into `staging` and returns (installer path, sidecar path).
pub(crate) fn prepare_bundle(o: &IsoOptions, expect: &KsInfo, staging: &Path) -> Result<(PathBuf, PathBuf), IsoError> {
    let (name, digest) = expected_archive(&o.bundle, expect)?;
    let policy = crate::trust::Policy::for_build(&o.trust).map_err(|e| bundle_err(&o.bundle, e.to_string()))?;
    // Verified in full (sidecar, every entry) while the installer is extracted.
    let installer = staging.join(crate::bundle::meta::INSTALLER);
    let bj = media::extract_installer(&o.bundle, &installer, &policy)?;
    let (inst, _) = media::installer_entry(&o.bundle, &bj)?;
    if inst != expect.installer_sha256 {
        return Err(bundle_err(
            &o.bundle,
            format!(
                "its installer has sha256 {inst}, the kickstarts expect {}",
                expect.installer_sha256
            ),
        ));
    }
    let sidecar = media::sidecar_path(&o.bundle);
    if sidecar.is_file() {
        return Ok((installer, sidecar));
    }
    let generated = staging.join(format!("{name}.sha256"));
    std::fs::write(&generated, format!("{digest}  {name}\n")).map_err(io("cannot write", &generated))?;
    Ok((installer, generated))
}

/// The archive's name and sha256, which must be the ones the kickstarts were rendered for.
fn expected_archive(bundle: &Path, expect: &KsInfo) -> Result<(String, Sha256), IsoError> {
    let name = media::archive_name(bundle)?;
    if name != expect.archive_name {
        return Err(bundle_err(
            bundle,
            format!(
                "the kickstarts install {}, not {name}: pass that archive or render the kickstarts for this one",
                expect.archive_name
            ),
        ));
    }
    let digest = media::archive_digest(bundle)?;
    if digest != expect.archive_sha256 {
        return Err(bundle_err(
            bundle,
            format!(
                "sha256 {digest}, but the kickstarts were rendered for sha256 {}: render them again for this bundle",
                expect.archive_sha256
            ),
        ));
    }
    Ok((name, digest))
}
