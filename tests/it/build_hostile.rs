//! Issue 9, build side: hostile upstreams, crashes and bad inputs against the real binary.
//! Killed builds leave nothing behind; a poisoned cache heals; slow-drip upstreams meet a
//! deadline and a minimum rate; metadata-address mirrors are refused; lockfile location;
//! non-UTF-8 inputs; readable I/O errors.

use crate::support;

mod inputs;

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
