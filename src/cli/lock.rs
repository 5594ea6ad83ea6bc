use super::FetchArgs;
use std::path::PathBuf;

/// Resolve MANIFEST against upstream and write its lockfile (MANIFEST with .lock, beside it,
/// or --lockfile): every file's URL, size and sha256, every image's digests, sorted and
/// stable. Files are downloaded and verified into the cache on the way.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  kbundle lock manifests/kubernetes-v1.34.3.toml   # writes manifests/kubernetes-v1.34.3.lock\n  \
kbundle lock manifests/kubernetes-v1.34.3.toml --lockfile locks/k8s.lock\n  \
kbundle build manifests/kubernetes-v1.34.3.toml --lockfile locks/k8s.lock --locked --out bundles/"
)]
pub struct Args {
    pub manifest: PathBuf,
    /// Where to write the lockfile. Default: MANIFEST with .lock for .toml, beside the manifest.
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Also lock the intermediate hops of an upgrade bundle from this version.
    #[arg(long, value_name = "vX.Y.Z")]
    pub upgrade_from: Option<crate::version::Version>,
    /// Go through this patch for its minor instead of the highest one pinned beside the
    /// manifest or in kbundle's catalog (repeatable; one per intermediate minor).
    #[arg(long, value_name = "vX.Y.Z", requires = "upgrade_from")]
    pub via: Vec<crate::version::Version>,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let opts = crate::builder::Options {
        lockfile: a.lockfile,
        ..a.fetch.options(quiet)
    };
    let (lock, path) = crate::builder::lock(&a.manifest, &opts, a.upgrade_from, &a.via)?;
    if !quiet {
        eprintln!("locked {} files in {}", lock.files.len(), path.display());
    }
    Ok(0)
}
