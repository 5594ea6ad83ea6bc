//! Issue 9: hostile bundles that pass `sha256sum -c` and carry a matching sidecar (bundle.json
//! and SHA256SUMS rewritten self-consistently), so only kbundle's own validation can stop
//! them. Each test is named after the finding it fixes, drives the real binary, and checks
//! that a marker tree outside the node root is byte-identical afterwards and that nothing
//! new appeared outside the root.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::bundles::{self, kbundle, text, Built, Member, NAME};

const KUBECTL: &str = "files/kubectl/1.34.3/linux-amd64/kubectl";

/// A place to attack: `<t>/marker` (a tree that must survive), `<t>/root` (the node).
struct Scene {
    t: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("marker");
        std::fs::create_dir_all(m.join("sub")).unwrap();
        std::fs::write(m.join("keep.txt"), "must survive\n").unwrap();
        std::fs::write(m.join("sub/also.txt"), "also\n").unwrap();
        bundles::node_root(&t.path().join("root"));
        Scene { t }
    }
    fn marker(&self) -> PathBuf {
        self.t.path().join("marker")
    }
    fn root(&self) -> PathBuf {
        self.t.path().join("root")
    }
    /// Everything outside the root.
    fn outside(&self) -> std::collections::BTreeMap<String, String> {
        let mut all = bundles::tree(self.t.path());
        all.retain(|k, _| k != "root" && !k.starts_with("root/"));
        all
    }
}

/// Runs verify (dir and archive), unpack and install on a rewritten bundle; each must fail
/// with `want` in its output, and nothing outside the root may change.
fn refused_everywhere(b: &Built, label: &str, edit: impl FnOnce(&Path), want: &str) {
    let dir = b.unpacked(label);
    edit(&dir);
    let sums = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{label}: the rewrite is not self-consistent: {}",
        text(&sums)
    );
    let archive = b.path(&format!("{label}.tar.zst"));
    bundles::repack(&dir, &archive);
    let scene = Scene::new();
    let before = scene.outside();
    let config = b.config();
    let dest = scene.t.path().join("unpacked");
    let runs = [
        ("verify dir", kbundle(&["verify", dir.to_str().unwrap()])),
        ("verify archive", kbundle(&["verify", archive.to_str().unwrap()])),
        (
            "unpack",
            kbundle(&["unpack", archive.to_str().unwrap(), dest.to_str().unwrap()]),
        ),
        (
            "install",
            bundles::install_cmd(&archive, &config, &scene.root()).output().unwrap(),
        ),
    ];
    for (what, o) in &runs {
        assert_eq!(o.status.code(), Some(1), "{label}: {what} must fail: {}", text(o));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(all.contains(want), "{label}: {what} does not say {want:?}: {}", text(o));
    }
    let mut after = scene.outside();
    // `unpack` may create its (empty) destination directory, nothing in it.
    after.retain(|k, _| !k.starts_with("unpacked"));
    assert_eq!(before, after, "{label}: something outside the root changed");
    assert!(bundles::tree(&dest).is_empty(), "{label}: unpack left files behind");
    let store = scene.root().join("var/lib/kbundle/bundles");
    assert!(!store.exists(), "{label}: install wrote its store before verification");
}

#[test]
fn bundle_name_that_leaves_the_store_is_refused_and_nothing_is_deleted() {
    let b = Built::new(true);
    let scene = Scene::new();
    let marker = scene.marker().display().to_string();
    for (i, name) in [
        marker.clone(),
        format!("../../../../../../..{marker}"),
        "a/b".into(),
        "..".into(),
        "x\nOK".into(),
    ]
    .into_iter()
    .enumerate()
    {
        let n = name.clone();
        refused_everywhere(
            &b,
            &format!("name{i}"),
            |d| bundles::rewrite(d, |v| v["name"] = n.into()),
            "`name`",
        );
    }
    // The scene of the loop's own runs is separate; this marker was never touched either.
    assert_eq!(
        std::fs::read_to_string(scene.marker().join("keep.txt")).unwrap(),
        "must survive\n"
    );
}

#[test]
fn kubernetes_version_with_a_path_is_refused_and_nothing_is_written_outside_the_root() {
    let b = Built::new(true);
    let evil = "v1.34.3/../../../../../../../../tmp/kbundle-hostile-evil".to_string();
    let e2 = evil.clone();
    refused_everywhere(
        &b,
        "k8s",
        move |d| {
            bundles::rewrite(d, |v| {
                v["kubernetes"] = e2.clone().into();
                v["hops"][0]["kubernetes"] = e2.into();
            })
        },
        // (`kubernetes` or `hops[0].kubernetes`, whichever the parser meets first)
        "kubernetes`: Kubernetes version",
    );
    assert!(!Path::new("/tmp/kbundle-hostile-evil").exists());
}

#[test]
fn every_field_that_becomes_a_path_command_or_config_is_validated_by_name() {
    let b = Built::new(true);
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "`platforms[0]`",
            Box::new(|v| v["platforms"] = serde_json::json!(["linux/../../x"])),
        ),
        ("`components", Box::new(|v| v["components"]["../x"] = "1.0.0".into())),
        (
            "`kbundle_version`",
            Box::new(|v| v["kbundle_version"] = "0.1.0\nOK all good".into()),
        ),
        ("`upgrade_from`", Box::new(|v| v["upgrade_from"] = "v1.33.0/..".into())),
        ("`hops`", Box::new(|v| v["hops"][0]["kubernetes"] = "v1.34.4".into())),
        (
            "`images[0].ref`",
            Box::new(|v| v["images"][0]["ref"] = "../etc:1".into()),
        ),
        ("`base`", Box::new(|v| v["entries"][3]["in_base"] = true.into())),
        (
            "`entries[",
            Box::new(|v| {
                let e = v["entries"].as_array_mut().unwrap().iter_mut();
                let blob = e.into_iter().find(|e| e["kind"] == "blob").unwrap();
                blob["executable"] = true.into();
            }),
        ),
    ];
    for (i, (want, edit)) in cases.into_iter().enumerate() {
        let dir = b.unpacked(&format!("f{i}"));
        bundles::rewrite(&dir, |v| edit(v));
        let o = kbundle(&["verify", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{want}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{want}: {}",
            text(&o)
        );
    }
}

/// The entries of `dir` with a pax header (records `pax`) placed before the member `rel`.
fn tar_with_pax_before(dir: &Path, rel: &str, pax: &[(&str, String)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in bundles::members_of(dir, NAME) {
        if m.name == format!("{NAME}/{rel}") {
            let mut data = Vec::new();
            for (k, v) in pax {
                // `<len> <key>=<value>\n`, the length counting its own digits.
                let body = format!(" {k}={v}\n");
                let mut len = body.len() + 1;
                while len != body.len() + len.to_string().len() {
                    len = body.len() + len.to_string().len();
                }
                data.extend(format!("{len}{body}").into_bytes());
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_path("PaxHeaders/x").unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        bundles::append_member(&mut b, &m);
    }
    b.into_inner().unwrap()
}

/// verify, unpack and install of `archive` all fail naming `want`; unpack writes nothing.
fn all_readers_refuse(b: &Built, archive: &Path, want: &str) {
    let scene = Scene::new();
    let dest = scene.t.path().join("u");
    let config = b.config();
    for (what, o) in [
        ("verify", kbundle(&["verify", archive.to_str().unwrap()])),
        (
            "unpack",
            kbundle(&["unpack", archive.to_str().unwrap(), dest.to_str().unwrap()]),
        ),
        (
            "install",
            bundles::install_cmd(archive, &config, &scene.root()).output().unwrap(),
        ),
    ] {
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{what} does not say {want:?}: {}",
            text(&o)
        );
    }
    assert!(bundles::tree(&dest).is_empty());
    assert!(!scene.root().join("var/lib/kbundle").exists());
}

#[test]
fn pax_size_record_that_disagrees_with_the_header_is_refused_by_every_reader() {
    let b = Built::new(true);
    let dir = b.unpacked("pax");
    let size = std::fs::metadata(dir.join(KUBECTL)).unwrap().len();
    for (i, n) in [size - 1, size + 512, 0].into_iter().enumerate() {
        let archive = b.path(&format!("pax{i}.tar.zst"));
        let t = tar_with_pax_before(&dir, KUBECTL, &[("size", n.to_string())]);
        bundles::write_archive(&archive, &bundles::zstd_of(&t));
        all_readers_refuse(&b, &archive, "pax size record");
    }
    // A pax header that only restates the name and size is read like any other entry.
    let archive = b.path("pax-ok.tar.zst");
    let t = tar_with_pax_before(
        &dir,
        KUBECTL,
        &[("path", format!("{NAME}/{KUBECTL}")), ("size", size.to_string())],
    );
    bundles::write_archive(&archive, &bundles::zstd_of(&t));
    let o = kbundle(&["verify", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // Records readers disagree on are refused: a sparse map, a second path.
    let archive = b.path("pax-sparse.tar.zst");
    let t = tar_with_pax_before(&dir, KUBECTL, &[("GNU.sparse.size", "1".into())]);
    bundles::write_archive(&archive, &bundles::zstd_of(&t));
    all_readers_refuse(&b, &archive, "pax record");
    let archive = b.path("pax-twice.tar.zst");
    let t = tar_with_pax_before(&dir, KUBECTL, &[("path", "a".into()), ("path", "b".into())]);
    bundles::write_archive(&archive, &bundles::zstd_of(&t));
    all_readers_refuse(&b, &archive, "given twice");
}

#[test]
fn unpack_refuses_an_archive_whose_sidecar_does_not_match() {
    let b = Built::new(true);
    let archive = b.path("copy.tar.zst");
    std::fs::copy(&b.archive, &archive).unwrap();
    std::fs::write(
        format!("{}.sha256", archive.display()),
        format!("{}  copy.tar.zst\n", "0".repeat(64)),
    )
    .unwrap();
    let dest = b.path("dest");
    let o = kbundle(&["unpack", archive.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not match"),
        "{}",
        text(&o)
    );
    assert!(bundles::tree(&dest).is_empty());
}

#[test]
fn exec_bit_added_to_a_data_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let b = Built::new(true);
    let dir = b.unpacked("exec");
    let p = dir.join("images/index.json");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = b.path("exec.tar.zst");
    bundles::repack(&dir, &archive);
    for target in [&dir, &archive] {
        let o = kbundle(&["verify", target.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("mode: images/index.json is executable"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn entry_names_with_newlines_are_printed_escaped() {
    let b = Built::new(true);
    let dir = b.unpacked("nl");
    let mut members = bundles::members_of(&dir, NAME);
    members.push(Member {
        name: format!("{NAME}/zz\nOK {}: 99 files", b.archive.display()),
        dir: false,
        mode: 0o644,
        data: b"x".to_vec(),
    });
    let archive = b.path("nl.tar.zst");
    bundles::write_archive(&archive, &bundles::zstd_of(&bundles::tar_of(&members)));
    let o = kbundle(&["verify", archive.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.lines().any(|l| l.starts_with("OK")), "a forged OK line: {all}");
    assert!(all.contains("\\nOK"), "the name is shown escaped: {all}");
}

#[test]
fn unknown_entry_types_are_named_readably() {
    let b = Built::new(true);
    let dir = b.unpacked("types");
    let mut t = tar::Builder::new(Vec::new());
    for m in bundles::members_of(&dir, NAME) {
        bundles::append_member(&mut t, &m);
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(b'M'));
    h.set_size(0);
    h.set_mode(0o644);
    t.append_data(&mut h, format!("{NAME}/zz"), std::io::empty()).unwrap();
    let archive = b.path("types.tar.zst");
    bundles::write_archive(&archive, &bundles::zstd_of(&t.into_inner().unwrap()));
    let o = kbundle(&["verify", archive.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("type flag 'M'") && !err.contains("Nonexhaustive"),
        "{}",
        text(&o)
    );
}

#[test]
fn trailing_data_that_decompresses_to_gigabytes_is_stopped_early() {
    use std::io::Write;
    let b = Built::new(true);
    let dir = b.unpacked("bomb");
    let tar = bundles::tar_of(&bundles::members_of(&dir, NAME));
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(&tar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap(); // 1 GiB of zeros after the end-of-archive marker
    }
    let archive = b.path("bomb.tar.zst");
    bundles::write_archive(&archive, &enc.finish().unwrap());
    assert!(
        std::fs::metadata(&archive).unwrap().len() < 2 << 20,
        "the bomb is small"
    );
    for what in ["verify", "unpack"] {
        let dest = b.path("bomb-out");
        let o = match what {
            "verify" => kbundle(&["verify", archive.to_str().unwrap()]),
            _ => kbundle(&["unpack", archive.to_str().unwrap(), dest.to_str().unwrap()]),
        };
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("decompresses to more than"),
            "{what}: {}",
            text(&o)
        );
    }
}

#[test]
fn an_entry_larger_than_bundle_json_says_is_refused_before_it_is_read() {
    let b = Built::new(true);
    let dir = b.unpacked("big");
    let mut t = tar::Builder::new(Vec::new());
    for m in bundles::members_of(&dir, NAME) {
        if m.name.ends_with(KUBECTL) {
            // A header claiming 1 TiB, with only the real bytes behind it.
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o755);
            h.set_size(1 << 40);
            h.set_path(&m.name).unwrap();
            h.set_cksum();
            let mut raw = h.as_bytes().to_vec();
            raw.extend_from_slice(&m.data);
            raw.resize(raw.len().div_ceil(512) * 512, 0);
            t.get_mut().extend_from_slice(&raw);
            continue;
        }
        bundles::append_member(&mut t, &m);
    }
    let archive = b.path("big.tar.zst");
    bundles::write_archive(&archive, &bundles::zstd_of(&t.into_inner().unwrap()));
    let o = kbundle(&["verify", archive.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1099511627776 bytes in the archive, but bundle.json says"),
        "{}",
        text(&o)
    );
}

#[test]
fn inspect_into_a_closed_pipe_is_a_normal_exit() {
    let b = Built::new(true);
    for args in [vec!["inspect", b.archive.to_str().unwrap()], vec!["example-config"]] {
        let mut child = Command::new(bundles::KBUNDLE)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is written
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"), "{}", text(&o));
    }
}

#[test]
fn cluster_config_that_is_not_utf8_is_named_with_its_byte_offset() {
    let b = Built::new(true);
    let scene = Scene::new();
    let cfg = b.path("bad.toml");
    let mut bytes = std::fs::read(b.config()).unwrap();
    bytes.splice(10..10, [0xffu8]);
    std::fs::write(&cfg, bytes).unwrap();
    let o = bundles::install_cmd(&b.archive, &cfg, &scene.root()).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not UTF-8") && err.contains("offset 10") && err.contains("bad.toml"),
        "{}",
        text(&o)
    );
}

#[test]
fn dns_domain_that_would_add_kubeadm_keys_is_refused() {
    let b = Built::new(true);
    let scene = Scene::new();
    let cfg = b.path("dns.toml");
    let text_cfg = std::fs::read_to_string(b.config()).unwrap().replace(
        "dns-domain = \"cluster.local\"",
        "dns-domain = \"cluster.local\\nanonymous-auth: true\"",
    );
    std::fs::write(&cfg, text_cfg).unwrap();
    let o = bundles::install_cmd(&b.archive, &cfg, &scene.root()).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cluster.dns-domain"),
        "{}",
        text(&o)
    );
    assert!(!scene.root().join("etc/kbundle").exists());
}

#[test]
fn a_foreign_directory_in_the_store_is_kept_and_a_partial_unpack_is_replaced() {
    let b = Built::new(false);
    let (digest, _) = kbundle::digest::hash_file(&b.archive).unwrap();
    let config = b.config();
    // Foreign: something kbundle did not create sits where the slot would be.
    let scene = Scene::new();
    let slot = scene.root().join("var/lib/kbundle/bundles").join(digest.hex());
    std::fs::create_dir_all(slot.join(NAME)).unwrap();
    std::fs::write(slot.join(NAME).join("mine.txt"), "keep me\n").unwrap();
    let o = bundles::install_cmd(&b.archive, &config, &scene.root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not created by kbundle"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(slot.join(NAME).join("mine.txt")).unwrap(),
        "keep me\n"
    );
    // Partial: a slot of ours whose unpack never completed is unpacked again, not used.
    let scene = Scene::new();
    let ok = bundles::install_cmd(&b.archive, &config, &scene.root())
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    let slot = scene.root().join("var/lib/kbundle/bundles").join(digest.hex());
    std::fs::remove_file(slot.join(".complete")).unwrap();
    std::fs::write(slot.join(NAME).join("kbundle"), "#!/bin/sh\necho tampered\n").unwrap();
    std::fs::create_dir_all(slot.join(".unpack-x1y2z3")).unwrap();
    let again = bundles::install_cmd(&b.archive, &config, &scene.root())
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(slot.join(NAME).join("kbundle")).unwrap(),
        "#!/bin/sh\necho test installer\n"
    );
    assert!(!slot.join(".unpack-x1y2z3").exists() && slot.join(".complete").exists());
}

#[test]
fn unpack_into_a_regular_file_is_a_readable_error() {
    let b = Built::new(true);
    let file = b.path("afile");
    std::fs::write(&file, "x").unwrap();
    let o = kbundle(&["unpack", b.archive.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not a directory") && err.contains("afile"),
        "{}",
        text(&o)
    );
    assert!(!err.contains("os error"), "{}", text(&o));
}

#[test]
fn a_killed_unpacks_temp_directory_is_removed_by_the_next_unpack() {
    let b = Built::new(true);
    let dest = b.path("dest");
    let stale = dest.join(".unpack-Ab12Cd");
    std::fs::create_dir_all(stale.join("files")).unwrap();
    std::fs::write(stale.join("files/partial"), "half").unwrap();
    let keep = dest.join(".unpack-notours-keep");
    std::fs::create_dir_all(&keep).unwrap();
    // Older than the run that follows.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = kbundle(&["unpack", b.archive.to_str().unwrap(), dest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!stale.exists(), "the stale temp dir was not removed");
    assert!(keep.exists(), "a directory that is not kbundle's temp was removed");
    assert!(dest.join(NAME).join("bundle.json").is_file());
}
