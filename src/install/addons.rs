//! Phase bootstrap's add-ons on the first control plane: the bundle's flannel and
//! metrics-server manifests patched for this cluster ([`crate::addons::patch`]), written
//! to `/etc/kbundle/addons/` and applied from there; on a one-node cluster the
//! control-plane taint removed so every add-on can run; kubelet serving CSRs approved
//! (cluster-signed); and every add-on workload waited for until it is available.

use super::{csr, Ctx, InstallError};
use crate::addons::patch::{self, Workload, CONTROL_PLANE_TAINT};
use crate::bundle::verified::VerifiedBundle;
use crate::cluster::{Cluster, KubeletServingCerts, Role};
use crate::host::Host;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const ADDONS_DIR: &str = "/etc/kbundle/addons";
/// The cluster config a control plane keeps.
pub const CLUSTER_CONFIG: &str = "/etc/kbundle/cluster.toml";

/// kubeadm's CoreDNS Deployment, which tolerates the control-plane taint
/// (docs/upstream-facts.md, "Add-ons: metrics-server, flannel, kubelet serving
/// certificates").
fn coredns() -> Workload {
    Workload {
        kind: "Deployment".into(),
        namespace: "kube-system".into(),
        name: "coredns".into(),
        tolerates_control_plane: true,
    }
}

/// The cluster is this one node: it must run every add-on itself.
pub fn single_node(c: &Ctx) -> bool {
    one_node(&c.cluster)
}

fn one_node(cluster: &Cluster) -> bool {
    matches!(cluster.nodes.as_slice(), [n] if n.role == Role::Init)
}

/// What applying the add-ons and waiting for them needs: install's [`Ctx`], or
/// `upgrade apply` after every API server runs a hop.
pub(crate) struct Target<'a> {
    pub host: &'a Host,
    pub bundle: &'a VerifiedBundle,
    pub cluster: &'a Cluster,
    /// The kubectl and kubeconfig to run, as paths on this machine.
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    pub ready_timeout: Duration,
}

impl Target<'_> {
    fn kubectl(&self) -> Command {
        let mut k = Command::new(&self.kubectl);
        k.arg("--kubeconfig").arg(&self.kubeconfig);
        k
    }
}

fn target(c: &Ctx) -> Result<Target<'_>, InstallError> {
    Ok(Target {
        host: &c.host,
        bundle: &c.bundle,
        cluster: &c.cluster,
        kubectl: c.host.resolve("/usr/local/bin/kubectl")?,
        kubeconfig: c.host.path("/etc/kubernetes/admin.conf")?,
        ready_timeout: c.opts.ready_timeout,
    })
}

fn kubectl(c: &Ctx) -> Result<Command, InstallError> {
    let mut k = Command::new(c.host.resolve("/usr/local/bin/kubectl")?);
    k.arg("--kubeconfig").arg(c.host.path("/etc/kubernetes/admin.conf")?);
    Ok(k)
}

/// One add-on manifest, patched: (component, node path it is written to, text).
struct Manifest {
    component: String,
    node_path: String,
    text: String,
}

/// The bundle's add-on manifests, each patched for this cluster.
fn patched(bundle: &VerifiedBundle, cluster: &Cluster) -> Result<Vec<Manifest>, InstallError> {
    let entries = bundle.json().entries.iter();
    let addons = entries.filter(|e| matches!(e.component.as_deref(), Some("flannel") | Some("metrics-server")));
    let mut out = Vec::new();
    for e in addons {
        let file = bundle.file(&e.path);
        let text = std::fs::read_to_string(&file).map_err(|source| InstallError::Read {
            step: "addons",
            path: file.clone(),
            source,
        })?;
        let component = e.component.clone().unwrap_or_default();
        let text = match component.as_str() {
            "flannel" => patch::flannel(
                &text,
                &cluster.pod_cidr,
                cluster.proxy_mode == crate::cluster::ProxyMode::Nftables,
            )?,
            _ => patch::metrics_server(&text, cluster.kubelet_serving_certs == KubeletServingCerts::SelfSigned)?,
        };
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Manifest {
            node_path: format!("{ADDONS_DIR}/{component}-{name}"),
            component,
            text,
        });
    }
    Ok(out)
}

/// Writes each patched manifest to [`ADDONS_DIR`] and applies it from there.
pub fn apply(c: &mut Ctx) -> Result<(), InstallError> {
    apply_to(&target(c)?)
}

/// [`apply`] for any [`Target`].
pub(crate) fn apply_to(t: &Target) -> Result<(), InstallError> {
    for m in patched(t.bundle, t.cluster)? {
        t.host.write(&m.node_path, m.text.as_bytes(), 0o644)?;
        let mut k = t.kubectl();
        k.args(["apply", "-f"]).arg(t.host.path(&m.node_path)?);
        t.host.run(&mut k)?;
        println!("    applied {} ({})", m.component, m.node_path);
    }
    Ok(())
}

/// A one-node cluster runs its add-ons on its control plane: remove kubeadm's
/// control-plane taint (already gone is fine).
pub fn untaint(c: &mut Ctx) -> Result<(), InstallError> {
    let node = c.node()?.name.to_string();
    let mut k = kubectl(c)?;
    k.args(["taint", "nodes", &node, &format!("{CONTROL_PLANE_TAINT}:NoSchedule-")]);
    // kubectl's answer when the node has no such taint (docs/upstream-facts.md, "Add-ons:
    // metrics-server, flannel, kubelet serving certificates": kubectl taint).
    let absent = format!("taint \"{CONTROL_PLANE_TAINT}:NoSchedule\" not found");
    match c.host.run(&mut k) {
        Err(crate::host::HostError::Command { stderr, .. }) if stderr.contains(&absent) => {
            println!("    node {node} has no control-plane taint");
            Ok(())
        }
        other => other.map(|_| println!("    removed the control-plane taint from {node} (one-node cluster)")),
    }
    .map_err(InstallError::from)
}

/// On every control plane: the cluster config at [`CLUSTER_CONFIG`] (the CSR approver and
/// `upgrade apply`'s add-ons read it). With cluster-signed kubelet certificates also the
/// CSR approver's service and timer (enabled by link, started now).
pub fn install_approver(c: &mut Ctx) -> Result<(), InstallError> {
    let cfg = std::fs::read(&c.opts.config).map_err(|source| InstallError::Read {
        step: "csr-approver",
        path: c.opts.config.clone(),
        source,
    })?;
    c.host.write(CLUSTER_CONFIG, &cfg, 0o600)?;
    if c.cluster.kubelet_serving_certs != KubeletServingCerts::ClusterSigned {
        return Ok(());
    }
    let exe = c.node_path(&c.kbundle_exe());
    c.host.write(csr::SERVICE, csr::service_unit(&exe).as_bytes(), 0o644)?;
    c.host.write(csr::TIMER, csr::timer_unit().as_bytes(), 0o644)?;
    c.host.symlink(csr::TIMER, csr::TIMER_WANTS)?;
    c.host.run(Command::new("systemctl").arg("daemon-reload"))?;
    c.host
        .run(Command::new("systemctl").args(["start", "kbundle-csr-approve.timer"]))?;
    Ok(())
}

/// One pass of the kubelet serving CSR approver (cluster-signed certificates only).
pub fn approve_csrs(c: &mut Ctx) -> Result<(), InstallError> {
    if c.cluster.kubelet_serving_certs != KubeletServingCerts::ClusterSigned {
        return Ok(());
    }
    if c.host.dry_run() {
        c.host
            .say("approve pending kubelet serving CSRs of the cluster's nodes (kbundle csr-approve --once)");
        return Ok(());
    }
    let kubectl = c.host.resolve("/usr/local/bin/kubectl")?;
    let kubeconfig = c.host.path("/etc/kubernetes/admin.conf")?;
    csr::pass(&c.host, &kubectl, &kubeconfig, &c.cluster)?;
    Ok(())
}

/// The workloads to wait for: CoreDNS and every applied one, except those that cannot
/// run yet because only tainted control planes exist (named, so the user knows).
fn to_wait_for(t: &Target) -> Result<Vec<Workload>, InstallError> {
    let manifests = patched(t.bundle, t.cluster)?;
    let mut all = Vec::new();
    // CoreDNS runs once there is a pod network: with the bundle's flannel, now.
    if manifests.iter().any(|m| m.component == "flannel") {
        all.push(coredns());
    } else {
        println!("    no pod network in the bundle: CoreDNS starts once one is installed");
    }
    for m in manifests {
        all.extend(patch::workloads(&m.text, "add-on manifest")?);
    }
    let schedulable = one_node(t.cluster);
    let (now, later): (Vec<Workload>, Vec<Workload>) =
        all.into_iter().partition(|w| schedulable || w.tolerates_control_plane);
    for w in later {
        println!(
            "    {} {}/{} runs once a worker joins: `kubectl -n {} rollout status {}/{}`",
            w.kind,
            w.namespace,
            w.name,
            w.namespace,
            w.kind.to_lowercase(),
            w.name
        );
    }
    Ok(now)
}

/// Waits until every add-on workload is available, all within the ready timeout.
pub fn wait_available(c: &mut Ctx) -> Result<(), InstallError> {
    wait_available_on(&target(c)?)
}

/// [`wait_available`] for any [`Target`].
pub(crate) fn wait_available_on(t: &Target) -> Result<(), InstallError> {
    let timeout = t.ready_timeout;
    let deadline = t.host.now() + timeout;
    for w in to_wait_for(t)? {
        wait_one(t, &w, deadline, timeout)?;
        println!("    {} {}/{} is available", w.kind, w.namespace, w.name);
    }
    Ok(())
}

/// `kubectl rollout status` until it succeeds or the deadline passes (a failure before
/// its own timeout, such as a workload not created yet, is retried every 5 s).
fn wait_one(t: &Target, w: &Workload, deadline: Duration, timeout: Duration) -> Result<(), InstallError> {
    let mut last = String::new();
    let left = deadline.saturating_sub(t.host.now());
    let done = t.host.poll(left, Duration::from_secs(5), || {
        let secs = deadline.saturating_sub(t.host.now()).as_secs().max(1);
        let mut k = t.kubectl();
        k.args(["-n", &w.namespace, "rollout", "status"])
            .arg(format!("{}/{}", w.kind.to_lowercase(), w.name))
            .arg(format!("--timeout={secs}s"));
        match t.host.run(&mut k) {
            Ok(_) => Some(()),
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    });
    done.ok_or_else(|| InstallError::NotAvailable {
        kind: w.kind.clone(),
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        timeout,
        last,
    })
}

#[cfg(test)]
#[path = "addons_tests.rs"]
mod tests;
