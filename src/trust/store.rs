//! The node's trust store, read and written only through the [`Host`] seam:
//! `/etc/kbundle/trusted-keys/<KEYID>.pub` (minisign public key files) and
//! `/var/lib/kbundle/trust/serials.json` (the highest serial installed per key id).

use super::{TrustError, Verdict};
use crate::bundle::signature::{self, KeyId, TrustedKey};
use crate::host::Host;
use std::collections::BTreeMap;

/// Trusted public keys on a node: every `*.pub` file here (other names are ignored).
pub const KEYS_DIR: &str = "/etc/kbundle/trusted-keys";
/// `{"KEYID": highest serial installed}`, written after a successful install or upgrade.
pub const SERIALS: &str = "/var/lib/kbundle/trust/serials.json";

/// The node file for a key.
pub fn key_file(id: KeyId) -> String {
    format!("{KEYS_DIR}/{id}.pub")
}

/// Every `*.pub` in [`KEYS_DIR`], in name order; a file that is not a minisign public key
/// is an error naming it.
pub fn load_keys(host: &Host) -> Result<Vec<TrustedKey>, TrustError> {
    let mut names: Vec<String> = host
        .list(KEYS_DIR)
        .into_iter()
        .filter(|n| n.ends_with(".pub") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let abs = format!("{KEYS_DIR}/{n}");
            let path = host.path(&abs)?;
            let text = host.read_bytes(&abs)?;
            signature::parse_public_key(&path, &String::from_utf8_lossy(&text))
                .map_err(|source| TrustError::KeyFile { path, source })
        })
        .collect()
}

/// Writes `key` as `KEYS_DIR/<id>.pub` in minisign's format (docs/upstream-facts.md,
/// minisign public key files). Returns the node path and
/// whether it changed anything.
pub fn trust(host: &Host, key: &TrustedKey) -> Result<(String, bool), TrustError> {
    let text = key
        .key
        .to_box()
        .map(|b| b.into_string())
        .map_err(|e| TrustError::KeyFile {
            path: key.path.clone(),
            source: signature::SigError::Parse {
                what: key.path.display().to_string(),
                kind: "public key",
                source: e,
            },
        })?;
    let abs = key_file(key.id);
    host.mkdir(KEYS_DIR)?;
    let changed = host.write(&abs, text.as_bytes(), 0o644)?;
    Ok((abs, changed))
}

/// Removes every key file holding key `id` (revocation). Returns the node paths removed.
pub fn untrust(host: &Host, id: &str) -> Result<Vec<String>, TrustError> {
    let keys = load_keys(host)?;
    let mut removed = Vec::new();
    for k in keys.iter().filter(|k| k.id.to_string().eq_ignore_ascii_case(id)) {
        let name = k
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let abs = format!("{KEYS_DIR}/{name}");
        host.remove(&abs)?;
        removed.push(abs);
    }
    if removed.is_empty() {
        return Err(TrustError::NotTrusted {
            id: id.to_string(),
            trusted: signature::ids(&keys),
        });
    }
    Ok(removed)
}

/// The highest serial installed per key id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Serials(BTreeMap<String, u64>);

impl Serials {
    pub fn get(&self, id: KeyId) -> Option<u64> {
        self.0.get(&id.to_string()).copied()
    }

    pub fn set(&mut self, id: KeyId, serial: u64) {
        self.0.insert(id.to_string(), serial);
    }
}

/// [`SERIALS`]; empty when absent, an error naming the file when unreadable.
pub fn load_serials(host: &Host) -> Result<Serials, TrustError> {
    if !host.exists(SERIALS) {
        return Ok(Serials::default());
    }
    let path = host.path(SERIALS)?;
    let bytes = host.read_bytes(SERIALS)?;
    serde_json::from_slice(&bytes).map_err(|e| TrustError::Serials {
        path,
        detail: format!("not a JSON object of key id to serial: {e}"),
    })
}

/// After a successful install or upgrade: raises the recorded serial of the signing key
/// (never lowers it, so `--allow-downgrade` does not reset the protection).
pub fn record(host: &Host, verdict: &Verdict) -> Result<(), TrustError> {
    let Verdict::Signed { key_id, serial, .. } = verdict else {
        return Ok(());
    };
    let mut serials = load_serials(host)?;
    if serials.get(*key_id).is_some_and(|r| r >= *serial) {
        return Ok(());
    }
    serials.set(*key_id, *serial);
    let mut text = serde_json::to_string_pretty(&serials).map_err(|e| TrustError::Serials {
        path: SERIALS.into(),
        detail: e.to_string(),
    })?;
    text.push('\n');
    host.mkdir("/var/lib/kbundle/trust")?;
    host.write(SERIALS, text.as_bytes(), 0o644)?;
    Ok(())
}
