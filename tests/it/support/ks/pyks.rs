//! pykickstart for the kickstart tests: `ksvalidator -v VERSION` and `bash -n` on every
//! script section (ks_post_bash_n.py). Installs pykickstart from PyPI once if it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// pykickstart's scripts directory, installing pykickstart from PyPI once if needed.
fn pykickstart() -> &'static Result<PathBuf, String> {
    static P: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    P.get_or_init(|| {
        let have = |_: ()| {
            Command::new("python3")
                .args(["-c", "import pykickstart"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have(()) {
            let o = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "pykickstart"])
                .output()
                .map_err(|e| format!("python3 is needed to run pykickstart: {e}"))?;
            if !o.status.success() || !have(()) {
                return Err(format!(
                    "pykickstart is not installed and `python3 -m pip install --quiet pykickstart` failed:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        let o = Command::new("python3")
            .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
            .output()
            .map_err(|e| e.to_string())?;
        let scripts = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if scripts.join("ksvalidator").is_file() {
            Ok(scripts.join("ksvalidator"))
        } else {
            Err(format!(
                "pykickstart is installed but ksvalidator is not in {}",
                scripts.display()
            ))
        }
    })
}

/// `ksvalidator -v VERSION FILE`: (exit status, output).
pub fn ksvalidator(version: &str, file: &Path) -> (i32, String) {
    let ksv = pykickstart().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let o = Command::new("python3")
        .arg(ksv)
        .args(["-v", version, s(file)])
        .output()
        .expect("run ksvalidator");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), out)
}

pub fn bash_n_helper(version: &str, files: &[PathBuf]) -> (i32, String) {
    pykickstart().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/ks/ks_post_bash_n.py");
    let o = Command::new("python3")
        .arg(helper)
        .arg(version)
        .args(files)
        .output()
        .expect("run ks_post_bash_n.py");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}
