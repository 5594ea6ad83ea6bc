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

use super::bootcfg::{self, Plan};
use super::inputs::{prepare_bundle, read_kickstarts};
use super::xorriso::{self, os, EfiImage};
use super::{layout, KickstartError};
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

const GRUB_MENUS: [&str; 4] = [
    "/EFI/BOOT/grub.cfg",
    "/EFI/BOOT/BOOT.conf",
    "/boot/grub2/grub.cfg",
    "/boot/grub/grub.cfg",
];
const ISOLINUX_MENU: &str = "/isolinux/isolinux.cfg";
/// grub configs inside the UEFI boot image.
const EFI_MENUS: [&str; 2] = ["/EFI/BOOT/grub.cfg", "/EFI/BOOT/BOOT.conf"];

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IsoError {
    let path = path.to_path_buf();
    move |source| IsoError::Io { what, path, source }
}

/// What editing the boot menus needs.
struct Menus<'a> {
    xorriso: &'a Path,
    o: &'a IsoOptions,
    volid: &'a str,
    plan: &'a Plan,
    staging: &'a Path,
    /// mtype and mcopy, when the UEFI boot image is to be edited.
    mtools: Option<(PathBuf, PathBuf)>,
}

/// mtype and mcopy, needed when the base has a UEFI boot image (unless --skip-efiboot).
fn mtools(o: &IsoOptions, efi: &[EfiImage]) -> Result<Option<(PathBuf, PathBuf)>, IsoError> {
    if efi.is_empty() || o.skip_efiboot {
        return Ok(None);
    }
    match (xorriso::find_tool("mtype"), xorriso::find_tool("mcopy")) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        _ => Err(IsoError::MtoolsMissing {
            image: match &efi[0] {
                EfiImage::File(p) => p.clone(),
                EfiImage::Appended { partition, .. } => format!("(appended partition {partition})"),
            },
        }),
    }
}

/// Extracts, edits and stages each boot menu; returns (iso path, staged file, entries).
fn edit_menus(
    m: &Menus,
    files: &std::collections::BTreeSet<String>,
) -> Result<Vec<(String, PathBuf, usize)>, IsoError> {
    let Menus {
        xorriso,
        o,
        volid,
        plan,
        staging,
        ..
    } = *m;
    let mut out = Vec::new();
    let menus = GRUB_MENUS.iter().map(|m| (*m, true)).chain([(ISOLINUX_MENU, false)]);
    for (i, (iso_path, grub)) in menus.enumerate() {
        if !files.contains(iso_path) {
            continue;
        }
        let local = staging.join(format!("menu-{i}.cfg"));
        xorriso::extract(xorriso, &o.base, iso_path, &local)?;
        let text = std::fs::read_to_string(&local).map_err(io("cannot read", &local))?;
        let (new, n) = if grub {
            bootcfg::edit_grub(&text, volid, plan)
        } else {
            bootcfg::edit_isolinux(&text, volid, plan)
        };
        std::fs::write(&local, new).map_err(io("cannot write", &local))?;
        out.push((iso_path.to_string(), local, n));
    }
    Ok(out)
}

/// Patches the grub configs inside each UEFI boot image; returns the xorriso arguments that
/// put the new images in place.
fn edit_efi_images(
    m: &Menus,
    efi: &[EfiImage],
    warnings: &mut Vec<String>,
    menus: &mut Vec<(String, usize)>,
) -> Result<Vec<std::ffi::OsString>, IsoError> {
    let Menus {
        xorriso,
        o,
        volid,
        plan,
        staging,
        ..
    } = *m;
    let Some((mtype, mcopy)) = m.mtools.clone() else {
        return Ok(Vec::new());
    };
    let boot_dir = staging.join("boot-images");
    let mut args = Vec::new();
    for (i, img) in efi.iter().enumerate() {
        let local = staging.join(format!("efiboot-{i}.img"));
        let label = match img {
            EfiImage::File(p) => {
                xorriso::extract(xorriso, &o.base, p, &local)?;
                p.clone()
            }
            EfiImage::Appended { partition, .. } => {
                if !boot_dir.exists() {
                    std::fs::create_dir(&boot_dir).map_err(io("cannot create", &boot_dir))?;
                    xorriso::extract_boot_images(xorriso, &o.base, &boot_dir)?;
                }
                let prefix = format!("gpt_part{partition}_");
                let found = std::fs::read_dir(&boot_dir)
                    .map_err(io("cannot list", &boot_dir))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
                    .ok_or_else(|| IsoError::Base {
                        path: o.base.clone(),
                        message: format!("xorriso did not extract appended partition {partition} (the UEFI boot image); pass --skip-efiboot to leave it alone"),
                    })?;
                std::fs::rename(&found, &local).map_err(io("cannot move", &found))?;
                format!("appended partition {partition}")
            }
        };
        let mut edited = 0;
        for (k, cfg) in EFI_MENUS.iter().enumerate() {
            let Some(text) = xorriso::fat_read(&mtype, &local, cfg) else {
                continue;
            };
            let (new, n) = bootcfg::edit_grub(&text, volid, plan);
            let tmp = staging.join(format!("efi-{i}-{k}.cfg"));
            std::fs::write(&tmp, new).map_err(io("cannot write", &tmp))?;
            xorriso::fat_write(&mcopy, &local, &tmp, cfg)?;
            menus.push((format!("{cfg} in the UEFI boot image ({label})"), n));
            edited += n;
        }
        if edited == 0 {
            warnings.push(format!(
                "the UEFI boot image {label} has no installer entry in EFI/BOOT/grub.cfg: left unchanged"
            ));
            continue;
        }
        match img {
            EfiImage::File(p) => {
                args.push("-update".into());
                args.push(local.into_os_string());
                args.push(p.into());
            }
            EfiImage::Appended { partition, type_code } => {
                args.extend(os(&["-append_partition", &partition.to_string(), type_code]));
                args.push(local.into_os_string());
            }
        }
    }
    Ok(args)
}

/// Builds the ISO. Nothing is left at `o.out` unless everything succeeded.
pub fn make_iso(o: &IsoOptions) -> Result<IsoReport, IsoError> {
    let xorriso = xorriso::find_tool("xorriso").ok_or(IsoError::XorrisoMissing)?;
    let implant = match o.no_md5 {
        true => None,
        false => Some(xorriso::find_tool("implantisomd5").ok_or(IsoError::Md5Missing)?),
    };
    let base_err = |message: String| IsoError::Base {
        path: o.base.clone(),
        message,
    };
    if !o.base.is_file() {
        return Err(base_err("not found or not a file".into()));
    }
    if o.out.exists() && std::fs::canonicalize(&o.out).ok() == std::fs::canonicalize(&o.base).ok() {
        return Err(base_err("the output must be a different file".into()));
    }
    let (kss, config) = read_kickstarts(&o.kickstarts, o.node.as_deref())?;
    let expect = kss[0].info.clone();
    let info = xorriso::inspect(&xorriso, &o.base)?;
    if info.volume_id.is_empty() {
        return Err(base_err("has no volume ID: the installer finds its media by it".into()));
    }
    let mtools = mtools(o, &info.efi)?;
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
    let parent = match o.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".kbundle-iso-")
        .tempdir_in(&parent)
        .map_err(io("cannot create a temp directory in", &parent))?;
    let st = staging.path();
    let (installer, sidecar) = prepare_bundle(o, &expect, st)?;

    let plan = match &o.node {
        Some(n) => Plan::Single {
            ks_file: format!("{n}.ks"),
        },
        None => Plan::PerNode {
            nodes: kss
                .iter()
                .map(|k| (k.info.node.clone(), format!("{}.ks", k.info.node)))
                .collect(),
        },
    };
    let ctx = Menus {
        xorriso: &xorriso,
        o,
        volid: &info.volume_id,
        plan: &plan,
        staging: st,
        mtools,
    };
    let menus = edit_menus(&ctx, &info.files)?;
    if menus.iter().all(|(_, _, n)| *n == 0) {
        return Err(base_err(format!(
            "no installer boot entry (a kernel line with inst.stage2=) in {}: is it a Rocky install ISO?",
            GRUB_MENUS
                .iter()
                .chain([&ISOLINUX_MENU])
                .map(|m| m.trim_start_matches('/'))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut args = os(&["-abort_on", "FAILURE", "-indev"]);
    args.push(o.base.clone().into_os_string());
    args.push("-outdev".into());
    let tmp_out = st.join("out.iso");
    args.push(tmp_out.clone().into_os_string());
    args.extend(os(&["-boot_image", "any", "replay"]));
    let big = std::fs::metadata(&o.bundle)
        .map(|m| m.len() >= 4 << 30)
        .unwrap_or(false);
    if big {
        args.extend(os(&["-compliance", "iso_9660_level=3"]));
    }
    let mut boot_menus: Vec<(String, usize)> = menus.iter().map(|(p, _, n)| (p.clone(), *n)).collect();
    if !info.efi.is_empty() {
        if o.skip_efiboot {
            warnings.push("--skip-efiboot: the UEFI boot image keeps its old menu, so USB and UEFI boots do not start the kickstart".into());
        } else {
            args.extend(edit_efi_images(&ctx, &info.efi, &mut warnings, &mut boot_menus)?);
        }
    }
    for (iso_path, local, _) in &menus {
        args.push("-update".into());
        args.push(local.clone().into_os_string());
        args.push(iso_path.into());
    }
    let dir = format!("/{}", layout::MEDIA_DIR);
    let mut map = |local: &Path, iso_path: String| {
        args.push("-map".into());
        args.push(local.as_os_str().to_owned());
        args.push(iso_path.into());
    };
    map(&o.bundle, format!("{dir}/{}", expect.archive_name));
    map(&sidecar, format!("{dir}/{}.sha256", expect.archive_name));
    map(&installer, format!("{dir}/{}", crate::bundle::meta::INSTALLER));
    map(&config, format!("{dir}/{}", layout::CONFIG_FILE));
    for k in &kss {
        map(&k.path, format!("/{}.ks", k.info.node));
    }
    xorriso::run(
        &xorriso,
        &args,
        &format!("writing the new ISO from {}", o.base.display()),
    )?;
    match &implant {
        Some(tool) => {
            xorriso::run(tool, &[tmp_out.clone().into_os_string()], "implanting the media checksum")?;
        }
        None => warnings.push("--no-md5: the ISO has no media checksum, so its \"Test this media\" entries halt: boot the install entries".into()),
    }
    let check = xorriso::inspect(&xorriso, &tmp_out)?;
    if check.volume_id != info.volume_id {
        return Err(base_err(format!(
            "the new ISO has volume ID {:?}, not {:?}",
            check.volume_id, info.volume_id
        )));
    }
    let mode = if kss.iter().any(|k| k.info.secrets) {
        0o600
    } else {
        0o644
    };
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
