//! The streaming check of an archive against its own `bundle.json`, shared by `verify`
//! (which only hashes), `unpack`/`install` (which write what they hash) and `kickstart`
//! (which keeps the installer): one reader, one set of rules, one verdict.
//!
//! A bundle archive starts with `SHA256SUMS` and `bundle.json` (they sort first). Once
//! `bundle.json` is read and validated, the walk's budget is set to what it declares plus a
//! small allowance, and each entry must be listed with at least its archive size: a small
//! archive that decompresses to terabytes is stopped early with a clear error.

use super::archive::ArchiveError;
use super::meta::{BundleJson, BUNDLE_JSON, BUNDLE_JSON_SIG, MAX_META_BYTES, SHA256SUMS};
use super::verify::{Problem, Report, Seen};
use super::walk::{self, Budget, Flow, SafeEntry};
use crate::digest::{Hashing, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Bytes of slack beyond what bundle.json declares (end marker, record padding).
pub const ALLOWANCE: u64 = 1 << 20;
/// Largest entry not listed in bundle.json whose content is read (to report it as extra).
const MAX_EXTRA: u64 = 1 << 20;

/// Where the bytes of each listed entry go while they are hashed.
pub trait Sink {
    /// Consumes (part of) one listed entry's content. Whatever is not read is hashed after.
    fn entry(&mut self, rel: &str, executable: bool, content: &mut dyn Read) -> Result<(), SinkError>;
}

/// A sink's failure: reading the archive, or writing its own output.
#[derive(Debug)]
pub enum SinkError {
    Read(io::Error),
    Write(ArchiveError),
}

/// Hashes only (`verify`).
pub struct Discard;

impl Sink for Discard {
    fn entry(&mut self, _: &str, _: bool, _: &mut dyn Read) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Copies `r` into `w`, telling read failures from write failures.
pub fn copy(r: &mut dyn Read, w: &mut dyn io::Write) -> Result<u64, (bool, io::Error)> {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((true, e)),
        };
        w.write_all(&buf[..k]).map_err(|e| (false, e))?;
        n += k as u64;
    }
}

/// A reader that hashes what passes through it.
struct Hashed<'a> {
    inner: &'a mut dyn Read,
    hash: Hashing,
}

impl Read for Hashed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// The state of one check.
pub struct Checker<'s> {
    archive: PathBuf,
    budget: Budget,
    sink: &'s mut dyn Sink,
    bundle_bytes: Option<Vec<u8>>,
    sums_bytes: Option<Vec<u8>>,
    sig_bytes: Option<Vec<u8>>,
    bundle: Option<BundleJson>,
    seen: BTreeMap<String, Seen>,
    problems: Vec<Problem>,
    /// Stop as soon as bundle.json is read (`inspect`, reading a bundle's name).
    meta_only: bool,
}

/// Reads bundle.json (and SHA256SUMS if it comes first) and stops; never reads payload.
pub fn read_meta(archive: &Path) -> Result<(BundleJson, Vec<u8>), ArchiveError> {
    let mut sink = Discard;
    let mut c = Checker::new(archive, &mut sink);
    c.meta_only = true;
    let top = c.run()?;
    let bytes = c.bundle_bytes.take();
    match (c.bundle.take(), bytes) {
        (Some(b), Some(bytes)) if b.name == top.as_str() => Ok((b, bytes)),
        (Some(b), Some(_)) => Err(refused(archive, &top, top_mismatch(&top, &b))),
        _ => Err(refused(
            archive,
            BUNDLE_JSON,
            c.problems
                .first()
                .map_or("no bundle.json in the archive".into(), |p| p.to_string()),
        )),
    }
}

fn refused(archive: &Path, entry: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Refused {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

fn top_mismatch(top: &str, b: &BundleJson) -> String {
    format!(
        "the archive's top directory is {} but bundle.json names the bundle {}",
        super::fields::shown(top),
        b.name
    )
}

/// Checks `archive` entry by entry, giving listed content to `sink`; every fault of the
/// content becomes a problem in the report. `Err` only when the archive cannot be opened
/// or the sink fails to write.
pub fn check_archive(archive: &Path, sink: &mut dyn Sink) -> Result<Report, ArchiveError> {
    let mut c = Checker::new(archive, sink);
    let top = match c.run() {
        Ok(top) => top,
        Err(e @ (ArchiveError::Open { .. } | ArchiveError::Write { .. })) => return Err(e),
        Err(e) => {
            c.problems.push(Problem::from_archive_error(e));
            return Ok(Report {
                problems: c.problems,
                ..Default::default()
            });
        }
    };
    Ok(c.finish(&top))
}

impl<'s> Checker<'s> {
    fn new(archive: &Path, sink: &'s mut dyn Sink) -> Checker<'s> {
        Checker {
            archive: archive.to_path_buf(),
            budget: Budget::new(
                2 * MAX_META_BYTES + ALLOWANCE,
                "allowed before bundle.json (kbundle writes it second, after SHA256SUMS)",
            ),
            sink,
            bundle_bytes: None,
            sums_bytes: None,
            sig_bytes: None,
            bundle: None,
            seen: BTreeMap::new(),
            problems: Vec::new(),
            meta_only: false,
        }
    }

    fn run(&mut self) -> Result<String, ArchiveError> {
        let archive = self.archive.clone();
        let budget = self.budget.clone();
        walk::walk(&archive, &budget, |e, content| self.visit(e, content))
    }

    fn visit(&mut self, e: &SafeEntry, content: &mut dyn Read) -> Result<Flow, ArchiveError> {
        if e.rel == BUNDLE_JSON || e.rel == SHA256SUMS || e.rel == BUNDLE_JSON_SIG {
            return self.meta(e, content);
        }
        if self.bundle.is_none() {
            // Checked once bundle.json is known; the budget before it is small and fixed.
            self.record(e, e.executable(), content)?;
        } else {
            self.payload(e, content)?;
        }
        Ok(Flow::Continue)
    }

    fn meta(&mut self, e: &SafeEntry, content: &mut dyn Read) -> Result<Flow, ArchiveError> {
        let mut buf = Vec::new();
        content
            .take(MAX_META_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|err| walk::read_error(&self.archive, &self.budget, &e.rel, err))?;
        if buf.len() as u64 > MAX_META_BYTES {
            return Err(refused(
                &self.archive,
                &e.name,
                format!("larger than {MAX_META_BYTES} bytes"),
            ));
        }
        self.seen.insert(e.rel.clone(), seen_of(&buf, e.executable()));
        self.sink.entry(&e.rel, false, &mut &buf[..]).map_err(|err| match err {
            SinkError::Read(err) => walk::read_error(&self.archive, &self.budget, &e.rel, err),
            SinkError::Write(err) => err,
        })?;
        if e.rel == SHA256SUMS {
            self.sums_bytes = Some(buf);
            return Ok(Flow::Continue);
        }
        if e.rel == BUNDLE_JSON_SIG {
            self.sig_bytes = Some(buf);
            return Ok(Flow::Continue);
        }
        let b = BundleJson::parse(&buf).map_err(|err| refused(&self.archive, BUNDLE_JSON, err.to_string()))?;
        self.budget.set(
            self.budget.used() + declared_bytes(&b, self.sums_bytes.is_none()),
            "that bundle.json declares (plus a small allowance)",
        );
        self.bundle = Some(b);
        self.bundle_bytes = Some(buf);
        Ok(if self.meta_only { Flow::Stop } else { Flow::Continue })
    }

    fn payload(&mut self, e: &SafeEntry, content: &mut dyn Read) -> Result<(), ArchiveError> {
        let listed = self
            .bundle
            .as_ref()
            .and_then(|b| b.entry(&e.rel))
            .filter(|l| !l.in_base)
            .cloned();
        let Some(l) = listed else {
            if e.size > MAX_EXTRA {
                return Err(refused(
                    &self.archive,
                    &e.name,
                    format!("{} bytes that bundle.json does not list", e.size),
                ));
            }
            self.problems.push(Problem::Extra { path: e.rel.clone() });
            return Ok(());
        };
        if e.size > l.size {
            return Err(refused(
                &self.archive,
                &e.name,
                format!(
                    "{} bytes in the archive, but bundle.json says {} bytes; stopped reading",
                    e.size, l.size
                ),
            ));
        }
        self.record(e, l.executable, content)
    }

    /// Hashes one entry's content through the sink and remembers what was seen.
    fn record(&mut self, e: &SafeEntry, executable: bool, content: &mut dyn Read) -> Result<(), ArchiveError> {
        let mut h = Hashed {
            inner: content,
            hash: Hashing::new(),
        };
        self.sink.entry(&e.rel, executable, &mut h).map_err(|err| match err {
            SinkError::Read(err) => walk::read_error(&self.archive, &self.budget, &e.rel, err),
            SinkError::Write(err) => err,
        })?;
        io::copy(&mut h, &mut io::sink()).map_err(|err| walk::read_error(&self.archive, &self.budget, &e.rel, err))?;
        let (sha256, size) = h.hash.finish();
        self.seen.insert(
            e.rel.clone(),
            Seen {
                size,
                sha256: Some(sha256),
                executable: e.executable(),
            },
        );
        Ok(())
    }

    fn finish(mut self, top: &str) -> Report {
        if let Some(b) = &self.bundle {
            if b.name != top {
                self.problems.push(Problem::Meta {
                    detail: top_mismatch(top, b),
                });
            }
        }
        let mut report = super::verify::judge(self.bundle_bytes, self.sums_bytes, self.seen, self.problems);
        report.json_sig = self.sig_bytes;
        report
    }
}

fn seen_of(buf: &[u8], executable: bool) -> Seen {
    Seen {
        size: buf.len() as u64,
        sha256: Some(Sha256::of(buf)),
        executable,
    }
}

fn round_up(n: u64) -> u64 {
    n.saturating_add(511) / 512 * 512
}

/// An upper bound of the tar bytes still to come for what `b` declares: each packed entry
/// and directory with its header and a possible GNU long-name header, SHA256SUMS if it has
/// not been read yet, and the allowance.
pub(crate) fn declared_bytes(b: &BundleJson, sums_to_come: bool) -> u64 {
    let per_name = |len: usize| 1024 + round_up(b.name.len() as u64 + len as u64 + 2);
    let mut total = ALLOWANCE;
    let mut dirs = BTreeSet::new();
    for e in b.entries.iter().filter(|e| !e.in_base) {
        total = total.saturating_add(per_name(e.path.len()) + round_up(e.size));
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent);
            p = parent;
        }
    }
    for d in &dirs {
        total = total.saturating_add(per_name(d.len()));
    }
    if sums_to_come {
        let lines: u64 = b.entries.iter().map(|e| e.path.len() as u64 + 67).sum();
        total = total.saturating_add(per_name(SHA256SUMS.len()) + round_up(lines + 80));
    }
    total
}
