//! `kbundle kickstart` (issue #5): kickstarts rendered from the example config and a small
//! real bundle pass pykickstart's `ksvalidator` for RHEL10 and RHEL9 with no error or
//! warning, every %post passes `bash -n`, the text is stable (insta snapshots
//! tests/it/snapshots/it__kickstart__*.snap; README.md says how to review and update them),
//! secrets are written 0600, and bad input writes nothing.

use crate::support::ks::common;
use crate::support::ks::pyks;

use common::*;
use kbundle::bundle::pack::Compression;
use kbundle::digest::Sha256;
use kbundle::kickstart::validate::{self, BashCheck};
use kbundle::kickstart::{KickstartError, Release, Rendered};
use pyks::{bash_n_helper, ksvalidator};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Renders into dir/<out> and returns that directory.
fn render(dir: &Path, bundle: &Path, config: &Path, extra: &[&str], out: &str) -> PathBuf {
    let out = dir.join(out);
    let mut args = vec![
        "kickstart",
        "--bundle",
        s(bundle),
        "--config",
        s(config),
        "--out",
        s(&out),
    ];
    args.extend_from_slice(extra);
    let o = kbundle(&args);
    assert!(o.status.success(), "{}", text(&o));
    out
}

fn kickstarts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ks"))
        .collect();
    v.sort();
    v
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    bundle: PathBuf,
    config: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let bundle = make_bundle(&dir.join("bundles"), Compression::None, KS_KUBEADM);
    let config = example_config(&dir, |c| c);
    Fixture {
        _tmp: tmp,
        dir,
        bundle,
        config,
    }
}

#[test]
fn the_test_bundle_verifies() {
    let f = fixture();
    let o = kbundle(&["verify", s(&f.bundle)]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn example_config_kickstarts_pass_ksvalidator_and_bash_n_for_rocky10_and_rocky9() {
    let f = fixture();
    for (release, version) in [("rocky10", "RHEL10"), ("rocky9", "RHEL9")] {
        let out = render(&f.dir, &f.bundle, &f.config, &["--os", release], release);
        let files = kickstarts(&out);
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["cp1.ks", "worker1.ks", "worker2.ks"]);
        for ks in &files {
            let (rc, output) = ksvalidator(version, ks);
            eprintln!("ksvalidator -v {version} {}: rc={rc}\n{}", ks.display(), output.trim());
            assert_eq!(rc, 0, "ksvalidator -v {version} {}:\n{output}", ks.display());
            let lower = output.to_lowercase();
            assert!(
                !lower.contains("warning") && !lower.contains("deprecat") && !lower.contains("problem"),
                "{output}"
            );
        }
        let (rc, output) = bash_n_helper(version, &files);
        eprintln!("{output}");
        assert_eq!(rc, 0, "{output}");
        assert_eq!(output.matches("bash-n rc=0").count(), 2 * files.len(), "{output}");
    }
}

#[test]
fn the_harness_catches_release_specific_syntax() {
    // ksvalidator must refuse what Rocky 10 dropped, and warn (exit 1) on Rocky 9's deprecations.
    let tmp = tempfile::tempdir().unwrap();
    let ks = tmp.path().join("old.ks");
    std::fs::write(
        &ks,
        "text\ncdrom\ntimezone UTC --utc --ntpservers=192.168.122.1\n%packages\n@core\n%end\n",
    )
    .unwrap();
    assert_eq!(ksvalidator("RHEL10", &ks).0, 1);
    assert_eq!(ksvalidator("RHEL9", &ks).0, 1);
    std::fs::write(&ks, "text\ncdrom\nauth --enableshadow\n%packages\n@core\n%end\n").unwrap();
    assert_eq!(ksvalidator("RHEL10", &ks).0, 1);
}

#[test]
fn rendered_text_is_stable() {
    let f = fixture();
    let ks10 = render(&f.dir, &f.bundle, &f.config, &[], "ks10");
    let ks9 = render(&f.dir, &f.bundle, &f.config, &["--os", "rocky9"], "ks9");
    for (name, file) in [
        ("rocky10_cp1", ks10.join("cp1.ks")),
        ("rocky10_worker1", ks10.join("worker1.ks")),
        ("rocky9_cp1", ks9.join("cp1.ks")),
    ] {
        let text = read(&file);
        // insta compares without trailing newlines: the file ends in exactly one.
        assert!(text.ends_with("%end\n") && !text.ends_with("\n\n"), "{name}: {text:?}");
        insta::assert_snapshot!(name, text);
    }
    // Rendering twice gives the same bytes.
    let again = render(&f.dir, &f.bundle, &f.config, &[], "ks10b");
    assert_eq!(read(&ks10.join("cp1.ks")), read(&again.join("cp1.ks")));
}

#[test]
fn kickstart_content_follows_the_config_and_the_bundle() {
    let f = fixture();
    let out = render(&f.dir, &f.bundle, &f.config, &[], "ks");
    let ks = read(&out.join("worker1.ks"));
    let archive = format!("{NAME}.tar");
    let archive_sha = Sha256::of(&std::fs::read(&f.bundle).unwrap()).hex();
    let installer_sha = Sha256::of(INSTALLER_BYTES).hex();
    let config_sha = Sha256::of(&std::fs::read(&f.config).unwrap()).hex();
    let lines: Vec<&str> = ks.lines().collect();
    let has = |l: &str| lines.contains(&l);
    for l in [
        "text",
        "cdrom",
        "network --device=link --bootproto=static --ip=192.168.122.21 --netmask=255.255.255.0 --gateway=192.168.122.1 --nameserver=192.168.122.1 --hostname=worker1 --activate --onboot=on",
        "timezone UTC --utc",
        "timesource --ntp-server=192.168.122.1",
        "rootpw --iscrypted $6$kbundleexample$YX.HAlAGn7/y/pSbKV8WZIRAM6iMYUOmqx0ZnSDnhjrwsNiWvDtopjXFa8lgvwfiZtIHYCSNLsIv4vqMcC.vm0",
        "sshkey --username=root \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbundleExampleKeyReplaceMeWithYourOwnKey0000 ops@example\"",
        "reqpart --add-boot",
        "part / --fstype=xfs --size=8192 --grow",
        "%packages",
        "conntrack-tools",
        "container-selinux",
        "iptables-nft",
        "kernel-modules-extra",
        "nftables",
        "socat",
        "%post --nochroot --erroronfail --interpreter=/bin/bash --log=/mnt/sysimage/root/kbundle-ks-post-nochroot.log",
        "%post --erroronfail --interpreter=/bin/bash --log=/root/kbundle-ks-post.log",
        &format!("archive='{archive}'"),
        &format!("{archive_sha}  var/lib/kbundle/{archive}"),
        &format!("{installer_sha}  var/lib/kbundle/kbundle"),
        &format!("{config_sha}  etc/kbundle/cluster.toml"),
        "install -m 0600 \"$media/cluster.toml\" \"$root/etc/kbundle/cluster.toml\"",
        &format!("/var/lib/kbundle/kbundle install --bundle '/var/lib/kbundle/{archive}' --config /etc/kbundle/cluster.toml --node 'worker1' --role 'worker' --phase prepare"),
        &format!("ExecStart=/var/lib/kbundle/kbundle install --bundle /var/lib/kbundle/{archive} --config /etc/kbundle/cluster.toml --node worker1 --phase bootstrap"),
        "Type=oneshot",
        "After=network-online.target containerd.service",
        "Wants=network-online.target",
        "ConditionPathExists=!/var/lib/kbundle/bootstrap.done",
        "ln -sfn /etc/systemd/system/kbundle-bootstrap.service /etc/systemd/system/multi-user.target.wants/kbundle-bootstrap.service",
        "# kbundle-node: worker1",
        "# kbundle-os: rocky10",
    ] {
        assert!(has(l), "missing line {l:?} in:\n{ks}");
    }
    // No swap, nothing from a network repository, nothing Rocky 10 dropped.
    let commands: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for l in &commands {
        for bad in [
            "autopart",
            "part swap",
            "url",
            "repo",
            "auth",
            "authconfig",
            "method",
            "install ",
        ] {
            assert!(
                !l.starts_with(bad) || bad == "install " && l.starts_with("install -"),
                "{l:?} in:\n{ks}"
            );
        }
        assert!(
            !l.contains("swap") && !l.contains("--ntpservers") && !l.contains("{{"),
            "{l:?} in:\n{ks}"
        );
    }
    assert!(
        lines[1].starts_with("# contains secrets: root password hash (rootpw --iscrypted)"),
        "{ks}"
    );
    assert_eq!(mode(&out.join("worker1.ks")), 0o600);
    assert_eq!(mode(&out.join("cluster.toml")), 0o600);
    assert_eq!(
        std::fs::read(out.join("cluster.toml")).unwrap(),
        std::fs::read(&f.config).unwrap()
    );
    // The control plane gets its role; Rocky 9 needs no kernel-modules-extra.
    assert!(read(&out.join("cp1.ks")).contains("--node 'cp1' --role 'init' --phase prepare"));
    let ks9 = read(
        &render(
            &f.dir,
            &f.bundle,
            &f.config,
            &["--os", "rocky9", "--node", "cp1"],
            "ks9",
        )
        .join("cp1.ks"),
    );
    assert!(
        !ks9.contains("kernel-modules-extra") && ks9.contains("# kbundle-os: rocky9"),
        "{ks9}"
    );
}

#[test]
fn modes_and_header_follow_the_secrets() {
    let f = fixture();
    let hash_line = |c: &str| {
        c.lines()
            .find(|l| l.starts_with("root-password-hash"))
            .unwrap()
            .to_string()
    };
    // SSH keys only, no join secrets: nothing secret in the kickstart.
    let plain = example_config(&f.dir.join("plain"), |c| c.replace(&hash_line(&c), ""));
    let out = render(&f.dir, &f.bundle, &plain, &["--node", "cp1"], "plain-ks");
    let ks = read(&out.join("cp1.ks"));
    assert!(
        ks.lines().nth(1).unwrap().starts_with("# contains secrets: none"),
        "{ks}"
    );
    assert!(ks.contains("\nrootpw --lock\n"), "{ks}");
    assert_eq!(mode(&out.join("cp1.ks")), 0o644);
    assert_eq!(mode(&out.join("cluster.toml")), 0o600);
    // Join secrets travel in cluster.toml, which the kickstart installs: 0600 and said so.
    let joined = example_config(&f.dir.join("join"), |c| {
        c.replace(&hash_line(&c), "").replace(
            "# [join]\n# token = \"abcdef.0123456789abcdef\"",
            "[join]\ntoken = \"abcdef.0123456789abcdef\"",
        )
    });
    let out = render(&f.dir, &f.bundle, &joined, &["--node", "worker2"], "join-ks");
    let ks = read(&out.join("worker2.ks"));
    assert!(
        ks.lines()
            .nth(1)
            .unwrap()
            .starts_with("# contains secrets: [join] token in the cluster.toml it installs"),
        "{ks}"
    );
    assert_eq!(mode(&out.join("worker2.ks")), 0o600);
    assert_eq!(kickstarts(&out).len(), 1, "--node renders one kickstart");
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let f = fixture();
    let cases: Vec<(String, &str)> = vec![
        (read(&f.config).replace("prefix = 24\n", ""), "os.prefix"),
        (
            read(&f.config).replace("# interface = \"enp1s0\"", "interface = \"eth0 --noipv4\""),
            "os.interface",
        ),
        (
            read(&f.config).replace("ntp-servers = [\"192.168.122.1\"]", "ntp-servers = [\"\"]"),
            "os.ntp-servers",
        ),
        (
            read(&f.config).replace("ops@example\"]", "ops\\\"@example\"]"),
            "os.ssh-keys",
        ),
        (
            read(&f.config).replace("dns = [\"192.168.122.1\"]", "dns = [\"resolver\"]"),
            "os.dns",
        ),
        (
            read(&f.config).replace("gateway = \"192.168.122.1\"", "gateway = \"fd00::1\""),
            "os.gateway",
        ),
        (
            read(&f.config).replace("[os]", "[os]\ndisk = \"sda; reboot\""),
            "os.disk",
        ),
    ];
    for (i, (config, field)) in cases.iter().enumerate() {
        let c = f.dir.join(format!("bad-{i}.toml"));
        std::fs::write(&c, config).unwrap();
        let out = f.dir.join(format!("bad-out-{i}"));
        let o = kbundle(&[
            "kickstart",
            "--bundle",
            s(&f.bundle),
            "--config",
            s(&c),
            "--out",
            s(&out),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(field) && err.contains(&format!("bad-{i}.toml:")),
            "{field}: {err}"
        );
        assert!(!out.exists(), "{field}: {} was created", out.display());
    }
    let out = f.dir.join("x");
    let o = kbundle(&[
        "kickstart",
        "--bundle",
        s(&f.bundle),
        "--config",
        s(&f.config),
        "--node",
        "nope",
        "--out",
        s(&out),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no node \"nope\"") && !out.exists(),
        "{}",
        text(&o)
    );
    // A sidecar that does not match the archive.
    let side = f.bundle.with_file_name(format!("{NAME}.tar.sha256"));
    std::fs::write(&side, format!("{}  {NAME}.tar\n", "0".repeat(64))).unwrap();
    let o = kbundle(&[
        "kickstart",
        "--bundle",
        s(&f.bundle),
        "--config",
        s(&f.config),
        "--out",
        s(&out),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sidecar") && !out.exists(),
        "{}",
        text(&o)
    );
    // A directory is not an archive.
    let o = kbundle(&[
        "kickstart",
        "--bundle",
        s(f.bundle.parent().unwrap()),
        "--config",
        s(&f.config),
        "--out",
        s(&out),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is a directory") && !out.exists(),
        "{}",
        text(&o)
    );
}

fn rendered(text: &str) -> Rendered {
    Rendered {
        node: "n1".into(),
        release: Release::Rocky10,
        file_name: "n1.ks".into(),
        text: text.into(),
        secrets: Vec::new(),
    }
}

#[test]
fn validation_names_file_and_line() {
    let ok = "text\n%post --interpreter=/bin/bash\nif true; then echo; fi\n%end\n";
    // bash is required, not skipped: without it the `bash -n` half of the check goes untested.
    assert!(
        have("bash"),
        "this test needs bash on PATH (Debian and Rocky package: bash)"
    );
    assert!(matches!(validate::check(&[rendered(ok)]), Ok(BashCheck::Passed(1))));
    let bad = "text\nnetwork --hostname= --activate\n%packages\n@core\n%post --interpreter=/bin/bash\necho a\nif true; then\n%end\n";
    let Err(KickstartError::Invalid(problems)) = validate::check(&[rendered(bad)]) else {
        panic!("accepted")
    };
    let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        msgs.contains(&"n1.ks:2: --hostname= has an empty value".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"n1.ks:5: %packages (line 3) is not closed by %end before %post".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("n1.ks:") && m.contains("%post --interpreter=/bin/bash (line 5): bash -n:")),
        "{msgs:?}"
    );
    let e = KickstartError::Invalid(problems).to_string();
    assert!(e.contains("nothing written"), "{e}");
}

#[test]
fn other_settings_pass_ksvalidator_too() {
    // IPv6, one chosen disk, several NTP and DNS servers, SSH keys only (locked root).
    let f = fixture();
    let config = example_config(&f.dir.join("v6"), |c| {
        let hash = c
            .lines()
            .find(|l| l.starts_with("root-password-hash"))
            .unwrap()
            .to_string();
        c.replace(&hash, "")
            .replace(
                "control-plane-endpoint = \"192.168.122.10:6443\"",
                "control-plane-endpoint = \"[fd00::10]:6443\"",
            )
            .replace("192.168.122.1\"]", "fd00::1\", \"fd00::2\"]")
            .replace("gateway = \"192.168.122.1\"", "gateway = \"fd00::1\"")
            .replace(
                "prefix = 24",
                "prefix = 64\ndisk = \"/dev/disk/by-path/pci-0000:00:1f.2-ata-1\"",
            )
            .replace("address = \"192.168.122.", "address = \"fd00::")
    });
    for (release, version) in [("rocky10", "RHEL10"), ("rocky9", "RHEL9")] {
        let out = render(
            &f.dir,
            &f.bundle,
            &config,
            &["--os", release, "--node", "worker1"],
            &format!("v6-{release}"),
        );
        let ks = out.join("worker1.ks");
        let t = read(&ks);
        for l in [
            "network --device=link --bootproto=static --noipv4 --ipv6=fd00::21/64 --ipv6gateway=fd00::1 --nameserver=fd00::1,fd00::2 --hostname=worker1 --activate --onboot=on",
            "timesource --ntp-server=fd00::1",
            "timesource --ntp-server=fd00::2",
            "rootpw --lock",
            "ignoredisk --only-use=/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
            "clearpart --all --initlabel --drives=/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
            "part / --fstype=xfs --size=8192 --grow --ondisk=/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
        ] {
            assert!(t.lines().any(|x| x == l), "missing {l:?} in:\n{t}");
        }
        let (rc, output) = ksvalidator(version, &ks);
        assert_eq!(rc, 0, "ksvalidator -v {version}:\n{output}\n{t}");
        assert!(!output.to_lowercase().contains("warning"), "{output}");
        let (rc, output) = bash_n_helper(version, &[ks]);
        assert_eq!(rc, 0, "{output}");
    }
}
