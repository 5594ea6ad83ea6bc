//! Self-test of the loopback mirror (`support::mirror`), through raw HTTP/1.1 requests.

use super::*;

/// A parsed raw HTTP response.
#[derive(Debug)]
pub(super) struct Resp {
    /// 0 when the connection closed without any response bytes.
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(super) fn content_length(&self) -> u64 {
        self.header("content-length")
            .expect("Content-Length header")
            .parse()
            .expect("numeric Content-Length")
    }
}

/// Sends one raw request and reads until the server closes the connection.
fn send_raw(mirror: &Mirror, raw: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(mirror.addr()).expect("connect to mirror");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("set timeout");
    s.write_all(raw.as_bytes()).expect("send request");
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read response: {e}"),
        }
    }
    out
}

pub(super) fn parse_resp(raw: &[u8]) -> Resp {
    if raw.is_empty() {
        return Resp {
            status: 0,
            headers: vec![],
            body: vec![],
        };
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head");
    let head = std::str::from_utf8(&raw[..end]).expect("utf8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().expect("status").parse().expect("status code");
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header colon");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn request(mirror: &Mirror, method: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: selftest\r\n",
        mirror.addr()
    );
    for (k, v) in extra {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    parse_resp(&send_raw(mirror, &raw))
}

fn get(mirror: &Mirror, path: &str) -> Resp {
    request(mirror, "GET", path, &[])
}

// ---------------------------------------------------------------------------
// mirror
// ---------------------------------------------------------------------------

#[test]
fn mirror_serves_files_byte_identically_with_get_and_head() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    assert!(mirror.url().starts_with("http://127.0.0.1:"));

    for p in artifact_paths(&spec) {
        let want = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");
        let r = get(&mirror, &p);
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.content_length(), want.len() as u64, "{p}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.body == want, "{p} body differs");

        let h = request(&mirror, "HEAD", &p, &[]);
        assert_eq!(h.status, 200, "HEAD {p}");
        assert_eq!(h.content_length(), want.len() as u64, "HEAD {p}");
        assert!(h.body.is_empty(), "HEAD has no body");
    }
    // Query strings are ignored for lookup and bookkeeping.
    let p = kubeadm_path(&spec);
    assert_eq!(get(&mirror, &format!("{p}?x=1")).status, 200);
    assert_eq!(mirror.hits(&p), 2);
}

#[test]
fn mirror_range_requests() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);
    let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");
    let len = full.len();

    let r = request(&mirror, "GET", &p, &[("Range", "bytes=100-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[100..]);
    assert_eq!(r.content_length(), (len - 100) as u64);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-{}/{len}", len - 1).as_str())
    );

    let r = request(&mirror, "GET", &p, &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[10..20]);
    assert_eq!(r.header("content-range"), Some(format!("bytes 10-19/{len}").as_str()));

    // End beyond EOF is clamped.
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=5-999999")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[5..]);

    // Suffix range.
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=-7")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[len - 7..]);

    // HEAD with range.
    let r = request(&mirror, "HEAD", &p, &[("Range", "bytes=1-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.content_length(), (len - 1) as u64);
    assert!(r.body.is_empty());

    for bad in [format!("bytes={len}-"), "bytes=999999-".into(), "bytes=9-3".into()] {
        let r = request(&mirror, "GET", &p, &[("Range", &bad)]);
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()));
    }

    let ranges: Vec<Option<String>> = mirror.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(ranges[0].as_deref(), Some("bytes=100-"));
    assert_eq!(mirror.hits(&p), 7, "HEAD is not a hit");
}

#[test]
fn mirror_404_400_405() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());

    for (method, path, want) in [
        ("GET", "/dl.k8s.io/release/v9.9.9/bin/linux/amd64/kubeadm", 404),
        ("HEAD", "/dl.k8s.io/release/v9.9.9/bin/linux/amd64/kubeadm", 404),
        ("GET", "/dl.k8s.io/release/v1.34.3/bin/linux/amd64", 404),
        ("GET", "/dl.k8s.io/release/v1.34.3/bin/linux/amd64/", 404),
        ("GET", "/", 404),
        ("GET", "//dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm", 404),
        (
            "GET",
            "/dl.k8s.io/../dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm",
            400,
        ),
        ("GET", "/dl.k8s.io/%2e%2e/%2e%2e/etc/passwd", 400),
        ("POST", "/dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm", 405),
    ] {
        let r = request(&mirror, method, path, &[]);
        assert_eq!(r.status, want, "{method} {path}");
        if method == "GET" {
            assert_eq!(r.body.len() as u64, r.content_length(), "{method} {path}");
        }
    }
    // Percent-encoded but valid paths are decoded.
    let p = kubeadm_path(&spec).replace("kubeadm", "kube%61dm");
    assert_eq!(get(&mirror, &p).status, 200);
    assert_eq!(mirror.hits(&kubeadm_path(&spec)), 1);
}

#[test]
fn fault_fail500_once_and_always() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);

    mirror.set_fault(&p, Fault::Fail500Once);
    assert_eq!(request(&mirror, "HEAD", &p, &[]).status, 200, "HEAD does not consume");
    assert_eq!(get(&mirror, &p).status, 500);
    assert_eq!(get(&mirror, &p).status, 200);
    assert_eq!(get(&mirror, &p).status, 200);

    mirror.set_fault(&p, Fault::Fail500Always);
    for _ in 0..3 {
        assert_eq!(get(&mirror, &p).status, 500);
    }
    assert_eq!(request(&mirror, "HEAD", &p, &[]).status, 500);
    mirror.clear_faults();
    assert_eq!(get(&mirror, &p).status, 200);

    let statuses: Vec<u16> = mirror
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 200, 200, 500, 500, 500, 200]);
    assert_eq!(mirror.hits(&p), 7);
}

#[test]
fn fault_truncate_once() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);
    let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");

    mirror.set_fault(&p, Fault::TruncateOnce);
    let r = get(&mirror, &p);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), full.len() as u64, "full Content-Length");
    assert_eq!(r.body, &full[..full.len() / 2], "only half the body");

    let r = get(&mirror, &p);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, full);

    // With a range: half of the requested range.
    mirror.set_fault(&p, Fault::TruncateOnce);
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=100-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[100..100 + (full.len() - 100) / 2]);
}

#[test]
fn fault_corrupt_not_found_reset() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let p = kubeadm_path(&spec);
    let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");

    mirror.set_fault(&p, Fault::Corrupt);
    for _ in 0..2 {
        let r = get(&mirror, &p);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), full.len());
        let diffs: Vec<usize> = (0..full.len()).filter(|&i| r.body[i] != full[i]).collect();
        assert_eq!(diffs, [full.len() / 2], "exactly the middle byte flipped");
    }
    // Consistent for a resumed download covering the flipped byte.
    let r = request(&mirror, "GET", &p, &[("Range", "bytes=1-")]);
    assert_eq!(r.body.len(), full.len() - 1);
    assert_ne!(r.body, &full[1..]);
    assert_ne!(
        sha256_file(&upstream::local_path(dir.path(), &p)),
        hex::encode(Sha256::digest(&r.body))
    );

    mirror.set_fault(&p, Fault::NotFound);
    assert_eq!(get(&mirror, &p).status, 404);
    assert_eq!(get(&mirror, &p).status, 404);
    assert_eq!(request(&mirror, "HEAD", &p, &[]).status, 404);

    mirror.set_fault(&p, Fault::ResetOnce);
    let raw = send_raw(&mirror, &format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(raw.is_empty(), "no response bytes at all");
    assert_eq!(get(&mirror, &p).body, full);

    let last: Vec<Request> = mirror.requests().into_iter().rev().take(2).collect();
    assert_eq!(last[1].status, 0, "reset is recorded as status 0");
    assert_eq!(last[0].status, 200);
}

#[test]
fn hits_requests_and_reset_counters() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let paths = artifact_paths(&spec);

    for p in &paths[..3] {
        get(&mirror, p);
    }
    get(&mirror, &paths[0]);
    request(&mirror, "HEAD", &paths[1], &[]);
    get(&mirror, "/missing");

    assert_eq!(mirror.hits(&paths[0]), 2);
    assert_eq!(mirror.hits(&paths[1]), 1);
    assert_eq!(mirror.hits("/missing"), 1, "404s count as hits");
    assert_eq!(mirror.hits(&paths[5]), 0);
    assert_eq!(mirror.total_gets(), 5);
    let reqs = mirror.requests();
    assert_eq!(reqs.len(), 6);
    assert_eq!(
        reqs[4],
        Request {
            method: "HEAD".into(),
            path: paths[1].clone(),
            range: None,
            status: 200
        }
    );
    assert_eq!(reqs[5].status, 404);

    mirror.reset_counters();
    assert_eq!(mirror.total_gets(), 0);
    assert!(mirror.requests().is_empty());
    get(&mirror, &paths[0]);
    assert_eq!(mirror.hits(&paths[0]), 1);
}

#[test]
fn mirror_handles_many_concurrent_connections() {
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(&["amd64", "arm64"]);
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let paths = artifact_paths(&spec);

    // Open many idle connections first: they must not block others.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(mirror.addr()).expect("idle connect"))
        .collect();
    std::thread::scope(|s| {
        for i in 0..64 {
            let (mirror, paths, root) = (&mirror, &paths, dir.path());
            s.spawn(move || {
                let p = &paths[i % paths.len()];
                let want = fs::read(upstream::local_path(root, p)).expect("read fixture");
                let r = get(mirror, p);
                assert_eq!(r.status, 200, "{p}");
                assert!(r.body == want, "{p}");
            });
        }
    });
    drop(idle);
    assert_eq!(mirror.total_gets(), 64);
}

#[test]
fn mirror_drop_does_not_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mirror = Mirror::start(dir.path());
    let addr = mirror.addr();
    // An idle connection that never sends a request.
    let _idle = TcpStream::connect(addr).expect("connect");
    let t = Instant::now();
    drop(mirror);
    assert!(t.elapsed() < Duration::from_secs(5), "drop took {:?}", t.elapsed());
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "listener closed after drop"
    );
}

/// The real client is reqwest/hyper: check the mirror speaks HTTP well enough
/// for it, including how faults surface.
#[test]
fn mirror_works_with_reqwest() {
    let spec = UpstreamSpec::v1_34_3().tiny().with_arches(&["amd64", "arm64"]);
    let dir = tiny_tree(&spec);
    let mirror = Mirror::start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        let base = mirror.url();

        // Parallel downloads of everything.
        let paths = artifact_paths(&spec);
        let futs = paths.iter().map(|p| {
            let (client, url) = (client.clone(), format!("{base}{p}"));
            async move {
                let r = client.get(&url).send().await.expect("send");
                assert_eq!(r.status().as_u16(), 200, "{url}");
                (p.clone(), r.bytes().await.expect("body").to_vec())
            }
        });
        for (p, body) in futures::future::join_all(futs).await {
            let want = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");
            assert!(body == want, "{p}");
        }

        let p = kubeadm_path(&spec);
        let url = mirror.url_for(&p);
        assert_eq!(url, format!("{base}{p}"));
        let full = fs::read(upstream::local_path(dir.path(), &p)).expect("read fixture");

        let r = client
            .get(&url)
            .header("Range", "bytes=50-")
            .send()
            .await
            .expect("range send");
        assert_eq!(r.status().as_u16(), 206);
        assert_eq!(r.bytes().await.expect("range body"), &full[50..]);

        let r = client.head(&url).send().await.expect("head");
        // (reqwest's content_length() is the body size hint, 0 for HEAD.)
        let len = r.headers().get("content-length").expect("Content-Length");
        assert_eq!(len.to_str().expect("ascii"), full.len().to_string());

        mirror.set_fault(&p, Fault::TruncateOnce);
        let r = client.get(&url).send().await.expect("headers arrive");
        assert!(r.bytes().await.is_err(), "truncated body is an error");

        mirror.set_fault(&p, Fault::ResetOnce);
        assert!(client.get(&url).send().await.is_err(), "reset is an error");

        mirror.set_fault(&p, Fault::Fail500Once);
        let r = client.get(&url).send().await.expect("500 response");
        assert_eq!(r.status().as_u16(), 500);

        let r = client.get(&url).send().await.expect("ok after faults");
        assert_eq!(r.bytes().await.expect("body"), full);
    });
    // 1 parallel GET + range + 3 faulted + final (reqwest does not retry).
    assert_eq!(mirror.hits(&kubeadm_path(&spec)), 6);
}
