//! The whole kbundle flow on a machine without internet:
//!
//! ```sh
//! cargo run --release --example offline-demo
//! ```
//!
//! 1. builds a fake upstream tree with upstream's URL layout and checksum files (the test
//!    fixture in `tests/it/support/upstream.rs`): real Debian binaries (`containerd`, `runc`,
//!    `etcd-server`, `etcd-client`, `containernetworking-plugins`, `/usr/bin/kubectl`) when
//!    they are installed, small stand-in scripts otherwise;
//! 2. serves it on a loopback HTTP mirror (`tests/it/support/mirror.rs`), and the manifest's
//!    container images (small busybox-based stand-ins, `tests/it/support/images.rs`) from a
//!    loopback registry (Debian's `docker-registry`, filled with `skopeo`,
//!    `tests/it/support/registry.rs`), together as in the tests (`tests/it/support/harness.rs`);
//! 3. builds `manifests/kubernetes-v1.34.3.toml` through `--mirror` rules with the library
//!    (`kbundle::builder::build`), from a copy of the manifest in a temp dir (so the lockfile
//!    is not written into the repository), with a temp download cache, into `bundles/`;
//! 4. verifies the archive (`kbundle::bundle::verify::verify`) and prints where it is, what
//!    is inside and the commands to run next.
//!
//! The bundle's installer is this repository's `kbundle` binary (built with
//! `cargo build --bin kbundle` in the same profile if needed). Exit status 1 on any failure.

// The test support code, as the tests use it (`harness` refers to its siblings as `super::`).
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

use indicatif::HumanBytes;
use kbundle::builder::{BuildOptions, Built, Options};
use kbundle::bundle::pack::Compression;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;
use upstream::{Payload, UpstreamSpec};

const MANIFEST: &str = "manifests/kubernetes-v1.34.3.toml";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("offline-demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Host files the Real payload needs (see `binary_source` in tests/it/support/upstream.rs).
fn missing_host_binaries() -> Vec<String> {
    let mut missing = Vec::new();
    let need: &[(&[&str], &str)] = &[
        (&["/usr/bin/kubectl"], "kubectl"),
        (&["/usr/bin/containerd"], "containerd"),
        (&["/usr/bin/containerd-shim-runc-v2"], "containerd"),
        (&["/usr/bin/ctr"], "containerd"),
        (&["/usr/sbin/runc", "/usr/bin/runc"], "runc"),
        (&["/usr/bin/etcd"], "etcd-server"),
        (&["/usr/bin/etcdctl"], "etcd-client"),
    ];
    for (candidates, package) in need {
        if !candidates.iter().any(|c| Path::new(c).is_file()) {
            missing.push(format!("{} (package {package})", candidates.join(" or ")));
        }
    }
    for plugin in upstream::CNI_PLUGINS {
        let c = [format!("/usr/lib/cni/{plugin}"), format!("/usr/libexec/cni/{plugin}")];
        if !c.iter().any(|p| Path::new(p).is_file()) {
            missing.push(format!("{} (package containernetworking-plugins)", c[0]));
        }
    }
    missing
}

/// Builds (or reuses) the fake upstream tree; Real when the Debian binaries are there.
fn upstream_tree() -> Result<(PathBuf, Payload), String> {
    let missing = missing_host_binaries();
    if missing.is_empty() {
        println!("upstream   real Debian binaries (containerd, runc, etcd, CNI plugins, kubectl); stand-ins for kubeadm, kubelet, crictl");
        let spec = UpstreamSpec::v1_34_3().real();
        match std::panic::catch_unwind(|| upstream::shared_tree(&spec)) {
            Ok(root) => return Ok((root, Payload::Real)),
            Err(_) => println!("upstream   building the real tree failed (above); using tiny stand-ins"),
        }
    } else {
        println!(
            "upstream   tiny stand-in scripts (real binaries missing: {})",
            missing.join(", ")
        );
    }
    let spec = UpstreamSpec::v1_34_3().tiny();
    std::panic::catch_unwind(|| upstream::shared_tree(&spec))
        .map(|root| (root, Payload::Tiny))
        .map_err(|_| "cannot build the fake upstream tree (see the panic above)".to_string())
}

/// This repository's `kbundle` executable, in the profile this demo was built with; the
/// library would otherwise ship the demo itself as the bundle's installer.
fn installer() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    // target/<profile>/examples/offline-demo
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected location {}", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("unexpected location {}", exe.display()))?;
    let bin = profile_dir.join("kbundle");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "--offline", "--bin", "kbundle", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    match cmd.status() {
        Ok(s) if s.success() && bin.is_file() => Ok(bin),
        _ if bin.is_file() => {
            println!("installer  could not rebuild {}; using it as it is", bin.display());
            Ok(bin)
        }
        Ok(s) => Err(format!(
            "`cargo build --bin kbundle` failed ({s}); the bundle needs the kbundle executable as its installer"
        )),
        Err(e) => Err(format!("cannot run {}: {e}", cargo.to_string_lossy())),
    }
}

/// `--mirror` values from the test support code (`upstream::mirror_args` for the files, one
/// rule per registry host for the images), parsed as the CLI would.
fn mirror_rules(args: &[String]) -> Result<Vec<kbundle::manifest::MirrorRule>, String> {
    args.iter()
        .filter(|a| *a != "--mirror")
        .map(|a| kbundle::fetch::mirror::parse_arg(a).map_err(|e| e.to_string()))
        .collect()
}

/// `path` relative to the repository when it is inside it.
fn shown(path: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(repo)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

fn run() -> Result<(), String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("kbundle offline demo: {MANIFEST} through a loopback mirror and registry");
    let installer = installer()?;
    println!("installer  {}", shown(&installer));

    let t = Instant::now();
    let (root, payload) = upstream_tree()?;
    println!(
        "upstream   {:?} tree at {} ({:.1}s)",
        payload,
        root.display(),
        t.elapsed().as_secs_f64()
    );

    let work = tempfile::Builder::new()
        .prefix("kbundle-offline-demo-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let manifest = work.path().join("kubernetes-v1.34.3.toml");
    std::fs::copy(repo.join(MANIFEST), &manifest)
        .map_err(|e| format!("copy {MANIFEST} to {}: {e}", manifest.display()))?;
    // The loopback upstream's runc.sha256sum is clear-signed by a test key, not by runc's
    // maintainers: the demo's copy of the manifest trusts that key instead.
    upstream::pgp::trust_test_signer(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let up = start_upstream(&root, &manifest)?;
    let opts = BuildOptions {
        common: Options {
            cache_dir: work.path().join("cache"),
            mirrors: mirror_rules(&up.mirror_args())?,
            jobs: 4,
            quiet: false,
            ..Default::default()
        },
        out: repo.join("bundles"),
        compression: Compression::Zstd,
        installer: Some(installer.clone()),
        ..Default::default()
    };

    let t = Instant::now();
    let built = kbundle::builder::build(&manifest, &opts).map_err(|e| format!("build: {e}"))?;
    let build_time = t.elapsed();
    let gets = up.mirror.requests().iter().filter(|r| r.method == "GET").count();
    drop(up);

    let t = Instant::now();
    let report = verify(&built)?;
    let verify_time = t.elapsed();
    print_bundle(&built);
    println!(
        "build      {:.2}s ({} GETs from the file mirror, images from the registry, lockfile in a temp dir)",
        build_time.as_secs_f64(),
        gets
    );
    println!(
        "verify     {:.2}s ({} files, {} checked)",
        verify_time.as_secs_f64(),
        report.files_checked,
        HumanBytes(report.bytes_checked)
    );
    print_next(&installer, &built.archive);
    Ok(())
}

/// The loopback file mirror and registry (with the manifest's images pushed).
fn start_upstream(root: &Path, manifest: &Path) -> Result<harness::Upstream, String> {
    let t = Instant::now();
    let up = std::panic::catch_unwind(|| harness::Upstream::start_at(root, manifest)).map_err(|_| {
        "cannot start the loopback registry with the images (see the panic above); it needs Debian's \
         docker-registry, skopeo, umoci and busybox-static (apt-get install docker-registry skopeo umoci \
         busybox-static)"
            .to_string()
    })?;
    println!("mirror     {} (dl.k8s.io and github.com)", up.mirror.url());
    println!(
        "registry   {} ({} images pushed, {:.1}s)",
        up.registry.url(),
        up.images.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(up)
}

/// Verifies the archive as `kbundle verify` would; every problem printed.
fn verify(built: &Built) -> Result<kbundle::bundle::verify::Report, String> {
    let report = kbundle::bundle::verify::verify(&built.archive)
        .map_err(|e| format!("verify {}: {e}", built.archive.display()))?;
    if report.ok() {
        return Ok(report);
    }
    for p in &report.problems {
        eprintln!("{}: {p}", built.archive.display());
    }
    Err(format!(
        "{} did not verify: {} problem(s)",
        built.archive.display(),
        report.problems.len()
    ))
}

/// Where the bundle is and what is inside.
fn print_bundle(built: &Built) {
    let b = &built.bundle;
    let total: u64 = b.entries.iter().map(|e| e.size).sum();
    println!();
    println!(
        "bundle     {} (kubernetes {}, {})",
        b.name,
        b.kubernetes,
        b.platforms.join(", ")
    );
    println!("archive    {}", built.archive.display());
    println!("size       {} ({} bytes)", HumanBytes(built.size), built.size);
    println!("sha256     {}", built.sha256);
    println!("sidecar    {}.sha256", built.archive.display());
    println!("entries    {} ({} unpacked)", b.entries.len(), HumanBytes(total));
    for e in &b.entries {
        println!(
            "  {:>12}  {}  {}",
            HumanBytes(e.size).to_string(),
            &e.sha256.hex()[..12],
            e.path
        );
    }
    println!("images     {}", b.images.len());
    for i in &b.images {
        println!("  {}  {}", &i.digest.hex()[..12], i.reference);
    }
}

fn print_next(installer: &Path, archive: &Path) {
    println!();
    println!("next:");
    let bin = match shown(installer) {
        s if Path::new(&s).is_relative() => format!("./{s}"),
        s => s,
    };
    println!("  {bin} verify {}", shown(archive));
    println!("  {bin} inspect {}", shown(archive));
}
