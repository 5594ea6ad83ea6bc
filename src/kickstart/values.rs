//! The `[os]` values of cluster.toml, checked once for all nodes before any of them reaches
//! a kickstart line or a shell script: host names, IP addresses, interface and disk names,
//! time zone, crypt(3) hash and SSH key lines, so nothing in cluster.toml can add a command
//! or an option. Errors name the file, the line and the field.

use super::KickstartError;
use crate::cluster::{Cluster, Os};
use std::net::IpAddr;

/// `[os]` values, checked once for all nodes.
pub(crate) struct OsValues {
    pub timezone: String,
    pub ntp: Vec<String>,
    pub root_hash: Option<String>,
    pub ssh_keys: Vec<String>,
    pub dns: Vec<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub prefix: u8,
    pub interface: String,
    pub disk: Option<String>,
}

/// Where an `[os]` field is written, for errors that point at it.
pub(crate) struct Site<'a> {
    pub cluster: &'a Cluster,
    /// The text of cluster.toml.
    pub src: &'a str,
}

impl Site<'_> {
    /// An error about `os.<key>`, at the line that sets it (or the `[os]` line).
    pub fn err(&self, key: &str, message: String) -> KickstartError {
        KickstartError::Config {
            path: self.cluster.path.clone(),
            line: line_of(self.src, key),
            field: format!("os.{key}"),
            message,
        }
    }
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

pub(crate) fn valid_host(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
        || (s.len() <= 253
            && s.split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && charset_ok(l, "-")))
}

fn timezone(site: &Site, os: &Os) -> Result<String, KickstartError> {
    let timezone = os.timezone.clone().unwrap_or_else(|| "Etc/UTC".into());
    if !charset_ok(&timezone, "_+-/") || timezone.starts_with('/') || timezone.contains("..") {
        return Err(site.err(
            "timezone",
            format!("{timezone:?} is not a time zone name such as UTC or Europe/Berlin"),
        ));
    }
    Ok(timezone)
}

fn ntp_servers(site: &Site, os: &Os) -> Result<Vec<String>, KickstartError> {
    match os.ntp_servers.iter().find(|s| !valid_host(s)) {
        Some(s) => Err(site.err("ntp-servers", format!("{s:?} is not a host name or IP address"))),
        None => Ok(os.ntp_servers.clone()),
    }
}

/// The root password hash and SSH keys: well-formed, and at least one of them.
fn login(site: &Site, os: &Os) -> Result<(Option<String>, Vec<String>), KickstartError> {
    if let Some(h) = &os.root_password_hash {
        if !h.starts_with('$') || !charset_ok(h, "./$=") {
            return Err(site.err(
                "root-password-hash",
                "must be a crypt(3) hash ($6$…, $y$…): letters, digits, . / $ = only".into(),
            ));
        }
    }
    for k in &os.ssh_keys {
        let type_ok = ["ssh-", "ecdsa-", "sk-"].iter().any(|p| k.starts_with(p));
        let chars_ok = k.chars().all(|ch| (' '..='~').contains(&ch) && ch != '"' && ch != '\\');
        if !type_ok || !chars_ok || k.split_whitespace().count() < 2 {
            return Err(site.err(
                "ssh-keys",
                format!(
                    "{:?} is not one OpenSSH public key line (type, key, optional comment; no quotes or backslashes)",
                    k.chars().take(40).collect::<String>()
                ),
            ));
        }
    }
    if os.root_password_hash.is_none() && os.ssh_keys.is_empty() {
        return Err(site.err(
            "root-password-hash",
            "set root-password-hash or ssh-keys (or both): otherwise nobody can log in to the nodes".into(),
        ));
    }
    Ok((os.root_password_hash.clone(), os.ssh_keys.clone()))
}

fn ip(site: &Site, key: &str, value: &str) -> Result<IpAddr, KickstartError> {
    value
        .parse::<IpAddr>()
        .map_err(|_| site.err(key, format!("{value:?} is not an IP address")))
}

/// DNS servers, gateway and prefix length of the nodes' network.
fn addressing(site: &Site, os: &Os) -> Result<(Vec<IpAddr>, Option<IpAddr>, u8), KickstartError> {
    let dns = os
        .dns
        .iter()
        .map(|d| ip(site, "dns", d))
        .collect::<Result<Vec<_>, _>>()?;
    let gateway = os.gateway.as_deref().map(|g| ip(site, "gateway", g)).transpose()?;
    let prefix = os.prefix.ok_or_else(|| {
        site.err(
            "prefix",
            "kickstarts give each node a static address: set the prefix length of its network (prefix = 24)".into(),
        )
    })?;
    Ok((dns, gateway, prefix))
}

fn interface(site: &Site, os: &Os) -> Result<String, KickstartError> {
    let interface = os.interface.clone().unwrap_or_else(|| "link".into());
    if interface.len() > 64 || !charset_ok(&interface, "_.:-") {
        return Err(site.err(
            "interface",
            format!("{interface:?} is not an interface name (ens192), MAC address or `link`"),
        ));
    }
    Ok(interface)
}

fn disk(site: &Site, os: &Os) -> Result<Option<String>, KickstartError> {
    if let Some(d) = &os.disk {
        if !charset_ok(d, "/_.:-") || d.contains("..") {
            return Err(site.err(
                "disk",
                format!("{d:?} is not a disk name (sda, nvme0n1, /dev/disk/by-id/…)"),
            ));
        }
    }
    Ok(os.disk.clone())
}

impl OsValues {
    pub fn check(site: &Site) -> Result<OsValues, KickstartError> {
        let os = &site.cluster.os;
        let timezone = timezone(site, os)?;
        let ntp = ntp_servers(site, os)?;
        let (root_hash, ssh_keys) = login(site, os)?;
        let (dns, gateway, prefix) = addressing(site, os)?;
        Ok(OsValues {
            timezone,
            ntp,
            root_hash,
            ssh_keys,
            dns,
            gateway,
            prefix,
            interface: interface(site, os)?,
            disk: disk(site, os)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(valid_host("192.168.1.1") && valid_host("fd00::1") && valid_host("ntp.example.org"));
        assert!(!valid_host("a b") && !valid_host("x;reboot") && !valid_host("") && !valid_host("a..b"));
    }
}
