//! Preflight: every check runs and every failure is reported together, like kubeadm does.

use crate::cluster::{ProxyMode, Role, Selinux};
use crate::host::Host;
use crate::version::Version;

/// Names accepted by `--skip-preflight`.
pub const CHECKS: &[&str] = &["os", "arch", "memory", "cpu", "commands", "modules"];

/// What the cluster and bundle ask of this node, beyond its role.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub proxy_mode: ProxyMode,
    pub selinux: Selinux,
    /// The bundle's Kubernetes version.
    pub kubernetes: Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub check: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub failures: Vec<Failure>,
    pub warnings: Vec<String>,
}

/// `ID` and `VERSION_ID` of `/etc/os-release`.
pub fn os_release(text: &str) -> (String, String, String) {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
            .unwrap_or_default()
    };
    (get("ID"), get("VERSION_ID"), get("PRETTY_NAME"))
}

fn meminfo_mib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

fn find_command(host: &Host, name: &str) -> bool {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .any(|d| host.is_file(&format!("{d}/{name}")))
}

pub fn run(
    host: &Host,
    role: Role,
    needs: &Needs,
    platforms: &[crate::bundle::fields::Platform],
    skip: &[String],
) -> Outcome {
    let mut o = Outcome::default();
    let skipped = |c: &str| skip.iter().any(|s| s == c || s == "all");
    let mut found: Vec<(&'static str, Option<String>)> = Vec::new();
    if !skipped("os") {
        found.push(("os", check_os(host)));
    }
    if !skipped("arch") {
        found.push(("arch", check_arch(platforms)));
    }
    if role.is_control_plane() && !skipped("memory") {
        found.push(("memory", check_memory(host)));
    }
    if role.is_control_plane() && !skipped("cpu") {
        found.push(("cpu", check_cpus(host)));
    }
    if !skipped("commands") {
        found.extend(
            check_commands(host, needs, &mut o.warnings)
                .into_iter()
                .map(|m| ("commands", Some(m))),
        );
    }
    if !skipped("modules") {
        found.push(("modules", missing_modules(host, needs.proxy_mode)));
    }
    if needs.selinux == Selinux::Enforcing {
        o.warnings.extend(selinux_warnings(host));
    }
    o.failures = found
        .into_iter()
        .filter_map(|(check, m)| m.map(|message| Failure { check, message }))
        .collect();
    if host.is_running_system() {
        let swaps = host.kernel("/proc/swaps").unwrap_or_default();
        if swaps.lines().skip(1).any(|l| !l.trim().is_empty()) {
            o.warnings
                .push("swap is on: prepare turns it off (swapoff -a) and takes it out of /etc/fstab".into());
        }
    }
    o
}

fn check_os(host: &Host) -> Option<String> {
    let (id, version, pretty) = os_release(&host.read("/etc/os-release").unwrap_or_default());
    let major = version.split('.').next().unwrap_or("");
    let family = matches!(id.as_str(), "rocky" | "rhel" | "almalinux" | "centos");
    if family && matches!(major, "9" | "10") {
        return None;
    }
    let what = if pretty.is_empty() {
        "an unknown OS (no /etc/os-release)".to_string()
    } else {
        pretty
    };
    Some(format!("{what} is not Rocky Linux/RHEL 9 or 10"))
}

fn check_arch(platforms: &[crate::bundle::fields::Platform]) -> Option<String> {
    let here = crate::manifest::Arch::host().map(|a| a.platform());
    match here {
        Some(p) if platforms.iter().any(|x| *x == p.as_str()) => None,
        _ => Some(format!(
            "this machine is {} but the bundle carries {}",
            std::env::consts::ARCH,
            platforms.join(", ")
        )),
    }
}

fn check_memory(host: &Host) -> Option<String> {
    let mib = host.kernel("/proc/meminfo").as_deref().and_then(meminfo_mib)?;
    (mib < 1700).then(|| format!("{mib} MiB of memory; a control plane needs at least 1700 MiB"))
}

fn check_cpus(host: &Host) -> Option<String> {
    let cpus = host
        .kernel("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (cpus < 2).then(|| format!("{cpus} CPU; a control plane needs at least 2"))
}

/// Commands kubeadm and kubelet need (failures) and recommend (warnings).
fn check_commands(host: &Host, needs: &Needs, warnings: &mut Vec<String>) -> Vec<String> {
    let mut failures = Vec::new();
    let missing: Vec<&str> = ["mount", "umount", "nsenter", "modprobe"]
        .into_iter()
        .filter(|c| !find_command(host, c))
        .collect();
    if !missing.is_empty() {
        failures.push(format!("missing {} (util-linux, kmod)", missing.join(", ")));
    }
    // kubeadm up to 1.32 fails its own preflight without iptables (docs/upstream-facts.md,
    // "Kernel modules per EL release").
    if needs.kubernetes < Version::new(1, 33, 0) && !find_command(host, "iptables") {
        failures.push(format!(
            "iptables is not installed; kubeadm {} requires it (install iptables-nft from the DVD)",
            needs.kubernetes.with_v()
        ));
    } else if !find_command(host, "iptables") && !find_command(host, "nft") {
        failures.push("neither iptables nor nft is installed (iptables-nft or nftables)".into());
    }
    for opt in ["conntrack", "socat", "ethtool", "tc"] {
        if !find_command(host, opt) {
            warnings.push(format!("{opt} is not installed (recommended by kubeadm)"));
        }
    }
    failures
}

/// The running kernel's release (`uname -r`), when the kernel says.
pub fn kernel_release(host: &Host) -> Option<String> {
    host.kernel("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
}

/// On a running node, the kernel modules kbundle loads that the running kernel does not
/// have, checked before anything changes (a module that fails later would stop the install
/// half-way). EL10 moved `br_netfilter`, `nft_compat` and the `xt_*` family into
/// kernel-modules-extra, which minimal and cloud installs lack; EL9 ships them in
/// kernel-modules (docs/upstream-facts.md, "Kernel modules per EL release").
fn missing_modules(host: &Host, mode: ProxyMode) -> Option<String> {
    if !host.is_running_system() {
        return None;
    }
    let release = kernel_release(host);
    let missing: Vec<&str> = super::files::modules(mode)
        .into_iter()
        .filter(|m| !module_available(host, release.as_deref(), m))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let (_, version, _) = os_release(&host.read("/etc/os-release").unwrap_or_default());
    let package = if version.split('.').next() == Some("10") {
        "kernel-modules-extra"
    } else {
        "kernel-modules"
    };
    let rel = release.unwrap_or_else(|| "$(uname -r)".to_string());
    Some(format!(
        "kernel module(s) {} not available for the running kernel {rel}: they come with \
         {package}. Install {package}-{rel} from the DVD's BaseOS (mount it, then \
         `dnf --disablerepo='*' --repofrompath=dvd,/mnt/BaseOS install {package}-{rel}`) and \
         run install again",
        missing.join(", ")
    ))
}

/// `modinfo -k RELEASE MODULE` succeeds (kmod looks in /lib/modules/RELEASE, built-ins too).
fn module_available(host: &Host, release: Option<&str>, module: &str) -> bool {
    let mut cmd = std::process::Command::new("modinfo");
    if let Some(r) = release {
        cmd.args(["-k", r]);
    }
    cmd.arg(module);
    host.exec(&mut cmd, crate::host::sys::Stdin::Null, None)
        .is_ok_and(|ran| ran.status.success())
}

/// Where container-selinux installs its policy module (docs/upstream-facts.md, "SELinux and
/// container-selinux").
pub const CONTAINER_SELINUX_PP: &str = "/usr/share/selinux/packages/container.pp.bz2";

/// In enforcing mode: what the node lacks for kbundle's binaries to get container-selinux's
/// labels.
fn selinux_warnings(host: &Host) -> Vec<String> {
    let mut w = Vec::new();
    if !host.is_file(CONTAINER_SELINUX_PP) {
        w.push(
            "selinux = \"enforcing\" but container-selinux is not installed: containerd, runc and kubelet \
             get no container policy (install container-selinux from the DVD's AppStream)"
                .into(),
        );
    }
    if !find_command(host, "semanage") {
        w.push(
            "selinux = \"enforcing\" but semanage is missing (policycoreutils-python-utils): the kubelet \
             under /opt/kbundle/versions keeps a generic label"
                .into(),
        );
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let t =
            "NAME=\"Rocky Linux\"\nVERSION_ID=\"10.0\"\nID=\"rocky\"\nPRETTY_NAME=\"Rocky Linux 10.0 (Red Quartz)\"\n";
        let (id, v, p) = os_release(t);
        assert_eq!((id.as_str(), v.as_str()), ("rocky", "10.0"));
        assert!(p.starts_with("Rocky"));
    }

    #[test]
    fn reports_everything_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian 12\"\n",
        )
        .unwrap();
        let host = Host::new(dir.path(), false);
        // A bundle for the other architecture than this machine's.
        let other: crate::bundle::fields::Platform = if std::env::consts::ARCH == "aarch64" {
            "linux/amd64"
        } else {
            "linux/arm64"
        }
        .parse()
        .unwrap();
        let needs = Needs {
            proxy_mode: ProxyMode::Iptables,
            selinux: Selinux::Permissive,
            kubernetes: Version::new(1, 34, 3),
        };
        let o = run(&host, Role::Init, &needs, std::slice::from_ref(&other), &[]);
        let checks: Vec<&str> = o.failures.iter().map(|f| f.check).collect();
        assert!(
            checks.contains(&"os") && checks.contains(&"arch") && checks.contains(&"commands"),
            "{checks:?}"
        );
        let o = run(
            &host,
            Role::Init,
            &needs,
            std::slice::from_ref(&other),
            &["os".into(), "arch".into(), "commands".into()],
        );
        assert!(o.failures.iter().all(|f| f.check != "os" && f.check != "arch"));
    }
}
