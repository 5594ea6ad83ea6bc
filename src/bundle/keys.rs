//! Signing keys: minisign Ed25519 key pairs (`kbundle.key`, `kbundle.pub`), read and written
//! in minisign's own format, and signing with them.

use super::signature::{KeyId, TrustedComment};
use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

pub const SECRET_KEY_FILE: &str = "kbundle.key";
pub const PUBLIC_KEY_FILE: &str = "kbundle.pub";
/// The signing password, when not given by `--password-file`.
pub const PASSWORD_ENV: &str = "KBUNDLE_SIGNING_PASSWORD";
/// The secret key `build` signs with, when not given by `--sign`.
pub const KEY_ENV: &str = "KBUNDLE_SIGNING_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists: kbundle never overwrites a key (move it away or choose another --out)", path.display())]
    Exists { path: PathBuf },
    #[error("{what}: {source}")]
    Minisign {
        what: String,
        #[source]
        source: minisign::PError,
    },
    #[error("{} is password-protected: give the password with --password-file or {PASSWORD_ENV}, or run on a terminal to be asked", path.display())]
    NoPassword { path: PathBuf },
    #[error("no password for the new secret key: give it with --password-file or {PASSWORD_ENV}, run on a terminal to be asked, or pass --unencrypted")]
    NoNewPassword,
    #[error("--password-file {}: the file is empty", path.display())]
    EmptyPassword { path: PathBuf },
}

fn ms(what: impl Into<String>) -> impl FnOnce(minisign::PError) -> KeyError {
    let what = what.into();
    move |source| KeyError::Minisign { what, source }
}

/// The password from `--password-file` (its first line), else `KBUNDLE_SIGNING_PASSWORD`.
pub fn password(file: Option<&Path>) -> Result<Option<String>, KeyError> {
    let Some(f) = file else {
        return Ok(std::env::var(PASSWORD_ENV).ok());
    };
    let text = std::fs::read_to_string(f).map_err(|source| KeyError::Io {
        path: f.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(KeyError::EmptyPassword { path: f.to_path_buf() });
    }
    Ok(Some(line))
}

/// `key generate`: writes `DIR/kbundle.key` (mode 0600; encrypted unless `password` is
/// `Unencrypted`) and `DIR/kbundle.pub`. Returns the new key id.
pub fn generate(dir: &Path, password: NewPassword) -> Result<KeyId, KeyError> {
    let (sk_path, pk_path) = (dir.join(SECRET_KEY_FILE), dir.join(PUBLIC_KEY_FILE));
    for p in [&sk_path, &pk_path] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    let kp = match password {
        NewPassword::Unencrypted => KeyPair::generate_unencrypted_keypair(),
        NewPassword::Given(p) => KeyPair::generate_encrypted_keypair(Some(p)),
        NewPassword::Prompt if std::io::stdin().is_terminal() => KeyPair::generate_encrypted_keypair(None),
        NewPassword::Prompt => return Err(KeyError::NoNewPassword),
    }
    .map_err(ms("generating a key pair"))?;
    let id = KeyId::from_slice(kp.pk.keynum());
    let sk_box = kp
        .sk
        .to_box(Some(&format!("kbundle secret key {id}")))
        .map_err(ms("encoding the secret key"))?;
    let pk_box = kp.pk.to_box().map_err(ms("encoding the public key"))?;
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_new(&sk_path, sk_box.into_string().as_bytes(), 0o600)?;
    write_new(&pk_path, pk_box.into_string().as_bytes(), 0o644)?;
    Ok(id)
}

/// The password of a new secret key.
#[derive(Clone)]
pub enum NewPassword {
    Unencrypted,
    Given(String),
    /// Ask on the terminal (twice); refused when stdin is not one.
    Prompt,
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    let mut f = o.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists {
            path: path.to_path_buf(),
        },
        _ => io(e),
    })?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io)
}

/// A secret key ready to sign, with its public half (each signature is checked with it).
#[derive(Clone)]
pub struct Signer {
    sk: SecretKey,
    pk: PublicKey,
    pub id: KeyId,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.id)
    }
}

impl Signer {
    /// Reads a secret key file; an encrypted one needs `password`, or a terminal to ask on.
    pub fn load(path: &Path, password: Option<String>) -> Result<Signer, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let what = path.display().to_string();
        let sk_box = SecretKeyBox::from_string(&text).map_err(ms(what.clone()))?;
        let sk = match SecretKey::from_unencrypted_box(sk_box.clone()) {
            Ok(sk) => sk,
            Err(_) if password.is_none() && !std::io::stdin().is_terminal() => {
                return Err(KeyError::NoPassword {
                    path: path.to_path_buf(),
                })
            }
            Err(_) => SecretKey::from_box(sk_box, password).map_err(ms(what.clone()))?,
        };
        let pk = PublicKey::from_secret_key(&sk).map_err(ms(what))?;
        let id = KeyId::from_slice(pk.keynum());
        Ok(Signer { sk, pk, id })
    }

    /// A minisign signature file (`.minisig` text) of `data` with `comment` as the trusted
    /// comment.
    pub fn sign(&self, data: impl std::io::Read, comment: &TrustedComment) -> Result<Vec<u8>, KeyError> {
        let untrusted = format!("signature from kbundle secret key {}", self.id);
        let b = minisign::sign(
            Some(&self.pk),
            &self.sk,
            data,
            Some(&comment.render()),
            Some(&untrusted),
        )
        .map_err(ms("signing"))?;
        Ok(b.into_string().into_bytes())
    }
}
