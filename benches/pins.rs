//! How `kbundle list` and `kbundle lock` scale with the number of `[sha256]` pins: parsing
//! the manifest (line and column of every pin) and matching pins to files
//! (`resolve::pins_by_path`), timed at N, 2N, 4N and 8N pins with as many files. The time
//! should grow about as fast as the pins (8N: ~8-13x here, allocation and TOML parsing
//! included); the per-pin scans this replaced grew with the square (8N: ~64x).
//!
//! `cargo bench --bench pins` runs the full sizes (N = 25,000); under `cargo test` it runs
//! one small size as a smoke test.

use kbundle::catalog::FileArtifact;
use kbundle::digest::Sha256;
use kbundle::manifest::Manifest;
use std::path::Path;
use std::time::{Duration, Instant};

const HEAD: &str = "schema = 1\n[kubernetes]\nversion = \"v1.34.3\"\n[components]\ncontainerd = \"2.1.5\"\n\
runc = \"1.3.4\"\ncni-plugins = \"1.8.0\"\ncrictl = \"1.34.0\"\netcd = \"3.5.25\"\n";

/// A manifest with `n` pins and the `n` files they name (every other one by URL).
fn inputs(n: usize) -> (String, Vec<FileArtifact>) {
    let probe = Manifest::parse(Path::new("m.toml"), HEAD).expect("the bench manifest parses");
    let template = kbundle::catalog::manifest_files(&probe).remove(0);
    let digest = Sha256::of(b"pin");
    let mut src = format!("{HEAD}[sha256]\n");
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let f = FileArtifact {
            path: format!("files/bench/{i}/file"),
            url: format!("https://example.com/bench/{i}/file"),
            ..template.clone()
        };
        let key = if i % 2 == 0 { &f.url } else { &f.path };
        src.push_str(&format!("\"{key}\" = \"{digest}\"\n"));
        files.push(f);
    }
    (src, files)
}

/// Parse plus match, the best of `runs`.
fn time(n: usize, runs: usize) -> Duration {
    let (src, files) = inputs(n);
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let m = Manifest::parse(Path::new("m.toml"), &src).expect("parses");
            let pins = kbundle::resolve::pins_by_path(&m, &files).expect("every pin names a file");
            assert_eq!(pins.len(), n);
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (base, runs) = if full { (25_000, 3) } else { (200, 1) };
    let mut first = None;
    println!("{:>8} {:>12} {:>8}", "pins", "time", "x first");
    for k in [1, 2, 4, 8] {
        let t = time(base * k, runs);
        let f = *first.get_or_insert(t);
        println!(
            "{:>8} {:>10.1}ms {:>8.1}",
            base * k,
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / f.as_secs_f64().max(1e-9)
        );
    }
}
