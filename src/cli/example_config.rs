/// Print a commented example cluster config (one control plane, two workers) that works
/// as-is with `install` and `kickstart`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  kbundle example-config > cluster.toml")]
pub struct Args {}

pub fn run(_a: Args) -> anyhow::Result<i32> {
    print!("{}", crate::cluster::EXAMPLE);
    Ok(0)
}
