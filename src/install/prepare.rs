//! Phase `prepare`: everything that needs neither systemd nor a network (a kickstart `%post`
//! chroot, an image build, or a live node): preflight, host files, binaries, units,
//! containerd config, images, kubeadm config.

use super::files::{self, ContainerdSettings};
use super::kubeadm::{self, Images, Secrets};
use super::{preflight, runtime, versions, Ctx, InstallError};
use crate::cluster::Role;
use crate::host::journal::Journaled;

pub fn run(ctx: &mut Ctx) -> Result<(), InstallError> {
    println!(
        "phase prepare ({} node, root {})",
        ctx.role.as_str(),
        ctx.host.root().display()
    );
    ctx.step("preflight", |c| {
        let needs = preflight::Needs {
            proxy_mode: c.cluster.proxy_mode,
            selinux: c.cluster.selinux,
            kubernetes: c.bundle.json().kubernetes.version(),
        };
        let o = preflight::run(
            &c.host,
            c.role,
            &needs,
            &c.bundle.json().platforms,
            &c.opts.skip_preflight,
        );
        for w in &o.warnings {
            println!("    warning: {w}");
        }
        if o.failures.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Preflight {
                failures: o
                    .failures
                    .iter()
                    .map(|f| format!("[{}] {}", f.check, f.message))
                    .collect(),
            })
        }
    })?;
    ctx.step("host-files", super::hostprep::host_files)?;
    ctx.step("binaries", binaries)?;
    ctx.step("units", units)?;
    ctx.step("containerd-config", containerd_config)?;
    ctx.step("images", images)?;
    ctx.step("kubeadm-config", kubeadm_config)?;
    ctx.step("selinux-labels", super::hostprep::selinux_labels)?;
    let v = format!("{}\n", ctx.bundle.json().kubernetes);
    ctx.host
        .write("/var/lib/kbundle/kubernetes-version", v.as_bytes(), 0o644)?;
    println!("prepare complete");
    Ok(())
}

fn binaries(c: &mut Ctx) -> Result<(), InstallError> {
    let platform = crate::manifest::Arch::host()
        .map(|a| a.platform())
        .ok_or_else(|| InstallError::step("binaries", format!("unsupported machine {}", std::env::consts::ARCH)))?;
    let need = |component: &str| {
        c.bundle
            .component_file(component, Some(&platform))
            .ok_or_else(|| InstallError::step("binaries", format!("the bundle has no {component} for {platform}")))
    };
    // kubeadm, kubelet, kubectl: one directory per version, switched by symlinks (upgrades
    // swap the links atomically and can roll back).
    let k8s = c.bundle.json().kubernetes.clone();
    for bin in ["kubeadm", "kubelet", "kubectl"] {
        let src = need(bin)?;
        let dir = format!("/opt/kbundle/versions/kubernetes-{k8s}");
        c.host.install_file(&src, &format!("{dir}/{bin}"), 0o755)?;
        c.host
            .symlink(&format!("{dir}/{bin}"), &format!("/usr/local/bin/{bin}"))?;
    }
    // containerd, runc, CNI plugins, crictl: one directory per version too, behind a link
    // per file at the paths the units and the containerd config name.
    for part in versions::PARTS {
        part.install(&c.host, &c.bundle, &platform)?;
    }
    // etcdctl/etcdutl: one directory per etcd release, linked from /usr/local/bin.
    let (v, tgz) = crate::etcd::install::tarball(&c.bundle, None, &platform)
        .ok_or_else(|| InstallError::step("binaries", format!("the bundle has no etcd tools for {platform}")))?;
    crate::etcd::install::install(&c.host, &tgz, v, true)
        .map_err(|e| InstallError::step("binaries", format!("etcd tools {v}: {e}")))?;
    Ok(())
}

fn units(c: &mut Ctx) -> Result<(), InstallError> {
    let h = &c.host;
    h.write(
        "/etc/systemd/system/containerd.service",
        files::CONTAINERD_SERVICE.as_bytes(),
        0o644,
    )?;
    h.write(
        "/etc/systemd/system/kubelet.service",
        files::KUBELET_SERVICE.as_bytes(),
        0o644,
    )?;
    h.write(
        "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
        files::KUBEADM_DROPIN.as_bytes(),
        0o644,
    )?;
    h.write("/etc/sysconfig/kubelet", b"KUBELET_EXTRA_ARGS=\n", 0o644)?;
    // Enabled the way `systemctl enable` does it, so it works in a chroot.
    for unit in ["containerd.service", "kubelet.service"] {
        h.symlink(
            &format!("/etc/systemd/system/{unit}"),
            &format!("/etc/systemd/system/multi-user.target.wants/{unit}"),
        )?;
    }
    Ok(())
}

/// The bundle's pause image (the sandbox image containerd must use).
/// The image references of the bundle's target version (its last hop): an upgrade bundle
/// also carries older hops' pause, etcd and coredns, which must not be picked.
fn target_images(c: &Ctx) -> Vec<String> {
    match c.bundle.json().hops.last() {
        Some(h) if !h.images.is_empty() => h.images.clone(),
        _ => c.bundle.json().images.iter().map(|i| i.reference.clone()).collect(),
    }
}

fn sandbox_image(c: &Ctx) -> String {
    target_images(c)
        .into_iter()
        .find(|r| r.starts_with("registry.k8s.io/pause:"))
        .unwrap_or_else(|| "registry.k8s.io/pause:3.10.1".to_string())
}

fn containerd_major(c: &Ctx) -> Result<u32, InstallError> {
    if c.host.dry_run() && !c.host.exists("/usr/local/bin/containerd") {
        let v = c
            .bundle
            .json()
            .components
            .get("containerd")
            .map(|t| t.to_string())
            .unwrap_or_default();
        c.host
            .say(&format!("containerd not installed yet: assuming the bundle's {v}"));
        return Ok(v.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(2));
    }
    Ok(runtime::containerd_version(&c.host, &c.host.resolve("/usr/local/bin/containerd")?)?.0)
}

fn containerd_config(c: &mut Ctx) -> Result<(), InstallError> {
    let major = containerd_major(c)?;
    let sandbox = sandbox_image(c);
    let cfg = files::containerd_config(major, &ContainerdSettings::node(&sandbox));
    c.host.write("/etc/containerd/config.toml", cfg.as_bytes(), 0o644)?;
    c.host.mkdir("/etc/containerd/certs.d")?;
    if let Some(m) = c.cluster.registry_mirror.clone() {
        let mut registries: Vec<String> = c
            .bundle
            .json()
            .images
            .iter()
            .filter_map(|i| i.reference.split('/').next().map(str::to_string))
            .collect();
        registries.sort();
        registries.dedup();
        for r in registries {
            c.host.write(
                &format!("/etc/containerd/certs.d/{r}/hosts.toml"),
                files::mirror_hosts_toml(&r, &m).as_bytes(),
                0o644,
            )?;
        }
    }
    Ok(())
}

fn images(c: &mut Ctx) -> Result<(), InstallError> {
    let expected: Vec<String> = c.bundle.json().images.iter().map(|i| i.reference.clone()).collect();
    if expected.is_empty() {
        println!("    the bundle carries no images");
        return Ok(());
    }
    let major = containerd_major(c)?;
    let names = runtime::import_images(
        &c.host,
        &c.host.resolve("/usr/local/bin/containerd")?,
        &c.host.resolve("/usr/local/bin/ctr")?,
        major,
        &c.bundle.files_under("images"),
        &expected,
        &expected,
    )?;
    println!(
        "    {} images in containerd's k8s.io namespace",
        names.len().min(expected.len())
    );
    Ok(())
}

fn tag_of(c: &Ctx, prefix: &str) -> Option<String> {
    target_images(c).iter().find_map(|r| {
        r.strip_prefix(prefix)
            .map(|t| t.split('@').next().unwrap_or(t).to_string())
    })
}

pub fn secrets(c: &Ctx) -> Secrets {
    let j = &c.cluster.join;
    let s = &c.opts.secrets;
    Secrets {
        token: s.token.clone().or(j.token.clone()),
        ca_cert_hash: s.ca_cert_hash.clone().or(j.ca_cert_hash.clone()),
        certificate_key: s.certificate_key.clone().or(j.certificate_key.clone()),
    }
}

/// Writes the kubeadm config this node will use, as far as it is known now. Returns its
/// node path.
pub fn write_kubeadm_config(c: &Ctx) -> Result<Option<String>, InstallError> {
    let Some(node) = c.node.clone() else {
        println!("    no node entry yet (bootstrap will write the kubeadm config)");
        return Ok(None);
    };
    // Pin etcd/coredns tags only where they differ from kubeadm's own choice for this
    // version: a pinned tag is stored in the cluster and would freeze them across upgrades.
    let defaults = c
        .bundle
        .json()
        .kubernetes
        .parse()
        .ok()
        .and_then(crate::catalog::images::kubeadm_tags);
    let images = Images {
        repository: "registry.k8s.io".into(),
        etcd_tag: tag_of(c, "registry.k8s.io/etcd:").filter(|t| defaults.as_ref().is_none_or(|d| &d.etcd != t)),
        coredns_tag: tag_of(c, "registry.k8s.io/coredns/coredns:")
            .filter(|t| defaults.as_ref().is_none_or(|d| &d.coredns != t)),
    };
    let secrets = secrets(c);
    let (path, text) = match c.role {
        Role::Init => (
            "/etc/kbundle/kubeadm-init.yaml",
            Some(kubeadm::init_config(
                &c.cluster,
                &node,
                &c.bundle.json().kubernetes,
                &images,
                &secrets,
            )),
        ),
        r => (
            "/etc/kbundle/kubeadm-join.yaml",
            kubeadm::join_config(&c.cluster, &node, r, &secrets),
        ),
    };
    match text {
        Some(t) => {
            // Tokens and keys: root only.
            c.host.write(path, t.as_bytes(), 0o600)?;
            Ok(Some(path.to_string()))
        }
        None => {
            println!("    join token/CA hash not known yet: bootstrap takes them from --token/--ca-cert-hash");
            Ok(None)
        }
    }
}

fn kubeadm_config(c: &mut Ctx) -> Result<(), InstallError> {
    write_kubeadm_config(c).map(|_| ())
}
