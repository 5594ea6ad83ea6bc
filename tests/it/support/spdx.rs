//! The stock SPDX validator for the SBOM tests: `pyspdxtools` from PyPI's spdx-tools.
//! Found on PATH, in python3's scripts directory, or in the venv /opt/spdx; when none has it
//! the test fails with the install command (it never passes without running it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The install command the failure message gives (`.ci/run` runs the pip one).
pub const INSTALL: &str =
    "python3 -m pip install spdx-tools   (or: python3 -m venv /opt/spdx && /opt/spdx/bin/pip install spdx-tools)";

fn pyspdxtools() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pyspdxtools"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("pyspdxtools"));
    on_path
        .into_iter()
        .chain(scripts)
        .chain([PathBuf::from("/opt/spdx/bin/pyspdxtools")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("pyspdxtools (PyPI spdx-tools) is not installed; install it with: {INSTALL}"))
}

/// `pyspdxtools -i FILE`: (exit status 0, output).
pub fn validate(file: &Path) -> (bool, String) {
    let o = Command::new(pyspdxtools())
        .arg("-i")
        .arg(file)
        .output()
        .expect("run pyspdxtools");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), out)
}

/// `pyspdxtools -i FILE` must pass with no validation message.
pub fn assert_valid(file: &Path) {
    let (ok, out) = validate(file);
    assert!(ok, "pyspdxtools -i {} failed:\n{out}", file.display());
    assert!(
        !out.to_lowercase().contains("invalid") && !out.contains("ValidationMessage"),
        "pyspdxtools -i {}:\n{out}",
        file.display()
    );
}
