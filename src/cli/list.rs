use crate::builder::{self, Scope};
use crate::catalog::{images::CatalogImage, FileArtifact};
use crate::manifest::{Manifest, Pin};
use crate::version::Version;
use std::collections::HashMap;
use std::path::PathBuf;

/// Manifest pins by bundle path.
type Pins = HashMap<String, Pin>;

/// Print every file (with its upstream URL) and image a bundle of MANIFEST will contain.
/// Uses no network.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "The add-on images (flannel, metrics-server) are kbundle's catalog's expectation: a build \
bundles the images the downloaded kube-flannel.yml and components.yaml name, and warns where they differ.\n\n\
Examples:\n  kbundle list manifests/kubernetes-v1.34.3.toml --json | jq -r '.files[].url'\n  \
kbundle list manifests/kubernetes-v1.34.3.toml --upgrade-from v1.32.11 --via v1.33.3"
)]
pub struct Args {
    /// The manifest (manifests/*.toml).
    pub manifest: PathBuf,
    /// Print JSON: {"files":[{"name","url","path",...}],"images":[{"ref",...}]}.
    #[arg(long)]
    pub json: bool,
    /// List the upgrade bundle `build --upgrade-from` makes: every hop's files and images
    /// (JSON adds "upgrade_from" and "hops").
    #[arg(long, value_name = "vX.Y.Z")]
    pub upgrade_from: Option<Version>,
    /// With --upgrade-from: the patch to go through for its minor, as `build --via`.
    #[arg(long, value_name = "vX.Y.Z", requires = "upgrade_from")]
    pub via: Vec<Version>,
}

/// One hop of the bundle: its files (bundle paths) and images, split as `build` records
/// them in bundle.json (`builder::contents::hop`): an earlier hop has its own kubeadm,
/// kubelet, kubectl and kubeadm images; the last also has the runtime, add-ons and extras.
#[derive(Debug, serde::Serialize)]
struct HopView {
    kubernetes: String,
    files: Vec<String>,
    images: Vec<String>,
}

/// Hop `h` as `build` records it in bundle.json (the same split, `builder::hop_files` and
/// `builder::hop_images`).
fn hop_view(m: &Manifest, sc: &Scope, h: Version) -> HopView {
    let own = builder::hop_images(m, sc, h);
    let images = sc
        .images
        .iter()
        .map(|i| i.reference.to_string())
        .filter(|r| own.contains(r))
        .collect();
    HopView {
        kubernetes: h.with_v(),
        files: builder::hop_files(m, sc, h),
        images,
    }
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let m = Manifest::load(&a.manifest)?;
    let sc = crate::builder::scope_via(&m, a.upgrade_from, &a.via)?;
    let pins = crate::resolve::pins_by_path(&m, &sc.files)?;
    let hops = match a.upgrade_from {
        Some(_) => sc.hops.iter().map(|&h| hop_view(&m, &sc, h)).collect(),
        None => Vec::new(),
    };
    if a.json {
        print_json(&m, &sc, &pins, &hops)?;
    } else {
        print_text(&m, &sc.files, &pins, &sc.images)?;
        print_hops(&sc, &hops)?;
    }
    Ok(0)
}

fn print_json(m: &Manifest, sc: &Scope, pins: &Pins, hops: &[HopView]) -> anyhow::Result<()> {
    let files: Vec<serde_json::Value> = sc
        .files
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            if let Some(p) = pins.get(&f.path) {
                v["sha256"] = serde_json::Value::String(p.sha256.hex());
            }
            v
        })
        .collect();
    let mut out =
        serde_json::json!({ "name": m.name, "kubernetes": m.kubernetes.with_v(), "files": files, "images": sc.images });
    if let Some(from) = sc.upgrade_from {
        out["upgrade_from"] = serde_json::Value::String(from.with_v());
        out["hops"] = serde_json::to_value(hops)?;
    }
    crate::outln!("{}", serde_json::to_string_pretty(&out)?)?;
    Ok(())
}

fn print_hops(sc: &Scope, hops: &[HopView]) -> std::io::Result<()> {
    let Some(from) = sc.upgrade_from else {
        return Ok(());
    };
    let chain: Vec<&str> = hops.iter().map(|h| h.kubernetes.as_str()).collect();
    crate::outln!("\nupgrade from {}: {}", from.with_v(), chain.join(" -> "))?;
    for h in hops {
        crate::outln!(
            "\nhop {} ({} files, {} images):",
            h.kubernetes,
            h.files.len(),
            h.images.len()
        )?;
        for f in &h.files {
            crate::outln!("  {f}")?;
        }
        for i in &h.images {
            crate::outln!("  {i}")?;
        }
    }
    Ok(())
}

fn print_text(m: &Manifest, files: &[FileArtifact], pins: &Pins, images: &[CatalogImage]) -> std::io::Result<()> {
    crate::outln!(
        "bundle {} (Kubernetes {}, {})",
        m.name,
        m.kubernetes.with_v(),
        m.arches.iter().map(|a| a.platform()).collect::<Vec<_>>().join(", ")
    )?;
    crate::outln!("\nfiles ({}):", files.len())?;
    for f in files {
        let check = match (&pins.get(&f.path), &f.checksum) {
            (Some(_), _) => "sha256 pinned in manifest".to_string(),
            (None, Some(c)) => format!("checksum: {}", c.url),
            (None, None) => "no upstream checksum (locked on first download)".to_string(),
        };
        crate::outln!("  {}\n    {}\n    {check}", f.path, f.url)?;
    }
    crate::outln!("\nimages ({}):", images.len())?;
    for i in images {
        let note = if i.source.is_addon() {
            "  (expected: a build takes it from the add-on manifest)"
        } else {
            ""
        };
        crate::outln!("  {}{note}", i.reference)?;
    }
    Ok(())
}
