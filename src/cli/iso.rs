use crate::kickstart::iso::{make_iso, IsoOptions};
use std::path::PathBuf;

/// Remaster a Rocky Linux install ISO (the DVD) into unattended install media for the
/// cluster, as lorax's mkksiso does: adds the bundle, its .sha256, the installer extracted
/// from it (sha256 checked against bundle.json) and cluster.toml under /kbundle/, the
/// kickstarts as /<node>.ks, and `inst.ks=hd:LABEL=<volume id>:/<node>.ks` to the boot menus
/// (BIOS and UEFI, including the grub.cfg inside the UEFI boot image). The volume ID and boot
/// records are kept, the media checksum is implanted again, and OUT is written through a temp
/// file beside it.
///
/// Needs xorriso, mtools (UEFI boot image) and implantisomd5 (isomd5sum) on PATH. The
/// kickstarts, cluster.toml and the bundle must belong together: each kickstart records the
/// sha256 of the bundle and cluster.toml it was rendered for, and the bundle is verified.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  # one ISO for the whole cluster, a boot menu entry \"Install <node> (kbundle)\" per node:
  kbundle iso --base Rocky-10.0-x86_64-dvd1.iso --bundle kubernetes-v1.34.3.tar.zst \\
      --kickstarts ks/ -o cluster.iso
  # one ISO per machine, every install entry boots worker1's kickstart:
  kbundle iso --base Rocky-10.0-x86_64-dvd1.iso --bundle kubernetes-v1.34.3.tar.zst \\
      --kickstarts ks/ --node worker1 -o worker1.iso

Tools: dnf install xorriso mtools isomd5sum    (Debian: apt-get install xorriso mtools isomd5sum)
Look inside: xorriso -indev cluster.iso -find /kbundle
             xorriso -indev cluster.iso -report_el_torito plain")]
pub struct Args {
    /// The Rocky Linux install ISO to start from (the DVD: it holds BaseOS and AppStream).
    #[arg(long, value_name = "ROCKY.iso")]
    pub base: PathBuf,
    /// The bundle archive the kickstarts were rendered for.
    #[arg(long, value_name = "PATH")]
    pub bundle: PathBuf,
    /// The directory `kbundle kickstart --out` wrote (<node>.ks files and cluster.toml).
    #[arg(long, value_name = "DIR")]
    pub kickstarts: PathBuf,
    /// Boot this node's kickstart from every install entry (default: one entry per node).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The ISO to write (replaced if it exists).
    #[arg(short = 'o', long = "out", value_name = "OUT.iso")]
    pub out: PathBuf,
    /// Leave the UEFI boot image's menu unchanged (no mtools needed; USB and UEFI boots
    /// then show the original menu without the kickstart).
    #[arg(long)]
    pub skip_efiboot: bool,
    /// Do not implant a media checksum (no implantisomd5 needed; "Test this media" entries
    /// then halt, so boot an install entry).
    #[arg(long)]
    pub no_md5: bool,
    #[command(flatten)]
    pub trust: super::trust_args::BuildTrust,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let report = make_iso(&IsoOptions {
        base: a.base,
        bundle: a.bundle,
        kickstarts: a.kickstarts,
        node: a.node,
        out: a.out,
        skip_efiboot: a.skip_efiboot,
        no_md5: a.no_md5,
        trust: a.trust.flags(),
    })?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !quiet {
        for (menu, n) in &report.boot_menus {
            eprintln!(
                "  {menu}: {n} entr{} boot a kickstart",
                if *n == 1 { "y" } else { "ies" }
            );
        }
        crate::outln!(
            "wrote {} (mode {:o}, volume ID {:?}) for node(s) {}",
            report.out.display(),
            report.mode,
            report.volume_id,
            report.nodes.join(", ")
        )?;
    }
    Ok(0)
}
