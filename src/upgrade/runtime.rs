//! The container runtime per hop, on a drained node: containerd, runc, the CNI plugins and
//! crictl move to the bundle's versions (new version directories, links switched; see
//! [`crate::install::versions`]), `/etc/containerd/config.toml` is regenerated for the new
//! containerd major with the sandbox image pinned to the hop's pause, and containerd is
//! restarted and waited for. The versions (and config) before the switch are kept in
//! [`STATE`], so [`rollback`] can switch back. As kubespray's upgrade does: the container
//! engine role runs on a drained node before its kubelet, and containerd is restarted and
//! waited for with `ctr images ls -q` (docs/upstream-facts.md, "Upgrades: container runtime
//! and add-ons").

use crate::bundle::verified::VerifiedBundle;
use crate::host::{Host, HostError};
use crate::install::files::{self, ContainerdSettings};
use crate::install::versions::{self, Installed, Part, PARTS};
use crate::install::InstallError;
use crate::version::Version;
use std::process::Command;
use std::time::Duration;

/// Per hop: `hop vX` then `<component> <previous version>` lines, for [`rollback`].
pub const STATE: &str = "/var/lib/kbundle/state/rollback/runtime";
/// The containerd config as it was before the hop's rewrite.
pub const PREVIOUS_CONFIG: &str = "/var/lib/kbundle/state/rollback/containerd-config.toml";
const CONFIG: &str = "/etc/containerd/config.toml";
const SOCKET: &str = "/run/containerd/containerd.sock";
/// The version name given to plain (pre-version-directory) files kept for a rollback.
const PLAIN: &str = "previous";
/// How long containerd may take to answer after a restart (kubespray: 8 tries 4 s apart).
const READY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("the hop {hop} carries no registry.k8s.io/pause image to pin as containerd's sandbox")]
    NoPause { hop: String },
    #[error("containerd did not answer on {SOCKET} within {READY:?} after `systemctl restart containerd` (last: {last}); check `journalctl -u containerd`")]
    NotReady { last: String },
    #[error("cannot roll back {component} to {version}: {dir} is gone")]
    Gone {
        component: String,
        version: String,
        dir: String,
    },
}

/// One part moving to the bundle's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub part: Part,
    pub from: Installed,
    pub to: String,
}

/// This machine's platform (`linux/amd64`).
fn platform() -> Result<String, RuntimeError> {
    crate::manifest::Arch::host().map(|a| a.platform()).ok_or_else(|| {
        RuntimeError::Install(InstallError::step(
            "runtime",
            format!("unsupported machine {}", std::env::consts::ARCH),
        ))
    })
}

/// The parts whose installed version differs from the bundle's.
pub fn changes(host: &Host, bundle: &VerifiedBundle, platform: &str) -> Result<Vec<Change>, RuntimeError> {
    let mut out = Vec::new();
    for part in PARTS {
        let (_, to) = part.source(bundle, platform)?;
        let from = part.installed(host);
        if from != Installed::Version(to.clone()) {
            out.push(Change { part, from, to });
        }
    }
    Ok(out)
}

/// The hop's pause image (its `registry.k8s.io/pause:` reference).
pub fn hop_pause(bundle: &VerifiedBundle, hop: Version) -> Result<String, RuntimeError> {
    bundle
        .json()
        .hops
        .iter()
        .find(|h| h.kubernetes.version() == hop)
        .and_then(|h| h.images.iter().find(|r| r.starts_with("registry.k8s.io/pause:")))
        .cloned()
        .ok_or_else(|| RuntimeError::NoPause { hop: hop.with_v() })
}

/// The runtime step of `upgrade apply` for `hop`: returns whether containerd was
/// restarted.
pub fn upgrade(host: &Host, bundle: &VerifiedBundle, hop: Version) -> Result<bool, RuntimeError> {
    let platform = &platform()?;
    let pause = hop_pause(bundle, hop)?;
    let changes = changes(host, bundle, platform)?;
    if changes.is_empty() && !needs_config(host, bundle, platform, &pause)? {
        println!("    containerd, runc, CNI plugins and crictl are the bundle's; sandbox {pause}: nothing to do");
        return Ok(false);
    }
    let mut staged = Vec::new();
    for c in &changes {
        let (src, _) = c.part.source(bundle, platform)?;
        staged.push((c, c.part.put(host, &src, &c.to)?));
    }
    remember(host, &hop.with_v(), &staged)?;
    for (c, names) in &staged {
        c.part.link(host, &c.to, names)?;
        println!("    {} {} -> {}", c.part.component, shown(&c.from), c.to);
    }
    relabel(host, &changes)?;
    let config = config_for(host, bundle, platform, &pause)?;
    host.write(CONFIG, config.as_bytes(), 0o644)?;
    println!("    {CONFIG}: sandbox {pause}");
    restart(host)?;
    Ok(true)
}

/// Does the config differ from what the running links' containerd and `pause` call for?
fn needs_config(host: &Host, bundle: &VerifiedBundle, platform: &str, pause: &str) -> Result<bool, RuntimeError> {
    let want = config_for(host, bundle, platform, pause)?;
    Ok(host.read(CONFIG).as_deref() != Some(want.as_str()))
}

fn shown(i: &Installed) -> String {
    match i {
        Installed::Version(v) => v.clone(),
        Installed::Plain => "(plain files)".into(),
        Installed::Absent => "(none)".into(),
    }
}

/// The containerd config for the containerd the links now name, pinning `pause`.
fn config_for(host: &Host, bundle: &VerifiedBundle, platform: &str, pause: &str) -> Result<String, RuntimeError> {
    let major = if host.dry_run() {
        let (_, v) = versions::CONTAINERD.source(bundle, platform)?;
        v.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(2)
    } else {
        let bin = host.resolve("/usr/local/bin/containerd")?;
        crate::install::runtime::containerd_version(host, &bin)?.0
    };
    Ok(files::containerd_config(major, &ContainerdSettings::node(pause)))
}

/// Records, once per hop, what each changed part and the config were before: a resumed
/// step keeps what the first attempt recorded.
fn remember(host: &Host, hop: &str, staged: &[(&Change, Vec<String>)]) -> Result<(), RuntimeError> {
    let header = format!("hop {hop}");
    let old = host.read(STATE).filter(|s| s.lines().next() == Some(header.as_str()));
    let mut text = old.clone().unwrap_or_else(|| format!("{header}\n"));
    if old.is_none() {
        match host.read(CONFIG) {
            Some(cfg) => host.write(PREVIOUS_CONFIG, cfg.as_bytes(), 0o644).map(drop)?,
            None => host.remove(PREVIOUS_CONFIG)?,
        }
    }
    for (c, names) in staged {
        let known = text.lines().any(|l| l.split(' ').next() == Some(c.part.component));
        let previous = match &c.from {
            Installed::Version(v) => v.clone(),
            Installed::Plain => keep_plain(host, c.part, names)?,
            Installed::Absent => continue,
        };
        if !known {
            text.push_str(&format!("{} {previous}\n", c.part.component));
        }
    }
    host.write(STATE, text.as_bytes(), 0o644)?;
    Ok(())
}

/// Copies a part's plain files (installed before version directories) that the new
/// version replaces (`names`) into `<component>-previous/`, so a rollback has them.
fn keep_plain(host: &Host, part: Part, names: &[String]) -> Result<String, RuntimeError> {
    let dir = part.dir(PLAIN);
    for n in names {
        let link = format!("{}/{n}", part.link_dir);
        if host.read_link(&link).is_none() && host.is_file(&link) && !host.exists(&format!("{dir}/{n}")) {
            host.install_file(&host.path(&link)?, &format!("{dir}/{n}"), 0o755)?;
        }
    }
    Ok(PLAIN.into())
}

/// New version directories get their SELinux labels (the rules install added) on a live
/// node that has restorecon.
fn relabel(host: &Host, changes: &[Change]) -> Result<(), RuntimeError> {
    if changes.is_empty() || !host.is_running_system() || !host.is_file("/usr/sbin/restorecon") {
        return Ok(());
    }
    let dirs: Vec<String> = changes.iter().map(|c| c.part.dir(&c.to)).collect();
    host.run(Command::new("restorecon").arg("-R").args(&dirs))?;
    Ok(())
}

/// `systemctl restart containerd`, then (on the running system) waits until it answers
/// `ctr images ls -q`, as kubespray's handler does.
fn restart(host: &Host) -> Result<(), RuntimeError> {
    host.run(Command::new("systemctl").args(["restart", "containerd"]))?;
    if !host.is_running_system() || host.dry_run() {
        println!("    not the running system: containerd is not waited for");
        return Ok(());
    }
    let ctr = host.resolve("/usr/local/bin/ctr")?;
    let sock = host.path(SOCKET)?;
    let mut last = String::new();
    let ok = host.poll(READY, Duration::from_secs(2), || {
        let mut c = Command::new(&ctr);
        c.arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "images", "ls", "-q"]);
        match host.query(&mut c) {
            Ok(_) => Some(()),
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    });
    ok.ok_or(RuntimeError::NotReady { last })?;
    println!("    containerd answers again");
    Ok(())
}

/// For `upgrade rollback`: switches every part recorded in [`STATE`] back to its previous
/// version directory, restores the previous containerd config, restarts containerd, and
/// forgets the record. Returns what it did (`containerd -> 1.7.27`); nothing recorded, or
/// recorded by another hop than `hop` (when given): nothing done, so rolling back a later
/// hop that left the runtime alone does not undo an earlier hop's runtime move.
pub fn rollback(host: &Host, hop: Option<Version>) -> Result<Vec<String>, RuntimeError> {
    let Some(state) = host.read(STATE) else {
        return Ok(Vec::new());
    };
    if let Some(h) = hop {
        if state.lines().next() != Some(format!("hop {}", h.with_v()).as_str()) {
            return Ok(Vec::new());
        }
    }
    let mut done = Vec::new();
    for line in state.lines().skip(1) {
        let Some((component, version)) = line.split_once(' ') else {
            continue;
        };
        let Some(part) = PARTS.iter().find(|p| p.component == component) else {
            continue;
        };
        let dir = part.dir(version);
        if !host.is_dir(&dir) {
            return Err(RuntimeError::Gone {
                component: component.into(),
                version: version.into(),
                dir,
            });
        }
        let names: Vec<String> = host
            .list(&dir)
            .into_iter()
            .filter(|n| !n.starts_with(crate::host::TEMP_PREFIX))
            .collect();
        part.link(host, version, &names)?;
        done.push(format!("{component} -> {version}"));
    }
    if let Some(cfg) = host.read(PREVIOUS_CONFIG) {
        if host.read(CONFIG).as_deref() != Some(cfg.as_str()) {
            host.write(CONFIG, cfg.as_bytes(), 0o644)?;
            done.push(format!("{CONFIG} restored"));
        }
    }
    if !done.is_empty() {
        restart(host)?;
    }
    host.remove(STATE)?;
    host.remove(PREVIOUS_CONFIG)?;
    Ok(done)
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
