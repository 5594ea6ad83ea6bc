//! Where nodes keep unpacked bundles: `<store>/<archive sha256>/<name>/`.
//!
//! Each slot (`<store>/<archive sha256>/`) is created by kbundle with an ownership marker;
//! a bundle directory in it counts only once its completion marker names it (written after
//! a verified unpack). Only slots with the marker are ever cleaned, and only their
//! unpacking temp directories and the bundle they name: nothing kbundle did not create is
//! removed, and a partial unpack is never taken for a bundle.

use super::fields::SafeName;
use super::meta::BUNDLE_JSON;
use super::unpack::TEMP_PREFIX;
use crate::digest::Sha256;
use std::io;
use std::path::{Path, PathBuf};

/// The node store, as a node path.
pub const NODE_STORE: &str = "/var/lib/kbundle/bundles";
/// Present in every slot kbundle created.
const OWNED: &str = ".kbundle-slot";
/// `<name>\n<bundle.json sha256>\n`, written once the bundle in the slot is verified.
const COMPLETE: &str = ".complete";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} exists but was not created by kbundle (no {OWNED} marker); move it away and run again")]
    NotOurs { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// The slot for an archive: created (with its marker) if new, refused if something else
/// already sits there.
pub fn slot(store: &Path, archive_sha256: &Sha256) -> Result<PathBuf, StoreError> {
    let dir = store.join(archive_sha256.hex());
    if dir.symlink_metadata().is_err() {
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        crate::fsutil::write_atomic(&dir.join(OWNED), b"created by kbundle\n").map_err(io_err("marking", &dir))?;
    }
    if !owned(&dir) {
        return Err(StoreError::NotOurs { path: dir });
    }
    Ok(dir)
}

fn owned(slot: &Path) -> bool {
    slot.symlink_metadata().is_ok_and(|m| m.is_dir()) && slot.join(OWNED).symlink_metadata().is_ok_and(|m| m.is_file())
}

/// The completion marker of a slot: the bundle's name and its bundle.json digest.
pub fn completed(slot: &Path) -> Option<(SafeName, Sha256)> {
    let mut text = String::new();
    let f = std::fs::File::open(slot.join(COMPLETE)).ok()?;
    io::Read::read_to_string(&mut io::Read::take(f, 1024), &mut text).ok()?;
    let mut lines = text.lines();
    let name: SafeName = lines.next()?.parse().ok()?;
    let digest: Sha256 = lines.next()?.parse().ok()?;
    Some((name, digest))
}

/// Records that `slot/<name>` is a complete, verified bundle.
pub fn mark_complete(slot: &Path, name: &SafeName, bundle_json: &Sha256) -> Result<(), StoreError> {
    let p = slot.join(COMPLETE);
    crate::fsutil::write_atomic(&p, format!("{name}\n{bundle_json}\n").as_bytes()).map_err(io_err("writing", &p))
}

/// Forgets the bundle in a slot of ours: the completion marker first, then the directory.
pub fn clear(slot: &Path, name: &SafeName) -> Result<(), StoreError> {
    if !owned(slot) {
        return Err(StoreError::NotOurs {
            path: slot.to_path_buf(),
        });
    }
    let marker = slot.join(COMPLETE);
    if marker.symlink_metadata().is_ok() {
        std::fs::remove_file(&marker).map_err(io_err("removing", &marker))?;
    }
    let dir = slot.join(name);
    match dir.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dir).map_err(io_err("removing", &dir)),
        Ok(_) => std::fs::remove_file(&dir).map_err(io_err("removing", &dir)),
        Err(_) => Ok(()),
    }
}

/// Removes the unpacking temp directories left in the store's slots by an interrupted
/// run. Call only while holding the node lock.
pub fn sweep(store: &Path) -> Result<usize, StoreError> {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(store) else { return Ok(0) };
    for slot in rd.flatten().map(|e| e.path()).filter(|p| owned(p)) {
        for e in std::fs::read_dir(&slot).map_err(io_err("reading", &slot))?.flatten() {
            let temp = e.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            if temp && e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path()).map_err(io_err("removing", &e.path()))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Finds a complete unpacked bundle whose `bundle.json` has the given sha256.
pub fn find(store: &Path, bundle_json_sha256: &Sha256) -> Option<PathBuf> {
    let rd = std::fs::read_dir(store).ok()?;
    for slot in rd.flatten().map(|e| e.path()).filter(|p| owned(p)) {
        let Some((name, digest)) = completed(&slot) else {
            continue;
        };
        let dir = slot.join(&name);
        if digest == *bundle_json_sha256
            && crate::digest::hash_file(&dir.join(BUNDLE_JSON)).is_ok_and(|(h, _)| h == digest)
        {
            return Some(dir);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_unpacks_are_never_found_and_are_swept() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path();
        let bj = b"{}".to_vec();
        let d = Sha256::of(&bj);
        let s = slot(store, &Sha256::of(b"archive")).unwrap();
        let partial = s.join(".unpack-abc");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join(BUNDLE_JSON), &bj).unwrap();
        assert_eq!(find(store, &d), None, "a temp dir is not a bundle");
        let name: SafeName = "b".parse().unwrap();
        std::fs::create_dir_all(s.join("b")).unwrap();
        std::fs::write(s.join("b").join(BUNDLE_JSON), &bj).unwrap();
        assert_eq!(find(store, &d), None, "no completion marker yet");
        mark_complete(&s, &name, &d).unwrap();
        assert_eq!(find(store, &d), Some(s.join("b")));
        assert_eq!(sweep(store).unwrap(), 1);
        assert!(!partial.exists());
    }

    #[test]
    fn foreign_directories_are_refused_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let d = Sha256::of(b"x");
        let foreign = t.path().join(d.hex());
        std::fs::create_dir_all(foreign.join(".unpack-keep")).unwrap();
        assert!(matches!(slot(t.path(), &d), Err(StoreError::NotOurs { .. })));
        assert!(clear(&foreign, &"x".parse().unwrap()).is_err());
        sweep(t.path()).unwrap();
        assert!(foreign.join(".unpack-keep").exists());
    }
}
