#![allow(dead_code)]
//! Test OpenPGP keys (made with Debian's gnupg: tests/it/fixtures/pgp/README) and
//! clear-signing with `gpg --clearsign`, for the loopback upstream's `runc.sha256sum`.
//! kbundle checks that file against runc's pinned keyring; test manifests name the test
//! signer's public key instead (`[upstream-keys] runc`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Fingerprint of the key that signs the loopback upstream's `runc.sha256sum`.
pub const TEST_SIGNER_FPR: &str = "9BDE3068D806E39FE05A444AAB98BD77F2547F4F";
/// Fingerprint of a key no test manifest trusts.
pub const STRANGER_FPR: &str = "58D3E73E2CBA1CA5D055091A396F83066D9DCFEB";

/// A file of tests/it/fixtures/pgp/.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/pgp")
        .join(name)
}

/// The test signer's secret key (no passphrase).
pub fn test_signer_secret() -> PathBuf {
    fixture("test-signer.sec.asc")
}

/// The test signer's public key: what test manifests trust for runc.
pub fn test_signer_public() -> PathBuf {
    fixture("test-signer.pub.asc")
}

/// `text` clear-signed (RFC 4880 §7) by the secret key in `secret_key`, with Debian's gpg in
/// a throwaway home directory whose agent is stopped afterwards.
pub fn clearsign(text: &str, secret_key: &Path) -> io::Result<String> {
    let home = tempfile::Builder::new().prefix("kb-gpg-").tempdir_in("/tmp")?;
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.args(["--batch", "--quiet", "--no-tty", "--homedir"])
            .arg(home.path())
            .args(args);
        c
    };
    let signed = run(gpg(&["--import"]).arg(secret_key), "").and_then(|_| {
        run(
            gpg(&["--clearsign", "--digest-algo", "SHA256"]).stdout(Stdio::piped()),
            text,
        )
    });
    // The agent gpg started for the secret key: stop it with its home directory.
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home.path())
        .args(["--kill", "gpg-agent"])
        .output();
    String::from_utf8(signed?).map_err(|e| io::Error::other(format!("gpg output is not UTF-8: {e}")))
}

/// Runs `c` with `input` on stdin; its stdout, or an error with its stderr.
fn run(c: &mut Command, input: &str) -> io::Result<Vec<u8>> {
    let mut child = c.stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("gpg: no stdin"))?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{c:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// The `[upstream-keys]` table that makes a manifest trust the test signer for runc.
pub fn trust_table(public_key: &Path) -> String {
    format!("\n[upstream-keys]\nrunc = {:?}\n", public_key.display().to_string())
}

/// Appends [`trust_table`] for the test signer to the manifest at `manifest`.
pub fn trust_test_signer(manifest: &Path) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(manifest)?;
    f.write_all(trust_table(&test_signer_public()).as_bytes())
}

/// Copies a shipped manifest (`manifests/<name>`) to `dest`, trusting the test signer.
pub fn copy_manifest(name: &str, dest: &Path) -> io::Result<()> {
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests").join(name), dest)?;
    trust_test_signer(dest)
}
