use super::FetchArgs;
use crate::bundle::pack::Compression;
use std::path::PathBuf;

/// Build the bundle archive of MANIFEST: resolve (or use the lockfile), download and verify
/// every artifact, and pack one reproducible archive plus its .sha256 into --out. Writes the
/// lockfile (MANIFEST.lock beside the manifest, or --lockfile) when it is missing or stale.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  kbundle build manifests/kubernetes-v1.34.3.toml --out bundles/\n  \
kbundle build manifests/kubernetes-v1.34.3.toml --out bundles/ --locked \\\n      \
--mirror https://github.com=http://mirror.internal/github.com \\\n      \
--mirror https://dl.k8s.io=http://mirror.internal/dl.k8s.io\n\n\
Set SOURCE_DATE_EPOCH to choose the archive's timestamps; the same inputs always give the same bytes.\n\n\
Downloads: each file or image blob must finish within --timeout (default 1800 s, retries included) \
and keep at least --min-rate bytes/s (default 1024) over every --min-rate-time window (default 30 s)."
)]
pub struct Args {
    pub manifest: PathBuf,
    /// Output directory (created if missing) for <name>.tar.zst (or .tar.gz/.tar) and
    /// <archive>.sha256. Temp files that interrupted builds left here are deleted.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// The lockfile to read, and to write when it is missing or stale.
    /// Default: MANIFEST with .lock for .toml, beside the manifest.
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Archive compression.
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    pub compression: Compression,
    /// Require the lockfile and refuse to build if upstream no longer matches it.
    #[arg(long)]
    pub locked: bool,
    /// Ship this kbundle executable as the bundle's installer (default: the running one).
    /// Needed when building on one arch for another.
    #[arg(long, value_name = "PATH")]
    pub installer: Option<PathBuf>,
    /// Build an upgrade bundle for a cluster now at this version: it carries every minor
    /// hop to the manifest's version (e.g. v1.32.11 -> 1.33.7 and 1.34.3), within the skew
    /// policy. Each minor in between goes through the highest patch pinned by the manifests
    /// beside MANIFEST or by kbundle's catalog, unless --via names another.
    #[arg(long, value_name = "vX.Y.Z")]
    pub upgrade_from: Option<crate::version::Version>,
    /// With --upgrade-from: go through this patch for its minor (e.g. --via v1.33.3 instead
    /// of v1.33.7). Repeatable, one per minor strictly between the cluster's and the target's.
    #[arg(long, value_name = "vX.Y.Z", requires = "upgrade_from")]
    pub via: Vec<crate::version::Version>,
    /// Build a delta bundle: leave out every file and blob already in this earlier bundle
    /// (archive or directory), which the nodes keep from their earlier install.
    #[arg(long, value_name = "OLD_BUNDLE")]
    pub base: Option<PathBuf>,
    /// Files only, no container images: for sites whose nodes pull images from their own
    /// registry. Nodes installed from such a bundle need that registry (see registry-mirror
    /// in the cluster config).
    #[arg(long)]
    pub skip_images: bool,
    /// Cross-check kbundle's kubeadm image list by running the bundle's own kubeadm (for
    /// this host's arch) as `kubeadm config images list --kubernetes-version V`; differences
    /// are warnings. Off by default because it executes a downloaded program on this host.
    /// KBUNDLE_CHECK_KUBEADM_IMAGES=1 does the same.
    #[arg(long)]
    pub check_kubeadm_images: bool,
    /// Sign with this minisign secret key (from `kbundle key generate`): bundle.json.minisig
    /// goes into the bundle, <archive>.minisig beside the archive. Default: $KBUNDLE_SIGNING_KEY.
    /// A password-protected key reads its password from --password-file, else
    /// $KBUNDLE_SIGNING_PASSWORD, else asks on the terminal.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// The signing key's password: the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The serial in the signature's trusted comment; must grow with every bundle a key
    /// signs. Default: the build time in seconds since the epoch (SOURCE_DATE_EPOCH if set).
    #[arg(long, value_name = "N")]
    pub serial: Option<u64>,
}

/// `--sign`: the key, loaded (and decrypted) before anything is downloaded.
fn signing(a: &Args) -> anyhow::Result<Option<crate::builder::sign::Signing>> {
    let key = a
        .sign
        .clone()
        .or_else(|| std::env::var_os(crate::bundle::keys::KEY_ENV).map(PathBuf::from));
    let Some(key) = key.filter(|k| !k.as_os_str().is_empty()) else {
        if a.password_file.is_some() || a.serial.is_some() {
            anyhow::bail!("--password-file and --serial need --sign KEY (or KBUNDLE_SIGNING_KEY)");
        }
        return Ok(None);
    };
    let password = crate::bundle::keys::password(a.password_file.as_deref())?;
    let signer = crate::bundle::keys::Signer::load(&key, password)?;
    Ok(Some(crate::builder::sign::Signing {
        signer,
        serial: a.serial,
    }))
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let sign = signing(&a)?;
    let opts = crate::builder::BuildOptions {
        common: crate::builder::Options {
            lockfile: a.lockfile,
            ..a.fetch.options(quiet)
        },
        out: a.out,
        compression: a.compression,
        locked: a.locked,
        installer: a.installer,
        upgrade_from: a.upgrade_from,
        via: a.via,
        base: a.base,
        skip_images: a.skip_images,
        check_kubeadm_images: a.check_kubeadm_images
            || std::env::var_os("KBUNDLE_CHECK_KUBEADM_IMAGES").is_some_and(|v| v == "1"),
        sign,
    };
    let opts_sign_id = opts.sign.as_ref().map(|s| s.signer.id);
    let b = crate::builder::build(&a.manifest, &opts)?;
    if b.lock_written && !quiet {
        eprintln!("wrote lockfile {}", b.lock_path.display());
    }
    crate::outln!("{}", b.archive.display())?;
    if !quiet {
        summary(&b, opts_sign_id);
    }
    Ok(0)
}

fn summary(b: &crate::builder::Built, signed_by: Option<crate::bundle::signature::KeyId>) {
    eprintln!(
        "built {} ({} entries, {} bytes, sha256 {}); {} download(s), the rest from cache",
        b.archive.display(),
        b.bundle.entries.len(),
        b.size,
        b.sha256,
        b.downloaded
    );
    if let Some(s) = &signed_by {
        eprintln!(
            "signed with key id {s}: {}.minisig and bundle.json.minisig inside",
            b.archive.display()
        );
    }
}
