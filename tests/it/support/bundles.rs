#![allow(dead_code)]
//! Bundles to attack: a real bundle built through the CLI from the loopback upstream, and
//! tools to rewrite one *self-consistently* (bundle.json edited, SHA256SUMS recomputed,
//! archive repacked, sidecar remade), so `sha256sum -c` and the sidecar pass and only
//! kbundle's own checks can stop it. Plus scratch node roots and tree snapshots to prove
//! nothing outside a root changed.

use super::harness::Upstream;
use super::upstream::UpstreamSpec;
use kbundle::digest::Sha256;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");
pub const NAME: &str = "kubernetes-v1.34.3";
pub const MTIME: u64 = 1_700_000_000;

pub fn kbundle(args: &[&str]) -> Output {
    Command::new(KBUNDLE)
        .args(args)
        .env("SOURCE_DATE_EPOCH", MTIME.to_string())
        .output()
        .expect("run kbundle")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A bundle built through the CLI: `tiny` upstream files (fast), or the real Debian binaries
/// (containerd and ctr that really import images) for installs.
pub struct Built {
    pub tmp: tempfile::TempDir,
    pub archive: PathBuf,
}

impl Built {
    pub fn new(tiny: bool) -> Built {
        Self::with(tiny, "zstd")
    }

    /// A bundle with the given `--compression` (zstd, gzip or none).
    pub fn with(tiny: bool, compression: &str) -> Built {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spec = if tiny {
            UpstreamSpec::v1_34_3().tiny()
        } else {
            UpstreamSpec::v1_34_3()
        };
        let mdir = tmp.path().join("m");
        std::fs::create_dir_all(&mdir).unwrap();
        let manifest = mdir.join(format!("{NAME}.toml"));
        super::upstream::pgp::copy_manifest(&format!("{NAME}.toml"), &manifest).expect("copy manifest");
        let up = Upstream::start(&spec, &manifest);
        let inst = tmp.path().join("installer");
        std::fs::write(&inst, "#!/bin/sh\necho test installer\n").unwrap();
        std::fs::set_permissions(&inst, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = tmp.path().join("out");
        let mut args: Vec<String> = vec!["build".into(), manifest.display().to_string(), "--out".into()];
        args.push(out.display().to_string());
        args.extend(["--cache".into(), tmp.path().join("cache").display().to_string()]);
        args.extend(["--installer".into(), inst.display().to_string(), "--quiet".into()]);
        args.extend(["--compression".into(), compression.into()]);
        args.extend(up.mirror_args());
        let o = kbundle(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "build failed: {}", text(&o));
        let ext = match compression {
            "zstd" => "tar.zst",
            "gzip" => "tar.gz",
            _ => "tar",
        };
        let archive = out.join(format!("{NAME}.{ext}"));
        assert!(archive.is_file(), "{}", text(&o));
        Built { tmp, archive }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// A fresh unpacked copy under `<tmp>/<under>/<NAME>`.
    pub fn unpacked(&self, under: &str) -> PathBuf {
        kbundle::bundle::unpack::unpack(&self.archive, &self.path(under))
            .expect("unpack the good archive")
            .dir
    }

    /// A cluster config (the example, with join secrets so a worker's prepare is complete).
    pub fn config(&self) -> PathBuf {
        let o = kbundle(&["example-config"]);
        let cfg = String::from_utf8(o.stdout).unwrap().replace(
            "# [join]\n# token = \"abcdef.0123456789abcdef\"\n# ca-cert-hash = \"sha256:<64 hex>\"",
            &format!(
                "[join]\ntoken = \"abcdef.0123456789abcdef\"\nca-cert-hash = \"sha256:{}\"",
                "b".repeat(64)
            ),
        );
        let p = self.path("cluster.toml");
        std::fs::write(&p, cfg).unwrap();
        p
    }
}

/// The bundle.json of an unpacked bundle, as JSON.
pub fn bundle_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap()
}

/// Edits bundle.json, then recomputes SHA256SUMS from the (new) entries and bundle.json's
/// own digest, exactly as kbundle renders them: `sha256sum -c SHA256SUMS` passes after.
pub fn rewrite(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v = bundle_json(dir);
    edit(&mut v);
    let mut bj = serde_json::to_vec_pretty(&v).unwrap();
    bj.push(b'\n');
    std::fs::write(dir.join("bundle.json"), &bj).unwrap();
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    for e in v["entries"].as_array().into_iter().flatten() {
        if e["in_base"].as_bool() != Some(true) {
            if let (Some(p), Some(d)) = (e["path"].as_str(), e["sha256"].as_str()) {
                lines.insert(p.to_string(), d.to_string());
            }
        }
    }
    lines.insert("bundle.json".into(), Sha256::of(&bj).hex());
    let sums: String = lines.iter().map(|(p, d)| format!("{d}  {p}\n")).collect();
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

/// Sets an entry's content and its size and digest in bundle.json (self-consistent).
pub fn replace_entry(dir: &Path, rel: &str, content: &[u8]) {
    std::fs::write(dir.join(rel), content).unwrap();
    let d = Sha256::of(content).hex();
    rewrite(dir, |v| {
        for e in v["entries"].as_array_mut().unwrap() {
            if e["path"] == rel {
                e["sha256"] = d.clone().into();
                e["size"] = (content.len() as u64).into();
            }
        }
    });
}

/// One tar member as raw parts, for archives kbundle would never write.
pub struct Member {
    pub name: String,
    pub dir: bool,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// The members of an unpacked bundle as kbundle packs them: `<top>/`, then every directory
/// and file sorted by path (SHA256SUMS and bundle.json first), modes as on disk.
pub fn members_of(dir: &Path, top: &str) -> Vec<Member> {
    let mut items: Vec<(String, Option<PathBuf>)> = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, d)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if e.file_type().unwrap().is_dir() {
                items.push((format!("{r}/"), None));
                stack.push((r, e.path()));
            } else {
                items.push((r, Some(e.path())));
            }
        }
    }
    items.sort();
    let mut out = vec![Member {
        name: format!("{top}/"),
        dir: true,
        mode: 0o755,
        data: Vec::new(),
    }];
    for (rel, p) in items {
        let (mode, data) = match &p {
            Some(p) => (
                std::fs::metadata(p).unwrap().permissions().mode() & 0o7777,
                std::fs::read(p).unwrap(),
            ),
            None => (0o755, Vec::new()),
        };
        out.push(Member {
            name: format!("{top}/{rel}"),
            dir: p.is_none(),
            mode,
            data,
        });
    }
    out
}

/// A GNU tar stream of `members` (long names through the tar crate's GNU long-name entries).
pub fn tar_of(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        append_member(&mut b, m);
    }
    b.into_inner().unwrap()
}

/// Appends one member with a GNU header.
pub fn append_member(b: &mut tar::Builder<Vec<u8>>, m: &Member) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(if m.dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(m.mode);
    h.set_mtime(MTIME);
    h.set_size(m.data.len() as u64);
    b.append_data(&mut h, &m.name, m.data.as_slice()).unwrap();
}

pub fn zstd_of(plain: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(plain).unwrap();
    enc.finish().unwrap()
}

/// Writes `bytes` as an archive with a matching `.sha256` sidecar (as a build would).
pub fn write_archive(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    std::fs::write(
        format!("{}.sha256", path.display()),
        format!("{}  {name}\n", Sha256::of(bytes).hex()),
    )
    .unwrap();
}

/// Packs an unpacked bundle directory as `<NAME>/…` into a zstd archive with its sidecar.
pub fn repack(dir: &Path, out: &Path) {
    write_archive(out, &zstd_of(&tar_of(&members_of(dir, NAME))));
}

/// Every path under `dir` with its type, mode and (for files) content digest: equal
/// snapshots mean nothing under `dir` changed.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("file {}", kbundle::digest::hash_file(&p).unwrap().0)
            };
            out.insert(rel, format!("{what} {:o}", m.permissions().mode() & 0o7777));
        }
    }
    out
}

/// A scratch node root that looks like Rocky Linux 10 (for `install --root`).
pub fn node_root(r: &Path) -> PathBuf {
    for d in ["etc/selinux", "usr/bin", "usr/sbin"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(
        r.join("etc/os-release"),
        "NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"10.0\"\nPRETTY_NAME=\"Rocky Linux 10.0 (Red Quartz)\"\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/selinux/config"), "SELINUX=enforcing\n").unwrap();
    for c in ["mount", "umount", "nsenter", "iptables"] {
        std::fs::write(r.join("usr/bin").join(c), "").unwrap();
    }
    std::fs::write(r.join("usr/sbin/modprobe"), "").unwrap();
    r.to_path_buf()
}

/// `kbundle install --phase prepare` of worker1 into `root`, as a child process.
pub fn install_cmd(bundle: &Path, config: &Path, root: &Path) -> Command {
    let mut c = Command::new(KBUNDLE);
    c.args(["install", "--bundle"])
        .arg(bundle)
        .arg("--config")
        .arg(config)
        .arg("--root")
        .arg(root)
        .args(["--node", "worker1", "--phase", "prepare"]);
    c
}

/// Processes whose command line mentions `needle` (other than this test process).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true);
        if cmd.contains(needle) && !zombie {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

/// Polls (every 5 ms, up to `secs`) until `f` holds.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    f()
}
