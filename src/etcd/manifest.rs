//! Pointing kubeadm's etcd static pod at a restored data directory.
//!
//! kubeadm's `etcd.yaml` names the data directory three times, and all three must change
//! together:
//!
//! ```yaml
//!   containers:
//!   - command:
//!     - etcd
//!     - --data-dir=/var/lib/etcd          # 1. where etcd looks, inside the container
//!     volumeMounts:
//!     - mountPath: /var/lib/etcd          # 2. where the host directory appears in it
//!       name: etcd-data
//!   volumes:
//!   - hostPath:
//!       path: /var/lib/etcd               # 3. the host directory
//!       type: DirectoryOrCreate
//!     name: etcd-data
//! ```
//!
//! Changing only 1 and 3 would make etcd look at a container directory nothing is mounted
//! on, and start a new, empty cluster there. [`rewrite_data_dir`] ([`super::yaml`]) edits
//! exactly those three values through a lossless YAML tree, keeping every other byte.
//!
//! [`apply`] then does the manual procedure on the node: (1) move `kube-apiserver.yaml`
//! out of the manifests directory (kubelet stops the API server), (2) back up `etcd.yaml`
//! to `/etc/kubernetes/etcd.yaml.kbundle-backup` and replace it atomically, (3) move
//! `kube-apiserver.yaml` back. A failing step undoes the earlier ones, and the error says
//! what state each file is in.

pub use super::yaml::{
    check_node_dir, command_flags, rewrite_data_dir, ChangedLine, ManifestError, NodeDirError, Rewrite,
};
use super::{parent_dir, EtcdError, Level, Notes};
use crate::host::sys::Sys;
use crate::host::Host;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// kubeadm's files on a node, under `root`.
#[derive(Debug, Clone)]
pub struct NodePaths {
    pub root: PathBuf,
}

impl NodePaths {
    pub fn new(root: &Path) -> Self {
        NodePaths {
            root: root.to_path_buf(),
        }
    }
    pub fn kubernetes_dir(&self) -> PathBuf {
        super::fixed_under_root(&self.root, "/etc/kubernetes")
    }
    pub fn manifests_dir(&self) -> PathBuf {
        self.kubernetes_dir().join("manifests")
    }
    pub fn etcd_manifest(&self) -> PathBuf {
        self.manifests_dir().join("etcd.yaml")
    }
    pub fn apiserver_manifest(&self) -> PathBuf {
        self.manifests_dir().join("kube-apiserver.yaml")
    }
    /// Outside the manifests directory: kubelet runs every file in there, whatever its name.
    pub fn apiserver_stopped(&self) -> PathBuf {
        self.kubernetes_dir().join("kube-apiserver.yaml.kbundle-stopped")
    }
    pub fn etcd_backup(&self) -> PathBuf {
        self.kubernetes_dir().join("etcd.yaml.kbundle-backup")
    }
}

/// Everything [`apply`] needs, checked before anything on the node changes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub paths: NodePaths,
    /// etcd.yaml as read.
    pub original: String,
    pub mode: u32,
    pub rewrite: Rewrite,
    pub flags: Vec<(String, String)>,
}

impl Plan {
    /// The value of `--flag=` in etcd.yaml's command.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn bad(path: &Path, source: ManifestError) -> EtcdError {
    EtcdError::Manifest {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and checks the node's manifests for pointing etcd at `new_dir` (a node path),
/// through the node seam.
pub fn plan(host: &Host, new_dir: &str) -> Result<Plan, EtcdError> {
    let sys = host.sys();
    let paths = NodePaths::new(host.root());
    let etcd = paths.etcd_manifest();
    let read = || EtcdError::io("cannot read kubeadm's etcd manifest", &etcd);
    let meta = sys.stat(&etcd).map_err(read())?;
    let bytes = sys.read(&etcd).map_err(read())?;
    let original = String::from_utf8(bytes).map_err(|_| bad(&etcd, ManifestError::NotUtf8))?;
    let rewrite = rewrite_data_dir(&original, new_dir).map_err(|r| bad(&etcd, r))?;
    let flags = command_flags(&original).map_err(|r| bad(&etcd, r))?;
    check_apiserver(sys, &paths)?;
    Ok(Plan {
        paths,
        original,
        mode: meta.mode,
        rewrite,
        flags,
    })
}

/// The API server manifest is in place, and no earlier run left it moved away.
fn check_apiserver(sys: &dyn Sys, paths: &NodePaths) -> Result<(), EtcdError> {
    let api = paths.apiserver_manifest();
    let stopped = paths.apiserver_stopped();
    if sys.meta(&stopped).is_ok() {
        return Err(bad(&stopped, ManifestError::LeftOver { api }));
    }
    if !sys.meta(&api).is_ok_and(|m| m.is_file) {
        return Err(bad(&api, ManifestError::NoApiserver));
    }
    Ok(())
}

/// How [`apply`] runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Wait this long for the kube-apiserver process to exit after step 1 (`None`: don't
    /// look; for a `--root` other than `/`).
    pub wait_for_apiserver: Option<Duration>,
    /// The restored directory, for the state report on failure.
    pub restored_dir: PathBuf,
}

/// The points where [`apply_with`] may be made to fail in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    StopApiserver,
    WriteBackup,
    WriteEtcdManifest,
    StartApiserver,
}

/// Called before each change of [`apply_with`]; an error fails that step.
pub type Hook<'a> = dyn FnMut(Step) -> io::Result<()> + 'a;

/// Why a step of [`apply`] failed (the cause in [`EtcdError::UpdateManifest`]).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// `what` is empty, or names the file (`the older backup `).
    #[error("cannot move {what}{} to {}: {source}", .from.display(), .to.display())]
    Move {
        what: &'static str,
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} changed while kbundle was restoring; not overwriting that edit", .0.display())]
    ChangedMeanwhile(PathBuf),
    #[error(
        "{comm} (pid {pids:?}) still runs {secs}s after its manifest was moved away; is kubelet \
         running?"
    )]
    StillRunning { comm: String, pids: Vec<u32>, secs: u64 },
}

impl StepError {
    fn moving(what: &'static str, from: &Path, to: &Path) -> impl FnOnce(io::Error) -> StepError {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        move |source| StepError::Move { what, from, to, source }
    }

    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StepError {
        let path = path.to_path_buf();
        move |source| StepError::Io { action, path, source }
    }
}

/// Runs the three steps (see the module docs) through the node seam.
pub fn apply(host: &Host, plan: &Plan, opts: &ApplyOptions, notes: Notes) -> Result<(), EtcdError> {
    apply_with(host, plan, opts, notes, &mut |_| Ok(()))
}

/// [`apply`] with `hook` called before each change; an error from it fails that step.
pub fn apply_with(
    host: &Host,
    plan: &Plan,
    opts: &ApplyOptions,
    notes: Notes,
    hook: &mut Hook,
) -> Result<(), EtcdError> {
    let run = Run::new(host, plan, opts);
    run.stop_apiserver(notes, hook)?;
    run.point_etcd(notes, hook)?;
    run.start_apiserver(notes, hook)
}

/// One [`apply`]: the plan and the files it moves.
struct Run<'a> {
    host: &'a Host,
    plan: &'a Plan,
    opts: &'a ApplyOptions,
    api: PathBuf,
    stopped: PathBuf,
    etcd: PathBuf,
    backup: PathBuf,
}

impl<'a> Run<'a> {
    fn new(host: &'a Host, plan: &'a Plan, opts: &'a ApplyOptions) -> Self {
        let p = &plan.paths;
        Run {
            host,
            plan,
            opts,
            api: p.apiserver_manifest(),
            stopped: p.apiserver_stopped(),
            etcd: p.etcd_manifest(),
            backup: p.etcd_backup(),
        }
    }

    fn sys(&self) -> &dyn Sys {
        self.host.sys()
    }

    fn sync(&self) {
        let _ = self.sys().sync(&self.plan.paths.manifests_dir());
        let _ = self.sys().sync(&self.plan.paths.kubernetes_dir());
    }

    /// The error for a failed `step`, with the state of each file after the undo.
    fn fail(&self, step: u8, what: &'static str, cause: StepError, api: String, etcd: String) -> EtcdError {
        let restored = format!(
            "- restored data: {} (not used by etcd; remove it before retrying with the same --data-dir)",
            self.opts.restored_dir.display()
        );
        EtcdError::UpdateManifest {
            step,
            what,
            cause,
            state: [api, etcd, restored].join("\n"),
        }
    }

    fn api_running(&self) -> String {
        format!("- {}: in place (API server running)", self.api.display())
    }

    fn etcd_unchanged(&self) -> String {
        let old = &self.plan.rewrite.old_data_dir;
        format!("- {}: unchanged (--data-dir={old})", self.etcd.display())
    }

    fn api_moved_away(&self, why: &str) -> String {
        let (api, stopped) = (self.api.display(), self.stopped.display());
        format!(
            "- {api}: STILL MOVED AWAY to {stopped}{why}; the API server stays stopped until you run: \
             mv {stopped} {api}"
        )
    }

    /// Moves the API server manifest back; returns the state line.
    fn restart_api(&self) -> String {
        match self.sys().rename(&self.stopped, &self.api) {
            Ok(()) => {
                let _ = self.sys().sync(&self.plan.paths.manifests_dir());
                format!("- {}: moved back (API server starting again)", self.api.display())
            }
            Err(e) => self.api_moved_away(&format!(" ({e})")),
        }
    }

    /// Puts the original etcd.yaml back if kbundle replaced it (and only then: an edit
    /// made by someone else meanwhile stays); returns the state line.
    fn restore_etcd(&self) -> String {
        let (plan, etcd) = (self.plan, self.etcd.display());
        match self.sys().read(&self.etcd) {
            Ok(b) if b == plan.original.as_bytes() => self.etcd_unchanged(),
            Ok(b) if b != plan.rewrite.text.as_bytes() => {
                format!("- {etcd}: changed by someone else while kbundle ran; left as it is now")
            }
            _ => match write_atomic_mode(self.sys(), &self.etcd, plan.original.as_bytes(), plan.mode) {
                Ok(()) => format!(
                    "- {etcd}: put back as it was (--data-dir={})",
                    plan.rewrite.old_data_dir
                ),
                Err(e) => format!(
                    "- {etcd}: COULD NOT PUT THE ORIGINAL BACK ({e}); it may point at {}. The \
                     original is in {backup}: cp {backup} {etcd}",
                    plan.rewrite.new_data_dir,
                    backup = self.backup.display(),
                ),
            },
        }
    }

    /// Step 1: move the API server manifest away and wait for the API server to stop.
    fn stop_apiserver(&self, notes: Notes, hook: &mut Hook) -> Result<(), EtcdError> {
        let (api, stopped) = (self.api.display(), self.stopped.display());
        notes(
            Level::Step,
            &format!("step 1/3: moving {api} to {stopped} (kubelet stops the API server)"),
        );
        let moved = hook(Step::StopApiserver).and_then(|()| self.sys().rename(&self.api, &self.stopped));
        if let Err(e) = moved {
            let cause = StepError::moving("", &self.api, &self.stopped)(e);
            let (api, etcd) = (self.api_running(), self.etcd_unchanged());
            return Err(self.fail(1, "stop the API server", cause, api, etcd));
        }
        self.sync();
        let Some(limit) = self.opts.wait_for_apiserver else {
            return Ok(());
        };
        wait_for_exit(self.host, "kube-apiserver", limit, notes).map_err(|cause| {
            let api_state = self.restart_api();
            self.fail(1, "stop the API server", cause, api_state, self.etcd_unchanged())
        })
    }

    /// Step 2: back up etcd.yaml and point it at the new directory.
    fn point_etcd(&self, notes: Notes, hook: &mut Hook) -> Result<(), EtcdError> {
        let rw = &self.plan.rewrite;
        notes(
            Level::Step,
            &format!(
                "step 2/3: pointing {} at {} (was {}); backup: {}",
                self.etcd.display(),
                rw.new_data_dir,
                rw.old_data_dir,
                self.backup.display()
            ),
        );
        if let Err(cause) = self.write_etcd(notes, hook) {
            let etcd_state = self.restore_etcd();
            let api_state = self.restart_api();
            return Err(self.fail(2, "point etcd.yaml at the restored data", cause, api_state, etcd_state));
        }
        for c in &rw.changed {
            notes(
                Level::Step,
                &format!("  line {}: {}  ->  {}", c.line, c.before.trim(), c.after.trim()),
            );
        }
        Ok(())
    }

    fn write_etcd(&self, notes: Notes, hook: &mut Hook) -> Result<(), StepError> {
        let current = self.sys().read(&self.etcd).map_err(StepError::io("read", &self.etcd))?;
        if current != self.plan.original.as_bytes() {
            return Err(StepError::ChangedMeanwhile(self.etcd.clone()));
        }
        hook(Step::WriteBackup).map_err(StepError::io("write", &self.backup))?;
        write_backup(self.sys(), &self.backup, self.plan, notes)?;
        hook(Step::WriteEtcdManifest).map_err(StepError::io("write", &self.etcd))?;
        write_atomic_mode(
            self.sys(),
            &self.etcd,
            self.plan.rewrite.text.as_bytes(),
            self.plan.mode,
        )
        .map_err(StepError::io("write", &self.etcd))
    }

    /// Step 3: move the API server manifest back.
    fn start_apiserver(&self, notes: Notes, hook: &mut Hook) -> Result<(), EtcdError> {
        let (api, stopped) = (self.api.display(), self.stopped.display());
        notes(
            Level::Step,
            &format!("step 3/3: moving {stopped} back to {api} (kubelet starts the API server again)"),
        );
        let back = hook(Step::StartApiserver).and_then(|()| self.sys().rename(&self.stopped, &self.api));
        if let Err(e) = back {
            let etcd_state = self.restore_etcd();
            let cause = StepError::moving("", &self.stopped, &self.api)(e);
            let api_state = self.api_moved_away("");
            return Err(self.fail(3, "start the API server", cause, api_state, etcd_state));
        }
        self.sync();
        Ok(())
    }
}

/// Writes the original etcd.yaml to `backup`; an older, different backup is kept as
/// `backup.N`.
fn write_backup(sys: &dyn Sys, backup: &Path, plan: &Plan, notes: Notes) -> Result<(), StepError> {
    match sys.read(backup) {
        Ok(b) if b == plan.original.as_bytes() => {
            notes(
                Level::Step,
                &format!("  {} already holds this manifest", backup.display()),
            );
            return Ok(());
        }
        Ok(_) => keep_old_backup(sys, backup, notes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StepError::io("read", backup)(e)),
    }
    write_atomic_mode(sys, backup, plan.original.as_bytes(), plan.mode).map_err(StepError::io("write", backup))
}

/// Moves an older backup to the first free `backup.N`.
fn keep_old_backup(sys: &dyn Sys, backup: &Path, notes: Notes) -> Result<(), StepError> {
    let kept = (1..)
        .map(|n| super::with_suffix(backup, &format!(".{n}")))
        .find(|p| sys.meta(p).is_err())
        .unwrap_or_else(|| super::with_suffix(backup, ".old"));
    sys.rename(backup, &kept)
        .map_err(StepError::moving("the older backup ", backup, &kept))?;
    notes(
        Level::Step,
        &format!("  kept the older backup {} as {}", backup.display(), kept.display()),
    );
    Ok(())
}

/// An atomic write keeping the file mode, through the node seam. The temp file is a dot
/// file, which kubelet ignores in the manifests directory.
fn write_atomic_mode(sys: &dyn Sys, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sys.write_atomic(path, &format!(".{name}."), &mut &data[..], mode)?;
    let _ = sys.sync(parent_dir(path));
    Ok(())
}

/// PIDs of live processes whose command name is `comm` (the running kernel's `/proc`).
fn processes_named(host: &Host, comm: &str) -> Vec<u32> {
    let Ok(names) = host.sys().list(Path::new("/proc")) else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| n.to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let named = host
                .kernel(&format!("/proc/{pid}/comm"))
                .is_some_and(|c| c.trim_end_matches('\n') == comm);
            named && !host.finished(*pid)
        })
        .collect()
}

fn wait_for_exit(host: &Host, comm: &str, limit: Duration, notes: Notes) -> Result<(), StepError> {
    let start = host.now();
    let mut pids = processes_named(host, comm);
    if pids.is_empty() {
        notes(Level::Step, &format!("  no {comm} process is running"));
        return Ok(());
    }
    notes(
        Level::Step,
        &format!("  waiting up to {}s for {comm} (pid {pids:?}) to exit", limit.as_secs()),
    );
    while !pids.is_empty() {
        if host.now() - start >= limit {
            return Err(StepError::StillRunning {
                comm: comm.to_string(),
                pids,
                secs: limit.as_secs(),
            });
        }
        host.sleep(Duration::from_millis(250));
        pids = processes_named(host, comm);
    }
    let waited = (host.now() - start).as_secs_f64();
    notes(Level::Step, &format!("  {comm} exited after {waited:.1}s"));
    Ok(())
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
