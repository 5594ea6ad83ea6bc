//! Upstream checksum-file formats, parsed strictly.
//!
//! - digest only: dl.k8s.io `<bin>.sha256` (no newline), crictl `.tar.gz.sha256`;
//! - `sha256sum` lines (`<hex>  <file>`): containerd `.sha256sum`, CNI `.tgz.sha256`, etcd `SHA256SUMS`;
//! - runc's `runc.sha256sum`: `sha256sum` lines inside a PGP clear-signed message.
//!
//! [`sum_lines`] is kbundle's one reader of `sha256sum` output: checksum files here, an
//! archive's `<archive>.sha256` sidecar elsewhere.

use crate::digest::Sha256;

/// How an upstream publishes the digest of one artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumFormat {
    /// The file holds only the hex digest.
    DigestOnly,
    /// `sha256sum` output: one `<hex>  <name>` line per file.
    Sha256Sum,
    /// `sha256sum` output wrapped in a PGP clear-signed message.
    ClearSigned,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("checksum file is not UTF-8 text")]
    NotText,
    #[error("expected only a 64-hex sha256 digest, found {found:?}")]
    NotADigest { found: String },
    #[error("line {line}: expected '<64-hex sha256>  <file name>', found {found:?}")]
    BadLine { line: usize, found: String },
    #[error("no line for {name:?} (file names listed: {listed})")]
    NotListed { name: String, listed: String },
    #[error("{name:?} is listed {count} times with different digests")]
    Conflicting { name: String, count: usize },
    #[error("not a PGP clear-signed message: {reason}")]
    NotClearSigned { reason: &'static str },
    #[error("holds no sha256")]
    Empty,
    #[error("larger than {limit} bytes: not a checksum file")]
    TooLarge { limit: u64 },
}

/// Finds the digest of `name` in a checksum file of the given format.
pub fn parse(format: ChecksumFormat, body: &[u8], name: &str) -> Result<Sha256, ChecksumError> {
    let text = std::str::from_utf8(body).map_err(|_| ChecksumError::NotText)?;
    match format {
        ChecksumFormat::DigestOnly => parse_digest_only(text),
        ChecksumFormat::Sha256Sum => find(&sum_lines_of(text.lines().enumerate())?, name),
        ChecksumFormat::ClearSigned => find(&sum_lines_of(clear_signed_body(text)?)?, name),
    }
}

/// One entry of `sha256sum` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumLine<'a> {
    pub digest: Sha256,
    /// The file name, without a leading `./`.
    pub name: &'a str,
}

/// Every entry of `sha256sum` output (a checksum file, an archive's `.sha256` sidecar):
/// `<hex>  <name>` or `<hex> *<name>` lines; blank lines are skipped, any other line must
/// be well-formed.
pub fn sum_lines(body: &[u8]) -> Result<Vec<SumLine<'_>>, ChecksumError> {
    let text = std::str::from_utf8(body).map_err(|_| ChecksumError::NotText)?;
    sum_lines_of(text.lines().enumerate())
}

/// Parses one line of `sha256sum` output; `number` (0-based) is for the error.
pub fn sum_line(number: usize, line: &str) -> Result<SumLine<'_>, ChecksumError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let bad = || ChecksumError::BadLine {
        line: number + 1,
        found: line.chars().take(160).collect(),
    };
    let (hex, rest) = line.split_at_checked(64).ok_or_else(bad)?;
    let digest: Sha256 = hex.parse().map_err(|_| bad())?;
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))
        .filter(|n| !n.is_empty())
        .ok_or_else(bad)?;
    // Some tools write `./name`; the file name itself is what must match exactly.
    let name = name.strip_prefix("./").unwrap_or(name);
    Ok(SumLine { digest, name })
}

fn sum_lines_of<'a>(lines: impl Iterator<Item = (usize, &'a str)>) -> Result<Vec<SumLine<'a>>, ChecksumError> {
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| sum_line(i, l))
        .collect()
}

fn parse_digest_only(text: &str) -> Result<Sha256, ChecksumError> {
    // Exactly one token, optionally followed by a single trailing newline.
    let t = text.strip_suffix('\n').unwrap_or(text);
    let t = t.strip_suffix('\r').unwrap_or(t);
    t.parse().map_err(|_| ChecksumError::NotADigest {
        found: t.chars().take(100).collect(),
    })
}

/// The digest of `name`: listed once, or several times with the same digest.
fn find(lines: &[SumLine<'_>], name: &str) -> Result<Sha256, ChecksumError> {
    let found: Vec<Sha256> = lines.iter().filter(|l| l.name == name).map(|l| l.digest).collect();
    match found.as_slice() {
        [first, rest @ ..] if rest.iter().all(|d| d == first) => Ok(*first),
        [] => Err(ChecksumError::NotListed {
            name: name.to_string(),
            listed: listed(lines),
        }),
        _ => Err(ChecksumError::Conflicting {
            name: name.to_string(),
            count: found.len(),
        }),
    }
}

/// The first dozen names of a checksum file, for an error.
fn listed(lines: &[SumLine<'_>]) -> String {
    if lines.is_empty() {
        return "none".into();
    }
    lines.iter().take(12).map(|l| l.name).collect::<Vec<_>>().join(", ")
}

/// Returns the signed text of a PGP clear-signed message (RFC 4880 §7), with dash-escaping
/// removed, as numbered lines. The signature is not checked here: `lock` and `build` verify
/// it first and read digests from the verified signed text only (src/catalog/clearsign.rs).
fn clear_signed_body(text: &str) -> Result<impl Iterator<Item = (usize, &str)>, ChecksumError> {
    let not = |reason| ChecksumError::NotClearSigned { reason };
    let mut it = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i, l.strip_suffix('\r').unwrap_or(l)));
    if it.next().map(|(_, l)| l) != Some("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Err(not("first line is not -----BEGIN PGP SIGNED MESSAGE-----"));
    }
    skip_armor_headers(&mut it)?;
    let mut body = Vec::new();
    let mut saw_sig = false;
    for (i, l) in it.by_ref() {
        if l == "-----BEGIN PGP SIGNATURE-----" {
            saw_sig = true;
            break;
        }
        body.push((i, l.strip_prefix("- ").unwrap_or(l)));
    }
    if !saw_sig {
        return Err(not("no -----BEGIN PGP SIGNATURE----- block"));
    }
    if !it.any(|(_, l)| l == "-----END PGP SIGNATURE-----") {
        return Err(not("signature block is not closed"));
    }
    Ok(body.into_iter())
}

/// Armor headers (`Hash: SHA256`) up to the first empty line.
fn skip_armor_headers<'a>(it: &mut impl Iterator<Item = (usize, &'a str)>) -> Result<(), ChecksumError> {
    for (_, l) in it {
        if l.is_empty() {
            return Ok(());
        }
        if !l.contains(": ") {
            return Err(ChecksumError::NotClearSigned {
                reason: "malformed armor header before the signed text",
            });
        }
    }
    Err(ChecksumError::NotClearSigned {
        reason: "no blank line after the armor headers",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Sha256 {
        Sha256::of(s.as_bytes())
    }

    #[test]
    fn digest_only_with_and_without_newline() {
        let h = d("a").hex();
        assert_eq!(parse(ChecksumFormat::DigestOnly, h.as_bytes(), "x").unwrap(), d("a"));
        assert_eq!(
            parse(ChecksumFormat::DigestOnly, format!("{h}\n").as_bytes(), "x").unwrap(),
            d("a")
        );
        assert!(parse(ChecksumFormat::DigestOnly, format!("{h}  kubeadm\n").as_bytes(), "x").is_err());
        assert!(parse(ChecksumFormat::DigestOnly, format!("{h}\n\n").as_bytes(), "x").is_err());
        assert!(parse(ChecksumFormat::DigestOnly, b"<html>not found</html>", "x").is_err());
    }

    #[test]
    fn sum_lines_exact_name() {
        let body = format!(
            "{}  etcd-v3.5.25-linux-amd64.tar.gz\n{}  etcd-v3.5.25-linux-arm64.tar.gz\n",
            d("a").hex(),
            d("b").hex()
        );
        let f = ChecksumFormat::Sha256Sum;
        assert_eq!(
            parse(f, body.as_bytes(), "etcd-v3.5.25-linux-arm64.tar.gz").unwrap(),
            d("b")
        );
        let e = parse(f, body.as_bytes(), "etcd-v3.5.25-linux-amd64.tar").unwrap_err();
        assert!(matches!(e, ChecksumError::NotListed { .. }), "{e}");
        let bad = format!("{}  x\ngarbage\n", d("a").hex());
        assert!(matches!(
            parse(f, bad.as_bytes(), "x"),
            Err(ChecksumError::BadLine { line: 2, .. })
        ));
        let one_space = format!("{} x\n", d("a").hex());
        assert!(parse(f, one_space.as_bytes(), "x").is_err());
        let conflict = format!("{}  x\n{}  x\n", d("a").hex(), d("b").hex());
        assert!(matches!(
            parse(f, conflict.as_bytes(), "x"),
            Err(ChecksumError::Conflicting { .. })
        ));
    }

    #[test]
    fn sidecars_are_read_by_the_one_parser() {
        let body = format!("{}  kubernetes-v1.34.3.tar.zst\n", d("a").hex());
        let want = SumLine {
            digest: d("a"),
            name: "kubernetes-v1.34.3.tar.zst",
        };
        assert_eq!(sum_lines(body.as_bytes()).unwrap(), [want]);
        let binary_mode = format!("\n{} *./x.tar\r\n", d("b").hex());
        assert_eq!(sum_lines(binary_mode.as_bytes()).unwrap()[0].name, "x.tar");
        assert!(matches!(
            sum_lines(b"\nnonsense\n"),
            Err(ChecksumError::BadLine { line: 2, .. })
        ));
    }

    #[test]
    fn clear_signed_runc() {
        let body = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{}  runc.amd64\n{}  runc.arm64\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCAAd\n=abcd\n-----END PGP SIGNATURE-----\n",
            d("a").hex(),
            d("b").hex()
        );
        let f = ChecksumFormat::ClearSigned;
        assert_eq!(parse(f, body.as_bytes(), "runc.arm64").unwrap(), d("b"));
        let unsigned = format!("{}  runc.amd64\n", d("a").hex());
        assert!(matches!(
            parse(f, unsigned.as_bytes(), "runc.amd64"),
            Err(ChecksumError::NotClearSigned { .. })
        ));
        let unclosed = body.replace("-----END PGP SIGNATURE-----\n", "");
        assert!(parse(f, unclosed.as_bytes(), "runc.amd64").is_err());
    }
}
