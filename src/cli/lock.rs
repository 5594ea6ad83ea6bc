use super::FetchArgs;
use std::path::PathBuf;

/// Resolve MANIFEST against upstream and write its lockfile (MANIFEST with .lock) beside it:
/// every file's URL, size and sha256, sorted and stable. Files are downloaded and verified
/// into the cache on the way.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  kbundle lock manifests/kubernetes-v1.34.3.toml   # writes manifests/kubernetes-v1.34.3.lock"
)]
pub struct Args {
    pub manifest: PathBuf,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Also lock the intermediate hops of an upgrade bundle from this version.
    #[arg(long, value_name = "vX.Y.Z")]
    pub upgrade_from: Option<crate::version::Version>,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let (lock, path) = crate::builder::lock(&a.manifest, &a.fetch.options(quiet), a.upgrade_from)?;
    if !quiet {
        eprintln!("locked {} files in {}", lock.files.len(), path.display());
    }
    Ok(0)
}
