//! The boot menus `kbundle iso` edits: the GRUB and isolinux configs in the ISO tree, and
//! the grub.cfg inside each UEFI boot image (a FAT image, edited with mtools, no root
//! needed). Each is extracted with xorriso into the staging directory, edited as text by
//! [`super::bootcfg`], and put back by the xorriso arguments returned here.

use super::bootcfg::{self, Plan};
use super::iso::{base_err, io, IsoError, IsoOptions};
use super::xorriso::{self, os, EfiImage};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

const GRUB_MENUS: [&str; 4] = [
    "/EFI/BOOT/grub.cfg",
    "/EFI/BOOT/BOOT.conf",
    "/boot/grub2/grub.cfg",
    "/boot/grub/grub.cfg",
];
const ISOLINUX_MENU: &str = "/isolinux/isolinux.cfg";
/// grub configs inside the UEFI boot image.
const EFI_MENUS: [&str; 2] = ["/EFI/BOOT/grub.cfg", "/EFI/BOOT/BOOT.conf"];

/// mtype and mcopy, for the grub.cfg inside a UEFI boot image.
#[derive(Clone)]
pub(super) struct Mtools {
    mtype: PathBuf,
    mcopy: PathBuf,
}

/// What editing the boot menus needs.
pub(super) struct Menus<'a> {
    pub xorriso: &'a Path,
    pub o: &'a IsoOptions,
    pub volid: &'a str,
    pub plan: &'a Plan,
    pub staging: &'a Path,
    /// When the UEFI boot image is to be edited.
    pub mtools: Option<Mtools>,
}

/// A boot menu extracted from the base and edited: (path on the ISO, staged file, entries
/// that boot a kickstart).
pub(super) type EditedMenu = (String, PathBuf, usize);

/// mtype and mcopy, needed when the base has a UEFI boot image (unless --skip-efiboot).
pub(super) fn mtools(o: &IsoOptions, efi: &[EfiImage]) -> Result<Option<Mtools>, IsoError> {
    if efi.is_empty() || o.skip_efiboot {
        return Ok(None);
    }
    match (xorriso::find_tool("mtype"), xorriso::find_tool("mcopy")) {
        (Some(mtype), Some(mcopy)) => Ok(Some(Mtools { mtype, mcopy })),
        _ => Err(IsoError::MtoolsMissing {
            image: match &efi[0] {
                EfiImage::File(p) => p.clone(),
                EfiImage::Appended { partition, .. } => format!("(appended partition {partition})"),
            },
        }),
    }
}

/// Extracts, edits and stages each boot menu; at least one must boot a kickstart.
pub(super) fn edit_menus(m: &Menus, files: &BTreeSet<String>) -> Result<Vec<EditedMenu>, IsoError> {
    let mut out = Vec::new();
    let menus = GRUB_MENUS.iter().map(|m| (*m, true)).chain([(ISOLINUX_MENU, false)]);
    for (i, (iso_path, grub)) in menus.enumerate() {
        if !files.contains(iso_path) {
            continue;
        }
        let local = m.staging.join(format!("menu-{i}.cfg"));
        xorriso::extract(m.xorriso, &m.o.base, iso_path, &local)?;
        let text = std::fs::read_to_string(&local).map_err(io("cannot read", &local))?;
        let (new, n) = if grub {
            bootcfg::edit_grub(&text, m.volid, m.plan)
        } else {
            bootcfg::edit_isolinux(&text, m.volid, m.plan)
        };
        std::fs::write(&local, new).map_err(io("cannot write", &local))?;
        out.push((iso_path.to_string(), local, n));
    }
    if out.iter().all(|(_, _, n)| *n == 0) {
        return Err(base_err(
            m.o,
            format!(
                "no installer boot entry (a kernel line with inst.stage2=) in {}: is it a Rocky install ISO?",
                GRUB_MENUS
                    .iter()
                    .chain([&ISOLINUX_MENU])
                    .map(|m| m.trim_start_matches('/'))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(out)
}

/// A local copy of a UEFI boot image at `local`, and how to name it in messages.
fn copy_efi_image(m: &Menus, img: &EfiImage, local: &Path) -> Result<String, IsoError> {
    match img {
        EfiImage::File(p) => {
            xorriso::extract(m.xorriso, &m.o.base, p, local)?;
            Ok(p.clone())
        }
        EfiImage::Appended { partition, .. } => {
            let boot_dir = m.staging.join("boot-images");
            if !boot_dir.exists() {
                std::fs::create_dir(&boot_dir).map_err(io("cannot create", &boot_dir))?;
                xorriso::extract_boot_images(m.xorriso, &m.o.base, &boot_dir)?;
            }
            let prefix = format!("gpt_part{partition}_");
            let found = std::fs::read_dir(&boot_dir)
                .map_err(io("cannot list", &boot_dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
                .ok_or_else(|| base_err(m.o, format!("xorriso did not extract appended partition {partition} (the UEFI boot image); pass --skip-efiboot to leave it alone")))?;
            std::fs::rename(&found, local).map_err(io("cannot move", &found))?;
            Ok(format!("appended partition {partition}"))
        }
    }
}

/// Edits the grub configs inside the local copy of UEFI boot image number `i`; returns how
/// many entries boot a kickstart.
fn edit_efi_menus(
    m: &Menus,
    tools: &Mtools,
    (i, local, label): (usize, &Path, &str),
    menus: &mut Vec<(String, usize)>,
) -> Result<usize, IsoError> {
    let mut edited = 0;
    for (k, cfg) in EFI_MENUS.iter().enumerate() {
        let Some(text) = xorriso::fat_read(&tools.mtype, local, cfg) else {
            continue;
        };
        let (new, n) = bootcfg::edit_grub(&text, m.volid, m.plan);
        let tmp = m.staging.join(format!("efi-{i}-{k}.cfg"));
        std::fs::write(&tmp, new).map_err(io("cannot write", &tmp))?;
        xorriso::fat_write(&tools.mcopy, local, &tmp, cfg)?;
        menus.push((format!("{cfg} in the UEFI boot image ({label})"), n));
        edited += n;
    }
    Ok(edited)
}

/// The xorriso arguments that put an edited UEFI boot image in place.
fn efi_update_args(img: &EfiImage, local: PathBuf) -> Vec<OsString> {
    match img {
        EfiImage::File(p) => vec!["-update".into(), local.into_os_string(), p.into()],
        EfiImage::Appended { partition, type_code } => {
            let mut args = os(&["-append_partition", &partition.to_string(), type_code]);
            args.push(local.into_os_string());
            args
        }
    }
}

/// Patches the grub configs inside each UEFI boot image; returns the xorriso arguments that
/// put the new images in place.
pub(super) fn edit_efi_images(
    m: &Menus,
    efi: &[EfiImage],
    warnings: &mut Vec<String>,
    menus: &mut Vec<(String, usize)>,
) -> Result<Vec<OsString>, IsoError> {
    let Some(tools) = m.mtools.clone() else {
        return Ok(Vec::new());
    };
    let mut args = Vec::new();
    for (i, img) in efi.iter().enumerate() {
        let local = m.staging.join(format!("efiboot-{i}.img"));
        let label = copy_efi_image(m, img, &local)?;
        if edit_efi_menus(m, &tools, (i, &local, &label), menus)? == 0 {
            warnings.push(format!(
                "the UEFI boot image {label} has no installer entry in EFI/BOOT/grub.cfg: left unchanged"
            ));
            continue;
        }
        args.extend(efi_update_args(img, local));
    }
    Ok(args)
}
