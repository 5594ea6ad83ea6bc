//! Small ISOs with Rocky's boot layout for tests/iso.rs (no Rocky ISO can be downloaded
//! here), and helpers that look inside ISOs with xorriso and mtools.

use super::common::{s, text};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", text(&o));
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

pub fn escape(volid: &str) -> String {
    volid.replace(' ', "\\x20")
}

/// Rocky's UEFI (and Rocky 10 BIOS) GRUB menu, as lorax writes it. Rocky 9's UEFI menu
/// says `linuxefi`/`initrdefi`.
pub fn grub_cfg(volid: &str, efi_suffix: bool) -> String {
    let l = escape(volid);
    let text = format!(
        "set default=\"1\"\n\nfunction load_video {{\n  insmod all_video\n}}\n\nload_video\nset gfxpayload=keep\ninsmod gzio\ninsmod part_gpt\ninsmod ext2\n\nset timeout=60\n### END /etc/grub.d/00_header ###\n\nsearch --no-floppy --set=root -l '{volid}'\n\n### BEGIN /etc/grub.d/10_linux ###\nmenuentry 'Install Rocky Linux 10.0' --class fedora --class gnu-linux --class gnu --class os {{\n\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={l} quiet\n\tinitrd /images/pxeboot/initrd.img\n}}\nmenuentry 'Test this media & install Rocky Linux 10.0' --class fedora --class gnu-linux --class gnu --class os {{\n\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={l} rd.live.check quiet\n\tinitrd /images/pxeboot/initrd.img\n}}\nsubmenu 'Troubleshooting -->' {{\n\tmenuentry 'Install Rocky Linux 10.0 in basic graphics mode' --class fedora --class gnu-linux --class gnu --class os {{\n\t\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={l} nomodeset quiet\n\t\tinitrd /images/pxeboot/initrd.img\n\t}}\n\tmenuentry 'Rescue a Rocky Linux system' --class fedora --class gnu-linux --class gnu --class os {{\n\t\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL={l} inst.rescue quiet\n\t\tinitrd /images/pxeboot/initrd.img\n\t}}\n}}\n"
    );
    if efi_suffix {
        text.replace("\tlinux ", "\tlinuxefi ")
            .replace("\tinitrd ", "\tinitrdefi ")
    } else {
        text
    }
}

/// Rocky 9's BIOS menu.
pub fn isolinux_cfg(volid: &str) -> String {
    let l = escape(volid);
    format!(
        "default vesamenu.c32\ntimeout 600\n\ndisplay boot.msg\nmenu title Rocky Linux 9.5\n\nlabel linux\n  menu label ^Install Rocky Linux 9.5\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL={l} quiet\n\nlabel check\n  menu label Test this ^media & install Rocky Linux 9.5\n  menu default\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL={l} rd.live.check quiet\n\nmenu separator # insert an empty line\n\nmenu begin ^Troubleshooting\n  menu title Troubleshooting Rocky Linux 9.5\n\nlabel rescue\n  menu indent count 5\n  menu label ^Rescue a Rocky Linux system\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL={l} inst.rescue quiet\n\nmenu separator # insert an empty line\n\nlabel returntomain\n  menu label Return to ^main menu\n  menu exit\n\nmenu end\n"
    )
}

#[derive(Clone, Copy, PartialEq)]
pub enum Style {
    /// GRUB for BIOS (images/eltorito.img) and UEFI; efiboot.img as appended partition 2.
    Rocky10,
    /// isolinux for BIOS; images/efiboot.img as a file in the tree.
    Rocky9,
}

/// A small ISO with Rocky's boot layout and menus.
pub fn base_iso(dir: &Path, style: Style, volid: &str) -> PathBuf {
    let tree = dir.join("tree");
    write(&tree.join(".discinfo"), b"1700000000.0\nRocky Linux 10.0\nx86_64\n");
    for repo in ["BaseOS", "AppStream"] {
        write(&tree.join(repo).join("repodata/repomd.xml"), b"<repomd/>\n");
    }
    write(&tree.join("images/pxeboot/vmlinuz"), b"kernel stand-in\n");
    write(&tree.join("images/pxeboot/initrd.img"), b"initrd stand-in\n");
    let grub = grub_cfg(volid, style == Style::Rocky9);
    write(&tree.join("EFI/BOOT/grub.cfg"), grub.as_bytes());
    let efi = dir.join("efiboot.img");
    let efi_s = s(&efi);
    run("mformat", &["-C", "-f", "1440", "-v", "ANACONDA", "-i", efi_s, "::"]);
    run("mmd", &["-i", efi_s, "::/EFI", "::/EFI/BOOT"]);
    run(
        "mcopy",
        &["-i", efi_s, s(&tree.join("EFI/BOOT/grub.cfg")), "::/EFI/BOOT/grub.cfg"],
    );
    // A BIOS boot image: any few sectors do for xorriso.
    let boot: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
    let iso = dir.join("base.iso");
    let mut args: Vec<String> = ["-as", "mkisofs", "-R", "-J", "-V", volid, "-o", s(&iso)]
        .iter()
        .map(|a| a.to_string())
        .collect();
    match style {
        Style::Rocky10 => {
            write(&tree.join("boot/grub2/grub.cfg"), grub.as_bytes());
            write(&tree.join("images/eltorito.img"), &boot);
            for a in [
                "-partition_offset",
                "16",
                "-appended_part_as_gpt",
                "-append_partition",
                "2",
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                efi_s,
                "-c",
                "boot.cat",
                "--boot-catalog-hide",
                "-b",
                "images/eltorito.img",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
                "-boot-info-table",
                "-eltorito-alt-boot",
                "-e",
                "--interval:appended_partition_2:all::",
                "-no-emul-boot",
            ] {
                args.push(a.into());
            }
        }
        Style::Rocky9 => {
            write(&tree.join("isolinux/isolinux.cfg"), isolinux_cfg(volid).as_bytes());
            write(&tree.join("isolinux/isolinux.bin"), &boot);
            std::fs::copy(&efi, tree.join("images/efiboot.img")).unwrap();
            for a in [
                "-b",
                "isolinux/isolinux.bin",
                "-c",
                "isolinux/boot.cat",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
                "-boot-info-table",
                "-eltorito-alt-boot",
                "-e",
                "images/efiboot.img",
                "-no-emul-boot",
            ] {
                args.push(a.into());
            }
        }
    }
    args.push(s(&tree).into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("xorriso", &args);
    iso
}

pub fn volume_id(iso: &Path) -> String {
    run("xorriso", &["-indev", s(iso), "-pvd_info"])
        .lines()
        .find_map(|l| l.strip_prefix("Volume Id    : ").map(|v| v.trim_end().to_string()))
        .expect("volume id")
}

pub fn files(iso: &Path) -> Vec<String> {
    run("xorriso", &["-indev", s(iso), "-find", "/", "-type", "f"])
        .lines()
        .filter_map(|l| {
            l.strip_prefix('\'')
                .and_then(|l| l.strip_suffix('\''))
                .map(str::to_string)
        })
        .collect()
}

pub fn extract(iso: &Path, path: &str, dest: &Path) -> Vec<u8> {
    run(
        "xorriso",
        &["-osirrox", "on", "-indev", s(iso), "-extract", path, s(dest)],
    );
    std::fs::read(dest).unwrap()
}

pub fn boot_images(iso: &Path) -> usize {
    run("xorriso", &["-indev", s(iso), "-report_el_torito", "plain"])
        .lines()
        .filter(|l| l.starts_with("El Torito boot img :"))
        .count()
}

/// The grub.cfg inside the ISO's UEFI boot image.
pub fn efi_grub(iso: &Path, dir: &Path) -> String {
    let out = dir.join(format!("boot-images-{}", iso.file_stem().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&out).unwrap();
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            s(iso),
            "-extract_boot_images",
            &format!("{}/", s(&out)),
        ],
    );
    let img = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("uefi"))
        .expect("a UEFI boot image");
    run("mtype", &["-i", s(&img), "::/EFI/BOOT/grub.cfg"])
}
