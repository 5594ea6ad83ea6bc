//! Rendering: the templates in `kickstart/` (embedded with `include_str!`), filled from the
//! cluster config, one node and the bundle. Values are checked before they reach a
//! kickstart line or a shell script, so nothing in cluster.toml can inject a command.
//!
//! Template syntax: `{{name}}` is replaced by its value; a line holding only a placeholder
//! whose value is empty is dropped. An unknown placeholder is an error.

use super::values::{OsValues, Site};
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
    let os = OsValues::check(&Site { cluster, src: &src })?;
    let config_sha256 = Sha256::of(config_bytes);
    nodes
        .into_iter()
        .map(|node| {
            render_node(&NodeInput {
                site: Site { cluster, src: &src },
                os: &os,
                node,
                release,
                bundle,
                config_sha256: &config_sha256,
            })
        })
        .collect()
}

fn netmask_v4(prefix: u8) -> String {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    std::net::Ipv4Addr::from(bits).to_string()
}

/// `--ip --netmask` or `--noipv4 --ipv6`, for the node's address family.
fn address_opts(site: &Site, os: &OsValues, node: &Node) -> Result<String, KickstartError> {
    match node.address {
        IpAddr::V4(a) if os.prefix > 32 => Err(site.err(
            "prefix",
            format!("{} is not an IPv4 prefix length (0-32) for {a}", os.prefix),
        )),
        IpAddr::V4(a) => Ok(format!(" --ip={a} --netmask={}", netmask_v4(os.prefix))),
        IpAddr::V6(_) if os.prefix > 128 => {
            Err(site.err("prefix", format!("{} is not an IPv6 prefix length (0-128)", os.prefix)))
        }
        IpAddr::V6(a) => Ok(format!(" --noipv4 --ipv6={a}/{}", os.prefix)),
    }
}

/// `--gateway` or `--ipv6gateway`: the same IP version as the node's address.
fn gateway_opt(site: &Site, os: &OsValues, node: &Node) -> Result<String, KickstartError> {
    match (os.gateway, node.address) {
        (None, _) => Ok(String::new()),
        (Some(g @ IpAddr::V4(_)), IpAddr::V4(_)) => Ok(format!(" --gateway={g}")),
        (Some(g @ IpAddr::V6(_)), IpAddr::V6(_)) => Ok(format!(" --ipv6gateway={g}")),
        (Some(g), _) => Err(site.err(
            "gateway",
            format!(
                "gateway {g} and node {} address {} are not the same IP version",
                node.name, node.address
            ),
        )),
    }
}

fn network_line(site: &Site, os: &OsValues, node: &Node) -> Result<String, KickstartError> {
    let mut l = format!("network --device={} --bootproto=static", os.interface);
    l += &address_opts(site, os, node)?;
    l += &gateway_opt(site, os, node)?;
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

/// Template variables: name and value.
type Vars = Vec<(&'static str, String)>;

/// What one node's kickstart is rendered from.
struct NodeInput<'a> {
    site: Site<'a>,
    os: &'a OsValues,
    node: &'a Node,
    release: Release,
    bundle: &'a BundleRef,
    config_sha256: &'a Sha256,
}

/// The variables every template gets.
fn common_vars(n: &NodeInput) -> Vars {
    vec![
        ("node", n.node.name.to_string()),
        ("role", n.node.role.as_str().to_string()),
        ("archive", n.bundle.archive_name.clone()),
    ]
}

/// The `%post --nochroot` and `%post` bodies (the latter writes the bootstrap unit).
fn post_scripts(n: &NodeInput) -> Result<(String, String), KickstartError> {
    let unit = fill("kbundle-bootstrap.service", BOOTSTRAP_UNIT, &common_vars(n))?;
    let mut vars = common_vars(n);
    vars.push(("archive_sha256", n.bundle.archive_sha256.hex()));
    vars.push(("installer_sha256", n.bundle.installer_sha256.hex()));
    vars.push(("config_sha256", n.config_sha256.hex()));
    vars.push(("bootstrap_unit", unit.trim_end().to_string()));
    vars.push(("trusted_keys", trusted_keys(&n.bundle.trusted_keys)));
    let nochroot = fill("post-nochroot.sh", POST_NOCHROOT, &vars)?;
    let install = fill("post-install.sh", POST_INSTALL, &vars)?;
    Ok((nochroot.trim_end().to_string(), install.trim_end().to_string()))
}

/// Shell lines writing each key into the node's trust store (empty: none), as minisign's
/// two-line public key file (docs/upstream-facts.md, minisign public key files). Ids are hex and
/// keys base64 (both checked by `kbundle key`'s parser), so single quotes hold them.
fn trusted_keys(keys: &[super::KeyLine]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    let mut l = vec![
        "# `kbundle kickstart --trusted-key`: install requires a bundle signed by one of these.".to_string(),
        format!("mkdir -p {}", crate::trust::KEYS_DIR),
    ];
    for k in keys {
        l.push(format!(
            "printf 'untrusted comment: minisign public key %s\\n%s\\n' '{}' '{}' > {}/{}.pub",
            k.id,
            k.base64,
            crate::trust::KEYS_DIR,
            k.id
        ));
    }
    l.join("\n")
}

fn lines<T>(items: &[T], line: impl Fn(&T) -> String) -> String {
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// Time, login and firewall.
fn system_vars(n: &NodeInput) -> Vars {
    let os = n.os;
    vec![
        ("timezone", os.timezone.clone()),
        (
            "timesources",
            lines(&os.ntp, |s| format!("timesource --ntp-server={s}")),
        ),
        (
            "rootpw",
            match &os.root_hash {
                Some(h) => format!("rootpw --iscrypted {h}"),
                None => "rootpw --lock".to_string(),
            },
        ),
        (
            "sshkeys",
            lines(&os.ssh_keys, |k| format!("sshkey --username=root \"{k}\"")),
        ),
        (
            "firewall",
            match n.site.cluster.firewall {
                Firewall::Disabled => "firewall --disabled".to_string(),
                // open-ports: `kbundle install` opens the role's ports; unchanged: the release default.
                Firewall::OpenPorts | Firewall::Unchanged => "firewall --enabled --ssh".to_string(),
            },
        ),
    ]
}

/// Which disks are erased and used: every disk, or only `[os] disk`.
fn storage_vars(disk: Option<&str>) -> Vars {
    let opt = |flag: &str| disk.map(|d| format!(" --{flag}={d}")).unwrap_or_default();
    vec![
        (
            "storage_note",
            match disk {
                Some(d) => format!("erases disk {d} and installs there."),
                None => "erases EVERY disk the installer sees (set [os] disk to pick one).".to_string(),
            },
        ),
        (
            "ignoredisk",
            disk.map(|d| format!("ignoredisk --only-use={d}")).unwrap_or_default(),
        ),
        ("clearpart_drives", opt("drives")),
        ("boot_drive", opt("boot-drive")),
        ("ondisk", opt("ondisk")),
    ]
}

fn render_node(n: &NodeInput) -> Result<Rendered, KickstartError> {
    let secrets = secrets(n.site.cluster, n.os);
    let (post_nochroot, post_install) = post_scripts(n)?;
    let mut v = common_vars(n);
    v.push((
        "header",
        header(n.site.cluster, n.node, n.release, n.bundle, n.config_sha256, &secrets),
    ));
    v.push(("network", network_line(&n.site, n.os, n.node)?));
    v.extend(system_vars(n));
    v.extend(storage_vars(n.os.disk.as_deref()));
    v.push(("post_nochroot", post_nochroot));
    v.push(("post_install", post_install));
    let (name, template) = match n.release {
        Release::Rocky10 => ("rocky10.ks", ROCKY10),
        Release::Rocky9 => ("rocky9.ks", ROCKY9),
    };
    Ok(Rendered {
        node: n.node.name.to_string(),
        release: n.release,
        file_name: format!("{}.ks", n.node.name),
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
        let Some(rendered) = fill_line(name, body, vars)? else {
            continue;
        };
        out.push_str(&rendered);
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// One template line filled in; `None` when it is only a placeholder with an empty value.
fn fill_line(name: &'static str, body: &str, vars: &[(&str, String)]) -> Result<Option<String>, KickstartError> {
    let template_err = |message: String| KickstartError::Template {
        template: name,
        message,
    };
    let mut rendered = String::new();
    let mut rest = body;
    let mut only_placeholder = None;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| template_err(format!("unclosed placeholder in line {body:?}")))?;
        let key = &rest[start + 2..start + end];
        let value = vars
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| template_err(format!("unknown placeholder {{{{{key}}}}}")))?;
        if body.trim() == format!("{{{{{key}}}}}") {
            only_placeholder = Some(value.is_empty());
        }
        rendered.push_str(&rest[..start]);
        rendered.push_str(value);
        rest = &rest[start + end + 2..];
    }
    rendered.push_str(rest);
    Ok((only_placeholder != Some(true)).then_some(rendered))
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
}
