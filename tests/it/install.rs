//! `kbundle install` into scratch node roots, from a bundle built from the loopback mirror
//! and registry. Real containerd (Debian's, shipped in the fixture tarball) parses the
//! generated config and really imports the images; kubeadm, kubectl-against-a-cluster and
//! systemctl are test stand-ins under tests/stand-ins.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::harness::Upstream;
pub(crate) use support::node::stand_in;
use support::node::{images_in_root, unpinned_in_root};
use support::upstream::UpstreamSpec;

pub(crate) const KBUNDLE: &str = env!("CARGO_BIN_EXE_kbundle");

pub(crate) fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A bundle (real Debian binaries + registry images) and a cluster config, in a temp dir.
pub(crate) struct Fixture {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) archive: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) images: Vec<(String, String)>,
}

pub(crate) fn fixture(join_secrets: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("kubernetes-v1.34.3.toml");
    support::upstream::pgp::copy_manifest("kubernetes-v1.34.3.toml", &manifest).unwrap();
    let up = Upstream::start(&UpstreamSpec::v1_34_3(), &manifest);
    let installer = tmp.path().join("installer");
    std::fs::write(&installer, "#!/bin/sh\necho installer\n").unwrap();
    let mut args: Vec<String> = vec![
        "build".into(),
        manifest.display().to_string(),
        "--out".into(),
        tmp.path().join("out").display().to_string(),
        "--cache".into(),
        tmp.path().join("cache").display().to_string(),
        "--installer".into(),
        installer.display().to_string(),
        "--quiet".into(),
    ];
    args.extend(up.mirror_args());
    let o = Command::new(KBUNDLE).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut cfg = String::from_utf8(Command::new(KBUNDLE).arg("example-config").output().unwrap().stdout).unwrap();
    if join_secrets {
        cfg = cfg.replace(
            "# [join]\n# token = \"abcdef.0123456789abcdef\"\n# ca-cert-hash = \"sha256:<64 hex>\"\n# certificate-key = \"<64 hex>\"",
            &format!("[join]\ntoken = \"abcdef.0123456789abcdef\"\nca-cert-hash = \"sha256:{}\"", "b".repeat(64)),
        );
        assert!(cfg.contains("[join]\ntoken"), "example config changed shape");
    }
    let config = tmp.path().join("cluster.toml");
    std::fs::write(&config, cfg).unwrap();
    Fixture {
        archive: tmp.path().join("out/kubernetes-v1.34.3.tar.zst"),
        config,
        images: up.images.clone(),
        tmp,
    }
}

/// A scratch node root that looks like Rocky Linux 10 with swap and SELinux on.
pub(crate) fn node_root(f: &Fixture, name: &str) -> PathBuf {
    let r = support::bundles::node_root(&f.tmp.path().join(name));
    std::fs::write(
        r.join("etc/fstab"),
        "/dev/vda1 / xfs defaults 0 0\n/dev/vda2 none swap defaults 0 0\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/selinux/config"),
        "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    )
    .unwrap();
    r
}

/// `kbundle install --bundle B --config C --root ROOT EXTRA…`, not yet run.
pub(crate) fn install_cmd(f: &Fixture, root: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(KBUNDLE);
    c.args(["install", "--bundle"])
        .arg(&f.archive)
        .arg("--config")
        .arg(&f.config)
        .arg("--root")
        .arg(root)
        .args(extra);
    c
}

pub(crate) fn install(f: &Fixture, root: &Path, extra: &[&str]) -> Output {
    install_cmd(f, root, extra).output().unwrap()
}

/// Every file under `dir` with its size and mtime, to prove nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path().display().to_string(), m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z')) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && cmd.contains("containerd") {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

#[test]
fn prepare_installs_everything_and_imports_images_with_real_containerd() {
    let f = fixture(false);
    let root = node_root(&f, "worker1");
    let o = install(&f, &root, &["--node", "worker1", "--phase", "prepare"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = |p: &str| root.join(p.trim_start_matches('/'));

    // Binaries: kubeadm/kubelet/kubectl by version, switched by links.
    let link = std::fs::read_link(r("/usr/local/bin/kubectl")).unwrap();
    assert_eq!(link, Path::new("/opt/kbundle/versions/kubernetes-v1.34.3/kubectl"));
    assert_eq!(
        std::fs::read(r("/opt/kbundle/versions/kubernetes-v1.34.3/kubectl")).unwrap(),
        std::fs::read("/usr/bin/kubectl").unwrap()
    );
    for b in [
        "/usr/local/bin/containerd",
        "/usr/local/bin/ctr",
        "/usr/local/bin/containerd-shim-runc-v2",
        "/usr/local/sbin/runc",
        "/opt/cni/bin/bridge",
        "/opt/cni/bin/host-local",
        "/usr/local/bin/crictl",
        "/opt/kbundle/versions/etcd-3.6.5/etcdctl",
    ] {
        assert!(support::node::in_root(&root, b).is_file(), "{b} missing");
    }
    // The runtime's binaries: one directory per version, a link per file.
    for (link, dir) in [
        ("/usr/local/bin/containerd", "/opt/kbundle/versions/containerd-2.1.5"),
        ("/usr/local/bin/ctr", "/opt/kbundle/versions/containerd-2.1.5"),
        ("/usr/local/sbin/runc", "/opt/kbundle/versions/runc-1.3.4"),
        ("/opt/cni/bin/bridge", "/opt/kbundle/versions/cni-plugins-1.8.0"),
        ("/usr/local/bin/crictl", "/opt/kbundle/versions/crictl-1.34.0"),
    ] {
        let t = std::fs::read_link(r(link)).unwrap();
        assert_eq!(t.parent().unwrap(), Path::new(dir), "{link}");
    }
    assert!(r("/opt/cni/bin").is_dir() && std::fs::read_link(r("/opt/cni/bin")).is_err());
    // etcd tools: one directory per etcd release, linked from /usr/local/bin.
    assert_eq!(
        std::fs::read_link(r("/usr/local/bin/etcdctl")).unwrap(),
        Path::new("/opt/kbundle/versions/etcd-3.6.5/etcdctl")
    );
    // Host files.
    assert!(
        std::fs::read_to_string(r("/etc/modules-load.d/kbundle-kubernetes.conf"))
            .unwrap()
            .contains("br_netfilter")
    );
    assert!(std::fs::read_to_string(r("/etc/sysctl.d/99-kbundle-kubernetes.conf"))
        .unwrap()
        .contains("net.ipv4.ip_forward = 1"));
    let fstab = std::fs::read_to_string(r("/etc/fstab")).unwrap();
    assert!(
        fstab.contains("# disabled by kbundle") && fstab.contains("/dev/vda1 / xfs"),
        "{fstab}"
    );
    assert!(std::fs::read_to_string(r("/etc/selinux/config"))
        .unwrap()
        .contains("SELINUX=permissive"));
    assert!(std::fs::read_to_string(r("/etc/firewalld/services/kbundle-worker.xml"))
        .unwrap()
        .contains("port=\"10250\""));
    // Units, enabled by symlink.
    assert_eq!(
        std::fs::read_link(r("/etc/systemd/system/multi-user.target.wants/kubelet.service")).unwrap(),
        Path::new("/etc/systemd/system/kubelet.service")
    );
    assert!(r("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf").is_file());
    // containerd config for the containerd actually shipped (Debian's 1.6: version 2), and
    // the real containerd parses it.
    let cfg = std::fs::read_to_string(r("/etc/containerd/config.toml")).unwrap();
    assert!(
        cfg.contains("version = 2")
            && cfg.contains("SystemdCgroup = true")
            && cfg.contains("sandbox_image = \"registry.k8s.io/pause:3.10.1\""),
        "{cfg}"
    );
    let dump = Command::new(support::node::in_root(&root, "/usr/local/bin/containerd"))
        .arg("--config")
        .arg(r("/etc/containerd/config.toml"))
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", text(&dump));
    assert!(String::from_utf8_lossy(&dump.stdout).contains("SystemdCgroup = true"));
    // Images: all there, under upstream names and digests; no containerd left running.
    assert!(
        processes_mentioning(root.to_str().unwrap()).is_empty(),
        "{:?}",
        processes_mentioning(root.to_str().unwrap())
    );
    let listed = images_in_root(&root);
    for (name, digest) in &f.images {
        assert!(
            listed.contains(&(name.clone(), digest.clone())),
            "{name}@{digest} not imported: {listed:?}"
        );
    }
    // Every imported image is pinned, so kubelet's image GC never removes it.
    let names: Vec<String> = f.images.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(unpinned_in_root(&root, &names), Vec::<String>::new(), "{listed:?}");
    // No join secrets known yet: no join config; preflight warnings do not fail.
    assert!(!r("/etc/kbundle/kubeadm-join.yaml").exists());
    // systemd-analyze verify, where available, accepts the units.
    if Command::new("systemd-analyze").arg("--version").output().is_ok() {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args([
                "/etc/systemd/system/containerd.service",
                "/etc/systemd/system/kubelet.service",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("Unknown") && !err.contains("bad-setting"), "{err}");
    }
    // A second run changes nothing.
    let before = snapshot(&root);
    let o = install(&f, &root, &["--node", "worker1", "--phase", "prepare"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("images: done earlier, skipped"),
        "{}",
        text(&o)
    );
    assert_unchanged(&before, &snapshot(&root), "a re-run changed the node");
    assert_eq!(unpinned_in_root(&root, &names), Vec::<String>::new());
    // A re-run that imports again (its images step not journaled as done) into a
    // containerd that already has the images, one of them no longer pinned, pins them all.
    let journal = std::fs::read_dir(root.join("var/lib/kbundle/state"))
        .unwrap()
        .map(|e| e.unwrap().path().join("images.done"))
        .find(|p| p.is_file())
        .expect("images step journaled");
    std::fs::remove_file(&journal).unwrap();
    let (first, _) = &f.images[0];
    support::node::unpin_in_root(&root, std::slice::from_ref(first));
    let o = install(&f, &root, &["--node", "worker1", "--phase", "prepare"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(journal.is_file(), "{}", text(&o));
    assert_eq!(unpinned_in_root(&root, &names), Vec::<String>::new());
}

/// Names only what differs between two snapshots.
fn assert_unchanged(
    before: &[(String, u64, std::time::SystemTime)],
    after: &[(String, u64, std::time::SystemTime)],
    what: &str,
) {
    let gone: Vec<_> = before.iter().filter(|b| !after.contains(b)).collect();
    let new: Vec<_> = after.iter().filter(|a| !before.contains(a)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{what}:\nbefore: {gone:?}\nafter: {new:?}"
    );
}

#[test]
fn tampered_bundle_is_refused_before_any_write() {
    let f = fixture(false);
    let root = node_root(&f, "n");
    let before = snapshot(&root);
    let bad = f.tmp.path().join("bad.tar.zst");
    let mut b = std::fs::read(&f.archive).unwrap();
    let i = b.len() / 3;
    b[i] ^= 0x01;
    std::fs::write(&bad, b).unwrap();
    let o = Command::new(KBUNDLE)
        .args(["install", "--bundle"])
        .arg(&bad)
        .arg("--config")
        .arg(&f.config)
        .arg("--root")
        .arg(&root)
        .args(["--role", "worker", "--phase", "prepare"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(before, snapshot(&root), "a tampered bundle changed the node");
}

#[test]
fn preflight_reports_every_failure_together() {
    let f = fixture(false);
    let root = node_root(&f, "n");
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n",
    )
    .unwrap();
    std::fs::remove_file(root.join("usr/bin/nsenter")).unwrap();
    let o = install(&f, &root, &["--role", "worker", "--phase", "prepare"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("[os] Debian GNU/Linux 12 is not Rocky Linux/RHEL 9 or 10")
            && err.contains("[commands] missing nsenter"),
        "{err}"
    );
    assert!(
        !root.join("usr/local/bin").exists(),
        "preflight failure must stop before host changes"
    );
    let o = install(
        &f,
        &root,
        &[
            "--role",
            "worker",
            "--phase",
            "prepare",
            "--skip-preflight",
            "os,commands",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn killed_prepare_resumes_and_completes() {
    let f = fixture(false);
    let root = node_root(&f, "n");
    // Kill the install at several points; every re-run must finish the job.
    for delay_ms in [150u64, 400, 900] {
        let mut child = Command::new(KBUNDLE)
            .args(["install", "--bundle"])
            .arg(&f.archive)
            .arg("--config")
            .arg(&f.config)
            .arg("--root")
            .arg(&root)
            .args(["--role", "worker", "--phase", "prepare"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    // The kernel stops the temporary containerd with its parent.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        processes_mentioning(root.to_str().unwrap()).is_empty(),
        "{:?}",
        processes_mentioning(root.to_str().unwrap())
    );
    let o = install(&f, &root, &["--role", "worker", "--phase", "prepare"]);
    assert!(o.status.success(), "{}", text(&o));
    let listed = images_in_root(&root);
    for (name, digest) in &f.images {
        assert!(
            listed.contains(&(name.clone(), digest.clone())),
            "{name} missing after resume"
        );
    }
    let names: Vec<String> = f.images.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(unpinned_in_root(&root, &names), Vec::<String>::new());
}

#[test]
fn dry_run_changes_nothing() {
    let f = fixture(false);
    let root = node_root(&f, "n");
    let before = snapshot(&root);
    let o = install(&f, &root, &["--node", "cp1", "--phase", "all", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("[dry-run] write /etc/containerd/config.toml") && out.contains("[dry-run] install"),
        "{out}"
    );
    assert_eq!(before, snapshot(&root));
}

#[test]
fn bootstrap_without_systemd_installs_a_first_boot_unit() {
    let f = fixture(true);
    let root = node_root(&f, "n");
    let o = install(&f, &root, &["--node", "worker1", "--phase", "all"]);
    assert!(o.status.success(), "{}", text(&o));
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/kbundle-bootstrap.service")).unwrap();
    assert!(
        unit.contains("--phase bootstrap") && unit.contains("--node worker1"),
        "{unit}"
    );
    assert!(root
        .join("etc/systemd/system/multi-user.target.wants/kbundle-bootstrap.service")
        .is_symlink());
    // Join secrets came from the config: the join config exists and only root can read it.
    let join = root.join("etc/kbundle/kubeadm-join.yaml");
    let text = std::fs::read_to_string(&join).unwrap();
    assert!(text.contains("kind: JoinConfiguration") && text.contains("abcdef.0123456789abcdef"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&join).unwrap().permissions().mode() & 0o777, 0o600);
}
