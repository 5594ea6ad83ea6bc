//! Shared by tests/it/kickstart.rs, tests/it/iso.rs and tests/it/cli_output.rs: a small but
//! valid bundle archive made here (no mirror or registry needed), the example cluster config,
//! running kbundle, and making sure the outside tools the tests drive are installed.
#![allow(dead_code)]

use kbundle::bundle::meta::{BundleJson, Entry, EntryKind, INSTALLER};
use kbundle::bundle::pack::{self, Compression, Source};
use kbundle::bundle::{meta_entry, Contents};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use crate::support::bundles::{text, KBUNDLE, MTIME, NAME};

/// The installer shipped in the test bundle: a stand-in script, never run.
pub const INSTALLER_BYTES: &[u8] = b"#!/bin/sh\n# kbundle test installer (stand-in)\necho \"kbundle $*\"\n";
const KUBEADM: &str = "files/kubeadm/1.34.3/linux-amd64/kubeadm";
/// The kubeadm stand-in of the kickstart tests' bundle (its bytes are in the snapshots).
pub const KS_KUBEADM: &[u8] = b"#!/bin/sh\necho kubeadm stand-in\n";

pub fn kbundle(args: &[&str]) -> Output {
    kbundle_env(args, &[])
}

pub fn kbundle_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(KBUNDLE);
    c.args(args).env("SOURCE_DATE_EPOCH", MTIME.to_string());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run kbundle")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A minimal valid bundle: bundle.json, SHA256SUMS, the installer and one file, packed the
/// way `kbundle build` packs (same code), with a fixed mtime so the bytes never change.
pub fn make_bundle(dir: &Path, compression: Compression, kubeadm: &[u8]) -> PathBuf {
    let bundle: BundleJson = serde_json::from_value(serde_json::json!({
        "schema": 1,
        "name": NAME,
        "kbundle_version": "0.1.0",
        "kubernetes": "v1.34.3",
        "platforms": ["linux/amd64"],
        "components": {"kubernetes": "1.34.3"},
        "hops": [{"kubernetes": "v1.34.3", "files": [KUBEADM], "images": []}],
        "entries": []
    }))
    .expect("bundle.json");
    let mut c = Contents {
        bundle,
        sources: Vec::new(),
    };
    c.push(
        Entry {
            executable: true,
            ..meta_entry(INSTALLER, EntryKind::Installer, INSTALLER_BYTES)
        },
        Source::Bytes(INSTALLER_BYTES.to_vec()),
    );
    c.push(
        Entry {
            executable: true,
            component: Some("kubeadm".into()),
            version: Some("1.34.3".into()),
            platform: Some("linux/amd64".into()),
            url: Some("https://dl.k8s.io/release/v1.34.3/bin/linux/amd64/kubeadm".into()),
            ..meta_entry(KUBEADM, EntryKind::File, kubeadm)
        },
        Source::Bytes(kubeadm.to_vec()),
    );
    let (_, entries) = c.finish().expect("contents");
    let (path, _, _) = pack::write_archive(dir, NAME, &entries, compression, MTIME, |_| {}).expect("pack");
    path
}

/// `kbundle example-config` written to dir/cluster.toml (optionally edited).
pub fn example_config(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let o = kbundle(&["example-config"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::create_dir_all(dir).expect("create config dir");
    let p = dir.join("cluster.toml");
    std::fs::write(&p, edit(String::from_utf8(o.stdout).expect("UTF-8"))).expect("write config");
    p
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian packages the tests need when their tools are missing (CI runs as root on
/// Debian); otherwise fails with what to install.
pub fn ensure_debian_tools(tools: &[(&str, &str)]) {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let missing: Vec<(&str, &str)> = tools.iter().copied().filter(|(t, _)| !have(t)).collect();
    if missing.is_empty() {
        return;
    }
    let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    let r = DONE.get_or_init(|| {
        let status = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "[ \"$(id -u)\" = 0 ] && command -v apt-get >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {} >/dev/null 2>&1",
                    packages.join(" ")
                ),
            ])
            .status();
        match status {
            Ok(s) if s.success() => Ok(()),
            _ => Err(format!(
                "these tests need {} (Debian: apt-get install {}; Rocky: dnf install {})",
                missing.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", "),
                packages.join(" "),
                packages.join(" ")
            )),
        }
    });
    if let Err(m) = r {
        panic!("{m}");
    }
    for (t, p) in tools {
        assert!(have(t), "{t} is still missing after installing {p}");
    }
}
