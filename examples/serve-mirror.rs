//! Serves an upstream tree on the loopback HTTP mirror the tests use (with `Range`
//! support), and optionally a manifest's container images from a loopback registry, until
//! its standard input is closed. Used by `benches/build-verify.sh`.
//!
//! ```sh
//! cargo run --release --example serve-mirror -- DIR [--tree tiny|real] [--images MANIFEST]
//! ```
//!
//! * `--tree`: first builds the fake upstream tree of `tests/it/support/upstream.rs` (v1.34.3)
//!   into DIR.
//! * `--images`: also starts a registry (Debian's `docker-registry`, `tests/it/support/registry.rs`)
//!   holding stand-ins for every image of MANIFEST (`tests/it/support/harness.rs`).
//!
//! Prints the mirror's base URL (`http://127.0.0.1:PORT`) on the first line, then one
//! `--mirror` rule (`FROM=TO`) per line for kbundle (files, and image registries with
//! `--images`), then `READY`; then serves until standard input reaches end of file (Ctrl-D,
//! or the writer of a pipe closing it), and stops the registry. Killing the process instead
//! would leave the registry's `docker-registry` process behind.
//!
//! The tree's `runc.sha256sum` is clear-signed by the test key of `tests/it/support/pgp.rs`:
//! a manifest built against it trusts `tests/it/fixtures/pgp/test-signer.pub.asc` under
//! `[upstream-keys] runc`.

#[path = "../tests/it/support/harness.rs"]
mod harness;
#[path = "../tests/it/support/images.rs"]
mod images;
#[path = "../tests/it/support/mirror.rs"]
mod mirror;
#[path = "../tests/it/support/registry.rs"]
mod registry;
#[path = "../tests/it/support/upstream.rs"]
mod upstream;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: serve-mirror DIR [--tree tiny|real] [--images MANIFEST]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let (mut tree, mut images) = (None, None);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--tree", Some(v)) => tree = Some(v),
            ("--images", Some(v)) => images = Some(PathBuf::from(v)),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(kind) = tree {
        let spec = match kind.as_str() {
            "tiny" => upstream::UpstreamSpec::v1_34_3().tiny(),
            "real" => upstream::UpstreamSpec::v1_34_3().real(),
            _ => {
                eprintln!("serve-mirror: --tree takes tiny or real, not {kind:?}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = upstream::build_tree(&dir, &spec) {
            eprintln!("serve-mirror: building the {kind} tree in {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if !dir.is_dir() {
        eprintln!("serve-mirror: {} is not a directory", dir.display());
        return ExitCode::FAILURE;
    }
    // Keep whichever servers run alive until stdin is closed.
    let (url, rules, _servers): (String, Vec<String>, Box<dyn std::any::Any>) = match images {
        Some(manifest) => {
            let up = harness::Upstream::start_at(&dir, &manifest);
            let rules = up.mirror_args().into_iter().filter(|a| a != "--mirror").collect();
            (up.mirror.url(), rules, Box::new(up))
        }
        None => {
            let m = mirror::Mirror::start(&dir);
            let rules = upstream::mirror_args(&m.url())
                .into_iter()
                .filter(|a| a != "--mirror")
                .collect();
            (m.url(), rules, Box::new(m))
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{url}");
    for r in rules {
        let _ = writeln!(out, "{r}");
    }
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    drop(out);
    // Serve until stdin is closed; then drop the servers (the registry is stopped and reaped).
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    ExitCode::SUCCESS
}
