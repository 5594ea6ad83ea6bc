use crate::bundle::unpack::{self, UnpackError};
use std::path::PathBuf;

/// Unpack a bundle archive into DIR/<bundle name> safely, verifying every entry as it is
/// written (and the archive's .sha256 sidecar first, when present). Nothing is written
/// outside DIR; on any problem nothing is left behind.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  kbundle unpack kubernetes-v1.34.3.tar.zst /srv/bundles\n  \
(prints /srv/bundles/kubernetes-v1.34.3 on success)\n  \
kbundle unpack --trusted-key site.pub kubernetes-v1.34.3.tar.zst /srv/bundles\n\n\
With --trusted-key or any key in /etc/kbundle/trusted-keys/, <archive>.minisig must be a good \
signature by one of them; it is checked before anything is written."
)]
pub struct Args {
    pub archive: PathBuf,
    pub dir: PathBuf,
    /// A public key (kbundle.pub, minisign format) trusted in addition to
    /// ROOT/etc/kbundle/trusted-keys/*.pub; repeatable.
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Vec<PathBuf>,
    /// Unpack even without a valid signature by a trusted key (warned on stderr).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// The node root whose /etc/kbundle/trusted-keys is read.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let flags = crate::trust::Flags {
        trusted_keys: a.trusted_key.clone(),
        allow_unsigned: a.allow_unsigned,
        allow_downgrade: false,
    };
    let policy = crate::trust::Policy::for_node(&crate::host::Host::new(&a.root, true), &flags, Vec::new())?;
    if let Err(e) = policy.check_archive(&a.archive) {
        eprintln!("{e}");
        eprintln!("FAILED {}: nothing was unpacked", a.archive.display());
        return Ok(super::EXIT_FAILURE);
    }
    match unpack::unpack(&a.archive, &a.dir) {
        Ok(u) => {
            if !quiet {
                eprintln!("unpacked and verified {} files", u.report.files_checked);
            }
            super::out(format_args!("{}\n", u.dir.display()))?;
            Ok(0)
        }
        Err(UnpackError::Unverified { archive, problems }) => {
            for p in &problems {
                eprintln!("{}: {p}", archive.display());
            }
            eprintln!("FAILED {}: nothing was unpacked", archive.display());
            Ok(super::EXIT_FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
