//! minisign signatures of bundles: `bundle.json.minisig` inside the bundle (over the
//! canonical `bundle.json`) and `<archive>.minisig` beside the archive. Both are plain
//! minisign files: `minisign -Vm FILE -p kbundle.pub` checks them.
//!
//! The trusted comment (signed too) carries what a node needs to judge a bundle before
//! reading it: `kbundle name=N kubernetes=vX.Y.Z serial=S built=YYYY-MM-DDTHH:MM:SSZ`.

use minisign::{PublicKey, PublicKeyBox, SignatureBox};
use std::fmt;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

/// Largest signature file kbundle reads (a minisign signature is about 300 bytes).
pub const MAX_SIG_BYTES: u64 = 64 << 10;

/// A minisign key id: 8 bytes, shown as minisign shows it (16 upper-case hex digits of the
/// little-endian number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn from_slice(b: &[u8]) -> KeyId {
        let mut id = [0u8; 8];
        for (d, s) in id.iter_mut().zip(b) {
            *d = *s;
        }
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// The fields of a kbundle trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedComment {
    pub name: String,
    pub kubernetes: String,
    /// Monotonic per signer: a node refuses a bundle older than one it has seen.
    pub serial: u64,
    /// Seconds since the epoch.
    pub built: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted comment {comment:?} is not kbundle's (`kbundle name=… kubernetes=… serial=… built=…`): {reason}")]
pub struct CommentError {
    pub comment: String,
    pub reason: String,
}

impl TrustedComment {
    pub fn render(&self) -> String {
        format!(
            "kbundle name={} kubernetes={} serial={} built={}",
            self.name,
            self.kubernetes,
            self.serial,
            rfc3339(self.built)
        )
    }

    pub fn parse(s: &str) -> Result<TrustedComment, CommentError> {
        let err = |reason: &str| CommentError {
            comment: s.to_string(),
            reason: reason.to_string(),
        };
        let mut words = s.split(' ');
        if words.next() != Some("kbundle") {
            return Err(err("it does not start with `kbundle `"));
        }
        let mut get = |key: &str| {
            let w = words.next().ok_or_else(|| err(&format!("{key}= is missing")))?;
            w.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| err(&format!("expected {key}=…, found {w:?}")))
        };
        let (name, kubernetes) = (get("name")?, get("kubernetes")?);
        let serial = get("serial")?.parse().map_err(|_| err("serial is not a number"))?;
        let built = parse_rfc3339(&get("built")?).ok_or_else(|| err("built is not YYYY-MM-DDTHH:MM:SSZ"))?;
        if words.next().is_some() {
            return Err(err("unexpected words after built="));
        }
        Ok(TrustedComment {
            name,
            kubernetes,
            serial,
            built,
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The inverse of [`rfc3339`] (exactly that form), checked by rendering it back.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let (y2, mp) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86400 + h * 3600 + mi * 60 + se).ok()?;
    (rfc3339(secs) == s).then_some(secs)
}

/// A public key kbundle trusts, with where it came from.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: KeyId,
    pub key: PublicKey,
    pub path: PathBuf,
}

/// A list of key ids for messages: `A, B` or `none`.
pub fn ids(keys: &[TrustedKey]) -> String {
    if keys.is_empty() {
        return "none".into();
    }
    keys.iter().map(|k| k.id.to_string()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum SigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: not a minisign {kind}: {source}")]
    Parse {
        what: String,
        kind: &'static str,
        #[source]
        source: minisign::PError,
    },
    #[error("{what} is not signed (no {sig}); trusted keys: {trusted}")]
    Missing { what: String, sig: String, trusted: String },
    #[error("{what} is signed by key id {found}, which is not trusted (trusted keys: {trusted})")]
    Untrusted {
        what: String,
        found: KeyId,
        trusted: String,
    },
    #[error("{what}: the signature by key id {found} does not match: {source}")]
    Bad {
        what: String,
        found: KeyId,
        #[source]
        source: minisign::PError,
    },
    #[error("{what}: {sig} is larger than {MAX_SIG_BYTES} bytes")]
    TooLarge { what: String, sig: String },
}

/// A signature that was read (and, from the verify functions, checked).
#[derive(Debug, Clone)]
pub struct Signed {
    pub key_id: KeyId,
    /// The trusted comment as signed.
    pub comment: String,
}

impl Signed {
    pub fn fields(&self) -> Result<TrustedComment, CommentError> {
        TrustedComment::parse(&self.comment)
    }
}

/// Reads a public key file (`kbundle.pub`, minisign's `minisign.pub`).
pub fn read_public_key(path: &Path) -> Result<TrustedKey, SigError> {
    let text = read_small(path)?;
    parse_public_key(path, &String::from_utf8_lossy(&text))
}

/// A public key from its text: minisign's two-line file, or only its base64 line (`RW…`).
/// `origin` names it in errors and in [`TrustedKey::path`].
pub fn parse_public_key(origin: &Path, text: &str) -> Result<TrustedKey, SigError> {
    let parse = |source| SigError::Parse {
        what: origin.display().to_string(),
        kind: "public key",
        source,
    };
    let t = text.trim();
    let key = if t.lines().count() == 1 {
        PublicKey::from_base64(t).map_err(parse)?
    } else {
        PublicKeyBox::from_string(text)
            .and_then(|b| b.into_public_key())
            .map_err(parse)?
    };
    Ok(TrustedKey {
        id: KeyId::from_slice(key.keynum()),
        key,
        path: origin.to_path_buf(),
    })
}

fn read_small(path: &Path) -> Result<Vec<u8>, SigError> {
    let io = |source| SigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(MAX_SIG_BYTES + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > MAX_SIG_BYTES {
        return Err(SigError::TooLarge {
            what: path.display().to_string(),
            sig: path.display().to_string(),
        });
    }
    Ok(buf)
}

/// Parses a signature without checking it: who signed, and the comment they claim.
pub fn describe(what: &str, sig: &[u8]) -> Result<(SignatureBox, Signed), SigError> {
    let b = SignatureBox::from_string(&String::from_utf8_lossy(sig)).map_err(|source| SigError::Parse {
        what: what.to_string(),
        kind: "signature",
        source,
    })?;
    let comment = b.trusted_comment().unwrap_or_default();
    let key_id = KeyId::from_slice(b.keynum());
    Ok((b, Signed { key_id, comment }))
}

/// Checks `sig` over `data` with the trusted key of the signature's key id.
fn check(what: &str, sig: &[u8], data: impl Read + std::io::Seek, trusted: &[TrustedKey]) -> Result<Signed, SigError> {
    let (b, signed) = describe(what, sig)?;
    let Some(k) = trusted.iter().find(|k| k.id == signed.key_id) else {
        return Err(SigError::Untrusted {
            what: what.to_string(),
            found: signed.key_id,
            trusted: ids(trusted),
        });
    };
    minisign::verify(&k.key, &b, data, true, false, false).map_err(|source| SigError::Bad {
        what: what.to_string(),
        found: signed.key_id,
        source,
    })?;
    Ok(signed)
}

/// `<archive>.minisig`, the signature beside an archive.
pub fn archive_sig_path(archive: &Path) -> PathBuf {
    PathBuf::from(format!("{}.minisig", archive.display()))
}

/// Reads `<archive>.minisig` if there is one.
pub fn read_archive_sig(archive: &Path) -> Result<Option<Vec<u8>>, SigError> {
    let p = archive_sig_path(archive);
    if p.symlink_metadata().is_err() {
        return Ok(None);
    }
    read_small(&p).map(Some)
}

/// Checks the archive against `<archive>.minisig` with the trusted keys: refused when the
/// signature is missing, by an untrusted key, or does not match.
pub fn verify_archive_sig(archive: &Path, trusted: &[TrustedKey]) -> Result<Signed, SigError> {
    let what = archive.display().to_string();
    let sig = read_archive_sig(archive)?.ok_or_else(|| SigError::Missing {
        what: what.clone(),
        sig: archive_sig_path(archive).display().to_string(),
        trusted: ids(trusted),
    })?;
    let f = std::fs::File::open(archive).map_err(|source| SigError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    check(&what, &sig, std::io::BufReader::new(f), trusted)
}

/// Checks `bundle.json` (its exact bytes) against `bundle.json.minisig` (`None`: absent).
pub fn verify_json_sig(bundle_json: &[u8], sig: Option<&[u8]>, trusted: &[TrustedKey]) -> Result<Signed, SigError> {
    let what = super::meta::BUNDLE_JSON.to_string();
    let sig = sig.ok_or_else(|| SigError::Missing {
        what: what.clone(),
        sig: super::meta::BUNDLE_JSON_SIG.to_string(),
        trusted: ids(trusted),
    })?;
    check(&what, sig, Cursor::new(bundle_json), trusted)
}

/// A signature's comment must name the bundle it is found with.
pub fn comment_matches(signed: &Signed, bundle: &super::meta::BundleJson) -> Result<(), String> {
    let c = signed.fields().map_err(|e| e.to_string())?;
    let kubernetes = bundle.kubernetes.to_string();
    if c.name != bundle.name.as_str() || c.kubernetes != kubernetes {
        return Err(format!(
            "the signed comment names {} {}, but bundle.json is {} {}",
            c.name, c.kubernetes, bundle.name, bundle.kubernetes
        ));
    }
    Ok(())
}

/// `verify`'s view of `<archive>.minisig`: with trusted keys it must verify (the note names
/// the key and comment); without, it is only described.
pub fn judge_archive(archive: &Path, trusted: &[TrustedKey]) -> Result<String, SigError> {
    let sig_name = archive_sig_path(archive).display().to_string();
    if !trusted.is_empty() {
        let s = verify_archive_sig(archive, trusted)?;
        return Ok(format!(
            "{sig_name}: good signature by trusted key id {} ({})",
            s.key_id, s.comment
        ));
    }
    Ok(match read_archive_sig(archive)? {
        None => format!("not signed: no {sig_name}"),
        Some(sig) => unchecked(&sig_name, &sig)?,
    })
}

fn unchecked(what: &str, sig: &[u8]) -> Result<String, SigError> {
    let (_, s) = describe(what, sig)?;
    Ok(format!(
        "{what}: signed by key id {} ({}); not checked: no --trusted-key",
        s.key_id, s.comment
    ))
}

/// `verify`'s view of `bundle.json.minisig` in a checked bundle (see [`judge_archive`]); a
/// good signature must also name this bundle in its comment.
pub fn judge_json(report: &super::verify::Report, trusted: &[TrustedKey]) -> Result<String, String> {
    let name = super::meta::BUNDLE_JSON_SIG;
    if trusted.is_empty() {
        return match &report.json_sig {
            None => Ok(format!("not signed: no {name} in the bundle")),
            Some(sig) => unchecked(name, sig).map_err(|e| e.to_string()),
        };
    }
    let (Some(bj), Some(bundle)) = (&report.bundle_json, &report.bundle) else {
        return Err("bundle.json could not be read, so its signature was not checked".into());
    };
    let s = verify_json_sig(bj, report.json_sig.as_deref(), trusted).map_err(|e| e.to_string())?;
    comment_matches(&s, bundle)?;
    Ok(format!(
        "{name}: good signature by trusted key id {} ({})",
        s.key_id, s.comment
    ))
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
