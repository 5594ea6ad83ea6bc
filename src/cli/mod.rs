//! Command-line interface: clap types here, one small file per subcommand.

mod build;
mod csr_approve;
mod etcd;
mod example_config;
mod inspect;
mod install;
mod iso;
mod key;
mod kickstart;
mod list;
mod lock;
mod trust_args;
mod unpack;
mod upgrade;
mod upgrade_stage;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit code for "ran fine, but found problems" (verify) and for errors.
pub const EXIT_FAILURE: i32 = 1;

/// Writes command output to stdout. A reader that went away (`kbundle inspect | head -1`)
/// gives a `BrokenPipe` error, which `main` treats as a normal end.
pub fn out(args: std::fmt::Arguments) -> std::io::Result<()> {
    use std::io::Write;
    std::io::stdout().lock().write_fmt(args)
}

/// `println!` for command output, returning the write error instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::out(format_args!("{}\n", format_args!($($t)*)))
    };
}

/// Is this error (anywhere in its chain) a closed stdout?
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "kbundle",
    version,
    about = "Pinned versions in, one verifiable offline Kubernetes bundle out, for air-gapped Rocky Linux nodes.",
    long_about = "kbundle turns a short manifest of pinned versions (manifests/*.toml) into one immutable, \
reproducible bundle archive holding every file a Rocky Linux node needs to run Kubernetes, \
each byte checked against a pinned sha256.\n\n\
Connected side:   kbundle lock manifests/kubernetes-v1.34.3.toml\n                  \
kbundle build manifests/kubernetes-v1.34.3.toml --out bundles/ --locked\n\
Air-gapped side:  kbundle verify kubernetes-v1.34.3.tar.zst",
    after_help = "Run `kbundle <command> --help` for each command's options and examples."
)]
pub struct Cli {
    /// Print only errors and warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    List(list::Args),
    Lock(lock::Args),
    Build(build::Args),
    Verify(verify::Args),
    Key(key::Args),
    Inspect(inspect::Args),
    Unpack(unpack::Args),
    Etcd(etcd::Args),
    ExampleConfig(example_config::Args),
    Kickstart(kickstart::Args),
    Iso(iso::Args),
    Install(install::Args),
    Upgrade(upgrade::Args),
    CsrApprove(csr_approve::Args),
}

/// Options shared by commands that download.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Download cache (content-addressed; a warm cache downloads nothing again).
    /// Default: $XDG_CACHE_HOME/kbundle, else ~/.cache/kbundle.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Rewrite a URL prefix to fetch through a mirror; repeatable. The bundle still records
    /// upstream URLs. Example: --mirror https://github.com=http://mirror.internal/github.com
    #[arg(long, value_name = "FROM=TO", value_parser = crate::fetch::mirror::parse_arg)]
    pub mirror: Vec<crate::manifest::MirrorRule>,
    /// Accept mirrors (from --mirror or the manifest) on link-local and cloud-metadata
    /// addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, 100.100.100.200,
    /// metadata.google.internal), refused by default. Loopback and private networks are
    /// always allowed.
    #[arg(long)]
    pub allow_private_mirror: bool,
    /// Parallel downloads.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Overall deadline for each file or image blob, retries included, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Minimum transfer rate in bytes per second, averaged over --min-rate-time; a slower
    /// transfer is retried (resuming), and fails once the retries are used up. 0: no minimum.
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = crate::fetch::limits::DEFAULT_MIN_RATE)]
    pub min_rate: u64,
    /// The window --min-rate is averaged over, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub min_rate_time: u64,
    /// Retries of a download after a transient failure (5xx, reset, timeout, too slow),
    /// with backoff; each resumes where the last one stopped.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retries: u32,
}

impl FetchArgs {
    pub fn options(&self, quiet: bool) -> crate::builder::Options {
        use std::time::Duration;
        crate::builder::Options {
            cache_dir: self.cache.clone().unwrap_or_else(crate::fetch::Cache::default_root),
            mirrors: self.mirror.clone(),
            jobs: self.jobs as usize,
            quiet,
            retry: crate::fetch::Retry {
                attempts: self.retries + 1,
                ..Default::default()
            },
            limits: crate::fetch::Limits {
                timeout: Duration::from_secs(self.timeout),
                min_rate: self.min_rate,
                rate_time: Duration::from_secs(self.min_rate_time),
            },
            allow_private_mirror: self.allow_private_mirror,
            lockfile: None,
        }
    }
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::List(a) => list::run(a),
        Command::Lock(a) => lock::run(a, cli.quiet),
        Command::Build(a) => build::run(a, cli.quiet),
        Command::Verify(a) => verify::run(a, cli.quiet),
        Command::Key(a) => key::run(a, cli.quiet),
        Command::Inspect(a) => inspect::run(a),
        Command::Unpack(a) => unpack::run(a, cli.quiet),
        Command::Etcd(a) => etcd::run(a, cli.quiet),
        Command::ExampleConfig(a) => example_config::run(a),
        Command::Kickstart(a) => kickstart::run(a, cli.quiet),
        Command::Iso(a) => iso::run(a, cli.quiet),
        Command::Install(a) => install::run(a),
        Command::Upgrade(a) => upgrade::run(a),
        Command::CsrApprove(a) => csr_approve::run(a),
    }
}
