//! `etcd snapshot save` and `etcd snapshot restore`.
//!
//! Save: a quick `endpoint status` first (etcdctl 3.4's `snapshot save` never gives up on a
//! dead endpoint), then `etcdctl snapshot save FILE.part`, `snapshot status` on the part
//! file, its sha256 into `FILE.sha256` (sha256sum format), and only then the rename to
//! `FILE`. Any failure removes the part file, so nothing is ever left at `FILE`.
//!
//! Restore: verify `FILE.sha256` when it exists, refuse a non-empty data directory, restore
//! into a hidden staging directory beside it (etcd refuses even an empty existing
//! directory) and rename that into place; then, with `--update-manifest`, point kubeadm's
//! etcd static pod at it ([`super::manifest`]).

use super::manifest::{self, ApplyOptions, Plan};
use super::tools::{self, Invocation, Kind, Tool};
use super::{parent_dir, sync_dir, under_root, with_suffix, EtcdError, Level, Notes};
use crate::digest::{hash_file, Sha256};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where kubeadm's etcd serves clients on a control-plane node.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:2379";
/// kubeadm's etcd certificates.
pub const KUBEADM_ETCD_PKI: &str = "/etc/kubernetes/pki/etcd";

/// Dial timeout for every connection to etcd.
const DIAL_TIMEOUT: &str = "--dial-timeout=5s";
/// Limit for the `endpoint status` check before a save.
const PREFLIGHT_TIMEOUT: &str = "--command-timeout=15s";

/// Client TLS files for etcdctl.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Tls {
    /// The files to use for `endpoint`: for `https://` the ones given, with the missing
    /// ones taken from kubeadm's layout in `pki_dir` (`ca.crt`, and
    /// `healthcheck-client.crt`/`.key`, else `server.crt`/`.key`); for `http://` only the
    /// ones given. Every file used must exist.
    pub fn resolve(&self, endpoint: &str, pki_dir: &Path) -> Result<Tls, EtcdError> {
        let given = |what: &str, flag: &'static str, p: &Option<PathBuf>| match p {
            Some(p) if !p.is_file() => Err(EtcdError::MissingTlsFile {
                what: what.to_string(),
                flag,
                path: p.clone(),
            }),
            _ => Ok(p.clone()),
        };
        let mut out = Tls {
            cacert: given("CA certificate", "--cacert", &self.cacert)?,
            cert: given("client certificate", "--cert", &self.cert)?,
            key: given("client key", "--key", &self.key)?,
        };
        if out.cert.is_some() != out.key.is_some() {
            return Err(EtcdError::Usage(
                "--cert and --key go together: pass both or neither".into(),
            ));
        }
        if !endpoint.starts_with("https://") {
            return Ok(out);
        }
        if out.cacert.is_none() {
            let ca = pki_dir.join("ca.crt");
            if !ca.is_file() {
                return Err(EtcdError::MissingTlsFile {
                    what: format!("{endpoint} uses TLS and no --cacert was given, and kubeadm's etcd CA"),
                    flag: "--cacert",
                    path: ca,
                });
            }
            out.cacert = Some(ca);
        }
        if out.cert.is_none() {
            let pair = |n: &str| (pki_dir.join(format!("{n}.crt")), pki_dir.join(format!("{n}.key")));
            let (hc, server) = (pair("healthcheck-client"), pair("server"));
            let (cert, key) = if hc.0.is_file() && hc.1.is_file() {
                hc
            } else if server.0.is_file() && server.1.is_file() {
                server
            } else {
                return Err(EtcdError::MissingTlsFile {
                    what: format!(
                        "{endpoint} uses TLS and no --cert/--key were given, and neither \
                         {} nor {} (with its .key)",
                        hc.0.display(),
                        server.0.display()
                    ),
                    flag: "--cert/--key",
                    path: hc.0,
                });
            };
            out.cert = Some(cert);
            out.key = Some(key);
        }
        Ok(out)
    }

    fn args(&self) -> Vec<OsString> {
        let mut v = Vec::new();
        for (flag, p) in [
            ("--cacert=", &self.cacert),
            ("--cert=", &self.cert),
            ("--key=", &self.key),
        ] {
            if let Some(p) = p {
                let mut a = OsString::from(flag);
                a.push(p);
                v.push(a);
            }
        }
        v
    }
}

/// Checks that `endpoint` is one `http://` or `https://` URL.
pub fn check_endpoint(endpoint: &str) -> Result<(), EtcdError> {
    let bad = |reason: &str| EtcdError::BadEndpoint {
        endpoints: endpoint.to_string(),
        reason: reason.to_string(),
    };
    if endpoint.contains(',') {
        return Err(bad("a snapshot is taken from one member: give exactly one URL"));
    }
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| bad("expected http://HOST:PORT or https://HOST:PORT"))?;
    if rest.is_empty() || rest.chars().any(char::is_whitespace) {
        return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
    }
    Ok(())
}

/// What `snapshot status -w json` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// Parses `snapshot status -w json` output.
pub fn parse_status(stdout: &str) -> Result<SnapshotStatus, String> {
    serde_json::from_str(stdout.trim()).map_err(|e| e.to_string())
}

/// A path as a tool argument: `./-x` rather than `-x`, so it is never taken for a flag.
fn path_arg(p: &Path) -> OsString {
    if p.as_os_str().to_string_lossy().starts_with('-') {
        Path::new(".").join(p).into_os_string()
    } else {
        p.as_os_str().to_os_string()
    }
}

fn flag_arg(flag: &str, p: &Path) -> OsString {
    let mut a = OsString::from(flag);
    a.push(p);
    a
}

/// Runs `snapshot status` on `file` with `tool`.
pub fn status(tool: &Tool, file: &Path) -> Result<SnapshotStatus, EtcdError> {
    let inv = tool.command([
        OsString::from("snapshot"),
        "status".into(),
        "--write-out=json".into(),
        path_arg(file),
    ]);
    let out = inv.run(Some(Duration::from_secs(600)))?;
    parse_status(&out.stdout).map_err(|reason| EtcdError::BadToolOutput {
        command: inv.display(),
        reason,
        output: out.stdout.chars().take(500).collect(),
    })
}

/// Options for [`save`].
#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub file: PathBuf,
    pub endpoint: String,
    pub tls: Tls,
    /// Where the default TLS files are looked for ([`KUBEADM_ETCD_PKI`]).
    pub pki_dir: PathBuf,
    pub etcdctl: Option<PathBuf>,
    pub etcdutl: Option<PathBuf>,
    /// Tool lookup root (`<root>/usr/local/bin`).
    pub root: PathBuf,
    /// The whole `snapshot save` is killed after this long.
    pub timeout: Duration,
}

/// What [`save`] produced.
#[derive(Debug, Clone)]
pub struct SaveReport {
    pub file: PathBuf,
    pub sums_file: PathBuf,
    pub sha256: Sha256,
    pub size: u64,
    pub status: SnapshotStatus,
    pub server_version: Option<String>,
}

/// Removes the listed files when dropped, unless disarmed.
struct Cleanup(Vec<PathBuf>);

impl Cleanup {
    fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Takes a snapshot from `opts.endpoint` into `opts.file` (see the module docs).
pub fn save(opts: &SaveOptions, notes: Notes) -> Result<SaveReport, EtcdError> {
    check_endpoint(&opts.endpoint)?;
    let file = &opts.file;
    if file.symlink_metadata().is_ok() {
        return Err(EtcdError::SnapshotExists { path: file.clone() });
    }
    let dir = parent_dir(file);
    if !dir.is_dir() {
        return Err(EtcdError::Io {
            action: "cannot save a snapshot into",
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let tls = opts.tls.resolve(&opts.endpoint, &opts.pki_dir)?;
    let etcdctl = tools::require(Kind::Etcdctl, opts.etcdctl.as_deref(), &opts.root)?;
    let etcdutl = tools::find(Kind::Etcdutl, opts.etcdutl.as_deref(), &opts.root)?;
    notes(Level::Step, &format!("using etcdctl {}", etcdctl.describe()));

    let mut client = vec![OsString::from(format!("--endpoints={}", opts.endpoint))];
    client.extend(tls.args());
    client.push(DIAL_TIMEOUT.into());

    // 1. Is the member there at all? Fails in seconds instead of hanging.
    let mut args = client.clone();
    args.extend([
        PREFLIGHT_TIMEOUT.into(),
        "endpoint".into(),
        "status".into(),
        "--write-out=json".into(),
    ]);
    let out = etcdctl.command(args).run(Some(Duration::from_secs(60)))?;
    let (server_version, db_size) = parse_endpoint_status(&out.stdout);
    notes(
        Level::Step,
        &format!(
            "{} is up (etcd {}, database {} bytes)",
            opts.endpoint,
            server_version.as_deref().unwrap_or("version unknown"),
            db_size.map_or("size unknown".to_string(), |n| n.to_string())
        ),
    );

    // 2. Save into FILE.part (etcdctl itself writes FILE.part.part and renames it).
    let part = with_suffix(file, ".part");
    let cleanup = Cleanup(vec![part.clone(), with_suffix(&part, ".part")]);
    for p in &cleanup.0 {
        if p.symlink_metadata().is_ok() {
            notes(
                Level::Warn,
                &format!("removing {} left by an earlier failed save", p.display()),
            );
            std::fs::remove_file(p).map_err(EtcdError::io("cannot remove", p))?;
        }
    }
    let mut args = client;
    args.extend(["snapshot".into(), "save".into(), path_arg(&part)]);
    let inv: Invocation = etcdctl.command(args);
    notes(Level::Step, &format!("running {}", inv.display()));
    inv.run(Some(opts.timeout))?;
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(EtcdError::io("cannot open the snapshot etcdctl wrote", &part))?;

    // 3. Check it.
    let checker = etcdutl.as_ref().unwrap_or(&etcdctl);
    let st = status(checker, &part)?;
    notes(
        Level::Step,
        &format!(
            "{} snapshot status: revision {}, {} keys, {} bytes",
            checker.kind.name(),
            st.revision,
            st.total_key,
            st.total_size
        ),
    );

    // 4. Record its sha256, then move it into place.
    let (sha256, size) = hash_file(&part).map_err(EtcdError::io("cannot read", &part))?;
    let sums_file = with_suffix(file, ".sha256");
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::fsutil::write_atomic(&sums_file, format!("{sha256}  {name}\n").as_bytes())
        .map_err(EtcdError::io("cannot write", &sums_file))?;
    if let Err(source) = std::fs::rename(&part, file) {
        let _ = std::fs::remove_file(&sums_file);
        return Err(EtcdError::Io {
            action: "cannot rename the checked snapshot into place at",
            path: file.clone(),
            source,
        });
    }
    cleanup.disarm();
    sync_dir(dir);
    Ok(SaveReport {
        file: file.clone(),
        sums_file,
        sha256,
        size,
        status: st,
        server_version,
    })
}

/// Version and database size from `endpoint status -w json`, when it says.
fn parse_endpoint_status(stdout: &str) -> (Option<String>, Option<u64>) {
    let v: serde_json::Value = match serde_json::from_str(stdout.trim()) {
        Ok(v) => v,
        Err(_) => return (None, None),
    };
    let st = &v[0]["Status"];
    (st["version"].as_str().map(str::to_string), st["dbSize"].as_u64())
}

/// Reads the sha256 for `file_name` from a sha256sum-format file (`<hex>  name` or
/// `<hex> *name`; a file with a single digest line is taken whatever name it gives).
pub fn read_checksum_file(path: &Path, file_name: &str) -> Result<Sha256, EtcdError> {
    let meta = std::fs::metadata(path).map_err(EtcdError::io("cannot read", path))?;
    if meta.len() > 64 * 1024 {
        return Err(EtcdError::BadChecksumFile {
            path: path.to_path_buf(),
            reason: "too large for a checksum file".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(EtcdError::io("cannot read", path))?;
    let bad = |reason: String| EtcdError::BadChecksumFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hex, name) = match line.split_once(char::is_whitespace) {
            Some((h, n)) => (h, n.trim_start().trim_start_matches('*')),
            None => (line, ""),
        };
        let d = Sha256::parse_any(hex).map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
        entries.push((d, name.to_string()));
    }
    match entries.as_slice() {
        [] => Err(bad("holds no sha256".into())),
        [(d, _)] => Ok(*d),
        many => many
            .iter()
            .find(|(_, n)| n == file_name)
            .map(|(d, _)| *d)
            .ok_or_else(|| bad(format!("has no line for {file_name}"))),
    }
}

/// Options for [`restore`].
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub file: PathBuf,
    /// The new data directory as the node sees it (under `root`).
    pub data_dir: PathBuf,
    pub root: PathBuf,
    pub name: Option<String>,
    pub initial_cluster: Option<String>,
    pub initial_advertise_peer_urls: Option<String>,
    pub etcdctl: Option<PathBuf>,
    pub etcdutl: Option<PathBuf>,
    pub update_manifest: bool,
    /// How long to wait for kube-apiserver to exit once its manifest is moved away
    /// (only when `root` is `/`; zero skips the wait).
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

/// Restores `opts.file` into a new data directory (see the module docs).
pub fn restore(opts: &RestoreOptions, notes: Notes) -> Result<RestoreReport, EtcdError> {
    let file = &opts.file;
    if !std::fs::metadata(file).is_ok_and(|m| m.is_file()) {
        return Err(EtcdError::NotASnapshot { path: file.clone() });
    }
    let at_root = opts.root == Path::new("/");
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
    let host_dir = if at_root {
        opts.data_dir.clone()
    } else {
        under_root(&opts.root, &opts.data_dir)?
    };

    // Everything --update-manifest needs is checked before anything is written.
    let plan: Option<Plan> = if opts.update_manifest {
        let node_dir = opts
            .data_dir
            .to_str()
            .ok_or_else(|| EtcdError::Usage(format!("--data-dir {} is not UTF-8", opts.data_dir.display())))?;
        let plan = manifest::plan(&opts.root, node_dir)?;
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
        Some(plan)
    } else {
        None
    };

    check_new_data_dir(&host_dir)?;

    let sums = with_suffix(file, ".sha256");
    let verified = if sums.exists() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = read_checksum_file(&sums, &name)?;
        let (actual, _) = hash_file(file).map_err(EtcdError::io("cannot read", file))?;
        if actual != expected {
            return Err(EtcdError::ChecksumMismatch {
                file: file.clone(),
                sums,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        notes(
            Level::Step,
            &format!("{}: sha256 matches {}", file.display(), sums.display()),
        );
        Some(actual)
    } else {
        notes(
            Level::Warn,
            &format!("no {}: the snapshot's sha256 is not checked", sums.display()),
        );
        None
    };

    let tool = match tools::find(Kind::Etcdutl, opts.etcdutl.as_deref(), &opts.root)? {
        Some(t) => t,
        None => tools::find(Kind::Etcdctl, opts.etcdctl.as_deref(), &opts.root)?.ok_or_else(|| {
            EtcdError::Usage(format!(
                "neither etcdutl nor etcdctl found ({}; {}): pass --etcdutl or --etcdctl",
                tools::not_found(Kind::Etcdutl, &opts.root),
                tools::not_found(Kind::Etcdctl, &opts.root)
            ))
        })?,
    };
    notes(
        Level::Step,
        &format!("restoring with {} {}", tool.kind.name(), tool.describe()),
    );

    // Member flags: given, else (with --update-manifest) what etcd.yaml runs etcd with.
    let mut member = Vec::new();
    for (flag, given) in [
        ("--name", &opts.name),
        ("--initial-cluster", &opts.initial_cluster),
        ("--initial-advertise-peer-urls", &opts.initial_advertise_peer_urls),
    ] {
        let value = match (given, &plan) {
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
    if let Some(plan) = &plan {
        if opts.initial_cluster.is_none() && plan.flag("--initial-cluster-state") == Some("existing") {
            notes(
                Level::Warn,
                "etcd.yaml has --initial-cluster-state=existing: this member joined an existing \
                 cluster and its --initial-cluster may not list every member. A multi-member \
                 cluster is restored on every member with the same full --initial-cluster.",
            );
        }
    }

    // Restore into <parent>/.<name>.kbundle-restore-XXXX/data, then rename into place.
    let parent = parent_dir(&host_dir);
    std::fs::create_dir_all(parent).map_err(EtcdError::io(
        "cannot create the parent directory of the data directory",
        parent,
    ))?;
    let base = host_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "etcd".to_string());
    let holder = tempfile::Builder::new()
        .prefix(&format!(".{base}.kbundle-restore-"))
        .tempdir_in(parent)
        .map_err(EtcdError::io("cannot create a staging directory in", parent))?;
    let staging = holder.path().join("data");
    let mut args = vec![
        OsString::from("snapshot"),
        "restore".into(),
        path_arg(file),
        flag_arg("--data-dir=", &staging),
    ];
    args.extend(member);
    let inv = tool.command(args);
    notes(Level::Step, &format!("running {}", inv.display()));
    inv.run(Some(opts.timeout))?;
    let db = staging.join("member/snap/db");
    if !db.is_file() {
        return Err(EtcdError::RestoreIncomplete {
            command: inv.display(),
            missing: db,
        });
    }
    // rename(2) replaces an empty directory, and fails if one appeared with content since.
    check_new_data_dir(&host_dir)?;
    std::fs::rename(&staging, &host_dir)
        .map_err(EtcdError::io("cannot move the restored data into place at", &host_dir))?;
    sync_dir(parent);
    drop(holder);
    notes(Level::Step, &format!("restored data directory: {}", host_dir.display()));

    let mut old_data_dir = None;
    if let Some(plan) = &plan {
        let wait = (at_root && !opts.apiserver_stop_timeout.is_zero()).then_some(opts.apiserver_stop_timeout);
        if !at_root {
            notes(
                Level::Step,
                "--root is not /: not waiting for a kube-apiserver process to exit",
            );
        }
        manifest::apply(
            plan,
            &ApplyOptions {
                wait_for_apiserver: wait,
                restored_dir: host_dir.clone(),
            },
            notes,
        )?;
        old_data_dir = Some(plan.rewrite.old_data_dir.clone());
    }
    Ok(RestoreReport {
        data_dir: host_dir,
        tool,
        verified,
        old_data_dir,
    })
}

/// A data directory may be restored into when it is missing or an empty directory.
fn check_new_data_dir(dir: &Path) -> Result<(), EtcdError> {
    match dir.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EtcdError::Io {
            action: "cannot inspect the data directory",
            path: dir.to_path_buf(),
            source: e,
        }),
        Ok(m) if !m.is_dir() => Err(EtcdError::DataDirNotADirectory {
            path: dir.to_path_buf(),
        }),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(EtcdError::io("cannot list the data directory", dir))?;
            if entries.next().is_some() {
                Err(EtcdError::DataDirNotEmpty {
                    path: dir.to_path_buf(),
                })
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
