//! Rendering: the templates in `kickstart/` (embedded with `include_str!`), filled from the
//! cluster config, one node and the bundle. Values are checked before they reach a
//! kickstart line or a shell script, so nothing in cluster.toml can inject a command.
//!
//! Template syntax: `{{name}}` is replaced by its value; a line holding only a placeholder
//! whose value is empty is dropped. An unknown placeholder is an error.

use super::{BundleRef, KickstartError, Release};
use crate::cluster::{Cluster, Firewall, Node};
use crate::digest::Sha256;
use std::net::IpAddr;

const ROCKY10: &str = include_str!("../../kickstart/rocky10.ks");
const ROCKY9: &str = include_str!("../../kickstart/rocky9.ks");
const POST_NOCHROOT: &str = include_str!("../../kickstart/post-nochroot.sh");
const POST_INSTALL: &str = include_str!("../../kickstart/post-install.sh");
const BOOTSTRAP_UNIT: &str = include_str!("../../kickstart/kbundle-bootstrap.service");

/// One rendered kickstart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub node: String,
    pub release: Release,
    /// `<node>.ks`
    pub file_name: String,
    pub text: String,
    /// What secrets the file holds or leads to (empty: none); see [`Rendered::mode`].
    pub secrets: Vec<String>,
}

impl Rendered {
    /// 0600 when the kickstart holds a password hash or installs join secrets, else 0644.
    pub fn mode(&self) -> u32 {
        if self.secrets.is_empty() {
            0o644
        } else {
            0o600
        }
    }
}

/// Renders one kickstart per node (or only `only`), in config order. `config_bytes` are the
/// exact bytes of cluster.toml: their sha256 goes into each kickstart.
pub fn render_all(
    cluster: &Cluster,
    config_bytes: &[u8],
    release: Release,
    bundle: &BundleRef,
    only: Option<&str>,
) -> Result<Vec<Rendered>, KickstartError> {
    if cluster.nodes.is_empty() {
        return Err(KickstartError::NoNodes {
            path: cluster.path.clone(),
        });
    }
    let nodes: Vec<&Node> = match only {
        Some(name) => vec![cluster.node(name).ok_or_else(|| KickstartError::UnknownNode {
            name: name.to_string(),
            path: cluster.path.clone(),
            known: cluster
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?],
        None => cluster.nodes.iter().collect(),
    };
    let src = String::from_utf8_lossy(config_bytes);
    let os = OsValues::check(cluster, &src)?;
    let config_sha256 = Sha256::of(config_bytes);
    nodes
        .into_iter()
        .map(|n| render_node(cluster, &src, &os, n, release, bundle, &config_sha256))
        .collect()
}

/// `[os]` values, checked once for all nodes.
struct OsValues {
    timezone: String,
    ntp: Vec<String>,
    root_hash: Option<String>,
    ssh_keys: Vec<String>,
    dns: Vec<IpAddr>,
    gateway: Option<IpAddr>,
    prefix: u8,
    interface: String,
    disk: Option<String>,
}

fn line_of(src: &str, key: &str) -> usize {
    src.lines()
        .position(|l| l.trim_start().starts_with(key))
        .or_else(|| src.lines().position(|l| l.trim() == "[os]"))
        .map_or(1, |i| i + 1)
}

fn charset_ok(s: &str, extra: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

fn valid_host(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
        || (s.len() <= 253
            && s.split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && charset_ok(l, "-")))
}

impl OsValues {
    fn check(c: &Cluster, src: &str) -> Result<OsValues, KickstartError> {
        let err = |key: &str, message: String| KickstartError::Config {
            path: c.path.clone(),
            line: line_of(src, key),
            field: format!("os.{key}"),
            message,
        };
        let os = &c.os;
        let timezone = os.timezone.clone().unwrap_or_else(|| "Etc/UTC".into());
        if !charset_ok(&timezone, "_+-/") || timezone.starts_with('/') || timezone.contains("..") {
            return Err(err(
                "timezone",
                format!("{timezone:?} is not a time zone name such as UTC or Europe/Berlin"),
            ));
        }
        for s in &os.ntp_servers {
            if !valid_host(s) {
                return Err(err("ntp-servers", format!("{s:?} is not a host name or IP address")));
            }
        }
        if let Some(h) = &os.root_password_hash {
            if !h.starts_with('$') || !charset_ok(h, "./$=") {
                return Err(err(
                    "root-password-hash",
                    "must be a crypt(3) hash ($6$…, $y$…): letters, digits, . / $ = only".into(),
                ));
            }
        }
        for k in &os.ssh_keys {
            let type_ok = ["ssh-", "ecdsa-", "sk-"].iter().any(|p| k.starts_with(p));
            let chars_ok = k.chars().all(|ch| (' '..='~').contains(&ch) && ch != '"' && ch != '\\');
            if !type_ok || !chars_ok || k.split_whitespace().count() < 2 {
                return Err(err(
                    "ssh-keys",
                    format!("{:?} is not one OpenSSH public key line (type, key, optional comment; no quotes or backslashes)", k.chars().take(40).collect::<String>()),
                ));
            }
        }
        if os.root_password_hash.is_none() && os.ssh_keys.is_empty() {
            return Err(err(
                "root-password-hash",
                "set root-password-hash or ssh-keys (or both): otherwise nobody can log in to the nodes".into(),
            ));
        }
        let mut dns = Vec::new();
        for d in &os.dns {
            dns.push(
                d.parse::<IpAddr>()
                    .map_err(|_| err("dns", format!("{d:?} is not an IP address")))?,
            );
        }
        let gateway = match &os.gateway {
            Some(g) => Some(
                g.parse::<IpAddr>()
                    .map_err(|_| err("gateway", format!("{g:?} is not an IP address")))?,
            ),
            None => None,
        };
        let prefix = os.prefix.ok_or_else(|| {
            err(
                "prefix",
                "kickstarts give each node a static address: set the prefix length of its network (prefix = 24)".into(),
            )
        })?;
        let interface = os.interface.clone().unwrap_or_else(|| "link".into());
        if interface.len() > 64 || !charset_ok(&interface, "_.:-") {
            return Err(err(
                "interface",
                format!("{interface:?} is not an interface name (ens192), MAC address or `link`"),
            ));
        }
        if let Some(d) = &os.disk {
            if !charset_ok(d, "/_.:-") || d.contains("..") {
                return Err(err(
                    "disk",
                    format!("{d:?} is not a disk name (sda, nvme0n1, /dev/disk/by-id/…)"),
                ));
            }
        }
        Ok(OsValues {
            timezone,
            ntp: os.ntp_servers.clone(),
            root_hash: os.root_password_hash.clone(),
            ssh_keys: os.ssh_keys.clone(),
            dns,
            gateway,
            prefix,
            interface,
            disk: os.disk.clone(),
        })
    }
}

fn netmask_v4(prefix: u8) -> String {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    std::net::Ipv4Addr::from(bits).to_string()
}

fn network_line(c: &Cluster, src: &str, os: &OsValues, node: &Node) -> Result<String, KickstartError> {
    let err = |key: &str, message: String| KickstartError::Config {
        path: c.path.clone(),
        line: line_of(src, key),
        field: format!("os.{key}"),
        message,
    };
    let mut l = format!("network --device={} --bootproto=static", os.interface);
    match node.address {
        IpAddr::V4(a) => {
            if os.prefix > 32 {
                return Err(err(
                    "prefix",
                    format!("{} is not an IPv4 prefix length (0-32) for {a}", os.prefix),
                ));
            }
            l += &format!(" --ip={a} --netmask={}", netmask_v4(os.prefix));
        }
        IpAddr::V6(a) => {
            if os.prefix > 128 {
                return Err(err(
                    "prefix",
                    format!("{} is not an IPv6 prefix length (0-128)", os.prefix),
                ));
            }
            l += &format!(" --noipv4 --ipv6={a}/{}", os.prefix);
        }
    }
    if let Some(g) = os.gateway {
        match (g, node.address) {
            (IpAddr::V4(_), IpAddr::V4(_)) => l += &format!(" --gateway={g}"),
            (IpAddr::V6(_), IpAddr::V6(_)) => l += &format!(" --ipv6gateway={g}"),
            _ => {
                return Err(err(
                    "gateway",
                    format!(
                        "gateway {g} and node {} address {} are not the same IP version",
                        node.name, node.address
                    ),
                ))
            }
        }
    }
    if !os.dns.is_empty() {
        let list: Vec<String> = os.dns.iter().map(|d| d.to_string()).collect();
        l += &format!(" --nameserver={}", list.join(","));
    }
    l += &format!(" --hostname={} --activate --onboot=on", node.name);
    Ok(l)
}

fn secrets(c: &Cluster, os: &OsValues) -> Vec<String> {
    let mut s = Vec::new();
    if os.root_hash.is_some() {
        s.push("root password hash (rootpw --iscrypted)".to_string());
    }
    let mut join = Vec::new();
    if c.join.token.is_some() {
        join.push("token");
    }
    if c.join.certificate_key.is_some() {
        join.push("certificate-key");
    }
    if !join.is_empty() {
        s.push(format!("[join] {} in the cluster.toml it installs", join.join(" and ")));
    }
    s
}

fn header(c: &Cluster, node: &Node, release: Release, b: &BundleRef, config: &Sha256, secrets: &[String]) -> String {
    let secret_line = if secrets.is_empty() {
        "none (no password hash; cluster.toml has no [join] token or certificate-key)".to_string()
    } else {
        format!(
            "{}. Keep this file (mode 0600) and the media private.",
            secrets.join("; ")
        )
    };
    [
        format!(
            "# kbundle kickstart: node {}, role {}, cluster {}, {}",
            node.name,
            node.role.as_str(),
            c.name,
            release.display_name()
        ),
        format!("{}{secret_line}", super::HDR_SECRETS),
        format!("{}{}", super::HDR_NODE, node.name),
        format!("{}{}", super::HDR_RELEASE, release.as_str()),
        format!("{}{} sha256:{}", super::HDR_BUNDLE, b.archive_name, b.archive_sha256),
        format!("{}{}", super::HDR_INSTALLER, b.installer_sha256),
        format!("{}{config}", super::HDR_CONFIG),
    ]
    .join("\n")
}

fn render_node(
    c: &Cluster,
    src: &str,
    os: &OsValues,
    node: &Node,
    release: Release,
    b: &BundleRef,
    config_sha256: &Sha256,
) -> Result<Rendered, KickstartError> {
    let secrets = secrets(c, os);
    let role = node.role.as_str().to_string();
    let common = |v: &mut Vec<(&'static str, String)>| {
        v.push(("node", node.name.clone()));
        v.push(("role", role.clone()));
        v.push(("archive", b.archive_name.clone()));
    };
    let mut unit_vars = Vec::new();
    common(&mut unit_vars);
    let unit = fill("kbundle-bootstrap.service", BOOTSTRAP_UNIT, &unit_vars)?;
    let mut post_vars = Vec::new();
    common(&mut post_vars);
    post_vars.push(("archive_sha256", b.archive_sha256.hex()));
    post_vars.push(("installer_sha256", b.installer_sha256.hex()));
    post_vars.push(("config_sha256", config_sha256.hex()));
    post_vars.push(("bootstrap_unit", unit.trim_end().to_string()));
    let post_nochroot = fill("post-nochroot.sh", POST_NOCHROOT, &post_vars)?;
    let post_install = fill("post-install.sh", POST_INSTALL, &post_vars)?;

    let disk = os.disk.as_deref();
    let opt = |flag: &str| disk.map(|d| format!(" --{flag}={d}")).unwrap_or_default();
    let mut v = Vec::new();
    common(&mut v);
    v.push(("header", header(c, node, release, b, config_sha256, &secrets)));
    v.push(("network", network_line(c, src, os, node)?));
    v.push(("timezone", os.timezone.clone()));
    v.push((
        "timesources",
        os.ntp
            .iter()
            .map(|s| format!("timesource --ntp-server={s}"))
            .collect::<Vec<_>>()
            .join("\n"),
    ));
    v.push((
        "rootpw",
        match &os.root_hash {
            Some(h) => format!("rootpw --iscrypted {h}"),
            None => "rootpw --lock".to_string(),
        },
    ));
    v.push((
        "sshkeys",
        os.ssh_keys
            .iter()
            .map(|k| format!("sshkey --username=root \"{k}\""))
            .collect::<Vec<_>>()
            .join("\n"),
    ));
    v.push((
        "firewall",
        match c.firewall {
            Firewall::Disabled => "firewall --disabled".to_string(),
            // open-ports: `kbundle install` opens the role's ports; unchanged: the release default.
            Firewall::OpenPorts | Firewall::Unchanged => "firewall --enabled --ssh".to_string(),
        },
    ));
    v.push((
        "storage_note",
        match disk {
            Some(d) => format!("erases disk {d} and installs there."),
            None => "erases EVERY disk the installer sees (set [os] disk to pick one).".to_string(),
        },
    ));
    v.push((
        "ignoredisk",
        disk.map(|d| format!("ignoredisk --only-use={d}")).unwrap_or_default(),
    ));
    v.push(("clearpart_drives", opt("drives")));
    v.push(("boot_drive", opt("boot-drive")));
    v.push(("ondisk", opt("ondisk")));
    v.push(("post_nochroot", post_nochroot.trim_end().to_string()));
    v.push(("post_install", post_install.trim_end().to_string()));
    let (name, template) = match release {
        Release::Rocky10 => ("rocky10.ks", ROCKY10),
        Release::Rocky9 => ("rocky9.ks", ROCKY9),
    };
    Ok(Rendered {
        node: node.name.clone(),
        release,
        file_name: format!("{}.ks", node.name),
        text: fill(name, template, &v)?,
        secrets,
    })
}

/// Fills `{{name}}` placeholders; a line that is only a placeholder with an empty value is
/// dropped.
pub(crate) fn fill(name: &'static str, template: &str, vars: &[(&str, String)]) -> Result<String, KickstartError> {
    let mut out = String::with_capacity(template.len() * 2);
    for line in template.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let mut rendered = String::new();
        let mut rest = body;
        let mut only_placeholder = None;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..].find("}}").ok_or_else(|| KickstartError::Template {
                template: name,
                message: format!("unclosed placeholder in line {body:?}"),
            })?;
            let key = &rest[start + 2..start + end];
            let value =
                vars.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v)
                    .ok_or_else(|| KickstartError::Template {
                        template: name,
                        message: format!("unknown placeholder {{{{{key}}}}}"),
                    })?;
            if body.trim() == format!("{{{{{key}}}}}") {
                only_placeholder = Some(value.is_empty());
            }
            rendered.push_str(&rest[..start]);
            rendered.push_str(value);
            rest = &rest[start + end + 2..];
        }
        rendered.push_str(rest);
        if only_placeholder == Some(true) {
            continue;
        }
        out.push_str(&rendered);
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_and_drops_empty_placeholder_lines() {
        let vars = vec![
            ("a", "x".to_string()),
            ("empty", String::new()),
            ("multi", "1\n2".to_string()),
        ];
        let got = fill("t", "A={{a}}\n{{empty}}\n  {{multi}}\nend {{empty}}.\n", &vars).unwrap();
        assert_eq!(got, "A=x\n  1\n2\nend .\n");
        assert!(fill("t", "{{nope}}\n", &vars).is_err());
        assert!(fill("t", "{{a\n", &vars).is_err());
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask_v4(24), "255.255.255.0");
        assert_eq!(netmask_v4(0), "0.0.0.0");
        assert_eq!(netmask_v4(32), "255.255.255.255");
        assert_eq!(netmask_v4(20), "255.255.240.0");
    }

    #[test]
    fn hosts() {
        assert!(valid_host("192.168.1.1") && valid_host("fd00::1") && valid_host("ntp.example.org"));
        assert!(!valid_host("a b") && !valid_host("x;reboot") && !valid_host("") && !valid_host("a..b"));
    }
}
