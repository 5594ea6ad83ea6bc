use crate::bundle::signature::{self, TrustedKey};
use crate::bundle::verify::{Problem, Report};
use std::path::{Path, PathBuf};

/// Check a bundle (archive or unpacked directory) against its bundle.json: every entry
/// present with the right size and sha256, nothing extra, SHA256SUMS consistent. Archives
/// are read without writing anything, and unsafe entries (absolute paths, '..', links,
/// devices, setuid bits) are refused. Exit status 1 on any problem.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  kbundle verify kubernetes-v1.34.3.tar.zst\n  \
kbundle verify --trusted-key kbundle.pub kubernetes-v1.34.3.tar.zst\n  \
kbundle verify /var/lib/kbundle/bundles/<digest>/kubernetes-v1.34.3\n\n\
With --trusted-key or any key in /etc/kbundle/trusted-keys/, the bundle must be signed by one of \
those keys: the archive's <archive>.minisig (checked before anything else is read) and \
bundle.json.minisig inside. Without trusted keys, verify reports whether the bundle is signed and \
by which key id. verify does not check serials (install and upgrade do).")]
pub struct Args {
    pub path: PathBuf,
    /// For delta bundles: the unpacked base bundle (default: found by digest under
    /// /var/lib/kbundle/bundles).
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// A public key (kbundle.pub, minisign format) whose signatures are trusted; repeatable.
    /// Trusted too: ROOT/etc/kbundle/trusted-keys/*.pub. With any trusted key, a missing,
    /// untrusted or bad signature is a problem.
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Vec<PathBuf>,
    /// Report signature problems as warnings instead (warned on stderr).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// The node root whose /etc/kbundle/trusted-keys is read.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let t = std::time::Instant::now();
    let flags = crate::trust::Flags {
        trusted_keys: a.trusted_key.clone(),
        allow_unsigned: a.allow_unsigned,
        allow_downgrade: false,
    };
    let policy = crate::trust::Policy::for_node(&crate::host::Host::new(&a.root, true), &flags, Vec::new())?;
    let trusted = policy.keys().to_vec();
    let mut notes = Vec::new();
    if trusted.is_empty() {
        notes.push(crate::trust::Verdict::Unsigned(crate::trust::Unsigned::NoKeys).describe());
    }
    if !a.path.is_dir() {
        match signature::judge_archive(&a.path, &trusted) {
            Ok(note) => notes.push(note),
            Err(e) if a.allow_unsigned => {
                crate::trust::warn(&format!("{e}; not a problem because of --allow-unsigned"))
            }
            // Refused before the content is read: a node must not unpack what it cannot trust.
            Err(e) if !trusted.is_empty() => {
                return failed(&a.path, &[Problem::Signature { detail: e.to_string() }], 1)
            }
            Err(e) => notes.push(format!("archive signature unreadable: {e}")),
        }
    }
    let mut report = crate::bundle::base::verify_with_base(&a.path, a.base.as_deref())?;
    judge_json(&trusted, a.allow_unsigned, &mut report, &mut notes);
    for p in &report.problems {
        eprintln!("{}: {p}", a.path.display());
    }
    sidecar_warning(&a.path, &report);
    if !report.ok() {
        return failed(&a.path, &[], report.problems.len().max(1));
    }
    if !quiet {
        print_ok(&a.path, &notes, &report, t)?;
    }
    Ok(0)
}

fn print_ok(path: &Path, notes: &[String], report: &Report, t: std::time::Instant) -> anyhow::Result<()> {
    for n in notes {
        crate::outln!("{n}")?;
    }
    crate::outln!(
        "OK {}: {} files, {} bytes verified in {:.2}s",
        path.display(),
        report.files_checked,
        report.bytes_checked,
        t.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// bundle.json.minisig: a note, or (with trusted keys) a problem.
fn judge_json(trusted: &[TrustedKey], allow_unsigned: bool, report: &mut Report, notes: &mut Vec<String>) {
    if report.bundle.is_none() && trusted.is_empty() {
        return;
    }
    match signature::judge_json(report, trusted) {
        Ok(n) => notes.push(n),
        Err(detail) if allow_unsigned => {
            crate::trust::warn(&format!("{detail}; not a problem because of --allow-unsigned"))
        }
        Err(detail) if !trusted.is_empty() => report.problems.push(Problem::Signature { detail }),
        Err(detail) => notes.push(format!("bundle.json signature unreadable: {detail}")),
    }
}

fn sidecar_warning(path: &Path, report: &Report) {
    if !path.is_dir() && !report.sidecar_checked {
        eprintln!(
            "warning: no {}.sha256 beside the archive: checked against its own bundle.json only; compare `sha256sum {}` with the digest the build printed",
            path.display(),
            path.display()
        );
    }
}

/// Prints the problems and the verdict; exit status 1.
fn failed(path: &Path, problems: &[Problem], count: usize) -> anyhow::Result<i32> {
    for p in problems {
        eprintln!("{}: {p}", path.display());
    }
    eprintln!("FAILED {}: {count} problem(s)", path.display());
    Ok(super::EXIT_FAILURE)
}
