//! Registry credentials from `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json` (the `auths` map: `auth` = base64 `user:password`, or
//! `username`/`password`). Credential helpers are not run: air-gapped CI rarely has them.

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("registry auth file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry auth file {path}: not a docker config.json: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("registry auth file {path}: auths.{key}.auth is {problem}")]
    Entry {
        path: PathBuf,
        key: String,
        problem: &'static str,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, (String, String)>,
}

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `127.0.0.1:5000` stays.
fn host_of(key: &str) -> String {
    let k = key.trim_start_matches("https://").trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        _ => k.to_string(),
    }
}

/// `user:password` from an `auth` value (base64), or what is wrong with it.
fn user_password(auth: &str) -> Result<(String, String), &'static str> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "not base64")?;
    let s = String::from_utf8(raw).map_err(|_| "not UTF-8")?;
    let (u, p) = s.split_once(':').ok_or("not user:password")?;
    Ok((u.to_string(), p.to_string()))
}

impl Credentials {
    /// The file to read: `REGISTRY_AUTH_FILE`, then `$DOCKER_CONFIG/config.json`, then
    /// `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(d).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
    }

    /// Loads credentials; a missing file means none.
    pub fn load_default() -> Result<Credentials, AuthError> {
        match Self::default_path() {
            Some(p) if p.exists() => Self::load(&p),
            _ => Ok(Credentials::default()),
        }
    }

    pub fn load(path: &Path) -> Result<Credentials, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let f: File = serde_json::from_str(&text).map_err(|source| AuthError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let mut by_host = BTreeMap::new();
        for (key, e) in f.auths {
            let pair = match (e.auth, e.username, e.password) {
                (Some(a), _, _) if !a.is_empty() => user_password(&a).map_err(|problem| AuthError::Entry {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    problem,
                })?,
                (_, Some(u), Some(p)) => (u, p),
                _ => continue,
            };
            by_host.insert(host_of(&key), pair);
        }
        Ok(Credentials { by_host })
    }

    /// Credentials for the registry host actually contacted (a mirror's, when mirrored).
    pub fn for_host(&self, host: &str) -> RegistryAuth {
        match self.by_host.get(&host_of(host)) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"127.0.0.1:5000":{{"username":"bob","password":"pw"}}}}}}"#),
        )
        .unwrap();
        let c = Credentials::load(&p).unwrap();
        assert!(matches!(c.for_host("docker.io"), RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret"));
        assert!(matches!(c.for_host("127.0.0.1:5000"), RegistryAuth::Basic(u, _) if u == "bob"));
        assert!(matches!(c.for_host("ghcr.io"), RegistryAuth::Anonymous));
        std::fs::write(&p, r#"{"auths":{"x":{"auth":"%%%"}}}"#).unwrap();
        assert!(Credentials::load(&p).unwrap_err().to_string().contains("auths.x.auth"));
    }
}
