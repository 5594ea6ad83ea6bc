//! Host preparation in `prepare`: kernel modules and sysctls, swap off, SELinux permissive,
//! the firewall, and on a running system the same settings applied now.

use super::files;
use super::{Ctx, InstallError};
use crate::cluster::{Firewall, Role};
use crate::host::{Host, HostError};
use std::process::Command;

/// The `host-files` step.
pub fn host_files(c: &mut Ctx) -> Result<(), InstallError> {
    let h = &c.host;
    h.write(
        "/etc/modules-load.d/kbundle-kubernetes.conf",
        files::MODULES.as_bytes(),
        0o644,
    )?;
    h.write(
        "/etc/sysctl.d/99-kbundle-kubernetes.conf",
        files::SYSCTL.as_bytes(),
        0o644,
    )?;
    swap_out_of_fstab(h)?;
    selinux_permissive(h)?;
    firewall(h, c.cluster.firewall, c.role)?;
    if h.is_running_system() {
        apply_now(h);
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

fn firewall(h: &Host, mode: Firewall, role: Role) -> Result<(), HostError> {
    match mode {
        Firewall::OpenPorts => open_ports(h, role),
        Firewall::Disabled => disable_firewalld(h),
        Firewall::Unchanged => Ok(()),
    }
}

/// Masks firewalld; on the running system, first stops it, as kops does before masking (a
/// masked but running firewalld keeps rejecting forwarded pod traffic until reboot).
/// `stop` rather than `disable --now`: it also works when an earlier run already masked it.
fn disable_firewalld(h: &Host) -> Result<(), HostError> {
    let installed = h.is_file("/usr/lib/systemd/system/firewalld.service");
    if h.is_running_system() && installed {
        h.run(Command::new("systemctl").args(["stop", "firewalld.service"]))?;
    }
    h.symlink("/dev/null", "/etc/systemd/system/firewalld.service")
}

/// A firewalld service with the role's ports, added to the default zone.
fn open_ports(h: &Host, role: Role) -> Result<(), HostError> {
    let svc = format!("kbundle-{}", role.as_str());
    h.write(
        &format!("/etc/firewalld/services/{svc}.xml"),
        files::firewalld_service(role).as_bytes(),
        0o644,
    )?;
    let offline = h.is_file("/usr/bin/firewall-offline-cmd");
    let add = format!("--add-service={svc}");
    if offline && !h.is_live() {
        h.run(
            Command::new("chroot")
                .arg(h.root())
                .args(["firewall-offline-cmd", &add]),
        )?;
    } else if offline {
        h.run(Command::new("firewall-offline-cmd").arg(&add))?;
        if h.is_running_system() {
            let _ = h.run(Command::new("firewall-cmd").arg("--reload"));
        }
    } else {
        println!("    firewalld is not installed: wrote the {svc} service definition only");
    }
    Ok(())
}

/// Best effort on a running system (not a chroot); the files make it permanent.
fn apply_now(h: &Host) {
    let _ = h.run(Command::new("modprobe").arg("overlay"));
    let _ = h.run(Command::new("modprobe").arg("br_netfilter"));
    let _ = h.run(Command::new("sysctl").arg("--system"));
    let _ = h.run(Command::new("swapoff").arg("-a"));
    if h.is_file("/usr/sbin/setenforce") {
        let _ = h.run(Command::new("setenforce").arg("0"));
    }
}
