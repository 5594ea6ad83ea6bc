//! Phase `bootstrap` (needs a running systemd): start containerd, `kubeadm init` or
//! `kubeadm join`, write the admin kubeconfig, apply flannel and metrics-server from the
//! bundle (patched, see [`addons`]), wait for Ready and for the add-ons, and print the
//! exact `kbundle install` lines for the other nodes.
//! Without systemd it installs a one-shot unit that runs bootstrap on next boot.

use super::{addons, files, prepare, Ctx, InstallError};
use crate::cluster::Role;
use crate::host::journal::Journaled;
use std::process::Command;

/// systemd is running on the node: `/run/systemd/system` exists (sd_booted(3)).
fn systemd_running(c: &Ctx) -> bool {
    c.host.is_dir("/run/systemd/system")
}

fn bin(c: &Ctx, name: &str) -> Result<Command, InstallError> {
    Ok(Command::new(c.host.resolve(&format!("/usr/local/bin/{name}"))?))
}

pub(super) fn bootstrap_command(c: &Ctx, node: &str) -> String {
    format!(
        "{} install --bundle {} --config /etc/kbundle/cluster.toml --node {node} --phase bootstrap",
        c.node_path(&c.kbundle_exe()),
        c.node_path(c.bundle.dir())
    )
}

pub fn run(c: &mut Ctx) -> Result<(), InstallError> {
    let node = c.node()?.clone();
    println!("phase bootstrap (node {}, {})", node.name, c.role.as_str());
    if c.host.exists("/var/lib/kbundle/bootstrap.done") && !c.host.dry_run() {
        println!("bootstrap already completed on this node (/var/lib/kbundle/bootstrap.done); nothing to do");
        return Ok(());
    }
    if !systemd_running(c) {
        return first_boot(c, &node.name);
    }
    c.step("services", |c| {
        c.host.run(Command::new("systemctl").arg("daemon-reload"))?;
        c.host
            .run(Command::new("systemctl").args(["enable", "--now", "containerd.service"]))?;
        c.host
            .run(Command::new("systemctl").args(["enable", "kubelet.service"]))?;
        Ok(())
    })?;
    match c.role {
        Role::Init => {
            c.step("kubeadm-init", kubeadm_init)?;
            c.step("admin-kubeconfig", copy_admin_kubeconfig)?;
            c.step("csr-approver", addons::install_approver)?;
            if addons::single_node(c) {
                c.step("untaint", addons::untaint)?;
            }
            c.step("addons", addons::apply)?;
        }
        role => {
            c.step("kubeadm-join", kubeadm_join)?;
            if role == Role::ControlPlane {
                c.step("admin-kubeconfig", copy_admin_kubeconfig)?;
                c.step("csr-approver", addons::install_approver)?;
            }
        }
    }
    c.step("wait-ready", wait_ready)?;
    if c.role == Role::Init {
        addons::approve_csrs(c)?;
        c.step("wait-addons", addons::wait_available)?;
        print_join_commands(c)?;
    }
    c.host.write("/var/lib/kbundle/bootstrap.done", b"done\n", 0o644)?;
    println!("bootstrap complete: node {} is Ready", node.name);
    Ok(())
}

/// Without systemd (a kickstart chroot): keep the cluster config where the unit expects
/// it, then leave bootstrap to a one-shot unit on first boot.
fn first_boot(c: &mut Ctx, node: &str) -> Result<(), InstallError> {
    let cfg = std::fs::read(&c.opts.config).map_err(|source| InstallError::Read {
        step: "first-boot",
        path: c.opts.config.clone(),
        source,
    })?;
    c.host.write("/etc/kbundle/cluster.toml", &cfg, 0o600)?;
    let unit = files::bootstrap_unit(&bootstrap_command(c, node));
    c.host
        .write("/etc/systemd/system/kbundle-bootstrap.service", unit.as_bytes(), 0o644)?;
    c.host.symlink(
        "/etc/systemd/system/kbundle-bootstrap.service",
        "/etc/systemd/system/multi-user.target.wants/kbundle-bootstrap.service",
    )?;
    println!("systemd is not running here: installed kbundle-bootstrap.service, which runs bootstrap on the next boot");
    Ok(())
}

fn kubeadm_init(c: &mut Ctx) -> Result<(), InstallError> {
    let cfg =
        prepare::write_kubeadm_config(c)?.ok_or_else(|| InstallError::step("kubeadm-init", "no kubeadm config"))?;
    if c.host.exists("/etc/kubernetes/admin.conf") {
        println!("    kubeadm init already ran here (/etc/kubernetes/admin.conf exists)");
        return Ok(());
    }
    reset_partial(c)?;
    let mut k = bin(c, "kubeadm")?;
    k.args(["init", "--config"])
        .arg(c.host.path(&cfg)?)
        .arg("--upload-certs");
    c.host.run(&mut k)?;
    Ok(())
}

fn kubeadm_join(c: &mut Ctx) -> Result<(), InstallError> {
    let cfg = prepare::write_kubeadm_config(c)?.ok_or_else(|| {
        InstallError::step(
            "kubeadm-join",
            "a join token and CA cert hash are needed: pass --token and --ca-cert-hash (the init node prints them), or set them under [join] in the cluster config",
        )
    })?;
    if c.role == Role::ControlPlane && prepare::secrets(c).certificate_key.is_none() {
        return Err(InstallError::step(
            "kubeadm-join",
            "a control plane also needs --certificate-key (printed by the init node)",
        ));
    }
    if c.host.exists("/etc/kubernetes/kubelet.conf") {
        println!("    kubeadm join already ran here (/etc/kubernetes/kubelet.conf exists)");
        return Ok(());
    }
    reset_partial(c)?;
    let mut k = bin(c, "kubeadm")?;
    k.args(["join", "--config"]).arg(c.host.path(&cfg)?);
    c.host.run(&mut k)?;
    Ok(())
}

/// The admin kubeconfig for root's kubectl (0600).
fn copy_admin_kubeconfig(c: &mut Ctx) -> Result<(), InstallError> {
    if c.host.dry_run() {
        c.host
            .say("copy /etc/kubernetes/admin.conf to /root/.kube/config (0600)");
        return Ok(());
    }
    let data = c.host.read_bytes("/etc/kubernetes/admin.conf")?;
    c.host.write("/root/.kube/config", &data, 0o600)?;
    Ok(())
}

/// An earlier `kubeadm init`/`join` that failed part-way leaves manifests and certificates
/// that make kubeadm's preflight refuse every retry: clear them with `kubeadm reset`.
fn reset_partial(c: &Ctx) -> Result<(), InstallError> {
    let leftovers = !c.host.list("/etc/kubernetes/manifests").is_empty() || c.host.exists("/etc/kubernetes/pki/ca.crt");
    if leftovers {
        println!("    an earlier kubeadm run left files behind: kubeadm reset -f before retrying");
        let mut k = bin(c, "kubeadm")?;
        k.args(["reset", "-f", "--cri-socket", "unix:///run/containerd/containerd.sock"]);
        c.host.run(&mut k)?;
    }
    Ok(())
}

fn wait_ready(c: &mut Ctx) -> Result<(), InstallError> {
    let node = c.node()?.name.clone();
    let kubeconfig = if c.role.is_control_plane() {
        c.host.path("/etc/kubernetes/admin.conf")?
    } else {
        c.host.path("/etc/kubernetes/kubelet.conf")?
    };
    let kubectl = c.host.resolve("/usr/local/bin/kubectl")?;
    super::ready::wait_node_ready(&c.host, &kubectl, &kubeconfig, &node, c.opts.ready_timeout)
        .map_err(InstallError::NotReady)
}

/// Prints the exact `kbundle install` lines for every other node.
fn print_join_commands(c: &Ctx) -> Result<(), InstallError> {
    let mut secrets = prepare::secrets(c);
    if !c.host.dry_run() && (secrets.token.is_none() || secrets.ca_cert_hash.is_none()) {
        let out = c
            .host
            .run(bin(c, "kubeadm")?.args(["token", "create", "--print-join-command"]))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        // Only values that parse as the cluster config's own types are taken.
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        secrets.token = secrets.token.or(after("--token").and_then(|t| t.parse().ok()));
        let hash = after("--discovery-token-ca-cert-hash").and_then(|h| h.parse().ok());
        secrets.ca_cert_hash = secrets.ca_cert_hash.or(hash);
    }
    if !c.host.dry_run()
        && secrets.certificate_key.is_none()
        && c.cluster.nodes.iter().any(|n| n.role == Role::ControlPlane)
    {
        let mut k = bin(c, "kubeadm")?;
        k.args(["init", "phase", "upload-certs", "--upload-certs", "--config"])
            .arg(c.host.path("/etc/kbundle/kubeadm-init.yaml")?);
        let out = c.host.run(&mut k)?;
        secrets.certificate_key = String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .find_map(|l| l.trim().parse().ok());
    }
    let others: Vec<_> = c.cluster.nodes.iter().filter(|n| n.role != Role::Init).collect();
    if others.is_empty() {
        return Ok(());
    }
    println!("\nOn each other node, with the same bundle and cluster config, run:");
    for n in others {
        let mut line = format!(
            "  kbundle install --bundle <bundle> --config cluster.toml --node {} --phase all --token {} --ca-cert-hash {}",
            n.name,
            secrets.token.as_deref().unwrap_or("<token>"),
            secrets.ca_cert_hash.as_deref().unwrap_or("<hash>")
        );
        if n.role == Role::ControlPlane {
            line.push_str(&format!(
                " --certificate-key {}",
                secrets.certificate_key.as_deref().unwrap_or("<key>")
            ));
        }
        println!("{line}");
    }
    Ok(())
}
