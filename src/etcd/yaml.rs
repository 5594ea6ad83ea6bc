//! A line-wise reader and editor for the few YAML shapes of kubeadm's static pod
//! manifests (see [`super::manifest`]): block mappings and lists, plain and quoted scalars.

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
    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &str> {
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
    pub(crate) fn parent(&self) -> &[Seg] {
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
