//! Where nodes keep unpacked bundles: `/var/lib/kbundle/bundles/<archive sha256>/<name>/`.
//!
//! Each slot (`<store>/<archive sha256>/`) is created by kbundle with an ownership marker;
//! a bundle directory in it counts only once its completion marker names it (written after
//! a verified unpack). Only slots with the marker are ever cleaned, and only their
//! unpacking temp directories and the bundle they name: nothing kbundle did not create is
//! removed, and a partial unpack is never taken for a bundle. Everything goes through the
//! node seam ([`Host`]).

use super::fields::SafeName;
use super::meta::BUNDLE_JSON;
use super::unpack::TEMP_PREFIX;
use crate::digest::Sha256;
use crate::host::{Host, HostError};
use std::path::PathBuf;

/// The node store, as a node path.
pub const NODE_STORE: &str = "/var/lib/kbundle/bundles";
/// Present in every slot kbundle created.
const OWNED: &str = ".kbundle-slot";
/// `<name>\n<bundle.json sha256>\n`, written once the bundle in the slot is verified.
const COMPLETE: &str = ".complete";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{} exists but was not created by kbundle (no {OWNED} marker); move it away and run again", path.display())]
    NotOurs { path: PathBuf },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// The node path of the slot for an archive.
pub fn slot_of(archive_sha256: &Sha256) -> String {
    format!("{NODE_STORE}/{}", archive_sha256.hex())
}

/// The slot for an archive (a node path): created with its marker if new, refused if
/// something else already sits there.
pub fn slot(host: &Host, archive_sha256: &Sha256) -> Result<String, StoreError> {
    let slot = slot_of(archive_sha256);
    if !host.exists(&slot) {
        host.mkdir(&slot)?;
        host.write(&format!("{slot}/{OWNED}"), b"created by kbundle\n", 0o644)?;
    }
    if !owned(host, &slot) {
        return Err(StoreError::NotOurs {
            path: host.path(&slot)?,
        });
    }
    Ok(slot)
}

fn owned(host: &Host, slot: &str) -> bool {
    host.is_dir(slot) && host.is_file(&format!("{slot}/{OWNED}"))
}

/// The completion marker of a slot: the bundle's name and its bundle.json digest.
pub fn completed(host: &Host, slot: &str) -> Option<(SafeName, Sha256)> {
    let text = host.read(&format!("{slot}/{COMPLETE}"))?;
    let mut lines = text.lines();
    let name: SafeName = lines.next()?.parse().ok()?;
    let digest: Sha256 = lines.next()?.parse().ok()?;
    Some((name, digest))
}

/// Records that `<slot>/<name>` is a complete, verified bundle.
pub fn mark_complete(host: &Host, slot: &str, name: &SafeName, bundle_json: &Sha256) -> Result<(), HostError> {
    host.write(
        &format!("{slot}/{COMPLETE}"),
        format!("{name}\n{bundle_json}\n").as_bytes(),
        0o644,
    )
    .map(|_| ())
}

/// Forgets the bundle in a slot of ours: the completion marker first, then the directory.
pub fn clear(host: &Host, slot: &str, name: &SafeName) -> Result<(), StoreError> {
    if !owned(host, slot) {
        return Err(StoreError::NotOurs { path: host.path(slot)? });
    }
    host.remove(&format!("{slot}/{COMPLETE}"))?;
    host.remove(&format!("{slot}/{name}"))?;
    Ok(())
}

/// Removes the unpacking temp directories left in the store's slots by an interrupted
/// run. Call only while holding the node lock.
pub fn sweep(host: &Host) -> Result<usize, HostError> {
    let mut n = 0;
    for s in host.list(NODE_STORE) {
        let slot = format!("{NODE_STORE}/{s}");
        if !owned(host, &slot) {
            continue;
        }
        for e in host.list(&slot).into_iter().filter(|e| e.starts_with(TEMP_PREFIX)) {
            let p = format!("{slot}/{e}");
            if host.is_dir(&p) {
                host.remove(&p)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Finds a complete unpacked bundle whose `bundle.json` has the given sha256; returns its
/// directory on the machine.
pub fn find(host: &Host, bundle_json_sha256: &Sha256) -> Option<PathBuf> {
    for s in host.list(NODE_STORE) {
        let slot = format!("{NODE_STORE}/{s}");
        if !owned(host, &slot) {
            continue;
        }
        let Some((name, digest)) = completed(host, &slot) else {
            continue;
        };
        let dir = host.path(&format!("{slot}/{name}")).ok()?;
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
        let host = Host::new(t.path(), false);
        let bj = b"{}".to_vec();
        let d = Sha256::of(&bj);
        let s = slot(&host, &Sha256::of(b"archive")).unwrap();
        let on_disk = host.path(&s).unwrap();
        let partial = on_disk.join(".unpack-abc");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join(BUNDLE_JSON), &bj).unwrap();
        assert_eq!(find(&host, &d), None, "a temp dir is not a bundle");
        let name: SafeName = "b".parse().unwrap();
        std::fs::create_dir_all(on_disk.join("b")).unwrap();
        std::fs::write(on_disk.join("b").join(BUNDLE_JSON), &bj).unwrap();
        assert_eq!(find(&host, &d), None, "no completion marker yet");
        mark_complete(&host, &s, &name, &d).unwrap();
        assert_eq!(find(&host, &d), Some(on_disk.join("b")));
        assert_eq!(sweep(&host).unwrap(), 1);
        assert!(!partial.exists());
    }

    #[test]
    fn foreign_directories_are_refused_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::new(t.path(), false);
        let d = Sha256::of(b"x");
        let foreign = host.path(&slot_of(&d)).unwrap();
        std::fs::create_dir_all(foreign.join(".unpack-keep")).unwrap();
        assert!(matches!(slot(&host, &d), Err(StoreError::NotOurs { .. })));
        assert!(clear(&host, &slot_of(&d), &"x".parse().unwrap()).is_err());
        sweep(&host).unwrap();
        assert!(foreign.join(".unpack-keep").exists());
    }
}
