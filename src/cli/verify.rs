use std::path::PathBuf;

/// Check a bundle (archive or unpacked directory) against its bundle.json: every entry
/// present with the right size and sha256, nothing extra, SHA256SUMS consistent. Archives
/// are read without writing anything, and unsafe entries (absolute paths, '..', links,
/// devices, setuid bits) are refused. Exit status 1 on any problem.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  kbundle verify kubernetes-v1.34.3.tar.zst\n  kbundle verify /var/lib/kbundle/bundles/<digest>/kubernetes-v1.34.3"
)]
pub struct Args {
    pub path: PathBuf,
    /// For delta bundles: the unpacked base bundle (default: found by digest under
    /// /var/lib/kbundle/bundles).
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let t = std::time::Instant::now();
    let report = crate::bundle::base::verify_with_base(&a.path, a.base.as_deref())?;
    for p in &report.problems {
        eprintln!("{}: {p}", a.path.display());
    }
    if !a.path.is_dir() && !report.sidecar_checked {
        eprintln!(
            "warning: no {}.sha256 beside the archive: checked against its own bundle.json only; compare `sha256sum {}` with the digest the build printed",
            a.path.display(),
            a.path.display()
        );
    }
    if report.ok() {
        if !quiet {
            crate::outln!(
                "OK {}: {} files, {} bytes verified in {:.2}s",
                a.path.display(),
                report.files_checked,
                report.bytes_checked,
                t.elapsed().as_secs_f64()
            )?;
        }
        Ok(0)
    } else {
        eprintln!(
            "FAILED {}: {} problem(s)",
            a.path.display(),
            report.problems.len().max(1)
        );
        Ok(super::EXIT_FAILURE)
    }
}
