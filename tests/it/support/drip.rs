#![allow(dead_code)]
//! A loopback HTTP/1.1 proxy that slows chosen responses down to a drip or breaks them, in
//! front of the file [`super::mirror::Mirror`] or the [`super::registry::Registry`]: a
//! slow-drip and fault-injecting upstream for the download-limit and retry tests (the
//! registry itself cannot be told to misbehave).
//!
//! * Point kbundle's `--mirror` at [`DripProxy::url`] instead of the backend's URL.
//! * One request per connection: the proxy makes every request and response
//!   `Connection: close`, so each response is its own connection.
//! * A response to a `GET` whose URL path matches a [`Drip`] rule gets its head at once and
//!   then its body `bytes` at a time, one portion per `every`; other responses pass at full
//!   speed. A client that goes away ends the drip.
//! * A `GET` whose URL path matches a [`FaultRule`] gets its [`Fault`] (a status instead of
//!   the backend's answer, a reset or a clean close after half the body, a flipped byte),
//!   as many times as the rule says; the first matching rule with uses left wins, before
//!   any drip. [`DripProxy::requests`] lists every request relayed, with the fault it got.
//! * Dropping the proxy stops accepting; connection threads end when their client or
//!   backend closes (sockets have timeouts).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Which responses drip, and how fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drip {
    /// URL paths equal to this, or containing it when `contains` is set.
    pub path: String,
    pub contains: bool,
    /// Body bytes sent per step.
    pub bytes: usize,
    /// Pause between steps.
    pub every: Duration,
}

impl Drip {
    /// `bytes` every `every` for the response to exactly `path`.
    pub fn exact(path: &str, bytes: usize, every: Duration) -> Drip {
        Drip {
            path: path.to_string(),
            contains: false,
            bytes: bytes.max(1),
            every,
        }
    }

    /// `bytes` every `every` for responses to any path containing `fragment`.
    pub fn containing(fragment: &str, bytes: usize, every: Duration) -> Drip {
        Drip {
            contains: true,
            ..Drip::exact(fragment, bytes, every)
        }
    }

    fn matches(&self, path: &str) -> bool {
        if self.contains {
            path.contains(&self.path)
        } else {
            path == self.path
        }
    }
}

/// What the proxy does to a matching `GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers this status (e.g. 500) itself; the backend is not asked.
    Status(u16),
    /// Passes the head and half the body, then resets the connection (TCP RST).
    ResetMidBody,
    /// Passes the head (with its full `Content-Length`) and half the body, then closes the
    /// connection cleanly: a truncated body.
    Truncate,
    /// Passes everything with the byte in the middle of the whole resource inverted (also
    /// inside a `206` whose range covers it); sizes and headers are unchanged.
    Corrupt,
}

/// Which `GET`s get a [`Fault`], and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// URL paths containing this.
    pub path: String,
    pub fault: Fault,
    /// How many matching `GET`s get it; `None`: every one.
    pub times: Option<u32>,
}

impl FaultRule {
    /// `fault` for every `GET` whose URL path contains `fragment`.
    pub fn containing(fragment: &str, fault: Fault) -> FaultRule {
        FaultRule {
            path: fragment.to_string(),
            fault,
            times: None,
        }
    }

    /// Only the first `n` matching `GET`s get the fault.
    pub fn times(mut self, n: u32) -> FaultRule {
        self.times = Some(n);
        self
    }
}

/// One request the proxy relayed (or answered itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub method: String,
    /// URL path without the query string.
    pub path: String,
    /// The `Range` header the client sent.
    pub range: Option<String>,
    /// The status the client got (the backend's, or a [`Fault::Status`]).
    pub status: u16,
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct Shared {
    drips: Mutex<Vec<Drip>>,
    faults: Mutex<Vec<FaultRule>>,
    requests: Mutex<Vec<Relayed>>,
    /// Body bytes sent by dripping responses.
    dripped_bytes: AtomicU64,
    /// Dripping responses started.
    dripped: AtomicU64,
}

pub struct DripProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl DripProxy {
    /// Listens on 127.0.0.1 and forwards to `backend` (e.g. `mirror.addr()`).
    pub fn start(backend: SocketAddr) -> DripProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("drip proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("drip proxy: local_addr");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (Arc::clone(&shared), Arc::clone(&stop));
        thread::Builder::new()
            .name(format!("drip-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, backend, sh, st))
            .expect("drip proxy: spawn accept thread");
        DripProxy { addr, shared, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as a registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Adds a rule; responses it matches drip from the next request on.
    pub fn drip(&self, rule: Drip) {
        self.shared.drips.lock().unwrap_or_else(|p| p.into_inner()).push(rule);
    }

    /// Every response at full speed again.
    pub fn clear(&self) {
        self.shared.drips.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Adds a fault rule; it applies from the next request on.
    pub fn fault(&self, rule: FaultRule) {
        lock(&self.shared.faults).push(rule);
    }

    /// Every request relayed so far, in the order their heads arrived from the backend.
    pub fn requests(&self) -> Vec<Relayed> {
        lock(&self.shared.requests).clone()
    }

    /// The `GET`s relayed so far whose URL path contains `fragment`.
    pub fn gets_containing(&self, fragment: &str) -> Vec<Relayed> {
        let all = lock(&self.shared.requests);
        all.iter()
            .filter(|r| r.method == "GET" && r.path.contains(fragment))
            .cloned()
            .collect()
    }

    /// How many responses dripped so far.
    pub fn dripped(&self) -> u64 {
        self.shared.dripped.load(Ordering::SeqCst)
    }

    /// Body bytes those responses sent so far.
    pub fn dripped_bytes(&self) -> u64 {
        self.shared.dripped_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for DripProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
    }
}

fn accept_loop(listener: TcpListener, backend: SocketAddr, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = conn else { continue };
        let (sh, st) = (Arc::clone(&shared), Arc::clone(&stop));
        let _ = thread::Builder::new().name("drip-conn".into()).spawn(move || {
            let _ = relay(client, backend, &sh, &st);
        });
    }
}

/// Reads an HTTP head (through the blank line) and returns its lines without line ends.
fn read_head(r: &mut impl BufRead) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "head cut short"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// The head again, with `Connection: close` instead of any connection headers.
fn closing(head: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for l in head {
        let name = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first fault rule with uses left that matches `path`, used once.
fn take_fault(shared: &Shared, path: &str) -> Option<Fault> {
    let mut rules = lock(&shared.faults);
    let rule = rules
        .iter_mut()
        .find(|r| path.contains(&r.path) && r.times != Some(0))?;
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
    Some(rule.fault)
}

/// The value of header `name` (case-insensitive) in a head.
fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status_of(head: &[String]) -> u16 {
    let line = head.first().map(String::as_str).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn relay(client: TcpStream, backend: SocketAddr, shared: &Shared, stop: &AtomicBool) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let request = read_head(&mut from_client)?;
    let mut parts = request.first().map(|l| l.split_whitespace()).into_iter().flatten();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut seen = Relayed {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        range: header(&request, "range").map(str::to_string),
        status: 0,
        fault: None,
    };
    seen.fault = (method == "GET").then(|| take_fault(shared, &seen.path)).flatten();
    if let Some(Fault::Status(code)) = seen.fault {
        seen.status = code;
        lock(&shared.requests).push(seen);
        return answer_status(&client, code);
    }
    let drip = (method == "GET")
        .then(|| lock(&shared.drips).iter().find(|d| d.matches(&seen.path)).cloned())
        .flatten();

    let mut up = TcpStream::connect(backend)?;
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    up.write_all(&closing(&request))?;
    // A request body (kbundle sends none on GET): pass whatever the client already sent.
    let buffered = from_client.buffer().to_vec();
    up.write_all(&buffered)?;

    let mut from_up = BufReader::new(up.try_clone()?);
    let response = read_head(&mut from_up)?;
    seen.status = status_of(&response);
    let fault = seen.fault;
    lock(&shared.requests).push(seen);
    let mut to_client = &client;
    to_client.write_all(&closing(&response))?;
    match (fault, drip) {
        (Some(f), _) => break_body(&mut from_up, &client, f, &response)?,
        (None, None) => {
            io::copy(&mut from_up, &mut to_client)?;
        }
        (None, Some(d)) => {
            shared.dripped.fetch_add(1, Ordering::SeqCst);
            drip_body(&mut from_up, &client, &d, shared, stop)?;
        }
    }
    if fault == Some(Fault::ResetMidBody) {
        // Closing with a zero linger sends RST instead of FIN; data sent before it is
        // still delivered (Linux queues it ahead of the reset).
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO))?;
        return Ok(());
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    Ok(())
}

/// A response of `code` with a short text body, made by the proxy itself.
fn answer_status(client: &TcpStream, code: u16) -> io::Result<()> {
    let body = format!("injected {code}\n");
    let mut to_client = client;
    write!(
        to_client,
        "HTTP/1.1 {code} Injected\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// Passes the body with `fault` applied (not [`Fault::Status`], answered before).
fn break_body(from: &mut impl Read, client: &TcpStream, fault: Fault, head: &[String]) -> io::Result<()> {
    let len: u64 = header(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut to_client = client;
    match fault {
        Fault::ResetMidBody | Fault::Truncate => {
            io::copy(&mut from.take(len / 2), &mut to_client)?;
        }
        Fault::Corrupt => {
            let (start, total) = body_span(head, len);
            copy_flipping(from, client, start, total / 2)?;
        }
        Fault::Status(_) => {}
    }
    to_client.flush()
}

/// Where the body starts in the whole resource, and the resource's length: from
/// `Content-Range: bytes S-E/T` on a `206`, else `(0, Content-Length)`.
fn body_span(head: &[String], len: u64) -> (u64, u64) {
    let span = header(head, "content-range")
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split_once('-'))
        .and_then(|(s, rest)| Some((s.parse().ok()?, rest.split_once('/')?.1.parse().ok()?)));
    span.unwrap_or((0, len))
}

/// Copies the body, inverting the byte at offset `at` of the whole resource if the body
/// (starting at offset `start`) covers it.
fn copy_flipping(from: &mut impl Read, client: &TcpStream, start: u64, at: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = start;
    let mut to_client = client;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if (pos..pos + n as u64).contains(&at) {
            buf[(at - pos) as usize] ^= 0xff;
        }
        to_client.write_all(&buf[..n])?;
        pos += n as u64;
    }
}

fn drip_body(from: &mut impl Read, client: &TcpStream, d: &Drip, shared: &Shared, stop: &AtomicBool) -> io::Result<()> {
    let mut buf = vec![0u8; d.bytes];
    let mut to_client = client;
    while !stop.load(Ordering::SeqCst) {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        to_client.write_all(&buf[..n])?;
        to_client.flush()?;
        shared.dripped_bytes.fetch_add(n as u64, Ordering::SeqCst);
        thread::sleep(d.every);
    }
    Ok(())
}
