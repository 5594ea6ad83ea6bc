//! Cosign image signatures at build time (issue 13, item 3): images covered by the
//! manifest's `[[image-signatures]]` must carry a signature by the policy's key in the real
//! loopback registry (made in cosign's exact format by `support::cosign`); their signature
//! manifests end up in the bundle's OCI layout, where skopeo reads them and containerd's
//! import ignores them.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::cosign::{push_signature, CosignKey, SIMPLESIGNING};
use support::cosign_keyless::{push_keyless_signature, KeylessSigner};
use support::harness::{run_kbundle, strings, BuildEnv};
use support::upstream::UpstreamSpec;

const PAUSE: &str = "registry.k8s.io/pause:3.10.1";
const ETCD: &str = "registry.k8s.io/etcd:3.6.5-0";

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A v1.34.3 build env whose manifest requires `key` on `patterns` (key copied beside it).
fn env(key: &CosignKey, patterns: &[&str]) -> BuildEnv {
    env_of(&UpstreamSpec::v1_34_3().tiny(), key, patterns)
}

fn env_of(spec: &UpstreamSpec, key: &CosignKey, patterns: &[&str]) -> BuildEnv {
    let env = BuildEnv::new(spec);
    let keys = env.manifest.parent().unwrap().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(&key.public, keys.join("cosign.pub")).unwrap();
    let list = patterns.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
    let mut src = std::fs::read_to_string(&env.manifest).unwrap();
    src.push_str(&format!(
        "\n[[image-signatures]]\nimages = [{list}]\nkey = \"keys/cosign.pub\"\n"
    ));
    std::fs::write(&env.manifest, src).unwrap();
    env
}

fn digest_of(env: &BuildEnv, upstream: &str) -> String {
    let hit = env.up.images.iter().find(|(r, _)| r == upstream);
    hit.unwrap_or_else(|| panic!("{upstream} not pushed: {:?}", env.up.images))
        .1
        .clone()
}

/// Signs `upstream` in the registry with `key`, its payload naming `signed` (or its own digest).
fn sign(env: &BuildEnv, upstream: &str, key: &CosignKey, signed: Option<&str>) -> String {
    let d = digest_of(env, upstream);
    push_signature(&env.up.registry, upstream, &d, signed.unwrap_or(&d), key)
}

fn unpack(env: &BuildEnv) -> PathBuf {
    let archive = env.path("out/kubernetes-v1.34.3.tar.zst");
    let un = env.path("un");
    let u = run_kbundle(&strings(&["unpack", archive.to_str().unwrap(), un.to_str().unwrap()]));
    assert!(u.status.success(), "{}", text(&u));
    un.join("kubernetes-v1.34.3")
}

fn cluster_config(env: &BuildEnv) -> PathBuf {
    let o = run_kbundle(&strings(&["example-config"]));
    let p = env.path("cluster.toml");
    std::fs::write(&p, &o.stdout).unwrap();
    p
}

fn skopeo_raw(layout: &Path, reference: &str) -> Output {
    Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}:{reference}", layout.display())])
        .output()
        .unwrap()
}

#[test]
fn signed_images_pass_and_their_signatures_travel_in_the_layout() {
    let key = CosignKey::generate();
    let env = env_of(
        &UpstreamSpec::v1_34_3(),
        &key,
        &["registry.k8s.io/pause:*", "registry.k8s.io/etcd:*"],
    );
    let tags = [sign(&env, PAUSE, &key, None), sign(&env, ETCD, &key, None)];
    let o = env.build("cache", "out", &[]);
    assert!(o.status.success(), "{}", text(&o));
    // Only the two covered images are checked; the others are said not to be covered.
    let others = env.up.images.len() - 2;
    let summary = format!("2 images signature-checked, {others} not covered by an image-signatures policy");
    assert!(text(&o).contains(&summary), "{}", text(&o));
    let dir = unpack(&env);
    let layout = dir.join("images");
    for (upstream, tag) in [PAUSE, ETCD].iter().zip(&tags) {
        let name = upstream.rsplit_once(':').unwrap().0;
        let o = skopeo_raw(&layout, &format!("{name}:{tag}"));
        assert!(o.status.success(), "skopeo inspect {name}:{tag}: {}", text(&o));
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], SIMPLESIGNING, "{m}");
    }
    // Every signature blob is a bundle entry: verify checks them all.
    let v = run_kbundle(&strings(&["verify", dir.to_str().unwrap()]));
    assert!(v.status.success(), "{}", text(&v));
    // A node's prepare phase imports the images with the real containerd, not the
    // signature manifests (whose simple-signing layers it could not unpack).
    let f = crate::install::Fixture {
        archive: env.path("out/kubernetes-v1.34.3.tar.zst"),
        config: cluster_config(&env),
        images: env.up.images.clone(),
        tmp: tempfile::tempdir().unwrap(),
    };
    let root = crate::install::node_root(&f, "worker1");
    let i = crate::install::install(&f, &root, &["--node", "worker1", "--phase", "prepare"]);
    assert!(i.status.success(), "{}", text(&i));
    let listed = support::node::images_in_root(&root);
    assert!(listed.iter().any(|(n, _)| n == PAUSE), "{listed:?}");
    assert!(!listed.iter().any(|(n, _)| n.ends_with(".sig")), "{listed:?}");
    // The lock records the policy with the key's fingerprint.
    let lock = std::fs::read_to_string(env.manifest.with_extension("lock")).unwrap();
    assert!(
        lock.contains("[[image-signature]]") && lock.contains("key_sha256"),
        "{lock}"
    );
}

#[test]
fn a_locked_build_refuses_a_key_that_changed_since_the_lock() {
    let key = CosignKey::generate();
    let env = env(&key, &["registry.k8s.io/pause:*"]);
    sign(&env, PAUSE, &key, None);
    let o = env.build("cache", "out", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = env.build("cache", "out1", &["--locked"]);
    assert!(
        o.status.success(),
        "the same policy and key pass --locked: {}",
        text(&o)
    );
    let other = CosignKey::generate();
    let pubkey = env.manifest.parent().unwrap().join("keys/cosign.pub");
    std::fs::copy(&other.public, pubkey).unwrap();
    let o = env.build("cache", "out2", &["--locked"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("image-signatures"), "{}", text(&o));
}

/// Builds with `pause` covered by `key`, after `prepare` pushed (or not) its signature;
/// the build must fail naming the image, its digest, the key file and `why`.
fn refused(prepare: impl FnOnce(&BuildEnv, &CosignKey), why: &str) {
    let key = CosignKey::generate();
    let env = env(&key, &["registry.k8s.io/pause:*"]);
    prepare(&env, &key);
    let o = env.build("cache", "out", &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    let digest = digest_of(&env, PAUSE);
    for want in [PAUSE, digest.as_str(), "keys/cosign.pub", why] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert!(
        !env.path("out/kubernetes-v1.34.3.tar.zst").exists(),
        "no bundle on failure"
    );
}

#[test]
fn an_unsigned_covered_image_fails_the_build() {
    refused(|env, key| drop(sign(env, ETCD, key, None)), "not signed");
}

#[test]
fn a_signature_by_another_key_fails_the_build() {
    refused(
        |env, _| drop(sign(env, PAUSE, &CosignKey::generate(), None)),
        "does not verify with the key",
    );
}

#[test]
fn a_payload_naming_another_digest_fails_the_build() {
    refused(
        |env, key| {
            let other = digest_of(env, ETCD);
            assert_ne!(other, digest_of(env, PAUSE));
            drop(sign(env, PAUSE, key, Some(&other)))
        },
        "payload signs",
    );
}

const IDENTITY: &str = "release@example.com";
const ISSUER: &str = "https://issuer.example";

/// A v1.34.3 build env whose manifest requires a keyless signature on `pause` by
/// `identity`/`issuer`, against `signer`'s trusted root (copied beside the manifest).
fn keyless_env(signer: &KeylessSigner, identity: &str, issuer: &str) -> BuildEnv {
    let env = BuildEnv::new(&UpstreamSpec::v1_34_3().tiny());
    let dir = env.manifest.parent().unwrap().join("sigstore");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&signer.trusted_root, dir.join("trusted_root.json")).unwrap();
    let mut src = std::fs::read_to_string(&env.manifest).unwrap();
    src.push_str(&format!(
        "\n[[image-signatures]]\nimages = [\"registry.k8s.io/pause:*\"]\ntrusted-root = \"sigstore/trusted_root.json\"\nidentity = {identity:?}\nissuer = {issuer:?}\n"
    ));
    std::fs::write(&env.manifest, src).unwrap();
    env
}

#[test]
fn a_keyless_signature_by_the_expected_identity_passes_and_is_locked() {
    let signer = KeylessSigner::generate(IDENTITY, ISSUER);
    let env = keyless_env(&signer, IDENTITY, ISSUER);
    push_keyless_signature(&env.up.registry, PAUSE, &digest_of(&env, PAUSE), &signer);
    let o = env.build("cache", "out", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 images signature-checked"), "{}", text(&o));
    let lock = std::fs::read_to_string(env.manifest.with_extension("lock")).unwrap();
    assert!(lock.contains(IDENTITY) && lock.contains(ISSUER), "{lock}");
    let o = env.build("cache", "out1", &["--locked"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_keyless_signature_by_another_identity_or_issuer_fails_the_build() {
    let signer = KeylessSigner::generate("intruder@example.com", ISSUER);
    let env = keyless_env(&signer, IDENTITY, ISSUER);
    push_keyless_signature(&env.up.registry, PAUSE, &digest_of(&env, PAUSE), &signer);
    let o = env.build("cache", "out", &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    for want in [PAUSE, &digest_of(&env, PAUSE), IDENTITY, "intruder@example.com"] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    let other = KeylessSigner::generate(IDENTITY, "https://other.example");
    let env = keyless_env(&other, IDENTITY, ISSUER);
    push_keyless_signature(&env.up.registry, PAUSE, &digest_of(&env, PAUSE), &other);
    let t = text(&env.build("cache", "out", &[]));
    assert!(t.contains("https://other.example") && t.contains(ISSUER), "{t}");
}
