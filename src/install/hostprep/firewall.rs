//! firewalld in `prepare`: the role's ports as a firewalld service in the default zone, and
//! the pod and service networks as sources of the `trusted` zone; or firewalld stopped and
//! masked; or nothing.
//!
//! Why sources of `trusted` (docs/upstream-facts.md, "firewalld forwarding and zones"):
//! firewalld's nftables FORWARD chain ends in a reject, and intra-zone forwarding is added
//! only for interfaces bound to a zone (never for the default zone's catch-all), so pod
//! traffic between flannel.1 and cni0 is rejected. A source rule is dispatched by address
//! before any interface rule, in INPUT and FORWARD alike, and `trusted` accepts everything:
//! pod-to-pod across nodes, pods to the node's own ports (the API server through the
//! kubernetes Service), replies. It works for any interface name and needs no interface to
//! exist yet (binding cni0/flannel.1 would not cover pods reaching the host from another
//! interface, and NetworkManager may move interfaces between zones).
//!
//! Zones dispatch forwarded packets by *source* only, so a client outside the cluster
//! reaching a NodePort (DNAT to a pod IP, forwarded to cni0 or flannel.1) would still meet
//! the default zone's reject. The `kbundle-pods` policy (ingress `ANY`, egress `trusted`,
//! target `ACCEPT`) matches forwarded packets by *destination* in the trusted sources, as a
//! policy's egress sources are matched by `daddr` (same section).

use super::files;
use crate::cluster::{Cluster, Firewall, Role};
use crate::host::sys::Stdin;
use crate::host::{Host, HostError};
use std::process::Command;

const OFFLINE_CMD: &str = "/usr/bin/firewall-offline-cmd";
const FIREWALL_CMD: &str = "/usr/bin/firewall-cmd";

/// Forwarded traffic to pods and services from anywhere (NodePorts from outside the
/// cluster): a firewalld policy from any zone to `trusted`, read at start or reload.
pub const POD_POLICY_PATH: &str = "/etc/firewalld/policies/kbundle-pods.xml";
const POD_POLICY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- Installed by kbundle: forwarded traffic to the pod and service networks (the trusted
     zone's sources) is accepted from any zone, e.g. NodePort clients outside the cluster. -->
<policy target="ACCEPT" priority="-1">
  <short>kbundle-pods</short>
  <description>Kubernetes: accept forwarded traffic to pods and services.</description>
  <ingress-zone name="ANY"/>
  <egress-zone name="trusted"/>
</policy>
"#;

pub(super) fn apply(h: &Host, cluster: &Cluster, role: Role) -> Result<(), HostError> {
    match cluster.firewall {
        Firewall::OpenPorts => open_ports(h, cluster, role),
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

/// How firewalld's configuration is changed on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// The daemon runs: `firewall-cmd --permanent …`, then `--reload`.
    Daemon,
    /// No daemon (kickstart chroot, firewalld stopped): `firewall-offline-cmd`.
    Offline,
    /// An image at `--root` with firewalld in it: `chroot ROOT firewall-offline-cmd`.
    ChrootOffline,
    /// firewalld is not installed.
    Absent,
}

fn tool(h: &Host) -> Tool {
    let offline = h.is_file(OFFLINE_CMD);
    if !h.is_live() {
        return if offline { Tool::ChrootOffline } else { Tool::Absent };
    }
    if h.is_running_system() && h.is_file(FIREWALL_CMD) && daemon_running(h) {
        return Tool::Daemon;
    }
    if offline {
        Tool::Offline
    } else {
        Tool::Absent
    }
}

/// `firewall-cmd --state` exits 0 only when the daemon runs.
fn daemon_running(h: &Host) -> bool {
    h.exec(Command::new("firewall-cmd").arg("--state"), Stdin::Null, None)
        .is_ok_and(|r| r.status.success())
}

/// The role's service in the default zone; pod and service CIDRs as `trusted` sources.
/// Adding what is already there is not an error for either tool (ALREADY_ENABLED exits 0),
/// so a re-run changes nothing.
fn open_ports(h: &Host, cluster: &Cluster, role: Role) -> Result<(), HostError> {
    let svc = format!("kbundle-{}", role.as_str());
    h.write(
        &format!("/etc/firewalld/services/{svc}.xml"),
        files::firewalld_service(role).as_bytes(),
        0o644,
    )?;
    h.write(POD_POLICY_PATH, POD_POLICY.as_bytes(), 0o644)?;
    let mut changes = vec![vec![format!("--add-service={svc}")]];
    for cidr in [cluster.pod_cidr.as_str(), cluster.service_cidr.as_str()] {
        changes.push(vec!["--zone=trusted".into(), format!("--add-source={cidr}")]);
    }
    match tool(h) {
        Tool::Daemon => {
            // The daemon reads the new service file on reload; then permanent changes, and
            // a reload makes them the runtime configuration.
            h.run(Command::new("firewall-cmd").arg("--reload"))?;
            for c in &changes {
                h.run(Command::new("firewall-cmd").arg("--permanent").args(c))?;
            }
            h.run(Command::new("firewall-cmd").arg("--reload"))?;
        }
        Tool::Offline => {
            for c in &changes {
                h.run(Command::new("firewall-offline-cmd").args(c))?;
            }
        }
        Tool::ChrootOffline => {
            for c in &changes {
                h.run(Command::new("chroot").arg(h.root()).arg("firewall-offline-cmd").args(c))?;
            }
        }
        Tool::Absent => println!("    firewalld is not installed: wrote the {svc} service definition only"),
    }
    Ok(())
}
