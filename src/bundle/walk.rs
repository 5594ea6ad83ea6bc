//! Walking a bundle archive: every member read through [`super::tarread`] (the one tar
//! interpretation), checked against the bundle's layout rules, and counted against a
//! budget of decompressed bytes so a small archive cannot make a reader work forever.
//!
//! Every entry must sit under one top directory with a plain relative path; absolute paths,
//! `..`, links, device files, FIFOs, setuid/setgid/sticky bits, unknown entry types and
//! duplicate paths are refused.

use super::archive::{open_stream, ArchiveError, MAX_ENTRIES};
use super::meta::check_rel_path;
use super::tarread::{self, Fault, Kind, Member, Members};
use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

/// How many decompressed bytes a walk may read, shared between the walker (which counts)
/// and the visitor (which raises or lowers the limit once it knows what to expect).
#[derive(Debug, Clone)]
pub struct Budget {
    limit: Rc<Cell<u64>>,
    used: Rc<Cell<u64>>,
    why: Rc<Cell<&'static str>>,
}

impl Budget {
    /// `why` finishes the sentence "more than N bytes …" in the error.
    pub fn new(limit: u64, why: &'static str) -> Budget {
        Budget {
            limit: Rc::new(Cell::new(limit)),
            used: Rc::new(Cell::new(0)),
            why: Rc::new(Cell::new(why)),
        }
    }

    pub fn set(&self, limit: u64, why: &'static str) {
        self.limit.set(limit);
        self.why.set(why);
    }

    /// Decompressed bytes read so far.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    fn exceeded(&self) -> bool {
        self.used.get() > self.limit.get()
    }

    fn error(&self, archive: &Path) -> ArchiveError {
        ArchiveError::TooLarge {
            archive: archive.to_path_buf(),
            limit: self.limit.get(),
            why: self.why.get(),
        }
    }
}

/// The decompressed stream, counted against the budget.
struct Counted<R> {
    inner: R,
    budget: Budget,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.budget.exceeded() {
            return Err(io::Error::other("decompressed size budget exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.budget.used.set(self.budget.used.get() + n as u64);
        Ok(n)
    }
}

/// An entry that passed the safety checks.
#[derive(Debug, Clone)]
pub struct SafeEntry {
    /// The name in the archive (top directory first), for messages.
    pub name: String,
    /// Path below the top directory (`""` for the top directory itself).
    pub rel: String,
    pub is_dir: bool,
    pub size: u64,
    pub mode: u32,
}

impl SafeEntry {
    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }
}

/// What a visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop reading here (what was wanted has been found); the rest is not checked.
    Stop,
}

/// The layout rules that hold across entries.
#[derive(Default)]
struct Layout {
    top: Option<String>,
    seen: HashSet<String>,
}

/// Walks every entry, checking it, and hands each regular file's content (exactly `size`
/// bytes) to `visit`; directories are checked but not visited. Returns the name of
/// the top directory. Reads to the very end unless the visitor stops: the compressor's own
/// checksum is only checked there, and nothing but zero padding may follow the tar end.
pub fn walk(
    archive: &Path,
    budget: &Budget,
    mut visit: impl FnMut(&SafeEntry, &mut dyn Read) -> Result<Flow, ArchiveError>,
) -> Result<String, ArchiveError> {
    let stream = Counted {
        inner: open_stream(archive)?,
        budget: budget.clone(),
    };
    let mut ar = tar::Archive::new(stream);
    let mut layout = Layout::default();
    let fault = |f: Fault| match f {
        _ if budget.exceeded() => budget.error(archive),
        Fault::Unsafe { entry, reason } => ArchiveError::Unsafe {
            archive: archive.to_path_buf(),
            entry,
            reason,
        },
        Fault::Corrupt { at, source } => corrupt(archive, &at, source),
    };
    {
        let mut members = Members::new(&mut ar).map_err(fault)?;
        while let Some((m, mut data)) = members.next_member().map_err(fault)? {
            let e = layout.admit(&m).map_err(fault)?;
            let flow = if e.is_dir {
                Flow::Continue
            } else {
                visit(&e, &mut data)?
            };
            // Drain whatever the visitor did not read, so a short read cannot hide data.
            io::copy(&mut data, &mut io::sink()).map_err(|err| read_error(archive, budget, &m.name, err))?;
            if flow == Flow::Stop {
                return layout.top.ok_or_else(|| ArchiveError::Empty {
                    archive: archive.to_path_buf(),
                });
            }
        }
    }
    check_tail(archive, budget, ar.into_inner())?;
    layout.top.ok_or_else(|| ArchiveError::Empty {
        archive: archive.to_path_buf(),
    })
}

fn corrupt(archive: &Path, at: &str, source: io::Error) -> ArchiveError {
    ArchiveError::Corrupt {
        archive: archive.to_path_buf(),
        at: if at.is_empty() {
            String::new()
        } else {
            format!(" at {}", super::fields::esc(at))
        },
        source,
    }
}

/// A read error inside an entry: the budget's own error when that was the cause.
pub fn read_error(archive: &Path, budget: &Budget, entry: &str, err: io::Error) -> ArchiveError {
    if budget.exceeded() {
        budget.error(archive)
    } else {
        corrupt(archive, entry, err)
    }
}

/// Only zero padding may follow the end-of-archive marker; reading it also makes the
/// decompressor check its checksum.
fn check_tail(archive: &Path, budget: &Budget, mut rest: impl Read) -> Result<(), ArchiveError> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(archive, budget, "<end of archive>", e)),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(ArchiveError::Unsafe {
                archive: archive.to_path_buf(),
                entry: "<after the end of the tar archive>".into(),
                reason: "data after the end-of-archive marker".into(),
            });
        }
    }
}

fn refuse(m: &Member, reason: impl Into<String>) -> Fault {
    Fault::Unsafe {
        entry: m.name.clone(),
        reason: reason.into(),
    }
}

impl Layout {
    /// Applies the bundle's layout rules to one member.
    fn admit(&mut self, m: &Member) -> Result<SafeEntry, Fault> {
        if self.seen.len() >= MAX_ENTRIES {
            return Err(refuse(m, "too many entries"));
        }
        check_kind(m)?;
        let is_dir = m.kind == Kind::Dir;
        let rest = self.place(m, is_dir)?;
        if m.mode & 0o7000 != 0 {
            return Err(refuse(m, format!("setuid/setgid/sticky bits in mode {:o}", m.mode)));
        }
        if is_dir && m.size != 0 {
            return Err(refuse(m, format!("a directory with {} bytes of data", m.size)));
        }
        if !self.seen.insert(rest.clone()) {
            return Err(refuse(m, "duplicate entry"));
        }
        Ok(SafeEntry {
            name: m.name.clone(),
            rel: rest,
            is_dir,
            size: m.size,
            mode: m.mode,
        })
    }

    /// The path below the single top directory.
    fn place(&mut self, m: &Member, is_dir: bool) -> Result<String, Fault> {
        let name = m.name.as_str();
        if name.starts_with('/') {
            return Err(refuse(m, "absolute path"));
        }
        if !is_dir && name.ends_with('/') {
            // Old tar readers make a directory of a regular file named `x/`.
            return Err(refuse(m, "a file whose name ends in '/'"));
        }
        let clean = name.trim_end_matches('/');
        if clean.split('/').any(|c| c == "..") {
            return Err(refuse(m, "'..' path component"));
        }
        let (first, rest) = clean.split_once('/').unwrap_or((clean, ""));
        if !crate::manifest::valid_name(first) {
            return Err(refuse(m, "top directory name is not a plain name"));
        }
        match &self.top {
            None => self.top = Some(first.to_string()),
            Some(t) if t != first => return Err(refuse(m, format!("outside the bundle's top directory {t:?}"))),
            _ => {}
        }
        if !rest.is_empty() {
            check_rel_path(rest).map_err(|r| refuse(m, r))?;
        } else if !is_dir {
            return Err(refuse(m, "a file where the top directory belongs"));
        }
        Ok(rest.to_string())
    }
}

fn check_kind(m: &Member) -> Result<(), Fault> {
    match m.kind {
        Kind::File | Kind::Dir => Ok(()),
        Kind::Symlink if link_leaves(&m.name, &m.link) => {
            Err(refuse(m, format!("symbolic link to {:?} leaves the bundle", m.link)))
        }
        Kind::Symlink => Err(refuse(
            m,
            format!(
                "symbolic link to {:?}: bundles hold only regular files and directories",
                m.link
            ),
        )),
        Kind::HardLink => Err(refuse(m, "hard link")),
        Kind::Device => Err(refuse(m, "device file")),
        Kind::Fifo => Err(refuse(m, "FIFO")),
        Kind::Other(flag) => Err(refuse(m, format!("unsupported entry: {}", tarread::describe(flag)))),
    }
}

/// Would a symlink at `at` (an archive name, top directory first) pointing to `target`
/// resolve outside the top directory?
fn link_leaves(at: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth: i64 = at.trim_end_matches('/').split('/').count() as i64 - 2;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_escape_detection() {
        assert!(link_leaves("top/a", "/etc/passwd"));
        assert!(link_leaves("top/a", "../x"));
        assert!(!link_leaves("top/d/a", "../x"));
        assert!(link_leaves("top/d/a", "../../x"));
        assert!(!link_leaves("top/a", "b/c"));
    }
}
