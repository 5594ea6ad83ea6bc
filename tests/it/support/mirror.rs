#![allow(dead_code)]
//! A tiny HTTP/1.1 file server on 127.0.0.1 that stands in for upstream
//! download hosts in integration tests (there is no internet on test machines).
//!
//! * URL path `/a/b` serves the file `<root>/a/b`.
//! * `GET` and `HEAD`; anything else is `405`.
//! * Every response carries `Content-Length` and `Connection: close` (one
//!   request per connection, so clients never race a keep-alive close).
//! * `Range: bytes=N-`, `bytes=N-M` and `bytes=-S` give `206` with
//!   `Content-Range`; unsatisfiable ranges give `416`; other forms (several
//!   ranges, other units) are ignored and the whole file is served (`200`).
//! * Missing files and directories are `404`; paths containing `..`, NUL or a
//!   backslash are `400`; paths with empty segments (`//`) are `404`.
//! * Files are streamed from disk in 64 KiB chunks.
//! * One thread per connection; dropping the [`Mirror`] stops accepting and
//!   abandons in-flight connection threads (they end on their own: sockets
//!   have read/write timeouts).
//!
//! Faults are keyed by the URL path (query string stripped, percent-decoded).
//! Request bookkeeping ([`Mirror::requests`], [`Mirror::hits`]) is recorded
//! *before* the response is written, so it is up to date as soon as a client
//! sees any response bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

const CHUNK: usize = 64 * 1024;
const MAX_HEAD_BYTES: u64 = 32 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Injected misbehaviour for one URL path.
///
/// "Once" faults fire on the first `GET` of the path after [`Mirror::set_fault`]
/// (concurrent first GETs: exactly one of them gets the fault); later GETs
/// succeed. `HEAD` requests never trigger or consume a "Once" fault; they are
/// affected by `Fail500Always` and `NotFound` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// First GET gets `500 Internal Server Error`.
    Fail500Once,
    /// Every request gets `500 Internal Server Error`.
    Fail500Always,
    /// First GET gets the full `Content-Length` header but only the first half
    /// of the body, then the connection is closed.
    TruncateOnce,
    /// Every GET serves the file with the byte at file offset `len / 2`
    /// inverted (consistently, also for range requests covering that offset).
    /// Lengths and headers are unchanged. Empty files cannot be corrupted.
    Corrupt,
    /// Every request gets `404 Not Found` even if the file exists.
    NotFound,
    /// First GET: the request is read, then the connection is closed without
    /// any response bytes. Recorded with status `0`.
    ResetOnce,
}

impl Fault {
    fn is_once(self) -> bool {
        matches!(self, Fault::Fail500Once | Fault::TruncateOnce | Fault::ResetOnce)
    }
}

/// One request as seen by the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ... as sent.
    pub method: String,
    /// Percent-decoded URL path without query string, e.g. `/dl.k8s.io/...`.
    pub path: String,
    /// Raw value of the `Range` header, if any.
    pub range: Option<String>,
    /// Status code sent; `0` when the connection was closed without a
    /// response ([`Fault::ResetOnce`]). For [`Fault::TruncateOnce`] it is the
    /// status in the (complete) header, i.e. 200 or 206.
    pub status: u16,
}

#[derive(Debug, Clone, Copy)]
struct FaultState {
    fault: Fault,
    fired: bool,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<HashMap<String, FaultState>>,
    requests: Mutex<Vec<Request>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole mirror down.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loopback HTTP/1.1 file server. See the module docs.
pub struct Mirror {
    addr: SocketAddr,
    root: PathBuf,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Mirror {
    /// Binds `127.0.0.1:0` and starts serving `root`.
    pub fn start(root: impl Into<PathBuf>) -> Mirror {
        let root: PathBuf = root.into();
        let listener = TcpListener::bind("127.0.0.1:0").expect("mirror: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("mirror: local_addr of bound listener");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (root, shared, stop) = (root.clone(), Arc::clone(&shared), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("mirror-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, root, shared, stop))
                .expect("mirror: spawn accept thread")
        };
        Mirror {
            addr,
            root,
            shared,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Full URL of a URL path: `url_for("/dl.k8s.io/x")` is `http://127.0.0.1:PORT/dl.k8s.io/x`.
    pub fn url_for(&self, url_path: &str) -> String {
        format!("{}/{}", self.url(), url_path.trim_start_matches('/'))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Installs (or replaces, re-arming a "Once" fault) the fault for
    /// `url_path`, e.g. `/dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm`.
    pub fn set_fault(&self, url_path: &str, fault: Fault) {
        lock(&self.shared.faults).insert(normalize_key(url_path), FaultState { fault, fired: false });
    }

    pub fn clear_fault(&self, url_path: &str) {
        lock(&self.shared.faults).remove(&normalize_key(url_path));
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Number of GET requests for `url_path` (any status, including faults).
    pub fn hits(&self, url_path: &str) -> usize {
        let key = normalize_key(url_path);
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.method == "GET" && r.path == key)
            .count()
    }

    /// Number of GET requests for any path.
    pub fn total_gets(&self) -> usize {
        lock(&self.shared.requests).iter().filter(|r| r.method == "GET").count()
    }

    /// All requests so far, in arrival order of their (recorded) responses.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets all recorded requests (faults are kept as they are).
    pub fn reset_counters(&self) {
        lock(&self.shared.requests).clear();
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throw-away connection. If that
        // fails for any reason, abandon the acceptor rather than risk hanging.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok();
        if let Some(handle) = self.acceptor.take() {
            if woke {
                let _ = handle.join();
            }
        }
    }
}

fn normalize_key(url_path: &str) -> String {
    let p = url_path.split(['?', '#']).next().unwrap_or("");
    let p = percent_decode(p).unwrap_or_else(|| p.to_string());
    if p.starts_with('/') {
        p
    } else {
        format!("/{p}")
    }
}

fn accept_loop(listener: TcpListener, root: PathBuf, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                let (root, shared) = (root.clone(), Arc::clone(&shared));
                // If the thread cannot be spawned the stream is dropped and
                // the client sees a closed connection.
                let _ = thread::Builder::new()
                    .name("mirror-conn".into())
                    .spawn(move || handle_connection(stream, &root, &shared));
            }
            // e.g. EMFILE under heavy load: back off a little.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

struct Head {
    method: String,
    target: String,
    range: Option<String>,
}

enum ReadHead {
    Ok(Head),
    /// Client went away before sending a full request head (e.g. the wake-up
    /// connection in `Drop`).
    Gone,
    Malformed,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> ReadHead {
    let mut limited = reader.take(MAX_HEAD_BYTES);
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut raw = Vec::new();
        match limited.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return ReadHead::Gone,
            Ok(_) => {}
        }
        if raw.last() != Some(&b'\n') {
            // Head larger than MAX_HEAD_BYTES, or EOF mid-line.
            return if limited.limit() == 0 {
                ReadHead::Malformed
            } else {
                ReadHead::Gone
            };
        }
        let line = match String::from_utf8(raw) {
            Ok(s) => s.trim_end_matches(['\r', '\n']).to_string(),
            Err(_) => return ReadHead::Malformed,
        };
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF before the request line
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split_whitespace();
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if parts.next().is_none() => (m, t, v),
        _ => return ReadHead::Malformed,
    };
    if !version.starts_with("HTTP/1.") {
        return ReadHead::Malformed;
    }
    let mut range = None;
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            return ReadHead::Malformed;
        };
        if name.trim().eq_ignore_ascii_case("range") {
            range = Some(value.trim().to_string());
        }
    }
    ReadHead::Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        range,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Extracts the URL path from an origin-form (`/a/b?q`) or absolute-form
/// (`http://host/a/b`) request target.
fn target_path(target: &str) -> &str {
    let t = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        target
    };
    t.split(['?', '#']).next().unwrap_or("")
}

enum RangeSpec {
    Full,
    Partial { start: u64, end: u64 },
    Unsatisfiable,
}

fn parse_range(value: Option<&str>, len: u64) -> RangeSpec {
    let Some(value) = value else {
        return RangeSpec::Full;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full; // unknown unit: ignore
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeSpec::Full; // multipart ranges not supported: ignore
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        return match num(last) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if len == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeSpec::Full,
        };
    }
    let Some(start) = num(first) else {
        return RangeSpec::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match num(last) {
            Some(e) => Some(e),
            None => return RangeSpec::Full,
        }
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    match end {
        Some(e) if e < start => RangeSpec::Unsatisfiable,
        Some(e) => RangeSpec::Partial {
            start,
            end: e.min(len - 1),
        },
        None => RangeSpec::Partial { start, end: len - 1 },
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn handle_connection(stream: TcpStream, root: &Path, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let head = match read_head(&mut reader) {
        ReadHead::Ok(h) => h,
        ReadHead::Gone => return,
        ReadHead::Malformed => {
            let _ = send_simple(&stream, 400, "malformed request\n", &[], true);
            finish(&stream);
            return;
        }
    };
    let _ = serve(&stream, root, shared, head);
    finish(&stream);
}

/// Graceful close: flush our side, then drain briefly whatever the client
/// still sends so that closing does not turn into an RST that could discard
/// response bytes still in flight.
fn finish(stream: &TcpStream) {
    let mut s = stream;
    let _ = s.flush();
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    let mut drained = 0usize;
    while drained < 256 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn record(shared: &Shared, head: &Head, path: &str, status: u16) {
    lock(&shared.requests).push(Request {
        method: head.method.clone(),
        path: path.to_string(),
        range: head.range.clone(),
        status,
    });
}

fn send_simple(
    stream: &TcpStream,
    status: u16,
    body: &str,
    extra: &[(&str, String)],
    with_body: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Server: kbundle-test-mirror\r\nConnection: close\r\n\r\n");
    if with_body {
        out.push_str(body);
    }
    let mut s = stream;
    s.write_all(out.as_bytes())
}

fn serve(stream: &TcpStream, root: &Path, shared: &Shared, head: Head) -> io::Result<()> {
    let is_get = head.method == "GET";
    let is_head = head.method == "HEAD";
    let raw_path = target_path(&head.target);
    let decoded = percent_decode(raw_path);
    let path = decoded.clone().unwrap_or_else(|| raw_path.to_string());

    if !is_get && !is_head {
        record(shared, &head, &path, 405);
        return send_simple(
            stream,
            405,
            "method not allowed\n",
            &[("Allow", "GET, HEAD".into())],
            true,
        );
    }
    if decoded.is_none() || !safe_path(raw_path, &path) {
        record(shared, &head, &path, 400);
        return send_simple(stream, 400, "bad path\n", &[], is_get);
    }
    let fault = take_fault(shared, &path, is_get);
    if let Some(answered) = answer_fault(stream, shared, &head, &path, fault) {
        return answered;
    }
    let Some((file, len)) = open_file(root, &path) else {
        record(shared, &head, &path, 404);
        return send_simple(stream, 404, "not found\n", &[], is_get);
    };
    let (status, start, body_len) = match parse_range(head.range.as_deref(), len) {
        RangeSpec::Full => (200u16, 0u64, len),
        RangeSpec::Partial { start, end } => (206, start, end - start + 1),
        RangeSpec::Unsatisfiable => {
            record(shared, &head, &path, 416);
            return send_simple(
                stream,
                416,
                "range not satisfiable\n",
                &[("Content-Range", format!("bytes */{len}"))],
                is_get,
            );
        }
    };
    record(shared, &head, &path, status);
    send_head(stream, status, start, body_len, len)?;
    if is_head {
        return Ok(());
    }
    let body = Body {
        start,
        len: body_len,
        total: len,
    };
    send_body(stream, file, &body, fault)
}

/// A path the mirror serves: absolute, no `..`, backslash or NUL.
fn safe_path(raw_path: &str, path: &str) -> bool {
    path.starts_with('/')
        && !raw_path.contains("..")
        && !path.contains("..")
        && !path.contains('\\')
        && !path.contains('\0')
}

/// The fault for this request, if any (atomic with respect to other connections for "Once"
/// faults, which only a GET fires).
fn take_fault(shared: &Shared, path: &str, is_get: bool) -> Option<Fault> {
    let mut faults = lock(&shared.faults);
    match faults.get_mut(path) {
        Some(st) if st.fault.is_once() => {
            if is_get && !st.fired {
                st.fired = true;
                Some(st.fault)
            } else {
                None
            }
        }
        Some(st) if !is_get && st.fault == Fault::Corrupt => None,
        Some(st) => Some(st.fault),
        None => None,
    }
}

/// Answers the faults that replace the response (500, 404, reset); `Some` when it did.
fn answer_fault(
    stream: &TcpStream,
    shared: &Shared,
    head: &Head,
    path: &str,
    fault: Option<Fault>,
) -> Option<io::Result<()>> {
    let is_get = head.method == "GET";
    match fault {
        Some(Fault::Fail500Once) | Some(Fault::Fail500Always) => {
            record(shared, head, path, 500);
            Some(send_simple(stream, 500, "injected failure\n", &[], is_get))
        }
        Some(Fault::NotFound) => {
            record(shared, head, path, 404);
            Some(send_simple(stream, 404, "not found (injected)\n", &[], is_get))
        }
        Some(Fault::ResetOnce) => {
            record(shared, head, path, 0);
            let _ = stream.shutdown(Shutdown::Both);
            Some(Ok(()))
        }
        _ => None,
    }
}

/// The file a URL path names (only plain, non-empty segments) and its length.
fn open_file(root: &Path, path: &str) -> Option<(File, u64)> {
    let rel = &path[1..];
    if rel.is_empty() || rel.split('/').any(|seg| seg.is_empty() || seg == ".") {
        return None;
    }
    let f = File::open(root.join(rel)).ok()?;
    let m = f.metadata().ok()?;
    m.is_file().then_some((f, m.len()))
}

fn send_head(stream: &TcpStream, status: u16, start: u64, body_len: u64, len: u64) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\nAccept-Ranges: bytes\r\n",
        reason(status)
    );
    if status == 206 {
        out.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            start + body_len - 1
        ));
    }
    out.push_str("Server: kbundle-test-mirror\r\nConnection: close\r\n\r\n");
    let mut s = stream;
    s.write_all(out.as_bytes())
}

/// The part of a file a response carries.
struct Body {
    start: u64,
    len: u64,
    /// The whole file's length.
    total: u64,
}

/// Streams the body from disk, cut short ([`Fault::TruncateOnce`]) or with a flipped byte
/// ([`Fault::Corrupt`]).
fn send_body(stream: &TcpStream, mut file: File, body: &Body, fault: Option<Fault>) -> io::Result<()> {
    let send_len = if fault == Some(Fault::TruncateOnce) {
        body.len / 2
    } else {
        body.len
    };
    let corrupt_at = (fault == Some(Fault::Corrupt) && body.total > 0).then_some(body.total / 2);
    file.seek(SeekFrom::Start(body.start))?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = body.start;
    let end = body.start + send_len;
    let mut s = stream;
    while pos < end {
        let want = usize::try_from((end - pos).min(CHUNK as u64)).expect("chunk fits usize");
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            // File shrank under us; the client will see a short body.
            break;
        }
        if let Some(at) = corrupt_at.filter(|at| (pos..pos + n as u64).contains(at)) {
            buf[(at - pos) as usize] ^= 0xFF;
        }
        s.write_all(&buf[..n])?;
        pos += n as u64;
    }
    s.flush()
}
