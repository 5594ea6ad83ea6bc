//! The one interpretation of a tar stream that every reader of bundles uses (`verify`,
//! `unpack`, `install`, `inspect`, `kickstart`/`iso`).
//!
//! tar-rs is used in raw mode (headers, checksums, octal and base-256 numbers) and the
//! extension headers are applied here, strictly: wherever GNU tar and another reader could
//! disagree about an entry's name or size, the archive is refused instead of guessing. So
//! the bytes `verify` hashed are exactly the bytes `unpack` writes and `tar -x` extracts.

use std::collections::BTreeMap;
use std::io::{self, Read};

/// Largest pax extended header kbundle reads (bundles only ever need `path`).
const MAX_PAX: u64 = 64 << 10;
/// Largest GNU long name.
const MAX_LONGNAME: u64 = 4096;
/// pax keywords a bundle's archive may carry; any other is refused (GNU tar and other
/// readers give some of them, like `GNU.sparse.*` or `linkpath`, meanings we would ignore).
const PAX_KEYS: [&str; 9] = [
    "path", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname",
];

/// What kind of member a header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Device,
    Fifo,
    /// Any other type flag (contiguous files, sparse files, volume labels, …).
    Other(u8),
}

/// One member as GNU tar would extract it: its effective name and data size.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    /// Link target, for the error message of a refused link.
    pub link: String,
}

/// Why a stream cannot be read as a bundle archive.
#[derive(Debug)]
pub enum Fault {
    /// The member (its raw name, or a description in angle brackets) is refused.
    Unsafe { entry: String, reason: String },
    /// The stream is corrupt or truncated at `at`.
    Corrupt { at: String, source: io::Error },
}

fn unsafe_(entry: &str, reason: impl Into<String>) -> Fault {
    Fault::Unsafe {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

fn corrupt(at: &str, source: io::Error) -> Fault {
    Fault::Corrupt {
        at: at.to_string(),
        source,
    }
}

/// Extension headers waiting for the member they describe.
enum Pending {
    None,
    Pax(BTreeMap<String, Vec<u8>>),
    LongName(Vec<u8>),
}

/// Members of a tar stream, one at a time.
pub struct Members<'a, R: Read> {
    entries: tar::Entries<'a, R>,
    last: String,
}

impl<'a, R: Read> Members<'a, R> {
    pub fn new(ar: &'a mut tar::Archive<R>) -> Result<Self, Fault> {
        let entries = ar.entries().map_err(|e| corrupt("<start of archive>", e))?.raw(true);
        Ok(Members {
            entries,
            last: "<start of archive>".into(),
        })
    }

    /// The next member and a reader of exactly its `size` data bytes; `None` at the
    /// end-of-archive marker.
    #[allow(clippy::type_complexity)]
    pub fn next_member(&mut self) -> Result<Option<(Member, tar::Entry<'a, R>)>, Fault> {
        let mut pending = Pending::None;
        loop {
            let Some(raw) = self.entries.next() else {
                return match pending {
                    Pending::None => Ok(None),
                    _ => Err(unsafe_(&self.last, "an extension header with no entry after it")),
                };
            };
            let mut raw = raw.map_err(|e| corrupt(&format!("<after {}>", self.last), e))?;
            let hdr = raw.header();
            if hdr.as_gnu().is_none() && hdr.as_ustar().is_none() {
                return Err(unsafe_(
                    &self.last,
                    "a header that is neither ustar nor GNU (old v7 format)",
                ));
            }
            let flag = hdr.entry_type().as_byte();
            match flag {
                b'x' | b'L' if !matches!(pending, Pending::None) => {
                    return Err(unsafe_(&self.last, "two extension headers for one entry"));
                }
                b'x' => pending = Pending::Pax(read_pax(&mut raw, &self.last)?),
                b'L' => pending = Pending::LongName(read_longname(&mut raw, &self.last)?),
                b'g' => return Err(unsafe_(&self.last, "a pax global header (bundles never carry one)")),
                b'K' => return Err(unsafe_(&self.last, "a GNU long link name (bundles hold no links)")),
                _ => {
                    let m = self.member(&raw, pending)?;
                    self.last = m.name.clone();
                    return Ok(Some((m, raw)));
                }
            }
        }
    }

    fn member(&self, raw: &tar::Entry<'a, R>, pending: Pending) -> Result<Member, Fault> {
        let hdr = raw.header();
        let header_size = hdr.entry_size().map_err(|e| corrupt(&self.last, e))?;
        let name_bytes = match &pending {
            Pending::LongName(n) => n.clone(),
            Pending::Pax(p) => p.get("path").cloned().unwrap_or_else(|| hdr.path_bytes().into_owned()),
            Pending::None => hdr.path_bytes().into_owned(),
        };
        let name = String::from_utf8(name_bytes)
            .map_err(|e| unsafe_(&String::from_utf8_lossy(e.as_bytes()), "the path is not UTF-8"))?;
        if name.contains('\0') {
            return Err(unsafe_(&name, "NUL in the path"));
        }
        if let Pending::Pax(p) = &pending {
            check_pax_size(p, header_size, &name)?;
        }
        let mode = hdr.mode().map_err(|e| corrupt(&name, e))?;
        let link = hdr
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(Member {
            kind: kind_of(hdr.entry_type().as_byte()),
            name,
            size: header_size,
            mode,
            link,
        })
    }
}

fn kind_of(flag: u8) -> Kind {
    match flag {
        b'0' | b'\0' => Kind::File,
        b'5' => Kind::Dir,
        b'2' => Kind::Symlink,
        b'1' => Kind::HardLink,
        b'3' | b'4' => Kind::Device,
        b'6' => Kind::Fifo,
        b => Kind::Other(b),
    }
}

/// A short name for an unsupported type flag.
pub fn describe(flag: u8) -> String {
    let what = match flag {
        b'7' => "contiguous file",
        b'S' => "GNU sparse file",
        b'V' => "GNU volume label",
        b'M' => "GNU multi-volume continuation",
        b'D' => "GNU dump directory",
        _ => "unknown type",
    };
    if flag.is_ascii_graphic() {
        format!("type flag '{}' ({what})", flag as char)
    } else {
        format!("type flag 0x{flag:02x} ({what})")
    }
}

fn check_pax_size(p: &BTreeMap<String, Vec<u8>>, header_size: u64, name: &str) -> Result<(), Fault> {
    let Some(v) = p.get("size") else { return Ok(()) };
    let text = std::str::from_utf8(v).unwrap_or("");
    match text.parse::<u64>() {
        Ok(n) if n == header_size && text.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(unsafe_(
            name,
            format!(
                "pax size record {} conflicts with the header's size {header_size}",
                crate::bundle::fields::shown(&String::from_utf8_lossy(v))
            ),
        )),
    }
}

fn read_bounded(r: &mut impl Read, max: u64, at: &str, what: &str) -> Result<Vec<u8>, Fault> {
    let mut buf = Vec::new();
    r.take(max + 1).read_to_end(&mut buf).map_err(|e| corrupt(at, e))?;
    if buf.len() as u64 > max {
        return Err(unsafe_(at, format!("{what} longer than {max} bytes")));
    }
    Ok(buf)
}

/// A GNU long name: the bytes up to the first NUL; anything but NULs after it is refused
/// (readers disagree on it).
fn read_longname(r: &mut impl Read, at: &str) -> Result<Vec<u8>, Fault> {
    let mut buf = read_bounded(r, MAX_LONGNAME, at, "a GNU long name")?;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if buf[end..].iter().any(|b| *b != 0) {
        return Err(unsafe_(at, "a GNU long name with data after its NUL terminator"));
    }
    buf.truncate(end);
    Ok(buf)
}

/// A pax extended header: `<len> <key>=<value>\n` records, each length exact, each key
/// once and from [`PAX_KEYS`].
fn read_pax(r: &mut impl Read, at: &str) -> Result<BTreeMap<String, Vec<u8>>, Fault> {
    let buf = read_bounded(r, MAX_PAX, at, "a pax header")?;
    let mut out = BTreeMap::new();
    let mut rest = &buf[..];
    while !rest.is_empty() {
        let (key, value, tail) = pax_record(rest).ok_or_else(|| unsafe_(at, "a malformed pax record"))?;
        if !PAX_KEYS.contains(&key.as_str()) {
            return Err(unsafe_(
                at,
                format!(
                    "pax record {} (bundles never carry it)",
                    crate::bundle::fields::shown(&key)
                ),
            ));
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(unsafe_(at, format!("pax record {key:?} given twice")));
        }
        rest = tail;
    }
    Ok(out)
}

fn pax_record(rest: &[u8]) -> Option<(String, Vec<u8>, &[u8])> {
    let sp = rest.iter().position(|b| *b == b' ')?;
    let len_text = std::str::from_utf8(&rest[..sp]).ok()?;
    if len_text.is_empty() || !len_text.bytes().all(|b| b.is_ascii_digit()) || len_text.starts_with('0') {
        return None;
    }
    let len: usize = len_text.parse().ok()?;
    if len > rest.len() || len <= sp + 1 || rest[len - 1] != b'\n' {
        return None;
    }
    let body = &rest[sp + 1..len - 1];
    let eq = body.iter().position(|b| *b == b'=')?;
    let key = String::from_utf8(body[..eq].to_vec()).ok()?;
    Some((key, body[eq + 1..].to_vec(), &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_are_exact() {
        assert_eq!(
            pax_record(b"11 path=ab\n"),
            Some(("path".to_string(), b"ab".to_vec(), &b""[..]))
        );
        for bad in [
            &b"12 path=ab\n"[..],
            b"10 path=ab\n",
            b"011 path=ab\n",
            b"11 pathXab\n",
            b"x path=a\n",
        ] {
            assert!(pax_record(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn duplicate_and_unknown_pax_keys_are_refused() {
        let twice = b"11 path=ab\n11 path=cd\n".to_vec();
        assert!(read_pax(&mut &twice[..], "x").is_err());
        let sparse = b"21 GNU.sparse.size=1\n".to_vec();
        assert!(read_pax(&mut &sparse[..], "x").is_err());
        let ok = b"11 path=ab\n10 size=5\n".to_vec();
        assert_eq!(read_pax(&mut &ok[..], "x").unwrap().len(), 2);
    }

    #[test]
    fn longname_garbage_after_nul_is_refused() {
        assert_eq!(read_longname(&mut &b"abc\0\0"[..], "x").unwrap(), b"abc");
        assert!(read_longname(&mut &b"abc\0def"[..], "x").is_err());
    }
}
