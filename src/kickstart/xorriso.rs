//! Running the external tools `kbundle iso` needs: xorriso (read and remaster the ISO),
//! mtools (edit the FAT UEFI boot image without root) and implantisomd5 (the checksum the
//! "Test this media" boot entry checks). Every failure names the tool, what it was doing and
//! the end of its output.

use super::iso::IsoError;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The first `name` on PATH.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            p.is_file()
        }
    })
}

/// Runs a tool; a non-zero exit is an error carrying the tail of its output.
pub(crate) fn run(tool: &Path, args: &[OsString], what: &str) -> Result<Output, IsoError> {
    use crate::host::sys::{Real, Stdin, Sys};
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .env("LANG", "C")
        .env("LC_ALL", "C")
        .env("MTOOLS_SKIP_CHECK", "1");
    // Through the node seam's process runner, like every other tool kbundle runs.
    let ran = Real
        .run(&mut cmd, Stdin::Null, None)
        .map_err(|source| IsoError::Spawn {
            tool: tool.display().to_string(),
            source,
        })?;
    let out = Output {
        status: ran.status,
        stdout: ran.stdout,
        stderr: ran.stderr,
    };
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n  ");
        return Err(IsoError::Tool {
            tool: tool
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            what: what.to_string(),
            status: out.status.to_string(),
            output: tail,
        });
    }
    Ok(out)
}

pub(crate) fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A UEFI El Torito boot image of the base ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EfiImage {
    /// A file in the ISO tree (`-e /images/efiboot.img`, Rocky 9).
    File(String),
    /// An appended partition (`-append_partition 2 <type> …`, Rocky 10).
    Appended { partition: u32, type_code: String },
}

/// What `kbundle iso` needs to know about the base ISO.
#[derive(Debug, Clone, Default)]
pub(crate) struct IsoInfo {
    pub volume_id: String,
    /// Absolute paths of regular files.
    pub files: BTreeSet<String>,
    pub efi: Vec<EfiImage>,
    /// Any El Torito boot image (BIOS or UEFI).
    pub bootable: bool,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        Some(inner) => inner.replace("'\"'\"'", "'"),
        None => s.to_string(),
    }
}

/// Reads the volume ID, the file list and the boot setup of an ISO.
pub(crate) fn inspect(xorriso: &Path, iso: &Path) -> Result<IsoInfo, IsoError> {
    let mut args = os(&["-abort_on", "FAILURE", "-pkt_output", "on", "-indev"]);
    args.push(iso.as_os_str().to_owned());
    args.extend(os(&[
        "-pvd_info",
        "-report_el_torito",
        "as_mkisofs",
        "-find",
        "/",
        "-type",
        "f",
    ]));
    let out = run(xorriso, &args, &format!("reading {}", iso.display()))?;
    Ok(parse_inspect(&String::from_utf8_lossy(&out.stdout)))
}

pub(crate) fn parse_inspect(stdout: &str) -> IsoInfo {
    let mut info = IsoInfo::default();
    let mut appended: Vec<(u32, String)> = Vec::new();
    let mut efi_partitions: Vec<u32> = Vec::new();
    for line in stdout.lines() {
        let Some(r) = line.strip_prefix("R:1: ") else { continue };
        if let Some(v) = r.strip_prefix("Volume Id    : ") {
            info.volume_id = v.trim_end().to_string();
        } else if r.starts_with('\'') {
            info.files.insert(unquote(r));
        } else if let Some(v) = r.strip_prefix("-e ") {
            info.bootable = true;
            let v = unquote(v);
            if let Some(rest) = v.strip_prefix("--interval:appended_partition_") {
                if let Some(n) = rest.split('_').next().and_then(|n| n.parse().ok()) {
                    efi_partitions.push(n);
                }
            } else if v.starts_with('/') {
                info.efi.push(EfiImage::File(v));
            }
        } else if r.starts_with("-b ") {
            info.bootable = true;
        } else if let Some(v) = r.strip_prefix("-append_partition ") {
            let mut w = v.split_whitespace();
            if let (Some(n), Some(t)) = (w.next().and_then(|n| n.parse().ok()), w.next()) {
                appended.push((n, t.to_string()));
            }
        }
    }
    for n in efi_partitions {
        if let Some((_, t)) = appended.iter().find(|(p, _)| *p == n) {
            info.efi.push(EfiImage::Appended {
                partition: n,
                type_code: t.clone(),
            });
        }
    }
    info
}

/// Writes the new ISO: `args` read the base, name the output and list every edit.
pub(crate) fn remaster(xorriso: &Path, args: &[OsString], base: &Path) -> Result<(), IsoError> {
    run(xorriso, args, &format!("writing the new ISO from {}", base.display())).map(|_| ())
}

/// `implantisomd5 ISO`: a fresh media checksum for "Test this media".
pub(crate) fn implant_md5(implantisomd5: &Path, iso: &Path) -> Result<(), IsoError> {
    run(
        implantisomd5,
        &[iso.as_os_str().to_owned()],
        "implanting the media checksum",
    )
    .map(|_| ())
}

/// Copies one file out of the ISO.
pub(crate) fn extract(xorriso: &Path, iso: &Path, iso_path: &str, dest: &Path) -> Result<(), IsoError> {
    let mut args = os(&["-abort_on", "FAILURE", "-osirrox", "on", "-indev"]);
    args.push(iso.as_os_str().to_owned());
    args.push("-extract".into());
    args.push(iso_path.into());
    args.push(dest.as_os_str().to_owned());
    run(xorriso, &args, &format!("extracting {iso_path} from {}", iso.display()))?;
    // osirrox keeps the ISO's read-only modes; the copy is ours to edit.
    super::set_mode(dest, 0o644).map_err(|e| IsoError::Kickstart(Box::new(e)))
}

/// Copies every boot image (El Torito images, appended partitions) into `dir`.
pub(crate) fn extract_boot_images(xorriso: &Path, iso: &Path, dir: &Path) -> Result<(), IsoError> {
    let mut args = os(&["-abort_on", "FAILURE", "-osirrox", "on", "-indev"]);
    args.push(iso.as_os_str().to_owned());
    args.push("-extract_boot_images".into());
    let mut d = dir.as_os_str().to_owned();
    d.push("/");
    args.push(d);
    run(
        xorriso,
        &args,
        &format!("extracting the boot images of {}", iso.display()),
    )
    .map(|_| ())
}

/// The text of `path` inside a FAT image, or `None` if it is not there.
pub(crate) fn fat_read(mtype: &Path, image: &Path, path: &str) -> Option<String> {
    let mut args = os(&["-i"]);
    args.push(image.as_os_str().to_owned());
    args.push(format!("::{path}").into());
    run(mtype, &args, "reading the UEFI boot image")
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Replaces `path` inside a FAT image with the local file `src`.
pub(crate) fn fat_write(mcopy: &Path, image: &Path, src: &Path, path: &str) -> Result<(), IsoError> {
    let mut args = os(&["-o", "-i"]);
    args.push(image.as_os_str().to_owned());
    args.push(src.as_os_str().to_owned());
    args.push(format!("::{path}").into());
    run(
        mcopy,
        &args,
        &format!(
            "writing {path} into the UEFI boot image {} (if it is full: --skip-efiboot, or --node NAME for a shorter menu)",
            image.display()
        ),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rocky10_style_appended_efi_partition() {
        let out = "I:1: Volume id    : 'Rocky-10-0-x86_64-dvd'\nR:1: Volume Id    : Rocky 10 dvd\nR:1: -append_partition 2 28732ac11ff8d211ba4b00a0c93ec93b --interval:local_fs:332d-3211d::'r10.iso'\nR:1: -b '/images/eltorito.img'\nR:1: -e '--interval:appended_partition_2_start_83s_size_2880d:all::'\nR:1: '/EFI/BOOT/grub.cfg'\nR:1: '/it'\"'\"'s.ks'\n";
        let i = parse_inspect(out);
        assert_eq!(i.volume_id, "Rocky 10 dvd");
        assert!(i.bootable);
        assert_eq!(
            i.efi,
            [EfiImage::Appended {
                partition: 2,
                type_code: "28732ac11ff8d211ba4b00a0c93ec93b".into()
            }]
        );
        assert!(
            i.files.contains("/EFI/BOOT/grub.cfg") && i.files.contains("/it's.ks"),
            "{:?}",
            i.files
        );
    }

    #[test]
    fn parses_rocky9_style_efi_file() {
        let i =
            parse_inspect("R:1: Volume Id    : X\nR:1: -b '/isolinux/isolinux.bin'\nR:1: -e '/images/efiboot.img'\n");
        assert_eq!(i.efi, [EfiImage::File("/images/efiboot.img".into())]);
        assert!(parse_inspect("R:1: Volume Id    : X\n").efi.is_empty());
    }
}
