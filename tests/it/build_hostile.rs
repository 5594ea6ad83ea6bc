//! Issue 9, build side: hostile upstreams, crashes and bad inputs against the real binary.
//! Killed builds leave nothing behind; a poisoned cache heals; slow-drip upstreams meet a
//! deadline and a minimum rate; metadata-address mirrors are refused; lockfile location;
//! non-UTF-8 inputs; readable I/O errors.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::drip::{Drip, DripProxy};
use support::harness::{
    kbundle_command as command, names, poll, run_kbundle as run, stderr, strings, BuildEnv as Env, KBUNDLE,
};
use support::registry::output_text as text;
use support::upstream::{self, UpstreamSpec};

const ARCHIVE: &str = "kubernetes-v1.34.3.tar.zst";

/// A non-empty file in `dir` whose name `matches`.
fn temp_file_in(dir: &Path, matches: impl Fn(&str) -> bool) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        (matches(&name) && len > 0).then(|| e.path())
    })
}

fn is_part(name: &str) -> bool {
    name.starts_with("download-") && name.ends_with(".part")
}

fn is_out_tmp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Polls a running build until `found` finds its file; panics if the build ends first.
fn wait_for_file(child: &mut Child, why: &str, found: impl Fn() -> Option<PathBuf>) -> PathBuf {
    poll(Duration::from_secs(180), why, || {
        if let Some(p) = found() {
            return Some(p);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the build ended ({status}) before {why}");
        }
        None
    })
}

fn kill_9(mut child: Child) {
    child.kill().expect("SIGKILL the build");
    child.wait().expect("reap the build");
}

fn kubeadm_path(spec: &UpstreamSpec) -> String {
    format!("/dl.k8s.io/release/v{}/bin/linux/amd64/kubeadm", spec.kubernetes)
}

// ---------------------------------------------------------------------------------------
// 1. Crash leftovers
// ---------------------------------------------------------------------------------------

#[test]
fn killed_builds_leave_no_temp_files_and_the_rerun_is_byte_identical() {
    // Real binaries (~135 MiB) and gzip, so that packing takes seconds.
    let spec = UpstreamSpec::v1_34_3().real();
    let env = Env::new(&spec);
    let proxy = DripProxy::start(env.up.mirror.addr());
    let kubectl = format!("/dl.k8s.io/release/v{}/bin/linux/amd64/kubectl", spec.kubernetes);
    proxy.drip(Drip::exact(&kubectl, 256 * 1024, Duration::from_millis(20)));
    let mirrors = env.up.mirror_args_via(&proxy.url(), &env.up.registry.url());
    let args = env.build_args("cache", "out", mirrors, &["--compression", "gzip"]);
    let (cache_tmp, out) = (env.path("cache/tmp"), env.path("out"));
    let archive = "kubernetes-v1.34.3.tar.gz";

    // Killed while downloading: a .part stays in the cache.
    let mut child = command(&args).stderr(Stdio::null()).spawn().unwrap();
    let part = wait_for_file(&mut child, "a download in the cache", || {
        temp_file_in(&cache_tmp, is_part)
    });
    kill_9(child);
    assert!(part.exists(), "the kill left no .part, so this test proves nothing");

    // Killed while packing: a .tmp stays in --out; the first build's .part is gone by then.
    proxy.clear();
    let mut child = command(&args).stderr(Stdio::null()).spawn().unwrap();
    let tmp = wait_for_file(&mut child, "the archive temp file in --out", || {
        temp_file_in(&out, is_out_tmp)
    });
    assert!(!part.exists(), "the second build did not sweep {}", part.display());
    kill_9(child);
    assert!(
        tmp.exists(),
        "the kill left no .tmp in --out, so this test proves nothing"
    );

    // The re-run succeeds and leaves only its outputs.
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("temp file(s)"), "{}", text(&o));
    assert_eq!(names(&cache_tmp), Vec::<String>::new());
    assert_eq!(names(&out), [archive.to_string(), format!("{archive}.sha256")]);

    // Byte-identical to an uninterrupted build from a cold cache.
    let o = env.build("cache-ref", "out-ref", &["--compression", "gzip"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        env.archive("out", archive) == env.archive("out-ref", archive),
        "archives differ"
    );
}

#[test]
fn builds_sharing_a_cache_never_sweep_each_others_files_in_flight() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec);
    let proxy = DripProxy::start(env.up.mirror.addr());
    // kubeadm arrives in three portions two seconds apart: between them its .part is older
    // than the second build's start, so only the lock keeps that build's sweep off it.
    proxy.drip(Drip::exact(&kubeadm_path(&spec), 200, Duration::from_secs(2)));
    let mirrors = env.up.mirror_args_via(&proxy.url(), &env.up.registry.url());
    let first = env.build_args("cache", "out-a", mirrors.clone(), &[]);
    let mut a = command(&first)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let part = wait_for_file(&mut a, "the first build's download", || {
        temp_file_in(&env.path("cache/tmp"), is_part)
    });

    let b = run(&env.build_args("cache", "out-b", mirrors, &[]));
    assert!(b.status.success(), "second build: {}", text(&b));
    let a = a.wait_with_output().unwrap();
    assert!(
        a.status.success(),
        "first build (its {} swept?): {}",
        part.display(),
        text(&a)
    );
    assert!(env.archive("out-a", ARCHIVE) == env.archive("out-b", ARCHIVE));
    assert_eq!(names(&env.path("cache/tmp")), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// 2. Poisoned cache
// ---------------------------------------------------------------------------------------

/// Inverts the middle byte of `p`; returns the new content's sha256.
fn flip_a_bit(p: &Path) -> String {
    let mut b = std::fs::read(p).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    std::fs::write(p, &b).unwrap();
    kbundle::digest::Sha256::of(&b).hex()
}

#[test]
fn poisoned_cache_entries_are_evicted_named_and_fetched_again() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec);
    let o = env.build("cache", "out1", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let blobs = env.path("cache/blobs/sha256");
    let kubeadm = upstream::sha256_file(&upstream::local_path(env.up.mirror.root(), &kubeadm_path(&spec))).unwrap();
    // The largest blob is an image layer.
    let layer = names(&blobs)
        .into_iter()
        .max_by_key(|n| std::fs::metadata(blobs.join(n)).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    assert_ne!(layer, kubeadm);
    let poisoned: Vec<(String, String)> = [&kubeadm, &layer]
        .iter()
        .map(|n| (n.to_string(), flip_a_bit(&blobs.join(n))))
        .collect();
    env.up.mirror.reset_counters();

    let o = env.build("cache", "out2", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let err = stderr(&o);
    for (name, actual) in &poisoned {
        let file = blobs.join(name).display().to_string();
        assert!(
            err.contains(&format!(
                "warning: cache entry {file} does not match its name: expected sha256 {name}, found sha256 {actual}"
            )),
            "{}",
            text(&o)
        );
    }
    assert_eq!(
        env.up.mirror.hits(&kubeadm_path(&spec)),
        1,
        "kubeadm fetched again, once"
    );
    assert!(env.archive("out1", ARCHIVE) == env.archive("out2", ARCHIVE));
    for n in names(&blobs) {
        let (d, _) = kbundle::digest::hash_file(&blobs.join(&n)).unwrap();
        assert_eq!(d.hex(), n, "cache blob {n} does not match its name");
    }
}

// ---------------------------------------------------------------------------------------
// 3. Slow-drip upstreams
// ---------------------------------------------------------------------------------------

#[test]
fn drip_feeding_file_mirror_fails_on_the_minimum_rate_naming_url_and_bytes() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec);
    let size = std::fs::metadata(upstream::local_path(env.up.mirror.root(), &kubeadm_path(&spec)))
        .unwrap()
        .len();
    let proxy = DripProxy::start(env.up.mirror.addr());
    // 5 bytes/s: the whole file would take size/5 seconds.
    proxy.drip(Drip::exact(&kubeadm_path(&spec), 1, Duration::from_millis(200)));
    let mirrors = env.up.mirror_args_via(&proxy.url(), &env.up.registry.url());
    let limits = ["--min-rate", "100", "--min-rate-time", "1", "--retries", "0"];
    let start = Instant::now();
    let o = run(&env.build_args("cache", "out", mirrors, &limits));
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("GET https://dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm (via http://127.0.0.1:")
            && err.contains("too slow: ")
            && err.contains("in the last 1 s, below the minimum of 100 bytes/s (--min-rate, --min-rate-time)")
            && err.contains("bytes received, after 1 attempt(s))"),
        "{}",
        text(&o)
    );
    assert!(took < Duration::from_secs(size / 5), "waited for the drip: {took:?}");
    assert!(proxy.dripped_bytes() < size);
    assert_eq!(names(&env.path("cache/tmp")), Vec::<String>::new());
}

#[test]
fn drip_feeding_file_mirror_meets_the_deadline_across_retries() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec);
    let proxy = DripProxy::start(env.up.mirror.addr());
    proxy.drip(Drip::exact(&kubeadm_path(&spec), 1, Duration::from_millis(200)));
    let mirrors = env.up.mirror_args_via(&proxy.url(), &env.up.registry.url());
    // Slow windows are retried (resuming), but all of it must fit in 3 s.
    let limits = ["--timeout", "3", "--min-rate", "100", "--min-rate-time", "1"];
    let o = run(&env.build_args("cache", "out", mirrors, &limits));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("too slow") && err.contains("retrying"), "{}", text(&o));
    assert!(
        err.contains("kubeadm") && err.contains("not finished within the 3 s deadline (--timeout)"),
        "{}",
        text(&o)
    );
    let requests = env.up.mirror.requests();
    let resumed = requests
        .iter()
        .filter(|r| r.path == kubeadm_path(&spec) && r.status == 206)
        .count();
    assert!(resumed >= 1, "retries resume with Range: {requests:?}");
}

#[test]
fn drip_feeding_registry_fails_on_minimum_rate_and_on_deadline() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec);
    let proxy = DripProxy::start(env.up.registry.host().parse().unwrap());
    proxy.drip(Drip::containing("/blobs/", 64, Duration::from_millis(100)));
    let mirrors = env.up.mirror_args_via(&env.up.mirror.url(), &proxy.url());

    let slow = ["--min-rate", "10000", "--min-rate-time", "1", "--retries", "0"];
    let o = run(&env.build_args("cache-1", "out", mirrors.clone(), &slow));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(": blob sha256:")
            && err.contains(&proxy.host())
            && err.contains("below the minimum of 10000 bytes/s")
            && err.contains("bytes received, after 1 attempt(s))"),
        "{}",
        text(&o)
    );

    let deadline = ["--timeout", "2", "--min-rate", "0"];
    let o = run(&env.build_args("cache-2", "out", mirrors, &deadline));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(": blob sha256:") && err.contains("not finished within the 2 s deadline (--timeout)"),
        "{}",
        text(&o)
    );
    assert!(proxy.dripped() >= 2);
    assert_eq!(names(&env.path("cache-2/tmp")), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// 5. Non-UTF-8 manifests and lockfiles
// ---------------------------------------------------------------------------------------

/// A copy of the shipped manifest with byte 0xff in place of the first `runc`'s `u`.
fn non_utf8_manifest(dir: &Path) -> (PathBuf, usize, usize) {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kubernetes-v1.34.3.toml"))
        .unwrap();
    let at = src.find("\nrunc").unwrap() + 2;
    let line = src[..at].matches('\n').count() + 1;
    let mut bytes = src.into_bytes();
    bytes[at] = 0xff;
    let p = dir.join("bad.toml");
    std::fs::write(&p, bytes).unwrap();
    (p, at, line)
}

#[test]
fn non_utf8_manifest_and_lockfile_are_named_with_offset_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, at, line) = non_utf8_manifest(tmp.path());
    for cmd in ["list", "lock"] {
        let o = run(&strings(&[cmd, m.to_str().unwrap()]));
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let want = format!("{}:{line}:2: not UTF-8: byte 0xff at byte offset {at}", m.display());
        assert!(stderr(&o).contains(&want), "{cmd}: want {want:?}\n{}", text(&o));
    }

    let good = tmp.path().join("good.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kubernetes-v1.34.3.toml"),
        &good,
    )
    .unwrap();
    let lock = tmp.path().join("bad.lock");
    std::fs::write(&lock, b"schema = 1\nname = \"caf\xe9\"\n").unwrap();
    let o = run(&strings(&[
        "build",
        good.to_str().unwrap(),
        "--locked",
        "--lockfile",
        lock.to_str().unwrap(),
        "--out",
        tmp.path().join("out").to_str().unwrap(),
        "--cache",
        tmp.path().join("cache").to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let want = format!("{}:2:12: not UTF-8: byte 0xe9 at byte offset 22", lock.display());
    assert!(stderr(&o).contains(&want), "want {want:?}\n{}", text(&o));
}

// ---------------------------------------------------------------------------------------
// 6. Mirrors on link-local and cloud-metadata addresses
// ---------------------------------------------------------------------------------------

#[test]
fn metadata_and_link_local_mirrors_are_refused_unless_allowed() {
    // No upstream runs: each refusal comes before any network.
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("kubernetes-v1.34.3.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kubernetes-v1.34.3.toml"),
        &m,
    )
    .unwrap();
    let base = |cmd: &str| {
        let mut a = strings(&[cmd, m.to_str().unwrap()]);
        a.extend(strings(&["--cache", tmp.path().join("cache").to_str().unwrap()]));
        if cmd == "build" {
            a.extend(strings(&["--out", tmp.path().join("out").to_str().unwrap()]));
        }
        a
    };
    for (cmd, rule, host) in [
        (
            "build",
            "https://dl.k8s.io=http://169.254.169.254/latest",
            "169.254.169.254",
        ),
        (
            "build",
            "registry.k8s.io=http://[fd00:ec2::254]:5000",
            "[fd00:ec2::254]",
        ),
        (
            "lock",
            "https://github.com=http://metadata.google.internal",
            "metadata.google.internal",
        ),
        ("lock", "ghcr.io=http://100.100.100.200", "100.100.100.200"),
        ("build", "https://github.com=http://[fe80::1]", "[fe80::1]"),
    ] {
        let mut a = base(cmd);
        a.extend(strings(&["--mirror", rule]));
        let o = run(&a);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("mirror {rule}: refusing {host}: it is ")) && err.contains("--allow-private-mirror"),
            "{rule}: {}",
            text(&o)
        );
    }
    // The manifest's own [mirrors] table is held to the same rule.
    let src = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        format!("{src}\n[mirrors]\n\"https://github.com\" = \"http://metadata/gh\"\n"),
    )
    .unwrap();
    let o = run(&base("lock"));
    assert!(
        stderr(&o).contains("refusing metadata: it is the host name of a cloud metadata service"),
        "{}",
        text(&o)
    );
}

#[test]
fn allow_private_mirror_lets_a_metadata_address_mirror_through() {
    let env = Env::new(&UpstreamSpec::v1_34_3().tiny());
    // A rule no URL of this bundle matches, so nothing is ever sent to that address.
    let unused = ["--mirror", "https://unused.invalid=http://169.254.169.254"];
    let o = env.build("cache", "out", &unused);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let mut allowed = unused.to_vec();
    allowed.push("--allow-private-mirror");
    let o = env.build("cache", "out", &allowed);
    assert!(o.status.success(), "{}", text(&o));
}

// ---------------------------------------------------------------------------------------
// 7. Lockfile location
// ---------------------------------------------------------------------------------------

#[test]
fn lockfile_flag_reads_and_writes_the_lock_elsewhere_and_help_documents_it() {
    let env = Env::new(&UpstreamSpec::v1_34_3().tiny());
    std::fs::create_dir_all(env.path("locks")).unwrap();
    let lock = env.path("locks/k8s.lock");
    let beside = env.manifest.with_extension("lock");
    let mut a = strings(&[
        "lock",
        env.manifest.to_str().unwrap(),
        "--lockfile",
        lock.to_str().unwrap(),
    ]);
    a.extend(strings(&["--cache", env.path("cache").to_str().unwrap()]));
    a.extend(env.up.mirror_args());
    let o = run(&a);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains(&format!("in {}", lock.display())), "{}", text(&o));
    assert!(lock.is_file() && !beside.exists());

    let o = env.build("cache", "out", &["--locked", "--lockfile", lock.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!beside.exists(), "build --lockfile wrote beside the manifest");

    let other = env.path("locks/new.lock");
    let o = env.build("cache", "out2", &["--lockfile", other.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains(&format!("wrote lockfile {}", other.display())),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&lock).unwrap(), std::fs::read(&other).unwrap());
    assert!(!beside.exists());

    for cmd in ["build", "lock"] {
        let h = run(&strings(&[cmd, "--help"]));
        let help = String::from_utf8_lossy(&h.stdout).into_owned();
        for want in [
            "--lockfile <PATH>",
            ".lock",
            "--timeout <SECS>",
            "[default: 1800]",
            "--min-rate <BYTES_PER_SEC>",
            "[default: 1024]",
            "--min-rate-time <SECS>",
            "[default: 30]",
            "--retries <N>",
            "--allow-private-mirror",
        ] {
            assert!(help.contains(want), "{cmd} --help lacks {want:?}:\n{help}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 8. Readable I/O errors
// ---------------------------------------------------------------------------------------

#[test]
fn out_cache_and_manifest_path_errors_name_the_path_and_what_to_do() {
    // No upstream runs: every one of these fails before any network.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let m = d.join("kubernetes-v1.34.3.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kubernetes-v1.34.3.toml"),
        &m,
    )
    .unwrap();
    let file = d.join("a-file");
    std::fs::write(&file, b"keep me").unwrap();
    let build = |manifest: &Path, out: &Path, cache: &Path| {
        run(&strings(&[
            "build",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ]))
    };
    let expect = |o: Output, wants: &[String]| {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        for w in wants {
            assert!(stderr(&o).contains(w.as_str()), "want {w:?}\n{}", text(&o));
        }
    };
    let (out, cache) = (d.join("out"), d.join("cache"));
    let f = file.display();
    expect(
        build(&m, &file, &cache),
        &[format!("--out {f} is a file, but --out must name a directory")],
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    expect(
        build(&m, &out, &file),
        &[format!("cache {f} is not a directory: pass --cache DIR")],
    );
    expect(
        build(&m, &out, &file.join("sub")),
        &[
            format!("cannot create cache directory {f}/sub/"),
            "or pass --cache DIR".into(),
        ],
    );
    let missing = d.join("missing.toml");
    expect(
        build(&missing, &out, &cache),
        &[
            format!("cannot read manifest {}", missing.display()),
            "(no such file: check the path)".into(),
        ],
    );
    expect(
        build(d, &out, &cache),
        &[format!(
            "manifest {} is a directory: give the manifest file itself",
            d.display()
        )],
    );
    unwritable_dirs_as_nobody(d, &m);
}

/// As an unprivileged user (root ignores permissions): a cache or --out this user cannot
/// write is named with what to do. Skipped where that cannot be arranged.
fn unwritable_dirs_as_nobody(d: &Path, m: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", KBUNDLE])
            .args(args)
            .stdin(Stdio::null())
            .output()
    };
    let root = is_root();
    if !root || !as_nobody(&["--version"]).is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: needs root, setpriv, and a kbundle binary user 65534 can run");
        return;
    }
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(m, std::fs::Permissions::from_mode(0o644)).unwrap();
    let locked = d.join("root-only");
    let open = d.join("open");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (m, l, o) = (m.to_str().unwrap(), locked.to_str().unwrap(), open.to_str().unwrap());
    let r = as_nobody(&["build", m, "--out", &format!("{o}/out"), "--cache", l]).unwrap();
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let want = format!("cannot create cache directory {l}/blobs/sha256: Permission denied");
    assert!(
        stderr(&r).contains(&want) && stderr(&r).contains("choose a directory this user can write"),
        "{}",
        text(&r)
    );
    let r = as_nobody(&["build", m, "--out", l, "--cache", &format!("{o}/cache")]).unwrap();
    let want = format!("--out {l}: cannot write in it: Permission denied");
    assert!(stderr(&r).contains(&want), "{}", text(&r));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
