#![allow(dead_code)]
//! A loopback HTTP/1.1 proxy that slows chosen responses down to a drip, in front of the file
//! [`super::mirror::Mirror`] or the [`super::registry::Registry`]: a slow-drip upstream for
//! the download-limit tests.
//!
//! * Point kbundle's `--mirror` at [`DripProxy::url`] instead of the backend's URL.
//! * One request per connection: the proxy makes every request and response
//!   `Connection: close`, so each response is its own connection.
//! * A response to a `GET` whose URL path matches a [`Drip`] rule gets its head at once and
//!   then its body `bytes` at a time, one portion per `every`; other responses pass at full
//!   speed. A client that goes away ends the drip.
//! * Dropping the proxy stops accepting; connection threads end when their client or
//!   backend closes (sockets have timeouts).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

#[derive(Default)]
struct Shared {
    drips: Mutex<Vec<Drip>>,
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

fn relay(client: TcpStream, backend: SocketAddr, shared: &Shared, stop: &AtomicBool) -> io::Result<()> {
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let request = read_head(&mut from_client)?;
    let mut parts = request.first().map(|l| l.split_whitespace()).into_iter().flatten();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("").to_string();
    let drip = (method == "GET")
        .then(|| {
            let drips = shared.drips.lock().unwrap_or_else(|p| p.into_inner());
            drips.iter().find(|d| d.matches(&path)).cloned()
        })
        .flatten();

    let mut up = TcpStream::connect(backend)?;
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    up.write_all(&closing(&request))?;
    // A request body (kbundle sends none on GET): pass whatever the client already sent.
    let buffered = from_client.buffer().to_vec();
    up.write_all(&buffered)?;

    let mut from_up = BufReader::new(up.try_clone()?);
    let response = read_head(&mut from_up)?;
    let mut to_client = &client;
    to_client.write_all(&closing(&response))?;
    match drip {
        None => {
            io::copy(&mut from_up, &mut to_client)?;
        }
        Some(d) => {
            shared.dripped.fetch_add(1, Ordering::SeqCst);
            drip_body(&mut from_up, &client, &d, shared, stop)?;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    Ok(())
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
