//! `kbundle verify`, `kbundle unpack` and `kbundle inspect` against small real bundles:
//! every single-byte flip is caught and named (unpacked directory, `.tar.zst` with and
//! without its sidecar, `.tar.gz` and uncompressed `.tar` without), hostile archives are
//! refused without writing anything outside the destination, missing/extra/changed/edited
//! entries give precise messages, unpack and inspect show and keep what they should.
//!
//! Each test builds its own small bundle through the CLI (tiny upstream files from the
//! loopback mirror, stand-in images from the loopback registry, a small installer).

use crate::support;

use kbundle::bundle::verify::verify;
use kbundle::digest::Sha256;
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");
const NAME: &str = "kubernetes-v1.34.3";
const MTIME: u64 = 1_700_000_000;
/// An entry every bundle has; executable.
const KUBEADM: &str = "files/kubeadm/1.34.3/linux-amd64/kubeadm";
const KUBECTL: &str = "files/kubectl/1.34.3/linux-amd64/kubectl";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn kbundle(args: &[&str]) -> Output {
    Command::new(KBUNDLE)
        .args(args)
        .env("SOURCE_DATE_EPOCH", MTIME.to_string())
        .output()
        .expect("run kbundle")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn hex(bytes: &[u8]) -> String {
    Sha256::of(bytes).hex()
}

/// A small bundle built through the CLI from the tiny upstream (files from the loopback
/// mirror, images from the loopback registry), with a small installer.
struct Fixture {
    tmp: tempfile::TempDir,
    archive: PathBuf,
}

impl Fixture {
    fn new(compression: &str) -> Fixture {
        let b = support::bundles::Built::with(true, compression);
        Fixture {
            tmp: b.tmp,
            archive: b.archive,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Unpacks the archive (library) into `<tmp>/<under>/` and returns the bundle directory.
    fn unpacked(&self, under: &str) -> PathBuf {
        let dir = kbundle::bundle::unpack::unpack(&self.archive, &self.path(under))
            .expect("unpack good archive")
            .dir;
        assert_eq!(dir, self.path(under).join(NAME));
        dir
    }
}

/// Problems `kbundle::bundle::verify::verify` reports, as displayed; an `Err` counts as one.
fn problems(path: &Path) -> Vec<String> {
    match verify(path) {
        Ok(r) if r.ok() => Vec::new(),
        Ok(r) if r.problems.is_empty() => vec!["(report not ok, no problem listed)".into()],
        Ok(r) => r.problems.iter().map(|p| p.to_string()).collect(),
        Err(e) => vec![format!("error: {e}")],
    }
}

fn assert_verifies(path: &Path) {
    let p = problems(path);
    assert!(p.is_empty(), "{} should verify: {p:#?}", path.display());
}

/// Every regular file under `dir`, as (path relative to `dir`, full path), sorted.
fn files_of(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Every name (files and directories) anywhere under `dir`.
fn all_names(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    out
}

fn dir_names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `n` positions spread evenly over `0..len`, including the first and the last (all of them
/// when `len <= n`).
fn spread(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    let v: BTreeSet<usize> = (0..n).map(|i| i * (len - 1) / (n - 1)).collect();
    v.into_iter().collect()
}

/// Byte positions to flip in a file of `len` bytes: all of them up to 512 bytes, else an
/// even spread of 129 including the first and the last (each flip costs a full verify).
fn positions(len: usize) -> Vec<usize> {
    if len <= 512 {
        (0..len).collect()
    } else {
        spread(len, 129)
    }
}

/// (position, mask) flips for a file of `len` bytes: every position of [`positions`] with
/// 0x01 (subtle: a hex digit stays a hex digit), and a spread of 64 with 0x20 (letter case)
/// and 0xff (inversion).
fn flips(len: usize) -> Vec<(usize, u8)> {
    let mut v: Vec<(usize, u8)> = positions(len).into_iter().map(|p| (p, 0x01)).collect();
    for p in spread(len, 32) {
        v.push((p, 0x20));
        v.push((p, 0xff));
    }
    v
}

/// Flips single bytes of a file in place and puts them back, without rewriting the file.
struct InPlace {
    file: std::fs::File,
    orig: Vec<u8>,
}

impl InPlace {
    fn open(path: &Path) -> InPlace {
        InPlace {
            orig: std::fs::read(path).unwrap(),
            file: std::fs::OpenOptions::new().write(true).open(path).unwrap(),
        }
    }
    fn flip(&self, pos: usize, mask: u8) {
        self.file.write_all_at(&[self.orig[pos] ^ mask], pos as u64).unwrap();
    }
    fn restore(&self, pos: usize) {
        self.file.write_all_at(&[self.orig[pos]], pos as u64).unwrap();
    }
}

fn with_byte_flipped(bytes: &[u8], pos: usize, mask: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[pos] ^= mask;
    b
}

fn entry_digest(dir: &Path, rel: &str) -> String {
    let bj: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap();
    bj["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == rel)
        .unwrap_or_else(|| panic!("{rel} not in bundle.json"))["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------
// Hand-made tar archives
// ---------------------------------------------------------------------------

/// One tar entry, written with its raw name bytes (GNU long names only for legit long paths).
#[derive(Clone)]
struct Raw {
    name: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    link: Option<Vec<u8>>,
    device: Option<(u32, u32)>,
    data: Vec<u8>,
}

impl Raw {
    fn file(name: &str, mode: u32, data: &[u8]) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            mode,
            link: None,
            device: None,
            data: data.to_vec(),
        }
    }
    fn dir(name: &str) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Directory,
            mode: 0o755,
            link: None,
            device: None,
            data: Vec::new(),
        }
    }
    fn link(kind: tar::EntryType, name: &str, target: &str) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o777,
            link: Some(target.as_bytes().to_vec()),
            device: None,
            data: Vec::new(),
        }
    }
    fn special(kind: tar::EntryType, name: &str, device: Option<(u32, u32)>) -> Raw {
        Raw {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            link: None,
            device,
            data: Vec::new(),
        }
    }
    fn name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

fn tar_bytes(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(e.data.len() as u64);
        if let Some((major, minor)) = e.device {
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
        }
        if let Some(l) = &e.link {
            let g = h.as_gnu_mut().unwrap();
            assert!(l.len() < g.linkname.len());
            g.linkname = [0; 100];
            g.linkname[..l.len()].copy_from_slice(l);
        }
        if e.name.len() < 100 {
            let g = h.as_gnu_mut().unwrap();
            g.name = [0; 100];
            g.name[..e.name.len()].copy_from_slice(&e.name);
            h.set_cksum();
            b.append(&h, e.data.as_slice()).unwrap();
        } else {
            // Long legit paths: let the tar crate write a GNU long-name entry.
            let p = Path::new(std::ffi::OsStr::from_bytes(&e.name));
            b.append_data(&mut h, p, e.data.as_slice()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn zstd_bytes(plain: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(plain).unwrap();
    enc.finish().unwrap()
}

/// The entries of an unpacked bundle directory as kbundle packs them: `<NAME>/`, every
/// directory and file sorted by path, modes as on disk.
fn dir_entries(dir: &Path) -> Vec<Raw> {
    support::bundles::members_of(dir, NAME)
        .into_iter()
        .map(|m| {
            if m.dir {
                Raw::dir(&m.name)
            } else {
                Raw::file(&m.name, m.mode, &m.data)
            }
        })
        .collect()
}

/// Packs an (edited) bundle directory into `out` (`.tar.zst` when `zstd`), no sidecar.
fn pack_dir(dir: &Path, out: &Path, zstd: bool) {
    let t = tar_bytes(&dir_entries(dir));
    std::fs::write(out, if zstd { zstd_bytes(&t) } else { t }).unwrap();
}

/// Copies a bundle directory (modes kept).
fn copy_dir(from: &Path, to: &Path) {
    for (rel, p) in files_of(from) {
        let dst = to.join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&p, &dst).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Single-byte flips
// ---------------------------------------------------------------------------

#[test]
fn every_byte_flip_in_an_unpacked_bundle_is_caught_and_named() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("unpacked");
    assert_verifies(&dir);
    let files = files_of(&dir);
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    for want in ["bundle.json", "SHA256SUMS", "kbundle", "kbundle.lock", KUBEADM] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let mut failures = Vec::new();
    let mut n_flips = 0usize;
    for (rel, path) in &files {
        let file = InPlace::open(path);
        let orig = &file.orig;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        let meta = rel == "bundle.json" || rel == "SHA256SUMS";
        let expected = (!meta).then(|| entry_digest(&dir, rel));
        for (pos, mask) in flips(orig.len()) {
            file.flip(pos, mask);
            n_flips += 1;
            let p = problems(&dir);
            file.restore(pos);
            let flipped = with_byte_flipped(orig, pos, mask);
            if p.is_empty() {
                failures.push(format!("{rel} @{pos} ^{mask:#04x}: not caught"));
            } else if let Some(expected) = &expected {
                let actual = hex(&flipped);
                let named = p
                    .iter()
                    .any(|t| t.contains(rel.as_str()) && t.contains(expected) && t.contains(&actual));
                if !named {
                    failures.push(format!(
                        "{rel} @{pos} ^{mask:#04x}: no problem names the path, expected {expected} and actual {actual}: {p:?}"
                    ));
                }
                if let Some(other) = p.iter().find(|t| !t.contains(rel.as_str())) {
                    failures.push(format!(
                        "{rel} @{pos} ^{mask:#04x}: a problem blames something else: {other}"
                    ));
                }
            } else if !p.iter().any(|t| t.contains(rel.as_str())) {
                failures.push(format!("{rel} @{pos} ^{mask:#04x}: no problem mentions {rel}: {p:?}"));
            }
        }
        assert_eq!(std::fs::read(path).unwrap(), *orig, "{rel}: not restored");
        assert_eq!(
            std::fs::metadata(path).unwrap().permissions().mode(),
            mode,
            "{rel}: mode changed by the rewrite"
        );
    }
    assert_verifies(&dir);
    assert!(n_flips > 2_000, "only {n_flips} flips");
    assert!(
        failures.is_empty(),
        "{} of {n_flips} flips not caught or not named; first 20:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

/// Positions to flip in an archive: all of them up to 64 KiB, else 513 spread evenly, plus
/// the first and last 64 (headers and trailers: zstd's frame header and content checksum,
/// gzip's header and CRC-32).
fn archive_positions(len: usize) -> Vec<usize> {
    if len <= 64 << 10 {
        return (0..len).collect();
    }
    let mut v: BTreeSet<usize> = spread(len, 513).into_iter().collect();
    v.extend(0..64);
    v.extend(len - 64..len);
    v.into_iter().collect()
}

/// Flips each of [`archive_positions`] of `archive` with `mask` (restoring it after each) and
/// returns how many were flipped and those for which verify reported nothing.
fn uncaught_flips(archive: &Path, mask: u8) -> (usize, Vec<usize>) {
    let file = InPlace::open(archive);
    let mut uncaught = Vec::new();
    let ps = archive_positions(file.orig.len());
    for &pos in &ps {
        file.flip(pos, mask);
        if problems(archive).is_empty() {
            uncaught.push(pos);
        }
        file.restore(pos);
    }
    assert_eq!(std::fs::read(archive).unwrap(), file.orig, "not restored");
    (ps.len(), uncaught)
}

/// Describes positions as ranges (`a-b`), for messages.
fn ranges(ps: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ps.len() {
        let mut j = i;
        while j + 1 < ps.len() && ps[j + 1] == ps[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ps[i].to_string()
        } else {
            format!("{}-{}", ps[i], ps[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

#[test]
fn every_byte_flip_in_the_archive_is_caught_with_its_sidecar() {
    let fx = Fixture::new("zstd");
    let sidecar = PathBuf::from(format!("{}.sha256", fx.archive.display()));
    assert!(sidecar.is_file());
    assert_verifies(&fx.archive);
    let len = std::fs::metadata(&fx.archive).unwrap().len() as usize;
    // One flip, checked closely: the sidecar mismatch is named with both digests.
    let orig = std::fs::read(&fx.archive).unwrap();
    let flipped = with_byte_flipped(&orig, orig.len() / 2, 0x01);
    std::fs::write(&fx.archive, &flipped).unwrap();
    let p = problems(&fx.archive);
    assert!(
        p.iter()
            .any(|t| t.contains(&hex(&orig)) && t.contains(&hex(&flipped)) && t.contains(".sha256")),
        "{p:#?}"
    );
    std::fs::write(&fx.archive, &orig).unwrap();
    for mask in [0x01u8, 0xff] {
        let (n, uncaught) = uncaught_flips(&fx.archive, mask);
        assert_eq!(n, archive_positions(len).len());
        assert!(n >= len.min(500), "{n} flips for {len} bytes");
        assert!(
            uncaught.is_empty(),
            "^{mask:#04x}: {} of {n} flips not caught with the sidecar present: {}",
            uncaught.len(),
            ranges(&uncaught)
        );
    }
    assert_verifies(&fx.archive);
}

/// Decompresses a whole archive the way `zstd -d`/`gzip -d` would: to the end of the stream,
/// checking the content checksum (zstd) or CRC-32 and length (gzip).
fn reference_decode(bytes: &[u8], zstd: bool) -> Option<Vec<u8>> {
    if zstd {
        zstd::stream::decode_all(bytes).ok()
    } else {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).ok()?;
        Some(out)
    }
}

/// Without a sidecar only the compression's own checks (zstd's content checksum, gzip's
/// CRC-32) and the digests inside the bundle stand between a flip and a clean verify. A flip
/// must be caught unless the archive still decompresses, checksum and all, to exactly the
/// same tar stream (zstd and deflate have bits that change nothing, e.g. zstd's window
/// descriptor): those are listed as harmless.
fn check_flips_without_sidecar(compression: &str) {
    let zstd = compression == "zstd";
    let fx = Fixture::new(compression);
    std::fs::remove_file(format!("{}.sha256", fx.archive.display())).unwrap();
    assert_verifies(&fx.archive);
    let orig = std::fs::read(&fx.archive).unwrap();
    let plain = reference_decode(&orig, zstd).expect("decompress the good archive");
    let mut harmful = Vec::new();
    for mask in [0x01u8, 0xff] {
        let (n, uncaught) = uncaught_flips(&fx.archive, mask);
        let (same, differs): (Vec<usize>, Vec<usize>) = uncaught
            .iter()
            .partition(|&&pos| reference_decode(&with_byte_flipped(&orig, pos, mask), zstd).as_ref() == Some(&plain));
        eprintln!(
            "{compression} ^{mask:#04x}: {n} flips; {} not caught, all harmless (same tar stream): {}",
            same.len(),
            ranges(&same)
        );
        if !differs.is_empty() {
            harmful.push(format!(
                "^{mask:#04x}: {} of {n} flips not caught although the archive no longer decompresses \
                 cleanly to the same bytes (archive is {} bytes; {}): {}",
                differs.len(),
                orig.len(),
                if zstd {
                    "the last 4 are zstd's content checksum"
                } else {
                    "the last 8 are gzip's CRC-32 and length"
                },
                ranges(&differs)
            ));
        }
    }
    assert_verifies(&fx.archive);
    assert!(
        harmful.is_empty(),
        "{compression} without a sidecar: the stream's own checksum must catch every flip that matters:\n{}",
        harmful.join("\n")
    );
}

#[test]
fn every_byte_flip_in_the_archive_is_caught_without_its_sidecar() {
    check_flips_without_sidecar("zstd");
}

#[test]
fn every_byte_flip_in_a_gzip_archive_is_caught_without_its_sidecar() {
    check_flips_without_sidecar("gzip");
}

#[test]
fn flips_in_file_contents_of_an_uncompressed_archive_are_caught_and_named() {
    let fx = Fixture::new("none");
    std::fs::remove_file(format!("{}.sha256", fx.archive.display())).unwrap();
    assert_verifies(&fx.archive);
    let orig = std::fs::read(&fx.archive).unwrap();
    assert_eq!(&orig[257..262], b"ustar", "a tar archive");
    let dir = fx.unpacked("unpacked");

    // Where each file's content lies in the archive (with long names resolved), and every
    // header block and GNU long-name record (raw entries).
    let mut contents: Vec<(String, usize, usize)> = Vec::new();
    let mut headers: Vec<usize> = Vec::new();
    let mut long_names: Vec<(usize, usize)> = Vec::new();
    {
        let mut ar = tar::Archive::new(std::io::Cursor::new(&orig));
        for e in ar.entries_with_seek().unwrap() {
            let e = e.unwrap();
            if e.header().entry_type().is_file() {
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let rel = name.strip_prefix(&format!("{NAME}/")).unwrap().to_string();
                contents.push((rel, e.raw_file_position() as usize, e.size() as usize));
            }
        }
        let mut ar = tar::Archive::new(std::io::Cursor::new(&orig));
        for e in ar.entries_with_seek().unwrap().raw(true) {
            let e = e.unwrap();
            let start = e.raw_file_position() as usize;
            headers.push(start - 512);
            if e.header().entry_type().is_gnu_longname() {
                long_names.push((start, e.size() as usize));
            }
        }
    }
    assert_eq!(contents.len(), files_of(&dir).len());
    assert!(!long_names.is_empty(), "the bundle has paths over 100 bytes");

    let file = InPlace::open(&fx.archive);
    let mut failures = Vec::new();
    let mut n_flips = 0;
    for (rel, start, size) in &contents {
        let meta = rel == "bundle.json" || rel == "SHA256SUMS";
        let expected = (!meta).then(|| entry_digest(&dir, rel));
        let content = &orig[*start..start + size];
        for (pos, mask) in flips(*size) {
            file.flip(start + pos, mask);
            n_flips += 1;
            let p = problems(&fx.archive);
            file.restore(start + pos);
            let ok = match &expected {
                Some(expected) => {
                    let actual = hex(&with_byte_flipped(content, pos, mask));
                    p.iter()
                        .any(|t| t.contains(rel.as_str()) && t.contains(expected) && t.contains(&actual))
                }
                None => p.iter().any(|t| t.contains(rel.as_str())),
            };
            if !ok {
                failures.push(format!("{rel} +{pos} ^{mask:#04x}: {p:?}"));
            }
        }
    }
    // Every byte of every header block too (the tar header checksum covers them).
    // (all 512 bytes of the first header, a spread of 16 of the others)
    for (i, h) in headers.iter().enumerate() {
        let ps = if i < 1 { (0..512).collect() } else { spread(512, 16) };
        for pos in ps.into_iter().map(|p| h + p) {
            file.flip(pos, 0x01);
            n_flips += 1;
            if problems(&fx.archive).is_empty() {
                failures.push(format!("header at {h}: byte {pos} ^0x01 not caught"));
            }
            file.restore(pos);
        }
    }
    // Every byte of every GNU long-name record (a path over 100 bytes).
    for (start, size) in &long_names {
        for pos in *start..start + size {
            file.flip(pos, 0x01);
            n_flips += 1;
            if problems(&fx.archive).is_empty() {
                failures.push(format!("long name at {start}: byte {pos} ^0x01 not caught"));
            }
            file.restore(pos);
        }
    }
    // The end-of-archive blocks (and anything after them) must stay zeros: flips there are
    // caught. The zero padding between an entry's content and the next header holds no data:
    // flips there are counted, not required.
    let end = headers
        .iter()
        .map(|h| h + 512)
        .chain(
            contents
                .iter()
                .map(|(_, start, size)| (start + size).div_ceil(512) * 512),
        )
        .max()
        .unwrap();
    assert!(orig.len() >= end + 1024 && orig[end..].iter().all(|b| *b == 0));
    for pos in spread(orig.len() - end, 512).into_iter().map(|p| end + p) {
        file.flip(pos, 0x01);
        n_flips += 1;
        if problems(&fx.archive).is_empty() {
            failures.push(format!("end-of-archive block: byte {pos} ^0x01 not caught"));
        }
        file.restore(pos);
    }
    let mut covered = vec![false; end];
    for h in &headers {
        covered[*h..h + 512].iter_mut().for_each(|c| *c = true);
    }
    for (_, start, size) in &contents {
        covered[*start..start + size].iter_mut().for_each(|c| *c = true);
    }
    for (start, size) in &long_names {
        covered[*start..start + size].iter_mut().for_each(|c| *c = true);
    }
    let padding: Vec<usize> = (0..end).filter(|&i| !covered[i]).collect();
    let sample: Vec<usize> = spread(padding.len(), 1000).into_iter().map(|i| padding[i]).collect();
    let mut uncaught = 0;
    for &pos in &sample {
        file.flip(pos, 0x01);
        if problems(&fx.archive).is_empty() {
            uncaught += 1;
        }
        file.restore(pos);
    }
    eprintln!(
        "tar of {} bytes, end-of-archive marker at {end}: {} bytes of padding between entries, {} flipped, {uncaught} not caught",
        orig.len(),
        padding.len(),
        sample.len(),
    );
    assert_eq!(std::fs::read(&fx.archive).unwrap(), orig, "not restored");
    assert_verifies(&fx.archive);
    assert!(
        failures.is_empty(),
        "{} of {n_flips} flips not caught or not named; first 20:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

// ---------------------------------------------------------------------------
// Hostile archives
// ---------------------------------------------------------------------------

/// Where the hostile entries go among a good bundle's entries.
#[derive(Clone, Copy, Debug)]
enum At {
    /// Before everything, even the top directory.
    Start,
    /// Right after the top directory entry.
    AfterTop,
    /// After every good entry.
    End,
}

struct Hostile {
    label: &'static str,
    entries: Vec<Raw>,
    /// The good entry to drop (when a hostile entry replaces it).
    replaces: Option<&'static str>,
    /// The entry that must be named, and the reason.
    entry: String,
    reason: &'static str,
    places: &'static [At],
}

fn hostile_cases() -> Vec<Hostile> {
    use tar::EntryType as T;
    let top = |p: &str| format!("{NAME}/{p}");
    let both: &'static [At] = &[At::AfterTop, At::End];
    vec![
        Hostile {
            label: "absolute",
            entries: vec![Raw::file("/etc/x", 0o644, b"owned\n")],
            replaces: None,
            entry: "/etc/x".into(),
            reason: "absolute path",
            places: both,
        },
        Hostile {
            label: "dotdot",
            entries: vec![Raw::file(&top("../../escape"), 0o644, b"escaped\n")],
            replaces: None,
            entry: top("../../escape"),
            reason: "'..' path component",
            places: both,
        },
        Hostile {
            label: "symlink-dotdot",
            entries: vec![
                Raw::link(T::Symlink, &top("l"), "../../etc"),
                Raw::file(&top("l/x"), 0o644, b"through the link\n"),
            ],
            replaces: None,
            entry: top("l"),
            reason: "leaves the bundle",
            places: both,
        },
        Hostile {
            label: "symlink-absolute",
            entries: vec![Raw::link(T::Symlink, &top("l"), "/etc/passwd")],
            replaces: None,
            entry: top("l"),
            reason: "leaves the bundle",
            places: both,
        },
        Hostile {
            label: "symlink-inside",
            entries: vec![Raw::link(T::Symlink, &top("files/l"), "../kbundle")],
            replaces: None,
            entry: top("files/l"),
            reason: "bundles hold only regular files and directories",
            places: both,
        },
        Hostile {
            label: "hardlink-inside",
            entries: vec![Raw::link(T::Link, &top("h"), &top("kbundle"))],
            replaces: None,
            entry: top("h"),
            reason: "hard link",
            places: both,
        },
        Hostile {
            label: "hardlink-passwd",
            entries: vec![Raw::link(T::Link, &top("h"), "/etc/passwd")],
            replaces: None,
            entry: top("h"),
            reason: "hard link",
            places: both,
        },
        Hostile {
            label: "chardev",
            entries: vec![Raw::special(T::Char, &top("null"), Some((1, 3)))],
            replaces: None,
            entry: top("null"),
            reason: "device file",
            places: both,
        },
        Hostile {
            label: "blockdev",
            entries: vec![Raw::special(T::Block, &top("sda"), Some((8, 0)))],
            replaces: None,
            entry: top("sda"),
            reason: "device file",
            places: both,
        },
        Hostile {
            label: "fifo",
            entries: vec![Raw::special(T::Fifo, &top("fifo"), None)],
            replaces: None,
            entry: top("fifo"),
            reason: "FIFO",
            places: both,
        },
        Hostile {
            label: "setuid",
            entries: vec![Raw::file(&top("kbundle"), 0o4755, b"#!/bin/sh\nid\n")],
            replaces: Some("kbundle"),
            entry: top("kbundle"),
            reason: "setuid/setgid/sticky bits in mode 4755",
            places: both,
        },
        Hostile {
            label: "setgid",
            entries: vec![Raw::file(&top("kbundle"), 0o2755, b"#!/bin/sh\nid\n")],
            replaces: Some("kbundle"),
            entry: top("kbundle"),
            reason: "setuid/setgid/sticky bits in mode 2755",
            places: both,
        },
        Hostile {
            label: "second-top",
            entries: vec![Raw::dir("other/"), Raw::file("other/x", 0o644, b"x\n")],
            replaces: None,
            entry: "other/".into(),
            reason: "outside the bundle's top directory",
            places: both,
        },
        Hostile {
            label: "duplicate",
            entries: vec![Raw::file(&top("kbundle"), 0o755, b"#!/bin/sh\nevil\n")],
            replaces: None,
            entry: top("kbundle"),
            reason: "duplicate entry",
            places: both,
        },
        Hostile {
            label: "top-level-file",
            entries: vec![Raw::file("x", 0o644, b"x\n")],
            replaces: None,
            entry: "x".into(),
            reason: "outside the bundle's top directory",
            places: both,
        },
        Hostile {
            label: "top-level-file-first",
            entries: vec![Raw::file("x", 0o644, b"x\n")],
            replaces: None,
            entry: "x".into(),
            reason: "a file where the top directory belongs",
            places: &[At::Start],
        },
    ]
}

fn hostile_archive(good: &[Raw], h: &Hostile, at: At) -> Vec<Raw> {
    let mut v: Vec<Raw> = good
        .iter()
        .filter(|e| h.replaces.is_none_or(|r| e.name() != format!("{NAME}/{r}")))
        .cloned()
        .collect();
    let i = match at {
        At::Start => 0,
        At::AfterTop => 1,
        At::End => v.len(),
    };
    v.splice(i..i, h.entries.iter().cloned());
    v
}

#[test]
fn hostile_archives_are_refused_by_verify_and_unpack() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("good");
    let good = dir_entries(&dir);
    // The hand packer's output is itself a good bundle.
    let control = fx.path("control.tar.zst");
    std::fs::write(&control, zstd_bytes(&tar_bytes(&good))).unwrap();
    assert_verifies(&control);

    let etc_x = Path::new("/etc/x");
    let etc_x_before = etc_x.exists();
    let passwd_before = std::fs::read("/etc/passwd").ok();
    std::fs::create_dir_all(fx.path("hostile")).unwrap();
    let mut n = 0;
    let mut failures = Vec::new();
    for h in hostile_cases() {
        for &at in h.places {
            let t = tar_bytes(&hostile_archive(&good, &h, at));
            for (ext, bytes) in [("tar.zst", zstd_bytes(&t)), ("tar", t.clone())] {
                n += 1;
                let what = format!("{} {at:?} .{ext}", h.label);
                let archive = fx.path(&format!("hostile/{}-{at:?}.{ext}", h.label));
                std::fs::write(&archive, &bytes).unwrap();

                // verify: exit 1, the entry and the reason named.
                let o = kbundle(&["verify", s(&archive)]);
                let err = stderr(&o);
                if o.status.code() != Some(1) {
                    failures.push(format!("{what}: verify: {}", text(&o)));
                } else if !(err.contains(&format!("unsafe: {}: ", h.entry)) && err.contains(h.reason)) {
                    failures.push(format!(
                        "{what}: verify does not name {:?} and {:?}: {err}",
                        h.entry, h.reason
                    ));
                }

                // unpack: fails, DEST empty, nothing written beside it.
                let parent = fx.path(&format!("u{n}"));
                std::fs::create_dir_all(&parent).unwrap();
                let dest = parent.join("dest");
                let o = kbundle(&["unpack", s(&archive), s(&dest)]);
                let err = stderr(&o);
                if o.status.success() {
                    failures.push(format!("{what}: unpack succeeded: {}", text(&o)));
                } else if !(err.contains(&h.entry) && err.contains(h.reason)) {
                    failures.push(format!(
                        "{what}: unpack does not name {:?} and {:?}: {err}",
                        h.entry, h.reason
                    ));
                }
                let beside = dir_names(&parent);
                if !(beside.is_empty() || beside == ["dest"]) {
                    failures.push(format!("{what}: unpack wrote beside DEST: {beside:?}"));
                }
                let inside = dir_names(&dest);
                if !inside.is_empty() {
                    failures.push(format!("{what}: DEST not empty: {inside:?}"));
                }
            }
        }
    }
    // Nothing escaped anywhere under the test's temp dir, nor to /etc.
    let escaped: Vec<PathBuf> = all_names(fx.tmp.path())
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n == "escape" || n == "x" || n == "etc" || n == "l"
        })
        .collect();
    assert!(escaped.is_empty(), "written by hostile archives: {escaped:?}");
    assert_eq!(etc_x.exists(), etc_x_before, "/etc/x appeared");
    assert_eq!(std::fs::read("/etc/passwd").ok(), passwd_before, "/etc/passwd changed");
    assert!(n >= 50, "only {n} hostile archives");
    assert!(
        failures.is_empty(),
        "{} of {n} hostile archives mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn unsafe_files_in_an_unpacked_directory_are_reported() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("unpacked");
    std::os::unix::fs::symlink("../kbundle", dir.join("files/l")).unwrap();
    let o = Command::new("mkfifo").arg(dir.join("files/fifo")).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = kbundle(&["verify", s(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("unsafe: files/l: symbolic link"), "{}", text(&o));
    assert!(err.contains("unsafe: files/fifo: not a regular file"), "{}", text(&o));
}

// ---------------------------------------------------------------------------
// Missing, extra, changed, edited
// ---------------------------------------------------------------------------

/// Applies `edit` to a copy of the bundle directory, then runs `kbundle verify` on that
/// directory and on an archive packed from it (no sidecar), expecting exit 1 and every
/// line of `want` (each prefixed with the path given to verify) on stderr, and exactly
/// `n_problems` problems.
fn check_edit(fx: &Fixture, label: &str, edit: impl Fn(&Path), want: &[String], n_problems: usize) {
    check_edit_each(fx, label, edit, want, want, n_problems);
}

/// [`check_edit`] with different expected lines for the directory and the archive.
fn check_edit_each(
    fx: &Fixture,
    label: &str,
    edit: impl Fn(&Path),
    want_dir: &[String],
    want_archive: &[String],
    n_problems: usize,
) {
    let good = fx.unpacked(&format!("{label}-src"));
    let dir = fx.path(&format!("{label}/{NAME}"));
    copy_dir(&good, &dir);
    assert_verifies(&dir);
    edit(&dir);
    let archive = fx.path(&format!("{label}.tar.zst"));
    pack_dir(&dir, &archive, true);
    for (target, want) in [(&dir, want_dir), (&archive, want_archive)] {
        let o = kbundle(&["verify", s(target)]);
        assert_eq!(o.status.code(), Some(1), "{label}: {}", text(&o));
        let err = stderr(&o);
        for w in want {
            let line = format!("{}: {w}", target.display());
            assert!(
                err.lines().any(|l| l == line),
                "{label}: missing line\n  {line}\n{}",
                text(&o)
            );
        }
        assert!(
            err.contains(&format!("FAILED {}: {n_problems} problem(s)", target.display())),
            "{label}: want {n_problems} problem(s)\n{}",
            text(&o)
        );
        assert!(o.stdout.is_empty(), "{}", text(&o));
    }
}

#[test]
fn missing_file_is_reported() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("ref");
    let d = entry_digest(&dir, KUBEADM);
    check_edit(
        &fx,
        "missing",
        |dir| std::fs::remove_file(dir.join(KUBEADM)).unwrap(),
        &[format!("missing: {KUBEADM} (expected sha256 {d})")],
        1,
    );
    // The lockfile too (a meta entry), and the installer.
    let d = entry_digest(&dir, "kbundle.lock");
    check_edit(
        &fx,
        "missing-lock",
        |dir| std::fs::remove_file(dir.join("kbundle.lock")).unwrap(),
        &[format!("missing: kbundle.lock (expected sha256 {d})")],
        1,
    );
}

#[test]
fn extra_file_is_reported() {
    let fx = Fixture::new("zstd");
    check_edit(
        &fx,
        "extra",
        |dir| {
            std::fs::create_dir_all(dir.join("files/evil")).unwrap();
            std::fs::write(dir.join("files/evil/payload.sh"), "#!/bin/sh\n").unwrap();
            std::fs::write(dir.join("README"), "hi\n").unwrap();
        },
        &[
            "extra: files/evil/payload.sh is not listed in bundle.json".into(),
            "extra: README is not listed in bundle.json".into(),
        ],
        2,
    );
}

#[test]
fn changed_file_is_reported_with_both_digests() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("ref");
    let orig = std::fs::read(dir.join(KUBECTL)).unwrap();
    let expected = entry_digest(&dir, KUBECTL);
    // Same size, different bytes.
    let same_size = orig.iter().rev().copied().collect::<Vec<u8>>();
    let actual = hex(&same_size);
    check_edit(
        &fx,
        "changed",
        |dir| std::fs::write(dir.join(KUBECTL), &same_size).unwrap(),
        &[format!(
            "changed: {KUBECTL}: expected sha256 {expected}, actual {actual}"
        )],
        1,
    );
    // Longer: the size is reported without reading the file (a directory), and an archive
    // stops at the entry that is bigger than bundle.json says (bounded work).
    let mut longer = orig.clone();
    longer.extend_from_slice(b"echo appended\n");
    check_edit_each(
        &fx,
        "longer",
        |dir| std::fs::write(dir.join(KUBECTL), &longer).unwrap(),
        &[format!(
            "changed: {KUBECTL}: expected {} bytes, actual {} bytes",
            orig.len(),
            longer.len()
        )],
        &[format!(
            "unsafe: {NAME}/{KUBECTL}: {} bytes in the archive, but bundle.json says {} bytes; stopped reading",
            longer.len(),
            orig.len()
        )],
        1,
    );
}

#[test]
fn edited_sha256sums_line_is_reported() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("ref");
    let real = entry_digest(&dir, KUBEADM);
    let fake = Sha256::of(b"not kubeadm").hex();
    check_edit(
        &fx,
        "sums",
        |dir| {
            let p = dir.join("SHA256SUMS");
            let t = std::fs::read_to_string(&p).unwrap();
            let line = format!("{real}  {KUBEADM}\n");
            assert!(t.contains(&line), "{t}");
            std::fs::write(&p, t.replace(&line, &format!("{fake}  {KUBEADM}\n"))).unwrap();
        },
        &[format!(
            "SHA256SUMS: {KUBEADM}: SHA256SUMS says {fake}, bundle.json says {real}"
        )],
        1,
    );
    // A line removed.
    check_edit(
        &fx,
        "sums-line-removed",
        |dir| {
            let p = dir.join("SHA256SUMS");
            let t = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, t.replace(&format!("{real}  {KUBEADM}\n"), "")).unwrap();
        },
        &[format!("SHA256SUMS: {KUBEADM}: in bundle.json but not in SHA256SUMS")],
        1,
    );
}

#[test]
fn edited_bundle_json_is_reported() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("ref");
    let orig = std::fs::read_to_string(dir.join("bundle.json")).unwrap();
    // A field that changes nothing else (a changed name also no longer matches the
    // archive's top directory, which is its own problem).
    let from = format!("\"kbundle_version\": \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(orig.contains(&from), "{orig}");
    let edited = orig.replace(&from, "\"kbundle_version\": \"99.0.0\"");
    check_edit(
        &fx,
        "bundle-json",
        |dir| std::fs::write(dir.join("bundle.json"), &edited).unwrap(),
        &[format!(
            "SHA256SUMS: bundle.json: bundle.json was changed: SHA256SUMS says {}, actual {}",
            hex(orig.as_bytes()),
            hex(edited.as_bytes())
        )],
        1,
    );
    // A tampered file with bundle.json updated to match is still caught via SHA256SUMS.
    let kubectl = std::fs::read(dir.join(KUBECTL)).unwrap();
    let evil = b"#!/bin/sh\necho evil\n".to_vec();
    // Only kubectl's entry: other entries may have the same size.
    let at = orig.find(&format!("\"path\": \"{KUBECTL}\"")).unwrap();
    let (head, tail) = orig.split_at(at);
    let size = format!("\"size\": {},", kubectl.len());
    assert!(tail.contains(&size), "{tail}");
    let edited = format!(
        "{head}{}",
        tail.replacen(&size, &format!("\"size\": {},", evil.len()), 1)
    )
    .replace(&hex(&kubectl), &hex(&evil));
    check_edit(
        &fx,
        "bundle-json-consistent",
        |dir| {
            std::fs::write(dir.join(KUBECTL), &evil).unwrap();
            std::fs::write(dir.join("bundle.json"), &edited).unwrap();
        },
        &[
            format!(
                "SHA256SUMS: bundle.json: bundle.json was changed: SHA256SUMS says {}, actual {}",
                hex(orig.as_bytes()),
                hex(edited.as_bytes())
            ),
            format!(
                "SHA256SUMS: {KUBECTL}: SHA256SUMS says {}, bundle.json says {}",
                hex(&kubectl),
                hex(&evil)
            ),
        ],
        2,
    );
}

#[test]
fn executable_that_lost_its_exec_bit_is_reported() {
    let fx = Fixture::new("zstd");
    for (label, rel) in [("noexec-installer", "kbundle"), ("noexec-kubeadm", KUBEADM)] {
        check_edit(
            &fx,
            label,
            |dir| std::fs::set_permissions(dir.join(rel), std::fs::Permissions::from_mode(0o644)).unwrap(),
            &[format!("mode: {rel} should be executable")],
            1,
        );
    }
}

// ---------------------------------------------------------------------------
// unpack, inspect
// ---------------------------------------------------------------------------

#[test]
fn unpacked_bundle_passes_sha256sum_check() {
    let fx = Fixture::new("zstd");
    let dest = fx.path("dest");
    let o = kbundle(&["unpack", s(&fx.archive), s(&dest)]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = dest.join(NAME);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), s(&dir));
    assert_eq!(dir_names(&dest), [NAME], "no temp dirs left");
    let c = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
    // sha256sum checked every file but SHA256SUMS itself.
    let ok_lines = String::from_utf8_lossy(&c.stdout)
        .lines()
        .filter(|l| l.ends_with(": OK"))
        .count();
    assert_eq!(ok_lines, files_of(&dir).len() - 1, "{}", text(&c));
    // Modes: 0755 directories and executables, 0644 the rest.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&dir.join("kbundle")), 0o755);
    assert_eq!(mode(&dir.join(KUBEADM)), 0o755);
    assert_eq!(mode(&dir.join("bundle.json")), 0o644);
    assert_eq!(mode(&dir.join("files")), 0o755);
    let o = kbundle(&["verify", s(&dir)]);
    assert!(o.status.success(), "{}", text(&o));
    // The same bytes as the archive holds: repacking them gives a verifying archive.
    let repacked = fx.path("repacked.tar.zst");
    pack_dir(&dir, &repacked, true);
    assert_verifies(&repacked);
}

/// The archive, its sidecar and the lockfile are files to hand around (copy across the air
/// gap, serve over HTTP, verify as another user): they get the usual `0666 & !umask` mode,
/// like files `tar`, `zstd -o` or `sha256sum > f` create, not a temp file's 0600.
#[test]
fn archive_sidecar_and_lockfile_are_readable_by_others() {
    let fx = Fixture::new("zstd");
    let umask = Command::new("sh").args(["-c", "umask"]).output().unwrap();
    let umask = u32::from_str_radix(String::from_utf8_lossy(&umask.stdout).trim(), 8).unwrap();
    let want = 0o666 & !umask;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let sidecar = PathBuf::from(format!("{}.sha256", fx.archive.display()));
    let lock = fx.path(&format!("m/{NAME}.lock"));
    let got: Vec<String> = [&fx.archive, &sidecar, &lock]
        .iter()
        .map(|p| format!("{:o} {}", mode(p), p.display()))
        .collect();
    assert!(
        got.iter().all(|g| g.starts_with(&format!("{want:o} "))),
        "umask {umask:03o}: want mode {want:o} for each of:\n{}",
        got.join("\n")
    );
}

#[test]
fn unpack_refuses_an_existing_destination_without_touching_it() {
    let fx = Fixture::new("zstd");
    let dest = fx.path("dest");
    let existing = dest.join(NAME);
    std::fs::create_dir_all(existing.join("files")).unwrap();
    std::fs::write(existing.join("mine.txt"), "keep me\n").unwrap();
    std::fs::write(existing.join("files/other"), "and me\n").unwrap();
    let before = files_of(&existing);
    let o = kbundle(&["unpack", s(&fx.archive), s(&dest)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains(s(&existing)) && err.contains("already exists"),
        "{}",
        text(&o)
    );
    assert_eq!(dir_names(&dest), [NAME], "no temp dirs left: {}", text(&o));
    assert_eq!(files_of(&existing), before);
    assert_eq!(std::fs::read_to_string(existing.join("mine.txt")).unwrap(), "keep me\n");
    assert_eq!(
        std::fs::read_to_string(existing.join("files/other")).unwrap(),
        "and me\n"
    );
    // An empty directory of that name is not replaced either.
    let dest2 = fx.path("dest2");
    std::fs::create_dir_all(dest2.join(NAME)).unwrap();
    let o = kbundle(&["unpack", s(&fx.archive), s(&dest2)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(dir_names(&dest2), [NAME]);
    assert!(dir_names(&dest2.join(NAME)).is_empty());
}

#[test]
fn inspect_shows_name_version_and_entries() {
    let fx = Fixture::new("zstd");
    let dir = fx.unpacked("unpacked");
    let bj: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap();
    let paths: Vec<String> = bj["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.len() >= 12, "{paths:?}");
    for target in [&fx.archive, &dir] {
        let o = kbundle(&["inspect", s(target)]);
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let line_with = |prefix: &str| out.lines().find(|l| l.starts_with(prefix));
        assert_eq!(
            line_with("bundle ").map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["bundle", NAME]),
            "{out}"
        );
        assert_eq!(
            line_with("kubernetes ").map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["kubernetes", "v1.34.3"]),
            "{out}"
        );
        assert!(out.contains(&format!("entries    {} (", paths.len())), "{out}");
        for e in bj["entries"].as_array().unwrap() {
            let p = e["path"].as_str().unwrap();
            let short = &e["sha256"].as_str().unwrap()[..12];
            assert!(
                out.lines().any(|l| l.ends_with(&format!("  {p}")) && l.contains(short)),
                "{p} not listed with its digest:\n{out}"
            );
        }
        let o = kbundle(&["inspect", "--json", s(target)]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v, bj, "inspect --json of {} is bundle.json", target.display());
        assert_eq!(v["name"], NAME);
        assert_eq!(v["kubernetes"], "v1.34.3");
    }
    // Not a bundle: a clear error, exit 1.
    let o = kbundle(&["inspect", s(&fx.path("installer"))]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// A second gzip member (or anything after tar's end marker) must not be invisible to verify:
/// `tar -xzf` would extract it.
#[test]
fn appended_gzip_member_and_pax_global_headers_are_refused() {
    let fx = Fixture::new("gzip");
    std::fs::remove_file(format!("{}.sha256", fx.archive.display())).unwrap();
    let mut extra = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    extra
        .append_data(&mut h, format!("{NAME}/EVIL"), &b"evil\n"[..])
        .unwrap();
    let extra = extra.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &extra).unwrap();
    let mut bytes = std::fs::read(&fx.archive).unwrap();
    bytes.extend(gz.finish().unwrap());
    std::fs::write(&fx.archive, &bytes).unwrap();
    let o = kbundle(&["verify", fx.archive.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // A pax global header: GNU tar would apply its path= to later entries.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut g = tar::Header::new_ustar();
    let rec = b"20 path=top/evil\n";
    g.set_size(rec.len() as u64);
    g.set_entry_type(tar::EntryType::XGlobalHeader);
    g.set_mode(0o644);
    b.append_data(&mut g, "pax_global_header", &rec[..]).unwrap();
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Directory);
    d.set_mode(0o755);
    d.set_size(0);
    b.append_data(&mut d, "top/", std::io::empty()).unwrap();
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    let o = kbundle(&["verify", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pax global header"),
        "{}",
        text(&o)
    );
}
