//! `kbundle iso` (issue #5): no Rocky ISO can be downloaded here, so the tests build small
//! ISOs with xorriso that have Rocky's boot layout (Rocky 10: GRUB for BIOS and UEFI, the
//! UEFI image as an appended partition; Rocky 9: isolinux for BIOS, the UEFI image as a file)
//! and the same boot menus, remaster them, and look inside: the bundle, its sidecar, the
//! installer, cluster.toml and the kickstarts are there, every installer entry of every menu
//! (including the grub.cfg inside the UEFI image) carries the right `inst.ks=`, the volume ID
//! and boot records are unchanged and the media checksum passes.

use crate::support::ks::common;
use crate::support::ks::fake_iso;

use common::*;
use fake_iso::*;
use kbundle::bundle::pack::Compression;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KUBEADM: &[u8] = b"#!/bin/sh\necho kubeadm stand-in for the iso tests\n";

fn tools() {
    assert!(have("xorriso"), "these tests need xorriso (apt-get install xorriso)");
    ensure_debian_tools(&[
        ("mformat", "mtools"),
        ("mcopy", "mtools"),
        ("mtype", "mtools"),
        ("implantisomd5", "isomd5sum"),
        ("checkisomd5", "isomd5sum"),
    ]);
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    bundle: PathBuf,
    ks: PathBuf,
}

fn setup(release: &str) -> Setup {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let bundle = make_bundle(&dir.join("bundles"), Compression::Zstd, KUBEADM);
    let config = example_config(&dir, |c| c);
    let ks = dir.join("ks");
    let o = kbundle(&[
        "kickstart",
        "--bundle",
        s(&bundle),
        "--config",
        s(&config),
        "--os",
        release,
        "--out",
        s(&ks),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    Setup {
        _tmp: tmp,
        dir,
        bundle,
        ks,
    }
}

fn iso(st: &Setup, base: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "iso",
        "--base",
        s(base),
        "--bundle",
        s(&st.bundle),
        "--kickstarts",
        s(&st.ks),
        "-o",
        s(out),
    ];
    args.extend_from_slice(extra);
    kbundle(&args)
}

#[test]
fn rocky10_iso_gets_the_bundle_and_a_menu_entry_per_node() {
    let st = setup("rocky10");
    let volid = "Rocky-10-0-x86_64-dvd";
    let base = base_iso(&st.dir.join("base"), Style::Rocky10, volid);
    let out = st.dir.join("out/cluster.iso");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = iso(&st, &base, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    eprintln!("{}", text(&o));

    assert_eq!(volume_id(&out), volid);
    assert_eq!(boot_images(&out), boot_images(&base));
    assert_eq!(boot_images(&out), 2);
    let archive = format!("{NAME}.tar.zst");
    let names = files(&out);
    for f in [
        format!("/kbundle/{archive}"),
        format!("/kbundle/{archive}.sha256"),
        "/kbundle/kbundle".into(),
        "/kbundle/cluster.toml".into(),
        "/cp1.ks".into(),
        "/worker1.ks".into(),
        "/worker2.ks".into(),
        "/BaseOS/repodata/repomd.xml".into(),
        "/images/pxeboot/vmlinuz".into(),
    ] {
        assert!(names.contains(&f), "{f} missing from {names:?}");
    }
    let x = st.dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    assert_eq!(
        extract(&out, &format!("/kbundle/{archive}"), &x.join("a")),
        std::fs::read(&st.bundle).unwrap()
    );
    assert_eq!(extract(&out, "/kbundle/kbundle", &x.join("k")), INSTALLER_BYTES);
    assert_ne!(
        std::fs::metadata(x.join("k")).unwrap().permissions().mode() & 0o111,
        0,
        "installer not executable"
    );
    assert_eq!(
        extract(&out, "/kbundle/cluster.toml", &x.join("c")),
        std::fs::read(st.ks.join("cluster.toml")).unwrap()
    );
    assert_eq!(
        extract(&out, "/worker1.ks", &x.join("w")),
        std::fs::read(st.ks.join("worker1.ks")).unwrap()
    );
    let side = String::from_utf8(extract(&out, &format!("/kbundle/{archive}.sha256"), &x.join("s"))).unwrap();
    assert!(side.ends_with(&format!("  {archive}\n")), "{side}");

    // Every GRUB menu, including the one inside the UEFI boot image: one new entry per node,
    // after the first install entry; the default still points at the media test.
    let bios = String::from_utf8(extract(&out, "/boot/grub2/grub.cfg", &x.join("g1"))).unwrap();
    let uefi = String::from_utf8(extract(&out, "/EFI/BOOT/grub.cfg", &x.join("g2"))).unwrap();
    let inside = efi_grub(&out, &st.dir);
    for cfg in [&bios, &uefi, &inside] {
        for node in ["cp1", "worker1", "worker2"] {
            assert!(
                cfg.contains(&format!("menuentry 'Install {node} (kbundle)' --class fedora")),
                "{cfg}"
            );
            assert!(
                cfg.contains(&format!(
                    "inst.stage2=hd:LABEL={volid} quiet inst.ks=hd:LABEL={volid}:/{node}.ks\n"
                )),
                "{cfg}"
            );
        }
        assert_eq!(cfg.matches("inst.ks=").count(), 3, "{cfg}");
        assert!(cfg.starts_with("set default=\"4\"\n"), "{cfg}");
        let titles: Vec<&str> = cfg.lines().filter(|l| l.starts_with("menuentry")).collect();
        assert!(
            titles[0].starts_with("menuentry 'Install Rocky Linux 10.0'")
                && titles[4].starts_with("menuentry 'Test this media"),
            "{cfg}"
        );
    }
    let o = Command::new("checkisomd5").arg(&out).output().unwrap();
    assert!(o.status.success(), "checkisomd5: {}", text(&o));
    // The kickstarts hold the root password hash: so does the ISO.
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn rocky9_iso_for_one_node_with_spaces_in_the_volume_id() {
    let st = setup("rocky9");
    let volid = "Rocky 9-5 x86_64 dvd";
    let base = base_iso(&st.dir.join("base"), Style::Rocky9, volid);
    let out = st.dir.join("worker1.iso");
    let o = iso(&st, &base, &out, &["--node", "worker1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(volume_id(&out), volid);
    assert_eq!(boot_images(&out), 2);
    let names = files(&out);
    assert!(
        names.contains(&"/worker1.ks".to_string()) && !names.contains(&"/cp1.ks".to_string()),
        "{names:?}"
    );
    let ks = "inst.ks=hd:LABEL=Rocky\\x209-5\\x20x86_64\\x20dvd:/worker1.ks";
    let x = st.dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    let isolinux = String::from_utf8(extract(&out, "/isolinux/isolinux.cfg", &x.join("i"))).unwrap();
    let uefi = String::from_utf8(extract(&out, "/EFI/BOOT/grub.cfg", &x.join("g"))).unwrap();
    let inside = efi_grub(&out, &st.dir);
    // The UEFI image is a file here: the one in the tree is the one El Torito boots.
    let img = extract(&out, "/images/efiboot.img", &x.join("efi.img"));
    assert!(!img.is_empty());
    let in_file = run("mtype", &["-i", s(&x.join("efi.img")), "::/EFI/BOOT/grub.cfg"]);
    for (name, cfg, n) in [
        ("isolinux", &isolinux, 2),
        ("uefi", &uefi, 3),
        ("efiboot", &inside, 3),
        ("efiboot file", &in_file, 3),
    ] {
        // Every install entry (install, media test, basic graphics), never the rescue entry.
        let with: Vec<&str> = cfg.lines().filter(|l| l.contains("inst.stage2=")).collect();
        assert_eq!(
            with.iter().filter(|l| l.trim_end().ends_with(ks)).count(),
            n,
            "{name}:\n{cfg}"
        );
        assert!(
            with.iter().all(|l| l.contains("inst.rescue") != l.contains("inst.ks=")),
            "{name}:\n{cfg}"
        );
    }
    let o = Command::new("checkisomd5").arg(&out).output().unwrap();
    assert!(o.status.success(), "checkisomd5: {}", text(&o));
}

#[test]
fn missing_xorriso_is_a_clear_error() {
    let st = setup("rocky10");
    let empty = st.dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = st.dir.join("out.iso");
    let o = kbundle_env(
        &[
            "iso",
            "--base",
            s(&st.bundle),
            "--bundle",
            s(&st.bundle),
            "--kickstarts",
            s(&st.ks),
            "-o",
            s(&out),
        ],
        &[("PATH", s(&empty))],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("xorriso is not installed")
            && err.contains("dnf install xorriso")
            && err.contains("apt-get install xorriso"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn kickstarts_and_bundle_must_belong_together() {
    let st = setup("rocky10");
    let base = base_iso(&st.dir.join("base"), Style::Rocky10, "Rocky-10-0-x86_64-dvd");
    let out_dir = st.dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("x.iso");
    // Same name, other content: the kickstarts' recorded sha256 does not match.
    let other = make_bundle(&st.dir.join("other"), Compression::Zstd, b"another kubeadm\n");
    let o = kbundle(&[
        "iso",
        "--base",
        s(&base),
        "--bundle",
        s(&other),
        "--kickstarts",
        s(&st.ks),
        "-o",
        s(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && err.contains("rendered for sha256"),
        "{}",
        text(&o)
    );
    // cluster.toml changed after rendering.
    let config = st.ks.join("cluster.toml");
    let orig = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, orig.replace("name = \"demo\"", "name = \"demo2\"")).unwrap();
    let o = iso(&st, &base, &out, &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("render the kickstarts again"),
        "{}",
        text(&o)
    );
    std::fs::write(&config, orig).unwrap();
    // Unknown node, and a base that is not an install ISO.
    let o = iso(&st, &base, &out, &["--node", "nope"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.ks"), "{}", text(&o));
    let plain_dir = st.dir.join("plain");
    write(&plain_dir.join("tree/README"), b"not an installer\n");
    let plain = plain_dir.join("plain.iso");
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-R",
            "-V",
            "PLAIN",
            "-o",
            s(&plain),
            s(&plain_dir.join("tree")),
        ],
    );
    let o = iso(&st, &plain, &out, &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no installer boot entry"),
        "{}",
        text(&o)
    );
    // Nothing was left behind.
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}

#[test]
fn mtools_and_implantisomd5_are_needed_unless_opted_out() {
    let st = setup("rocky10");
    let base = base_iso(&st.dir.join("base"), Style::Rocky10, "Rocky-10-0-x86_64-dvd");
    // A PATH with xorriso only.
    let bin = st.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let which = run("sh", &["-c", "command -v xorriso"]);
    std::os::unix::fs::symlink(which.trim(), bin.join("xorriso")).unwrap();
    let out = st.dir.join("o.iso");
    let args = [
        "iso",
        "--base",
        s(&base),
        "--bundle",
        s(&st.bundle),
        "--kickstarts",
        s(&st.ks),
        "-o",
        s(&out),
    ];
    let path = [("PATH", s(&bin))];
    let o = kbundle_env(&args, &path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && err.contains("implantisomd5 is not installed") && err.contains("isomd5sum"),
        "{}",
        text(&o)
    );
    let o = kbundle_env(&[&args[..], &["--no-md5"]].concat(), &path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1)
            && err.contains("mtools (mtype, mcopy) is not installed")
            && err.contains("--skip-efiboot"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    let o = kbundle_env(&[&args[..], &["--no-md5", "--skip-efiboot"]].concat(), &path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("warning: --skip-efiboot") && err.contains("warning: --no-md5"),
        "{}",
        text(&o)
    );
    // The ISO's own menus still boot the kickstarts; the UEFI image keeps its old menu.
    let x = st.dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    assert_eq!(
        String::from_utf8(extract(&out, "/EFI/BOOT/grub.cfg", &x.join("g")))
            .unwrap()
            .matches("inst.ks=")
            .count(),
        3
    );
    assert_eq!(efi_grub(&out, &st.dir).matches("inst.ks=").count(), 0);
}
