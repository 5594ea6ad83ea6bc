//! Issue 10: image blobs go through the same download engine as files, so they resume,
//! retry and verify the same way. Here the registry sits behind the fault-injecting proxy
//! (`support::drip`): a reset and a truncated body are resumed with `Range`, a corrupt blob
//! is refused naming both digests and never cached, 5xx answers are retried and then named,
//! and a drip is held to the minimum rate and the deadline.

use crate::support;

use std::process::Output;
use std::time::Duration;
use support::drip::{Drip, DripProxy, Fault, FaultRule, Relayed};
use support::harness::{names, run_kbundle, stderr, strings, BuildEnv};
use support::images::image_set;
use support::registry::output_text as text;
use support::upstream::UpstreamSpec;

const ARCHIVE: &str = "kubernetes-v1.34.3.tar.zst";

/// A build whose images come through a [`DripProxy`] in front of the registry (files come
/// straight from the file mirror).
struct Scene {
    env: BuildEnv,
    proxy: DripProxy,
}

impl Scene {
    fn new() -> Scene {
        let env = BuildEnv::new(&UpstreamSpec::v1_34_3().tiny());
        let proxy = DripProxy::start(env.up.registry.host().parse().unwrap());
        Scene { env, proxy }
    }

    /// Builds with `cache` into `out-<cache>`.
    fn build(&self, cache: &str, extra: &[&str]) -> Output {
        let mirrors = self
            .env
            .up
            .mirror_args_via(&self.env.up.mirror.url(), &self.proxy.url());
        std::fs::create_dir_all(self.env.path(&format!("out-{cache}"))).unwrap();
        run_kbundle(&self.env.build_args(cache, &format!("out-{cache}"), mirrors, extra))
    }

    /// Breaks the `GET`s of blob `digest`.
    fn break_blob(&self, digest: &str, fault: Fault, times: Option<u32>) {
        let rule = FaultRule::containing(&format!("/blobs/{digest}"), fault);
        self.proxy.fault(match times {
            Some(n) => rule.times(n),
            None => rule,
        });
    }

    /// The `GET`s of blob `digest` the proxy relayed.
    fn gets(&self, digest: &str) -> Vec<Relayed> {
        self.proxy.gets_containing(&format!("/blobs/{digest}"))
    }

    /// Is `digest` in the cache `cache`, with content that hashes to it?
    fn cached(&self, cache: &str, digest: &str) -> bool {
        let p = self.env.path(cache).join("blobs/sha256").join(hex(digest));
        kbundle::digest::hash_file(&p).is_ok_and(|(d, _)| d.oci() == digest)
    }

    /// Nothing of a failed build with `cache` is left: no output, no temp file, none of
    /// the blobs `digests`.
    fn nothing_left(&self, cache: &str, digests: &[&str]) {
        let out = self.env.path(&format!("out-{cache}"));
        assert_eq!(names(&out), Vec::<String>::new(), "output left behind");
        let tmp = self.env.path(cache).join("tmp");
        assert_eq!(names(&tmp), Vec::<String>::new(), "temp files left behind");
        let blobs = names(&self.env.path(cache).join("blobs/sha256"));
        for d in digests {
            assert!(!blobs.contains(&hex(d).to_string()), "{d} entered the cache");
        }
    }
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Where a request resumed: `N` of `Range: bytes=N-`, 0 without a range.
fn resumed_at(r: &Relayed) -> u64 {
    let range = r.range.as_deref().and_then(|v| v.strip_prefix("bytes="));
    range
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn image_blobs_cut_mid_body_are_resumed_with_range_and_verified() {
    let scene = Scene::new();
    let set = image_set();
    let layer = set.base_layer_amd64.clone();
    let config = set.config_digest(&set.base_amd64);
    scene.break_blob(&layer, Fault::ResetMidBody, Some(1));
    scene.break_blob(&config, Fault::Truncate, Some(1));

    let o = scene.build("cache", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stderr(&o).contains("body interrupted after"), "{}", text(&o));
    for (digest, fault) in [(&layer, Fault::ResetMidBody), (&config, Fault::Truncate)] {
        let len = set.blob(digest).len() as u64;
        let gets = scene.gets(digest);
        assert_eq!(gets.len(), 2, "{fault:?}: {gets:?}");
        assert_eq!((gets[0].range.as_deref(), gets[0].fault), (None, Some(fault)));
        let at = resumed_at(&gets[1]);
        assert!(
            at > 0 && at <= len / 2 && gets[1].status == 206 && gets[1].fault.is_none(),
            "{fault:?}: the retry did not resume where the cut body stopped: {gets:?}"
        );
        assert!(scene.cached("cache", digest), "{digest} is not cached under its digest");
    }
    let archive = scene.env.path("out-cache").join(ARCHIVE);
    let v = run_kbundle(&strings(&["verify", archive.to_str().unwrap()]));
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn a_corrupt_image_blob_is_refused_naming_both_digests_and_never_cached() {
    let scene = Scene::new();
    let set = image_set();
    let layer = set.base_layer_amd64.clone();
    let mut bad = set.blob(&layer);
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let actual = kbundle::digest::Sha256::of(&bad).hex();
    scene.break_blob(&layer, Fault::Corrupt, None);

    let o = scene.build("cache", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let want = format!(
        "blob {layer} ({} bytes) digest mismatch: expected {}, got {actual}",
        bad.len(),
        hex(&layer)
    );
    let err = stderr(&o);
    assert!(err.contains(&want), "want {want:?}\n{}", text(&o));
    assert!(err.contains("downloading once more from scratch"), "{}", text(&o));
    let gets = scene.gets(&layer);
    assert_eq!(gets.len(), 2, "one fresh retry after the mismatch: {gets:?}");
    assert!(gets.iter().all(|g| g.range.is_none()), "{gets:?}");
    scene.nothing_left("cache", &[&layer, &format!("sha256:{actual}")]);
}

#[test]
fn image_blob_5xx_is_retried_then_named() {
    let scene = Scene::new();
    let set = image_set();
    let layer = set.base_layer_amd64.clone();
    scene.break_blob(&layer, Fault::Status(500), Some(2));
    let o = scene.build("cache-1", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let statuses: Vec<u16> = scene.gets(&layer).iter().map(|g| g.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert!(stderr(&o).contains("HTTP 500; retrying in"), "{}", text(&o));
    assert!(scene.cached("cache-1", &layer));

    // A blob that always fails is named with the registry and the attempts made.
    let config = set.config_digest(&set.base_amd64);
    scene.break_blob(&config, Fault::Status(503), None);
    let o = scene.build("cache-2", &["--retries", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("blob {config} from {}/", scene.proxy.host()))
            && err.contains("HTTP 503 (after 3 attempt(s))"),
        "{}",
        text(&o)
    );
    let failed = scene.gets(&config).iter().filter(|g| g.status == 503).count();
    assert_eq!(failed, 3);
    scene.nothing_left("cache-2", &[&config]);
}

#[test]
fn a_drip_fed_image_blob_resumes_across_slow_windows_until_the_deadline() {
    let scene = Scene::new();
    let layer = image_set().base_layer_amd64.clone();
    // 40 KB/s against a minimum of 100 KB/s: every window is too slow.
    let drip = Drip::containing(&format!("/blobs/{layer}"), 4096, Duration::from_millis(100));
    scene.proxy.drip(drip);
    let limits = ["--min-rate", "100000", "--min-rate-time", "1", "--timeout", "4"];

    let o = scene.build("cache", &limits);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("blob {layer} from "))
            && err.contains("below the minimum of 100000 bytes/s")
            && err.contains("retrying")
            && err.contains("not finished within the 4 s deadline (--timeout)"),
        "{}",
        text(&o)
    );
    let gets = scene.gets(&layer);
    assert!(gets.len() >= 2, "slow windows are retried: {gets:?}");
    assert!(
        gets[1..].iter().all(|g| resumed_at(g) > 0 && g.status == 206),
        "each retry resumes: {gets:?}"
    );
    scene.nothing_left("cache", &[&layer]);
}
