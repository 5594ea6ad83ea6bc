//! `etcd snapshot save` and `etcd snapshot restore`.
//!
//! Save: a quick `endpoint status` first (etcdctl 3.4's `snapshot save` never gives up on a
//! dead endpoint; it also gives the server's version, and the tools of that minor are
//! picked: [`super::versions`]), then `etcdctl snapshot save FILE.part`, `snapshot status`
//! on the part file, its sha256 into `FILE.sha256` (sha256sum format), the server's
//! version into `FILE.etcd-version`, and only then the rename to `FILE`. Any failure removes the part file, so nothing is ever left at `FILE`.
//!
//! Restore ([`super::restore`]): verify `FILE.sha256` when it exists, refuse a non-empty
//! data directory, restore into a hidden staging directory beside it (etcd refuses even an
//! empty existing directory) and rename that into place; then, with `--update-manifest`,
//! point kubeadm's etcd static pod at it ([`super::manifest`]).
//!
//! Every process and file operation goes through the node seam ([`Host`]).

use super::tools::{self, Invocation, Kind, Tool};
use super::versions::{self, Server};
use super::{parent_dir, with_suffix, EtcdError, Level, Notes};
use crate::catalog::etcd_tools::etcd_version_of;
use crate::digest::Sha256;
use crate::host::sys::Sys;
use crate::host::Host;
use crate::version::Version;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where kubeadm's etcd serves clients on a control-plane node.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:2379";
/// kubeadm's etcd certificates.
pub const KUBEADM_ETCD_PKI: &str = "/etc/kubernetes/pki/etcd";

/// Beside a snapshot `FILE`: the version of the etcd server it was saved from, one line
/// (`3.6.5`). Restore picks its tool by it (versions).
pub const VERSION_SUFFIX: &str = ".etcd-version";

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
pub fn parse_status(stdout: &str) -> Result<SnapshotStatus, serde_json::Error> {
    serde_json::from_str(stdout.trim())
}

/// A path as a tool argument: `./-x` rather than `-x`, so it is never taken for a flag.
pub(crate) fn path_arg(p: &Path) -> OsString {
    if p.as_os_str().to_string_lossy().starts_with('-') {
        Path::new(".").join(p).into_os_string()
    } else {
        p.as_os_str().to_os_string()
    }
}

pub(crate) fn flag_arg(flag: &str, p: &Path) -> OsString {
    let mut a = OsString::from(flag);
    a.push(p);
    a
}

/// Runs `snapshot status` on `file` with `tool`.
pub fn status(host: &Host, tool: &Tool, file: &Path) -> Result<SnapshotStatus, EtcdError> {
    let inv = tool.command([
        OsString::from("snapshot"),
        "status".into(),
        "--write-out=json".into(),
        path_arg(file),
    ]);
    let out = inv.run(host, Some(Duration::from_secs(600)))?;
    parse_status(&out.stdout).map_err(|source| EtcdError::BadToolOutput {
        command: inv.display(),
        source,
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
struct Cleanup<'s> {
    sys: &'s dyn Sys,
    files: Vec<PathBuf>,
}

impl Cleanup<'_> {
    fn disarm(mut self) {
        self.files.clear();
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for p in &self.files {
            let _ = self.sys.remove_file(p);
        }
    }
}

/// The sha256 and size of a file, read through the node seam.
pub(crate) fn hash_on(sys: &dyn Sys, p: &Path) -> Result<(Sha256, u64), EtcdError> {
    sys.open(p)
        .and_then(crate::digest::hash_reader)
        .map_err(EtcdError::io("cannot read", p))
}

/// Takes a snapshot from `opts.endpoint` into `opts.file` (see the module docs), with the
/// etcd tools of `host` and every file operation through it.
pub fn save(host: &Host, opts: &SaveOptions, notes: Notes) -> Result<SaveReport, EtcdError> {
    check_endpoint(&opts.endpoint)?;
    let dir = check_save_target(host.sys(), &opts.file)?;
    let tls = opts.tls.resolve(&opts.endpoint, &opts.pki_dir)?;
    let probe = versions::first(host, Kind::Etcdctl, opts.etcdctl.as_deref())?
        .ok_or_else(|| tools::not_found(Kind::Etcdctl, host.root()))?;
    let mut client = vec![OsString::from(format!("--endpoints={}", opts.endpoint))];
    client.extend(tls.args());
    client.push(DIAL_TIMEOUT.into());
    let server_version = check_member(host, &probe, &client, &opts.endpoint, notes)?;
    let server = server_of(host, server_version.as_deref(), &opts.endpoint);
    let (etcdctl, etcdutl) = save_tools(host, opts, server.as_ref(), notes)?;
    let part = with_suffix(&opts.file, ".part");
    let cleanup = Cleanup {
        sys: host.sys(),
        files: vec![part.clone(), with_suffix(&part, ".part")],
    };
    save_part(host, &etcdctl, client, &cleanup.files, opts.timeout, notes)?;
    let checker = etcdutl.as_ref().unwrap_or(&etcdctl);
    let st = status(host, checker, &part)?;
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
    let (sha256, size, sums_file) = commit(host.sys(), &part, &opts.file, dir, server.map(|s| s.version))?;
    cleanup.disarm();
    Ok(SaveReport {
        file: opts.file.clone(),
        sums_file,
        sha256,
        size,
        status: st,
        server_version,
    })
}

/// The server's version: what `endpoint status` said, else the image in kubeadm's etcd.yaml.
fn server_of(host: &Host, reported: Option<&str>, endpoint: &str) -> Option<Server> {
    let from_status = reported.and_then(etcd_version_of).map(|version| Server {
        version,
        what: format!("the etcd server at {endpoint}"),
    });
    from_status.or_else(|| versions::manifest_server(host))
}

/// etcdctl (and etcdutl when there is one) of the server's minor.
fn save_tools(
    host: &Host,
    opts: &SaveOptions,
    server: Option<&Server>,
    notes: Notes,
) -> Result<(Tool, Option<Tool>), EtcdError> {
    let (etcdctl, v) = versions::pick(host, Kind::Etcdctl, opts.etcdctl.as_deref(), server, notes)?
        .ok_or_else(|| tools::not_found(Kind::Etcdctl, host.root()))?;
    notes(Level::Step, &format!("using etcdctl {v} {}", etcdctl.describe()));
    // etcdutl only checks the file: without one of the server's minor, etcdctl does (an
    // explicit --etcdutl of another minor is still refused).
    let etcdutl = match versions::pick(host, Kind::Etcdutl, opts.etcdutl.as_deref(), server, notes) {
        Err(e @ EtcdError::ToolMismatch { .. }) if opts.etcdutl.is_none() => {
            notes(Level::Step, &format!("not using etcdutl: {e}"));
            None
        }
        other => other?,
    };
    if let Some((t, v)) = &etcdutl {
        notes(Level::Step, &format!("using etcdutl {v} {}", t.describe()));
    }
    Ok((etcdctl, etcdutl.map(|(t, _)| t)))
}

/// The snapshot file must not exist yet and its directory must; returns that directory.
fn check_save_target<'p>(sys: &dyn Sys, file: &'p Path) -> Result<&'p Path, EtcdError> {
    if sys.meta(file).is_ok() {
        return Err(EtcdError::SnapshotExists {
            path: file.to_path_buf(),
        });
    }
    let dir = parent_dir(file);
    if !sys.stat(dir).is_ok_and(|m| m.is_dir) {
        return Err(EtcdError::Io {
            action: "cannot save a snapshot into",
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    Ok(dir)
}

/// `endpoint status` first: fails in seconds on a dead member instead of hanging (etcdctl
/// 3.4's `snapshot save` never gives up). Returns the server's version when it says.
fn check_member(
    host: &Host,
    etcdctl: &Tool,
    client: &[OsString],
    endpoint: &str,
    notes: Notes,
) -> Result<Option<String>, EtcdError> {
    let mut args = client.to_vec();
    args.extend([
        PREFLIGHT_TIMEOUT.into(),
        "endpoint".into(),
        "status".into(),
        "--write-out=json".into(),
    ]);
    let out = etcdctl.command(args).run(host, Some(Duration::from_secs(60)))?;
    let (server_version, db_size) = parse_endpoint_status(&out.stdout);
    notes(
        Level::Step,
        &format!(
            "{endpoint} is up (etcd {}, database {} bytes)",
            server_version.as_deref().unwrap_or("version unknown"),
            db_size.map_or("size unknown".to_string(), |n| n.to_string())
        ),
    );
    Ok(server_version)
}

/// `snapshot save FILE.part` (etcdctl itself writes FILE.part.part and renames it), after
/// removing what an earlier failed save left; the part file is synced to disk.
fn save_part(
    host: &Host,
    etcdctl: &Tool,
    mut args: Vec<OsString>,
    parts: &[PathBuf],
    timeout: Duration,
    notes: Notes,
) -> Result<(), EtcdError> {
    let sys = host.sys();
    for p in parts {
        if sys.meta(p).is_ok() {
            notes(
                Level::Warn,
                &format!("removing {} left by an earlier failed save", p.display()),
            );
            sys.remove_file(p).map_err(EtcdError::io("cannot remove", p))?;
        }
    }
    let part = &parts[0];
    args.extend(["snapshot".into(), "save".into(), path_arg(part)]);
    let inv: Invocation = etcdctl.command(args);
    notes(Level::Step, &format!("running {}", inv.display()));
    inv.run(host, Some(timeout))?;
    sys.sync(part)
        .map_err(EtcdError::io("cannot open the snapshot etcdctl wrote", part))
}

/// Records the part file's sha256 in `FILE.sha256` and the server's version in
/// `FILE.etcd-version`, then renames it to `FILE`.
fn commit(
    sys: &dyn Sys,
    part: &Path,
    file: &Path,
    dir: &Path,
    server: Option<Version>,
) -> Result<(Sha256, u64, PathBuf), EtcdError> {
    let (sha256, size) = hash_on(sys, part)?;
    let version_file = with_suffix(file, VERSION_SUFFIX);
    if let Some(v) = server {
        sys.write_atomic(&version_file, ".kbundle-tmp.", &mut format!("{v}\n").as_bytes(), 0o644)
            .map_err(EtcdError::io("cannot write", &version_file))?;
    }
    let sums_file = with_suffix(file, ".sha256");
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let line = format!("{sha256}  {name}\n");
    if let Err(e) = sys.write_atomic(&sums_file, ".kbundle-tmp.", &mut line.as_bytes(), 0o644) {
        let _ = sys.remove_file(&version_file);
        return Err(EtcdError::io("cannot write", &sums_file)(e));
    }
    if let Err(source) = sys.rename(part, file) {
        let _ = sys.remove_file(&sums_file);
        let _ = sys.remove_file(&version_file);
        return Err(EtcdError::Io {
            action: "cannot rename the checked snapshot into place at",
            path: file.to_path_buf(),
            source,
        });
    }
    let _ = sys.sync(dir);
    Ok((sha256, size, sums_file))
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

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
