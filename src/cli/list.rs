use crate::catalog::{self, images::CatalogImage, FileArtifact};
use crate::manifest::{Manifest, Pin};
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
Example:\n  kbundle list manifests/kubernetes-v1.34.3.toml --json | jq -r '.files[].url'"
)]
pub struct Args {
    /// The manifest (manifests/*.toml).
    pub manifest: PathBuf,
    /// Print JSON: {"files":[{"name","url","path",...}],"images":[{"ref",...}]}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let m = Manifest::load(&a.manifest)?;
    let files = catalog::manifest_files(&m);
    let pins = crate::resolve::pins_by_path(&m, &files)?;
    let images = catalog::images::manifest_images(&m)?;
    if a.json {
        print_json(&m, &files, &pins, &images)?;
    } else {
        print_text(&m, &files, &pins, &images)?;
    }
    Ok(0)
}

fn print_json(m: &Manifest, files: &[FileArtifact], pins: &Pins, images: &[CatalogImage]) -> anyhow::Result<()> {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            if let Some(p) = pins.get(&f.path) {
                v["sha256"] = serde_json::Value::String(p.sha256.hex());
            }
            v
        })
        .collect();
    let out =
        serde_json::json!({ "name": m.name, "kubernetes": m.kubernetes.with_v(), "files": files, "images": images });
    crate::outln!("{}", serde_json::to_string_pretty(&out)?)?;
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
