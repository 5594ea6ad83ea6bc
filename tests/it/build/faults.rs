//! Files from a misbehaving mirror (support::mirror faults): 5xx and resets retried, a
//! truncated body resumed with `Range`, a corrupt body refused naming both digests, a 404
//! named at once, a persistent 500 given up on.

use super::*;

fn kubeadm_path(spec: &UpstreamSpec) -> String {
    format!("/dl.k8s.io/release/v{}/bin/linux/amd64/kubeadm", spec.kubernetes)
}

#[test]
fn transient_500_and_reset_are_retried() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec, "kubernetes-v1.34.3.toml");
    let inst = small_installer(env.tmp.path());
    let kubeadm = kubeadm_path(&spec);
    let runc = format!(
        "/github.com/opencontainers/runc/releases/download/v{}/runc.amd64",
        spec.runc
    );
    env.up.mirror.set_fault(&kubeadm, Fault::Fail500Once);
    env.up.mirror.set_fault(&runc, Fault::ResetOnce);
    let o = env.build("cache", "out", &["--installer", inst.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(env.up.mirror.hits(&kubeadm), 2);
    assert_eq!(env.up.mirror.hits(&runc), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 500"), "{}", text(&o));
    let v = kbundle(&["verify", env.path("out/kubernetes-v1.34.3.tar.zst").to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn truncated_body_is_resumed_with_range() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec, "kubernetes-v1.34.3.toml");
    let inst = small_installer(env.tmp.path());
    let kubeadm = kubeadm_path(&spec);
    env.up.mirror.set_fault(&kubeadm, Fault::TruncateOnce);
    let o = env.build("cache", "out", &["--installer", inst.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let reqs: Vec<_> = env
        .up
        .mirror
        .requests()
        .into_iter()
        .filter(|r| r.path == kubeadm && r.method == "GET")
        .collect();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let range = reqs[1].range.clone().unwrap_or_default();
    assert!(
        range.starts_with("bytes=") && !range.starts_with("bytes=0-"),
        "second request should resume: {reqs:?}"
    );
    assert_eq!(reqs[1].status, 206);
    let v = kbundle(&["verify", env.path("out/kubernetes-v1.34.3.tar.zst").to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
}

fn no_leftovers(env: &Env, cache: &str, out: &str) {
    assert!(
        dir_files(&env.path(out)).is_empty(),
        "output dir not empty: {:?}",
        dir_files(&env.path(out))
    );
    assert!(
        dir_files(&env.path(&format!("{cache}/tmp"))).is_empty(),
        "temp files left in the cache"
    );
}

#[test]
fn corrupt_body_fails_naming_url_and_digests_and_leaves_nothing() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec, "kubernetes-v1.34.3.toml");
    let inst = small_installer(env.tmp.path());
    let kubeadm = kubeadm_path(&spec);
    env.up.mirror.set_fault(&kubeadm, Fault::Corrupt);
    std::fs::create_dir_all(env.path("out")).unwrap();
    let o = env.build("cache", "out", &["--installer", inst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let expected = std::fs::read_to_string(
        env.up
            .mirror
            .root()
            .join(kubeadm.trim_start_matches('/').to_string() + ".sha256"),
    )
    .unwrap();
    assert!(
        err.contains("https://dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm"),
        "{err}"
    );
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains(expected.trim()), "expected digest not named: {err}");
    assert!(err.contains("kubeadm"), "{err}");
    no_leftovers(&env, "cache", "out");
    // The corrupt bytes never entered the cache.
    let blobs = dir_files(&env.path("cache/blobs/sha256"));
    assert!(!blobs.contains(&expected.trim().to_string()));
    for b in &blobs {
        let (d, _) = kbundle::digest::hash_file(&env.path("cache/blobs/sha256").join(b)).unwrap();
        assert_eq!(&d.hex(), b, "cache blob {b} does not match its name");
    }
}

#[test]
fn not_found_fails_at_once_naming_the_url() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec, "kubernetes-v1.34.3.toml");
    let inst = small_installer(env.tmp.path());
    let path = format!(
        "/github.com/containerd/containerd/releases/download/v{0}/containerd-{0}-linux-amd64.tar.gz",
        spec.containerd
    );
    env.up.mirror.set_fault(&path, Fault::NotFound);
    let o = env.build("cache", "out", &["--installer", inst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("containerd-2.1.5-linux-amd64.tar.gz") && err.contains("404"),
        "{err}"
    );
    assert_eq!(env.up.mirror.hits(&path), 1, "a 404 is not retried");
    no_leftovers(&env, "cache", "out");
}

#[test]
fn persistent_500_gives_up_with_a_clear_error() {
    let spec = UpstreamSpec::v1_34_3().tiny();
    let env = Env::new(&spec, "kubernetes-v1.34.3.toml");
    let path = format!("{}.sha256", kubeadm_path(&spec));
    env.up.mirror.set_fault(&path, Fault::Fail500Always);
    let o = env.build("cache", "out", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kubeadm.sha256") && err.contains("HTTP 500") && err.contains("5 attempt"),
        "{err}"
    );
}
