//! Signed bundles: `kbundle key generate`, `build --sign`, `verify --trusted-key`, and the
//! stock `minisign` tool reading the same keys and signatures.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::harness::small_installer;
use support::registry::output_text as text;
use support::upstream::{self, UpstreamSpec};

pub(crate) const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");
pub(crate) const NAME: &str = "kubernetes-v1.34.3";
pub(crate) const ARCHIVE: &str = "kubernetes-v1.34.3.tar.zst";

pub(crate) fn run(prog: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(prog);
    c.args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("KBUNDLE_SIGNING_KEY")
        .env_remove("KBUNDLE_SIGNING_PASSWORD")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run")
}

pub(crate) fn kbundle(args: &[&str]) -> Output {
    run(KBUNDLE, args, &[])
}

pub(crate) fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

pub(crate) fn fails_with(o: Output, wants: &[&str]) {
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for w in wants {
        assert!(text(&o).contains(w), "wanted {w:?} in\n{}", text(&o));
    }
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A files-only build against the loopback mirror (no registry needed).
pub(crate) struct Env {
    tmp: tempfile::TempDir,
    manifest: PathBuf,
    args: Vec<String>,
    _mirror: support::mirror::Mirror,
}

impl Env {
    pub(crate) fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let manifest = tmp.path().join("kubernetes-v1.34.3.toml");
        upstream::pgp::copy_manifest("kubernetes-v1.34.3.toml", &manifest).unwrap();
        let mirror = support::mirror::Mirror::start(upstream::shared_tree(&UpstreamSpec::v1_34_3().tiny()));
        let inst = small_installer(tmp.path());
        let mut args: Vec<String> = vec!["--cache".into(), s(&tmp.path().join("cache")).into()];
        args.extend(["--installer".into(), s(&inst).into(), "--skip-images".into()]);
        args.extend(upstream::mirror_args(&mirror.url()));
        Env {
            tmp,
            manifest,
            args,
            _mirror: mirror,
        }
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub(crate) fn build(&self, out: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.path(out);
        let mut a = vec!["build", s(&self.manifest), "--out", s(&out)];
        a.extend(self.args.iter().map(String::as_str));
        a.extend(extra);
        run(KBUNDLE, &a, env)
    }

    /// `key generate --out DIR` with extra args; returns the key id from kbundle.pub.
    pub(crate) fn key(&self, dir: &str, extra: &[&str]) -> String {
        let d = self.path(dir);
        let mut a = vec!["key", "generate", "--out", s(&d)];
        a.extend(extra);
        ok(kbundle(&a));
        let mode = std::fs::metadata(d.join("kbundle.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        key_id(&d.join("kbundle.pub"))
    }
}

/// The key id minisign writes in a public key's comment line.
pub(crate) fn key_id(pubkey: &Path) -> String {
    let t = std::fs::read_to_string(pubkey).unwrap();
    let first = t.lines().next().unwrap();
    let id = first.rsplit(' ').next().unwrap().to_string();
    assert_eq!(id.len(), 16, "{first}");
    id
}

fn flip(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    b[at] ^= 1;
    std::fs::write(p, b).unwrap();
}

const COMMENT: &str = "kbundle name=kubernetes-v1.34.3 kubernetes=v1.34.3 serial=42 built=2023-11-14T22:13:20Z";

#[test]
fn signed_bundle_verifies_with_kbundle_and_stock_minisign_and_a_flipped_byte_fails_both() {
    let env = Env::new();
    let id = env.key("keys", &["--unencrypted"]);
    let key = env.path("keys/kbundle.key");
    let pubkey = env.path("keys/kbundle.pub");
    ok(env.build("out", &["--sign", s(&key), "--serial", "42"], &[]));
    let archive = env.path("out").join(ARCHIVE);
    assert!(env.path(&format!("out/{ARCHIVE}.minisig")).is_file());

    let v = ok(kbundle(&["verify", "--trusted-key", s(&pubkey), s(&archive)]));
    assert!(
        text(&v).contains(&format!("good signature by trusted key id {id} ({COMMENT})")),
        "{}",
        text(&v)
    );
    let m = ok(run("minisign", &["-Vm", s(&archive), "-p", s(&pubkey)], &[]));
    assert!(text(&m).contains(COMMENT), "{}", text(&m));
    // Without trusted keys: who signed, no verdict on trust.
    let v = ok(kbundle(&["verify", s(&archive)]));
    assert!(text(&v).contains(&format!("signed by key id {id}")), "{}", text(&v));

    ok(kbundle(&["unpack", s(&archive), s(&env.path("un"))]));
    let dir = env.path("un").join(NAME);
    assert!(dir.join("bundle.json.minisig").is_file());
    ok(kbundle(&["verify", "--trusted-key", s(&pubkey), s(&dir)]));
    let bj = dir.join("bundle.json");
    let m = ok(run("minisign", &["-Vm", s(&bj), "-p", s(&pubkey)], &[]));
    assert!(text(&m).contains(COMMENT), "{}", text(&m));

    // One byte of bundle.json (still valid JSON: kbundle_version's last digit).
    let at = String::from_utf8(std::fs::read(&bj).unwrap())
        .unwrap()
        .find("\"kbundle_version\": \"")
        .unwrap()
        + 24;
    flip(&bj, at);
    fails_with(
        kbundle(&["verify", "--trusted-key", s(&pubkey), s(&dir)]),
        &["signature: bundle.json: the signature by key id", "does not match"],
    );
    assert!(!run("minisign", &["-Vm", s(&bj), "-p", s(&pubkey)], &[])
        .status
        .success());

    // One byte of the archive: refused before its content is read.
    let len = std::fs::metadata(&archive).unwrap().len() as usize;
    flip(&archive, len / 2);
    fails_with(
        kbundle(&["verify", "--trusted-key", s(&pubkey), s(&archive)]),
        &["signature: ", "does not match"],
    );
    assert!(!run("minisign", &["-Vm", s(&archive), "-p", s(&pubkey)], &[])
        .status
        .success());
}

#[test]
fn encrypted_key_signs_from_env_and_untrusted_or_unsigned_bundles_are_refused() {
    let env = Env::new();
    std::fs::write(env.path("pw"), "correct horse\n").unwrap();
    let id_a = env.key("a", &["--password-file", s(&env.path("pw"))]);
    let id_b = env.key("b", &["--unencrypted"]);
    let key_a = env.path("a/kbundle.key");
    // Refuses to overwrite.
    fails_with(
        kbundle(&["key", "generate", "--unencrypted", "--out", s(&env.path("a"))]),
        &["already exists"],
    );
    // No password and no terminal: a clear refusal, nothing built.
    let o = env.build("out", &["--sign", s(&key_a)], &[]);
    fails_with(o, &["password-protected", "KBUNDLE_SIGNING_PASSWORD"]);
    let envs = [
        ("KBUNDLE_SIGNING_KEY", s(&key_a)),
        ("KBUNDLE_SIGNING_PASSWORD", "correct horse"),
    ];
    ok(env.build("out", &[], &envs));
    let archive = env.path("out").join(ARCHIVE);
    let m = ok(run(
        "minisign",
        &["-Vm", s(&archive), "-p", s(&env.path("a/kbundle.pub"))],
        &[],
    ));
    assert!(
        text(&m).contains("serial=1700000000 built=2023-11-14T22:13:20Z"),
        "{}",
        text(&m)
    );

    // Signed by A, only B trusted: both key ids named.
    let b_pub = env.path("b/kbundle.pub");
    let o = kbundle(&["verify", "--trusted-key", s(&b_pub), s(&archive)]);
    fails_with(
        o,
        &[&format!(
            "signed by key id {id_a}, which is not trusted (trusted keys: {id_b})"
        )],
    );

    // An unsigned build removes the stale signature; with --trusted-key it is refused.
    ok(env.build("out", &[], &[]));
    assert!(!env.path(&format!("out/{ARCHIVE}.minisig")).exists());
    let o = kbundle(&["verify", "--trusted-key", s(&b_pub), s(&archive)]);
    fails_with(o, &["is not signed", &format!("trusted keys: {id_b}")]);
    ok(kbundle(&["unpack", s(&archive), s(&env.path("un"))]));
    let o = kbundle(&["verify", "--trusted-key", s(&b_pub), s(&env.path("un").join(NAME))]);
    fails_with(o, &["bundle.json is not signed (no bundle.json.minisig)"]);
    let v = ok(kbundle(&["verify", s(&archive)]));
    assert!(text(&v).contains("not signed"), "{}", text(&v));
}
