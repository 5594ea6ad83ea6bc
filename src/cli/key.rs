use crate::bundle::keys::{self, NewPassword};
use crate::host::Host;
use crate::trust::store;
use clap::Subcommand;
use std::path::PathBuf;

/// Manage the minisign keys bundles are signed with.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
kbundle key generate --out ~/.kbundle-keys\n  \
kbundle build manifests/kubernetes-v1.34.3.toml --out bundles/ --sign ~/.kbundle-keys/kbundle.key\n  \
kbundle verify --trusted-key kbundle.pub bundles/kubernetes-v1.34.3.tar.zst\n  \
minisign -Vm bundles/kubernetes-v1.34.3.tar.zst -p kbundle.pub\n  \
kbundle key trust kbundle.pub          # on a node: require bundles signed by it\n  \
kbundle key list --json")]
pub struct Args {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    Generate(GenerateArgs),
    Trust(TrustArgs),
    List(ListArgs),
    Untrust(UntrustArgs),
}

/// Trust a public key on this node: checks that FILE is a minisign public key and writes it
/// as /etc/kbundle/trusted-keys/<KEYID>.pub. From then on install, upgrade, verify and unpack
/// require a bundle signed by a trusted key.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  kbundle key trust site.pub\n  \
kbundle key trust --root /mnt/image site.pub\n\n\
Several trusted keys at once allow a rotation: trust the new key, sign with it, then \
`kbundle key untrust OLDID`.")]
pub struct TrustArgs {
    /// A public key file (kbundle.pub, minisign.pub).
    pub file: PathBuf,
    /// The node root (image builds, tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// List the keys this node trusts (/etc/kbundle/trusted-keys/*.pub) and the highest serial
/// installed from each.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// One JSON array of {"id", "file", "serial"} instead of lines.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// Stop trusting a key (revocation): removes every /etc/kbundle/trusted-keys/*.pub file
/// holding that key id. Its recorded serial is kept.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  kbundle key untrust 0123456789ABCDEF")]
pub struct UntrustArgs {
    /// The key id, as `kbundle key list` shows it.
    pub key_id: String,
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
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
    match a.command {
        KeyCommand::Generate(g) => generate(g, quiet),
        KeyCommand::Trust(t) => trust(t),
        KeyCommand::List(l) => list(l),
        KeyCommand::Untrust(u) => untrust(u),
    }
}

fn trust(t: TrustArgs) -> anyhow::Result<i32> {
    let key = crate::trust::read_key_files(std::slice::from_ref(&t.file))?.remove(0);
    let host = Host::new(&t.root, false);
    let (abs, changed) = store::trust(&host, &key)?;
    let what = if changed { "now trusted" } else { "already trusted" };
    crate::outln!("key id {} {what}: {}", key.id, host.path(&abs)?.display())?;
    Ok(0)
}

fn list(l: ListArgs) -> anyhow::Result<i32> {
    let host = Host::new(&l.root, true);
    let keys = store::load_keys(&host)?;
    let serials = store::load_serials(&host)?;
    let rows: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({"id": k.id.to_string(), "file": k.path, "serial": serials.get(k.id)}))
        .collect();
    if l.json {
        crate::outln!("{}", serde_json::Value::Array(rows))?;
        return Ok(0);
    }
    for k in &keys {
        let serial = serials.get(k.id).map_or("none".to_string(), |s| s.to_string());
        crate::outln!("{}  {}  highest serial installed: {serial}", k.id, k.path.display())?;
    }
    if keys.is_empty() {
        eprintln!(
            "no trusted keys in {}: bundles are accepted unsigned",
            crate::trust::KEYS_DIR
        );
    }
    Ok(0)
}

fn untrust(u: UntrustArgs) -> anyhow::Result<i32> {
    let host = Host::new(&u.root, false);
    for abs in store::untrust(&host, &u.key_id)? {
        crate::outln!("removed {}", host.path(&abs)?.display())?;
    }
    Ok(0)
}

fn generate(g: GenerateArgs, quiet: bool) -> anyhow::Result<i32> {
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
