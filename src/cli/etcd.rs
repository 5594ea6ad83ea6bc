use crate::etcd::restore::RestoreOptions;
use crate::etcd::snapshot::{self, SaveOptions, Tls};
use crate::etcd::Level;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// Back up and restore a control plane's etcd with the etcd tools from the bundle.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples (on a kubeadm control-plane node):\n  \
kbundle etcd snapshot save /var/backups/etcd-$(date +%F).db\n  \
kbundle etcd snapshot restore /var/backups/etcd-2025-01-31.db \\\n    \
--data-dir /var/lib/etcd-restored --update-manifest\n\n\
Run `kbundle etcd snapshot save --help` and `kbundle etcd snapshot restore --help` for details.")]
pub struct Args {
    #[command(subcommand)]
    pub command: EtcdCommand,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// Save etcd to a snapshot file, or restore one into a new data directory.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    Save(SaveArgs),
    Restore(RestoreArgs),
}

/// Take a snapshot of a running etcd member into FILE, check it, and record its sha256.
///
/// etcdctl writes FILE.part beside FILE; kbundle checks it with `snapshot status` (etcdutl
/// when present, else etcdctl), writes its sha256 to FILE.sha256 (sha256sum format) and
/// only then renames it to FILE. On any failure nothing is left at FILE. An existing FILE
/// is never overwritten.
///
/// For an https:// endpoint, the client certificates default to kubeadm's:
/// /etc/kubernetes/pki/etcd/ca.crt and healthcheck-client.crt/.key (server.crt/.key when
/// healthcheck-client is absent).
///
/// etcdctl is looked up as: --etcdctl, then /usr/local/bin/etcdctl (where the bundle
/// installs it), then /opt/kbundle/versions/etcd-*/, then $PATH; etcdutl likewise. The tools
/// must be of the server's minor (from `endpoint status`): the first one that is is used, and
/// one of another minor is refused. FILE.etcd-version records the server's version. ETCDCTL_* environment variables are ignored; use the flags.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
# on a kubeadm control plane: TLS files from /etc/kubernetes/pki/etcd\n  \
kbundle etcd snapshot save /var/backups/etcd-$(date +%F-%H%M).db\n\n  \
# another member, explicit certificates\n  \
kbundle etcd snapshot save snap.db --endpoints https://10.0.0.12:2379 \\\n    \
--cacert ca.crt --cert client.crt --key client.key\n\n  \
# a plain-http test etcd, with a given etcdctl\n  \
kbundle etcd snapshot save snap.db --endpoints http://127.0.0.1:2379 --etcdctl /usr/bin/etcdctl\n\n  \
# check it later\n  \
sha256sum -c snap.db.sha256")]
pub struct SaveArgs {
    /// Snapshot file to create (must not exist).
    pub file: PathBuf,
    /// The one etcd member to snapshot.
    #[arg(long, value_name = "URL", default_value = snapshot::DEFAULT_ENDPOINT)]
    pub endpoints: String,
    /// CA bundle for https endpoints [default: /etc/kubernetes/pki/etcd/ca.crt].
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate [default: .../healthcheck-client.crt, else .../server.crt].
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key [default: .../healthcheck-client.key, else .../server.key].
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// etcdctl to use.
    #[arg(long, value_name = "PATH")]
    pub etcdctl: Option<PathBuf>,
    /// etcdutl for `snapshot status` (etcd >= 3.5; etcdctl is used without it).
    #[arg(long, value_name = "PATH")]
    pub etcdutl: Option<PathBuf>,
    /// Give up on the snapshot after this long (e.g. 90s, 30m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Restore a snapshot into a new data directory and, with --update-manifest, switch
/// kubeadm's etcd static pod to it.
///
/// If FILE.sha256 exists, the snapshot is checked against it first. The data directory
/// must be missing or empty: restore never reuses one. The snapshot is restored into a
/// hidden directory beside it and renamed into place, so --data-dir never holds half a
/// restore. The tool must be of the minor of the etcd that wrote the snapshot (FILE.etcd-version,
/// written by `snapshot save`, else the etcd image in etcd.yaml): etcdutl is used when one of
/// that minor is found (--etcdutl, <root>/usr/local/bin, <root>/opt/kbundle/versions/etcd-*,
/// $PATH), else etcdctl (3.4/3.5).
///
/// --update-manifest then, under --root: (1) moves
/// /etc/kubernetes/manifests/kube-apiserver.yaml to
/// /etc/kubernetes/kube-apiserver.yaml.kbundle-stopped (kubelet stops the API server) and
/// waits for kube-apiserver to exit; (2) saves /etc/kubernetes/etcd.yaml.kbundle-backup and
/// rewrites /etc/kubernetes/manifests/etcd.yaml so that --data-dir, the etcd-data
/// volumeMount and its hostPath all name the new directory (nothing else in the file
/// changes); (3) moves kube-apiserver.yaml back. If a step fails the earlier ones are
/// undone and the error says what state each file is in. --name, --initial-cluster and
/// --initial-advertise-peer-urls default to the values in etcd.yaml, so the restored member
/// keeps its identity.
///
/// --update-manifest handles this node only. With several control planes, stop every API
/// server first and restore every etcd member from the same snapshot, each with its own
/// --name and --initial-advertise-peer-urls and the same full --initial-cluster.
///
/// Afterwards, restart kube-controller-manager, kube-scheduler and kubelet on every node
/// so that no component keeps state newer than the snapshot.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
# kubeadm control plane: restore and switch etcd over\n  \
kbundle etcd snapshot restore /var/backups/etcd-2025-01-31.db \\\n    \
--data-dir /var/lib/etcd-restored --update-manifest\n\n  \
# only restore (for example to inspect it with a throw-away etcd)\n  \
kbundle etcd snapshot restore snap.db --data-dir /tmp/etcd-restored \\\n    \
--name m1 --initial-cluster m1=http://127.0.0.1:2380 \\\n    \
--initial-advertise-peer-urls http://127.0.0.1:2380\n\n  \
# a node's disk mounted at /mnt/node\n  \
kbundle etcd snapshot restore snap.db --root /mnt/node \\\n    \
--data-dir /var/lib/etcd-restored --update-manifest")]
pub struct RestoreArgs {
    /// Snapshot file written by `snapshot save`.
    pub file: PathBuf,
    /// New data directory (missing or empty), as a path on the node under --root.
    #[arg(long, value_name = "NEW_DIR")]
    pub data_dir: PathBuf,
    /// Point kubeadm's etcd static pod at NEW_DIR (stopping the API server meanwhile).
    #[arg(long)]
    pub update_manifest: bool,
    /// The node's root directory: for the manifests, NEW_DIR and the bundled tools.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Member name [default with --update-manifest: --name in etcd.yaml].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// NAME=PEER_URL,... [default with --update-manifest: from etcd.yaml].
    #[arg(long, value_name = "CLUSTER")]
    pub initial_cluster: Option<String>,
    /// This member's peer URLs [default with --update-manifest: from etcd.yaml].
    #[arg(long, value_name = "URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// etcdutl to use (preferred when found).
    #[arg(long, value_name = "PATH")]
    pub etcdutl: Option<PathBuf>,
    /// etcdctl to use when there is no etcdutl (etcd 3.4).
    #[arg(long, value_name = "PATH")]
    pub etcdctl: Option<PathBuf>,
    /// Restore with `--bump-revision N --mark-compacted` when the tool has them (etcd
    /// >= 3.5.10), so that watchers such as kube-apiserver re-list; 0: never.
    #[arg(long, value_name = "N", default_value_t = crate::etcd::restore::DEFAULT_BUMP_REVISION)]
    pub bump_revision: u64,
    /// How long to wait for kube-apiserver to exit in step 1 (0: don't wait).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub apiserver_stop_timeout: Duration,
    /// Give up on the restore tool after this long.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `90`, `90s`, `30m`, `2h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: expected a duration like 90s, 30m or 2h"))
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let mut notes = |level: Level, msg: &str| match level {
        Level::Step if !quiet => eprintln!("{msg}"),
        Level::Step => {}
        Level::Warn => eprintln!("warning: {msg}"),
    };
    match a.command {
        EtcdCommand::Snapshot(SnapshotCommand::Save(s)) => save(s, &mut notes),
        EtcdCommand::Snapshot(SnapshotCommand::Restore(r)) => restore(r, &mut notes),
    }
}

fn save(s: SaveArgs, notes: crate::etcd::Notes) -> anyhow::Result<i32> {
    let opts = SaveOptions {
        file: s.file,
        endpoint: s.endpoints,
        tls: Tls {
            cacert: s.cacert,
            cert: s.cert,
            key: s.key,
        },
        pki_dir: PathBuf::from(snapshot::KUBEADM_ETCD_PKI),
        etcdctl: s.etcdctl,
        etcdutl: s.etcdutl,
        timeout: s.timeout,
    };
    let host = crate::host::Host::new(std::path::Path::new("/"), false);
    let r = snapshot::save(&host, &opts, notes)?;
    crate::outln!("saved {}", r.file.display())?;
    crate::outln!("  revision  {}", r.status.revision)?;
    crate::outln!("  keys      {}", r.status.total_key)?;
    crate::outln!("  size      {} bytes", r.size)?;
    crate::outln!("  sha256    {}  ({})", r.sha256, r.sums_file.display())?;
    Ok(0)
}

fn restore(r: RestoreArgs, notes: crate::etcd::Notes) -> anyhow::Result<i32> {
    let host = crate::host::Host::new(&r.root, false);
    let opts = RestoreOptions {
        file: r.file,
        data_dir: r.data_dir,
        name: r.name,
        initial_cluster: r.initial_cluster,
        initial_advertise_peer_urls: r.initial_advertise_peer_urls,
        etcdctl: r.etcdctl,
        etcdutl: r.etcdutl,
        update_manifest: r.update_manifest,
        bump_revision: r.bump_revision,
        apiserver_stop_timeout: r.apiserver_stop_timeout,
        timeout: r.timeout,
    };
    // One kbundle at a time changes a node (and an interrupted run is cleaned up).
    let _lock = crate::install::lock_node(&host)?;
    let rep = crate::etcd::restore::restore(&host, &opts, notes)?;
    crate::outln!("restored {} into {}", opts.file.display(), rep.data_dir.display())?;
    if let Some(old) = &rep.old_data_dir {
        crate::outln!(
            "etcd.yaml now uses {}; kubelet restarts etcd from it and starts the API server again",
            opts.data_dir.display()
        )?;
        crate::outln!("the old data directory {old} was left as it was")?;
        crate::outln!(
            "next: restart kube-controller-manager, kube-scheduler and kubelet so that none keeps state newer than the snapshot"
        )?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1.5h").is_err());
    }
}
