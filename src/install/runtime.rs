//! containerd during `prepare`: read the shipped binary's version, and import the bundle's
//! images through a temporary containerd on a private socket (no systemd needed), leaving
//! no process behind.

use super::files;
use super::InstallError;
use crate::host::{argv_string, Host};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `(major, minor)` of the containerd at `bin`, by running it.
pub fn containerd_version(host: &Host, bin: &Path) -> Result<(u32, u32), InstallError> {
    let out = host.query(Command::new(bin).arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    files::parse_containerd_version(&text).ok_or_else(|| InstallError::Step {
        step: "containerd-config".into(),
        message: format!(
            "cannot read a version from `{} --version`: {:?}",
            bin.display(),
            text.trim()
        ),
    })
}

/// The record name of the temporary containerd (see [`Host::record_child`]).
const CHILD: &str = "import-containerd";
/// Longest unix socket path the kernel accepts is 107 bytes; stay well below.
const MAX_SOCKET_PATH: usize = 100;

/// A containerd child that is always stopped (and its mounts released) when dropped. It is
/// started under `setpriv --pdeathsig KILL`, so it also dies when kbundle is killed, and
/// its PID is recorded so the next run stops it should even that fail.
struct TempContainerd {
    child: Child,
    stopped: bool,
    /// Under the node's scratch dir (`/var/lib/kbundle/tmp`), removed by the next run if
    /// this one is killed.
    state: tempfile::TempDir,
    address: PathBuf,
    root: PathBuf,
    record: PathBuf,
    /// Mount points that existed before it started: never touched.
    mounts_before: Vec<String>,
}

fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl TempContainerd {
    fn start(host: &Host, containerd: &Path, major: u32, root: &Path) -> Result<TempContainerd, InstallError> {
        let scratch = host.path(crate::host::lock::SCRATCH)?;
        std::fs::create_dir_all(&scratch).map_err(|e| images_err(format!("creating {}: {e}", scratch.display())))?;
        let state = tempfile::Builder::new()
            .prefix("containerd-")
            .tempdir_in(&scratch)
            .map_err(|e| images_err(format!("temp dir in {}: {e}", scratch.display())))?;
        let address = socket_path(state.path());
        let config = state.path().join("config.toml");
        let text = files::import_config(
            major,
            &root.display().to_string(),
            &state.path().join("state").display().to_string(),
            &address.display().to_string(),
        );
        std::fs::write(&config, text).map_err(|e| images_err(format!("writing {}: {e}", config.display())))?;
        let log = std::fs::File::create(state.path().join("containerd.log")).map_err(|e| images_err(e.to_string()))?;
        let mounts_before = mount_points();
        let child = spawn_supervised(containerd, &config, log)?;
        let record = host.record_child(CHILD, child.id())?;
        Ok(TempContainerd {
            child,
            stopped: false,
            state,
            address,
            root: root.to_path_buf(),
            record,
            mounts_before,
        })
    }

    /// Waits until the socket answers (30 s at most).
    fn wait_ready(&mut self, ctr: &Path) -> Result<(), InstallError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.state.path().join("containerd.log")).unwrap_or_default();
                return Err(images_err(format!(
                    "temporary containerd exited ({status}): {}",
                    log.trim()
                )));
            }
            let up = dies_with_us(ctr)
                .arg("--address")
                .arg(&self.address)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if up.is_ok_and(|s| s.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.state.path().join("containerd.log")).unwrap_or_default();
                return Err(images_err(format!(
                    "temporary containerd did not answer on {} within 30 s: {}",
                    self.address.display(),
                    log.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        self.release_mounts();
        let _ = std::fs::remove_file(&self.record);
        if !self.address.starts_with(self.state.path()) {
            let _ = std::fs::remove_file(&self.address);
        }
        // Leave no scratch behind: the state dir, then the scratch dir if now empty.
        let _ = std::fs::remove_dir_all(self.state.path());
        if let Some(scratch) = self.state.path().parent() {
            let _ = std::fs::remove_dir(scratch);
        }
    }

    /// Releases what it mounted and left behind (shim leftovers): only new mounts strictly
    /// below its state dir or the containerd root, never the root itself (a dedicated
    /// /var/lib/containerd filesystem must stay mounted).
    fn release_mounts(&self) {
        let under = [self.state.path().to_path_buf(), self.root.clone()];
        let mut points: Vec<String> = mount_points()
            .into_iter()
            .filter(|p| !self.mounts_before.contains(p))
            .filter(|p| {
                under
                    .iter()
                    .any(|u| Path::new(p).starts_with(u) && Path::new(p) != u.as_path())
            })
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
}

impl Drop for TempContainerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn images_err(message: String) -> InstallError {
    InstallError::Step {
        step: "images".into(),
        message,
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

/// A command for `program` that dies with this process: `setpriv --pdeathsig KILL` (from
/// util-linux, on every Rocky node) sets the parent-death signal and execs the program, so
/// its PID is the program's own. Without setpriv the program is started directly (for the
/// temporary containerd, the PID record then still lets the next run stop it).
pub fn dies_with_us(program: &Path) -> Command {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    match setpriv {
        Some(sp) => {
            let mut c = Command::new(sp);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Starts the temporary containerd (see [`dies_with_us`]).
fn spawn_supervised(containerd: &Path, config: &Path, log: std::fs::File) -> Result<Child, InstallError> {
    let mut cmd = dies_with_us(containerd);
    cmd.arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let argv = argv_string(&cmd);
    cmd.spawn()
        .map_err(|e| images_err(format!("cannot start `{argv}`: {e}")))
}

/// Imports every image of the bundle's OCI layout into the node's containerd (`k8s.io`
/// namespace) and returns the image names containerd then lists.
pub fn import_images(
    host: &Host,
    containerd: &Path,
    ctr: &Path,
    major: u32,
    layout: &[(String, PathBuf)],
    expected: &[String],
) -> Result<Vec<String>, InstallError> {
    let root = host.path("/var/lib/containerd")?;
    if host.dry_run() {
        host.say(&format!(
            "start {} on a private socket (root {}), `ctr -n k8s.io images import` {} images ({} layout files), stop it",
            containerd.display(),
            root.display(),
            expected.len(),
            layout.len()
        ));
        return Ok(expected.to_vec());
    }
    // On a running node whose containerd is up, import through it: a second containerd must
    // never open the same root.
    let live_sock = Path::new("/run/containerd/containerd.sock");
    if host.is_running_system() && live_sock.exists() {
        let up = dies_with_us(ctr)
            .arg("--address")
            .arg(live_sock)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if up.is_ok_and(|s| s.success()) {
            return import_with(ctr, live_sock, layout, expected);
        }
    }
    std::fs::create_dir_all(&root).map_err(|e| images_err(format!("creating {}: {e}", root.display())))?;
    let mut tc = TempContainerd::start(host, containerd, major, &root)?;
    tc.wait_ready(ctr)?;
    let names = import_with(ctr, &tc.address.clone(), layout, expected);
    tc.stop();
    names
}

/// Streams a tar of the layout into `ctr images import -` on `address` and checks that
/// every expected name is then listed.
fn import_with(
    ctr: &Path,
    address: &Path,
    layout: &[(String, PathBuf)],
    expected: &[String],
) -> Result<Vec<String>, InstallError> {
    let step = |message: String| InstallError::Step {
        step: "images".into(),
        message,
    };
    let ctr_cmd = |args: &[&str]| {
        let mut c = dies_with_us(ctr);
        c.arg("--address").arg(address).args(args);
        c
    };
    // Stream a tar of the layout into `ctr images import -`.
    let mut import = ctr_cmd(&["-n", "k8s.io", "images", "import", "-"]);
    import
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let argv = argv_string(&import);
    let mut child = import.spawn().map_err(|e| step(format!("cannot run `{argv}`: {e}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| step("no stdin for ctr".into()))?;
    let members = layout.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut b = tar::Builder::new(&mut stdin);
        b.follow_symlinks(false);
        for (name, path) in &members {
            b.append_path_with_name(path, name)?;
        }
        b.into_inner()?.flush()
    });
    let out = child.wait_with_output().map_err(|e| step(format!("`{argv}`: {e}")))?;
    let wrote = writer.join().map_err(|_| step("tar writer panicked".into()))?;
    if !out.status.success() {
        return Err(step(format!(
            "`{argv}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    wrote.map_err(|e| step(format!("streaming the image layout to ctr: {e}")))?;
    let ls = ctr_cmd(&["-n", "k8s.io", "images", "ls", "-q"])
        .output()
        .map_err(|e| step(format!("ctr images ls: {e}")))?;
    let names: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = expected.iter().filter(|e| !names.contains(e)).collect();
    if !missing.is_empty() {
        return Err(step(format!("containerd does not list {:?} after the import", missing)));
    }
    Ok(names)
}
