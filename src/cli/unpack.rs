use crate::bundle::unpack::{self, UnpackError};
use std::path::PathBuf;

/// Unpack a bundle archive into DIR/<bundle name> safely, verifying every entry as it is
/// written (and the archive's .sha256 sidecar first, when present). Nothing is written
/// outside DIR; on any problem nothing is left behind.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  kbundle unpack kubernetes-v1.34.3.tar.zst /srv/bundles\n  \
(prints /srv/bundles/kubernetes-v1.34.3 on success)"
)]
pub struct Args {
    pub archive: PathBuf,
    pub dir: PathBuf,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
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
