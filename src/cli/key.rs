use crate::bundle::keys::{self, NewPassword};
use clap::Subcommand;
use std::path::PathBuf;

/// Manage the minisign keys bundles are signed with.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
kbundle key generate --out ~/.kbundle-keys\n  \
kbundle build manifests/kubernetes-v1.34.3.toml --out bundles/ --sign ~/.kbundle-keys/kbundle.key\n  \
kbundle verify --trusted-key kbundle.pub bundles/kubernetes-v1.34.3.tar.zst\n  \
minisign -Vm bundles/kubernetes-v1.34.3.tar.zst -p kbundle.pub")]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    Generate(GenerateArgs),
}

/// Generate a minisign Ed25519 key pair: DIR/kbundle.key (secret, mode 0600,
/// password-protected unless --unencrypted) and DIR/kbundle.pub (public). Existing files are
/// never overwritten.
#[derive(Debug, clap::Args)]
#[command(after_help = "The password comes from --password-file (its first line), else \
KBUNDLE_SIGNING_PASSWORD, else it is asked for twice on the terminal.\n\n\
Both files are in minisign's format: `minisign -S -s kbundle.key` signs with the secret key, \
`minisign -V -p kbundle.pub` and `kbundle verify --trusted-key kbundle.pub` check with the public one.")]
pub struct GenerateArgs {
    /// Directory for kbundle.key and kbundle.pub (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Leave the secret key without a password (for signing in CI with a protected secret).
    #[arg(long, conflicts_with = "password_file")]
    pub unencrypted: bool,
    /// Read the new key's password from the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let KeyCommand::Generate(g) = a.command;
    let password = if g.unencrypted {
        NewPassword::Unencrypted
    } else {
        keys::password(g.password_file.as_deref())?.map_or(NewPassword::Prompt, NewPassword::Given)
    };
    let id = keys::generate(&g.out, password)?;
    crate::outln!("{}", g.out.join(keys::PUBLIC_KEY_FILE).display())?;
    if !quiet {
        eprintln!(
            "generated key id {id}: secret key {} (keep it off the nodes), public key {}",
            g.out.join(keys::SECRET_KEY_FILE).display(),
            g.out.join(keys::PUBLIC_KEY_FILE).display()
        );
    }
    Ok(0)
}
