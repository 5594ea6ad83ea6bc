//! Host preparation in `prepare`: kernel modules and sysctls, swap off (fstab and zram),
//! SELinux (permissive, or enforcing with container-selinux's labels), the firewall, and on
//! a running system the same settings applied now.

mod firewall;

use super::files;
use super::{Ctx, InstallError};
use crate::cluster::{ProxyMode, Selinux};
use crate::host::{Host, HostError};
use std::process::Command;

/// The `host-files` step.
pub fn host_files(c: &mut Ctx) -> Result<(), InstallError> {
    let h = &c.host;
    let mode = c.cluster.proxy_mode;
    h.write(
        "/etc/modules-load.d/kbundle-kubernetes.conf",
        files::modules_load(mode).as_bytes(),
        0o644,
    )?;
    h.write(
        "/etc/sysctl.d/99-kbundle-kubernetes.conf",
        files::SYSCTL.as_bytes(),
        0o644,
    )?;
    swap_out_of_fstab(h)?;
    zram_off(h)?;
    if c.cluster.selinux == Selinux::Permissive {
        selinux_permissive(h)?;
    }
    firewall::apply(h, &c.cluster, c.role)?;
    if h.is_running_system() {
        apply_now(h, mode, c.cluster.selinux)?;
    }
    Ok(())
}

/// Comments out every swap line of `/etc/fstab`.
fn swap_out_of_fstab(h: &Host) -> Result<(), HostError> {
    let Some(fstab) = h.read("/etc/fstab") else {
        return Ok(());
    };
    let mut changed = false;
    let out: Vec<String> = fstab
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            if !l.trim_start().starts_with('#') && fields.len() >= 3 && fields[2] == "swap" {
                changed = true;
                format!("# disabled by kbundle (Kubernetes needs swap off): {l}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if changed {
        h.write("/etc/fstab", (out.join("\n") + "\n").as_bytes(), 0o644)?;
    }
    Ok(())
}

/// zram-generator's vendor config and drop-ins.
const ZRAM_CONF: &str = "/usr/lib/systemd/zram-generator.conf";
const ZRAM_DROPINS: &str = "/usr/lib/systemd/zram-generator.conf.d";

/// Keeps zram swap from coming back at boot: when zram-generator is configured, its vendor
/// config (and each vendor drop-in) is masked by a `/dev/null` link of the same name in
/// `/etc`, the way zram-generator.conf(5) says to disable a vendor file; an admin's own
/// `/etc/systemd/zram-generator.conf` is replaced the same way (docs/upstream-facts.md,
/// "zram swap"). `swapoff -a` turns the running device off.
fn zram_off(h: &Host) -> Result<(), HostError> {
    let dropins: Vec<String> = h
        .list(ZRAM_DROPINS)
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .collect();
    let configured = [
        ZRAM_CONF,
        "/usr/local/lib/systemd/zram-generator.conf",
        "/etc/systemd/zram-generator.conf",
    ]
    .iter()
    .any(|p| h.is_file(p));
    if configured || !dropins.is_empty() {
        h.symlink("/dev/null", "/etc/systemd/zram-generator.conf")?;
    }
    for d in dropins {
        h.symlink("/dev/null", &format!("/etc/systemd/zram-generator.conf.d/{d}"))?;
    }
    Ok(())
}

/// SELinux permissive, as kubeadm's install guide does.
fn selinux_permissive(h: &Host) -> Result<(), HostError> {
    let Some(cfg) = h.read("/etc/selinux/config") else {
        return Ok(());
    };
    let new: Vec<String> = cfg
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("SELINUX=enforcing") {
                "SELINUX=permissive".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    let new = new.join("\n") + "\n";
    if new != cfg {
        h.write("/etc/selinux/config", new.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// On the running system (not a chroot): every module loaded now (a module that will not
/// load is an error: kube-proxy and flannel would fail later and less clearly), then the
/// sysctls, swap off and, in permissive mode, SELinux permissive now.
fn apply_now(h: &Host, mode: ProxyMode, selinux: Selinux) -> Result<(), InstallError> {
    for m in files::modules(mode) {
        h.run(Command::new("modprobe").arg(m)).map_err(|e| {
            InstallError::step(
                "host-files",
                format!("kernel module {m} does not load ({e}); on Rocky/RHEL 10 install kernel-modules-extra for the running kernel"),
            )
        })?;
    }
    h.run(Command::new("sysctl").arg("--system"))?;
    h.run(Command::new("swapoff").arg("-a"))?;
    if selinux == Selinux::Permissive && h.is_file("/usr/sbin/setenforce") {
        // Fails when SELinux is disabled, which is fine.
        let _ = h.run(Command::new("setenforce").arg("0"));
    }
    Ok(())
}

/// Where kbundle installs binaries and state that container-selinux's file contexts cover
/// (docs/upstream-facts.md, "SELinux and container-selinux").
const LABELLED: &[&str] = &[
    "/usr/local/bin",
    "/usr/local/sbin",
    "/opt/kbundle",
    "/opt/cni",
    "/etc/containerd",
    "/var/lib/containerd",
    "/etc/kubernetes",
    "/var/lib/kubelet",
];

/// The versioned binaries the `/usr/local/{bin,sbin}` links point at, with the types
/// container.fc gives only to `/usr/local/s?bin/kubelet.*`, `/usr/local/s?bin/containerd.*`
/// and `/usr/local/s?bin/runc`: SELinux labels the file, not the link, so kbundle adds these
/// local rules (docs/upstream-facts.md, "Upgrades: container runtime and add-ons").
const FCONTEXTS: &[(&str, &str)] = &[
    ("kubelet_exec_t", "/opt/kbundle/versions/[^/]+/kubelet"),
    (
        "container_runtime_exec_t",
        "/opt/kbundle/versions/containerd-[^/]+/containerd.*",
    ),
    ("container_runtime_exec_t", "/opt/kbundle/versions/runc-[^/]+/runc"),
];

/// The `selinux-labels` step: in enforcing mode, on the node itself (the running system or
/// the kickstart chroot), the installed files get their labels from the loaded policy.
pub fn selinux_labels(c: &mut Ctx) -> Result<(), InstallError> {
    let h = &c.host;
    if c.cluster.selinux != Selinux::Enforcing {
        return Ok(());
    }
    if !h.is_live() || !h.is_file("/usr/sbin/restorecon") {
        println!("    SELinux enforcing: labels are not applied here (no restorecon on this root); run `restorecon -R` on the node");
        return Ok(());
    }
    if h.is_file("/usr/sbin/semanage") {
        let known = h.query(Command::new("semanage").args(["fcontext", "-l", "-C"]))?;
        let known = String::from_utf8_lossy(&known.stdout).into_owned();
        for (t, rule) in FCONTEXTS.iter().filter(|(_, r)| !known.contains(r)) {
            h.run(Command::new("semanage").args(["fcontext", "-a", "-t", t, rule]))?;
        }
    }
    let paths: Vec<&str> = LABELLED.iter().copied().filter(|p| h.exists(p)).collect();
    h.run(Command::new("restorecon").arg("-R").args(&paths))?;
    Ok(())
}

#[cfg(test)]
#[path = "hostprep_tests.rs"]
mod tests;
