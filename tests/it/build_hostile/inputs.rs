//! Hostile and broken inputs of a build: non-UTF-8 manifests and lockfiles, mirrors on
//! metadata addresses, the lockfile's location, unreadable and unwritable paths.

use super::*;

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
