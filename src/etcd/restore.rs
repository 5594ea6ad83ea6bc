//! `etcd snapshot restore`: verify `FILE.sha256` when it exists, refuse a non-empty data
//! directory, restore into a hidden staging directory beside it (etcd refuses even an empty
//! existing directory) and rename that into place; then, with `--update-manifest`, point
//! kubeadm's etcd static pod at it ([`super::manifest`]). Processes and file operations go
//! through the node seam ([`Host`]); the static-pod manifest edit is the manifest module's.

use super::manifest::{self, ApplyOptions, Plan};
use super::snapshot::VERSION_SUFFIX;
use super::snapshot::{flag_arg, hash_on, path_arg};
use super::tools::{self, Kind, Tool};
use super::versions::{self, Server};
use super::{parent_dir, under_root, with_suffix, EtcdError, Level, Notes};
use crate::catalog::checksum::ChecksumError;
use crate::catalog::etcd_tools::etcd_version_of;
use crate::digest::Sha256;
use crate::host::sys::Sys;
use crate::host::Host;
use crate::version::Version;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// How far a restore moves the revision on: etcd's recovery guide uses 1,000,000,000 for
/// Kubernetes (docs/upstream-facts.md, "etcd tools per server version"), far more than the
/// writes of any cluster between a snapshot and its restore.
pub const DEFAULT_BUMP_REVISION: u64 = 1_000_000_000;

/// Options for [`restore`].
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub file: PathBuf,
    /// The new data directory as the node sees it (under the host's root).
    pub data_dir: PathBuf,
    pub name: Option<String>,
    pub initial_cluster: Option<String>,
    pub initial_advertise_peer_urls: Option<String>,
    pub etcdctl: Option<PathBuf>,
    pub etcdutl: Option<PathBuf>,
    pub update_manifest: bool,
    /// `--bump-revision N --mark-compacted` when the tool has them (0: never);
    /// [`DEFAULT_BUMP_REVISION`] from the CLI.
    pub bump_revision: u64,
    /// How long to wait for kube-apiserver to exit once its manifest is moved away
    /// (only when the root is `/`; zero skips the wait).
    pub apiserver_stop_timeout: Duration,
    /// The restore tool is killed after this long.
    pub timeout: Duration,
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The restored data directory (under the root).
    pub data_dir: PathBuf,
    pub tool: Tool,
    /// The verified sha256, when `FILE.sha256` existed.
    pub verified: Option<Sha256>,
    /// With `--update-manifest`: the data directory etcd.yaml used before.
    pub old_data_dir: Option<String>,
}

/// Reads the sha256 for `file_name` from a sha256sum-format file (`<hex>  name` or
/// `<hex> *name`; a file with a single digest line is taken whatever name it gives).
pub fn read_checksum_file(sys: &dyn Sys, path: &Path, file_name: &str) -> Result<Sha256, EtcdError> {
    use crate::catalog::checksum::{self, ChecksumFormat};
    let meta = sys.stat(path).map_err(EtcdError::io("cannot read", path))?;
    let bad = |source| EtcdError::BadChecksumFile {
        path: path.to_path_buf(),
        source,
    };
    if meta.len > 64 * 1024 {
        return Err(bad(ChecksumError::TooLarge { limit: 64 * 1024 }));
    }
    let bytes = sys.read(path).map_err(EtcdError::io("cannot read", path))?;
    if let Ok(d) = checksum::parse(ChecksumFormat::DigestOnly, &bytes, file_name) {
        return Ok(d);
    }
    match checksum::sum_lines(&bytes).map_err(bad)?.as_slice() {
        [] => Err(bad(ChecksumError::Empty)),
        [one] => Ok(one.digest),
        _ => checksum::parse(ChecksumFormat::Sha256Sum, &bytes, file_name).map_err(bad),
    }
}

/// Restores `opts.file` into a new data directory (see the module docs).
pub fn restore(host: &Host, opts: &RestoreOptions, notes: Notes) -> Result<RestoreReport, EtcdError> {
    let sys = host.sys();
    if !sys.stat(&opts.file).is_ok_and(|m| m.is_file) {
        return Err(EtcdError::NotASnapshot {
            path: opts.file.clone(),
        });
    }
    let data_dir = data_dir_on_machine(host, opts)?;
    // Everything --update-manifest needs is checked before anything is written.
    let plan = manifest_plan(host, opts, notes)?;
    check_new_data_dir(sys, &data_dir)?;
    let verified = verify_sums(sys, &opts.file, notes)?;
    let server = snapshot_server(host, &opts.file, notes);
    let (tool, version) = restore_tool(host, opts, server.as_ref(), notes)?;
    notes(
        Level::Step,
        &format!("restoring with {} {version} {}", tool.kind.name(), tool.describe()),
    );
    let bump = bump_flags(host, &tool, opts.bump_revision, notes)?;
    let mut member = member_flags(opts, plan.as_ref(), notes);
    member.extend(bump);
    let job = Job {
        host,
        tool: &tool,
        file: &opts.file,
        member,
        timeout: opts.timeout,
    };
    restore_into(&job, &data_dir, notes)?;
    let old_data_dir = match &plan {
        Some(plan) => Some(point_manifest(host, opts, plan, &data_dir, notes)?),
        None => None,
    };
    Ok(RestoreReport {
        data_dir,
        tool,
        verified,
        old_data_dir,
    })
}

/// The data directory on this machine: `--data-dir` itself on `/`, else re-rooted (then it
/// must be an absolute node path).
fn data_dir_on_machine(host: &Host, opts: &RestoreOptions) -> Result<PathBuf, EtcdError> {
    let at_root = host.root() == Path::new("/");
    if (opts.update_manifest || !at_root) && !opts.data_dir.is_absolute() {
        return Err(EtcdError::Usage(format!(
            "--data-dir {} must be an absolute path on the node with --update-manifest or --root",
            opts.data_dir.display()
        )));
    }
    if opts.data_dir.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(EtcdError::Usage(format!(
            "--data-dir {} must not contain `..`",
            opts.data_dir.display()
        )));
    }
    if at_root {
        Ok(opts.data_dir.clone())
    } else {
        under_root(host.root(), &opts.data_dir)
    }
}

fn manifest_plan(host: &Host, opts: &RestoreOptions, notes: Notes) -> Result<Option<Plan>, EtcdError> {
    if !opts.update_manifest {
        return Ok(None);
    }
    let node_dir = opts
        .data_dir
        .to_str()
        .ok_or_else(|| EtcdError::Usage(format!("--data-dir {} is not UTF-8", opts.data_dir.display())))?;
    let plan = manifest::plan(host, node_dir)?;
    notes(
        Level::Step,
        &format!(
            "{}: etcd uses --data-dir={} (volume {}); it will be pointed at {}",
            plan.paths.etcd_manifest().display(),
            plan.rewrite.old_data_dir,
            plan.rewrite.volume,
            plan.rewrite.new_data_dir
        ),
    );
    Ok(Some(plan))
}

/// Checks the snapshot against `FILE.sha256` when there is one.
fn verify_sums(sys: &dyn Sys, file: &Path, notes: Notes) -> Result<Option<Sha256>, EtcdError> {
    let sums = with_suffix(file, ".sha256");
    if sys.stat(&sums).is_err() {
        notes(
            Level::Warn,
            &format!("no {}: the snapshot's sha256 is not checked", sums.display()),
        );
        return Ok(None);
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = read_checksum_file(sys, &sums, &name)?;
    let (actual, _) = hash_on(sys, file)?;
    if actual != expected {
        return Err(EtcdError::ChecksumMismatch {
            file: file.to_path_buf(),
            sums,
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    notes(
        Level::Step,
        &format!("{}: sha256 matches {}", file.display(), sums.display()),
    );
    Ok(Some(actual))
}

/// The version of the server the snapshot came from: its `FILE.etcd-version` (written by
/// `snapshot save`), else the etcd image of the node's etcd.yaml. The sidecar wins: after
/// a failed upgrade etcd.yaml may already name the next minor, while the snapshot taken
/// before the hop is of the old one.
fn snapshot_server(host: &Host, file: &Path, notes: Notes) -> Option<Server> {
    let sidecar = with_suffix(file, VERSION_SUFFIX);
    let recorded = host.sys().read(&sidecar).ok().and_then(|b| {
        let text = String::from_utf8(b).ok()?;
        etcd_version_of(text.lines().next()?)
    });
    if let Some(version) = recorded {
        let what = format!("the snapshot's server ({})", sidecar.display());
        return Some(Server { version, what });
    }
    let from_node = versions::manifest_server(host);
    if from_node.is_none() {
        notes(
            Level::Warn,
            &format!(
                "neither {} nor an etcd image in etcd.yaml says which etcd wrote the snapshot:                  the restore tool's version is not checked",
                sidecar.display()
            ),
        );
    }
    from_node
}

/// etcdutl of the snapshot server's minor, else etcdctl of it (3.4 and 3.5; 3.6's etcdctl
/// has no `snapshot restore`).
fn restore_tool(
    host: &Host,
    opts: &RestoreOptions,
    server: Option<&Server>,
    notes: Notes,
) -> Result<(Tool, Version), EtcdError> {
    let utl = versions::pick(host, Kind::Etcdutl, opts.etcdutl.as_deref(), server, notes);
    let utl_err = match utl {
        Ok(Some(t)) => return Ok(t),
        Ok(None) => None,
        Err(e) if opts.etcdutl.is_some() => return Err(e),
        Err(e) => Some(e),
    };
    if let Some(s) = server.filter(|s| s.version >= Version::new(3, 6, 0)) {
        // 3.6's etcdctl has no `snapshot restore`: only an etcdutl of the minor will do.
        return Err(utl_err.unwrap_or_else(|| {
            EtcdError::Usage(format!(
                "{} is etcd {}: it is restored with etcdutl {}.{}.x, and none was found ({})",
                s.what,
                s.version,
                s.version.major,
                s.version.minor,
                tools::not_found(Kind::Etcdutl, host.root())
            ))
        }));
    }
    etcdctl_for_restore(host, opts, server, notes, utl_err)
}

/// etcdctl of the snapshot server's minor, when there is no such etcdutl (`utl_err`: why
/// none of the etcdutls found would do).
fn etcdctl_for_restore(
    host: &Host,
    opts: &RestoreOptions,
    server: Option<&Server>,
    notes: Notes,
    utl_err: Option<EtcdError>,
) -> Result<(Tool, Version), EtcdError> {
    match versions::pick(host, Kind::Etcdctl, opts.etcdctl.as_deref(), server, notes) {
        Ok(Some((t, v))) if v >= Version::new(3, 6, 0) => Err(EtcdError::Usage(format!(
            "{} is etcdctl {v}, which has no `snapshot restore` (etcd 3.6 moved it to etcdutl): \
             pass --etcdutl PATH of etcdutl {}.{}.x",
            t.path.display(),
            v.major,
            v.minor
        ))),
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(utl_err.unwrap_or_else(|| {
            EtcdError::Usage(format!(
                "neither etcdutl nor etcdctl found ({}; {}): pass --etcdutl or --etcdctl",
                tools::not_found(Kind::Etcdutl, host.root()),
                tools::not_found(Kind::Etcdctl, host.root())
            ))
        })),
        Err(e) => Err(utl_err.unwrap_or(e)),
    }
}

/// `--bump-revision=N --mark-compacted` when asked for and the tool has them.
fn bump_flags(host: &Host, tool: &Tool, bump: u64, notes: Notes) -> Result<Vec<OsString>, EtcdError> {
    if bump == 0 {
        return Ok(Vec::new());
    }
    if !versions::restore_bumps_revision(host, tool)? {
        notes(
            Level::Warn,
            &format!(
                "{} has no --bump-revision/--mark-compacted (etcd 3.4): restoring without; clients \
                 watching etcd (kube-apiserver) may miss changes until they re-list",
                tool.path.display()
            ),
        );
        return Ok(Vec::new());
    }
    Ok(vec![
        format!("--bump-revision={bump}").into(),
        "--mark-compacted".into(),
    ])
}

/// Member flags: given, else (with --update-manifest) what etcd.yaml runs etcd with.
fn member_flags(opts: &RestoreOptions, plan: Option<&Plan>, notes: Notes) -> Vec<OsString> {
    let mut member = Vec::new();
    for (flag, given) in [
        ("--name", &opts.name),
        ("--initial-cluster", &opts.initial_cluster),
        ("--initial-advertise-peer-urls", &opts.initial_advertise_peer_urls),
    ] {
        let value = match (given, plan) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(plan)) => plan.flag(flag).map(|v| {
                notes(Level::Step, &format!("using {flag}={v} from etcd.yaml"));
                v.to_string()
            }),
            (None, None) => None,
        };
        if let Some(v) = value {
            member.push(OsString::from(format!("{flag}={v}")));
        }
    }
    let joined = plan.is_some_and(|p| p.flag("--initial-cluster-state") == Some("existing"));
    if opts.initial_cluster.is_none() && joined {
        notes(
            Level::Warn,
            "etcd.yaml has --initial-cluster-state=existing: this member joined an existing \
             cluster and its --initial-cluster may not list every member. A multi-member \
             cluster is restored on every member with the same full --initial-cluster.",
        );
    }
    member
}

/// One restore run: the tool, the snapshot and the member flags.
struct Job<'a> {
    host: &'a Host,
    tool: &'a Tool,
    file: &'a Path,
    member: Vec<OsString>,
    timeout: Duration,
}

/// Restores into `<parent>/.<name>.kbundle-restore-XXXX/data`, then renames that into place.
fn restore_into(job: &Job, data_dir: &Path, notes: Notes) -> Result<(), EtcdError> {
    let sys = job.host.sys();
    let parent = parent_dir(data_dir);
    sys.create_dir_all(parent).map_err(EtcdError::io(
        "cannot create the parent directory of the data directory",
        parent,
    ))?;
    let base = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "etcd".to_string());
    let holder = sys
        .temp_dir(parent, &format!(".{base}.kbundle-restore-"))
        .map_err(EtcdError::io("cannot create a staging directory in", parent))?;
    let done = stage_and_move(job, &holder, data_dir, notes);
    let _ = sys.remove_dir_all(&holder);
    done?;
    let _ = sys.sync(parent);
    notes(Level::Step, &format!("restored data directory: {}", data_dir.display()));
    Ok(())
}

fn stage_and_move(job: &Job, holder: &Path, data_dir: &Path, notes: Notes) -> Result<(), EtcdError> {
    let host = job.host;
    let staging = holder.join("data");
    let mut args = vec![
        OsString::from("snapshot"),
        "restore".into(),
        path_arg(job.file),
        flag_arg("--data-dir=", &staging),
    ];
    args.extend(job.member.iter().cloned());
    let inv = job.tool.command(args);
    notes(Level::Step, &format!("running {}", inv.display()));
    inv.run(host, Some(job.timeout))?;
    let db = staging.join("member/snap/db");
    if !host.sys().stat(&db).is_ok_and(|m| m.is_file) {
        return Err(EtcdError::RestoreIncomplete {
            command: inv.display(),
            missing: db,
        });
    }
    // rename(2) replaces an empty directory, and fails if one appeared with content since.
    check_new_data_dir(host.sys(), data_dir)?;
    host.sys()
        .rename(&staging, data_dir)
        .map_err(EtcdError::io("cannot move the restored data into place at", data_dir))
}

/// Points kubeadm's etcd.yaml at the restored directory; returns the one it used before.
fn point_manifest(
    host: &Host,
    opts: &RestoreOptions,
    plan: &Plan,
    data_dir: &Path,
    notes: Notes,
) -> Result<String, EtcdError> {
    let at_root = host.root() == Path::new("/");
    let wait = (at_root && !opts.apiserver_stop_timeout.is_zero()).then_some(opts.apiserver_stop_timeout);
    if !at_root {
        notes(
            Level::Step,
            "--root is not /: not waiting for a kube-apiserver process to exit",
        );
    }
    manifest::apply(
        host,
        plan,
        &ApplyOptions {
            wait_for_apiserver: wait,
            restored_dir: data_dir.to_path_buf(),
        },
        notes,
    )?;
    Ok(plan.rewrite.old_data_dir.clone())
}

/// A data directory may be restored into when it is missing or an empty directory.
pub(crate) fn check_new_data_dir(sys: &dyn Sys, dir: &Path) -> Result<(), EtcdError> {
    match sys.meta(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EtcdError::Io {
            action: "cannot inspect the data directory",
            path: dir.to_path_buf(),
            source: e,
        }),
        Ok(m) if !m.is_dir => Err(EtcdError::DataDirNotADirectory {
            path: dir.to_path_buf(),
        }),
        Ok(_) => {
            let entries = sys
                .list(dir)
                .map_err(EtcdError::io("cannot list the data directory", dir))?;
            if entries.is_empty() {
                Ok(())
            } else {
                Err(EtcdError::DataDirNotEmpty {
                    path: dir.to_path_buf(),
                })
            }
        }
    }
}
