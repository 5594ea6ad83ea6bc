#![allow(dead_code)]
//! A real OCI registry on loopback for integration tests: Debian's
//! `docker-registry` (distribution 2.8) started per [`Registry::start`] call
//! with its own config and storage in a `TempDir`, plus `skopeo` to push OCI
//! layouts into it.
//!
//! * Config: `http.addr 127.0.0.1:<free port>`, `http.secret`, filesystem
//!   storage in the `TempDir`, deletes enabled, log level `warn`, access log
//!   **on** (it is what [`Registry::request_log`] parses). Debian's packaged
//!   config (htpasswd auth) is never used.
//! * [`Registry::start_with_basic_auth`] adds `auth.htpasswd` with a bcrypt
//!   file; it returns `None` when no bcrypt generator is available.
//! * Drop kills the process, reaps it and waits until `/proc/PID` is gone or a
//!   zombie (PID 1 on the test machines reaps orphans only every 1-2 s, and
//!   `kill -0` succeeds on zombies).
//!
//! Also here, shared with [`super::containerd`] and [`super::images`]: [`run`]
//! (a `Command` that panics with the command line and stderr on failure),
//! [`pid_alive`], [`wait_gone`], [`http_request`] (a minimal HTTP/1.1 client)
//! and [`sha256_digest`].

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// `Accept` sent by [`Registry::raw_manifest`]: OCI index/manifest and Docker list/v2.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

const START_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// process helpers (shared by the other support modules)
// ---------------------------------------------------------------------------

/// `prog arg arg ...` as a shell-like line for panic messages.
pub fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion (stdin null, output captured); panics with the
/// command line, exit status, stdout and stderr unless it exits 0.
pub fn run(cmd: &mut Command) -> Output {
    let out = run_unchecked(cmd);
    if !out.status.success() {
        panic!("command failed: {}\n{}", command_line(cmd), output_text(&out));
    }
    out
}

/// Runs `cmd` to completion and returns its output whatever the exit status;
/// panics only if it cannot be started.
pub fn run_unchecked(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(cmd)))
}

/// `status ...\nstdout:\n...\nstderr:\n...` for messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`, ...), `None` if there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S ..." and comm may contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z')
}

/// Polls until `pid` is gone or a zombie; returns false on timeout.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (e.g. `"TERM"`, `"KILL"`) to one process by id with `kill(1)`; errors are ignored.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops a child: `signal` first, `SIGKILL` after `grace`, then reaps it and
/// waits (zombie-aware) until its `/proc` entry is gone. Never panics (used in Drop).
pub fn stop_child(child: &mut Child, signal: &str, grace: Duration) {
    let pid = child.id();
    if let Ok(None) = child.try_wait() {
        if signal == "KILL" {
            let _ = child.kill();
        } else {
            send_signal(pid, signal);
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
    }
    let _ = child.wait();
    if !wait_gone(pid, Duration::from_secs(5)) {
        eprintln!("warning: process {pid} still alive after being stopped");
    }
}

/// PIDs of processes whose command line contains `needle` (read from `/proc/*/cmdline`).
pub fn pids_with_cmdline_containing(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(raw) = fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(needle) && pid_alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A port that was free on 127.0.0.1 a moment ago (the caller retries if it is taken meanwhile).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port");
    l.local_addr().expect("local_addr").port()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Standard base64 with padding (for `Authorization: Basic`).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------
// minimal HTTP/1.1 client
// ---------------------------------------------------------------------------

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// Sends one request to `host` ("127.0.0.1:PORT") with `Connection: close` and
/// reads the whole response (Content-Length, chunked, or to EOF).
pub fn http_request(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: kbundle-tests\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8], head_only: bool) -> io::Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad(format!("no end of headers in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only {
        return Ok(resp);
    }
    let rest = &raw[end + 4..];
    resp.body = if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return Err(bad(format!("body has {} of {len} bytes", rest.len())));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(bad("truncated chunk"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

/// One request from the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// URL path without the query string, e.g. `/v2/registry.k8s.io/pause/manifests/3.10.1`.
    pub path: String,
    pub status: u16,
    pub user_agent: String,
}

/// A running `docker-registry serve` on 127.0.0.1 (see the module docs).
pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    creds: Option<(String, String)>,
    log: PathBuf,
}

impl Registry {
    /// Starts a registry without auth; waits until `GET /v2/` answers 200 (≤10 s).
    pub fn start() -> Registry {
        Self::start_inner(None, None)
    }

    /// Starts a registry with `htpasswd` basic auth for one user. The bcrypt
    /// line comes from `htpasswd -Bbn` (apache2-utils), else python3's `bcrypt`,
    /// else perl's `crypt()` with a `$2b$` salt (glibc/libxcrypt bcrypt). `None`
    /// (skip the test) if none of those is available.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Option<Registry> {
        let line = htpasswd_line(user, password)?;
        Some(Self::start_inner(
            Some(line),
            Some((user.to_string(), password.to_string())),
        ))
    }

    fn start_inner(htpasswd: Option<String>, creds: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("kbundle-registry-")
            .tempdir()
            .expect("registry: create temp dir");
        let auth = match &htpasswd {
            Some(line) => {
                let path = dir.path().join("htpasswd");
                fs::write(&path, format!("{line}\n")).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                format!(
                    "auth:\n  htpasswd:\n    realm: kbundle-test\n    path: {}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
        let log = dir.path().join("registry.log");
        let config = dir.path().join("config.yml");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log: {{level: warn, accesslog: {{disabled: false}}}}\n\
                     storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: kbundle-test-secret\n\
                     {auth}",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
            let logfile = fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config);
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(logfile.try_clone().expect("clone log fd"))
                .stderr(logfile)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", command_line(&cmd)));
            let host = format!("127.0.0.1:{port}");
            match wait_ready(&mut child, &host, creds.as_ref()) {
                Ok(()) => {
                    return Registry {
                        child: Some(child),
                        dir,
                        port,
                        creds,
                        log,
                    }
                }
                Err(exited) => {
                    stop_child(&mut child, "KILL", Duration::ZERO);
                    last_log = fs::read_to_string(&log).unwrap_or_default();
                    if !(exited && last_log.contains("address already in use")) {
                        panic!(
                            "{} did not answer GET /v2/ with 200 within {START_TIMEOUT:?} (exited: {exited})\nlog:\n{last_log}",
                            command_line(&cmd)
                        );
                    }
                    // The port was taken between free_port() and bind: try another one.
                }
            }
        }
        panic!("docker-registry: no free port after 5 attempts\nlog:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// PID of the `docker-registry` process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("registry is running")
    }

    /// `(user, password)` for a registry from [`Registry::start_with_basic_auth`].
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where the registry keeps its data (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's combined stdout/stderr (access log + warnings/errors).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request to the registry, with `Authorization: Basic` if it has credentials.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<HttpResponse> {
        request_with_creds(&self.host(), self.creds.as_ref(), method, path, headers)
    }

    fn creds_arg(&self) -> Option<String> {
        self.creds.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    /// `skopeo copy --all --preserve-digests oci:LAYOUT:REF docker://HOST/REPO:TAG`;
    /// returns the pushed top-level manifest/index digest (`sha256:...`, from
    /// `--digestfile`; with `--preserve-digests` it is the layout's own digest).
    pub fn push_layout(&self, layout: &Path, layout_ref: &str, repo_and_tag: &str) -> String {
        let digest_file = tempfile::NamedTempFile::new().expect("temp digest file");
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "-q",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if let Some(c) = self.creds_arg() {
            cmd.arg("--dest-creds").arg(c);
        }
        cmd.arg("--digestfile")
            .arg(digest_file.path())
            .arg(format!("oci:{}:{layout_ref}", layout.display()))
            .arg(format!("docker://{}/{repo_and_tag}", self.host()));
        run(&mut cmd);
        let digest = fs::read_to_string(digest_file.path()).expect("read skopeo --digestfile");
        let digest = digest.trim().to_string();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{}: bad digest {digest:?} in --digestfile",
            command_line(&cmd)
        );
        digest
    }

    /// `skopeo inspect --raw docker://HOST/REPO:REF` bytes (cross-check for [`Registry::raw_manifest`]).
    pub fn skopeo_inspect_raw(&self, repo_and_ref: &str) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = self.creds_arg() {
            cmd.arg("--creds").arg(c);
        }
        cmd.arg(format!("docker://{}/{repo_and_ref}", self.host()));
        run(&mut cmd).stdout
    }

    /// `skopeo copy --all --preserve-digests docker://HOST/REPO:REF oci:DIR:DIR_REF`
    /// (creates or adds to the layout at `dir`); returns the copied digest.
    pub fn pull_to_layout(&self, repo_and_ref: &str, dir: &Path, dir_ref: &str) -> String {
        let digest_file = tempfile::NamedTempFile::new().expect("temp digest file");
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "-q",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ]);
        if let Some(c) = self.creds_arg() {
            cmd.arg("--src-creds").arg(c);
        }
        cmd.arg("--digestfile")
            .arg(digest_file.path())
            .arg(format!("docker://{}/{repo_and_ref}", self.host()))
            .arg(format!("oci:{}:{dir_ref}", dir.display()));
        run(&mut cmd);
        fs::read_to_string(digest_file.path())
            .expect("read skopeo --digestfile")
            .trim()
            .to_string()
    }

    /// `GET /v2/<repo>/manifests/<ref>` with [`MANIFEST_ACCEPT`]; `repo_and_ref` is
    /// `repo:tag` or `repo@sha256:...`. Returns (Content-Type, body); panics unless 200.
    pub fn raw_manifest(&self, repo_and_ref: &str) -> (String, Vec<u8>) {
        let (repo, reference) = split_repo_ref(repo_and_ref);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let r = self
            .request("GET", &path, &[("Accept", MANIFEST_ACCEPT)])
            .unwrap_or_else(|e| panic!("GET {}{path}: {e}", self.url()));
        if r.status != 200 {
            panic!(
                "GET {}{path}: status {}\n{}",
                self.url(),
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let media_type = r.header("content-type").unwrap_or("").to_string();
        (media_type, r.body)
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: true on 200, false on 404, panics otherwise.
    pub fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let r = self
            .request("HEAD", &path, &[])
            .unwrap_or_else(|e| panic!("HEAD {}{path}: {e}", self.url()));
        match r.status {
            200 => true,
            404 => false,
            s => panic!("HEAD {}{path}: unexpected status {s}", self.url()),
        }
    }

    /// Requests from the access log so far, oldest first. The registry writes a
    /// line after it has sent the response, so a client may see a response a
    /// moment before its line appears: poll if you need the very last request.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.log_text().lines().filter_map(parse_access_line).collect()
    }

    /// Log entries whose method is `method` and whose path starts with `path_prefix`.
    pub fn requests_matching(&self, method: &str, path_prefix: &str) -> Vec<LoggedRequest> {
        self.request_log()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop_child(child, "KILL", Duration::ZERO);
        }
    }
}

fn request_with_creds(
    host: &str,
    creds: Option<&(String, String)>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let auth;
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some((u, p)) = creds {
        auth = format!("Basic {}", base64(format!("{u}:{p}").as_bytes()));
        all.push(("Authorization", &auth));
    }
    http_request(method, host, path, &all)
}

/// Ok when `GET /v2/` answers 200; Err(true) if the process exited, Err(false) on timeout.
fn wait_ready(child: &mut Child, host: &str, creds: Option<&(String, String)>) -> Result<(), bool> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(true);
        }
        if let Ok(r) = request_with_creds(host, creds, "GET", "/v2/", &[]) {
            if r.status == 200 {
                return Ok(());
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(false)
}

/// `repo:tag` / `repo@digest` -> (repo, tag-or-digest); a `:` inside the host part is not a tag.
pub fn split_repo_ref(repo_and_ref: &str) -> (&str, &str) {
    if let Some((repo, digest)) = repo_and_ref.split_once('@') {
        return (repo, digest);
    }
    let slash = repo_and_ref.rfind('/').map_or(0, |i| i + 1);
    match repo_and_ref[slash..].rfind(':') {
        Some(i) => (&repo_and_ref[..slash + i], &repo_and_ref[slash + i + 1..]),
        None => panic!("{repo_and_ref:?} has neither :tag nor @digest"),
    }
}

/// Parses a combined-log-format line:
/// `127.0.0.1 - user [date] "GET /v2/ HTTP/1.1" 200 2 "referer" "agent"`.
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    if line.starts_with("time=") {
        return None;
    }
    let mut quoted = line.split('"');
    let _prefix = quoted.next()?;
    let request = quoted.next()?;
    let after = quoted.next()?;
    let _referer = quoted.next();
    let _sep = quoted.next();
    let user_agent = quoted.next().unwrap_or("").to_string();
    let mut parts = request.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let status = after.split_whitespace().next()?.parse::<u16>().ok()?;
    let path = target.split('?').next().unwrap_or(target).to_string();
    Some(LoggedRequest {
        method,
        path,
        status,
        user_agent,
    })
}

/// `user:<bcrypt hash>` or None if no bcrypt generator is available.
fn htpasswd_line(user: &str, password: &str) -> Option<String> {
    let valid = |s: &str| s.starts_with("$2") && s.len() == 60;
    // 1. apache2-utils
    if let Ok(out) = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .stdin(Stdio::null())
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().next().unwrap_or("").trim();
            if line.split_once(':').is_some_and(|(u, h)| u == user && valid(h)) {
                return Some(line.to_string());
            }
        }
    }
    // 2. python3 bcrypt; 3. perl crypt() through libcrypt's bcrypt ($2b$).
    let python = "import sys, bcrypt; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())";
    let perl = "print crypt($ARGV[0], '$2b$05$' . join('', map { ('.', '/', 0..9, 'A'..'Z', 'a'..'z')[rand 64] } 1..21) . 'e'), qq(\\n)";
    let candidates: [(&str, &[&str]); 2] = [("python3", &["-c", python]), ("perl", &["-e", perl])];
    for (prog, args) in candidates {
        if let Ok(out) = Command::new(prog)
            .args(args)
            .arg(password)
            .stdin(Stdio::null())
            .output()
        {
            let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && valid(&hash) {
                return Some(format!("{user}:{hash}"));
            }
        }
    }
    None
}
