//! Small filesystem helpers that put the path into every error and never leave a
//! half-written file at the final path.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a text input (manifest, lockfile) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read {what} {path}: {source} ({hint})")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("{path}:{line}:{column}: not UTF-8: byte 0x{byte:02x} at byte offset {offset} is not valid UTF-8 ({what}s are UTF-8 text; {fix})")]
    NotUtf8 {
        what: &'static str,
        path: PathBuf,
        /// 0-based byte offset of the first invalid byte.
        offset: usize,
        /// 1-based line and column (in characters) of that byte.
        line: usize,
        column: usize,
        byte: u8,
        fix: &'static str,
    },
}

/// Reads the UTF-8 text file `path`, a `what` (e.g. "manifest"); a file that is not UTF-8 is
/// reported with the offset, line and column of its first invalid byte and how to `fix` it.
pub fn read_text(path: &Path, what: &'static str, fix: &'static str) -> Result<String, TextError> {
    let bytes = std::fs::read(path).map_err(|source| TextError::Io {
        what,
        path: path.to_path_buf(),
        hint: read_hint(&source),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // The prefix is valid UTF-8 by definition.
        let before = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        TextError::NotUtf8 {
            what,
            path: path.to_path_buf(),
            offset,
            line,
            column,
            byte: bytes[offset],
            fix,
        }
    })
}

/// What a user can do about an I/O error on an input file, by its kind.
pub fn read_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file: check the path",
        io::ErrorKind::PermissionDenied => "permission denied: make it readable for this user",
        io::ErrorKind::IsADirectory => "it is a directory: give the path of the file",
        _ => "check the file",
    }
}

/// What a user can do about an I/O error while creating or writing in a directory.
pub fn write_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "permission denied: choose a directory this user can write, or fix its permissions"
        }
        io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only: choose a directory on a writable one",
        io::ErrorKind::StorageFull => "the disk is full: free some space or choose another directory",
        io::ErrorKind::NotADirectory => "a part of the path is a file, not a directory: choose another path",
        io::ErrorKind::AlreadyExists => {
            "a file is in the way where a directory is needed: remove it or choose another path"
        }
        _ => "check the path and its permissions",
    }
}

/// Writes `data` to a temp file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |e| e, |f| f.write_all(data))
}

/// The one way kbundle writes an output file: `write` fills a temp file beside `path`
/// (`.<name>.XXXXXX.tmp`, which `--out` sweeping recognises), which is then made readable
/// (0644), synced and renamed over `path`. On any failure the temp file is removed and
/// `path` is untouched. `io_err` turns the I/O errors of those steps into `E`.
pub fn write_atomic_with<T, E>(
    path: &Path,
    io_err: impl Fn(io::Error) -> E,
    write: impl FnOnce(&mut std::fs::File) -> Result<T, E>,
) -> Result<T, E> {
    let mut tmp = temp_beside(path).map_err(&io_err)?;
    let out = write(tmp.as_file_mut())?;
    // Temp files are created 0600; outputs are meant to be shared (web servers, other users).
    set_readable(tmp.path()).map_err(&io_err)?;
    tmp.as_file().sync_all().map_err(&io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(out)
}

/// A new temp file in `path`'s directory, named `.<name>.XXXXXX.tmp` (what `--out`
/// sweeping recognises); mode 0600 until the caller sets it. Persist it over `path` to
/// finish; dropped, it is removed.
pub fn temp_beside(path: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// Mode 0644: what a user expects of a build output or lockfile.
pub fn set_readable(p: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
