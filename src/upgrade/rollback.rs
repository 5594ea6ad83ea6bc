//! `kbundle upgrade rollback` on one node: undo the node-local part of the last hop.
//!
//! Rolled back: the control-plane static-pod manifests (from the newest
//! `/etc/kubernetes/tmp/kubeadm-backup-manifests-*` that kubeadm wrote during the hop),
//! `/var/lib/kubelet/config.yaml` (from the copy `upgrade apply` saved before kubeadm ran),
//! the kubeadm/kubelet/kubectl links, and the container runtime's links and containerd config
//! when a hop moved them ([`super::runtime::rollback`]); then kubelet restarts.
//! Not rolled back: etcd. When the hop changed etcd's image, etcd.yaml is left alone and the
//! `kbundle etcd snapshot restore` command for the snapshot `apply` took before the hop is
//! printed; running it loses every write since. Nor anything kubeadm changed in the cluster
//! (kubeadm-config and kubelet-config ConfigMaps, CoreDNS, kube-proxy, RBAC), renewed
//! certificates, or other nodes. Facts: docs/upstream-facts.md, "Upgrades: drain, kubeadm
//! backups, hop choice".

use super::apply::ApplyError;
use crate::host::{Host, HostError};
use crate::version::Version;
use std::process::Command;

/// kubeadm's backup directory (`constants.TempDirForKubeadm` under `/etc/kubernetes`).
pub const KUBEADM_TMP: &str = "/etc/kubernetes/tmp";
/// kubeadm names each run's manifest backup `kubeadm-backup-manifests-<2006-01-02-15-04-05>`
/// (`CreateTimestampDirForKubeadm`), so the names sort by time.
pub const BACKUP_PREFIX: &str = "kubeadm-backup-manifests-";
const MANIFESTS: &str = "/etc/kubernetes/manifests";
const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// One directory per hop: what `apply` saved before kubeadm ran.
const HOPS: &str = "/var/lib/kbundle/upgrade";
const LINKS: &str = "/var/lib/kbundle/state/rollback";

fn hop_dir(hop: Version) -> String {
    format!("{HOPS}/{}", hop.with_v())
}

/// Before `kubeadm upgrade` of `hop`: keep the kubelet config (kubeadm's own copy goes to a
/// randomly named `kubeadm-kubelet-config*` directory, which cannot be told apart per hop)
/// and the names of the manifest backups that exist already, so rollback knows the hop's.
pub fn save_before_hop(host: &Host, hop: Version) -> Result<(), HostError> {
    let dir = hop_dir(hop);
    host.mkdir(&dir)?;
    if let Some(config) = host.read(KUBELET_CONFIG) {
        host.write(&format!("{dir}/kubelet-config.yaml"), config.as_bytes(), 0o600)?;
    }
    let before = kubeadm_backups(host).join("\n");
    host.write(&format!("{dir}/kubeadm-backups-before"), before.as_bytes(), 0o644)?;
    Ok(())
}

/// Records the etcd snapshot `apply` took before `hop`.
pub fn record_snapshot(host: &Host, hop: Version, file: &str) -> Result<(), HostError> {
    let dir = hop_dir(hop);
    host.mkdir(&dir)?;
    host.write(&format!("{dir}/etcd-snapshot"), file.as_bytes(), 0o644)?;
    Ok(())
}

/// kubeadm's manifest backups, oldest first.
fn kubeadm_backups(host: &Host) -> Vec<String> {
    let mut names: Vec<String> = host
        .list(KUBEADM_TMP)
        .into_iter()
        .filter(|n| n.starts_with(BACKUP_PREFIX))
        .collect();
    names.sort();
    names
}

/// What a rollback did, and what it left for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub hop: Option<Version>,
    /// One line per thing restored (kubelet is restarted after them).
    pub done: Vec<String>,
    /// Things not rolled back, each with what to do about it.
    pub notes: Vec<String>,
    /// The hop changed etcd: the exact restore command (with the pre-hop snapshot).
    pub etcd: Option<String>,
}

/// The hop to roll back: `hop`, else the newest one `apply` saved state for.
fn which_hop(host: &Host, hop: Option<Version>) -> Result<Option<Version>, ApplyError> {
    if let Some(h) = hop {
        if !host.is_dir(&hop_dir(h)) {
            return Err(ApplyError::Usage(format!(
                "no saved state for hop {} in {HOPS}: `upgrade apply` of that hop never ran on this node",
                h.with_v()
            )));
        }
        return Ok(Some(h));
    }
    Ok(host.list(HOPS).iter().filter_map(|n| n.parse::<Version>().ok()).max())
}

/// Rolls this node back from its last hop (or `hop`), through `host`.
pub fn rollback_on(host: &Host, hop: Option<Version>) -> Result<Report, ApplyError> {
    let _lock = crate::install::lock_node(host)?;
    let hop = which_hop(host, hop)?;
    let mut report = Report {
        hop,
        done: Vec::new(),
        notes: Vec::new(),
        etcd: None,
    };
    match hop {
        Some(h) => {
            restore_manifests(host, h, &mut report)?;
            restore_kubelet_config(host, h, &mut report)?;
        }
        None => report.notes.push(format!(
            "no hop state in {HOPS} (upgraded by an older kbundle?): static-pod manifests and kubelet config left as they are"
        )),
    }
    relink(host, &mut report)?;
    // containerd, runc, CNI plugins and crictl back to the versions before the hop that
    // moved them, with their containerd config (restarts containerd when it did anything).
    report.done.extend(super::runtime::rollback(host, hop)?);
    if report.done.is_empty() {
        return Err(ApplyError::Usage(
            "nothing to roll back: no saved hop state and no earlier binaries recorded".into(),
        ));
    }
    // Forget the hops' journals, so a later `upgrade apply` redoes them.
    for name in host.list("/var/lib/kbundle/state") {
        if name.starts_with("upgrade-") {
            host.remove(&format!("/var/lib/kbundle/state/{name}"))?;
        }
    }
    host.run(Command::new("systemctl").arg("daemon-reload"))?;
    host.run(Command::new("systemctl").args(["restart", "kubelet"]))?;
    Ok(report)
}

/// The static-pod manifests from kubeadm's newest backup of the hop; etcd.yaml only when
/// the hop left etcd's image as it was.
fn restore_manifests(host: &Host, hop: Version, report: &mut Report) -> Result<(), ApplyError> {
    let dir = hop_dir(hop);
    let before: Vec<String> = host
        .read(&format!("{dir}/kubeadm-backups-before"))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let Some(backup) = kubeadm_backups(host).into_iter().rev().find(|b| !before.contains(b)) else {
        report.notes.push(format!(
            "kubeadm left no manifest backup during hop {} (a worker, or nothing changed): static-pod manifests left as they are",
            hop.with_v()
        ));
        return Ok(());
    };
    let backup = format!("{KUBEADM_TMP}/{backup}");
    let mut files = host.list(&backup);
    files.sort();
    for file in files.iter().filter(|f| f.ends_with(".yaml")) {
        let (from, to) = (format!("{backup}/{file}"), format!("{MANIFESTS}/{file}"));
        let Some(old) = host.read(&from) else { continue };
        if file == "etcd.yaml" {
            let new = host.read(&to).unwrap_or_default();
            if image(&old) != image(&new) {
                report.etcd = Some(etcd_notice(host, hop, &from, &old, &new));
                continue;
            }
        }
        host.write(&to, old.as_bytes(), 0o600)?;
        report.done.push(format!("{to} <- {from}"));
    }
    Ok(())
}

/// The first `image:` of a static-pod manifest (kubeadm writes one container per pod).
fn image(manifest: &str) -> Option<&str> {
    manifest
        .lines()
        .find_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix("image:"))
        .map(|v| v.trim().trim_matches('"'))
}

/// What to tell the operator when the hop upgraded etcd.
fn etcd_notice(host: &Host, hop: Version, backup: &str, old: &str, new: &str) -> String {
    let snapshot = host.read(&format!("{}/etcd-snapshot", hop_dir(hop)));
    let (old, new) = (image(old).unwrap_or("?"), image(new).unwrap_or("?"));
    let how = match snapshot.as_deref().map(str::trim) {
        Some(snap) if !snap.is_empty() => format!(
            "to go back to etcd's data from before the hop (losing every write since), run:\n  kbundle etcd snapshot restore {snap} --data-dir /var/lib/etcd-before-{} --update-manifest",
            hop.with_v()
        ),
        _ => "no snapshot was recorded for this hop on this node (it is taken on control planes only): restore one you trust with `kbundle etcd snapshot restore SNAPSHOT --data-dir NEW_DIR --update-manifest`".to_string(),
    };
    format!(
        "etcd was NOT rolled back: hop {} moved it from {old} to {new}, and an older etcd may not simply run on data the newer one has written (etcd's downgrade procedure is separate). etcd.yaml is left as it is (kubeadm's copy of the old one: {backup}); {how}",
        hop.with_v()
    )
}

fn restore_kubelet_config(host: &Host, hop: Version, report: &mut Report) -> Result<(), ApplyError> {
    let saved = format!("{}/kubelet-config.yaml", hop_dir(hop));
    match host.read(&saved) {
        Some(config) => {
            host.write(KUBELET_CONFIG, config.as_bytes(), 0o644)?;
            report.done.push(format!("{KUBELET_CONFIG} <- {saved}"));
        }
        None => report.notes.push(format!(
            "no kubelet config saved for hop {}: {KUBELET_CONFIG} left as it is",
            hop.with_v()
        )),
    }
    Ok(())
}

/// kubeadm, kubelet and kubectl back to the binaries they pointed at before the hop.
fn relink(host: &Host, report: &mut Report) -> Result<(), ApplyError> {
    for bin in ["kubeadm", "kubelet", "kubectl"] {
        let Some(prev) = host.read(&format!("{LINKS}/{bin}")) else {
            continue;
        };
        let prev = prev.trim().to_string();
        if !host.exists(&prev) {
            return Err(ApplyError::Step {
                step: "rollback".into(),
                message: format!("{bin}: previous binary {prev} is gone"),
            });
        }
        host.symlink(&prev, &format!("/usr/local/bin/{bin}"))?;
        report.done.push(format!("/usr/local/bin/{bin} -> {prev}"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "rollback_tests.rs"]
mod tests;
