//! Small filesystem helpers that put the path into every error and never leave a
//! half-written file at the final path.

use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to a temp file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    // Temp files are created 0600; outputs are meant to be shared (web servers, other users).
    set_readable(tmp.path())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
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
