//! Trust on the node (issue 13 item 2): with a trusted key, install, upgrade stage, verify,
//! unpack and kickstart require a bundle signed by it and refuse anything else before any
//! write; a lower serial from the trusted key is refused without --allow-downgrade.

use crate::signing::{kbundle, key_id, ok, run, s, Env, ARCHIVE, NAME};
use crate::support::registry::output_text as text;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Every path under `root` (relative), sorted: the node before and after a refusal.
fn listing(root: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

fn refused(o: &Output, wants: &[&str]) {
    assert!(!o.status.success(), "{}", text(o));
    for w in wants {
        assert!(text(o).contains(w), "wanted {w:?} in\n{}", text(o));
    }
}

/// Keys A and B, a node root trusting A (through `kbundle key trust`), a cluster config.
struct Site {
    env: Env,
    id_a: String,
    id_b: String,
    root: PathBuf,
    config: PathBuf,
}

fn site() -> Site {
    let env = Env::new();
    let id_a = env.key("a", &["--unencrypted"]);
    let id_b = env.key("b", &["--unencrypted"]);
    let root = env.path("node");
    std::fs::create_dir_all(&root).unwrap();
    let o = ok(kbundle(&[
        "key",
        "trust",
        "--root",
        s(&root),
        s(&env.path("a/kbundle.pub")),
    ]));
    assert!(text(&o).contains(&format!("key id {id_a} now trusted")), "{}", text(&o));
    let config = env.path("cluster.toml");
    std::fs::write(&config, ok(kbundle(&["example-config"])).stdout).unwrap();
    Site {
        env,
        id_a,
        id_b,
        root,
        config,
    }
}

impl Site {
    fn key(&self, who: &str) -> PathBuf {
        self.env.path(&format!("{who}/kbundle.key"))
    }

    /// Builds into `out/`, signed by `who` (None: unsigned) with `serial`.
    fn build(&self, out: &str, who: Option<&str>, serial: &str) -> PathBuf {
        let key = who.map(|w| self.key(w));
        let mut extra = vec![];
        if let Some(k) = &key {
            extra.extend(["--sign", s(k), "--serial", serial]);
        }
        ok(self.env.build(out, &extra, &[]));
        self.env.path(out).join(ARCHIVE)
    }

    /// `install --phase prepare --dry-run` of `bundle` on the node root.
    fn install(&self, bundle: &Path, extra: &[&str]) -> Output {
        let mut a = vec!["install", "--bundle", s(bundle), "--config", s(&self.config)];
        a.extend(["--root", s(&self.root), "--role", "worker", "--phase", "prepare"]);
        a.extend(extra);
        kbundle(&a)
    }
}

#[test]
fn install_verify_unpack_and_stage_refuse_another_key_or_no_signature_before_any_write() {
    let site = site();
    let (a, b) = (&site.id_a, &site.id_b);
    let by_b = site.build("b-out", Some("b"), "42");
    let unsigned = site.build("u-out", None, "42");
    let before = listing(&site.root);
    let o = site.install(&by_b, &[]);
    refused(&o, &[&format!("signed by key id {b}, but the trusted keys are {a}")]);
    let o = site.install(&unsigned, &[]);
    refused(&o, &[&format!("signed by unsigned, but the trusted keys are {a}")]);
    let o = kbundle(&[
        "upgrade",
        "stage",
        "--bundle",
        s(&by_b),
        "--root",
        s(&site.root),
        "--node",
        "w1",
    ]);
    refused(&o, &[&format!("signed by key id {b}, but the trusted keys are {a}")]);
    // verify and unpack read the node's store too.
    let o = kbundle(&["verify", "--root", s(&site.root), s(&by_b)]);
    refused(
        &o,
        &[&format!(
            "signed by key id {b}, which is not trusted (trusted keys: {a})"
        )],
    );
    let un = site.env.path("un");
    let o = kbundle(&["unpack", "--root", s(&site.root), s(&by_b), s(&un)]);
    refused(&o, &[&format!("signed by key id {b}"), "nothing was unpacked"]);
    assert!(!un.exists(), "unpack wrote {}", un.display());
    assert_eq!(listing(&site.root), before, "the node changed");

    // --allow-unsigned: warned, and the bundle gets past the trust check.
    let o = site.install(&unsigned, &["--allow-unsigned", "--dry-run"]);
    assert!(text(&o).contains("WARNING: --allow-unsigned"), "{}", text(&o));
    assert!(text(&o).contains("accepted by --allow-unsigned"), "{}", text(&o));

    // cluster.toml [trust] keys count on a node with an empty store.
    let bare = site.env.path("bare");
    std::fs::create_dir_all(&bare).unwrap();
    let b64 = std::fs::read_to_string(site.env.path("a/kbundle.pub")).unwrap();
    let line = b64.lines().nth(1).unwrap();
    let cfg = std::fs::read_to_string(&site.config).unwrap() + &format!("\n[trust]\nkeys = [\"{line}\"]\n");
    std::fs::write(&site.config, cfg).unwrap();
    let mut a2 = vec![
        "install",
        "--bundle",
        s(&by_b),
        "--config",
        s(&site.config),
        "--root",
        s(&bare),
    ];
    a2.extend(["--role", "worker", "--phase", "prepare"]);
    refused(
        &kbundle(&a2),
        &[&format!("signed by key id {b}, but the trusted keys are {a}")],
    );
    assert!(listing(&bare).is_empty(), "{:?}", listing(&bare));
}

#[test]
fn an_older_serial_from_the_trusted_key_is_refused_unless_allow_downgrade() {
    let site = site();
    let a = &site.id_a;
    let archive = site.build("out", Some("a"), "42");
    // The store's file is a stock minisign public key.
    let stored = site.root.join(format!("etc/kbundle/trusted-keys/{a}.pub"));
    assert_eq!(key_id(&stored), *a);
    ok(run("minisign", &["-Vm", s(&archive), "-p", s(&stored)], &[]));

    let serials = site.root.join("var/lib/kbundle/trust/serials.json");
    std::fs::create_dir_all(serials.parent().unwrap()).unwrap();
    std::fs::write(&serials, format!("{{\"{a}\": 50}}\n")).unwrap();
    let before = listing(&site.root);
    let o = site.install(&archive, &[]);
    refused(
        &o,
        &[
            &format!("serial 42 signed by key id {a} is lower than serial 50"),
            "--allow-downgrade",
        ],
    );
    assert_eq!(listing(&site.root), before, "the node changed");
    let passed = format!("signed by trusted key id {a} (serial 42)");
    let o = site.install(&archive, &["--allow-downgrade", "--dry-run"]);
    assert!(text(&o).contains("WARNING: --allow-downgrade"), "{}", text(&o));
    assert!(text(&o).contains(&passed), "{}", text(&o));
    // The same serial again (a re-run) is fine without any flag.
    std::fs::write(&serials, format!("{{\"{a}\": 42}}\n")).unwrap();
    let o = site.install(&archive, &["--dry-run"]);
    assert!(text(&o).contains(&passed), "{}", text(&o));
    assert!(!text(&o).contains("WARNING"), "{}", text(&o));
    let l = ok(kbundle(&["key", "list", "--json", "--root", s(&site.root)]));
    let v: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    assert_eq!(v[0]["id"], a.as_str());
    assert_eq!(v[0]["serial"], 42);
}

/// Replaces one byte of `rel` in the unpacked bundle and every checksum naming it.
fn tamper(dir: &Path, rel: &str) {
    let sha = |b: &[u8]| kbundle::digest::Sha256::of(b).hex();
    let f = dir.join(rel);
    let mut bytes = std::fs::read(&f).unwrap();
    let old = sha(&bytes);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&f, &bytes).unwrap();
    let new = sha(&bytes);
    let bj = dir.join("bundle.json");
    let old_bj = sha(&std::fs::read(&bj).unwrap());
    let json = std::fs::read_to_string(&bj).unwrap();
    assert!(json.contains(&old), "{rel} not in bundle.json");
    std::fs::write(&bj, json.replace(&old, &new)).unwrap();
    let new_bj = sha(&std::fs::read(&bj).unwrap());
    let sums = dir.join("SHA256SUMS");
    let t = std::fs::read_to_string(&sums)
        .unwrap()
        .replace(&old, &new)
        .replace(&old_bj, &new_bj);
    std::fs::write(&sums, t).unwrap();
}

#[test]
fn a_tampered_bundle_resigned_by_an_untrusted_key_is_refused() {
    let site = site();
    let (a, b) = (&site.id_a, &site.id_b);
    let archive = site.build("out", Some("a"), "42");
    let un = site.env.path("un");
    ok(kbundle(&["unpack", "--root", s(&site.root), s(&archive), s(&un)]));
    let dir = un.join(NAME);
    tamper(&dir, "kbundle");
    let comment = "kbundle name=kubernetes-v1.34.3 kubernetes=v1.34.3 serial=43 built=2023-11-14T22:13:20Z";
    let sig = dir.join("bundle.json.minisig");
    std::fs::remove_file(&sig).unwrap();
    let bj = dir.join("bundle.json");
    ok(run(
        "minisign",
        &[
            "-S",
            "-s",
            s(&site.key("b")),
            "-m",
            s(&bj),
            "-x",
            s(&sig),
            "-t",
            comment,
        ],
        &[],
    ));
    // Consistent: without trusted keys it verifies (only the signer changed).
    ok(kbundle(&["verify", s(&dir)]));
    let before = listing(&site.root);
    let o = site.install(&dir, &[]);
    refused(&o, &[&format!("signed by key id {b}, but the trusted keys are {a}")]);
    let o = kbundle(&["verify", "--root", s(&site.root), s(&dir)]);
    refused(
        &o,
        &[&format!(
            "signed by key id {b}, which is not trusted (trusted keys: {a})"
        )],
    );
    assert_eq!(listing(&site.root), before, "the node changed");
}

#[test]
fn kickstart_checks_the_trusted_key_and_writes_it_into_the_post() {
    let site = site();
    let (a, b) = (&site.id_a, &site.id_b);
    let archive = site.build("out", Some("a"), "42");
    let a_pub = site.env.path("a/kbundle.pub");
    let b64 = std::fs::read_to_string(&a_pub)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let ks = site.env.path("ks");
    let args = |key: &Path| {
        kbundle(&[
            "kickstart",
            "--bundle",
            s(&archive),
            "--config",
            s(&site.config),
            "--trusted-key",
            s(key),
            "--out",
            s(&ks),
        ])
    };
    let o = args(&site.env.path("b/kbundle.pub"));
    refused(&o, &[&format!("signed by key id {a}, but the trusted keys are {b}")]);
    assert!(!ks.exists(), "kickstart wrote {}", ks.display());
    ok(args(&a_pub));
    let cp1 = std::fs::read_to_string(ks.join("cp1.ks")).unwrap();
    let want = format!(
        "printf 'untrusted comment: minisign public key %s\\n%s\\n' '{a}' '{b64}' > /etc/kbundle/trusted-keys/{a}.pub"
    );
    assert!(cp1.contains(&want), "{cp1}");
    let (k, i) = (cp1.find(&want).unwrap(), cp1.find("kbundle install --bundle").unwrap());
    assert!(k < i, "the key must be in place before install runs");
}
