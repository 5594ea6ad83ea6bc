//! `kbundle etcd snapshot save|restore` against a real etcd: Debian's etcd-server and
//! etcd-client 3.4 (`apt-get install etcd-server etcd-client`; 3.4 has no etcdutl, so
//! etcdctl does status and restore), each on free loopback ports in a temp directory.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";
const KEYS: usize = 200;

fn require_etcd() {
    assert!(
        Path::new(ETCD).is_file() && Path::new(ETCDCTL).is_file(),
        "these tests run Debian's etcd 3.4: apt-get install etcd-server etcd-client"
    );
}

fn kbundle<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_kbundle"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kbundle")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails the test with kbundle's output unless it exited 0.
fn ok(out: &Output) -> (String, String) {
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "kbundle failed: {}\nstdout:\n{o}\nstderr:\n{e}",
        out.status
    );
    (o, e)
}

/// Fails the test unless kbundle exited 1; returns its stderr.
fn fails(out: &Output) -> String {
    let e = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure; stdout:\n{}\nstderr:\n{e}",
        text(&out.stdout)
    );
    e
}

fn free_ports<const N: usize>() -> [u16; N] {
    // Hold every listener until all ports are picked, so the N ports differ.
    let ls: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| ls[i].local_addr().unwrap().port())
}

/// A loopback port that refuses connections for as long as the returned socket lives: it
/// is bound but never listens, so no other test (or etcd) can take it meanwhile.
fn refusing_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    (s, port)
}

/// Waits until `pid` is gone or a zombie (PID 1 here reaps orphans slowly).
fn wait_gone(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        match std::fs::read_to_string(&stat) {
            Err(_) => return,
            Ok(s) if s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("process {pid} still running 15s after SIGKILL");
}

/// One etcd member on loopback; killed (and waited for) when dropped.
struct Etcd {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Etcd {
    /// Starts `etcd --name name --data-dir data_dir` and waits until it is healthy. A new
    /// member is bootstrapped with `peer_port` in its cluster; an existing data dir keeps
    /// the membership stored in it.
    fn start(name: &str, data_dir: &Path, peer_port: u16, log: &Path) -> Etcd {
        let [client, metrics] = free_ports::<2>();
        let url = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let logf = std::fs::File::create(log).unwrap();
        let child = Command::new(ETCD)
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={name}={peer}"))
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"))
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start etcd");
        let mut e = Etcd {
            child: Some(child),
            url,
            log: log.to_path_buf(),
        };
        e.wait_healthy();
        e
    }

    fn wait_healthy(&mut self) {
        let t = Instant::now();
        loop {
            let up = self
                .ctl(&["--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"])
                .status
                .success();
            if up {
                return;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || t.elapsed() > Duration::from_secs(30) {
                panic!(
                    "etcd not healthy ({exited:?}); log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url))
            .args(args)
            .output()
            .expect("run etcdctl")
    }

    /// Puts `/kbundle-test/kNNN = value-NNN` in transactions of 100.
    fn load(&self) -> BTreeMap<String, String> {
        let want = expected();
        let pairs: Vec<_> = want.iter().collect();
        for chunk in pairs.chunks(100) {
            let mut child = Command::new(ETCDCTL)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.url))
                .arg("txn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut script = String::from("\n");
            for (k, v) in chunk {
                script.push_str(&format!("put {k} {v}\n"));
            }
            script.push_str("\n\n");
            child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success() && text(&out.stdout).starts_with("SUCCESS"),
                "txn: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        want
    }

    /// Every `/kbundle-test/` key and value.
    fn read_all(&self) -> BTreeMap<String, String> {
        let out = self.ctl(&["get", "--prefix", "/kbundle-test/"]);
        assert!(out.status.success(), "get: {}", text(&out.stderr));
        let s = text(&out.stdout);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len() % 2, 0, "{s}");
        lines
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect()
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id();
            let _ = c.kill();
            let _ = c.wait();
            wait_gone(pid);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn expected() -> BTreeMap<String, String> {
    (1..=KEYS)
        .map(|i| (format!("/kbundle-test/k{i:03}"), format!("value-{i:03}:a=b/c")))
        .collect()
}

/// Starts an etcd, loads the keys, saves `dir/snap.db` with kbundle, stops etcd.
fn snapshot_fixture(dir: &Path) -> PathBuf {
    let [peer] = free_ports::<1>();
    let etcd = Etcd::start("src", &dir.join("src-data"), peer, &dir.join("src.log"));
    etcd.load();
    let snap = dir.join("snap.db");
    ok(&kbundle([
        OsStr::new("etcd"),
        "snapshot".as_ref(),
        "save".as_ref(),
        snap.as_os_str(),
        "--endpoints".as_ref(),
        etcd.url.as_ref(),
        "--etcdctl".as_ref(),
        ETCDCTL.as_ref(),
    ]));
    etcd.stop();
    snap
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn save_then_restore_reads_every_key_back() {
    require_etcd();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let [peer_a] = free_ports::<1>();
    let a = Etcd::start("a", &dir.join("a"), peer_a, &dir.join("a.log"));
    let want = a.load();
    let snap = dir.join("snap.db");
    let save = |etcdctl: &Path| {
        kbundle([
            OsStr::new("etcd"),
            "snapshot".as_ref(),
            "save".as_ref(),
            snap.as_os_str(),
            "--endpoints".as_ref(),
            a.url.as_ref(),
            "--etcdctl".as_ref(),
            etcdctl.as_os_str(),
        ])
    };

    // An etcdctl whose `snapshot status` fails: the saved part file must not survive.
    let broken = dir.join("etcdctl-broken-status");
    std::fs::write(
        &broken,
        format!(
            "#!/bin/sh\ncase \"$*\" in *'snapshot status'*) echo 'status: injected failure' >&2; exit 2;; esac\nexec {ETCDCTL} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e = fails(&save(&broken));
    assert!(e.contains("snapshot status --write-out=json"), "{e}");
    assert!(e.contains("status: injected failure"), "{e}");
    assert_eq!(names_in(dir), ["a", "a.log", "etcdctl-broken-status"], "{e}");

    // The real thing.
    let (out, err) = ok(&save(Path::new(ETCDCTL)));
    let bytes = std::fs::read(&snap).unwrap();
    let digest = kbundle::digest::Sha256::of(&bytes);
    assert_eq!(
        std::fs::read_to_string(dir.join("snap.db.sha256")).unwrap(),
        format!("{digest}  snap.db\n")
    );
    let check = Command::new("sha256sum")
        .args(["-c", "snap.db.sha256"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stdout));
    assert!(!dir.join("snap.db.part").exists() && !dir.join("snap.db.part.part").exists());
    assert!(out.contains(&digest.to_string()), "{out}");
    assert!(out.contains(&format!("size      {} bytes", bytes.len())), "{out}");
    let keys: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("keys"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no key count in {out}"));
    assert!(keys >= KEYS as u64, "{out}");
    assert!(out.contains("revision"), "{out}");
    assert!(err.contains("is up (etcd 3.4"), "{err}");
    // The server's version is recorded beside the snapshot, for restore to pick its tool.
    assert_eq!(
        std::fs::read_to_string(dir.join("snap.db.etcd-version")).unwrap(),
        "3.4.23\n"
    );
    assert!(err.contains("using etcdctl 3.4.23"), "{err}");

    // A second save never overwrites the first.
    let e = fails(&save(Path::new(ETCDCTL)));
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&snap).unwrap(), bytes);
    a.stop();

    // Restore into a new directory as member "b" and read everything back.
    let [peer_b] = free_ports::<1>();
    let data_b = dir.join("b");
    let peer_url = format!("http://127.0.0.1:{peer_b}");
    let (out, err) = ok(&kbundle([
        OsStr::new("etcd"),
        "snapshot".as_ref(),
        "restore".as_ref(),
        snap.as_os_str(),
        "--data-dir".as_ref(),
        data_b.as_os_str(),
        "--name".as_ref(),
        "b".as_ref(),
        "--initial-cluster".as_ref(),
        format!("b={peer_url}").as_ref(),
        "--initial-advertise-peer-urls".as_ref(),
        peer_url.as_ref(),
        "--etcdctl".as_ref(),
        ETCDCTL.as_ref(),
    ]));
    assert!(err.contains("sha256 matches"), "{err}");
    assert!(err.contains("restoring with etcdctl 3.4.23 /usr/bin/etcdctl"), "{err}");
    // etcdctl 3.4 has no --bump-revision (its `snapshot restore --help` does not list it):
    // restored without, and said so.
    assert!(err.contains("has no --bump-revision/--mark-compacted"), "{err}");
    assert!(out.contains(&format!("into {}", data_b.display())), "{out}");
    // The staging directory is gone.
    assert!(
        !names_in(dir).iter().any(|n| n.contains("kbundle-restore")),
        "{:?}",
        names_in(dir)
    );
    let b = Etcd::start("b", &data_b, peer_b, &dir.join("b.log"));
    assert_eq!(b.read_all(), want);
    let members = text(&b.ctl(&["member", "list"]).stdout);
    assert!(members.contains(&format!(", b, {peer_url},")), "{members}");
    b.stop();
}

#[test]
fn restore_refuses_used_data_dirs_and_bad_checksums() {
    require_etcd();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let snap = snapshot_fixture(dir);
    let restore = |file: &Path, data: &Path| {
        kbundle([
            OsStr::new("etcd"),
            "snapshot".as_ref(),
            "restore".as_ref(),
            file.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--etcdctl".as_ref(),
            ETCDCTL.as_ref(),
        ])
    };

    // The source member's data directory is in use: refused, untouched.
    let used = dir.join("src-data");
    let before = names_in(&used);
    let e = fails(&restore(&snap, &used));
    assert!(
        e.contains("is not empty") && e.contains(&used.display().to_string()),
        "{e}"
    );
    assert_eq!(names_in(&used), before);

    // A file where the directory should be.
    std::fs::write(dir.join("afile"), "x").unwrap();
    let e = fails(&restore(&snap, &dir.join("afile")));
    assert!(e.contains("not a directory"), "{e}");

    // An existing empty directory is fine (etcd 3.4 itself refuses it: kbundle restores
    // beside it and renames over it).
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&restore(&snap, &empty));
    assert!(empty.join("member/snap/db").is_file());
    assert!(empty.join("member/wal").is_dir());

    // A snapshot that does not match its .sha256 is not restored.
    let bad = dir.join("bad.db");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    std::fs::copy(dir.join("snap.db.sha256"), dir.join("bad.db.sha256")).unwrap();
    let e = fails(&restore(&bad, &dir.join("never")));
    assert!(e.contains("sha256 is") && e.contains("bad.db.sha256"), "{e}");
    assert!(!dir.join("never").exists());

    // Without a .sha256 it is etcdctl that refuses it (its own integrity hash), and the
    // error shows the command line and etcdctl's stderr; nothing is left behind.
    std::fs::remove_file(dir.join("bad.db.sha256")).unwrap();
    let e = fails(&restore(&bad, &dir.join("never")));
    assert!(e.contains("ETCDCTL_API=3 /usr/bin/etcdctl snapshot restore"), "{e}");
    assert!(e.contains("its stderr"), "{e}");
    assert!(!dir.join("never").exists());
    assert!(
        !names_in(dir).iter().any(|n| n.contains("kbundle-restore")),
        "{:?}",
        names_in(dir)
    );
}

#[test]
fn save_against_a_dead_endpoint_fails_and_leaves_nothing() {
    require_etcd();
    let t = tempfile::tempdir().unwrap();
    let (_held, port) = refusing_port();
    let snap = t.path().join("snap.db");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let e = fails(&kbundle([
        OsStr::new("etcd"),
        "snapshot".as_ref(),
        "save".as_ref(),
        snap.as_os_str(),
        "--endpoints".as_ref(),
        url.as_ref(),
        "--etcdctl".as_ref(),
        ETCDCTL.as_ref(),
    ]));
    // etcdctl 3.4's own `snapshot save` would wait forever here.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        e.contains(&format!("ETCDCTL_API=3 /usr/bin/etcdctl --endpoints={url}")),
        "{e}"
    );
    assert!(e.contains("endpoint status"), "{e}");
    assert!(e.contains("its stderr"), "{e}");
    assert!(names_in(t.path()).is_empty(), "{:?}", names_in(t.path()));

    // https with no certificates anywhere: refused before running anything.
    let e = fails(&kbundle([
        OsStr::new("etcd"),
        "snapshot".as_ref(),
        "save".as_ref(),
        snap.as_os_str(),
        "--endpoints".as_ref(),
        format!("https://127.0.0.1:{port}").as_ref(),
        "--cacert".as_ref(),
        t.path().join("ca.crt").as_os_str(),
        "--etcdctl".as_ref(),
        ETCDCTL.as_ref(),
    ]));
    assert!(e.contains("ca.crt") && e.contains("--cacert"), "{e}");
    assert!(names_in(t.path()).is_empty());
}

/// kubeadm v1.34's etcd static pod for control plane `cp1` at 10.0.0.11.
const ETCD_YAML: &str = include_str!("../fixtures/kubeadm-v1.34-etcd.yaml");

const APISERVER_YAML: &str = r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 10.0.0.11:6443
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=10.0.0.11
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt
    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key
    - --etcd-servers=https://127.0.0.1:2379
    image: registry.k8s.io/kube-apiserver:v1.34.3
    name: kube-apiserver
  hostNetwork: true
status: {}
"#;

/// A node root with kubeadm's manifests and an old etcd data directory.
fn fake_node(root: &Path, etcd_yaml: &str) {
    let manifests = root.join("etc/kubernetes/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("etcd.yaml"), etcd_yaml).unwrap();
    std::fs::write(manifests.join("kube-apiserver.yaml"), APISERVER_YAML).unwrap();
    std::fs::create_dir_all(root.join("var/lib/etcd/member")).unwrap();
    std::fs::write(root.join("var/lib/etcd/member/old"), "old data").unwrap();
}

fn restore_on_node(snap: &Path, root: &Path) -> Output {
    kbundle([
        OsStr::new("etcd"),
        "snapshot".as_ref(),
        "restore".as_ref(),
        snap.as_os_str(),
        "--root".as_ref(),
        root.as_os_str(),
        "--data-dir".as_ref(),
        "/var/lib/etcd-restored".as_ref(),
        "--update-manifest".as_ref(),
        "--etcdctl".as_ref(),
        ETCDCTL.as_ref(),
    ])
}

#[test]
fn restore_update_manifest_switches_kubeadm_etcd() {
    require_etcd();
    let t = tempfile::tempdir().unwrap();
    let snap = snapshot_fixture(t.path());
    let root = t.path().join("node");
    fake_node(&root, ETCD_YAML);
    let k8s = root.join("etc/kubernetes");

    // A snapshot from another etcd minor than the tool's is refused, naming both, before
    // anything on the node changes.
    std::fs::write(snap.with_file_name("snap.db.etcd-version"), "3.5.24\n").unwrap();
    let e = fails(&restore_on_node(&snap, &root));
    assert!(e.contains("/usr/bin/etcdctl is etcdctl 3.4.23"), "{e}");
    assert!(e.contains("is etcd 3.5.24") && e.contains("etcdctl 3.5.x"), "{e}");
    // A 3.6 snapshot needs etcdutl 3.6 (3.6's etcdctl cannot restore).
    std::fs::write(snap.with_file_name("snap.db.etcd-version"), "3.6.5\n").unwrap();
    let e = fails(&restore_on_node(&snap, &root));
    assert!(e.contains("is etcd 3.6.5") && e.contains("etcdutl 3.6.x"), "{e}");
    assert_eq!(names_in(&root.join("var/lib")), ["etcd", "kbundle"]);
    assert_eq!(
        std::fs::read_to_string(k8s.join("manifests/etcd.yaml")).unwrap(),
        ETCD_YAML
    );
    std::fs::write(snap.with_file_name("snap.db.etcd-version"), "3.4.23\n").unwrap();

    let (out, err) = ok(&restore_on_node(&snap, &root));
    for step in ["step 1/3", "step 2/3", "step 3/3"] {
        assert!(err.contains(step), "{err}");
    }
    assert!(err.contains("using --name=cp1 from etcd.yaml"), "{err}");
    assert!(out.contains("etcd.yaml now uses /var/lib/etcd-restored"), "{out}");

    // etcd.yaml: exactly the three data-dir lines changed.
    let new = std::fs::read_to_string(k8s.join("manifests/etcd.yaml")).unwrap();
    let old_lines: Vec<&str> = ETCD_YAML.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    assert_eq!(old_lines.len(), new_lines.len());
    let changed: Vec<(&str, &str)> = old_lines
        .iter()
        .zip(&new_lines)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (*a, *b))
        .collect();
    assert_eq!(
        changed,
        [
            (
                "    - --data-dir=/var/lib/etcd",
                "    - --data-dir=/var/lib/etcd-restored"
            ),
            (
                "    - mountPath: /var/lib/etcd",
                "    - mountPath: /var/lib/etcd-restored"
            ),
            ("      path: /var/lib/etcd", "      path: /var/lib/etcd-restored"),
        ]
    );
    assert_eq!(new, ETCD_YAML.replace("/var/lib/etcd\n", "/var/lib/etcd-restored\n"));

    // The API server manifest is back, byte for byte; the backup is outside manifests/.
    assert_eq!(
        std::fs::read_to_string(k8s.join("manifests/kube-apiserver.yaml")).unwrap(),
        APISERVER_YAML
    );
    assert!(!k8s.join("kube-apiserver.yaml.kbundle-stopped").exists());
    assert_eq!(
        std::fs::read_to_string(k8s.join("etcd.yaml.kbundle-backup")).unwrap(),
        ETCD_YAML
    );
    assert_eq!(names_in(&k8s.join("manifests")), ["etcd.yaml", "kube-apiserver.yaml"]);
    // Old data untouched; no staging left.
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/etcd/member/old")).unwrap(),
        "old data"
    );
    // (var/lib/kbundle holds the node lock every changing command takes.)
    assert_eq!(names_in(&root.join("var/lib")), ["etcd", "etcd-restored", "kbundle"]);

    // The restored member is cp1 with the peer URL from etcd.yaml, and has every key.
    let data = root.join("var/lib/etcd-restored");
    let [peer] = free_ports::<1>();
    let etcd = Etcd::start("cp1", &data, peer, &t.path().join("cp1.log"));
    assert_eq!(etcd.read_all(), expected());
    let members = text(&etcd.ctl(&["member", "list"]).stdout);
    assert!(members.contains(", cp1, https://10.0.0.11:2380,"), "{members}");
    etcd.stop();

    // Running it again with the same --data-dir is refused before anything moves.
    let e = fails(&restore_on_node(&snap, &root));
    assert!(e.contains("etcd already uses /var/lib/etcd-restored"), "{e}");
    assert_eq!(std::fs::read_to_string(k8s.join("manifests/etcd.yaml")).unwrap(), new);
}

#[test]
fn update_manifest_without_data_dir_flag_fails_and_keeps_apiserver() {
    require_etcd();
    let t = tempfile::tempdir().unwrap();
    let snap = snapshot_fixture(t.path());
    let root = t.path().join("node");
    let no_flag = ETCD_YAML.replace("    - --data-dir=/var/lib/etcd\n", "");
    fake_node(&root, &no_flag);
    let k8s = root.join("etc/kubernetes");

    let e = fails(&restore_on_node(&snap, &root));
    assert!(e.contains("--data-dir"), "{e}");
    assert!(
        e.contains(&k8s.join("manifests/etcd.yaml").display().to_string()),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(k8s.join("manifests/kube-apiserver.yaml")).unwrap(),
        APISERVER_YAML
    );
    assert_eq!(
        std::fs::read_to_string(k8s.join("manifests/etcd.yaml")).unwrap(),
        no_flag
    );
    assert!(!k8s.join("kube-apiserver.yaml.kbundle-stopped").exists());
    assert!(!k8s.join("etcd.yaml.kbundle-backup").exists());
    // Checked before restoring: no data directory, no staging directory.
    assert_eq!(names_in(&root.join("var/lib")), ["etcd", "kbundle"]);
}

#[test]
fn help_teaches_with_examples() {
    let (out, _) = ok(&kbundle(["etcd", "snapshot", "save", "--help"]));
    for s in [
        "Examples:",
        "healthcheck-client",
        "FILE.sha256",
        "--endpoints",
        "sha256sum -c",
    ] {
        assert!(out.contains(s), "{s}: {out}");
    }
    let (out, _) = ok(&kbundle(["etcd", "snapshot", "restore", "--help"]));
    for s in [
        "Examples:",
        "--update-manifest",
        "kbundle-stopped",
        "etcd.yaml.kbundle-backup",
        "--root",
    ] {
        assert!(out.contains(s), "{s}: {out}");
    }
    let (out, _) = ok(&kbundle(["etcd", "--help"]));
    assert!(out.contains("snapshot"), "{out}");
}
