//! `kbundle iso`: remaster a Rocky Linux install ISO the way lorax's `mkksiso` does, with
//! xorriso replaying the base's boot setup (El Torito images, MBR/GPT, volume ID):
//!
//! - adds `/kbundle/<archive>`, its `.sha256`, `/kbundle/kbundle` (the installer, extracted
//!   from the archive and checked against bundle.json), `/kbundle/cluster.toml`, and
//!   `/<node>.ks` for each kickstart;
//! - adds `inst.ks=hd:LABEL=<volume id>:/<node>.ks` to the installer entries of every boot
//!   menu (`EFI/BOOT/grub.cfg`, `boot/grub2/grub.cfg`, `isolinux/isolinux.cfg`, and the
//!   grub.cfg inside the UEFI boot image, which USB and UEFI boots read);
//! - implants a fresh media checksum (`implantisomd5`) so "Test this media" still passes;
//! - writes through a temp file beside the output and renames it into place.
//!
//! Before anything is written it checks that the kickstarts, cluster.toml and the bundle
//! belong together (the digests recorded in each kickstart's header) and verifies the bundle.

use super::bootcfg::Plan;
use super::inputs::{prepare_bundle, read_kickstarts, Ks};
use super::menus::{edit_efi_images, edit_menus, mtools, EditedMenu, Menus};
use super::xorriso::{self, os, IsoInfo};
use super::{layout, KickstartError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("xorriso is not installed (not found on PATH); kbundle iso uses it to read and remaster the ISO. Install it: `dnf install xorriso` (Rocky, RHEL, Fedora) or `apt-get install xorriso` (Debian, Ubuntu)")]
    XorrisoMissing,
    #[error("mtools (mtype, mcopy) is not installed; kbundle iso uses it to add inst.ks to the grub.cfg inside the UEFI boot image {image}, which USB and UEFI boots read. Install it (`dnf install mtools` or `apt-get install mtools`), or pass --skip-efiboot to leave that menu without the kickstart")]
    MtoolsMissing { image: String },
    #[error("implantisomd5 is not installed; without a fresh media checksum the ISO's \"Test this media\" entry (often the default) halts the install. Install it (`dnf install isomd5sum` or `apt-get install isomd5sum`), or pass --no-md5 and boot the install entries only")]
    Md5Missing,
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed {what} ({status}):\n  {output}")]
    Tool {
        tool: String,
        what: String,
        status: String,
        output: String,
    },
    #[error("base ISO {path}: {message}")]
    Base { path: PathBuf, message: String },
    #[error("kickstarts in {dir}: {message}")]
    Kickstarts { dir: PathBuf, message: String },
    #[error("kickstarts in {dir}: cannot read {path}: {source} (`kbundle kickstart` writes it beside the kickstarts)")]
    ConfigUnreadable {
        dir: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kickstarts in {dir}: {source}")]
    Config {
        dir: PathBuf,
        #[source]
        source: Box<crate::cluster::ClusterError>,
    },
    #[error("kickstarts in {dir}: {name}: {source}")]
    Header {
        dir: PathBuf,
        name: String,
        #[source]
        source: super::HeaderError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kickstart(Box<KickstartError>),
}

impl From<KickstartError> for IsoError {
    fn from(e: KickstartError) -> Self {
        IsoError::Kickstart(Box::new(e))
    }
}

#[derive(Debug, Clone)]
pub struct IsoOptions {
    pub base: PathBuf,
    pub bundle: PathBuf,
    pub kickstarts: PathBuf,
    /// Boot only this node's kickstart (every installer entry); else one entry per node.
    pub node: Option<String>,
    pub out: PathBuf,
    /// Leave the UEFI boot image alone (no mtools needed; USB/UEFI boots show the old menu).
    pub skip_efiboot: bool,
    /// Do not implant a media checksum (no implantisomd5 needed).
    pub no_md5: bool,
    /// `--trusted-key`: the bundle must be signed by one of them.
    pub trust: crate::trust::Flags,
}

#[derive(Debug, Clone)]
pub struct IsoReport {
    pub out: PathBuf,
    pub volume_id: String,
    pub nodes: Vec<String>,
    /// Boot menus edited: (path on the ISO, or the UEFI boot image, entries that boot a
    /// kickstart).
    pub boot_menus: Vec<(String, usize)>,
    pub warnings: Vec<String>,
    pub mode: u32,
}

pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IsoError {
    let path = path.to_path_buf();
    move |source| IsoError::Io { what, path, source }
}

pub(super) fn base_err(o: &IsoOptions, message: impl Into<String>) -> IsoError {
    IsoError::Base {
        path: o.base.clone(),
        message: message.into(),
    }
}

/// The programs a remaster runs, found on PATH before anything is read.
struct Tools {
    xorriso: PathBuf,
    /// implantisomd5, unless --no-md5.
    implant: Option<PathBuf>,
}

impl Tools {
    fn find(o: &IsoOptions) -> Result<Tools, IsoError> {
        let xorriso = xorriso::find_tool("xorriso").ok_or(IsoError::XorrisoMissing)?;
        let implant = match o.no_md5 {
            true => None,
            false => Some(xorriso::find_tool("implantisomd5").ok_or(IsoError::Md5Missing)?),
        };
        Ok(Tools { xorriso, implant })
    }
}

/// The base must be a file, and not the output.
fn check_paths(o: &IsoOptions) -> Result<(), IsoError> {
    if !o.base.is_file() {
        return Err(base_err(o, "not found or not a file"));
    }
    if o.out.exists() && std::fs::canonicalize(&o.out).ok() == std::fs::canonicalize(&o.base).ok() {
        return Err(base_err(o, "the output must be a different file"));
    }
    Ok(())
}

/// Reads the base ISO's volume ID, files and boot setup; warns about a base that will not
/// boot or has no package repositories.
fn read_base(xorriso: &Path, o: &IsoOptions) -> Result<(IsoInfo, Vec<String>), IsoError> {
    let info = xorriso::inspect(xorriso, &o.base)?;
    if info.volume_id.is_empty() {
        return Err(base_err(o, "has no volume ID: the installer finds its media by it"));
    }
    let mut warnings = Vec::new();
    if !info.bootable {
        warnings.push(format!(
            "{} has no El Torito boot image: the new ISO will not boot",
            o.base.display()
        ));
    }
    if !info.files.contains("/AppStream/repodata/repomd.xml") || !info.files.contains("/BaseOS/repodata/repomd.xml") {
        warnings.push(format!("{} has no BaseOS and AppStream repositories: the kickstarts install packages from them, so use the DVD image", o.base.display()));
    }
    Ok((info, warnings))
}

/// A temp directory beside the output, for everything staged (and the new ISO itself).
fn staging_dir(out: &Path) -> Result<tempfile::TempDir, IsoError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".kbundle-iso-")
        .tempdir_in(&parent)
        .map_err(io("cannot create a temp directory in", &parent))
}

/// `--node`: every installer entry boots that kickstart; else one entry per node.
fn boot_plan(o: &IsoOptions, kss: &[Ks]) -> Plan {
    match &o.node {
        Some(n) => Plan::Single {
            ks_file: format!("{n}.ks"),
        },
        None => Plan::PerNode {
            nodes: kss
                .iter()
                .map(|k| (k.info.node.clone(), format!("{}.ks", k.info.node)))
                .collect(),
        },
    }
}

/// xorriso's arguments up to the edits: read the base, write `tmp_out`, replay the boot setup.
fn remaster_args(o: &IsoOptions, tmp_out: &Path) -> Vec<OsString> {
    let mut args = os(&["-abort_on", "FAILURE", "-indev"]);
    args.push(o.base.clone().into_os_string());
    args.push("-outdev".into());
    args.push(tmp_out.as_os_str().to_owned());
    args.extend(os(&["-boot_image", "any", "replay"]));
    let big = std::fs::metadata(&o.bundle)
        .map(|m| m.len() >= 4 << 30)
        .unwrap_or(false);
    if big {
        args.extend(os(&["-compliance", "iso_9660_level=3"]));
    }
    args
}

/// What `kbundle iso` adds under /kbundle/ besides the kickstarts.
struct MediaFiles<'a> {
    archive_name: &'a str,
    installer: &'a Path,
    sidecar: &'a Path,
    config: &'a Path,
}

/// xorriso's arguments that replace the edited menus and add the bundle, installer,
/// cluster.toml and kickstarts.
fn content_args(o: &IsoOptions, menus: &[EditedMenu], f: &MediaFiles, kss: &[Ks]) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for (iso_path, local, _) in menus {
        args.extend(["-update".into(), local.clone().into_os_string(), iso_path.into()]);
    }
    let dir = format!("/{}", layout::MEDIA_DIR);
    let mut map = |local: &Path, iso_path: String| {
        args.extend(["-map".into(), local.as_os_str().to_owned(), iso_path.into()]);
    };
    map(&o.bundle, format!("{dir}/{}", f.archive_name));
    map(f.sidecar, format!("{dir}/{}.sha256", f.archive_name));
    map(f.installer, format!("{dir}/{}", crate::bundle::meta::INSTALLER));
    map(f.config, format!("{dir}/{}", layout::CONFIG_FILE));
    for k in kss {
        map(&k.path, format!("/{}.ks", k.info.node));
    }
    args
}

/// Implants the media checksum, or warns that --no-md5 left it out.
fn implant(tools: &Tools, iso: &Path, warnings: &mut Vec<String>) -> Result<(), IsoError> {
    match &tools.implant {
        Some(tool) => xorriso::implant_md5(tool, iso),
        None => {
            warnings.push("--no-md5: the ISO has no media checksum, so its \"Test this media\" entries halt: boot the install entries".into());
            Ok(())
        }
    }
}

/// The new ISO kept the base's volume ID (the installer finds its media by it).
fn check_volume_id(xorriso: &Path, o: &IsoOptions, iso: &Path, volume_id: &str) -> Result<(), IsoError> {
    let check = xorriso::inspect(xorriso, iso)?;
    if check.volume_id != volume_id {
        return Err(base_err(
            o,
            format!("the new ISO has volume ID {:?}, not {volume_id:?}", check.volume_id),
        ));
    }
    Ok(())
}

/// 0600 when any kickstart on the media holds secrets.
fn iso_mode(kss: &[Ks]) -> u32 {
    if kss.iter().any(|k| k.info.secrets) {
        0o600
    } else {
        0o644
    }
}

/// Builds the ISO. Nothing is left at `o.out` unless everything succeeded.
pub fn make_iso(o: &IsoOptions) -> Result<IsoReport, IsoError> {
    let tools = Tools::find(o)?;
    check_paths(o)?;
    let (kss, config) = read_kickstarts(&o.kickstarts, o.node.as_deref())?;
    let expect = kss[0].info.clone();
    let (info, mut warnings) = read_base(&tools.xorriso, o)?;
    let mtools = mtools(o, &info.efi)?;
    let staging = staging_dir(&o.out)?;
    let st = staging.path();
    let (installer, sidecar) = prepare_bundle(o, &expect, st)?;
    let plan = boot_plan(o, &kss);
    let ctx = Menus {
        xorriso: &tools.xorriso,
        o,
        volid: &info.volume_id,
        plan: &plan,
        staging: st,
        mtools,
    };
    let menus = edit_menus(&ctx, &info.files)?;
    let tmp_out = st.join("out.iso");
    let mut args = remaster_args(o, &tmp_out);
    let mut boot_menus: Vec<(String, usize)> = menus.iter().map(|(p, _, n)| (p.clone(), *n)).collect();
    if !info.efi.is_empty() && o.skip_efiboot {
        warnings.push(
            "--skip-efiboot: the UEFI boot image keeps its old menu, so USB and UEFI boots do not start the kickstart"
                .into(),
        );
    } else if !info.efi.is_empty() {
        args.extend(edit_efi_images(&ctx, &info.efi, &mut warnings, &mut boot_menus)?);
    }
    let files = MediaFiles {
        archive_name: &expect.archive_name,
        installer: &installer,
        sidecar: &sidecar,
        config: &config,
    };
    args.extend(content_args(o, &menus, &files, &kss));
    xorriso::remaster(&tools.xorriso, &args, &o.base)?;
    implant(&tools, &tmp_out, &mut warnings)?;
    check_volume_id(&tools.xorriso, o, &tmp_out, &info.volume_id)?;
    let mode = iso_mode(&kss);
    super::set_mode(&tmp_out, mode)?;
    std::fs::rename(&tmp_out, &o.out).map_err(io("cannot move the new ISO to", &o.out))?;
    Ok(IsoReport {
        out: o.out.clone(),
        volume_id: info.volume_id,
        nodes: kss.iter().map(|k| k.info.node.clone()).collect(),
        boot_menus,
        warnings,
        mode,
    })
}
