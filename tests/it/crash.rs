//! Issue 9: `install` killed with SIGKILL at each step (found by watching the journal, the
//! node store and the recorded child processes, never by fixed delays), then run again: it
//! finishes, no process it started is left, no temp file remains, and the node tree equals
//! an uninterrupted install's.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::bundles::{self, text, Built};

/// A file or directory whose name marks it as kbundle's temporary.
fn leftovers(root: &Path) -> Vec<String> {
    bundles::tree(root)
        .into_keys()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or("");
            name.starts_with(".kbundle-tmp.") || name.starts_with(".unpack-") || p == "var/lib/kbundle/tmp"
        })
        .collect()
}

/// The node tree as compared between runs: containerd's own state (bolt databases with
/// timestamps, and content its garbage collector may or may not have removed yet) and the
/// order of the write-dir record are not part of the result; that every image blob of the
/// bundle is in containerd's content store is checked apart ([`images_imported`]).
fn result_tree(root: &Path) -> BTreeMap<String, String> {
    let mut t = bundles::tree(root);
    t.retain(|k, _| !k.starts_with("var/lib/containerd/"));
    if let Some(v) = t.get_mut("var/lib/kbundle/state/write-dirs") {
        let mut lines: Vec<String> = std::fs::read_to_string(root.join("var/lib/kbundle/state/write-dirs"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        *v = lines.join(",");
    }
    t
}

/// Every blob of the bundle's image layout is in the node's containerd content store.
fn images_imported(root: &Path) -> Result<(), Vec<String>> {
    let store = root.join("var/lib/containerd/io.containerd.content.v1.content/blobs/sha256");
    let layout: Vec<String> = bundles::tree(&root.join("var/lib/kbundle/bundles"))
        .into_keys()
        .filter(|k| k.contains("/images/blobs/sha256/"))
        .filter_map(|k| k.rsplit('/').next().map(str::to_string))
        .collect();
    let missing: Vec<String> = layout.iter().filter(|d| !store.join(d).is_file()).cloned().collect();
    if layout.is_empty() || !missing.is_empty() {
        return Err(missing);
    }
    Ok(())
}

/// Does any file under `dir` have a name that `f` accepts?
fn any_name(dir: &Path, f: impl Fn(&str) -> bool) -> bool {
    bundles::tree(dir).keys().any(|k| f(k.rsplit('/').next().unwrap_or("")))
}

fn journal_has(root: &Path, step: &str) -> bool {
    let state = root.join("var/lib/kbundle/state");
    std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .any(|d| d.path().join(format!("{step}.done")).exists())
}

/// Starts an install into `root`, waits until `reached` holds, and kills it with SIGKILL.
fn kill_when(b: &Built, config: &Path, root: &Path, what: &str, reached: impl Fn(&Path) -> bool) {
    let mut child = bundles::install_cmd(&b.archive, config, root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hit = bundles::wait_until(120, || reached(root) || child.try_wait().unwrap().is_some());
    assert!(hit, "{what}: never reached");
    assert!(
        child.try_wait().unwrap().is_none(),
        "{what}: the install finished before it was reached"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

type Point = (&'static str, Box<dyn Fn(&Path) -> bool>);

#[test]
fn install_killed_at_each_step_finishes_on_rerun_and_leaves_nothing_behind() {
    let b = Built::new(false);
    let config = b.config();
    let clean = bundles::node_root(&b.path("clean"));
    let o = bundles::install_cmd(&b.archive, &config, &clean).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        images_imported(&clean),
        Ok(()),
        "an uninterrupted install left blobs out"
    );
    let want = result_tree(&clean);
    let points: Vec<Point> = vec![
        (
            "unpack",
            Box::new(|r: &Path| any_name(&r.join("var/lib/kbundle/bundles"), |n| n.starts_with(".unpack-"))),
        ),
        ("binaries", Box::new(|r: &Path| journal_has(r, "host-files"))),
        (
            "images",
            Box::new(|r: &Path| r.join("var/lib/kbundle/run/import-containerd.pid").exists()),
        ),
        // After the units: containerd-config, then the images step (seconds of work left).
        ("containerd-config", Box::new(|r: &Path| journal_has(r, "units"))),
    ];
    for (what, reached) in points {
        let root: PathBuf = bundles::node_root(&b.path(what));
        kill_when(&b, &config, &root, what, reached);
        // The temporary containerd dies with the installer (parent-death signal); if the
        // kill landed before setpriv set that signal, the re-run stops it by its record.
        let needle = root.display().to_string();
        let orphaned = !bundles::wait_until(10, || bundles::processes_mentioning(&needle).is_empty());
        let o = bundles::install_cmd(&b.archive, &config, &root).output().unwrap();
        assert!(o.status.success(), "{what}: re-run failed: {}", text(&o));
        if orphaned {
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("stopped pid"),
                "{what}: {}",
                text(&o)
            );
        }
        assert!(
            bundles::processes_mentioning(&needle).is_empty(),
            "{what}: left running: {:?}",
            bundles::processes_mentioning(&needle)
        );
        assert_eq!(
            images_imported(&root),
            Ok(()),
            "{what}: image blobs missing from containerd"
        );
        assert_eq!(leftovers(&root), Vec::<String>::new(), "{what}: temp files remain");
        let run = root.join("var/lib/kbundle/run");
        assert!(bundles::tree(&run).is_empty(), "{what}: a child record remains");
        let got = result_tree(&root);
        let diff: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(got.keys().filter(|k| !want.contains_key(*k)))
            .collect();
        let shown: Vec<String> = diff
            .iter()
            .map(|k| format!("{k}: want {:?}, got {:?}", want.get(*k), got.get(*k)))
            .collect();
        assert!(
            diff.is_empty(),
            "{what}: differs from an uninterrupted install:\n{}",
            shown.join("\n")
        );
    }
}

#[test]
fn a_recorded_orphan_from_a_killed_run_is_stopped_by_the_next_run() {
    let b = Built::new(true);
    let config = b.config();
    let root = bundles::node_root(&b.path("root"));
    // What a run killed before its parent-death signal took effect leaves: a process
    // running on kbundle's scratch config, recorded with its PID and start time.
    let scratch = root.join("var/lib/kbundle/tmp/containerd-abc123");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("config.toml"), "version = 2\n").unwrap();
    let mut orphan = std::process::Command::new("tail")
        .arg("-f")
        .arg(scratch.join("config.toml"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = orphan.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let run = root.join("var/lib/kbundle/run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("import-containerd.pid"), format!("{pid} {start}\n")).unwrap();
    // A stale record of a PID now used by an unrelated process is not acted on.
    let bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(run.join("other.pid"), format!("{} 1\n", bystander.id())).unwrap();
    let o = bundles::install_cmd(&b.archive, &config, &root).output().unwrap();
    // (The tiny bundle has no real containerd: the install itself may fail later.)
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("stopped pid {pid}")), "{}", text(&o));
    assert!(orphan.try_wait().unwrap().is_some() || bundles::wait_until(5, || orphan.try_wait().unwrap().is_some()));
    assert!(!scratch.exists(), "the scratch dir was not removed");
    let mut bystander = bystander;
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "an unrelated process was killed"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}
