//! Reading bundle archives safely (`.tar.zst`, `.tar.gz`, `.tar`, detected by content).
//!
//! Every entry must sit under one top directory with a plain relative path; absolute paths,
//! `..`, links, device files, FIFOs and setuid/setgid/sticky bits are refused, and so are
//! duplicate paths. Nothing is written outside the directory given to [`unpack`].

use crate::bundle::meta::check_rel_path;
use std::collections::HashSet;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// At most this many entries in one archive.
pub const MAX_ENTRIES: usize = 2_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: unsafe entry {entry:?}: {reason}")]
    Unsafe {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{archive}: corrupt or truncated archive{at}: {source}")]
    Corrupt {
        archive: PathBuf,
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: writing {path}: {source}")]
    Write {
        archive: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: archive is empty or has no top directory")]
    Empty { archive: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

/// Detects the compression from the first bytes.
pub fn sniff(path: &Path) -> Result<Compression, ArchiveError> {
    let mut f = std::fs::File::open(path).map_err(|source| ArchiveError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let n = read_full(&mut f, &mut magic).map_err(|source| ArchiveError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match &magic[..n] {
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        [0x1f, 0x8b, ..] => Compression::Gzip,
        _ => Compression::None,
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Opens an archive as a decompressed byte stream.
pub fn open_stream(path: &Path) -> Result<Box<dyn Read>, ArchiveError> {
    let kind = sniff(path)?;
    let f = std::fs::File::open(path).map_err(|source| ArchiveError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let f = BufReader::with_capacity(1 << 20, f);
    Ok(match kind {
        // Decompression runs on its own thread, so it overlaps with hashing.
        Compression::Zstd => Box::new(Prefetch::spawn(zstd::stream::read::Decoder::with_buffer(f).map_err(
            |source| ArchiveError::Corrupt {
                archive: path.to_path_buf(),
                at: String::new(),
                source,
            },
        )?)),
        // Every gzip member, as `gzip -d` and `tar -xz` read them: a second member appended
        // to a bundle must not be invisible to verify.
        Compression::Gzip => Box::new(Prefetch::spawn(flate2::bufread::MultiGzDecoder::new(f))),
        Compression::None => Box::new(f),
    })
}

/// A reader whose source is read ahead on a helper thread, in 1 MiB chunks, at most four
/// in flight (bounded memory). Errors arrive in order, after the data before them.
struct Prefetch {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Prefetch {
    fn spawn<R: Read + Send + 'static>(mut inner: R) -> Prefetch {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            // Fill the chunk (decoders return short reads).
            let res = loop {
                match inner.read(&mut buf[n..]) {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            let end = n == 0 || res.is_err();
            if n > 0 && tx.send(Ok(buf)).is_err() {
                return;
            }
            if let Err(e) = res {
                let _ = tx.send(Err(e));
                return;
            }
            if end {
                return;
            }
        });
        Prefetch {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An entry that passed the safety checks.
#[derive(Debug, Clone)]
pub struct SafeEntry {
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

/// Walks every entry, checking it, and hands regular files' content to `visit`.
/// Returns the name of the top directory.
pub fn walk(
    archive: &Path,
    mut visit: impl FnMut(&SafeEntry, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<String, ArchiveError> {
    let stream = open_stream(archive)?;
    let mut ar = tar::Archive::new(stream);
    let corrupt = |at: &str, source| ArchiveError::Corrupt {
        archive: archive.to_path_buf(),
        at: if at.is_empty() {
            String::new()
        } else {
            format!(" at {at:?}")
        },
        source,
    };
    let unsafe_entry = |entry: &str, reason: &str| ArchiveError::Unsafe {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    let mut top: Option<String> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut last = String::new();
    for entry in ar.entries().map_err(|e| corrupt("", e))? {
        let mut entry = entry.map_err(|e| corrupt(&last, e))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| unsafe_entry("<non-UTF-8 name>", "path is not UTF-8"))?;
        last = name.clone();
        if seen.len() >= MAX_ENTRIES {
            return Err(unsafe_entry(&name, "too many entries"));
        }
        let hdr = entry.header();
        let kind = hdr.entry_type();
        if kind.is_pax_global_extensions() {
            // GNU tar applies a global `path=` to every later entry: refuse rather than read
            // the archive differently from it.
            return Err(unsafe_entry(&name, "pax global header (bundles never carry one)"));
        }
        let mode = hdr.mode().map_err(|e| corrupt(&name, e))?;
        let size = hdr.size().map_err(|e| corrupt(&name, e))?;
        let clean = name.trim_end_matches('/');
        if name.starts_with('/') {
            return Err(unsafe_entry(&name, "absolute path"));
        }
        if clean.split('/').any(|c| c == "..") {
            return Err(unsafe_entry(&name, "'..' path component"));
        }
        let (first, rest) = match clean.split_once('/') {
            Some((f, r)) => (f, r),
            None => (clean, ""),
        };
        if !crate::manifest::valid_name(first) {
            return Err(unsafe_entry(&name, "top directory name is not a plain name"));
        }
        match &top {
            None => top = Some(first.to_string()),
            Some(t) if t != first => {
                return Err(unsafe_entry(
                    &name,
                    &format!("outside the bundle's top directory {t:?}"),
                ));
            }
            _ => {}
        }
        if !rest.is_empty() {
            check_rel_path(rest).map_err(|r| unsafe_entry(&name, r))?;
        }
        if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let reason = if link_leaves(rest, &target) {
                format!("symbolic link to {target:?} leaves the bundle")
            } else {
                format!("symbolic link to {target:?}: bundles hold only regular files and directories")
            };
            return Err(unsafe_entry(&name, &reason));
        }
        if kind.is_hard_link() {
            return Err(unsafe_entry(&name, "hard link"));
        }
        if kind.is_character_special() || kind.is_block_special() {
            return Err(unsafe_entry(&name, "device file"));
        }
        if kind.is_fifo() {
            return Err(unsafe_entry(&name, "FIFO"));
        }
        if mode & 0o7000 != 0 {
            return Err(unsafe_entry(
                &name,
                &format!("setuid/setgid/sticky bits in mode {mode:o}"),
            ));
        }
        let is_dir = kind.is_dir();
        if !is_dir && !kind.is_file() {
            return Err(unsafe_entry(&name, &format!("unsupported entry type {:?}", kind)));
        }
        if !is_dir && rest.is_empty() {
            return Err(unsafe_entry(&name, "a file where the top directory belongs"));
        }
        if !seen.insert(rest.to_string()) {
            return Err(unsafe_entry(&name, "duplicate entry"));
        }
        let se = SafeEntry {
            rel: rest.to_string(),
            is_dir,
            size,
            mode,
        };
        if !is_dir {
            visit(&se, &mut entry)?;
            // Drain whatever the visitor did not read so a short read cannot hide data.
            io::copy(&mut entry, &mut io::sink()).map_err(|e| corrupt(&name, e))?;
        }
    }
    // Read to the very end: the compressor's own checksum (zstd content checksum, gzip
    // CRC-32) is only checked there, and nothing but tar's zero padding may follow.
    let mut rest = ar.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt("end of archive", e)),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(unsafe_entry(
                "<after the end of the tar archive>",
                "data after the end-of-archive marker",
            ));
        }
    }
    top.ok_or_else(|| ArchiveError::Empty {
        archive: archive.to_path_buf(),
    })
}

/// Would a symlink at `at` (relative to the top) pointing to `target` resolve outside the tree?
fn link_leaves(at: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth: i64 = at.split('/').count() as i64 - 1;
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

/// The top directory named by the first entry, if it is a plain name.
fn first_top(archive: &Path) -> Result<Option<String>, ArchiveError> {
    let mut ar = tar::Archive::new(open_stream(archive)?);
    let first = ar.entries().ok().and_then(|mut e| e.next()).and_then(|e| e.ok());
    Ok(first.and_then(|e| {
        let p = String::from_utf8(e.path_bytes().into_owned()).ok()?;
        let top = p.trim_start_matches("./").split('/').next()?.to_string();
        crate::manifest::valid_name(&top).then_some(top)
    }))
}

/// Unpacks a bundle archive into `dest/<top>` (via a temp directory inside `dest`, renamed
/// when complete) and returns that directory. Refuses anything [`walk`] refuses; a failure
/// leaves nothing behind.
pub fn unpack(archive: &Path, dest: &Path) -> Result<PathBuf, ArchiveError> {
    let wr = |path: &Path, source| ArchiveError::Write {
        archive: archive.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    // Refuse an existing destination before extracting gigabytes (checked again at the end).
    if let Some(top) = first_top(archive)? {
        let d = dest.join(&top);
        if d.exists() {
            return Err(wr(
                &d,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "destination already exists; remove it or pick another directory",
                ),
            ));
        }
    }
    std::fs::create_dir_all(dest).map_err(|e| wr(dest, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(dest)
        .map_err(|e| wr(dest, e))?;
    let root = tmp.path().to_path_buf();
    let top = walk(archive, |e, content| {
        let target = root.join(&e.rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|err| wr(parent, err))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if e.executable() { 0o755 } else { 0o644 });
        }
        let mut f = opts.open(&target).map_err(|err| wr(&target, err))?;
        let n = io::copy(&mut content.take(e.size), &mut f).map_err(|err| ArchiveError::Corrupt {
            archive: archive.to_path_buf(),
            at: format!(" at {:?}", e.rel),
            source: err,
        })?;
        if n != e.size {
            return Err(ArchiveError::Corrupt {
                archive: archive.to_path_buf(),
                at: format!(" at {:?}", e.rel),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "entry shorter than its header says"),
            });
        }
        Ok(())
    })?;
    let final_dir = dest.join(&top);
    if final_dir.exists() {
        return Err(wr(
            &final_dir,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "destination already exists; remove it or pick another directory",
            ),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).map_err(|e| wr(&root, e))?;
    }
    std::fs::rename(&root, &final_dir).map_err(|e| wr(&final_dir, e))?;
    let _ = tmp.keep();
    Ok(final_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_escape_detection() {
        assert!(link_leaves("a", "/etc/passwd"));
        assert!(link_leaves("a", "../x"));
        assert!(!link_leaves("d/a", "../x"));
        assert!(link_leaves("d/a", "../../x"));
        assert!(!link_leaves("a", "b/c"));
    }
}
