//! Reading and editing kubeadm's etcd static pod manifest (see [`super::manifest`]) with
//! yaml-edit, a lossless YAML parser: the syntax tree keeps every byte of the file
//! (comments, quotes, indentation, line ends), so replacing three scalars changes those
//! three values and nothing else.

use std::str::FromStr;
use yaml_edit::{Mapping, Scalar, Sequence, ValidationConfig, WhitespaceErrorCategory, YamlFile, YamlNode};

/// Why kbundle will not read or edit an etcd manifest. Lines are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error(
        "left over from an earlier run that did not finish: the API server manifest was moved \
         here. Check it, move it back to {} (or delete it), then run again",
        .api.display()
    )]
    LeftOver { api: std::path::PathBuf },
    #[error(
        "missing or not a regular file: --update-manifest stops the API server by moving \
         kubeadm's kube-apiserver static pod manifest away for the switch"
    )]
    NoApiserver,
    #[error("line {line}: tab in indentation")]
    Tab { line: usize },
    #[error("not YAML kbundle can read: {0}")]
    Parse(#[source] yaml_edit::YamlError),
    #[error("not one YAML document holding a mapping; is this kubeadm's etcd static pod manifest?")]
    NotAPod,
    #[error(
        "line {line}: `{value}` is not supported (kbundle edits only `- --data-dir=PATH`, with the \
         WAL inside the data directory)"
    )]
    UnsupportedFlag { line: usize, value: String },
    #[error(
        "no `- --data-dir=PATH` item in the etcd container's command; is this kubeadm's etcd \
         static pod manifest?"
    )]
    NoDataDir,
    #[error("--data-dir is given {} times (lines {}); refusing to guess", .lines.len(), list(.lines))]
    ManyDataDirs { lines: Vec<usize> },
    #[error("line {line}: --data-dir={dir} is not an absolute path")]
    RelativeDataDir { line: usize, dir: String },
    #[error(
        "etcd already uses {dir}; restore without --update-manifest into it and restart etcd, or \
         choose another --data-dir"
    )]
    AlreadyUses { dir: String },
    #[error(
        "no volumeMount with mountPath {dir} in the etcd container: --data-dir is not a volume \
         kbundle can repoint"
    )]
    NoMount { dir: String },
    #[error("{count} volumeMounts use mountPath {dir}; refusing to guess")]
    ManyMounts { count: usize, dir: String },
    #[error("line {line}: the data volumeMount has no name")]
    MountWithoutName { line: usize },
    #[error("line {line}: the data volumeMount uses subPath, which kbundle does not edit")]
    SubPath { line: usize },
    #[error("no volume named {volume} under spec.volumes")]
    NoVolume { volume: String },
    #[error("more than one volume is named {volume}")]
    ManyVolumes { volume: String },
    #[error("volume {volume} is not a hostPath volume with a path")]
    NotHostPath { volume: String },
    #[error(
        "line {line}: volume {volume} mounts host directory {host} at {dir}; kbundle only edits \
         kubeadm's layout, where the host directory and --data-dir are the same path"
    )]
    OtherHostDir {
        line: usize,
        volume: String,
        host: String,
        dir: String,
    },
    #[error(
        "line {line}: the value is written in a form kbundle does not edit in place (escaped, \
         multi-line or flow style)"
    )]
    NotInPlace { line: usize },
    #[error(transparent)]
    NodeDir(#[from] NodeDirError),
}

fn list(lines: &[usize]) -> String {
    lines.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

/// A data directory kbundle will not write into etcd.yaml.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeDirError {
    #[error("{0:?} is not an absolute path below /")]
    NotAbsolute(String),
    #[error("{0:?}: kbundle only writes data directories made of letters, digits and /._-+@")]
    Characters(String),
    #[error("{0:?} is not a clean path (no trailing /, //, . or ..)")]
    NotClean(String),
}

/// Checks that `dir` is an absolute, clean path that can stand unquoted in YAML.
pub fn check_node_dir(dir: &str) -> Result<(), NodeDirError> {
    let ok_chars = dir.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c));
    if !dir.starts_with('/') || dir.len() < 2 {
        return Err(NodeDirError::NotAbsolute(dir.to_string()));
    }
    if !ok_chars {
        return Err(NodeDirError::Characters(dir.to_string()));
    }
    if dir.ends_with('/') || dir.contains("//") || dir.split('/').any(|c| c == "." || c == "..") {
        return Err(NodeDirError::NotClean(dir.to_string()));
    }
    Ok(())
}

/// `p` without trailing slashes (`/` stays `/`).
fn normalize(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        p
    } else {
        t
    }
}

/// One scalar of the manifest, with its place.
#[derive(Clone)]
struct Value {
    node: Scalar,
    /// The value as YAML reads it (unquoted, unescaped).
    text: String,
    line: usize,
    /// Inside a flow collection (`[a, b]`, `{k: v}`).
    in_flow: bool,
}

impl Value {
    /// Plain or simply quoted, on one line, in block style: safe to replace in place.
    fn in_place(&self) -> bool {
        let raw = self.node.value();
        let quote = raw.chars().next().filter(|c| *c == '"' || *c == '\'');
        let inner = if quote.is_some() {
            raw.get(1..raw.len() - 1).unwrap_or("")
        } else {
            raw.as_str()
        };
        let escaped = match quote {
            Some('"') => inner.contains('\\'),
            Some(_) => inner.contains("''"),
            None => false,
        };
        !self.in_flow && !self.node.is_block() && !escaped && !raw.contains(['\n', '\r', '\t'])
    }

    /// The raw text that writes `new` in this value's quoting style.
    fn restyled(&self, new: &str) -> String {
        match self.node.value().chars().next() {
            Some(q @ ('"' | '\'')) => format!("{q}{new}{q}"),
            _ => new.to_string(),
        }
    }
}

/// A parsed manifest: the lossless tree and the text it came from.
struct Pod {
    file: YamlFile,
    root: Mapping,
    text: String,
}

impl Pod {
    fn parse(text: &str) -> Result<Pod, ManifestError> {
        check_tabs(text)?;
        let file = YamlFile::from_str(text).map_err(ManifestError::Parse)?;
        let docs: Vec<_> = file.documents().collect();
        let root = match docs.as_slice() {
            [doc] => doc.as_mapping().ok_or(ManifestError::NotAPod)?,
            _ => return Err(ManifestError::NotAPod),
        };
        Ok(Pod {
            file,
            root,
            text: text.to_string(),
        })
    }

    fn line_of(&self, node: &Scalar) -> usize {
        let at = node.byte_range().start as usize;
        self.text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1
    }

    fn value(&self, node: &YamlNode, in_flow: bool) -> Option<Value> {
        let node = node.as_scalar()?.clone();
        Some(Value {
            text: node.as_string(),
            line: self.line_of(&node),
            node,
            in_flow,
        })
    }

    /// The scalar at `key` of `map`.
    fn get(&self, map: &Mapping, key: &str) -> Option<Value> {
        self.value(&map.get(key)?, map.is_flow_style())
    }

    fn spec_list(&self, key: &str) -> Vec<YamlNode> {
        let spec = self.root.get_mapping("spec");
        let list = spec.and_then(|s| s.get_sequence(key));
        list.map(|l| l.values().collect()).unwrap_or_default()
    }

    /// `spec.containers`, each with its `command` and `args` items, in order.
    fn containers(&self) -> Vec<(Mapping, Vec<Value>)> {
        let maps = self
            .spec_list("containers")
            .into_iter()
            .filter_map(|c| c.as_mapping().cloned());
        maps.map(|c| {
            let items = ["command", "args"]
                .iter()
                .filter_map(|k| c.get_sequence(*k))
                .flat_map(|seq| self.items(&seq))
                .collect();
            (c, items)
        })
        .collect()
    }

    fn items(&self, seq: &Sequence) -> Vec<Value> {
        let flow = seq.is_flow_style();
        seq.values().filter_map(|v| self.value(&v, flow)).collect()
    }

    fn mappings(&self, seq: Option<Sequence>) -> Vec<Mapping> {
        let items = seq.map(|s| s.values().collect::<Vec<_>>()).unwrap_or_default();
        items.iter().filter_map(|v| v.as_mapping().cloned()).collect()
    }
}

/// Refuses tabs where YAML allows only spaces (indentation).
fn check_tabs(text: &str) -> Result<(), ManifestError> {
    let config = ValidationConfig {
        max_line_length: None,
        enforce_consistent_line_endings: false,
    };
    let (_, errors) = yaml_edit::lex_with_validation_config(text, &config);
    match errors
        .iter()
        .find(|e| e.category == WhitespaceErrorCategory::TabIndentation)
    {
        Some(e) => Err(ManifestError::Tab {
            line: text.get(..e.range.start).map_or(0, |t| t.matches('\n').count()) + 1,
        }),
        None => Ok(()),
    }
}

/// `--flag=value` pairs from the etcd container's command line, in order.
pub fn command_flags(text: &str) -> Result<Vec<(String, String)>, ManifestError> {
    let pod = Pod::parse(text)?;
    let items = pod.containers().into_iter().flat_map(|(_, items)| items);
    Ok(items
        .filter_map(|v| {
            let (k, v) = v.text.split_once('=')?;
            k.starts_with("--").then(|| (k.to_string(), v.to_string()))
        })
        .collect())
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

/// The three places that name the data directory (see [`super::manifest`]).
struct DataDir {
    flag: Value,
    mount: Value,
    host: Value,
    volume: String,
    old: String,
}

/// Points `--data-dir`, the data volume's `mountPath` and its `hostPath.path` at
/// `new_dir`, changing nothing else. Refuses anything but kubeadm's layout (see
/// [`super::manifest`]), with the reason.
pub fn rewrite_data_dir(text: &str, new_dir: &str) -> Result<Rewrite, ManifestError> {
    check_node_dir(new_dir)?;
    let pod = Pod::parse(text)?;
    let (container, flag) = data_dir_flag(&pod)?;
    let old = flag_dir(&flag, new_dir)?;
    let (mount, volume) = data_mount(&pod, &container, &old)?;
    let host = host_path(&pod, &volume, &old)?;
    let found = DataDir {
        flag,
        mount,
        host,
        volume,
        old,
    };
    edit(&pod, found, new_dir)
}

/// The container holding the one `--data-dir=` item, and that item.
fn data_dir_flag(pod: &Pod) -> Result<(Mapping, Value), ManifestError> {
    let containers = pod.containers();
    let all = containers
        .iter()
        .flat_map(|(c, items)| items.iter().map(move |v| (c, v)));
    let all: Vec<(&Mapping, &Value)> = all.collect();
    let unsupported = all
        .iter()
        .find(|(_, v)| v.text == "--data-dir" || v.text.starts_with("--wal-dir"));
    if let Some((_, v)) = unsupported {
        return Err(ManifestError::UnsupportedFlag {
            line: v.line,
            value: v.text.clone(),
        });
    }
    let flags: Vec<_> = all.iter().filter(|(_, v)| v.text.starts_with("--data-dir=")).collect();
    match flags.as_slice() {
        [] => Err(ManifestError::NoDataDir),
        [(c, v)] => Ok(((*c).clone(), (*v).clone())),
        many => Err(ManifestError::ManyDataDirs {
            lines: many.iter().map(|(_, v)| v.line).collect(),
        }),
    }
}

/// The directory the flag names, normalized; refused when it is relative or `new_dir`.
fn flag_dir(flag: &Value, new_dir: &str) -> Result<String, ManifestError> {
    let old = flag.text.trim_start_matches("--data-dir=");
    if !old.starts_with('/') {
        return Err(ManifestError::RelativeDataDir {
            line: flag.line,
            dir: old.to_string(),
        });
    }
    let old = normalize(old);
    if old == new_dir {
        return Err(ManifestError::AlreadyUses {
            dir: new_dir.to_string(),
        });
    }
    Ok(old.to_string())
}

/// The container's volumeMount at `old` (its `mountPath` value) and its volume name.
fn data_mount(pod: &Pod, container: &Mapping, old: &str) -> Result<(Value, String), ManifestError> {
    let mounts = pod.mappings(container.get_sequence("volumeMounts"));
    let at_old: Vec<(&Mapping, Value)> = mounts
        .iter()
        .filter_map(|m| Some((m, pod.get(m, "mountPath")?)))
        .filter(|(_, p)| normalize(&p.text) == old)
        .collect();
    let (mount, path) = match at_old.as_slice() {
        [one] => one.clone(),
        [] => return Err(ManifestError::NoMount { dir: old.to_string() }),
        many => {
            return Err(ManifestError::ManyMounts {
                count: many.len(),
                dir: old.to_string(),
            })
        }
    };
    let name = pod.get(mount, "name").map(|v| v.text);
    let volume = name.ok_or(ManifestError::MountWithoutName { line: path.line })?;
    if let Some(sub) = pod.get(mount, "subPath") {
        return Err(ManifestError::SubPath { line: sub.line });
    }
    Ok((path, volume))
}

/// The `hostPath.path` of the volume named `volume`, which must be `old` too.
fn host_path(pod: &Pod, volume: &str, old: &str) -> Result<Value, ManifestError> {
    let volumes = pod.mappings(pod.root.get_mapping("spec").and_then(|s| s.get_sequence("volumes")));
    let named: Vec<&Mapping> = volumes
        .iter()
        .filter(|v| pod.get(v, "name").is_some_and(|n| n.text == volume))
        .collect();
    let item = match named.as_slice() {
        [one] => *one,
        [] => return Err(ManifestError::NoVolume { volume: volume.into() }),
        _ => return Err(ManifestError::ManyVolumes { volume: volume.into() }),
    };
    let host = item
        .get_mapping("hostPath")
        .and_then(|h| pod.get(&h, "path"))
        .ok_or_else(|| ManifestError::NotHostPath { volume: volume.into() })?;
    if normalize(&host.text) != old {
        return Err(ManifestError::OtherHostDir {
            line: host.line,
            volume: volume.into(),
            host: host.text,
            dir: old.into(),
        });
    }
    Ok(host)
}

/// Replaces the three values in the tree and reports the lines that changed.
fn edit(pod: &Pod, d: DataDir, new_dir: &str) -> Result<Rewrite, ManifestError> {
    let edits = [
        (&d.flag, format!("--data-dir={new_dir}")),
        (&d.mount, new_dir.to_string()),
        (&d.host, new_dir.to_string()),
    ];
    if let Some((v, _)) = edits.iter().find(|(v, _)| !v.in_place()) {
        return Err(ManifestError::NotInPlace { line: v.line });
    }
    for (v, new) in &edits {
        v.node.set_value(&v.restyled(new));
    }
    let text = pod.file.to_string();
    let changed = changed_lines(&pod.text, &text, edits.iter().map(|(v, _)| v.line));
    Ok(Rewrite {
        old_data_dir: d.old,
        new_data_dir: new_dir.to_string(),
        volume: d.volume,
        text,
        changed,
    })
}

/// `before` and `after` of each of `lines` (1-based), without line ends.
fn changed_lines(old: &str, new: &str, lines: impl Iterator<Item = usize>) -> Vec<ChangedLine> {
    let strip = |l: &str| l.trim_end_matches('\r').to_string();
    let (old, new): (Vec<&str>, Vec<&str>) = (old.split('\n').collect(), new.split('\n').collect());
    let mut out: Vec<ChangedLine> = lines
        .filter_map(|n| {
            Some(ChangedLine {
                line: n,
                before: strip(old.get(n - 1)?),
                after: strip(new.get(n - 1)?),
            })
        })
        .collect();
    out.sort_by_key(|c| c.line);
    out.dedup_by_key(|c| c.line);
    out
}
