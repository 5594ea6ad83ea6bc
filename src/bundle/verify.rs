//! `kbundle verify`: every entry of `bundle.json` present with its size and sha256, nothing
//! extra, `SHA256SUMS` in agreement, and for archives the `.sha256` sidecar and safe entries.

use crate::bundle::archive::ArchiveError;
use crate::bundle::fields::esc;
use crate::bundle::meta::{self, BundleJson, BUNDLE_JSON, BUNDLE_JSON_SIG, MAX_META_BYTES, SHA256SUMS};
use crate::digest::Sha256;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One thing wrong with a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing {
        path: String,
        expected: Sha256,
    },
    Extra {
        path: String,
    },
    Changed {
        path: String,
        expected: Sha256,
        actual: Sha256,
    },
    Size {
        path: String,
        expected: u64,
        actual: u64,
    },
    NotExecutable {
        path: String,
    },
    /// An executable bit on an entry the format says is data.
    UnexpectedExecutable {
        path: String,
    },
    Sums {
        path: String,
        detail: String,
    },
    Meta {
        detail: String,
    },
    Unsafe {
        path: String,
        reason: String,
    },
    Archive {
        detail: String,
    },
    /// A missing, untrusted or bad signature (only with trusted keys).
    Signature {
        detail: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { path, expected } => {
                write!(f, "missing: {} (expected sha256 {expected})", esc(path))
            }
            Problem::Extra { path } => write!(f, "extra: {} is not listed in bundle.json", esc(path)),
            Problem::Changed { path, expected, actual } => {
                write!(f, "changed: {}: expected sha256 {expected}, actual {actual}", esc(path))
            }
            Problem::Size { path, expected, actual } => {
                write!(
                    f,
                    "changed: {}: expected {expected} bytes, actual {actual} bytes",
                    esc(path)
                )
            }
            Problem::NotExecutable { path } => write!(f, "mode: {} should be executable", esc(path)),
            Problem::UnexpectedExecutable { path } => write!(
                f,
                "mode: {} is executable, but bundle.json lists it as data (only files marked executable may be; a copy on a FAT/exFAT disk marks every file executable: verify or unpack the archive instead)",
                esc(path)
            ),
            Problem::Sums { path, detail } => write!(f, "SHA256SUMS: {}: {detail}", esc(path)),
            Problem::Meta { detail } => write!(f, "metadata: {detail}"),
            Problem::Unsafe { path, reason } => write!(f, "unsafe: {}: {reason}", esc(path)),
            Problem::Archive { detail } => write!(f, "archive: {detail}"),
            Problem::Signature { detail } => write!(f, "signature: {detail}"),
        }
    }
}

impl Problem {
    /// A fault found while reading an archive, as a problem of the report.
    pub fn from_archive_error(e: ArchiveError) -> Problem {
        match e {
            ArchiveError::Unsafe { entry, reason, .. } => Problem::Unsafe { path: entry, reason },
            ArchiveError::Refused { entry, reason, .. } if entry == BUNDLE_JSON => Problem::Meta { detail: reason },
            ArchiveError::Refused { entry, reason, .. } => Problem::Unsafe { path: entry, reason },
            e => Problem::Archive { detail: e.to_string() },
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub bundle: Option<BundleJson>,
    /// sha256 of the `bundle.json` bytes that were checked: the bundle's identity (delta
    /// bundles name their base by it; node journals are kept under it).
    pub bundle_json_sha256: Option<Sha256>,
    /// The `bundle.json` bytes that were checked (for its signature).
    pub bundle_json: Option<Vec<u8>>,
    /// `bundle.json.minisig`, when the bundle has one (checked by `signature`, not here).
    pub json_sig: Option<Vec<u8>>,
    /// Archives: whether a `.sha256` sidecar beside it was checked.
    pub sidecar_checked: bool,
    pub problems: Vec<Problem>,
    pub files_checked: usize,
    pub bytes_checked: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.bundle.is_some()
    }
}

/// What was observed of one file.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub size: u64,
    /// `None` when the content was not hashed (its size already differs, or it is not
    /// listed at all).
    pub sha256: Option<Sha256>,
    pub executable: bool,
}

/// Compares what was seen against bundle.json and SHA256SUMS.
pub fn judge(
    bundle_bytes: Option<Vec<u8>>,
    sums_bytes: Option<Vec<u8>>,
    seen: BTreeMap<String, Seen>,
    mut problems: Vec<Problem>,
) -> Report {
    let mut report = Report::default();
    let parsed = match &bundle_bytes {
        None => Err("bundle.json is missing: this is not a kbundle bundle".to_string()),
        Some(bj) => BundleJson::parse(bj).map_err(|e| e.to_string()),
    };
    let bundle = match parsed {
        Ok(b) => b,
        Err(detail) => {
            problems.push(Problem::Meta { detail });
            report.problems = problems;
            return report;
        }
    };
    let bj = bundle_bytes.unwrap_or_default();
    judge_entries(&bundle, &seen, &mut report, &mut problems);
    match sums_bytes {
        None => problems.push(Problem::Meta {
            detail: "SHA256SUMS is missing".into(),
        }),
        Some(s) => match meta::parse_sums(&s) {
            Err(e) => problems.push(Problem::Meta { detail: e.to_string() }),
            Ok(sums) => judge_sums(&bundle, &Sha256::of(&bj), &sums, &mut problems),
        },
    }
    report.bundle_json_sha256 = Some(Sha256::of(&bj));
    report.bundle_json = Some(bj);
    report.bundle = Some(bundle);
    report.problems = problems;
    report
}

/// Every listed entry against what was seen, and what was seen but not listed.
fn judge_entries(bundle: &BundleJson, seen: &BTreeMap<String, Seen>, report: &mut Report, problems: &mut Vec<Problem>) {
    for e in &bundle.entries {
        if e.in_base {
            if seen.contains_key(&e.path) {
                problems.push(Problem::Extra { path: e.path.clone() });
            }
            continue;
        }
        let Some(s) = seen.get(&e.path) else {
            problems.push(Problem::Missing {
                path: e.path.clone(),
                expected: e.sha256,
            });
            continue;
        };
        report.files_checked += 1;
        report.bytes_checked += s.size;
        judge_one(e, s, problems);
    }
    for p in seen.keys() {
        if p != BUNDLE_JSON && p != SHA256SUMS && p != BUNDLE_JSON_SIG && bundle.entry(p).is_none() {
            problems.push(Problem::Extra { path: p.clone() });
        }
    }
}

fn judge_one(e: &meta::Entry, s: &Seen, problems: &mut Vec<Problem>) {
    let path = || e.path.clone();
    if s.size != e.size {
        problems.push(Problem::Size {
            path: path(),
            expected: e.size,
            actual: s.size,
        });
    }
    if let Some(actual) = s.sha256.filter(|a| *a != e.sha256) {
        problems.push(Problem::Changed {
            path: path(),
            expected: e.sha256,
            actual,
        });
    }
    if e.executable && !s.executable {
        problems.push(Problem::NotExecutable { path: path() });
    }
    if !e.executable && s.executable {
        problems.push(Problem::UnexpectedExecutable { path: path() });
    }
}

/// SHA256SUMS against bundle.json: the same entries with the same digests, plus
/// bundle.json's own actual digest.
fn judge_sums(bundle: &BundleJson, bj_digest: &Sha256, sums: &BTreeMap<String, Sha256>, problems: &mut Vec<Problem>) {
    for (path, d) in sums {
        let expected = if path == BUNDLE_JSON {
            Some(*bj_digest)
        } else {
            bundle.entry(path).filter(|e| !e.in_base).map(|e| e.sha256)
        };
        let detail = match expected {
            None => "listed in SHA256SUMS but not in bundle.json".to_string(),
            Some(x) if x != *d && path == BUNDLE_JSON => {
                format!("bundle.json was changed: SHA256SUMS says {d}, actual {x}")
            }
            Some(x) if x != *d => format!("SHA256SUMS says {d}, bundle.json says {x}"),
            _ => continue,
        };
        problems.push(Problem::Sums {
            path: path.clone(),
            detail,
        });
    }
    for e in bundle
        .entries
        .iter()
        .filter(|e| !e.in_base && !sums.contains_key(&e.path))
    {
        problems.push(Problem::Sums {
            path: e.path.clone(),
            detail: "in bundle.json but not in SHA256SUMS".into(),
        });
    }
    if !sums.contains_key(BUNDLE_JSON) {
        problems.push(Problem::Sums {
            path: BUNDLE_JSON.into(),
            detail: "bundle.json's own digest is not listed".into(),
        });
    }
}

/// Reads at most MAX_META_BYTES of a metadata file.
fn read_meta(r: &mut dyn Read, what: &str, problems: &mut Vec<Problem>) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match r.take(MAX_META_BYTES + 1).read_to_end(&mut buf) {
        Ok(n) if n as u64 > MAX_META_BYTES => {
            problems.push(Problem::Meta {
                detail: format!("{what} is larger than {MAX_META_BYTES} bytes"),
            });
            None
        }
        Ok(_) => Some(buf),
        Err(e) => {
            problems.push(Problem::Meta {
                detail: format!("reading {what}: {e}"),
            });
            None
        }
    }
}

/// The `<archive>.sha256` sidecar beside an archive: `Ok(true)` when it was present and
/// checked, with a problem pushed if it does not match (or cannot be read).
pub fn check_sidecar(path: &Path, problems: &mut Vec<Problem>) -> Result<bool, ArchiveError> {
    let sidecar = PathBuf::from(format!("{}.sha256", path.display()));
    if sidecar.symlink_metadata().is_err() {
        return Ok(false);
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = match std::fs::read(&sidecar) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::Archive {
                detail: format!("{}: cannot read the sidecar: {e}", sidecar.display()),
            });
            return Ok(false);
        }
    };
    let expected = match crate::catalog::checksum::parse(crate::catalog::ChecksumFormat::Sha256Sum, &text, &file_name) {
        Ok(d) => d,
        Err(e) => {
            problems.push(Problem::Archive {
                detail: format!("{}: {e}", sidecar.display()),
            });
            return Ok(false);
        }
    };
    let actual = crate::digest::hash_file(path)
        .map_err(|source| ArchiveError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .0;
    if actual != expected {
        problems.push(Problem::Archive {
            detail: format!(
                "{} does not match {}: expected sha256 {expected}, actual {actual}",
                path.display(),
                sidecar.display()
            ),
        });
    }
    Ok(true)
}

/// Verifies an archive without writing anything: entries are hashed as they stream by.
pub fn verify_archive(path: &Path) -> Result<Report, ArchiveError> {
    verify_archive_with(path, &mut crate::bundle::check::Discard)
}

/// Verifies an archive (its sidecar, then every entry), giving each entry's content to
/// `sink` as it is checked; the sink must not trust anything until the report is clean.
pub fn verify_archive_with(path: &Path, sink: &mut dyn crate::bundle::check::Sink) -> Result<Report, ArchiveError> {
    let mut problems = Vec::new();
    let sidecar_checked = check_sidecar(path, &mut problems)?;
    let mut report = crate::bundle::check::check_archive(path, sink)?;
    problems.append(&mut report.problems);
    report.problems = problems;
    report.sidecar_checked = sidecar_checked;
    Ok(report)
}

/// Every regular file under `dir` (relative path, path), sorted; anything else is a problem.
fn list_dir(dir: &Path, problems: &mut Vec<Problem>) -> Result<Vec<(String, PathBuf)>, ArchiveError> {
    let open = |path: PathBuf| move |source| ArchiveError::Open { path, source };
    let mut files = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, p)) = stack.pop() {
        for ent in std::fs::read_dir(&p).map_err(open(p.clone()))? {
            let ent = ent.map_err(open(p.clone()))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let ft = ent.file_type().map_err(open(ent.path()))?;
            if ft.is_symlink() {
                problems.push(Problem::Unsafe {
                    path: r,
                    reason: "symbolic link (bundles hold only regular files and directories)".into(),
                });
            } else if ft.is_dir() {
                stack.push((r, ent.path()));
            } else if ft.is_file() {
                files.push((r, ent.path()));
            } else {
                problems.push(Problem::Unsafe {
                    path: r,
                    reason: "not a regular file".into(),
                });
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Verifies an unpacked bundle directory, hashing files on all cores. Files whose size
/// already differs from bundle.json, and files it does not list, are not read.
pub fn verify_dir(dir: &Path) -> Result<Report, ArchiveError> {
    let mut problems = Vec::new();
    let files = list_dir(dir, &mut problems)?;
    let mut bundle_bytes = None;
    let mut sums_bytes = None;
    let mut sig_bytes = None;
    let meta_files = [BUNDLE_JSON, SHA256SUMS, BUNDLE_JSON_SIG];
    for (rel, p) in files.iter().filter(|(r, _)| meta_files.contains(&r.as_str())) {
        let mut f = std::fs::File::open(p).map_err(|source| ArchiveError::Open {
            path: p.clone(),
            source,
        })?;
        let b = read_meta(&mut f, rel, &mut problems);
        match rel.as_str() {
            BUNDLE_JSON => bundle_bytes = b,
            SHA256SUMS => sums_bytes = b,
            _ => sig_bytes = b,
        }
    }
    let listed = bundle_bytes.as_deref().and_then(|b| BundleJson::parse(b).ok());
    let seen = hash_all(&files, listed.as_ref(), &mut problems);
    let mut report = judge(bundle_bytes, sums_bytes, seen, problems);
    report.json_sig = sig_bytes;
    Ok(report)
}

/// What is on disk at `p`: hashed only when bundle.json lists it with this very size.
fn observe(p: &Path, rel: &str, listed: Option<&BundleJson>) -> std::io::Result<Seen> {
    let f = std::fs::File::open(p)?;
    let md = f.metadata()?;
    #[cfg(unix)]
    let executable = {
        use std::os::unix::fs::PermissionsExt;
        md.permissions().mode() & 0o111 != 0
    };
    #[cfg(not(unix))]
    let executable = false;
    let wanted = match listed {
        Some(b) => b.entry(rel).is_some_and(|e| !e.in_base && e.size == md.len()),
        None => rel == BUNDLE_JSON || rel == SHA256SUMS,
    };
    let sha256 = if wanted || rel == BUNDLE_JSON || rel == SHA256SUMS {
        Some(crate::digest::hash_reader(f)?.0)
    } else {
        None
    };
    Ok(Seen {
        size: md.len(),
        sha256,
        executable,
    })
}

fn hash_all(
    files: &[(String, PathBuf)],
    listed: Option<&BundleJson>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Seen> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let results = std::sync::Mutex::new(Vec::with_capacity(files.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((rel, p)) = files.get(i) else { break };
                let r = observe(p, rel, listed);
                if let Ok(mut v) = results.lock() {
                    v.push((rel.clone(), r));
                }
            });
        }
    });
    let mut seen = BTreeMap::new();
    for (rel, r) in results.into_inner().unwrap_or_default() {
        match r {
            Ok(s) => {
                seen.insert(rel, s);
            }
            Err(e) => problems.push(Problem::Meta {
                detail: format!("reading {}: {e}", esc(&rel)),
            }),
        }
    }
    seen
}

/// Verifies a bundle archive or directory.
pub fn verify(path: &Path) -> Result<Report, ArchiveError> {
    if path.is_dir() {
        verify_dir(path)
    } else {
        verify_archive(path)
    }
}
