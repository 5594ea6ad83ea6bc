use crate::kickstart::{self, validate::BashCheck, Release};
use anyhow::Context;
use std::path::PathBuf;

/// Write one kickstart per node (DIR/<node>.ks) that installs Rocky Linux from the DVD with
/// no network repository, copies the bundle from the install media (checking its sha256),
/// prepares the node with `kbundle install --phase prepare` and enables a first-boot
/// bootstrap service. Also writes DIR/cluster.toml (mode 0600), the exact copy of --config
/// that the kickstarts install, for `kbundle iso`.
///
/// Every kickstart is checked before anything is written (sections closed by %end, no empty
/// option values, no unresolved placeholders, %post scripts pass `bash -n`). Kickstarts that
/// hold a root password hash or install [join] secrets are written mode 0600 and say so in
/// their first lines.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  kbundle example-config > cluster.toml       # then edit [os] and the [[node]]s
  kbundle kickstart --bundle kubernetes-v1.34.3.tar.zst --config cluster.toml --out ks/
  kbundle kickstart --bundle kubernetes-v1.34.3.tar.zst --config cluster.toml \\
      --os rocky9 --node worker1 --out ks/
  kbundle iso --base Rocky-10.0-x86_64-dvd1.iso --bundle kubernetes-v1.34.3.tar.zst \\
      --kickstarts ks/ -o cluster.iso
  # the bundle must be signed by site.pub, and the nodes will trust only that key:
  kbundle kickstart --bundle kubernetes-v1.34.3.tar.zst --config cluster.toml \\
      --trusted-key site.pub --out ks/

--trusted-key is checked here against <archive>.minisig, and each key is written by the %post
into the node's /etc/kbundle/trusted-keys/ before `kbundle install` runs (keys in cluster.toml
[trust] reach the node through the cluster.toml it installs). This machine's own
/etc/kbundle/trusted-keys is not used: it describes this machine, not the nodes.

Check one with pykickstart: ksvalidator -v RHEL10 ks/cp1.ks   (RHEL9 for --os rocky9)
Templates, package choices, media layout, secrets: kickstart/README.md")]
pub struct Args {
    /// The bundle archive (<name>.tar.zst from `kbundle build`); its sha256 and its
    /// installer's sha256 are written into each kickstart.
    #[arg(long, value_name = "PATH")]
    pub bundle: PathBuf,
    /// The cluster config (`kbundle example-config`): [os] settings and the nodes.
    #[arg(long, value_name = "cluster.toml")]
    pub config: PathBuf,
    /// Release the kickstarts are written for.
    #[arg(long = "os", value_enum, default_value = "rocky10")]
    pub release: Release,
    /// Only this node (default: every [[node]]).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Directory for <node>.ks and cluster.toml (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub trust: super::trust_args::BuildTrust,
}

pub fn run(a: Args, quiet: bool) -> anyhow::Result<i32> {
    let config_bytes =
        std::fs::read(&a.config).with_context(|| format!("cannot read cluster config {}", a.config.display()))?;
    let cluster = crate::cluster::Cluster::parse(&a.config, &String::from_utf8_lossy(&config_bytes))?;
    let policy = crate::trust::Policy::for_build(&a.trust.flags())?;
    let bundle = kickstart::media::bundle_ref(&a.bundle, &policy)?;
    let rendered = kickstart::render_all(&cluster, &config_bytes, a.release, &bundle, a.node.as_deref())?;
    let bash = kickstart::validate::check(&rendered)?;
    if bash == BashCheck::BashMissing {
        eprintln!("warning: bash is not installed: the %post scripts were not syntax-checked (bash -n)");
    }
    let written = kickstart::write(&a.out, &config_bytes, &rendered)?;
    warn_stale(&a.out, &rendered, &config_bytes);
    if !quiet {
        for w in &written {
            let note = if w.secrets.is_empty() {
                String::new()
            } else {
                format!("  secrets: {}", w.secrets.join("; "))
            };
            crate::outln!("wrote {} (mode {:o}){note}", w.path.display(), w.mode)?;
        }
        eprintln!(
            "{} kickstart(s) for {} with bundle {}; next: kbundle iso --base ROCKY-DVD.iso --bundle {} --kickstarts {} -o OUT.iso",
            rendered.len(),
            a.release.display_name(),
            bundle.archive_name,
            a.bundle.display(),
            a.out.display()
        );
    }
    Ok(0)
}

/// Kickstarts left in DIR from an earlier run with another cluster.toml: `kbundle iso` refuses
/// them, so say so now.
fn warn_stale(dir: &std::path::Path, rendered: &[kickstart::Rendered], config: &[u8]) {
    let digest = crate::digest::Sha256::of(config);
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".ks") || rendered.iter().any(|r| r.file_name == name) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(Some(info)) = kickstart::KsInfo::parse(&text) {
            if info.config_sha256 != digest {
                eprintln!(
                    "warning: {} is from an earlier run with another cluster.toml: render it again or remove it (kbundle iso refuses it)",
                    path.display()
                );
            }
        }
    }
}
