use std::path::PathBuf;

/// Unpack a bundle archive into DIR/<bundle name> safely, then verify it. Nothing is
/// written outside DIR; on any problem nothing is left behind.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub archive: PathBuf,
    pub dir: PathBuf,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let out = crate::bundle::archive::unpack(&a.archive, &a.dir)?;
    let report = crate::bundle::verify::verify_dir(&out)?;
    if !report.ok() {
        for p in &report.problems {
            eprintln!("{}: {p}", out.display());
        }
        let _ = std::fs::remove_dir_all(&out);
        eprintln!("FAILED {}: removed the unpacked copy", a.archive.display());
        return Ok(super::EXIT_FAILURE);
    }
    if !quiet {
        eprintln!("unpacked and verified {} files", report.files_checked);
    }
    println!("{}", out.display());
    Ok(0)
}
