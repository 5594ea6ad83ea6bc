//! Host preparation through the recording seam: firewalld per node kind, kernel modules per
//! proxy mode and EL release, zram, SELinux modes, and the preflight checks that go with them.

use crate::cluster::{ProxyMode, Role, Selinux};
use crate::host::record::{Event, Recorder};
use crate::install::{files, preflight, run_on, InstallError, Options, Phase};
use crate::testkit;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct Scene {
    _t: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    config: PathBuf,
}

/// A Rocky 10 root, the v1.34.3 fixture bundle and the example config with `edits` applied
/// (`(from, to)` replacements of its text).
fn scene(edits: &[(&str, &str)]) -> Scene {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    testkit::node_root(&root);
    let bundle = testkit::bundle_dir(&t.path().join("b"), &["v1.34.3"]);
    let config = testkit::cluster_file(t.path(), "open-ports");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "the example config has no {from:?}");
        text = text.replace(from, to);
    }
    std::fs::write(&config, text).unwrap();
    Scene {
        _t: t,
        root,
        bundle,
        config,
    }
}

impl Scene {
    fn touch(&self, node_path: &str, text: &str) {
        let p = self.root.join(node_path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn read(&self, node_path: &str) -> String {
        std::fs::read_to_string(self.root.join(node_path.trim_start_matches('/'))).unwrap()
    }
}

/// Runs `prepare` of worker1 (or `node`) through a recorder that `script` prepares.
fn prepare(
    s: &Scene,
    node: &str,
    live: bool,
    script: impl FnOnce(&Recorder),
) -> (Arc<Recorder>, Result<(), InstallError>) {
    let (rec, host) = testkit::recording_host(&s.root, live);
    rec.answer(
        "--version",
        0,
        "containerd github.com/containerd/containerd/v2 v2.1.5 fcd4322\n",
    );
    rec.answer(
        "images ls -q",
        0,
        "registry.k8s.io/pause:3.10.1\nregistry.k8s.io/etcd:3.6.5-0\nregistry.k8s.io/kube-apiserver:v1.34.3\n",
    );
    script(&rec);
    let opts = Options {
        bundle: s.bundle.clone(),
        config: s.config.clone(),
        node: Some(node.into()),
        role: None,
        root: s.root.clone(),
        phase: Phase::Prepare,
        dry_run: false,
        skip_preflight: Vec::new(),
        secrets: Default::default(),
        ready_timeout: Duration::from_secs(60),
        trust: Default::default(),
    };
    let r = run_on(host, opts);
    (rec, r)
}

/// Positions of the commands containing `needle`.
fn all(cmds: &[String], needle: &str) -> Vec<usize> {
    cmds.iter()
        .enumerate()
        .filter(|(_, c)| c.contains(needle))
        .map(|(i, _)| i)
        .collect()
}

fn at(cmds: &[String], needle: &str) -> usize {
    *all(cmds, needle)
        .first()
        .unwrap_or_else(|| panic!("no command with {needle:?} in {cmds:#?}"))
}

fn symlink_to_null(rec: &Recorder, link_end: &str) -> bool {
    rec.events().into_iter().any(|e| {
        matches!(e, Event::Symlink { link, target } if link.ends_with(link_end) && target == Path::new("/dev/null"))
    })
}

#[test]
fn a_running_firewalld_gets_permanent_rules_then_a_reload() {
    let s = scene(&[]);
    s.touch("/usr/bin/firewall-cmd", "");
    s.touch("/usr/bin/firewall-offline-cmd", "");
    let (rec, r) = prepare(&s, "worker1", true, |_| {});
    r.unwrap();
    let cmds = rec.commands();
    let adds = [
        at(&cmds, "firewall-cmd --permanent --add-service=kbundle-worker"),
        at(
            &cmds,
            "firewall-cmd --permanent --zone=trusted --add-source=10.244.0.0/16",
        ),
        at(
            &cmds,
            "firewall-cmd --permanent --zone=trusted --add-source=10.96.0.0/12",
        ),
    ];
    let reloads = all(&cmds, "firewall-cmd --reload");
    assert_eq!(reloads.len(), 2, "{cmds:#?}");
    // The first reload loads the new service file, the last makes the permanent rules live.
    assert!(
        reloads[0] < adds[0] && adds.iter().all(|a| *a < reloads[1]),
        "{cmds:#?}"
    );
    assert!(at(&cmds, "firewall-cmd --state") < reloads[0]);
    assert!(all(&cmds, "firewall-offline-cmd").is_empty(), "{cmds:#?}");
}

#[test]
fn a_stopped_firewalld_on_a_live_node_is_configured_offline_without_a_reload() {
    let s = scene(&[]);
    s.touch("/usr/bin/firewall-cmd", "");
    s.touch("/usr/bin/firewall-offline-cmd", "");
    let (rec, r) = prepare(&s, "cp1", true, |rec| {
        rec.answer("firewall-cmd --state", 252, "not running\n");
    });
    r.unwrap();
    let cmds = rec.commands();
    for c in [
        "firewall-offline-cmd --add-service=kbundle-init",
        "firewall-offline-cmd --zone=trusted --add-source=10.244.0.0/16",
        "firewall-offline-cmd --zone=trusted --add-source=10.96.0.0/12",
    ] {
        assert!(cmds.iter().any(|x| x == c), "{c} missing: {cmds:#?}");
    }
    assert!(
        all(&cmds, "--reload").is_empty() && all(&cmds, "--permanent").is_empty(),
        "{cmds:#?}"
    );
}

#[test]
fn an_image_with_firewalld_is_configured_through_chroot() {
    let s = scene(&[]);
    s.touch("/usr/bin/firewall-offline-cmd", "");
    let (rec, r) = prepare(&s, "worker1", false, |_| {});
    r.unwrap();
    let cmds = rec.commands();
    let chroot = format!("chroot {} firewall-offline-cmd", s.root.display());
    let ours: Vec<&String> = cmds.iter().filter(|c| c.starts_with(&chroot)).collect();
    assert_eq!(ours.len(), 3, "{cmds:#?}");
    assert!(
        ours[1].ends_with("--zone=trusted --add-source=10.244.0.0/16"),
        "{ours:#?}"
    );
    assert!(all(&cmds, "firewall-cmd").is_empty() && all(&cmds, "modprobe").is_empty());
}

#[test]
fn iptables_mode_loads_every_module_then_applies_sysctls() {
    let s = scene(&[]);
    let (rec, r) = prepare(&s, "worker1", true, |_| {});
    r.unwrap();
    let cmds = rec.commands();
    let want = files::modules(ProxyMode::Iptables);
    assert!(want.contains(&"nf_conntrack") && want.contains(&"nft_compat") && want.contains(&"xt_comment"));
    let loads: Vec<usize> = want.iter().map(|m| at(&cmds, &format!("modprobe {m}"))).collect();
    assert!(loads.windows(2).all(|w| w[0] < w[1]), "{cmds:#?}");
    assert!(*loads.last().unwrap() < at(&cmds, "sysctl --system"));
    let conf = s.read("/etc/modules-load.d/kbundle-kubernetes.conf");
    let listed: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(listed, want);
}

#[test]
fn nftables_mode_loads_nf_tables_and_no_xtables_compat() {
    let s = scene(&[("proxy-mode = \"iptables\"", "proxy-mode = \"nftables\"")]);
    let (rec, r) = prepare(&s, "worker1", true, |_| {});
    r.unwrap();
    let cmds = rec.commands();
    at(&cmds, "modprobe nf_tables");
    assert!(all(&cmds, "modprobe nft_compat").is_empty() && all(&cmds, "modprobe xt_").is_empty());
    let conf = s.read("/etc/modules-load.d/kbundle-kubernetes.conf");
    assert!(
        conf.contains("\nnf_tables\n") && conf.contains("\nnf_conntrack\n") && !conf.contains("xt_"),
        "{conf}"
    );
}

#[test]
fn a_module_that_will_not_load_fails_the_step() {
    let s = scene(&[]);
    let (rec, r) = prepare(&s, "worker1", true, |rec| {
        rec.answer("modprobe br_netfilter", 1, "");
    });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("host-files") && e.contains("modprobe br_netfilter"), "{e}");
    assert!(all(&rec.commands(), "sysctl --system").is_empty());
}

const EL10_KERNEL: &str = "6.12.0-55.9.1.el10_0.x86_64";

#[test]
fn el10_without_kernel_modules_extra_fails_preflight_naming_the_package_for_this_kernel() {
    let s = scene(&[]);
    let (rec, r) = prepare(&s, "worker1", true, |rec| {
        rec.kernel_file("/proc/sys/kernel/osrelease", &format!("{EL10_KERNEL}\n"));
        rec.answer(&format!("modinfo -k {EL10_KERNEL} br_netfilter"), 1, "");
        rec.answer(&format!("modinfo -k {EL10_KERNEL} xt_comment"), 1, "");
    });
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("[modules]")
            && e.contains("br_netfilter, xt_comment")
            && e.contains(&format!("kernel-modules-extra-{EL10_KERNEL}"))
            && e.contains("BaseOS"),
        "{e}"
    );
    assert!(all(&rec.commands(), "modprobe").is_empty(), "{:#?}", rec.commands());
}

#[test]
fn el9_names_kernel_modules_not_the_el10_extra_package() {
    let s = scene(&[]);
    s.touch(
        "/etc/os-release",
        "ID=\"rocky\"\nVERSION_ID=\"9.6\"\nPRETTY_NAME=\"Rocky Linux 9.6\"\n",
    );
    let (rec, r) = prepare(&s, "worker1", true, |rec| {
        rec.answer("modinfo", 1, "");
    });
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("kernel-modules-") && !e.contains("kernel-modules-extra"),
        "{e}"
    );
    assert!(
        all(&rec.commands(), "modprobe").is_empty(),
        "nothing loaded before preflight passes"
    );
}

#[test]
fn zram_generator_config_is_masked_so_swap_stays_off_after_reboot() {
    let s = scene(&[]);
    s.touch("/usr/lib/systemd/zram-generator.conf", "[zram0]\n");
    s.touch("/usr/lib/systemd/zram-generator.conf.d/10-vendor.conf", "[zram0]\n");
    let (rec, r) = prepare(&s, "worker1", true, |_| {});
    r.unwrap();
    assert!(symlink_to_null(&rec, "etc/systemd/zram-generator.conf"));
    assert!(symlink_to_null(
        &rec,
        "etc/systemd/zram-generator.conf.d/10-vendor.conf"
    ));
    at(&rec.commands(), "swapoff -a");
}

#[test]
fn no_zram_generator_no_zram_config() {
    let s = scene(&[]);
    let (rec, r) = prepare(&s, "worker1", false, |_| {});
    r.unwrap();
    assert!(!symlink_to_null(&rec, "zram-generator.conf"));
}

#[test]
fn enforcing_mode_keeps_selinux_config_and_labels_the_installed_files() {
    let s = scene(&[("selinux = \"permissive\"", "selinux = \"enforcing\"")]);
    s.touch("/usr/sbin/setenforce", "");
    s.touch("/usr/sbin/restorecon", "");
    s.touch("/usr/sbin/semanage", "");
    let (rec, r) = prepare(&s, "worker1", true, |_| {});
    r.unwrap();
    assert_eq!(s.read("/etc/selinux/config"), "SELINUX=enforcing\n");
    let cmds = rec.commands();
    assert!(all(&cmds, "setenforce").is_empty(), "{cmds:#?}");
    let rule = at(
        &cmds,
        "semanage fcontext -a -t kubelet_exec_t '/opt/kbundle/versions/[^/]+/kubelet'",
    );
    at(
        &cmds,
        "semanage fcontext -a -t container_runtime_exec_t '/opt/kbundle/versions/containerd-[^/]+/containerd.*'",
    );
    at(
        &cmds,
        "semanage fcontext -a -t container_runtime_exec_t '/opt/kbundle/versions/runc-[^/]+/runc'",
    );
    let relabel = at(&cmds, "restorecon -R");
    assert!(
        at(&cmds, "semanage fcontext -l -C") < rule && rule < relabel,
        "{cmds:#?}"
    );
    for p in [
        "/usr/local/bin",
        "/usr/local/sbin",
        "/opt/kbundle",
        "/opt/cni",
        "/etc/containerd",
    ] {
        assert!(cmds[relabel].contains(&format!(" {p}")), "{p}: {}", cmds[relabel]);
    }
    // Labels come after every file prepare installs.
    let w = rec.writes_under(&s.root);
    let binaries = w.iter().position(|p| p == "/usr/local/bin/kubelet").unwrap();
    assert!(binaries < w.iter().position(|p| p.ends_with("/selinux-labels.done")).unwrap());
}

#[test]
fn an_existing_kubelet_label_rule_is_not_added_twice() {
    let s = scene(&[("selinux = \"permissive\"", "selinux = \"enforcing\"")]);
    s.touch("/usr/sbin/restorecon", "");
    s.touch("/usr/sbin/semanage", "");
    let (rec, r) = prepare(&s, "worker1", true, |rec| {
        rec.answer(
            "fcontext -l -C",
            0,
            "/opt/kbundle/versions/[^/]+/kubelet    regular file    system_u:object_r:kubelet_exec_t:s0\n\
             /opt/kbundle/versions/containerd-[^/]+/containerd.*    regular file    system_u:object_r:container_runtime_exec_t:s0\n\
             /opt/kbundle/versions/runc-[^/]+/runc    regular file    system_u:object_r:container_runtime_exec_t:s0\n",
        );
    });
    r.unwrap();
    assert!(all(&rec.commands(), "fcontext -a").is_empty());
}

#[test]
fn permissive_mode_sets_permissive_and_relabels_nothing() {
    let s = scene(&[]);
    s.touch("/usr/sbin/setenforce", "");
    s.touch("/usr/sbin/restorecon", "");
    let (rec, r) = prepare(&s, "worker1", true, |_| {});
    r.unwrap();
    assert_eq!(s.read("/etc/selinux/config"), "SELINUX=permissive\n");
    let cmds = rec.commands();
    at(&cmds, "setenforce 0");
    assert!(all(&cmds, "restorecon").is_empty() && all(&cmds, "semanage").is_empty());
}

fn needs(selinux: Selinux, kubernetes: crate::version::Version) -> preflight::Needs {
    preflight::Needs {
        proxy_mode: ProxyMode::Iptables,
        selinux,
        kubernetes,
    }
}

fn here() -> Vec<crate::bundle::fields::Platform> {
    let p = crate::manifest::Arch::host().map(|a| a.platform()).unwrap();
    vec![p.as_str().parse().unwrap()]
}

#[test]
fn enforcing_without_container_selinux_warns() {
    let s = scene(&[]);
    let host = crate::host::Host::new(&s.root, false);
    let v = crate::version::Version::new(1, 34, 3);
    let o = preflight::run(&host, Role::Worker, &needs(Selinux::Enforcing, v), &here(), &[]);
    assert!(o.failures.is_empty(), "{:?}", o.failures);
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("container-selinux is not installed")),
        "{:?}",
        o.warnings
    );
    s.touch(preflight::CONTAINER_SELINUX_PP, "");
    let o = preflight::run(&host, Role::Worker, &needs(Selinux::Enforcing, v), &here(), &[]);
    assert!(
        !o.warnings.iter().any(|w| w.contains("container-selinux")),
        "{:?}",
        o.warnings
    );
    let o = preflight::run(&host, Role::Worker, &needs(Selinux::Permissive, v), &here(), &[]);
    assert!(!o.warnings.iter().any(|w| w.contains("semanage")), "{:?}", o.warnings);
}

#[test]
fn kubernetes_before_1_33_requires_iptables() {
    let s = scene(&[]);
    std::fs::remove_file(s.root.join("usr/bin/iptables")).unwrap();
    s.touch("/usr/sbin/nft", "");
    let host = crate::host::Host::new(&s.root, false);
    let old = needs(Selinux::Permissive, crate::version::Version::new(1, 32, 11));
    let o = preflight::run(&host, Role::Worker, &old, &here(), &[]);
    let f: Vec<&str> = o.failures.iter().map(|f| f.message.as_str()).collect();
    assert!(
        f.iter()
            .any(|m| m.contains("iptables is not installed") && m.contains("v1.32.11")),
        "{f:?}"
    );
    let new = needs(Selinux::Permissive, crate::version::Version::new(1, 33, 0));
    assert!(preflight::run(&host, Role::Worker, &new, &here(), &[])
        .failures
        .is_empty());
}

#[test]
fn port_sets_follow_kubeadm_per_role_and_open_nodeports_everywhere() {
    let cp = files::ports(Role::ControlPlane);
    let worker = files::ports(Role::Worker);
    for p in [
        ("6443", "tcp"),
        ("2379-2380", "tcp"),
        ("10257", "tcp"),
        ("10259", "tcp"),
    ] {
        assert!(cp.contains(&p) && !worker.contains(&p), "{p:?}");
    }
    for p in [
        ("10250", "tcp"),
        ("10256", "tcp"),
        ("30000-32767", "tcp"),
        ("30000-32767", "udp"),
        ("8472", "udp"),
    ] {
        assert!(cp.contains(&p) && worker.contains(&p), "{p:?}");
    }
    assert_eq!(files::ports(Role::Init), cp);
    let xml = files::firewalld_service(Role::Worker);
    assert!(xml.contains("<port protocol=\"udp\" port=\"30000-32767\"/>"), "{xml}");
}
