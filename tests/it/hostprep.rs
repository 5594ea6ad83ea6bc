//! Host preparation against real programs: `kbundle install --phase prepare` into a scratch
//! node root that carries firewalld, then the root inspected with the real
//! `firewall-offline-cmd`; and every systemd unit the installer writes checked by
//! `systemd-analyze verify`.
//!
//! The root gets this machine's `/usr/{bin,sbin,lib,lib64,share}` bind-mounted read-only in
//! a private mount namespace (`unshare -m`), so `chroot ROOT firewall-offline-cmd` (what
//! kbundle runs for an image with firewalld in it) really runs firewalld's offline tool on
//! the root's own `/etc/firewalld`. Nothing outside the root is written: the binds are
//! read-only and vanish with the namespace.

use crate::support::bundles::{self, Built};
use kbundle::install::csr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");
const SHARED: &[&str] = &["usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/share"];

/// Fails (never skips) without firewalld's offline tool: CI installs firewalld.
fn require_firewalld() {
    assert!(
        Path::new("/usr/bin/firewall-offline-cmd").is_file() && Path::new("/usr/lib/firewalld/zones").is_dir(),
        "firewall-offline-cmd is not installed on this machine: install firewalld (apt-get install firewalld; .ci/run does)"
    );
}

/// A Rocky-10-like root whose firewalld configuration starts as this machine's.
fn firewalld_root(dir: &Path) -> PathBuf {
    let r = dir.to_path_buf();
    for d in SHARED.iter().chain(&["etc/selinux", "var"]) {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for (link, to) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(to, r.join(link)).unwrap();
    }
    let os = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"10.0\"\nPRETTY_NAME=\"Rocky Linux 10.0 (Red Quartz)\"\n";
    std::fs::write(r.join("etc/os-release"), os).unwrap();
    std::fs::write(
        r.join("etc/selinux/config"),
        "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    )
    .unwrap();
    // firewalld resolves protocol names (the ipsec service's esp) through /etc/protocols.
    for f in ["protocols", "services"] {
        std::fs::copy(Path::new("/etc").join(f), r.join("etc").join(f)).unwrap();
    }
    let o = Command::new("cp")
        .arg("-a")
        .arg("/etc/firewalld")
        .arg(r.join("etc/"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", bundles::text(&o));
    r
}

/// Runs `argv` with this machine's /usr trees bound read-only into `root`, in a private
/// mount namespace.
fn with_usr(root: &Path, argv: &[&str]) -> Output {
    let script = r#"set -e; r="$1"; shift
for d in usr/bin usr/sbin usr/lib usr/lib64 usr/share; do
  [ -d "/$d" ] || continue
  mount --bind "/$d" "$r/$d"; mount -o remount,bind,ro "$r/$d"
done
exec "$@""#;
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(root)
        .args(argv)
        .output()
        .unwrap()
}

fn firewall(root: &Path, args: &[&str]) -> String {
    let mut argv = vec!["chroot", root.to_str().unwrap(), "firewall-offline-cmd"];
    argv.extend_from_slice(args);
    let o = with_usr(root, &argv);
    assert!(
        o.status.success(),
        "firewall-offline-cmd {args:?}: {}",
        bundles::text(&o)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn prepare(b: &Built, config: &Path, root: &Path, node: &str) -> Output {
    install(b, config, root, node, "prepare")
}

fn install(b: &Built, config: &Path, root: &Path, node: &str, phase: &str) -> Output {
    let root_s = root.to_str().unwrap();
    let (archive, config) = (b.archive.to_str().unwrap(), config.to_str().unwrap());
    let argv = [
        KBUNDLE,
        "install",
        "--bundle",
        archive,
        "--config",
        config,
        "--root",
        root_s,
        "--node",
        node,
        "--phase",
        phase,
        // This machine may lack kmod's modprobe; the check is tested elsewhere.
        "--skip-preflight",
        "commands",
    ];
    with_usr(root, &argv)
}

fn words(s: &str) -> Vec<String> {
    let mut w: Vec<String> = s.split_whitespace().map(str::to_string).collect();
    w.sort();
    w
}

/// The `ports:` line of `firewall-offline-cmd --info-service`.
fn service_ports(root: &Path, svc: &str) -> Vec<String> {
    let info = firewall(root, &[&format!("--info-service={svc}")]);
    let line = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("ports:"))
        .unwrap_or_else(|| panic!("no ports line: {info}"));
    words(line)
}

#[test]
fn prepare_trusts_pod_and_service_networks_and_opens_each_roles_ports_in_real_firewalld() {
    require_firewalld();
    let b = Built::new(false);
    let config = b.config();
    let worker = firewalld_root(&b.path("worker1"));
    let o = prepare(&b, &config, &worker, "worker1");
    assert!(o.status.success(), "{}", bundles::text(&o));

    assert_eq!(
        words(&firewall(&worker, &["--zone=trusted", "--list-sources"])),
        ["10.244.0.0/16", "10.96.0.0/12"]
    );
    let default_zone = firewall(&worker, &["--get-default-zone"]);
    let services = firewall(
        &worker,
        &[&format!("--zone={}", default_zone.trim()), "--list-services"],
    );
    assert!(words(&services).contains(&"kbundle-worker".to_string()), "{services}");
    let ports = service_ports(&worker, "kbundle-worker");
    assert_eq!(
        ports,
        words("10250/tcp 10256/tcp 30000-32767/tcp 30000-32767/udp 8472/udp"),
        "worker ports"
    );
    // Forwarded traffic to pods from any zone (NodePort clients outside the cluster): the
    // policy as firewalld itself reads it back.
    let policy = firewall(&worker, &["--info-policy=kbundle-pods"]);
    for want in [
        "target: ACCEPT",
        "ingress-zones: ANY",
        "egress-zones: trusted",
        "priority: -1",
    ] {
        assert!(policy.contains(want), "{want:?} not in:\n{policy}");
    }

    // Step re-run (its journal entry removed): the same configuration, no duplicates.
    let state = worker.join("var/lib/kbundle/state");
    for d in std::fs::read_dir(&state).unwrap() {
        let _ = std::fs::remove_file(d.unwrap().path().join("host-files.done"));
    }
    let o = prepare(&b, &config, &worker, "worker1");
    assert!(o.status.success(), "{}", bundles::text(&o));
    assert_eq!(
        words(&firewall(&worker, &["--zone=trusted", "--list-sources"])),
        ["10.244.0.0/16", "10.96.0.0/12"]
    );

    let cp = firewalld_root(&b.path("cp1"));
    let o = prepare(&b, &config, &cp, "cp1");
    assert!(o.status.success(), "{}", bundles::text(&o));
    let ports = service_ports(&cp, "kbundle-init");
    let want =
        "6443/tcp 2379-2380/tcp 10250/tcp 10257/tcp 10259/tcp 10256/tcp 30000-32767/tcp 30000-32767/udp 8472/udp";
    assert_eq!(ports, words(want), "control-plane ports");
    assert_eq!(
        words(&firewall(&cp, &["--zone=trusted", "--list-sources"])),
        ["10.244.0.0/16", "10.96.0.0/12"]
    );
}

/// `systemd-analyze --root=ROOT verify UNIT…` in the namespace where ROOT has this machine's
/// systemd units (sysinit.target and the rest) under its /usr/lib.
fn verify(root: &Path, units: &[&str]) -> Output {
    let mut argv = vec!["systemd-analyze", "--root", root.to_str().unwrap(), "verify"];
    argv.extend_from_slice(units);
    with_usr(root, &argv)
}

/// systemd itself accepts every unit the installer writes: containerd.service, kubelet.service
/// with kubeadm's drop-in, the first-boot kbundle-bootstrap.service and the CSR approver's
/// service and timer. `--root` makes
/// systemd-analyze read the units, drop-ins and ExecStart= binaries of the node root (the
/// kubelet link resolved inside it), so no message is filtered: the output must be empty.
#[test]
fn systemd_analyze_verify_accepts_every_unit_the_installer_writes() {
    assert!(
        Path::new("/usr/bin/systemd-analyze").is_file(),
        "systemd-analyze is not installed on this machine: install systemd (.ci/run does)"
    );
    require_firewalld();
    let b = Built::new(false);
    let config = b.config();
    let root = firewalld_root(&b.path("worker1"));
    let o = install(&b, &config, &root, "worker1", "all");
    assert!(o.status.success(), "{}", bundles::text(&o));
    // The CSR approver (kubelet-serving-certs = "cluster-signed", written by bootstrap on
    // control planes) runs the same kbundle as the first-boot unit.
    let system = root.join("etc/systemd/system");
    let boot = std::fs::read_to_string(system.join("kbundle-bootstrap.service")).unwrap();
    let exe = boot
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    std::fs::write(system.join("kbundle-csr-approve.service"), csr::service_unit(&exe)).unwrap();
    std::fs::write(system.join("kbundle-csr-approve.timer"), csr::timer_unit()).unwrap();
    let units = [
        "containerd.service",
        "kubelet.service",
        "kbundle-bootstrap.service",
        "kbundle-csr-approve.service",
        "kbundle-csr-approve.timer",
    ];
    for u in units {
        assert!(root.join("etc/systemd/system").join(u).is_file(), "{u} not written");
    }
    assert!(root
        .join("etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
        .is_file());
    let o = verify(&root, &units);
    assert!(
        o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
        "{}",
        bundles::text(&o)
    );

    // The check has teeth: a drop-in that breaks the unit is refused.
    let dropin = root.join("etc/systemd/system/kubelet.service.d/10-kubeadm.conf");
    let text = std::fs::read_to_string(&dropin).unwrap();
    std::fs::write(&dropin, text.replace("ExecStart=\n", "")).unwrap();
    let o = verify(&root, &["kubelet.service"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("more than one ExecStart="),
        "{}",
        bundles::text(&o)
    );
}
