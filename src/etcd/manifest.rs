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

use super::{parent_dir, sync_dir, EtcdError, Level, Notes};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A step in a scalar's position: a mapping key, or a list item (numbered uniquely
/// across the document so that two scalars in the same item share the same prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Item(usize),
}

/// One scalar value found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// 0-based line index.
    pub line: usize,
    pub path: Vec<Seg>,
    /// The value without quotes (escapes left as written).
    pub value: String,
    /// Byte range of the value inside its line (inside the quotes, if quoted).
    pub start: usize,
    pub end: usize,
    /// Plain or simply quoted, on one line: safe to replace in place.
    pub simple: bool,
}

impl Scalar {
    fn keys(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.path.iter().map(|s| match s {
            Seg::Key(k) => k.as_str(),
            Seg::Item(_) => "-",
        })
    }

    /// True when the path ends with `pattern` (`"-"` matches any list item).
    fn ends_with(&self, pattern: &[&str]) -> bool {
        self.path.len() >= pattern.len() && self.keys().rev().zip(pattern.iter().rev()).all(|(a, b)| a == *b)
    }

    /// The path without its last segment: the mapping or item holding this value.
    fn parent(&self) -> &[Seg] {
        &self.path[..self.path.len().saturating_sub(1)]
    }
}

struct Frame {
    indent: usize,
    seg: Seg,
}

enum Value {
    /// Nothing after the key or dash: a nested block follows.
    Nested,
    /// `|` or `>`: the more-indented lines that follow are text.
    Block,
    Scalar {
        value: String,
        start: usize,
        end: usize,
        simple: bool,
    },
}

/// Splits `key: value` at the colon; `None` when `s` is not a mapping entry.
fn split_key(s: &str) -> Option<(String, usize)> {
    let first = s.chars().next()?;
    if first == '"' || first == '\'' {
        let close = s[1..].find(first)? + 1;
        let after = &s[close + 1..];
        let colon = after.len() - after.trim_start_matches(' ').len();
        let rest = &after[colon..];
        if rest.starts_with(':') && (rest.len() == 1 || rest[1..].starts_with(' ')) {
            return Some((s[1..close].to_string(), close + 1 + colon + 1));
        }
        return None;
    }
    if "[{&*!|>%@`#?".contains(first) {
        return None;
    }
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && i > 0 && b[i - 1] == b' ' {
            return None;
        }
        if c == b':' && (i + 1 == b.len() || b[i + 1] == b' ') {
            return Some((s[..i].trim_end().to_string(), i + 1));
        }
    }
    None
}

/// Reads the value starting at byte `at` of `line`.
fn parse_value(line: &str, at: usize) -> Value {
    let rest = &line[at..];
    let at = at + (rest.len() - rest.trim_start_matches(' ').len());
    let s = &line[at..];
    if s.is_empty() || s.starts_with('#') {
        return Value::Nested;
    }
    let q = s.as_bytes()[0];
    let (start, end, mut simple) = match q {
        b'|' | b'>' => return Value::Block,
        b'"' | b'\'' => {
            let b = s.as_bytes();
            let mut simple = true;
            let mut close = None;
            let mut i = 1;
            while i < b.len() {
                if q == b'"' && b[i] == b'\\' {
                    simple = false;
                    i += 2;
                    continue;
                }
                if b[i] == q {
                    if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                        simple = false;
                        i += 2;
                        continue;
                    }
                    close = Some(i);
                    break;
                }
                i += 1;
            }
            match close {
                Some(c) => {
                    let tail = s[c + 1..].trim_start_matches(' ');
                    let clean = tail.is_empty() || tail.starts_with('#');
                    (at + 1, at + c, simple && clean)
                }
                // Unterminated: the value continues on the next line.
                None => (at + 1, line.len(), false),
            }
        }
        b'[' | b'{' | b'&' | b'*' | b'!' => (at, at + s.trim_end().len(), false),
        _ => {
            let end = s.find(" #").unwrap_or(s.len());
            (at, at + s[..end].trim_end().len(), true)
        }
    };
    if line[start..end].contains('\t') {
        simple = false;
    }
    Value::Scalar {
        value: line[start..end].to_string(),
        start,
        end,
        simple,
    }
}

/// Follows the block structure of `text` and returns every scalar value with its position.
/// Errors only on what makes the structure unknowable (tabs in indentation).
pub fn scan(text: &str) -> Result<Vec<Scalar>, String> {
    let mut out: Vec<Scalar> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut block: Option<usize> = None;
    let mut next_item = 0usize;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches('\n').trim_end_matches('\r');
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if rest.trim().is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some(b) = block {
            if indent > b {
                continue;
            }
            block = None;
        }
        if rest.starts_with('\t') {
            return Err(format!("line {}: tab in indentation", n + 1));
        }
        if indent == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
            stack.clear();
            continue;
        }
        if indent == 0 && rest.starts_with('%') {
            continue;
        }
        let mut col = indent;
        let mut after_dash = false;
        loop {
            let rest = &line[col..];
            if rest == "-" || rest.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|f| f.indent > col || (f.indent == col && matches!(f.seg, Seg::Item(_))))
                {
                    stack.pop();
                }
                stack.push(Frame {
                    indent: col,
                    seg: Seg::Item(next_item),
                });
                next_item += 1;
                let after = &rest[1..];
                let next = col + 1 + (after.len() - after.trim_start_matches(' ').len());
                if next >= line.len() || line[next..].starts_with('#') {
                    break;
                }
                col = next;
                after_dash = true;
                continue;
            }
            if let Some((key, value_at)) = split_key(rest) {
                while stack.last().is_some_and(|f| f.indent >= col) {
                    stack.pop();
                }
                stack.push(Frame {
                    indent: col,
                    seg: Seg::Key(key),
                });
                match parse_value(line, col + value_at) {
                    Value::Nested => {}
                    Value::Block => block = Some(col),
                    Value::Scalar {
                        value,
                        start,
                        end,
                        simple,
                    } => out.push(Scalar {
                        line: n,
                        path: stack.iter().map(|f| f.seg.clone()).collect(),
                        value,
                        start,
                        end,
                        simple,
                    }),
                }
                break;
            }
            if after_dash {
                match parse_value(line, col) {
                    Value::Nested => {}
                    Value::Block => block = stack.last().map(|f| f.indent),
                    Value::Scalar {
                        value,
                        start,
                        end,
                        simple,
                    } => out.push(Scalar {
                        line: n,
                        path: stack.iter().map(|f| f.seg.clone()).collect(),
                        value,
                        start,
                        end,
                        simple,
                    }),
                }
            } else if let Some(last) = out.last_mut() {
                // Neither an item nor a key: the previous value goes on over this line.
                last.simple = false;
            }
            break;
        }
    }
    Ok(out)
}

/// The etcd container's `command`/`args` items.
fn container_args(scalars: &[Scalar]) -> impl Iterator<Item = &Scalar> {
    scalars.iter().filter(|s| {
        s.ends_with(&["spec", "containers", "-", "command", "-"])
            || s.ends_with(&["spec", "containers", "-", "args", "-"])
    })
}

/// `--flag=value` pairs from the container's command line, in order.
pub fn command_flags(text: &str) -> Result<Vec<(String, String)>, String> {
    let scalars = scan(text)?;
    Ok(container_args(&scalars)
        .filter_map(|s| {
            let (k, v) = s.value.split_once('=')?;
            k.starts_with("--").then(|| (k.to_string(), v.to_string()))
        })
        .collect())
}

/// Checks that `dir` is an absolute, clean path that can stand unquoted in YAML.
pub fn check_node_dir(dir: &str) -> Result<(), String> {
    let ok_chars = dir.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c));
    if !dir.starts_with('/') || dir.len() < 2 {
        return Err(format!("{dir:?} is not an absolute path below /"));
    }
    if !ok_chars {
        return Err(format!(
            "{dir:?}: kbundle only writes data directories made of letters, digits and /._-+@"
        ));
    }
    if dir.ends_with('/') || dir.contains("//") || dir.split('/').any(|c| c == "." || c == "..") {
        return Err(format!("{dir:?} is not a clean path (no trailing /, //, . or ..)"));
    }
    Ok(())
}

fn normalize(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        p
    } else {
        t
    }
}

/// One replaced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedLine {
    /// 1-based.
    pub line: usize,
    pub before: String,
    pub after: String,
}

/// The result of [`rewrite_data_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub old_data_dir: String,
    pub new_data_dir: String,
    /// The volume holding the data directory (kubeadm: `etcd-data`).
    pub volume: String,
    pub text: String,
    pub changed: Vec<ChangedLine>,
}

/// Points `--data-dir`, the data volume's `mountPath` and its `hostPath.path` at
/// `new_dir`, changing nothing else. Refuses anything but kubeadm's layout (see the module
/// docs), with the reason.
pub fn rewrite_data_dir(text: &str, new_dir: &str) -> Result<Rewrite, String> {
    check_node_dir(new_dir)?;
    let scalars = scan(text)?;
    let at = |s: &Scalar| s.line + 1;
    let args: Vec<&Scalar> = container_args(&scalars).collect();
    if let Some(s) = args
        .iter()
        .find(|s| s.value == "--data-dir" || s.value.starts_with("--wal-dir"))
    {
        return Err(format!(
            "line {}: `{}` is not supported (kbundle edits only `- --data-dir=PATH`, with the \
             WAL inside the data directory)",
            at(s),
            s.value
        ));
    }
    let flags: Vec<&Scalar> = args
        .iter()
        .copied()
        .filter(|s| s.value.starts_with("--data-dir="))
        .collect();
    let flag = match flags.as_slice() {
        [] => {
            return Err(
                "no `- --data-dir=PATH` item in the etcd container's command; is this kubeadm's \
                 etcd static pod manifest?"
                    .into(),
            )
        }
        [one] => *one,
        many => {
            let lines: Vec<String> = many.iter().map(|s| at(s).to_string()).collect();
            return Err(format!(
                "--data-dir is given {} times (lines {}); refusing to guess",
                many.len(),
                lines.join(", ")
            ));
        }
    };
    let old = &flag.value["--data-dir=".len()..];
    let old_n = normalize(old);
    if !old.starts_with('/') {
        return Err(format!("line {}: --data-dir={old} is not an absolute path", at(flag)));
    }
    if old_n == new_dir {
        return Err(format!(
            "etcd already uses {new_dir}; restore without --update-manifest into it and restart \
             etcd, or choose another --data-dir"
        ));
    }
    // The container the flag belongs to: the item right after `containers`.
    let ci = flag
        .path
        .iter()
        .rposition(|s| *s == Seg::Key("containers".into()))
        .map(|i| i + 2)
        .unwrap_or(0);
    let container = &flag.path[..ci];

    let mounts: Vec<&Scalar> = scalars
        .iter()
        .filter(|s| {
            s.path.starts_with(container)
                && s.ends_with(&["volumeMounts", "-", "mountPath"])
                && s.path.len() == container.len() + 3
                && normalize(&s.value) == old_n
        })
        .collect();
    let mount = match mounts.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "no volumeMount with mountPath {old_n} in the etcd container: --data-dir is not \
                 a volume kbundle can repoint"
            ))
        }
        many => {
            return Err(format!(
                "{} volumeMounts use mountPath {old_n}; refusing to guess",
                many.len()
            ))
        }
    };
    let sibling = |of: &Scalar, key: &str| -> Option<&Scalar> {
        scalars.iter().find(|s| {
            s.path.len() == of.path.len() && s.parent() == of.parent() && s.path.last() == Some(&Seg::Key(key.into()))
        })
    };
    let volume = sibling(mount, "name")
        .map(|s| s.value.clone())
        .ok_or_else(|| format!("line {}: the data volumeMount has no name", at(mount)))?;
    if let Some(s) = sibling(mount, "subPath") {
        return Err(format!(
            "line {}: the data volumeMount uses subPath, which kbundle does not edit",
            at(s)
        ));
    }
    let names: Vec<&Scalar> = scalars
        .iter()
        .filter(|s| s.ends_with(&["spec", "volumes", "-", "name"]) && s.value == volume)
        .collect();
    let vol_item = match names.as_slice() {
        [one] => one.parent().to_vec(),
        [] => return Err(format!("no volume named {volume} under spec.volumes")),
        _ => return Err(format!("more than one volume is named {volume}")),
    };
    let mut host_path = vol_item.clone();
    host_path.extend([Seg::Key("hostPath".into()), Seg::Key("path".into())]);
    let host = scalars
        .iter()
        .find(|s| s.path == host_path)
        .ok_or_else(|| format!("volume {volume} is not a hostPath volume with a path"))?;
    if normalize(&host.value) != old_n {
        return Err(format!(
            "line {}: volume {volume} mounts host directory {} at {old_n}; kbundle only edits \
             kubeadm's layout, where the host directory and --data-dir are the same path",
            at(host),
            host.value
        ));
    }

    let edits = [
        (flag, format!("--data-dir={new_dir}")),
        (mount, new_dir.to_string()),
        (host, new_dir.to_string()),
    ];
    for (s, _) in &edits {
        if !s.simple {
            return Err(format!(
                "line {}: the value is written in a form kbundle does not edit in place \
                 (escaped, multi-line or flow style)",
                at(s)
            ));
        }
    }
    let mut changed = Vec::new();
    let mut out = String::with_capacity(text.len() + 3 * new_dir.len());
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        match edits.iter().find(|(s, _)| s.line == n) {
            Some((s, new)) => {
                let edited = format!("{}{}{}", &raw[..s.start], new, &raw[s.end..]);
                let strip = |l: &str| l.trim_end_matches('\n').trim_end_matches('\r').to_string();
                changed.push(ChangedLine {
                    line: n + 1,
                    before: strip(raw),
                    after: strip(&edited),
                });
                out.push_str(&edited);
            }
            None => out.push_str(raw),
        }
    }
    Ok(Rewrite {
        old_data_dir: old_n.to_string(),
        new_data_dir: new_dir.to_string(),
        volume,
        text: out,
        changed,
    })
}

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
        super::under_root(&self.root, Path::new("/etc/kubernetes"))
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
mod tests {
    use super::*;

    /// What `kubeadm init` writes (v1.34, trimmed of nothing).
    pub(crate) const KUBEADM_ETCD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://10.0.0.11:2379
  creationTimestamp: null
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://10.0.0.11:2379
    - --cert-file=/etc/kubernetes/pki/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=/var/lib/etcd
    - --feature-gates=InitialCorruptCheck=true
    - --initial-advertise-peer-urls=https://10.0.0.11:2380
    - --initial-cluster=cp1=https://10.0.0.11:2380
    - --key-file=/etc/kubernetes/pki/etcd/server.key
    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.11:2379
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --listen-peer-urls=https://10.0.0.11:2380
    - --name=cp1
    - --peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt
    - --peer-client-cert-auth=true
    - --peer-key-file=/etc/kubernetes/pki/etcd/peer.key
    - --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    - --snapshot-count=10000
    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt
    image: registry.k8s.io/etcd:3.6.5-0
    imagePullPolicy: IfNotPresent
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 127.0.0.1
        path: /livez
        port: probe-port
        scheme: HTTP
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    name: etcd
    ports:
    - containerPort: 2381
      name: probe-port
      protocol: TCP
    resources:
      requests:
        cpu: 100m
        memory: 100Mi
    volumeMounts:
    - mountPath: /var/lib/etcd
      name: etcd-data
    - mountPath: /etc/kubernetes/pki/etcd
      name: etcd-certs
  hostNetwork: true
  priority: 2000001000
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki/etcd
      type: DirectoryOrCreate
    name: etcd-certs
  - hostPath:
      path: /var/lib/etcd
      type: DirectoryOrCreate
    name: etcd-data
status: {}
"#;

    fn diff(a: &str, b: &str) -> Vec<(usize, String, String)> {
        let (la, lb): (Vec<&str>, Vec<&str>) = (a.split_inclusive('\n').collect(), b.split_inclusive('\n').collect());
        assert_eq!(la.len(), lb.len(), "line count changed");
        la.iter()
            .zip(&lb)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| (i + 1, x.to_string(), y.to_string()))
            .collect()
    }

    #[test]
    fn rewrites_kubeadm_manifest_in_three_places_only() {
        let r = rewrite_data_dir(KUBEADM_ETCD, "/var/lib/etcd-restored").unwrap();
        assert_eq!(r.old_data_dir, "/var/lib/etcd");
        assert_eq!(r.volume, "etcd-data");
        let d = diff(KUBEADM_ETCD, &r.text);
        assert_eq!(
            d,
            vec![
                (
                    19,
                    "    - --data-dir=/var/lib/etcd\n".into(),
                    "    - --data-dir=/var/lib/etcd-restored\n".into()
                ),
                (
                    56,
                    "    - mountPath: /var/lib/etcd\n".into(),
                    "    - mountPath: /var/lib/etcd-restored\n".into()
                ),
                (
                    72,
                    "      path: /var/lib/etcd\n".into(),
                    "      path: /var/lib/etcd-restored\n".into()
                ),
            ]
        );
        assert_eq!(r.changed.len(), 3);
        assert_eq!(r.changed[0].line, 19);
        // The certs volume and its mount, a prefix of the same path, are untouched.
        assert!(r.text.contains("      path: /etc/kubernetes/pki/etcd\n"));
        // Rewriting again from the new text goes back byte for byte.
        let back = rewrite_data_dir(&r.text, "/var/lib/etcd").unwrap();
        assert_eq!(back.text, KUBEADM_ETCD);
    }

    #[test]
    fn reads_command_flags() {
        let flags = command_flags(KUBEADM_ETCD).unwrap();
        let get = |k: &str| flags.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        assert_eq!(get("--name"), Some("cp1"));
        assert_eq!(get("--initial-cluster"), Some("cp1=https://10.0.0.11:2380"));
        assert_eq!(get("--initial-advertise-peer-urls"), Some("https://10.0.0.11:2380"));
        assert_eq!(get("--data-dir"), Some("/var/lib/etcd"));
    }

    #[test]
    fn keeps_quotes_comments_crlf_and_other_indentation() {
        let text = [
            "# managed by kubeadm",
            "spec:",
            "  containers:",
            "    - name: etcd",
            "      command:",
            "        - etcd",
            "        - \"--data-dir=/var/lib/etcd/\"   # trailing slash",
            "      volumeMounts:",
            "        - name: etcd-data",
            "          mountPath: '/var/lib/etcd'",
            "      env:",
            "        - name: X",
            "          value: |",
            "            path: /var/lib/etcd",
            "            - --data-dir=/nope",
            "  volumes:",
            "    - name: etcd-data",
            "      hostPath:",
            "        type: DirectoryOrCreate",
            "        path: /var/lib/etcd # host",
            "",
        ]
        .join("\r\n");
        let text = text.as_str();
        let r = rewrite_data_dir(text, "/data/etcd-2").unwrap();
        assert_eq!(r.old_data_dir, "/var/lib/etcd");
        let d = diff(text, &r.text);
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0].2, "        - \"--data-dir=/data/etcd-2\"   # trailing slash\r\n");
        assert_eq!(d[1].2, "          mountPath: '/data/etcd-2'\r\n");
        assert_eq!(d[2].2, "        path: /data/etcd-2 # host\r\n");
    }

    fn without_line(text: &str, needle: &str) -> String {
        text.lines()
            .filter(|l| !l.contains(needle))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        let err = |t: &str, d: &str| rewrite_data_dir(t, d).unwrap_err();
        let e = err(&without_line(KUBEADM_ETCD, "--data-dir"), "/var/lib/x");
        assert!(e.contains("no `- --data-dir=PATH`"), "{e}");
        let twice = KUBEADM_ETCD.replace(
            "    - --name=cp1\n",
            "    - --name=cp1\n    - --data-dir=/var/lib/etcd\n",
        );
        assert!(err(&twice, "/var/lib/x").contains("2 times"));
        let wal = KUBEADM_ETCD.replace(
            "    - --name=cp1\n",
            "    - --name=cp1\n    - --wal-dir=/var/lib/etcd-wal\n",
        );
        assert!(err(&wal, "/var/lib/x").contains("--wal-dir"));
        let no_mount = KUBEADM_ETCD.replace("- mountPath: /var/lib/etcd\n", "- mountPath: /data\n");
        assert!(err(&no_mount, "/var/lib/x").contains("no volumeMount"));
        let other_host = KUBEADM_ETCD.replace("      path: /var/lib/etcd\n", "      path: /srv/etcd\n");
        assert!(err(&other_host, "/var/lib/x").contains("/srv/etcd"));
        let split = KUBEADM_ETCD.replace("      path: /var/lib/etcd\n", "      path: /var/lib/\n        etcd\n");
        assert!(
            err(&split, "/var/lib/x").contains("line"),
            "{}",
            err(&split, "/var/lib/x")
        );
        let tabs = KUBEADM_ETCD.replace("    name: etcd-data\n", "\tname: etcd-data\n");
        assert!(err(&tabs, "/var/lib/x").contains("tab"));
        assert!(err(KUBEADM_ETCD, "/var/lib/etcd").contains("already uses"));
        for bad in ["relative", "/", "/a/../b", "/a/", "/a b", "/a:b", "/a//b"] {
            assert!(check_node_dir(bad).is_err(), "{bad}");
        }
        check_node_dir("/var/lib/etcd-restore.2024-01-01_1").unwrap();
    }

    #[test]
    fn scanner_paths() {
        let s = scan("a:\n  - b: 1\n    c:\n    - x\n    - 'y z'\n  - b: 2\nd: e # c\n").unwrap();
        let show: Vec<(String, String)> = s
            .iter()
            .map(|s| (s.keys().collect::<Vec<_>>().join("."), s.value.clone()))
            .collect();
        assert_eq!(
            show,
            vec![
                ("a.-.b".into(), "1".into()),
                ("a.-.c.-".into(), "x".into()),
                ("a.-.c.-".into(), "y z".into()),
                ("a.-.b".into(), "2".into()),
                ("d".into(), "e".into()),
            ]
        );
        // The two `b` keys live in different items.
        assert_ne!(s[0].parent(), s[3].parent());
        assert_eq!(s[0].parent(), &s[1].path[..2]);
    }

    // --- the node procedure ---

    const APISERVER: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n";

    fn node() -> (tempfile::TempDir, NodePaths) {
        let t = tempfile::tempdir().unwrap();
        let p = NodePaths::new(t.path());
        std::fs::create_dir_all(p.manifests_dir()).unwrap();
        std::fs::write(p.etcd_manifest(), KUBEADM_ETCD).unwrap();
        std::fs::set_permissions(p.etcd_manifest(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(p.apiserver_manifest(), APISERVER).unwrap();
        (t, p)
    }

    fn opts(p: &NodePaths) -> ApplyOptions {
        ApplyOptions {
            wait_for_apiserver: None,
            restored_dir: p.root.join("var/lib/etcd-new"),
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn apply_switches_and_backs_up() {
        let (_t, p) = node();
        let plan = plan(&p.root, "/var/lib/etcd-new").unwrap();
        assert_eq!(plan.flag("--name"), Some("cp1"));
        let mut log = Vec::new();
        apply(&plan, &opts(&p), &mut |_, m| log.push(m.to_string())).unwrap();
        assert_eq!(read(&p.etcd_manifest()), plan.rewrite.text);
        assert_eq!(read(&p.etcd_backup()), KUBEADM_ETCD);
        assert_eq!(read(&p.apiserver_manifest()), APISERVER);
        assert!(!p.apiserver_stopped().exists());
        let mode = std::fs::metadata(p.etcd_manifest()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let log = log.join("\n");
        for s in ["step 1/3", "step 2/3", "step 3/3", "line 19"] {
            assert!(log.contains(s), "{log}");
        }
        // No temp files left in the manifests directory (kubelet would see them).
        let names: Vec<_> = std::fs::read_dir(p.manifests_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // A second restore keeps the first backup under another name.
        let plan2 = super::plan(&p.root, "/var/lib/etcd-newer").unwrap();
        apply(&plan2, &opts(&p), &mut |_, _| {}).unwrap();
        assert_eq!(read(&p.etcd_backup()), plan.rewrite.text);
        assert_eq!(read(&super::super::with_suffix(&p.etcd_backup(), ".1")), KUBEADM_ETCD);
    }

    #[test]
    fn plan_refuses_leftovers_and_missing_apiserver() {
        let (_t, p) = node();
        std::fs::write(p.apiserver_stopped(), APISERVER).unwrap();
        let e = plan(&p.root, "/var/lib/etcd-new").unwrap_err().to_string();
        assert!(e.contains("kbundle-stopped") && e.contains("earlier run"), "{e}");
        std::fs::remove_file(p.apiserver_stopped()).unwrap();
        std::fs::remove_file(p.apiserver_manifest()).unwrap();
        let e = plan(&p.root, "/var/lib/etcd-new").unwrap_err().to_string();
        assert!(e.contains("kube-apiserver.yaml"), "{e}");
    }

    fn fail_at(step: Step) -> (tempfile::TempDir, NodePaths, String) {
        let (t, p) = node();
        let plan = plan(&p.root, "/var/lib/etcd-new").unwrap();
        let e = apply_with(&plan, &opts(&p), &mut |_, _| {}, &mut |s| {
            if s == step {
                Err(io::Error::other("injected failure"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        (t, p, e.to_string())
    }

    #[test]
    fn failures_undo_earlier_steps_and_say_so() {
        for step in [Step::StopApiserver, Step::WriteBackup, Step::WriteEtcdManifest] {
            let (_t, p, e) = fail_at(step);
            assert!(e.contains("injected failure"), "{e}");
            assert!(e.contains("state of the node now"), "{e}");
            assert_eq!(read(&p.etcd_manifest()), KUBEADM_ETCD, "{step:?}");
            assert_eq!(read(&p.apiserver_manifest()), APISERVER, "{step:?}");
            assert!(!p.apiserver_stopped().exists(), "{step:?}");
            assert!(e.contains("etcd-new (not used by etcd"), "{e}");
        }
        let (_t, _p, e) = fail_at(Step::StopApiserver);
        assert!(
            e.contains("step 1") && e.contains("in place (API server running)"),
            "{e}"
        );
        let (_t, _p, e) = fail_at(Step::WriteBackup);
        assert!(e.contains("step 2") && e.contains("moved back"), "{e}");

        // Step 3 cannot put the API server back (the injected failure stands in for the
        // rename failing), so it says how to, and etcd.yaml goes back to the original.
        let (_t, p, e) = fail_at(Step::StartApiserver);
        assert!(e.contains("step 3"), "{e}");
        assert!(e.contains("STILL MOVED AWAY"), "{e}");
        assert!(e.contains(&format!("mv {}", p.apiserver_stopped().display())), "{e}");
        assert!(e.contains("put back as it was"), "{e}");
        assert_eq!(read(&p.etcd_manifest()), KUBEADM_ETCD);
        assert_eq!(read(&p.apiserver_stopped()), APISERVER);
    }

    #[test]
    fn refuses_etcd_yaml_changed_meanwhile() {
        let (_t, p) = node();
        let plan = plan(&p.root, "/var/lib/etcd-new").unwrap();
        let edited = format!("{KUBEADM_ETCD}# edited\n");
        std::fs::write(p.etcd_manifest(), &edited).unwrap();
        let e = apply(&plan, &opts(&p), &mut |_, _| {}).unwrap_err().to_string();
        assert!(e.contains("changed while kbundle was restoring"), "{e}");
        assert!(e.contains("changed by someone else"), "{e}");
        assert_eq!(read(&p.etcd_manifest()), edited);
        assert!(!p.etcd_backup().exists());
        assert_eq!(read(&p.apiserver_manifest()), APISERVER);
    }

    #[test]
    fn process_scan_finds_nothing_made_up() {
        assert!(processes_named("no-such-process-kb").is_empty());
        let mut log = Vec::new();
        wait_for_exit("no-such-process-kb", Duration::from_secs(1), &mut |_, m| {
            log.push(m.to_string())
        })
        .unwrap();
        assert!(log[0].contains("no no-such-process-kb process"));
    }
}
