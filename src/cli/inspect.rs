use indicatif::HumanBytes;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Show a bundle's versions, platforms, hops and entries (archive or directory). Reads
/// bundle.json only; run `kbundle verify` to check the content.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub path: PathBuf,
    /// Print bundle.json as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the bundle's SBOM (sbom.spdx.json, SPDX 2.3 JSON) exactly as stored, once its
    /// bytes match the digest bundle.json lists (nothing is printed otherwise). Reads an
    /// archive without unpacking it; `kbundle verify` checks bundle.json and its signature.
    #[arg(long)]
    pub sbom: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    if a.sbom {
        let bytes = crate::sbom::read::read_verified(&a.path)?;
        std::io::Write::write_all(&mut std::io::stdout().lock(), &bytes)?;
        return Ok(0);
    }
    let b = crate::bundle::read_bundle_json(&a.path)?;
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&b)?)?;
        return Ok(0);
    }
    crate::outln!("bundle     {}", b.name)?;
    crate::outln!("kubernetes {}", b.kubernetes)?;
    crate::outln!("platforms  {}", b.platforms.join(", "))?;
    crate::outln!("built by   kbundle {}", b.kbundle_version)?;
    crate::outln!("components")?;
    for (k, v) in &b.components {
        crate::outln!("  {k:<16} {v}")?;
    }
    crate::outln!(
        "hops       {}",
        b.hops
            .iter()
            .map(|h| h.kubernetes.as_str())
            .collect::<Vec<_>>()
            .join(" -> ")
    )?;
    let mut by_kind: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for e in &b.entries {
        let k = by_kind.entry(format!("{:?}", e.kind).to_lowercase()).or_default();
        k.0 += 1;
        k.1 += e.size;
    }
    let total: u64 = b.entries.iter().map(|e| e.size).sum();
    crate::outln!("entries    {} ({})", b.entries.len(), HumanBytes(total))?;
    for (k, (n, s)) in &by_kind {
        crate::outln!("  {k:<16} {n:>6} {:>12}", HumanBytes(*s).to_string())?;
    }
    for e in &b.entries {
        crate::outln!(
            "  {:>12}  {}  {}",
            HumanBytes(e.size).to_string(),
            &e.sha256.hex()[..12],
            e.path
        )?;
    }
    Ok(0)
}
