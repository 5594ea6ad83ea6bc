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
//! on, and start a new, empty cluster there. There is no YAML library here, and a
//! round-trip through one would reformat the file anyway: [`scan`] follows the block
//! structure line by line (indentation, `key:` and `- ` items; flow collections,
//! multi-line and escaped scalars are left alone) and [`rewrite_data_dir`] replaces
//! exactly those three values in place, keeping every other byte.
//!
//! [`apply`] then does the manual procedure on the node: (1) move `kube-apiserver.yaml`
//! out of the manifests directory (kubelet stops the API server), (2) back up `etcd.yaml`
//! to `/etc/kubernetes/etcd.yaml.kbundle-backup` and replace it atomically, (3) move
//! `kube-apiserver.yaml` back. A failing step undoes the earlier ones, and the error says
//! what state each file is in.

pub use super::yaml::{check_node_dir, command_flags, rewrite_data_dir, scan, ChangedLine, Rewrite, Scalar, Seg};
use super::{parent_dir, sync_dir, EtcdError, Level, Notes};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Reads and checks the node's manifests for pointing etcd at `new_dir` (a node path).
pub fn plan(root: &Path, new_dir: &str) -> Result<Plan, EtcdError> {
    let paths = NodePaths::new(root);
    let etcd = paths.etcd_manifest();
    let bad = |path: &Path, reason: String| EtcdError::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(&etcd).map_err(EtcdError::io("cannot read kubeadm's etcd manifest", &etcd))?;
    let bytes = std::fs::read(&etcd).map_err(EtcdError::io("cannot read kubeadm's etcd manifest", &etcd))?;
    let original = String::from_utf8(bytes).map_err(|_| bad(&etcd, "not UTF-8 text".into()))?;
    let rewrite = rewrite_data_dir(&original, new_dir).map_err(|r| bad(&etcd, r))?;
    let flags = command_flags(&original).map_err(|r| bad(&etcd, r))?;
    let api = paths.apiserver_manifest();
    let stopped = paths.apiserver_stopped();
    if stopped.symlink_metadata().is_ok() {
        return Err(bad(
            &stopped,
            format!(
                "left over from an earlier run that did not finish: the API server manifest \
                 was moved here. Check it, move it back to {} (or delete it), then run again",
                api.display()
            ),
        ));
    }
    if !api.symlink_metadata().is_ok_and(|m| m.is_file()) {
        return Err(bad(
            &api,
            "missing or not a regular file: --update-manifest stops the API server by moving \
             kubeadm's kube-apiserver static pod manifest away for the switch"
                .into(),
        ));
    }
    Ok(Plan {
        paths,
        original,
        mode: meta.permissions().mode() & 0o7777,
        rewrite,
        flags,
    })
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

/// Runs the three steps (see the module docs).
pub fn apply(plan: &Plan, opts: &ApplyOptions, notes: Notes) -> Result<(), EtcdError> {
    apply_with(plan, opts, notes, &mut |_| Ok(()))
}

/// [`apply`] with `hook` called before each change; an error from it fails that step.
pub fn apply_with(
    plan: &Plan,
    opts: &ApplyOptions,
    notes: Notes,
    hook: &mut dyn FnMut(Step) -> io::Result<()>,
) -> Result<(), EtcdError> {
    let p = &plan.paths;
    let (api, stopped, etcd, backup) = (
        p.apiserver_manifest(),
        p.apiserver_stopped(),
        p.etcd_manifest(),
        p.etcd_backup(),
    );
    let (old, new) = (&plan.rewrite.old_data_dir, &plan.rewrite.new_data_dir);
    let restored = format!(
        "- restored data: {} (not used by etcd; remove it before retrying with the same --data-dir)",
        opts.restored_dir.display()
    );
    let api_running = format!("- {}: in place (API server running)", api.display());
    let etcd_unchanged = format!("- {}: unchanged (--data-dir={old})", etcd.display());
    let fail = |step: u8, what: &'static str, cause: String, state: Vec<String>| EtcdError::UpdateManifest {
        step,
        what,
        cause,
        state: state.join("\n"),
    };
    // Moves the API server manifest back; returns the state line.
    let restart_api = || match std::fs::rename(&stopped, &api) {
        Ok(()) => {
            sync_dir(&p.manifests_dir());
            format!("- {}: moved back (API server starting again)", api.display())
        }
        Err(e) => format!(
            "- {}: STILL MOVED AWAY to {} ({e}); the API server stays stopped until you run: \
             mv {} {}",
            api.display(),
            stopped.display(),
            stopped.display(),
            api.display()
        ),
    };
    // Puts the original etcd.yaml back if kbundle replaced it (and only then: an edit
    // made by someone else meanwhile stays); returns the state line.
    let restore_etcd = || match std::fs::read(&etcd) {
        Ok(b) if b == plan.original.as_bytes() => etcd_unchanged.clone(),
        Ok(b) if b != plan.rewrite.text.as_bytes() => format!(
            "- {}: changed by someone else while kbundle ran; left as it is now",
            etcd.display()
        ),
        _ => match write_atomic_mode(&etcd, plan.original.as_bytes(), plan.mode) {
            Ok(()) => format!("- {}: put back as it was (--data-dir={old})", etcd.display()),
            Err(e) => format!(
                "- {}: COULD NOT PUT THE ORIGINAL BACK ({e}); it may point at {new}. The \
                 original is in {}: cp {} {}",
                etcd.display(),
                backup.display(),
                backup.display(),
                etcd.display()
            ),
        },
    };

    // Step 1: stop the API server.
    notes(
        Level::Step,
        &format!(
            "step 1/3: moving {} to {} (kubelet stops the API server)",
            api.display(),
            stopped.display()
        ),
    );
    let moved = hook(Step::StopApiserver).and_then(|()| std::fs::rename(&api, &stopped));
    if let Err(e) = moved {
        return Err(fail(
            1,
            "stop the API server",
            format!("cannot move {} to {}: {e}", api.display(), stopped.display()),
            vec![api_running, etcd_unchanged, restored],
        ));
    }
    sync_dir(&p.manifests_dir());
    sync_dir(&p.kubernetes_dir());
    if let Some(limit) = opts.wait_for_apiserver {
        if let Err(cause) = wait_for_exit("kube-apiserver", limit, notes) {
            let api_state = restart_api();
            return Err(fail(
                1,
                "stop the API server",
                cause,
                vec![api_state, etcd_unchanged, restored],
            ));
        }
    }

    // Step 2: back up etcd.yaml and point it at the new directory.
    notes(
        Level::Step,
        &format!(
            "step 2/3: pointing {} at {new} (was {old}); backup: {}",
            etcd.display(),
            backup.display()
        ),
    );
    let step2 = (|| -> Result<(), String> {
        let current = std::fs::read(&etcd).map_err(|e| format!("cannot read {}: {e}", etcd.display()))?;
        if current != plan.original.as_bytes() {
            return Err(format!(
                "{} changed while kbundle was restoring; not overwriting that edit",
                etcd.display()
            ));
        }
        hook(Step::WriteBackup).map_err(|e| format!("cannot write {}: {e}", backup.display()))?;
        write_backup(&backup, plan, notes)?;
        hook(Step::WriteEtcdManifest).map_err(|e| format!("cannot write {}: {e}", etcd.display()))?;
        write_atomic_mode(&etcd, plan.rewrite.text.as_bytes(), plan.mode)
            .map_err(|e| format!("cannot write {}: {e}", etcd.display()))
    })();
    if let Err(cause) = step2 {
        let etcd_state = restore_etcd();
        let api_state = restart_api();
        return Err(fail(
            2,
            "point etcd.yaml at the restored data",
            cause,
            vec![api_state, etcd_state, restored],
        ));
    }
    for c in &plan.rewrite.changed {
        notes(
            Level::Step,
            &format!("  line {}: {}  ->  {}", c.line, c.before.trim(), c.after.trim()),
        );
    }

    // Step 3: start the API server again.
    notes(
        Level::Step,
        &format!(
            "step 3/3: moving {} back to {} (kubelet starts the API server again)",
            stopped.display(),
            api.display()
        ),
    );
    let back = hook(Step::StartApiserver).and_then(|()| std::fs::rename(&stopped, &api));
    if let Err(e) = back {
        let etcd_state = restore_etcd();
        let api_state = format!(
            "- {}: STILL MOVED AWAY to {}; the API server stays stopped until you run: mv {} {}",
            api.display(),
            stopped.display(),
            stopped.display(),
            api.display()
        );
        return Err(fail(
            3,
            "start the API server",
            format!("cannot move {} back to {}: {e}", stopped.display(), api.display()),
            vec![api_state, etcd_state, restored],
        ));
    }
    sync_dir(&p.manifests_dir());
    sync_dir(&p.kubernetes_dir());
    Ok(())
}

/// Writes the original etcd.yaml to `backup`; an older, different backup is kept as
/// `backup.N`.
fn write_backup(backup: &Path, plan: &Plan, notes: Notes) -> Result<(), String> {
    match std::fs::read(backup) {
        Ok(b) if b == plan.original.as_bytes() => {
            notes(
                Level::Step,
                &format!("  {} already holds this manifest", backup.display()),
            );
            return Ok(());
        }
        Ok(_) => {
            let kept = (1..)
                .map(|n| super::with_suffix(backup, &format!(".{n}")))
                .find(|p| p.symlink_metadata().is_err())
                .unwrap_or_else(|| super::with_suffix(backup, ".old"));
            std::fs::rename(backup, &kept).map_err(|e| {
                format!(
                    "cannot move the older backup {} to {}: {e}",
                    backup.display(),
                    kept.display()
                )
            })?;
            notes(
                Level::Step,
                &format!("  kept the older backup {} as {}", backup.display(), kept.display()),
            );
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", backup.display())),
    }
    write_atomic_mode(backup, plan.original.as_bytes(), plan.mode)
        .map_err(|e| format!("cannot write {}: {e}", backup.display()))
}

/// Like `fsutil::write_atomic`, keeping the file mode. The temp file is a dot file, which
/// kubelet ignores in the manifests directory.
fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// PIDs of live processes whose command name is `comm`.
fn processes_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let base = PathBuf::from(format!("/proc/{pid}"));
            let named = std::fs::read_to_string(base.join("comm")).is_ok_and(|c| c.trim_end_matches('\n') == comm);
            // Field 3 of stat, after the parenthesised name: Z is a zombie (already dead).
            let zombie = std::fs::read_to_string(base.join("stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
            });
            named && !zombie
        })
        .collect()
}

fn wait_for_exit(comm: &str, limit: Duration, notes: Notes) -> Result<(), String> {
    let start = Instant::now();
    let mut pids = processes_named(comm);
    if pids.is_empty() {
        notes(Level::Step, &format!("  no {comm} process is running"));
        return Ok(());
    }
    notes(
        Level::Step,
        &format!("  waiting up to {}s for {comm} (pid {pids:?}) to exit", limit.as_secs()),
    );
    while !pids.is_empty() {
        if start.elapsed() >= limit {
            return Err(format!(
                "{comm} (pid {pids:?}) still runs {}s after its manifest was moved away; is \
                 kubelet running?",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
        pids = processes_named(comm);
    }
    notes(
        Level::Step,
        &format!("  {comm} exited after {:.1}s", start.elapsed().as_secs_f64()),
    );
    Ok(())
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
