//! SHA-256 digests: parsing, printing, and hashing streams without holding them in memory.

use sha2::{Digest as _, Sha256 as Hasher};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// A SHA-256 digest, printed as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 {input:?}: expected 64 hexadecimal characters")]
pub struct DigestError {
    pub input: String,
}

impl Sha256 {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Sha256(b)
    }

    pub fn of(data: &[u8]) -> Self {
        Sha256(Hasher::digest(data).into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `sha256:<hex>`, the OCI form.
    pub fn oci(&self) -> String {
        format!("sha256:{}", self.hex())
    }

    /// Parses `<hex>` or `sha256:<hex>`; upper-case hex is accepted and normalised.
    pub fn parse_any(s: &str) -> Result<Self, DigestError> {
        s.strip_prefix("sha256:").unwrap_or(s).parse()
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl FromStr for Sha256 {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DigestError {
            input: s.chars().take(80).collect(),
        };
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.to_ascii_lowercase(), &mut out).map_err(|_| err())?;
        Ok(Sha256(out))
    }
}

impl serde::Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256::parse_any(&s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::digest::oci_form")]`: writes `sha256:<hex>`, reads either form.
pub mod oci_form {
    use super::Sha256;
    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Sha256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.oci())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Sha256, D::Error> {
        let s = String::deserialize(d)?;
        Sha256::parse_any(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher that also counts bytes.
#[derive(Clone, Default)]
pub struct Hashing {
    hasher: Hasher,
    len: u64,
}

impl Hashing {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> (Sha256, u64) {
        (Sha256(self.hasher.finalize().into()), self.len)
    }
}

/// A writer that hashes everything written through it.
pub struct HashWriter<W> {
    inner: W,
    hash: Hashing,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Hashing::new(),
        }
    }
    pub fn finish(self) -> (W, Sha256, u64) {
        let (d, n) = self.hash.finish();
        (self.inner, d, n)
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through it.
pub struct HashReader<R> {
    inner: R,
    hash: Hashing,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hash: Hashing::new(),
        }
    }
    /// The digest and length of what was read.
    pub fn finish(self) -> (Sha256, u64) {
        self.hash.finish()
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Hashes a whole stream with a fixed 256 KiB buffer.
pub fn hash_reader(mut r: impl Read) -> io::Result<(Sha256, u64)> {
    let mut h = Hashing::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// Hashes a file.
pub fn hash_file(path: &std::path::Path) -> io::Result<(Sha256, u64)> {
    hash_reader(std::fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            Sha256::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_forms() {
        let d = Sha256::of(b"x");
        assert_eq!(Sha256::parse_any(&d.oci()).unwrap(), d);
        assert_eq!(d.hex().to_uppercase().parse::<Sha256>().unwrap(), d);
        assert!("abc".parse::<Sha256>().is_err());
        assert!(format!("{}g", &d.hex()[..63]).parse::<Sha256>().is_err());
    }
}
