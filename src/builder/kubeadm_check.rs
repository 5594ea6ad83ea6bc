//! Cross-check of kubeadm's image set: runs the bundle's own kubeadm for this host's arch
//! as `kubeadm config images list --kubernetes-version vX.Y.Z` and warns, naming both
//! references, where its list and kbundle's catalog differ. The bundle keeps the catalog's
//! images either way (the manifest's `[images]` overrides change them).
//!
//! With an exact version kubeadm resolves nothing over the network, and it prints one
//! `registry.k8s.io/…` reference per line (docs/upstream-facts.md, "Add-on manifests and
//! their images").
//!
//! Off by default (`build --check-kubeadm-images` or `KBUNDLE_CHECK_KUBEADM_IMAGES=1`):
//! this executes a downloaded program on the build host. It was verified against
//! upstream's published `.sha256`, but that checksum comes from the same place as the
//! binary, and running it is a trust decision the user should make, not a side effect of
//! building. It runs with an empty environment (but PATH), stdin closed and a timeout;
//! anything going wrong only warns, since the check never decides what is bundled.

use super::Scope;
use crate::catalog::images::kubeadm_images;
use crate::catalog::{Component, FileArtifact};
use crate::fetch::Fetched;
use crate::host::sys::{Real, Stdin, Sys};
use crate::image_ref::ImageRef;
use crate::manifest::{Arch, Manifest};
use crate::progress::Progress;
use crate::version::Version;
use std::path::Path;
use std::time::Duration;

/// Long enough for a cold start of a 70 MB static binary on a slow disk.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Checks every hop's kubeadm image set against the bundle's kubeadm for that hop.
/// `fetched` has one entry per file of the scope, in order.
pub(super) fn check(progress: &Progress, m: &Manifest, sc: &Scope, fetched: &[Fetched]) {
    let Some(host) = Arch::host() else {
        progress.warn("--check-kubeadm-images: this build host's arch has no kubeadm build; not checked");
        return;
    };
    for &h in &sc.hops {
        let kubeadm = sc.files.iter().zip(fetched).find(|(f, _)| is_kubeadm(f, h, host));
        let Some((_, blob)) = kubeadm else {
            progress.warn(&format!(
                "--check-kubeadm-images: the bundle has no kubeadm {} for {}; not checked",
                h.with_v(),
                host.platform()
            ));
            continue;
        };
        for w in check_hop(m, h, &blob.path) {
            progress.warn(&w);
        }
    }
}

fn is_kubeadm(f: &FileArtifact, h: Version, host: Arch) -> bool {
    f.component == Component::Kubeadm && f.version == h && f.platform.as_deref() == Some(host.platform().as_str())
}

/// The warnings for one hop: kubeadm's list against the images the bundle carries for it.
fn check_hop(m: &Manifest, h: Version, blob: &Path) -> Vec<String> {
    let catalog = if h == m.kubernetes {
        let i = &m.images;
        kubeadm_images(h, i.pause.as_deref(), i.etcd.as_deref(), i.coredns.as_deref())
    } else {
        kubeadm_images(h, None, None, None)
    };
    let catalog: Vec<ImageRef> = catalog.unwrap_or_default().into_iter().map(|i| i.reference).collect();
    match list(blob, h) {
        Ok(stdout) => {
            let (listed, bad) = parse_list(&stdout);
            let mut out: Vec<String> = bad
                .iter()
                .map(|l| {
                    format!(
                        "kubeadm {}: `config images list` printed {l:?}, which is not an image reference",
                        h.with_v()
                    )
                })
                .collect();
            out.extend(compare(&h.with_v(), &catalog, &listed));
            out
        }
        Err(why) => vec![format!(
            "--check-kubeadm-images: could not run kubeadm {} `config images list`: {why}; not checked",
            h.with_v()
        )],
    }
}

/// Runs a private executable copy of the cached kubeadm (the cache itself stays read-only
/// data) and returns its standard output, or why it gave none.
fn list(blob: &Path, h: Version) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let exe = dir.path().join("kubeadm");
    std::fs::copy(blob, &exe).map_err(|e| format!("copy {}: {e}", blob.display()))?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod: {e}"))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["config", "images", "list", "--kubernetes-version", &h.with_v()])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir(dir.path());
    let ran = Real
        .run(&mut cmd, Stdin::Null, Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    if ran.timed_out {
        return Err(format!("no answer within {} s", TIMEOUT.as_secs()));
    }
    if !ran.status.success() {
        let err = String::from_utf8_lossy(&ran.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!(
            "{} ({})",
            ran.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    String::from_utf8(ran.stdout).map_err(|_| "its output is not UTF-8".to_string())
}

/// Image references, one per non-empty line, and the lines that are not references.
fn parse_list(stdout: &str) -> (Vec<ImageRef>, Vec<String>) {
    let mut refs = Vec::new();
    let mut bad = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse::<ImageRef>() {
            Ok(r) => refs.push(r),
            Err(_) => bad.push(line.to_string()),
        }
    }
    (refs, bad)
}

/// One warning per difference; an image of the same repository with another tag names both.
fn compare(version: &str, catalog: &[ImageRef], listed: &[ImageRef]) -> Vec<String> {
    let mut unmatched: Vec<&ImageRef> = listed.iter().filter(|l| !catalog.contains(l)).collect();
    let mut out = Vec::new();
    for c in catalog.iter().filter(|c| !listed.contains(c)) {
        let pair = unmatched.iter().position(|l| l.name() == c.name());
        out.push(match pair.map(|i| unmatched.remove(i)) {
            Some(l) => format!(
                "kubeadm {version} `config images list` names {l} where kbundle's catalog has {c}; the bundle carries {c} (set it under [images] in the manifest to change that)"
            ),
            None => format!("kbundle's catalog has {c}, which kubeadm {version} `config images list` does not name"),
        });
    }
    for l in unmatched {
        out.push(format!(
            "kubeadm {version} `config images list` names {l}, which kbundle's catalog lacks: the bundle does not carry it"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &[&str]) -> Vec<ImageRef> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn same_set_in_any_order_agrees() {
        let a = refs(&["registry.k8s.io/pause:3.10.1", "registry.k8s.io/etcd:3.6.5-0"]);
        let b = refs(&["registry.k8s.io/etcd:3.6.5-0", "registry.k8s.io/pause:3.10.1"]);
        assert!(compare("v1.34.3", &a, &b).is_empty());
    }

    #[test]
    fn another_tag_names_both_and_missing_or_extra_images_are_named() {
        let catalog = refs(&["registry.k8s.io/etcd:3.6.5-0", "registry.k8s.io/pause:3.10.1"]);
        let listed = refs(&["registry.k8s.io/etcd:3.6.6-0", "registry.k8s.io/kube-proxy:v1.34.3"]);
        let w = compare("v1.34.3", &catalog, &listed);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0].contains("registry.k8s.io/etcd:3.6.6-0") && w[0].contains("registry.k8s.io/etcd:3.6.5-0"));
        assert!(w[1].contains("registry.k8s.io/pause:3.10.1") && w[1].contains("does not name"));
        assert!(w[2].contains("kube-proxy:v1.34.3") && w[2].contains("lacks"));
    }

    #[test]
    fn output_lines_are_references_or_reported() {
        let (r, bad) =
            parse_list("registry.k8s.io/pause:3.10.1\n\n  registry.k8s.io/etcd:3.6.5-0  \nW1201 something\n");
        assert_eq!(r.len(), 2);
        assert_eq!(bad, ["W1201 something"]);
    }
}
