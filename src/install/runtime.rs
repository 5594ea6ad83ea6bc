//! containerd during `prepare`: read the shipped binary's version, and import the bundle's
//! images through a temporary containerd on a private socket (no systemd needed), leaving
//! no process behind. Every process goes through the node seam.

use super::files;
use super::InstallError;
use crate::host::lock::SCRATCH;
use crate::host::sys::{Proc, Stdin};
use crate::host::{Host, HostError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The record name of the temporary containerd (see [`Host::record_child`]).
const CHILD: &str = "import-containerd";
/// Longest unix socket path the kernel accepts is 107 bytes; stay well below.
const MAX_SOCKET_PATH: usize = 100;

fn images_err(message: String) -> InstallError {
    InstallError::step("images", message)
}

/// `(major, minor)` of the containerd at `bin`, by running it.
pub fn containerd_version(host: &Host, bin: &Path) -> Result<(u32, u32), InstallError> {
    let out = host.query(Command::new(bin).arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    files::parse_containerd_version(&text).ok_or_else(|| {
        InstallError::step(
            "containerd-config",
            format!(
                "cannot read a version from `{} --version`: {:?}",
                bin.display(),
                text.trim()
            ),
        )
    })
}

/// A command for `program` that dies with this process: `setpriv --pdeathsig KILL` (from
/// util-linux, on every Rocky node) sets the parent-death signal and execs the program, so
/// its PID is the program's own. Without setpriv the program is started directly (for the
/// temporary containerd, the PID record then still lets the next run stop it).
pub fn dies_with_us(host: &Host, program: &Path) -> Command {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(Path::new)
        .find(|p| host.sys().meta(p).is_ok_and(|m| m.is_file));
    match setpriv {
        Some(sp) => {
            let mut c = Command::new(sp);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A containerd child that is always stopped (and its mounts released) when dropped. It is
/// started under `setpriv --pdeathsig KILL`, so it also dies when kbundle is killed, and
/// its PID is recorded so the next run stops it should even that fail.
struct TempContainerd<'h> {
    host: &'h Host,
    child: Box<dyn Proc>,
    stopped: bool,
    /// Node path of its state dir under the scratch dir (removed by the next run if this
    /// one is killed).
    state: String,
    address: PathBuf,
    root: PathBuf,
    record: String,
    /// Mount points that existed before it started: never touched.
    mounts_before: Vec<String>,
}

impl<'h> TempContainerd<'h> {
    fn start(host: &'h Host, containerd: &Path, major: u32, root: &Path) -> Result<Self, InstallError> {
        host.mkdir(SCRATCH)?;
        let scratch = host.path(SCRATCH)?;
        let dir = host
            .sys()
            .temp_dir(&scratch, "containerd-")
            .map_err(|source| HostError::Io {
                action: "cannot make a temporary directory in",
                path: scratch.clone(),
                source,
            })?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let state = format!("{SCRATCH}/{name}");
        let address = socket_path(&dir);
        let text = files::import_config(
            major,
            &root.display().to_string(),
            &dir.join("state").display().to_string(),
            &address.display().to_string(),
        );
        host.write(&format!("{state}/config.toml"), text.as_bytes(), 0o644)?;
        let mounts_before = host.mount_points();
        let mut cmd = dies_with_us(host, containerd);
        cmd.arg("--config").arg(dir.join("config.toml"));
        let child = host.spawn(&mut cmd, &dir.join("containerd.log"))?;
        let record = host.record_child(CHILD, child.id())?;
        Ok(TempContainerd {
            host,
            child,
            stopped: false,
            state,
            address,
            root: root.to_path_buf(),
            record,
            mounts_before,
        })
    }

    fn log(&self) -> String {
        self.host
            .read(&format!("{}/containerd.log", self.state))
            .unwrap_or_default()
    }

    /// Waits until the socket answers (30 s at most).
    fn wait_ready(&mut self, ctr: &Path) -> Result<(), InstallError> {
        let deadline = self.host.now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(images_err(format!(
                    "temporary containerd exited ({status}): {}",
                    self.log().trim()
                )));
            }
            let mut probe = ctr_cmd(self.host, ctr, &self.address, &["version"]);
            if self
                .host
                .exec(&mut probe, Stdin::Null, None)
                .is_ok_and(|r| r.status.success())
            {
                return Ok(());
            }
            if self.host.now() > deadline {
                return Err(images_err(format!(
                    "temporary containerd did not answer on {} within 30 s: {}",
                    self.address.display(),
                    self.log().trim()
                )));
            }
            self.host.sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut term = Command::new("kill");
        term.arg("-TERM").arg(self.child.id().to_string());
        let _ = self.host.exec(&mut term, Stdin::Null, None);
        let exited = self.host.poll(Duration::from_secs(15), Duration::from_millis(50), || {
            self.child.try_wait().ok().flatten()
        });
        if exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.release_mounts();
        let _ = self.host.remove(&self.record);
        let _ = self.host.remove_outside(&self.address);
        // Leave no scratch behind: the state dir, then the scratch dir if now empty.
        let _ = self.host.remove(&self.state);
        if self.host.list(SCRATCH).is_empty() {
            let _ = self.host.remove(SCRATCH);
        }
    }

    /// Releases what it mounted and left behind (shim leftovers): only new mounts strictly
    /// below its state dir or the containerd root, never the root itself (a dedicated
    /// /var/lib/containerd filesystem must stay mounted).
    fn release_mounts(&self) {
        if let Ok(state) = self.host.path(&self.state) {
            self.host.release_mounts_below(&state, &self.mounts_before);
        }
        self.host.release_mounts_below(&self.root, &self.mounts_before);
    }
}

impl Drop for TempContainerd<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The socket in the state dir when that path is short enough for a unix socket, else
/// in the system temp dir under this process's id.
fn socket_path(state: &Path) -> PathBuf {
    let p = state.join("containerd.sock");
    if p.as_os_str().len() <= MAX_SOCKET_PATH {
        p
    } else {
        std::env::temp_dir().join(format!("kbundle-containerd-{}.sock", std::process::id()))
    }
}

fn ctr_cmd(host: &Host, ctr: &Path, address: &Path, args: &[&str]) -> Command {
    let mut c = dies_with_us(host, ctr);
    c.arg("--address").arg(address).args(args);
    c
}

/// Is a containerd answering on `sock`?
fn answers(host: &Host, ctr: &Path, sock: &Path) -> bool {
    let mut probe = ctr_cmd(host, ctr, sock, &["version"]);
    host.exec(&mut probe, Stdin::Null, None)
        .is_ok_and(|r| r.status.success())
}

/// Imports every image of the bundle's OCI layout into the node's containerd (`k8s.io`
/// namespace), checks that every `expected` name is then listed, pins every `pin` name
/// (see [`PINNED_LABEL`]) and returns the image names containerd lists.
pub fn import_images(
    host: &Host,
    containerd: &Path,
    ctr: &Path,
    major: u32,
    layout: &[(String, PathBuf)],
    expected: &[String],
    pin: &[String],
) -> Result<Vec<String>, InstallError> {
    if host.dry_run() {
        host.say(&format!(
            "start {} on a private socket (root /var/lib/containerd), `ctr -n k8s.io images import` {} images ({} layout files), label {} of them {PINNED_LABEL}, stop it",
            containerd.display(),
            expected.len(),
            layout.len(),
            pin.len()
        ));
        return Ok(expected.to_vec());
    }
    // On a running node whose containerd is up, import through it: a second containerd must
    // never open the same root.
    let live_sock = host.path("/run/containerd/containerd.sock")?;
    if host.is_running_system() && host.exists("/run/containerd/containerd.sock") && answers(host, ctr, &live_sock) {
        return import_with(host, ctr, &live_sock, layout, expected, pin);
    }
    host.mkdir("/var/lib/containerd")?;
    let root = host.path("/var/lib/containerd")?;
    let mut tc = TempContainerd::start(host, containerd, major, &root)?;
    tc.wait_ready(ctr)?;
    let names = import_with(host, ctr, &tc.address.clone(), layout, expected, pin);
    tc.stop();
    names
}

/// Streams a tar of the layout into `ctr images import -` on `address`, checks that
/// every expected name is then listed, and pins the `pin` names.
fn import_with(
    host: &Host,
    ctr: &Path,
    address: &Path,
    layout: &[(String, PathBuf)],
    expected: &[String],
    pin: &[String],
) -> Result<Vec<String>, InstallError> {
    let mut import = ctr_cmd(host, ctr, address, &["-n", "k8s.io", "images", "import", "-"]);
    let members = layout.to_vec();
    let tar_stream = Stdin::Stream(Box::new(move |w: &mut dyn Write| {
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        for (name, path) in &members {
            // Without the cosign signature entries (images::layout::importable_index).
            if name == "index.json" {
                let index = crate::images::layout::importable_index(&std::fs::read(path)?);
                let mut h = tar::Header::new_gnu();
                h.set_size(index.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, name, index.as_slice())?;
            } else {
                b.append_path_with_name(path, name)?;
            }
        }
        b.into_inner()?.flush()
    }));
    host.query_with(&mut import, tar_stream)?;
    let mut ls = ctr_cmd(host, ctr, address, &["-n", "k8s.io", "images", "ls", "-q"]);
    let out = host.query(&mut ls)?;
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = expected.iter().filter(|e| !names.contains(e)).collect();
    if !missing.is_empty() {
        return Err(images_err(format!(
            "containerd does not list {missing:?} after the import"
        )));
    }
    pin_images(host, ctr, address, pin)?;
    Ok(names)
}

/// containerd's CRI label that marks an image as pinned: the CRI reports such an image as
/// `pinned`, and kubelet's image garbage collection never removes a pinned image.
/// In the air gap a removed image can never be pulled again. (docs/upstream-facts.md,
/// "containerd image pinning": the label's key and value, the CRI versions that honour
/// it, kubelet's image GC skipping pinned images.)
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned=pinned";

/// Labels every `refs` image [`PINNED_LABEL`], one `ctr images label` each. `ctr images
/// import` has no label flag in the containerd 1.6/1.7 `ctr`, and containerd 2.x's import
/// replaces the whole record (labels included) of an image that already exists
/// (upstream-facts, "containerd image pinning"), so the label is set again after every
/// import, also when a re-run or an upgrade imports images that are already there.
/// Labels are never removed: images of older Kubernetes versions stay pinned after an
/// upgrade, as a rollback to them needs them and they cannot be pulled again.
fn pin_images(host: &Host, ctr: &Path, address: &Path, refs: &[String]) -> Result<(), InstallError> {
    for r in refs {
        let mut label = ctr_cmd(
            host,
            ctr,
            address,
            &["-n", "k8s.io", "images", "label", r, PINNED_LABEL],
        );
        host.run(&mut label)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
